"""The paper's directional sentences checked against numbers (``report.statements``):
each can hold and each can be contradicted on known numbers, a missing number is
named, ``numbers.tex`` reads back, and the committed canonical numbers contradict
none of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atm_repro.report.latex import numbers_tex
from atm_repro.report.provenance import Stamp
from atm_repro.report.statements import (
    COMPARED,
    STATEMENTS,
    by_macro,
    check,
    marked_sentences,
    numbers_from_tex,
    statements_tex,
)

REPO = Path(__file__).resolve().parents[1]


def interval(key: str, diff: float, lo: float, hi: float) -> dict:
    return {f"{key}/diff": diff, f"{key}/lo": lo, f"{key}/hi": hi}


def true_world() -> dict:
    """Number keys -> values under which every statement holds (the shape of the
    first headline run)."""
    n = {"claim/absorption/verdict": "no difference", "claim/mechanism/verdict": "holds",
         "claim/reconstruction/verdict": "fails", "claim/mask/verdict": "fails",
         "claim/stability/verdict": "not testable here (1 pair)",
         "matched/target/L0": 40.0, "setup/model": "gemma-3-270m", "train/layer": 8,
         "main/atm/n_seeds": 3.0, "main/topk/l0": 40.0}
    n |= interval("matched/topk/explained_variance/L0", -0.03, -0.031, -0.028)
    n |= interval("matched/topk/ce_loss_score/L0", -0.03, -0.035, -0.026)
    n |= interval("matched/topk/mean_full_absorption/L0", -0.13, -0.33, 0.07)
    n |= interval("matched/jumprelu/mean_absorption_fraction/L0", 0.01, -0.04, 0.06)
    n |= interval("matched/atm-none/mean_full_absorption/L0", -0.007, -0.03, 0.014)
    n |= interval("matched/atm-none/mean_absorption_fraction/L0", 0.006, -0.02, 0.026)
    n |= interval("matched/atm-none/explained_variance/L0", -0.007, -0.009, -0.005)
    points = (("250k", 0.9, 84.0, 0.24, 0.24), ("500k", 0.92, 54.0, 0.29, 0.35),
              ("1M", 0.93, 46.0, 0.43, 0.41), ("2M", 0.935, 42.0, 0.43, 0.47),
              ("5M", 0.94, 40.0, 0.40, 0.54))
    for f in COMPARED:
        for t, ev, l0, raw, cos in points:
            n |= {f"convergence/{f}/t{t}/n_seeds": 3, f"convergence/{f}/t{t}/n_meaningful": 3,
                  f"convergence/{f}/t{t}/explained_variance": ev,
                  f"convergence/{f}/t{t}/l0": l0,
                  f"convergence/{f}/t{t}/raw_mean_full_absorption": raw + 0.2 * (f == "topk"),
                  f"convergence/{f}/t{t}/max_cos_mean": cos,
                  f"convergence/{f}/t{t}/chance_max_cos_mean": 0.143}
    n |= {"convergence/topk/t1M/n_meaningful": 2, "convergence/atm/t1M/n_meaningful": 1}
    n |= {f"health/{f}/meaningful": 1.0 for f in COMPARED}
    n |= {f"main/{f}/max_cos_mean": 0.5 for f in COMPARED}
    return n


def statuses(numbers: dict) -> dict[str, str]:
    return {f.statement.text: f.status for f in check(by_macro(numbers))}


def test_every_statement_holds_in_the_true_world():
    assert set(statuses(true_world()).values()) == {"holds"}


def test_every_statement_is_contradicted_by_some_change():
    """No statement holds whatever the numbers: each is contradicted below."""
    contradicted = set().union(*(c for _, c in CHANGES))
    assert contradicted == {s.text for s in STATEMENTS}


CHANGES = [
    ({"health/jumprelu/meaningful": 2 / 3},
     {"at 5M tokens the absorption metric is meaningful on every seed of every compared "
      "family"}),
    ({"convergence/topk/t1M/n_meaningful": 3},
     {"TopK's and ATM's absorption is meaningful on every seed from 2M tokens on, not at 1M"}),
    ({"convergence/topk/t2M/n_meaningful": 2},
     {"TopK's and ATM's absorption is meaningful on every seed from 2M tokens on, not at 1M"}),
    ({"convergence/atm/t2M/n_meaningful": 2},
     {"TopK's and ATM's absorption is meaningful on every seed from 2M tokens on, not at 1M"}),
    ({"matched/topk/explained_variance/L0/hi": 0.001},
     {"ATM reconstructs worse than TopK at TopK's L0"}),
    ({"matched/topk/ce_loss_score/L0/hi": 0.001},
     {"ATM reconstructs worse than TopK at TopK's L0"}),
    ({"matched/topk/mean_full_absorption/L0/hi": -0.001},
     {"ATM's full-absorption rate and TopK's do not differ at TopK's L0"}),
    ({"matched/jumprelu/mean_absorption_fraction/L0/lo": 0.001},
     {"ATM's absorption fraction and JumpReLU's do not differ at TopK's L0"}),
    ({"matched/atm-none/mean_absorption_fraction/L0/hi": -0.001},
     {"ATM without its mask absorbs as much as ATM (the interval of the difference "
      "includes 0)"}),
    ({"matched/atm-none/explained_variance/L0/hi": 0.001},
     {"ATM without its mask reconstructs better than ATM at equal L0"}),
    ({"main/jumprelu/max_cos_mean": 0.28},
     {"every compared family's cross-seed match is more than twice its chance level"}),
    ({"convergence/atm/t1M/raw_mean_full_absorption": 0.7},
     {"TopK's raw full-absorption rate lies above ATM's at every convergence point"}),
    ({"convergence/atm-none/t250k/max_cos_mean": 0.6},
     {"cross-seed match rises from 0.25M to 5M tokens for TopK, ATM and ATM without its "
      "mask"}),
    ({"convergence/atm-none/t5M/explained_variance": 0.89},
     {"explained variance rises from 0.25M to 5M tokens for TopK, ATM and ATM without its "
      "mask"}),
    ({"convergence/atm/t5M/l0": 90.0}, {"ATM's L0 falls from 0.25M to 5M tokens"}),
]


@pytest.mark.parametrize("change, contradicted", CHANGES)
def test_a_changed_number_contradicts_exactly_its_statements(change, contradicted):
    found = statuses(true_world() | change)
    assert {t for t, s in found.items() if s == "contradicted"} == contradicted
    assert all(s == "holds" for t, s in found.items() if t not in contradicted)


def test_a_missing_number_is_named_not_passed():
    numbers = true_world()
    del numbers["matched/topk/explained_variance/L0/hi"]
    found = statuses(numbers)
    assert found["ATM reconstructs worse than TopK at TopK's L0"] == (
        "missing: MatchedTopkExplainedVarianceLZeroHi")
    numbers = true_world() | {"convergence/atm/t5M/l0": float("nan")}
    assert statuses(numbers)["ATM's L0 falls from 0.25M to 5M tokens"].startswith("missing")


def test_statements_tex_lists_the_contradicted_ones():
    stamp = Stamp("cpu", False, "abc1234")
    tex = statements_tex(check(by_macro(true_world() | {"convergence/atm/t5M/l0": 90.0})),
                         stamp)
    assert tex.startswith(stamp.comment + "\n")
    assert rf"\newcommand{{\StatementsChecked}}{{{len(STATEMENTS)}}}" in tex
    assert r"\newcommand{\StatementsNContradicted}{1}" in tex
    assert r"\item ATM's L0 falls from 0.25M to 5M tokens (convergence)" in tex
    clean = statements_tex(check(by_macro(true_world())), stamp)
    assert r"\newcommand{\StatementsContradicted}{}" in clean


def test_numbers_tex_reads_back():
    values = {"a/diff": -0.05921, "b/count": 2000, "c/verdict": "ATM worse", "d/small": 0.0005}
    back = numbers_from_tex(numbers_tex(values, Stamp("cpu", False, "abc1234")))
    assert back["ADiff"] == pytest.approx(-0.0592) and back["BCount"] == 2000
    assert back["CVerdict"] == "ATM worse" and back["DSmall"] == pytest.approx(0.0005)


def test_committed_paper_numbers_contradict_no_sentence():
    text = (REPO / "paper" / "tables" / "numbers.tex").read_text()
    assert "(profile cpu," in text.splitlines()[0]  # the canonical run's numbers
    bad = {f.statement.text: f.status for f in check(numbers_from_tex(text))
           if f.status != "holds"}
    assert not bad, f"paper/main.tex states what its numbers contradict: {bad}"


def test_settings_printed_as_latex_are_read_as_numbers():
    from atm_repro.report.latex import Tex
    numbers = true_world() | {"convergence/atm/t250k/l0": Tex("1{,}000")}
    assert set(statuses(numbers).values()) == {"holds"}
    numbers["convergence/atm/t250k/l0"] = Tex("n/a")
    assert statuses(numbers)["ATM's L0 falls from 0.25M to 5M tokens"].startswith(
        "not a number")


def test_readme_block_quotes_the_numbers_and_the_check(tmp_path, monkeypatch):
    from atm_repro.report import readme
    stamp = Stamp("cpu", False, "abc1234")
    numbers = true_world()
    block = readme.results_block(numbers, check(by_macro(numbers)), stamp)
    assert "**no difference**" in block and "commit abc1234" in block
    assert "explained variance against TopK -0.030 [-0.031, -0.028]" in block
    assert "passes on 3 of 3 ATM and 3 of 3 TopK seeds at 5M tokens" in block
    assert f"{len(STATEMENTS)} of {len(STATEMENTS)} directional sentences" in block
    worse = numbers | {"convergence/atm/t5M/l0": 90.0}
    bad = readme.results_block(worse, check(by_macro(worse)), stamp)
    assert "**contradicted or unchecked**: ATM's L0 falls from 0.25M to 5M tokens." in bad
    path = tmp_path / "README.md"
    path.write_text("# title\n\n<!-- results:cpu:start -->\nold\n<!-- results:cpu:end -->\n"
                    "\n## more\n")
    monkeypatch.setattr(readme, "README_PATH", path)
    assert readme.update_readme(numbers, check(by_macro(numbers)), stamp)
    text = path.read_text()
    assert "\nold\n" not in text and text.startswith("# title\n") and text.endswith("## more\n")
    assert not readme.update_readme(numbers, check(by_macro(numbers)), stamp)  # unchanged


# --------------------------------------------------------------------------- main.tex marks

MAIN_TEX = (REPO / "paper" / "main.tex").read_text()
# words that state a verdict, a direction or a count over seeds: in the abstract, the
# results and the conclusion they belong in a checked sentence or a generated macro
VERDICT_WORDS = re.compile(
    r"\b(holds?|fails?|does not hold|no advantage|no difference|every seed|all seeds|"
    r"better|worse|rises|falls|above|below|as much as|lower|higher|less|more)\b")


def mark_problems(tex: str) -> list[str]:
    """What is wrong with main.tex's marks: a statement without a marked sentence, a
    marked sentence without its statement's phrase, a mark of no statement."""
    phrases = {s.key: s.phrase for s in STATEMENTS}
    marks = marked_sentences(tex)
    problems = [f"{key}: no sentence marked" for key in phrases
                if key not in {k for k, *_ in marks}]
    for key, sentence, *_ in marks:
        if key not in phrases:
            problems.append(f"{key}: no such statement")
        elif phrases[key] not in " ".join(sentence.split()):
            problems.append(f"{key}: {phrases[key]!r} not in {sentence[:80]!r}")
    return problems


