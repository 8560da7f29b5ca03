"""SAE variants: one module each on the shared base, looked up by name.

``masked-reg`` is not a variant: it is a BatchTopK or Matryoshka SAE trained on
the token-masked cache (``SAESpec.token_masked``).
"""

from __future__ import annotations

import dataclasses

from atm_repro.config import ConfigError, from_dict
from atm_repro.saes.atm import ATMSAE
from atm_repro.saes.base import SAE, SAEConfig, SAEConfigError, StepContext, compiled_kernels
from atm_repro.saes.batchtopk import BatchTopKSAE
from atm_repro.saes.jumprelu import JumpReLUSAE
from atm_repro.saes.matryoshka import MatryoshkaSAE
from atm_repro.saes.standard import StandardSAE
from atm_repro.saes.topk import TopKSAE

VARIANTS: dict[str, type[SAE]] = {
    cls.architecture: cls
    for cls in (StandardSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, ATMSAE, MatryoshkaSAE)
}

__all__ = ["SAE", "SAEConfig", "SAEConfigError", "StepContext", "VARIANTS", "build_config",
           "compiled_kernels",
           "build_sae", "validate_spec"]


def get_variant(name: str) -> type[SAE]:
    if name not in VARIANTS:
        raise SAEConfigError(f"unknown SAE variant {name!r}; known variants: {sorted(VARIANTS)}")
    return VARIANTS[name]


def build_config(variant: str, params: dict, d_in: int, d_sae: int, where: str = "") -> SAEConfig:
    """Validate ``params`` against the variant's config (unknown keys are errors)."""
    cls = get_variant(variant).config_cls
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
