"""The convergence study: each main-set SAE read at its training snapshots and at its end.

The trainer saves a run's SAE at ``train.snapshot_tokens`` (``runs.snapshot_dir``);
the evals score each snapshot like a finished SAE, and ``report.results`` gives it a
row of group ``snapshot`` under its spec name, with the tokens it had seen
(``train/tokens``). A family's curve is its snapshots and its finished SAEs at the
main layer, one point per token count, for every main-set spec that trains on the
profile's full budget (a spec with its own budget, such as ``atm-short``, is no point
on the curve). A point is the mean over its seeds; stability numbers belong to a
seed pair and sit on both of its SAEs, so they are averaged over disjoint pairs.

A snapshot is the same run mid-way: it has not had the learning-rate decay of the
run's last ``train.lr_decay_frac``, so it is no SAE trained to that budget.
"""

from __future__ import annotations

import pandas as pd

from atm_repro import metrics
from atm_repro.config import Profile
from atm_repro.report.comparisons import full_budget

TOKENS = metrics.TRAIN_TOKENS.id
STABILITY = (metrics.STABILITY_MAX_COS.id, metrics.STABILITY_CHANCE.id)
NO_SNAPSHOTS = "no training snapshots in this profile (train.snapshot_tokens)"


def families(cfg: Profile) -> list[str]:
    """The main-set spec names that train on the profile's full budget (``train.tokens``),
    in the profile's order: the candidates for a convergence curve."""
    return [name for name in cfg.train.saes if full_budget(cfg, name)]


def convergence_runs(table: pd.DataFrame, names: list[str], layer: int) -> pd.DataFrame:
    """The rows of ``report.results.per_sae``'s table on the curves: the snapshots and
    finished SAEs at ``layer`` of those ``names`` that have a snapshot there, with an
    integer ``tokens`` column (their ``train/tokens``); families in ``names``' order."""
    if TOKENS not in table or table.empty:
        return table.iloc[:0].assign(tokens=pd.Series(dtype=int))
    at = table[(table["layer"] == layer) & table["name"].isin(names)
               & table["group"].isin(["main", "snapshot"]) & table[TOKENS].notna()]
    snapped = set(at.loc[at["group"] == "snapshot", "name"])
    at = at[at["name"].isin(snapped)]
    order = {name: i for i, name in enumerate(names)}
    at = at.assign(tokens=at[TOKENS].round().astype(int), _order=at["name"].map(order))
    return at.sort_values(["_order", "tokens", "seed"], kind="stable").drop(columns="_order")


def pairs_of(runs: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """One row per disjoint seed pair of one point's SAEs (a pair's numbers sit on both
    of its members: every other seed, in seed order), pairs with a value only."""
    present = [c for c in cols if c in runs]
    pairs = runs.sort_values("seed", kind="stable").iloc[0::2]
    return pairs[pairs[present].notna().any(axis=1)] if present else pairs.iloc[:0]


def points(runs: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """One row per family x token count of ``convergence_runs``' rows (families in their
    order, tokens ascending): ``name``, ``tokens``, ``n_seeds`` (SAEs at the point),
    ``n_pairs`` (seed pairs with a stability value) and the mean of each of ``cols``
    present: over the seeds, over disjoint pairs for the stability metrics."""
    rows = []
    for (name, tokens), g in runs.groupby(["name", "tokens"], sort=False):
        pairs = pairs_of(g, [c for c in cols if c in STABILITY])
        row = {"name": name, "tokens": int(tokens), "n_seeds": g["seed"].nunique(),
               "n_pairs": len(pairs)}
        for c in cols:
            if c in g:
                row[c] = float((pairs if c in STABILITY else g)[c].mean())
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["name", "tokens", "n_seeds", "n_pairs",
                                        *[c for c in cols if c in runs]])
    order = {name: i for i, name in enumerate(dict.fromkeys(runs["name"]))}
    frame["_order"] = frame["name"].map(order)
    frame = frame.sort_values(["_order", "tokens"], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def nominal(tokens: float) -> float:
    """A token count as the round number it was asked for: the fewest significant
    digits (up to 3) within 1% (a snapshot lands on a whole batch: 249,856 -> 250,000;
    a run's end 4,999,168 -> 5,000,000)."""
    for sig in (1, 2, 3):
        rounded = float(f"{tokens:.{sig - 1}e}")
        if abs(rounded - tokens) <= 0.01 * tokens:
            return rounded
    return float(f"{tokens:.2e}")


def tick_label(tokens: float) -> str:
    """An axis or table label of a token count: 0.25M, 5M (from 100k up), 50k, 800."""
    n = nominal(tokens)
    if n >= 1e5:
        return f"{n / 1e6:g}M"
    return f"{n / 1e3:g}k" if n >= 1e3 else f"{n:g}"


def millions(tokens: float) -> str:
    """A token count in millions, as on the figure's axis: 0.25, 0.5, 1, 5."""
    return f"{nominal(tokens) / 1e6:g}"


def key_label(tokens: float) -> str:
    """A token count in a number key, with no decimal point (``latex.macro_name`` would
    read 1.5M as 15M): 250k, 1M, 1500k, 800."""
    n = int(nominal(tokens))
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


NUMBERS = {metrics.L0.id: "l0", metrics.EXPLAINED_VARIANCE.id: "explained_variance",
           metrics.CE_LOSS_SCORE.id: "ce_loss_score", metrics.MAX_K1_F1.id: "max_k1_f1",
           metrics.LETTER_LATENTS.id: "n_letter_latents",
           metrics.FULL_ABSORPTION.raw_id: "raw_mean_full_absorption",
           metrics.STABILITY_MAX_COS.id: "max_cos_mean",
           metrics.STABILITY_CHANCE.id: "chance_max_cos_mean"}


def convergence_numbers(cfg: Profile, table: pd.DataFrame) -> dict[str, float | int]:
    """For the text: ``convergence/<name>/t<tokens>/<metric>`` (``key_label``: t250k,
    t5M) of every point, mean over its seeds (stability: over disjoint pairs), with
    ``n_seeds``, ``n_pairs`` and ``n_meaningful`` (seeds whose absorption passes the
    health check) per point; a metric a point lacks is left out."""
    runs = convergence_runs(table, families(cfg), cfg.train.layer)
    out: dict[str, float | int] = {}
    for row in points(runs, [*NUMBERS, metrics.MEANINGFUL.id]).to_dict("records"):
        prefix = f"convergence/{row['name']}/t{key_label(row['tokens'])}"
        out[f"{prefix}/n_seeds"] = int(row["n_seeds"])
        if row["n_pairs"]:
            out[f"{prefix}/n_pairs"] = int(row["n_pairs"])
        if pd.notna(row.get(metrics.MEANINGFUL.id)):  # seeds passing the health check
            out[f"{prefix}/n_meaningful"] = round(row[metrics.MEANINGFUL.id] * row["n_seeds"])
        for col, key in NUMBERS.items():
            if pd.notna(row.get(col)):
                out[f"{prefix}/{key}"] = row[col]
    return out
