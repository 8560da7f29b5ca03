"""What more than one bench section uses: the row, timing, the matmul reference of
an SAE step, the profile's cache, model and bench trainings, the eval timings, the
float32 / bfloat16 fidelity comparison and the headline shapes.

FLOP count of a dense SAE step with B tokens, D = d_model, F = width: forward
encode x@W_enc (2BDF) and decode f@W_dec (2BFD); backward x^T@dz (2BDF),
dx_hat@W_dec^T and f^T@dx_hat (2BFD each); the input needs no gradient, so 10BDF
(``FLOPS_PER_BDF``). The peak reference is the median time of those five products
on random tensors of the same shapes, device and threads
(``matmul_reference_seconds``): achieved / peak = reference time / step time. A
real step adds elementwise work, Adam and data gathering; a sparse decode (TopK
family) skips work, so its dense-equivalent ratio may exceed a dense SAE's.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from atm_repro.cache import ActivationCache, CacheError, cache_dir
from atm_repro.config import Profile, SAESpec
from atm_repro.corpus import load_articles
from atm_repro.evals.absorption import prepare_absorption, run_absorption
from atm_repro.evals.core import (
    next_token_log_probs,
    splice_baseline,
    splice_metrics,
    splice_sequences,
)
from atm_repro.evals.probing import prepare_probing, run_probing
from atm_repro.evaluate import discover_saes
from atm_repro.hardware import CPU_BF16_FLAGS, bf16_native
from atm_repro.intervals import diff_interval
from atm_repro.models import TINY_MODEL, load_model
from atm_repro.profiles import eval_configs
from atm_repro.runs import bench_dir, eval_cache_dir
from atm_repro.saes.io import load_sae
from atm_repro.saes.registry import VARIANTS
from atm_repro.train import sae_meta, train_sae

TRAIN_ROUNDS = 2  # interleaved training rounds per spec (training, bfloat16); fastest counts
REPEATS = 5  # timed repeats (after one warm-up call) of the caching and matmul measurements
FLOPS_PER_BDF = 10  # a dense SAE step (module docstring)
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt}


class BenchError(RuntimeError):
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


def slash_keys(values: dict[tuple[str, str], object]) -> dict[str, object]:
    """``{(a, b): v}`` as ``{"a/b": v}``, for the JSON details."""
    return {f"{a}/{b}": v for (a, b), v in values.items()}


# --------------------------------------------------------------------------- timing


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


def bf16_matmul_seconds(B: int, D: int, F: int, device: str) -> float:
    """``matmul_reference_seconds`` under bfloat16 autocast."""
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        return matmul_reference_seconds(B, D, F, device)


def require_bf16(profile: Profile) -> None:
    """Raise unless the model's and the trainer's devices run bfloat16 natively."""
    for device in {profile.model.device, profile.train.device}:
        if not bf16_native(device):
            raise BenchError(f"bfloat16 is not native on {device} here ({CPU_BF16_FLAGS} "
                             "absent): nothing to compare")


# --------------------------------------------------------------------------- the profile's runs


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


def with_model_dtype(profile: Profile, dtype: str) -> Profile:
    """``profile`` with the model forward in ``dtype`` (training dtypes are set per
    spec, which overrides ``train.dtype``)."""
    return dataclasses.replace(profile, model=dataclasses.replace(profile.model, dtype=dtype))


def main_layer_only(profile: Profile, **cache_fields) -> Profile:
    """``profile`` caching ``train.layer`` alone (its cache stops after that layer),
    with ``cache_fields`` (e.g. ``dtype``) replaced in its cache config."""
    layer = profile.train.layer
    return dataclasses.replace(
        profile, cache=dataclasses.replace(profile.cache, layers=[layer], **cache_fields),
        cross_layer=dataclasses.replace(profile.cross_layer, layers=[layer]))


def load_profile_model(profile: Profile):
    """The profile's model (the tiny test model trains its tokenizer on the corpus)."""
    texts = load_articles(profile.corpus) if profile.model.name == TINY_MODEL else None
    return load_model(profile.model, corpus_texts=texts)


