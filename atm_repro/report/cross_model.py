"""The main comparison on every model: ATM minus each other family (and minus ATM's
controls) at matched L0, on the profile's own model and on each companion's
(``Profile.companions``: e.g. the ``cpu`` profile's Gemma-3 beside the
``smollm2`` profile's SmolLM2).

Each model is compared at its own TopK operating point (its TopK main set's mean
L0), with the matched comparison of ``report.comparisons`` (interpolation along
the sparsity curves, 95% bootstrap intervals over seeds). The companions' results
are read from their own run directories; a companion that has not been evaluated
is an error naming the command that evaluates it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from atm_repro import metrics
from atm_repro.config import ConfigError, Profile
from atm_repro.profiles import companion_profiles
from atm_repro.report import style
from atm_repro.report.comparisons import (
    COMPARED_METRICS,
    MATCHED_RULE,
    METHOD,
    SHORT_VERDICT,
    matched_comparisons,
    others,
    targets,
)
from atm_repro.report.latex import booktabs_table, format_cell, missing_table
from atm_repro.report.provenance import Stamp
from atm_repro.report.results import per_sae, read_results

# The metrics compared across models at matched L0 (the CE-loss score is measured
# on the main set only, so it has no matched-L0 value)
CROSS_METRICS = tuple(m.id for m in (metrics.EXPLAINED_VARIANCE, metrics.ABSORPTION_FRACTION,
                                     metrics.FULL_ABSORPTION))
FRAME_COLUMNS = ["profile", "model", "layer", "target_l0", "other", "metric", "diff", "lo", "hi",
                 "meaningful", "verdict"]


@dataclass(frozen=True)
class ModelResults:
    """One model's evaluated SAEs: its profile, ``results.read_results``' tidy
    table and that table's ``results.per_sae`` view."""

    cfg: Profile
    tidy: pd.DataFrame
    table: pd.DataFrame

    @classmethod
    def of(cls, cfg: Profile, tidy: pd.DataFrame) -> ModelResults:
        return cls(cfg, tidy, per_sae(tidy))


def all_models(cfg: Profile, tidy: pd.DataFrame) -> list[ModelResults]:
    """``cfg``'s own results (``tidy``) first, then each companion's
    (``companion_results``)."""
    return [ModelResults.of(cfg, tidy), *companion_results(cfg)]


def companion_results(cfg: Profile) -> list[ModelResults]:
    """Each companion's evaluated SAEs; ``ConfigError`` naming the command when a
    companion lacks a main-set SAE of a compared family."""
    out = []
    for other in companion_profiles(cfg):
        results = ModelResults.of(other, read_results(other))
        table = results.table
        names = set(table.loc[table["group"] == "main", "name"]) if len(table) else set()
        missing = sorted({METHOD, *others(other)} - names)
        if missing:
            raise ConfigError(
                f"companion profile {other.name!r} has no evaluated main-set SAEs for "
                f"{missing}: run `atm-repro run --profile {other.name}` first "
                f"(`atm-repro run --profile {cfg.name}` runs it before its own notebooks)")
        out.append(results)
    return out


def cross_model_frame(models: list[ModelResults]) -> pd.DataFrame:
    """One row per (model, other family, metric): ATM minus the other at the
    model's TopK L0, with its 95% interval and verdict (``FRAME_COLUMNS``)."""
    rows = []
    for m in models:
        goal = targets(m.cfg, m.table)["L0"]
        for c in matched_comparisons(m.cfg, m.table):
            if c.match == "L0" and c.metric in CROSS_METRICS:
                rows.append({"profile": m.cfg.name, "model": m.cfg.model.name,
                             "layer": m.cfg.train.layer, "target_l0": goal,
                             "other": c.other, "metric": c.metric,
                             "diff": c.diff.estimate, "lo": c.diff.lo, "hi": c.diff.hi,
                             "meaningful": c.meaningful, "verdict": c.verdict})
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


def _cell(row: pd.Series) -> str:
    if not math.isfinite(row["diff"]):
        return "n/a"
    iv = (f"{row['diff']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"
          if math.isfinite(row["lo"]) and math.isfinite(row["hi"]) else f"{row['diff']:.3f}")
    return f"{iv} {SHORT_VERDICT.get(row['verdict'], row['verdict'])}".strip()


