"""JumpReLU SAE (Rajamanoharan et al. 2024): a learnt per-latent threshold and an L0 penalty.

f = z * H(z - theta), theta = exp(log_threshold); loss = MSE + lambda * L0.
H has no useful gradient, so theta learns through straight-through
pseudo-gradients with a rectangle kernel K(u) = 1[|u| < 1/2] of bandwidth eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

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


@dataclass(frozen=True)
class JumpReLUConfig(SAEConfig):
    # lambda on unit-scaled inputs (E||x||^2 = d_in); ~1 gives L0 of tens at d_in ~ 640,
    # hit a target L0 by sweeping it.
    l0_coefficient: float = 1.0
    bandwidth: float = 0.001  # eps of the rectangle kernel
    init_threshold: float = 0.001  # theta at initialisation, every latent
    # Adam moves log(theta) by about lr per step whatever the gradient's size, so in a
    # short run (hundreds of steps) the thresholds stay near their start and L0 is set
    # by init_threshold, not by l0_coefficient. This multiplies the thresholds' lr.
    threshold_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l0_coefficient < 0:
            raise SAEConfigError(f"l0_coefficient must be >= 0, got {self.l0_coefficient}")
        if self.bandwidth <= 0:
            raise SAEConfigError(f"bandwidth must be > 0, got {self.bandwidth}")
        if self.init_threshold <= 0:
            raise SAEConfigError(f"init_threshold must be > 0, got {self.init_threshold}")
        if not self.threshold_lr_scale > 0 or not math.isfinite(self.threshold_lr_scale):
            raise SAEConfigError(
                f"threshold_lr_scale must be > 0 and finite, got {self.threshold_lr_scale}")


def _rectangle(z_BF: torch.Tensor, theta_F: torch.Tensor, eps: float) -> torch.Tensor:
    """K((z - theta) / eps) with K(u) = 1[|u| < 1/2]."""
    return (((z_BF - theta_F) / eps).abs() < 0.5).to(z_BF.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """f = z * H(z - theta); df/dz = H(z - theta), df/dtheta = -(theta/eps) K((z - theta)/eps)."""

    @staticmethod
    def forward(ctx, z_BF: torch.Tensor, theta_F: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z_BF, theta_F)
        ctx.eps = eps
        return z_BF * (z_BF > theta_F)

    @staticmethod
    def backward(ctx, grad_BF: torch.Tensor):
        z_BF, theta_F = ctx.saved_tensors
        grad_z = grad_BF * (z_BF > theta_F)
        grad_theta = -(theta_F / ctx.eps) * _rectangle(z_BF, theta_F, ctx.eps) * grad_BF
        return grad_z, grad_theta.sum_to_size(theta_F.shape), None


class StepFunction(torch.autograd.Function):
    """H(z - theta); no gradient w.r.t. z, dH/dtheta = -(1/eps) K((z - theta)/eps)."""

    @staticmethod
    def forward(ctx, z_BF: torch.Tensor, theta_F: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z_BF, theta_F)
        ctx.eps = eps
        return (z_BF > theta_F).to(z_BF.dtype)

    @staticmethod
    def backward(ctx, grad_BF: torch.Tensor):
        z_BF, theta_F = ctx.saved_tensors
        grad_theta = -(1.0 / ctx.eps) * _rectangle(z_BF, theta_F, ctx.eps) * grad_BF
        return None, grad_theta.sum_to_size(theta_F.shape), None


@kernel
def jumprelu_loss(x_BD, W_enc, b_enc, W_dec, b_dec, log_threshold_F, lam, eps: float):
    """(loss, mse, l0, f, x_hat, fired) of one step (f detached): MSE + lam * L0."""
    z_BF = encoder_pre_acts(x_BD, W_enc, b_enc)
    theta_F = log_threshold_F.exp()
    f_BF = JumpReLUFunction.apply(z_BF, theta_F, eps)
    x_hat_BD = f_BF @ W_dec + b_dec
    mse = reconstruction_loss(x_hat_BD, x_BD)
    l0 = StepFunction.apply(z_BF, theta_F, eps).sum(-1, dtype=torch.float32).mean()
    return mse + lam * l0, mse, l0, f_BF.detach(), x_hat_BD, firing_counts(f_BF)


class JumpReLUSAE(SAE):
    architecture = "jumprelu"
    config_cls = JumpReLUConfig
    saelens_architecture = "jumprelu"
    subtract_b_dec = False
    # Unit-norm decoder rows (as Gemma Scope) pin the scale of z, so the fixed
    # bandwidth eps means the same thing throughout training.
    unit_norm_decoder = True
    decoder_init_norm = 1.0
    adam_betas = (0.0, 0.999)
    cfg: JumpReLUConfig

    def __init__(self, cfg: JumpReLUConfig):
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(
            torch.full((cfg.d_sae,), math.log(cfg.init_threshold))
        )

    def activation(self, z_BF: torch.Tensor) -> torch.Tensor:
        return z_BF * (z_BF > self.log_threshold.exp())

    def param_groups(self) -> list[dict]:
        """The thresholds learn at ``threshold_lr_scale`` times the base lr."""
        rest = [p for n, p in self.named_parameters() if n != "log_threshold"]
        return [{"params": rest, "lr_scale": 1.0},
                {"params": [self.log_threshold], "lr_scale": self.cfg.threshold_lr_scale}]

    def training_forward(self, x_BD: torch.Tensor, ctx: StepContext) -> LossOutput:
        lam = self.cfg.l0_coefficient * ctx.warmup(self.cfg.coeff_warmup_frac)
        loss, mse, l0, f_BF, x_hat_BD, fired_F = jumprelu_loss(
            x_BD, self.W_enc, self.b_enc, self.W_dec, self.b_dec, self.log_threshold,
            torch.tensor(lam, device=x_BD.device), self.cfg.bandwidth)
        return LossOutput(
            loss=loss,
            terms={"mse": mse.detach(), "l0": l0.detach()},
            x_hat_BD=x_hat_BD,
            fired_F=fired_F,
            latents=f_BF,
        )

    def scale_thresholds(self, latent_scale_F: torch.Tensor) -> None:
        self.log_threshold.add_(latent_scale_F.log())

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        return {**super().inference_tensors(), "threshold": self.log_threshold.detach().exp()}

    def state_from_inference(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        threshold_F = tensors["threshold"].float()
        if bool((threshold_F < 0).any()):
            raise SAEConfigError("negative JumpReLU thresholds are not supported")
        return {**super().state_from_inference(tensors), "log_threshold": threshold_F.log()}


# On the toy benchmark, thresholds start near the scaled toy features' pre-activations
# (~5): from the default 0.001 a few hundred steps cannot raise them to matter.
register_variant(JumpReLUSAE, VariantInfo(
    PlotStyle("JumpReLU", "#009E73", "P"), reads_saelens=True,
    toy_params={"l0_coefficient": 3.0, "init_threshold": 1.0, "bandwidth": 0.2},
    toy_sweep=("l0_coefficient", (0.3, 3.0, 30.0, 300.0))))
