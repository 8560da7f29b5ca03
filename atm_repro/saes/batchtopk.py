"""BatchTopK SAE (Bussmann et al. 2024): keep the k*B largest activations of the batch.

Sparsity is allocated across the batch in training; an EMA of the smallest kept
activation becomes a global threshold that makes inference per-token (saved as
a JumpReLU SAE with that threshold for every latent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atm_repro.saes.base import SAEConfigError
from atm_repro.saes.topk import TopKConfig, TopKSAE


@dataclass(frozen=True)
class BatchTopKConfig(TopKConfig):
    threshold_beta: float = 0.99  # EMA decay of the inference threshold

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.threshold_beta < 1.0:
            raise SAEConfigError(f"threshold_beta must be in [0, 1), got {self.threshold_beta}")


def batch_topk(z_BF: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k*B largest ReLU(z) over the whole batch; everything else 0."""
    flat_N = torch.relu(z_BF).flatten()
    vals, idx = flat_N.topk(k * z_BF.shape[0], sorted=False)
    return torch.zeros_like(flat_N).scatter(0, idx, vals).view_as(z_BF)


class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"
    config_cls = BatchTopKConfig
    saelens_architecture = "jumprelu"
    cfg: BatchTopKConfig

    def __init__(self, cfg: BatchTopKConfig):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_initialised", torch.zeros((), dtype=torch.bool))

    def activation(self, z_BF: torch.Tensor) -> torch.Tensor:
        return torch.relu(z_BF) * (z_BF > self.threshold)

    def train_activation(self, z_BF: torch.Tensor) -> torch.Tensor:
        """Batch TopK; in training mode also updates the threshold EMA."""
        f_BF = batch_topk(z_BF, self.cfg.k)
        if self.training:
            self._update_threshold(f_BF)
        return f_BF

    @torch.no_grad()
    def _update_threshold(self, f_BF: torch.Tensor) -> None:
        """EMA of the smallest kept positive activation; the first update sets it."""
        kept = f_BF[f_BF > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min()
        if self.threshold_initialised:
            beta = self.cfg.threshold_beta
            self.threshold.mul_(beta).add_((1 - beta) * smallest)
        else:
            self.threshold.copy_(smallest)
            self.threshold_initialised.fill_(True)

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **super().inference_tensors(),
            "threshold": self.threshold.detach().expand(self.cfg.d_sae).clone(),
        }

    def saelens_cfg(self) -> dict:
        return {}  # a JumpReLU SAE: the threshold tensor replaces k
