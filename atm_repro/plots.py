"""Figures the notebooks show (and notebook 05 saves): data in, matplotlib figure out."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd


def read_train_logs(sae_dirs: dict[str, Path]) -> pd.DataFrame:
    """Concatenate the ``train_log.jsonl`` of each named SAE directory."""
    frames = []
    for label, path in sae_dirs.items():
        lines = (Path(path) / "train_log.jsonl").read_text().splitlines()
        frame = pd.DataFrame([json.loads(line) for line in lines])
        frame["sae"] = label
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


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
