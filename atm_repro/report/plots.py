"""Figures the notebooks show (and notebook 05 saves): data in, matplotlib figure out.

Result figures take ``report.results.per_sae``'s table (metric-id columns);
axis labels are attached here, when drawing. Every figure is drawn in the one
style of ``report.style`` (a fixed colour, marker and label per SAE family, page
widths, plain log ticks). Where seeds exist, points are the mean over seeds with
a 95% Student-t interval over seeds as error bars.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from atm_repro import metrics
from atm_repro.intervals import mean_interval
from atm_repro.report import convergence, style
from atm_repro.report.provenance import write_generated


def _seedless(label: str) -> str:
    """``atm-s0`` -> ``atm`` (a training-log label to its spec name)."""
    head, _, seed = label.rpartition("-s")
    return head if head and seed.isdigit() else label


@style.styled
def plot_training_curves(logs: pd.DataFrame, title: str = ""):
    """Reconstruction loss, L0 and dead fraction against training tokens, one line
    per SAE (family colour; seeds share it)."""
    panels = [("mse", "reconstruction loss (scaled)", "log"), ("l0", "L0", "log"),
              ("dead_frac", "dead fraction", "linear")]
    fig, axes = style.figure(1, 3, height=2.4)
    for ax, (col, label, scale) in zip(axes, panels):
        seen = set()
        for sae, frame in logs.groupby("sae", sort=False):
            fam = style.family(_seedless(sae))
            ax.plot(frame["tokens"], frame[col], color=fam.color, lw=1.0, alpha=0.8,
                    label=None if fam.label in seen else fam.label)
            seen.add(fam.label)
        ax.set_xlabel("training tokens")
        ax.set_ylabel(label)
        if scale == "log":
            style.log_axis(ax, "y")
    style.legend(axes[-1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@style.styled
def plot_ablation_training(table: pd.DataFrame, title: str = ""):
    """L0, explained variance and dead fraction against each ablated factor (mean
    over seeds ± 95% Student-t interval; ``summaries.ablation_table`` in); None when
    the profile ablates nothing."""
    if table.empty:
        return None
    params = sorted(table["param"].unique())
    metrics = ["L0", "explained var.", "dead frac."]
    fig, axes = style.figure(len(metrics), len(params), height=1.6 * len(metrics),
                             squeeze=False)
    for j, param in enumerate(params):
        frame = table[table["param"] == param]
        base = frame["base"].iloc[0]
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            _draw_factor(ax, _factor_points(frame, metric), color=style.family(base).color,
                         log_x=param in ("k", "l1_coefficient", "l0_coefficient"))
            ax.set_xlabel(f"{style.label(base)}: {style.param_label(param)}")
            ax.set_ylabel(metric)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@style.styled
def plot_cross_layer_training(table: pd.DataFrame, title: str = ""):
    """L0 and explained variance of each SAE across layers; None without cross-layer runs."""
    if table.empty:
        return None
    fig, axes = style.figure(1, 2, height=2.4)
    for ax, metric in zip(axes, ["L0", "explained var."]):
        for sae, frame in table.groupby("sae", sort=True):
            fam = style.family(sae)
            frame = frame.sort_values("layer")
            ax.plot(frame["layer"], frame[metric], marker=fam.marker, color=fam.color,
                    label=fam.label)
        ax.set_xlabel("layer")
        ax.set_ylabel(metric)
    style.log_axis(axes[0], "y")
    style.legend(axes[-1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@style.styled
def plot_toy_benchmark(df: pd.DataFrame, title: str = ""):
    """Planted-absorption toy (``toybench.run_toy_benchmark``): absorption against
    L0, one colour per SAE; exact (ground truth) solid, the first-letter
    pipeline's full-absorption rate on the same tokens dashed."""
    fig, ax = style.figure(height=2.8, width=4.8)
    for sae, frame in df.groupby("sae", sort=False):
        fam = style.family(sae)
        frame = frame.sort_values("l0")
        ax.plot(frame["l0"], frame["mean_absorption"], color=fam.color, marker=fam.marker,
                lw=1.2, label=fam.label)
        ax.plot(frame["l0"], frame["mean_probe_full_absorption"], color=fam.color,
                marker=fam.marker, markerfacecolor="none", lw=0.9, ls="--")
    style.log_axis(ax, "x")
    ax.set_xlabel("L0 (held-out toy tokens)")
    ax.set_ylabel("absorption (mean over parents)")
    ax.set_ylim(-0.02, 1.02)
    styles = [Line2D([], [], color="0.3", ls="-", marker="o", label="exact"),
              Line2D([], [], color="0.3", ls="--", marker="o", markerfacecolor="none",
                     label="probe pipeline")]
    style.legend(ax, handles=ax.get_legend_handles_labels()[0] + styles,
                 loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------- notebook 05


def nothing_to_draw(reason: str, title: str = ""):
    """A small figure that says why there is nothing to draw (the profile has no
    runs of that kind), rather than empty axes."""
    fig, ax = style.figure(1, 1, height=1.0)
    ax.axis("off")
    ax.text(0.5, 0.5, reason, ha="center", va="center", color="0.4", transform=ax.transAxes)
    fig.suptitle(title)
    return fig


def mark_not_measured(ax, label: str) -> None:
    """An empty absorption panel says why: every SAE's value is n/a (no letter
    latent or too few letters; ``evals.absorption.health``), not 0."""
    if not any(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any()
               for line in ax.get_lines()):
        ax.text(0.5, 0.5, "n/a: absorption not\nmeaningful here\n(metric health)",
                transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.4")
        ax.set_ylabel(label)


def _per_name(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Mean over seeds of ``cols`` per SAE name, in first-seen order."""
    return frame.groupby("name", sort=False)[cols].mean()


def _value_column(frame: pd.DataFrame, metric: metrics.Metric) -> tuple[str | None, bool]:
    """The column to draw for ``metric`` over the SAEs of one line (``frame``).
    Absorption as measured only where it is meaningful on every one of them, else
    its raw values, flagged as not meaningful: one SAE with a letter latent must not
    stand for a curve whose other SAEs have none (the matched comparisons' rule).
    Other metrics as they are; None if nothing exists."""
    col, raw = metric.id, metric.raw_id
    if metric.eval == metrics.ABSORPTION and raw in frame and frame[raw].notna().any():
        if col in frame and frame[col].notna().all():
            return col, False
        return raw, True
    if col in frame and frame[col].notna().any():
        return col, False
    return None, False


def _errorbar(ax, pts: list, fam: style.FamilyStyle, raw: bool, label: str | None) -> None:
    """(x interval, y interval) points as one line with error bars both ways;
    raw (not meaningful) values dashed with hollow markers."""
    pts = sorted((p for p in pts if np.isfinite(p[0].estimate)), key=lambda p: p[0].estimate)
    if not pts:
        return
    ax.errorbar([p[0].estimate for p in pts], [p[1].estimate for p in pts],
                xerr=_err([p[0] for p in pts]), yerr=_err([p[1] for p in pts]),
                marker=fam.marker, color=fam.color, label=label, lw=1.0, elinewidth=0.7,
                linestyle="--" if raw else "-", markerfacecolor="none" if raw else fam.color)


def _figure_legend(fig, raw: bool, ncol: int) -> None:
    """One legend below the panels: the families drawn, plus the raw-value style
    when some absorption panel shows raw (not meaningful) values."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, lbl in zip(*ax.get_legend_handles_labels()):
            if lbl not in labels:
                handles.append(h)
                labels.append(lbl)
    if raw:
        handles.append(style.raw_handle())
        labels.append(handles[-1].get_label())
    if not handles:
        return
    style.legend(fig, handles=handles, labels=labels, loc="lower center", ncol=ncol,
                 bbox_to_anchor=(0.5, 0.0))


PARETO_PANELS = [metrics.FULL_ABSORPTION, metrics.ABSORPTION_FRACTION,
                 metrics.EXPLAINED_VARIANCE]
SWEEP_PARAMS = {"k", "l1_coefficient", "l0_coefficient"}


@style.styled
def plot_pareto(table: pd.DataFrame, layer: int, title: str = "",
                x: str = metrics.L0.id, x_label: str = f"{metrics.L0.axis} (held-out tokens)"):
    """Matched view at the main layer: absorption (full rate and fraction) and
    explained variance against ``x`` (L0, or explained variance for the
    reconstruction-matched view, whose third panel is then L0). Each family's
    main-set point and its sparsity sweep form a curve; each point is the mean
    over its seeds with a 95% Student-t interval both ways. Where absorption is
    not meaningful (metric health) its raw values are drawn dashed and hollow."""
    at = table[(table["layer"] == layer) & (table["group"].isin(["main", "ablation"]))]
    at = at[(at["group"] == "main") | at["param"].isin(SWEEP_PARAMS)]
    panels = [p if p.id != x else metrics.L0 for p in PARETO_PANELS]
    fig, axes = style.figure(1, len(panels), height=2.5)
    raw_used = [False] * len(panels)
    for base, frame in at.groupby("base", sort=False):
        fam = style.family(base)
        for j, (ax, metric) in enumerate(zip(axes, panels)):
            ycol, raw = _value_column(frame, metric)
            if ycol is None:
                continue
            raw_used[j] |= raw
            pts = [(mean_interval(g[x]), mean_interval(g[ycol]))
                   for _, g in frame.groupby("name", sort=False)]
            _errorbar(ax, pts, fam, raw, fam.label if j == 0 else None)
            ax.set_ylabel(metric.axis)
    for ax, metric in zip(axes, panels):
        if metric.eval == metrics.ABSORPTION:
            mark_not_measured(ax, metric.axis)
        if x == metrics.L0.id:
            style.log_axis(ax, "x")
        if metric == metrics.L0:
            style.log_axis(ax, "y")
        ax.set_xlabel(x_label)
    _figure_legend(fig, any(raw_used), ncol=4)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    return fig


def _err(intervals) -> np.ndarray:
    """[2, n] distances from the estimate to the interval ends (0 where undefined)."""
    lo = np.array([iv.estimate - iv.lo for iv in intervals])
    hi = np.array([iv.hi - iv.estimate for iv in intervals])
    return np.nan_to_num(np.stack([lo, hi]).reshape(2, -1), nan=0.0)


@style.styled
def plot_absorption_by_letter(letters: pd.DataFrame, title: str = ""):
    """Full-absorption rate per first letter (columns) and SAE (rows), mean over seeds."""
    if letters.empty:  # e.g. a random model: no letter's probe passes the F1 cut
        fig, ax = style.figure(height=1.2)
        ax.text(0.5, 0.5, "no letter passed the ground-truth probe's F1 threshold",
                ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        return fig
    grid = letters.pivot_table(index="name", columns="letter", values="full_absorption_rate",
                               aggfunc="mean", sort=False)
    grid.index = [style.label(n) for n in grid.index]
    fig, ax = style.figure(height=0.22 * len(grid) + 1.1)
    sns.heatmap(grid, ax=ax, cmap="rocket_r", vmin=0, vmax=max(0.05, float(grid.max().max())),
                cbar_kws={"label": metrics.FULL_ABSORPTION.axis, "pad": 0.02}, linewidths=0.3)
    ax.set_xlabel("first letter (letters whose probe F1 passed)")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=0)
    ax.set_title(title)
    fig.tight_layout()
    return fig


@style.styled
def plot_probing_by_k(table: pd.DataFrame, title: str = ""):
    """Mean sparse-probing accuracy over datasets at k = 1, 2, 5 and all latents,
    per main SAE (mean over seeds), beside the model-residual baseline (dashed)."""
    main = table[table["group"] == "main"]
    prefix = metrics.probing_mean("").id
    ks = sorted((c.removeprefix(prefix) for c in main.columns
                 if (c.startswith(metrics.probing_mean("top").id)
                     or c == metrics.probing_mean("all").id)
                 and not c.endswith("_se")),
                key=lambda k: (k == "all", int(k[3:]) if k != "all" else 0))
    if not ks:
        return nothing_to_draw("no sparse-probing results for the main SAEs", title)
    cols = [metrics.probing_mean(k).id for k in ks]
    fig, ax = style.figure(height=2.6, width=4.8)
    for name, row in _per_name(main, cols).iterrows():
        fam = style.family(name)
        ax.plot(ks, row.values, marker=fam.marker, color=fam.color, label=fam.label, lw=1.0)
    base = main[[metrics.baseline(metrics.probing_mean(k)).id for k in ks]].mean()
    ax.plot(ks, base.values, ls="--", color="k", marker="s", markerfacecolor="none",
            label="model residual")
    ax.set_xlabel("latents (or residual dimensions) used")
    ax.set_ylabel("test accuracy (mean over datasets)")
    style.legend(ax, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title)
    fig.tight_layout()
    return fig


@style.styled
def plot_density(hists: dict[str, dict], title: str = ""):
    """Latent firing-density histograms (log10), one line per SAE; dead in the legend."""
    fig, ax = style.figure(height=2.6, width=5.2)
    for name, h in hists.items():
        fam = style.family(name)
        edges = h["log10_edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        ax.plot(centers, h["counts"], color=fam.color, lw=1.0,
                label=f"{fam.label} (dead {h['n_dead'] / h['n_latents']:.0%})")
    ax.set_xlabel("log10 firing density (fraction of tokens)")
    ax.set_ylabel("latents")
    style.legend(ax, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title)
    fig.tight_layout()
    return fig


STABILITY_COLUMNS = {m.id: m.axis for m in (metrics.STABILITY_MAX_COS,
                                             metrics.STABILITY_ASSIGNMENT,
                                             metrics.STABILITY_ABOVE_09)}


@style.styled
def plot_stability(table: pd.DataFrame, title: str = ""):
    """Seed stability per main SAE: mean best-match cosine, one-to-one mean, and
    the fraction of latents matched above 0.9 (mean over seed pairs). Without a
    second seed of any main SAE there is no pair: the figure says so."""
    main = table[table["group"] == "main"]
    present = [c for c in STABILITY_COLUMNS if c in main]
    frame = _per_name(main, present).rename(columns=STABILITY_COLUMNS).dropna(how="all")
    if frame.empty:
        return nothing_to_draw("no seed stability: no main SAE was trained with two seeds "
                               "(train.seeds, train.sae_seeds)", title)
    frame.index = [style.label(n) for n in frame.index]
    fig, ax = style.figure(height=2.4)
    frame.plot.bar(ax=ax, rot=30, ylim=(0, 1), color=["0.2", "0.55", "0.8"], width=0.75)
    ax.set_ylabel("across seed pairs")
    style.legend(ax, ncol=3, loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    return fig


EVAL_PANELS = [metrics.ABSORPTION_FRACTION, metrics.FULL_ABSORPTION, metrics.EXPLAINED_VARIANCE,
               metrics.L0]


def _factor_points(runs: pd.DataFrame, col: str) -> list:
    """(value, interval over seeds, the seeds' values) per value of a factor: numbers
    first, in order, then choices (a factor such as ``ema_start`` has string values)."""
    groups = runs.groupby(runs["value"].map(lambda v: (isinstance(v, str), v)), sort=True)
    return [(key[1], mean_interval(g[col]), g[col].dropna().to_numpy()) for key, g in groups]


def _draw_factor(ax, points: list, default=None, log_x: bool = False, color: str = "k",
                 raw: bool = False) -> None:
    """Mean ± interval against the factor's values, each seed a small dot beside it;
    choices on a categorical axis. The profile's own value (when given) is marked."""
    values = [v for v, _, _ in points]
    numeric = all(not isinstance(v, str) for v in values)
    x = np.array(values, dtype=float) if numeric else np.arange(len(values))
    ivs = [iv for _, iv, _ in points]
    ax.errorbar(x, [iv.estimate for iv in ivs], yerr=_err(ivs), marker="o", color=color,
                lw=1.0, elinewidth=0.7, linestyle="--" if raw else "-",
                markerfacecolor="none" if raw else color)
    for xi, (_, _, seeds) in zip(x, points):
        ax.scatter(np.full(len(seeds), xi), seeds, s=6, color=color, alpha=0.45, lw=0,
                   zorder=3)
    if numeric:
        if default is not None:
            ax.axvline(float(default), color="0.7", lw=0.8, ls=":")
        if log_x:
            style.log_axis(ax, "x")
    else:
        ax.set_xticks(x, [f"{str(v).replace('_', ' ')}{'*' if v == default else ''}"
                          for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)


@style.styled
def plot_ablation_evals(table: pd.DataFrame, base: str, defaults: dict,
                        layer: int, title: str = ""):
    """Each evaluated metric against each ablated factor of ``base``: mean over seeds
    with a 95% Student-t interval; the main-set runs (at the factor's seeds) are the
    point at the profile's own value ``defaults[factor]`` (dotted line, or * for a
    choice). Raw absorption (not meaningful) is dashed and hollow."""
    if not defaults:
        return nothing_to_draw("no factor ablations in this profile (ablations.factors)",
                               title)
    at = table[table["layer"] == layer]
    main = at[(at["group"] == "main") & (at["name"] == base)]
    color = style.family(base).color
    fig, axes = style.figure(len(EVAL_PANELS), len(defaults), squeeze=False,
                             height=1.45 * len(EVAL_PANELS) + 0.4, sharey="row")
    for j, (factor, default) in enumerate(defaults.items()):
        points = at[(at["base"] == base) & (at["param"] == factor)]
        seeds = set(points["seed"])
        runs = pd.concat([points, main[main["seed"].isin(seeds)].assign(value=default)])
        for i, metric in enumerate(EVAL_PANELS):
            ax = axes[i][j]
            ycol, raw = _value_column(runs, metric)
            if ycol is not None:
                _draw_factor(ax, _factor_points(runs, ycol), default, color=color, raw=raw)
            if i == len(EVAL_PANELS) - 1:
                ax.set_xlabel(style.param_label(factor))
            if j == 0:
                ax.set_ylabel(metric.axis)
            mark_not_measured(ax, metric.axis if j == 0 else "")
            if metric == metrics.L0:
                style.log_axis(ax, "y")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@style.styled
def plot_cross_layer(table: pd.DataFrame, title: str = ""):
    """Each evaluated metric across layers, one line per SAE (first seed) trained at
    two layers or more; raw absorption (not meaningful) dashed and hollow."""
    frame = table[table["group"].isin(["main", "cross_layer"])]
    frame = frame[frame["seed"] == frame["seed"].min()]
    spread = frame.groupby("name", sort=False)["layer"].transform("nunique") > 1
    if not spread.any():
        return nothing_to_draw("no SAE at a second layer (cross_layer.layers, "
                               "cross_layer.saes)", title)
    fig, axes = style.figure(1, len(EVAL_PANELS), height=2.4)
    raw_used = [False] * len(EVAL_PANELS)
    for name, runs in frame[spread].groupby("name", sort=False):
        runs = runs.sort_values("layer")
        fam = style.family(name)
        for j, (ax, metric) in enumerate(zip(axes, EVAL_PANELS)):
            ycol, raw = _value_column(runs, metric)
            if ycol is None:
                continue
            raw_used[j] |= raw
            ax.plot(runs["layer"], runs[ycol], marker=fam.marker, color=fam.color, lw=1.0,
                    label=fam.label if j == 0 else None, linestyle="--" if raw else "-",
                    markerfacecolor="none" if raw else fam.color)
            ax.set_ylabel(metric.axis)
    for ax, metric in zip(axes, EVAL_PANELS):
        if metric.eval == metrics.ABSORPTION:
            mark_not_measured(ax, metric.axis)
        ax.set_xlabel("layer")
    style.log_axis(axes[-1], "y")
    _figure_legend(fig, any(raw_used), ncol=4)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


CONVERGENCE_PANELS = [metrics.EXPLAINED_VARIANCE, metrics.FULL_ABSORPTION,
                      metrics.ABSORPTION_FRACTION, metrics.MAX_K1_F1]


@style.styled
def plot_convergence(table: pd.DataFrame, width: int, layer: int,
                     letter_latent_f1: float | None = None, title: str = ""):
    """The scale study: each metric against the number of latents (top row) and
    against the training tokens as a multiple of the canonical budget (bottom row),
    one line per family. The canonical point (``width`` latents, 1x) is the main
    set's, mean over its seeds with a 95% interval; the other points have the
    scale study's seeds. The F1 panel marks the letter-latent threshold of the
    metric's health (``letter_latent_f1``) and draws the mean over letters dotted.
    Absorption is drawn raw at every point (dashed), meaningful or not: which
    points have a letter latent is what the F1 panel shows."""
    at = table[table["layer"] == layer]
    scale = at[at["group"] == "scale"]
    if scale.empty:
        return nothing_to_draw("no scale study in this profile (scale)", title)
    fig, axes = style.figure(2, len(CONVERGENCE_PANELS), height=3.9, squeeze=False)
    raw_used = np.zeros((2, len(CONVERGENCE_PANELS)), dtype=bool)
    for base in scale["base"].unique():
        fam = style.family(base)
        main = at[(at["group"] == "main") & (at["name"] == base)]
        for i, (param, canonical) in enumerate((("width", width), ("tokens", 1.0))):
            runs = pd.concat([scale[(scale["base"] == base) & (scale["param"] == param)],
                              main.assign(value=canonical)])
            for j, metric in enumerate(CONVERGENCE_PANELS):
                ax = axes[i][j]
                ycol, raw = _value_column(runs, metric)
                if metric in metrics.ABSORPTION_MEASURES and metric.raw_id in runs:
                    ycol, raw = metric.raw_id, True  # every point; the F1 panel gives the health
                if ycol is None:
                    continue
                raw_used[i][j] |= raw
                pts = [(mean_interval(pd.Series([float(v)] * len(g))), mean_interval(g[ycol]))
                       for v, g in runs.groupby("value", sort=True)]
                _errorbar(ax, pts, fam, raw, fam.label if (i, j) == (0, 0) else None)
                if metric == metrics.MAX_K1_F1 and metrics.MEAN_K1_F1.id in runs:
                    means = runs.groupby("value", sort=True)[metrics.MEAN_K1_F1.id].mean()
                    ax.plot(means.index.astype(float), means.values, ls=":", lw=0.9,
                            color=fam.color)
                ax.set_ylabel(metric.axis)
    ticks = (sorted({*scale.loc[scale["param"] == "width", "value"], width}),
             sorted({*scale.loc[scale["param"] == "tokens", "value"], 1.0}))
    for i, xlabel in enumerate(("latents", "tokens (x canonical)")):
        for j, metric in enumerate(CONVERGENCE_PANELS):
            ax = axes[i][j]
            if metric in metrics.ABSORPTION_MEASURES:
                mark_not_measured(ax, metric.axis)
            style.log_axis(ax, "x", ticks=[float(t) for t in ticks[i]])
            ax.set_xlabel(xlabel)
            if metric == metrics.MAX_K1_F1 and letter_latent_f1 is not None:
                ax.axhline(letter_latent_f1, color="0.6", lw=0.8, ls="--")
    _figure_legend(fig, bool(raw_used.any()), ncol=3)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


# the convergence figure's panels, row by row: (metric column, axis label, log y)
SNAPSHOT_PANELS = [
    (metrics.EXPLAINED_VARIANCE.id, metrics.EXPLAINED_VARIANCE.axis, False),
    (metrics.CE_LOSS_SCORE.id, metrics.CE_LOSS_SCORE.axis, False),
    (metrics.L0.id, metrics.L0.axis, True),
    (metrics.FRAC_DEAD.id, "dead fraction", False),
    (metrics.MAX_K1_F1.id, "best letter-latent F1", False),
    (metrics.LETTER_LATENTS.id, "letter latents", False),
    (metrics.FULL_ABSORPTION.raw_id, "full absorption (raw)", False),
    (metrics.STABILITY_MAX_COS.id, "seed stability", False),
]


@style.styled
def plot_snapshot_convergence(table: pd.DataFrame, families: list[str], layer: int,
                     letter_latent_f1: float | None = None, title: str = ""):
    """The convergence study (``report.convergence``): each metric against the training
    tokens, one line per family of ``families`` (``convergence.families``: the main set
    at the full budget) that has training snapshots at ``layer``; its last point is the
    finished SAE, the others the same run mid-way (before its learning-rate decay).
    Each point is the mean over seeds, each seed a small dot; stability is per disjoint
    seed pair, beside its chance level (random decoders, grey dotted). The F1 panel
    marks the letter-latent threshold of the metric's health (``letter_latent_f1``);
    absorption is the raw rate at every point (dashed, hollow), meaningful or not."""
    runs = convergence.convergence_runs(table, families, layer)
    if runs.empty:
        return nothing_to_draw(convergence.NO_SNAPSHOTS, title)
    cols = [col for col, _, _ in SNAPSHOT_PANELS]
    means = convergence.points(runs, [*cols, metrics.STABILITY_CHANCE.id])
    fig, axes = style.figure(2, 4, height=4.0, sharex=True)
    axes = axes.ravel()
    chance = metrics.STABILITY_CHANCE.id
    for name, g in runs.groupby("name", sort=False):
        fam = style.family(name)
        point = means[means["name"] == name]
        for j, (ax, col) in enumerate(zip(axes, cols)):
            if col not in point or not point[col].notna().any():
                continue
            raw = col == metrics.FULL_ABSORPTION.raw_id
            ax.plot(point["tokens"], point[col], marker=fam.marker, color=fam.color, lw=1.0,
                    ls="--" if raw else "-", markerfacecolor="none" if raw else fam.color,
                    label=fam.label if j == 0 else None, gid=f"{name}/mean")
            seeds = (pd.concat([convergence.pairs_of(p, [col]) for _, p in
                                g.groupby("tokens", sort=True)])
                     if col in convergence.STABILITY else g)
            ax.plot(seeds["tokens"], seeds[col], ls="", marker="o", ms=1.6, alpha=0.55,
                    color=fam.color, gid=f"{name}/seeds")
            if col == metrics.STABILITY_MAX_COS.id and chance in point:
                ax.plot(point["tokens"], point[chance], ls=":", lw=0.9, color="0.5",
                        gid=f"{name}/chance")
    ticks = sorted(set(runs["tokens"]))
    for ax, (col, name, log_y) in zip(axes, SNAPSHOT_PANELS):
        if col == metrics.LETTER_LATENTS.id and letter_latent_f1 is not None:
            name = f"{name} (F1 ≥ {letter_latent_f1:g})"
        ax.set_title(name)  # a title, not a y label: the panels keep their width for ticks
        ax.margins(x=0.06)
        if not any(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any()
                   for line in ax.get_lines()):
            ax.text(0.5, 0.5, "not measured\non these SAEs", transform=ax.transAxes,
                    ha="center", va="center", fontsize=7, color="0.4")
        elif log_y:
            style.log_axis(ax, "y")
        if col == metrics.MAX_K1_F1.id and letter_latent_f1 is not None:
            ax.axhline(letter_latent_f1, color="0.6", lw=0.8, ls="--")
    # shared by every panel; millions on the axis keep five labels apart in a quarter width
    style.log_axis(axes[0], "x", ticks=ticks)
    axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: convergence.millions(v)))
    axes[0].xaxis.set_minor_locator(NullLocator())
    for ax in axes[4:]:
        ax.set_xlabel("tokens (millions)")
    drawn = {line.get_gid().split("/")[-1] for ax in axes for line in ax.get_lines()
             if line.get_gid()}
    extra = [Line2D([], [], color="0.3", ls="", marker="o", ms=1.6, alpha=0.55,
                    label="one seed (or pair)")]
    if "chance" in drawn:
        extra.append(Line2D([], [], color="0.5", ls=":", lw=0.9, label="stability by chance"))
    if axes[cols.index(metrics.FULL_ABSORPTION.raw_id)].get_lines():
        extra.append(Line2D([], [], color="0.45", ls="--", lw=1.0, marker="o",
                            markerfacecolor="none", label="raw absorption"))
    if letter_latent_f1 is not None:
        extra.append(Line2D([], [], color="0.6", ls="--", lw=0.8,
                            label=f"letter-latent F1 ({letter_latent_f1:g})"))
    handles, labels = axes[0].get_legend_handles_labels()
    style.legend(fig, handles=handles + extra, labels=labels + [h.get_label() for h in extra],
                 loc="lower center", ncol=5, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.13, 1, 1), w_pad=0.6)
    return fig


CROSS_MODEL_PANELS = [metrics.EXPLAINED_VARIANCE, metrics.ABSORPTION_FRACTION,
                      metrics.FULL_ABSORPTION]


@style.styled
def plot_cross_model(frame: pd.DataFrame, title: str = ""):
    """``report.cross_model.cross_model_frame`` drawn: one row of panels per model,
    one column per metric; ATM minus each other family (x) at the model's TopK L0,
    with its 95% interval, in that family's colour and marker (hollow where the
    absorption metric is not meaningful and the difference is of raw values).
    Above the dotted zero line ATM is higher (better for explained variance, worse
    for absorption). A difference the curves cannot give (n/a) is left out; with
    none at all the figure says why."""
    if not np.isfinite(frame["diff"].to_numpy(dtype=float)).any():
        return nothing_to_draw("no matched difference: it needs ATM, another family and "
                               "TopK (whose L0 is the target) in train.saes", title)
    models = list(dict.fromkeys(zip(frame["model"], frame["layer"])))
    fig, axes = style.figure(len(models), len(CROSS_MODEL_PANELS),
                             height=1.7 * len(models) + 1.3, squeeze=False, sharex=True)
    others = list(dict.fromkeys(frame["other"]))
    raw_used = False
    for i, (model, layer) in enumerate(models):
        at = frame[(frame["model"] == model) & (frame["layer"] == layer)]
        target = at["target_l0"].iloc[0]
        for j, metric in enumerate(CROSS_MODEL_PANELS):
            ax = axes[i][j]
            for x, other in enumerate(others):
                row = at[(at["other"] == other) & (at["metric"] == metric.id)]
                if row.empty or not np.isfinite(row["diff"].iloc[0]):
                    continue
                r = row.iloc[0]
                fam, raw = style.family(other), not bool(r["meaningful"])
                raw_used |= raw
                err = np.nan_to_num([[r["diff"] - r["lo"]], [r["hi"] - r["diff"]]], nan=0.0)
                ax.errorbar([x], [r["diff"]], yerr=err, marker=fam.marker, color=fam.color,
                            markerfacecolor="none" if raw else fam.color, lw=0, elinewidth=0.9,
                            label=fam.label)
            ax.axhline(0.0, color="0.5", lw=0.7, ls=":")
            ax.set_xticks(range(len(others)), [style.label(o) for o in others], rotation=40,
                          ha="right")
            ax.set_xlim(-0.6, len(others) - 0.4)
            if i == 0:
                ax.set_title(metric.axis)
            if j == 0:
                ax.set_ylabel(f"{model}\nlayer {layer}, L0 {target:.0f}")
    if raw_used:
        style.legend(fig, handles=[Line2D([], [], color="0.45", ls="", marker="o",
                                          markerfacecolor="none",
                                          label="difference of raw absorption, not meaningful")],
                     loc="lower center", bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04 if raw_used else 0, 1, 1))
    return fig


def save_figure(fig, out_dir: Path, name: str, stamp: str) -> list[Path]:
    """Write ``name``.pdf and .png with fixed metadata (no dates), so an unchanged
    rerun gives identical bytes; ``stamp`` (profile, commit) goes into the metadata.
    Returns the files whose bytes changed (unchanged files are not rewritten)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    formats = {
        "pdf": dict(metadata={"Creator": "atm_repro", "Producer": "matplotlib",
                              "Subject": stamp, "CreationDate": None, "ModDate": None}),
        "png": dict(dpi=150, metadata={"Software": None, "Comment": stamp}),
    }
    changed = []
    for ext, kwargs in formats.items():
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, **kwargs)
        path = out_dir / f"{name}.{ext}"
        if write_generated(path, buf.getvalue()):
            changed.append(path)
    return changed
