"""``training``: every ``train.saes`` spec trained ``steps`` steps by
``train.train_sae`` on the clean cache of ``train.layer`` (token-masked specs too:
the timing only depends on the shapes): tokens/s and achieved / peak FLOP rate
(``common``'s module docstring); TopK and ATM against the standard SAE. ATM specs
are timed with ``warmup_steps = 0``, so that every step after the first masks (its
steady state; the cpu profile masks 80 % of its steps)."""

from __future__ import annotations

import dataclasses

from atm_repro.bench.common import (
    FLOPS_PER_BDF,
    TRAIN_ROUNDS,
    Row,
    first_spec,
    matmul_reference_seconds,
    open_cache,
    train_steps,
)
from atm_repro.config import Profile
from atm_repro.runs import bench_dir


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """tokens/s and achieved / peak FLOP rate of every spec; TopK and ATM vs standard.

    Each spec is trained ``TRAIN_ROUNDS`` times, the rounds interleaved across
    specs, and its fastest round counts; the matmul reference is measured before
    and after the trainings and its fastest counts (a drift of the machine's
    speed then cannot favour either side of a ratio).
    """
    cache = open_cache(profile)
    tcfg = profile.train
    B, D, F = tcfg.batch_size, cache.d_model, tcfg.width
    flops = FLOPS_PER_BDF * B * D * F
    specs = {}
    for name, spec in tcfg.saes.items():
        if spec.variant == "atm":  # time the masked steady state (module docstring)
            spec = dataclasses.replace(spec, params={**spec.params, "warmup_steps": 0})
        specs[name] = spec
    ref_times = [matmul_reference_seconds(B, D, F, tcfg.device)]
    # Warm-up run (discarded): the first optimizer step of a process pays one-time
    # imports and kernel set-up that would otherwise land on the first spec timed.
    first = next(iter(specs))
    train_steps(profile, cache, first, 3, bench_dir(profile) / "saes" / "warmup", fresh=True)
    rounds: dict[str, list[dict]] = {name: [] for name in specs}
    for _ in range(TRAIN_ROUNDS):
        for name, spec in specs.items():
            rounds[name].append(train_steps(profile, cache, name, steps,
                                            bench_dir(profile) / "saes" / name, fresh=True,
                                            spec=spec).metrics)
    ref_times.append(matmul_reference_seconds(B, D, F, tcfg.device))
    ref_s = min(ref_times)
    rows = [Row("training", "matmul reference (peak)", flops / ref_s / 1e9, "GFLOP/s")]
    step_s = {}
    for name, spec in specs.items():
        metrics = min(rounds[name], key=lambda m: m["wall_s"])
        step_s[name] = metrics["wall_s"] / steps
        op, bound = (">=", 0.60) if spec.variant in ("standard", "atm") else (None, None)
        rows += [Row("training", f"{name}: tokens/s", metrics["tokens_per_s"], "tok/s"),
                 Row("training", f"{name}: achieved / peak FLOP rate", ref_s / step_s[name], "x",
                     op, bound)]
    standard = first_spec(profile, "standard")
    if standard is not None:
        for name, spec in tcfg.saes.items():
            if spec.variant in ("topk", "batchtopk"):
                rows.append(Row("training", f"{name}: tokens/s / {standard} tokens/s",
                                step_s[standard] / step_s[name], "x", ">", 1.0))
            elif spec.variant == "atm":
                rows.append(Row("training", f"{name}: step time overhead over {standard}",
                                100 * (step_s[name] / step_s[standard] - 1), "%", "<=", 15.0))
    return rows, {"B": B, "D": D, "F": F, "steps": steps, "rounds": TRAIN_ROUNDS,
                  "flops_per_step": flops, "reference_s": ref_times, "step_s": step_s}
