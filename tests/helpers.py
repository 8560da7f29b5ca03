"""Shared test constants and synthetic sources (imported by test modules and conftest)."""

from __future__ import annotations

import itertools
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from atm_repro import cache as cache_mod
from atm_repro import metrics as metric_ids
from atm_repro import models
from atm_repro.cache import CacheManifest
from atm_repro.config import Profile
from atm_repro.profiles import derived_runs, scale_runs
from atm_repro.report.provenance import Stamp
from atm_repro.report.results import SAE_COLUMNS
from atm_repro.saes.base import SAE, SAEConfig

# The smoke profile shrunk further: a cache build takes about a second.
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

# The tiny smoke profile cut to one seed of one family (TopK) at one layer: no ablation,
# sweep, scale study or second layer (issue 34: every valid profile runs to the end).
ONE_FAMILY = {
    **TINY_OVERRIDES, "cache.layers": [1], "train.seeds": [0],
    "train.saes": {"topk": {"variant": "topk", "params": {"k": 8}}},
    "train.width": 64, "train.tokens": 1024, "train.batch_size": 128,
    "ablations.factors": {}, "ablations.sparsity_sweeps": {}, "scale.saes": [],
    "cross_layer.layers": [], "cross_layer.saes": [],
    "evals.core.n_splice_sequences": 2, "evals.absorption": {"n_words": 100},
    "evals.probing": {"datasets": ["wiki_topic"], "n_train": 10, "n_test": 6, "max_tokens": 16},
    "evals.toy.sweeps": {"topk": {"param": "k", "values": [1, 4]}}}

STAMP = Stamp("cpu", False, "abc1234")
# The design before the headline (sparsity sweeps at 195k tokens, five seeds at the
# compared points, a companion model): the fixture of the sweep-reading report tests.
SWEEPS = Path(__file__).parent / "profiles" / "sweeps.yaml"
# The whole headline design (cpu plus a random-mask control, ATM at the original's
# lambda, ablations and cross-layer runs at a breadth budget).
HEADLINE = Path(__file__).parent / "profiles" / "headline.yaml"


def manifest(d_model: int = 64, n_layers: int = 4, train_tokens: int = 15000,
             eval_tokens: int = 1984) -> CacheManifest:
    """A cache manifest with the fields the report reads (no shards)."""
    return CacheManifest(
        key={}, model="tiny-gemma3", model_fingerprint="x", d_model=d_model,
        n_layers_model=n_layers, layers=[1], hooks={"1": "blocks.1.hook_resid_post"},
        dtype="float32", context=32, bos_cached=False, corpus_fingerprint={},
        n_sequences={}, n_tokens={"train": train_tokens, "eval": eval_tokens},
        shard_sequences=64, token_mask_prob=0.0, code_version="0", shards={})


def hand_sae(W_enc_DF, W_dec_FD, b_enc_F=None) -> SAE:
    """A plain ReLU SAE with the given weights (b_dec = 0; b_enc default 0)."""
    W_enc_DF = np.asarray(W_enc_DF)
    sae = SAE(SAEConfig(d_in=W_enc_DF.shape[0], d_sae=W_enc_DF.shape[1]))
    with torch.no_grad():
        sae.W_enc.copy_(torch.as_tensor(W_enc_DF, dtype=torch.float32))
        sae.W_dec.copy_(torch.as_tensor(np.asarray(W_dec_FD), dtype=torch.float32))
        sae.b_enc.copy_(torch.as_tensor(0.0 if b_enc_F is None else b_enc_F,
                                        dtype=torch.float32).expand_as(sae.b_enc))
        sae.b_dec.zero_()
    return sae


class IdentitySAE(SAE):
    """encode(x) = x, decode(f) = f: a perfect 'reconstruction'."""

    def __init__(self, d: int):
        super().__init__(SAEConfig(d, d))
        with torch.no_grad():
            self.W_enc.copy_(torch.eye(d))
            self.W_dec.copy_(torch.eye(d))

    def activation(self, z_BF):
        return z_BF


def random_sae(d: int, f: int, seed: int = 0) -> SAE:
    """A plain ReLU SAE with the base class's seeded initialisation."""
    sae = SAE(SAEConfig(d, f))
    sae.init_weights(torch.Generator().manual_seed(seed))
    return sae


def ours_with(atm, topk, jumprelu, key="mean_full_absorption"):
    """An ``ours`` dict of ``report.claims`` with one claim's values."""
    return {"atm": {key: atm}, "topk": {key: topk}, "jumprelu": {key: jumprelu}}


