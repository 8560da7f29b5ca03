"""atm_repro: a rerunnable reproduction of Adaptive Temporal Masking SAEs (arXiv:2510.08855)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__version__ = "0.1.0"

_PKG = Path(__file__).resolve().parent


def code_version(*modules: str) -> str:
    """``<version>+<hash>`` of the package's source (or only of ``modules``: files
    or folders relative to the package, such as ``"cache.py"`` or ``"evals"``): a
    stamp of the code that wrote an output. Reuse is decided by ``codehash.code_key``,
    which hashes the code a result depends on, not files."""
    paths = [_PKG / m for m in modules] if modules else [_PKG]
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(_PKG).as_posix().encode())
        h.update(f.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"
