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
    """L0, explained variance and dead fraction against each ablated factor."""
    params = sorted(table["param"].unique())
    metrics = ["L0", "explained var.", "dead frac."]
    fig, axes = plt.subplots(len(metrics), len(params), figsize=(3.2 * len(params), 6.6),
                             squeeze=False)
    for j, param in enumerate(params):
        frame = table[table["param"] == param].sort_values("value")
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            ax.plot(frame["value"], frame[metric], marker="o")
            ax.set_xlabel(f"{frame['base'].iloc[0]}: {param}")
            ax.set_ylabel(metric)
            if param in ("k", "l1_coefficient", "l0_coefficient"):
                ax.set_xscale("log")
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
    and explained variance against L0. Each variant's main SAE is a point; the
    sparsity sweeps of notebook 03 join their base SAE's point into a curve."""
    at = table[(table["layer"] == layer) & (table["group"].isin(["main", "ablation"]))]
    sweep_params = {"k", "l1_coefficient", "l0_coefficient"}
    at = at[(at["group"] == "main") | at["param"].isin(sweep_params)]
    panels = [("absorption/mean_absorption_fraction", "absorption fraction"),
              ("absorption/mean_full_absorption", "full absorption rate"),
              ("core/explained_variance", "explained variance")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (base, frame) in enumerate(at.groupby("base", sort=True)):
        frame = frame.groupby(["name"], sort=False).mean(numeric_only=True)
        frame = frame.sort_values("core/l0")
        for ax, (col, label) in zip(axes, panels):
            if col in frame:
                ax.plot(frame["core/l0"], frame[col], marker="o", color=f"C{i}", label=base)
                ax.set_ylabel(label)
    for ax, (_, label) in zip(axes, panels):
        mark_not_measured(ax, label)
        ax.set_xscale("log")
        ax.set_xlabel("L0 (held-out tokens)")
    axes[-1].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_absorption_by_letter(letters: pd.DataFrame, title: str = ""):
    """Full-absorption rate per first letter (columns) and SAE (rows)."""
    if letters.empty:  # e.g. a random model: no letter's probe passes the F1 cut
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no letter passed the ground-truth probe's F1 threshold",
                ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        return fig
    grid = letters.pivot(index="name", columns="letter", values="full_absorption_rate")
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
    ks = [c.split("_")[-1] for c in main.columns
          if c.startswith("probing/mean_top") or c == "probing/mean_all"]
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


def plot_ablation_evals(table: pd.DataFrame, base: str, defaults: dict[str, float],
                        layer: int, title: str = ""):
    """Each evaluated metric against each ablated factor of ``base``; the main-set
    run (first seed) is the point at the profile's own value ``defaults[factor]``."""
    at = table[table["layer"] == layer]
    main = at[(at["group"] == "main") & (at["name"] == base)].sort_values("seed").head(1)
    fig, axes = plt.subplots(len(EVAL_PANELS), len(defaults), squeeze=False,
                             figsize=(3.2 * len(defaults), 2.3 * len(EVAL_PANELS)))
    for j, (factor, default) in enumerate(defaults.items()):
        runs = pd.concat([at[(at["base"] == base) & (at["param"] == factor)],
                          main.assign(value=default)])
        runs = runs.sort_values("value")
        for i, (col, label) in enumerate(EVAL_PANELS):
            ax = axes[i][j]
            if col in runs:
                ax.plot(runs["value"], runs[col], marker="o")
                ax.axvline(default, color="0.7", lw=0.8, ls=":")
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
