"""Planted-absorption toy benchmark: synthetic activations with a known feature
hierarchy, SAEs of every variant trained on them across an L0 sweep, and their
absorption measured exactly and by the first-letter metric's pipeline.

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

Probe-pipeline absorption (``toy_probe_absorption``): ``evals.absorption``'s
steps 3-6 with each parent as a letter: ground-truth probes (logistic, or the
planted direction), main latents by its k-sparse probing, ``score_words`` on
the true-positive held-out tokens where a child fires (control: where the
parent fires alone), same thresholds. Set beside the exact number, it shows
whether the metric used on the real model recovers the ground truth.

Benchmark: ``ToyBenchmarkConfig`` names every (SAE, sweep value) run
(``toy_runs``) and ``run_toy_absorption`` scores one trained SAE; the driver
that trains them (an experiment, not a measurement) is ``atm_repro.toybench``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from atm_repro.cache import ArraySource
from atm_repro.config import ConfigError, DerivedRun, SAESpec, SweepConfig, TrainConfig, derive
from atm_repro.evals.absorption import (
    LETTERS,
    AbsorptionConfig,
    encode_latents,
    fit_letter_probes,
    score_words,
    select_main_latents,
)
from atm_repro.evals.registry import Eval, register
from atm_repro.evals.results import EvalResult
from atm_repro.evals.stability import best_match_cosines, unit_rows
from atm_repro.sae_metrics import CoreStats
from atm_repro.saes import INFO, validate_spec


@dataclass(frozen=True)
class ToyConfig:
    """Toy data. The defaults are the benchmark's: many rare children per parent,
    like the many words under one first letter (with only a few children, the
    k-sparse probe of the first-letter pipeline takes the children in as "main"
    latents and the pipeline cannot see absorption; tests/test_toy.py)."""

    d: int = 96
    n_features: int = 96
    n_parents: int = 4
    children_per_parent: int = 16
    parent_prob: float = 0.1  # per token, per parent
    child_given_parent: float = 0.5  # P(one child fires | parent fires)
    firing_prob: float = 0.03  # per token, per free feature
    magnitude_min: float = 0.5
    magnitude_max: float = 1.5
    orthogonal: bool = True  # orthonormal directions (needs n_features <= d)
    n_tokens: int = 50_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d <= 0 or self.n_features <= 0 or self.n_tokens <= 0:
            raise ConfigError("ToyConfig needs d, n_features and n_tokens > 0")
        if self.n_parents < 0 or self.children_per_parent < 1:
            raise ConfigError("ToyConfig needs n_parents >= 0 and children_per_parent >= 1")
        if self.n_parents * (1 + self.children_per_parent) > self.n_features:
            raise ConfigError(
                f"the hierarchy needs {self.n_parents * (1 + self.children_per_parent)} "
                f"features but n_features is {self.n_features}")
        if self.orthogonal and self.n_features > self.d:
            raise ConfigError(f"orthogonal directions need n_features <= d, got "
                              f"{self.n_features} > {self.d}")
        for name in ("parent_prob", "child_given_parent", "firing_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"ToyConfig.{name} must be in [0, 1]")
        if not 0.0 < self.magnitude_min <= self.magnitude_max:
            raise ConfigError("ToyConfig needs 0 < magnitude_min <= magnitude_max")


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

    def split(self, n_eval: int) -> tuple["ToyData", "ToyData"]:
        """(first rows, last ``n_eval`` rows): training and held-out tokens."""
        if not 0 < n_eval < len(self.acts_ND):
            raise ValueError(f"n_eval must be in (0, {len(self.acts_ND)}), got {n_eval}")
        cut = len(self.acts_ND) - n_eval
        return tuple(ToyData(self.acts_ND[rows], self.coeffs_NF[rows], self.directions_FD,
                             self.hierarchy, self.cfg)
                     for rows in (slice(0, cut), slice(cut, None)))


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
            raise ConfigError("ToyAbsorptionConfig needs carrier_cos in [-1, 1], "
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


# ------------------------------------------------------ probe-pipeline absorption


@dataclass(frozen=True)
class ToyProbeConfig:
    """The first-letter absorption pipeline (``evals.absorption``) run on the toy
    data with each parent as a "letter". ``direction``: "logistic" fits the
    pipeline's class-balanced ground-truth probes on the activations (as on the
    real model); "known" uses the planted parent direction and counts every
    parent-firing token as a true positive. ``pipeline`` carries the metric's
    thresholds and probe settings: the first-letter defaults, except the
    main-latent probe's batch (SAEBench's 4096 gives one Adam step per epoch on
    a few thousand rows: 50 steps, too few for its ranking to leave the random
    initialisation, so children outrank their parent even in a perfect SAE)."""

    direction: Literal["logistic", "known"] = "logistic"
    train_tokens: int = 6000  # training rows the probes (ground truth, k-sparse) fit on
    pipeline: AbsorptionConfig = field(
        default_factory=lambda: AbsorptionConfig(sparse_probe_batch_size=256))

    def __post_init__(self) -> None:
        if self.train_tokens <= 0:
            raise ConfigError("ToyProbeConfig.train_tokens must be > 0")


@dataclass
class ToyProbes:
    """What every SAE's probe-pipeline run shares (``prepare_toy_probes``)."""

    acts_train_ND: np.ndarray  # probe-training rows with a single-label class
    labels_train: np.ndarray  # int: parent position, n_parents = none fires
    test: ToyData  # held-out tokens, all scored
    labels_test: np.ndarray  # int over all test rows; -1 = several parents fire
    probe_W_PD: np.ndarray  # float32 ground-truth probe direction per parent
    probe_f1_P: np.ndarray  # test F1 of the logistic probes (NaN for "known")
    positive_NP: np.ndarray  # bool: test token counts as the parent's true positive


