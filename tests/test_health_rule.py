"""The absorption metric's health rule, pinned at its threshold: a letter counts
as having a letter latent when its best k = 1 main latent reaches F1 >= 0.5
(``AbsorptionConfig.letter_latent_f1``), and absorption is "not meaningful"
(raw values, verdict "not meaningful") exactly when no letter has one or fewer
than ``min_letters`` letters are kept."""

from __future__ import annotations

import string

import pandas as pd
import pytest

from atm_repro import metrics
from atm_repro.evals.absorption import AbsorptionConfig, health
from atm_repro.intervals import Interval
from atm_repro.report.comparisons import Matched, _column

CFG = AbsorptionConfig()


def letters(best_f1: float, n: int = 21) -> dict:
    """``n`` letters whose best main latent scores 0.2, except the first: ``best_f1``."""
    return {c: {"k_sparse_f1": [best_f1 if i == 0 else 0.2, 0.9],
                "wrong_letter_fire_rate": 0.01}
            for i, c in enumerate(string.ascii_lowercase[:n])}


@pytest.mark.parametrize("f1, latents", [(0.49, 0), (0.5, 1), (0.51, 1)])
def test_a_letter_latent_needs_f1_of_one_half(f1, latents):
    stats, reason = health(letters(f1), 21, CFG)
    assert stats["n_letter_latents"] == latents
    assert stats["max_k1_f1"] == pytest.approx(f1)
    assert bool(reason) == (latents == 0)
    if latents == 0:
        assert "no letter has a main latent with F1 >= 0.5 (best 0.49)" in reason


def test_too_few_letters_is_not_meaningful_even_with_letter_latents():
    stats, reason = health(letters(0.9, n=CFG.min_letters - 1), CFG.min_letters - 1, CFG)
    assert stats["n_letter_latents"] == 1 and f"< {CFG.min_letters}" in reason
    assert health(letters(0.9, n=CFG.min_letters), CFG.min_letters, CFG)[1] == ""


@pytest.mark.parametrize("f1, verdict", [(0.49, "not meaningful"), (0.51, "ATM better")])
def test_verdict_reads_not_meaningful_exactly_when_the_rule_says(f1, verdict):
    """Two SAEs' results differing only by one letter's F1 (0.49 or 0.51) on one of
    them: the comparison reads raw values and says "not meaningful" only at 0.49."""
    full = metrics.FULL_ABSORPTION
    rows = pd.DataFrame({
        metrics.MEANINGFUL.id: [float(not health(letters(f), 21, CFG)[1]) for f in (0.8, f1)],
        full.id: [0.1, 0.3], full.raw_id: [0.1, 0.3]})
    column, meaningful = _column(rows, full)
    assert column == (full.id if verdict != "not meaningful" else full.raw_id)
    diff = Interval(-0.2, -0.3, -0.1, 3)
    assert Matched("topk", full.id, "L0", 40.0, diff, meaningful, "lower").verdict == verdict
