"""Shared fixtures: a tiny profile whose runs/ lives in a temp dir."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_OVERRIDES

from atm_repro.profiles import load_profile


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ATM_REPRO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture
def tiny_profile(runs_dir):
    """The smoke profile shrunk further (``helpers.TINY_OVERRIDES``)."""
    return load_profile("smoke", TINY_OVERRIDES)


@pytest.fixture(autouse=True)
def one_thread():
    """Unit tests use tiny tensors: extra intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
