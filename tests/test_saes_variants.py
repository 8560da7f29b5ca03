"""Unit tests for the registered SAE variants: shared checks over the registry, then
per-variant hand values (standard, topk, batchtopk, jumprelu, matryoshka)."""

from __future__ import annotations

import pytest
import torch

from atm_repro.config import ConfigError, from_dict
from atm_repro.saes import VARIANTS as REGISTERED
from atm_repro.saes.atm import ATMSAE, ATMConfig
from atm_repro.saes.base import SAEConfigError, StepContext
from atm_repro.saes.batchtopk import BatchTopKConfig, BatchTopKSAE, batch_topk
from atm_repro.saes.jumprelu import JumpReLUConfig, JumpReLUFunction, JumpReLUSAE, StepFunction
from atm_repro.saes.matryoshka import MatryoshkaConfig, MatryoshkaSAE
from atm_repro.saes.standard import StandardConfig, StandardSAE
from atm_repro.saes.topk import (
    ActiveLatents,
    TopKConfig,
    TopKSAE,
    auxk_loss,
    topk_activation,
)

D, F = 8, 32

# Small-data settings; any other registered variant runs on its config's defaults.
PARAMS = {
    "standard": {"l1_coefficient": 0.05},
    "topk": {"k": 4},
    "batchtopk": {"k": 4},
    "jumprelu": {"l0_coefficient": 0.01},
    "atm": {"l1_coefficient": 0.01},
    "matryoshka": {"k": 4},
}
# Every registered variant but ATM (tests/test_atm.py covers its training step).
VARIANTS = [(cls, cls.config_cls, PARAMS.get(name, {}))
            for name, cls in REGISTERED.items() if name != "atm"]
VARIANT_IDS = [cls.architecture for cls, _, _ in VARIANTS]


def make_ctx(n_latents: int, dead=None, step: int = 0, total: int = 100) -> StepContext:
    dead_mask = torch.zeros(n_latents, dtype=torch.bool) if dead is None else dead
    return StepContext(step, total, dead_mask, torch.Generator().manual_seed(0))


def make_sae(cls, cfg_cls, params, d_in=D, d_sae=F, seed=0, b_dec=None):
    sae = cls(cfg_cls(d_in=d_in, d_sae=d_sae, **params))
    sae.init_weights(torch.Generator().manual_seed(seed), b_dec)
    return sae


def sparse_dataset(n: int = 256, d: int = D, n_dirs: int = 16, seed: int = 0) -> torch.Tensor:
    """Tokens = sparse positive combinations of fixed unit directions, scaled to E||x||^2 = d."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_dirs, d, generator=g)
    dirs /= dirs.norm(dim=-1, keepdim=True)
    coef = torch.rand(n, n_dirs, generator=g) * (torch.rand(n, n_dirs, generator=g) < 3 / n_dirs)
    x = coef @ dirs + 0.3
    return x * (d / x.pow(2).sum(-1).mean()).sqrt()


# ------------------------------------------------------------------- shared


@pytest.mark.parametrize("cls,cfg_cls,params",
                         [*VARIANTS, (ATMSAE, ATMConfig, PARAMS["atm"])],
                         ids=[*VARIANT_IDS, "atm"])
def test_init_is_centred(cls, cfg_cls, params):
    """Every variant starts with pre-activations (x - b_dec) W_enc, whether it
    subtracts b_dec or folds it into b_enc, so on data far from the origin every
    latent fires on some tokens. With b_enc = 0 in a variant that encodes x
    (the old init) about half of them would never fire on this data."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, D, generator=g) + 30.0 * torch.nn.functional.normalize(
        torch.randn(D, generator=g), dim=0)
    b_dec = x.mean(0)
    sae = make_sae(cls, cfg_cls, params, b_dec=b_dec)
    with torch.no_grad():
        z = sae.pre_acts(x)
        torch.testing.assert_close(z, (x - b_dec) @ sae.W_enc, atol=1e-4, rtol=1e-4)
        assert bool((z > 0).any(0).all())
        if not sae.subtract_b_dec:
            assert bool((x @ sae.W_enc <= 0).all(0).float().mean() > 0.25)


