"""atm_repro.report.provenance: write-if-changed, the smoke guard, the commit stamp."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from atm_repro.config import Profile
from atm_repro.report.provenance import (
    FIGURES_DIR,
    TABLES_DIR,
    OutputGuardError,
    Stamp,
    check_output_allowed,
    git_commit,
    output_dirs,
    with_stamp,
    write_generated,
)


def test_write_generated_leaves_unchanged_files_alone(tmp_path):
    path = tmp_path / "sub" / "numbers.tex"
    assert write_generated(path, "a\n") is True
    os.utime(path, (1_000_000, 1_000_000))
    assert write_generated(path, "a\n") is False
    assert path.stat().st_mtime == 1_000_000
    assert write_generated(path, "b\n") is True
    assert path.read_text() == "b\n" and path.stat().st_mtime != 1_000_000


def test_write_generated_takes_bytes(tmp_path):
    path = tmp_path / "f.png"
    assert write_generated(path, b"\x89PNG") is True
    assert write_generated(path, b"\x89PNG") is False
    assert path.read_bytes() == b"\x89PNG"
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no leftovers


def test_stamp_heads_every_file():
    stamp = Stamp("cpu", False, "abc1234")
    text = with_stamp(stamp, ["a", "b"])
    assert text == stamp.comment + "\na\nb\n"
    assert "profile cpu, commit abc1234" in stamp.comment


def test_output_dirs(runs_dir):
    assert output_dirs(Profile(name="cpu")) == (FIGURES_DIR, TABLES_DIR)
    figures, tables = output_dirs(Profile(name="smoke", smoke=True))
    assert figures == runs_dir / "smoke" / "figures"
    assert tables == runs_dir / "smoke" / "paper" / "tables"


def test_output_guard(runs_dir, tmp_path):
    smoke = Profile(name="smoke", smoke=True)
    cpu = Profile(name="cpu")
    with pytest.raises(OutputGuardError, match="smoke profile"):
        check_output_allowed(smoke, FIGURES_DIR / "x.pdf")
    with pytest.raises(OutputGuardError, match="smoke profile"):
        check_output_allowed(smoke, TABLES_DIR / "numbers.tex")
    assert check_output_allowed(smoke, runs_dir / "smoke" / "paper" / "tables") == \
        (runs_dir / "smoke" / "paper" / "tables").resolve()
    with pytest.raises(OutputGuardError, match="may not write"):
        check_output_allowed(smoke, tmp_path / "elsewhere.tex")
    with pytest.raises(OutputGuardError, match="may not write"):
        check_output_allowed(smoke, runs_dir / "cpu" / "figures")  # another profile's runs
    assert check_output_allowed(cpu, FIGURES_DIR / "x.pdf") == (FIGURES_DIR / "x.pdf").resolve()
    assert check_output_allowed(cpu, TABLES_DIR / "t.tex") == (TABLES_DIR / "t.tex").resolve()
    assert check_output_allowed(cpu, runs_dir / "cpu" / "x") == (runs_dir / "cpu" / "x").resolve()
    with pytest.raises(OutputGuardError, match="may not write"):
        check_output_allowed(cpu, tmp_path / "elsewhere.tex")


def test_a_profile_that_does_not_write_the_paper_stays_in_its_run_dir(runs_dir):
    companion = Profile(name="smollm2", writes_paper=False)
    assert output_dirs(companion) == (runs_dir / "smollm2" / "figures",
                                      runs_dir / "smollm2" / "paper" / "tables")
    for target in (FIGURES_DIR / "x.pdf", TABLES_DIR / "numbers.tex"):
        with pytest.raises(OutputGuardError, match="writes_paper: false"):
            check_output_allowed(companion, target)
    inside = runs_dir / "smollm2" / "paper" / "tables" / "numbers.tex"
    assert check_output_allowed(companion, inside) == inside.resolve()


def test_output_guard_resolves_dot_dot(runs_dir):
    smoke = Profile(name="smoke", smoke=True)
    sneaky = runs_dir / "smoke" / ".." / ".." / "x.tex"
    with pytest.raises(OutputGuardError):
        check_output_allowed(smoke, sneaky)


def test_git_commit(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert git_commit(tmp_path) == "unknown"

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "figures").mkdir()
    for name in ("code.py", "figures/f.pdf"):
        (tmp_path / name).write_text("1")
    git("add", ".")
    git("commit", "-q", "-m", "c")
    clean = git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{7,}", clean)
    (tmp_path / "figures" / "f.pdf").write_text("2")  # a generated output: still clean
    (tmp_path / "untracked.txt").write_text("x")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("2")
    assert git_commit(tmp_path) == clean + "+dirty"
