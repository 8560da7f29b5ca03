"""The one SAE trainer: every variant, through the ``SAE`` base contract only.

Recipe (docs/methods.md, "Shared recipe"; every choice is a ``TrainConfig`` value):

* Input scale: one scalar s with E||s x||^2 = d_in, estimated on
  ``init_sample_tokens`` rows of the source; the SAE trains on s * x and s is
  folded into the weights on save (``SAE.fold_input_scale``), so a saved SAE
  takes raw activations with unit-norm decoder rows.
* b_dec init: geometric median (Weiszfeld, <= 100 iterations), mean or zeros
  of the scaled sample; decoder/encoder init by the variant (``init_weights``).
* Adam with the variant's betas and parameter groups (``SAE.param_groups``:
  a group's lr is the scheduled lr times its ``lr_scale``); lr = spec.lr or
  train.lr, linear warmup over ``lr_warmup_steps``, linear decay to 0 over the
  last ``lr_decay_frac`` of steps; grad-norm clipping; unit-norm decoders get the
  parallel gradient removed before the step and rows renormalised after it.
* Precision (``train.dtype``): float32, or bfloat16 autocast around the SAE's
  forward (its matmuls and their gradients in bfloat16) with float32 master
  weights, gradients and Adam state; ``auto`` is resolved when a run starts
  (``run_config``: the run's key records the resolved dtype) and bfloat16 is
  checked to be native before the first step.
* Subnormals flushed to zero on CPU (``hardware.require_subnormal_flush``): the
  Adam first moments of dead latents' weights decay into subnormals, slow on
  x86. Worker threads copy the mode only when created, so importing this module
  sets it (before a caller's first parallel op) and ``train_sae`` checks, before
  any step, that every thread has it.
* Dead latents in tokens: per latent, tokens since it last fired (counted per
  batch); dead once >= ``dead_tokens``. Variants see the mask in ``StepContext``.
* Data order is a function of (seed, step) only: epoch e visits the source rows
  in ``np.random.default_rng([seed, 0, e]).permutation(n)`` order, batches are
  consecutive slices of that stream (training may run over several epochs).

One run writes into its directory::

    cfg.json, sae_weights.safetensors[, atm_repro_state.safetensors]
                      the inference SAE (``atm_repro.saes.io``), input scale folded
    checkpoint.pt     full training state: SAE state (incl. variant buffers such
                      as ATM's EMAs), Adam state, step, the torch RNG behind
                      ``StepContext.generator``, dead counters, log accumulators;
                      resuming from it ends bit-identical to an uninterrupted
                      run on CPU
    train_log.jsonl   one record per ``log_every`` steps: step, tokens, lr, window
                      means of loss, of the variant's loss terms and of L0 (the
                      trainer's count of nonzero latents (``fired_F``); it replaces a
                      variant term of the same name), dead fraction
    metrics.json      summary written last: L0, MSE, FVU / explained variance of
                      the saved SAE on up to ``SUMMARY_TOKENS`` raw eval rows
                      (a training summary; the full metrics are atm_repro.evals),
                      dead fractions, wall time, tokens/s, and the run key

Snapshots (``train.snapshot_tokens``): at step round(t / batch_size) of each
listed count t below the run's budget, the inference SAE as it stands is saved
like a finished one (folded weights, metrics.json with the tokens and steps
seen and a key of its own) into ``runs.snapshot_dir``;
``runs.discover`` lists it (group ``snapshot``) and the evals read it as any
SAE. Such a point has not had the final learning-rate decay. Saving it pauses
the run's clock.

A run whose ``metrics.json`` holds the same key (spec, train config incl.
device, seed, hook metadata, data fingerprint, code version) is skipped; a checkpoint with
that key is resumed; anything else starts afresh.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from atm_repro.cache import HOOK_TEMPLATE, ActivationCache
from atm_repro.config import (
    ConfigError,
    Profile,
    SAESpec,
    TrainConfig,
    fingerprint,
    to_dict,
)
from atm_repro.files import atomic_write_text, keyed_json
from atm_repro.hardware import (
    flush_subnormals,
    require_native_dtype,
    require_subnormal_flush,
    resolve_dtype,
)
from atm_repro.profiles import derived_runs, scale_runs
from atm_repro.runs import METRICS, TRAIN_LOG, sae_dir, snapshot_dir
from atm_repro.sae_metrics import activation_stats
from atm_repro.saes import (
    SAE,
    StepContext,
    build_config,
    build_sae,
    compiled_kernels,
    get_variant,
)
from atm_repro.saes.io import (
    EXTRA_STATE,
    SAE_CFG,
    SAE_WEIGHTS,
    SAEMeta,
    load_sae,
    sae_code_version,
    save_sae,
)

flush_subnormals()  # at import: see "Subnormals" above

CHECKPOINT = "checkpoint.pt"
WEISZFELD_MAX_ITER = 100
SUMMARY_TOKENS = 65_536  # eval rows for the post-training summary (full evals: atm_repro.evals)
_DATA_STREAM, _INIT_STREAM = 0, 1  # sub-streams of np.random.default_rng([seed, stream, ...])


@dataclass
class TrainResult:
    name: str
    seed: int
    path: Path
    status: str  # "trained" | "skipped" (unchanged, reused) | "interrupted" (stop_after_steps)
    steps: int  # optimizer steps done
    metrics: dict | None  # metrics.json content (None when interrupted)


# --------------------------------------------------------------------------- pieces


def input_scale(sample_ND: np.ndarray) -> float:
    """s such that E||s x||^2 = D over the sample."""
    x = np.asarray(sample_ND, dtype=np.float64)
    mean_sq = float((x**2).sum(1).mean())
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise ValueError(f"cannot scale the inputs: mean squared norm is {mean_sq}")
    return math.sqrt(x.shape[1] / mean_sq)


def geometric_median(points_ND: torch.Tensor, max_iter: int = WEISZFELD_MAX_ITER,
                     tol: float = 1e-7) -> torch.Tensor:
    """Weiszfeld's algorithm in float64, started at the mean; stops when a step
    moves the estimate by less than ``tol`` relative to its norm."""
    x = points_ND.to(torch.float64)
    y = x.mean(0)
    for _ in range(max_iter):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-12)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        moved = float((y_new - y).norm())
        y = y_new
        if moved <= tol * max(float(y.norm()), 1e-12):
            break
    return y.to(points_ND.dtype)


def init_b_dec(sample_ND: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "geometric_median":
        return geometric_median(sample_ND)
    if mode == "mean":
        return sample_ND.mean(0)
    if mode == "zeros":
        return torch.zeros(sample_ND.shape[1], dtype=sample_ND.dtype)
    raise ConfigError(f"unknown train.b_dec_init {mode!r}")


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, decay_frac: float) -> float:
    """Linear warmup over ``warmup_steps``, linear decay to 0 over the last ``decay_frac``."""
    warm = 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)
    decay_steps = int(decay_frac * total_steps)
    if decay_steps <= 0:
        return warm
    return min(warm, (total_steps - step) / decay_steps)


class BatchOrder:
    """Row indices of batch ``step``: consecutive slices of per-epoch permutations."""

    def __init__(self, n_rows: int, batch_size: int, seed: int):
        if n_rows <= 0:
            raise ValueError("the activation source is empty")
        self.n, self.batch, self.seed = n_rows, batch_size, seed
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, _DATA_STREAM, epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.n)
        return self._perm

    def indices(self, step: int) -> np.ndarray:
        pos, end, parts = step * self.batch, (step + 1) * self.batch, []
        while pos < end:
            epoch, offset = divmod(pos, self.n)
            take = min(self.n - offset, end - pos)
            parts.append(self._permutation(epoch)[offset:offset + take])
            pos += take
        return np.concatenate(parts)


def init_sample(source, n_tokens: int, seed: int) -> np.ndarray:
    """``n_tokens`` distinct rows of ``source`` (all if fewer), seeded, in row order."""
    n = len(source)
    rng = np.random.default_rng([seed, _INIT_STREAM])
    idx = np.sort(rng.choice(n, size=min(n, n_tokens), replace=False))
    return source.gather(idx)


def initialise(sae: SAE, source, cfg: TrainConfig, seed: int,
               generator: torch.Generator) -> float:
    """Start ``sae`` as training does: weights drawn from ``generator``, b_dec from
    a seeded sample of ``source`` (``cfg.b_dec_init``); returns the input scale."""
    sample = init_sample(source, cfg.init_sample_tokens, seed)
    scale = input_scale(sample)
    sae.init_weights(generator, init_b_dec(torch.from_numpy(sample) * scale, cfg.b_dec_init))
    return scale


def run_key(spec: SAESpec, seed: int, cfg: TrainConfig, meta: SAEMeta, data_key: str) -> dict:
    """Everything a trained SAE depends on (``seeds``/``saes``/``layer`` of ``cfg``
    are replaced by this run's seed, spec and ``meta.layer``); its code is that of
    training the spec's variant."""
    train = {k: v for k, v in to_dict(cfg).items() if k not in ("seeds", "saes", "layer")}
    return {"spec": to_dict(spec), "seed": seed, "train": train, "meta": to_dict(meta),
            "data": data_key, "code_version": sae_code_version(get_variant(spec.variant))}


def summarize(sae: SAE, source, batch_size: int, max_tokens: int = SUMMARY_TOKENS) -> dict:
    """Core activation metrics (``evals.core``) of ``sae`` on the first
    ``max_tokens`` rows of ``source``: L0, MSE, FVU, explained variance, ..."""
    rows = np.arange(min(len(source), max_tokens))
    return activation_stats(sae, source, rows, batch_size).compute()


def run_config(cfg: TrainConfig, spec: SAESpec) -> TrainConfig:
    """The settings one run of ``spec`` trains with (and its key records):
    ``cfg.for_spec(spec)`` with ``dtype: auto`` resolved on this machine."""
    cfg = cfg.for_spec(spec)
    return dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, cfg.device))


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {device!r} but CUDA is not available here")
    torch.device(device)  # raises on a malformed name