@pytest.mark.parametrize("cls,cfg_cls,params", VARIANTS, ids=VARIANT_IDS)
def test_shapes(cls, cfg_cls, params):
    torch.manual_seed(0)
    sae = make_sae(cls, cfg_cls, params)
    x = torch.randn(5, D)
    assert sae.encode(x).shape == (5, F)
    assert sae.decode(sae.encode(x)).shape == (5, D)
    assert sae(x).shape == (5, D)
    out = sae.training_forward(x, make_ctx(F))
    assert out.latents_BF.shape == (5, F) and out.x_hat_BD.shape == (5, D)
    assert out.loss.ndim == 0 and "mse" in out.terms
    assert all(t.ndim == 0 and not t.requires_grad for t in out.terms.values())


@pytest.mark.parametrize("cls,cfg_cls,params", VARIANTS, ids=VARIANT_IDS)
def test_adam_steps_reduce_mse(cls, cfg_cls, params):
    torch.manual_seed(0)
    x = sparse_dataset()
    sae = make_sae(cls, cfg_cls, params, b_dec=x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2, betas=sae.adam_betas)
    mses = []
    for step in range(40):
        out = sae.training_forward(x, make_ctx(F, step=step, total=40))
        mses.append(out.terms["mse"].item())
        opt.zero_grad()
        out.loss.backward()
        if sae.unit_norm_decoder:
            sae.remove_parallel_decoder_grad()
        opt.step()
        if sae.unit_norm_decoder:
            sae.normalize_decoder()
    assert mses[-1] < 0.6 * mses[0]


@pytest.mark.parametrize(
    "cls,cfg_cls,params", [v for v in VARIANTS if v[0] is not StandardSAE],
    ids=[i for i in VARIANT_IDS if i != "standard"],
)
def test_unit_norm_decoder_survives_a_step(cls, cfg_cls, params):
    torch.manual_seed(0)
    sae = make_sae(cls, cfg_cls, params)
    assert sae.unit_norm_decoder
    opt = torch.optim.Adam(sae.parameters(), lr=0.1, betas=sae.adam_betas)
    x = sparse_dataset(64)
    for step in range(3):
        out = sae.training_forward(x, make_ctx(F, dead=torch.arange(F) % 3 == 0, step=step))
        opt.zero_grad()
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(-1), torch.zeros(F), atol=1e-5)
        opt.step()
        sae.normalize_decoder()
        assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(F), atol=1e-5)


def test_standard_sae_decoder_is_free_and_l1_is_norm_weighted():
    sae = make_sae(StandardSAE, StandardConfig, {"l1_coefficient": 2.0, "coeff_warmup_frac": 0.5},
                   d_in=2, d_sae=2)
    assert not sae.unit_norm_decoder
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.full((2,), 0.1))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))  # norms 5, 2
        sae.b_dec.zero_()
    x = torch.tensor([[1.0, -1.0], [2.0, 3.0]])  # f = [[1, 0], [2, 3]]
    out = sae.training_forward(x, make_ctx(2, step=0, total=10))  # lambda = 2 * 1/5
    l1 = ((1 * 5) + (2 * 5 + 3 * 2)) / 2
    assert out.terms["l1"].item() == pytest.approx(l1)
    assert out.loss.item() == pytest.approx(out.terms["mse"].item() + 0.4 * l1)


def test_l1_stays_float32_under_bfloat16_autocast():
    """The penalty's reduction is not rounded to bfloat16 (SAELens keeps it float32)."""
    from atm_repro.saes.standard import decoder_weighted_l1

    g = torch.Generator().manual_seed(0)
    f_BF = torch.rand(64, 512, generator=g) * 3
    W_dec_FD = torch.randn(512, 16, generator=g)
    exact = (f_BF.double() * W_dec_FD.double().norm(dim=-1)).sum(1).mean()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l1 = decoder_weighted_l1(f_BF, W_dec_FD)
    assert l1.dtype == torch.float32
    assert abs(l1.item() - exact.item()) / exact.item() < 1e-5


# --------------------------------------------------------------------- topk


def test_topk_activation_hand_values():
    z = torch.tensor([[3.0, -1.0, 2.0, 0.5], [-1.0, -2.0, -3.0, 0.5]])
    f = topk_activation(z, 2)
    assert torch.equal(f, torch.tensor([[3.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.5]]))


