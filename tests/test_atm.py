"""ATM SAE: EMA arithmetic, importance, threshold, mask probability, floor,
warmup, gradient isolation of masked latents, determinism, config checks."""

from __future__ import annotations

import math

import pytest
import torch

from atm_repro.saes.atm import (
    ATMSAE,
    ATMConfig,
    apply_retention_floor,
    contribution,
    draw_masked,
    ema_update,
    firing_statistics,
    importance_scores,
    importance_threshold,
    mask_probability,
    max_masked,
)
from atm_repro.saes.base import SAEConfigError, StepContext

D, F = 8, 16


def make_sae(d_in: int = D, d_sae: int = F, seed: int = 0, **kw) -> ATMSAE:
    sae = ATMSAE(ATMConfig(d_in=d_in, d_sae=d_sae, **kw))
    sae.init_weights(torch.Generator().manual_seed(seed))
    return sae


def ctx(step: int = 0, total: int = 100, seed: int = 0, gen: torch.Generator | None = None):
    gen = gen if gen is not None else torch.Generator().manual_seed(seed)
    return StepContext(step=step, total_steps=total,
                       dead_mask_F=torch.zeros(F, dtype=torch.bool), generator=gen)


def data(B: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, D, generator=torch.Generator().manual_seed(seed))


def batch_statistics(f: torch.Tensor, grad: torch.Tensor):
    """(m, q, g) of a batch from per-token gradients dl_b/df_b (the docstring's
    definition: g is the batch mean of |f dl_b/df_b|)."""
    return (*firing_statistics(f), contribution(f, grad) / f.shape[0])


def update(sae: ATMSAE, f: torch.Tensor, grad: torch.Tensor) -> None:
    sae.update_state(*batch_statistics(f, grad))


def primed(**kw) -> ATMSAE:
    """An SAE after one training step's backward pass, so its EMA state (which
    the masks of later steps read) exists; gradients cleared."""
    sae = make_sae(**kw)
    sae.training_forward(data(seed=5), ctx(step=0)).loss.backward()
    sae.zero_grad(set_to_none=True)
    return sae


# ----------------------------------------------------------------- EMA state
def hand_batch():
    f = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    grad = torch.tensor([[2.0, 0.0, 2.0], [0.0, -2.0, -2.0]])  # per-token dl/df
    return f, grad


def test_batch_statistics_by_hand():
    f, grad = hand_batch()
    m, q, g = batch_statistics(f, grad)
    # |f * dl/df| = [[2, 0, 4], [0, 0, 0]]
    assert torch.equal(m, torch.tensor([2.0, 0.0, 1.0]))
    assert torch.equal(q, torch.tensor([1.0, 0.0, 0.5]))
    assert torch.equal(g, torch.tensor([1.0, 0.0, 2.0]))


def test_ema_update_rule():
    s = torch.tensor([4.0, 8.0])
    b = torch.tensor([2.0, 0.0])
    assert torch.equal(ema_update(s, b, 0.75, initialized=False), b)  # first batch copied
    assert torch.equal(ema_update(s, b, 0.75, initialized=True), torch.tensor([3.5, 6.0]))


def test_ema_zero_start_is_bias_free_after_normalisation():
    f, grad = hand_batch()
    zero = ATMSAE(ATMConfig(d_in=2, d_sae=3, beta=0.9))
    first = ATMSAE(ATMConfig(d_in=2, d_sae=3, beta=0.9, ema_start="first_batch"))
    for sae in (zero, first):
        update(sae, f, grad)
    # zero start: (1 - beta) * batch, every signal of every latent alike ...
    assert torch.allclose(zero.ema_magnitude, 0.1 * torch.tensor([2.0, 0.0, 1.0]))
    assert torch.allclose(zero.ema_contribution, 0.1 * torch.tensor([1.0, 0.0, 2.0]))
    # ... so the importance equals the bias-corrected (here: first-batch) one
    assert torch.allclose(zero.importance(), first.importance(), rtol=1e-6)
    f2 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    for sae in (zero, first):
        update(sae, f2, torch.ones(2, 3))
    # after two batches they differ: the copied first batch weighs beta, not beta / (1 + beta)
    corrected = (0.9 * 0.1 * torch.tensor([2.0, 0.0, 1.0]) + 0.1 * torch.tensor([0.0, 1.0, 0.5]))
    assert torch.allclose(zero.ema_magnitude, corrected)
    assert torch.allclose(first.ema_magnitude,
                          0.9 * torch.tensor([2.0, 0.0, 1.0]) + 0.1 * torch.tensor([0.0, 1.0, 0.5]))
    assert not torch.allclose(zero.importance(), first.importance())


