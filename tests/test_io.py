"""Saving / loading SAEs in SAELens's layout (atm_repro.saes.io)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from atm_repro.saes import VARIANTS, SAEConfigError, build_config, build_sae
from atm_repro.saes.io import (
    EXTRA_STATE,
    SAE_CFG,
    SAE_WEIGHTS,
    SAELENS_FORMAT_VERSION,
    SAEMeta,
    load_sae,
    save_sae,
)

D, F = 16, 32
META = SAEMeta(model_name="tiny-gemma3", hook_name="blocks.1.hook_resid_post", layer=1,
               context_size=32, dataset_path="wiki-vital")
PARAMS = {"topk": {"k": 4}, "batchtopk": {"k": 4}, "matryoshka": {"k": 4},
          "atm": {"warmup_steps": 3, "beta": 0.9}}


def randomized_sae(variant: str, seed: int = 0):
    """A variant whose every parameter and buffer holds random (non-default) values."""
    sae = build_sae(variant, build_config(variant, PARAMS.get(variant, {}), D, F))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sae.state_dict().items():
            if t.dtype == torch.bool:
                t.fill_(True)
            elif t.dtype == torch.long:
                t.fill_(7)
            elif name in ("threshold", "log_threshold") or name.startswith("ema_"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 - (name == "log_threshold") * 3)
            else:
                t.copy_(torch.randn(t.shape, generator=g))
    return sae.eval()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_round_trip_every_variant(tmp_path, variant):
    sae = randomized_sae(variant)
    save_sae(sae, tmp_path, META, input_scale_folded=2.5)
    loaded = load_sae(tmp_path)
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    assert not loaded.training
    own, back = sae.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys()
    for name in own:
        assert torch.equal(own[name], back[name]), name
    for name, t in sae.inference_tensors().items():
        assert torch.equal(t, loaded.inference_tensors()[name]), name
    x = torch.randn(50, D, generator=torch.Generator().manual_seed(1)) * 3
    f = sae.encode(x)
    assert (f != 0).any() and (f == 0).any()  # the comparison exercises the sparsity
    assert torch.equal(f, loaded.encode(x))
    assert torch.equal(sae(x), loaded(x))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_saelens_layout(tmp_path, variant):
    sae = randomized_sae(variant)
    save_sae(sae, tmp_path, META, input_scale_folded=2.5, extra={"seed": 3})
    cfg = json.loads((tmp_path / SAE_CFG).read_text())
    weights = load_file(tmp_path / SAE_WEIGHTS)
    # exactly the inference tensors, SAELens names and shapes (its loader is strict)
    assert set(weights) == set(sae.inference_tensors())
    assert weights["W_enc"].shape == (D, F) and weights["W_dec"].shape == (F, D)
    assert weights["b_enc"].shape == (F,) and weights["b_dec"].shape == (D,)
    assert cfg["architecture"] == sae.saelens_architecture
    assert ("threshold" in weights) == (cfg["architecture"] == "jumprelu")
    if "threshold" in weights:
        assert weights["threshold"].shape == (F,)
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (D, F, "float32")
    assert cfg["apply_b_dec_to_input"] is sae.subtract_b_dec
    assert cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["sae_lens_version"] == SAELENS_FORMAT_VERSION
    for key in ("model_name", "hook_name", "context_size", "dataset_path"):
        assert cfg["metadata"][key] == cfg[key] == getattr(META, key)
    assert cfg["hook_layer"] == 1
    if cfg["architecture"] == "topk":
        assert cfg["k"] == 4
    block = cfg["atm_repro"]
    assert block["variant"] == variant and block["input_scale_folded"] == 2.5
    assert block["config"]["d_sae"] == F and block["seed"] == 3 and "+" in block["code_version"]
    # non-inference state (EMAs, log-threshold, scalar threshold) only in our extra file
    extra = tmp_path / EXTRA_STATE
    if extra.exists():
        assert not set(load_file(extra)) & {"W_enc", "W_dec", "b_enc", "b_dec"}


def _write_saelens_dir(path, arch, apply_b_dec, tensors, **cfg_extra):
    path.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / SAE_WEIGHTS)
    cfg = {"architecture": arch, "d_in": D, "d_sae": F, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.1.hook_resid_post"},
           **cfg_extra}
    (path / SAE_CFG).write_text(json.dumps(cfg))


@pytest.mark.parametrize("arch,apply_b_dec", [("standard", True), ("standard", False),
                                              ("topk", False), ("topk", True),
                                              ("jumprelu", False)])
def test_loads_plain_saelens_dirs(tmp_path, arch, apply_b_dec):
    """SAELens semantics: z = (x - b_dec * apply) W_enc + b_enc; relu / topk+relu /
    relu(z) * (z > threshold); x_hat = f W_dec + b_dec."""
    g = torch.Generator().manual_seed(0)
    t = {"W_enc": torch.randn(D, F, generator=g), "W_dec": torch.randn(F, D, generator=g),
         "b_enc": torch.randn(F, generator=g), "b_dec": torch.randn(D, generator=g)}
    extra = {"k": 5} if arch == "topk" else {}
    if arch == "jumprelu":
        t["threshold"] = torch.rand(F, generator=g)
    _write_saelens_dir(tmp_path / "sae", arch, apply_b_dec, t, **extra)
    sae = load_sae(tmp_path / "sae")
    assert sae.architecture == arch
    x = torch.randn(40, D, generator=g)
    z = (x - t["b_dec"] * apply_b_dec) @ t["W_enc"] + t["b_enc"]
    if arch == "standard":
        f = z.relu()
    elif arch == "topk":
        vals, idx = z.topk(5, dim=-1)
        f = torch.zeros_like(z).scatter(-1, idx, vals.relu())
    else:
        f = z.relu() * (z > t["threshold"])
    assert (f != 0).any() and (f == 0).any()
    torch.testing.assert_close(sae.encode(x), f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x), f @ t["W_dec"] + t["b_dec"], atol=1e-4, rtol=1e-5)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved SAE"):
        load_sae(tmp_path)
    g = torch.Generator().manual_seed(0)
    t = {"W_enc": torch.randn(D, F, generator=g), "W_dec": torch.randn(F, D, generator=g),
         "b_enc": torch.zeros(F), "b_dec": torch.zeros(D)}
    _write_saelens_dir(tmp_path / "gated", "gated", True, t)
    with pytest.raises(SAEConfigError, match="not supported"):
        load_sae(tmp_path / "gated")
    _write_saelens_dir(tmp_path / "norm", "standard", True, t,
                       normalize_activations="expected_average_only_in")
    with pytest.raises(SAEConfigError, match="normalize_activations"):
        load_sae(tmp_path / "norm")
    _write_saelens_dir(tmp_path / "jr", "jumprelu", False, t)  # threshold missing
    with pytest.raises(SAEConfigError, match="threshold"):
        load_sae(tmp_path / "jr")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fold_gives_unit_norm_decoder_and_same_reconstruction(variant):
    """An SAE trained on s * x, folded, reconstructs raw x exactly as before, with
    unit-norm decoder rows (what SAEBench assumes) and latents rescaled per latent."""
    sae = randomized_sae(variant, seed=3)
    if not sae.elementwise_activation:  # the TopK family trains with unit-norm rows
        sae.normalize_decoder()
    with torch.no_grad():  # thresholds small enough that every variant fires
        for name in ("threshold", "log_threshold"):
            if hasattr(sae, name):
                getattr(sae, name).fill_(-4.0 if name == "log_threshold" else 0.05)
    s = 7.5
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(4)) * 3
    f_before = sae.encode(s * x)
    x_hat_before = sae(s * x) / s
    norm_F = sae.W_dec.norm(dim=-1).detach().clone()
    folded = build_sae(variant, sae.cfg)
    folded.load_state_dict(sae.state_dict())
    folded.eval().fold_input_scale(s)
    assert torch.allclose(folded.W_dec.norm(dim=-1), torch.ones(F), atol=1e-6)
    f_after = folded.encode(x)
    assert (f_before > 0).any() and torch.equal(f_before > 0, f_after > 0)
    expect = f_before * norm_F / s if sae.elementwise_activation else f_before / s
    assert torch.allclose(f_after, expect, rtol=1e-4, atol=1e-5)
    assert torch.allclose(folded(x), x_hat_before, rtol=1e-4, atol=1e-4)