# --------------------------------------------------------------------------- one run


class _Run:
    """Mutable training state of one SAE; ``state_dict`` is the checkpoint."""

    def __init__(self, sae: SAE, lr: float, generator: torch.Generator, scale: float):
        self.sae = sae
        # fused: one kernel for all parameters (8x faster than the per-tensor loop on CPU)
        self.opt = torch.optim.Adam(sae.param_groups(), lr=lr, betas=sae.adam_betas, fused=True)
        self.generator = generator
        self.scale = scale
        self.step = 0
        self.wall_s = 0.0
        device = sae.W_dec.device
        self.since_fired_F = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=device)
        self.window: dict[str, torch.Tensor] = {}
        self.window_steps = 0

    def state_dict(self, key: dict) -> dict:
        return {"key": key, "step": self.step, "wall_s": self.wall_s, "input_scale": self.scale,
                "d_in": self.sae.cfg.d_in, "sae": self.sae.state_dict(),
                "optimizer": self.opt.state_dict(), "generator": self.generator.get_state(),
                "since_fired": self.since_fired_F, "window": self.window,
                "window_steps": self.window_steps}

    def load_state_dict(self, ckpt: dict) -> None:
        self.sae.load_state_dict(ckpt["sae"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.generator.set_state(ckpt["generator"])
        self.step, self.wall_s, self.scale = ckpt["step"], ckpt["wall_s"], ckpt["input_scale"]
        device = self.since_fired_F.device
        self.since_fired_F = ckpt["since_fired"].to(device)
        self.window = {k: v.to(device) for k, v in ckpt["window"].items()}
        self.window_steps = ckpt["window_steps"]


def _save_checkpoint(run: _Run, key: dict, out_dir: Path) -> None:
    tmp = out_dir / (CHECKPOINT + ".tmp")
    torch.save(run.state_dict(key), tmp)
    os.replace(tmp, out_dir / CHECKPOINT)


def _load_checkpoint(out_dir: Path, key: dict) -> dict | None:
    path = out_dir / CHECKPOINT
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt if ckpt.get("key") == key else None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint being resumed."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _finished_metrics(out_dir: Path, key: dict) -> dict | None:
    if not (out_dir / SAE_CFG).is_file():
        return None
    return keyed_json(out_dir / METRICS, key)


def train_sae(
    name: str,
    spec: SAESpec,
    seed: int,
    cfg: TrainConfig,
    source,
    out_dir: str | Path,
    meta: SAEMeta,
    eval_source=None,
    data_key: str = "",
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train (or resume, or reuse) one SAE on ``source`` rows into ``out_dir``.

    ``source``: ``len`` / ``d_model`` / ``gather(idx) -> float32 [n, D]`` (a cache
    ``ShardedSource`` or ``ArraySource``). ``eval_source`` (default: ``source``)
    feeds the summary in metrics.json. ``data_key`` fingerprints the data (part
    of the run key). ``stop_after_steps`` stops once that many steps are done,
    as an interruption would, after writing a checkpoint.
    Bad input raises before any training step.
    """
    out_dir = Path(out_dir)
    cfg = run_config(cfg, spec)
    d_in = source.d_model
    sae_cfg = build_config(spec.variant, spec.params, d_in, cfg.width, where=f"train.saes.{name}")
    lr = spec.lr if spec.lr is not None else cfg.lr  # both validated > 0 by config.py
    check_device(cfg.device)
    require_native_dtype(f"train.saes.{name}.dtype (or train.dtype)", cfg.dtype, cfg.device)
    if cfg.device == "cpu":
        require_subnormal_flush()
    if eval_source is not None and eval_source.d_model != d_in:
        raise ConfigError(f"eval source has d_model {eval_source.d_model}, training source {d_in}")
    key = run_key(spec, seed, cfg, meta, data_key)
    total_steps = cfg.tokens // cfg.batch_size

    done = _finished_metrics(out_dir, key)
    if done is not None:
        saved = load_sae(out_dir)
        if saved.cfg.d_in != d_in:
            raise ConfigError(f"the SAE saved at {out_dir} has d_in {saved.cfg.d_in} but the "
                              f"source has d_model {d_in}")
        return TrainResult(name, seed, out_dir, "skipped", total_steps, done)

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = _load_checkpoint(out_dir, key)
    if ckpt is not None and ckpt["d_in"] != d_in:
        raise ConfigError(f"the checkpoint at {out_dir / CHECKPOINT} was trained with d_in "
                          f"{ckpt['d_in']} but the source has d_model {d_in}; use a matching "
                          "source or delete the checkpoint")

    sae = build_sae(spec.variant, sae_cfg)
    generator = torch.Generator().manual_seed(seed)  # CPU: same stream on any device
    if ckpt is None:
        for stale in (METRICS, TRAIN_LOG, CHECKPOINT, SAE_CFG, SAE_WEIGHTS, EXTRA_STATE):
            (out_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(snapshot_dir(out_dir, 0).parent, ignore_errors=True)
        run = _Run(sae.to(cfg.device), lr, generator,
                   initialise(sae, source, cfg, seed, generator))
    else:
        run = _Run(sae.to(cfg.device), lr, generator, ckpt["input_scale"])
        run.load_state_dict(ckpt)
        _truncate_log(out_dir / TRAIN_LOG, run.step)

    end_step = total_steps if stop_after_steps is None else min(total_steps, stop_after_steps)
    eval_source = source if eval_source is None else eval_source
    snapshot_steps = {max(1, round(t / cfg.batch_size)) for t in cfg.snapshot_tokens}

    def save_snapshot() -> None:
        _save_inference(run, cfg, {**key, "snapshot_step": run.step}, meta,
                        snapshot_dir(out_dir, run.step * cfg.batch_size), eval_source)

    _train_loop(run, cfg, source, total_steps, end_step, lr, seed, out_dir, key, name, progress,
                {s: save_snapshot for s in snapshot_steps if s < total_steps})
    if run.step < total_steps:
        return TrainResult(name, seed, out_dir, "interrupted", run.step, None)
    return TrainResult(name, seed, out_dir, "trained", run.step,
                       _save_inference(run, cfg, key, meta, out_dir, eval_source))


def _train_loop(run: _Run, cfg: TrainConfig, source, total_steps: int, end_step: int, lr: float,
                seed: int, out_dir: Path, key: dict, name: str, progress: bool,
                at_step: dict[int, Callable[[], None]]) -> None:
    sae, device, B = run.sae, cfg.device, cfg.batch_size
    order = BatchOrder(len(source), B, seed)
    bar = tqdm(total=total_steps * B, initial=run.step * B, unit="tok", unit_scale=True,
               disable=not progress, desc=f"{name}-s{seed}", leave=False)
    sae.train()
    # bfloat16: matmuls in bfloat16, the float32 master weights and Adam state as they are
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                              enabled=cfg.dtype == "bfloat16")
    with compiled_kernels(cfg.compile):
        _steps(run, cfg, source, order, autocast, total_steps, end_step, lr, out_dir, key, bar,
               at_step)
    bar.close()
    _save_checkpoint(run, key, out_dir)


def _steps(run: _Run, cfg: TrainConfig, source, order: BatchOrder, autocast, total_steps: int,
           end_step: int, lr: float, out_dir: Path, key: dict, bar,
           at_step: dict[int, Callable[[], None]]) -> None:
    """Optimizer steps until ``end_step``, with logging, periodic checkpoints and
    ``at_step[step]()`` once that many steps are done (off the run's clock)."""
    sae, device, B = run.sae, cfg.device, cfg.batch_size
    started = time.perf_counter()
    while run.step < end_step:
        step = run.step
        x_BD = torch.from_numpy(source.gather(order.indices(step))).to(device) * run.scale
        ctx = StepContext(step=step, total_steps=total_steps,
                          dead_mask_F=run.since_fired_F >= cfg.dead_tokens,
                          generator=run.generator)
        with autocast:
            out = sae.training_forward(x_BD, ctx)
        run.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if sae.unit_norm_decoder:
            sae.remove_parallel_decoder_grad()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        step_lr = lr * lr_multiplier(step, total_steps, cfg.lr_warmup_steps, cfg.lr_decay_frac)
        for group in run.opt.param_groups:
            group["lr"] = step_lr * group["lr_scale"]
        run.opt.step()
        if sae.unit_norm_decoder:
            sae.normalize_decoder()

        with torch.no_grad():
            fired_F = out.fired_F
            run.since_fired_F = torch.where(fired_F > 0, 0, run.since_fired_F + B)
            values = {"loss": out.loss.detach(), **out.terms, "l0": fired_F.sum() / B}
            for k, v in values.items():
                v = v.detach().float()
                run.window[k] = run.window[k] + v if k in run.window else v.clone()
        run.window_steps += 1
        run.step += 1
        bar.update(B)
        if run.step % cfg.log_every == 0 or run.step == total_steps:
            record = _log_record(run, B, step_lr, cfg.dead_tokens)
            with (out_dir / TRAIN_LOG).open("a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.4g}", l0=f"{record['l0']:.1f}")
        if run.step in at_step:
            run.wall_s += time.perf_counter() - started
            at_step[run.step]()
            started = time.perf_counter()
        if run.step < end_step and cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
            run.wall_s += time.perf_counter() - started
            started = time.perf_counter()
            _save_checkpoint(run, key, out_dir)
    run.wall_s += time.perf_counter() - started


def _log_record(run: _Run, batch_size: int, lr: float, dead_tokens: int) -> dict:
    means = {k: float(v) / run.window_steps for k, v in run.window.items()}
    run.window, run.window_steps = {}, 0
    dead = float((run.since_fired_F >= dead_tokens).float().mean())
    return {"step": run.step, "tokens": run.step * batch_size, "lr": lr, **means,
            "dead_frac": dead}


def _save_inference(run: _Run, cfg: TrainConfig, key: dict, meta: SAEMeta, out_dir: Path,
                    eval_source) -> dict:
    """Save the folded inference SAE as it stands, then metrics.json (written last:
    marks completion); the run's end or a snapshot."""
    saved = copy.deepcopy(run.sae).eval()
    saved.fold_input_scale(run.scale)
    save_sae(saved, out_dir, meta, input_scale_folded=run.scale,
             extra={"run_key": fingerprint(key), "train": key["train"], "spec": key["spec"],
                    "seed": key["seed"]})
    tokens = run.step * cfg.batch_size
    metrics = {
        **summarize(saved, eval_source, cfg.batch_size),
        "dead_frac": float((run.since_fired_F >= cfg.dead_tokens).float().mean()),
        "steps": run.step,
        "tokens": tokens,
        "input_scale": run.scale,
        "wall_s": run.wall_s,
        "tokens_per_s": tokens / run.wall_s if run.wall_s > 0 else math.nan,
        "key": key,
    }
    atomic_write_text(out_dir / METRICS, json.dumps(metrics, indent=1))
    return metrics


# --------------------------------------------------------------------------- driver


def sae_meta(profile: Profile, cache: ActivationCache, layer: int) -> SAEMeta:
    """The metadata saved with an SAE trained on ``layer`` of ``cache``."""
    return SAEMeta(model_name=cache.manifest.model, hook_name=HOOK_TEMPLATE.format(layer=layer),
                   layer=layer, context_size=cache.manifest.context,
                   dataset_path=profile.corpus.name)


def train_profile(
    profile: Profile,
    cache: ActivationCache,
    layer: int | None = None,
    names: list[str] | None = None,
    seeds: list[int] | dict[str, list[int]] | None = None,
    masked_cache: ActivationCache | None = None,
    progress: bool = True,
    specs: dict[str, SAESpec] | None = None,
) -> list[TrainResult]:
    """Train every named spec (default ``profile.train.saes``) x seed on ``layer``
    (default ``train.layer``) into ``sae_dir(...)``; ``seeds`` is one list for all
    specs, a list per name, or None for ``train.seeds_of``. Unchanged runs are skipped,
    interrupted ones resumed. The specs' parameters were validated when the profile
    loaded (``profiles.load_profile``); names, caches and shapes are checked here,
    before the first run."""
    tcfg = profile.train
    specs = tcfg.saes if specs is None else specs
    layer = tcfg.layer if layer is None else layer
    names = list(specs) if names is None else names
    if seeds is None:
        seeds = {name: tcfg.seeds_of(name) for name in names}
    elif not isinstance(seeds, dict):
        seeds = {name: list(seeds) for name in names}
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise ConfigError(f"unknown SAE name(s) {unknown}; known: {sorted(specs)}")
    if not names:
        raise ConfigError("nothing to train: no SAE specs")
    check_device(tcfg.device)
    clean_train = cache.source(layer, "train")
    eval_source = cache.source(layer, "eval")
    jobs = []
    for name in names:
        spec = specs[name]
        if spec.token_masked:
            if masked_cache is None:
                raise ConfigError(f"train.saes.{name} is token_masked: pass the masked cache "
                                  "(build_cache(profile, masked=True))")
            source, data_key = masked_cache.source(layer, "train"), masked_cache.manifest.data_key
        else:
            source, data_key = clean_train, cache.manifest.data_key
        if source.d_model != eval_source.d_model:
            raise ConfigError(f"train.saes.{name}: training activations have d_model "
                              f"{source.d_model}, eval activations {eval_source.d_model}")
        jobs.append((name, spec, source, data_key))
    meta = sae_meta(profile, cache, layer)
    results = []
    for name, spec, source, data_key in jobs:
        for seed in seeds[name]:
            result = train_sae(name, spec, seed, tcfg, source, sae_dir(profile, layer, name, seed),
                               meta, eval_source=eval_source, data_key=data_key,
                               progress=progress)
            if progress:
                tqdm.write(f"{name}-s{seed} L{layer}: {result.status}, "
                           f"L0 {result.metrics['l0']:.1f}, "
                           f"FVU {result.metrics['fvu']:.3f}")
            results.append(result)
    return results


def train_ablations(profile: Profile, cache: ActivationCache,
                    progress: bool = True) -> list[TrainResult]:
    """Notebook 03: the ablation and sparsity-sweep runs (``profiles.derived_runs``),
    each at its own seeds; none in a profile without ablations or sweeps."""
    runs = derived_runs(profile)
    if not runs:
        return []
    return train_profile(profile, cache, specs={r.name: r.spec for r in runs},
                         seeds={r.name: list(r.seeds) for r in runs}, progress=progress)


def train_scale(profile: Profile, cache: ActivationCache,
                progress: bool = True) -> list[TrainResult]:
    """Notebook 03: the scale-study runs (``profiles.scale_runs``), each at its seeds."""
    runs = scale_runs(profile)
    if not runs:
        return []
    return train_profile(profile, cache, specs={r.name: r.spec for r in runs},
                         seeds={r.name: list(r.seeds) for r in runs}, progress=progress)


def train_cross_layer(profile: Profile, cache: ActivationCache,
                      progress: bool = True) -> list[TrainResult]:
    """Notebook 04: ``cross_layer.saes`` at every ``cross_layer.layers`` (the main
    layer's runs are the main set's, reused)."""
    cross = profile.cross_layer
    return [r for layer in cross.layers
            for r in train_profile(profile, cache, layer=layer, names=cross.saes,
                                   seeds=[cross.seed], progress=progress)]
