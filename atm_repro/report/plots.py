"""Figures the notebooks show (and notebook 05 saves): data in, matplotlib figure out.

Result figures take ``report.results.per_sae``'s table (metric-id columns);
axis labels are attached here, when drawing.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from atm_repro.intervals import mean_interval
from atm_repro.report.provenance import write_generated


def plot_training_curves(logs: pd.DataFrame, title: str = ""):
    """Reconstruction loss, L0 and dead fraction against training tokens, one line per SAE."""
    panels = [("mse", "reconstruction loss (scaled units)", "log"), ("l0", "L0", "log"),
              ("dead_frac", "dead fraction", "linear")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (col, label, scale) in zip(axes, panels):
        for sae, frame in logs.groupby("sae", sort=False):
            ax.plot(frame["tokens"], frame[col], label=sae, lw=1.2)
        ax.set_xlabel("training tokens")
        ax.set_ylabel(label)
        ax.set_yscale(scale)
    axes[-1].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_ablation_training(table: pd.DataFrame, title: str = ""):
    """L0, explained variance and dead fraction against each ablated factor (mean
    over seeds ± 95% bootstrap interval; ``summaries.ablation_table`` in)."""
    params = sorted(table["param"].unique())
    metrics = ["L0", "explained var.", "dead frac."]
    fig, axes = plt.subplots(len(metrics), len(params), figsize=(3.2 * len(params), 6.6),
                             squeeze=False)
    for j, param in enumerate(params):
        frame = table[table["param"] == param]
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            _draw_factor(ax, _factor_points(frame, metric),
                         log_x=param in ("k", "l1_coefficient", "l0_coefficient"))
            ax.set_xlabel(f"{frame['base'].iloc[0]}: {param}")
            ax.set_ylabel(metric)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_cross_layer_training(table: pd.DataFrame, title: str = ""):
    """L0 and explained variance of each SAE across layers."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ["L0", "explained var."]):
        for sae, frame in table.groupby("sae", sort=True):
            frame = frame.sort_values("layer")
            ax.plot(frame["layer"], frame[metric], marker="o", label=sae)
        ax.set_xlabel("layer")
        ax.set_ylabel(metric)
    axes[0].set_yscale("log")
    axes[-1].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_toy_benchmark(df: pd.DataFrame, title: str = ""):
    """Planted-absorption toy (``toybench.run_toy_benchmark``): absorption against
    L0, one colour per SAE; exact (ground truth) solid, the first-letter
    pipeline's full-absorption rate on the same tokens dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (sae, frame) in enumerate(df.groupby("sae", sort=False)):
        frame = frame.sort_values("l0")
        ax.plot(frame["l0"], frame["mean_absorption"], color=f"C{i}", marker="o", lw=1.4,
                label=sae)
        ax.plot(frame["l0"], frame["mean_probe_full_absorption"], color=f"C{i}", marker="x",
                lw=1.2, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("L0 (held-out toy tokens)")
    ax.set_ylabel("absorption (mean over parents)")
    ax.set_ylim(-0.02, 1.02)
    styles = [Line2D([], [], color="0.3", ls="-", marker="o", label="exact"),
              Line2D([], [], color="0.3", ls="--", marker="x", label="probe pipeline")]
    ax.legend(handles=ax.get_legend_handles_labels()[0] + styles, fontsize=7, frameon=False,
              loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------- notebook 05


def mark_not_measured(ax, label: str) -> None:
    """An empty absorption panel says why: every SAE's value is n/a (no letter
    latent or too few letters; ``evals.absorption.health``), not 0."""
    if not any(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any()
               for line in ax.get_lines()):
        ax.text(0.5, 0.5, "n/a: absorption not\nmeaningful here\n(metric health)",
                transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4")
        ax.set_ylabel(label)


def _per_name(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Mean over seeds of ``cols`` per SAE name, in first-seen order."""
    return frame.groupby("name", sort=False)[cols].mean()