def test_topk_keeps_exactly_k_per_token():
    torch.manual_seed(0)
    sae = make_sae(TopKSAE, TopKConfig, {"k": 5})
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive, so ReLU removes none
    x = torch.randn(16, D)
    assert torch.equal((sae.encode(x) > 0).sum(-1), torch.full((16,), 5))
    out = sae.training_forward(x, make_ctx(F))
    assert torch.equal((out.latents_BF > 0).sum(-1), torch.full((16,), 5))
    assert sae.saelens_cfg() == {"k": 5}


def as_latents(f_BF: torch.Tensor) -> ActiveLatents:
    """The nonzeros of a dense batch of latents."""
    idx = f_BF.flatten().nonzero().squeeze(1)
    return ActiveLatents.from_flat(f_BF.flatten()[idx], idx, *f_BF.shape)


@pytest.mark.parametrize("density", [0.01, 0.3])  # the CSR and the dense path
def test_sparse_decode_matches_dense_values_and_grads(density):
    torch.manual_seed(0)
    f = torch.relu(torch.randn(6, 512)) + 0.1
    f *= torch.rand(6, 512) < density
    f[2] = 0.0  # an empty row
    f[5] = 0.0  # an empty last row
    lat = as_latents(f)
    lat.vals_N.requires_grad_(True)
    assert torch.equal(lat.to_dense(), f)
    W = torch.randn(512, 4, requires_grad=True)
    W2 = W.detach().clone().requires_grad_(True)
    f2 = f.clone().requires_grad_(True)
    out, ref = lat.decode(W), f2 @ W2
    assert torch.allclose(out, ref, atol=1e-6)
    g = torch.randn(6, 4)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    assert torch.allclose(W.grad, W2.grad, atol=1e-6)
    assert torch.allclose(lat.vals_N.grad, f2.grad[f != 0], atol=1e-5)


def test_topk_latents_unsorted_columns_and_blocks():
    torch.manual_seed(0)
    z = torch.randn(5, 64)
    vals, idx = z.topk(3, dim=-1, sorted=False)
    lat = ActiveLatents.from_topk(torch.relu(vals), idx, 64)
    dense = topk_activation(z, 3)
    assert torch.equal(lat.to_dense(), dense)
    W = torch.randn(64, 4)
    assert torch.allclose(lat.decode(W), dense @ W, atol=1e-6)
    block = lat.columns(16, 48)
    assert torch.equal(block.to_dense(), dense[:, 16:48])
    assert torch.allclose(block.decode(W[16:48]), dense[:, 16:48] @ W[16:48], atol=1e-6)


def test_auxk_hand_value_and_gradient_only_to_dead_latents():
    z = torch.tensor([[1.0, 2.0, 3.0, -1.0], [0.5, -2.0, 4.0, 2.0]], requires_grad=True)
    W_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 2.0]], requires_grad=True)
    residual = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    dead = torch.tensor([True, False, False, True])
    # token 0 uses latent 0 (z=1) -> e_hat [1, 0]; token 1 latent 3 (z=2) -> e_hat [0, 4]
    # error sq = 1, 1; residual variance: sum (e - mean e)^2 per token = 1.25
    loss = auxk_loss(z, residual, W_dec, dead, k_aux=1)
    assert loss.item() == pytest.approx(1.0 / 1.25)
    loss.backward()
    assert torch.equal(W_dec.grad[1:3], torch.zeros(2, 2)) and W_dec.grad[[0, 3]].abs().sum() > 0
    assert torch.equal(z.grad[:, 1:3], torch.zeros(2, 2))


@pytest.mark.parametrize("k_aux", [3, 40])  # fewer than the dead latents, and more
def test_auxk_matches_a_full_width_reference(k_aux):
    """The dead-columns-only AuxK equals the definition written over all F latents
    (live ones masked to -inf, top-k, dense decode), in value and in the gradients
    of z and W_dec: a slip in mapping the dead columns back would move both."""
    torch.manual_seed(0)
    B, Fw, Dw = 16, 64, 8
    dead = torch.rand(Fw) < 0.3
    residual = torch.randn(B, Dw)
    results = []
    for reference in (False, True):
        z = torch.randn(B, Fw, generator=torch.Generator().manual_seed(1), requires_grad=True)
        W = torch.randn(Fw, Dw, generator=torch.Generator().manual_seed(2), requires_grad=True)
        if reference:
            vals, idx = z.masked_fill(~dead, float("-inf")).topk(min(k_aux, int(dead.sum())), -1)
            e_hat = torch.zeros(B, Fw).scatter(-1, idx, torch.relu(vals)) @ W
            loss = ((e_hat - residual) ** 2).sum(-1).mean() / (
                (residual - residual.mean(0)) ** 2).sum(-1).mean()
        else:
            loss = auxk_loss(z, residual, W, dead, k_aux)
        loss.backward()
        results.append((loss.detach(), z.grad, W.grad))
    for ours, ref in zip(*results):
        assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)


