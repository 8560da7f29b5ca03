"""atm_repro.report.claims: the paper's reported numbers and our side of them."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from atm_repro.report.claims import (
    NOT_MEANINGFUL,
    PAPER_RESULTS,
    ours_from_results,
)


def tidy(rows) -> pd.DataFrame:
    """A minimal tidy table: (sae_id, name, metric, result) of main SAEs."""
    return pd.DataFrame([{"sae_id": s, "group": "main", "name": s.rsplit("-s", 1)[0],
                          "metric": m, "result": v} for s, m, v in rows])


def test_every_claim_names_a_metric_id_and_a_known_rule():
    for m in PAPER_RESULTS:
        assert m.metric.split("/")[0] in {"core", "absorption", "probing"}, m
        assert set(m.paper) <= {"atm", "topk", "jumprelu"}


def test_ours_from_results_averages_seeds():
    ours = ours_from_results(tidy([
        ("atm-s0", "absorption/mean_full_absorption", 0.1),
        ("atm-s1", "absorption/mean_full_absorption", 0.3),
        ("atm-s0", "core/l0", 100.0),
        ("topk-s0", "core/l0", 40.0),
        ("standard-s0", "core/l0", 7.0),  # not a paper variant: ignored
    ]))
    assert set(ours) == {"atm", "topk", "jumprelu"}
    assert ours["atm"]["mean_full_absorption"] == pytest.approx(0.2)
    assert ours["atm"]["l0"] == 100.0 and ours["topk"]["l0"] == 40.0
    assert math.isnan(ours["topk"]["mean_full_absorption"])
    assert math.isnan(ours["atm"]["sentiment"])  # no probing results at all


def test_not_meaningful_absorption_flags_the_variant():
    rows = [(s, m, v) for s, ok, v in (("atm-s0", 1.0, 0.1), ("topk-s0", 0.0, None),
                                        ("jumprelu-s0", 1.0, 0.3))
            for m, v in (("absorption/meaningful", ok), ("absorption/mean_full_absorption", v))
            if v is not None]
    ours = ours_from_results(tidy(rows))
    assert ours["topk"][NOT_MEANINGFUL] and NOT_MEANINGFUL not in ours["atm"]
    healthy = ours_from_results(tidy([r for r in rows if r[1] != "absorption/meaningful"]))
    assert not any(NOT_MEANINGFUL in v for v in healthy.values())
