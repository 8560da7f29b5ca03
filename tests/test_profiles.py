"""atm_repro.profiles: loading, validation and overrides of every profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SWEEPS

import atm_repro
from atm_repro.config import ConfigError
from atm_repro.profiles import available_profiles, derived_runs, load_profile, scale_runs


def test_every_profile_loads():
    assert {"smoke", "cpu", "paper"} <= set(available_profiles())
    for name in available_profiles():
        assert load_profile(name).name == name


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"train.widht": 8}, r"train: unknown key\(s\) \['widht'\]"),
        ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
        ({"cache.dtype": "int8"}, "cache.dtype"),
        ({"train.lr": -1.0}, "train.lr must be > 0"),
        ({"train.saes.x": {"variant": "nope"}}, "unknown SAE variant 'nope'"),
        ({"train.saes.x": {"variant": "topk", "params": {"k": 10_000}}}, "k"),
        ({"train.layer": 7}, "not among cache.layers"),
        ({"train.sae_seeds": {"nope": [0]}}, r"train.sae_seeds: \['nope'\] not in train.saes"),
        ({"train.sae_seeds": {"topk": [0, 0]}}, "distinct"),
        ({"ablations.factor_seeds": {"gamma": [0]}}, "not in ablations.factors"),
        ({"ablations.sparsity_sweeps": {"topk": {"param": "k", "values": [8], "seeds": []}}},
         "seeds must be distinct and not empty"),
        ({"ablations.factors": {"ema_start": ["sometimes"]}},
         "ema_start: .sometimes. is not one of"),
        ({"convergence.saes": ["nope"]}, r"convergence.saes: \['nope'\] not in train.saes"),
        ({"companions": ["smoke"]}, "cannot be its own companion"),
        ({"companions": ["no-such-profile"]}, "unknown profile 'no-such-profile'"),
        ({"companions": [str(SWEEPS)]}, "has companions of its own"),
        ({"companions": ["smollm2"]}, "'smollm2' is not a smoke profile"),
    ],
)
def test_bad_profile_values_are_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_profile("smoke", overrides)


def test_unknown_profile_names_the_available_ones():
    with pytest.raises(ConfigError, match="available profiles"):
        load_profile("no-such-profile")


def test_dotted_keys_replace_and_mappings_merge():
    cfg = load_profile("smoke", {"ablations.factors": {"c": [2.0]}})
    assert cfg.ablations.factors == {"c": [2.0]}  # replaced
    cfg = load_profile("smoke", {"ablations": {"factors": {"c": [2.0]}}})
    assert cfg.ablations.factors["c"] == [2.0] and "beta" in cfg.ablations.factors  # merged


def test_overrides_given_as_text_are_parsed():
    cfg = load_profile("smoke", '{"cross_layer.layers": [2], "train.width": 64}')
    assert cfg.cross_layer.layers == [2] and cfg.train.width == 64
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_profile("smoke", "[1, 2]")


def test_dotted_and_nested_overrides_agree():
    a = load_profile("smoke", {"train.width": 128, "cache": {"batch_size": 4}})
    b = load_profile("smoke", {"train": {"width": 128}, "cache.batch_size": 4})
    assert a == b and a.train.width == 128 and a.cache.batch_size == 4


def test_seeds_per_spec_sweep_and_factor():
    cfg = load_profile("smoke", {
        "train.sae_seeds": {"topk": [0, 1, 2]},
        "ablations.factors": {"r": [2.0], "ema_start": ["first_batch"]},
        "ablations.factor_seeds": {"ema_start": [0, 1]},
        "ablations.sparsity_sweeps": {"topk": {"param": "k", "values": [8], "seeds": [3]}},
    })
    assert cfg.train.seeds_of("topk") == [0, 1, 2]
    assert cfg.train.seeds_of("atm") == cfg.train.seeds
    runs = {r.name: r for r in derived_runs(cfg)}
    assert runs["atm-r2"].seeds == tuple(cfg.ablations.seeds)
    assert runs["atm-ema_startfirst_batch"].seeds == (0, 1)
    assert runs["atm-ema_startfirst_batch"].spec.params["ema_start"] == "first_batch"
    assert runs["topk-k8"].seeds == (3,)


def test_scale_study_runs():
    cfg = load_profile("smoke", {"scale": {"saes": ["topk", "atm"], "widths": [128, 256, 512],
                                           "token_multiples": [0.5, 1, 4], "seeds": [0, 2]}})
    runs = {r.name: r for r in scale_runs(cfg)}
    # the main-set run is the point at train.width and 1x: not retrained
    assert cfg.train.width == 256
    assert sorted(runs) == ["atm-tokens0.5x", "atm-tokens4x", "atm-width128", "atm-width512",
                            "topk-tokens0.5x", "topk-tokens4x", "topk-width128", "topk-width512"]
    wide, long = runs["topk-width512"], runs["topk-tokens4x"]
    assert (wide.spec.width, wide.spec.tokens) == (512, None)
    assert (long.spec.width, long.spec.tokens) == (None, 4 * cfg.train.tokens)
    assert wide.spec.params == cfg.train.saes["topk"].params and wide.seeds == (0, 2)
    assert cfg.train.for_spec(long.spec).tokens == 4 * cfg.train.tokens
    assert cfg.train.for_spec(wide.spec).width == 512
    assert cfg.train.for_spec(cfg.train.saes["topk"]) == cfg.train
    with pytest.raises(ConfigError, match="scale.saes"):
        load_profile("smoke", {"scale.saes": ["nope"]})
    with pytest.raises(ConfigError, match="token_multiples"):
        load_profile("smoke", {"scale.token_multiples": [0]})


def test_companions_must_leave_the_paper_to_the_profile_naming_them(tmp_path):
    companion = tmp_path / "other.yaml"
    companion.write_text("name: other\n")  # writes_paper defaults to true
    with pytest.raises(ConfigError, match="other.yaml' must set writes_paper: false"):
        load_profile("cpu", {"companions": [str(companion)]})
    cfg = load_profile(SWEEPS)
    assert cfg.companions == ["smollm2"]
    assert not load_profile("smollm2").writes_paper


def test_reading_a_profile_imports_no_sklearn():
    """Loading a YAML validates each eval's config but runs no eval: scikit-learn
    (the probes) stays unimported."""
    code = ("import sys\nfrom atm_repro.profiles import load_profile\nload_profile('smoke')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    root = Path(atm_repro.__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, check=True)
    assert done.stdout.strip() == "[]", done.stdout[:300]


def test_specs_are_validated_at_their_own_width():
    """A spec's ``width`` is the d_sae its parameters are checked against when the
    profile loads (the trainer does not check them again)."""
    narrow = {"train.saes.topk.width": 8, "train.saes.topk.params.k": 12}
    with pytest.raises(ConfigError, match=r"train.saes.topk.*d_sae=8"):
        load_profile("smoke", narrow)
    wide = load_profile("smoke", {"train.width": 8, "train.saes": {"topk": {
        "variant": "topk", "params": {"k": 12}, "width": 16}}, "ablations.factors": {},
        "ablations.sparsity_sweeps": {}, "scale.saes": [], "cross_layer.saes": []})
    assert wide.train.saes["topk"].width == 16


def test_a_companion_loads_once_per_process(monkeypatch):
    from atm_repro import profiles

    loads = []
    real = profiles.load_profile
    monkeypatch.setattr(profiles, "load_profile",
                        lambda name, *a, **k: loads.append(name) or real(name, *a, **k))
    profiles._companion.cache_clear()
    cfg = profiles.load_profile(SWEEPS)
    assert [p.name for p in profiles.companion_profiles(cfg)] == ["smollm2"]
    profiles.load_profile(SWEEPS)
    assert loads.count("smollm2") == 1 and loads.count(SWEEPS) == 2