def test_auxk_zero_without_dead_latents_positive_with_some():
    torch.manual_seed(0)
    sae = make_sae(TopKSAE, TopKConfig, {"k": 2})
    x = sparse_dataset(32)
    z = sae.pre_acts(x)
    no_dead = torch.zeros(F, dtype=torch.bool)
    assert auxk_loss(z, torch.randn(32, D), sae.W_dec, no_dead, 4).item() == 0.0
    assert sae.training_forward(x, make_ctx(F)).terms["auxk"].item() == 0.0
    dead = torch.arange(F) >= F // 2
    out = sae.training_forward(x, make_ctx(F, dead=dead))
    assert out.terms["auxk"].item() > 0
    out.loss.backward()
    assert sae.W_dec.grad[dead].abs().sum() > 0


@pytest.mark.parametrize("cls,cfg_cls", [(TopKSAE, TopKConfig), (BatchTopKSAE, BatchTopKConfig),
                                         (MatryoshkaSAE, MatryoshkaConfig)])
def test_auxk_residual_is_detached(cls, cfg_cls):
    """AuxK trains only the dead latents: the live latents' decoder rows, encoder
    columns and biases get exactly the reconstruction loss's gradient (a residual
    not detached would pass AuxK's gradient back through x_hat into them)."""
    x = sparse_dataset(64)
    dead = torch.arange(F) >= F // 2
    grads = []
    for mask in (torch.zeros(F, dtype=torch.bool), dead):
        sae = make_sae(cls, cfg_cls, {"k": 4})
        out = sae.training_forward(x, make_ctx(F, dead=mask))
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
    assert out.terms["auxk"].item() > 0
    plain, with_aux = grads
    assert torch.equal(plain["W_dec"][~dead], with_aux["W_dec"][~dead])
    assert torch.equal(plain["W_enc"][:, ~dead], with_aux["W_enc"][:, ~dead])
    assert torch.equal(plain["b_enc"][~dead], with_aux["b_enc"][~dead])
    assert not torch.equal(plain["W_dec"][dead], with_aux["W_dec"][dead])


def test_aux_k_default_is_half_d_in():
    assert TopKConfig(d_in=8, d_sae=16, k=4).resolved_aux_k == 4
    assert TopKConfig(d_in=1, d_sae=16, k=4).resolved_aux_k == 1
    assert TopKConfig(d_in=8, d_sae=16, k=4, aux_k=3).resolved_aux_k == 3


# ---------------------------------------------------------------- batchtopk


def test_batch_topk_hand_values_and_threshold_ema():
    sae = BatchTopKSAE(BatchTopKConfig(d_in=2, d_sae=4, k=2, threshold_beta=0.9))
    z = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 0.5, 6.0, 0.1]])
    f = sae.train_latents(z).to_dense()
    assert torch.equal(f, torch.tensor([[5.0, 4.0, 3.0, 0.0], [0.0, 0.0, 6.0, 0.0]]))
    assert sae.threshold.item() == pytest.approx(3.0)  # first update initialises
    sae.train_latents(torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]]))  # min kept 1
    assert sae.threshold.item() == pytest.approx(0.9 * 3.0 + 0.1 * 1.0)
    sae.eval()
    sae.train_latents(torch.tensor([[9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]]))
    assert sae.threshold.item() == pytest.approx(2.8)  # no update outside training mode
    assert torch.equal(sae.activation(torch.tensor([[3.0, 2.7, 2.0, -1.0]])),
                       torch.tensor([[3.0, 0.0, 0.0, 0.0]]))
    state = sae.state_dict()
    assert state["threshold"].item() == pytest.approx(2.8) and state["threshold_initialised"]
    assert torch.allclose(sae.inference_tensors()["threshold"], torch.full((4,), 2.8))
    assert sae.saelens_cfg() == {}


