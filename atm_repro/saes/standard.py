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
    encoder_pre_acts,
    firing_counts,
    kernel,
    reconstruction_loss,
)
from atm_repro.saes.registry import PlotStyle, VariantInfo, register_variant


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
    f_F = f_BF.sum(0, dtype=torch.float32)
    return (f_F * W_dec_FD.float().norm(dim=-1)).sum() / f_BF.shape[0]


@kernel
def standard_loss(x_BD, W_enc, b_enc, W_dec, b_dec, lam):
    """(loss, mse, l1, f, x_hat, fired) of one step (f detached): MSE + lam * sum_i f_i ||d_i||."""
    f_BF = torch.relu(encoder_pre_acts(x_BD, W_enc, b_enc))
    x_hat_BD = f_BF @ W_dec + b_dec
    mse = reconstruction_loss(x_hat_BD, x_BD)
    l1 = decoder_weighted_l1(f_BF, W_dec)
    return mse + lam * l1, mse, l1, f_BF.detach(), x_hat_BD, firing_counts(f_BF)


class StandardSAE(SAE):
    architecture = "standard"
    config_cls = StandardConfig
    saelens_architecture = "standard"
    subtract_b_dec = False
    unit_norm_decoder = False
    decoder_init_norm = 0.1
    cfg: StandardConfig

    def training_forward(self, x_BD: torch.Tensor, ctx: StepContext) -> LossOutput:
        lam = self.cfg.l1_coefficient * ctx.warmup(self.cfg.coeff_warmup_frac)
        loss, mse, l1, f_BF, x_hat_BD, fired_F = standard_loss(
            x_BD, self.W_enc, self.b_enc, self.W_dec, self.b_dec,
            torch.tensor(lam, device=x_BD.device))
        return LossOutput(
            loss=loss,
            terms={"mse": mse.detach(), "l1": l1.detach()},
            x_hat_BD=x_hat_BD,
            fired_F=fired_F,
            latents=f_BF,
        )


register_variant(StandardSAE, VariantInfo(
    PlotStyle("standard (L1)", "#000000", "*"), reads_saelens=True,
    toy_params={"l1_coefficient": 1.0},
    toy_sweep=("l1_coefficient", (0.1, 0.3, 1.0, 3.0))))
