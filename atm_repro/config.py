"""The configuration schema: typed dataclasses and their strict dict conversion.

Every stage reads its parameters from a ``Profile``. Conversion is strict:
an unknown key anywhere, a wrong type, or an out-of-range value raises
``ConfigError`` naming the dotted path. This module imports nothing from the
project; loading a profile file, overrides and the runs a profile derives
live in ``atm_repro.profiles``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atm_repro.hardware import CPU_BF16_FLAGS, bf16_native

REPO_ROOT = Path(os.environ.get("ATM_REPRO_ROOT", Path(__file__).resolve().parent.parent))


class ConfigError(ValueError):
    """A profile or override does not match the schema."""


# ----------------------------------------------------------------------------
# Generic dataclass <- dict conversion with validation
# ----------------------------------------------------------------------------


def _check_type(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {
            _check_type(k, args[0], f"{path}.<key>"): _check_type(v, args[1], f"{path}.{k}")
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            # YAML reads 1e6 as a string or float; accept integral floats.
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported schema type {tp}")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and bad types."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = path or cls.__name__
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _check_type(data[f.name], hints[f.name], _join(path, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, f.name)}: required key missing")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def to_dict(obj: Any) -> Any:
    """Plain-data view of a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def fingerprint(obj: Any) -> str:
    """Stable sha256 of a config (or any JSON-able value)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def resolve_dtype(dtype: str, device: str, cpuinfo: str | None = None) -> str:
    """``auto`` -> bfloat16 where ``device`` runs it natively, else float32; other
    values as they are. A run's key records the resolved dtype."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if bf16_native(device, cpuinfo) else "float32"


def require_native_dtype(where: str, dtype: str, device: str, cpuinfo: str | None = None
                         ) -> None:
    """``ConfigError`` when ``where`` asks for bfloat16 on a device without native
    bfloat16 (``hardware``): emulated bfloat16 is slower than float32 and would only
    lose precision. Called before any heavy work (the run, the trainer, the model
    load), not when a profile is merely loaded, so that every machine can read every
    profile."""
    if dtype == "bfloat16" and not bf16_native(device, cpuinfo):
        what = ("this GPU" if device.startswith("cuda") else
                f"this CPU (no {' / '.join(CPU_BF16_FLAGS)} flag in /proc/cpuinfo)")
        raise ConfigError(f"{where}: bfloat16 is not native on {what}; torch would "
                          f"emulate it, slower than float32: set {where} to float32")