def plot_pareto(table: pd.DataFrame, layer: int, title: str = ""):
    """Matched-sparsity view at the main layer: absorption (fraction and full rate)
    and explained variance against L0. Each family's main-set point and its sparsity
    sweep form a curve; each point is the mean over its seeds with a 95% bootstrap
    interval as error bars (L0 too). Where absorption is not meaningful (metric
    health) its raw values are drawn dashed with hollow markers, and the panel says so."""
    at = table[(table["layer"] == layer) & (table["group"].isin(["main", "ablation"]))]
    sweep_params = {"k", "l1_coefficient", "l0_coefficient"}
    at = at[(at["group"] == "main") | at["param"].isin(sweep_params)]
    panels = [("absorption/mean_absorption_fraction", "absorption fraction"),
              ("absorption/mean_full_absorption", "full absorption rate"),
              ("core/explained_variance", "explained variance")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    raw_used = [False] * len(panels)
    for i, (base, frame) in enumerate(at.groupby("base", sort=True)):
        for j, (ax, (col, label)) in enumerate(zip(axes, panels)):
            raw = "absorption/raw/" + col.split("/", 1)[1]
            measured = col in frame and frame[col].notna().any()
            use_raw = (col.startswith("absorption/") and not measured and raw in frame
                       and frame[raw].notna().any())
            ycol = raw if use_raw else col
            if ycol not in frame:
                continue
            raw_used[j] |= use_raw
            pts = [(mean_interval(g["core/l0"]), mean_interval(g[ycol]))
                   for _, g in frame.groupby("name", sort=False)]
            pts = sorted((p for p in pts if np.isfinite(p[0].estimate)),
                         key=lambda p: p[0].estimate)
            x = np.array([p[0].estimate for p in pts])
            y = np.array([p[1].estimate for p in pts])
            xerr = _err([p[0] for p in pts])
            yerr = _err([p[1] for p in pts])
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", color=f"C{i}", label=base,
                        linestyle="--" if use_raw else "-", capsize=2,
                        markerfacecolor="none" if use_raw else f"C{i}")
            ax.set_ylabel(label)
    for ax, (_, label), used in zip(axes, panels, raw_used):
        if used:
            ax.text(0.02, 0.98, "raw values: not meaningful\n(metric health)",
                    transform=ax.transAxes, ha="left", va="top", fontsize=7, color="0.4")
        mark_not_measured(ax, label)
        ax.set_xscale("log")
        ax.set_xlabel("L0 (held-out tokens)")
    axes[-1].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _err(intervals) -> np.ndarray:
    """[2, n] distances from the estimate to the interval ends (0 where undefined)."""
    lo = np.array([iv.estimate - iv.lo for iv in intervals])
    hi = np.array([iv.hi - iv.estimate for iv in intervals])
    return np.nan_to_num(np.stack([lo, hi]).reshape(2, -1), nan=0.0)


