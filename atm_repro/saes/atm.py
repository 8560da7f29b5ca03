"""ATM: Adaptive Temporal Masking (Li & Ren, arXiv:2510.08855), the paper's method.

Architecture: the standard ReLU SAE, f = ReLU(x W_enc + b_enc) (no b_dec
subtraction), x_hat = f W_dec + b_dec; saved as a SAELens "standard" SAE (no
threshold). At inference (``encode`` / ``forward`` / ``activation``) there is
no mask: ATM only changes training.

Training, one step (``training_forward`` and the backward pass of its loss),
B tokens, F latents:

1. f = ReLU(pre-activations), unmasked.
2. Importance I_i from the EMA state left by the previous steps (step 7): each
   signal divided by its mean over latents (guarded by ``_EPS``), then summed
   with equal weights (``importance="sum"``, so mean(I) = 3 when no signal is
   all-zero) or multiplied (``"product"``).
3. Threshold theta = mean(I) + c * std(I) (population std, over latents).
4. p_i = 1 - exp(-r (theta - I_i) / theta) if I_i < theta else 0; p = 0 for
   all latents when theta <= 0 (e.g. before the first update). Because I >= 0,
   p <= 1 - exp(-r) < 1; p is also clamped to 1 - 1e-6 so float rounding can
   never make it exactly 1.
5. keep ~ Bernoulli(1 - p), one draw per latent shared by the batch
   (``mask_draw="per_latent"``) or one per token and latent ("per_token"),
   all from ``ctx.generator`` (the trainer checkpoints it, so a resumed run
   draws the same masks). Retention floor: at least ceil(min_keep * F) latents
   stay unmasked (per token in per-token mode). If the draw masks more, the
   most important of the drawn-masked latents are unmasked until the floor
   holds, so the least important are the ones that stay masked.
6. f_tilde = f * keep, x_hat = decode(f_tilde),
   loss = ||x - x_hat||^2 (summed over d, mean over batch) + lambda * L1(f_tilde).
7. In the backward pass of that loss the per-latent EMA state (decay ``beta``)
   is updated from this batch, using the *unmasked* f and the gradient of the
   reconstruction term w.r.t. f_tilde, which autograd computes anyway (so the
   statistics cost no extra matmul). m and q are taken in the forward pass; g
   is measured where that gradient passes the decoder's input
   (``_ContributionTap``) and handed out as a dummy tensor's gradient, whose
   hook applies the update:
     m_i: mean_b f_bi                          (magnitude; f >= 0)
     q_i: mean_b [f_bi > 0]                    (firing frequency)
     g_i: mean_b |f_bi * dl_b/df_bi|           (first-order reconstruction
          contribution), with the per-token loss l_b = ||x_b - x_hat_b||^2.
   For a kept latent, dl_b/df_bi = 2 (x_hat_b - x_b) . d_i is read off the
   backward pass: f_bi times it is the first-order loss change if latent i
   were removed. A masked latent is missing from x_hat_b, so that gradient
   also holds its own absent contribution, -2 f_bi ||d_i||^2, which would
   make often-masked latents look more important (a negative feedback the
   paper does not describe). ``masked_g="restored"`` (default) adds that term
   back: a masked latent is measured at the reconstruction with itself
   restored, exactly like a kept one, for one elementwise [B, F] pass.
   ``"masked"`` keeps the raw gradient (the first implementation; an
   ablation). A second, unmasked decode would cost two more [B, D] x [D, F]
   products and is not needed for either.
   The per-token normalisation is a choice of scale only: every signal is
   divided by its mean over latents in step 2, so constant factors (1/B, 2)
   cancel. ``ema_start="zero"`` (default) starts the state at 0 and always
   applies s <- beta * s + (1 - beta) * batch; the start bias (1 - beta^t)
   multiplies all three signals of every latent alike and so cancels in
   step 2: bias-free by construction. ``"first_batch"`` copies the first
   batch into the state instead (the first implementation; an ablation: the
   first batch then still weighs beta^t, 0.37 at t = 100). A forward without
   backward leaves the state unchanged.

Controls (``mask_mode``): "importance" is the method above. "random" masks
each latent with the same probability mean_i(p_i), computed each step from
this run's own EMA state, so it removes as many latents per step as the
importance mask would, independently of importance (plain dropout at ATM's
rate); its retention floor drops a random subset. "none" never masks;
everything else (lambda, decoder constraint, warmup, EMAs, schedule) is
identical. Both are ATM settings, not new variants.

No masking during the first ``warmup_steps`` optimizer steps (ctx.step <
warmup_steps), while the EMAs still update. lambda ramps up linearly over
``coeff_warmup_frac`` of training like the other L1 variants (0 gives the
paper's fixed lambda).

Decoder constraint. A plain L1 on f can be gamed: scaling f_i down by a and
decoder row d_i up by a leaves x_hat unchanged and shrinks the penalty
arbitrarily. So either (``decoder_constraint="unit_norm"``, default) the
trainer keeps decoder rows at unit norm and the L1 is sum_i f_i, or
(``"l1_weighted"``) rows are free, initialised at norm 0.1 as in the
"April update" standard SAE, and the penalty is sum_i f_i ||d_i||.

The EMA state (``ema_magnitude``, ``ema_frequency``, ``ema_contribution``,
``ema_updates``) lives in registered buffers, so ``state_dict`` (and hence the
trainer's checkpoint) carries it; ``inference_tensors`` does not include it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from atm_repro.saes.base import (
    SAE,
    LossOutput,
    SAEConfig,
    SAEConfigError,
    StepContext,
    encoder_pre_acts,
    firing_counts,
    kernel,
    reconstruction_loss,
)
from atm_repro.saes.registry import PlotStyle, VariantInfo, register_variant
from atm_repro.saes.standard import decoder_weighted_l1

_EPS = 1e-12  # guards divisions by a mean over latents
_P_MAX = 1.0 - 1e-6  # p stays strictly below 1 even after float rounding

IMPORTANCE_MODES = ("sum", "product")
MASK_DRAWS = ("per_latent", "per_token")
MASK_MODES = ("importance", "random", "none")
EMA_STARTS = ("zero", "first_batch")
MASKED_G = ("restored", "masked")
DECODER_CONSTRAINTS = ("unit_norm", "l1_weighted")


@dataclass(frozen=True)
class ATMConfig(SAEConfig):
    """ATM hyperparameters (paper values where the paper gives them)."""

    l1_coefficient: float = 0.001  # lambda_sparse (paper), on unit-scaled inputs
    beta: float = 0.99  # EMA decay of the per-latent statistics (paper)
    r: float = 0.5  # mask decay rate in p = 1 - exp(-r (theta - I) / theta) (paper)
    c: float = 1.0  # threshold multiplier, theta = mean(I) + c std(I) (not in paper)
    importance: Literal["sum", "product"] = "sum"  # how m, q, g combine
    mask_draw: Literal["per_latent", "per_token"] = "per_latent"
    mask_mode: Literal["importance", "random", "none"] = "importance"  # the controls
    ema_start: Literal["zero", "first_batch"] = "zero"
    masked_g: Literal["restored", "masked"] = "restored"
    min_keep: float = 0.5  # retention floor: fraction of latents never masked in a step
    warmup_steps: int = 1000  # optimizer steps without masking (paper)
    decoder_constraint: Literal["unit_norm", "l1_weighted"] = "unit_norm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.beta < 1.0:
            raise SAEConfigError(f"beta must be in [0, 1), got {self.beta}")
        if not self.r > 0.0 or not math.isfinite(self.r):
            raise SAEConfigError(f"r must be > 0 and finite, got {self.r}")
        if not self.c >= 0.0 or not math.isfinite(self.c):
            raise SAEConfigError(f"c must be >= 0 and finite, got {self.c}")
        if not self.l1_coefficient >= 0.0 or not math.isfinite(self.l1_coefficient):
            raise SAEConfigError(
                f"l1_coefficient must be >= 0 and finite, got {self.l1_coefficient}")
        if not 0.0 < self.min_keep <= 1.0:
            raise SAEConfigError(f"min_keep must be in (0, 1], got {self.min_keep}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int):
            raise SAEConfigError(f"warmup_steps must be an integer, got {self.warmup_steps!r}")
        if self.warmup_steps < 0:
            raise SAEConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name, allowed in (("importance", IMPORTANCE_MODES), ("mask_draw", MASK_DRAWS),
                              ("mask_mode", MASK_MODES), ("ema_start", EMA_STARTS),
                              ("masked_g", MASKED_G)):
            if getattr(self, name) not in allowed:
                raise SAEConfigError(
                    f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.decoder_constraint not in DECODER_CONSTRAINTS:
            raise SAEConfigError(
                f"decoder_constraint must be one of {list(DECODER_CONSTRAINTS)}, "
                f"got {self.decoder_constraint!r}")


# ---------------------------------------------------------------------------
# Pure pieces (no module state; each is unit-tested directly)
# ---------------------------------------------------------------------------


@torch.no_grad()
def firing_statistics(f_BF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This batch's magnitude m_i = mean_b f_bi and frequency q_i = mean_b [f_bi > 0]
    (float32 [F] each; f >= 0)."""
    n = f_BF.shape[0]
    m_F = f_BF.sum(0, dtype=torch.float32) / n
    q_F = torch.count_nonzero(f_BF, dim=0).to(torch.float32) / n
    return m_F, q_F


