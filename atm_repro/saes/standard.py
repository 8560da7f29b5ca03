"""Standard SAE: ReLU + decoder-norm-weighted L1 (Anthropic's "April update" form).

f = ReLU(x W_enc + b_enc); loss = MSE + lambda * sum_i f_i ||d_i||. Weighting
the L1 by decoder norms removes the shortcut of shrinking f while growing the
decoder, so no unit-norm constraint is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atm_repro.saes.base import (
    SAE,
    LossOutput,
    SAEConfig,
    SAEConfigError,
    StepContext,
    reconstruction_loss,
)


@dataclass(frozen=True)
class StandardConfig(SAEConfig):
    l1_coefficient: float = 5.0  # lambda on unit-scaled inputs (E||x||^2 = d_in)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l1_coefficient < 0:
            raise SAEConfigError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")


def decoder_weighted_l1(f_BF: torch.Tensor, W_dec_FD: torch.Tensor) -> torch.Tensor:
    """sum_i f_i ||d_i||, mean over the batch (f >= 0, so |f_i| = f_i). Summing
    over tokens first avoids a [B, F] product in the forward and backward pass.
    In float32 under bfloat16 autocast too (an elementwise product, which autocast
    leaves alone), as SAELens computes it."""
    return (f_BF.float().sum(0) * W_dec_FD.float().norm(dim=-1)).sum() / f_BF.shape[0]


class StandardSAE(SAE):
    architecture = "standard"
    config_cls = StandardConfig
    saelens_architecture = "standard"
    subtract_b_dec = False
    unit_norm_decoder = False
    decoder_init_norm = 0.1
    cfg: StandardConfig

    def training_forward(self, x_BD: torch.Tensor, ctx: StepContext) -> LossOutput:
        f_BF = self.encode(x_BD)
        x_hat_BD = self.decode(f_BF)
        mse = reconstruction_loss(x_hat_BD, x_BD)
        l1 = decoder_weighted_l1(f_BF, self.W_dec)
        lam = self.cfg.l1_coefficient * ctx.warmup(self.cfg.coeff_warmup_frac)
        return LossOutput(
            loss=mse + lam * l1,
            terms={"mse": mse.detach(), "l1": l1.detach()},
            latents_BF=f_BF,
            x_hat_BD=x_hat_BD,
        )
