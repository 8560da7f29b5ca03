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

main.tex marks each sentence that states one as ``\\checked{<key>}{<sentence>}``
(``marked_sentences``), and the marked sentence must hold the statement's
``phrase``, the words that carry its direction: turning "worse" into "better"
in the text fails the tests, as does a verdict word in the results outside a
marked sentence and a generated macro (tests/test_report_statements.py).

Not covered (read by hand after a rerun): the planted-absorption paragraph of the
appendix, whose numbers are in a table, not in ``numbers.tex``.
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

Numbers = Mapping[str, Any]  # macro name without the backslash -> value
# the number key of the residual-stream top-1 probing accuracy (``report.paper``)
BASELINE_TOP1 = f"{metrics.PROBING}/{metrics.BASELINE}_top1"

# the families compared at matched L0 at the full budget (the headline design)
COMPARED = ("topk", "jumprelu", "atm", "atm-none", "atm-random")


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
    key: str  # main.tex: \checked{<key>}{<the sentence>}
    phrase: str  # the words of every marked sentence that carry the direction


def _interval_has_zero(n: Numbers, key: str) -> bool:
    return get(n, f"{key}/lo") <= 0 <= get(n, f"{key}/hi")


def _conv(n: Numbers, name: str, tokens: str, metric: str) -> Any:
    return get(n, f"convergence/{name}/t{tokens}/{metric}")


def _every_compared_seed_meaningful(n: Numbers) -> bool:
    return all(get(n, f"health/{f}/meaningful") == 1 for f in COMPARED)


def _stability_far_above_chance(n: Numbers) -> bool:
    chance = _conv(n, "atm", "5M", "chance_max_cos_mean")  # same shapes for every family
    return all(get(n, f"main/{f}/max_cos_mean") > 2 * chance for f in COMPARED)


POINTS = ("250k", "500k", "1M", "2M", "5M")  # the convergence points (key_label)


def _every_seed_from(n: Numbers, name: str, before: str, first: str) -> bool:
    """Absorption meaningful on every seed at ``first`` and every later point, not at
    ``before``."""
    later = POINTS[POINTS.index(first):]
    return (_conv(n, name, before, "n_meaningful") < _conv(n, name, before, "n_seeds")
            and all(_conv(n, name, t, "n_meaningful") == _conv(n, name, t, "n_seeds")
                    for t in later))


def _rises(n: Numbers, name: str, metric: str) -> bool:
    return _conv(n, name, "5M", metric) > _conv(n, name, "250k", metric)


STATEMENTS = (
    Statement("abstract, health", "at 5M tokens the absorption metric is meaningful on "
              "every seed of every compared family", _every_compared_seed_meaningful,
              "meaningful", "every seed of every compared family"),
    Statement("health", "TopK's and ATM's absorption is meaningful on every seed from 2M "
              "tokens on, not at 1M",
              lambda n: _every_seed_from(n, "topk", "1M", "2M")
              and _every_seed_from(n, "atm", "1M", "2M"),
              "health-onset", "from 2M on"),
    Statement("matched", "ATM reconstructs worse than TopK at TopK's L0",
              lambda n: get(n, "matched/topk/explained_variance/L0/hi") < 0
              and get(n, "matched/topk/ce_loss_score/L0/hi") < 0,
              "recon-worse", "reconstructs worse than TopK"),
    Statement("abstract, conclusion", "ATM's full-absorption rate and TopK's do not differ "
              "at TopK's L0",
              lambda n: _interval_has_zero(n, "matched/topk/mean_full_absorption/L0"),
              "full-topk", "do not differ"),
    Statement("abstract", "ATM's absorption fraction and JumpReLU's do not "
              "differ at TopK's L0",
              lambda n: _interval_has_zero(n, "matched/jumprelu/mean_absorption_fraction/L0"),
              "fraction-jumprelu", "do not differ"),
    Statement("abstract, matched, conclusion", "ATM without its mask absorbs as much as ATM "
              "(the interval of the difference includes 0)",
              lambda n: _interval_has_zero(n, "matched/atm-none/mean_full_absorption/L0")
              and _interval_has_zero(n, "matched/atm-none/mean_absorption_fraction/L0"),
              "none-as-much", "absorbs as much as"),
    Statement("matched", "ATM without its mask reconstructs better than ATM at equal L0",
              lambda n: get(n, "matched/atm-none/explained_variance/L0/hi") < 0,
              "none-better", "reconstructs better"),
    Statement("stability", "every compared family's cross-seed match is more than twice "
              "its chance level", _stability_far_above_chance,
              "stability-far", "far above its chance level"),
    Statement("abstract, convergence", "TopK's raw full-absorption rate lies above ATM's at "
              "every convergence point", lambda n: all(
                  _conv(n, "topk", t, "raw_mean_full_absorption")
                  > _conv(n, "atm", t, "raw_mean_full_absorption") for t in POINTS),
              "conv-topk-above", "above ATM's at every point"),
    Statement("stability", "cross-seed match rises from 0.25M to 5M tokens for TopK, ATM "
              "and ATM without its mask",
              lambda n: all(_rises(n, f, "max_cos_mean") for f in ("topk", "atm", "atm-none")),
              "stability-rises", "rises with training"),
    Statement("convergence", "explained variance rises from 0.25M to 5M tokens for TopK, "
              "ATM and ATM without its mask",
              lambda n: all(_rises(n, f, "explained_variance")
                            for f in ("topk", "atm", "atm-none")),
              "ev-rises", "Explained variance rises"),
    Statement("convergence", "ATM's L0 falls from 0.25M to 5M tokens",
              lambda n: not _rises(n, "atm", "l0"), "l0-falls", "start dense"),
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


_MARK = re.compile(r"\\checked\{([\w-]+)\}\{")


def marked_sentences(tex: str) -> list[tuple[str, str, int, int]]:
    """``(key, sentence, start, end)`` for each ``\\checked{key}{sentence}`` of
    ``tex`` (braces balanced; ``tex[start:end]`` is the whole mark)."""
    out = []
    for match in _MARK.finditer(tex):
        depth, i = 1, match.end()
        while depth:
            if i >= len(tex):
                raise ValueError(f"unbalanced \\checked{{{match.group(1)}}} at {match.start()}")
            depth += {"{": 1, "}": -1}.get(tex[i], 0) if tex[i - 1] != "\\" else 0
            i += 1
        out.append((match.group(1), tex[match.end():i - 1], match.start(), i))
    return out


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
