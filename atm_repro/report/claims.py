"""The original paper's reported numbers and our side of them.

``PAPER_RESULTS`` holds the numbers the original reports (its results table and
text), each tied to the metric id of ours it is set beside, with how the two
compare (``Rule``). The verdicts, at matched settings and with intervals, are
``report.verdicts``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from atm_repro import metrics

PAPER_VARIANTS = {"atm": "ATM", "topk": "TopK", "jumprelu": "JumpReLU"}

# absorption_ordering / l0_ordering: compared as orderings within each run;
# different_model / stand_in_data: shown, not comparable across the settings
Rule = Literal["absorption_ordering", "l0_ordering", "different_model", "stand_in_data"]


@dataclass(frozen=True)
class PaperMetric:
    """One row of the paper's results table and which of our metrics it meets."""

    key: str  # the claim's name in the ``ours`` dict (and in number keys)
    label: str  # LaTeX row header
    metric: str  # our metric id (``metrics``)
    paper: dict[str, str]  # variant -> the value as the paper prints it; absent: not given
    rule: Rule  # our values print at 3 significant digits (``latex.format_number``)


# The numbers the original paper reports. Its single "mean absorption score" sits
# beside our full-absorption rate (SAEBench's original absorption score); our
# absorption fraction is judged against the same ordering.
PAPER_RESULTS = (
    PaperMetric("mean_full_absorption", "Absorption (full rate)", metrics.FULL_ABSORPTION.id,
                {"atm": "0.0068", "topk": "0.1402", "jumprelu": "0.0114"}, "absorption_ordering"),
    PaperMetric("mean_absorption_fraction", "Absorption fraction",
                metrics.ABSORPTION_FRACTION.id, {}, "absorption_ordering"),
    PaperMetric("l0", "$L_0$", metrics.L0.id, {"atm": "3280", "topk": "40"}, "l0_ordering"),
    PaperMetric("mse", "MSE (per element)", metrics.MSE_PER_ELEMENT.id, {"atm": "0.5508"},
                "different_model"),
    PaperMetric("cosine_similarity", r"Cosine $(x, \hat x)$", metrics.COSINE.id,
                {"atm": "0.9727"}, "different_model"),
    PaperMetric("sparse_probing", "Sparse probing, top-1", metrics.PROBING_TOP1.id,
                {"atm": "0.7161"}, "stand_in_data"),
    PaperMetric("bias_detection", "Bias detection, top-1", metrics.PROBING_GENDER.id,
                {"atm": "0.796"}, "stand_in_data"),
    PaperMetric("sentiment", "Sentiment, top-1", metrics.PROBING_SENTIMENT.id,
                {"atm": "0.853"}, "stand_in_data"),
)

NOT_MEANINGFUL = "absorption_not_meaningful"  # flag in ``ours``: see evals.absorption.health
MEANINGFUL_METRIC = metrics.MEANINGFUL.id


def present(ours: dict[str, dict[str, float]], variant: str, key: str) -> float | None:
    """Our value of claim ``key`` for ``variant``; None when missing or not finite."""
    value = ours.get(variant, {}).get(key)
    return None if value is None or not np.isfinite(value) else float(value)


def ours_from_results(tidy: pd.DataFrame,
                      names: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Our side of every claim from ``report.results.read_results``'s table: per
    paper variant, each claim's metric averaged over the main SAEs of that name
    (its seeds; ``names`` maps a paper variant to another spec name, e.g. ATM to
    the spec at the original's lambda); NaN where none has it. A variant any of
    whose seeds has absorption not meaningful is flagged ``NOT_MEANINGFUL``."""
    main = tidy[tidy["group"] == "main"]
    out: dict[str, dict[str, float]] = {}
    for variant in PAPER_VARIANTS:
        runs = main[main["name"] == (names or {}).get(variant, variant)]
        out[variant] = {}
        for m in PAPER_RESULTS:
            values = runs.loc[runs["metric"] == m.metric, "result"]
            out[variant][m.key] = float(np.mean(values)) if len(values) else float("nan")
        if (runs.loc[runs["metric"] == MEANINGFUL_METRIC, "result"] == 0).any():
            out[variant][NOT_MEANINGFUL] = 1.0  # some seed's absorption is not meaningful
    return out
