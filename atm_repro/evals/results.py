"""One JSON per (SAE, eval): config, metrics, per-item details, code version.

Files live at ``<root>/<sae_id>/<eval_name>.json`` (the root of a profile is
``runs.results_dir``); ``atm_repro.report.results`` reads them back.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atm_repro import code_version
from atm_repro.codehash import code_key
from atm_repro.config import fingerprint, to_dict
from atm_repro.files import atomic_write_json, keyed_json

# Roots of the code an eval result depends on (beyond the SAE, whose run key covers
# training): the eval functions ``evaluate`` calls and what feeds them (codehash).
# Roots of every eval's code key besides the eval's own functions: how an SAE,
# the activations and the model are read.
SHARED_CODE = ("atm_repro.saes.io:load_sae", "atm_repro.cache:ActivationCache",
               "atm_repro.models:load_model")


@dataclass
class EvalResult:
    eval_name: str
    sae_id: str
    config: Any  # a config dataclass or dict
    metrics: dict[str, float]  # scalar headline numbers
    details: dict[str, Any] = field(default_factory=dict)  # per-item (per letter, per dataset)
    key: str = ""  # fingerprint of the inputs (SAE run, config, code): unchanged -> reuse

    def to_json(self) -> dict:
        return {
            "eval_name": self.eval_name,
            "sae_id": self.sae_id,
            "config": to_dict(self.config),
            "metrics": {k: _clean(v) for k, v in self.metrics.items()},
            "details": _clean(self.details),
            "key": self.key,
            "code_version": code_version(),
        }


def _clean(value: Any) -> Any:
    """JSON-safe: numpy/torch scalars -> float/int, NaN -> None, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def result_path(root: Path, sae_id: str, eval_name: str) -> Path:
    return Path(root) / sae_id / f"{eval_name}.json"


def write_result(root: Path, result: EvalResult) -> Path:
    """Write atomically; returns the path."""
    path = result_path(root, result.sae_id, result.eval_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result.to_json())
    return path


def result_key(*parts, code: tuple = ()) -> str:
    """Fingerprint of an eval's inputs (e.g. the SAE's run key and the eval config)
    plus the code key of the functions that compute it (``code``: that eval's
    functions, with ``SHARED_CODE``): an unchanged key means the result is
    reusable, and a change to one eval's code re-runs that eval only."""
    return fingerprint({"parts": list(parts), "code": code_key(*code, *SHARED_CODE)})


def is_fresh(root: Path, sae_id: str, eval_name: str, key: str) -> bool:
    """True if a result exists for (sae_id, eval_name) and was written with ``key``."""
    return keyed_json(result_path(root, sae_id, eval_name), key) is not None


def read_result(path: Path) -> dict:
    return json.loads(Path(path).read_text())
