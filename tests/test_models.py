"""atm_repro.models: names are checked, and the hub fails fast offline, before any load."""

from __future__ import annotations

import time

import pytest
from helpers import forbid_model_load

from atm_repro import models
from atm_repro.cache import build_cache
from atm_repro.config import ConfigError, ModelConfig
from atm_repro.profiles import load_profile


def test_unknown_model_fails_before_loading(tiny_profile, monkeypatch):
    forbid_model_load(monkeypatch)
    profile = load_profile("smoke", {"model.name": "gpt-7"})
    with pytest.raises(ConfigError, match="unknown model 'gpt-7'"):
        build_cache(profile)


def test_layer_out_of_range_fails_before_loading(runs_dir, monkeypatch):
    forbid_model_load(monkeypatch)
    profile = load_profile("cpu", {"cache.layers": [4, 8, 12, 18]})
    with pytest.raises(ConfigError, match=r"layer\(s\) \[18\] out of range"):
        build_cache(profile)


def test_hub_model_offline_fails_fast_naming_offline_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty local cache
    t0 = time.perf_counter()
    with pytest.raises(models.ModelUnavailable, match="gemma-3-270m"):
        models.load_model(ModelConfig(name="google/gemma-2-2b"))
    assert time.perf_counter() - t0 < 30
