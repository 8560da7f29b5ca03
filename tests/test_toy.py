"""Planted-absorption toy: generator invariants and seeding, and the exact
absorption metric on hand-built SAEs with known answers (0, 1, partial)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atm_repro.cache import ArraySource
from atm_repro.evals.results import write_result
from atm_repro.evals.toy import (
    ToyAbsorptionConfig,
    ToyConfig,
    make_toy_data,
    run_toy_absorption,
    toy_absorption,
)
from atm_repro.saes.base import SAE, SAEConfig

CFG = ToyConfig(d=32, n_features=24, n_parents=3, children_per_parent=3, n_tokens=6000)
ABS = ToyAbsorptionConfig(batch_size=1000)


@pytest.fixture(scope="module")
def data():
    return make_toy_data(CFG)


def hand_sae(W_enc_DF: np.ndarray, W_dec_FD: np.ndarray) -> SAE:
    sae = SAE(SAEConfig(*W_enc_DF.shape))
    with torch.no_grad():
        sae.W_enc.copy_(torch.as_tensor(W_enc_DF, dtype=torch.float32))
        sae.W_dec.copy_(torch.as_tensor(W_dec_FD, dtype=torch.float32))
        sae.b_enc.fill_(-1e-4)  # zero the float round-off of the exact inverse
    return sae


def planted_sae(data, silenced: dict[int, list[int]] | None = None,
                absorb: bool = True) -> SAE:
    """Encoder = exact inverse of the planted basis (one latent per true feature).

    ``silenced[p]`` lists children whose firing turns the parent latent off
    (pre-activation a_p - 10 * a_c <= 0 since magnitudes are in [0.5, 1.5]);
    with ``absorb`` those children's decoder rows also carry the parent direction.
    """
    dirs = data.directions_FD.astype(np.float64)
    M_FF = np.eye(len(dirs))
    W_dec = dirs.copy()
    for parent, children in (silenced or {}).items():
        for child in children:
            M_FF[child, parent] = -10.0
            if absorb:
                row = dirs[child] + dirs[parent]
                W_dec[child] = row / np.linalg.norm(row)
    return hand_sae(np.linalg.pinv(dirs) @ M_FF, W_dec)


# ------------------------------------------------------------------ generator


def test_hierarchy_invariants(data):
    firing = data.firing_NF
    assert data.hierarchy == {0: [1, 2, 3], 4: [5, 6, 7], 8: [9, 10, 11]}
    for parent, children in data.hierarchy.items():
        child_any = firing[:, children].any(1)
        assert np.all(firing[child_any, parent])  # a child never fires without its parent
        assert firing[:, children].sum(1).max() == 1  # siblings are exclusive
        assert firing[:, parent].mean() == pytest.approx(CFG.parent_prob, abs=0.015)
        assert child_any.sum() / firing[:, parent].sum() == pytest.approx(
            CFG.child_given_parent, abs=0.05)
    assert firing[:, 12:].mean() == pytest.approx(CFG.firing_prob, abs=0.005)


def test_activations_and_directions(data):
    assert data.acts_ND.shape == (CFG.n_tokens, CFG.d) and data.acts_ND.dtype == np.float32
    assert np.allclose(data.directions_FD @ data.directions_FD.T, np.eye(CFG.n_features),
                       atol=1e-5)
    assert np.allclose(data.acts_ND, data.coeffs_NF @ data.directions_FD, atol=1e-5)
    on = data.coeffs_NF[data.firing_NF]
    assert on.min() >= CFG.magnitude_min and on.max() <= CFG.magnitude_max
    src = data.source()
    assert isinstance(src, ArraySource) and len(src) == CFG.n_tokens and src.d_model == CFG.d
    assert np.array_equal(src.gather(np.array([3, 1])), data.acts_ND[[3, 1]])


def test_seeded(data):
    again = make_toy_data(CFG)
    assert np.array_equal(again.acts_ND, data.acts_ND)
    other = make_toy_data(ToyConfig(**{**CFG.__dict__, "seed": 1}))
    assert not np.array_equal(other.firing_NF, data.firing_NF)


def test_superposed_directions_are_unit():
    cfg = ToyConfig(d=16, n_features=40, n_parents=2, orthogonal=False, n_tokens=200)
    d = make_toy_data(cfg)
    assert np.allclose(np.linalg.norm(d.directions_FD, axis=1), 1.0, atol=1e-6)


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="orthogonal"):
        ToyConfig(d=8, n_features=24)
    with pytest.raises(ValueError, match="hierarchy"):
        ToyConfig(d=64, n_features=10, n_parents=3, children_per_parent=3)
    with pytest.raises(ValueError, match="parent_prob"):
        ToyConfig(parent_prob=1.5)


# ------------------------------------------------------------------ absorption


def test_planted_sae_has_no_absorption(data):
    m, details = toy_absorption(planted_sae(data), data, ABS)
    assert m["mean_absorption"] == 0.0
    assert m["mean_absorption_alone"] == 0.0
    assert m["mean_parent_silent_on_children"] == 0.0
    assert m["mean_parent_latent_cos"] == pytest.approx(1.0, abs=1e-5)
    assert m["mean_feature_recovery"] == pytest.approx(1.0, abs=1e-5)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-4)
    assert m["l0"] == pytest.approx(data.firing_NF.sum(1).mean(), rel=1e-6)
    for parent, row in details["per_parent"].items():
        assert row["parent_latent"] == parent


def test_planted_sae_superposed_has_no_absorption():
    d = make_toy_data(ToyConfig(d=32, n_features=24, n_parents=2, orthogonal=False,
                                n_tokens=2000))
    m, _ = toy_absorption(planted_sae(d), d, ABS)
    assert m["mean_absorption"] == 0.0
    assert m["mean_feature_recovery"] == pytest.approx(1.0, abs=1e-5)


def test_fully_absorbing_sae(data):
    sae = planted_sae(data, silenced=data.hierarchy)
    m, details = toy_absorption(sae, data, ABS)
    assert m["mean_absorption"] == 1.0
    assert m["mean_absorption_alone"] == 0.0  # the control: the parent alone still fires
    for parent, row in details["per_parent"].items():
        assert row["parent_latent"] == parent  # cos 1 beats the children's 1/sqrt(2)
        assert row["n_carriers"] == 3
        assert all(v == 1.0 for v in row["absorption_by_child"].values())


def test_partial_absorption_is_the_absorbed_child_share(data):
    first = {p: c[:1] for p, c in data.hierarchy.items()}
    m, details = toy_absorption(planted_sae(data, silenced=first), data, ABS)
    firing = data.firing_NF
    for parent, children in data.hierarchy.items():
        row = details["per_parent"][parent]
        expected = firing[:, children[0]].sum() / firing[:, children].any(1).sum()
        assert row["absorption"] == pytest.approx(expected)
        assert row["absorption_by_child"][children[0]] == 1.0
        assert row["absorption_by_child"][children[1]] == 0.0
    assert 0.2 < m["mean_absorption"] < 0.5


def test_silent_parent_without_carrier_is_not_absorption(data):
    m, _ = toy_absorption(planted_sae(data, silenced=data.hierarchy, absorb=False), data, ABS)
    assert m["mean_parent_silent_on_children"] == 1.0
    assert m["mean_absorption"] == 0.0


def test_runner_and_checks(data, tmp_path):
    sae = planted_sae(data, silenced=data.hierarchy)
    r1 = run_toy_absorption(sae, data, ABS, "toy_standard")
    r2 = run_toy_absorption(sae, data, ABS, "toy_standard")
    assert r1.metrics == r2.metrics and r1.eval_name == "toy_absorption"
    assert write_result(tmp_path, r1).name == "toy_absorption.json"
    with pytest.raises(ValueError, match="d_in"):
        toy_absorption(SAE(SAEConfig(8, 4)), data, ABS)
