"""Evaluations, one module per metric family; results via ``evals.results``.

``EVAL_CONFIGS`` maps each eval's name (a key of a profile's ``evals``
section) to its config dataclass.
"""

from atm_repro.evals.absorption import AbsorptionConfig
from atm_repro.evals.core import CoreConfig
from atm_repro.evals.probing import ProbingConfig
from atm_repro.evals.stability import StabilityConfig
from atm_repro.evals.toy import ToyBenchmarkConfig

EVAL_CONFIGS = {
    "core": CoreConfig,
    "absorption": AbsorptionConfig,
    "probing": ProbingConfig,
    "stability": StabilityConfig,
    "toy": ToyBenchmarkConfig,
}
