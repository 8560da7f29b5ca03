"""The paper's directional sentences checked against numbers (``report.statements``):
each can hold and each can be contradicted on known numbers, a missing number is
named, ``numbers.tex`` reads back, and the committed canonical numbers contradict
none of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from atm_repro.report.latex import numbers_tex
from atm_repro.report.provenance import Stamp
from atm_repro.report.statements import (
    STATEMENTS,
    by_macro,
    check,
    numbers_from_tex,
    statements_tex,
)

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("atm", "atm-random", "atm-none", "topk", "batchtopk", "jumprelu", "matryoshka",
            "standard", "masked-reg")


def true_world() -> dict:
    """Number keys -> values under which every statement holds."""
    n = {"eval/absorption/letter_latent_f1": 0.5, "health/main_best_k1_f1": 0.27,
         "probing/baseline_top1": 0.52}
    for claim in ("absorption", "mechanism"):
        n[f"claim/{claim}/verdict"] = "not testable here"
    for claim in ("reconstruction", "mask", "stability"):
        n[f"claim/{claim}/verdict"] = "fails"
    for f in ("topk", "batchtopk", "jumprelu", "matryoshka", "atm-none"):
        n |= {f"matched/{f}/explained_variance/L0/{s}": v
              for s, v in (("diff", -0.05), ("lo", -0.06), ("hi", -0.04))}
    n |= {f"matched/atm-random/explained_variance/L0/{s}": v
          for s, v in (("diff", 0.09), ("lo", 0.08), ("hi", 0.1))}
    n |= {"matched/topk/mean_full_absorption/L0/diff": -0.3,
          "matched/atm-none/mean_full_absorption/L0/hi": 0.01,
          "matched/atm-random/mean_full_absorption/L0/hi": 0.005}
    ev = {"atm": 0.94, "atm-random": 0.91, "atm-none": 0.99, "topk": 0.935,
          "batchtopk": 0.934, "jumprelu": 0.927, "matryoshka": 0.93, "standard": 0.76,
          "masked-reg": 0.93}
    top1 = dict(zip(FAMILIES, (0.62, 0.67, 0.60, 0.63, 0.64, 0.63, 0.64, 0.59, 0.60)))
    cos = dict(zip(FAMILIES, (0.137, 0.138, 0.136, 0.31, 0.27, 0.2, 0.23, 0.81, 0.25)))
    for f in FAMILIES:
        n |= {f"main/{f}/explained_variance": ev[f], f"main/{f}/mean_top1": top1[f],
              f"main/{f}/max_cos_mean": cos[f], f"main/{f}/l0": 40.0,
              f"main/{f}/ce_loss_score": 0.9}
    n |= {"main/atm/l0": 734.0, "main/atm/ce_loss_score": 0.83}
    n |= {"scale/topk-width8192/max_k1_f1": 0.15, "scale/atm-width8192/max_k1_f1": 0.14,
          "scale/topk-tokens4x/max_k1_f1": 0.59, "scale/atm-tokens4x/max_k1_f1": 0.16}
    p = "crossmodel/smollm2"
    n |= {f"{p}/topk/explained_variance/verdict": "ATM worse",
          f"{p}/atm-none/explained_variance/verdict": "ATM worse",
          f"{p}/atm-random/explained_variance/diff": 0.05,
          f"{p}/topk/mean_full_absorption/verdict": "not meaningful",
          f"{p}/topk/mean_full_absorption/diff": -0.2,
          f"{p}/matryoshka/mean_full_absorption/diff": -0.1,
          f"{p}/atm-none/mean_full_absorption/hi": 0.02,
          f"{p}/atm-random/mean_full_absorption/hi": 0.03}
    return n


def statuses(numbers: dict) -> dict[str, str]:
    return {f.statement.text: f.status for f in check(by_macro(numbers))}


def test_every_statement_holds_in_the_true_world():
    assert set(statuses(true_world()).values()) == {"holds"}


@pytest.mark.parametrize("change, contradicted", [
    ({"matched/topk/explained_variance/L0/hi": 0.01},
     {"ATM reconstructs worse than TopK at TopK's L0",
      "ATM reconstructs worse than every other family at TopK's L0"}),
    ({"matched/jumprelu/explained_variance/L0/diff": 0.01},
     {"ATM reconstructs worse than every other family at TopK's L0"}),
    ({"matched/atm-none/explained_variance/L0/hi": 0.001},
     {"ATM without its mask reconstructs better than ATM at equal L0"}),
    ({"matched/atm-random/explained_variance/L0/lo": -0.001},
     {"a random mask at ATM's rate reconstructs worse than ATM at equal L0"}),
    ({"matched/atm-none/mean_full_absorption/L0/hi": -0.001},
     {"... but not below its no-mask control"}),
    ({"claim/mask/verdict": "holds"}, {"none of the original's claims holds here"}),
    ({"health/main_best_k1_f1": 0.5},
     {"no SAE at the main layer has a first-letter latent"}),
    ({"scale/topk-tokens4x/max_k1_f1": 0.41},
     {"at four times the tokens TopK has a letter latent and ATM has none in this run"}),
    ({"scale/atm-tokens4x/max_k1_f1": 0.6},
     {"at four times the tokens TopK's best letter latent is better than ATM's",
      "at four times the tokens TopK has a letter latent and ATM has none in this run"}),
    ({"scale/atm-tokens4x/max_k1_f1": 0.55, "scale/topk-tokens4x/max_k1_f1": 0.7},
     {"at four times the tokens TopK has a letter latent and ATM has none in this run"}),
    ({"main/topk/max_cos_mean": 0.13},
     {"ATM and its controls have the least stable features of all families"}),
    ({"main/masked-reg/explained_variance": 0.7},
     {"the standard SAE reconstructs worst"}),
    ({"main/atm/mean_top1": 0.68},
     {"in probing ATM sits in the middle, below its random-mask control"}),
    ({"crossmodel/smollm2/topk/mean_full_absorption/verdict": "ATM better"},
     {"on SmolLM2 ATM reconstructs worse than TopK and than no mask, better than a random "
      "mask; absorption not meaningful there either"}),
])
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
    numbers = true_world() | {"health/main_best_k1_f1": float("nan")}
    assert statuses(numbers)["no SAE at the main layer has a first-letter latent"].startswith(
        "missing")


def test_statements_tex_lists_the_contradicted_ones():
    stamp = Stamp("cpu", False, "abc1234")
    tex = statements_tex(check(by_macro(true_world() | {"main/atm/l0": 10.0})), stamp)
    assert tex.startswith(stamp.comment + "\n")
    assert rf"\newcommand{{\StatementsChecked}}{{{len(STATEMENTS)}}}" in tex
    assert r"\newcommand{\StatementsNContradicted}{1}" in tex
    assert r"\item ATM is denser than TopK and JumpReLU (own settings)" in tex
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
    numbers = true_world() | {"eval/absorption/letter_latent_f1": Tex("0.5"),
                              "main/atm/l0": Tex("2{,}000")}
    assert set(statuses(numbers).values()) == {"holds"}
    numbers["eval/absorption/letter_latent_f1"] = Tex("n/a")
    assert statuses(numbers)["no SAE at the main layer has a first-letter latent"].startswith(
        "not a number")


def test_readme_block_quotes_the_numbers_and_the_check(tmp_path, monkeypatch):
    from atm_repro.report import readme
    stamp = Stamp("cpu", False, "abc1234")
    numbers = true_world() | {"claim/absorption/verdict": "not testable here",
                              "matched/target/L0": 40.0, "setup/model": "gemma-3-270m",
                              "train/layer": 8, "main/atm/n_seeds": 5.0}
    block = readme.results_block(numbers, check(by_macro(numbers)), stamp)
    assert "**not testable here**" in block and "commit abc1234" in block
    assert "against TopK: -0.050 [-0.060, -0.040]" in block
    assert f"{len(STATEMENTS)} of {len(STATEMENTS)} directional sentences" in block
    bad = readme.results_block(numbers | {"main/atm/l0": 1.0},
                               check(by_macro(numbers | {"main/atm/l0": 1.0})), stamp)
    assert "**contradicted or unchecked**: ATM is denser than TopK and JumpReLU." in bad
    path = tmp_path / "README.md"
    path.write_text("# title\n\n<!-- results:cpu:start -->\nold\n<!-- results:cpu:end -->\n"
                    "\n## more\n")
    monkeypatch.setattr(readme, "README_PATH", path)
    assert readme.update_readme(numbers, check(by_macro(numbers)), stamp)
    text = path.read_text()
    assert "\nold\n" not in text and text.startswith("# title\n") and text.endswith("## more\n")
    assert not readme.update_readme(numbers, check(by_macro(numbers)), stamp)  # unchanged
