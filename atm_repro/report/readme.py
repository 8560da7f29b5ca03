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
        f"**What holds** ({_f(n, 'setup/model')} layer {_f(n, 'train/layer', 'd')}, "
        f"{_f(n, 'main/atm/n_seeds', '.0f')} seeds per family, 95% Welch intervals over "
        f"seeds; `paper/tables/claims.tex`. Written by notebook 05 from profile "
        f"`{stamp.profile}`, code at commit {stamp.commit}; differences are ATM minus the "
        f"other, every family at TopK's L0 of {_f(n, 'matched/target/L0', '.0f')}):",
        f"1. *Less absorption than TopK / JumpReLU*: **{_f(n, 'claim/absorption/verdict')}**. "
        "Full-absorption rate against TopK "
        f"{_ci(n, 'matched/topk/mean_full_absorption/L0')}, against JumpReLU "
        f"{_ci(n, 'matched/jumprelu/mean_full_absorption/L0')}; absorption fraction against "
        f"JumpReLU {_ci(n, 'matched/jumprelu/mean_absorption_fraction/L0')}. The metric's "
        "health check passes on "
        f"{_f(n, 'convergence/atm/t5M/n_meaningful', 'd')} of "
        f"{_f(n, 'convergence/atm/t5M/n_seeds', 'd')} ATM and "
        f"{_f(n, 'convergence/topk/t5M/n_meaningful', 'd')} of "
        f"{_f(n, 'convergence/topk/t5M/n_seeds', 'd')} TopK seeds at 5M tokens.",
        f"2. *Good reconstruction*: at TopK's L0 **{_f(n, 'claim/reconstruction/verdict')}** "
        f"(explained variance against TopK {_ci(n, 'matched/topk/explained_variance/L0')}); "
        f"at the original's own lambda **{_f(n, 'claim/reconstruction_paper/verdict')}**.",
        f"3. *The importance mask is the cause*: **{_f(n, 'claim/mask/verdict')}**. Against "
        "the same recipe with no mask: full absorption "
        f"{_ci(n, 'matched/atm-none/mean_full_absorption/L0')}, explained variance "
        f"{_ci(n, 'matched/atm-none/explained_variance/L0')}.",
        f"4. *Stable features*: **{_f(n, 'claim/stability/verdict')}**. Cross-seed decoder "
        f"match at 5M tokens: ATM {_f(n, 'convergence/atm/t5M/max_cos_mean')}, TopK "
        f"{_f(n, 'convergence/topk/t5M/max_cos_mean')}, chance "
        f"{_f(n, 'convergence/atm/t5M/chance_max_cos_mean')}.",
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
