"""Typed, schema-validated configuration: one profile (YAML) -> one ``Profile``.

Every stage reads its parameters from a ``Profile``. Loading is strict:
an unknown key anywhere, a wrong type, or an out-of-range value raises
``ConfigError`` naming the dotted path, before any model or data is touched.
Overrides are a nested dict or dotted keys (``{"train.width": 1024}``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(os.environ.get("ATM_REPRO_ROOT", Path(__file__).resolve().parent.parent))
PROFILES_DIR = REPO_ROOT / "profiles"


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


# ----------------------------------------------------------------------------
# The schema
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Which language model: 'gemma-3-270m' (offline GGUF), 'tiny-gemma3'
    (seeded random, tests/smoke), or a Hugging Face hub id ('google/gemma-2-2b')."""

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
    dtype: Literal["float16", "float32"] = "float32"
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

    def __post_init__(self) -> None:
        require(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")


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
    device: str = "cpu"
    saes: dict[str, SAESpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.width > 0, "train.width must be > 0")
        require(self.batch_size > 0, "train.batch_size must be > 0")
        require(self.tokens >= self.batch_size, "train.tokens must be >= train.batch_size")
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(self.grad_clip > 0, "train.grad_clip must be > 0")
        require(0.0 <= self.lr_decay_frac < 1.0, "train.lr_decay_frac must be in [0, 1)")
        require(len(self.seeds) > 0, "train.seeds must not be empty")


@dataclass(frozen=True)
class SweepConfig:
    """One hyperparameter of one SAE spec swept over values (one seed each)."""

    param: str
    values: list[float]

    def __post_init__(self) -> None:
        require(len(self.values) > 0, "a sweep needs at least one value")


@dataclass(frozen=True)
class AblationConfig:
    """Notebook 03: one-factor-at-a-time ablations of ``sae`` around its profile
    values, plus sparsity sweeps (absorption / explained variance against L0)
    of any spec. One seed; same training budget as the main set, whose run is
    the point at the profile's own value."""

    sae: str = "atm"
    factors: dict[str, list[float]] = field(default_factory=dict)
    sparsity_sweeps: dict[str, SweepConfig] = field(default_factory=dict)
    seed: int = 0


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
    # Per-eval settings, validated by each eval's config class (atm_repro.evals).
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
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
                             ("ablations.sparsity_sweeps", list(self.ablations.sparsity_sweeps)),
                             ("ablations.sae", [self.ablations.sae] if self.ablations.factors
                              else [])):
            unknown = sorted(set(names) - set(self.train.saes))
            require(not unknown, f"{where}: {unknown} not in train.saes {sorted(self.train.saes)}")

    @property
    def run_dir(self) -> Path:
        return Path(os.environ.get("ATM_REPRO_RUNS", REPO_ROOT / "runs")) / self.name


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``overrides`` applied: a dotted key (``"train.saes"``) replaces
    the value at that path; a plain key whose value is a mapping deep-merges into
    the mapping there (``{"train": {"width": 64}}`` keeps the other train keys)."""
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a mapping")
        leaf = parts[-1]
        if len(parts) == 1 and isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = _merge(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base`` (dicts merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(profile: str | Path, overrides: dict[str, Any] | str | None = None) -> Profile:
    """Load ``profiles/<profile>.yaml`` (or a path), apply overrides, validate.

    Overrides: see ``apply_overrides``; a string is parsed as YAML/JSON (papermill
    passes ``-p overrides '{...}'`` as text). Raises ``ConfigError`` for an unknown
    profile, unknown key or bad value.
    """
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown profile {str(profile)!r}: no file {path}; "
            f"available profiles: {available_profiles()}"
        )
    if isinstance(overrides, str):  # papermill's `-p overrides '{...}'` passes text
        overrides = yaml.safe_load(overrides) or {}
    if not isinstance(overrides or {}, dict):
        raise ConfigError(f"overrides must be a mapping, got {overrides!r}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile must be a mapping")
    merged = apply_overrides(raw, overrides or {})
    cfg = from_dict(Profile, merged)
    # Variant parameters are validated by each variant's config (import here:
    # the SAE registry imports torch, which config loading should not need).
    from atm_repro.evals import EVAL_CONFIGS
    from atm_repro.saes import validate_spec

    for name, spec in cfg.train.saes.items():
        validate_spec(spec, d_in=1, width=cfg.train.width, where=f"train.saes.{name}")
    for name, spec in derived_specs(cfg).items():
        validate_spec(spec, d_in=1, width=cfg.train.width, where=f"ablations ({name})")
    unknown = sorted(set(cfg.evals) - set(EVAL_CONFIGS))
    require(not unknown, f"evals: unknown eval(s) {unknown}; known: {sorted(EVAL_CONFIGS)}")
    for name, params in cfg.evals.items():
        from_dict(EVAL_CONFIGS[name], params, f"evals.{name}")
    return cfg


@dataclass(frozen=True)
class DerivedRun:
    """One notebook-03 run: ``base`` spec with ``param`` set to ``value``."""

    name: str  # e.g. "atm-beta0.9", "topk-k80"
    base: str
    param: str
    value: float
    spec: SAESpec


def derived_runs(cfg: Profile) -> list[DerivedRun]:
    """The ablation and sparsity-sweep SAEs of notebook 03. A value equal to the
    base spec's own (resolved) value is left out: the main-set run is that point."""
    from atm_repro.saes import build_config

    abl = cfg.ablations
    plan = [(abl.sae, param, values) for param, values in abl.factors.items()]
    plan += [(base, sweep.param, sweep.values) for base, sweep in abl.sparsity_sweeps.items()]
    out = []
    for base, param, values in plan:
        spec = cfg.train.saes[base]
        resolved = build_config(spec.variant, spec.params, 1, cfg.train.width,
                                f"train.saes.{base}")
        if not hasattr(resolved, param):
            raise ConfigError(f"ablations: {spec.variant} has no parameter {param!r}")
        for value in values:
            if value != getattr(resolved, param):
                out.append(DerivedRun(f"{base}-{param}{value:g}", base, param, value,
                                      dataclasses.replace(spec, params={**spec.params,
                                                                        param: value})))
    return out


def derived_specs(cfg: Profile) -> dict[str, SAESpec]:
    """``derived_runs`` as {run name: spec}."""
    return {run.name: run.spec for run in derived_runs(cfg)}
