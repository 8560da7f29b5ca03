"""atm_repro.cache: the activation cache: contents, resume, checks, reuse, typed manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import TINY_OVERRIDES, forbid_model_load

from atm_repro import cache as cache_mod
from atm_repro import corpus, models
from atm_repro.cache import ActivationCache, CacheError, build_cache, capture_residuals, mask_tokens
from atm_repro.config import ModelConfig
from atm_repro.profiles import load_profile


def test_mask_tokens_exempts_bos_and_is_seeded():
    toks = np.arange(2000 * 16, dtype=np.int32).reshape(2000, 16) + 10
    a = mask_tokens(toks, 0.3, mask_id=4, seed=1)
    assert np.array_equal(a, mask_tokens(toks, 0.3, mask_id=4, seed=1))
    assert (a[:, 0] == toks[:, 0]).all()
    rate = (a[:, 1:] == 4).mean()
    assert 0.28 < rate < 0.32


def test_cached_activations_match_output_hidden_states(tiny_profile):
    path = build_cache(tiny_profile, progress=False)
    cache = ActivationCache.open(path)
    texts = corpus.load_articles(tiny_profile.corpus)
    loaded = models.load_model(tiny_profile.model, corpus_texts=texts)
    tokens = torch.from_numpy(cache.tokens("train")[:8].astype(np.int64))
    with torch.no_grad():
        hidden = loaded.model(input_ids=tokens, output_hidden_states=True).hidden_states
    for layer in tiny_profile.cache.layers:
        expected = hidden[layer + 1][:, 1:].reshape(-1, loaded.d_model).numpy()
        got = cache.source(layer).gather(np.arange(len(expected)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert cache.manifest.hooks["1"] == "blocks.1.hook_resid_post"
    assert cache.n_tokens("train") == len(cache.source(1))


def test_truncated_forward_stops_at_deepest_layer(tiny_profile):
    texts = corpus.load_articles(tiny_profile.corpus)
    loaded = models.load_model(tiny_profile.model, corpus_texts=texts)
    called = []
    handle = loaded.layers[2].register_forward_hook(lambda *a: called.append(2))
    try:
        capture_residuals(loaded, torch.tensor([[2, 10, 11, 12]]), [0, 1])
    finally:
        handle.remove()
    assert called == []
    with pytest.raises(ValueError, match="out of range"):
        capture_residuals(loaded, torch.tensor([[2, 10]]), [4])


def test_interrupted_cache_resumes_byte_identical(tiny_profile, runs_dir, monkeypatch):
    full = build_cache(tiny_profile, progress=False)
    ref = {p.name: p.read_bytes() for p in full.glob("*.npy")}
    ref_manifest = json.loads((full / "manifest.json").read_text())
    # Rebuild from scratch into a fresh runs dir, interrupted after two shards.
    monkeypatch.setenv("ATM_REPRO_RUNS", str(runs_dir.parent / "runs2"))
    part = build_cache(tiny_profile, progress=False, max_new_shards=2)
    assert not json.loads((part / "manifest.json").read_text())["complete"]
    with pytest.raises(CacheError, match="incomplete"):
        ActivationCache.open(part)
    build_cache(tiny_profile, progress=False)
    got = {p.name: p.read_bytes() for p in part.glob("*.npy")}
    assert got.keys() == ref.keys() and all(got[k] == ref[k] for k in ref)
    assert json.loads((part / "manifest.json").read_text())["shards"] == ref_manifest["shards"]


def test_corrupt_shard_is_named(tiny_profile):
    path = build_cache(tiny_profile, progress=False)
    shard = path / "train_L1_00001.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="train_L1_00001.npy fails its sha256"):
        ActivationCache.open(path)


def test_masked_cache_is_separate_and_masks_inputs(tiny_profile):
    clean = ActivationCache.open(build_cache(tiny_profile, progress=False))
    masked = ActivationCache.open(build_cache(tiny_profile, masked=True, progress=False))
    assert clean.path != masked.path
    t_clean, t_masked = clean.tokens("train"), masked.tokens("train")
    hit = t_clean != t_masked
    assert not hit[:, 0].any() and 0.2 < hit[:, 1:].mean() < 0.4
    assert masked.manifest.token_mask_prob == tiny_profile.cache.token_mask_prob
    assert masked.layers == [tiny_profile.train.layer] and clean.layers == [1, 2]


def test_float16_overflow_is_an_error(tiny_profile, monkeypatch):
    def huge(loaded, ids, layers, attention_mask_BS=None):
        return {layer: torch.full((*ids.shape, loaded.d_model), 1e6) for layer in layers}

    monkeypatch.setattr(cache_mod, "capture_residuals", huge)
    profile = load_profile("smoke", {**TINY_OVERRIDES, "cache.dtype": "float16"})
    with pytest.raises(CacheError, match="beyond float16's range"):
        build_cache(profile, progress=False)


def test_cache_is_reused_when_unchanged(tiny_profile, monkeypatch):
    path = build_cache(tiny_profile, progress=False)
    forbid_model_load(monkeypatch)
    assert build_cache(tiny_profile, progress=False) == path


@pytest.mark.slow
def test_real_gemma_3_270m_loads_and_caches_consistently():
    loaded = models.load_model(ModelConfig(name="gemma-3-270m"))
    assert (loaded.n_layers, loaded.d_model) == (18, 640)
    assert loaded.tokenizer.mask_token_id is not None
    ids = loaded.tokenizer("The capital of France is Paris.", return_tensors="pt")["input_ids"]
    assert ids[0, 0] == loaded.tokenizer.bos_token_id
    res = capture_residuals(loaded, ids, [4, 8])
    with torch.no_grad():
        hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in (4, 8):
        torch.testing.assert_close(res[layer], hidden[layer + 1], rtol=1e-4, atol=1e-4)


def test_bfloat16_cache_round_trips_within_bfloat16_rounding(tiny_profile):
    """A bfloat16 cache stores 2 bytes a value and reads back float32 rows that are the
    float32 cache's rows rounded to bfloat16 (nearest, ties to even), huge values
    included (bfloat16 has float32's range)."""
    f32 = ActivationCache.open(build_cache(tiny_profile, progress=False))
    profile = load_profile("smoke", {**TINY_OVERRIDES, "cache.dtype": "bfloat16"})
    b16 = ActivationCache.open(build_cache(profile, progress=False))
    assert b16.path != f32.path and b16.manifest.dtype == "bfloat16"
    for layer in tiny_profile.cache.layers:
        name = f"train_L{layer}_00000.npy"
        stored = np.load(b16.path / name, mmap_mode="r")
        assert stored.dtype == np.uint16
        assert (b16.path / name).stat().st_size < 0.55 * (f32.path / name).stat().st_size
        idx = np.random.default_rng(0).permutation(len(f32.source(layer)))[:300]
        exact, got = f32.source(layer).gather(idx), b16.source(layer).gather(idx)
        assert got.dtype == np.float32 and got.shape == exact.shape
        rounded = torch.from_numpy(exact).to(torch.bfloat16).float().numpy()
        np.testing.assert_array_equal(got, rounded)
        rel = np.abs(got - exact) / np.maximum(np.abs(exact), 1e-30)
        assert rel.max() <= 2.0 ** -8 and rel.max() > 0  # bfloat16: 8 significant bits
    big = np.array([[1.0e5, -1.5 * 2.0**127, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8]], dtype=np.float32)
    back = cache_mod.from_storage(cache_mod.to_storage(big, "bfloat16"))
    # 1e5 to 8 bits; an exact value stays; two ties go to the even neighbour
    np.testing.assert_array_equal(back, [[99840.0, -1.5 * 2.0**127, 1.0, 1.0 + 2.0**-6]])