def train_steps(profile: Profile, cache: ActivationCache, name: str, steps: int, out: Path,
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


# --------------------------------------------------------------------------- eval timings


def eval_saes(profile: Profile, steps: int) -> dict[str, tuple[Path, str]]:
    """{name: (SAE dir, where from)}: trained main runs (lowest seed), else bench runs."""
    main = sorted((r for r in discover_saes(profile) if r.group == "main"),
                  key=lambda r: -r.seed)
    found = {r.name: (r.path, f"trained run, seed {r.seed}") for r in main}  # lowest seed last
    missing = [n for n in profile.train.saes if n not in found]
    if missing:
        cache = open_cache(profile)
        for name in missing:
            out = bench_dir(profile) / "saes" / name
            train_steps(profile, cache, name, steps, out, fresh=False)
            found[name] = (out, f"bench run, {steps} steps")
    return {name: found[name] for name in profile.train.saes}


def eval_seconds(profile: Profile, stage: str, saes: dict, prep_dir: Path) -> list[Row]:
    """Seconds of absorption's and probing's preparation (into ``prep_dir``: cold
    when empty) and per SAE of ``saes`` ({name: (dir, source)}), then the splice."""
    cfgs = eval_configs(profile)
    loaded = load_profile_model(profile)
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
    return rows + _splice_seconds(profile, stage, loaded, saes, cfgs["core"])


def _splice_seconds(profile: Profile, stage: str, loaded, saes: dict, core_cfg) -> list[Row]:
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


# --------------------------------------------------------------------------- fidelity

FIDELITY_SPECS = ("topk", "atm")
FIDELITY_SEEDS = (0, 1, 2)
FIDELITY_METRICS = (("l0", "L0"), ("explained_variance", "explained variance"),
                    ("mean_full_absorption", "full absorption (raw)"),
                    ("mean_absorption_fraction", "absorption fraction (raw)"))


def main_absorption_data(profile: Profile, model_profile: Profile | None = None):
    """Absorption data of ``train.layer``, prepared with ``model_profile``'s model
    (default: ``profile``'s) in the run's eval cache (read back when already there)."""
    layer = profile.train.layer
    cfg = eval_configs(profile)["absorption"]
    return prepare_absorption(load_profile_model(model_profile or profile), [layer], cfg,
                              eval_cache_dir(profile))[layer]


def fidelity_values(profile: Profile, arms: dict, subdir: str
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


def fidelity_rows(stage: str, values: dict) -> list[Row]:
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


# --------------------------------------------------------------------------- headline shapes

HEADLINE_WIDTH = 4096  # the headline SAEs' width (6.4 x gemma-3-270m's d_model)
HEADLINE_BATCHES = (1024, 4096)


def headline_specs(profile: Profile) -> dict[str, SAESpec]:
    """One spec of every variant, as the headline trains it: bfloat16 autocast, and
    ATM masking from its first step (its steady state). The profile's first clean
    spec of a variant where it has one, else the variant at its default parameters
    (named as the variant), so that every family is timed whatever the profile
    trains."""
    specs = {}
    for name, spec in profile.train.saes.items():
        if spec.token_masked or any(s.variant == spec.variant for s in specs.values()):
            continue
        specs[name] = spec
    for variant in VARIANTS:
        if not any(s.variant == variant for s in specs.values()):
            specs[variant] = SAESpec(variant=variant)
    return {name: dataclasses.replace(
        spec, params={**spec.params, "warmup_steps": 0} if spec.variant == "atm" else spec.params,
        dtype="bfloat16", width=None, tokens=None) for name, spec in specs.items()}


def headline_profile(profile: Profile, batch_size: int, compiled: bool = True) -> Profile:
    """``profile`` training at width ``HEADLINE_WIDTH`` and ``batch_size``, compiled or not."""
    return dataclasses.replace(profile, train=dataclasses.replace(
        profile.train, width=HEADLINE_WIDTH, batch_size=batch_size, compile=compiled))
