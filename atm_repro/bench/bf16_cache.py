"""``bf16_cache``: a bfloat16 activation cache against the profile's float32 one,
same forward: the main layer cached again with ``cache.dtype: bfloat16``; the
relative error of its rows (every row of each split), its bytes on disk; and
``FIDELITY_SPECS`` x ``FIDELITY_SEEDS`` trained on each at the full budget and
scored on their own held-out split and the run's absorption data (rows as
``bf16_fidelity``)."""

from __future__ import annotations

import numpy as np

from atm_repro.bench.common import (
    FIDELITY_SEEDS,
    BenchError,
    Row,
    fidelity_rows,
    fidelity_values,
    main_absorption_data,
    main_layer_only,
    open_cache,
    slash_keys,
)
from atm_repro.cache import ActivationCache, build_cache
from atm_repro.config import Profile


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """The main layer cached in bfloat16 against the float32 cache, rows and SAEs."""
    layer = profile.train.layer
    f32 = open_cache(profile)
    if f32.manifest.dtype != "float32":
        raise BenchError(f"bf16_cache compares against a float32 cache; profile "
                         f"{profile.name!r} caches {f32.manifest.dtype}")
    b16 = ActivationCache.open(build_cache(main_layer_only(profile, dtype="bfloat16"),
                                           progress=False), verify=False)
    rows = []
    for split in ("train", "eval"):
        exact, rounded = f32.source(layer, split), b16.source(layer, split)
        parts = []  # per row, in chunks: the whole split in float64 would take GBs
        for idx in np.array_split(np.arange(len(exact)), -(-len(exact) // 16384)):
            a = exact.gather(idx).astype(np.float64)
            b = rounded.gather(idx).astype(np.float64)
            parts.append(np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1))
        rel = np.concatenate(parts)
        rows += [Row("bf16 cache", f"{split} rows: mean relative error", 100 * rel.mean(), "%"),
                 Row("bf16 cache", f"{split} rows: largest relative error", 100 * rel.max(), "%")]
    size = [sum(p.stat().st_size for p in c.path.glob(f"*_L{layer}_*.npy")) for c in (f32, b16)]
    rows.append(Row("bf16 cache", "bytes on disk: bfloat16 / float32", size[1] / size[0], "x"))
    data = main_absorption_data(profile)
    values = fidelity_values(profile, {"float32": (f32, data, None),
                                       "bfloat16": (b16, data, None)}, "cache")
    rows += fidelity_rows("bf16 cache", values)
    return rows, {"layer": layer, "seeds": list(FIDELITY_SEEDS), "values": slash_keys(values)}