@torch.no_grad()
def contribution(f_BF: torch.Tensor, grad_BF: torch.Tensor) -> torch.Tensor:
    """sum_b |f_bi * grad_bi| (float32 [F]). With grad_bi = dL/df_bi of the batch-mean
    loss L = mean_b l_b, this is the batch mean of |f_bi * dl_b/df_bi|, the signal g."""
    return (f_BF * grad_BF).abs().sum(0, dtype=torch.float32)


class _ContributionTap(torch.autograd.Function):
    """Identity on the decoder's input f~; its backward pass also hands back, as the
    gradient of the dummy ``probe_F``, the signal g measured from the gradient it
    passes on (dL_rec/df~, docstring step 7): a statistic from the backward pass
    with no side effect, so it can run inside a compiled kernel. With ``keep_RF``
    and ``restore_F`` given, restore_F * f is added where masked before measuring
    (the masked latents' own missing term; formed here, not stored from the forward)."""

    @staticmethod
    def forward(ctx, f_tilde_BF, f_BF, keep_RF, restore_F, probe_F):
        ctx.save_for_backward(f_BF, keep_RF, restore_F)
        return f_tilde_BF.view_as(f_tilde_BF)

    @staticmethod
    def backward(ctx, grad_BF):
        f_BF, keep_RF, restore_F = ctx.saved_tensors
        seen_BF = grad_BF
        if restore_F is not None:
            seen_BF = grad_BF + f_BF * (1.0 - keep_RF.to(f_BF.dtype)) * restore_F
        return grad_BF, None, None, None, contribution(f_BF, seen_BF)


