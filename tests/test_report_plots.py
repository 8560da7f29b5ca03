"""atm_repro.report.plots: figures from the per-SAE table, saved with fixed bytes."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import ONE_FAMILY, SWEEPS, TIDY_METRICS, curve_table, synthetic_tidy  # noqa: E402

from atm_repro.profiles import factor_defaults, load_profile  # noqa: E402
from atm_repro.report import plots, style  # noqa: E402
from atm_repro.report.cross_model import ModelResults, cross_model_frame  # noqa: E402
from atm_repro.report.results import per_sae  # noqa: E402
from atm_repro.report.statements import COMPARED  # noqa: E402


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
    cfg = load_profile(SWEEPS)
    table = curve_table(cfg)
    table.loc[table["base"] == "topk", "core/explained_variance"] += np.tile(
        [0.0, 0.01, -0.01, 0.02, -0.02], 100)[:int((table["base"] == "topk").sum())]
    fig = plots.plot_pareto(table, cfg.train.layer)
    full, frac, ev = fig.axes
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "raw absorption, not meaningful" in legend  # standard: not meaningful
    assert any(line.get_linestyle() == "--" for line in full.get_lines())
    assert not any(line.get_linestyle() == "--" for line in ev.get_lines())
    # topk's seeds differ in explained variance: its points carry vertical error bars
    segments = [c for c in ev.collections if len(c.get_segments())]
    assert any(abs(seg[1][1] - seg[0][1]) > 0 for c in segments for seg in c.get_segments())
    plt.close("all")


def test_one_meaningful_sae_does_not_stand_for_its_curve():
    """A curve whose absorption is meaningful on one seed of one point only (as
    ATM-no-mask's was at L0 ~13 in the canonical run) is drawn raw at every point,
    not as that single measured value."""
    cfg = load_profile(SWEEPS)
    table = curve_table(cfg)
    none = table["base"] == "atm-none"
    for col in ("mean_full_absorption", "mean_absorption_fraction"):
        table.loc[none, f"absorption/{col}"] = np.nan
        table.loc[none, f"absorption/raw/{col}"] = np.linspace(0.1, 0.5, int(none.sum()))
    lone = table.index[none & (table["name"] == table.loc[none, "name"].iloc[-1])][0]
    table.loc[lone, "absorption/mean_full_absorption"] = 0.9
    fig = plots.plot_pareto(table, cfg.train.layer)
    full = fig.axes[0]
    colour = matplotlib.colors.to_hex(style.family("atm-none").color)
    lines = [c.lines[0] for c in full.containers
             if matplotlib.colors.to_hex(c.lines[0].get_color()) == colour]
    assert len(lines) == 1 and lines[0].get_linestyle() == "--"
    assert len(lines[0].get_xdata()) == table.loc[none, "name"].nunique()  # every point
    assert max(np.asarray(lines[0].get_ydata(), dtype=float)) <= 0.5
    plt.close("all")


def test_ablation_figures_take_choices_and_seeds():
    cfg = load_profile("smoke", {"ablations.factors": {"r": [2.0], "ema_start": ["first_batch"]},
                                 "ablations.factor_seeds": {"ema_start": [0, 1]}})
    table = per_sae(synthetic_tidy(cfg))
    fig = plots.plot_ablation_evals(table, "atm", factor_defaults(cfg), cfg.train.layer)
    ema_axes = [ax for ax in fig.axes
                if "first batch" in [t.get_text() for t in ax.get_xticklabels()]]
    labels = [t.get_text() for t in ema_axes[0].get_xticklabels()]
    assert labels == ["first batch", "zero*"]  # categorical axis, default marked
    assert len(ema_axes) == len(plots.EVAL_PANELS)  # one column, every metric
    plt.close("all")


def _drawn_styles(fig) -> dict[str, set]:
    """Legend label -> the colours of the lines (plain or with error bars) drawn
    under it, over every axis of ``fig``."""
    out: dict[str, set] = {}
    for ax in fig.axes:
        artists = [(c.get_label(), c.lines[0]) for c in ax.containers if hasattr(c, "lines")]
        artists += [(line.get_label(), line) for line in ax.get_lines()]
        for lbl, line in artists:
            if lbl and not lbl.startswith("_"):
                out.setdefault(lbl, set()).add(matplotlib.colors.to_hex(line.get_color()))
    return out


def _lab(colour: str) -> np.ndarray:
    """sRGB -> CIE Lab (D65), for colour differences as the eye sees them."""
    c = np.array(matplotlib.colors.to_rgb(colour))
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ c / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_the_canonical_families_are_far_apart_in_colour():
    """ATM, its two controls, ATM at the original's lambda and the families they are
    compared with: every pair at least 40 apart in CIE Lab (Delta E 1976), so no two
    read as shades of one colour (two blues such as #0072B2 / #56B4E9 are 26 apart)."""
    names = [*COMPARED, "atm-paper"]
    assert {"atm", "atm-none", "atm-random", "topk", "jumprelu", "atm-paper"} == set(names)
    assert set(COMPARED) <= set(load_profile("cpu").train.saes)
    lab = {n: _lab(style.families()[n].color) for n in names}
    closest = min(np.linalg.norm(lab[a] - lab[b]) for i, a in enumerate(names)
                  for b in names[i + 1:])
    assert closest >= 40, closest
    assert np.linalg.norm(_lab("#0072B2") - _lab("#56B4E9")) < 40  # the measure can fail


def test_one_colour_per_family_across_figures_and_figures_fit_the_page():
    assert len({s.color for s in style.families().values()}) == len(style.families())
    cfg = load_profile(SWEEPS)
    table = per_sae(synthetic_tidy(cfg))
    figures = [plots.plot_pareto(curve_table(cfg), cfg.train.layer),
               plots.plot_pareto(curve_table(cfg), cfg.train.layer, x="core/explained_variance"),
               plots.plot_probing_by_k(table.assign(**{
                   "probing/mean_top2": 0.6, "probing/mean_all": 0.7,
                   "probing/baseline/mean_top1": 0.6, "probing/baseline/mean_top2": 0.6,
                   "probing/baseline/mean_all": 0.8})),
               plots.plot_convergence(table, cfg.train.width, cfg.train.layer, 0.5),
               plots.plot_stability(table),
               plots.plot_ablation_evals(table, "atm", factor_defaults(cfg), cfg.train.layer)]
    seen: dict[str, set] = {}
    for fig in figures:
        assert fig.get_size_inches()[0] <= style.MAX_WIDTH
        for lbl, colours in _drawn_styles(fig).items():
            seen.setdefault(lbl, set()).update(colours)
    for name, fam in style.families().items():
        if fam.label in seen:
            assert seen[fam.label] == {fam.color.lower()}, name
    assert {"ATM", "TopK", "JumpReLU", "Matryoshka"} <= set(seen)
    plt.close("all")


def test_convergence_figure_draws_width_and_tokens_with_the_canonical_point():
    cfg = load_profile(SWEEPS)
    table = per_sae(synthetic_tidy(cfg))
    fig = plots.plot_convergence(table, cfg.train.width, cfg.train.layer, 0.5)
    axes = np.array(fig.axes[:8]).reshape(2, 4)
    ev_width, ev_tokens = axes[0][0], axes[1][0]
    # ATM: the main point at 2048 (1x) plus three widths / three token budgets
    atm = [c for c in ev_width.containers if c.get_label() == "ATM"]
    assert sorted(atm[0].lines[0].get_xdata()) == [1024, 2048, 4096, 8192]
    xs = [sorted(c.lines[0].get_xdata()) for c in ev_tokens.containers]
    assert [0.5, 1.0, 2.0, 4.0] in xs
    f1 = axes[0][3]
    assert any(tuple(line.get_ydata()) == (0.5, 0.5) for line in f1.get_lines())  # threshold
    plt.close("all")


def test_profiles_without_factors_or_scale_study_get_a_figure_that_says_so():
    cfg = load_profile("smollm2")
    table = per_sae(synthetic_tidy(cfg))
    for fig, reason in (
            (plots.plot_ablation_evals(table, cfg.ablations.sae, factor_defaults(cfg),
                                       cfg.train.layer), "no factor ablations"),
            (plots.plot_convergence(table, cfg.train.width, cfg.train.layer, 0.5),
             "no scale study")):
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert len(fig.axes) == 1 and any(reason in t for t in texts)


def test_a_one_seed_one_family_profile_gets_figures_that_say_why(runs_dir):
    """No seed pair, no second layer, no ATM to compare, no probing: each figure says
    so in its place (the stability bar chart raised on one seed)."""
    cfg = load_profile("smoke", ONE_FAMILY)
    tidy = synthetic_tidy(cfg, {m: v for m, v in TIDY_METRICS.items()
                                if not m.startswith(("stability/", "probing/"))})
    table = per_sae(tidy)
    cross = cross_model_frame([ModelResults.of(cfg, tidy)])
    for fig, reason in ((plots.plot_stability(table), "no seed stability"),
                        (plots.plot_cross_layer(table), "no SAE at a second layer"),
                        (plots.plot_cross_model(cross), "no matched difference"),
                        (plots.plot_probing_by_k(table), "no sparse-probing results")):
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert len(fig.axes) == 1 and any(reason in t for t in texts), texts
    assert plots.plot_pareto(table, cfg.train.layer).axes[0].get_lines()  # still drawn
    plt.close("all")
