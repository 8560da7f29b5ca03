"""atm_repro.evals.registry: an eval is one module that registers itself; the
profile accepts its section and ``evaluate_profile`` runs it, nothing else changed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from helpers import TINY_OVERRIDES, save_tiny_checkpoint

from atm_repro.cache import ActivationCache, build_cache
from atm_repro.config import ConfigError, CorpusConfig
from atm_repro.corpus import load_articles
from atm_repro.evals import EVAL_CONFIGS
from atm_repro.evals.registry import Eval, register, unregister
from atm_repro.evals.results import EvalResult, read_result, result_path
from atm_repro.profiles import load_profile
from atm_repro.runs import results_dir


@dataclass(frozen=True)
class WidthConfig:
    scale: float = 1.0


def _prepare(ctx, layers, cfg):
    return {layer: f"prepared L{layer}" for layer in layers}


def _run(sae, record, state, cfg):
    return EvalResult("width", record.sae_id, cfg,
                      {"scaled_d_sae": cfg.scale * sae.W_dec.shape[0]}, {"state": state})


@pytest.fixture
def width_eval():
    register(Eval("width", WidthConfig, frozenset({"main"}), _run, _prepare))
    yield
    unregister("width")


def test_a_registered_eval_is_configured_and_run_by_evaluate(width_eval, runs_dir, tmp_path):
    from atm_repro.evaluate import evaluate_profile
    from atm_repro.train import train_profile

    assert "width" in EVAL_CONFIGS
    with pytest.raises(ConfigError, match="evals.width"):
        load_profile("smoke", {"evals.width": {"nope": 1}})
    texts = load_articles(CorpusConfig(max_articles=120))
    cfg = load_profile("smoke", {
        **TINY_OVERRIDES, "model.name": str(save_tiny_checkpoint(tmp_path / "m", "llama", texts)),
        "train.width": 64, "train.tokens": 1024, "train.batch_size": 128,
        "ablations.factors": {}, "ablations.sparsity_sweeps": {}, "cross_layer.layers": [1],
        "evals.core.n_splice_sequences": 2, "evals.absorption": {"n_words": 100},
        "evals.probing": {"datasets": ["wiki_topic"], "n_train": 10, "n_test": 6,
                          "max_tokens": 16},
        "evals.width": {"scale": 0.5}})
    train_profile(cfg, ActivationCache.open(build_cache(cfg, progress=False)), names=["atm"],
                  progress=False)
    evaluate_profile(cfg, progress=False)
    root = results_dir(cfg)
    for seed in (0, 1):
        data = read_result(result_path(root, f"L1-atm-s{seed}", "width"))
        assert data["metrics"] == {"scaled_d_sae": 32.0}  # 0.5 x 64 latents
        assert data["details"] == {"state": "prepared L1"} and data["key"]
    assert len(list(root.glob("*/width.json"))) == 2  # main SAEs only
    # a fresh result is not recomputed
    before = result_path(root, "L1-atm-s0", "width").stat().st_mtime_ns
    evaluate_profile(cfg, progress=False)
    assert result_path(root, "L1-atm-s0", "width").stat().st_mtime_ns == before


def test_register_rejects_a_second_eval_of_the_same_name(width_eval):
    with pytest.raises(ValueError, match="already registered"):
        register(Eval("width", WidthConfig))
    with pytest.raises(ValueError, match="has no run"):
        register(Eval("other", WidthConfig, frozenset({"main"})))


def test_each_eval_keys_its_own_code():
    """A result key hashes that eval's functions: the same inputs give different
    keys for core and absorption, and stability's key does not move with probing."""
    from atm_repro.codehash import definitions
    from atm_repro.evals.registry import EVALS
    from atm_repro.evals.results import result_key
    from atm_repro.evaluate import _code

    parts = ({"spec": "x"}, {"cfg": 1})
    keys = {name: result_key(*parts, code=_code(spec))
            for name, spec in EVALS.items() if spec.groups}
    assert len(set(keys.values())) == len(keys) == 3
    probing = definitions(*_code(EVALS["probing"]))
    assert any(k.endswith(":run_probing") for k in probing)
    assert not any(k.startswith("atm_repro.evals.absorption:") for k in probing)