def test_batch_topk_keeps_k_times_batch():
    torch.manual_seed(0)
    z = torch.randn(16, F) + 10.0
    f = batch_topk(z, 3).to_dense()
    assert (f > 0).sum().item() == 3 * 16
    assert (f > 0).sum(-1).float().std() > 0  # allocation varies across tokens
    kept_min = f[f > 0].min()
    assert (z[f == 0] <= kept_min).all()


@pytest.mark.parametrize("spiky", [False, True])  # prefiltered / full-topk fallback
def test_batch_topk_equals_one_topk_over_the_batch(spiky):
    torch.manual_seed(0)
    z = torch.randn(64, 256)
    if spiky:  # every 16th value huge: the strided sample sees only those
        z.view(-1)[::16] += 100.0
    f = batch_topk(z, 8).to_dense()
    vals, idx = torch.relu(z).flatten().topk(8 * 64)
    ref = torch.zeros(64 * 256).scatter(0, idx, vals).view(64, 256)
    assert torch.equal(f, ref)


def test_batchtopk_threshold_reproduces_training_sparsity():
    torch.manual_seed(0)
    k, d_in, d_sae = 4, 16, 64
    sae = make_sae(BatchTopKSAE, BatchTopKConfig, {"k": k}, d_in=d_in, d_sae=d_sae)
    with torch.no_grad():
        for _ in range(100):
            out = sae.training_forward(torch.randn(128, d_in), make_ctx(d_sae))
            assert (out.latents_BF > 0).sum().item() == k * 128
        sae.eval()
        l0 = (sae.encode(torch.randn(4096, d_in)) > 0).sum(-1).float().mean().item()
    assert l0 == pytest.approx(k, rel=0.2)


# ----------------------------------------------------------------- jumprelu


def test_jumprelu_pseudo_gradients_hand_values():
    eps = 0.1
    theta = torch.tensor([1.0, 3.0], requires_grad=True)
    z = torch.tensor([[1.02, 3.5], [0.97, 2.96], [1.2, 3.3]], requires_grad=True)
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # |z - theta| < eps/2: column 0 rows 0, 1; column 1 row 1
    (JumpReLUFunction.apply(z, theta, eps) * w).sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([-(1.0 / eps) * (1 + 3), -(3.0 / eps) * 4]))
    assert torch.equal(z.grad, w * torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]))
    theta.grad, z.grad = None, None
    step = StepFunction.apply(z, theta, eps)
    assert torch.equal(step, torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]))
    (step * w).sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([-(1 + 3) / eps, -4 / eps]))
    assert z.grad is None or torch.equal(z.grad, torch.zeros_like(z))


def test_jumprelu_loss_gradient_wrt_log_threshold():
    eps, lam = 0.1, 0.5
    sae = JumpReLUSAE(JumpReLUConfig(d_in=2, d_sae=2, l0_coefficient=lam, bandwidth=eps,
                                     coeff_warmup_frac=0.0))
    theta = torch.tensor([1.0, 3.0])
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.eye(2))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.log_threshold.copy_(theta.log())
    x = torch.tensor([[1.02, 3.5], [0.97, 2.96], [1.2, 3.3]])  # z = x, x_hat = f
    out = sae.training_forward(x, make_ctx(2))
    out.loss.backward()
    B = 3
    # mse: df/dtheta only where |z - theta| < eps/2; dmse/df = 2 (f - x) / B is -2x/B
    # where the latent is off (row 1), 0 where on (row 0, col 0)
    dmse = torch.tensor([(-2 * 0.97 / B) * (-1.0 / eps), (-2 * 2.96 / B) * (-3.0 / eps)])
    dl0 = lam * torch.tensor([-2 / eps, -1 / eps]) / B
    assert torch.allclose(sae.log_threshold.grad, theta * (dmse + dl0), atol=1e-4)
    assert out.terms["l0"].item() == pytest.approx(4 / 3)
    assert sae.adam_betas == (0.0, 0.999)


def test_jumprelu_inference_threshold():
    sae = JumpReLUSAE(JumpReLUConfig(d_in=2, d_sae=3, init_threshold=0.5))
    assert torch.allclose(sae.inference_tensors()["threshold"], torch.full((3,), 0.5))
    z = torch.tensor([[0.6, 0.5, -1.0]])
    assert torch.equal(sae.activation(z), torch.tensor([[0.6, 0.0, 0.0]]))


