"""atm_repro.report.comparisons: matched-L0 / matched-EV differences on curves
whose answer is known, the verdict rule, and mean ± interval cells."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers import HEADLINE, SWEEPS, curve_table, one_setting_table

from atm_repro.profiles import load_profile
from atm_repro.report.comparisons import (
    main_setting_comparisons,
    matched_comparisons,
    matched_frame,
    others,
    paper_setting,
    seed_interval_cells,
    targets,
)


@pytest.fixture(scope="module")
def cfg():
    return load_profile(SWEEPS)


def by_key(comparisons):
    return {(c.other, c.metric.split("/")[-1], c.match): c for c in comparisons}


def test_targets_are_topks_operating_point(cfg):
    goal = targets(cfg, curve_table(cfg))
    assert goal["L0"] == 40.0
    assert goal["EV"] == pytest.approx(0.8 + 0.03)


def test_others_lists_families_then_controls(cfg):
    names = others(cfg)
    assert names[-2:] == ["atm-random", "atm-none"] and "masked-reg" not in names
    assert "atm" not in names and "topk" in names


def test_known_differences_and_verdicts(cfg):
    c = by_key(matched_comparisons(cfg, curve_table(cfg)))
    full = c[("topk", "mean_full_absorption", "L0")]
    assert full.diff.estimate == pytest.approx(0.2 - 0.4) and full.verdict == "ATM better"
    assert c[("matryoshka", "mean_full_absorption", "L0")].verdict == "ATM worse"
    assert c[("atm-random", "mean_full_absorption", "L0")].verdict == "no difference"
    assert c[("atm-none", "mean_absorption_fraction", "EV")].diff.estimate == \
        pytest.approx(0.2 - 0.5)
    ev = c[("topk", "explained_variance", "L0")]
    assert ev.diff.estimate == pytest.approx(-0.02) and ev.verdict == "ATM worse"
    # at matched explained variance the EV difference is zero by construction
    assert c[("topk", "explained_variance", "EV")].diff.estimate == pytest.approx(0, abs=1e-9)
    # not meaningful: raw values are shown, the verdict says so
    std = c[("standard", "mean_full_absorption", "L0")]
    assert std.diff.estimate == pytest.approx(0.2 - 0.3) and std.verdict == "not meaningful"
    assert c[("standard", "explained_variance", "L0")].verdict != "not meaningful"


def test_target_outside_a_curve_is_na(cfg):
    c = by_key(matched_comparisons(cfg, curve_table(cfg, {"jumprelu": 3.0})))
    out = c[("jumprelu", "mean_full_absorption", "L0")]  # jumprelu's L0 spans 60-480
    assert math.isnan(out.diff.estimate) and out.verdict == "n/a"
    frame = matched_frame(list(c.values()))
    row = frame[(frame["other"] == "jumprelu") & (frame["metric"] == "full absorption")]
    assert row["L0_diff"].item() == "n/a" and row["L0_verdict"].item() == "n/a"


def test_noisy_seeds_give_an_interval_that_can_include_zero(cfg):
    table = curve_table(cfg)
    rng = np.random.default_rng(0)
    noisy = table["base"].isin(["atm", "atm-random"])
    table.loc[noisy, "absorption/mean_full_absorption"] += rng.normal(0, 0.05, noisy.sum())
    c = by_key(matched_comparisons(cfg, table))
    rnd = c[("atm-random", "mean_full_absorption", "L0")]
    assert rnd.diff.lo < rnd.diff.estimate < rnd.diff.hi
    assert rnd.verdict == ("no difference" if rnd.diff.lo < 0 < rnd.diff.hi else rnd.verdict)
    assert c[("topk", "mean_full_absorption", "L0")].verdict == "ATM better"  # 0.2 gap holds


def test_seed_interval_cells():
    runs = pd.DataFrame({"a": [1.0, 1.0, 1.0], "b": [0.1, 0.2, 0.3], "c": [math.nan] * 3})
    cells = seed_interval_cells(runs, ["a", "b", "c", "missing"])
    # the half-width at the mean's decimals (t(2) = 4.303, sd 0.1, n 3: 0.248); one that
    # rounds to 0 there is bounded, not printed as 0 nor as 0.0000277
    assert cells["a"] == "1.00 ± < 0.01"
    assert cells["b"] == "0.200 ± 0.248" and cells["c"] == "n/a" and cells["missing"] == "n/a"
    wide = seed_interval_cells(pd.DataFrame({"l0": [39.0, 40.0, 41.2]}), ["l0"])
    assert wide["l0"] == "40.1 ± 2.7"
    assert seed_interval_cells(runs.iloc[:1], ["b"])["b"] == "0.100"  # one seed: no interval


def test_main_settings_compare_letters_paired(cfg):
    table = curve_table(cfg)
    rng = np.random.default_rng(0)
    base = {c: rng.uniform(0, 0.8) for c in "abcdefghijklmnopqrst"}  # letters differ a lot
    rows = [{"name": n, "seed": s, "letter": c,
             "full_absorption_rate": base[c] + (0.0 if n == "atm" else 0.1)
             + rng.normal(0, 0.01),
             "mean_absorption_fraction": base[c]}
            for n in ("atm", "topk") for s in cfg.train.seeds_of(n) for c in base]
    c = by_key(main_setting_comparisons(cfg, table, pd.DataFrame(rows)))
    full = c[("topk", "mean_full_absorption", "main")]
    assert full.diff.estimate == pytest.approx(-0.1, abs=0.01) and full.verdict == "ATM better"
    frac = c[("topk", "mean_absorption_fraction", "main")]
    assert frac.diff.estimate == pytest.approx(0.0) and frac.verdict == "no difference"
    # a family without per-letter results gets n/a, not 0
    assert c[("jumprelu", "mean_full_absorption", "main")].verdict == "n/a"
    assert c[("topk", "explained_variance", "main")].diff.estimate == pytest.approx(-0.02)


def test_one_setting_families_are_matched_within_the_tolerance():
    cfg = load_profile(HEADLINE)
    # atm-paper is ATM at the original's lambda; the 1M-token breadth runs are no family
    assert paper_setting(cfg) == "atm-paper" and paper_setting(load_profile(SWEEPS)) == "atm"
    assert others(cfg) == ["topk", "jumprelu", "atm-none", "atm-random"]
    table = one_setting_table(cfg, {"atm": 35.0, "atm-none": 47.0, "jumprelu": 30.0},
                              {"atm": 0.94, "topk": 0.97, "atm-none": 0.95})
    c = by_key(matched_comparisons(cfg, table))
    # ATM at 35 (12.5% below TopK's 40) is matched; its EV gap is read at the point
    ev = c[("topk", "explained_variance", "L0")]
    assert ev.diff.estimate == pytest.approx(-0.03) and ev.verdict == "ATM worse"
    # 47 is 17.5% above 40 and 30 is 25% below: not matched, not compared
    assert c[("atm-none", "explained_variance", "L0")].verdict == "n/a"
    assert c[("jumprelu", "explained_variance", "L0")].verdict == "n/a"
    assert c[("atm-random", "explained_variance", "L0")].diff.estimate == pytest.approx(-0.01)
    # without a curve there is no matched-EV reading (no extrapolation)
    assert c[("topk", "ce_loss_score", "EV")].verdict == "n/a"
    # just outside the tolerance ATM itself is no longer matched
    far = by_key(matched_comparisons(cfg, one_setting_table(cfg, {"atm": 33.9}, {})))
    assert far[("topk", "explained_variance", "L0")].verdict == "n/a"
