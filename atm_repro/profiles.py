"""Loading a profile: ``profiles/<name>.yaml`` + overrides -> a validated ``Profile``.

Loading is strict (``config.from_dict``) and also validates what the schema
alone cannot: every SAE spec against its variant's config (``atm_repro.saes``)
and every ``evals.<name>`` section against that eval's config
(``atm_repro.evals.EVAL_CONFIGS``), before any model or data is touched.
Overrides are a nested dict or dotted keys (``{"train.width": 1024}``). The
runs a profile derives from its specs (notebook 03's ablations and sparsity
sweeps) are defined here too.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any

import yaml

from atm_repro.config import (
    REPO_ROOT,
    ConfigError,
    DerivedRun,
    Profile,
    SAESpec,
    derive,
    format_value,
    from_dict,
    require,
)
from atm_repro.evals import EVAL_CONFIGS
from atm_repro.hardware import bf16_native, require_native_dtype, resolve_dtype
from atm_repro.saes import build_config, validate_spec

PROFILES_DIR = REPO_ROOT / "profiles"


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
    for name, spec in cfg.train.saes.items():  # first: derived runs resolve their defaults
        validate_spec(spec, d_in=1, width=cfg.train.for_spec(spec).width,
                      where=f"train.saes.{name}")
    for where, runs in (("ablations", derived_runs(cfg)), ("scale", scale_runs(cfg))):
        for run in runs:
            validate_spec(run.spec, d_in=1, width=cfg.train.for_spec(run.spec).width,
                          where=f"{where} ({run.name})")
    unknown = sorted(set(cfg.evals) - set(EVAL_CONFIGS))
    require(not unknown, f"evals: unknown eval(s) {unknown}; known: {sorted(EVAL_CONFIGS)}")
    for name, params in cfg.evals.items():
        from_dict(EVAL_CONFIGS[name], params, f"evals.{name}")
    companion_profiles(cfg)  # each companion loads and is a valid companion
    return cfg


def check_dtypes(cfg: Profile, cpuinfo: str | None = None) -> None:
    """Every bfloat16 the profile asks for (``model.dtype``, ``train.dtype``, a
    spec's ``dtype``) is native here (``hardware.require_native_dtype``); the pipeline
    calls it before the first notebook."""
    checks = [("model.dtype", cfg.model.dtype, cfg.model.device),
              ("train.dtype", cfg.train.dtype, cfg.train.device)]
    checks += [(f"train.saes.{name}.dtype", spec.dtype, cfg.train.device)
               for name, spec in cfg.train.saes.items()]
    for where, dtype, device in checks:
        if dtype is not None:
            require_native_dtype(where, dtype, device, cpuinfo)


def describe_dtypes(cfg: Profile, cpuinfo: str | None = None) -> str:
    """One line on the compute dtypes this machine will use (``train.dtype: auto``
    resolved, and the specs that override it)."""
    train = resolve_dtype(cfg.train.dtype, cfg.train.device, cpuinfo)
    why = ""
    if cfg.train.dtype == "auto":
        native = bf16_native(cfg.train.device, cpuinfo)
        why = f" (auto: bfloat16 is {'' if native else 'not '}native here)"
    own = sorted(f"{n} {s.dtype}" for n, s in cfg.train.saes.items()
                 if s.dtype is not None and s.dtype != train)
    return (f"dtypes: model forward {cfg.model.dtype}; SAE training {train}{why}"
            + (f", except {', '.join(own)}" if own else ""))


def companion_profiles(cfg: Profile) -> list[Profile]:
    """``cfg.companions`` loaded (no overrides; once per process): each must exist,
    have no companions of its own, be smoke exactly when ``cfg`` is, and not write
    the paper's outputs (its own tables stay under runs/<name>/)."""
    out = []
    for name in cfg.companions:
        other = _companion(name)
        require(not other.companions,
                f"companions: {name!r} has companions of its own ({other.companions})")
        require(other.smoke == cfg.smoke,
                f"companions: {name!r} is {'' if other.smoke else 'not '}a smoke profile "
                f"and {cfg.name!r} is {'' if cfg.smoke else 'not '}one")
        require(not other.writes_paper,
                f"companions: {name!r} must set writes_paper: false (only {cfg.name!r} "
                "writes the paper's tables and figures)")
        out.append(other)
    return out


@functools.cache
def _companion(name: str) -> Profile:
    """Companion ``name`` loaded once per process: validating the profile that names
    it, the pipeline and notebook 05 all ask for it."""
    return load_profile(name)


def eval_configs(profile: Profile) -> dict:
    """Each eval's config: the profile's ``evals.<name>`` over the config's defaults."""
    return {name: from_dict(cls, profile.evals.get(name, {}), f"evals.{name}")
            for name, cls in EVAL_CONFIGS.items()}


def resolved_param(profile: Profile, name: str, param: str) -> Any:
    """The value of ``param`` in spec ``name``'s resolved config (defaults filled in)."""
    spec = profile.train.saes[name]
    resolved = build_config(spec.variant, spec.params, 1, profile.train.width,
                            f"train.saes.{name}")
    if not hasattr(resolved, param):
        raise ConfigError(f"ablations: {spec.variant} has no parameter {param!r}")
    return getattr(resolved, param)


def derived_runs(cfg: Profile) -> list[DerivedRun]:
    """The ablation and sparsity-sweep SAEs of notebook 03. A value equal to the
    base spec's own (resolved) value is left out: the main-set run is that point."""
    abl = cfg.ablations
    plan = [(abl.sae, param, values, abl.factor_seeds.get(param, abl.seeds))
            for param, values in abl.factors.items()]
    plan += [(base, sweep.param, sweep.values, sweep.seeds)
             for base, sweep in abl.sparsity_sweeps.items()]
    out = []
    for base, param, values, seeds in plan:
        default = resolved_param(cfg, base, param)
        out += [derive(base, cfg.train.saes[base], param, value, tuple(seeds))
                for value in values if value != default]
    return out


def derived_specs(cfg: Profile) -> dict[str, SAESpec]:
    """``derived_runs`` as {run name: spec}."""
    return {run.name: run.spec for run in derived_runs(cfg)}


def scale_runs(cfg: Profile) -> list[DerivedRun]:
    """The scale-study SAEs of notebook 03: each of ``scale.saes`` at every other
    width (``<name>-width<w>``) and every other token budget (``<name>-tokens<m>x``,
    value = the multiple of ``train.tokens``). Width 1x and budget 1x are the
    main-set run."""
    sc, t = cfg.scale, cfg.train
    out = []
    for base in sc.saes:
        spec = t.saes[base]
        out += [DerivedRun(f"{base}-width{w}", base, "width", w,
                           dataclasses.replace(spec, width=w), tuple(sc.seeds))
                for w in sc.widths if w != t.width]
        out += [DerivedRun(f"{base}-tokens{format_value(m)}x", base, "tokens", m,
                           dataclasses.replace(spec, tokens=max(t.batch_size,
                                                                round(m * t.tokens))),
                           tuple(sc.seeds))
                for m in sc.token_multiples if m != 1]
    return out


def scale_specs(cfg: Profile) -> dict[str, SAESpec]:
    """``scale_runs`` as {run name: spec}."""
    return {run.name: run.spec for run in scale_runs(cfg)}


def factor_defaults(profile: Profile) -> dict[str, float]:
    """The profile's own value of each ablated factor of ``ablations.sae``."""
    return {f: resolved_param(profile, profile.ablations.sae, f)
            for f in profile.ablations.factors}
