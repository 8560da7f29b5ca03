"""Residual-stream activation cache: one truncated forward pass, several layers, sharded on disk.

Layout of a cache directory::

    manifest.json                 model, layers, hook, dtype, counts, fingerprints,
                                  per-shard sha256, code version, ``complete``
    {split}_tokens_{i:05d}.npy    int32 [n_seq, context] model inputs (BOS first)
    {split}_L{layer}_{i:05d}.npy  [n_seq * (context - 1), d_model] in ``cache.dtype``:
                                  float32, float16, or bfloat16 stored as its raw
                                  bits (uint16; numpy has no bfloat16)

``split`` is ``train`` or ``eval`` (held-out articles). The BOS position is
not cached (its residual is a huge-norm constant that SAEs should not spend
capacity on); every other position is. For the model's last block this is the
residual before the final norm (HF's last ``hidden_states`` entry is after
it). The forward pass runs the base model only up to the deepest requested
layer (a hook stops it) and never computes logits. Shards are written
atomically and recorded in the manifest one by one, so an interrupted build
resumes at the first missing shard and produces byte-identical files. Readers
verify checksums and memory-map the arrays.

The token-masked variant (for the masked-regularization recipe) replaces each
non-BOS input token with the tokenizer's mask token with probability
``cache.token_mask_prob`` (seeded) before the forward pass.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from atm_repro.codehash import code_key
from atm_repro.config import ConfigError, Profile, fingerprint, from_dict, to_dict
from atm_repro.corpus import check_corpus_name, load_articles, tokenize_splits
from atm_repro.files import atomic_save_npy, atomic_write_json, sha256_file
from atm_repro.models import LoadedModel, check_model_name, load_model
from atm_repro.runs import cache_root

HOOK_TEMPLATE = "blocks.{layer}.hook_resid_post"
SPLITS = ("train", "eval")
MANIFEST = "manifest.json"
CACHE_CODE = ("atm_repro.cache:build_cache",)  # roots of the cache's code key (codehash)


class CacheError(RuntimeError):
    """A cache is incomplete, corrupt, or does not match what was asked for."""


# cache.dtype -> the numpy dtype of the stored arrays
STORAGE = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
           "bfloat16": np.dtype(np.uint16)}


def to_storage(a_ND: np.ndarray, dtype: str) -> np.ndarray:
    """float32 rows as stored in ``dtype``. bfloat16 is rounded to nearest (ties to
    even) by torch and kept as its 16 raw bits: half the disk and read bandwidth of
    float32, float32's range (Gemma-3's residual reaches ~1e5, beyond float16)."""
    if dtype == "bfloat16":
        bits = torch.from_numpy(np.ascontiguousarray(a_ND, dtype=np.float32))
        return bits.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return a_ND.astype(STORAGE[dtype])


def from_storage(raw_ND: np.ndarray) -> np.ndarray:
    """Stored rows as float32 (exact: every stored value is a float32 value)."""
    if raw_ND.dtype == np.uint16:  # bfloat16 bits are the high half of a float32
        return (raw_ND.astype(np.uint32) << 16).view(np.float32)
    return raw_ND.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- forward


class _StopForward(Exception):
    pass


@torch.no_grad()
def capture_residuals(
    loaded: LoadedModel,
    input_ids_BS: torch.Tensor,
    layers: list[int],
    attention_mask_BS: torch.Tensor | None = None,
    kv_cache=None,
) -> dict[int, torch.Tensor]:
    """Residual stream after each block in ``layers`` ([B, S, D] each).

    Runs the decoder stack only up to ``max(layers)``; no logits. With a
    transformers ``Cache`` in ``kv_cache``, the tokens continue the cached
    prefix and the cache gains their keys and values (blocks up to ``max(layers)``).
    """
    n_layers = loaded.n_layers
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: the model has {n_layers} layers")
    out: dict[int, torch.Tensor] = {}
    deepest = max(layers)

    def hook(layer: int):
        def fn(_module, _args, output):
            out[layer] = (output[0] if isinstance(output, tuple) else output).detach()
            if layer == deepest:
                raise _StopForward

        return fn

    handles = [loaded.layers[layer].register_forward_hook(hook(layer)) for layer in layers]
    try:
        loaded.base(input_ids=input_ids_BS, attention_mask=attention_mask_BS,
                    cache=kv_cache, use_cache=kv_cache is not None)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


def mask_tokens(tokens_NS: np.ndarray, prob: float, mask_id: int, seed: int) -> np.ndarray:
    """Replace each non-BOS token by ``mask_id`` with probability ``prob`` (seeded)."""
    rng = np.random.default_rng(seed)
    hit = rng.random(tokens_NS.shape) < prob
    hit[:, 0] = False
    return np.where(hit, mask_id, tokens_NS).astype(np.int32)


# --------------------------------------------------------------------------- manifest


@dataclass
class ShardRecord:
    """One shard of both splits' files, recorded once written."""

    index: int
    n_tokens: int
    files: dict[str, str]  # file name -> sha256