def plot_absorption_by_letter(letters: pd.DataFrame, title: str = ""):
    """Full-absorption rate per first letter (columns) and SAE (rows), mean over seeds."""
    if letters.empty:  # e.g. a random model: no letter's probe passes the F1 cut
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no letter passed the ground-truth probe's F1 threshold",
                ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        return fig
    grid = letters.pivot_table(index="name", columns="letter", values="full_absorption_rate",
                               aggfunc="mean", sort=False)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * grid.shape[1] + 2), 0.45 * len(grid) + 1.4))
    sns.heatmap(grid, ax=ax, cmap="rocket_r", vmin=0, vmax=max(0.05, float(grid.max().max())),
                cbar_kws={"label": "full absorption rate"}, linewidths=0.3)
    ax.set_xlabel("first letter (letters whose probe F1 passed)")
    ax.set_ylabel("")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_probing_by_k(table: pd.DataFrame, title: str = ""):
    """Mean sparse-probing accuracy over datasets at k = 1, 2, 5 and all latents,
    per main SAE, beside the model-residual baseline (dashed)."""
    main = table[table["group"] == "main"]
    ks = [c.removeprefix("probing/mean_") for c in main.columns
          if (c.startswith("probing/mean_top") or c == "probing/mean_all")
          and not c.endswith("_se")]
    cols = [f"probing/mean_{k}" for k in ks]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (name, row) in enumerate(_per_name(main, cols).iterrows()):
        ax.plot(ks, row.values, marker="o", color=f"C{i}", label=name)
    base = main[[f"probing/baseline/mean_{k}" for k in ks]].mean()
    ax.plot(ks, base.values, ls="--", color="k", marker="s", label="model residual")
    ax.set_xlabel("latents (or residual dimensions) used")
    ax.set_ylabel("test accuracy (mean over datasets)")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_density(hists: dict[str, dict], title: str = ""):
    """Latent firing-density histograms (log10), one line per SAE; dead in the legend."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (name, h) in enumerate(hists.items()):
        edges = h["log10_edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        ax.plot(centers, h["counts"], color=f"C{i}",
                label=f"{name} (dead {h['n_dead'] / h['n_latents']:.0%})")
    ax.set_xlabel("log10 firing density")
    ax.set_ylabel("latents")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_stability(table: pd.DataFrame, title: str = ""):
    """Seed stability per main SAE: mean best-match cosine, one-to-one mean, and
    the fraction of latents matched above 0.9."""
    cols = {"stability/max_cos_mean": "best-match cosine",
            "stability/assignment_mean": "one-to-one cosine",
            "stability/max_cos_frac_above_0.9": "matched > 0.9"}
    main = table[table["group"] == "main"]
    present = [c for c in cols if c in main]
    frame = _per_name(main, present).rename(columns=cols)
    ax = frame.plot.bar(figsize=(7, 3.4), rot=30, ylim=(0, 1))
    ax.set_ylabel("across two seeds")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


EVAL_PANELS = [("absorption/mean_absorption_fraction", "absorption fraction"),
               ("absorption/mean_full_absorption", "full absorption rate"),
               ("core/explained_variance", "explained variance"),
               ("core/l0", "L0")]


def _factor_points(runs: pd.DataFrame, col: str) -> list:
    """(value, interval over seeds) per value of a factor: numbers first, in order,
    then choices (a factor such as ``ema_start`` has string values)."""
    groups = runs.groupby(runs["value"].map(lambda v: (isinstance(v, str), v)), sort=True)
    return [(key[1], mean_interval(g[col])) for key, g in groups]


def _draw_factor(ax, points: list, default=None, log_x: bool = False) -> None:
    """Mean ± interval against the factor's values; choices on a categorical axis.
    The profile's own value (when given) is marked."""
    values = [v for v, _ in points]
    numeric = all(not isinstance(v, str) for v in values)
    x = np.array(values, dtype=float) if numeric else np.arange(len(values))
    ivs = [iv for _, iv in points]
    ax.errorbar(x, [iv.estimate for iv in ivs], yerr=_err(ivs), marker="o", capsize=2)
    if numeric:
        if default is not None:
            ax.axvline(float(default), color="0.7", lw=0.8, ls=":")
        if log_x:
            ax.set_xscale("log")
    else:
        ax.set_xticks(x, [f"{v}{' (default)' if v == default else ''}" for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)


def plot_ablation_evals(table: pd.DataFrame, base: str, defaults: dict,
                        layer: int, title: str = ""):
    """Each evaluated metric against each ablated factor of ``base``: mean over seeds
    with a 95% bootstrap interval; the main-set runs (at the factor's seeds) are the
    point at the profile's own value ``defaults[factor]``."""
    at = table[table["layer"] == layer]
    main = at[(at["group"] == "main") & (at["name"] == base)]
    fig, axes = plt.subplots(len(EVAL_PANELS), len(defaults), squeeze=False,
                             figsize=(3.2 * len(defaults), 2.3 * len(EVAL_PANELS)))
    for j, (factor, default) in enumerate(defaults.items()):
        points = at[(at["base"] == base) & (at["param"] == factor)]
        seeds = set(points["seed"])
        runs = pd.concat([points, main[main["seed"].isin(seeds)].assign(value=default)])
        for i, (col, label) in enumerate(EVAL_PANELS):
            ax = axes[i][j]
            if col in runs:
                _draw_factor(ax, _factor_points(runs, col), default)
            ax.set_xlabel(f"{base}: {factor}")
            ax.set_ylabel(label)
            mark_not_measured(ax, label)
            if col == "core/l0":
                ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_cross_layer(table: pd.DataFrame, title: str = ""):
    """Each evaluated metric across layers, one line per SAE (first seed)."""
    frame = table[table["group"].isin(["main", "cross_layer"])]
    frame = frame[frame["seed"] == frame["seed"].min()]
    fig, axes = plt.subplots(1, len(EVAL_PANELS), figsize=(3.4 * len(EVAL_PANELS), 3.4))
    for i, (name, runs) in enumerate(frame.groupby("name", sort=True)):
        runs = runs.sort_values("layer")
        if runs["layer"].nunique() < 2:
            continue
        for ax, (col, label) in zip(axes, EVAL_PANELS):
            if col in runs:
                ax.plot(runs["layer"], runs[col], marker="o", color=f"C{i}", label=name)
                ax.set_ylabel(label)
    for ax, (_, label) in zip(axes, EVAL_PANELS):
        mark_not_measured(ax, label)
        ax.set_xlabel("layer")
    axes[-1].set_yscale("log")
    axes[-1].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
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
