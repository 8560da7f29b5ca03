"""Evaluations, one module per metric family; results via ``evals.results``."""
