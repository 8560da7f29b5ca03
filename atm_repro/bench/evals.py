"""``evals``: absorption and sparse-probing wall time: prepare once (cold, in a
temp dir), then per SAE; the same for core's CE splice (the layer's clean and
zero passes once, then one spliced pass per SAE), beside the LM head and
log-softmax of one splice batch alone, the splice's dearest part. The SAEs are
the profile's trained main runs (lowest seed) where they exist, else bench runs
of ``steps`` steps."""

from __future__ import annotations

import tempfile
from pathlib import Path

from atm_repro.bench.common import Row, eval_saes, eval_seconds
from atm_repro.config import Profile


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Absorption, probing and the splice: prepare (cold) once, then seconds per SAE."""
    saes = eval_saes(profile, steps)
    with tempfile.TemporaryDirectory() as tmp:
        rows = eval_seconds(profile, "evals", saes, Path(tmp))
    return rows, {"layer": profile.train.layer,
                  "saes": {n: {"path": str(p), "source": s} for n, (p, s) in saes.items()}}
