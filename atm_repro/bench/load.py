"""``load``: ``load_model(profile.model)`` twice in a fresh process. The second
call is the warm load (converted weights on disk, imports done) and has the
target; the first also pays the imports, and the one-time GGUF conversion when
the converted copy is missing."""

from __future__ import annotations

import time

from atm_repro.bench.common import Row, load_profile_model
from atm_repro.config import Profile


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Seconds of a first and a second (warm) ``load_model`` in this process."""
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        loaded = load_profile_model(profile)
        seconds.append(time.perf_counter() - start)
        del loaded
    rows = [Row("load", "load_model, first call in a fresh process", seconds[0], "s"),
            Row("load", "load_model, warm", seconds[1], "s", "<=", 10.0)]
    return rows, {"model": profile.model.name}