@dataclass
class CacheManifest:
    """``manifest.json`` of a cache directory, typed and validated on read."""

    key: dict[str, Any]  # ``cache_key``: everything the cache's bytes depend on
    model: str
    model_fingerprint: str
    d_model: int
    n_layers_model: int
    layers: list[int]
    hooks: dict[str, str]  # layer -> SAELens hook name
    dtype: str
    context: int
    bos_cached: bool
    corpus_fingerprint: dict[str, str]  # split -> fingerprint of its token sequences
    n_sequences: dict[str, int]
    n_tokens: dict[str, int]  # split -> cached rows (non-BOS tokens)
    shard_sequences: int
    token_mask_prob: float
    code_version: str
    shards: dict[str, list[ShardRecord]]
    complete: bool = False

    @classmethod
    def read(cls, path: Path) -> CacheManifest:
        try:
            return from_dict(cls, json.loads(Path(path).read_text()), str(path))
        except ConfigError as exc:
            raise CacheError(f"malformed cache manifest: {exc}") from None

    def write(self, path: Path) -> None:
        atomic_write_json(path, to_dict(self))

    @property
    def data_key(self) -> str:
        """Fingerprint of the cached data (part of a trained SAE's run key)."""
        return fingerprint({"key": self.key, "corpus": self.corpus_fingerprint})


def cache_key(profile: Profile, masked: bool) -> dict:
    """Everything the cache's bytes depend on."""
    cache_cfg = to_dict(profile.cache)
    cache_cfg["layers"] = cache_layers(profile, masked)
    if not masked:
        cache_cfg.pop("token_mask_prob")
    return {
        "model": to_dict(profile.model),
        "corpus": to_dict(profile.corpus),
        "cache": cache_cfg,
        "masked": masked,
        "seed": profile.seed,
        "code_version": code_key(*CACHE_CODE),
    }


def cache_layers(profile: Profile, masked: bool) -> list[int]:
    """The clean cache holds every ``cache.layers``; the token-masked one only
    ``train.layer`` (masked regularization is a main-layer baseline)."""
    return [profile.train.layer] if masked else list(profile.cache.layers)


def cache_dir(profile: Profile, masked: bool = False) -> Path:
    """Where the (clean or token-masked) cache of ``profile`` lives."""
    key = fingerprint(cache_key(profile, masked))[:12]
    return cache_root(profile) / f"{'masked' if masked else 'clean'}-{key}"


# --------------------------------------------------------------------------- build


def check_cache_request(profile: Profile) -> None:
    """Reject a bad model, layer or corpus before anything heavy happens (no weights
    read): ``build_cache``, ``atm-repro plan`` and the start of ``atm-repro run``."""
    check_model_name(profile.model.name, profile.cache.layers)
    check_corpus_name(profile.corpus.name)


