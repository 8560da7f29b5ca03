"""atm_repro.report.plots: figures from the per-SAE table, saved with fixed bytes."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import curve_table, synthetic_tidy  # noqa: E402

from atm_repro.profiles import factor_defaults, load_profile  # noqa: E402
from atm_repro.report import plots  # noqa: E402
from atm_repro.report.results import per_sae  # noqa: E402


@pytest.fixture
def table():
    return per_sae(synthetic_tidy(load_profile("smoke")))


def test_save_figure_is_byte_stable_and_stamped(tmp_path):
    def draw():
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [1, 0])
        return fig

    written = plots.save_figure(draw(), tmp_path, "f", "profile cpu, commit abc1234")
    assert sorted(p.name for p in written) == ["f.pdf", "f.png"]
    png, pdf = (tmp_path / "f.png").read_bytes(), (tmp_path / "f.pdf").read_bytes()
    assert b"profile cpu, commit abc1234" in png and b"CreationDate" not in pdf
    assert plots.save_figure(draw(), tmp_path, "f", "profile cpu, commit abc1234") == []
    changed = plots.save_figure(draw(), tmp_path, "f", "profile cpu, commit def5678")
    assert len(changed) == 2  # the stamp is part of the bytes


def test_an_all_missing_panel_says_not_measured():
    fig, (empty, full) = plt.subplots(1, 2)
    empty.plot([1, 2], [np.nan, np.nan])
    full.plot([1, 2], [0.1, np.nan])
    plots.mark_not_measured(empty, "absorption")
    plots.mark_not_measured(full, "absorption")
    assert any("n/a" in t.get_text() for t in empty.texts)
    assert not full.texts


def test_result_figures_draw_from_the_per_sae_table(table):
    cfg = load_profile("smoke")
    pareto = plots.plot_pareto(table, cfg.train.layer)
    assert any(ax.get_lines() for ax in pareto.axes)
    ablations = plots.plot_ablation_evals(table, cfg.ablations.sae, factor_defaults(cfg),
                                          cfg.train.layer)
    assert len(ablations.axes) == len(plots.EVAL_PANELS) * len(cfg.ablations.factors)
    stability = plots.plot_stability(table)
    assert len(stability.axes[0].patches) == len(cfg.train.saes)  # one bar per main SAE
    plt.close("all")


def test_pareto_has_seed_error_bars_and_flags_raw_absorption():
    cfg = load_profile("cpu")
    table = curve_table(cfg)
    table.loc[table["base"] == "topk", "core/explained_variance"] += np.tile(
        [0.0, 0.01, -0.01, 0.02, -0.02], 100)[:int((table["base"] == "topk").sum())]
    fig = plots.plot_pareto(table, cfg.train.layer)
    frac, full, ev = fig.axes
    assert any("raw values" in t.get_text() for t in full.texts)  # standard: not meaningful
    assert any(line.get_linestyle() == "--" for line in full.get_lines())
    assert not any("raw values" in t.get_text() for t in ev.texts)
    # topk's seeds differ in explained variance: its points carry vertical error bars
    segments = [c for c in ev.collections if len(c.get_segments())]
    assert any(abs(seg[1][1] - seg[0][1]) > 0 for c in segments for seg in c.get_segments())
    plt.close("all")


def test_ablation_figures_take_choices_and_seeds():
    cfg = load_profile("smoke", {"ablations.factors": {"r": [2.0], "ema_start": ["first_batch"]},
                                 "ablations.factor_seeds": {"ema_start": [0, 1]}})
    table = per_sae(synthetic_tidy(cfg))
    fig = plots.plot_ablation_evals(table, "atm", factor_defaults(cfg), cfg.train.layer)
    ema_axes = [ax for ax in fig.axes if ax.get_xlabel() == "atm: ema_start"]
    labels = [t.get_text() for t in ema_axes[0].get_xticklabels()]
    assert labels == ["first_batch", "zero (default)"]  # categorical axis, default marked
    plt.close("all")