def parent_labels(data: ToyData) -> np.ndarray:
    """Per token: the position of the one parent that fires, ``n_parents`` when
    none fires, -1 when several fire. The pipeline's probes are single-label
    (every word has one first letter), so -1 rows are left out of probe fits."""
    on_NP = data.firing_NF[:, list(data.hierarchy)]
    n_on_N = on_NP.sum(axis=1)
    return np.where(n_on_N == 0, on_NP.shape[1], np.where(n_on_N == 1, on_NP.argmax(axis=1), -1))


def prepare_toy_probes(train: ToyData, test: ToyData, cfg: ToyProbeConfig) -> ToyProbes:
    """Ground-truth probes per parent, fit once and shared by every SAE."""
    parents = list(train.hierarchy)
    if not parents:
        raise ValueError("the toy data has no parent features (n_parents = 0)")
    y_train = parent_labels(train)[: cfg.train_tokens]
    keep_N = y_train >= 0
    acts_train_ND, y_train = train.acts_ND[: cfg.train_tokens][keep_N], y_train[keep_N]
    y_test = parent_labels(test)
    on_NP = test.firing_NF[:, parents]
    if cfg.direction == "known":
        W_PD = test.directions_FD[parents]
        f1_P = np.full(len(parents), np.nan)
        positive_NP = on_NP
    else:
        if len(parents) >= len(LETTERS):
            raise ValueError("the letter probes of evals.absorption fit 26 classes: the "
                             f"logistic probes need n_parents < 26, got {len(parents)}")
        kept = y_test >= 0
        W_LD, b_L, f1_L = fit_letter_probes(acts_train_ND, y_train, test.acts_ND[kept],
                                            y_test[kept], cfg.pipeline)
        W_PD, f1_P = W_LD[: len(parents)], f1_L[: len(parents)]
        positive_NP = on_NP & (test.acts_ND @ W_PD.T + b_L[: len(parents)] > 0)
    return ToyProbes(acts_train_ND, y_train, test, y_test, np.asarray(W_PD, np.float32),
                     f1_P, positive_NP)


