"""Deterministic text summaries that notebooks print (and nbval checks)."""

from __future__ import annotations

from atm_repro.config import Profile


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
            f"lr: {t.lr:g}  seeds: {t.seeds}",
        ]
        for name, spec in t.saes.items():
            params = ", ".join(f"{k}={v}" for k, v in sorted(spec.params.items()))
            extra = " [token-masked cache]" if spec.token_masked else ""
            lr = f" lr={spec.lr:g}" if spec.lr is not None else ""
            lines.append(f"  {name}: {spec.variant}({params}){lr}{extra}")
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


def training_table(results):
    """One row per trained SAE (``train.TrainResult``) with its summary metrics."""
    import pandas as pd

    rows = [{"sae": r.name, "seed": r.seed, "status": r.status,
             **{label: r.metrics[key] for key, label in TRAINING_COLUMNS.items()}}
            for r in results]
    return pd.DataFrame(rows).round(4)