def body_rows(text: str) -> list[str]:
    """The data rows of a generated table (between \\midrule and \\bottomrule)."""
    lines = text.splitlines()
    return lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]


TIDY_METRICS = {
    "core/l0": 30.0, "core/mse": 0.5, "core/cosine_similarity": 0.9,
    "core/explained_variance": 0.8, "core/ce_loss_score": 0.7, "core/frac_dead": 0.1,
    "absorption/mean_full_absorption": 0.1, "absorption/mean_absorption_fraction": 0.2,
    "absorption/raw/mean_full_absorption": 0.1,
    "absorption/n_letters_kept": 22.0, "absorption/max_k1_f1": 0.6,
    "absorption/mean_k1_f1": 0.4, "absorption/n_letter_latents": 5.0,
    "absorption/wrong_letter_fire_rate": 0.05, "absorption/meaningful": 1.0,
    "probing/mean_top1": 0.6, "probing/gender/top1": 0.7, "probing/sentiment/top1": 0.65,
    "probing/baseline/mean_top1": 0.55, "probing/mean_top1_se": 0.011,
    "probing/n_tasks_counted": 20.0, "probing/n_tasks": 26.0,
    "probing/n_train_min": 104.0, "probing/n_test_min": 26.0,
    "stability/max_cos_mean": 0.5,
}


def synthetic_tidy(cfg: Profile, metrics: dict[str, float] = TIDY_METRICS) -> pd.DataFrame:
    """A ``report.results`` tidy table for ``cfg``: every main SAE at every seed,
    every derived run and every scale-study run, each with ``metrics`` (values
    nudged per SAE)."""
    layer, rows = cfg.train.layer, []
    sae_rows = [(name, spec.variant, seed, "main", name, None, None)
                for name, spec in cfg.train.saes.items() for seed in cfg.train.seeds_of(name)]
    sae_rows += [(r.name, r.spec.variant, seed, "ablation", r.base, r.param, r.value)
                 for r in derived_runs(cfg) for seed in r.seeds]
    sae_rows += [(r.name, r.spec.variant, seed, "scale", r.base, r.param, r.value)
                 for r in scale_runs(cfg) for seed in r.seeds]
    specs = {**cfg.train.saes, **{r.name: r.spec for r in derived_runs(cfg) + scale_runs(cfg)}}
    for i, (name, variant, seed, group, base, param, value) in enumerate(sae_rows):
        mask = specs[name].params.get("mask_mode", "importance") if variant == "atm" else None
        desc = dict(zip(SAE_COLUMNS, (f"L{layer}-{name}-s{seed}", cfg.model.name, group, name,
                                      variant, mask, layer, seed, base, param, value)))
        rows += [{**desc, "metric": m, "result": v * (1 + 0.01 * i)} for m, v in metrics.items()]
    return pd.DataFrame(rows)


# transformers model types tested end to end on tiny random checkpoints (issue 34);
# those the installed transformers lacks are skipped by ``installed_archs``.
TINY_ARCHS = ("gpt_neox", "llama", "gemma3_text", "qwen2", "phi3", "mistral", "gpt2", "olmo")


def installed_archs() -> list:
    """``TINY_ARCHS`` as pytest params, each skipped if transformers does not know it."""
    from transformers import CONFIG_MAPPING

    return [pytest.param(arch, marks=pytest.mark.skipif(
                arch not in CONFIG_MAPPING, reason=f"transformers has no {arch!r}"))
            for arch in TINY_ARCHS]