def _rates(acts_ND, probe_D, z_NF, W_dec_FD, main_ids, cfg: AbsorptionConfig):
    """(full-absorption rate, mean absorption fraction) over the rows; NaN if none."""
    if not len(acts_ND):
        return float("nan"), float("nan")
    s = score_words(acts_ND, probe_D, z_NF, W_dec_FD, main_ids, cfg)
    return float(s.full_absorption.mean()), float(s.fraction.mean())


def toy_probe_absorption(sae, probes: ToyProbes, cfg: ToyProbeConfig) -> tuple[dict, dict]:
    """First-letter-style absorption of ``sae`` with parents as letters: main
    latents by k-sparse probing, then ``score_words`` on the true-positive test
    tokens where a child fires (and, as a control, where the parent fires alone).
    Parents whose logistic probe has F1 <= ``probe_f1_threshold`` are excluded,
    as letters are. Returns (metrics, per-parent details)."""
    pipe = cfg.pipeline
    test = probes.test
    z_train_NF = encode_latents(sae, probes.acts_train_ND, pipe.sae_batch_size)
    z_test_NF = encode_latents(sae, test.acts_ND, pipe.sae_batch_size)
    W_dec_FD = sae.W_dec.detach().float().cpu().numpy()
    scored = [i for i, f1 in enumerate(probes.probe_f1_P)
              if cfg.direction == "known" or f1 > pipe.probe_f1_threshold]
    kept = probes.labels_test >= 0
    main = (select_main_latents(z_train_NF, probes.labels_train, z_test_NF[kept],
                                probes.labels_test[kept], scored, pipe) if scored else {})
    firing_NF = test.firing_NF
    per_parent = {}
    for i, (parent, children) in enumerate(test.hierarchy.items()):
        probe_D = probes.probe_W_PD[i]
        row = {"probe_f1": float(probes.probe_f1_P[i]),
               "probe_cos": float(probe_D @ test.directions_FD[parent] / np.linalg.norm(probe_D))}
        if i in main:
            ids, f1s = main[i]
            row |= {"probe_main_latents": ids, "probe_n_main_latents": len(ids),
                    "probe_k_sparse_f1": f1s}
            child_N = firing_NF[:, children].any(axis=1)
            for suffix, where_N in (("", child_N), ("_alone", ~child_N)):
                rows = np.nonzero(where_N & probes.positive_NP[:, i])[0]
                full, frac = _rates(test.acts_ND[rows], probe_D, z_test_NF[rows], W_dec_FD, ids,
                                    pipe)
                row |= {f"probe_full_absorption{suffix}": full,
                        f"probe_absorption_fraction{suffix}": frac,
                        f"probe_n_true_positives{suffix}": len(rows)}
        per_parent[parent] = row
    done = {p: r for p, r in per_parent.items() if "probe_main_latents" in r}
    metrics = {f"mean_{key}": _nanmean(done, key) if done else float("nan")
               for key in ("probe_full_absorption", "probe_absorption_fraction",
                           "probe_full_absorption_alone", "probe_absorption_fraction_alone",
                           "probe_n_main_latents")}
    metrics["n_parents_probed"] = len(done)
    return metrics, {"per_parent": per_parent}


# ------------------------------------------------------------------ benchmark

EVAL_NAME = "toy_absorption"


def _default_saes() -> dict[str, SAESpec]:
    """Base specs of the toy runs, one per registered variant with toy settings
    (``VariantInfo.toy_params``); a sweep replaces one parameter."""
    return {name: SAESpec(name, dict(info.toy_params))
            for name, info in INFO.items() if info.toy_sweep is not None}


def _default_sweeps() -> dict[str, SweepConfig]:
    """An L0 sweep per variant (``VariantInfo.toy_sweep``): k for the TopK family,
    the sparsity coefficient else."""
    return {name: SweepConfig(info.toy_sweep[0], list(info.toy_sweep[1]))
            for name, info in INFO.items() if info.toy_sweep is not None}