# ----------------------------------------------------------------------------
# The schema
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Which language model: 'gemma-3-270m' or 'smollm2-135m' (offline GGUFs),
    'tiny-gemma3' (seeded random, tests/smoke), a local checkpoint directory or
    .gguf file, or a Hugging Face hub id ('google/gemma-2-2b'); see atm_repro.models."""

    name: str = "tiny-gemma3"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    seed: int = 0  # only used by tiny-gemma3


@dataclass(frozen=True)
class CorpusConfig:
    """Training corpus: 'wiki-vital' (offline) or 'hub:<path>[:<config>]'
    (e.g. 'hub:wikitext:wikitext-103-raw-v1'). Split by article, seeded."""

    name: str = "wiki-vital"
    context: int = 128
    eval_fraction: float = 0.1
    split_seed: int = 0
    max_articles: int | None = None

    def __post_init__(self) -> None:
        require(self.context >= 2, "corpus.context must be >= 2")
        require(0.0 < self.eval_fraction < 1.0, "corpus.eval_fraction must be in (0, 1)")


@dataclass(frozen=True)
class CacheConfig:
    """Residual-stream activation cache (after block L, for each L in layers)."""

    layers: list[int] = field(default_factory=lambda: [1])
    train_tokens: int = 20_000
    eval_tokens: int = 4_000
    # stored dtype of the activations; bfloat16 where SAEs train in bfloat16 (half
    # float32's bytes, float32's range; docs/benchmarks.md, "bfloat16 cache")
    dtype: Literal["float16", "float32", "bfloat16"] = "float32"
    batch_size: int = 8  # sequences per forward pass
    shard_sequences: int = 64  # sequences per shard (multiple of batch_size)
    token_mask_prob: float = 0.3  # used only by the masked cache (masked-reg)

    def __post_init__(self) -> None:
        require(len(self.layers) > 0, "cache.layers must not be empty")
        require(len(set(self.layers)) == len(self.layers), "cache.layers has duplicates")
        require(all(layer >= 0 for layer in self.layers), "cache.layers must be >= 0")
        require(self.train_tokens > 0 and self.eval_tokens > 0, "cache token counts must be > 0")
        require(self.batch_size > 0, "cache.batch_size must be > 0")
        require(
            self.shard_sequences % self.batch_size == 0,
            "cache.shard_sequences must be a multiple of cache.batch_size",
        )
        require(0.0 <= self.token_mask_prob < 1.0, "cache.token_mask_prob must be in [0, 1)")


@dataclass(frozen=True)
class SAESpec:
    """One named SAE to train: a variant plus its parameters.

    ``params`` are validated by the variant's own config dataclass.
    ``token_masked`` trains on the token-masked cache (the masked-reg recipe).
    """

    variant: str
    params: dict[str, Any] = field(default_factory=dict)
    token_masked: bool = False
    lr: float | None = None  # overrides train.lr for this SAE
    width: int | None = None  # overrides train.width (the scale study)
    tokens: int | None = None  # overrides train.tokens (the scale study)
    # overrides train.dtype: the TopK family keeps float32 (docs/benchmarks.md, bfloat16)
    dtype: Literal["float32", "bfloat16"] | None = None

    def __post_init__(self) -> None:
        require(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.width is None or self.width > 0, f"width must be > 0, got {self.width}")
        require(self.tokens is None or self.tokens > 0, f"tokens must be > 0, got {self.tokens}")


@dataclass(frozen=True)
class TrainConfig:
    """Trainer settings shared by every variant."""

    layer: int = 1
    width: int = 256
    batch_size: int = 512  # tokens per step
    tokens: int = 50_000  # training tokens per SAE (may exceed the cache: epochs)
    lr: float = 3e-4
    lr_warmup_steps: int = 10
    lr_decay_frac: float = 0.2
    grad_clip: float = 1.0
    dead_tokens: int = 20_000  # a latent is dead after this many tokens without firing
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    init_sample_tokens: int = 4096  # tokens used for the input scale and b_dec init
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0 = only at the end
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    # seeds of particular specs when they differ from ``seeds`` (e.g. 5 for the
    # compared families, 3 for the rest); names must be in ``saes``
    sae_seeds: dict[str, list[int]] = field(default_factory=dict)
    device: str = "cpu"
    # compute dtype of the SAE's forward and backward (autocast); weights, gradients
    # and optimizer state stay float32. bfloat16 needs native support (checked before
    # any work); auto: bfloat16 where native, else float32 (``resolve_dtype``).
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    # run each variant's step kernel through torch.compile (saes/base.py, "Compiled
    # steps"): its [B, F] elementwise work fused; a one-time compile per process
    # and shape (tens of seconds, cached on disk); numbers equal eager's up to
    # float rounding (docs/benchmarks.md)
    compile: bool = False
    # token counts at which a run also saves its inference SAE, evaluated like a
    # finished one (train.py, "Snapshots"): a convergence curve from one run's
    # training, without its learning-rate decay; counts at or past a run's own
    # budget are the finished SAE itself and are not saved again
    snapshot_tokens: list[int] = field(default_factory=list)
    saes: dict[str, SAESpec] = field(default_factory=dict)

    def seeds_of(self, name: str) -> list[int]:
        """The seeds spec ``name`` is trained with."""
        return list(self.sae_seeds.get(name, self.seeds))

    def for_spec(self, spec: SAESpec) -> TrainConfig:
        """These settings with the spec's own width, token budget and dtype, if it
        sets them."""
        return dataclasses.replace(self, width=spec.width or self.width,
                                   tokens=spec.tokens or self.tokens,
                                   dtype=spec.dtype or resolve_dtype(self.dtype, self.device))

    def __post_init__(self) -> None:
        require(self.width > 0, "train.width must be > 0")
        require(self.batch_size > 0, "train.batch_size must be > 0")
        require(self.tokens >= self.batch_size, "train.tokens must be >= train.batch_size")
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(self.grad_clip > 0, "train.grad_clip must be > 0")
        require(0.0 <= self.lr_decay_frac < 1.0, "train.lr_decay_frac must be in [0, 1)")
        require(len(self.seeds) > 0, "train.seeds must not be empty")
        require(all(t >= self.batch_size for t in self.snapshot_tokens) and
                len(set(self.snapshot_tokens)) == len(self.snapshot_tokens),
                f"train.snapshot_tokens must be distinct and >= train.batch_size, "
                f"got {self.snapshot_tokens}")
        unknown = sorted(set(self.sae_seeds) - set(self.saes))
        require(not unknown, f"train.sae_seeds: {unknown} not in train.saes {sorted(self.saes)}")
        for name, seeds in {"seeds": self.seeds, **self.sae_seeds}.items():
            require(len(seeds) > 0 and len(set(seeds)) == len(seeds),
                    f"train.sae_seeds.{name}: seeds must be distinct and not empty, got {seeds}"
                    if name != "seeds" else
                    f"train.seeds must be distinct and not empty, got {seeds}")


@dataclass(frozen=True)
class SweepConfig:
    """One hyperparameter of one SAE spec swept over values, each at ``seeds``
    (the spec's own value is its main-set run, at the main set's seeds)."""

    param: str
    values: list[float]
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        require(len(self.values) > 0, "a sweep needs at least one value")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
                f"a sweep's seeds must be distinct and not empty, got {self.seeds}")


@dataclass(frozen=True)
class AblationConfig:
    """Notebook 03: one-factor-at-a-time ablations of ``sae`` around its profile
    values (numbers, or choices such as ``ema_start: [first_batch]``), plus
    sparsity sweeps (absorption / explained variance against L0) of any spec.
    Same training budget as the main set, whose run is the point at the
    profile's own value. Factors run at ``seeds`` unless ``factor_seeds``
    names their own."""

    sae: str = "atm"
    factors: dict[str, list[float | str]] = field(default_factory=dict)
    sparsity_sweeps: dict[str, SweepConfig] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    factor_seeds: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.factor_seeds) - set(self.factors))
        require(not unknown, f"ablations.factor_seeds: {unknown} not in ablations.factors")
        for seeds in (self.seeds, *self.factor_seeds.values()):
            require(len(seeds) > 0 and len(set(seeds)) == len(seeds),
                    f"ablations: seeds must be distinct and not empty, got {seeds}")


@dataclass(frozen=True)
class ScaleConfig:
    """Notebook 03's scale study: ``saes`` retrained at other ``widths`` and at
    other token budgets (``token_multiples`` of ``train.tokens``; a budget beyond
    the cache repeats it in epochs), one change at a time, each at ``seeds``. The
    main-set run is the point at ``train.width`` and 1x."""

    saes: list[str] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    token_multiples: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        require(all(w > 0 for w in self.widths), f"scale.widths must be > 0, got {self.widths}")
        require(all(m > 0 for m in self.token_multiples),
                f"scale.token_multiples must be > 0, got {self.token_multiples}")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
                f"scale.seeds must be distinct and not empty, got {self.seeds}")


@dataclass(frozen=True)
class CrossLayerConfig:
    """Notebook 04: ``saes`` (names in ``train.saes``) trained at each layer
    with the main set's settings; at ``train.layer`` the main-set run is reused."""

    layers: list[int] = field(default_factory=list)
    saes: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass(frozen=True)
