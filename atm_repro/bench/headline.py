"""``headline``: training at the headline shapes (width ``HEADLINE_WIDTH``, each
batch of ``HEADLINE_BATCHES``): every family (``headline_specs``) compiled in
bfloat16, ``steps`` steps each after a two-step run that compiles its kernel (the
compile time is a row of its own). Rows: tokens/s; the dense-equivalent FLOP rate
(``common``'s module docstring) over a square bfloat16 GEMM's, measured before and
after (fastest counts); the five SAE-step matmuls alone over the same GEMM (what no
elementwise work could beat); ATM's and JumpReLU's tokens/s over the standard
SAE's. Then seconds per SAE of each eval on the trained width-``HEADLINE_WIDTH``
SAEs (the largest batch's), after the shared preparation (the run's eval cache:
cold only if it is empty)."""

from __future__ import annotations

import time

import torch

from atm_repro.bench.common import (
    FLOPS_PER_BDF,
    HEADLINE_BATCHES,
    HEADLINE_WIDTH,
    Row,
    bf16_matmul_seconds,
    eval_seconds,
    headline_profile,
    headline_specs,
    interleaved_medians,
    open_cache,
    require_bf16,
    train_steps,
)
from atm_repro.config import Profile, to_dict
from atm_repro.runs import bench_dir, eval_cache_dir

GEMM_SIDE = 2048  # the square bfloat16 GEMM every training rate is set against
HEADLINE_FLOOR = 0.6  # achieved (10 B D F per step) / square GEMM rate, every family
HEADLINE_VS_STANDARD = 0.85  # ATM and JumpReLU tokens/s / the standard SAE's


def square_gemm_seconds(device: str = "cpu") -> float:
    """Median seconds of one bfloat16 GEMM of side ``GEMM_SIDE``."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_SIDE, GEMM_SIDE, generator=gen).to(device, torch.bfloat16)
            for _ in range(2))
    return interleaved_medians({"gemm": lambda: a @ b}, device=device)["gemm"]


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Every headline family trained at each headline batch, then its evals timed."""
    require_bf16(profile)
    cache = open_cache(profile)
    D, device = cache.d_model, profile.train.device
    specs = headline_specs(profile)
    gemm_s = [square_gemm_seconds(device)]
    step_s, compile_s, saes = {}, {}, {}
    for B in HEADLINE_BATCHES:
        shaped = headline_profile(profile, B)
        for name, spec in specs.items():
            out = bench_dir(profile) / "headline" / f"{name}-B{B}"
            start = time.perf_counter()
            train_steps(shaped, cache, name, 2, out, fresh=True, spec=spec)
            compile_s[(name, B)] = time.perf_counter() - start
            metrics = train_steps(shaped, cache, name, steps, out, fresh=True, spec=spec).metrics
            step_s[(name, B)] = metrics["wall_s"] / steps
            saes[name] = (out, f"bench run, {steps} steps at batch {B}")
    gemm_s.append(square_gemm_seconds(device))
    gemm_rate = 2 * GEMM_SIDE**3 / min(gemm_s)
    rows = [Row("headline", f"square bfloat16 GEMM ({GEMM_SIDE}^3)", gemm_rate / 1e9, "GFLOP/s")]
    by_variant = {spec.variant: name for name, spec in specs.items()}
    for B in HEADLINE_BATCHES:
        flops = FLOPS_PER_BDF * B * D * HEADLINE_WIDTH
        mm_s = bf16_matmul_seconds(B, D, HEADLINE_WIDTH, device)
        rows.append(Row("headline", f"B {B}: SAE-step matmuls alone / square GEMM",
                        flops / mm_s / gemm_rate, "x"))
        for name in specs:
            rows += [Row("headline", f"B {B}, {name}: tokens/s", B / step_s[(name, B)], "tok/s"),
                     Row("headline", f"B {B}, {name}: achieved / square GEMM",
                         flops / step_s[(name, B)] / gemm_rate, "x", ">=", HEADLINE_FLOOR),
                     Row("headline", f"B {B}, {name}: first two steps (compile)",
                         compile_s[(name, B)], "s")]
        standard = by_variant.get("standard")
        for variant in ("atm", "jumprelu"):
            if standard is not None and variant in by_variant:
                name = by_variant[variant]
                rows.append(Row("headline", f"B {B}: {name} / {standard} tokens/s",
                                step_s[(standard, B)] / step_s[(name, B)], "x", ">=",
                                HEADLINE_VS_STANDARD))
    rows += eval_seconds(profile, "headline evals", saes, eval_cache_dir(profile))
    return rows, {"width": HEADLINE_WIDTH, "d_model": D, "steps": steps,
                  "gemm_s": gemm_s, "specs": {n: to_dict(s) for n, s in specs.items()},
                  "step_s": {f"{n}/B{b}": v for (n, b), v in step_s.items()}}


