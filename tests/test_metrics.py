"""atm_repro.metrics: one declaration per metric, read by the reports."""

from __future__ import annotations

import pandas as pd

from atm_repro import metrics
from atm_repro.intervals import Interval
from atm_repro.report.comparisons import Matched
from atm_repro.report.summaries import labelled, probing_datasets


def test_declared_metrics_are_consistent():
    ids = [m.id for m in metrics.METRICS.values()]
    assert len(ids) == len(set(ids)) == len(metrics.METRICS)
    for m in metrics.METRICS.values():
        assert m.id == f"{m.eval}/{m.name}" and metrics.eval_of(m.id) == m.eval
        assert m.eval in (metrics.CORE, metrics.ABSORPTION, metrics.PROBING, metrics.STABILITY,
                          metrics.TRAIN)
        assert m.direction in ("higher", "lower", None) and m.label
        format(0.5, m.fmt)  # a valid format spec
    # unset labels fall back to ``label``; set ones are kept
    assert metrics.MSE.short == metrics.MSE.tex == metrics.MSE.axis == "MSE"
    assert metrics.FULL_ABSORPTION.axis == "full absorption rate"
    assert metrics.FULL_ABSORPTION.raw_id == "absorption/raw/mean_full_absorption"


def test_parametrised_metrics():
    gender = metrics.probing_dataset("gender")
    assert (gender.id, gender.short, gender.tex) == ("probing/gender/top1", "gender top-1",
                                                     "gender")
    assert metrics.get("probing/wiki_topic/top1") == metrics.probing_dataset("wiki_topic")
    assert metrics.get("probing/baseline/top1") is None and metrics.get("core/nope") is None
    assert metrics.baseline(metrics.PROBING_TOP1).id == "probing/baseline/mean_top1"
    assert metrics.stability_matched(0.9) == metrics.STABILITY_ABOVE_09
    assert metrics.STABILITY_ABOVE_09.id == "stability/max_cos_frac_above_0.9"
    columns = ["probing/gender/top1", "probing/gender/top1_se", "probing/baseline/top1",
               "probing/mean_top1", "probing/sentiment/top1"]
    assert probing_datasets(columns) == ["gender", "sentiment"]


def test_reports_read_labels_and_directions_from_the_registry():
    frame = pd.DataFrame(columns=["core/explained_variance", "probing/gender/top1", "n_seeds"])
    assert list(labelled(frame).columns) == ["explained var.", "gender top-1", "n_seeds"]
    # a lower-is-better metric: a negative difference is ATM better
    diff = Interval(-0.2, -0.3, -0.1, 2)
    for m, verdict in ((metrics.FULL_ABSORPTION, "ATM better"),
                       (metrics.EXPLAINED_VARIANCE, "ATM worse")):
        assert Matched("topk", m.id, "L0", 1.0, diff, True, m.direction).verdict == verdict
