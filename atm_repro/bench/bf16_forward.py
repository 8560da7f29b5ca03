"""``bf16_forward``: does a bfloat16 model forward (``model.dtype``) move a headline
metric beyond seed noise? The whole main-layer pipeline twice, the model in
float32 and in bfloat16: the activation cache of ``train.layer`` (the other dtype's
built here, cut after that layer), the absorption preparation, and
``FIDELITY_SPECS`` x ``FIDELITY_SEEDS`` trained at the full budget (each spec in
its own training dtype) and scored on their own pipeline's held-out split and
absorption data. Rows as ``bf16_fidelity``, plus the letters kept and the
preparation's forward seconds each way."""

from __future__ import annotations

from atm_repro.bench.common import (
    FIDELITY_SEEDS,
    Row,
    fidelity_rows,
    fidelity_values,
    main_absorption_data,
    main_layer_only,
    open_cache,
    require_bf16,
    slash_keys,
    with_model_dtype,
)
from atm_repro.cache import build_cache
from atm_repro.config import Profile
from atm_repro.evals.absorption import LETTERS, letter_exclusions
from atm_repro.profiles import eval_configs


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """The main-layer pipeline with the model in float32 and in bfloat16."""
    require_bf16(profile)
    layer = profile.train.layer
    cfg = eval_configs(profile)["absorption"]
    arms, forward_s, letters = {}, {}, {}
    for dtype in ("float32", "bfloat16"):
        arm_profile = with_model_dtype(profile, dtype)
        if dtype != profile.model.dtype:  # one layer: the cache stops after it
            arm_profile = main_layer_only(arm_profile)
            build_cache(arm_profile, progress=False)
        data = main_absorption_data(profile, arm_profile)
        arms[dtype] = (open_cache(arm_profile), data, None)
        forward_s[dtype] = data.meta["forward_seconds"]
        letters[dtype] = "".join(c for c in LETTERS if c not in letter_exclusions(data, cfg))
    values = fidelity_values(profile, arms, "forward")
    rows = [Row("bf16 forward", f"absorption preparation, {d}: model forwards", forward_s[d],
                "s") for d in arms]
    rows += [Row("bf16 forward", f"letters kept, {d}", len(letters[d])) for d in arms]
    rows.append(Row("bf16 forward", "letters kept by one side only",
                    len(set(letters["float32"]) ^ set(letters["bfloat16"]))))
    rows += fidelity_rows("bf16 forward", values)
    return rows, {"layer": layer, "seeds": list(FIDELITY_SEEDS), "letters": letters,
                  "forward_s": forward_s, "values": slash_keys(values)}
