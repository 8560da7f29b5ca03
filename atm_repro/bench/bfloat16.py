"""``bfloat16``: float32 against bfloat16 where the machine runs bfloat16 natively
(``hardware``): caching tokens/s with the model cast to bfloat16 and the relative
error of its residuals; the SAE-step matmuls under autocast; and each spec's
training tokens/s with bfloat16 autocast (float32 master weights and Adam state),
float32 and bfloat16 rounds interleaved, fastest counts. ``BF16_SPEEDUP`` is a
stage's speed bar for a bfloat16 default."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from atm_repro.bench.common import (
    TRAIN_ROUNDS,
    Row,
    bf16_matmul_seconds,
    interleaved_medians,
    load_profile_model,
    matmul_reference_seconds,
    open_cache,
    require_bf16,
    slash_keys,
    train_steps,
    with_model_dtype,
)
from atm_repro.cache import capture_residuals
from atm_repro.config import Profile
from atm_repro.runs import bench_dir

BF16_SPEEDUP = 1.3  # a stage defaults to bfloat16 only when at least this much faster


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Caching, the SAE-step matmuls and training, float32 against bfloat16."""
    require_bf16(profile)
    cache = open_cache(profile)
    models = {dtype: load_profile_model(with_model_dtype(profile, dtype))
              for dtype in ("float32", "bfloat16")}
    layers = cache.layers
    ids_BS = torch.from_numpy(cache.tokens("train")[: profile.cache.batch_size]
                              .astype(np.int64)).to(profile.model.device)
    seconds = interleaved_medians(
        {dtype: (lambda m=m: capture_residuals(m, ids_BS, layers)) for dtype, m in models.items()},
        device=profile.model.device)
    n_tokens = ids_BS.numel()
    rows = [Row("bfloat16", f"caching, {dtype}: capture_residuals", n_tokens / seconds[dtype],
                "tok/s") for dtype in models]
    rows.append(Row("bfloat16", "caching: bfloat16 / float32 speed",
                    seconds["float32"] / seconds["bfloat16"], "x", ">=", BF16_SPEEDUP))
    acts = {dtype: capture_residuals(m, ids_BS, layers) for dtype, m in models.items()}
    errors = {}
    for layer in layers:
        a32 = acts["float32"][layer][:, 1:].reshape(-1, cache.d_model).double()  # no BOS
        a16 = acts["bfloat16"][layer][:, 1:].reshape(-1, cache.d_model).double()
        rel = (a16 - a32).norm(dim=-1) / a32.norm(dim=-1)
        cos = torch.nn.functional.cosine_similarity(a16, a32, dim=-1)
        errors[layer] = {"mean_rel_error": float(rel.mean()), "max_rel_error": float(rel.max()),
                         "min_cosine": float(cos.min())}
        rows += [Row("bfloat16", f"caching, layer {layer}: mean relative error",
                     100 * errors[layer]["mean_rel_error"], "%"),
                 Row("bfloat16", f"caching, layer {layer}: worst per-token cosine",
                     errors[layer]["min_cosine"], "")]
    del models, acts

    tcfg = profile.train
    B, D, F = tcfg.batch_size, cache.d_model, tcfg.width
    ref = {"float32": matmul_reference_seconds(B, D, F, tcfg.device),
           "bfloat16": bf16_matmul_seconds(B, D, F, tcfg.device)}
    rows.append(Row("bfloat16", "SAE-step matmuls: bfloat16 / float32 speed",
                    ref["float32"] / ref["bfloat16"], "x"))
    dtypes = ("float32", "bfloat16")
    first = next(iter(tcfg.saes))
    train_steps(profile, cache, first, 3, bench_dir(profile) / "saes" / "warmup", fresh=True,
                spec=dataclasses.replace(tcfg.saes[first], dtype="bfloat16"))
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(TRAIN_ROUNDS):
        for name, spec in tcfg.saes.items():
            for dtype in dtypes:
                out = bench_dir(profile) / "saes" / f"{name}-{dtype}"
                metrics = train_steps(profile, cache, name, steps, out, fresh=True,
                                      spec=dataclasses.replace(spec, dtype=dtype)).metrics
                times.setdefault((name, dtype), []).append(metrics["wall_s"])
    step_s = {k: min(v) / steps for k, v in times.items()}
    for name in tcfg.saes:
        rows += [Row("bfloat16", f"training {name}, {dtype}", B / step_s[(name, dtype)],
                     "tok/s") for dtype in dtypes]
        rows.append(Row("bfloat16", f"training {name}: bfloat16 / float32 speed",
                        step_s[(name, "float32")] / step_s[(name, "bfloat16")], "x",
                        ">=", BF16_SPEEDUP))
    return rows, {"batch_shape": list(ids_BS.shape), "caching_median_s": seconds,
                  "activation_errors": errors, "matmul_s": ref,
                  "train_step_s": slash_keys(step_s)}

