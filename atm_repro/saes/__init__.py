"""SAE variants: one module each on the shared base, looked up by name.

Each variant module registers its class (``registry.register_variant``) when it
is imported; importing them here, in this order, fills the registry. The order
is the registry's, which the toy benchmark's defaults follow.

``masked-reg`` is not a variant: it is a BatchTopK or Matryoshka SAE trained on
the token-masked cache (``SAESpec.token_masked``).
"""

from __future__ import annotations

import dataclasses

from atm_repro.config import ConfigError, from_dict
from atm_repro.saes.base import SAE, SAEConfig, SAEConfigError, StepContext, compiled_kernels
from atm_repro.saes.registry import (
    INFO,
    VARIANTS,
    PlotStyle,
    VariantInfo,
    get_variant,
    register_variant,
)

# isort: off
# each variant module registers itself on import, in this order (the registry's)
from atm_repro.saes import standard, topk, batchtopk, jumprelu, atm, matryoshka  # noqa: F401
# isort: on

__all__ = ["INFO", "SAE", "PlotStyle", "SAEConfig", "SAEConfigError", "StepContext", "VARIANTS",
           "VariantInfo", "build_config", "build_sae", "compiled_kernels", "get_variant",
           "register_variant", "validate_spec"]


def build_config(variant: str, params: dict, d_in: int, d_sae: int, where: str = "") -> SAEConfig:
    """Validate ``params`` against the variant's config (unknown keys are errors)."""
    try:
        cls = get_variant(variant).config_cls
    except SAEConfigError as exc:
        raise SAEConfigError(f"{where}: {exc}" if where else str(exc)) from None
    fixed = {"d_in", "d_sae"} & set(params)
    if fixed:
        raise SAEConfigError(f"{where}: {sorted(fixed)} come from the cache and train.width")
    try:
        return from_dict(cls, {**params, "d_in": d_in, "d_sae": d_sae}, where)
    except (ConfigError, SAEConfigError) as exc:
        raise SAEConfigError(str(exc)) from None


def validate_spec(spec, d_in: int, width: int, where: str = "") -> SAEConfig:
    """Check an ``SAESpec`` (config.py) without building anything heavy."""
    return build_config(spec.variant, spec.params, d_in, width, where)


def build_sae(variant: str, cfg: SAEConfig) -> SAE:
    return get_variant(variant)(cfg)


def config_dict(cfg: SAEConfig) -> dict:
    return dataclasses.asdict(cfg)