@kernel
def atm_loss(x_BD, W_enc, b_enc, W_dec, b_dec, keep_RF, lam, probe_F,
             restore: bool, unit_norm: bool):
    """(loss, mse, l1, f~, x_hat, fired, m, q) of one step: f = ReLU(x W_enc + b_enc),
    f~ = f * keep (``keep_RF`` None: no mask), x_hat = f~ W_dec + b_dec,
    loss = MSE + lam * L1(f~); fired counts f~'s nonzeros. m and q are the unmasked
    f's firing statistics; g comes back as ``probe_F``'s gradient
    (``_ContributionTap``). ``restore``: measure a masked latent at the
    reconstruction with itself restored. The returned f~ is detached."""
    f_BF = torch.relu(encoder_pre_acts(x_BD, W_enc, b_enc))
    f_tilde_BF = f_BF if keep_RF is None else f_BF * keep_RF.to(f_BF.dtype)
    n = x_BD.shape[0]
    # + 2 f ||d||^2 per token where masked (docstring, step 7), / n: the batch-mean loss
    restore_F = W_dec.detach().float().pow(2).sum(-1) * (2.0 / n) if restore else None
    f_rec_BF = _ContributionTap.apply(f_tilde_BF, f_BF.detach(), keep_RF, restore_F, probe_F)
    x_hat_BD = f_rec_BF @ W_dec + b_dec
    mse = reconstruction_loss(x_hat_BD, x_BD)
    if unit_norm:  # f >= 0: sum_i f_i, mean over the batch
        l1 = f_tilde_BF.sum(dtype=torch.float32) / n
    else:
        l1 = decoder_weighted_l1(f_tilde_BF, W_dec)
    m_F, q_F = firing_statistics(f_BF.detach())
    return (mse + lam * l1, mse, l1, f_tilde_BF.detach(), x_hat_BD,
            firing_counts(f_tilde_BF), m_F, q_F)


@torch.no_grad()
def ema_update(
    state: torch.Tensor, batch: torch.Tensor, beta: float, initialized: bool
) -> torch.Tensor:
    """First update: state = batch. Later: beta * state + (1 - beta) * batch."""
    if not initialized:
        return batch.clone()
    return beta * state + (1.0 - beta) * batch


