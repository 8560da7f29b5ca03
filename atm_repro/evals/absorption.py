"""Feature absorption on the first-letter task (SAEBench semantics; METRICS.md).

Two stages, so that the expensive part is shared by every SAE:

* ``prepare_absorption(loaded, layers, cfg, cache_dir)``: builds the
  single-word vocabulary, the in-context prompts, the residual stream at each
  word's last token, and the 26 one-vs-rest ground-truth letter probes. Done
  once per (model, layer, config) and cached as one ``.npz`` per layer; the
  layers missing from the cache share one forward pass.
* ``run_absorption(sae, data, cfg, sae_id)``: per SAE, finds each letter's
  main latents with k-sparse probing and scores every true-positive test word
  with ``score_words`` (full absorption and absorption fraction).

Where we depart from SAEBench's code, on purpose:
* the projection of latent j on the probe is z_j * cos_j * ||d_j|| (exact for
  any decoder norm; SAEBench drops ||d_j||, i.e. assumes unit-norm decoders);
* a word needs P > 0 to count as absorbed (SAEBench divides by P, which is
  undefined at P = 0);
* the word's position is located through the tokenizer's offsets, not a fixed
  index from the end, so prompts may have any length;
* activations are read from the prompts built for the probe (the ICL examples
  come from the word's own split), not from freshly sampled prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from atm_repro import code_version
from atm_repro.cache import capture_residuals
from atm_repro.config import ConfigError, fingerprint
from atm_repro.evals.results import EvalResult
from atm_repro.models import LoadedModel

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# A token's optional leading space: literal, SentencePiece, byte-level BPE.
SPACE_MARKERS = (" ", "\u2581", "\u0120")
TEMPLATE = "{word} has the first letter:"

MAIN_SILENT_EPS = 1e-8  # a main latent with z below this is silent
FULL_COS_THRESHOLD = 0.025  # top-projecting latent's min cosine with the probe
PROJ_FRACTION_THRESHOLD = 0.4  # absorbing projection / P needed (both metrics)
ABSORBER_COS_THRESHOLD = 0.1  # min cosine of a candidate absorbing latent (fraction)
MAX_ABSORBERS = 3  # absorbing latents summed for the fraction

EVAL_NAME = "absorption"
CODE_FILES = ("evals/absorption.py", "cache.py")


@dataclass(frozen=True)
class AbsorptionConfig:
    """Parameters of the first-letter absorption eval (METRICS.md defaults)."""

    seed: int = 0
    train_fraction: float = 0.8
    n_icl_examples: int = 10
    max_train_words: int = 1500  # caps the prompts run through the model (CPU cost)
    max_test_words: int = 400
    batch_size: int = 32  # prompts per forward pass
    probe_C: float = 1.0  # inverse L2 strength of the ground-truth probes
    probe_max_iter: int = 1000
    probe_f1_threshold: float = 0.6  # letters with probe F1 <= this are excluded
    min_train_words: int = 5  # per letter, else the letter is excluded
    min_test_words: int = 2
    k_max: int = 10
    f1_jump: float = 0.03
    sparse_probe_l1: float = 0.01  # L1 weight of the 26-way latent probe (SAEBench)
    sparse_probe_steps: int = 50  # its full-batch Adam steps (SAEBench: 50 epochs)
    sparse_probe_lr: float = 0.01  # its Adam lr, decayed linearly to 1e-3 of itself
    sae_batch_size: int = 1024  # activations per SAE encode call
    main_silent_eps: float = MAIN_SILENT_EPS
    full_cos_threshold: float = FULL_COS_THRESHOLD
    proj_fraction_threshold: float = PROJ_FRACTION_THRESHOLD
    absorber_cos_threshold: float = ABSORBER_COS_THRESHOLD
    max_absorbers: int = MAX_ABSORBERS

    def __post_init__(self) -> None:
        checks = [
            (0.0 < self.train_fraction < 1.0, "train_fraction must be in (0, 1)"),
            (self.n_icl_examples >= 0, "n_icl_examples must be >= 0"),
            (self.max_train_words > self.n_icl_examples
             and self.max_test_words > self.n_icl_examples,
             "max_train_words and max_test_words must exceed n_icl_examples"),
            (self.batch_size > 0 and self.sae_batch_size > 0, "batch sizes must be > 0"),
            (self.probe_C > 0, "probe_C must be > 0"),
            (self.probe_max_iter > 0, "probe_max_iter must be > 0"),
            (self.sparse_probe_l1 >= 0, "sparse_probe_l1 must be >= 0"),
            (self.sparse_probe_steps >= 1, "sparse_probe_steps must be >= 1"),
            (self.sparse_probe_lr > 0, "sparse_probe_lr must be > 0"),
            (0.0 <= self.probe_f1_threshold < 1.0, "probe_f1_threshold must be in [0, 1)"),
            (self.min_train_words >= 1 and self.min_test_words >= 1,
             "min_train_words and min_test_words must be >= 1"),
            (self.k_max >= 1, "k_max must be >= 1"),
            (self.f1_jump >= 0, "f1_jump must be >= 0"),
            (self.max_absorbers >= 1, "max_absorbers must be >= 1"),
            (self.main_silent_eps > 0, "main_silent_eps must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"absorption: {msg}")


# Fields that change the prepared data (the rest only affect run_absorption).
PREP_FIELDS = ("seed", "train_fraction", "n_icl_examples", "max_train_words", "max_test_words",
               "probe_C", "probe_max_iter")


# --------------------------------------------------------------------------- vocabulary


def alpha_word(token: str) -> tuple[str, bool] | None:
    """``(word, had_space)`` if ``token`` minus one optional leading space marker is
    non-empty and purely ASCII a-z/A-Z, else None."""
    had_space = token[:1] in SPACE_MARKERS
    word = token[1:] if had_space else token
    if word and word.isascii() and word.isalpha():
        return word, had_space
    return None


def build_vocabulary(tokenizer) -> list[str]:
    """Sorted prompt surfaces (" cat" or "cat") of the tokenizer's alphabetic entries.

    One surface per word: a word that exists with and without a leading space
    keeps the spaced form (the usual whole-word token), so a word cannot sit in
    both splits.
    """
    special = set(tokenizer.all_special_tokens)
    spaced: dict[str, bool] = {}
    for token in tokenizer.get_vocab():
        hit = None if token in special else alpha_word(token)
        if hit is not None:
            word, had_space = hit
            spaced[word] = spaced.get(word, False) or had_space
    return sorted((" " if s else "") + w for w, s in spaced.items())


def split_vocabulary(surfaces: list[str], cfg: AbsorptionConfig) -> tuple[list[str], list[str]]:
    """Seeded shuffle, train/test split, then each split capped at its max."""
    perm = np.random.default_rng(cfg.seed).permutation(len(surfaces))
    n_train = int(round(cfg.train_fraction * len(surfaces)))
    train = [surfaces[i] for i in perm[:n_train][: cfg.max_train_words]]
    test = [surfaces[i] for i in perm[n_train:][: cfg.max_test_words]]
    for name, words in (("train", train), ("test", test)):
        if len(words) <= cfg.n_icl_examples:
            raise ValueError(f"absorption: the {name} split has {len(words)} words, need more "
                             f"than n_icl_examples={cfg.n_icl_examples} (vocabulary too small)")
    return train, test


def letter_index(surface: str) -> int:
    return LETTERS.index(surface.strip()[0].lower())


# --------------------------------------------------------------------------- prompts


def build_prompt(surface: str, examples: list[str]) -> tuple[str, int]:
    """The ICL prompt for ``surface`` and the character offset where the word ends."""
    lines = [TEMPLATE.format(word=ex) + " " + ex.strip()[0].upper() for ex in examples]
    prefix = "\n" + "".join(line + "\n" for line in lines)
    return prefix + TEMPLATE.format(word=surface), len(prefix) + len(surface)


def split_prompts(surfaces: list[str], cfg: AbsorptionConfig, stream: int) -> list[tuple[str, int]]:
    """One prompt per word; examples drawn (seeded) from the same split, never the
    word itself (compared case-insensitively)."""
    rng = np.random.default_rng([cfg.seed, stream])
    lower = np.array([s.strip().lower() for s in surfaces])
    prompts = []
    for i, surface in enumerate(surfaces):
        perm = rng.permutation(len(surfaces))
        pick = perm[lower[perm] != lower[i]][: cfg.n_icl_examples]
        if len(pick) < cfg.n_icl_examples:
            raise ValueError(f"absorption: not enough distinct words for {surface!r}'s examples")
        prompts.append(build_prompt(surface, [surfaces[j] for j in pick]))
    return prompts


def locate_word_token(offsets: list[tuple[int, int]], word_end: int) -> int | None:
    """Index of the token holding the word's last character, or None when that
    token also spans characters after the word (no clean word boundary)."""
    for i, (start, end) in enumerate(offsets):
        if start < word_end <= end:
            return i if end == word_end else None
    return None


def tokenize_prompts(tokenizer,
                     prompts: list[tuple[str, int]]) -> list[tuple[list[int], int] | None]:
    """``(BOS + token ids, position of the word's last token)`` per prompt (None if
    the word's end is not a token boundary)."""
    if tokenizer.bos_token_id is None:
        raise ValueError("absorption: the tokenizer has no BOS token")
    enc = tokenizer([p for p, _ in prompts], add_special_tokens=False,
                    return_offsets_mapping=True)
    out = []
    for ids, offsets, (_, word_end) in zip(enc["input_ids"], enc["offset_mapping"], prompts):
        pos = locate_word_token([tuple(o) for o in offsets], word_end)
        out.append(None if pos is None else ([tokenizer.bos_token_id, *ids], pos + 1))
    return out


@torch.no_grad()
def word_activations(loaded: LoadedModel, layers: list[int], encoded: list[tuple[list[int], int]],
                     batch_size: int, progress: bool = False) -> dict[int, np.ndarray]:
    """Residual stream after each block of ``layers`` at each prompt's word
    position, {layer: [N, D]}, from one forward pass per batch.

    Prompts are grouped by length and right-padded: with causal attention the
    padding cannot reach the word position, and positions stay 0-based.
    """
    device = next(loaded.model.parameters()).device
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    order = np.argsort([len(ids) for ids, _ in encoded], kind="stable")
    acts = {layer: np.empty((len(encoded), loaded.d_model), dtype=np.float32) for layer in layers}
    for start in tqdm(range(0, len(order), batch_size), disable=not progress,
                      desc=f"absorption prompts L{','.join(map(str, layers))}"):
        batch = order[start : start + batch_size]
        S = max(len(encoded[i][0]) for i in batch)
        ids_BS = torch.full((len(batch), S), pad, dtype=torch.long)
        mask_BS = torch.zeros((len(batch), S), dtype=torch.long)
        for b, i in enumerate(batch):
            ids = encoded[i][0]
            ids_BS[b, : len(ids)] = torch.tensor(ids)
            mask_BS[b, : len(ids)] = 1
        resid = capture_residuals(loaded, ids_BS.to(device), layers, mask_BS.to(device))
        pos_B = torch.tensor([encoded[i][1] for i in batch], device=device)
        for layer, resid_BSD in resid.items():
            acts[layer][batch] = resid_BSD[torch.arange(len(batch)), pos_B].float().cpu().numpy()
    return acts


# --------------------------------------------------------------------------- probes


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class (0 when there are no true or predicted positives);
    sklearn's ``f1_score`` validates its inputs at a cost that dominates here."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = int((y_true & y_pred).sum())
    denom = int(y_true.sum()) + int(y_pred.sum())
    return 2.0 * tp / denom if denom else 0.0


def _fit(model: LogisticRegression, x, y) -> LogisticRegression:
    """Fit with BLAS on one thread (these fits are small: on a shared CPU a
    multi-threaded BLAS waits more than it works) and without convergence
    warnings (a capped ``max_iter`` is a documented setting)."""
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def fit_letter_probes(acts_train_ND: np.ndarray, y_train: np.ndarray, acts_test_ND: np.ndarray,
                      y_test: np.ndarray, cfg: AbsorptionConfig):
    """26 class-balanced one-vs-rest logistic probes -> (W [26, D], b [26], test F1 [26]).

    Inputs are divided by one scalar (their RMS) for conditioning; the stored
    weights act on raw activations. A letter absent from either split gets a
    zero probe and F1 NaN.
    """
    scale = float(np.sqrt(np.mean(acts_train_ND.astype(np.float64) ** 2))) or 1.0
    x_train, x_test = acts_train_ND / scale, acts_test_ND / scale
    D = acts_train_ND.shape[1]
    W = np.zeros((len(LETTERS), D), dtype=np.float32)
    b = np.zeros(len(LETTERS), dtype=np.float32)
    f1 = np.full(len(LETTERS), np.nan)
    for c in range(len(LETTERS)):
        pos_train = y_train == c
        if not pos_train.any() or pos_train.all() or not (y_test == c).any():
            continue
        probe = _fit(LogisticRegression(C=cfg.probe_C, class_weight="balanced",
                                        max_iter=cfg.probe_max_iter), x_train, pos_train)
        W[c] = probe.coef_[0] / scale
        b[c] = probe.intercept_[0]
        f1[c] = binary_f1(y_test == c, probe.predict(x_test))
    return W, b, f1


@dataclass
class AbsorptionData:
    """What every SAE's absorption run shares (see ``prepare_absorption``)."""

    words_train: list[str]
    words_test: list[str]
    labels_train: np.ndarray  # int [N_train], letter index
    labels_test: np.ndarray
    acts_train_ND: np.ndarray  # float32, residual at the word's last token
    acts_test_ND: np.ndarray
    probe_W_LD: np.ndarray  # float32 [26, D], acts on raw activations
    probe_b_L: np.ndarray  # float32 [26]
    probe_f1_L: np.ndarray  # float [26], test F1 (NaN: no probe)
    prep_fingerprint: str  # of the config's PREP_FIELDS (checked by run_absorption)
    meta: dict = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            np.savez(f, words_train=np.array(self.words_train),
                     words_test=np.array(self.words_test),
                     labels_train=self.labels_train, labels_test=self.labels_test,
                     acts_train_ND=self.acts_train_ND, acts_test_ND=self.acts_test_ND,
                     probe_W_LD=self.probe_W_LD, probe_b_L=self.probe_b_L,
                     probe_f1_L=self.probe_f1_L, prep_fingerprint=np.array(self.prep_fingerprint),
                     meta=np.array(json.dumps(self.meta)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "AbsorptionData":
        with np.load(path, allow_pickle=False) as z:
            return cls(words_train=z["words_train"].tolist(), words_test=z["words_test"].tolist(),
                       labels_train=z["labels_train"], labels_test=z["labels_test"],
                       acts_train_ND=z["acts_train_ND"], acts_test_ND=z["acts_test_ND"],
                       probe_W_LD=z["probe_W_LD"], probe_b_L=z["probe_b_L"],
                       probe_f1_L=z["probe_f1_L"], prep_fingerprint=str(z["prep_fingerprint"]),
                       meta=json.loads(str(z["meta"])))


def prep_fingerprint(cfg: AbsorptionConfig) -> str:
    return fingerprint({f: getattr(cfg, f) for f in PREP_FIELDS})


def build_absorption_data(words_train: list[str], acts_train_ND: np.ndarray, words_test: list[str],
                          acts_test_ND: np.ndarray, cfg: AbsorptionConfig,
                          meta: dict | None = None) -> AbsorptionData:
    """Labels from the words' first letters plus the ground-truth probes."""
    y_train = np.array([letter_index(w) for w in words_train], dtype=np.int64)
    y_test = np.array([letter_index(w) for w in words_test], dtype=np.int64)
    acts_train_ND = np.asarray(acts_train_ND, dtype=np.float32)
    acts_test_ND = np.asarray(acts_test_ND, dtype=np.float32)
    W, b, f1 = fit_letter_probes(acts_train_ND, y_train, acts_test_ND, y_test, cfg)
    return AbsorptionData(list(words_train), list(words_test), y_train, y_test, acts_train_ND,
                          acts_test_ND, W, b, f1, prep_fingerprint(cfg), dict(meta or {}))


def prepare_absorption(loaded: LoadedModel, layers: list[int], cfg: AbsorptionConfig,
                       cache_dir: str | Path | None, progress: bool = False
                       ) -> dict[int, AbsorptionData]:
    """Prompt activations and ground-truth probes for (model, layer, cfg), per layer.

    Cached at ``<cache_dir>/absorption/<model>-L<layer>-<fingerprint>.npz``; the
    fingerprint covers the prep config, the model weights, the word list and
    this module's code. The layers not in the cache share one forward pass.
    ``cache_dir=None`` computes without caching.
    """
    for layer in layers:
        if not 0 <= layer < loaded.n_layers:
            raise ValueError(f"absorption: layer {layer} out of range: the model has "
                             f"{loaded.n_layers} layers")
    train, test = split_vocabulary(build_vocabulary(loaded.tokenizer), cfg)
    words_sha = hashlib.sha256("\n".join(train + ["|"] + test).encode()).hexdigest()
    out, keys, paths = {}, {}, {}
    for layer in layers:
        keys[layer] = fingerprint({"prep": prep_fingerprint(cfg), "model": loaded.name,
                                   "weights": loaded.fingerprint, "layer": layer,
                                   "words": words_sha, "code": code_version(*CODE_FILES)})
        if cache_dir is not None:
            stem = f"{loaded.name.replace('/', '_')}-L{layer}-{keys[layer][:16]}"
            paths[layer] = Path(cache_dir) / "absorption" / f"{stem}.npz"
            if paths[layer].exists():
                out[layer] = AbsorptionData.load(paths[layer])
    todo = [layer for layer in layers if layer not in out]
    if not todo:
        return out

    t0 = time.perf_counter()
    kept, acts, dropped = {}, {}, {}
    for stream, (split, words) in enumerate((("train", train), ("test", test))):
        encoded = tokenize_prompts(loaded.tokenizer, split_prompts(words, cfg, stream))
        ok = [i for i, e in enumerate(encoded) if e is not None]
        kept[split] = [words[i] for i in ok]
        dropped[split] = len(words) - len(ok)
        acts[split] = word_activations(loaded, todo, [encoded[i] for i in ok], cfg.batch_size,
                                       progress)
    forward_s = time.perf_counter() - t0
    for layer in todo:
        t1 = time.perf_counter()
        meta = {"model": loaded.name, "model_fingerprint": loaded.fingerprint, "layer": layer,
                "n_train_words": len(kept["train"]), "n_test_words": len(kept["test"]),
                "n_dropped_no_word_boundary": dropped, "cache_key": keys[layer]}
        data = build_absorption_data(kept["train"], acts["train"][layer], kept["test"],
                                     acts["test"][layer], cfg, meta)
        data.meta["prepare_seconds"] = round(forward_s / len(todo) + time.perf_counter() - t1, 3)
        if layer in paths:
            data.save(paths[layer])
        out[layer] = data
    return {layer: out[layer] for layer in layers}


def letter_exclusions(data: AbsorptionData, cfg: AbsorptionConfig) -> dict[str, str]:
    """Letters left out of the means, with the reason."""
    out = {}
    for c, letter in enumerate(LETTERS):
        n_train = int((data.labels_train == c).sum())
        n_test = int((data.labels_test == c).sum())
        f1 = data.probe_f1_L[c]
        if n_train < cfg.min_train_words or n_test < cfg.min_test_words:
            out[letter] = (f"too few words: {n_train} train (min {cfg.min_train_words}), "
                           f"{n_test} test (min {cfg.min_test_words})")
        elif not f1 > cfg.probe_f1_threshold:
            out[letter] = f"probe F1 {f1:.3f} <= {cfg.probe_f1_threshold}"
    return out


# --------------------------------------------------------------------------- per SAE


@torch.no_grad()
def encode_latents(sae: torch.nn.Module, acts_ND: np.ndarray, batch_size: int) -> np.ndarray:
    """``sae.encode`` in batches -> float32 [N, F]."""
    param = next(sae.parameters())
    chunks = [sae.encode(torch.from_numpy(acts_ND[i : i + batch_size])
                         .to(param.device, param.dtype)).float().cpu().numpy()
              for i in range(0, len(acts_ND), batch_size)]
    return np.concatenate(chunks)


def l1_probe_weights(x_train_NF: np.ndarray, y_train: np.ndarray, cfg: AbsorptionConfig
                     ) -> np.ndarray:
    """Weights [26, F] of an L1-penalised 26-way probe on the latents, as SAEBench
    trains it: one logistic output per letter (binary cross-entropy against the
    one-hot letter), penalty ``sparse_probe_l1`` x the mean over letters of
    ||w_c||_1, full-batch Adam from zero for ``sparse_probe_steps`` steps.

    Why not an exact L1 solver: at any useful strength it sets most weights to
    exactly 0 and the ranking by weight becomes a tie broken by latent index
    (for dense SAEs, nearly every letter's "main latent" was latent 0). A short
    Adam run leaves every weight nonzero, ordered by how consistently its
    latent predicts the letter. ``x_train_NF`` are latents already divided by
    one scalar (``select_main_latents``), so the penalty means the same for
    every SAE.
    """
    x_NF = torch.from_numpy(np.ascontiguousarray(x_train_NF, dtype=np.float32))
    y_NL = torch.nn.functional.one_hot(torch.from_numpy(np.asarray(y_train, np.int64)),
                                       len(LETTERS)).float()
    W_LF = torch.zeros(len(LETTERS), x_NF.shape[1], requires_grad=True)
    b_L = torch.zeros(len(LETTERS), requires_grad=True)
    opt = torch.optim.Adam([W_LF, b_L], lr=cfg.sparse_probe_lr)
    steps = cfg.sparse_probe_steps
    for step in range(steps):
        for group in opt.param_groups:  # linear decay to 1e-3 of the initial lr
            group["lr"] = cfg.sparse_probe_lr * (1.0 - (1.0 - 1e-3) * step / max(steps - 1, 1))
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(x_NF @ W_LF.T + b_L, y_NL)
                + cfg.sparse_probe_l1 * W_LF.abs().sum(-1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return W_LF.detach().numpy()


def select_main_latents(z_train_NF: np.ndarray, y_train: np.ndarray, z_test_NF: np.ndarray,
                        y_test: np.ndarray, letters: list[int], cfg: AbsorptionConfig):
    """Main latents per letter: {letter index: (latent ids, [test F1 for k = 1, 2, ...])}.

    The L1 probe (``l1_probe_weights``) ranks the latents by signed weight; for
    k = 1..k_max a class-balanced probe on the top k is scored on test, and k
    grows while F1 improves by more than ``f1_jump``. Latents are divided by
    one scalar (their mean row norm), which leaves every ranking unchanged.
    """
    scale = float(np.linalg.norm(z_train_NF, axis=1).mean()) or 1.0
    x_train, x_test = z_train_NF / scale, z_test_NF / scale
    W_LF = l1_probe_weights(x_train, y_train, cfg)
    out = {}
    for c in letters:
        ranked = np.argsort(-W_LF[c], kind="stable")[: cfg.k_max]
        best, f1s, ids = -np.inf, [], ranked[:0]
        for k in range(1, len(ranked) + 1):
            probe = _fit(LogisticRegression(class_weight="balanced", max_iter=500),
                         x_train[:, ranked[:k]], y_train == c)
            f1 = binary_f1(y_test == c, probe.predict(x_test[:, ranked[:k]]))
            f1s.append(f1)
            if f1 <= best + cfg.f1_jump:
                break
            best, ids = f1, ranked[:k]
        out[c] = (ids.tolist(), f1s)
    return out


@dataclass
class WordScores:
    """Per-word absorption scores (arrays over N words)."""

    full_absorption: np.ndarray  # bool
    fraction: np.ndarray  # float in [0, 1]
    probe_proj: np.ndarray  # P = a . p_hat
    main_proj: np.ndarray  # M
    absorber_proj: np.ndarray  # T
    top_latent: np.ndarray  # int, latent with the largest projection


def score_words(acts_ND: np.ndarray, probe_dir_D: np.ndarray, latents_NF: np.ndarray,
                W_dec_FD: np.ndarray, main_ids: list[int],
                cfg: AbsorptionConfig = AbsorptionConfig()) -> WordScores:
    """Full absorption and absorption fraction of N words of one letter (METRICS.md step 5).

    ``probe_dir_D`` need not be unit norm. proj_j = z_j * cos_j * ||d_j||.
    A word with P <= 0 scores 0 on both metrics.
    """
    acts_ND = np.atleast_2d(np.asarray(acts_ND, dtype=np.float64))
    latents_NF = np.atleast_2d(np.asarray(latents_NF, dtype=np.float64))
    W_dec_FD = np.asarray(W_dec_FD, dtype=np.float64)
    p_D = np.asarray(probe_dir_D, dtype=np.float64)
    p_D = p_D / np.linalg.norm(p_D)
    norm_F = np.linalg.norm(W_dec_FD, axis=1)
    cos_F = np.divide(W_dec_FD @ p_D, norm_F, out=np.zeros_like(norm_F), where=norm_F > 0)
    proj_NF = latents_NF * (cos_F * norm_F)
    P = acts_ND @ p_D
    main = np.zeros(latents_NF.shape[1], dtype=bool)
    main[list(main_ids)] = True
    N = len(P)

    silent = (latents_NF[:, main] < cfg.main_silent_eps).all(axis=1)
    top = proj_NF.argmax(axis=1)
    top_proj = proj_NF[np.arange(N), top]
    full = (silent & (P > 0) & (cos_F[top] >= cfg.full_cos_threshold)
            & (top_proj >= cfg.proj_fraction_threshold * P))

    M = proj_NF[:, main].sum(axis=1)
    cand_NF = np.where(~main & (cos_F >= cfg.absorber_cos_threshold) & (proj_NF > 0), proj_NF, 0.0)
    k = min(cfg.max_absorbers, cand_NF.shape[1])
    T = -np.sort(-cand_NF, axis=1)[:, :k].sum(axis=1)
    A = np.minimum(T, P - M)
    with np.errstate(divide="ignore", invalid="ignore"):
        partial = np.clip(A / (A + M), 0.0, 1.0)
    zero = (P <= 0) | (M >= P) | (T < cfg.proj_fraction_threshold * P)
    frac = np.where(zero, 0.0, np.where(M <= 0, 1.0, partial))
    return WordScores(full, frac, P, M, T, top)


def run_absorption(sae: torch.nn.Module, data: AbsorptionData, cfg: AbsorptionConfig,
                   sae_id: str) -> EvalResult:
    """Absorption of one SAE on prepared data (METRICS.md steps 4-6)."""
    if data.prep_fingerprint != prep_fingerprint(cfg):
        raise ValueError("absorption: the data were prepared with a different config "
                         "(PREP_FIELDS differ); rerun prepare_absorption with this config")
    if sae.W_dec.shape[1] != data.acts_train_ND.shape[1]:
        raise ValueError(f"absorption: SAE d_in {sae.W_dec.shape[1]} != activation width "
                         f"{data.acts_train_ND.shape[1]}")
    t0 = time.perf_counter()
    excluded = letter_exclusions(data, cfg)
    letters = [c for c, letter in enumerate(LETTERS) if letter not in excluded]
    z_train = encode_latents(sae, data.acts_train_ND, cfg.sae_batch_size)
    z_test = encode_latents(sae, data.acts_test_ND, cfg.sae_batch_size)
    main = (select_main_latents(z_train, data.labels_train, z_test, data.labels_test, letters, cfg)
            if letters else {})
    W_dec_FD = sae.W_dec.detach().float().cpu().numpy()
    decision_NL = data.acts_test_ND @ data.probe_W_LD.T + data.probe_b_L

    per_letter = {}
    for c in letters:
        tp = np.nonzero((data.labels_test == c) & (decision_NL[:, c] > 0))[0]
        ids, f1s = main[c]
        s = score_words(data.acts_test_ND[tp], data.probe_W_LD[c], z_test[tp], W_dec_FD, ids, cfg)
        per_letter[LETTERS[c]] = {
            "full_absorption_rate": float(s.full_absorption.mean()) if len(tp) else float("nan"),
            "mean_absorption_fraction": float(s.fraction.mean()) if len(tp) else float("nan"),
            "n_main_latents": len(ids),
            "main_latents": ids,
            "k_sparse_f1": f1s,
            "n_true_positives": int(len(tp)),
            "probe_f1": float(data.probe_f1_L[c]),
            "absorbed_words": [data.words_test[i] for i in tp[s.full_absorption]],
        }
    scored = [v for v in per_letter.values() if v["n_true_positives"] > 0]
    full = np.array([v["full_absorption_rate"] for v in scored])
    frac = np.array([v["mean_absorption_fraction"] for v in scored])
    nan = float("nan")
    metrics = {
        "mean_full_absorption": float(full.mean()) if len(scored) else nan,
        "std_full_absorption": float(full.std()) if len(scored) else nan,
        "mean_absorption_fraction": float(frac.mean()) if len(scored) else nan,
        "std_absorption_fraction": float(frac.std()) if len(scored) else nan,
        "mean_n_main_latents": (float(np.mean([v["n_main_latents"] for v in scored]))
                                if len(scored) else nan),
        "n_letters_kept": len(letters),
        "n_letters_scored": len(scored),
    }
    details = {"per_letter": per_letter, "excluded_letters": excluded, "data": data.meta,
               "eval_seconds": round(time.perf_counter() - t0, 3)}
    return EvalResult(EVAL_NAME, sae_id, cfg, metrics, details)
