"""Shared fixtures: a tiny profile whose runs/ lives in a temp dir."""

from __future__ import annotations

import pytest
import torch

from atm_repro.config import load_profile

TINY_OVERRIDES = {
    "corpus.max_articles": 120,
    "corpus.context": 16,
    "cache.layers": [1, 2],
    "cache.train_tokens": 1500,
    "cache.eval_tokens": 300,
    "cache.batch_size": 8,
    "cache.shard_sequences": 32,
    "train.layer": 1,
}


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ATM_REPRO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture
def tiny_profile(runs_dir):
    """The smoke profile shrunk further: a cache build takes about a second."""
    return load_profile("smoke", TINY_OVERRIDES)


@pytest.fixture(autouse=True)
def one_thread():
    """Unit tests use tiny tensors: extra intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
