"""Stability across seeds: identical, permuted, rescaled, sign-flipped and
independent decoders; blockwise == full; config checks; the runner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atm_repro import metrics
from atm_repro.evals.results import write_result
from atm_repro.evals.stability import (
    StabilityConfig,
    assignment_cosines,
    best_match_cosines,
    chance_best_match,
    decoder_stability,
    run_stability,
)
from atm_repro.saes.base import SAE, SAEConfig


def decoder(f: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(f, d, generator=torch.Generator().manual_seed(seed))


def sae_with(W_dec: torch.Tensor) -> SAE:
    sae = SAE(SAEConfig(W_dec.shape[1], W_dec.shape[0]))
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
    return sae


CFG = StabilityConfig(assignment_sample=32, chunk_rows=7)


def test_identical_is_one():
    W = decoder(64, 16, 0)
    m, _ = decoder_stability(W, W.clone(), CFG)
    for key in ("max_cos_mean", "max_cos_frac_above_0.9", "assignment_mean",
                "assignment_frac_above_0.9", "assignment_frac_above_0.7"):
        assert m[key] == pytest.approx(1.0, abs=1e-6), key


def test_permuted_and_rescaled_copy_is_one_with_one_to_one():
    W = decoder(64, 16, 1)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    W_B = W[perm] * torch.rand(64, 1, generator=torch.Generator().manual_seed(3)).add(0.5)
    m, _ = decoder_stability(W, W_B, StabilityConfig(assignment_sample=64))
    assert m["max_cos_mean"] == pytest.approx(1.0, abs=1e-6)
    assert m["assignment_mean"] == pytest.approx(1.0, abs=1e-6)
    assert m["assignment_sample"] == 64


def test_one_to_one_is_stricter_than_best_match():
    # A holds one row twice: best match gives 1.0 to both copies, one-to-one only to one.
    W = decoder(8, 32, 4)
    W_A = torch.cat([W[:7], W[:1]])
    best_A, _ = best_match_cosines(W_A, W)
    one_to_one = assignment_cosines(W_A, W, np.arange(8))
    assert np.all(best_A > 0.99)
    assert np.sum(one_to_one > 0.99) == 7
    assert one_to_one.mean() < best_A.mean() - 0.05


def test_independent_high_dim_is_low():
    m, details = decoder_stability(decoder(64, 512, 5), decoder(64, 512, 6), CFG)
    assert m["max_cos_mean"] < 0.25
    assert m["max_cos_frac_above_0.7"] == 0.0
    assert m["assignment_mean"] < m["max_cos_mean"] + 1e-9
    assert sum(details["best_match_histogram"]["a_to_b"]) == 64


def test_sign_flip_is_not_a_match():
    W = decoder(64, 256, 7)
    m, _ = decoder_stability(W, -W, CFG)
    assert m["max_cos_mean"] < 0.3
    assert m["max_cos_frac_above_0.7"] == 0.0


def test_blockwise_matches_full_matrix():
    W_A, W_B = decoder(23, 8, 8), decoder(17, 8, 9)
    best_A, best_B = best_match_cosines(W_A, W_B, chunk_rows=5)
    U_A = W_A / W_A.norm(dim=1, keepdim=True)
    U_B = W_B / W_B.norm(dim=1, keepdim=True)
    full = U_A @ U_B.T
    assert np.allclose(best_A, full.max(1).values.numpy(), atol=1e-6)
    assert np.allclose(best_B, full.max(0).values.numpy(), atol=1e-6)


def test_asymmetric_widths_and_directions():
    W = decoder(16, 32, 10)
    W_B = torch.cat([W, decoder(16, 32, 11)])  # B contains all of A plus 16 new rows
    m, _ = decoder_stability(W, W_B, CFG)
    assert m["max_cos_mean_a_to_b"] == pytest.approx(1.0, abs=1e-6)
    assert m["max_cos_mean_b_to_a"] < 0.8
    assert m["max_cos_mean"] == pytest.approx(
        (m["max_cos_mean_a_to_b"] + m["max_cos_mean_b_to_a"]) / 2)
    assert m["assignment_sample"] == 16


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="same D"):
        decoder_stability(decoder(4, 8, 0), decoder(4, 9, 0), CFG)
    with pytest.raises(ValueError):
        StabilityConfig(thresholds=[1.5])
    with pytest.raises(ValueError, match="one-to-one"):
        assignment_cosines(decoder(8, 4, 0), decoder(4, 4, 0), np.arange(8))


def test_runner_deterministic_and_written(tmp_path):
    a, b = sae_with(decoder(48, 16, 12)), sae_with(decoder(48, 16, 13))
    cfg = StabilityConfig(assignment_sample=20, seed=3)
    r1 = run_stability(a, b, cfg, "topk_s0", "topk_s1")
    r2 = run_stability(a, b, cfg, "topk_s0", "topk_s1")
    assert r1.metrics == r2.metrics
    assert r1.eval_name == "stability" and r1.sae_id == "topk_s0__vs__topk_s1"
    assert r1.metrics["assignment_sample"] == 20
    path = write_result(tmp_path, r1)
    assert path.name == "stability.json" and path.parent.name == "topk_s0__vs__topk_s1"


def _gumbel_expected_max(n: int, d: int) -> float:
    """Expected max of n independent cosines between random unit vectors in R^d
    (each ~ N(0, 1/d)), by the Gumbel limit of Gaussian maxima."""
    s = math.sqrt(2 * math.log(n))
    a_n = s - (math.log(math.log(n)) + math.log(4 * math.pi)) / (2 * s)
    return (a_n + 0.5772156649 / s) / math.sqrt(d)


def test_chance_level_matches_the_gumbel_limit_and_grows_with_rows():
    chance = chance_best_match(2048, 2048, 640, seed=0)
    assert chance == pytest.approx(_gumbel_expected_max(2048, 640), abs=0.006)  # ~0.137
    assert chance == chance_best_match(2048, 2048, 640, seed=0)  # seeded
    assert chance_best_match(256, 2048, 64, seed=0) > chance_best_match(256, 256, 64, seed=0) + 0.02


def test_every_pair_carries_its_chance_level():
    W = torch.randn(512, 64, generator=torch.Generator().manual_seed(1))
    values, _ = decoder_stability(W, W.clone(), StabilityConfig())
    assert values["max_cos_mean"] == pytest.approx(1.0)
    assert values[metrics.STABILITY_CHANCE.name] == pytest.approx(
        chance_best_match(512, 512, 64, seed=0))
    assert values[metrics.STABILITY_CHANCE.name] < 0.5


def test_evaluate_pairs_seeds_per_name_and_snapshot(monkeypatch, tmp_path):
    """Notebook 05 pairs disjoint seeds of each main name, and of its snapshots at
    the same token count only (never a snapshot with a finished run)."""
    from atm_repro import evaluate
    from atm_repro.runs import SAERecord

    def rec(name, seed, tokens=None, group="main"):
        sid = f"L8-{name}-s{seed}" + (f"-t{tokens}" if tokens else "")
        return SAERecord(sid, "snapshot" if tokens else group, name, seed, 8, tmp_path / sid,
                         tokens)

    records = [rec("atm", s) for s in range(3)] + [rec("atm", s, 250) for s in range(2)]
    records += [rec("atm", 0, 500), rec("topk-k20", 0, group="ablation"),
                rec("topk-k20", 1, group="ablation")]
    seen = []
    monkeypatch.setattr(SAERecord, "run_key", property(lambda r: r.sae_id))
    monkeypatch.setattr(evaluate, "load_sae", lambda path: path.name)
    monkeypatch.setattr(evaluate, "is_fresh", lambda *a: False)
    monkeypatch.setattr(evaluate, "_write", lambda *a: None)
    monkeypatch.setattr(evaluate, "run_stability",
                        lambda a, b, cfg, ida, idb: seen.append((ida, idb)))
    evaluate._stability(records, StabilityConfig(), tmp_path)
    assert sorted(seen) == [("L8-atm-s0", "L8-atm-s1"), ("L8-atm-s0-t250", "L8-atm-s1-t250")]