def save_tiny_checkpoint(path, arch: str, texts: list[str], seed: int = 0, n_layers: int = 4):
    """An ``n_layers``-layer, d_model 32 causal LM of ``arch`` with random weights and the
    tiny byte-level BPE tokenizer, saved as a transformers directory at ``path``."""
    import transformers

    tok = models.build_tiny_tokenizer(texts)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id, vocab_size=len(tok))
    if arch == "gpt2":
        config = transformers.GPT2Config(n_layer=n_layers, n_embd=32, n_head=2, n_positions=128,
                                         **ids)
    else:
        config = transformers.AutoConfig.for_model(
            arch, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=128, **ids)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_gguf_header(path, arch: str, n_layers: int, d_model: int = 8):
    """A GGUF file with only the metadata ``models.gguf_header`` reads (no tensors)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(n_layers)
    writer.add_embedding_length(d_model)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def forbid_model_load(monkeypatch) -> None:
    """Make any model load fail: for tests that bad input is rejected before it."""
    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was validated")

    monkeypatch.setattr(cache_mod, "load_model", boom)
    for loader in ("_load_tiny", "_load_pretrained", "_convert_gguf"):
        monkeypatch.setattr(models, loader, boom)


L0S = (40.0, 20.0, 80.0, 160.0)  # the main point, then the three sweep points
ABSORPTION = {"atm": 0.2, "atm-random": 0.2, "atm-none": 0.5, "topk": 0.4, "matryoshka": 0.1,
              "jumprelu": 0.3, "batchtopk": 0.4, "standard": 0.3}
EV_OFFSET = {"atm": -0.02, "topk": 0.0}


def curve_table(cfg: Profile, shift_l0: dict[str, float] | None = None) -> pd.DataFrame:
    """Per-SAE rows of the cpu profile's main set and sweeps at the main layer:
    L0 as in L0S (times ``shift_l0[family]``), explained variance rising with log L0,
    a constant absorption per family; standard's absorption not meaningful."""
    rows, layer = [], cfg.train.layer
    for family, sweep in cfg.ablations.sparsity_sweeps.items():
        names = [(family, "main", None, None, cfg.train.seeds_of(family))]
        names += [(f"{family}-{sweep.param}{v:g}", "ablation", sweep.param, v, sweep.seeds)
                  for v in sweep.values]
        for (name, group, param, value, seeds), l0 in zip(names, L0S):
            l0 = l0 * (shift_l0 or {}).get(family, 1.0)
            ev = 0.8 + 0.03 * math.log2(l0 / 20) + EV_OFFSET.get(family, -0.01)
            ok = family != "standard"
            for seed in seeds:
                rows.append({"sae_id": f"L{layer}-{name}-s{seed}", "group": group,
                             "name": name, "variant": cfg.train.saes[family].variant,
                             "layer": layer, "seed": seed, "base": family, "param": param,
                             "value": value, "core/l0": l0, "core/explained_variance": ev,
                             "core/ce_loss_score": ev,
                             "absorption/mean_full_absorption":
                                 ABSORPTION[family] if ok else math.nan,
                             "absorption/raw/mean_full_absorption": ABSORPTION[family],
                             "absorption/mean_absorption_fraction":
                                 ABSORPTION[family] if ok else math.nan,
                             "absorption/raw/mean_absorption_fraction": ABSORPTION[family],
                             "absorption/meaningful": float(ok)})
    return pd.DataFrame(rows)


def one_setting_table(cfg, l0: dict[str, float], ev: dict[str, float]) -> pd.DataFrame:
    """Main-set rows of a profile without sparsity sweeps (the headline design):
    three seeds per spec, the given L0 and explained variance (seed noise +-0.001)."""
    rows = []
    for name in cfg.train.saes:
        for seed in cfg.train.seeds_of(name):
            rows.append({"sae_id": f"L8-{name}-s{seed}", "group": "main", "name": name,
                         "variant": cfg.train.saes[name].variant, "layer": cfg.train.layer,
                         "seed": seed, "base": name, "param": None, "value": None,
                         "core/l0": l0.get(name, 40.0),
                         "core/explained_variance": ev.get(name, 0.95) + 0.001 * (seed - 1),
                         "core/ce_loss_score": 0.9, "absorption/meaningful": 1.0})
    return pd.DataFrame(rows)


# the convergence study's hand-made table (``snapshot_tidy``)
SNAPSHOT_FAMILIES = ("topk", "atm", "atm-none")
# where the cpu profile's snapshots land (whole batches of 1024), then the run's end
SNAPSHOT_TOKENS = (249_856, 499_712, 1_000_448, 1_999_872, 4_999_168)
SNAPSHOT_SEEDS = (0, 1, 2)
# the mean over seeds (0.002) is neither a seed's value nor the median (0.001)
SNAPSHOT_SEED_OFFSET = {0: 0.0, 1: 0.001, 2: 0.005}
SNAPSHOT_BASE = {
    metric_ids.L0.id: 40.0, metric_ids.EXPLAINED_VARIANCE.id: 0.6,
    metric_ids.CE_LOSS_SCORE.id: 0.7, metric_ids.FRAC_DEAD.id: 0.2, metric_ids.MAX_K1_F1.id: 0.3,
    metric_ids.LETTER_LATENTS.id: 2.0, metric_ids.FULL_ABSORPTION.raw_id: 0.1,
    metric_ids.ABSORPTION_FRACTION.raw_id: 0.2, metric_ids.MEANINGFUL.id: 0.5}
