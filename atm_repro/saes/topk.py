"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations of each token.

Also home of what the TopK family (batchtopk, matryoshka) shares: a sparse
decode that touches only the active latents, and the AuxK loss that feeds the
residual to dead latents so they can come back.
"""

from __future__ import annotations

import warnings
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
from atm_repro.saes.registry import PlotStyle, VariantInfo, register_variant


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


# Above this fraction of stored latents a dense matmul is faster (CPU forward +
# backward crossover measured near 0.11 at B=512, D=640, F=2048).
SPARSE_DECODE_MAX_DENSITY = 1 / 10
# The CSR kernels warn once per process that sparse CSR support is "beta".
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta",
                        category=UserWarning)


class _CSRDecode(torch.autograd.Function):
    """f @ W for f given in CSR form; gradients for f's stored values and for W.

    Backward: d vals = (grad @ W^T) sampled at f's entries (``sampled_addmm``),
    dW = f^T @ grad; both touch only the stored entries.
    """

    @staticmethod
    def forward(ctx, vals_N, crow_R, cols_N, W_FD, n_rows: int):
        ctx.save_for_backward(vals_N, crow_R, cols_N, W_FD)
        ctx.n_rows = n_rows
        with torch.autocast(W_FD.device.type, enabled=False):  # no bfloat16 CSR kernels
            return _csr(vals_N, crow_R, cols_N, (n_rows, W_FD.shape[0])) @ W_FD

    @staticmethod
    def backward(ctx, grad_BD):
        vals_N, crow_R, cols_N, W_FD = ctx.saved_tensors
        shape = (ctx.n_rows, W_FD.shape[0])
        grad_vals = grad_W = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(torch.zeros_like(vals_N), crow_R, cols_N, shape)
            grad_vals = torch.sparse.sampled_addmm(pattern, grad_BD, W_FD.T, beta=0.0).values()
        if ctx.needs_input_grad[3]:
            grad_W = _csr(vals_N, crow_R, cols_N, shape).t() @ grad_BD
        return grad_vals, None, None, grad_W, None


def _csr(vals_N, crow_R, cols_N, shape) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow_R, cols_N, vals_N, shape, check_invariants=False)


@dataclass
class ActiveLatents:
    """A batch's selected latents in CSR form: row b holds latents
    ``cols[crow[b]:crow[b + 1]]`` with values ``vals`` (which carry autograd;
    a stored value may be 0). Decoding reads only their decoder rows."""

    vals_N: torch.Tensor
    cols_N: torch.Tensor
    crow_R: torch.Tensor  # [B + 1] row offsets
    n_latents: int

    @property
    def n_rows(self) -> int:
        return self.crow_R.numel() - 1

    @classmethod
    def from_topk(cls, vals_BK: torch.Tensor, idx_BK: torch.Tensor, n_latents: int):
        """k entries per row, as ``torch.topk`` returns them."""
        B, k = idx_BK.shape
        crow = torch.arange(0, B * k + 1, k, device=idx_BK.device)
        return cls(vals_BK.reshape(-1), idx_BK.reshape(-1), crow, n_latents)

    @classmethod
    def from_flat(cls, vals_N: torch.Tensor, flat_idx_N: torch.Tensor, n_rows: int,
                  n_latents: int):
        """Entries given by flat indices row * n_latents + col, in any order."""
        flat_sorted, order = flat_idx_N.sort()
        rows = flat_sorted // n_latents
        counts = torch.bincount(rows, minlength=n_rows)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(vals_N[order], flat_sorted % n_latents, crow, n_latents)

    def rows(self) -> torch.Tensor:
        return torch.repeat_interleave(
            torch.arange(self.n_rows, device=self.crow_R.device), self.crow_R.diff())

    def fired(self) -> torch.Tensor:
        """Per latent, the rows in which its stored value is nonzero (int64 [F])."""
        return torch.bincount(self.cols_N[self.vals_N.detach() != 0], minlength=self.n_latents)

    def to_dense(self) -> torch.Tensor:
        """[B, F] with the stored values (differentiable)."""
        out = self.vals_N.new_zeros(self.n_rows, self.n_latents)
        return out.index_put((self.rows(), self.cols_N), self.vals_N)

    def columns(self, start: int, end: int) -> "ActiveLatents":
        """The entries of latents start..end-1, renumbered from 0."""
        inside = (self.cols_N >= start) & (self.cols_N < end)
        counts = torch.bincount(self.rows()[inside], minlength=self.n_rows)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return ActiveLatents(self.vals_N[inside], self.cols_N[inside] - start, crow, end - start)

    def decode(self, W_dec_FD: torch.Tensor) -> torch.Tensor:
        """self @ W_dec_FD (no bias): sparse kernels, or a dense matmul when the
        entries are too many for sparse kernels to pay off. Under bfloat16 autocast the
        sparse product stays in W_dec_FD's dtype (CPU has no bfloat16 CSR kernels)."""
        if self.vals_N.numel() > SPARSE_DECODE_MAX_DENSITY * self.n_rows * self.n_latents:
            return self.to_dense() @ W_dec_FD
        return _CSRDecode.apply(self.vals_N.to(W_dec_FD.dtype), self.crow_R, self.cols_N,
                                W_dec_FD, self.n_rows)