def test_ema_state_after_one_and_two_updates():
    f, grad = hand_batch()
    sae = ATMSAE(ATMConfig(d_in=2, d_sae=3, beta=0.5, ema_start="first_batch"))
    update(sae, f, grad)
    assert int(sae.ema_updates) == 1
    assert torch.equal(sae.ema_magnitude, torch.tensor([2.0, 0.0, 1.0]))
    assert torch.equal(sae.ema_frequency, torch.tensor([1.0, 0.0, 0.5]))
    assert torch.equal(sae.ema_contribution, torch.tensor([1.0, 0.0, 2.0]))
    # second batch: only latent 1 fires, perfect reconstruction (g = 0)
    f2 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    update(sae, f2, torch.zeros(2, 3))
    assert int(sae.ema_updates) == 2
    assert torch.equal(sae.ema_magnitude, torch.tensor([1.0, 0.5, 0.5]))
    assert torch.equal(sae.ema_frequency, torch.tensor([0.5, 0.5, 0.25]))
    assert torch.equal(sae.ema_contribution, torch.tensor([0.5, 0.0, 1.0]))


@pytest.mark.parametrize("masked_g", ["restored", "masked"])
def test_backward_updates_ema_from_unmasked_latents_and_trained_gradient(masked_g):
    sae = primed(warmup_steps=0, r=50.0, c=0.0, min_keep=0.1, beta=0.5, masked_g=masked_g)
    before = [sae.ema_magnitude.clone(), sae.ema_frequency.clone(), sae.ema_contribution.clone()]
    x = data()
    f = sae.encode(x).detach()
    out = sae.training_forward(x, ctx(step=1))
    assert out.terms["masked_frac"] > 0  # masking happened ...
    assert int(sae.ema_updates) == 1  # ... and the forward alone changed no state
    masked_BF = (out.latents_BF == 0) & (f > 0)
    assert bool(masked_BF.any())
    # per-token gradient of ||x - x_hat||^2 w.r.t. each latent, by autograd on a
    # reconstruction built latent by latent: x_hat the trained (masked) one, plus,
    # for "restored", the latent's own contribution added back where it was masked
    W = sae.W_dec.detach()
    x_hat = out.x_hat_BD.detach()
    grad = torch.empty_like(f)
    for i in range(F):
        coef = f[:, i].clone().requires_grad_(True)
        own = masked_BF[:, i] if masked_g == "restored" else torch.zeros_like(masked_BF[:, i])
        rec = x_hat + (coef * own.float())[:, None] * W[i]  # latent i restored where masked
        ((rec - x) ** 2).sum().backward()
        grad[:, i] = torch.where(own, coef.grad, 2.0 * (x_hat - x) @ W[i])
    m, q, g = batch_statistics(f, grad)
    out.loss.backward()
    assert int(sae.ema_updates) == 2
    for state, old, new in zip((sae.ema_magnitude, sae.ema_frequency, sae.ema_contribution),
                               before, (m, q, g)):
        assert torch.allclose(state, 0.5 * old + 0.5 * new, rtol=1e-5, atol=1e-7)
    masked = (out.latents_BF == 0).all(0) & (f > 0).any(0)
    assert bool(masked.any()) and bool((g[masked] > 0).all())  # masked ones still measured
    # the two readings differ exactly by the masked latents' own missing term
    raw = 2.0 * (x_hat - x) @ W.T
    g_raw = batch_statistics(f, raw)[2]
    assert torch.allclose(g[~masked], g_raw[~masked], rtol=1e-5, atol=1e-7)
    assert (masked_g == "masked") == bool(torch.allclose(g, g_raw, rtol=1e-5, atol=1e-7))