CROSS_MODEL_CAPTION = (
    "The main comparison on each model: ATM minus each other family and minus "
    "ATM's controls, at the model's TopK $L_0$, each family read off its sparsity "
    "curve: difference [95\\% CI] and verdict (better / worse: ATM's, the "
    "interval excludes 0; no diff.: it includes 0; n.m.: absorption not "
    "meaningful on that model, raw values shown; n/a: the target lies outside "
    "a curve; not trained: that model's profile has no such SAE).")


def cross_model_table(frame: pd.DataFrame, stamp: Stamp) -> str:
    """``tab:cross_model``: one row per (other family, metric), one column per model;
    without any comparison (no model trains ATM and another family) it says so."""
    if frame.empty:
        return missing_table("No comparison: no model's run trained ATM and another "
                             "family.", CROSS_MODEL_CAPTION, "tab:cross_model", stamp)
    labels = {m.id: m.label for m in COMPARED_METRICS}
    models = list(dict.fromkeys(zip(frame["model"], frame["layer"])))
    wide: dict[tuple[str, str], dict] = {}
    for _, row in frame.iterrows():
        key = (row["other"], row["metric"])
        cells = wide.setdefault(key, {"other": style.label(row["other"]),
                                      "metric": labels[row["metric"]]})
        cells[f"{row['model']}/{row['layer']}"] = _cell(row)
    # a family one model's profile does not train
    table = pd.DataFrame(list(wide.values())).fillna("not trained")
    columns = {"other": "against", "metric": "metric"}
    for model, layer in models:
        target = frame.loc[(frame["model"] == model) & (frame["layer"] == layer),
                           "target_l0"].iloc[0]
        columns[f"{model}/{layer}"] = (f"{model}, layer {layer} "
                                       f"($L_0 = {format_cell(target, '.0f')}$)")
    return booktabs_table(
        table, columns, stamp=stamp, label="tab:cross_model", align="ll" + "r" * len(models),
        caption=CROSS_MODEL_CAPTION, notes=MATCHED_RULE)


def health_numbers(models: list[ModelResults]) -> dict[str, float]:
    """Whether absorption is measurable on each model, for the text:
    ``crossmodel/<profile>/best_letter_f1`` (the best single-latent letter F1 of any
    main-set or sweep SAE at the main layer, per-SAE value) and
    ``crossmodel/<profile>/meaningful_percent`` (the percentage of those SAEs whose
    absorption metric is meaningful)."""
    out = {}
    for m in models:
        t = m.table
        rows = t[(t["layer"] == m.cfg.train.layer) & t["group"].isin(["main", "ablation"])]
        for key, col, agg, scale in (("best_letter_f1", metrics.MAX_K1_F1.id, "max", 1),
                                     ("meaningful_percent", metrics.MEANINGFUL.id, "mean",
                                      100)):
            if col in rows and rows[col].notna().any():
                out[f"crossmodel/{m.cfg.name}/{key}"] = scale * float(rows[col].agg(agg))
    return out


def cross_model_numbers(frame: pd.DataFrame) -> dict[str, float | str]:
    """For the text, keyed by profile (``cpu``, ``smollm2``):
    ``crossmodel/<profile>/<other>/<metric>/{diff,lo,hi,verdict}``,
    ``crossmodel/<profile>/target`` (TopK's L0) and ``crossmodel/<profile>/model``."""
    out: dict[str, float | str] = {}
    for _, row in frame.iterrows():
        key = f"crossmodel/{row['profile']}/{row['other']}/{row['metric'].split('/')[-1]}"
        for part in ("diff", "lo", "hi"):
            if math.isfinite(row[part]):
                out[f"{key}/{part}"] = float(row[part])
        out[f"{key}/verdict"] = row["verdict"]
        out[f"crossmodel/{row['profile']}/target"] = float(row["target_l0"])
        out[f"crossmodel/{row['profile']}/model"] = row["model"]
    return out
