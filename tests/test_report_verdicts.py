"""atm_repro.report.verdicts and setup_tables: the claims table follows its rule on
curves with a known answer; the setup tables come from the profile."""

from __future__ import annotations

import pandas as pd
from helpers import ABSORPTION, curve_table, manifest

from atm_repro.profiles import load_profile
from atm_repro.report.comparisons import matched_comparisons
from atm_repro.report.provenance import Stamp
from atm_repro.report.setup_tables import deviations_table, hyperparameters_table
from atm_repro.report.style import label
from atm_repro.report.verdicts import claim_numbers, claims, claims_table
from atm_repro.train import run_config

STAMP = Stamp("cpu", False, "abc1234")


def verdicts_of(table: pd.DataFrame) -> dict[str, str]:
    cfg = load_profile("cpu")
    return {c.key: c.verdict for c in claims(cfg, table, matched_comparisons(cfg, table))}


def test_claims_follow_the_rule_on_known_curves():
    # curve_table: ATM absorbs 0.2, TopK 0.4, JumpReLU 0.3 (all meaningful); ATM's
    # explained variance is 0.02 below TopK's and 0.01 below the other families'
    cfg = load_profile("cpu")
    table = curve_table(cfg)
    got = verdicts_of(table)
    assert got["absorption"] == "holds"
    assert got["reconstruction"] == "fails"
    assert got["mask"].startswith("fails (reconstruction)")  # below its no-mask control
    assert got["stability"] == "not testable here (no seed pairs)"
    assert got["mechanism"] == "not testable here (1 seed per value)"
    # ATM absorbing more than JumpReLU turns the absorption claim around
    worse = table.copy()
    atm = worse["base"] == "atm"
    for col in ("absorption/mean_full_absorption", "absorption/raw/mean_full_absorption"):
        worse.loc[atm, col] = ABSORPTION["jumprelu"] + 0.05
    assert verdicts_of(worse)["absorption"] == "fails"
    # ... and an unhealthy metric on ATM's curve makes it untestable, not a verdict
    sick = table.copy()
    sick.loc[sick["base"] == "atm", "absorption/meaningful"] = 0.0
    assert verdicts_of(sick)["absorption"] == "not testable here (absorption not meaningful)"
    text = claims_table(cfg, table, matched_comparisons(cfg, table), STAMP)
    assert "tab:claims" in text and "fails" in text and "Rule." in text
    numbers = claim_numbers(cfg, table, matched_comparisons(cfg, table))
    assert numbers["claim/reconstruction/verdict"] == "fails"


def test_setup_tables_come_from_the_profile():
    cfg = load_profile("cpu")
    m = manifest(d_model=640, n_layers=18)
    dev = deviations_table(cfg, m, STAMP)
    assert "tab:deviations" in dev and "Gemma-2-2b" in dev
    assert f"{cfg.train.tokens:,}" in dev and f"{cfg.train.layer} of 18" in dev
    assert "Q4\\_K\\_M" in dev  # the quantisation is stated
    assert f"forward in {cfg.model.dtype}" in dev  # the profile's model.dtype, not a fixed text
    for dtype, other in (("float32", "bfloat16"), ("bfloat16", "float32")):
        text = deviations_table(load_profile("cpu", {"model.dtype": dtype}), m, STAMP)
        assert f"forward in {dtype}" in text and other not in text
    hyper = hyperparameters_table(cfg, m, STAMP)
    assert "tab:hyperparameters" in hyper
    for name, spec in cfg.train.saes.items():
        assert label(name) in hyper
        for key in spec.params:
            assert key.replace("_", " ") in hyper, (name, key)
    # the training dtype as resolved here, a spec's own override included
    def row(table: str, name: str) -> str:
        return [r for r in table.splitlines() if r.startswith(f"{label(name)} &")][0]

    for name in ("atm", "topk"):
        resolved = run_config(cfg.train, cfg.train.saes[name]).dtype
        assert f"training dtype {resolved}" in row(hyper, name)
    assert cfg.train.dtype == "auto" and "training dtype auto" not in hyper
    pinned = load_profile("cpu", {"train.saes.topk.dtype": "float32"})
    assert "training dtype float32" in row(hyperparameters_table(pinned, m, STAMP), "topk")
