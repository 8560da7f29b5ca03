"""``bf16_fidelity``: does bfloat16 training move a headline metric beyond seed
noise? ``FIDELITY_SPECS`` x ``FIDELITY_SEEDS`` trained both ways at the profile's
full budget (``steps`` is not used) on ``train.layer``; per metric, bfloat16 minus
float32 (mean over seeds) with a 95% Welch t interval over seeds, beside
float32's seed spread (standard deviation). Absorption is the raw measure (this
layer's health check fails; ``evals.absorption``), on the run's prepared data."""

from __future__ import annotations

from atm_repro.bench.common import (
    FIDELITY_SEEDS,
    Row,
    fidelity_rows,
    fidelity_values,
    main_absorption_data,
    open_cache,
    require_bf16,
    slash_keys,
)
from atm_repro.config import Profile


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """The fidelity specs and seeds trained in float32 and with bfloat16 autocast."""
    require_bf16(profile)
    cache = open_cache(profile)
    data = main_absorption_data(profile)
    arms = {dtype: (cache, data, dtype) for dtype in ("float32", "bfloat16")}
    values = fidelity_values(profile, arms, "fidelity")
    return (fidelity_rows("bf16 fidelity", values),
            {"layer": profile.train.layer, "seeds": list(FIDELITY_SEEDS),
             "values": slash_keys(values)})
