"""The configuration schema: typed dataclasses and their strict dict conversion.

Every stage reads its parameters from a ``Profile``. Conversion is strict:
an unknown key anywhere, a wrong type, or an out-of-range value raises
``ConfigError`` naming the dotted path. This module imports nothing from the
project; loading a profile file, overrides and the runs a profile derives
live in ``atm_repro.profiles``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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


# ----------------------------------------------------------------------------
# The schema
# ----------------------------------------------------------------------------

NOT_STATED = "not stated"


def doc(help: str, default: Any = dataclasses.MISSING, *,
        factory: Any = dataclasses.MISSING, paper: str = NOT_STATED) -> Any:
    """A schema field whose documentation is data: ``help`` says what it does and
    ``paper`` the original paper's value (``atm-repro plan --explain KEY``)."""
    return field(default=default, default_factory=factory,
                 metadata={"help": help, "paper": paper})


@dataclass(frozen=True)
class ModelConfig:
    """Which language model, in which precision, on which device (atm_repro.models)."""

    name: str = doc("the language model: 'gemma-3-270m' or 'smollm2-135m' (offline GGUFs), "
                    "'tiny-gemma3' (seeded random, tests and smoke), a local checkpoint "
                    "directory or .gguf file, or a Hugging Face hub id ('google/gemma-2-2b')",
                    "tiny-gemma3", paper="google/gemma-2-2b")
    dtype: Literal["float32", "bfloat16", "float16"] = doc(
        "precision of the model's forward passes (caching, evals); bfloat16 needs native "
        "support, checked before any work", "float32")
    device: str = doc("torch device of the model ('cpu', 'cuda', 'cuda:1')", "cpu")
    seed: int = doc("weight seed of 'tiny-gemma3'; unused by every other model", 0)


@dataclass(frozen=True)
class CorpusConfig:
    """Training corpus, split into train and eval by article, seeded."""

    name: str = doc("the corpus: 'wiki-vital' (offline) or 'hub:<path>[:<config>]' "
                    "(e.g. 'hub:wikitext:wikitext-103-raw-v1')", "wiki-vital",
                    paper="WikiText-103 (hub:wikitext:wikitext-103-raw-v1)")
    context: int = doc("tokens per sequence fed to the model", 128)
    eval_fraction: float = doc("fraction of articles held out for evaluation", 0.1)
    split_seed: int = doc("seed of the train/eval split by article", 0)
    max_articles: int | None = doc("use at most this many articles (None: all)", None)

    def __post_init__(self) -> None:
        require(self.context >= 2, "corpus.context must be >= 2")
        require(0.0 < self.eval_fraction < 1.0, "corpus.eval_fraction must be in (0, 1)")


@dataclass(frozen=True)
class CacheConfig:
    """Residual-stream activation cache (after block L, for each L in layers)."""

    layers: list[int] = doc("residual-stream layers cached (after block L)", factory=lambda: [1])
    train_tokens: int = doc("tokens cached for SAE training", 20_000)
    eval_tokens: int = doc("tokens cached for evaluation (held-out articles)", 4_000)
    dtype: Literal["float16", "float32", "bfloat16"] = doc(
        "stored dtype of the activations; bfloat16 where SAEs train in bfloat16 (half "
        "float32's bytes, float32's range; docs/benchmarks.md, 'bfloat16 cache')", "float32")
    batch_size: int = doc("sequences per forward pass", 8)
    shard_sequences: int = doc("sequences per shard (a multiple of batch_size)", 64)
    token_mask_prob: float = doc("probability a token is masked in the token-masked cache "
                                 "(used only by the masked-reg recipe)", 0.3)

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
    """One named SAE to train: a variant plus its parameters."""

    variant: str = doc("the SAE variant: standard, topk, batchtopk, jumprelu, atm, matryoshka")
    params: dict[str, Any] = doc("the variant's parameters, validated by its own config "
                                 "dataclass (atm_repro.saes)", factory=dict)
    token_masked: bool = doc("train on the token-masked cache (the masked-reg recipe)", False)
    lr: float | None = doc("learning rate of this SAE (None: train.lr)", None)
    width: int | None = doc("latents of this SAE (None: train.width; the scale study)", None)
    tokens: int | None = doc("training tokens of this SAE (None: train.tokens; the scale "
                             "study)", None)
    dtype: Literal["float32", "bfloat16"] | None = doc(
        "compute dtype of this SAE (None: train.dtype); the TopK family keeps float32 "
        "(docs/benchmarks.md, bfloat16)", None)

    def __post_init__(self) -> None:
        require(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.width is None or self.width > 0, f"width must be > 0, got {self.width}")
        require(self.tokens is None or self.tokens > 0, f"tokens must be > 0, got {self.tokens}")


