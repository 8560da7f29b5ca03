"""``headline``: training at the headline shapes (width ``HEADLINE_WIDTH``, each
batch of ``HEADLINE_BATCHES``): every family (``headline_specs``) compiled in
bfloat16, ``steps`` steps each after a two-step run that compiles its kernel (the
compile time is a row of its own), each family in its steady state: ATM masking
from its first step (``headline_specs``), the TopK family's AuxK on over a long
run's share of dead latents (``steady_state``). Rows: tokens/s; the dense-equivalent FLOP rate
(``common``'s module docstring) over a square bfloat16 GEMM's, measured before and
after (fastest counts); the five SAE-step matmuls alone over the same GEMM (what no
elementwise work could beat); ATM's and JumpReLU's tokens/s over the standard
SAE's. Then seconds per SAE of each eval on the trained width-``HEADLINE_WIDTH``
SAEs (the largest batch's), after the shared preparation (the run's eval cache:
cold only if it is empty). Last, where the profile's own runs are at a headline
shape, their tokens/s over the whole run (metrics.json, median over seeds) and its
ratio to the bench's: the check that the bench times what the runs do."""

from __future__ import annotations

import dataclasses
import statistics
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
from atm_repro.runs import METRICS, bench_dir, eval_cache_dir, read_metrics, sae_dir

GEMM_SIDE = 2048  # the square bfloat16 GEMM every training rate is set against
HEADLINE_FLOOR = 0.6  # achieved (10 B D F per step) / square GEMM rate, every family
HEADLINE_VS_STANDARD = 0.85  # ATM and JumpReLU tokens/s / the standard SAE's


def square_gemm_seconds(device: str = "cpu") -> float:
    """Median seconds of one bfloat16 GEMM of side ``GEMM_SIDE``."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_SIDE, GEMM_SIDE, generator=gen).to(device, torch.bfloat16)
            for _ in range(2))
    return interleaved_medians({"gemm": lambda: a @ b}, device=device)["gemm"]


STEADY_DEAD_BATCHES = 3  # a latent silent this many batches counts dead in the bench


def steady_state(profile: Profile) -> Profile:
    """``profile`` with every latent silent for ``STEADY_DEAD_BATCHES`` batches counted
    dead, so that the TopK family's AuxK runs from the fourth step over about the
    share of latents it serves through most of a long run (18-22 % dead in the
    5M-token TopK runs; 17 % after 100 bench steps at width 4096, batch 1024; one
    silent batch gave 40 %), not from ``dead_tokens`` on, past a short bench run."""
    return dataclasses.replace(profile, train=dataclasses.replace(
        profile.train, dead_tokens=STEADY_DEAD_BATCHES * profile.train.batch_size))


def run_rates(profile: Profile, bench_step_s: dict[tuple[str, int], float]) -> list[Row]:
    """The profile's finished runs at a headline shape: tokens/s over the whole run
    (median over seeds), and over the bench's tokens/s where the bench timed the spec."""
    tcfg, rows = profile.train, []
    B = tcfg.batch_size
    if B not in HEADLINE_BATCHES:
        return rows
    for name, spec in tcfg.saes.items():
        if (spec.width or tcfg.width) != HEADLINE_WIDTH:
            continue
        dirs = [sae_dir(profile, tcfg.layer, name, seed) for seed in tcfg.seeds_of(name)]
        rates = [read_metrics(d)["tokens_per_s"] for d in dirs if (d / METRICS).is_file()]
        if not rates:
            continue
        rate = statistics.median(rates)
        rows.append(Row("headline run", f"B {B}, {name}: tokens/s over the run "
                        f"(median of {len(rates)})", rate, "tok/s"))
        if (name, B) in bench_step_s:
            rows.append(Row("headline run", f"B {B}, {name}: run / bench tokens/s",
                            rate * bench_step_s[(name, B)] / B, "x"))
    return rows


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Every headline family trained at each headline batch, then its evals timed."""
    require_bf16(profile)
    cache = open_cache(profile)
    D, device = cache.d_model, profile.train.device
    specs = headline_specs(profile)
    gemm_s = [square_gemm_seconds(device)]
    step_s, compile_s, saes = {}, {}, {}
    for B in HEADLINE_BATCHES:
        shaped = steady_state(headline_profile(profile, B))
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
    rows += run_rates(profile, step_s)
    return rows, {"width": HEADLINE_WIDTH, "d_model": D, "steps": steps,
                  "gemm_s": gemm_s, "specs": {n: to_dict(s) for n, s in specs.items()},
                  "step_s": {f"{n}/B{b}": v for (n, b), v in step_s.items()}}