# --------------------------------------------------------------- matryoshka


def _matryoshka(fracs):
    sae = MatryoshkaSAE(MatryoshkaConfig(d_in=2, d_sae=4, k=2, prefix_fractions=fracs))
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]))
        sae.b_dec.copy_(torch.tensor([0.5, 0.0]))
    return sae


def test_matryoshka_loss_averages_each_prefix():
    sae = _matryoshka([0.25, 0.5, 1.0])  # widths 1, 2, 4
    f = torch.tensor([[1.0, 2.0, 0.0, 1.0]])
    x = torch.tensor([[3.0, 2.0]])
    x_hat, loss, terms = sae.reconstruct(as_latents(f), x)
    # prefixes: [1.5, 0] -> 6.25; [1.5, 2] -> 2.25; [3.5, 2] -> 0.25
    assert torch.allclose(x_hat, torch.tensor([[3.5, 2.0]]))
    assert loss.item() == pytest.approx((6.25 + 2.25 + 0.25) / 3)
    assert terms["mse"].item() == pytest.approx(0.25)
    assert [terms[f"mse_prefix_{w}"].item() for w in (1, 2, 4)] == pytest.approx([6.25, 2.25, 0.25])
    with torch.no_grad():
        sae.W_dec[1:] = 0.0  # only the larger prefixes change
    _, _, zeroed = sae.reconstruct(as_latents(f), x)
    assert zeroed["mse_prefix_1"].item() == pytest.approx(6.25)
    assert zeroed["mse_prefix_2"].item() != pytest.approx(2.25)
    assert zeroed["mse_prefix_4"].item() != pytest.approx(0.25)


def test_matryoshka_matches_dense_prefix_reference():
    torch.manual_seed(0)
    sae = make_sae(MatryoshkaSAE, MatryoshkaConfig, {"k": 4}, b_dec=torch.randn(D))
    assert sae.cfg.prefix_widths == [2, 4, 8, 16, 32]
    x = torch.randn(10, D)
    out = sae.training_forward(x, make_ctx(F))
    f = out.latents_BF
    ref = torch.stack([
        (f[:, :w] @ sae.W_dec[:w] + sae.b_dec - x).pow(2).sum(-1).mean()
        for w in sae.cfg.prefix_widths
    ]).mean()
    assert out.terms["matryoshka_mse"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)  # no dead latents: AuxK = 0


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "cfg_cls,params",
    [
        (TopKConfig, {"k": 9}),
        (TopKConfig, {"k": 0}),
        (TopKConfig, {"aux_alpha": -0.1}),
        (TopKConfig, {"aux_k": 0}),
        (StandardConfig, {"l1_coefficient": -1.0}),
        (JumpReLUConfig, {"l0_coefficient": -1.0}),
        (JumpReLUConfig, {"bandwidth": 0.0}),
        (JumpReLUConfig, {"init_threshold": 0.0}),
        (BatchTopKConfig, {"threshold_beta": 1.0}),
        (BatchTopKConfig, {"k": 9}),
        (MatryoshkaConfig, {"prefix_fractions": [0.5, 0.25, 1.0]}),
        (MatryoshkaConfig, {"prefix_fractions": [0.5]}),
        (MatryoshkaConfig, {"prefix_fractions": [0.01, 1.0]}),  # rounds to width 0
    ],
)
def test_bad_config_raises(cfg_cls, params):
    with pytest.raises(SAEConfigError):
        cfg_cls(d_in=4, d_sae=8, **params)


def test_from_dict_rejects_unknown_key_and_bad_value():
    with pytest.raises(ConfigError, match="kk"):
        from_dict(TopKConfig, {"d_in": 4, "d_sae": 8, "kk": 3})
    with pytest.raises(ConfigError, match="k must be"):  # SAEConfigError, rewrapped
        from_dict(TopKConfig, {"d_in": 4, "d_sae": 8, "k": 9})
    params = {"d_in": 4, "d_sae": 16, "k": 4, "prefix_fractions": [0.25, 1]}
    cfg = from_dict(MatryoshkaConfig, params)
    assert cfg.prefix_widths == [4, 16]


def test_sae_rejects_config_of_another_variant():
    with pytest.raises(SAEConfigError):
        TopKSAE(StandardConfig(d_in=4, d_sae=8))