def test_no_state_no_mask_on_the_first_step():
    sae = make_sae(warmup_steps=0, r=1e4, c=10.0, min_keep=0.1)
    x = data()
    out = sae.training_forward(x, ctx(step=0))
    assert float(out.terms["masked_frac"]) == 0.0 and torch.equal(out.latents_BF, sae.encode(x))


def test_ema_state_is_in_state_dict_not_inference_tensors():
    sae = make_sae()
    keys = set(sae.state_dict())
    assert {"ema_magnitude", "ema_frequency", "ema_contribution", "ema_updates"} <= keys
    assert set(sae.inference_tensors()) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    assert ATMSAE.architecture == "atm" and ATMSAE.saelens_architecture == "standard"
    assert not ATMSAE.subtract_b_dec


# ---------------------------------------------------------- importance etc.
def test_importance_by_hand():
    m, q, g = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]), torch.tensor([0.0, 4.0])
    # normalised: m [0.5, 1.5], q [1, 1], g [0, 2]
    assert torch.allclose(importance_scores(m, q, g, "sum"), torch.tensor([1.5, 4.5]))
    assert torch.allclose(importance_scores(m, q, g, "product"), torch.tensor([0.0, 3.0]))


@pytest.mark.parametrize("mode", ["sum", "product"])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_importance_invariant_to_signal_scale(mode, which):
    gen = torch.Generator().manual_seed(3)
    sig = [torch.rand(F, generator=gen) for _ in range(3)]
    ref = importance_scores(*sig, mode=mode)
    sig[which] = sig[which] * 37.5
    assert torch.allclose(importance_scores(*sig, mode=mode), ref, rtol=1e-5)


def test_importance_all_zero_signal_is_finite():
    z = torch.zeros(4)
    I = importance_scores(z, z, z, "sum")
    assert torch.equal(I, z)
    assert torch.equal(mask_probability(I, importance_threshold(I, 1.0), 0.5), z)  # theta = 0


