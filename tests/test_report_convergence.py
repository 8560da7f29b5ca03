"""The convergence study (report.convergence): figure, table and numbers from training
snapshots, on a hand-made per-SAE table of known values."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from helpers import (  # noqa: E402
    HEADLINE,
    STAMP,
    body_rows,
    manifest,
    snapshot_tidy,
    synthetic_tidy,
)
from helpers import SNAPSHOT_CHANCE as CHANCE  # noqa: E402
from helpers import SNAPSHOT_FAMILIES as FAMILIES  # noqa: E402
from helpers import SNAPSHOT_SEEDS as SEEDS  # noqa: E402
from helpers import SNAPSHOT_TOKENS as TOKENS  # noqa: E402
from helpers import snapshot_stability as stability  # noqa: E402
from helpers import snapshot_value as value  # noqa: E402

from atm_repro import metrics  # noqa: E402
from atm_repro.profiles import load_profile  # noqa: E402
from atm_repro.report import convergence, plots, style  # noqa: E402
from atm_repro.report.latex import format_number, macro_name, numbers_tex  # noqa: E402
from atm_repro.report.paper import _convergence, paper_numbers  # noqa: E402
from atm_repro.report.results import per_sae  # noqa: E402


@pytest.fixture
def cfg():
    return load_profile(HEADLINE)


@pytest.fixture
def table():
    return per_sae(snapshot_tidy())


def expected(metric: str, family: str, point: int) -> float:
    """The mean over seeds ``snapshot_tidy`` builds its point from."""
    return float(np.mean([value(metric, family, point, s) for s in SEEDS]))


def _lines(ax, gid: str) -> list:
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def test_token_labels():
    assert [convergence.tick_label(t) for t in TOKENS] == ["0.25M", "0.5M", "1M", "2M", "5M"]
    assert [convergence.key_label(t) for t in TOKENS] == ["250k", "500k", "1M", "2M", "5M"]
    # a budget of 1.5M (1,465 batches): no decimal point in the key, whose macro would
    # otherwise be 15M's
    assert convergence.tick_label(1_500_160) == "1.5M"
    assert convergence.key_label(1_500_160) == "1500k"
    assert convergence.key_label(124_928) == "125k" and convergence.key_label(800) == "800"


def test_families_are_the_main_set_at_the_full_budget(cfg):
    names = convergence.families(cfg)
    assert "atm-short" not in names and "topk-short" not in names
    assert {"topk", "atm", "atm-none", "atm-random", "jumprelu", "atm-paper"} == set(names)


def test_figure_draws_the_mean_over_seeds_at_each_snapshot_and_the_end(cfg, table):
    fig = plots.plot_snapshot_convergence(table, convergence.families(cfg), cfg.train.layer, 0.5)
    ev, *_, f1, _, absorption, stab = fig.axes
    assert ev.get_title() == metrics.EXPLAINED_VARIANCE.axis
    for family in FAMILIES:
        (mean,) = _lines(ev, f"{family}/mean")
        assert list(mean.get_xdata()) == list(TOKENS)  # the tokens seen, in order
        np.testing.assert_allclose(
            mean.get_ydata(), [expected(metrics.EXPLAINED_VARIANCE.id, family, i)
                               for i in range(len(TOKENS))])
        (seeds,) = _lines(ev, f"{family}/seeds")
        assert sorted(seeds.get_xdata()) == sorted(TOKENS * len(SEEDS))  # every seed a dot
        assert matplotlib.colors.to_hex(mean.get_color()) == style.family(family).color.lower()
        # one dot per seed pair for stability: (0, 1) once, not on both of its members
        (pairs,) = _lines(stab, f"{family}/seeds")
        assert list(pairs.get_xdata()) == list(TOKENS)
        np.testing.assert_allclose(pairs.get_ydata(), [stability(family, i) for i in range(5)])
        (chance,) = _lines(stab, f"{family}/chance")
        np.testing.assert_allclose(chance.get_ydata(), CHANCE)
        assert _lines(absorption, f"{family}/mean")[0].get_linestyle() == "--"  # raw
    drawn = {line.get_gid().split("/")[0] for ax in fig.axes for line in ax.get_lines()
             if line.get_gid()}
    assert drawn == set(FAMILIES)  # not atm-short (own budget), not jumprelu (no snapshot)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {style.label(f) for f in FAMILIES} <= set(legend)
    assert not {style.label("atm-short"), style.label("jumprelu")} & set(legend)
    assert any(tuple(line.get_ydata()) == (0.5, 0.5) for line in f1.get_lines())  # threshold
    plt.close("all")


def test_figure_ticks_are_the_points_and_no_text_collides(cfg, table):
    fig = plots.plot_snapshot_convergence(table, convergence.families(cfg), cfg.train.layer, 0.5)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert fig.get_size_inches()[0] <= style.MAX_WIDTH
    for ax in fig.axes[4:]:  # the bottom row carries the shared axis' labels
        ticks = [t for t in ax.get_xticklabels() if t.get_text()]
        assert [t.get_text() for t in ticks] == ["0.25", "0.5", "1", "2", "5"]
        assert [t.get_position()[0] for t in ticks] == list(TOKENS)
        boxes = [t.get_window_extent(renderer) for t in ticks]
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), ax.get_title()
    for row in (fig.axes[:4], fig.axes[4:]):  # titles and axis labels side by side
        for texts in ([ax.title for ax in row], [ax.xaxis.label for ax in row[:4]]):
            boxes = [t.get_window_extent(renderer) for t in texts if t.get_text()]
            assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))
    legend = fig.legends[0].get_window_extent(renderer)
    assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1
    lowest = min(ax.xaxis.label.get_window_extent(renderer).y0 for ax in fig.axes[4:])
    assert legend.y1 < lowest  # below the panels, not over them
    plt.close("all")


def test_table_one_row_per_family_and_point_sorted_by_tokens(cfg, table):
    text = _convergence(cfg, table, STAMP)
    assert r"\label{tab:convergence}" in text and "learning-rate decay" in text
    assert "raw" in text and r"\tiny" not in text and r"\scriptsize" not in text
    rows = [r.removesuffix(r" \\").split(" & ") for r in body_rows(text)]
    assert len(rows) == len(FAMILIES) * len(TOKENS)  # no atm-short, no jumprelu rows
    for f, family in enumerate(FAMILIES):
        block = rows[f * len(TOKENS):(f + 1) * len(TOKENS)]
        assert [r[0] for r in block] == [style.label(family)] + [""] * (len(TOKENS) - 1)
        assert [r[1] for r in block] == ["0.25M", "0.5M", "1M", "2M", "5M"]
        for i, r in enumerate(block):
            assert r[3] == format_number(expected(metrics.EXPLAINED_VARIANCE.id, family, i))
            assert r[2] == format_number(expected(metrics.L0.id, family, i))
            assert r[-1] == format_number(stability(family, i))
    # the seed count and the chance level, one value throughout, are in the caption
    assert len(rows[0]) == 12
    assert "Every row is over 3 seeds." in text
    assert f"The chance level is {CHANCE:.3f} at every point." in text


def test_numbers_for_the_text(cfg, table, runs_dir):
    numbers = convergence.convergence_numbers(cfg, table)
    assert numbers["convergence/atm/t250k/explained_variance"] == pytest.approx(
        expected(metrics.EXPLAINED_VARIANCE.id, "atm", 0))
    assert numbers["convergence/atm-none/t5M/l0"] == pytest.approx(
        expected(metrics.L0.id, "atm-none", 4))
    assert numbers["convergence/topk/t2M/raw_mean_full_absorption"] == pytest.approx(
        expected(metrics.FULL_ABSORPTION.raw_id, "topk", 3))
    assert numbers["convergence/topk/t1M/max_cos_mean"] == pytest.approx(stability("topk", 2))
    assert numbers["convergence/topk/t1M/n_seeds"] == 3
    assert numbers["convergence/topk/t1M/n_pairs"] == 1  # seeds 0 and 1 are one pair
    assert numbers["convergence/topk/t500k/n_meaningful"] == 1  # seed 0 only
    assert numbers["convergence/topk/t1M/n_meaningful"] == 3
    names = {k.split("/")[1] for k in numbers}
    assert names == set(FAMILIES)
    assert len({k.split("/")[2] for k in numbers}) == len(TOKENS)
    assert macro_name("convergence/atm/t250k/explained_variance") == \
        r"\ConvergenceAtmTTwoFiveZeroKExplainedVariance"
    numbers_tex(numbers, STAMP)  # every key its own macro
    # and in the paper's numbers
    every = paper_numbers(cfg, snapshot_tidy(), manifest(d_model=640, n_layers=18))
    assert every["convergence/atm/t250k/explained_variance"] == pytest.approx(
        expected(metrics.EXPLAINED_VARIANCE.id, "atm", 0))


def test_a_profile_without_snapshots_says_so(cfg):
    tidy = synthetic_tidy(cfg)
    tidy = pd.concat([tidy, tidy.drop_duplicates("sae_id").assign(
        metric=metrics.TRAIN_TOKENS.id, result=4_999_168.0)])  # finished SAEs only
    table = per_sae(tidy)
    fig = plots.plot_snapshot_convergence(table, convergence.families(cfg), cfg.train.layer, 0.5)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(fig.axes) == 1 and any("no training snapshots" in t for t in texts)
    text = _convergence(cfg, table, STAMP)
    assert r"\label{tab:convergence}" in text and "tabular" not in text
    assert "No training snapshots in this run" in text
    assert convergence.convergence_numbers(cfg, table) == {}
    plt.close("all")
