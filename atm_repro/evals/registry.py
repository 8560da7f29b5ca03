"""The eval registry: each eval module declares itself once (``register``) and
``evaluate.evaluate_profile`` runs whatever is registered.

An eval is its config class (a profile's ``evals.<name>`` section is validated
against it), the SAE groups it covers, an optional preparation shared by every
SAE of a layer and a per-SAE run returning its ``EvalResult``. An eval with no
groups (stability's seed pairs, the toy benchmark) is only configured here and
run by its own caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atm_repro.cache import ActivationCache
from atm_repro.evals.results import EvalResult
from atm_repro.models import LoadedModel


@dataclass(frozen=True)
class EvalContext:
    """What a preparation may read: the model, the activation cache, the folder
    for model-side intermediates, whether to show progress."""

    loaded: LoadedModel
    cache: ActivationCache
    model_dir: Path
    progress: bool


# prepare(context, layers, config) -> per-layer state, shared by that layer's SAEs
Prepare = Callable[[EvalContext, list[int], Any], dict[int, Any]]
# run(sae, record, state, config) -> the SAE's result (record: ``runs.SAERecord``)
Run = Callable[[Any, Any, Any, Any], EvalResult]
# layer_results(state, config) -> results of the layer itself (e.g. a model baseline)
LayerResults = Callable[[Any, Any], list[EvalResult]]


@dataclass(frozen=True)
class Eval:
    name: str
    config: type
    groups: frozenset[str] = frozenset()  # SAE groups run per SAE (``runs.discover``)
    run: Run | None = None
    prepare: Prepare | None = None
    layer_results: LayerResults | None = None


# the SAE groups of ``runs.discover``
EVERY_GROUP = frozenset({"main", "ablation", "scale", "cross_layer", "snapshot"})
EVALS: dict[str, Eval] = {}


def register(spec: Eval) -> Eval:
    """Add ``spec`` (an eval module calls this once); returns it."""
    if spec.groups and spec.run is None:
        raise ValueError(f"eval {spec.name!r} covers SAE groups but has no run")
    if spec.name in EVALS and EVALS[spec.name] != spec:
        raise ValueError(f"eval {spec.name!r} is already registered")
    EVALS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    EVALS.pop(name)


class _Configs(Mapping):
    """Each registered eval's config class by name, live (``EVAL_CONFIGS``)."""

    def __getitem__(self, name: str) -> type:
        return EVALS[name].config

    def __iter__(self) -> Iterator[str]:
        return iter(EVALS)

    def __len__(self) -> int:
        return len(EVALS)


EVAL_CONFIGS = _Configs()
