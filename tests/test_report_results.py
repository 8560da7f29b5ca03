"""atm_repro.report.results: result JSONs -> one tidy table keyed by metric ids."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from atm_repro.evals.results import EvalResult, write_result
from atm_repro.evals.stability import pair_id
from atm_repro.profiles import load_profile
from atm_repro.report.results import SAE_COLUMNS, per_sae, read_results
from atm_repro.runs import METRICS, results_dir, sae_dir


@pytest.fixture
def results(runs_dir):
    """Two seeds of topk and one ablation run with core/absorption results, a
    stability pair, and a result of an SAE that is not (or no longer) on disk."""
    cfg = load_profile("smoke")
    root = results_dir(cfg)
    for name, seed in (("topk", 0), ("topk", 1), ("atm-beta0.9", 0)):
        path = sae_dir(cfg, 1, name, seed)
        path.mkdir(parents=True)
        (path / METRICS).write_text(json.dumps({
            "tokens": 30208 + seed, "steps": 118, "key": {"train": {"batch_size": 256,
                                                                   "width": 256 * (seed + 1)}}}))
        sae_id = f"L1-{name}-s{seed}"
        write_result(root, EvalResult("core", sae_id, {}, {"l0": 10.0 + seed, "mse": 0.5}))
        write_result(root, EvalResult("absorption", sae_id, {},
                                      {"mean_full_absorption": float("nan"), "meaningful": 0}))
    write_result(root, EvalResult("stability", pair_id("L1-topk-s0", "L1-topk-s1"), {},
                                  {"max_cos_mean": 0.25}))
    write_result(root, EvalResult("core", "L1-gone-s0", {}, {"l0": 99.0}))
    return cfg


def test_tidy_table_is_keyed_by_metric_ids(results):
    tidy = read_results(results)
    assert list(tidy.columns) == [*SAE_COLUMNS, "metric", "result"]
    assert set(tidy["metric"]) == {"core/l0", "core/mse", "absorption/meaningful",
                                   "stability/max_cos_mean", "train/tokens", "train/steps",
                                   "train/batch_size", "train/width"}  # NaN is left out
    train = tidy[tidy["metric"].str.startswith("train/")].pivot(
        index="sae_id", columns="metric", values="result")
    assert train.loc["L1-topk-s1"].to_dict() == {"train/batch_size": 256.0, "train/steps": 118.0,
                                                 "train/tokens": 30209.0, "train/width": 512.0}
    assert "L1-gone-s0" not in set(tidy["sae_id"])
    l0 = tidy[tidy["metric"] == "core/l0"].set_index("sae_id")["result"]
    assert l0.to_dict() == {"L1-atm-beta0.9-s0": 10.0, "L1-topk-s0": 10.0, "L1-topk-s1": 11.0}
    ablation = tidy[tidy["sae_id"] == "L1-atm-beta0.9-s0"].iloc[0]
    assert (ablation["group"], ablation["base"], ablation["param"], ablation["value"]) == \
        ("ablation", "atm", "beta", 0.9)
    assert tidy["result"].dtype == float


def test_stability_belongs_to_both_seeds_and_per_sae_is_wide(results):
    table = per_sae(read_results(results)).set_index("sae_id")
    assert table.loc["L1-topk-s0", "stability/max_cos_mean"] == 0.25
    assert table.loc["L1-topk-s1", "stability/max_cos_mean"] == 0.25
    assert pd.isna(table.loc["L1-atm-beta0.9-s0", "stability/max_cos_mean"])
    assert list(table.columns[:len(SAE_COLUMNS) - 1]) == SAE_COLUMNS[1:]
    assert table.loc["L1-topk-s1", "core/l0"] == 11.0 and table.loc["L1-topk-s1", "seed"] == 1