@dataclass(frozen=True)
class TrainConfig:
    """Trainer settings shared by every variant."""

    layer: int = doc("the layer the main set of SAEs trains on (one of cache.layers)", 1,
                     paper="12 (of Gemma-2-2b's 26)")
    width: int = doc("latents per SAE", 256, paper="16384")
    batch_size: int = doc("tokens per optimizer step", 512)
    tokens: int = doc("training tokens per SAE (may exceed the cache: epochs)", 50_000,
                      paper="5,000,000")
    lr: float = doc("Adam learning rate (a spec's lr overrides it); linear warmup, then "
                    "constant, then linear decay to 0", 3e-4, paper="3e-4")
    lr_warmup_steps: int = doc("steps of linear learning-rate warmup from 0", 10)
    lr_decay_frac: float = doc("fraction of the steps, at the end, over which the learning "
                               "rate decays linearly to 0", 0.2)
    grad_clip: float = doc("gradient-norm clipping threshold", 1.0)
    dead_tokens: int = doc("a latent is dead after this many tokens without firing", 20_000)
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = doc(
        "initial decoder bias, from the scaled init sample", "geometric_median")
    init_sample_tokens: int = doc("tokens used for the input scale and the b_dec init", 4096)
    log_every: int = doc("steps per train_log.jsonl record", 10)
    checkpoint_every: int = doc("steps between checkpoints; 0 = only at the end", 0)
    seeds: list[int] = doc("seeds every SAE trains with, unless sae_seeds names its own",
                           factory=lambda: [0, 1])
    sae_seeds: dict[str, list[int]] = doc(
        "seeds of particular specs when they differ from seeds (e.g. 5 for the compared "
        "families, 3 for the rest); names must be in saes", factory=dict)
    device: str = doc("torch device of SAE training ('cpu', 'cuda')", "cpu")
    dtype: Literal["float32", "bfloat16", "auto"] = doc(
        "compute dtype of the SAE's forward and backward (autocast); weights, gradients and "
        "optimizer state stay float32. bfloat16 needs native support (checked before any "
        "work); auto: bfloat16 where native, else float32, resolved when a run starts and "
        "recorded in its key", "float32")
    compile: bool = doc(
        "run each variant's step kernel through torch.compile (saes/base.py, 'Compiled "
        "steps'): one compile per process and shape; numbers equal eager's up to float "
        "rounding (docs/benchmarks.md)", False)
    snapshot_tokens: list[int] = doc(
        "token counts at which a run also saves its inference SAE, evaluated like a "
        "finished one (train.py, 'Snapshots'); counts at or past a run's budget are the "
        "finished SAE itself", factory=list)
    saes: dict[str, SAESpec] = doc("the main set: SAE name -> spec (train.saes.<name>.<key>)",
                                   factory=dict)

    def seeds_of(self, name: str) -> list[int]:
        """The seeds spec ``name`` is trained with."""
        return list(self.sae_seeds.get(name, self.seeds))

    def for_spec(self, spec: SAESpec) -> TrainConfig:
        """These settings with the spec's own width, token budget and dtype, if it
        sets them (``auto`` stays as it is: the machine resolves it, ``train.run_config``)."""
        return dataclasses.replace(self, width=spec.width or self.width,
                                   tokens=spec.tokens or self.tokens,
                                   dtype=spec.dtype or self.dtype)

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

    param: str = doc("the swept parameter of the spec (e.g. k, l1_coefficient)")
    values: list[float] = doc("the values swept")
    seeds: list[int] = doc("seeds of each swept value", factory=lambda: [0])

    def __post_init__(self) -> None:
        require(len(self.values) > 0, "a sweep needs at least one value")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
                f"a sweep's seeds must be distinct and not empty, got {self.seeds}")


