"""BatchTopK SAE (Bussmann et al. 2024): keep the k*B largest activations of the batch.

Sparsity is allocated across the batch in training; an EMA of the smallest kept
activation becomes a global threshold that makes inference per-token (saved as
a JumpReLU SAE with that threshold for every latent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atm_repro.saes.base import SAEConfigError
from atm_repro.saes.registry import PlotStyle, VariantInfo, register_variant
from atm_repro.saes.topk import ActiveLatents, TopKConfig, TopKSAE


@dataclass(frozen=True)
class BatchTopKConfig(TopKConfig):
    threshold_beta: float = 0.99  # EMA decay of the inference threshold

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.threshold_beta < 1.0:
            raise SAEConfigError(f"threshold_beta must be in [0, 1), got {self.threshold_beta}")


PREFILTER_STRIDE = 16  # subsample of the batch that estimates a candidate threshold


def batch_topk(z_BF: torch.Tensor, k: int) -> ActiveLatents:
    """The k*B largest ReLU(z) over the whole batch (selected on z, ReLU applied to
    the kept values only: the same values, without a [B, F] ReLU pass).

    Exact, but cheaper than one topk over all B*F values: a strided subsample
    gives a threshold t expected to leave ~2kB values >= t; if at least kB do,
    the top kB all lie among them and one small topk finds them (otherwise,
    e.g. on adversarial orderings, the full topk runs).
    """
    flat_N = z_BF.flatten()
    n_keep = k * z_BF.shape[0]
    sample = flat_N[::PREFILTER_STRIDE]
    n_sample = min(sample.numel(), -(-2 * n_keep // PREFILTER_STRIDE))
    if n_sample < sample.numel():
        t = sample.topk(n_sample, sorted=False).values.min()
        cand_idx = (flat_N >= t).nonzero().squeeze(1)
        if cand_idx.numel() >= n_keep:
            vals, j = flat_N[cand_idx].topk(n_keep, sorted=False)
            return ActiveLatents.from_flat(torch.relu(vals), cand_idx[j], *z_BF.shape)
    vals, idx = flat_N.topk(n_keep, sorted=False)
    return ActiveLatents.from_flat(torch.relu(vals), idx, *z_BF.shape)


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

    def train_latents(self, z_BF: torch.Tensor) -> ActiveLatents:
        """Batch TopK; in training mode also updates the threshold EMA."""
        latents = batch_topk(z_BF, self.cfg.k)
        if self.training:
            self._update_threshold(latents.vals_N)
        return latents

    @torch.no_grad()
    def _update_threshold(self, vals_N: torch.Tensor) -> None:
        """EMA of the smallest kept positive activation; the first update sets it."""
        kept = vals_N[vals_N > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min()
        if self.threshold_initialised:
            beta = self.cfg.threshold_beta
            self.threshold.mul_(beta).add_((1 - beta) * smallest)
        else:
            self.threshold.copy_(smallest)
            self.threshold_initialised.fill_(True)

    def scale_thresholds(self, latent_scale_F: torch.Tensor) -> None:
        self.threshold.mul_(latent_scale_F[0])  # one scale for every latent (TopK family)

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **super().inference_tensors(),
            "threshold": self.threshold.detach().expand(self.cfg.d_sae).clone(),
        }

    def saelens_cfg(self) -> dict:
        return {}  # a JumpReLU SAE: the threshold tensor replaces k


register_variant(BatchTopKSAE, VariantInfo(
    PlotStyle("BatchTopK", "#E69F00", "D"),
    toy_params={"k": 2}, toy_sweep=("k", (1.0, 2.0, 4.0, 8.0))))
