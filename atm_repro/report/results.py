"""Readers of a profile's eval results: one tidy table keyed by metric ids.

``read_results`` reads every result JSON of the discovered SAEs once into a
long table: one row per (SAE, metric id) with the SAE's description
(``SAE_COLUMNS``), the metric id ``<eval>/<metric>`` (``core/l0``,
``absorption/mean_full_absorption``, ``stability/max_cos_mean``) and its value
(missing values are left out). A seed pair's stability numbers are rows of both
SAEs. ``per_sae`` is the wide view (one row per SAE, one column per metric id)
that summaries and figures use; per-item details (per letter, histograms) have
their own readers.
"""

from __future__ import annotations

import pandas as pd

from atm_repro import metrics
from atm_repro.config import Profile
from atm_repro.evals.results import read_result, result_path
from atm_repro.evals.stability import PAIR_SEPARATOR, pair_members
from atm_repro.evaluate import discover_saes
from atm_repro.profiles import derived_runs, scale_runs
from atm_repro.runs import SAERecord, read_metrics, results_dir
from atm_repro.saes.atm import ATMConfig

SAE_COLUMNS = ["sae_id", "model", "group", "name", "variant", "mask_mode", "layer", "seed",
               "base", "param", "value"]
# Absorption's four measures are NaN in ``metrics`` where the metric is not
# meaningful (evals.absorption.health); the computed values are kept under
# this prefix so that a reader can still see them, flagged by the health.
RAW_ABSORPTION = f"{metrics.ABSORPTION}/{metrics.RAW}/"


def _describe(profile: Profile, record: SAERecord, derived: dict) -> dict:
    """The SAE columns of one record: model, group, variant, ATM's mask mode (None
    for other variants), and for a derived run the base spec (its family), the
    changed parameter and its value."""
    run = derived.get(record.name)
    spec = profile.train.saes.get(record.name) or run.spec
    mask_mode = (spec.params.get("mask_mode", ATMConfig.mask_mode) if spec.variant == "atm"
                 else None)
    return {"sae_id": record.sae_id, "model": profile.model.name, "group": record.group,
            "name": record.name, "variant": spec.variant, "mask_mode": mask_mode,
            "layer": record.layer, "seed": record.seed,
            "base": run.base if run else record.name, "param": run.param if run else None,
            "value": run.value if run else None}


def _result_rows(data: dict) -> dict[str, float]:
    """Metric id -> value of one result JSON (absorption's raw measures included)."""
    out = {f"{data['eval_name']}/{k}": float(v) for k, v in data["metrics"].items()
           if v is not None}
    if data["eval_name"] == metrics.ABSORPTION:
        out.update({f"{RAW_ABSORPTION}{k}": float(v)
                    for k, v in data["details"].get("measures", {}).items() if v is not None})
    return out


def _training_rows(record: SAERecord) -> dict[str, float]:
    """How far the SAE (or snapshot) trained: ``train/*`` rows from its run's
    metrics.json and key (tokens and steps seen; the batch size and width it ran at)."""
    run = read_metrics(record.path)
    train = run["key"]["train"]
    return {metrics.TRAIN_TOKENS.id: float(run["tokens"]),
            metrics.TRAIN_STEPS.id: float(run["steps"]),
            metrics.TRAIN_BATCH_SIZE.id: float(train["batch_size"]),
            metrics.TRAIN_WIDTH.id: float(train["width"])}


def read_results(profile: Profile) -> pd.DataFrame:
    """The tidy table of every discovered SAE's results (module docstring):
    ``SAE_COLUMNS`` + ``metric`` + ``result``, SAEs in discovery order."""
    derived = {run.name: run for run in derived_runs(profile) + scale_runs(profile)}
    root = results_dir(profile)
    records = discover_saes(profile)
    described = {r.sae_id: _describe(profile, r, derived) for r in records}
    rows = []
    for record in records:
        rows += [{**described[record.sae_id], "metric": m, "result": v}
                 for m, v in _training_rows(record).items()]
    for sae_id, desc in described.items():
        for path in sorted((root / sae_id).glob("*.json")):
            rows += [{**desc, "metric": m, "result": v}
                     for m, v in _result_rows(read_result(path)).items()]
    for path in sorted(root.glob(f"*{PAIR_SEPARATOR}*/stability.json")):
        data = read_result(path)
        for sae_id in pair_members(data["sae_id"]):
            if sae_id in described:
                rows += [{**described[sae_id], "metric": f"{metrics.STABILITY}/{k}",
                          "result": float(v)} for k, v in data["metrics"].items() if v is not None]
    return pd.DataFrame(rows, columns=[*SAE_COLUMNS, "metric", "result"])


def per_sae(tidy: pd.DataFrame) -> pd.DataFrame:
    """The wide view of ``read_results``: one row per SAE (discovery order), the
    SAE columns, then one column per metric id (first-seen order)."""
    rows = []
    for _, frame in tidy.groupby("sae_id", sort=False):
        first = frame.iloc[0]
        rows.append({**{c: first[c] for c in SAE_COLUMNS},
                     **dict(zip(frame["metric"], frame["result"]))})
    return pd.DataFrame(rows)


def _first_seed_main(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per main SAE of the first seed: sae_id and name."""
    main = tidy[tidy["group"] == "main"].drop_duplicates("sae_id")
    return main[main["seed"] == main["seed"].min()]


LETTER_COLUMNS = ["name", "seed", "letter", "full_absorption_rate", "mean_absorption_fraction"]


def absorption_by_letter(profile: Profile, tidy: pd.DataFrame) -> pd.DataFrame:
    """Per-letter absorption of every main SAE at the main layer, every seed: name,
    seed, letter and both rates (the computed values, also where the metric is not
    meaningful; the health says whether they mean anything)."""
    main = tidy[(tidy["group"] == "main") & (tidy["layer"] == profile.train.layer)]
    rows = []
    for _, r in main.drop_duplicates("sae_id").iterrows():
        path = result_path(results_dir(profile), r["sae_id"], "absorption")
        if not path.exists():
            continue
        for letter, d in read_result(path)["details"]["per_letter"].items():
            if d["n_true_positives"]:
                rows.append({"name": r["name"], "seed": r["seed"], "letter": letter,
                             "full_absorption_rate": d["full_absorption_rate"],
                             "mean_absorption_fraction": d["mean_absorption_fraction"]})
    return pd.DataFrame(rows, columns=LETTER_COLUMNS)


def density_histograms(profile: Profile, tidy: pd.DataFrame) -> dict[str, dict]:
    """The core eval's latent-density histogram of each main SAE (first seed)."""
    return {r["name"]: read_result(result_path(results_dir(profile), r["sae_id"], "core"))
            ["details"]["density_histogram"] for _, r in _first_seed_main(tidy).iterrows()}