@dataclass(frozen=True)
class AblationConfig:
    """Notebook 03: one-factor-at-a-time ablations of ``sae`` around its profile
    values, plus sparsity sweeps (absorption / explained variance against L0) of
    any spec. Same training budget as the main set, whose run is the point at the
    profile's own value."""

    sae: str = doc("the spec whose factors are ablated (a name in train.saes)", "atm")
    factors: dict[str, list[float | str]] = doc(
        "parameter -> values tried one at a time around the profile's own (numbers, or "
        "choices such as ema_start: [first_batch])", factory=dict)
    sparsity_sweeps: dict[str, SweepConfig] = doc(
        "spec name -> the sparsity parameter swept (ablations.sparsity_sweeps.<name>.<key>)",
        factory=dict)
    seeds: list[int] = doc("seeds of each factor value, unless factor_seeds names its own",
                           factory=lambda: [0])
    factor_seeds: dict[str, list[int]] = doc("seeds of particular factors", factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.factor_seeds) - set(self.factors))
        require(not unknown, f"ablations.factor_seeds: {unknown} not in ablations.factors")
        for seeds in (self.seeds, *self.factor_seeds.values()):
            require(len(seeds) > 0 and len(set(seeds)) == len(seeds),
                    f"ablations: seeds must be distinct and not empty, got {seeds}")


@dataclass(frozen=True)
class ScaleConfig:
    """Notebook 03's scale study: ``saes`` retrained at other widths and token
    budgets, one change at a time. The main-set run is the point at
    ``train.width`` and 1x."""

    saes: list[str] = doc("specs retrained (names in train.saes)", factory=list)
    widths: list[int] = doc("other widths each is trained at", factory=list)
    token_multiples: list[float] = doc(
        "other token budgets, as multiples of train.tokens (a budget beyond the cache "
        "repeats it in epochs)", factory=list)
    seeds: list[int] = doc("seeds of each scale-study run", factory=lambda: [0])

    def __post_init__(self) -> None:
        require(all(w > 0 for w in self.widths), f"scale.widths must be > 0, got {self.widths}")
        require(all(m > 0 for m in self.token_multiples),
                f"scale.token_multiples must be > 0, got {self.token_multiples}")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
                f"scale.seeds must be distinct and not empty, got {self.seeds}")


@dataclass(frozen=True)
class CrossLayerConfig:
    """Notebook 04: SAEs trained at other layers with the main set's settings; at
    ``train.layer`` the main-set run is reused."""

    layers: list[int] = doc("layers the SAEs are trained at (each one of cache.layers)",
                            factory=list)
    saes: list[str] = doc("specs trained at each layer (names in train.saes)", factory=list)
    seed: int = doc("the one seed of each cross-layer run", 0)


@dataclass(frozen=True)
class ConvergenceConfig:
    """Notebook 05's convergence study: which runs' training snapshots
    (``train.snapshot_tokens``) are evaluated. Each snapshot costs a full evaluation,
    so a profile may name the families its curve needs and skip the rest."""

    saes: list[str] | None = doc(
        "main-set specs whose snapshots are evaluated (names in train.saes); unset: "
        "every run that saved snapshots", None)


