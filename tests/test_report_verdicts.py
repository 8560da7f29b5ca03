"""atm_repro.report.verdicts and setup_tables: the claims table follows its rule on
curves with a known answer; the setup tables come from the profile."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from helpers import ABSORPTION, HEADLINE, SWEEPS, curve_table, manifest, one_setting_table

from atm_repro.profiles import load_profile
from atm_repro.report.comparisons import matched_comparisons
from atm_repro.report.provenance import Stamp
from atm_repro.report.setup_tables import (
    deviations_table,
    hyperparameters_table,
    setting_phrase,
)
from atm_repro.report.style import label
from atm_repro.report.verdicts import claim_numbers, claims, claims_table
from atm_repro.saes import build_config
from atm_repro.saes.registry import VARIANTS
from atm_repro.train import run_config

STAMP = Stamp("cpu", False, "abc1234")


def verdicts_of(table: pd.DataFrame) -> dict[str, str]:
    cfg = load_profile(SWEEPS)
    return {c.key: c.verdict for c in claims(cfg, table, matched_comparisons(cfg, table))}


def test_claims_follow_the_rule_on_known_curves():
    # curve_table: ATM absorbs 0.2, TopK 0.4, JumpReLU 0.3 (all meaningful); ATM's
    # explained variance is 0.02 below TopK's and 0.01 below the other families'
    cfg = load_profile(SWEEPS)
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
    cfg = load_profile(SWEEPS)
    m = manifest(d_model=640, n_layers=18)
    dev = deviations_table(cfg, m, STAMP)
    assert "tab:deviations" in dev and "Gemma-2-2b" in dev
    assert f"{cfg.train.tokens:,}" in dev and f"{cfg.train.layer} of 18" in dev
    assert "Q4\\_K\\_M" in dev  # the quantisation is stated
    assert f"forward in {cfg.model.dtype}" in dev  # the profile's model.dtype, not a fixed text
    for dtype, other in (("float32", "bfloat16"), ("bfloat16", "float32")):
        text = deviations_table(load_profile(SWEEPS, {"model.dtype": dtype}), m, STAMP)
        assert f"forward in {dtype}" in text and other not in text
    hyper = hyperparameters_table(cfg, m, STAMP)
    assert "tab:hyperparameters" in hyper
    def row(table: str, name: str) -> str:
        return [r for r in table.splitlines() if r.startswith(f"{label(name)} &")][0]

    for name, spec in cfg.train.saes.items():  # each set parameter, in words, in its own row
        sae_cfg = build_config(spec.variant, spec.params, 640, cfg.train.width)
        for key, value in spec.params.items():
            assert setting_phrase(key, value, sae_cfg) in row(hyper, name), (name, key)
    assert "masks at random" in row(hyper, "atm-random") and "never masks" in row(hyper, "atm-none")
    assert "masks by importance" in row(hyper, "atm")
    # the training dtype as resolved here, a spec's own override included
    for name in ("atm", "topk"):
        resolved = run_config(cfg.train, cfg.train.saes[name]).dtype
        assert f"trained in {resolved}" in row(hyper, name)
    assert cfg.train.dtype == "auto" and "trained in auto" not in hyper
    pinned = load_profile(SWEEPS, {"train.saes.topk.dtype": "float32"})
    assert "trained in float32" in row(hyperparameters_table(pinned, m, STAMP), "topk")
    # no code name: no field or choice with an underscore, and no field spelled as code
    body = hyper.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    assert "\\_" not in body and "_" not in body.replace("$", "")
    for field in ("aux k", "masked g", "ema start", "mask mode", "l1 coefficient"):
        assert field not in body, field


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_setting_of_every_variant_has_words(variant):
    sae_cfg = VARIANTS[variant].config_cls(d_in=64, d_sae=256)
    for field in dataclasses.fields(sae_cfg):
        if field.name not in ("d_in", "d_sae"):
            phrase = setting_phrase(field.name, getattr(sae_cfg, field.name), sae_cfg)
            assert phrase and "_" not in phrase.replace("$", ""), field.name
    with pytest.raises(KeyError, match="no phrase"):
        setting_phrase("not_a_field", 1)


def test_a_resolved_default_is_printed_as_its_value():
    # TopK's aux_k None means d_in // 2 latents: the table says the number, not "none"
    sae_cfg = build_config("topk", {"k": 40}, 640, 4096)
    assert "320 dead latents" in setting_phrase("aux_k", None, sae_cfg)
    assert "100 dead latents" in setting_phrase("aux_k", 100, sae_cfg)


def test_headline_claims_read_matched_l0_chance_and_the_original_setting():
    cfg = load_profile(HEADLINE)
    table = one_setting_table(cfg, {"atm": 38.0, "atm-paper": 1500.0},
                              {"atm": 0.94, "topk": 0.97, "atm-paper": 0.99})
    # one disjoint pair (s0, s1) per family; ATM's decoders match better than TopK's
    for name, stab in (("atm", 0.30), ("topk", 0.20)):
        for seed in (0, 1):
            row = (table["name"] == name) & (table["seed"] == seed)
            table.loc[row, "stability/max_cos_mean"] = stab
            table.loc[row, "stability/chance_max_cos_mean"] = 0.14
    got = {c.key: c for c in claims(cfg, table, matched_comparisons(cfg, table))}
    assert got["reconstruction"].verdict == "fails"  # -0.03 at matched L0
    # the original's own setting: the dense ATM reconstructs better than TopK
    assert got["reconstruction_paper"].verdict == "holds"
    assert "0.02" in got["reconstruction_paper"].evidence
    assert got["stability"].verdict == "not testable here (1 pair)"
    assert "at matched" in got["stability"].evidence
    numbers = claim_numbers(cfg, table, matched_comparisons(cfg, table))
    assert numbers["claim/stability/diff"] == pytest.approx(0.10)
    assert numbers["claim/stability/over_chance/diff"] == pytest.approx(0.16)
    # two pairs per family (a fourth seed): an interval, and a verdict
    extra = table[table["seed"].isin([0, 1]) & table["name"].isin(["atm", "topk"])].copy()
    extra["seed"] += 2
    extra.loc[extra["name"] == "atm", "stability/max_cos_mean"] = 0.31
    four = pd.concat([table, extra], ignore_index=True)
    assert verdicts_of_profile(cfg, four)["stability"] == "holds"
    # ATM far from TopK's L0: stability is not read (dense against sparse)
    dense = four.copy()
    dense.loc[dense["name"] == "atm", "core/l0"] = 400.0
    assert verdicts_of_profile(cfg, dense)["stability"] == \
        "not testable here (ATM not at TopK's L0)"


def verdicts_of_profile(cfg, table: pd.DataFrame) -> dict[str, str]:
    return {c.key: c.verdict for c in claims(cfg, table, matched_comparisons(cfg, table))}


def test_mechanism_verdict_from_three_seeds_per_value():
    cfg = load_profile(HEADLINE)
    layer = cfg.train.layer

    def rows(ev_of):
        out = []
        for factor, values in cfg.ablations.factors.items():
            for value in values:
                for seed in cfg.ablations.seeds:
                    out.append({"sae_id": f"L{layer}-{factor}{value}-s{seed}",
                                "group": "ablation", "name": f"atm-short-{factor}{value}",
                                "layer": layer, "seed": seed,
                                "base": cfg.ablations.sae, "param": factor, "value": value,
                                "core/l0": 40.0 + 0.1 * seed,
                                "core/explained_variance": ev_of(factor, value) + 0.001 * seed})
        return pd.DataFrame(out)

    flat = pd.concat([one_setting_table(cfg, {}, {}), rows(lambda f, v: 0.93)])
    assert verdicts_of_profile(cfg, flat)["mechanism"] == "no difference"
    moved = pd.concat([one_setting_table(cfg, {}, {}),
                       rows(lambda f, v: 0.93 + (0.02 * v if f == "r" else 0.0))])
    claim = next(c for c in claims(cfg, moved, matched_comparisons(cfg, moved))
                 if c.key == "mechanism")
    assert claim.verdict == "holds" and "(3 seeds)" in claim.evidence
    assert "0.933$\\to$0.971" in claim.evidence  # r 0.1 -> 2, mean over seeds 0-2
    assert "$L_0$: $r$ 0.1$\\to$2: 40.1$\\to$40.1, difference 0.0 [" in claim.evidence
