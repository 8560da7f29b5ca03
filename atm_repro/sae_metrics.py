"""Activation metrics of an SAE on activation rows: the statistics the trainer's
post-training summary and the core eval (``evals.core``) share.

Sums are accumulated batch by batch in float64 (never concatenated); see
docs/metrics.md, "Core", for the definitions. Training depends on this module,
so ``saes.io.sae_code_version`` hashes it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class CoreStats:
    """Streaming sums for the activation metrics; ``update`` per batch, then ``compute``.

    The total variance uses Chan et al.'s pairwise merge of (count, mean,
    sum of squared deviations), which stays accurate for large-norm residuals.
    """

    def __init__(self, d_sae: int, fire_eps: float = 0.0):
        self.fire_eps = fire_eps
        self.n = 0
        self.mean_D: torch.Tensor | None = None
        self.m2 = 0.0  # sum over tokens and dims of (x - mean)^2
        self.sq_err = 0.0
        self.cos_sum = 0.0
        self.l0_sum = 0.0
        self.l1_sum = 0.0
        self.fire_count_F = torch.zeros(d_sae, dtype=torch.int64)

    @torch.no_grad()
    def update(self, x_ND: torch.Tensor, x_hat_ND: torch.Tensor,
               latents_NF: torch.Tensor) -> "CoreStats":
        if x_ND.shape != x_hat_ND.shape or x_ND.ndim != 2:
            raise ValueError(f"x and x_hat must both be [N, D], got {tuple(x_ND.shape)} "
                             f"and {tuple(x_hat_ND.shape)}")
        if latents_NF.shape != (x_ND.shape[0], self.fire_count_F.shape[0]):
            raise ValueError(f"latents must be [{x_ND.shape[0]}, {self.fire_count_F.shape[0]}], "
                             f"got {tuple(latents_NF.shape)}")
        n_b = x_ND.shape[0]
        if n_b == 0:
            return self
        x = x_ND.detach().double().cpu()
        x_hat = x_hat_ND.detach().double().cpu()
        f = latents_NF.detach().double().cpu()

        mean_b = x.mean(0)
        m2_b = float((x - mean_b).pow(2).sum())
        if self.mean_D is None:
            self.mean_D, self.m2 = mean_b, m2_b
        else:
            total = self.n + n_b
            delta = mean_b - self.mean_D
            self.m2 += m2_b + float(delta.pow(2).sum()) * self.n * n_b / total
            self.mean_D = self.mean_D + delta * (n_b / total)
        self.n += n_b

        self.sq_err += float((x - x_hat).pow(2).sum())
        self.cos_sum += float(F.cosine_similarity(x, x_hat, dim=-1, eps=1e-12).sum())
        fires = f > self.fire_eps
        self.l0_sum += float(fires.sum())
        self.l1_sum += float(f.sum())
        self.fire_count_F += fires.sum(0)
        return self

    @property
    def density_F(self) -> np.ndarray:
        """Fraction of tokens on which each latent fired."""
        return (self.fire_count_F.double() / max(self.n, 1)).numpy()

    def compute(self, dense_threshold: float = 0.1) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no tokens were accumulated")
        d_in = self.mean_D.shape[0]
        fvu = self.sq_err / self.m2 if self.m2 > 0 else float("nan")
        density = self.density_F
        return {
            "n_tokens": self.n,
            "l0": self.l0_sum / self.n,
            "l1": self.l1_sum / self.n,
            "mse": self.sq_err / self.n,
            "mse_per_element": self.sq_err / (self.n * d_in),
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "cosine_similarity": self.cos_sum / self.n,
            "frac_dead": float((density == 0).mean()),
            "frac_dense": float((density > dense_threshold).mean()),
        }


def core_metrics(x_ND: torch.Tensor, x_hat_ND: torch.Tensor, latents_NF: torch.Tensor,
                 fire_eps: float = 0.0, dense_threshold: float = 0.1) -> dict[str, float]:
    """The activation metrics of one set of tokens (see module docstring).

    Explained variance is the conventional pooled ratio 1 - sum||x - x_hat||^2 /
    sum||x - mean(x)||^2 over all tokens. SAEBench's core eval has also
    reported a variant averaged per batch / per token, which weighs
    low-variance batches differently; we do not follow it.
    """
    stats = CoreStats(latents_NF.shape[1], fire_eps).update(x_ND, x_hat_ND, latents_NF)
    return stats.compute(dense_threshold)


@torch.no_grad()
def activation_stats(sae, source, rows: np.ndarray, batch_size: int,
                     fire_eps: float = 0.0) -> CoreStats:
    """Encode/decode ``source`` rows batch by batch and accumulate ``CoreStats``."""
    W_dec = sae.W_dec
    stats = CoreStats(W_dec.shape[0], fire_eps)
    for start in range(0, len(rows), batch_size):
        x_BD = torch.from_numpy(source.gather(rows[start : start + batch_size]))
        x_BD = x_BD.to(device=W_dec.device, dtype=W_dec.dtype)
        f_BF = sae.encode(x_BD)
        stats.update(x_BD, sae.decode(f_BF), f_BF)
    return stats
