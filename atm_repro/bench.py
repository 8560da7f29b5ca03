"""``atm-repro bench``: throughput, FLOP rate and memory of every stage, in one run.

Every ratio is measured in the same run on the same machine. Each section runs
in its own subprocess (same torch thread count as the caller), so the peak
resident memory it reports is its own: ``VmHWM`` of the child, because Linux
hands a child's ``ru_maxrss`` the peak of the parent that spawned it.

Sections (``SECTIONS``; ``--only`` picks some):

* ``load``: ``load_model(profile.model)`` twice in a fresh process. The second
  call is the warm load (converted weights on disk, imports done) and has the
  target; the first also pays the imports, and the one-time GGUF conversion
  when the converted copy is missing.
* ``caching``: tokens/s of ``cache.capture_residuals`` (hooks, stop after the
  deepest cached layer) on one batch of the cache's own token ids, against a
  bare forward pass of the same model truncated after that layer (no hooks),
  same batch; median of ``REPEATS``, the two interleaved.
* ``training``: every ``train.saes`` spec trained ``steps`` steps by
  ``train.train_sae`` on the clean cache of ``train.layer`` (token-masked specs
  too: the timing only depends on the shapes). ATM specs are timed with
  ``warmup_steps = 0``, so that every step after the first masks (its
  steady state; the cpu profile masks 80 % of its steps). FLOP count of a
  dense SAE step with B tokens, D = d_model, F = width: forward encode
  x@W_enc (2BDF) and decode f@W_dec (2BFD); backward x^T@dz (2BDF),
  dx_hat@W_dec^T and f^T@dx_hat (2BFD each); the input needs no gradient, so
  10BDF. The peak reference is the median time of those five products on
  random tensors of the same shapes, same device and threads: achieved / peak
  = reference time / measured step time. A real step adds elementwise work,
  Adam and data gathering; a sparse decode (TopK family) skips work, so its
  dense-equivalent ratio may exceed a dense SAE's.
* ``saelens``: our trainer against SAELens's ``SAETrainer`` (optional extra
  ``bench``), first standard and first TopK spec, each over the profile's full
  budget (``train.tokens // train.batch_size`` steps; ``steps`` is not used).
  SAELens runs our recipe (``saelens_trainer``): the same rows in the same
  order; our input scale as its ``activation_scaler.scaling_factor`` (fit() then
  skips its own mean-norm estimate and folds ours); our initial W_enc, W_dec,
  b_enc, b_dec (``our_init``, copied: same names and layout); lr, warm-up and
  linear decay to 0 (``saelens_schedule``); Adam betas (eps 1e-8 and the
  grad-norm clip 1.0 are both trainers' defaults); the spec's precision
  (bfloat16 autocast or float32). Standard: the same loss, MSE + lambda *
  sum_i f_i ||d_i||, so lambda passes unchanged, and the same ramp step for
  step. TopK: k, AuxK weight, k_aux = d_in // 2 and the dead-latent window
  (``saelens_dead_window``). Still different, by each trainer's design: ours
  holds TopK decoder rows at unit norm (gradient projection, renormalisation),
  SAELens lets them drift and divides the norms out
  (``rescale_acts_by_decoder_norm``); its AuxK is not divided by the residual's
  variance, is scaled by min(dead / k_aux, 1) and skips the ReLU; its Adam is
  not fused. Rows: tokens/s of the two training loops, L0 and FVU of the two
  SAEs on the same eval rows (``train.summarize``); details: dead fractions and
  whatever SAELens hard-codes differently (``saelens_unmatched``).
* ``evals``: absorption and sparse-probing wall time: prepare once (cold, in
  a temp dir), then per SAE; the same for core's CE splice (the layer's clean
  and zero passes once, then one spliced pass per SAE), beside the LM head and
  log-softmax of one splice batch alone, the splice's dearest part. The SAEs
  are the profile's trained main runs (lowest seed) where they exist, else
  bench runs of ``steps`` steps.
* ``prompt_prefixes``: the absorption preparation on ``train.layer`` with
  SAEBench's per-word prompts, with per-word prompts whose examples are drawn
  again (same words and split: the metric's own prompt noise), and with shared
  prompt prefixes (``PREFIX_COUNTS``): seconds of model forwards and of the
  whole preparation, letters kept, and both raw measures of ``PREFIX_SAES``
  each way, with their change against the crosscheck tolerance.

* ``bfloat16``: float32 against bfloat16 where the machine runs bfloat16
  natively (``hardware``): caching tokens/s with the model cast to bfloat16 and
  the relative error of its residuals; the SAE-step matmuls under autocast; and
  each spec's training tokens/s with ``train.dtype: bfloat16`` (autocast,
  float32 master weights), float32 and bfloat16 rounds interleaved, fastest
  counts. A stage's speed bar for a bfloat16 default is ``BF16_SPEEDUP``.
* ``bf16_fidelity``: ``FIDELITY_SPECS`` x ``FIDELITY_SEEDS`` trained both ways
  at the profile's full budget on ``train.layer``; bfloat16 minus float32 of L0,
  explained variance and both raw absorption measures, with a 95% bootstrap
  interval over seeds, beside float32's seed spread.
* ``bf16_forward``: the same comparison for the model forward (``model.dtype``):
  the main layer's cache and absorption preparation built with the model in
  float32 and in bfloat16, the same SAEs trained and scored on each, plus the
  letters kept and the preparation's forward seconds each way.

Outputs: ``runs/<profile>/bench/bench.json`` and ``bench.md``; for non-smoke
profiles the table also replaces the profile's block in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import operator
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from atm_repro.cache import (
    ActivationCache,
    CacheError,
    build_cache,
    cache_dir,
    capture_residuals,
)
from atm_repro.config import (
    REPO_ROOT,
    ConfigError,
    Profile,
    SAESpec,
    TrainConfig,
    fingerprint,
    from_dict,
    to_dict,
)
from atm_repro.corpus import load_articles
from atm_repro.evals.absorption import (
    LETTERS,
    REFERENCE_TOLERANCE,
    letter_exclusions,
    prepare_absorption,
    run_absorption,
)
from atm_repro.evals.core import (
    next_token_log_probs,
    splice_baseline,
    splice_metrics,
    splice_sequences,
)
from atm_repro.evals.probing import prepare_probing, run_probing
from atm_repro.evaluate import discover_saes
from atm_repro.files import atomic_write_json, atomic_write_text, update_doc
from atm_repro.hardware import CPU_BF16_FLAGS, bf16_native
from atm_repro.intervals import diff_interval
from atm_repro.models import TINY_MODEL, load_model
from atm_repro.pipeline import PipelineError
from atm_repro.profiles import eval_configs
from atm_repro.runs import bench_dir, eval_cache_dir
from atm_repro.saes import SAE, SAEConfig, build_config, build_sae
from atm_repro.saes.io import load_sae
from atm_repro.train import (
    BatchOrder,
    initialise,
    run_config,
    sae_meta,
    summarize,
    train_sae,
)

DEFAULT_STEPS = 100
TRAIN_ROUNDS = 2  # interleaved training rounds per spec in the training section; fastest counts
REPEATS = 5  # timed repeats (after one warm-up call) of the caching and matmul measurements
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"
SAELENS_MISSING = "SAELens: not installed (pip install -e .[bench])"
FLOPS_PER_BDF = 10  # a dense SAE step (module docstring)
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt}
TABLE_HEADER = ("stage", "measurement", "value", "target", "pass")


class BenchError(PipelineError):
    """A bench section cannot run (missing cache) or failed."""


@dataclass(frozen=True)
class Row:
    """One measurement; ``op``/``bound`` is its target (``value op bound`` passes)."""

    stage: str
    measurement: str
    value: float | None
    unit: str = ""
    op: str | None = None
    bound: float | None = None

    @property
    def target(self) -> str | None:
        return None if self.op is None else f"{self.op} {self.bound:g}"

    @property
    def passed(self) -> bool | None:
        if self.op is None or self.value is None or not math.isfinite(self.value):
            return None
        return OPS[self.op](self.value, self.bound)

    def to_json(self) -> dict:
        return {"stage": self.stage, "measurement": self.measurement, "value": self.value,
                "unit": self.unit, "target": self.target, "passed": self.passed}


# --------------------------------------------------------------------------- helpers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = REPEATS,
                        device: str = "cpu") -> dict[str, float]:
    """Median seconds of each function, called round-robin (one warm-up call each
    first) so that a slow drift of the machine hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(repeats + 1):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if rep:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key:`` line of a /proc file (None off Linux or if absent)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.split(":", 1)[0].strip() == key), None)


