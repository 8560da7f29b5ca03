"""The canonical paper as a reader gets it: built from the committed tables and
figures, its text holds no identifier from the code or the profiles, no
unresolved reference or stray macro, no table set below 8 pt, and the main text
(up to the references; the appendix follows them) ends by page 12. The committed
PDF is read the same way."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import internal_names, pdf_text

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "paper"
MAIN_PAGES = 12  # the main text's limit: main.tex's label page:main-end, before the references

needs_tools = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("latexmk") is None,
    reason="pdftotext/latexmk not installed (Debian: poppler-utils, latexmk); CI installs them")


@pytest.mark.parametrize("text, kind", [
    ("the SAE atm-s0 has", "run id"), ("ATM (atm-none) at", "spec name"),
    ("see mean_full_absorption here", "snake_case key"),
    ("set by ablations.factors", "config key"), ("from profile cpu (code", "profile name"),
    ("Section ?? shows", "unresolved reference"), ("the \\MainAtmLZero value", "macro name"),
])
def test_internal_names_are_found(text, kind):
    assert [h.split(":")[0] for h in internal_names(text)] == [kind]


def test_references_and_commands_are_not_internal_names():
    text = ("the repository's docs/methods.md and pub/2022/toy_model/index.html; "
            "atm-repro run --profile cpu --only 05; ATM without its mask, TopK, L0 40")
    assert internal_names(text) == []


@pytest.fixture(scope="module")
def canonical_build(tmp_path_factory) -> Path:
    """main.tex built from the committed tables and figures into a temp dir."""
    out = tmp_path_factory.mktemp("paper")
    build = subprocess.run(["make", "-C", str(PAPER), "pdf", f"OUTDIR={out}"],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out


@needs_tools
@pytest.mark.slow
def test_canonical_paper_reads_like_a_paper(canonical_build):
    log = (canonical_build / "main.log").read_text(errors="replace")
    assert not re.search(r"(Citation|Reference) `[^']*' on page \d+ undefined", log)
    assert "is missing" not in log, "a generated input is missing"
    assert not re.findall(r"tab:\w+ scaled below 0\.8", log), "a table in type under 8 pt"
    end = re.search(r"\\newlabel\{page:main-end\}\{\{[^}]*\}\{(\d+)\}",
                    (canonical_build / "main.aux").read_text())
    assert end and int(end.group(1)) <= MAIN_PAGES, end and end.group(0)
    assert internal_names(pdf_text(canonical_build / "main.pdf")) == []


@needs_tools
def test_committed_pdf_holds_no_internal_names():
    assert internal_names(pdf_text(PAPER / "main.pdf")) == []