@dataclass(frozen=True)
class ToyBenchmarkConfig:
    """The planted-absorption benchmark: data, trainer settings, and an L0 sweep
    per SAE. ``saes`` are base specs by name; ``sweeps`` picks which of them run,
    each over one parameter (run ``<name>-<param><value>``, as in a profile's
    ``ablations.sparsity_sweeps``). The last ``eval_tokens`` data rows are held
    out for every metric; the SAEs train on the rest."""

    data: ToyConfig = field(default_factory=ToyConfig)
    eval_tokens: int = 10_000
    width: int = 128
    tokens: int = 200_000  # training tokens per run (epochs over the training rows)
    batch_size: int = 512
    lr: float = 3e-3
    lr_warmup_steps: int = 20
    dead_tokens: int = 50_000
    seed: int = 0
    saes: dict[str, SAESpec] = field(default_factory=_default_saes)
    sweeps: dict[str, SweepConfig] = field(default_factory=_default_sweeps)
    absorption: ToyAbsorptionConfig = field(default_factory=ToyAbsorptionConfig)
    probe: ToyProbeConfig = field(default_factory=ToyProbeConfig)

    def __post_init__(self) -> None:
        if not 0 < self.eval_tokens < self.data.n_tokens:
            raise ConfigError(f"eval_tokens must be in (0, data.n_tokens="
                              f"{self.data.n_tokens}), got {self.eval_tokens}")
        if self.data.n_parents < 1:
            raise ConfigError("the benchmark needs data.n_parents >= 1")
        if self.probe.direction == "logistic" and self.data.n_parents >= len(LETTERS):
            raise ConfigError("logistic probes (evals.absorption's letter probes) need "
                              f"data.n_parents < 26, got {self.data.n_parents}")
        if not self.sweeps:
            raise ConfigError("sweeps is empty: nothing to train")
        unknown = sorted(set(self.sweeps) - set(self.saes))
        if unknown:
            raise ConfigError(f"sweeps: {unknown} not in saes {sorted(self.saes)}")
        self.train_config()
        for name, spec in self.saes.items():
            if spec.token_masked:
                raise ConfigError(f"saes.{name}: token_masked has no toy data")
            validate_spec(spec, self.data.d, self.width, where=f"saes.{name}")
        for run in toy_runs(self):
            validate_spec(run.spec, self.data.d, self.width, where=f"sweeps ({run.name})")

    def train_config(self) -> TrainConfig:
        """The trainer's config for every toy run."""
        return TrainConfig(layer=0, width=self.width, batch_size=self.batch_size,
                           tokens=self.tokens, lr=self.lr, lr_warmup_steps=self.lr_warmup_steps,
                           dead_tokens=self.dead_tokens, seeds=[self.seed])


def toy_runs(cfg: ToyBenchmarkConfig) -> list[DerivedRun]:
    """Every (SAE, sweep value) of the benchmark, in config order (named and built
    as a profile's derived runs, ``config.derive``; every value runs)."""
    return [derive(sae, cfg.saes[sae], sweep.param, value)
            for sae, sweep in cfg.sweeps.items() for value in sweep.values]


def run_toy_absorption(sae, probes: ToyProbes, cfg: ToyBenchmarkConfig,
                       sae_id: str) -> EvalResult:
    """Exact and probe-pipeline absorption of ``sae`` on the held-out toy tokens
    (``probes.test``) as one EvalResult; per parent, both side by side."""
    exact, exact_details = toy_absorption(sae, probes.test, cfg.absorption)
    probe, probe_details = toy_probe_absorption(sae, probes, cfg.probe)
    for parent, row in exact_details["per_parent"].items():
        row |= probe_details["per_parent"][parent]
        if "probe_main_latents" in row:
            row["probe_main_has_parent_latent"] = row["parent_latent"] in row["probe_main_latents"]
    return EvalResult(EVAL_NAME, sae_id, cfg, {**exact, **probe}, exact_details)


register(Eval("toy", ToyBenchmarkConfig))  # no trained SAE: ``toybench`` runs it
