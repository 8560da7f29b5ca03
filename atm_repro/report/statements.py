"""The sentences of paper/main.tex that state a direction or an order ("ATM
reconstructs worse than TopK at equal L0"), each with the test on the run's
numbers that makes it true.

The numbers change with every rerun (other seeds, a code fix, another profile);
a sentence written for one run can be false for the next. ``write_paper_inputs``
checks every statement on the numbers it writes and puts the outcome into
``statements.tex``: the PDF opens with a red box naming each contradicted
sentence, and the tests fail when the committed canonical numbers contradict
one. Statements read numbers by their macro names, so the same check runs on a
run's numbers and on a committed ``numbers.tex``.

Not covered (read by hand after a rerun): the ablation paragraph (single-seed
trends) and the planted-absorption paragraph, whose numbers are in tables, not
in ``numbers.tex``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atm_repro import metrics
from atm_repro.report.latex import escape_latex, is_missing, macro_name, with_stamp
from atm_repro.report.provenance import Stamp
from atm_repro.saes import VARIANTS

Numbers = Mapping[str, Any]  # macro name without the backslash -> value
# the number key of the residual-stream top-1 probing accuracy (``report.paper``)
BASELINE_TOP1 = f"{metrics.PROBING}/{metrics.BASELINE}_top1"

SPARSE = ("topk", "batchtopk", "jumprelu", "matryoshka")  # the k / L0-penalty families
ATM_SET = ("atm", "atm-random", "atm-none")


def _others() -> tuple[str, ...]:
    """The families a statement about "every other family" covers: every registered
    variant but ATM, and masked-reg."""
    return (*(v for v in VARIANTS if v != "atm"), "masked-reg")


def m(key: str) -> str:
    """The macro name (no backslash) of a number key."""
    return macro_name(key)[1:]


class Missing(KeyError):
    """A number the statement reads is not in this run's numbers."""


def as_number(value: Any) -> Any:
    """A number printed as LaTeX (a setting's ``Tex``, a line of ``numbers.tex``)
    as a float; any other text as it is."""
    if not isinstance(value, str):
        return value
    try:
        return float(value.replace(r"\ensuremath{-}", "-").replace("{,}", ""))
    except ValueError:
        return value


def get(n: Numbers, key: str) -> Any:
    name = m(key)
    if name not in n or is_missing(n[name]):
        raise Missing(name)
    return as_number(n[name])


def present(n: Numbers, keys: list[str]) -> list[Any]:
    """Values of the keys this run has (a family a profile does not train)."""
    return [as_number(n[m(k)]) for k in keys if m(k) in n and not is_missing(n[m(k)])]


@dataclass(frozen=True)
class Statement:
    where: str  # the section of main.tex
    text: str  # the sentence, in short
    test: Callable[[Numbers], bool]


def _every_other_family_reconstructs_better(n: Numbers) -> bool:
    diffs = present(n, [f"matched/{f}/explained_variance/L0/diff" for f in _others()])
    return bool(diffs) and get(n, "matched/topk/explained_variance/L0/hi") < 0 and all(
        d < 0 for d in diffs)


def _above_sparse(n: Numbers) -> bool:
    sparse = present(n, [f"main/{f}/explained_variance" for f in SPARSE])
    return bool(sparse) and get(n, "main/atm/explained_variance") > max(sparse)


def _standard_worst(n: Numbers) -> bool:
    every = present(n, [f"main/{f}/explained_variance" for f in (*ATM_SET, *_others())])
    return get(n, "main/standard/explained_variance") == min(every)


def _every_family_beats_one_dimension(n: Numbers) -> bool:
    tops = present(n, [f"main/{f}/mean_top1" for f in (*ATM_SET, *_others())])
    return bool(tops) and min(tops) > get(n, BASELINE_TOP1)


def _atm_probing_in_the_middle(n: Numbers) -> bool:
    tops = present(n, [f"main/{f}/mean_top1" for f in (*ATM_SET, *_others())])
    atm = get(n, "main/atm/mean_top1")
    return min(tops) < atm < max(tops) and atm < get(n, "main/atm-random/mean_top1")