class Profile:
    """A whole reproduction setting. ``name`` decides runs/<name>/."""

    name: str
    description: str = ""
    smoke: bool = False  # smoke numbers never reach figures/ or paper/tables/
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ablations: AblationConfig = field(default_factory=AblationConfig)
    cross_layer: CrossLayerConfig = field(default_factory=CrossLayerConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    # Profiles run before this one whose results its paper compares with (the
    # cross-model table and figure): names under profiles/, without companions.
    companions: list[str] = field(default_factory=list)
    # Whether notebook 05 writes the paper's figures/ and paper/tables/; false (and
    # always for smoke): under runs/<name>/ instead (a companion's own outputs).
    writes_paper: bool = True
    # Per-eval settings, validated by each eval's config class (atm_repro.evals).
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.name not in self.companions,
                f"companions: profile {self.name!r} cannot be its own companion")
        require(len(set(self.companions)) == len(self.companions),
                f"companions must be distinct, got {self.companions}")
        require(
            self.train.layer in self.cache.layers,
            f"train.layer {self.train.layer} is not among cache.layers {self.cache.layers}",
        )
        for layer in self.cross_layer.layers:
            require(layer in self.cache.layers,
                    f"cross_layer.layers: {layer} is not among cache.layers {self.cache.layers}")
        masked = [n for n in self.cross_layer.saes
                  if n in self.train.saes and self.train.saes[n].token_masked]
        require(not masked, f"cross_layer.saes: {masked} train on the token-masked cache, "
                            "which holds only train.layer")
        for where, names in (("cross_layer.saes", self.cross_layer.saes),
                             ("scale.saes", self.scale.saes),
                             ("ablations.sparsity_sweeps", list(self.ablations.sparsity_sweeps)),
                             ("ablations.sae", [self.ablations.sae] if self.ablations.factors
                              else [])):
            unknown = sorted(set(names) - set(self.train.saes))
            require(not unknown, f"{where}: {unknown} not in train.saes {sorted(self.train.saes)}")


@dataclass(frozen=True)
class DerivedRun:
    """One run derived from a named spec with one parameter changed: a notebook-03
    ablation or sparsity-sweep point, or a toy-benchmark sweep point."""

    name: str  # e.g. "atm-beta0.9", "topk-k80", "atm-ema_startfirst_batch"
    base: str
    param: str
    value: float | str
    spec: SAESpec
    seeds: tuple[int, ...] = (0,)


def format_value(value: float | str) -> str:
    """A factor or sweep value as run names and summaries show it (``0.9``, ``8``,
    ``first_batch``)."""
    return value if isinstance(value, str) else f"{value:g}"


def derive(base: str, spec: SAESpec, param: str, value: float | str,
           seeds: tuple[int, ...] = (0,)) -> DerivedRun:
    """``spec`` (named ``base``) with ``param`` set to ``value``; the run is named
    ``<base>-<param><value>``."""
    return DerivedRun(f"{base}-{param}{format_value(value)}", base, param, value,
                      dataclasses.replace(spec, params={**spec.params, param: value}),
                      tuple(seeds))