def peak_rss_mib() -> float:
    """Peak resident memory of this process since its exec (MiB)."""
    hwm = _proc_field("/proc/self/status", "VmHWM")
    if hwm is not None:
        return int(hwm.split()[0]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, RAM, Python / torch versions and threads (and the GPU, if used)."""
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor()
            or platform.machine(),
            "logical_cores": os.cpu_count(), "usable_cores": usable,
            "ram_gib": round(int(mem_kib.split()[0]) / 2**20, 1) if mem_kib else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def open_cache(profile: Profile) -> ActivationCache:
    """The profile's complete clean cache; a clear error says how to build it."""
    path = cache_dir(profile)
    try:
        return ActivationCache.open(path, verify=False)
    except CacheError as exc:
        raise BenchError(f"{exc}\nThe bench reads the activation cache of profile "
                         f"{profile.name!r}: build it first with "
                         f"`atm-repro cache --profile {profile.name}` (with the same --set "
                         "overrides, if any).") from None


def first_spec(profile: Profile, variant: str) -> str | None:
    """Name of the first ``train.saes`` spec of ``variant`` on the clean cache, if any."""
    return next((name for name, spec in profile.train.saes.items()
                 if spec.variant == variant and not spec.token_masked), None)


def _load(profile: Profile):
    """The profile's model (the tiny test model trains its tokenizer on the corpus)."""
    texts = load_articles(profile.corpus) if profile.model.name == TINY_MODEL else None
    return load_model(profile.model, corpus_texts=texts)


def _train(profile: Profile, cache: ActivationCache, name: str, steps: int, out: Path,
           fresh: bool, spec: SAESpec | None = None, seed: int | None = None):
    """``train.saes[name]`` (or ``spec`` in its place) trained ``steps`` steps into
    ``out`` (``fresh``: from scratch), at ``seed`` (default: the first of ``train.seeds``)."""
    tcfg = dataclasses.replace(profile.train, tokens=steps * profile.train.batch_size,
                               checkpoint_every=0)
    layer = tcfg.layer
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    return train_sae(name, spec or tcfg.saes[name], tcfg.seeds[0] if seed is None else seed, tcfg,
                     cache.source(layer, "train"), out, sae_meta(profile, cache, layer),
                     eval_source=cache.source(layer, "eval"), progress=False)


# --------------------------------------------------------------------------- sections


def bench_load(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Seconds of a first and a second (warm) ``load_model`` in this process."""
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        loaded = _load(profile)
        seconds.append(time.perf_counter() - start)
        del loaded
    rows = [Row("load", "load_model, first call in a fresh process", seconds[0], "s"),
            Row("load", "load_model, warm", seconds[1], "s", "<=", 10.0)]
    return rows, {"model": profile.model.name}


@torch.no_grad()
def _bare_forward(loaded, ids_BS: torch.Tensor, n_blocks: int) -> None:
    """The decoder stack's own forward, cut after ``n_blocks`` blocks, no hooks."""
    path, full = loaded.layers_path, loaded.layers
    loaded.base.set_submodule(path, full[:n_blocks])
    try:
        loaded.base(input_ids=ids_BS, use_cache=False)
    finally:
        loaded.base.set_submodule(path, full)


def bench_caching(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """capture_residuals vs a bare truncated forward, one cache batch (module docstring)."""
    cache = open_cache(profile)
    loaded = _load(profile)
    layers = cache.layers
    ids_BS = torch.from_numpy(cache.tokens("train")[: profile.cache.batch_size]
                              .astype(np.int64)).to(profile.model.device)
    seconds = interleaved_medians(
        {"capture": lambda: capture_residuals(loaded, ids_BS, layers),
         "bare": lambda: _bare_forward(loaded, ids_BS, max(layers) + 1)},
        device=profile.model.device)
    n_tokens = ids_BS.numel()
    rows = [Row("caching", "capture_residuals", n_tokens / seconds["capture"], "tok/s"),
            Row("caching", "bare truncated forward", n_tokens / seconds["bare"], "tok/s"),
            Row("caching", "capture / bare", seconds["bare"] / seconds["capture"], "x",
                ">=", 0.90)]
    return rows, {"batch_shape": list(ids_BS.shape), "layers": layers, "repeats": REPEATS,
                  "median_s": seconds}


def matmul_reference_seconds(B: int, D: int, F: int, device: str = "cpu") -> float:
    """Median time of the five matmuls of a dense SAE step (module docstring)."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    x_BD, dxh_BD, W_enc_DF, W_dec_FD, f_BF, dz_BF = (
        rand(B, D), rand(B, D), rand(D, F), rand(F, D), rand(B, F), rand(B, F))

    def step():
        x_BD @ W_enc_DF  # encode
        f_BF @ W_dec_FD  # decode
        x_BD.T @ dz_BF  # d/dW_enc
        dxh_BD @ W_dec_FD.T  # d/df
        f_BF.T @ dxh_BD  # d/dW_dec

    return interleaved_medians({"ref": step}, device=device)["ref"]


def bench_training(profile: Profile, steps: int) -> tuple[list[Row], dict]:
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
    _train(profile, cache, first, 3, bench_dir(profile) / "saes" / "warmup", fresh=True)
    rounds: dict[str, list[dict]] = {name: [] for name in specs}
    for _ in range(TRAIN_ROUNDS):
        for name, spec in specs.items():
            rounds[name].append(_train(profile, cache, name, steps,
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


# Same recipe, same start: the two FVUs should agree; ours may trail by this much
# (seed noise of a TopK FVU here is ~0.001) before the row fails.
SAELENS_FVU_MARGIN = 0.01
SAELENS_TENSORS = ("W_enc", "W_dec", "b_enc", "b_dec")  # same names and layout as ours


def saelens_schedule(steps: int, warmup_steps: int, decay_frac: float) -> dict[str, int]:
    """``SAETrainerConfig`` warm-up and decay steps giving our lr schedule
    (``train.lr_multiplier``). With its ``constant`` scheduler SAELens warms up as
    (t + 1) / warmup and decays linearly from lr (``lr_end``: where the decay starts)
    to 0 over the last ``lr_decay_steps``, as ours does. Its phases cannot overlap,
    so a warm-up reaching into the decay is cut short (``saelens_unmatched``)."""
    decay = int(decay_frac * steps)
    return {"lr_warm_up_steps": min(warmup_steps, steps - decay), "lr_decay_steps": decay}


def saelens_dead_window(dead_tokens: int, batch_size: int) -> int:
    """``dead_feature_window`` for our ``dead_tokens``: SAELens calls a latent dead
    after more than ``window`` steps without firing, ours once those steps hold
    ``>= dead_tokens`` tokens (steps >= ceil(dead_tokens / batch_size))."""
    return max(0, (dead_tokens - 1) // batch_size)


def saelens_unmatched(tcfg: TrainConfig, cfg: SAEConfig, steps: int) -> list[str]:
    """Our settings that SAELens's trainer cannot take (it hard-codes them)."""
    notes = []
    if tcfg.grad_clip != 1.0:
        notes.append(f"grad_clip {tcfg.grad_clip} (SAELens: 1.0)")
    if getattr(cfg, "aux_k", None) not in (None, cfg.d_in // 2):
        notes.append(f"aux_k {cfg.aux_k} (SAELens: d_in // 2)")
    if tcfg.lr_warmup_steps > steps - int(tcfg.lr_decay_frac * steps):
        notes.append("lr warm-up reaches into the decay (SAELens cuts the warm-up)")
    return notes


def our_init(spec: SAESpec, tcfg: TrainConfig, source, seed: int) -> tuple[SAE, float]:
    """Our SAE for ``spec`` initialised exactly as ``train.train_sae`` starts it for
    ``seed`` (weights, b_dec), and its input scale."""
    cfg = build_config(spec.variant, spec.params, source.d_model, tcfg.for_spec(spec).width)
    sae = build_sae(spec.variant, cfg)
    return sae, initialise(sae, source, tcfg, seed, torch.Generator().manual_seed(seed))


@torch.no_grad()
def copy_init(ours: SAE, theirs: torch.nn.Module) -> None:
    """Our initial parameters into SAELens's training SAE. Both store W_enc [D, F],
    W_dec [F, D] (rows are the directions), b_enc [F], b_dec [D]: a plain copy,
    shapes checked, so that a transposed or missing tensor raises."""
    extra = {n for n, _ in ours.named_parameters()} - set(SAELENS_TENSORS)
    if extra:
        raise BenchError(f"{type(ours).__name__} has parameters SAELens lacks: {sorted(extra)}")
    for name in SAELENS_TENSORS:
        src, dst = getattr(ours, name), getattr(theirs, name)
        if src.shape != dst.shape:
            raise BenchError(f"{name}: ours {tuple(src.shape)}, SAELens {tuple(dst.shape)}")
        dst.copy_(src)


def _saelens_sae(sae_lens, ours: SAE, steps: int, device: str):
    """SAELens's training SAE shaped like ``ours`` (b_dec subtracted from the input or
    not, as ours). Standard: the same loss, MSE + lambda * sum_i f_i ||d_i||
    (``saes.standard``), so lambda passes as it is, and the same ramp length
    (``saelens_trainer`` aligns its first step). TopK: k and the AuxK weight; its
    k_aux is d_in // 2, our default (``saelens_unmatched``)."""
    cfg = ours.cfg
    common = dict(d_in=cfg.d_in, d_sae=cfg.d_sae, device=device,
                  apply_b_dec_to_input=ours.subtract_b_dec,
                  normalize_activations="expected_average_only_in")
    if ours.architecture == "standard":
        return sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
            **common, l1_coefficient=cfg.l1_coefficient,
            l1_warm_up_steps=cfg.coeff_warmup_frac * steps))
    if ours.architecture == "topk":
        return sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(
            **common, k=cfg.k, aux_loss_coefficient=cfg.aux_alpha))
    raise BenchError(f"no SAELens counterpart set up for {ours.architecture!r}")


def saelens_trainer(sae_lens, spec: SAESpec, train: TrainConfig, source, steps: int):
    """SAELens's ``SAETrainer`` for ``spec``, set up as our trainer runs it for
    ``steps`` steps at ``train.seeds[0]``: same rows in the same order, input scale,
    initial weights and b_dec, lr and schedule, Adam betas, sparsity coefficient and
    ramp, dead-latent window and precision (bfloat16 autocast or none)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig  # optional (.[bench])

    tcfg = run_config(train, spec)
    seed, B = tcfg.seeds[0], tcfg.batch_size
    ours, scale = our_init(spec, tcfg, source, seed)
    sae = _saelens_sae(sae_lens, ours, steps, tcfg.device)
    copy_init(ours, sae)
    order = BatchOrder(len(source), B, seed)
    batches = (torch.from_numpy(source.gather(order.indices(step))) for step in range(steps))
    lr = spec.lr if spec.lr is not None else tcfg.lr
    beta1, beta2 = ours.adam_betas
    trainer = sae_lens.SAETrainer(SAETrainerConfig(
        total_training_samples=steps * B, train_batch_size_samples=B, lr=lr, lr_end=lr,
        **saelens_schedule(steps, tcfg.lr_warmup_steps, tcfg.lr_decay_frac),
        adam_beta1=beta1, adam_beta2=beta2, device=tcfg.device,
        autocast=tcfg.dtype == "bfloat16",
        dead_feature_window=saelens_dead_window(tcfg.dead_tokens, B),
        logger=LoggingConfig(log_to_wandb=False)), sae, batches)
    # Our scale, set up front: fit() then skips its own estimate (mean norm, where
    # ours is the root mean square) and folds this one into the weights at the end.
    trainer.activation_scaler.scaling_factor = scale
    # SAELens reads a coefficient before advancing it (step t: t / ramp), ours uses
    # (t + 1) / ramp: advance once so that both ramps match step for step.
    for scheduler in trainer.coefficient_schedulers.values():
        scheduler.step()
    return trainer


def train_saelens(sae_lens, profile: Profile, name: str, steps: int, source, eval_source) -> dict:
    """Train ``train.saes[name]`` with ``saelens_trainer``: tokens/s of its loop, our
    summary metrics of the trained SAE and its dead fraction."""
    trainer = saelens_trainer(sae_lens, profile.train.saes[name], profile.train, source, steps)
    start = time.perf_counter()
    trained = trainer.fit()
    wall_s = time.perf_counter() - start
    B = profile.train.batch_size
    return {**summarize(trained.eval(), eval_source, B), "tokens_per_s": steps * B / wall_s,
            "dead_frac": float(trainer.dead_neurons.float().mean())}


def bench_saelens(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Our trainer vs SAELens's, first standard and first TopK spec, each at the
    profile's full budget (``steps`` is not used; module docstring)."""
    try:
        import sae_lens  # optional (.[bench]): only this section needs it
    except ImportError:
        return [Row("saelens", SAELENS_MISSING, None)], {"installed": False}
    cache = open_cache(profile)
    tcfg = profile.train
    source, eval_source = cache.source(tcfg.layer, "train"), cache.source(tcfg.layer, "eval")
    names = [n for n in (first_spec(profile, "standard"), first_spec(profile, "topk")) if n]
    for name in names:  # discarded: one-time set-up (imports, kernels) off the timed runs
        _train(profile, cache, name, 3, bench_dir(profile) / "saes" / "warmup", fresh=True)
        saelens_trainer(sae_lens, tcfg.saes[name], tcfg, source, 3).fit()
    rows, runs = [], {}
    for name in names:
        spec = tcfg.saes[name]
        scfg = run_config(tcfg, spec)
        full = scfg.tokens // scfg.batch_size
        ours = _train(profile, cache, name, full, bench_dir(profile) / "saelens" / name,
                      fresh=True).metrics
        theirs = train_saelens(sae_lens, profile, name, full, source, eval_source)
        rows += [Row("saelens", f"{name}: ours", ours["tokens_per_s"], "tok/s"),
                 Row("saelens", f"{name}: SAELens", theirs["tokens_per_s"], "tok/s"),
                 Row("saelens", f"{name}: ours / SAELens tokens/s",
                     ours["tokens_per_s"] / theirs["tokens_per_s"], "x", ">=", 1.5),
                 Row("saelens", f"{name}: L0 ours", ours["l0"]),
                 Row("saelens", f"{name}: L0 SAELens", theirs["l0"]),
                 Row("saelens", f"{name}: FVU ours", ours["fvu"]),
                 Row("saelens", f"{name}: FVU SAELens", theirs["fvu"]),
                 Row("saelens", f"{name}: FVU SAELens - FVU ours", theirs["fvu"] - ours["fvu"],
                     "", ">=", -SAELENS_FVU_MARGIN)]
        cfg = build_config(spec.variant, spec.params, source.d_model, scfg.width)
        runs[name] = {"steps": full, "dtype": scfg.dtype,
                      "dead_frac": {"ours": ours["dead_frac"], "saelens": theirs["dead_frac"]},
                      "unmatched": saelens_unmatched(scfg, cfg, full)}
    return rows, {"installed": True, "version": sae_lens.__version__, "saes": names,
                  "runs": runs}


def _eval_saes(profile: Profile, steps: int) -> dict[str, tuple[Path, str]]:
    """{name: (SAE dir, where from)}: trained main runs (lowest seed), else bench runs."""
    main = sorted((r for r in discover_saes(profile) if r.group == "main"),
                  key=lambda r: -r.seed)
    found = {r.name: (r.path, f"trained run, seed {r.seed}") for r in main}  # lowest seed last
    missing = [n for n in profile.train.saes if n not in found]
    if missing:
        cache = open_cache(profile)
        for name in missing:
            out = bench_dir(profile) / "saes" / name
            _train(profile, cache, name, steps, out, fresh=False)
            found[name] = (out, f"bench run, {steps} steps")
    return {name: found[name] for name in profile.train.saes}


def bench_evals(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Absorption and probing: prepare (cold) once, then seconds per SAE."""
    saes = _eval_saes(profile, steps)
    with tempfile.TemporaryDirectory() as tmp:
        rows = _eval_seconds(profile, "evals", saes, Path(tmp))
    return rows, {"layer": profile.train.layer,
                  "saes": {n: {"path": str(p), "source": s} for n, (p, s) in saes.items()}}


def _eval_seconds(profile: Profile, stage: str, saes: dict, prep_dir: Path) -> list[Row]:
    """Seconds of absorption's and probing's preparation (into ``prep_dir``: cold
    when empty) and per SAE of ``saes`` ({name: (dir, source)}), then the splice."""
    cfgs = eval_configs(profile)
    loaded = _load(profile)
    layer = profile.train.layer
    rows = []
    for eval_name, prepare, run in (("absorption", prepare_absorption, run_absorption),
                                    ("probing", prepare_probing, run_probing)):
        start = time.perf_counter()
        data = prepare(loaded, [layer], cfgs[eval_name], prep_dir, False)[layer]
        rows.append(Row(stage, f"{eval_name}: prepare", time.perf_counter() - start, "s"))
        for name, (path, _) in saes.items():
            sae = load_sae(path)
            start = time.perf_counter()
            run(sae, data, cfgs[eval_name], f"bench-{name}")
            rows.append(Row(stage, f"{eval_name}: {name}", time.perf_counter() - start, "s"))
    return rows + _bench_splice(profile, stage, loaded, saes, cfgs["core"])


def _bench_splice(profile: Profile, stage: str, loaded, saes: dict, core_cfg) -> list[Row]:
    """Seconds of the CE splice: the layer's baseline, each SAE, and the LM head
    with log-softmax on one batch of final hidden states (median of REPEATS)."""
    layer = profile.train.layer
    tokens_NS = splice_sequences(open_cache(profile), core_cfg)
    start = time.perf_counter()
    baseline = splice_baseline(loaded, tokens_NS, layer, core_cfg.splice_batch_size)
    rows = [Row(stage, f"core splice: clean and zero passes ({len(tokens_NS)} sequences)",
                time.perf_counter() - start, "s")]
    for name, (path, _) in saes.items():
        sae = load_sae(path)
        start = time.perf_counter()
        splice_metrics(sae, loaded, baseline)
        rows.append(Row(stage, f"core splice: {name}", time.perf_counter() - start, "s"))
    ids_BS = torch.from_numpy(tokens_NS[: core_cfg.splice_batch_size].astype(np.int64))
    with torch.no_grad():
        hidden_BSD = loaded.base(input_ids=ids_BS, use_cache=False).last_hidden_state
        head = interleaved_medians({"head": lambda: next_token_log_probs(loaded, hidden_BSD)})
    rows.append(Row(stage, f"core splice: LM head + log-softmax, one batch of "
                             f"{len(ids_BS)}", head["head"], "s"))
    return rows


# -------------------------------------------------------------------- prompt prefixes

PREFIX_COUNTS = (64,)  # shared example sets tried against per-word prompts
PREFIX_SAES = ("atm", "topk", "jumprelu")  # main runs compared both ways (lowest seed)
REDRAW_SEED_OFFSET = 1000  # example_seed of the redrawn per-word prompts: seed + this


def bench_prompt_prefixes(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Absorption preparation with per-word prompts (SAEBench's) against shared
    prompt prefixes (``AbsorptionConfig.prompt_prefixes``), in one run on
    ``train.layer``: wall time of the model forwards and of the whole preparation,
    the letters kept, and both raw measures of ``PREFIX_SAES`` either way."""
    base = eval_configs(profile)["absorption"]
    saes = {n: load_sae(p) for n, (p, _) in _eval_saes(profile, steps).items()
            if n in PREFIX_SAES}
    loaded = _load(profile)
    layer = profile.train.layer
    per_word = dataclasses.replace(base, prompt_prefixes=0, example_seed=None)
    modes = {"per word": per_word,
             # the same words and split, other example draws: the prompts' own noise
             "per word, examples redrawn": dataclasses.replace(
                 per_word, example_seed=base.seed + REDRAW_SEED_OFFSET),
             **{f"{n} prefixes": dataclasses.replace(per_word, prompt_prefixes=n)
                for n in PREFIX_COUNTS}}
    rows, details = [], {}
    for mode, cfg in modes.items():
        start = time.perf_counter()
        data = prepare_absorption(loaded, [layer], cfg, None)[layer]
        wall = time.perf_counter() - start
        kept = [c for c in LETTERS if c not in letter_exclusions(data, cfg)]
        rows += [Row("prompt_prefixes", f"{mode}: model forwards", data.meta["forward_seconds"],
                     "s"),
                 Row("prompt_prefixes", f"{mode}: preparation", wall, "s"),
                 Row("prompt_prefixes", f"{mode}: letters kept", len(kept))]
        details[mode] = {"letters": "".join(kept), "probe_f1": data.probe_f1_L.tolist(),
                         "forward_s": data.meta["forward_seconds"], "wall_s": wall, "saes": {}}
        for name, sae in saes.items():
            measures = run_absorption(sae, data, cfg, name).details["measures"]
            details[mode]["saes"][name] = measures
            rows += [Row("prompt_prefixes", f"{mode}: {name} full absorption (raw)",
                         measures["mean_full_absorption"]),
                     Row("prompt_prefixes", f"{mode}: {name} absorption fraction (raw)",
                         measures["mean_absorption_fraction"])]
    ref = details["per word"]
    for mode in list(modes)[1:]:
        if mode in (f"{n} prefixes" for n in PREFIX_COUNTS):
            rows.append(Row("prompt_prefixes", f"{mode}: forward speed-up over per word",
                            ref["forward_s"] / details[mode]["forward_s"], "x"))
        for name in saes:
            for key, label in (("mean_full_absorption", "full"),
                               ("mean_absorption_fraction", "fraction")):
                gap = abs(details[mode]["saes"][name][key] - ref["saes"][name][key])
                rows.append(Row("prompt_prefixes", f"{mode}: {name} |{label} - per word|", gap,
                                "", "<=", REFERENCE_TOLERANCE))
    return rows, {"layer": layer, "modes": details}


# --------------------------------------------------------------------------- bfloat16

BF16_SPEEDUP = 1.3  # a stage defaults to bfloat16 only when at least this much faster
FIDELITY_SPECS = ("topk", "atm")
FIDELITY_SEEDS = (0, 1, 2)
FIDELITY_METRICS = (("l0", "L0"), ("explained_variance", "explained variance"),
                    ("mean_full_absorption", "full absorption (raw)"),
                    ("mean_absorption_fraction", "absorption fraction (raw)"))


def _with_model_dtype(profile: Profile, dtype: str) -> Profile:
    """``profile`` with the model forward in ``dtype`` (training dtypes are set per
    spec, which overrides ``train.dtype``)."""
    return dataclasses.replace(profile, model=dataclasses.replace(profile.model, dtype=dtype))


def _require_bf16(profile: Profile) -> None:
    for device in {profile.model.device, profile.train.device}:
        if not bf16_native(device):
            raise BenchError(f"bfloat16 is not native on {device} here ({CPU_BF16_FLAGS} "
                             "absent): nothing to compare")


def bench_bfloat16(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """float32 against bfloat16, in one run: tokens/s of caching (``capture_residuals``,
    the model cast to bfloat16) and the relative error of the captured residuals; a
    bare matmul of a dense SAE step; tokens/s of training each spec with bfloat16
    autocast (float32 master weights and Adam state), rounds interleaved, fastest
    counts. ``>= BF16_SPEEDUP`` is the speed bar of the bfloat16 default."""
    _require_bf16(profile)
    cache = open_cache(profile)
    models = {dtype: _load(_with_model_dtype(profile, dtype))
              for dtype in ("float32", "bfloat16")}
    layers = cache.layers
    ids_BS = torch.from_numpy(cache.tokens("train")[: profile.cache.batch_size]
                              .astype(np.int64)).to(profile.model.device)
    seconds = interleaved_medians(
        {dtype: (lambda m=m: capture_residuals(m, ids_BS, layers)) for dtype, m in models.items()},
        device=profile.model.device)
    n_tokens = ids_BS.numel()
    rows = [Row("bfloat16", f"caching, {dtype}: capture_residuals", n_tokens / seconds[dtype],
                "tok/s") for dtype in models]
    rows.append(Row("bfloat16", "caching: bfloat16 / float32 speed",
                    seconds["float32"] / seconds["bfloat16"], "x", ">=", BF16_SPEEDUP))
    acts = {dtype: capture_residuals(m, ids_BS, layers) for dtype, m in models.items()}
    errors = {}
    for layer in layers:
        a32 = acts["float32"][layer][:, 1:].reshape(-1, cache.d_model).double()  # no BOS
        a16 = acts["bfloat16"][layer][:, 1:].reshape(-1, cache.d_model).double()
        rel = (a16 - a32).norm(dim=-1) / a32.norm(dim=-1)
        cos = torch.nn.functional.cosine_similarity(a16, a32, dim=-1)
        errors[layer] = {"mean_rel_error": float(rel.mean()), "max_rel_error": float(rel.max()),
                         "min_cosine": float(cos.min())}
        rows += [Row("bfloat16", f"caching, layer {layer}: mean relative error",
                     100 * errors[layer]["mean_rel_error"], "%"),
                 Row("bfloat16", f"caching, layer {layer}: worst per-token cosine",
                     errors[layer]["min_cosine"], "")]
    del models, acts

    tcfg = profile.train
    B, D, F = tcfg.batch_size, cache.d_model, tcfg.width
    ref = {"float32": matmul_reference_seconds(B, D, F, tcfg.device),
           "bfloat16": _bf16_matmul_seconds(B, D, F, tcfg.device)}
    rows.append(Row("bfloat16", "SAE-step matmuls: bfloat16 / float32 speed",
                    ref["float32"] / ref["bfloat16"], "x"))
    dtypes = ("float32", "bfloat16")
    first = next(iter(tcfg.saes))
    _train(profile, cache, first, 3, bench_dir(profile) / "saes" / "warmup", fresh=True,
           spec=dataclasses.replace(tcfg.saes[first], dtype="bfloat16"))
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(TRAIN_ROUNDS):
        for name, spec in tcfg.saes.items():
            for dtype in dtypes:
                metrics = _train(profile, cache, name, steps,
                                 bench_dir(profile) / "saes" / f"{name}-{dtype}", fresh=True,
                                 spec=dataclasses.replace(spec, dtype=dtype)).metrics
                times.setdefault((name, dtype), []).append(metrics["wall_s"])
    step_s = {k: min(v) / steps for k, v in times.items()}
    for name in tcfg.saes:
        rows += [Row("bfloat16", f"training {name}, {dtype}", B / step_s[(name, dtype)],
                     "tok/s") for dtype in dtypes]
        rows.append(Row("bfloat16", f"training {name}: bfloat16 / float32 speed",
                        step_s[(name, "float32")] / step_s[(name, "bfloat16")], "x",
                        ">=", BF16_SPEEDUP))
    return rows, {"batch_shape": list(ids_BS.shape), "caching_median_s": seconds,
                  "activation_errors": errors, "matmul_s": ref,
                  "train_step_s": {f"{n}/{d}": v for (n, d), v in step_s.items()}}


def _bf16_matmul_seconds(B: int, D: int, F: int, device: str) -> float:
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        return matmul_reference_seconds(B, D, F, device)


def bench_bf16_fidelity(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Does bfloat16 training move a headline metric beyond seed noise? ``FIDELITY_SPECS``
    x ``FIDELITY_SEEDS`` trained both ways at the profile's full token budget (``steps``
    is not used) on ``train.layer``; per metric, bfloat16 minus float32 (mean over
    seeds) with a 95% bootstrap interval over seeds, beside the float32 seed spread
    (standard deviation). Absorption is the raw measure (this layer's health check
    fails; ``evals.absorption``), computed on the run's prepared absorption data."""
    _require_bf16(profile)
    cache = open_cache(profile)
    layer = profile.train.layer
    cfg = eval_configs(profile)["absorption"]
    data = prepare_absorption(_load(profile), [layer], cfg, eval_cache_dir(profile))[layer]
    arms = {dtype: (cache, data, dtype) for dtype in ("float32", "bfloat16")}
    values = _fidelity_values(profile, arms, "fidelity")
    return (_fidelity_rows("bf16 fidelity", values),
            {"layer": layer, "seeds": list(FIDELITY_SEEDS),
             "values": {f"{n}/{d}": v for (n, d), v in values.items()}})


def bench_bf16_forward(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Does a bfloat16 model forward move a headline metric beyond seed noise? The
    whole main-layer pipeline twice, with ``model.dtype`` float32 and bfloat16: the
    activation cache of ``train.layer`` (the bfloat16 one built here, cut after that
    layer), the absorption preparation (prompts, ground-truth probe, scoring
    prompts), and ``FIDELITY_SPECS`` x ``FIDELITY_SEEDS`` trained at the full budget
    (each spec in its own training dtype, as in the profile) and scored on their
    own pipeline's held-out split and absorption data. Rows as ``bf16_fidelity``,
    plus the letters kept and the preparation's forward seconds each way."""
    _require_bf16(profile)
    layer = profile.train.layer
    cfg = eval_configs(profile)["absorption"]
    arms, forward_s, letters = {}, {}, {}
    for dtype in ("float32", "bfloat16"):
        run = _with_model_dtype(profile, dtype)
        if dtype != profile.model.dtype:  # one layer: the cache stops after it
            run = dataclasses.replace(
                run, cache=dataclasses.replace(run.cache, layers=[layer]),
                cross_layer=dataclasses.replace(run.cross_layer, layers=[layer]))
            build_cache(run, progress=False)
        data = prepare_absorption(_load(run), [layer], cfg, eval_cache_dir(profile))[layer]
        arms[dtype] = (open_cache(run), data, None)
        forward_s[dtype] = data.meta["forward_seconds"]
        letters[dtype] = "".join(c for c in LETTERS if c not in letter_exclusions(data, cfg))
    values = _fidelity_values(profile, arms, "forward")
    rows = [Row("bf16 forward", f"absorption preparation, {d}: model forwards", forward_s[d],
                "s") for d in arms]
    rows += [Row("bf16 forward", f"letters kept, {d}", len(letters[d])) for d in arms]
    rows.append(Row("bf16 forward", "letters kept by one side only",
                    len(set(letters["float32"]) ^ set(letters["bfloat16"]))))
    rows += _fidelity_rows("bf16 forward", values)
    return rows, {"layer": layer, "seeds": list(FIDELITY_SEEDS), "letters": letters,
                  "forward_s": forward_s,
                  "values": {f"{n}/{d}": v for (n, d), v in values.items()}}


def _fidelity_values(profile: Profile, arms: dict, subdir: str
                     ) -> dict[tuple[str, str], dict[str, list[float]]]:
    """{(spec, arm): {metric: one value per seed}}: ``FIDELITY_SPECS`` x
    ``FIDELITY_SEEDS`` trained on each arm's (cache, absorption data, training dtype
    or None for the spec's own) at the full budget, scored on that arm's held-out
    split (``FIDELITY_METRICS``)."""
    layer = profile.train.layer
    cfg = eval_configs(profile)["absorption"]
    tcfg = dataclasses.replace(profile.train, checkpoint_every=0)
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for arm, (cache, data, dtype) in arms.items():
        meta = sae_meta(profile, cache, layer)
        for name in FIDELITY_SPECS:
            spec = tcfg.saes[name] if dtype is None else \
                dataclasses.replace(tcfg.saes[name], dtype=dtype)
            for seed in FIDELITY_SEEDS:
                out = bench_dir(profile) / subdir / f"{name}-{arm}-s{seed}"
                metrics = train_sae(name, spec, seed, tcfg, cache.source(layer, "train"), out,
                                    meta, eval_source=cache.source(layer, "eval"),
                                    data_key=cache.manifest.data_key, progress=False).metrics
                absorption = run_absorption(load_sae(out), data, cfg, f"{name}-{arm}-s{seed}")
                measures = {**absorption.details["measures"], **metrics}
                for key, _ in FIDELITY_METRICS:
                    values.setdefault((name, arm), {}).setdefault(key, []).append(
                        float(measures[key]))
    return values


def _fidelity_rows(stage: str, values: dict) -> list[Row]:
    """Per spec and metric: bfloat16 minus float32 (95% interval over seeds) and the
    float32 seed standard deviation."""
    rows = []
    for name in FIDELITY_SPECS:
        for key, label in FIDELITY_METRICS:
            f32, b16 = values[(name, "float32")][key], values[(name, "bfloat16")][key]
            diff = diff_interval(b16, f32)
            rows += [Row(stage, f"{name} {label}: bfloat16 - float32 "
                         f"(95% CI [{diff.lo:.3g}, {diff.hi:.3g}])", diff.estimate),
                     Row(stage, f"{name} {label}: float32 seed std",
                         float(np.std(f32, ddof=1)))]
    return rows


# ------------------------------------------------------------------ headline shapes

HEADLINE_WIDTH = 4096  # the headline SAEs' width (6.4 x gemma-3-270m's d_model)
HEADLINE_BATCHES = (1024, 4096)
GEMM_SIDE = 2048  # the square bfloat16 GEMM every training rate is set against
HEADLINE_FLOOR = 0.6  # achieved (10 B D F per step) / square GEMM rate, every family
HEADLINE_VS_STANDARD = 0.85  # ATM and JumpReLU tokens/s / the standard SAE's
HEADLINE_FIDELITY_SEEDS = (0, 1, 2)
HEADLINE_CORE = ("l0", "explained_variance", "mse", "dead_frac")  # training-summary metrics


def headline_specs(profile: Profile) -> dict[str, SAESpec]:
    """The first clean spec of each variant, as the headline trains it: bfloat16
    autocast, and ATM masking from its first step (its steady state)."""
    specs = {}
    for name, spec in profile.train.saes.items():
        if spec.token_masked or any(s.variant == spec.variant for s in specs.values()):
            continue
        params = {**spec.params, "warmup_steps": 0} if spec.variant == "atm" else spec.params
        specs[name] = dataclasses.replace(spec, params=params, dtype="bfloat16", width=None)
    return specs


def _headline_profile(profile: Profile, batch_size: int, compiled: bool = True) -> Profile:
    return dataclasses.replace(profile, train=dataclasses.replace(
        profile.train, width=HEADLINE_WIDTH, batch_size=batch_size, compile=compiled))


def square_gemm_seconds(device: str = "cpu") -> float:
    """Median seconds of one bfloat16 GEMM of side ``GEMM_SIDE``."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_SIDE, GEMM_SIDE, generator=gen).to(device, torch.bfloat16)
            for _ in range(2))
    return interleaved_medians({"gemm": lambda: a @ b}, device=device)["gemm"]


def bench_headline(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Training at the headline shapes (width ``HEADLINE_WIDTH``, each batch of
    ``HEADLINE_BATCHES``): every family (``headline_specs``) compiled in bfloat16,
    ``steps`` steps each after a two-step run that compiles its kernel (the compile
    time is a row of its own). Rows: tokens/s; the dense-equivalent FLOP rate
    (10 B D F per step, module docstring) over a square bfloat16 GEMM's, measured
    before and after (fastest counts); the five SAE-step matmuls alone over the
    same GEMM (what no elementwise work could beat); ATM's and JumpReLU's
    tokens/s over the standard SAE's. Then seconds per SAE of each eval on the
    trained width-``HEADLINE_WIDTH`` SAEs (the largest batch's), after the shared
    preparation (the run's eval cache: cold only if it is empty)."""
    _require_bf16(profile)
    cache = open_cache(profile)
    D, device = cache.d_model, profile.train.device
    specs = headline_specs(profile)
    gemm_s = [square_gemm_seconds(device)]
    step_s, compile_s, saes = {}, {}, {}
    for B in HEADLINE_BATCHES:
        run = _headline_profile(profile, B)
        for name, spec in specs.items():
            out = bench_dir(profile) / "headline" / f"{name}-B{B}"
            start = time.perf_counter()
            _train(run, cache, name, 2, out, fresh=True, spec=spec)
            compile_s[(name, B)] = time.perf_counter() - start
            metrics = _train(run, cache, name, steps, out, fresh=True, spec=spec).metrics
            step_s[(name, B)] = metrics["wall_s"] / steps
            saes[name] = (out, f"bench run, {steps} steps at batch {B}")
    gemm_s.append(square_gemm_seconds(device))
    gemm_rate = 2 * GEMM_SIDE**3 / min(gemm_s)
    rows = [Row("headline", f"square bfloat16 GEMM ({GEMM_SIDE}^3)", gemm_rate / 1e9, "GFLOP/s")]
    by_variant = {spec.variant: name for name, spec in specs.items()}
    for B in HEADLINE_BATCHES:
        flops = FLOPS_PER_BDF * B * D * HEADLINE_WIDTH
        mm_s = _bf16_matmul_seconds(B, D, HEADLINE_WIDTH, device)
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
    rows += _eval_seconds(profile, "headline evals", saes, eval_cache_dir(profile))
    return rows, {"width": HEADLINE_WIDTH, "d_model": D, "steps": steps,
                  "gemm_s": gemm_s, "specs": {n: to_dict(s) for n, s in specs.items()},
                  "step_s": {f"{n}/B{b}": v for (n, b), v in step_s.items()}}


def bench_headline_fidelity(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Does the fast step change what is learnt? Every headline family at width
    ``HEADLINE_WIDTH`` and the smallest headline batch, ``steps`` steps (a shortened
    budget), ``HEADLINE_FIDELITY_SEEDS`` each way: the plain step (eager, float32)
    and the headline's (compiled, bfloat16 autocast). Per family and core metric
    (the training summary on held-out rows): the fast mean, and whether it lies
    within the float32 seeds' range (``<= 0`` passes: its distance outside it)."""
    cache = open_cache(profile)
    B = min(HEADLINE_BATCHES)
    arms = {"float32": (_headline_profile(profile, B, compiled=False), "float32"),
            "compiled bfloat16": (_headline_profile(profile, B), "bfloat16")}
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for name, spec in headline_specs(profile).items():
        for arm, (run, dtype) in arms.items():
            for seed in HEADLINE_FIDELITY_SEEDS:
                out = bench_dir(profile) / "headline_fidelity" / f"{name}-{arm}-s{seed}"
                metrics = _train(run, cache, name, steps, out, fresh=True, seed=seed,
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
                  "values": {f"{n}/{a}": v for (n, a), v in values.items()}}


def bench_bf16_cache(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """A bfloat16 activation cache against the profile's float32 one, same forward:
    the main layer cached again with ``cache.dtype: bfloat16``; the relative error
    of its rows (every train row), its bytes on disk; and ``FIDELITY_SPECS`` x
    ``FIDELITY_SEEDS`` trained on each at the full budget and scored on their own
    held-out split and the run's absorption data (rows as ``bf16_fidelity``)."""
    layer = profile.train.layer
    f32 = open_cache(profile)
    if f32.manifest.dtype != "float32":
        raise BenchError(f"bf16_cache compares against a float32 cache; profile "
                         f"{profile.name!r} caches {f32.manifest.dtype}")
    run = dataclasses.replace(
        profile, cache=dataclasses.replace(profile.cache, layers=[layer], dtype="bfloat16"),
        cross_layer=dataclasses.replace(profile.cross_layer, layers=[layer]))
    b16 = ActivationCache.open(build_cache(run, progress=False), verify=False)
    rows = []
    for split in ("train", "eval"):
        exact, rounded = f32.source(layer, split), b16.source(layer, split)
        parts = []  # per row, in chunks: the whole split in float64 would take GBs
        for idx in np.array_split(np.arange(len(exact)), -(-len(exact) // 16384)):
            a = exact.gather(idx).astype(np.float64)
            b = rounded.gather(idx).astype(np.float64)
            parts.append(np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1))
        rel = np.concatenate(parts)
        rows += [Row("bf16 cache", f"{split} rows: mean relative error", 100 * rel.mean(), "%"),
                 Row("bf16 cache", f"{split} rows: largest relative error", 100 * rel.max(), "%")]
    size = [sum(p.stat().st_size for p in c.path.glob(f"*_L{layer}_*.npy")) for c in (f32, b16)]
    rows.append(Row("bf16 cache", "bytes on disk: bfloat16 / float32", size[1] / size[0], "x"))
    cfg = eval_configs(profile)["absorption"]
    data = prepare_absorption(_load(profile), [layer], cfg, eval_cache_dir(profile))[layer]
    values = _fidelity_values(profile, {"float32": (f32, data, None),
                                        "bfloat16": (b16, data, None)}, "cache")
    rows += _fidelity_rows("bf16 cache", values)
    return rows, {"layer": layer, "seeds": list(FIDELITY_SEEDS),
                  "values": {f"{n}/{d}": v for (n, d), v in values.items()}}


STAGES: dict[str, Callable[[Profile, int], tuple[list[Row], dict]]] = {
    "load": bench_load, "caching": bench_caching, "training": bench_training,
    "saelens": bench_saelens, "evals": bench_evals, "prompt_prefixes": bench_prompt_prefixes,
    "bfloat16": bench_bfloat16, "bf16_fidelity": bench_bf16_fidelity,
    "bf16_forward": bench_bf16_forward, "headline": bench_headline,
    "headline_fidelity": bench_headline_fidelity, "bf16_cache": bench_bf16_cache}
SECTIONS = tuple(STAGES)
NEEDS_CACHE = ("caching", "training", "saelens", "evals", "prompt_prefixes", "bfloat16",
               "bf16_fidelity", "bf16_forward", "headline", "headline_fidelity", "bf16_cache")


# --------------------------------------------------------------------------- driver


def _run_stage(section: str, profile: Profile, steps: int, tmp: Path) -> dict:
    """Run one section in a fresh interpreter; its rows, wall time and peak memory."""
    profile_json, out = tmp / "profile.json", tmp / f"{section}.json"
    profile_json.write_text(json.dumps(to_dict(profile)))
    threads = torch.get_num_threads()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "atm_repro.bench", section, str(profile_json),
                           str(steps), str(threads), str(out)], env=env)
    if proc.returncode != 0:
        raise BenchError(f"bench section {section!r} failed (exit {proc.returncode}); "
                         "its traceback is above")
    return json.loads(out.read_text())


def run_bench(profile: Profile, steps: int | None = None, only: list[str] | None = None,
              doc_path: Path | None = DOC_PATH, progress: bool = True) -> dict:
    """Run the ``only`` sections (default: all) with ``steps`` training steps per SAE
    (default ``DEFAULT_STEPS``); write ``bench.json``, ``bench.md`` and, unless the
    profile is a smoke profile or ``doc_path`` is None, the profile's block of
    ``doc_path`` (a run of some sections only: a block of its own, named by the
    profile and the sections, so that it replaces no other run's rows). Returns the
    bench.json content."""
    steps = DEFAULT_STEPS if steps is None else steps
    sections = list(SECTIONS) if only is None else list(only)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ConfigError(f"bench: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if steps < 1:
        raise ConfigError(f"bench: --steps must be >= 1, got {steps}")
    sections = [s for s in SECTIONS if s in sections]
    if any(s in NEEDS_CACHE for s in sections):
        open_cache(profile)
    rows, stages = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for section in sections:
            if progress:
                print(f"bench: {section} ...", flush=True)
            out = _run_stage(section, profile, steps, Path(tmp))
            rows += [Row(**r) for r in out["rows"]]
            rows.append(Row(section, "peak resident memory", out["peak_rss_mib"], "MiB"))
            stages[section] = {"wall_s": out["wall_s"], "peak_rss_mib": out["peak_rss_mib"],
                               "details": out["details"]}
    command = f"atm-repro bench --profile {profile.name} --steps {steps}"
    if only is not None:
        command += " --only " + " ".join(sections)
    result = {"profile": profile.name, "profile_fingerprint": fingerprint(profile)[:12],
              "command": command, "steps": steps, "sections": sections,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
              "machine": machine_info(profile.train.device),
              "rows": [r.to_json() for r in rows], "stages": stages}
    out_dir = bench_dir(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "bench.json", result)
    atomic_write_text(out_dir / "bench.md", render_markdown(result))
    if doc_path is not None and not profile.smoke:  # a partial run gets its own block
        block = profile.name if sections == list(SECTIONS) else \
            f"{profile.name}:{'+'.join(sections)}"
        update_doc(Path(doc_path), block, render_markdown(result))
    return result


# --------------------------------------------------------------------------- rendering


def _format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value) or abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{text} {unit}".strip()


def table_cells(result: dict) -> list[tuple[str, str, str, str, str]]:
    """(stage, measurement, value, target, pass) strings of every row."""
    verdict = {True: "pass", False: "miss", None: ""}
    return [(r["stage"], r["measurement"], _format_value(r["value"], r["unit"]),
             r["target"] or "", verdict[r["passed"]]) for r in result["rows"]]


def format_table(result: dict) -> str:
    """The rows as a fixed-width text table (what the command prints)."""
    lines = [TABLE_HEADER, *table_cells(result)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def render_markdown(result: dict) -> str:
    """The profile's block of docs/benchmarks.md: command, machine, table."""
    m = result["machine"]
    gpu = f"; GPU {m['gpu']}" if "gpu" in m else ""
    lines = [f"### Profile `{result['profile']}`", "",
             f"`{result['command']}` on {result['date']} "
             f"(profile fingerprint `{result['profile_fingerprint']}`).", "",
             f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} "
             f"usable), {m['ram_gib']} GiB RAM; Python {m['python']}, torch {m['torch']}, "
             f"torch threads: {m['torch_threads']}; device `{m['device']}`{gpu}.", "",
             "| " + " | ".join(TABLE_HEADER) + " |",
             "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(result)]
    return "\n".join(lines) + "\n"


def _stage_main(argv: list[str] | None = None) -> int:
    """Child entry point: ``python -m atm_repro.bench SECTION PROFILE_JSON STEPS THREADS OUT``."""
    parser = argparse.ArgumentParser(prog="python -m atm_repro.bench")
    for arg in ("section", "profile_json", "steps", "threads", "out"):
        parser.add_argument(arg)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(args.threads))
    profile = from_dict(Profile, json.loads(Path(args.profile_json).read_text()))
    start = time.perf_counter()
    rows, details = STAGES[args.section](profile, int(args.steps))
    atomic_write_json(Path(args.out), {
        "rows": [dataclasses.asdict(r) for r in rows], "details": details,
        "wall_s": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()})
    return 0


if __name__ == "__main__":
    sys.exit(_stage_main())