@dataclass(frozen=True)
class Profile:
    """A whole reproduction setting (a YAML file under profiles/)."""

    name: str = doc("the profile's name; its outputs go to runs/<name>/")
    description: str = doc("one line on what the profile is for", "")
    smoke: bool = doc("a smoke profile: its numbers never reach figures/ or paper/tables/",
                      False)
    seed: int = doc("the profile's base seed", 0)
    model: ModelConfig = doc("the language model (model.<key>)", factory=ModelConfig)
    corpus: CorpusConfig = doc("the text corpus (corpus.<key>)", factory=CorpusConfig)
    cache: CacheConfig = doc("the activation cache (cache.<key>)", factory=CacheConfig)
    train: TrainConfig = doc("SAE training (train.<key>)", factory=TrainConfig)
    ablations: AblationConfig = doc("notebook 03's ablations and sparsity sweeps "
                                    "(ablations.<key>)", factory=AblationConfig)
    cross_layer: CrossLayerConfig = doc("notebook 04's layers (cross_layer.<key>)",
                                        factory=CrossLayerConfig)
    scale: ScaleConfig = doc("notebook 03's scale study (scale.<key>)", factory=ScaleConfig)
    convergence: ConvergenceConfig = doc("which training snapshots notebook 05 evaluates "
                                         "(convergence.<key>)", factory=ConvergenceConfig)
    companions: list[str] = doc(
        "profiles run before this one whose results its paper compares with (the "
        "cross-model table and figure): names under profiles/, without companions",
        factory=list)
    writes_paper: bool = doc(
        "whether notebook 05 writes the paper's figures/ and paper/tables/; false (and "
        "always for smoke): under runs/<name>/ instead (a companion's own outputs)", True)
    evals: dict[str, dict[str, Any]] = doc(
        "per-eval settings, validated by each eval's config class (atm_repro.evals)",
        factory=dict)

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
                             ("convergence.saes", self.convergence.saes or []),
                             ("ablations.sparsity_sweeps", list(self.ablations.sparsity_sweeps)),
                             ("ablations.sae", [self.ablations.sae] if self.ablations.factors
                              else [])):
            unknown = sorted(set(names) - set(self.train.saes))
            require(not unknown, f"{where}: {unknown} not in train.saes {sorted(self.train.saes)}")


def _documented(obj: Any, prefix: str = "") -> dict[str, tuple[dataclasses.Field, Any]]:
    """Dotted key -> (schema field, value) of every field of ``obj``, into nested
    sections and into mappings of them (``train.saes.<name>.lr``)."""
    out = {}
    for f in dataclasses.fields(obj):
        key, value = _join(prefix, f.name), getattr(obj, f.name)
        out[key] = (f, value)
        if dataclasses.is_dataclass(value):
            out.update(_documented(value, key))
        elif isinstance(value, dict):
            for name, entry in value.items():
                if dataclasses.is_dataclass(entry):
                    out.update(_documented(entry, f"{key}.{name}"))
    return out


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(to_dict(value))


def explain(profile: Profile, key: str) -> str:
    """What config field ``key`` (``train.lr``) does, its default, ``profile``'s
    value and the paper's; ``ConfigError`` listing close matches for an unknown key."""
    known = _documented(profile)
    if key not in known:
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
        close += difflib.get_close_matches(key, list(known), n=5, cutoff=0.6)
        close = list(dict.fromkeys(close))[:8]
        raise ConfigError(f"unknown config key {key!r}; "
                          + (f"close matches: {', '.join(close)}" if close else
                             f"keys at the top: {', '.join(k for k in known if '.' not in k)}"))
    f, value = known[key]
    if f.default is not dataclasses.MISSING:
        default = _shown(f.default)
    elif f.default_factory is not dataclasses.MISSING:
        default = _shown(f.default_factory())
    else:
        default = "none (required)"
    return "\n".join([key, f"  {f.metadata['help']}", f"  default: {default}",
                      f"  profile {profile.name}: {_shown(value)}",
                      f"  paper: {f.metadata['paper']}"])


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
