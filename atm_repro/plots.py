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
