"""The README's headline results, written by notebook 05 from the canonical run's
numbers (the same ones ``numbers.tex`` holds), so that the first screen a reader
sees cannot drift from the paper's tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atm_repro.files import update_doc
from atm_repro.report.latex import is_missing
from atm_repro.report.provenance import README_PATH, Stamp
from atm_repro.report.statements import Finding

BLOCK = "cpu"  # README marker: <!-- results:cpu:start --> ... <!-- results:cpu:end -->


def _f(numbers: Mapping[str, Any], key: str, spec: str = ".3f") -> str:
    value = numbers.get(key)
    if value is None or is_missing(value):
        return "n/a"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _ci(numbers: Mapping[str, Any], key: str) -> str:
    """``diff [lo, hi]`` of a matched comparison (``key`` without the last part)."""
    return (f"{_f(numbers, key + '/diff', '+.3f')} "
            f"[{_f(numbers, key + '/lo', '+.3f')}, {_f(numbers, key + '/hi', '+.3f')}]")


def results_block(numbers: Mapping[str, Any], findings: list[Finding], stamp: Stamp) -> str:
    """Markdown of the five claims' verdicts with their evidence (number keys of
    ``paper_numbers``) and the outcome of the paper's statement check."""
    n = numbers
    bad = [f.statement.text for f in findings if f.status != "holds"]
    lines = [
        f"**What holds** ({_f(n, 'setup/model')} layer {_f(n, 'train/layer', 'd')}, up to "
        f"{_f(n, 'main/atm/n_seeds', '.0f')} seeds, 95% intervals over seeds; "
        f"`paper/tables/claims.tex`. Written by notebook 05 from profile `{stamp.profile}`, "
        f"code at commit {stamp.commit}; differences are ATM minus the other):",
        f"1. *Less absorption than TopK / JumpReLU*: **{_f(n, 'claim/absorption/verdict')}**. "
        f"No main-set SAE has a first-letter latent (best single-latent F1 "
        f"{_f(n, 'health/main_best_k1_f1', '.2f')}; a letter latent needs "
        f"{_f(n, 'eval/absorption/letter_latent_f1', '.2f')}), so SAEBench's metric measures "
        "its projection rule here, not absorption. Computed anyway, full absorption at "
        "equal L0 against ATM's no-mask control: "
        f"{_ci(n, 'matched/atm-none/mean_full_absorption/L0')}. "
        "In the scale study (one seed per point), 4x the training tokens gives TopK a best "
        f"letter latent of F1 {_f(n, 'scale/topk-tokens4x/max_k1_f1', '.2f')} and ATM "
        f"{_f(n, 'scale/atm-tokens4x/max_k1_f1', '.2f')}.",
        f"2. *Good reconstruction*: **{_f(n, 'claim/reconstruction/verdict')}**. At TopK's "
        f"L0 ({_f(n, 'matched/target/L0', '.0f')}), explained variance against TopK: "
        f"{_ci(n, 'matched/topk/explained_variance/L0')}.",
        f"3. *The importance mask is the cause*: **{_f(n, 'claim/mask/verdict')}**. Explained "
        "variance at equal L0 against the same recipe with no mask: "
        f"{_ci(n, 'matched/atm-none/explained_variance/L0')}; against a random mask at "
        f"ATM's rate: {_ci(n, 'matched/atm-random/explained_variance/L0')}.",
        f"4. *Stable features*: **{_f(n, 'claim/stability/verdict')}**. Cross-seed decoder "
        f"match: ATM {_f(n, 'main/atm/max_cos_mean')}, its random-mask and no-mask controls "
        f"{_f(n, 'main/atm-random/max_cos_mean')} and {_f(n, 'main/atm-none/max_cos_mean')}, "
        f"TopK {_f(n, 'main/topk/max_cos_mean')}.",
        f"5. *β, c, r shape the result*: **{_f(n, 'claim/mechanism/verdict')}**.",
        "",
        f"{len(findings) - len(bad)} of {len(findings)} directional sentences of the paper "
        "hold on these numbers (`atm_repro/report/statements.py`)"
        + (": all." if not bad else "; **contradicted or unchecked**: "
           + "; ".join(bad) + "."),
    ]
    return "\n".join(lines) + "\n"


def update_readme(numbers: Mapping[str, Any], findings: list[Finding], stamp: Stamp) -> bool:
    """Rewrite the README's results block; True if it changed."""
    before = README_PATH.read_text()
    update_doc(README_PATH, BLOCK, results_block(numbers, findings, stamp), kind="results")
    return README_PATH.read_text() != before
