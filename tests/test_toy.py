"""Planted-absorption toy: generator invariants and seeding, the exact and the
probe-pipeline absorption on hand-built SAEs with known answers (0, 1,
partial), and the benchmark end to end at smoke size (reuse, config errors)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from atm_repro.cache import ArraySource
from atm_repro.config import ConfigError, from_dict
from atm_repro.evals.results import read_result, result_path
from atm_repro.evals.toy import (
    EVAL_NAME,
    ToyAbsorptionConfig,
    ToyBenchmarkConfig,
    ToyConfig,
    ToyProbeConfig,
    make_toy_data,
    parent_labels,
    prepare_toy_probes,
    run_toy_absorption,
    toy_absorption,
    toy_probe_absorption,
    toy_runs,
)
from atm_repro.saes.base import SAE, SAEConfig
from atm_repro.toybench import run_toy_benchmark

CFG = ToyConfig(d=32, n_features=24, n_parents=3, children_per_parent=3,
                child_given_parent=0.75, n_tokens=6000)
ABS = ToyAbsorptionConfig(batch_size=1000)
# Many rare children per parent, as words under a first letter.
MANY = ToyConfig(d=48, n_features=48, n_parents=2, children_per_parent=20, n_tokens=6000)




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
    cfg = ToyConfig(d=16, n_features=40, n_parents=2, children_per_parent=4, orthogonal=False,
                    n_tokens=200)
    d = make_toy_data(cfg)
    assert np.allclose(np.linalg.norm(d.directions_FD, axis=1), 1.0, atol=1e-6)


def test_bad_config_rejected():
    with pytest.raises(ConfigError, match="orthogonal"):
        ToyConfig(d=8, n_features=24, n_parents=2, children_per_parent=3)
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
    d = make_toy_data(ToyConfig(d=32, n_features=24, n_parents=2, children_per_parent=4,
                                orthogonal=False, n_tokens=2000))
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


def test_exact_checks(data):
    with pytest.raises(ValueError, match="d_in"):
        toy_absorption(SAE(SAEConfig(8, 4)), data, ABS)


# ------------------------------------------------------------ probe pipeline


def test_parent_labels(data):
    y = parent_labels(data)
    on = data.firing_NF[:, list(data.hierarchy)]
    assert np.array_equal(y == -1, on.sum(1) > 1)
    assert np.array_equal(y == 3, on.sum(1) == 0)  # 3 parents: label 3 = none fires
    single = on.sum(1) == 1
    assert np.array_equal(y[single], on[single].argmax(1))


@pytest.fixture(scope="module")
def many():
    return make_toy_data(MANY).split(3000)


@pytest.mark.parametrize("direction", ["logistic", "known"])
def test_probe_pipeline_agrees_with_exact_on_hand_built_saes(many, direction):
    train, test = many
    cfg = ToyProbeConfig(direction=direction, train_tokens=3000)
    probes = prepare_toy_probes(train, test, cfg)
    if direction == "logistic":
        assert np.all(probes.probe_f1_P > 0.9)

    perfect = planted_sae(test)
    m, details = toy_probe_absorption(perfect, probes, cfg)
    assert toy_absorption(perfect, test, ABS)[0]["mean_absorption"] == 0.0
    assert m["mean_probe_full_absorption"] == 0.0 and m["mean_probe_absorption_fraction"] == 0.0
    assert m["n_parents_probed"] == 2 and m["mean_probe_n_main_latents"] == 1.0
    for parent, row in details["per_parent"].items():
        assert row["probe_main_latents"] == [parent]  # the parent's own latent, alone
        assert row["probe_n_true_positives"] > 50

    absorbing = planted_sae(test, silenced=test.hierarchy)
    m, _ = toy_probe_absorption(absorbing, probes, cfg)
    assert toy_absorption(absorbing, test, ABS)[0]["mean_absorption"] == 1.0
    # below 1 only where the child latent's share of the parent, m_c / (sqrt 2 m_p),
    # misses the pipeline's 0.4 (magnitudes are uniform in [0.5, 1.5])
    assert m["mean_probe_full_absorption"] > 0.75
    assert m["mean_probe_full_absorption_alone"] == 0.0  # the parent alone still fires


def test_probe_pipeline_misses_absorption_with_few_children(data):
    """With 3 children per parent each child latent lifts the k-sparse F1 by more
    than f1_jump, so the children become main latents and nothing is absorbed."""
    train, test = data.split(3000)
    cfg = ToyProbeConfig(train_tokens=3000)
    m, details = toy_probe_absorption(planted_sae(test, silenced=test.hierarchy),
                                      prepare_toy_probes(train, test, cfg), cfg)
    assert m["mean_probe_full_absorption"] == 0.0
    for parent, children in test.hierarchy.items():
        assert set(children) <= set(details["per_parent"][parent]["probe_main_latents"])


def test_runner_merges_exact_and_probe(many):
    train, test = many
    cfg = from_dict(ToyBenchmarkConfig, {"data": dataclasses.asdict(MANY), "eval_tokens": 3000,
                                         "width": 48, "probe": {"train_tokens": 3000}})
    probes = prepare_toy_probes(train, test, cfg.probe)
    result = run_toy_absorption(planted_sae(test, silenced=test.hierarchy), probes, cfg, "x")
    assert result.eval_name == EVAL_NAME == "toy_absorption"
    assert result.metrics["mean_absorption"] == 1.0
    for row in result.details["per_parent"].values():
        assert row["absorption"] == 1.0 and row["probe_main_has_parent_latent"]
        assert row["probe_full_absorption"] > 0.75


# ------------------------------------------------------------------ benchmark


def smoke_config(**changes) -> ToyBenchmarkConfig:
    raw = {
        "data": {"d": 24, "n_features": 24, "n_parents": 2, "children_per_parent": 6,
                 "n_tokens": 3000},
        "eval_tokens": 1000, "width": 32, "tokens": 12_800, "batch_size": 256,
        "lr_warmup_steps": 5, "dead_tokens": 5000,
        "saes": {"topk": {"variant": "topk", "params": {"k": 2}},
                 "atm": {"variant": "atm", "params": {"warmup_steps": 10}}},
        "sweeps": {"topk": {"param": "k", "values": [1, 2]},
                   "atm": {"param": "l1_coefficient", "values": [0.3, 1.0]}},
        "probe": {"train_tokens": 1000},
        **changes,
    }
    return from_dict(ToyBenchmarkConfig, raw)


def _mtimes(root) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}


def test_benchmark_end_to_end_and_reuse(tmp_path):
    cfg = smoke_config()
    df = run_toy_benchmark(cfg, tmp_path, progress=False)
    names = ["topk-k1", "topk-k2", "atm-l1_coefficient0.3", "atm-l1_coefficient1"]
    assert df["run"].tolist() == names
    assert df["variant"].tolist() == ["topk", "topk", "atm", "atm"]
    assert df["value"].tolist() == [1.0, 2.0, 0.3, 1.0]
    for col in ("l0", "explained_variance", "mean_absorption", "mean_absorption_alone",
                "mean_probe_full_absorption", "mean_probe_absorption_fraction",
                "mean_feature_recovery"):
        assert df[col].notna().all(), col
    assert df.loc[0, "l0"] <= 1.0 and df.loc[1, "l0"] <= 2.0  # TopK: at most k active
    assert df["explained_variance"].between(0.0, 1.0).all()
    for name in names:
        assert read_result(result_path(tmp_path / "evals", name, EVAL_NAME))["sae_id"] == name
    assert len(list((tmp_path / "evals").glob("*/*.json"))) == 4

    before = _mtimes(tmp_path)
    again = run_toy_benchmark(cfg, tmp_path, progress=False)
    pd.testing.assert_frame_equal(df, again)
    assert _mtimes(tmp_path) == before  # every run reused, none retrained

    changed = smoke_config(sweeps={"topk": {"param": "k", "values": [1, 3]},
                                   "atm": {"param": "l1_coefficient", "values": [0.3, 1.0]}})
    third = run_toy_benchmark(changed, tmp_path, progress=False)
    after = _mtimes(tmp_path)
    assert set(after) == set(before) | {"topk-k3"}
    assert {n for n in before if after[n] != before[n]} == set()  # only topk-k3 trained
    pd.testing.assert_frame_equal(third.drop(index=1), df.drop(index=1))


def test_default_config_runs_every_variant():
    cfg = ToyBenchmarkConfig()
    runs = toy_runs(cfg)
    assert {r.spec.variant for r in runs} == {"standard", "topk", "batchtopk", "jumprelu", "atm",
                                              "matryoshka"}
    assert len({r.name for r in runs}) == len(runs) == 24


@pytest.mark.parametrize("changes, match", [
    ({"sweeps": {"nope": {"param": "k", "values": [1]}}}, r"sweeps: \['nope'\] not in saes"),
    ({"sweeps": {}}, "sweeps is empty"),
    ({"sweeps": {"topk": {"param": "k", "values": []}}}, "at least one value"),
    ({"saes": {"topk": {"variant": "nope"}, "atm": {"variant": "atm"}}},
     "unknown SAE variant 'nope'"),
    ({"sweeps": {"topk": {"param": "bogus", "values": [1]}}}, "bogus"),
    ({"sweeps": {"topk": {"param": "k", "values": [64]}}}, "k must be in"),
    ({"eval_tokens": 3000}, "eval_tokens"),
])
def test_bad_benchmark_config(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        smoke_config(**changes)