def build_cache(
    profile: Profile,
    masked: bool = False,
    loaded: LoadedModel | None = None,
    progress: bool = True,
    max_new_shards: int | None = None,
) -> Path:
    """Build (or resume, or reuse) the activation cache of ``profile``; return its path.

    ``max_new_shards`` stops after writing that many new shards (the manifest
    then says ``complete: false``); a later call resumes.
    """
    check_cache_request(profile)
    ccfg = profile.cache
    layers = cache_layers(profile, masked)
    out = cache_dir(profile, masked)
    manifest_path = out / MANIFEST
    manifest = CacheManifest.read(manifest_path) if manifest_path.exists() else None
    if manifest is not None and manifest.complete:
        return out

    texts = load_articles(profile.corpus)
    if loaded is None:
        loaded = load_model(profile.model, corpus_texts=texts)
    if max(layers) >= loaded.n_layers:
        raise CacheError(f"layer {max(layers)} out of range ({loaded.n_layers} layers)")
    body = profile.corpus.context - 1
    n_seq = {s: math.ceil(t / body / ccfg.shard_sequences) * ccfg.shard_sequences
             for s, t in (("train", ccfg.train_tokens), ("eval", ccfg.eval_tokens))}
    train, evals = tokenize_splits(profile.corpus, loaded.tokenizer, n_seq["train"],
                                   n_seq["eval"], texts=texts)
    tokens = {"train": train.tokens_NS, "eval": evals.tokens_NS}
    for split in SPLITS:
        if len(tokens[split]) < n_seq[split]:
            raise CacheError(
                f"the corpus gives only {len(tokens[split]) * body} {split} tokens, "
                f"{n_seq[split] * body} asked for (cache.{split}_tokens)"
            )
    if masked:
        mask_id = loaded.tokenizer.mask_token_id
        if mask_id is None:
            raise CacheError(f"model {loaded.name} has no mask token for the masked cache")
        tokens = {s: mask_tokens(t, ccfg.token_mask_prob, mask_id, profile.seed + i)
                  for i, (s, t) in enumerate(tokens.items())}

    fresh = CacheManifest(
        key=cache_key(profile, masked),
        model=loaded.name,
        model_fingerprint=loaded.fingerprint,
        d_model=loaded.d_model,
        n_layers_model=loaded.n_layers,
        layers=layers,
        hooks={str(layer): HOOK_TEMPLATE.format(layer=layer) for layer in layers},
        dtype=ccfg.dtype,
        context=profile.corpus.context,
        bos_cached=False,
        corpus_fingerprint={"train": train.fingerprint, "eval": evals.fingerprint},
        n_sequences={s: int(len(t)) for s, t in tokens.items()},
        n_tokens={s: int(len(t)) * body for s, t in tokens.items()},
        shard_sequences=ccfg.shard_sequences,
        token_mask_prob=ccfg.token_mask_prob if masked else 0.0,
        code_version=code_key(*CACHE_CODE),
        shards={s: [] for s in SPLITS},
    )
    if manifest is None or manifest.key != fresh.key or \
            manifest.corpus_fingerprint != fresh.corpus_fingerprint:
        manifest = fresh
    out.mkdir(parents=True, exist_ok=True)
    _check_disk(out, manifest, layers)

    written = 0
    total = sum(manifest.n_tokens.values())
    done = sum(sh.n_tokens for s in SPLITS for sh in manifest.shards[s])
    bar = tqdm(total=total, initial=done, unit="tok", unit_scale=True, disable=not progress,
               desc=f"cache {out.name}")
    for split in SPLITS:
        for i, start in enumerate(range(0, len(tokens[split]), ccfg.shard_sequences)):
            if i < len(manifest.shards[split]):
                continue  # resumed: already written and recorded
            if max_new_shards is not None and written >= max_new_shards:
                bar.close()
                return out
            shard_tok = tokens[split][start : start + ccfg.shard_sequences]
            acts = {layer: [] for layer in layers}
            for b in range(0, len(shard_tok), ccfg.batch_size):
                ids = torch.from_numpy(shard_tok[b : b + ccfg.batch_size].astype(np.int64))
                res = capture_residuals(loaded, ids.to(profile.model.device), layers)
                for layer in layers:
                    a = res[layer][:, 1:].reshape(-1, loaded.d_model).float().cpu().numpy()
                    if ccfg.dtype == "float16" and np.abs(a).max() > np.finfo(np.float16).max:
                        raise CacheError(
                            f"layer {layer} has activations of magnitude {np.abs(a).max():.3g}, "
                            "beyond float16's range: set cache.dtype to bfloat16 or float32")
                    acts[layer].append(to_storage(a, ccfg.dtype))
                bar.update(ids.shape[0] * body)
            record = ShardRecord(i, int(len(shard_tok)) * body, {})
            name = f"{split}_tokens_{i:05d}.npy"
            record.files[name] = atomic_save_npy(out / name, shard_tok)
            for layer in layers:
                name = f"{split}_L{layer}_{i:05d}.npy"
                record.files[name] = atomic_save_npy(out / name, np.concatenate(acts[layer]))
            manifest.shards[split].append(record)
            manifest.write(manifest_path)
            written += 1
    bar.close()
    manifest.complete = True
    manifest.write(manifest_path)
    return out


