"""``caching``: tokens/s of ``cache.capture_residuals`` (hooks, stop after the
deepest cached layer) on one batch of the cache's own token ids, against a bare
forward pass of the same model cut after that layer (no hooks), same batch;
median of ``REPEATS``, the two interleaved."""

from __future__ import annotations

import numpy as np
import torch

from atm_repro.bench.common import (
    REPEATS,
    Row,
    interleaved_medians,
    load_profile_model,
    open_cache,
)
from atm_repro.cache import capture_residuals
from atm_repro.config import Profile


@torch.no_grad()
def _bare_forward(loaded, ids_BS: torch.Tensor, n_blocks: int) -> None:
    """The decoder stack's own forward, cut after ``n_blocks`` blocks, no hooks."""
    path, full = loaded.layers_path, loaded.layers
    loaded.base.set_submodule(path, full[:n_blocks])
    try:
        loaded.base(input_ids=ids_BS, use_cache=False)
    finally:
        loaded.base.set_submodule(path, full)


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """capture_residuals vs a bare truncated forward, one cache batch."""
    cache = open_cache(profile)
    loaded = load_profile_model(profile)
    layers = cache.layers
    ids_BS = torch.from_numpy(cache.tokens("train")[: profile.cache.batch_size]
                              .astype(np.int64)).to(profile.model.device)
    seconds = interleaved_medians(
        {"capture": lambda: capture_residuals(loaded, ids_BS, layers),
         "bare": lambda: _bare_forward(loaded, ids_BS, max(layers) + 1)},
        device=profile.model.device)
    n_tokens = ids_BS.numel()
    rows = [Row("caching", "capture_residuals", n_tokens / seconds["capture"], "tok/s"),
            Row("caching", "bare truncated forward", n_tokens / seconds["bare"], "tok/s"),
            Row("caching", "capture / bare", seconds["bare"] / seconds["capture"], "x",
                ">=", 0.90)]
    return rows, {"batch_shape": list(ids_BS.shape), "layers": layers, "repeats": REPEATS,
                  "median_s": seconds}
