"""Summaries of runs and results: what a stage will do, per-SAE tables, the
main table and the absorption metric's health.

Result summaries work on metric ids (``report.results``); ``labelled`` attaches
display labels when a notebook shows a table. Text summaries are deterministic
(notebooks print them and nbval checks them).
"""

from __future__ import annotations

import pandas as pd

from atm_repro import metrics
from atm_repro.config import Profile, format_value
from atm_repro.profiles import derived_runs, resolved_param, scale_runs
from atm_repro.runs import parse_sae_dir, read_metrics, sae_dir


def describe_profile(cfg: Profile, stage: str) -> str:
    """A short, stable description of what ``stage`` will do under ``cfg``."""
    lines = [f"profile: {cfg.name}{' (smoke: numbers are meaningless)' if cfg.smoke else ''}",
             f"model: {cfg.model.name} ({cfg.model.dtype}, {cfg.model.device})"]
    if stage == "cache":
        c = cfg.cache
        lines += [
            f"corpus: {cfg.corpus.name}, context {cfg.corpus.context}, "
            f"eval fraction {cfg.corpus.eval_fraction}",
            f"layers: {c.layers}  dtype: {c.dtype}",
            f"tokens: train {c.train_tokens:,}, eval {c.eval_tokens:,}",
        ]
    elif stage == "train":
        t = cfg.train
        lines += [
            f"layer: {t.layer}  width: {t.width}  batch: {t.batch_size}  tokens: {t.tokens:,}",
            f"lr: {t.lr:g}  seeds: {t.seeds}"
            + "".join(f"  {n}: {seeds}" for n, seeds in t.sae_seeds.items()),
        ]
        for name, spec in t.saes.items():
            params = ", ".join(f"{k}={v}" for k, v in sorted(spec.params.items()))
            extra = " [token-masked cache]" if spec.token_masked else ""
            lr = f" lr={spec.lr:g}" if spec.lr is not None else ""
            lines.append(f"  {name}: {spec.variant}({params}){lr}{extra}")
    elif stage == "ablations":
        runs = derived_runs(cfg)
        lines.append(f"layer: {cfg.train.layer}  runs: {len(runs)}  "
                     f"SAEs: {sum(len(r.seeds) for r in runs)}")
        for run in runs:
            lines.append(f"  {run.name}: {run.base} with {run.param}="
                         f"{format_value(run.value)}, seeds {list(run.seeds)}")
        scale = scale_runs(cfg)
        if scale:
            lines.append(f"scale study: {len(scale)} runs, SAEs: "
                         f"{sum(len(r.seeds) for r in scale)}")
            lines += [f"  {r.name}: width {r.spec.width or cfg.train.width}, tokens "
                      f"{r.spec.tokens or cfg.train.tokens:,}" for r in scale]
    elif stage == "cross_layer":
        c = cfg.cross_layer
        lines.append(f"layers: {c.layers}  seed: {c.seed}  SAEs: {c.saes}")
    elif stage == "evaluate":
        lines.append(f"evals: core, absorption, probing, stability, toy; settings: "
                     f"{ {k: v for k, v in sorted(cfg.evals.items())} }")
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return "\n".join(lines)


TRAINING_COLUMNS = {
    "l0": "L0",
    "explained_variance": "explained var.",
    "mse": "MSE",
    "dead_frac": "dead frac.",
    "wall_s": "wall s",
    "tokens_per_s": "tokens/s",
}


def training_table(results) -> pd.DataFrame:
    """One row per trained SAE (``train.TrainResult``) with its summary metrics."""
    rows = [{"sae": r.name, "layer": parse_sae_dir(r.path)[0], "seed": r.seed,
             "status": r.status,
             **{label: r.metrics[key] for key, label in TRAINING_COLUMNS.items()}}
            for r in results]  # no results: the columns, no rows
    return pd.DataFrame(rows, columns=["sae", "layer", "seed", "status",
                                       *TRAINING_COLUMNS.values()]).round(4)


