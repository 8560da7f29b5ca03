"""Feature stability across seeds: how well the decoder directions of two SAEs
(same variant, different training seeds) match each other.

Two matchings of decoder rows, both by cosine similarity:
  * best match: each row of A takes its most similar row of B (many rows of
    A may pick the same row of B), over all rows;
  * one-to-one: the optimal assignment (Hungarian method,
    ``scipy.optimize.linear_sum_assignment``, maximising the summed cosine) of
    a seeded sample of rows of A to distinct rows of all of B.
Each is reported in both directions (A->B and B->A) and symmetrised as the
mean of the two; statistics are the mean matched cosine and the fraction of
rows matched above each threshold (0.7 and 0.9 by default).

Signed cosine, not |cosine|: SAE latents are non-negative, so a decoder row
d and its negation -d write opposite directions and are different features.
Every decoder row counts, dead latents included (a dead latent's row is
whatever training left it, so a run with many dead latents scores lower).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from atm_repro import metrics
from atm_repro.config import ConfigError
from atm_repro.evals.registry import Eval, register
from atm_repro.evals.results import EvalResult


@dataclass(frozen=True)
class StabilityConfig:
    thresholds: list[float] = field(default_factory=lambda: [0.7, 0.9])
    assignment_sample: int = 2048  # rows per direction in the one-to-one matching
    chunk_rows: int = 4096  # rows of A per cosine block (bounds memory)
    hist_bins: int = 40  # histogram of best-match cosines over [-1, 1]
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.thresholds or not all(-1.0 <= t <= 1.0 for t in self.thresholds):
            raise ConfigError("StabilityConfig.thresholds must be non-empty, each in [-1, 1]")
        if self.assignment_sample <= 0 or self.chunk_rows <= 0 or self.hist_bins <= 0:
            raise ConfigError("StabilityConfig sizes must be > 0")


def unit_rows(W_FD: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (float32; a zero row stays zero)."""
    W_FD = W_FD.detach().float().cpu()
    return W_FD / W_FD.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def best_match_cosines(W_A: torch.Tensor, W_B: torch.Tensor,
                       chunk_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Max cosine of each row of A over the rows of B, and of each row of B over A.

    Computed block by block: the full [F_A, F_B] matrix is never held.
    """
    U_A, U_B = unit_rows(W_A), unit_rows(W_B)
    best_A = torch.empty(len(U_A))
    best_B = torch.full((len(U_B),), -float("inf"))
    for start in range(0, len(U_A), chunk_rows):
        cos_cB = U_A[start : start + chunk_rows] @ U_B.T
        best_A[start : start + chunk_rows] = cos_cB.max(dim=1).values
        best_B = torch.maximum(best_B, cos_cB.max(dim=0).values)
    return best_A.clamp(-1, 1).numpy(), best_B.clamp(-1, 1).numpy()


def assignment_cosines(W_A: torch.Tensor, W_B: torch.Tensor, rows_A: np.ndarray) -> np.ndarray:
    """Cosines of the optimal one-to-one assignment of rows ``rows_A`` of A to
    distinct rows of B (needs len(rows_A) <= rows of B)."""
    if len(rows_A) > W_B.shape[0]:
        raise ValueError(f"cannot assign {len(rows_A)} rows one-to-one into {W_B.shape[0]}")
    cos_nB = (unit_rows(W_A)[torch.as_tensor(rows_A)] @ unit_rows(W_B).T).double().numpy()
    r, c = linear_sum_assignment(cos_nB, maximize=True)
    return np.clip(cos_nB[r, c], -1, 1)


def chance_best_match(rows_a: int, rows_b: int, d: int, seed: int,
                      chunk_rows: int = 4096) -> float:
    """The symmetrised mean best-match cosine of two independent sets of random
    unit vectors (Gaussian rows, seeded) of shapes [rows_a, d] and [rows_b, d]:
    what two unrelated decoders of the pair's shapes score by chance."""
    gen = torch.Generator().manual_seed(seed)
    R_A, R_B = torch.randn(rows_a, d, generator=gen), torch.randn(rows_b, d, generator=gen)
    best_A, best_B = best_match_cosines(R_A, R_B, chunk_rows)
    return float((best_A.mean() + best_B.mean()) / 2)


def match_stats(cos_N: np.ndarray, thresholds: list[float]) -> dict[str, float]:
    """Mean matched cosine and the fraction of rows matched above each threshold."""
    out = {"mean": float(np.mean(cos_N))}
    for t in thresholds:
        out[f"frac_above_{t:g}"] = float(np.mean(cos_N > t))
    return out


def _sample(n_rows: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n_rows) if size >= n_rows else np.sort(rng.choice(n_rows, size, False))


def decoder_stability(W_A: torch.Tensor, W_B: torch.Tensor,
                      cfg: StabilityConfig) -> tuple[dict[str, float], dict]:
    """Stability metrics (flat dict) and details of two decoder matrices [F, D]."""
    if W_A.ndim != 2 or W_B.ndim != 2 or W_A.shape[1] != W_B.shape[1]:
        raise ValueError(f"decoders must be [F, D] with the same D, got {tuple(W_A.shape)} "
                         f"and {tuple(W_B.shape)}")
    best_A, best_B = best_match_cosines(W_A, W_B, cfg.chunk_rows)
    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.assignment_sample, W_A.shape[0], W_B.shape[0])
    assign = {
        "a_to_b": assignment_cosines(W_A, W_B, _sample(W_A.shape[0], n, rng)),
        "b_to_a": assignment_cosines(W_B, W_A, _sample(W_B.shape[0], n, rng)),
    }
    directional = {
        "max_cos": {"a_to_b": match_stats(best_A, cfg.thresholds),
                    "b_to_a": match_stats(best_B, cfg.thresholds)},
        "assignment": {d: match_stats(c, cfg.thresholds) for d, c in assign.items()},
    }
    values: dict[str, float] = {}
    for kind, by_dir in directional.items():
        for stat in by_dir["a_to_b"]:
            values[f"{kind}_{stat}"] = (by_dir["a_to_b"][stat] + by_dir["b_to_a"][stat]) / 2
            for direction, stats in by_dir.items():
                values[f"{kind}_{stat}_{direction}"] = stats[stat]
    values["assignment_sample"] = n
    values[metrics.STABILITY_CHANCE.name] = chance_best_match(
        W_A.shape[0], W_B.shape[0], W_A.shape[1], cfg.seed, cfg.chunk_rows)
    edges = np.linspace(-1.0, 1.0, cfg.hist_bins + 1)
    details = {
        "best_match_histogram": {
            "edges": edges.tolist(),
            "a_to_b": np.histogram(best_A, bins=edges)[0].tolist(),
            "b_to_a": np.histogram(best_B, bins=edges)[0].tolist(),
        },
        "d_sae": {"a": int(W_A.shape[0]), "b": int(W_B.shape[0])},
    }
    return values, details


PAIR_SEPARATOR = "__vs__"


def pair_id(sae_id_a: str, sae_id_b: str) -> str:
    """The result id of a seed pair (``pair_members`` inverts it)."""
    return f"{sae_id_a}{PAIR_SEPARATOR}{sae_id_b}"


def pair_members(pair: str) -> list[str]:
    return pair.split(PAIR_SEPARATOR)


def run_stability(sae_a, sae_b, cfg: StabilityConfig, sae_id_a: str,
                  sae_id_b: str) -> EvalResult:
    """Stability of two SAEs (anything with ``W_dec`` [F, D]); sae_id names the pair."""
    values, details = decoder_stability(sae_a.W_dec, sae_b.W_dec, cfg)
    details["pair"] = {"a": sae_id_a, "b": sae_id_b}
    return EvalResult(metrics.STABILITY, pair_id(sae_id_a, sae_id_b), cfg, values, details)


register(Eval(metrics.STABILITY, StabilityConfig))  # seed pairs: ``evaluate`` runs them
