"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations of each token.

Also home of what the TopK family (batchtopk, matryoshka) shares: a sparse
decode that touches only the active latents, and the AuxK loss that feeds the
residual to dead latents so they can come back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from atm_repro.saes.base import (
    SAE,
    LossOutput,
    SAEConfig,
    SAEConfigError,
    StepContext,
    reconstruction_loss,
)


@dataclass(frozen=True)
class TopKConfig(SAEConfig):
    k: int = 40  # active latents per token (the paper's TopK L0)
    aux_k: int | None = None  # dead latents AuxK may use per token; None = d_in // 2
    aux_alpha: float = 1 / 32  # AuxK weight in the loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.k <= self.d_sae:
            raise SAEConfigError(f"k must be in [1, d_sae={self.d_sae}], got {self.k}")
        if self.aux_k is not None and self.aux_k < 1:
            raise SAEConfigError(f"aux_k must be >= 1 (or None for d_in // 2), got {self.aux_k}")
        if self.aux_alpha < 0:
            raise SAEConfigError(f"aux_alpha must be >= 0, got {self.aux_alpha}")

    @property
    def resolved_aux_k(self) -> int:
        """aux_k, defaulting to d_in // 2 (at least 1, so tiny d_in still gets AuxK)."""
        return self.aux_k if self.aux_k is not None else max(1, self.d_in // 2)


def topk_activation(z_BF: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of the k largest pre-activations of each row; everything else 0."""
    vals_BK, idx_BK = z_BF.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(z_BF).scatter(-1, idx_BK, torch.relu(vals_BK))


# Above this fraction of nonzero latents a dense matmul is faster (CPU crossover
# measured near 1/25 at B=512, D=640, k=40).
SPARSE_DECODE_MAX_DENSITY = 1 / 32


def sparse_decode(f_BF: torch.Tensor, W_dec_FD: torch.Tensor) -> torch.Tensor:
    """f_BF @ W_dec_FD (no bias), reading only the decoder rows of nonzero latents
    when f is sparse enough for that to pay off.

    Same values, and the same W_dec gradient, as the dense product; the gradient
    w.r.t. f may be 0 where f == 0, which the TopK-style selections block anyway.
    """
    rows_N, cols_N = f_BF.nonzero(as_tuple=True)  # row-major, so grouped by row
    if rows_N.numel() > SPARSE_DECODE_MAX_DENSITY * f_BF.numel():
        return f_BF @ W_dec_FD
    counts_B = torch.bincount(rows_N, minlength=f_BF.shape[0])
    offsets_B = counts_B.cumsum(0) - counts_B
    return F.embedding_bag(
        cols_N, W_dec_FD, offsets_B, mode="sum", per_sample_weights=f_BF[rows_N, cols_N]
    )


def auxk_loss(
    z_BF: torch.Tensor,
    residual_BD: torch.Tensor,
    W_dec_FD: torch.Tensor,
    dead_mask_F: torch.Tensor,
    k_aux: int,
) -> torch.Tensor:
    """Gao et al.'s AuxK: reconstruct the (detached) residual from the top ``k_aux``
    dead pre-activations, without bias, as MSE normalised by the residual's variance
    over the batch. Exactly 0 when no latent is dead."""
    n_dead = int(dead_mask_F.sum())
    if n_dead == 0:
        return z_BF.new_zeros(())
    z_dead_BF = z_BF.masked_fill(~dead_mask_F, float("-inf"))
    vals_BK, idx_BK = z_dead_BF.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    f_aux_BF = torch.zeros_like(z_BF).scatter(-1, idx_BK, torch.relu(vals_BK))
    e_BD = residual_BD.detach()
    e_hat_BD = sparse_decode(f_aux_BF, W_dec_FD)
    variance = reconstruction_loss(e_BD.mean(0, keepdim=True), e_BD)
    return reconstruction_loss(e_hat_BD, e_BD) / variance.clamp_min(1e-12)


class TopKSAE(SAE):
    """z = (x - b_dec) W_enc + b_enc; f = ReLU(TopK_k(z)); unit-norm decoder; loss
    = MSE + aux_alpha * AuxK. Subclasses change ``train_activation`` (which latents
    fire in training) or ``reconstruct`` (the reconstruction loss)."""

    architecture = "topk"
    config_cls = TopKConfig
    saelens_architecture = "topk"
    subtract_b_dec = True
    unit_norm_decoder = True
    decoder_init_norm = 1.0
    cfg: TopKConfig

    def activation(self, z_BF: torch.Tensor) -> torch.Tensor:
        return topk_activation(z_BF, self.cfg.k)

    def train_activation(self, z_BF: torch.Tensor) -> torch.Tensor:
        """Latents used in training; for TopK the inference ones."""
        return self.activation(z_BF)

    def reconstruct(
        self, f_BF: torch.Tensor, x_BD: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(x_hat, reconstruction loss to optimise, its logged terms)."""
        x_hat_BD = sparse_decode(f_BF, self.W_dec) + self.b_dec
        mse = reconstruction_loss(x_hat_BD, x_BD)
        return x_hat_BD, mse, {"mse": mse.detach()}

    def training_forward(self, x_BD: torch.Tensor, ctx: StepContext) -> LossOutput:
        z_BF = self.pre_acts(x_BD)
        f_BF = self.train_activation(z_BF)
        x_hat_BD, rec_loss, terms = self.reconstruct(f_BF, x_BD)
        auxk = auxk_loss(
            z_BF, x_BD - x_hat_BD, self.W_dec, ctx.dead_mask_F, self.cfg.resolved_aux_k
        )
        terms["auxk"] = auxk.detach()
        return LossOutput(
            loss=rec_loss + self.cfg.aux_alpha * auxk,
            terms=terms,
            latents_BF=f_BF,
            x_hat_BD=x_hat_BD,
        )

    def saelens_cfg(self) -> dict:
        return {"k": self.cfg.k}