@torch.no_grad()
def normalize_signal(s_F: torch.Tensor) -> torch.Tensor:
    """s / mean(s) over latents (mean guarded by _EPS; an all-zero signal stays zero)."""
    return s_F / s_F.mean().clamp_min(_EPS)


@torch.no_grad()
def importance_scores(
    m_F: torch.Tensor, q_F: torch.Tensor, g_F: torch.Tensor, mode: str = "sum"
) -> torch.Tensor:
    """I_i from the three signals, each normalised by its mean over latents."""
    parts = [normalize_signal(s) for s in (m_F, q_F, g_F)]
    if mode == "sum":
        return parts[0] + parts[1] + parts[2]
    if mode == "product":
        return parts[0] * parts[1] * parts[2]
    raise SAEConfigError(f"unknown importance mode {mode!r}")


@torch.no_grad()
def importance_threshold(I_F: torch.Tensor, c: float) -> torch.Tensor:
    """theta = mean(I) + c * std(I), population std over latents (scalar tensor)."""
    return I_F.mean() + c * I_F.std(correction=0)


@torch.no_grad()
def mask_probability(I_F: torch.Tensor, theta: torch.Tensor | float, r: float) -> torch.Tensor:
    """p_i = 1 - exp(-r (theta - I_i) / theta) below theta, 0 at/above it; 0 if theta <= 0."""
    theta = torch.as_tensor(theta, dtype=I_F.dtype, device=I_F.device)
    if not bool(theta > 0):
        return torch.zeros_like(I_F)
    p = -torch.expm1(-r * (theta - I_F) / theta)
    return torch.where(I_F < theta, p, torch.zeros_like(p)).clamp(0.0, _P_MAX)


def max_masked(n_latents: int, min_keep: float) -> int:
    """Most latents that may be masked in one row: F - ceil(min_keep * F)."""
    n_keep = math.ceil(min_keep * n_latents - 1e-9)
    return max(0, n_latents - max(n_keep, 0))


@torch.no_grad()
def draw_masked(p_F: torch.Tensor, n_rows: int, generator: torch.Generator) -> torch.Tensor:
    """Bool [n_rows, F]: True where masked (probability p_i), one uniform per entry."""
    u = torch.rand((n_rows, p_F.shape[0]), generator=generator, device=generator.device,
                   dtype=torch.float32).to(p_F.device)
    return u < p_F.to(torch.float32)


@torch.no_grad()
def apply_retention_floor(
    masked_RF: torch.Tensor, I_F: torch.Tensor, min_keep: float
) -> torch.Tensor:
    """Unmask the most important drawn-masked latents until, in every row, at most
    F - ceil(min_keep * F) are masked (the least important ones stay masked).
    Ties in I are broken by latent index (lower index counts as less important).
    ``I_F`` may also be [R, F]: one ranking per row."""
    F = masked_RF.shape[-1]
    limit = max_masked(F, min_keep)
    if not bool((masked_RF.sum(-1) > limit).any()):
        return masked_RF
    # Rank drawn-masked latents by importance, ascending; kept ones sort last.
    score = torch.where(masked_RF, I_F.to(torch.float64).expand_as(masked_RF),
                        torch.full_like(masked_RF, math.inf, dtype=torch.float64))
    order = torch.sort(score, dim=-1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(F, device=order.device).expand_as(order))
    return masked_RF & (rank < limit)


# ---------------------------------------------------------------------------
# The variant
# ---------------------------------------------------------------------------


