"""Planted-absorption toy benchmark: synthetic activations with a known feature
hierarchy, and the exact absorption of an SAE trained on them.

Data (``make_toy_data``): ``n_features`` true unit directions in R^d (exactly
orthonormal, or random unit vectors in superposition). The first
``n_parents * (1 + children_per_parent)`` features form trees: a parent
followed by its children. Per token, each parent fires with ``parent_prob``;
given that it fires, one of its children (uniform; siblings are mutually
exclusive, like the words "short" and "snake" under "starts with S") fires
with ``child_given_parent``; otherwise the parent fires alone. So a parent
always fires when any of its children fires. The remaining (free) features
fire independently with ``firing_prob``. Magnitudes are uniform in
[magnitude_min, magnitude_max]; x = sum of magnitude * direction.

Exact absorption (``toy_absorption``): for each parent, its latent is the SAE
latent whose decoder row has the largest cosine with the parent direction;
its carriers are the other latents whose decoder cosine with the parent is
>= ``carrier_cos``. A token is absorbed when the parent latent is silent
(activation <= ``silent_eps``) while some carrier is active. Absorption of a
parent = the absorbed fraction of its child-firing tokens (the parent fires
on all of them). The same fraction on parent-alone tokens is the control: an
SAE that absorbs the parent into its children still fires the parent latent
there. With d small, random directions reach cosine 0.1 by chance (~1/sqrt(d)
spread), so raise ``carrier_cos`` for superposed toy data in few dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atm_repro.cache import ArraySource
from atm_repro.config import to_dict
from atm_repro.evals.core import CoreStats
from atm_repro.evals.results import EvalResult
from atm_repro.evals.stability import best_match_cosines, unit_rows


@dataclass(frozen=True)
class ToyConfig:
    d: int = 64
    n_features: int = 48
    n_parents: int = 4
    children_per_parent: int = 4
    parent_prob: float = 0.1  # per token, per parent
    child_given_parent: float = 0.75  # P(one child fires | parent fires)
    firing_prob: float = 0.03  # per token, per free feature
    magnitude_min: float = 0.5
    magnitude_max: float = 1.5
    orthogonal: bool = True  # orthonormal directions (needs n_features <= d)
    n_tokens: int = 50_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d <= 0 or self.n_features <= 0 or self.n_tokens <= 0:
            raise ValueError("ToyConfig needs d, n_features and n_tokens > 0")
        if self.n_parents < 0 or self.children_per_parent < 1:
            raise ValueError("ToyConfig needs n_parents >= 0 and children_per_parent >= 1")
        if self.n_parents * (1 + self.children_per_parent) > self.n_features:
            raise ValueError(
                f"the hierarchy needs {self.n_parents * (1 + self.children_per_parent)} "
                f"features but n_features is {self.n_features}")
        if self.orthogonal and self.n_features > self.d:
            raise ValueError(f"orthogonal directions need n_features <= d, got "
                             f"{self.n_features} > {self.d}")
        for name in ("parent_prob", "child_given_parent", "firing_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ToyConfig.{name} must be in [0, 1]")
        if not 0.0 < self.magnitude_min <= self.magnitude_max:
            raise ValueError("ToyConfig needs 0 < magnitude_min <= magnitude_max")


@dataclass
class ToyData:
    acts_ND: np.ndarray  # float32 activations
    coeffs_NF: np.ndarray  # float32 true feature magnitudes (0 where silent)
    directions_FD: np.ndarray  # float32 unit feature directions
    hierarchy: dict[int, list[int]]  # parent feature -> its child features
    cfg: ToyConfig

    @property
    def firing_NF(self) -> np.ndarray:
        return self.coeffs_NF > 0

    def source(self) -> ArraySource:
        """The activations as a cache-like source (for the trainer)."""
        return ArraySource(self.acts_ND)


def toy_hierarchy(cfg: ToyConfig) -> dict[int, list[int]]:
    """Parent index -> child indices: parent i at i * (1 + c), its c children after it."""
    c = cfg.children_per_parent
    return {p * (1 + c): list(range(p * (1 + c) + 1, (p + 1) * (1 + c)))
            for p in range(cfg.n_parents)}


def make_toy_data(cfg: ToyConfig) -> ToyData:
    """Seeded synthetic activations with planted parent/child features (module docstring)."""
    rng = np.random.default_rng(cfg.seed)
    N, F = cfg.n_tokens, cfg.n_features
    if cfg.orthogonal:
        q_DF, _ = np.linalg.qr(rng.standard_normal((cfg.d, F)))
        directions_FD = q_DF.T
    else:
        directions_FD = rng.standard_normal((F, cfg.d))
        directions_FD /= np.linalg.norm(directions_FD, axis=1, keepdims=True)

    hierarchy = toy_hierarchy(cfg)
    firing_NF = np.zeros((N, F), dtype=bool)
    n_tree = cfg.n_parents * (1 + cfg.children_per_parent)
    firing_NF[:, n_tree:] = rng.random((N, F - n_tree)) < cfg.firing_prob
    for parent, children in hierarchy.items():
        on_N = rng.random(N) < cfg.parent_prob
        with_child_N = on_N & (rng.random(N) < cfg.child_given_parent)
        which_N = rng.integers(0, len(children), N)
        firing_NF[:, parent] = on_N
        for k, child in enumerate(children):
            firing_NF[:, child] = with_child_N & (which_N == k)
    mags_NF = rng.uniform(cfg.magnitude_min, cfg.magnitude_max, (N, F))
    coeffs_NF = np.where(firing_NF, mags_NF, 0.0).astype(np.float32)
    directions_FD = directions_FD.astype(np.float32)
    return ToyData(coeffs_NF @ directions_FD, coeffs_NF, directions_FD, hierarchy, cfg)


# --------------------------------------------------------------- exact absorption


@dataclass(frozen=True)
class ToyAbsorptionConfig:
    carrier_cos: float = 0.1  # a latent carries the parent if its decoder cosine >= this
    silent_eps: float = 1e-8  # a latent is silent when its activation <= this
    batch_size: int = 8192

    def __post_init__(self) -> None:
        if not -1.0 <= self.carrier_cos <= 1.0 or self.silent_eps < 0 or self.batch_size <= 0:
            raise ValueError("ToyAbsorptionConfig needs carrier_cos in [-1, 1], "
                             "silent_eps >= 0 and batch_size > 0")


def _fraction(flags_N: np.ndarray, where_N: np.ndarray) -> float:
    n = int(where_N.sum())
    return float(flags_N[where_N].mean()) if n else float("nan")


@torch.no_grad()
def toy_absorption(sae, data: ToyData, cfg: ToyAbsorptionConfig) -> tuple[dict, dict]:
    """Exact absorption of ``sae`` on ``data`` (module docstring), plus the SAE's
    L0 / explained variance on the toy activations and how well its decoder
    recovers every true direction. Returns (metrics, per-parent details)."""
    W_dec = sae.W_dec
    if W_dec.shape[1] != data.acts_ND.shape[1]:
        raise ValueError(f"the SAE takes d_in={W_dec.shape[1]} but the toy data has "
                         f"d={data.acts_ND.shape[1]}")
    if not data.hierarchy:
        raise ValueError("the toy data has no parent features (n_parents = 0)")
    parents = list(data.hierarchy)
    u_PD = torch.from_numpy(data.directions_FD[parents])
    cos_PF = unit_rows(u_PD) @ unit_rows(W_dec).T
    parent_latent_P = cos_PF.argmax(dim=1)
    carrier_PF = cos_PF >= cfg.carrier_cos
    carrier_PF[torch.arange(len(parents)), parent_latent_P] = False

    silent_NP = np.empty((len(data.acts_ND), len(parents)), dtype=bool)
    carried_NP = np.empty_like(silent_NP)
    stats = CoreStats(W_dec.shape[0], fire_eps=cfg.silent_eps)
    for start in range(0, len(data.acts_ND), cfg.batch_size):
        x_BD = torch.from_numpy(data.acts_ND[start : start + cfg.batch_size])
        x_BD = x_BD.to(device=W_dec.device, dtype=W_dec.dtype)
        f_BF = sae.encode(x_BD)
        stats.update(x_BD, sae.decode(f_BF), f_BF)
        active_BF = (f_BF > cfg.silent_eps).cpu()
        end = start + len(x_BD)
        silent_NP[start:end] = (~active_BF[:, parent_latent_P]).numpy()
        carried_NP[start:end] = ((active_BF.float() @ carrier_PF.T.float()) > 0).numpy()
    absorbed_NP = silent_NP & carried_NP

    firing_NF = data.firing_NF
    per_parent = {}
    for i, (parent, children) in enumerate(data.hierarchy.items()):
        child_N = firing_NF[:, children].any(axis=1)
        alone_N = firing_NF[:, parent] & ~child_N
        per_parent[parent] = {
            "parent_latent": int(parent_latent_P[i]),
            "parent_latent_cos": float(cos_PF[i, parent_latent_P[i]]),
            "n_carriers": int(carrier_PF[i].sum()),
            "n_child_tokens": int(child_N.sum()),
            "absorption": _fraction(absorbed_NP[:, i], child_N),
            "parent_silent_on_children": _fraction(silent_NP[:, i], child_N),
            "n_alone_tokens": int(alone_N.sum()),
            "absorption_alone": _fraction(absorbed_NP[:, i], alone_N),
            "parent_silent_alone": _fraction(silent_NP[:, i], alone_N),
            "absorption_by_child": {child: _fraction(absorbed_NP[:, i], firing_NF[:, child])
                                    for child in children},
        }
    recovery_F, _ = best_match_cosines(torch.from_numpy(data.directions_FD), W_dec)
    core = stats.compute()
    metrics = {
        "mean_absorption": _nanmean(per_parent, "absorption"),
        "mean_absorption_alone": _nanmean(per_parent, "absorption_alone"),
        "mean_parent_silent_on_children": _nanmean(per_parent, "parent_silent_on_children"),
        "mean_parent_latent_cos": _nanmean(per_parent, "parent_latent_cos"),
        "mean_feature_recovery": float(recovery_F.mean()),
        "l0": core["l0"],
        "explained_variance": core["explained_variance"],
        "frac_dead": core["frac_dead"],
    }
    details = {"per_parent": per_parent, "feature_recovery": recovery_F.tolist()}
    return metrics, details


def _nanmean(per_parent: dict, key: str) -> float:
    values = np.array([v[key] for v in per_parent.values()], dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def run_toy_absorption(sae, data: ToyData, cfg: ToyAbsorptionConfig, sae_id: str) -> EvalResult:
    """``toy_absorption`` as an EvalResult (eval_name "toy_absorption")."""
    metrics, details = toy_absorption(sae, data, cfg)
    config = {"toy": to_dict(data.cfg), "absorption": to_dict(cfg)}
    return EvalResult("toy_absorption", sae_id, config, metrics, details)