def _atm_set_least_stable(n: Numbers) -> bool:
    atm = [get(n, f"main/{f}/max_cos_mean") for f in ATM_SET]
    others = present(n, [f"main/{f}/max_cos_mean" for f in _others()])
    return bool(others) and max(atm) < min(others)


def _no_claim_holds(n: Numbers) -> bool:
    verdicts = [get(n, f"claim/{c}/verdict")
                for c in ("absorption", "reconstruction", "mask", "stability", "mechanism")]
    return all(str(v).startswith(("fails", "not testable")) for v in verdicts)


def _second_model_repeats(n: Numbers) -> bool:
    p = "crossmodel/smollm2"
    return (get(n, f"{p}/topk/explained_variance/verdict") == "ATM worse"
            and get(n, f"{p}/atm-none/explained_variance/verdict") == "ATM worse"
            and get(n, f"{p}/atm-random/explained_variance/diff") > 0
            and get(n, f"{p}/topk/mean_full_absorption/verdict") == "not meaningful")


def _second_model_raw_absorption(n: Numbers) -> bool:
    p = "crossmodel/smollm2"
    return (get(n, f"{p}/topk/mean_full_absorption/diff") < 0
            and get(n, f"{p}/matryoshka/mean_full_absorption/diff") < 0
            and get(n, f"{p}/atm-none/mean_full_absorption/hi") >= 0
            and get(n, f"{p}/atm-random/mean_full_absorption/hi") >= 0)


def _letter_latent(n: Numbers, run: str) -> bool:
    return get(n, f"scale/{run}/max_k1_f1") >= get(n, "eval/absorption/letter_latent_f1")


STATEMENTS = (
    Statement("abstract, results", "none of the original's claims holds here",
              _no_claim_holds),
    Statement("abstract, health", "no SAE at the main layer has a first-letter latent",
              lambda n: get(n, "health/main_best_k1_f1")
              < get(n, "eval/absorption/letter_latent_f1")),
    Statement("abstract, matched", "ATM reconstructs worse than TopK at TopK's L0",
              lambda n: get(n, "matched/topk/explained_variance/L0/hi") < 0),
    Statement("matched, conclusion", "ATM reconstructs worse than every other family at "
              "TopK's L0", _every_other_family_reconstructs_better),
    Statement("abstract, matched, conclusion", "ATM without its mask reconstructs better "
              "than ATM at equal L0",
              lambda n: get(n, "matched/atm-none/explained_variance/L0/hi") < 0),
    Statement("abstract, matched, conclusion", "a random mask at ATM's rate reconstructs "
              "worse than ATM at equal L0",
              lambda n: get(n, "matched/atm-random/explained_variance/L0/lo") > 0),
    Statement("matched", "the raw full-absorption rate puts ATM below TopK at equal L0",
              lambda n: get(n, "matched/topk/mean_full_absorption/L0/diff") < 0),
    Statement("matched", "... but not below its no-mask control",
              lambda n: get(n, "matched/atm-none/mean_full_absorption/L0/hi") >= 0),
    Statement("matched", "... nor below its random-mask control",
              lambda n: get(n, "matched/atm-random/mean_full_absorption/L0/hi") >= 0),
    Statement("own settings", "ATM is denser than TopK and JumpReLU",
              lambda n: get(n, "main/atm/l0") > max(get(n, "main/topk/l0"),
                                                    get(n, "main/jumprelu/l0"))),
    Statement("own settings", "ATM's explained variance is above every sparse "
              "family's", _above_sparse),
    Statement("own settings", "ATM's CE-loss score is below TopK's",
              lambda n: get(n, "main/atm/ce_loss_score") < get(n, "main/topk/ce_loss_score")),
    Statement("own settings, stability", "the standard SAE reconstructs worst",
              _standard_worst),
    Statement("own settings", "one SAE latent classifies better than one residual "
              "dimension, for every family", _every_family_beats_one_dimension),
    Statement("own settings", "in probing ATM sits in the middle, below its random-mask "
              "control", _atm_probing_in_the_middle),
    Statement("stability, conclusion", "ATM and its controls have the least stable "
              "features of all families", _atm_set_least_stable),
    Statement("stability", "the standard SAE's decoders match best across seeds",
              lambda n: get(n, "main/standard/max_cos_mean") == max(present(
                  n, [f"main/{f}/max_cos_mean" for f in (*ATM_SET, *_others())]))),
    Statement("scale study", "at 8192 latents neither TopK nor ATM has a letter latent",
              lambda n: not _letter_latent(n, "topk-width8192")
              and not _letter_latent(n, "atm-width8192")),
    Statement("scale study, conclusion", "at four times the tokens TopK has a letter "
              "latent and ATM has none in this run",
              lambda n: _letter_latent(n, "topk-tokens4x")
              and not _letter_latent(n, "atm-tokens4x")),
    Statement("scale study, conclusion", "at four times the tokens TopK's best letter latent "
              "is better than ATM's",
              lambda n: get(n, "scale/topk-tokens4x/max_k1_f1")
              > get(n, "scale/atm-tokens4x/max_k1_f1")),
    Statement("second model, conclusion", "on SmolLM2 ATM reconstructs worse than TopK and "
              "than no mask, better than a random mask; absorption not meaningful there "
              "either", _second_model_repeats),
    Statement("second model", "on SmolLM2 raw full absorption puts ATM below TopK and "
              "Matryoshka but not below its controls", _second_model_raw_absorption),
)