def test_threshold_mean_plus_c_std():
    I = torch.tensor([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population std sqrt(1.25)
    assert math.isclose(float(importance_threshold(I, 1.0)), 2.5 + math.sqrt(1.25), rel_tol=1e-6)
    theta2 = float(importance_threshold(I, 2.0))
    assert math.isclose(theta2, 2.5 + 2 * math.sqrt(1.25), rel_tol=1e-6)
    assert float(importance_threshold(I, 0.0)) == 2.5


def test_mask_probability_values():
    I = torch.tensor([0.0, 1.0, 2.0, 3.0])
    p = mask_probability(I, 2.0, 0.5)
    expect = torch.tensor([1 - math.exp(-0.5), 1 - math.exp(-0.25), 0.0, 0.0])
    assert torch.allclose(p, expect)
    assert p[2] == 0 and p[3] == 0  # at and above theta


@pytest.mark.parametrize("r", [0.01, 0.5, 5.0, 1e4])
def test_mask_probability_in_unit_interval(r):
    I = torch.rand(100, generator=torch.Generator().manual_seed(0)) * 3
    theta = importance_threshold(I, 1.0)
    p = mask_probability(I, theta, r)
    assert bool((p >= 0).all()) and bool((p < 1).all())
    assert bool((p[I >= theta] == 0).all()) and bool((p[I < theta] > 0).all())


def test_mask_probability_zero_when_theta_not_positive():
    I = torch.tensor([0.0, 1.0])
    assert torch.equal(mask_probability(I, 0.0, 0.5), torch.zeros(2))
    assert torch.equal(mask_probability(I, -1.0, 0.5), torch.zeros(2))


# ------------------------------------------------------------------- floor
def test_max_masked():
    assert max_masked(10, 0.5) == 5
    assert max_masked(7, 0.5) == 3  # keep ceil(3.5) = 4
    assert max_masked(10, 1.0) == 0
    assert max_masked(10, 0.3) == 7


def test_floor_unmasks_most_important():
    I = torch.tensor([5.0, 0.1, 9.0, 3.0, 7.0, 0.5, 2.0, 8.0, 1.0, 6.0])
    masked = torch.ones(1, 10, dtype=torch.bool)
    out = apply_retention_floor(masked, I, 0.5)
    kept = set(torch.nonzero(~out[0]).flatten().tolist())
    assert kept == set(torch.topk(I, 5).indices.tolist())  # the 5 most important survive
    # a draw already within the floor is untouched
    few = torch.zeros(1, 10, dtype=torch.bool)
    few[0, [2, 4, 7]] = True
    assert torch.equal(apply_retention_floor(few, I, 0.5), few)
    # only drawn-masked latents are ever unmasked, never newly masked
    part = torch.zeros(1, 10, dtype=torch.bool)
    part[0, :8] = True
    out = apply_retention_floor(part, I, 0.5)
    assert not bool((out & ~part).any()) and int(out.sum()) == 5
    assert set(torch.nonzero(out[0]).flatten().tolist()) == {1, 5, 6, 3, 0}


@pytest.mark.parametrize("mode", ["per_latent", "per_token"])
def test_floor_respected_when_p_near_one(mode):
    sae = make_sae(r=1e4, c=10.0, min_keep=0.3, mask_draw=mode)  # theta far above all I
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.ema_magnitude.copy_(torch.rand(F, generator=gen) + 0.1)
        sae.ema_frequency.copy_(torch.rand(F, generator=gen) + 0.1)
        sae.ema_contribution.copy_(torch.rand(F, generator=gen) + 0.1)
        sae.ema_updates.fill_(1)
    I, _, p = sae.mask_probabilities()
    assert bool((p > 0.99).all())
    keep, info = sae.sample_keep(6, gen)
    n_keep = math.ceil(0.3 * F)
    assert keep.shape == ((6, F) if mode == "per_token" else (1, F))
    assert bool((keep.sum(-1) == n_keep).all())
    top = set(torch.topk(I, n_keep).indices.tolist())
    for row in keep:
        assert set(torch.nonzero(row).flatten().tolist()) == top
    assert math.isclose(float(info["masked_frac"]), 1 - n_keep / F, rel_tol=1e-6)


# ------------------------------------------------------ warmup / inference
def test_no_masking_during_warmup_but_ema_updates():
    sae = make_sae(warmup_steps=3, r=1e4, c=10.0, min_keep=0.1)
    x = data()
    f = sae.encode(x)
    out = sae.training_forward(x, ctx(step=2))
    assert torch.equal(out.latents_BF, f)
    assert float(out.terms["masked_frac"]) == 0.0
    out.loss.backward()
    assert int(sae.ema_updates) == 1 and float(sae.ema_magnitude.sum()) > 0
    before = sae.ema_magnitude.clone()
    out = sae.training_forward(x * 2, ctx(step=3))  # first masked step
    assert float(out.terms["masked_frac"]) > 0.5
    out.loss.backward()
    assert int(sae.ema_updates) == 2 and not torch.equal(sae.ema_magnitude, before)


def test_inference_has_no_mask():
    sae = primed(warmup_steps=0, r=1e4, c=10.0, min_keep=0.1)
    x = data()
    out = sae.training_forward(x, ctx(step=1))
    f = torch.relu(x @ sae.W_enc + sae.b_enc)
    assert not torch.equal(out.latents_BF, f)  # training masked ...
    assert torch.equal(sae.encode(x), f)  # ... inference does not
    assert torch.equal(sae.forward(x), f @ sae.W_dec + sae.b_dec)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("constraint", ["unit_norm", "l1_weighted"])
def test_masked_latents_get_no_reconstruction_gradient(constraint):
    sae = primed(warmup_steps=0, r=50.0, c=0.0, min_keep=0.1, l1_coefficient=0.0,
                 decoder_constraint=constraint)
    x = data()
    f = sae.encode(x).detach()
    out = sae.training_forward(x, ctx(step=1))
    out.loss.backward()
    fired = (f > 0).any(0)
    masked = (out.latents_BF == 0).all(0) & fired
    live = (out.latents_BF > 0).any(0)
    assert bool(masked.any()) and bool(live.any())
    assert bool((sae.W_dec.grad[masked] == 0).all())
    assert bool((sae.W_enc.grad[:, masked] == 0).all())
    assert bool((sae.b_enc.grad[masked] == 0).all())
    assert bool((sae.W_dec.grad[live].abs().sum(-1) > 0).all())
    assert bool((sae.W_enc.grad[:, live].abs().sum(0) > 0).all())


# ------------------------------------------------------------ determinism
@pytest.mark.parametrize("mode", ["per_latent", "per_token"])
def test_same_seed_same_masks_and_exact_resume(mode):
    kw = dict(warmup_steps=0, r=2.0, c=1.0, min_keep=0.2, mask_draw=mode)
    a, b = primed(**kw), primed(**kw)
    ga, gb = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    xs = [data(seed=s) for s in range(4)]
    for step in range(1, 3):
        oa = a.training_forward(xs[step], ctx(step, gen=ga))
        ob = b.training_forward(xs[step], ctx(step, gen=gb))
        assert torch.equal(oa.latents_BF, ob.latents_BF)
        oa.loss.backward()
        ob.loss.backward()
    # resume: fresh SAE from a's state_dict + generator state -> identical step
    c = make_sae(seed=99, **kw)
    c.load_state_dict(a.state_dict())
    gc = torch.Generator()
    gc.set_state(ga.get_state())
    oa = a.training_forward(xs[3], ctx(3, gen=ga))
    oc = c.training_forward(xs[3], ctx(3, gen=gc))
    assert torch.equal(oa.latents_BF, oc.latents_BF)
    assert torch.equal(oa.loss, oc.loss)
    # a different seed draws different masks from the same state
    d, e = primed(**kw), primed(**kw)
    od = d.training_forward(xs[0], ctx(1, seed=1))
    oe = e.training_forward(xs[0], ctx(1, seed=2))
    assert not torch.equal(od.latents_BF == 0, oe.latents_BF == 0)


def test_draw_masked_uses_generator():
    p = torch.full((64,), 0.5)
    m1 = draw_masked(p, 1, torch.Generator().manual_seed(1))
    m2 = draw_masked(p, 1, torch.Generator().manual_seed(1))
    m3 = draw_masked(p, 1, torch.Generator().manual_seed(2))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)


# --------------------------------------------------- decoder constraint / L1
def test_unit_norm_vs_l1_weighted():
    u = make_sae(decoder_constraint="unit_norm", coeff_warmup_frac=0.0, warmup_steps=10)
    w = make_sae(decoder_constraint="l1_weighted", coeff_warmup_frac=0.0, warmup_steps=10)
    assert u.unit_norm_decoder and not w.unit_norm_decoder
    assert torch.allclose(u.W_dec.norm(dim=-1), torch.ones(F))
    assert torch.allclose(w.W_dec.norm(dim=-1), torch.full((F,), 0.1))
    x = data()
    for sae in (u, w):
        f = sae.encode(x)
        out = sae.training_forward(x, ctx())
        norms = 1.0 if sae is u else sae.W_dec.norm(dim=-1)
        assert torch.allclose(out.terms["l1"], (f * norms).sum(-1).mean())
        mse = ((sae.decode(f) - x) ** 2).sum(-1).mean()
        assert torch.allclose(out.loss, mse + 0.001 * out.terms["l1"])
    # growing decoder rows (and shrinking nothing else) changes only the weighted L1
    with torch.no_grad():
        u.W_dec.mul_(3.0)
        w.W_dec.mul_(3.0)
    lu = u.training_forward(x, ctx()).terms["l1"]
    lw = w.training_forward(x, ctx()).terms["l1"]
    assert torch.allclose(lu, (u.encode(x)).sum(-1).mean())
    assert torch.allclose(lw, (w.encode(x) * w.W_dec.norm(dim=-1)).sum(-1).mean())
    assert torch.allclose(lw, 3 * (w.encode(x) * 0.1).sum(-1).mean(), rtol=1e-5)


def test_l1_coeff_warmup():
    sae = make_sae(coeff_warmup_frac=0.5, warmup_steps=0)
    out = sae.training_forward(data(), ctx(step=9, total=100))  # (9+1)/50 of lambda
    assert math.isclose(float(out.terms["l1_coefficient"]), 0.001 * 10 / 50, rel_tol=1e-6)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("bad", [
    {"beta": 1.0}, {"beta": -0.1}, {"r": 0.0}, {"r": -1.0}, {"c": -0.1},
    {"l1_coefficient": -1e-3}, {"min_keep": 0.0}, {"min_keep": 1.5}, {"warmup_steps": -1},
    {"importance": "max"}, {"mask_draw": "per_batch"}, {"mask_mode": "dropout"},
    {"ema_start": "one"}, {"masked_g": "x"}, {"decoder_constraint": "none"},
])
def test_config_errors(bad):
    with pytest.raises(SAEConfigError):
        ATMConfig(d_in=4, d_sae=8, **bad)


def test_config_edges_and_from_dict():
    ATMConfig(d_in=4, d_sae=8, c=0.0, beta=0.0, min_keep=1.0, warmup_steps=0, l1_coefficient=0.0)
    from atm_repro.config import ConfigError, from_dict

    cfg = from_dict(ATMConfig, {"d_in": 4, "d_sae": 8, "importance": "product"})
    assert cfg.importance == "product" and cfg.beta == 0.99 and cfg.r == 0.5
    with pytest.raises(ConfigError):
        from_dict(ATMConfig, {"d_in": 4, "d_sae": 8, "lambda": 0.1})
    with pytest.raises(ConfigError):
        from_dict(ATMConfig, {"d_in": 4, "d_sae": 8, "mask_mode": "nope"})


def test_min_keep_one_never_masks():
    sae = primed(warmup_steps=0, r=1e4, c=10.0, min_keep=1.0)
    x = data()
    out = sae.training_forward(x, ctx(step=1))
    assert float(out.terms["masked_frac"]) == 0.0
    assert torch.equal(out.latents_BF, sae.encode(x))


# ------------------------------------------------------------------ sanity
def test_adam_reduces_mse_on_sparse_data():
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(F, D, generator=gen)
    dirs /= dirs.norm(dim=-1, keepdim=True)
    codes = torch.rand(256, F, generator=gen) * (torch.rand(256, F, generator=gen) < 0.15)
    x = codes @ dirs
    sae = make_sae(warmup_steps=5, coeff_warmup_frac=0.0)
    params = list(sae.parameters())
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    mses, masked = [], []
    for step in range(40):
        out = sae.training_forward(x, ctx(step, total=40, gen=gen))
        for p in params:
            p.grad = None
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        with torch.no_grad():  # plain Adam (torch.optim.Adam's first use imports dynamo, ~1 s)
            for p, a, v in zip(params, m1, m2):
                a.mul_(0.9).add_(p.grad, alpha=0.1)
                v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                a_hat, v_hat = a / (1 - 0.9 ** (step + 1)), v / (1 - 0.999 ** (step + 1))
                p.sub_(1e-2 * a_hat / (v_hat.sqrt() + 1e-8))
        sae.normalize_decoder()
        mses.append(float(out.terms["mse"]))
        masked.append(float(out.terms["masked_frac"]))
    assert all(math.isfinite(v) for v in mses)
    assert sum(masked[:5]) == 0 and sum(masked[5:]) > 0  # training went on under masking
    assert mses[-1] < 0.5 * mses[0]


# ------------------------------------------- masks hit the right latents
def _fixed_state(sae: ATMSAE, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for buf in (sae.ema_magnitude, sae.ema_frequency, sae.ema_contribution):
            buf.copy_(torch.rand(buf.shape, generator=gen) * 2 + 0.05)
        sae.ema_updates.fill_(10)


def _mask_rates(sae: ATMSAE, n_draws: int = 4000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    keep, _ = sae.sample_keep(n_draws, gen)  # per_token: n_draws independent rows
    return 1.0 - keep.mean(0)


def test_empirical_mask_rate_matches_p_of_the_formula():
    """Each latent's mask rate over many draws is p_i of the paper's formula,
    computed here by hand from the state: masking the important latents instead
    (or any permutation of p) fails."""
    sae = make_sae(r=2.0, c=0.5, min_keep=0.01, mask_draw="per_token")
    _fixed_state(sae)
    s = [sae.ema_magnitude, sae.ema_frequency, sae.ema_contribution]
    I = sum(x / x.mean() for x in s)
    theta = I.mean() + 0.5 * I.std(correction=0)
    p = torch.where(I < theta, 1 - torch.exp(-2.0 * (theta - I) / theta), torch.zeros_like(I))
    assert 0 < int((p > 0).sum()) < F  # some latents above theta, some below
    rate = _mask_rates(sae)
    tol = 4 * torch.sqrt(p * (1 - p) / 4000) + 1e-3  # 4 binomial standard errors
    assert bool(((rate - p).abs() <= tol).all())
    assert bool((rate[I >= theta] == 0).all())  # the important ones are never masked
    order = torch.argsort(I)
    assert float(rate[order[:4]].mean()) > float(rate[order[-4:]].mean())


def test_l1_is_on_the_masked_latents():
    """The penalty counts only kept latents: masked ones get no gradient at all,
    even with lambda > 0, and the logged L1 is that of f_tilde."""
    sae = primed(warmup_steps=0, r=50.0, c=0.0, min_keep=0.1, l1_coefficient=0.5,
                 coeff_warmup_frac=0.0)
    x = data()
    f = sae.encode(x).detach()
    out = sae.training_forward(x, ctx(step=1))
    assert torch.allclose(out.terms["l1"], out.latents_BF.detach().sum(-1).mean())
    assert float(out.terms["l1"]) < float(f.sum(-1).mean())
    out.loss.backward()
    masked = (out.latents_BF == 0).all(0) & (f > 0).any(0)
    assert bool(masked.any())
    assert bool((sae.W_enc.grad[:, masked] == 0).all())
    assert bool((sae.b_enc.grad[masked] == 0).all())


# ------------------------------------------------------------- controls
def test_mask_mode_none_never_masks_but_keeps_measuring():
    sae = primed(warmup_steps=0, r=1e4, c=10.0, min_keep=0.1, mask_mode="none")
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 4):
        x = data(seed=step)
        out = sae.training_forward(x, ctx(step, gen=gen))
        assert torch.equal(out.latents_BF, sae.encode(x))
        assert float(out.terms["masked_frac"]) == 0.0
        assert float(out.terms["mask_prob_mean"]) > 0.5  # what importance would have masked
        out.loss.backward()
    assert int(sae.ema_updates) == 4


def test_mask_mode_random_matches_the_rate_not_the_ranking():
    """Random: every latent at mean(p), whatever its importance."""
    imp = make_sae(r=2.0, c=0.5, min_keep=0.01, mask_draw="per_token")
    rnd = make_sae(r=2.0, c=0.5, min_keep=0.01, mask_draw="per_token", mask_mode="random")
    for sae in (imp, rnd):
        _fixed_state(sae)
    _, _, p = imp.mask_probabilities()
    rate_imp, rate_rnd = _mask_rates(imp), _mask_rates(rnd)
    assert abs(float(rate_rnd.mean()) - float(p.mean())) < 0.01
    assert abs(float(rate_imp.mean()) - float(rate_rnd.mean())) < 0.01  # same masking rate
    tol = 4 * math.sqrt(float(p.mean()) * (1 - float(p.mean())) / 4000)
    assert bool(((rate_rnd - p.mean()).abs() <= tol).all())  # flat across latents ...
    I = imp.importance()
    assert bool((rate_rnd[I >= imp.mask_probabilities()[1]] > 0).all())  # ... important ones too


def test_random_mode_floor_is_not_importance_ordered():
    sae = make_sae(r=1e4, c=10.0, min_keep=0.5, mask_draw="per_token", mask_mode="random")
    _fixed_state(sae)
    keep, _ = sae.sample_keep(2000, torch.Generator().manual_seed(3))
    assert bool((keep.sum(-1) == F // 2).all())  # the floor holds ...
    rate = 1.0 - keep.mean(0)
    assert float(rate.max() - rate.min()) < 0.1  # ... by dropping a random half, not by I
