"""``atm-repro crosscheck``: the comparison with SAEBench's output, SAE selection,
and the errors raised before any environment is built or model loaded.
(SAEBench itself runs only in the committed canonical crosscheck: CI has no
room for its environment.)"""

from __future__ import annotations

import math

import pytest

from atm_repro.config import ConfigError
from atm_repro.crosscheck import TOLERANCE, compare, crosscheck_tex, run_crosscheck
from atm_repro.evals.results import EvalResult
from atm_repro.profiles import load_profile
from atm_repro.report.provenance import Stamp


def ours(letters: str, full: float, frac: float) -> EvalResult:
    per_letter = {c: {} for c in letters}
    return EvalResult("absorption", "L8-atm-s0", {}, {"meaningful": 0.0, "max_k1_f1": 0.3},
                      {"per_letter": per_letter,
                       "measures": {"mean_full_absorption": full,
                                    "mean_absorption_fraction": frac}})


def ref(letters: str | None, full: float = 0.0, frac: float = 0.0, f1: dict | None = None):
    if letters is None:  # SAEBench stopped: too few letters
        return {"saes": {"L8-atm-s0": {"metrics": None, "probe_f1": f1 or {}}}}
    return {"saes": {"L8-atm-s0": {
        "metrics": {"mean_full_absorption_score": full, "mean_absorption_fraction_score": frac},
        "per_letter": {c: {} for c in letters}}}}


def test_compare_agrees_within_tolerance_on_the_same_letters():
    row = compare({"L8-atm-s0": ours("abc", 0.50, 0.30)}, ref("bca", 0.52, 0.33), 8).iloc[0]
    assert row["sae"] == "atm-s0" and row["letters_ours"] == row["letters_saebench"] == "abc"
    assert row["full_gap"] == pytest.approx(0.02) and row["fraction_gap"] == pytest.approx(0.03)
    assert bool(row["agrees"]) and not bool(row["meaningful_ours"])


@pytest.mark.parametrize("theirs", [ref("abc", 0.50 + TOLERANCE + 0.01, 0.30),
                                    ref("abc", 0.50, 0.30 - TOLERANCE - 0.01),
                                    ref("abd", 0.50, 0.30)])
def test_compare_flags_a_gap_or_other_letters(theirs):
    row = compare({"L8-atm-s0": ours("abc", 0.50, 0.30)}, theirs, 8).iloc[0]
    assert not bool(row["agrees"])


def test_compare_when_saebench_reports_nothing():
    theirs = ref(None, f1={"a": 0.9, "b": 0.5, "c": 0.7})
    row = compare({"L8-atm-s0": ours("ac", 0.5, 0.3)}, theirs, 8).iloc[0]
    assert row["letters_saebench"] == "ac" and math.isnan(row["full_saebench"])
    assert not bool(row["agrees"])


def test_crosscheck_tex_is_labelled():
    table = compare({"L8-atm-s0": ours("abc", 0.5, 0.3)}, ref("abc", 0.5, 0.3), 8)
    tex = crosscheck_tex(table, Stamp("cpu", False, "abc1234"))
    assert r"\label{tab:crosscheck}" in tex and "atm s0" in tex and "0.500" in tex


def test_bad_requests_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("ATM_REPRO_RUNS", str(tmp_path))
    with pytest.raises(ConfigError, match="TransformerLens"):
        run_crosscheck(load_profile("smoke"))  # tiny-gemma3: no TransformerLens config
    with pytest.raises(ConfigError, match="no trained SAE"):
        run_crosscheck(load_profile("cpu"), ["atm-s7"])
