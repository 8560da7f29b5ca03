"""``headline_fidelity``: does the fast step change what is learnt? Every headline
family at width ``HEADLINE_WIDTH`` and the smallest headline batch, ``steps`` steps
(a shortened budget), ``HEADLINE_FIDELITY_SEEDS`` each way: the plain step (eager,
float32) and the headline's (compiled, bfloat16 autocast). Per family and core
metric (the training summary on held-out rows): the fast mean, and whether it lies
within the float32 seeds' range (``<= 0`` passes: its distance outside it)."""

from __future__ import annotations

import dataclasses

import numpy as np

from atm_repro.bench.common import (
    HEADLINE_BATCHES,
    Row,
    headline_profile,
    headline_specs,
    open_cache,
    slash_keys,
    train_steps,
)
from atm_repro.config import Profile
from atm_repro.runs import bench_dir

HEADLINE_FIDELITY_SEEDS = (0, 1, 2)
HEADLINE_CORE = ("l0", "explained_variance", "mse", "dead_frac")  # training-summary metrics


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Every headline family trained eager in float32 and compiled in bfloat16."""
    cache = open_cache(profile)
    B = min(HEADLINE_BATCHES)
    arms = {"float32": (headline_profile(profile, B, compiled=False), "float32"),
            "compiled bfloat16": (headline_profile(profile, B), "bfloat16")}
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for name, spec in headline_specs(profile).items():
        for arm, (shaped, dtype) in arms.items():
            for seed in HEADLINE_FIDELITY_SEEDS:
                out = bench_dir(profile) / "headline_fidelity" / f"{name}-{arm}-s{seed}"
                metrics = train_steps(shaped, cache, name, steps, out, fresh=True, seed=seed,
                                      spec=dataclasses.replace(spec, dtype=dtype)).metrics
                for key in HEADLINE_CORE:
                    values.setdefault((name, arm), {}).setdefault(key, []).append(metrics[key])
    rows = []
    for name in headline_specs(profile):
        for key in HEADLINE_CORE:
            ref, fast = values[(name, "float32")][key], values[(name, "compiled bfloat16")][key]
            mean = float(np.mean(fast))
            outside = max(min(ref) - mean, mean - max(ref), 0.0)
            rows += [Row("headline fidelity", f"{name} {key}: float32 seeds "
                         f"[{min(ref):.4g}, {max(ref):.4g}], compiled bfloat16 mean", mean),
                     Row("headline fidelity", f"{name} {key}: outside the float32 range by",
                         outside, "", "<=", 0.0)]
    return rows, {"batch_size": B, "steps": steps, "seeds": list(HEADLINE_FIDELITY_SEEDS),
                  "values": slash_keys(values)}