@dataclass(frozen=True)
class Finding:
    statement: Statement
    status: str  # "holds", "contradicted" or "missing: <macro>"


def check(numbers: Numbers) -> list[Finding]:
    """Every statement on ``numbers`` (macro names without backslash -> values)."""
    out = []
    for s in STATEMENTS:
        try:
            status = "holds" if s.test(numbers) else "contradicted"
        except Missing as exc:
            status = f"missing: {exc.args[0]}"
        except (TypeError, ValueError) as exc:  # text where a number belongs ("n/a"),
            status = f"not a number: {exc}"     # or no family to compare with
        out.append(Finding(s, status))
    return out


def by_macro(numbers: Mapping[str, Any]) -> dict[str, Any]:
    """A run's numbers (number keys, as ``numbers.tex`` is written from) by macro name."""
    return {m(k): v for k, v in numbers.items()}


def statements_tex(findings: list[Finding], stamp: Stamp) -> str:
    """Counts and the contradicted sentences, for main.tex's warning box."""
    bad = [f for f in findings if f.status == "contradicted"]
    items = "".join(rf"\item {escape_latex(f.statement.text)} "
                    rf"({escape_latex(f.statement.where)})" for f in bad)
    return with_stamp(stamp, [
        rf"\newcommand{{\StatementsChecked}}{{{len(findings)}}}",
        rf"\newcommand{{\StatementsHold}}{{{sum(f.status == 'holds' for f in findings)}}}",
        rf"\newcommand{{\StatementsNContradicted}}{{{len(bad)}}}",
        rf"\newcommand{{\StatementsContradicted}}{{{items}}}",
    ])


_NEWCOMMAND = re.compile(r"^\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}$")


def numbers_from_tex(text: str) -> dict[str, Any]:
    """A written ``numbers.tex`` read back: numbers as floats (to the printed
    precision), everything else as its text."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        match = _NEWCOMMAND.match(line)
        if not match:
            continue
        name, raw = match.groups()
        out[name] = as_number(raw)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m atm_repro.report.statements paper/tables/numbers.tex``: print each
    statement's status; exit 1 when one is contradicted or cannot be checked."""
    path = Path((argv if argv is not None else sys.argv[1:])[0])
    findings = check(numbers_from_tex(path.read_text()))
    for f in findings:
        print(f"{f.status:>12}  {f.statement.text} ({f.statement.where})")
    return int(any(f.status != "holds" for f in findings))


if __name__ == "__main__":
    sys.exit(main())
