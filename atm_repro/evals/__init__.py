"""Evaluations, one module per metric family; results via ``evals.results``.

Each eval module registers itself (``evals.registry``) on import, in the order
below (the order ``evaluate`` runs them). ``EVAL_CONFIGS`` maps each registered
eval's name (a key of a profile's ``evals`` section) to its config dataclass.
"""

from atm_repro.evals import absorption, core, probing, stability, toy  # noqa: F401 (register)
from atm_repro.evals.registry import EVAL_CONFIGS, EVALS

__all__ = ["EVALS", "EVAL_CONFIGS"]
