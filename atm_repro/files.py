"""Small file helpers shared by every stage: checksums and atomic writes.

Atomic writes (write a temp file, then rename) mean an interrupted stage never
leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def atomic_save_npy(path: Path, array: np.ndarray) -> str:
    """Save ``array`` as .npy atomically; returns the file's sha256."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.save(f, array)
    os.replace(tmp, path)
    return sha256_file(path)


def keyed_json(path: Path, key) -> dict | None:
    """The JSON record at ``path`` if it exists and was written for ``key`` (its
    ``"key"`` field), else None: the one test behind every "skip this work when
    its key is unchanged" (trained SAEs, eval results, prepared eval inputs)."""
    path = Path(path)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("key") == key else None


def update_doc(path: Path, name: str, block: str, kind: str = "bench") -> None:
    """Replace the block of ``path`` marked ``<!-- kind:name:start/end -->`` by
    ``block`` (appended, with its markers, when absent); the rest is kept. Commands
    write their measurements into docs this way, and notebook 05 its headline
    results into the README."""
    start, end = f"<!-- {kind}:{name}:start -->", f"<!-- {kind}:{name}:end -->"
    text = path.read_text() if path.exists() else ""
    marked = f"{start}\n{block}{end}"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        text = head + marked + rest.partition(end)[2]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + marked + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
