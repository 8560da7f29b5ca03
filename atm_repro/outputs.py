"""Notebook 05's outputs: the paper's tables, its numbers and the figures.

The ``cpu`` and ``paper`` profiles write into the repository (``paper/tables/``
and ``figures/``); ``smoke`` writes the same files under ``runs/smoke/`` so
that CI can build a watermarked paper from them. Every file is stamped with
the profile and commit and written only when its bytes change.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from atm_repro.config import Profile
from atm_repro.report import MAIN_COLUMNS, absorption_health, main_table
from atm_repro.tables import (
    FIGURES_DIR,
    TABLES_DIR,
    Stamp,
    booktabs_table,
    check_output_allowed,
    ours_from_results,
    paper_vs_ours_table,
    result_numbers,
    setting_numbers,
    write_paper_inputs,
)


def output_dirs(cfg: Profile) -> tuple[Path, Path]:
    """(figures dir, tables dir) this profile may write into."""
    if cfg.smoke:
        return cfg.run_dir / "figures", cfg.run_dir / "paper" / "tables"
    return FIGURES_DIR, TABLES_DIR


# Main-table columns (labels of ``report.main_table``) -> LaTeX headers; the
# per-dataset probing columns kept are the paper's "bias detection" and "sentiment".
MAIN_TEX = {
    "n_seeds": "seeds", "L0": "L0", "MSE": "MSE", "cosine": "cos.",
    "explained var.": "expl.\\ var.", "CE loss score": "CE score",
    "full absorption": "full abs.", "absorption frac.": "abs.\\ frac.",
    "probing top-1": "probe top-1", "gender top-1": "gender", "sentiment top-1": "sentiment",
    "stability (max cos)": "stability",
}
MAIN_BEST = {"explained var.": "max", "cosine": "max", "CE loss score": "max", "MSE": "min",
             "full absorption": "min", "absorption frac.": "min", "probing top-1": "max",
             "gender top-1": "max", "sentiment top-1": "max", "stability (max cos)": "max"}


def _main_results(table: pd.DataFrame, stamp: Stamp) -> str:
    frame = main_table(table).reset_index()
    cols = {"name": "SAE", **{k: v for k, v in MAIN_TEX.items() if k in frame.columns}}
    return booktabs_table(
        frame, cols, stamp=stamp, label="tab:main_results",
        caption="Main layer, every SAE (mean over seeds). L0, MSE (per token, raw units), "
                "cosine and explained variance on held-out tokens; CE loss score with the "
                "SAE spliced in; first-letter absorption (full-absorption rate and absorption "
                "fraction, lower is better); mean top-1 sparse-probing accuracy over the six "
                "datasets and on gender (the paper's bias detection) and sentiment; "
                "best-match decoder cosine across two seeds.",
        best={k: v for k, v in MAIN_BEST.items() if k in frame.columns})


def _stability(table: pd.DataFrame, stamp: Stamp) -> str:
    cols = {"stability/max_cos_mean": "best-match cos.",
            "stability/assignment_mean": "one-to-one cos.",
            "stability/max_cos_frac_above_0.7": "matched $>0.7$",
            "stability/max_cos_frac_above_0.9": "matched $>0.9$"}
    main = table[table["group"] == "main"]
    present = [c for c in cols if c in main]
    frame = main.groupby("name", sort=False)[present].first().reset_index()
    return booktabs_table(
        frame, {"name": "SAE", **{c: cols[c] for c in present}}, stamp=stamp,
        label="tab:stability",
        caption="Feature stability across two training seeds: mean best-match decoder "
                "cosine, mean cosine of the optimal one-to-one assignment, and the fraction "
                "of latents whose best match exceeds 0.7 / 0.9 (both directions averaged).",
        best={c: "max" for c in present})


HEALTH_FMT = {"layer": "d", "letters kept": ".1f", "letter latents": ".1f",
              "mean k=1 F1": ".3f", "best k=1 F1": ".3f", "fires on other letters": ".3f",
              "meaningful": ".0%"}


def _absorption_health(table: pd.DataFrame, stamp: Stamp) -> str:
    frame = absorption_health(table).reset_index()
    cols = {"layer": "layer", "name": "SAE", "letters kept": "letters",
            "mean k=1 F1": "mean $F_1$", "best k=1 F1": "best $F_1$",
            "letter latents": "letter latents", "fires on other letters": "other letters",
            "meaningful": "meaningful"}
    return booktabs_table(
        frame, {k: v for k, v in cols.items() if k in frame.columns}, stamp=stamp,
        label="tab:absorption_health",
        fmt={k: v for k, v in HEALTH_FMT.items() if k in frame.columns},
        caption="Health of the absorption metric, per layer and SAE (mean over seeds): "
                "letters whose ground-truth probe has $F_1 > 0.6$; test $F_1$ of the best "
                "single main latent (mean over kept letters, and the best letter); letters "
                "whose single main latent reaches $F_1 \\geq 0.5$; how often a letter's main "
                "latents fire on other letters' words; the share of seeds on which "
                "absorption is meaningful (at least 20 letters and one letter latent).")


def _toy(toy: pd.DataFrame, stamp: Stamp) -> str:
    cols = {"run": "run", "l0": "L0", "explained_variance": "expl. var.",
            "mean_absorption": "absorption (exact)",
            "mean_probe_full_absorption": "absorption (probe pipeline)",
            "mean_absorption_alone": "control"}
    present = {k: v for k, v in cols.items() if k in toy}
    return booktabs_table(
        toy.sort_values(["sae", "l0"]), present, stamp=stamp, label="tab:toy",
        caption="Planted-absorption benchmark: every SAE across its sparsity sweep. Exact "
                "absorption against the planted ground truth beside the first-letter "
                "pipeline's full-absorption rate on the same tokens; the control is the "
                "exact rule applied where the parent fires alone.")


def write_tables(cfg: Profile, table: pd.DataFrame, results: pd.DataFrame,
                 toy: pd.DataFrame, manifest: dict) -> list[Path]:
    """Write the tables, profile.tex and numbers.tex; returns the changed files."""
    stamp = Stamp.for_profile(cfg)
    main_ids = {v: table[(table["group"] == "main") & (table["name"] == v)]["sae_id"].tolist()
                for v in ("atm", "topk", "jumprelu")}
    ours = ours_from_results(results, main_ids)
    numbers = {**setting_numbers(cfg, manifest), **result_numbers(ours)}
    means = main_table(table)
    for name, row in means.iterrows():
        for label, value in row.items():
            key = next((k for k, v in MAIN_COLUMNS.items() if v == label), label)
            numbers[f"main/{name}/{key.split('/')[-1]}"] = value
    numbers.update(_spread_and_sweep_numbers(table))
    numbers.update(_health_numbers(table))
    tables = {"main_results": _main_results(table, stamp),
              "paper_vs_ours": paper_vs_ours_table(ours, stamp),
              "stability": _stability(table, stamp),
              "absorption_health": _absorption_health(table, stamp),
              "toy": _toy(toy, stamp)}
    return write_paper_inputs(cfg, output_dirs(cfg)[1], stamp, tables, numbers)


SPREAD_METRICS = ("absorption/mean_full_absorption", "absorption/mean_absorption_fraction",
                  "core/explained_variance")


def _spread_and_sweep_numbers(table: pd.DataFrame) -> dict:
    """For the text: each main SAE's range over seeds (max - min) of the headline
    metrics, and L0 / absorption / explained variance of every sparsity-sweep run
    (``sweep/<run name>/...``)."""
    out = {}
    main = table[table["group"] == "main"]
    if "absorption/n_letters_kept" in main and main["absorption/n_letters_kept"].notna().any():
        out["absorption/letters_kept"] = int(main["absorption/n_letters_kept"].max())
    for name, runs in main.groupby("name", sort=False):
        for col in SPREAD_METRICS:
            if col in runs and runs[col].notna().sum() > 1:
                out[f"spread/{name}/{col.split('/')[-1]}"] = runs[col].max() - runs[col].min()
    sweeps = table[table["param"].isin(["k", "l1_coefficient", "l0_coefficient"])]
    for _, row in sweeps.iterrows():
        for col in ("core/l0", *SPREAD_METRICS):
            if col in row and pd.notna(row[col]):
                out[f"sweep/{row['name']}/{col.split('/')[-1]}"] = row[col]
    return out


def _health_numbers(table: pd.DataFrame) -> dict:
    """For the text: the absorption metric's health over every main and cross-layer
    SAE (``report.absorption_health``): the range of letters kept, the best single
    main-latent F1 anywhere, and how many SAE/layer rows are meaningful."""
    health = absorption_health(table)
    out = {}
    if "letters kept" in health:
        out["health/letters_kept_min"] = int(health["letters kept"].min())
        out["health/letters_kept_max"] = int(health["letters kept"].max())
    if "best k=1 F1" in health:
        out["health/best_k1_f1"] = health["best k=1 F1"].max()
    if "meaningful" in health:
        out["health/n_meaningful"] = int((health["meaningful"] > 0).sum())
        out["health/n_rows"] = len(health)
    return out


def write_figures(cfg: Profile, figures: dict) -> list[Path]:
    """Save each named figure as PDF and PNG (fixed metadata) into the figures dir."""
    from atm_repro.plots import save_figure

    out_dir = check_output_allowed(cfg, output_dirs(cfg)[0])
    stamp = Stamp.for_profile(cfg).comment.lstrip("% ")
    return [p for name, fig in sorted(figures.items())
            for p in save_figure(fig, out_dir, name, stamp)]
