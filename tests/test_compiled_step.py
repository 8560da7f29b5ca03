"""The compiled step (``train.compile``) computes what the eager step computes: same
loss, same parameter gradients and, for ATM, the same EMA update, on a fixed batch
in float32 (saes/base.py, "Compiled steps")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atm_repro.cache import ArraySource
from atm_repro.config import SAESpec, TrainConfig
from atm_repro.saes import StepContext, build_config, build_sae, compiled_kernels
from atm_repro.saes.io import SAEMeta, load_sae
from atm_repro.train import train_sae

D, F, B = 16, 64, 48
CASES = {
    "atm": {"l1_coefficient": 0.1, "warmup_steps": 0, "c": 0.0, "r": 5.0, "min_keep": 0.2},
    "atm-per-token": {"l1_coefficient": 0.1, "warmup_steps": 0, "c": 0.0, "r": 5.0,
                      "min_keep": 0.2, "mask_draw": "per_token"},
    "atm-masked-g": {"l1_coefficient": 0.1, "warmup_steps": 0, "c": 0.0, "r": 5.0,
                     "min_keep": 0.2, "masked_g": "masked"},
    "jumprelu": {"l0_coefficient": 0.1, "init_threshold": 0.1, "bandwidth": 0.5},
    "standard": {"l1_coefficient": 1.0},
}


def one_step(case: str, compiled: bool):
    """Loss, gradients and buffers after one step from a fixed start (ATM: primed
    by an eager step, so the step measured draws a mask)."""
    variant = case.split("-")[0]
    sae = build_sae(variant, build_config(variant, CASES[case], D, F))
    gen = torch.Generator().manual_seed(0)
    sae.init_weights(gen, torch.randn(D, generator=gen) * 0.1)
    dead = torch.zeros(F, dtype=torch.bool)
    if variant == "atm":
        x0 = torch.randn(B, D, generator=torch.Generator().manual_seed(3))
        sae.training_forward(x0, StepContext(0, 100, dead, torch.Generator())).loss.backward()
        sae.zero_grad(set_to_none=True)
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(1))
    with compiled_kernels(compiled):
        out = sae.training_forward(x, StepContext(5, 100, dead,
                                                  torch.Generator().manual_seed(7)))
        out.loss.backward()
    return (out.loss.detach(), out.fired_F, {n: p.grad for n, p in sae.named_parameters()},
            {n: b.clone() for n, b in sae.named_buffers()}, out.terms)


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_step_equals_eager(case):
    loss_e, fired_e, grads_e, bufs_e, terms_e = one_step(case, compiled=False)
    loss_c, fired_c, grads_c, bufs_c, terms_c = one_step(case, compiled=True)
    if case.startswith("atm"):
        assert float(terms_e["masked_frac"]) > 0  # the step compared masks latents
        assert int(bufs_e["ema_updates"]) == 2  # and its backward updated the state
    assert torch.allclose(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    assert torch.equal(fired_c, fired_e)
    for name, grad in grads_e.items():
        assert grad is not None and float(grad.abs().max()) > 0
        assert torch.allclose(grads_c[name], grad, rtol=1e-5, atol=1e-5), name
    for name, buf in bufs_e.items():
        assert torch.allclose(bufs_c[name].float(), buf.float(), rtol=1e-5, atol=1e-6), name


def test_compiled_training_is_deterministic(tmp_path):
    """Same profile, same seed, compiled bfloat16 steps: the same SAE, byte for byte."""
    source = ArraySource(np.random.default_rng(0).normal(size=(2000, D)).astype(np.float32))
    meta = SAEMeta(model_name="synthetic", hook_name="blocks.0.hook_resid_post", layer=0,
                   context_size=8, dataset_path="synthetic")
    cfg = TrainConfig(width=F, batch_size=B, tokens=B * 12, compile=True, dtype="bfloat16",
                      lr_warmup_steps=2, seeds=[0], layer=0)
    spec = SAESpec(variant="atm", params={"warmup_steps": 3})
    for run in ("a", "b"):
        train_sae("atm", spec, 0, cfg, source, tmp_path / run, meta, progress=False)
    a, b = load_sae(tmp_path / "a"), load_sae(tmp_path / "b")
    assert all(torch.equal(t, b.inference_tensors()[n]) for n, t in a.inference_tensors().items())
