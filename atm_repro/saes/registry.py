"""The variant registry: every variant module registers its class, next to it,
with what the rest of the package knows of the variant (as SAELens's
``register_sae_class``). Saving and loading, the figures' colours and the toy
benchmark read it, so a new variant is one new module (imported in
``saes/__init__``) and no list elsewhere.

A registration names the variant (``cls.architecture``, the name a profile's
``variant:`` uses), its SAELens architecture (``cls.saelens_architecture``,
how its inference SAE is saved), how figures draw it, whether plain SAELens
directories of that architecture load as it, and its toy-benchmark settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from atm_repro.saes.base import SAE, SAEConfig, SAEConfigError

# The inference SAEs a save can be (SAELens's own architecture names).
SAELENS_ARCHITECTURES = ("standard", "topk", "jumprelu")


@dataclass(frozen=True)
class PlotStyle:
    """How every figure draws an SAE family: legend label, colour, marker."""

    label: str
    color: str
    marker: str


@dataclass(frozen=True)
class VariantInfo:
    """What the package knows of a variant besides its class."""

    style: PlotStyle
    # plain SAELens directories of the class's saelens_architecture load as this
    # variant (one variant per architecture)
    reads_saelens: bool = False
    # toy benchmark (evals.toy): the base spec's params and its L0 sweep (param,
    # values); a variant without a sweep is not in the benchmark's defaults
    toy_params: Mapping[str, object] = field(default_factory=dict)
    toy_sweep: tuple[str, Sequence[float]] | None = None


VARIANTS: dict[str, type[SAE]] = {}  # name -> class, in registration order
INFO: dict[str, VariantInfo] = {}  # name -> the rest of its registration


def register_variant(cls: type[SAE], info: VariantInfo) -> type[SAE]:
    """Add ``cls`` under ``cls.architecture``; errors for a clash with a registered
    variant (name, colour, marker, SAELens reader) or an unsaveable class."""
    name = cls.architecture
    if not (isinstance(cls, type) and issubclass(cls, SAE)):
        raise TypeError(f"{cls!r} is not an SAE subclass")
    if not name:
        raise ValueError(f"{cls.__name__}: set the class's architecture (its variant name)")
    if name in VARIANTS:
        raise ValueError(f"SAE variant {name!r} is already registered "
                         f"({VARIANTS[name].__name__})")
    if not issubclass(cls.config_cls, SAEConfig):
        raise TypeError(f"{cls.__name__}.config_cls must derive from SAEConfig")
    if cls.saelens_architecture not in SAELENS_ARCHITECTURES:
        raise ValueError(f"{name}: saelens_architecture {cls.saelens_architecture!r} is not "
                         f"one of {SAELENS_ARCHITECTURES}")
    for other, known in INFO.items():
        if known.style.color.lower() == info.style.color.lower():
            raise ValueError(f"{name}: colour {info.style.color} is {other}'s")
        if known.style.marker == info.style.marker:
            raise ValueError(f"{name}: marker {info.style.marker!r} is {other}'s")
    if info.reads_saelens:
        reader = saelens_reader(cls.saelens_architecture)
        if reader is not None:
            raise ValueError(f"{name}: SAELens {cls.saelens_architecture!r} directories "
                             f"already load as {reader!r}")
    VARIANTS[name] = cls
    INFO[name] = info
    return cls


def get_variant(name: str) -> type[SAE]:
    """The class of variant ``name``; a clear error (with the nearest name) otherwise."""
    if name not in VARIANTS:
        near = difflib.get_close_matches(str(name), list(VARIANTS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise SAEConfigError(f"unknown SAE variant {name!r}{hint}; "
                             f"known variants: {sorted(VARIANTS)}")
    return VARIANTS[name]


def saelens_reader(architecture: str) -> str | None:
    """The variant that plain SAELens directories of ``architecture`` load as."""
    return next((name for name, info in INFO.items()
                 if info.reads_saelens and VARIANTS[name].saelens_architecture == architecture),
                None)
