"""Core metrics: hand-computed values on tiny tensors, streaming == one-shot,
identity / zero splices into tiny-gemma3, the runner on a tiny cache, determinism."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from helpers import IdentitySAE

from atm_repro import metrics
from atm_repro.cache import ActivationCache, build_cache
from atm_repro.config import CorpusConfig, ModelConfig, Profile, from_dict
from atm_repro.corpus import load_articles
from atm_repro.evals.core import (
    CoreConfig,
    _float32_head,
    density_histogram,
    next_token_log_probs,
    run_core,
    splice_baseline,
    splice_metrics,
    splice_sequences,
)
from atm_repro.evals.results import read_result, result_path, write_result
from atm_repro.models import load_model
from atm_repro.sae_metrics import CoreStats, core_metrics
from atm_repro.saes.base import SAE, SAEConfig

LAYER = 1


def relu_sae(d: int, f: int, seed: int = 0) -> SAE:
    sae = SAE(SAEConfig(d, f))
    sae.init_weights(torch.Generator().manual_seed(seed))
    return sae


# ------------------------------------------------------------ pure metrics


def test_perfect_reconstruction_and_mean():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    f = torch.rand(50, 4)
    perfect = core_metrics(x, x.clone(), f)
    assert perfect["explained_variance"] == pytest.approx(1.0, abs=1e-12)
    assert perfect["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["cosine_similarity"] == pytest.approx(1.0, abs=1e-9)
    mean = core_metrics(x, x.mean(0, keepdim=True).expand_as(x), f)
    assert mean["explained_variance"] == pytest.approx(0.0, abs=1e-9)
    assert mean["fvu"] == pytest.approx(1.0, abs=1e-9)


def test_mse_fvu_cosine_by_hand():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    # errors: ||(0,-1)||^2 = 1, ||(0,2)||^2 = 4 -> sum 5; mean(x) = (2, 1);
    # sum ||x - mean||^2 = (1 + 1) + (1 + 1) = 4
    m = core_metrics(x, x_hat, torch.zeros(2, 3))
    assert m["mse"] == pytest.approx(2.5)
    assert m["mse_per_element"] == pytest.approx(1.25)
    assert m["fvu"] == pytest.approx(5 / 4)
    assert m["explained_variance"] == pytest.approx(-0.25)
    cos = (1 / math.sqrt(2) + 9 / (math.sqrt(13) * 3)) / 2
    assert m["cosine_similarity"] == pytest.approx(cos)


def test_sparsity_and_density_by_hand():
    # 10 tokens, 4 latents: latent 0 always, latent 1 once, latent 2 never, latent 3 twice.
    f = torch.zeros(10, 4)
    f[:, 0] = 0.5
    f[3, 1] = 2.0
    f[[1, 7], 3] = 1.0
    x = torch.randn(10, 3)
    m = core_metrics(x, x, f)
    assert m["l0"] == pytest.approx((10 + 1 + 2) / 10)
    assert m["l1"] == pytest.approx((5.0 + 2.0 + 2.0) / 10)
    assert m["frac_dead"] == pytest.approx(0.25)
    assert m["frac_dense"] == pytest.approx(0.5)  # latent 0 (1.0) and 3 (0.2) > 0.1; 1 is 0.1
    stats = CoreStats(4).update(x, x, f)
    assert np.allclose(stats.density_F, [1.0, 0.1, 0.0, 0.2])
    hist = density_histogram(stats.density_F, n_bins=7, log10_min=-7.0)
    assert hist["n_dead"] == 1 and sum(hist["counts"]) == 3
    assert hist["counts"][-1] == 3  # log10 densities 0, -1, -0.7 all fall in [-1, 0]
    # a threshold above zero counts small activations as silent
    assert core_metrics(x, x, f, fire_eps=0.6)["l0"] == pytest.approx(0.3)


def test_streaming_equals_one_shot():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(97, 5, generator=gen) * 30 + 200  # large offset: variance merge must hold
    x_hat = x + torch.randn(97, 5, generator=gen)
    f = torch.relu(torch.randn(97, 8, generator=gen))
    stats = CoreStats(8)
    for start in range(0, 97, 10):
        stats.update(x[start:start + 10], x_hat[start:start + 10], f[start:start + 10])
    streamed, whole = stats.compute(), core_metrics(x, x_hat, f)
    for key, value in whole.items():
        assert streamed[key] == pytest.approx(value, rel=1e-10), key


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match="latents"):
        core_metrics(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="x_hat"):
        core_metrics(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError):
        CoreConfig(dense_threshold=1.5)


# ------------------------------------------------------------ model splice


@pytest.fixture(scope="module")
def loaded():
    return load_model(ModelConfig(), corpus_texts=load_articles(CorpusConfig(max_articles=200)))


@pytest.fixture(scope="module")
def cache(loaded, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ATM_REPRO_RUNS", str(tmp_path_factory.mktemp("runs")))
    profile = from_dict(Profile, {
        "name": "core-test",
        "corpus": {"context": 16, "max_articles": 200},
        "cache": {"layers": [LAYER], "train_tokens": 100, "eval_tokens": 100,
                  "batch_size": 8, "shard_sequences": 8},
        "train": {"layer": LAYER},
    })
    path = build_cache(profile, loaded=loaded, progress=False)
    mp.undo()
    return ActivationCache.open(path)


@pytest.fixture(scope="module")
def baseline(loaded, cache):
    return splice_baseline(loaded, cache.tokens("eval")[:4], LAYER, batch_size=4)


@pytest.mark.parametrize("cap", [None, 5.0])
def test_head_matches_the_model_forward(loaded, cache, cap):
    ids = torch.from_numpy(cache.tokens("eval")[:2].astype(np.int64))
    old = loaded.model.config.final_logit_softcapping
    loaded.model.config.final_logit_softcapping = cap
    try:
        with torch.no_grad():
            want = torch.log_softmax(loaded.model(input_ids=ids).logits[:, :-1], -1)
            got = next_token_log_probs(loaded, loaded.model.model(input_ids=ids).last_hidden_state)
    finally:
        loaded.model.config.final_logit_softcapping = old
    assert torch.allclose(got, want, atol=1e-5)


def test_identity_splice_is_clean_and_zero_differs(loaded, baseline):
    m = splice_metrics(IdentitySAE(loaded.d_model), loaded, baseline)
    assert m["ce_sae"] == pytest.approx(m["ce_clean"], abs=1e-6)
    assert m["kl_div"] == pytest.approx(0.0, abs=1e-6)
    assert m["ce_loss_score"] == pytest.approx(1.0, abs=1e-5)
    assert abs(m["ce_zero"] - m["ce_clean"]) > 1e-3
    assert m["n_splice_tokens"] == 4 * (baseline.tokens_NS.shape[1] - 2)  # BOS input excluded


def test_clean_ce_matches_the_model_loss(loaded, baseline):
    ids = torch.from_numpy(baseline.tokens_NS.astype(np.int64))
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits[:, 1:-1]  # inputs 1.., no BOS input
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           ids[:, 2:].reshape(-1))
    assert baseline.ce_clean == pytest.approx(float(ce), abs=1e-5)


def test_random_sae_splice_is_worse_than_clean(loaded, baseline):
    m = splice_metrics(relu_sae(loaded.d_model, 32), loaded, baseline)
    assert m["kl_div"] > 1e-4
    assert m["delta_ce"] == pytest.approx(m["ce_sae"] - m["ce_clean"])
    assert m["ce_clean"] == baseline.ce_clean and m["ce_zero"] == baseline.ce_zero


def test_splice_kl_matches_a_direct_computation(loaded, cache):
    """KL(P_clean || P_sae) from the baseline's kept clean log-probs equals the one
    from two plain model forwards (with the SAE put in by hand), over several
    batches, so a kept batch paired with the wrong SAE batch would show."""
    tokens = cache.tokens("eval")[:4]
    baseline = splice_baseline(loaded, tokens, LAYER, batch_size=1)
    sae = relu_sae(loaded.d_model, 32)
    ids = torch.from_numpy(tokens.astype(np.int64))
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, 0] = False                                   # BOS keeps its residual

    def put_sae(_module, _args, output):
        resid = output[0] if isinstance(output, tuple) else output
        new = torch.where(keep.unsqueeze(-1), sae(resid.float()).to(resid.dtype), resid)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    with torch.no_grad():
        lp_clean = torch.log_softmax(loaded.model(input_ids=ids).logits[:, 1:-1].float(), -1)
        handle = loaded.layers[LAYER].register_forward_hook(put_sae)
        try:
            lp_sae = torch.log_softmax(loaded.model(input_ids=ids).logits[:, 1:-1].float(), -1)
        finally:
            handle.remove()
    want = float((lp_clean.exp() * (lp_clean - lp_sae)).sum(-1).mean())
    assert want > 1e-4
    assert splice_metrics(sae, loaded, baseline)["kl_div"] == pytest.approx(want, rel=1e-4)


def test_splice_rejects_bad_layer_and_width(loaded, cache, baseline):
    with pytest.raises(ValueError, match="out of range"):
        splice_baseline(loaded, cache.tokens("eval")[:2], 9)
    with pytest.raises(ValueError, match="d_in"):
        splice_metrics(IdentitySAE(8), loaded, baseline)


def test_run_core_identity_and_determinism(loaded, cache, tmp_path):
    cfg = CoreConfig(n_tokens=64, batch_size=16, n_splice_sequences=3, splice_batch_size=3)
    ident = run_core(IdentitySAE(loaded.d_model), loaded, cache, LAYER, cfg, "identity")
    assert ident.eval_name == "core"
    assert ident.metrics["n_tokens"] == 64
    assert ident.metrics["explained_variance"] == pytest.approx(1.0, abs=1e-9)
    assert ident.metrics["ce_loss_score"] == pytest.approx(1.0, abs=1e-5)
    declared = {m.name for m in metrics.METRICS.values() if m.eval == metrics.CORE}
    assert declared <= set(ident.metrics)  # every declared core metric is emitted

    sae = relu_sae(loaded.d_model, 48, seed=3)
    a = run_core(sae, loaded, cache, LAYER, cfg, "relu")
    b = run_core(sae, loaded, cache, LAYER, cfg, "relu")
    assert a.metrics == b.metrics
    assert a.details == b.details
    assert a.metrics["explained_variance"] < 1.0
    hist = a.details["density_histogram"]
    assert sum(hist["counts"]) + hist["n_dead"] == 48
    assert hist["n_dead"] / 48 == pytest.approx(a.metrics["frac_dead"])

    shared = splice_baseline(loaded, splice_sequences(cache, cfg), LAYER, 3)
    c = run_core(sae, loaded, cache, LAYER, cfg, "relu", baseline=shared)
    assert c.metrics == a.metrics

    write_result(tmp_path, a)
    saved = read_result(result_path(tmp_path, "relu", "core"))
    assert saved["metrics"]["l0"] == pytest.approx(a.metrics["l0"])


def test_run_core_rejects_a_foreign_baseline(loaded, cache, baseline):
    cfg = CoreConfig(n_tokens=16, n_splice_sequences=3)
    with pytest.raises(ValueError, match="baseline"):
        run_core(IdentitySAE(loaded.d_model), loaded, cache, LAYER, cfg, "x", baseline=baseline)


def test_run_core_rejects_wrong_width(loaded, cache):
    with pytest.raises(ValueError, match="d_model"):
        run_core(IdentitySAE(8), loaded, cache, LAYER, CoreConfig(), "bad")


def test_head_runs_in_float32_for_a_bfloat16_model(loaded, cache):
    # a bfloat16 head matmul is 6x slower on CPU (docs/benchmarks.md) and rounds the
    # logits to 3 digits: the log-probs must be those of the float32 head
    bf16 = copy.deepcopy(loaded)
    bf16.model.to(torch.bfloat16)
    ids = torch.from_numpy(cache.tokens("eval")[:2].astype(np.int64))
    with torch.no_grad():
        hidden = bf16.model.model(input_ids=ids).last_hidden_state
        got = next_token_log_probs(bf16, hidden)
        w = bf16.model.get_output_embeddings().weight
        want = torch.log_softmax(torch.nn.functional.linear(hidden[:, :-1].float(), w.float()), -1)
    assert hidden.dtype == torch.bfloat16 and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # cast once per model, renewed when the weights change dtype
    assert _float32_head(bf16)[0] is _float32_head(bf16)[0]
    bf16.model.to(torch.float32)
    assert _float32_head(bf16)[0] is bf16.model.get_output_embeddings().weight