def auxk_loss(
    z_BF: torch.Tensor,
    residual_BD: torch.Tensor,
    W_dec_FD: torch.Tensor,
    dead_mask_F: torch.Tensor,
    k_aux: int,
) -> torch.Tensor:
    """Gao et al.'s AuxK: reconstruct the (detached) residual from the top ``k_aux``
    dead pre-activations, without bias, as MSE normalised by the residual's variance
    over the batch. Exactly 0 when no latent is dead.

    Works on the dead columns only (G of them): the top-k runs over [B, G], not a
    masked [B, F], and the decode is a dense [B, G] @ [G, D] product, since k_aux
    (default d_in / 2) is a large share of G. Written as a masked top-k over all F
    latents and a sparse decode, it made the TopK step at width 4096 with 18% dead
    latents take 2.2x as long as with none (docs/benchmarks.md, "AuxK")."""
    dead_G = dead_mask_F.nonzero().squeeze(1)
    if dead_G.numel() == 0:
        return z_BF.new_zeros(())
    z_BG = z_BF.index_select(1, dead_G)
    vals_BK, idx_BK = z_BG.topk(min(k_aux, dead_G.numel()), dim=-1, sorted=False)
    aux_BG = torch.zeros_like(z_BG).scatter(-1, idx_BK, torch.relu(vals_BK))
    e_BD = residual_BD.detach()
    e_hat_BD = aux_BG @ W_dec_FD.index_select(0, dead_G)
    variance = reconstruction_loss(e_BD.mean(0, keepdim=True), e_BD)
    return reconstruction_loss(e_hat_BD, e_BD) / variance.clamp_min(1e-12)


class TopKSAE(SAE):
    """z = (x - b_dec) W_enc + b_enc; f = ReLU(TopK_k(z)); unit-norm decoder; loss
    = MSE + aux_alpha * AuxK. Subclasses change ``train_latents`` (which latents
    fire in training) or ``reconstruct`` (the reconstruction loss)."""

    architecture = "topk"
    config_cls = TopKConfig
    saelens_architecture = "topk"
    subtract_b_dec = True
    unit_norm_decoder = True
    decoder_init_norm = 1.0
    elementwise_activation = False
    cfg: TopKConfig

    def activation(self, z_BF: torch.Tensor) -> torch.Tensor:
        return topk_activation(z_BF, self.cfg.k)

    def train_latents(self, z_BF: torch.Tensor) -> ActiveLatents:
        """Latents used in training; for TopK the inference ones."""
        vals_BK, idx_BK = z_BF.topk(self.cfg.k, dim=-1, sorted=False)
        return ActiveLatents.from_topk(torch.relu(vals_BK), idx_BK, z_BF.shape[1])

    def reconstruct(
        self, latents: ActiveLatents, x_BD: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(x_hat, reconstruction loss to optimise, its logged terms)."""
        x_hat_BD = latents.decode(self.W_dec) + self.b_dec
        mse = reconstruction_loss(x_hat_BD, x_BD)
        return x_hat_BD, mse, {"mse": mse.detach()}

    def training_forward(self, x_BD: torch.Tensor, ctx: StepContext) -> LossOutput:
        z_BF = self.pre_acts(x_BD)
        latents = self.train_latents(z_BF)
        x_hat_BD, rec_loss, terms = self.reconstruct(latents, x_BD)
        auxk = auxk_loss(
            z_BF, x_BD - x_hat_BD, self.W_dec, ctx.dead_mask_F, self.cfg.resolved_aux_k
        )
        terms["auxk"] = auxk.detach()
        return LossOutput(
            loss=rec_loss + self.cfg.aux_alpha * auxk,
            terms=terms,
            x_hat_BD=x_hat_BD,
            fired_F=latents.fired(),
            latents=lambda: latents.to_dense().detach(),
        )

    def saelens_cfg(self) -> dict:
        return {"k": self.cfg.k}

    @classmethod
    def params_from_saelens(cls, saelens_cfg: dict) -> dict:
        return {"k": saelens_cfg["k"]}


register_variant(TopKSAE, VariantInfo(
    PlotStyle("TopK", "#D55E00", "s"), reads_saelens=True,
    toy_params={"k": 2}, toy_sweep=("k", (1.0, 2.0, 4.0, 8.0))))