def cross_layer_table(results) -> pd.DataFrame:
    """``training_table`` of the cross-layer runs, sorted by SAE then layer."""
    return training_table(results).sort_values(["sae", "layer"], ignore_index=True)


def ablation_table(cfg: Profile) -> pd.DataFrame:
    """One row per notebook-03 point and seed (the main-set run included as the
    default value of each factor, at the seeds it shares with the points):
    param, value, seed and the training summary metrics."""
    layer = cfg.train.layer
    rows, seeds_of = [], {}
    for run in derived_runs(cfg):
        seeds_of.setdefault((run.base, run.param), set()).update(run.seeds)
        rows += [{"base": run.base, "param": run.param, "value": run.value, "seed": seed,
                  **read_metrics(sae_dir(cfg, layer, run.name, seed))} for seed in run.seeds]
    for (base, param), seeds in sorted(seeds_of.items()):  # the default point of each factor
        default = resolved_param(cfg, base, param)
        rows += [{"base": base, "param": param, "value": default, "seed": seed,
                  **read_metrics(sae_dir(cfg, layer, base, seed))}
                 for seed in sorted(seeds & set(cfg.train.seeds_of(base)))]
    cols = ["base", "param", "value", "seed", *TRAINING_COLUMNS]
    frame = pd.DataFrame(rows, columns=cols).rename(columns=TRAINING_COLUMNS)
    # numbers before choices (a factor may be either), each in its natural order
    order = frame["value"].map(lambda v: (isinstance(v, str), v))
    frame = frame.assign(_order=order).sort_values(["base", "param", "_order", "seed"],
                                                   ignore_index=True)
    return frame.drop(columns="_order").round(4)


# The metrics the summaries show (``labelled`` attaches their short labels).
MAIN_METRICS = (metrics.L0, metrics.MSE, metrics.COSINE, metrics.EXPLAINED_VARIANCE,
                metrics.CE_LOSS_SCORE, metrics.FULL_ABSORPTION, metrics.ABSORPTION_FRACTION,
                metrics.PROBING_TOP1, metrics.STABILITY_MAX_COS, metrics.STABILITY_ABOVE_09)
HEALTH_METRICS = (metrics.LETTERS_KEPT, *metrics.ABSORPTION_HEALTH, metrics.MEANINGFUL)


def label(metric: str) -> str:
    """The short label of a metric id (``metrics.get``); an undeclared id as it is."""
    declared = metrics.get(metric)
    return declared.short if declared else metric


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with display labels for its metric-id columns (for showing only)."""
    return frame.rename(columns=label)


def probing_datasets(columns) -> list[str]:
    """The probing datasets with a per-dataset top-1 metric among ``columns``."""
    return sorted(c.split("/")[1] for c in columns if metrics.is_probing_dataset(c))


def main_table(table: pd.DataFrame) -> pd.DataFrame:
    """The main-layer table (``results.per_sae`` in): one row per main SAE name,
    metrics averaged over seeds (``n_seeds`` says over how many), per-dataset
    top-1 probing included; columns are metric ids."""
    main = table[table["group"] == "main"]
    columns = [*(m.id for m in MAIN_METRICS),
               *(metrics.probing_dataset(d).id for d in probing_datasets(main.columns))]
    present = [c for c in columns if c in main.columns]
    out = main.groupby("name", sort=False)[present].mean()
    out.insert(0, "n_seeds", main.groupby("name", sort=False)["seed"].nunique())
    return out.round(4)


def absorption_health(table: pd.DataFrame) -> pd.DataFrame:
    """Whether absorption means something, per layer and SAE name (mean over seeds):
    letters kept by the ground-truth probe, the F1 of the best single main latent
    (mean over letters and best letter), letters with a letter latent, how often
    main latents fire on other letters' words, and the share of seeds where the
    metric is meaningful (``evals.absorption.health``)."""
    runs = table[table["group"].isin(["main", "cross_layer"])]
    present = [m.id for m in HEALTH_METRICS if m.id in runs.columns]
    return runs.groupby(["layer", "name"], sort=True)[present].mean().round(3)
