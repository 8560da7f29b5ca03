"""The variant registry (atm_repro.saes.registry): a variant defined and registered
in this file alone trains, saves and loads (ours and SAELens's layout), runs the
core eval and is drawn in its own colour; the toy benchmark's defaults and the
figures follow the registry; bad names and clashing registrations fail early."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

from atm_repro.cache import ActivationCache, ArraySource, build_cache
from atm_repro.config import (
    ConfigError,
    CorpusConfig,
    ModelConfig,
    Profile,
    SAESpec,
    TrainConfig,
    from_dict,
)
from atm_repro.corpus import load_articles
from atm_repro.evals.core import CoreConfig, run_core
from atm_repro.evals.toy import ToyBenchmarkConfig, toy_runs
from atm_repro.models import load_model
from atm_repro.profiles import load_profile
from atm_repro.report import plots, style
from atm_repro.saes import INFO, VARIANTS, SAEConfigError, build_config, build_sae
from atm_repro.saes.io import EXTRA_STATE, SAE_CFG, SAEMeta, load_sae
from atm_repro.saes.registry import PlotStyle, VariantInfo, register_variant
from atm_repro.saes.standard import StandardConfig, StandardSAE
from atm_repro.train import CHECKPOINT, TRAIN_LOG, train_sae

LAYER = 1
NAME = "shrunk-init"


@dataclass(frozen=True)
class ShrunkInitConfig(StandardConfig):
    init_scale: float = 0.5  # W_enc starts at this times W_dec^T


class ShrunkInitSAE(StandardSAE):
    """A standard (L1) SAE whose encoder starts at ``init_scale`` W_dec^T."""

    architecture = NAME
    config_cls = ShrunkInitConfig

    @torch.no_grad()
    def init_weights(self, generator, b_dec_D=None) -> None:
        super().init_weights(generator, b_dec_D)
        self.W_enc.mul_(self.cfg.init_scale)
        self.b_enc.mul_(self.cfg.init_scale)  # still -b_dec W_enc: centred


SHRUNK = VariantInfo(PlotStyle("shrunk init", "#882255", "d"),
                     toy_params={"l1_coefficient": 1.0}, toy_sweep=("l1_coefficient", (1.0,)))


@pytest.fixture
def shrunk():
    """``ShrunkInitSAE`` registered for one test."""
    register_variant(ShrunkInitSAE, SHRUNK)
    yield ShrunkInitSAE
    del VARIANTS[NAME], INFO[NAME]


@pytest.fixture(scope="module")
def model_and_cache(tmp_path_factory):
    """tiny-gemma3 and a small clean cache of its layer 1 (as tests/test_evals_core.py)."""
    loaded = load_model(ModelConfig(), corpus_texts=load_articles(CorpusConfig(max_articles=200)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATM_REPRO_RUNS", str(tmp_path_factory.mktemp("runs")))
        profile = from_dict(Profile, {
            "name": "registry-test",
            "corpus": {"context": 16, "max_articles": 200},
            "cache": {"layers": [LAYER], "train_tokens": 1200, "eval_tokens": 200,
                      "batch_size": 8, "shard_sequences": 8},
            "train": {"layer": LAYER},
        })
        path = build_cache(profile, loaded=loaded, progress=False)
    return loaded, ActivationCache.open(path)


def test_a_variant_registered_here_trains_saves_loads_evaluates_and_plots(
        shrunk, model_and_cache, tmp_path):
    loaded, cache = model_and_cache
    spec = SAESpec(variant=NAME, params={"l1_coefficient": 1.0, "init_scale": 0.25})
    tcfg = TrainConfig(layer=LAYER, width=48, batch_size=64, tokens=64 * 12, lr=3e-3,
                       lr_warmup_steps=2, dead_tokens=256, init_sample_tokens=500,
                       log_every=3, seeds=[0])
    meta = SAEMeta(model_name=cache.manifest.model, hook_name=f"blocks.{LAYER}.hook_resid_post",
                   layer=LAYER, context_size=16, dataset_path="wiki-vital")
    out = tmp_path / "sae"
    result = train_sae("shrunk", spec, 0, tcfg, cache.source(LAYER, "train"), out, meta,
                       eval_source=cache.source(LAYER, "eval"), progress=False)
    assert result.status == "trained" and result.steps == 12

    # the trainer started from the variant's own init (W_enc = init_scale W_dec^T)
    first = build_sae(NAME, build_config(NAME, spec.params, cache.d_model, 48))
    first.init_weights(torch.Generator().manual_seed(0))
    torch.testing.assert_close(first.W_enc, 0.25 * first.W_dec.T)

    # saved in SAELens's layout as a standard SAE, loaded back as the variant
    cfg = json.loads((out / SAE_CFG).read_text())
    assert cfg["architecture"] == "standard" and cfg["atm_repro"]["variant"] == NAME
    sae = load_sae(out)
    assert type(sae) is ShrunkInitSAE and sae.cfg.init_scale == 0.25
    trained = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)["sae"]
    assert not torch.equal(trained["W_enc"], 0.25 * trained["W_dec"].T)  # it did train

    # a plain SAELens directory (no "atm_repro" block) of the same save loads as a
    # standard SAE (the registered SAELens reader) and computes the same function
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    (plain / EXTRA_STATE).unlink(missing_ok=True)
    (plain / SAE_CFG).write_text(json.dumps({k: v for k, v in cfg.items() if k != "atm_repro"}))
    as_saelens = load_sae(plain)
    assert type(as_saelens) is StandardSAE
    x = torch.from_numpy(cache.source(LAYER, "eval").gather(np.arange(64)))
    torch.testing.assert_close(as_saelens.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(as_saelens(x), sae(x), rtol=1e-5, atol=1e-5)

    core = run_core(sae, loaded, cache, LAYER, CoreConfig(n_tokens=64, batch_size=16,
                                                          n_splice_sequences=2,
                                                          splice_batch_size=2), "shrunk")
    assert 0.0 < core.metrics["explained_variance"] < 1.0
    assert core.metrics["n_tokens"] == 64 and core.metrics["l0"] > 0

    fig = plots.plot_density({NAME: core.details["density_histogram"]})
    (line,) = fig.axes[0].get_lines()
    assert to_hex(line.get_color()) == "#882255"
    assert line.get_label().startswith("shrunk init (dead ")
    plt.close(fig)


def test_figures_and_toy_defaults_follow_the_registry(shrunk):
    assert style.family(NAME) == SHRUNK.style and style.label(NAME) == "shrunk init"
    assert style.families()[NAME] == SHRUNK.style
    runs = {r.name: r for r in toy_runs(ToyBenchmarkConfig())}
    assert runs[f"{NAME}-l1_coefficient1"].spec == SAESpec(NAME, {"l1_coefficient": 1.0})
    assert len(runs) == 25  # the six built-in variants' 24 runs, and this one


def test_an_unregistered_variant_is_unknown_everywhere(tmp_path):
    assert NAME not in VARIANTS
    assert style.family(NAME).color == style.OTHER.color  # grey, not a registered colour
    assert NAME not in {r.spec.variant for r in toy_runs(ToyBenchmarkConfig())}
    with pytest.raises(SAEConfigError, match=f"unknown SAE variant '{NAME}'"):
        train_sae("x", SAESpec(variant=NAME), 0, TrainConfig(width=8),
                  ArraySource(np.zeros((100, 4), np.float32)), tmp_path,
                  SAEMeta("m", "h", 0, 1, "d"), progress=False)
    assert not (tmp_path / TRAIN_LOG).exists() and not (tmp_path / CHECKPOINT).exists()


def test_a_misspelled_variant_fails_on_load_with_the_nearest_name():
    with pytest.raises(ConfigError, match=r"train.saes.topk: unknown SAE variant 'jumprelo' "
                                          r"\(did you mean 'jumprelu'\?\); known variants"):
        load_profile("smoke", {"train.saes.topk.variant": "jumprelo"})
    with pytest.raises(SAEConfigError, match=r"'batch_topk' \(did you mean 'batchtopk'\?\)"):
        build_config("batch_topk", {}, 8, 16)


class _Unsaveable(StandardSAE):
    architecture = "unsaveable"
    saelens_architecture = "gated"


class _Nameless(StandardSAE):
    architecture = ""


@pytest.mark.parametrize("cls,info,match", [
    (StandardSAE, VariantInfo(PlotStyle("x", "#111111", "1")), "already registered"),
    (ShrunkInitSAE, VariantInfo(PlotStyle("x", "#0072b2", "1")), "colour #0072b2 is atm's"),
    (ShrunkInitSAE, VariantInfo(PlotStyle("x", "#111111", "o")), "marker 'o' is atm's"),
    (ShrunkInitSAE, VariantInfo(PlotStyle("x", "#111111", "1"), reads_saelens=True),
     "already load as 'standard'"),
    (_Unsaveable, VariantInfo(PlotStyle("x", "#111111", "1")), "saelens_architecture 'gated'"),
    (_Nameless, VariantInfo(PlotStyle("x", "#111111", "1")), "set the class's architecture"),
])
def test_clashing_registrations_are_refused(cls, info, match):
    before = (dict(VARIANTS), dict(INFO))
    with pytest.raises(ValueError, match=match):
        register_variant(cls, info)
    assert (VARIANTS, INFO) == before