def unchecked_results_text(tex: str) -> str:
    """The abstract, the results and the conclusion without comments, marked
    sentences and macros (a generated verdict such as \\val{ClaimMaskVerdict} is
    the claims table's word, not the text's)."""
    tex = re.sub(r"(?<!\\)%.*", "", tex)
    for _, _, start, end in reversed(marked_sentences(tex)):
        tex = tex[:start] + tex[end:]
    parts = [tex[tex.index(a):tex.index(b)] for a, b in (
        ("\\begin{abstract}", "\\end{abstract}"), ("\\section{Results}", "\\section{Limitations}"),
        ("\\section{Conclusion}", "\\label{page:main-end}"))]
    text = re.sub(r"\\[A-Za-z]+(\[[^]]*\])?(\{[^{}]*\})*", " ", "\n".join(parts))
    return " ".join(text.split())


def test_every_statement_is_marked_in_main_tex_with_its_phrase():
    assert mark_problems(MAIN_TEX) == []


@pytest.mark.parametrize("old, new", [("reconstructs worse than TopK", "reconstructs better "
                                                                       "than TopK"),
                                      ("absorbs as much as", "absorbs less than")])
def test_a_turned_direction_in_a_checked_sentence_fails(old, new):
    assert old in MAIN_TEX
    assert mark_problems(MAIN_TEX.replace(old, new, 1)) != []


def test_no_verdict_word_outside_checked_sentences_and_macros():
    text = unchecked_results_text(MAIN_TEX)
    hits = [text[max(0, m.start() - 60):m.end() + 20] for m in VERDICT_WORDS.finditer(text)]
    assert hits == []
    assert VERDICT_WORDS.search(unchecked_results_text(  # the scan can fail
        MAIN_TEX.replace("\\section{Limitations}", "ATM fails here.\n\\section{Limitations}")))