SNAPSHOT_CHANCE = 0.136


def snapshot_value(metric: str, family: str, point: int, seed: int) -> float:
    """A per-SAE metric of one seed: rising with the point (0..4) and the family;
    absorption is meaningful (1) from the third point on, before it on seed 0 only."""
    if metric == metric_ids.MEANINGFUL.id:
        return float(point >= 2 or seed == 0)
    return (SNAPSHOT_BASE[metric] * (1 + 0.1 * SNAPSHOT_FAMILIES.index(family))
            * (1 + 0.05 * point) + SNAPSHOT_SEED_OFFSET[seed])


def snapshot_stability(family: str, point: int) -> float:
    """The best-match cosine of the pair (seed 0, seed 1) at one point."""
    return 0.3 + 0.05 * point + 0.01 * SNAPSHOT_FAMILIES.index(family)


def sae_rows(layer, name, group, seed, tokens, values) -> list[dict]:
    """Tidy rows of one SAE (a snapshot when ``group`` says so) that trained ``tokens``."""
    sae_id = f"L{layer}-{name}-s{seed}" + (f"-t{tokens}" if group == "snapshot" else "")
    desc = dict(zip(SAE_COLUMNS, (sae_id, "gemma-3-270m", group, name, "x", None, layer, seed,
                                  name, None, None)))
    return [{**desc, "metric": m, "result": v}
            for m, v in {metric_ids.TRAIN_TOKENS.id: float(tokens), **values}.items()]


def snapshot_tidy(layer: int = 8) -> pd.DataFrame:
    """A tidy results table as ``report.results.read_results`` gives it: the three
    families' finished SAEs (seeds 0-2) and their snapshots at 250k .. 2M tokens (atm-none's
    listed last first), stability on the pair (0, 1) of every point; beside them what
    the curves must leave out: atm-short (its own 1M budget) with its snapshots, jumprelu
    with no snapshot, and a topk snapshot at another layer."""
    rows = []
    for family, seed in itertools.product(SNAPSHOT_FAMILIES, SNAPSHOT_SEEDS):
        points = range(len(SNAPSHOT_TOKENS))
        for i in points if family != "atm-none" else reversed(points):
            values = {m: snapshot_value(m, family, i, seed) for m in SNAPSHOT_BASE}
            if seed in (0, 1):
                values |= {metric_ids.STABILITY_MAX_COS.id: snapshot_stability(family, i),
                           metric_ids.STABILITY_CHANCE.id: SNAPSHOT_CHANCE}
            group = "main" if SNAPSHOT_TOKENS[i] == SNAPSHOT_TOKENS[-1] else "snapshot"
            rows += sae_rows(layer, family, group, seed, SNAPSHOT_TOKENS[i], values)
    odd = {m: 9.0 for m in SNAPSHOT_BASE}  # far off every curve
    for seed in SNAPSHOT_SEEDS:
        rows += sae_rows(layer, "jumprelu", "main", seed, SNAPSHOT_TOKENS[-1], odd)
        for tokens in SNAPSHOT_TOKENS[:3]:
            group = "main" if tokens == SNAPSHOT_TOKENS[2] else "snapshot"
            rows += sae_rows(layer, "atm-short", group, seed, tokens, odd)
            rows += sae_rows(layer + 4, "topk", "snapshot", seed, tokens, odd)
    return pd.DataFrame(rows)


# Identifiers a reader should not meet: run ids (atm-s0), spec names of the profiles,
# snake_case keys, dotted config keys, "profile cpu" outside a command line, an
# unresolved reference (??) and a macro name that reached the page.
INTERNAL = {
    "run id": r"\b[a-z]+(?:-[a-z]+)*-s\d+\b",
    "spec name": r"\b(?:atm|topk|jumprelu)-(?:none|random|paper|short)\b",
    "snake_case key": r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b",
    "config key": r"\b(?:train|cache|evals|ablations|model|corpus|convergence)\.[a-z_]+",
    "profile name": r"(?<!--)\bprofile (?:cpu|smoke|paper)\b",
    "unresolved reference": r"\?\?",
    "macro name": r"\\[A-Za-z]+",
}


def internal_names(text: str) -> list[str]:
    """``"<kind>: <match>"`` for each identifier in ``text``; file paths and URLs
    (any word with a slash) are references a reader can follow, not identifiers."""
    words = " ".join(w for w in text.split() if "/" not in w)
    return [f"{kind}: {hit.group(0)}" for kind, pattern in INTERNAL.items()
            for hit in re.finditer(pattern, words)]


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