class ATMSAE(SAE):
    architecture: ClassVar[str] = "atm"
    config_cls: ClassVar[type[SAEConfig]] = ATMConfig
    saelens_architecture: ClassVar[str] = "standard"
    subtract_b_dec: ClassVar[bool] = False

    cfg: ATMConfig

    def __init__(self, cfg: ATMConfig):
        super().__init__(cfg)
        # Instance attributes shadow the base ClassVars (the trainer reads them).
        self.unit_norm_decoder = cfg.decoder_constraint == "unit_norm"
        self.decoder_init_norm = 1.0 if self.unit_norm_decoder else 0.1
        F = cfg.d_sae
        self.register_buffer("ema_magnitude", torch.zeros(F))
        self.register_buffer("ema_frequency", torch.zeros(F))
        self.register_buffer("ema_contribution", torch.zeros(F))
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    # --------------------------------------------------------------- state
    @torch.no_grad()
    def update_state(self, m: torch.Tensor, q: torch.Tensor, g: torch.Tensor) -> None:
        """EMA-update the state from one batch's m, q, g (``firing_statistics``,
        ``contribution``)."""
        init = self.cfg.ema_start == "zero" or bool(self.ema_updates > 0)
        beta = self.cfg.beta
        self.ema_magnitude.copy_(ema_update(self.ema_magnitude, m, beta, init))
        self.ema_frequency.copy_(ema_update(self.ema_frequency, q, beta, init))
        self.ema_contribution.copy_(ema_update(self.ema_contribution, g, beta, init))
        self.ema_updates += 1

    @torch.no_grad()
    def importance(self) -> torch.Tensor:
        return importance_scores(self.ema_magnitude, self.ema_frequency, self.ema_contribution,
                                 self.cfg.importance)

    @torch.no_grad()
    def mask_probabilities(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(I, theta, p) from the current EMA state."""
        I = self.importance()
        theta = importance_threshold(I, self.cfg.c)
        return I, theta, mask_probability(I, theta, self.cfg.r)

    @torch.no_grad()
    def sample_keep(self, n_tokens: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Keep mask [1, F] (per_latent) or [n_tokens, F] (per_token), as f's dtype
        0/1 floats, plus detached diagnostics. ``mask_mode`` "random" draws every
        latent at mean(p) and lets the floor drop a random subset ("none" never
        gets here)."""
        I, theta, p = self.mask_probabilities()
        rows = n_tokens if self.cfg.mask_draw == "per_token" else 1
        if self.cfg.mask_mode == "random":
            p_draw = p.mean().expand_as(p)
            floor_order = torch.rand((rows, p.shape[0]), generator=generator,
                                     device=generator.device)
        else:
            p_draw, floor_order = p, I
        masked = draw_masked(p_draw, rows, generator)
        masked = apply_retention_floor(masked, floor_order.to(p.device), self.cfg.min_keep)
        keep = (~masked).to(self.W_dec.dtype)
        info = {"theta": theta, "mask_prob_mean": p.mean(),
                "masked_frac": masked.to(torch.float32).mean()}
        return keep, info

    # ------------------------------------------------------------ training
    def training_forward(self, x_BD: torch.Tensor, ctx: StepContext) -> LossOutput:
        """The masked loss; its backward pass updates the EMA state (module docstring).
        Eager here: the mask draw (RNG, retention floor); in ``atm_loss``: the rest."""
        cfg = self.cfg
        masking = ctx.step >= cfg.warmup_steps and cfg.mask_mode != "none"
        if masking:
            keep, info = self.sample_keep(x_BD.shape[0], ctx.generator)
        else:
            keep = None
            with torch.no_grad():
                _, theta, p = self.mask_probabilities()
            info = {"theta": theta, "mask_prob_mean": p.mean(),
                    "masked_frac": torch.zeros((), device=x_BD.device)}
        coeff = cfg.l1_coefficient * ctx.warmup(cfg.coeff_warmup_frac)
        probe_F = torch.zeros(cfg.d_sae, device=x_BD.device, requires_grad=True)
        loss, mse, l1, f_tilde, x_hat_BD, fired_F, m_F, q_F = atm_loss(
            x_BD, self.W_enc, self.b_enc, self.W_dec, self.b_dec, keep,
            torch.tensor(coeff, device=x_BD.device), probe_F,
            masking and cfg.masked_g == "restored", self.unit_norm_decoder)
        probe_F.register_hook(lambda g_F: self.update_state(m_F, q_F, g_F))
        terms = {
            "mse": mse.detach(),
            "l1": l1.detach(),
            "l1_coefficient": torch.tensor(coeff, device=x_BD.device),
            "masking_active": torch.tensor(float(masking), device=x_BD.device),
            **{k: v.detach().float() for k, v in info.items()},
        }
        return LossOutput(loss=loss, terms=terms, x_hat_BD=x_hat_BD, fired_F=fired_F,
                          latents=f_tilde)


# Its controls (spec names atm-random, atm-none) are drawn in lighter blues
# (report.style.CONTROLS).
register_variant(ATMSAE, VariantInfo(
    PlotStyle("ATM", "#0072B2", "o"),
    toy_params={"l1_coefficient": 1.0, "warmup_steps": 100},
    toy_sweep=("l1_coefficient", (0.3, 1.0, 3.0, 6.0))))
