"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024).

BatchTopK latents, but the loss averages the reconstruction error of nested
prefixes of the dictionary, so early latents must reconstruct on their own and
stay general (less feature absorption). Prefix reconstructions are running
sums of per-block sparse decodes, one pass over the dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from atm_repro.saes.base import SAEConfigError, reconstruction_loss
from atm_repro.saes.batchtopk import BatchTopKConfig, BatchTopKSAE
from atm_repro.saes.registry import PlotStyle, VariantInfo, register_variant
from atm_repro.saes.topk import ActiveLatents


@dataclass(frozen=True)
class MatryoshkaConfig(BatchTopKConfig):
    # prefix widths as fractions of d_sae (rounded); increasing, the last is 1
    prefix_fractions: list[float] = field(
        default_factory=lambda: [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prefix_fractions or self.prefix_fractions[-1] != 1.0:
            raise SAEConfigError(f"prefix_fractions must end with 1.0, got {self.prefix_fractions}")
        widths = self.prefix_widths
        if widths[0] < 1 or any(a >= b for a, b in zip(widths, widths[1:])):
            raise SAEConfigError(
                f"prefix_fractions {self.prefix_fractions} give widths {widths} for "
                f"d_sae={self.d_sae}; they must be >= 1 and strictly increasing"
            )

    @property
    def prefix_widths(self) -> list[int]:
        return [round(frac * self.d_sae) for frac in self.prefix_fractions]


class MatryoshkaSAE(BatchTopKSAE):
    architecture = "matryoshka"
    config_cls = MatryoshkaConfig
    cfg: MatryoshkaConfig

    def reconstruct(
        self, latents: ActiveLatents, x_BD: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Mean over prefixes of the MSE of b_dec + the prefix's decode; x_hat is the full one."""
        x_hat_BD = self.b_dec.expand_as(x_BD)
        terms = {}
        prefix_losses = []
        start = 0
        for end in self.cfg.prefix_widths:
            block = latents.columns(start, end)
            x_hat_BD = x_hat_BD + block.decode(self.W_dec[start:end])
            prefix_losses.append(reconstruction_loss(x_hat_BD, x_BD))
            terms[f"mse_prefix_{end}"] = prefix_losses[-1].detach()
            start = end
        loss = torch.stack(prefix_losses).mean()
        terms["mse"] = prefix_losses[-1].detach()
        terms["matryoshka_mse"] = loss.detach()
        return x_hat_BD, loss, terms


register_variant(MatryoshkaSAE, VariantInfo(
    PlotStyle("Matryoshka", "#CC79A7", "X"),
    toy_params={"k": 2}, toy_sweep=("k", (1.0, 2.0, 4.0, 8.0))))