def _check_disk(out: Path, manifest: CacheManifest, layers: list[int]) -> None:
    itemsize = STORAGE[manifest.dtype].itemsize
    need = sum(manifest.n_tokens.values()) * manifest.d_model * itemsize * len(layers)
    free = shutil.disk_usage(out).free
    if need * 1.05 > free:
        raise CacheError(
            f"the cache needs about {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB is free "
            f"at {out}"
        )


# --------------------------------------------------------------------------- read


class ArraySource:
    """Activation rows held in memory (tests, synthetic data)."""

    def __init__(self, acts_ND: np.ndarray):
        self.acts_ND = np.asarray(acts_ND)
        self.d_model = self.acts_ND.shape[1]

    def __len__(self) -> int:
        return len(self.acts_ND)

    def gather(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.acts_ND[idx], dtype=np.float32)


class ShardedSource:
    """Activation rows of one (split, layer) spread over memory-mapped shards."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.d_model = arrays[0].shape[1]
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order) as float32 [len(idx), D]; reads shard by shard in
        the stored dtype, then converts once (``from_storage``)."""
        idx = np.asarray(idx)
        out = np.empty((len(idx), self.d_model), dtype=self.arrays[0].dtype)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            local = idx[sel] - self.offsets[s]
            order = np.argsort(local, kind="stable")
            out[sel[order]] = self.arrays[s][local[order]]
        return from_storage(out)


@dataclass
class ActivationCache:
    """A complete, verified cache directory (see module docstring)."""

    path: Path
    manifest: CacheManifest

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "ActivationCache":
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.exists():
            raise CacheError(f"no activation cache at {path} (missing {MANIFEST}); build it "
                             "with atm_repro.cache.build_cache or notebook 01")
        manifest = CacheManifest.read(mpath)
        if not manifest.complete:
            done = {s: len(manifest.shards[s]) for s in SPLITS}
            raise CacheError(f"the cache at {path} is incomplete (shards written: {done}); "
                             "rerun build_cache to resume it")
        cache = cls(path, manifest)
        if verify:
            cache.verify()
        return cache

    def verify(self) -> None:
        """Check every shard's sha256; a mismatch names the shard."""
        for split in SPLITS:
            for record in self.manifest.shards[split]:
                for name, sha in record.files.items():
                    f = self.path / name
                    if not f.exists():
                        raise CacheError(f"cache shard {f} is missing")
                    if sha256_file(f) != sha:
                        raise CacheError(f"cache shard {f} fails its sha256 check (corrupt); "
                                         "delete the cache directory and rebuild it")

    @property
    def d_model(self) -> int:
        return self.manifest.d_model

    @property
    def layers(self) -> list[int]:
        return self.manifest.layers

    def n_tokens(self, split: str = "train") -> int:
        return self.manifest.n_tokens[split]

    def _files(self, split: str, stem: str) -> list[np.ndarray]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [np.load(self.path / f"{split}_{stem}_{r.index:05d}.npy", mmap_mode="r")
                for r in self.manifest.shards[split]]

    def source(self, layer: int, split: str = "train") -> ShardedSource:
        """Memory-mapped activations of ``layer`` (rows = non-BOS tokens)."""
        if layer not in self.layers:
            raise CacheError(f"layer {layer} is not in the cache at {self.path} "
                             f"(layers {self.layers})")
        return ShardedSource(self._files(split, f"L{layer}"))

    def tokens(self, split: str = "eval") -> np.ndarray:
        """The model inputs of ``split``, int32 [n_seq, context]."""
        return np.concatenate(self._files(split, "tokens"))


def summarize(cache: ActivationCache, sample: int = 4096, seed: int = 0) -> dict:
    """Tokens and activation-norm statistics per layer (for notebook 01)."""
    rng = np.random.default_rng(seed)
    summary = {"n_tokens": dict(cache.manifest.n_tokens), "layers": {}}
    for layer in cache.layers:
        src = cache.source(layer)
        idx = rng.choice(len(src), size=min(sample, len(src)), replace=False)
        norms = np.linalg.norm(src.gather(idx), axis=1)
        summary["layers"][layer] = {
            "norm_mean": float(norms.mean()),
            "norm_std": float(norms.std()),
            "norm_median": float(np.median(norms)),
            "norms": norms,
        }
    return summary
