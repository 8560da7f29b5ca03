"""Feature absorption on the first-letter task, computed as SAEBench 0.6.0 does.

SAEBench's absorption eval (``sae_bench/evals/absorption/``) is the reference:
every step below follows its procedure, and ``atm-repro crosscheck`` runs that
code on the same SAEs and words to show that the numbers agree (docs/metrics.md,
"Absorption"). What is ours is the speed: the model runs once per prompt set
and layer, shared by every SAE, instead of once per SAE.

Two stages:

* ``prepare_absorption(loaded, layers, cfg, cache_dir)``: the word sample, the
  in-context prompts, the residual stream at each word, the 26-way ground-truth
  letter probe, and the activations of the fresh scoring prompts of the probe's
  true positives. Cached as one ``.npz`` per (model, layer, config).
* ``run_absorption(sae, data, cfg, sae_id)``: per SAE, the L1 probe on its
  latents, k-sparse main-latent selection, per-word scores, the metric's health.

The steps (SAEBench's, with its defaults):

1. Words: every vocabulary entry whose text is ASCII letters, with or without
   one leading space (the two forms are separate words). Entries whose
   in-context line does not tokenise back to that single token are dropped and
   counted (they would break SAEBench's equal-length prompts). A seeded sample
   of ``n_words`` is drawn (SAEBench uses every word: hours on a CPU).
2. Prompts: a newline, ``n_icl_examples`` lines "{w} has the first letter: X",
   then "{word} has the first letter:"; the activation is read at the word's
   token, -6 from the end for Gemma (``prompt_token_pos``). The shuffle, the
   80/20 split and every example draw use Python's ``random`` exactly as
   SAEBench calls it, so with the same seed and word list the prompts are the
   same strings. The forward pass stops at the word (later tokens cannot reach
   it). ``prompt_prefixes`` > 0 swaps the per-word draws for a few shared
   example sets run once each (key/value cache): much faster, not SAEBench's
   numbers (docs/metrics.md).
3. Ground truth: one 26-output linear probe (one-vs-rest logistic outputs,
   class-weighted), Adam with weight decay, mini-batches, exponential lr decay.
   Letters with test F1 <= 0.6 are left out; below 20 letters SAEBench reports
   nothing (we report, flagged as not meaningful).
4. Main latents: the same kind of probe on the SAE's raw latents with an L1
   term; latents ranked by signed weight; class-balanced scikit-learn probes on
   the top k, k grown while test F1 improves by more than ``f1_jump``.
5. Scoring, over the probe's true positives on test words, each in a fresh
   prompt whose examples come from the whole word sample: P = a . p_hat,
   proj_j = z_j cos_j ||d_j||. Full absorption: all main latents < 1e-8,
   P > 0, top-projecting latent with cos >= 0.025 and proj >= 0.4 P. Fraction:
   M (main), T (top 3 other latents with cos >= 0.1 and proj > 0), A = min(T,
   P - M), A / (A + M), 0 when M >= P or T < 0.4 P, 1 when M <= 0.
6. Per-letter rates, mean over the kept letters, spread with n - 1.

Departures, each moving no canonical SAE by more than the crosscheck tolerance:
||d_j|| is kept in proj_j (exact for any decoder; saved SAEs have unit rows, so
it is SAEBench's formula); P = 0 is never absorption (SAEBench divides by P);
the probes' initialisation and batch order are SAEBench's draws on a seeded
torch generator of our own (SAEBench draws on the global one, which the
crosscheck seeds alike); main-latent probes train on precomputed latents
(SAEBench's ``precalc_k_sparse_probe_sae_acts``).

Health, per SAE: letters kept, mean and best k = 1 main-latent F1, and how
often the main latents fire on other letters' words. Absorption is flagged
not meaningful (with the reason) when fewer than ``min_letters`` letters are
kept or no letter has a k = 1 main latent with F1 >= ``letter_latent_f1``:
without a latent that stands for the letter, "the main latent is silent" says
nothing about absorption.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm
from transformers import DynamicCache

from atm_repro import metrics
from atm_repro.cache import capture_residuals
from atm_repro.codehash import code_key
from atm_repro.config import ConfigError, fingerprint
from atm_repro.evals.registry import EVERY_GROUP, Eval, EvalContext, register
from atm_repro.evals.results import EvalResult
from atm_repro.models import LoadedModel

if TYPE_CHECKING:  # sklearn is imported where probes are fit: loading a profile needs none
    from sklearn.linear_model import LogisticRegression

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEMPLATE = "{word} has the first letter:"
SENTENCEPIECE_SPACE = "\u2581"

MAIN_SILENT_EPS = 1e-8  # a main latent with z below this is silent
FULL_COS_THRESHOLD = 0.025  # top-projecting latent's min cosine with the probe
PROJ_FRACTION_THRESHOLD = 0.4  # absorbing projection / P needed (both metrics)
ABSORBER_COS_THRESHOLD = 0.1  # min cosine of a candidate absorbing latent (fraction)
MAX_ABSORBERS = 3  # absorbing latents summed for the fraction
MAX_DRAWS = 1000  # SAEBench's limit on redrawing examples that contain the word
REFERENCE_TOLERANCE = 0.05  # largest |ours - SAEBench| per measure that counts as agreeing
CACHED_WORDS_PER_PASS = 256  # one token each, on a copy of the prefix's key/value cache

EVAL_NAME = metrics.ABSORPTION
PREP_CODE = ("atm_repro.evals.absorption:prepare_absorption",)  # roots of the prep's code key


@dataclass(frozen=True)
class AbsorptionConfig:
    """Parameters of the first-letter absorption eval (SAEBench's defaults)."""

    seed: int = 42  # SAEBench's random_seed
    n_words: int = 8000  # seeded sample of the single-token alphabetic words (0: all)
    train_fraction: float = 0.8
    n_icl_examples: int = 10
    # the word's token counted from the end: SAEBench's -6 for Gemma; None = from the
    # tokenizer (minus the template tail's token count, minus 1)
    prompt_token_pos: int | None = None
    batch_size: int = 32  # prompts per forward pass
    # 0: every prompt draws its own examples (SAEBench); n >= 2: each prompt set
    # draws n example sets, the model runs each once and the words continue its
    # key/value cache (docs/metrics.md, "Shared prompt prefixes")
    prompt_prefixes: int = 0
    # None: examples drawn on the split's generator (SAEBench); an int: on their own
    # generator with this seed, words and split unchanged (measures prompt noise)
    example_seed: int | None = None
    # ground-truth probe (SAEBench train_and_save_probes / train_linear_probe_for_task)
    probe_epochs: int = 50
    probe_batch_size: int = 64
    probe_lr: float = 1e-2
    probe_end_lr: float = 1e-5
    probe_weight_decay: float = 1e-4
    probe_f1_threshold: float = 0.6  # letters with probe F1 <= this are excluded
    min_letters: int = 20  # fewer kept letters: not meaningful (SAEBench: no result)
    # main latents (SAEBench train_k_sparse_probes)
    k_max: int = 10
    f1_jump: float = 0.03
    sparse_probe_l1: float = 0.01
    sparse_probe_epochs: int = 50
    sparse_probe_batch_size: int = 4096
    sparse_probe_lr: float = 0.01
    sparse_probe_end_lr: float = 1e-5
    sparse_probe_weight_decay: float = 1e-6
    # health: a k = 1 main latent with at least this test F1 stands for its letter
    letter_latent_f1: float = 0.5
    sae_batch_size: int = 1024  # activations per SAE encode call
    main_silent_eps: float = MAIN_SILENT_EPS
    full_cos_threshold: float = FULL_COS_THRESHOLD
    proj_fraction_threshold: float = PROJ_FRACTION_THRESHOLD
    absorber_cos_threshold: float = ABSORBER_COS_THRESHOLD
    max_absorbers: int = MAX_ABSORBERS

    def __post_init__(self) -> None:
        checks = [
            (self.n_words >= 0, "n_words must be >= 0 (0: every word)"),
            (0.0 < self.train_fraction < 1.0, "train_fraction must be in (0, 1)"),
            (self.n_icl_examples >= 1, "n_icl_examples must be >= 1"),
            (self.prompt_token_pos is None or self.prompt_token_pos <= -2,
             "prompt_token_pos must be <= -2 (or null: from the tokenizer)"),
            (self.batch_size > 0 and self.sae_batch_size > 0, "batch sizes must be > 0"),
            (self.prompt_prefixes == 0 or self.prompt_prefixes >= 2,
             "prompt_prefixes must be 0 (examples per word) or >= 2"),
            (self.probe_epochs >= 1 and self.sparse_probe_epochs >= 1, "epochs must be >= 1"),
            (self.probe_batch_size >= 1 and self.sparse_probe_batch_size >= 1,
             "probe batch sizes must be >= 1"),
            (0 < self.probe_end_lr <= self.probe_lr
             and 0 < self.sparse_probe_end_lr <= self.sparse_probe_lr,
             "probe learning rates must satisfy 0 < end_lr <= lr"),
            (self.probe_weight_decay >= 0 and self.sparse_probe_weight_decay >= 0,
             "weight decays must be >= 0"),
            (self.sparse_probe_l1 >= 0, "sparse_probe_l1 must be >= 0"),
            (0.0 <= self.probe_f1_threshold < 1.0, "probe_f1_threshold must be in [0, 1)"),
            (1 <= self.min_letters <= len(LETTERS), "min_letters must be in [1, 26]"),
            (0.0 <= self.letter_latent_f1 <= 1.0, "letter_latent_f1 must be in [0, 1]"),
            (self.k_max >= 1, "k_max must be >= 1"),
            (self.f1_jump >= 0, "f1_jump must be >= 0"),
            (self.max_absorbers >= 1, "max_absorbers must be >= 1"),
            (self.main_silent_eps > 0, "main_silent_eps must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"absorption: {msg}")


# Fields that change the prepared data (the rest only affect run_absorption).
PREP_FIELDS = ("seed", "n_words", "train_fraction", "n_icl_examples", "prompt_token_pos",
               "prompt_prefixes", "example_seed", "probe_epochs",
               "probe_batch_size", "probe_lr", "probe_end_lr", "probe_weight_decay")


# --------------------------------------------------------------------------- words


def is_alpha_word(text: str) -> bool:
    """ASCII letters only, after one optional leading space (SAEBench's filter)."""
    word = text[1:] if text.startswith(" ") else text
    return bool(word) and word.isascii() and word.isalpha()


def token_text(tokenizer, token: str) -> str:
    """A vocabulary entry as text; a SentencePiece word-start marker always becomes
    a leading space (some tokenizers drop it when decoding one token)."""
    text = tokenizer.convert_tokens_to_string([token])
    if token.startswith(SENTENCEPIECE_SPACE) and not text.startswith(" "):
        text = " " + text
    return text


def alphabetic_words(tokenizer) -> list[str]:
    """Sorted distinct texts of the non-special vocabulary entries that are words."""
    special = set(tokenizer.all_special_tokens)
    return sorted({text for token in tokenizer.get_vocab() if token not in special
                   for text in [token_text(tokenizer, token)] if is_alpha_word(text)})


def answer(word: str) -> str:
    """The in-context answer after the template: " X" for the word's first letter."""
    return " " + word.strip()[0].upper()


def word_token_pos(tokenizer, cfg: AbsorptionConfig) -> int:
    """Where the word sits in a prompt, counted from the end: the configured value,
    checked against the tokenizer, or the tokenizer's own when it is None."""
    tail = tokenizer(TEMPLATE.format(word=""), add_special_tokens=False)["input_ids"]
    pos = -len(tail) - 1
    if cfg.prompt_token_pos not in (None, pos):
        raise ValueError(f"absorption: the template's tail {TEMPLATE.format(word='')!r} is "
                         f"{len(tail)} tokens for this tokenizer, so the word sits at token "
                         f"{pos}, not prompt_token_pos={cfg.prompt_token_pos}")
    return pos


def single_token_words(tokenizer, words: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): a word is kept when its example line "\n{w} has the first
    letter: X" tokenises as the newline, one token for the word, the template's
    own tokens and one answer token, so that every prompt has the same length
    and the word sits at a fixed token."""
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    suffix = tokenizer(TEMPLATE.format(word=""), add_special_tokens=False)["input_ids"]
    enc = tokenizer(["\n" + TEMPLATE.format(word=w) + answer(w) for w in words],
                    add_special_tokens=False)["input_ids"]
    n = len(newline)
    kept, dropped = [], []
    for word, ids in zip(words, enc):
        ok = (len(ids) == n + len(suffix) + 2 and ids[:n] == newline
              and ids[n + 1 : -1] == suffix)
        (kept if ok else dropped).append(word)
    return kept, dropped


def sample_words(tokenizer, cfg: AbsorptionConfig) -> tuple[list[str], dict]:
    """The eval's word list (in the order handed to SAEBench) and how it was made."""
    vocab = alphabetic_words(tokenizer)
    kept, dropped = single_token_words(tokenizer, vocab)
    words = (random.Random(cfg.seed).sample(kept, cfg.n_words)
             if 0 < cfg.n_words < len(kept) else kept)
    n_train = int(len(words) * cfg.train_fraction)
    if min(n_train, len(words) - n_train) <= cfg.n_icl_examples:
        raise ValueError(f"absorption: {len(words)} words leave a split with no more than "
                         f"n_icl_examples={cfg.n_icl_examples} (vocabulary too small)")
    meta = {"n_alphabetic_words": len(vocab), "n_not_single_token": len(dropped),
            "not_single_token_examples": dropped[:20], "n_words": len(words)}
    return words, meta


def letter_index(word: str) -> int:
    return LETTERS.index(word.strip()[0].lower())


# --------------------------------------------------------------------------- prompts


def build_prompt(word: str, examples: list[str]) -> str:
    """SAEBench's prompt: newline, one "{ex} has the first letter: X" line per
    example, then "{word} has the first letter:"."""
    lines = [TEMPLATE.format(word=ex) + answer(ex) for ex in examples]
    return "\n" + "\n".join(lines) + "\n" + TEMPLATE.format(word=word)


def icl_prompt(word: str, pool: list[str], rng: random.Random, n_examples: int) -> str:
    """Examples drawn from ``pool`` until the word is not among them (SAEBench's
    ``create_icl_prompt`` with shuffling and its contamination check)."""
    for _ in range(MAX_DRAWS):
        examples = rng.sample(pool, n_examples)
        if word not in examples:
            return build_prompt(word, examples)
    raise ValueError(f"absorption: no example set without {word!r} in {MAX_DRAWS} draws")


def shared_prefix_prompts(words: list[str], pool: list[str], rng: random.Random,
                          n_examples: int, n_prefixes: int) -> list[str]:
    """Prompts over ``n_prefixes`` example sets drawn from ``pool``: word i takes
    set i mod n, or the next set that does not contain it."""
    sets = [rng.sample(pool, n_examples) for _ in range(n_prefixes)]
    prompts = []
    for i, word in enumerate(words):
        examples = next((sets[(i + j) % n_prefixes] for j in range(n_prefixes)
                         if word not in sets[(i + j) % n_prefixes]), None)
        if examples is None:
            raise ValueError(f"absorption: every example set contains {word!r}")
        prompts.append(build_prompt(word, examples))
    return prompts


def prompts_for(words: list[str], pool: list[str], rng: random.Random,
                cfg: AbsorptionConfig) -> list[str]:
    """One prompt per word, examples from ``pool``: drawn per word (SAEBench) or
    from ``cfg.prompt_prefixes`` shared sets."""
    if cfg.prompt_prefixes:
        return shared_prefix_prompts(words, pool, rng, cfg.n_icl_examples, cfg.prompt_prefixes)
    return [icl_prompt(w, pool, rng, cfg.n_icl_examples) for w in words]


def probe_splits(words: list[str], cfg: AbsorptionConfig):
    """(train words, test words, train prompts, test prompts): the shuffle, the split
    and the examples drawn from each split, with SAEBench's calls to ``random``
    (``create_dataset_probe_training``) on a generator seeded with ``cfg.seed``."""
    rng = random.Random(cfg.seed)
    shuffled = rng.sample(words, len(words))
    n_train = int(len(shuffled) * cfg.train_fraction)
    train, test = shuffled[:n_train], shuffled[n_train:]
    if cfg.example_seed is not None:
        rng = random.Random(cfg.example_seed)
    return train, test, prompts_for(train, train, rng, cfg), prompts_for(test, test, rng, cfg)


def scoring_prompts(words_by_letter: list[list[str]], words: list[str],
                    cfg: AbsorptionConfig) -> list[list[str]]:
    """Fresh prompts for the scored words, letter by letter in alphabetical order,
    examples from the whole word list (SAEBench's ``FeatureAbsorptionCalculator``),
    on a generator seeded with ``cfg.seed + 1`` (the crosscheck seeds SAEBench's),
    or ``cfg.example_seed + 1``."""
    rng = random.Random((cfg.seed if cfg.example_seed is None else cfg.example_seed) + 1)
    if cfg.prompt_prefixes:  # one draw of the sets for all letters
        flat = shared_prefix_prompts([w for ws in words_by_letter for w in ws], words, rng,
                                     cfg.n_icl_examples, cfg.prompt_prefixes)
        bounds = np.cumsum([0, *map(len, words_by_letter)])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return [[icl_prompt(w, words, rng, cfg.n_icl_examples) for w in letter_words]
            for letter_words in words_by_letter]


def tokenize_prompts(tokenizer, prompts: list[str], words: list[str], token_pos: int
                     ) -> torch.Tensor:
    """[N, S] token ids (BOS first) of equal-length prompts; checks that the token
    at ``token_pos`` is each word's own token."""
    if tokenizer.bos_token_id is None:
        raise ValueError("absorption: the tokenizer has no BOS token")
    enc = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    lengths = {len(ids) for ids in enc}
    if len(lengths) > 1:
        raise ValueError(f"absorption: prompts tokenise to {sorted(lengths)} tokens; they must "
                         "all have one length (a word that is not a single token slipped in)")
    word_ids = tokenizer(["\n" + TEMPLATE.format(word=w) for w in words],
                         add_special_tokens=False)["input_ids"]
    n_newline = len(tokenizer("\n", add_special_tokens=False)["input_ids"])
    for word, ids, line in zip(words, enc, word_ids):
        if ids[token_pos] != line[n_newline]:
            raise ValueError(f"absorption: token {token_pos} of {word!r}'s prompt is "
                             "not the word")
    return torch.tensor([[tokenizer.bos_token_id, *ids] for ids in enc], dtype=torch.long)


@torch.no_grad()
def word_activations(loaded: LoadedModel, layers: list[int], ids_NS: torch.Tensor,
                     token_pos: int, batch_size: int, progress: bool = False,
                     desc: str = "", shared_prefixes: bool = False) -> dict:
    """Residual stream after each block of ``layers`` at token ``token_pos``,
    {layer: float32 [N, D]}, one forward pass per batch for all layers.

    The tokens after the word cannot reach it (causal attention), so prompts end
    at the word. With ``shared_prefixes``, each distinct prefix (the tokens before
    the word) runs once and its words' tokens run on its key/value cache."""
    ids_NS = ids_NS[:, : ids_NS.shape[1] + token_pos + 1]
    if shared_prefixes:
        return _prefix_cached_activations(loaded, layers, ids_NS, progress, desc)
    device = next(loaded.model.parameters()).device
    acts = {layer: np.empty((len(ids_NS), loaded.d_model), dtype=np.float32) for layer in layers}
    for start in tqdm(range(0, len(ids_NS), batch_size), disable=not progress,
                      desc=f"absorption {desc} L{','.join(map(str, layers))}"):
        batch = ids_NS[start : start + batch_size].to(device)
        resid = capture_residuals(loaded, batch, layers, torch.ones_like(batch))
        for layer, resid_BSD in resid.items():
            acts[layer][start : start + len(batch)] = resid_BSD[:, -1].float().cpu().numpy()
    return acts


def _prefix_cached_activations(loaded: LoadedModel, layers: list[int], ids_NS: torch.Tensor,
                               progress: bool, desc: str) -> dict:
    """``word_activations`` for prompts that end at the word and share few prefixes."""
    device = next(loaded.model.parameters()).device
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(ids_NS[:, :-1].numpy()):
        groups.setdefault(row.tobytes(), []).append(i)
    acts = {layer: np.empty((len(ids_NS), loaded.d_model), dtype=np.float32) for layer in layers}
    for idx in tqdm(groups.values(), disable=not progress,
                    desc=f"absorption {desc} L{','.join(map(str, layers))} (shared prefixes)"):
        prefix_cache = DynamicCache(config=loaded.model.config)
        capture_residuals(loaded, ids_NS[idx[:1], :-1].to(device), layers,
                          kv_cache=prefix_cache)
        for start in range(0, len(idx), CACHED_WORDS_PER_PASS):
            rows = idx[start : start + CACHED_WORDS_PER_PASS]
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(rows))
            resid = capture_residuals(loaded, ids_NS[rows, -1:].to(device), layers,
                                      kv_cache=cache)
            for layer, resid_B1D in resid.items():
                acts[layer][rows] = resid_B1D[:, -1].float().cpu().numpy()
    return acts


# --------------------------------------------------------------------------- probes


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class (0 when there are no true or predicted positives);
    sklearn's ``f1_score`` validates its inputs at a cost that dominates here."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = int((y_true & y_pred).sum())
    denom = int(y_true.sum()) + int(y_pred.sum())
    return 2.0 * tp / denom if denom else 0.0


@dataclass(frozen=True)
class ProbeTraining:
    """How a multi-output probe is trained (SAEBench ``train_multi_probe``)."""

    epochs: int
    batch_size: int
    lr: float
    end_lr: float
    weight_decay: float
    l1: float = 0.0  # weight of the mean over outputs of ||w_c||_1


def train_multi_probe(x_NX: torch.Tensor, y_NC: torch.Tensor, how: ProbeTraining,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """C one-vs-rest logistic outputs on X inputs -> (W [C, X], b [C]).

    Binary cross-entropy with each output's positives weighted by its
    negatives / positives, Adam with (coupled) weight decay, shuffled
    mini-batches, the lr decayed exponentially from ``lr`` to ``end_lr`` over
    the epochs, plus ``l1`` x mean_c ||w_c||_1. Every output needs a positive.

    The random draws are SAEBench's, made on ``generator``: ``nn.Linear``'s
    initialisation, then per epoch the data loader's base seed (unused) and a
    seed for a fresh generator whose permutation orders the batches
    (``DataLoader(shuffle=True)``). With
    ``generator`` seeded as SAEBench seeds torch, both train the same probe
    from the same inputs.
    """
    N, X = x_NX.shape
    n_pos_C = y_NC.sum(0)
    if bool((n_pos_C == 0).any()):
        raise ValueError("train_multi_probe: an output has no positive example")
    W_CX = torch.empty(y_NC.shape[1], X)
    torch.nn.init.kaiming_uniform_(W_CX, a=math.sqrt(5), generator=generator)
    b_C = torch.empty(y_NC.shape[1])
    torch.nn.init.uniform_(b_C, -1 / math.sqrt(X), 1 / math.sqrt(X), generator=generator)
    W_CX.requires_grad_(), b_C.requires_grad_()
    opt = torch.optim.Adam([W_CX, b_C], lr=how.lr, weight_decay=how.weight_decay)
    gamma = math.exp(math.log(how.end_lr / how.lr) / how.epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(N - n_pos_C) / n_pos_C)
    for _ in range(how.epochs):
        # DataLoader.__iter__ draws its workers' base seed, then RandomSampler a seed
        _, seed = (int(torch.empty((), dtype=torch.int64).random_(generator=generator))
                   for _ in range(2))
        order = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
        for idx in order.split(how.batch_size):
            loss = loss_fn(torch.nn.functional.linear(x_NX[idx], W_CX, b_C), y_NC[idx])
            if how.l1:
                loss = loss + how.l1 * W_CX.abs().sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for group in opt.param_groups:
            group["lr"] *= gamma
    return W_CX.detach(), b_C.detach()


def one_hot_letters(y_N: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """(one-hot [N, C] over the letters present, their letter indices [C])."""
    present = np.unique(y_N)
    return torch.from_numpy((y_N[:, None] == present[None, :]).astype(np.float32)), present


def fit_letter_probes(acts_train_ND: np.ndarray, y_train: np.ndarray, acts_test_ND: np.ndarray,
                      y_test: np.ndarray, cfg: AbsorptionConfig):
    """The ground-truth letter probe on raw activations -> (W [26, D], b [26], test F1 [26]).

    One multi-output probe (``train_multi_probe``) over the letters present in
    train; a letter absent from train gets a zero row and F1 NaN, as does one
    absent from test. F1 counts decision > 0 as a prediction of the letter.
    """
    Y, present = one_hot_letters(np.asarray(y_train))
    how = ProbeTraining(cfg.probe_epochs, cfg.probe_batch_size, cfg.probe_lr, cfg.probe_end_lr,
                        cfg.probe_weight_decay)
    with threadpool_limits(1):  # small products: one thread wastes less on a shared CPU
        W_CD, b_C = train_multi_probe(torch.from_numpy(np.ascontiguousarray(acts_train_ND)),
                                      Y, how, torch.Generator().manual_seed(cfg.seed))
    D = acts_train_ND.shape[1]
    W = np.zeros((len(LETTERS), D), dtype=np.float32)
    b = np.zeros(len(LETTERS), dtype=np.float32)
    W[present], b[present] = W_CD.numpy(), b_C.numpy()
    decision_NL = acts_test_ND @ W.T + b
    f1 = np.full(len(LETTERS), np.nan)
    for c in present:
        if (y_test == c).any():
            f1[c] = binary_f1(y_test == c, decision_NL[:, c] > 0)
    return W, b, f1


@dataclass
class AbsorptionData:
    """What every SAE's absorption run shares (see ``prepare_absorption``)."""

    words: list[str]  # the sample, in the order handed to SAEBench
    words_train: list[str]
    words_test: list[str]
    labels_train: np.ndarray  # int [N_train], letter index
    labels_test: np.ndarray
    acts_train_ND: np.ndarray  # float32, residual at the word's token
    acts_test_ND: np.ndarray
    probe_W_LD: np.ndarray  # float32 [26, D], acts on raw activations
    probe_b_L: np.ndarray  # float32 [26]
    probe_f1_L: np.ndarray  # float [26], test F1 (NaN: no probe)
    score_test_idx: np.ndarray  # int [M]: the probe's true positives, letter by letter
    score_acts_ND: np.ndarray  # float32 [M, D], from their fresh scoring prompts
    prep_fingerprint: str  # of the config's PREP_FIELDS (checked by run_absorption)
    meta: dict = field(default_factory=dict)

    ARRAYS = ("labels_train", "labels_test", "acts_train_ND", "acts_test_ND", "probe_W_LD",
              "probe_b_L", "probe_f1_L", "score_test_idx", "score_acts_ND")
    WORDS = ("words", "words_train", "words_test")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            np.savez(f, **{k: np.array(getattr(self, k)) for k in self.WORDS + self.ARRAYS},
                     prep_fingerprint=np.array(self.prep_fingerprint),
                     meta=np.array(json.dumps(self.meta)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "AbsorptionData":
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k].tolist() for k in cls.WORDS}, **{k: z[k] for k in cls.ARRAYS},
                       prep_fingerprint=str(z["prep_fingerprint"]),
                       meta=json.loads(str(z["meta"])))

    def true_positives(self, c: int) -> np.ndarray:
        """Test indices of letter ``c`` that the probe calls ``c``, in test order."""
        decision = self.acts_test_ND @ self.probe_W_LD[c] + self.probe_b_L[c]
        return np.nonzero((self.labels_test == c) & (decision > 0))[0]


def prep_fingerprint(cfg: AbsorptionConfig) -> str:
    return fingerprint({f: getattr(cfg, f) for f in PREP_FIELDS})


def build_absorption_data(words: list[str], words_train: list[str], acts_train_ND: np.ndarray,
                          words_test: list[str], acts_test_ND: np.ndarray,
                          cfg: AbsorptionConfig, meta: dict | None = None) -> AbsorptionData:
    """Labels from the words' first letters plus the ground-truth probe; the
    scoring set is left empty (``prepare_absorption`` fills it)."""
    y_train = np.array([letter_index(w) for w in words_train], dtype=np.int64)
    y_test = np.array([letter_index(w) for w in words_test], dtype=np.int64)
    acts_train_ND = np.asarray(acts_train_ND, dtype=np.float32)
    acts_test_ND = np.asarray(acts_test_ND, dtype=np.float32)
    W, b, f1 = fit_letter_probes(acts_train_ND, y_train, acts_test_ND, y_test, cfg)
    D = acts_train_ND.shape[1]
    return AbsorptionData(list(words), list(words_train), list(words_test), y_train, y_test,
                          acts_train_ND, acts_test_ND, W, b, f1, np.zeros(0, np.int64),
                          np.zeros((0, D), np.float32), prep_fingerprint(cfg), dict(meta or {}))


def prepare_absorption(loaded: LoadedModel, layers: list[int], cfg: AbsorptionConfig,
                       cache_dir: str | Path | None, progress: bool = False
                       ) -> dict[int, AbsorptionData]:
    """Prompt activations, the ground-truth probe and the scoring set, per layer.

    Cached at ``<cache_dir>/absorption/<model>-L<layer>-<fingerprint>.npz``; the
    fingerprint covers the prep config, the model weights and dtype, the word
    list and the prep's code (``PREP_CODE``). The probe prompts of the layers not in the cache
    share one forward pass; the scoring prompts depend on the layer's probe (its true
    positives), so each layer runs its own.
    """
    for layer in layers:
        if not 0 <= layer < loaded.n_layers:
            raise ValueError(f"absorption: layer {layer} out of range: the model has "
                             f"{loaded.n_layers} layers")
    words, word_meta = sample_words(loaded.tokenizer, cfg)
    dtype = str(next(loaded.model.parameters()).dtype)  # a bfloat16 forward is other data
    words_sha = hashlib.sha256("\n".join(words).encode()).hexdigest()
    out, keys, paths = {}, {}, {}
    for layer in layers:
        keys[layer] = fingerprint({"prep": prep_fingerprint(cfg), "model": loaded.name,
                                   "weights": loaded.fingerprint, "dtype": dtype, "layer": layer,
                                   "words": words_sha, "code": code_key(*PREP_CODE)})
        if cache_dir is not None:
            stem = f"{loaded.name.replace('/', '_')}-L{layer}-{keys[layer][:16]}"
            paths[layer] = Path(cache_dir) / "absorption" / f"{stem}.npz"
            if paths[layer].exists():
                out[layer] = AbsorptionData.load(paths[layer])
    todo = [layer for layer in layers if layer not in out]
    if not todo:
        return out

    t0 = time.perf_counter()
    train, test, prompts_train, prompts_test = probe_splits(words, cfg)
    pos = word_token_pos(loaded.tokenizer, cfg)
    shared = cfg.prompt_prefixes > 0
    acts = {split: word_activations(loaded, todo, tokenize_prompts(loaded.tokenizer, p, w, pos),
                                    pos, cfg.batch_size, progress, split, shared)
            for split, p, w in (("train", prompts_train, train), ("test", prompts_test, test))}
    forward_s = time.perf_counter() - t0
    for layer in todo:
        t1 = time.perf_counter()
        meta = {"model": loaded.name, "model_fingerprint": loaded.fingerprint, "layer": layer,
                **word_meta, "n_train_words": len(train), "n_test_words": len(test),
                "cache_key": keys[layer]}
        data = build_absorption_data(words, train, acts["train"][layer], test,
                                     acts["test"][layer], cfg, meta)
        by_letter = [data.true_positives(c) for c in range(len(LETTERS))]
        prompts = scoring_prompts([[test[i] for i in idx] for idx in by_letter], words, cfg)
        data.score_test_idx = np.concatenate(by_letter).astype(np.int64)
        scored = [test[i] for i in data.score_test_idx]
        ids = tokenize_prompts(loaded.tokenizer, [p for ps in prompts for p in ps], scored, pos)
        t2 = time.perf_counter()
        data.score_acts_ND = word_activations(loaded, [layer], ids, pos, cfg.batch_size,
                                              progress, "scoring", shared)[layer]
        score_s = time.perf_counter() - t2
        data.meta["prepare_seconds"] = round(forward_s / len(todo) + time.perf_counter() - t1, 3)
        data.meta["forward_seconds"] = round(forward_s / len(todo) + score_s, 3)
        if layer in paths:
            data.save(paths[layer])
        out[layer] = data
    return {layer: out[layer] for layer in layers}


def letter_exclusions(data: AbsorptionData, cfg: AbsorptionConfig) -> dict[str, str]:
    """Letters left out of the means, with the reason."""
    out = {}
    for c, letter in enumerate(LETTERS):
        f1 = data.probe_f1_L[c]
        if not np.isfinite(f1):
            out[letter] = "no probe: the letter is missing from the train or test words"
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
    return np.concatenate(chunks) if chunks else np.zeros((0, param.shape[-1]), np.float32)


def _fit(model: LogisticRegression, x, y) -> LogisticRegression:
    """Fit with BLAS on one thread and without convergence warnings (SAEBench's
    ``max_iter=500`` is a setting, not a failure)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def l1_probe_weights(z_train_NF: np.ndarray, y_train: np.ndarray, cfg: AbsorptionConfig
                     ) -> np.ndarray:
    """Weights [26, F] of the L1-penalised multi-output probe on the raw latents
    (SAEBench ``train_sparse_multi_probe``); rows of absent letters are 0."""
    Y, present = one_hot_letters(np.asarray(y_train))
    how = ProbeTraining(cfg.sparse_probe_epochs, cfg.sparse_probe_batch_size,
                        cfg.sparse_probe_lr, cfg.sparse_probe_end_lr,
                        cfg.sparse_probe_weight_decay, cfg.sparse_probe_l1)
    W_CF, _ = train_multi_probe(torch.from_numpy(np.ascontiguousarray(z_train_NF)), Y, how,
                                torch.Generator().manual_seed(cfg.seed))
    W = np.zeros((len(LETTERS), z_train_NF.shape[1]), dtype=np.float32)
    W[present] = W_CF.numpy()
    return W


def select_main_latents(z_train_NF: np.ndarray, y_train: np.ndarray, z_test_NF: np.ndarray,
                        y_test: np.ndarray, letters: list[int], cfg: AbsorptionConfig):
    """Main latents per letter: {letter index: (latent ids, [test F1 for k = 1, 2, ...])}.

    Latents ranked by the L1 probe's signed weight (largest first, ties as
    ``torch.topk``); for k = 1..k_max a class-balanced logistic probe on the top
    k raw latents is scored on test; k grows while F1 beats the best so far by
    more than ``f1_jump`` (k = 1 is always taken).
    """
    from sklearn.linear_model import LogisticRegression

    W_LF = l1_probe_weights(z_train_NF, y_train, cfg)
    out = {}
    for c in letters:
        ranked = torch.from_numpy(W_LF[c]).topk(min(cfg.k_max, W_LF.shape[1])).indices.numpy()
        best, f1s, ids = -np.inf, [], ranked[:0]
        for k in range(1, len(ranked) + 1):
            probe = _fit(LogisticRegression(class_weight="balanced", max_iter=500),
                         z_train_NF[:, ranked[:k]], y_train == c)
            f1 = binary_f1(y_test == c, probe.decision_function(z_test_NF[:, ranked[:k]]) > 0)
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
    """Full absorption and absorption fraction of N words of one letter (step 5).

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


def health(per_letter: dict, n_kept: int, cfg: AbsorptionConfig) -> tuple[dict, str]:
    """The metric's health numbers and, when absorption is not meaningful, why."""
    k1 = np.array([v["k_sparse_f1"][0] for v in per_letter.values()])
    wrong = np.array([v["wrong_letter_fire_rate"] for v in per_letter.values()])
    nan = float("nan")
    stats = {metrics.MEAN_K1_F1.name: float(k1.mean()) if len(k1) else nan,
             metrics.MAX_K1_F1.name: float(k1.max()) if len(k1) else nan,
             metrics.LETTER_LATENTS.name: int((k1 >= cfg.letter_latent_f1).sum()),
             metrics.WRONG_LETTER_FIRES.name: float(wrong.mean()) if len(wrong) else nan}
    reasons = []
    if n_kept < cfg.min_letters:
        reasons.append(f"{n_kept} letters kept (< {cfg.min_letters})")
    if not stats[metrics.LETTER_LATENTS.name]:
        reasons.append(f"no letter has a main latent with F1 >= {cfg.letter_latent_f1} "
                       f"(best {stats[metrics.MAX_K1_F1.name]:.2f})")
    return stats, "; ".join(reasons)


def run_absorption(sae: torch.nn.Module, data: AbsorptionData, cfg: AbsorptionConfig,
                   sae_id: str) -> EvalResult:
    """Absorption of one SAE on prepared data (steps 4-6 and the health check)."""
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
    z_score = encode_latents(sae, data.score_acts_ND, cfg.sae_batch_size)
    main = (select_main_latents(z_train, data.labels_train, z_test, data.labels_test, letters, cfg)
            if letters else {})
    W_dec_FD = sae.W_dec.detach().float().cpu().numpy()
    score_labels = data.labels_test[data.score_test_idx]

    per_letter = {}
    for c in letters:
        rows = np.nonzero(score_labels == c)[0]
        ids, f1s = main[c]
        s = score_words(data.score_acts_ND[rows], data.probe_W_LD[c], z_score[rows], W_dec_FD,
                        ids, cfg)
        other = data.labels_test != c
        fires = (z_test[other][:, ids] >= cfg.main_silent_eps).any(axis=1)
        per_letter[LETTERS[c]] = {
            "full_absorption_rate": float(s.full_absorption.mean()) if len(rows) else math.nan,
            "mean_absorption_fraction": float(s.fraction.mean()) if len(rows) else math.nan,
            "n_main_latents": len(ids),
            "main_latents": ids,
            "k_sparse_f1": f1s,
            "wrong_letter_fire_rate": float(fires.mean()) if len(fires) else math.nan,
            "n_true_positives": int(len(rows)),
            "probe_f1": float(data.probe_f1_L[c]),
            "absorbed_words": [data.words_test[data.score_test_idx[i]]
                               for i in rows[s.full_absorption]],
        }
    scored = [v for v in per_letter.values() if v["n_true_positives"] > 0]
    full = np.array([v["full_absorption_rate"] for v in scored])
    frac = np.array([v["mean_absorption_fraction"] for v in scored])
    nan = float("nan")
    stats, reason = health(per_letter, len(letters), cfg)
    measures = {
        metrics.FULL_ABSORPTION.name: float(full.mean()) if len(scored) else nan,
        metrics.FULL_ABSORPTION_STD.name: float(full.std(ddof=1)) if len(scored) > 1 else nan,
        metrics.ABSORPTION_FRACTION.name: float(frac.mean()) if len(scored) else nan,
        metrics.ABSORPTION_FRACTION_STD.name: (float(frac.std(ddof=1)) if len(scored) > 1
                                               else nan),
    }
    values = {
        # not meaningful: no number reaches a table (NaN, "n/a"); the computed values
        # stay in details["measures"] (the crosscheck compares those)
        **{k: (nan if reason else v) for k, v in measures.items()},
        metrics.MAIN_LATENTS.name: (float(np.mean([v["n_main_latents"] for v in scored]))
                                    if len(scored) else nan),
        metrics.LETTERS_KEPT.name: len(letters),
        metrics.LETTERS_SCORED.name: len(scored),
        **stats,
        metrics.MEANINGFUL.name: float(not reason),
    }
    details = {"measures": measures, "per_letter": per_letter, "excluded_letters": excluded,
               "data": data.meta, "not_meaningful_reason": reason,
               "eval_seconds": round(time.perf_counter() - t0, 3)}
    return EvalResult(EVAL_NAME, sae_id, cfg, values, details)


def _prepare(ctx: EvalContext, layers: list[int], cfg: AbsorptionConfig
             ) -> dict[int, AbsorptionData]:
    return prepare_absorption(ctx.loaded, layers, cfg, ctx.model_dir, ctx.progress)


def _run(sae, record, data: AbsorptionData, cfg: AbsorptionConfig) -> EvalResult:
    return run_absorption(sae, data, cfg, record.sae_id)


register(Eval(EVAL_NAME, AbsorptionConfig, EVERY_GROUP, _run, _prepare))
