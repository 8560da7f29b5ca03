"""First-letter absorption: per-word scoring branches, known answers with
hand-built SAEs on synthetic letter activations, each SAEBench-equivalent step
(probe class weighting, raw-latent ranking, word sampling and prompt draws),
and an end-to-end deterministic run on tiny-gemma3."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from atm_repro import metrics
from atm_repro.config import ConfigError, CorpusConfig, ModelConfig
from atm_repro.evals.absorption import (
    LETTERS,
    AbsorptionConfig,
    AbsorptionData,
    ProbeTraining,
    alphabetic_words,
    answer,
    build_absorption_data,
    build_prompt,
    is_alpha_word,
    prepare_absorption,
    probe_splits,
    run_absorption,
    sample_words,
    score_words,
    scoring_prompts,
    select_main_latents,
    shared_prefix_prompts,
    single_token_words,
    tokenize_prompts,
    train_multi_probe,
    word_activations,
    word_token_pos,
)
from atm_repro.evals.results import read_result, write_result
from atm_repro.saes.base import SAE, SAEConfig

# ----------------------------------------------------------------- per-word scoring

E0, E1 = np.eye(4)[0], np.eye(4)[1]
# latent 0: main (d = e0); 1: d = e0; 2: d = 2 (e0 + e1)/sqrt2 (norm 2, cos 1/sqrt2);
# 3: d = e1 (cos 0); 4: nearly orthogonal to the probe (cos ~ 0.02)
W_DEC = np.stack([E0, E0, math.sqrt(2) * (E0 + E1), E1,
                  (0.02 * E0 + E1) / np.linalg.norm(0.02 * E0 + E1)])
PROBE = 2.0 * E0  # not unit norm: score_words normalises it


def score(acts, z, main=(0,)):
    return score_words(np.asarray(acts), PROBE, np.asarray(z, dtype=float), W_DEC, list(main))


def test_score_main_covers_probe_gives_zero():
    s = score(E0, [1.2, 0, 0, 0, 0])  # M = 1.2 >= P = 1
    assert s.probe_proj[0] == pytest.approx(1.0) and s.main_proj[0] == pytest.approx(1.2)
    assert s.fraction[0] == 0.0 and not s.full_absorption[0]


def test_score_weak_absorbers_give_zero():
    s = score(E0, [0.5, 0.3, 0, 0, 0])  # T / P = 0.3 < 0.4
    assert s.absorber_proj[0] == pytest.approx(0.3)
    assert s.fraction[0] == 0.0 and not s.full_absorption[0]


def test_score_silent_main_gives_one_and_full_absorption():
    s = score(E0, [0, 0.8, 0, 0, 0])  # M = 0, T = 0.8
    assert s.fraction[0] == 1.0
    assert s.full_absorption[0] and s.top_latent[0] == 1


def test_score_partial_uses_decoder_norm():
    # proj = [0.3, 0.5, 0.2 * (1/sqrt2) * 2, 0]; M = 0.3, T = 0.5 + 0.2 sqrt2,
    # A = min(T, P - M = 0.7) = 0.7 -> 0.7 / (0.7 + 0.3)
    s = score(E0, [0.3, 0.5, 0.2, 0, 0])
    assert s.absorber_proj[0] == pytest.approx(0.5 + 0.2 * math.sqrt(2))
    assert s.fraction[0] == pytest.approx(0.7)
    assert not s.full_absorption[0]  # the main latent fires
    # A = T = 0.5 < P - M: 0.5 / (0.5 + 0.3)
    assert score(E0, [0.3, 0.5, 0, 0, 0]).fraction[0] == pytest.approx(0.625)


def test_score_full_absorption_needs_aligned_large_top_latent():
    # top projection from latent 4 (cos 0.02 < 0.025) -> not full; the fraction
    # ignores it (cos < 0.1) and counts latent 1 (0.6 >= 0.4 P)
    s = score(E0 + 5 * E1, [0, 0.6, 0, 0, 100.0])
    assert s.top_latent[0] == 4 and not s.full_absorption[0] and s.fraction[0] == 1.0
    s = score(E0, [0, 0.3, 0, 0, 0])  # top proj / P = 0.3 < 0.4
    assert not s.full_absorption[0] and s.fraction[0] == 0.0


def test_score_negative_probe_projection_gives_zero():
    s = score(-E0, [0, 0.8, 0, 0, 0])
    assert s.probe_proj[0] < 0 and s.fraction[0] == 0.0 and not s.full_absorption[0]


def test_score_vectorised_over_words():
    rows = [[1.2, 0, 0, 0, 0], [0, 0.8, 0, 0, 0], [0.3, 0.5, 0.2, 0, 0]]
    s = score(np.stack([E0] * 3), rows)
    assert s.fraction.tolist() == pytest.approx([0.0, 1.0, 0.7])
    assert s.full_absorption.tolist() == [False, True, False]


# ----------------------------------------------------------- synthetic known answers

N_TRAIN, N_TEST, N_ABSORBED, D = 12, 6, 4, 32  # dims 0-25: letters, 26-29: absorbed tokens
AMP = 30.0  # residual-stream-like scale, so SAEBench's probe recipe converges


def synthetic_data(cfg: AbsorptionConfig) -> AbsorptionData:
    """a = AMP e_letter + noise; the first N_ABSORBED test words of 'a' also carry
    their own token direction AMP e_{26+j} (never seen in train)."""
    rng = np.random.default_rng(0)

    def split(n, prefix):
        words = [f"{letter}{prefix}{i}" for letter in LETTERS for i in range(n)]
        acts = 0.02 * rng.standard_normal((len(words), D))
        for r, w in enumerate(words):
            acts[r, LETTERS.index(w[0])] += AMP
        return words, acts

    words_train, acts_train = split(N_TRAIN, "tr")
    words_test, acts_test = split(N_TEST, "te")
    for j in range(N_ABSORBED):  # test rows 0..N_TEST-1 are letter 'a'
        acts_test[j, 26 + j] += AMP
    data = build_absorption_data(words_train + words_test, words_train, acts_train, words_test,
                                 acts_test, cfg)
    # scoring prompts stand in as the test prompts themselves
    data.score_test_idx = np.concatenate([data.true_positives(c) for c in range(26)])
    data.score_acts_ND = data.acts_test_ND[data.score_test_idx]
    return data


def hand_sae(W_enc_DF: np.ndarray, b_enc_F: np.ndarray, W_dec_FD: np.ndarray) -> SAE:
    """A plain ReLU SAE with the given weights (b_dec = 0)."""
    sae = SAE(SAEConfig(d_in=W_enc_DF.shape[0], d_sae=W_enc_DF.shape[1]))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor(W_enc_DF, dtype=torch.float32))
        sae.b_enc.copy_(torch.tensor(b_enc_F, dtype=torch.float32))
        sae.W_dec.copy_(torch.tensor(W_dec_FD, dtype=torch.float32))
        sae.b_dec.zero_()
    return sae


def identity_sae() -> SAE:
    """Latents relu([x, -x]) and decoder [I; -I]: reconstructs x exactly."""
    eye = np.eye(D)
    return hand_sae(np.hstack([eye, -eye]), np.zeros(2 * D), np.vstack([eye, -eye]))


def absorbing_sae() -> SAE:
    """The identity SAE, except that latent 0 ('a') is suppressed by the absorbed
    tokens' directions, and one extra latent per absorbed token fires on it
    (z = AMP - 1) with a decoder carrying the 'a' direction."""
    eye = np.eye(D)
    W_enc = np.hstack([eye, -eye, np.zeros((D, N_ABSORBED))])
    b_enc = np.zeros(2 * D + N_ABSORBED)
    W_dec = np.vstack([eye, -eye, np.zeros((N_ABSORBED, D))])
    for j in range(N_ABSORBED):
        t = 26 + j
        W_enc[t, 0] = -2.0  # z_0 = relu(AMP - 2 AMP) = 0 on absorbed words
        W_enc[t, 2 * D + j] = 1.0
        b_enc[2 * D + j] = -1.0
        W_dec[2 * D + j] = 1.5 * (eye[0] + eye[t])
    return hand_sae(W_enc, b_enc, W_dec)


@pytest.fixture(scope="module")
def synth():
    # 12 words per letter: SAEBench's probe recipes, with smaller batches so that
    # they take enough steps to converge on so few words
    cfg = AbsorptionConfig(probe_batch_size=16, sparse_probe_batch_size=32)
    return cfg, synthetic_data(cfg)


def test_ground_truth_probe_separates_synthetic_letters(synth):
    _, data = synth  # every test word is found; the 25x positive weight costs a few FPs
    assert np.all(data.probe_f1_L > 0.8)
    assert all(len(data.true_positives(c)) == N_TEST for c in range(26))


def test_identity_sae_has_no_absorption(synth):
    cfg, data = synth
    res = run_absorption(identity_sae(), data, cfg, "identity")
    assert res.metrics["n_letters_kept"] == 26
    assert res.metrics["mean_full_absorption"] == 0.0
    assert res.metrics["mean_absorption_fraction"] == 0.0
    # the result's metrics are exactly the registry's absorption metrics
    assert set(res.metrics) == {m.name for m in metrics.METRICS.values()
                                if m.eval == metrics.ABSORPTION}
    for c, letter in enumerate(LETTERS):
        assert res.details["per_letter"][letter]["main_latents"] == [c]
        assert res.details["per_letter"][letter]["n_true_positives"] == N_TEST


def test_absorbing_sae_known_rates(synth):
    cfg, data = synth
    res = run_absorption(absorbing_sae(), data, cfg, "absorbing")
    per = res.details["per_letter"]
    rate_a = N_ABSORBED / N_TEST  # every 'a' test word is a true positive
    assert per["a"]["main_latents"] == [0]
    assert per["a"]["n_true_positives"] == N_TEST
    assert per["a"]["full_absorption_rate"] == pytest.approx(rate_a)
    assert per["a"]["mean_absorption_fraction"] == pytest.approx(rate_a)
    assert per["a"]["absorbed_words"] == [f"ate{j}" for j in range(N_ABSORBED)]
    assert all(per[letter]["full_absorption_rate"] == 0.0 for letter in LETTERS[1:])
    rates = np.array([rate_a] + [0.0] * 25)
    assert res.metrics["mean_full_absorption"] == pytest.approx(rates.mean())
    assert res.metrics["mean_absorption_fraction"] == pytest.approx(rates.mean())
    assert res.metrics["std_full_absorption"] == pytest.approx(rates.std(ddof=1))
    assert res.metrics["meaningful"] == 1.0  # 26 letters, each with an F1 1 latent


def test_low_f1_letters_are_excluded_and_flagged(synth):
    cfg, data = synth
    data.probe_f1_L[1] = 0.5  # pretend the 'b' probe is weak
    try:
        res = run_absorption(identity_sae(), data, cfg, "x")
        strict = run_absorption(identity_sae(), data, dataclasses.replace(cfg, min_letters=26), "x")
    finally:
        data.probe_f1_L[1] = 1.0
    assert res.metrics["n_letters_kept"] == 25 and res.metrics["meaningful"] == 1.0
    assert res.details["excluded_letters"] == {"b": "probe F1 0.500 <= 0.6"}
    assert strict.metrics["meaningful"] == 0.0
    assert "25 letters kept (< 26)" in strict.details["not_meaningful_reason"]


def test_no_letter_latent_is_not_meaningful(synth):
    """An SAE whose latents fire alike on every word has no latent for any
    letter: absorption is flagged, and the main latents fire on other letters."""
    cfg, data = synth
    dense = hand_sae(np.zeros((D, 8)), np.ones(8), np.eye(8, D))
    res = run_absorption(dense, data, cfg, "dense")
    assert res.metrics["meaningful"] == 0.0 and res.metrics["n_letter_latents"] == 0
    assert "no letter has a main latent" in res.details["not_meaningful_reason"]
    assert res.metrics["wrong_letter_fire_rate"] == 1.0
    ok = run_absorption(identity_sae(), data, cfg, "identity")
    # relu(noise) leaves the identity's letter latents barely on for half of the others
    assert ok.metrics["wrong_letter_fire_rate"] < 0.6 and ok.metrics["mean_k1_f1"] == 1.0


def test_run_rejects_mismatched_config(synth):
    cfg, data = synth
    with pytest.raises(ValueError, match="different config"):
        run_absorption(identity_sae(), data, dataclasses.replace(cfg, seed=1), "x")


def test_bad_config_is_rejected():
    with pytest.raises(ConfigError, match="train_fraction"):
        AbsorptionConfig(train_fraction=1.5)
    with pytest.raises(ConfigError, match="n_icl_examples"):
        AbsorptionConfig(n_icl_examples=0)
    with pytest.raises(ConfigError, match="end_lr"):
        AbsorptionConfig(probe_end_lr=1.0)


# ------------------------------------------------------- SAEBench-equivalent steps


def test_probe_weights_positives_by_class_balance():
    """With 5% positives, N(1, 1) against N(0, 1), the class-weighted probe puts
    its boundary near the midpoint 0.5; an unweighted one would sit near 3."""
    rng = np.random.default_rng(0)
    y = (np.arange(4000) < 200).astype(np.float32)
    x = rng.standard_normal(4000).astype(np.float32) + y
    W, b = train_multi_probe(torch.from_numpy(x[:, None]), torch.from_numpy(y[:, None]),
                             ProbeTraining(epochs=40, batch_size=256, lr=0.05, end_lr=1e-3,
                                           weight_decay=0.0), torch.Generator().manual_seed(0))
    boundary = float(-b[0] / W[0, 0])
    assert 0.2 < boundary < 0.8


def test_probe_is_saebench_train_multi_probe_bit_for_bit():
    """SAEBench's probe training written with torch's own pieces, as its code does
    it (global seed, ``nn.Linear``, ``DataLoader(shuffle=True)``, BCE with positive
    weights, Adam, ``ExponentialLR`` per epoch, L1 term): the same weights."""
    torch.manual_seed(0)
    x = torch.randn(300, 12) * 30
    y = torch.nn.functional.one_hot(torch.arange(300) % 5, 5)
    torch.manual_seed(42)
    probe = torch.nn.Linear(12, 5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y.float()),
                                         batch_size=64, shuffle=True)
    pos_weight = (len(y) - y.sum(0)) / y.sum(0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(math.log(1e-3) / 4))
    for _ in range(4):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(probe(xb), yb) + 0.01 * probe.weight.abs().sum(-1).mean()
            loss.backward()
            opt.step()
        sched.step()
    W, b = train_multi_probe(x, y.float(), ProbeTraining(4, 64, 1e-2, 1e-5, 1e-4, 0.01),
                             torch.Generator().manual_seed(42))
    assert torch.equal(W, probe.weight.detach()) and torch.equal(b, probe.bias.detach())


def test_probe_l1_term_zeroes_useless_inputs():
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.5).astype(np.float32)
    x = np.stack([y * 2 - 1 + 0.3 * rng.standard_normal(2000),
                  rng.standard_normal(2000)], axis=1).astype(np.float32)
    how = dict(epochs=30, batch_size=200, lr=0.05, end_lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    W0, _ = train_multi_probe(torch.from_numpy(x), torch.from_numpy(y[:, None]),
                              ProbeTraining(**how), g)
    W1, _ = train_multi_probe(torch.from_numpy(x), torch.from_numpy(y[:, None]),
                              ProbeTraining(**how, l1=0.2), torch.Generator().manual_seed(0))
    assert abs(float(W1[0, 1])) < 0.05 < abs(float(W0[0, 0]))
    assert abs(float(W1[0, 1])) < abs(float(W0[0, 1])) or abs(float(W0[0, 1])) < 0.05


def test_exclusive_letter_latent_is_ranked_first_on_raw_latents():
    """Latent c fires (1-3) on 60% of letter c's words and on nothing else; 486
    more latents fire (1-3) on a random 20% of all words. The L1 probe on the raw
    latents, with SAEBench's schedule (here 6 batches x 50 epochs), ranks
    latent c first for every letter. (Its schedule moves weights by ~0.15, so
    the ranking needs a width where the random init, +-1/sqrt(F), is smaller.)"""
    rng = np.random.default_rng(0)
    F = 512

    def latents(n_per):
        y = np.repeat(np.arange(26), n_per)
        z = np.where(rng.random((len(y), F)) < 0.2, rng.uniform(1, 3, (len(y), F)), 0.0)
        z[:, :26] = 0.0
        for c in range(26):
            rows = np.nonzero(y == c)[0]
            on = rows[rng.random(len(rows)) < 0.6]
            z[on, c] = rng.uniform(1, 3, len(on))
        return z.astype(np.float32), y

    z_train, y_train = latents(800)
    z_test, y_test = latents(60)
    main = select_main_latents(z_train, y_train, z_test, y_test, list(range(26)),
                               AbsorptionConfig())
    assert [main[c][0][0] for c in range(26)] == list(range(26))


class _FakeTokenizer:
    """SentencePiece-style entries; decoding turns the space marker into a space."""
    all_special_tokens = ["<bos>"]

    def get_vocab(self):
        return {t: i for i, t in enumerate(
            ["<bos>", "\u2581cat", "cat", "dog", "\u2581Dog", "x1", "\u2581", "\u00dc", "emu",
             "<0x41>"])}

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens).replace("\u2581", " ").replace("<0x41>", "A")


def test_alphabetic_words_keep_both_forms():
    assert is_alpha_word(" cat") and is_alpha_word("Cat")
    for bad in ("cat1", " ", "", "  cat", "\u00dc", "caf\u00e9"):
        assert not is_alpha_word(bad)
    assert alphabetic_words(_FakeTokenizer()) == [" Dog", " cat", "A", "cat", "dog", "emu"]


GPT2_WORDS = ("cat", "dog", "emu", "fox", "gnu", "hen", "owl", "yak", "ant", "bee", "cow",
              "elk", "jay", "kea", "ram", "seal", "toad", "vole", "wasp", "zebu")


def gpt2_style_tokenizer():
    """A byte-level BPE with GPT-2's pre-tokenizer (a leading space is the "Ġ" of
    the entry, as in SmolLM2's, Llama 3's and Qwen2's vocabularies), trained until
    every word, with and without its space, and the template are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = [build_prompt(form, [form]) + answer(form)
             for w in GPT2_WORDS for form in (w, " " + w, " " + w.capitalize())]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines * 3, trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>")


def test_word_list_and_prompts_with_a_gpt2_style_tokenizer():
    tok = gpt2_style_tokenizer()
    assert {"\u0120cat", "cat", "\u0120Cat"} <= set(tok.get_vocab())
    vocab = alphabetic_words(tok)
    assert {" cat", "cat", " Cat"} <= set(vocab) and not any("\u0120" in w for w in vocab)
    cfg = AbsorptionConfig(n_words=0, n_icl_examples=2)
    words, _ = sample_words(tok, cfg)
    assert {w for base in GPT2_WORDS for w in (base, " " + base, " " + base.capitalize())} \
        <= set(words)
    pos = word_token_pos(tok, cfg)
    assert pos == -6  # " has", " the", " first", " letter", ":" as in SmolLM2
    train, _, prompts, _ = probe_splits(words, cfg)
    ids = tokenize_prompts(tok, prompts, train, pos)
    assert (ids[:, 0] == tok.bos_token_id).all()
    for word, row in zip(train, ids):
        assert tok.convert_ids_to_tokens(int(row[pos])) == word.replace(" ", "\u0120")


def test_prompt_format():
    assert build_prompt(" cat", [" dog", "emu"]) == (
        "\n dog has the first letter: D\nemu has the first letter: E\n"
        " cat has the first letter:")


def test_splits_and_prompts_follow_saebench_random_calls():
    """The draws of SAEBench's create_dataset_probe_training (global ``random``,
    seeded), written out here as its code does them: the same strings."""
    import random

    def saebench_prompt(w, pool):  # create_icl_prompt: redraw while w is among them
        while True:
            ex = random.sample(pool, 10)
            if w not in ex:
                return build_prompt(w, ex)

    words = [f" w{chr(97 + i % 26)}{i}" for i in range(300)]
    cfg = AbsorptionConfig(seed=7)
    random.seed(7)
    shuffled = random.sample(words, len(words))
    train, test = shuffled[:240], shuffled[240:]
    expected = [saebench_prompt(w, split) for split in (train, test) for w in split]
    got_train, got_test, p_train, p_test = probe_splits(words, cfg)
    assert (got_train, got_test) == (train, test)
    assert p_train + p_test == expected
    # scoring: letter by letter, examples from the whole list, generator seed + 1
    random.seed(8)
    by_letter = [[w for w in test if w[2] == c] for c in LETTERS]
    expected = [saebench_prompt(w, words) for ws in by_letter for w in ws]
    assert [p for ps in scoring_prompts(by_letter, words, cfg) for p in ps] == expected


def test_shared_prefix_prompts_use_few_sets_and_never_the_word():
    import random

    words = [f" w{chr(97 + i % 26)}{i}" for i in range(200)]
    prompts = shared_prefix_prompts(words, words, random.Random(0), 10, 4)
    prefixes = [p[: p.rindex("\n") + 1] for p in prompts]
    assert len(set(prefixes)) == 4  # four example sets, each used
    for word, prompt, prefix in zip(words, prompts, prefixes):
        assert prompt == prefix + f"{word} has the first letter:"
        assert f"\n{word} has" not in prefix  # a word is never its own example
    assert shared_prefix_prompts(words, words, random.Random(0), 10, 4) == prompts
    # a word inside its turn's set moves on to the next set
    pool = words[:30]
    rng = random.Random(1)
    sets = [rng.sample(pool, 10) for _ in range(6)]
    moved = 0
    for i, (w, p) in enumerate(zip(pool, shared_prefix_prompts(pool, pool, random.Random(1),
                                                                10, 6))):
        j = next(j for j in range(6) if w not in sets[(i + j) % 6])
        assert p == build_prompt(w, sets[(i + j) % 6])
        moved += j > 0
    assert moved > 0
    with pytest.raises(ValueError, match="every example set contains"):
        shared_prefix_prompts(pool[:1], pool[:10], random.Random(0), 10, 2)


def test_shared_prefixes_change_the_prompts_and_the_prep_key():
    words = [f" w{chr(97 + i % 26)}{i}" for i in range(300)]
    per_word = probe_splits(words, AbsorptionConfig(seed=7))
    shared = probe_splits(words, AbsorptionConfig(seed=7, prompt_prefixes=8))
    assert shared[:2] == per_word[:2]  # the same split
    assert len({p[: p.rindex("\n")] for p in shared[2]}) == 8
    assert len({p[: p.rindex("\n")] for p in per_word[2]}) == 240
    from atm_repro.evals.absorption import prep_fingerprint
    assert prep_fingerprint(AbsorptionConfig()) != prep_fingerprint(
        AbsorptionConfig(prompt_prefixes=8))
    with pytest.raises(ConfigError, match="prompt_prefixes"):
        AbsorptionConfig(prompt_prefixes=1)


def test_example_seed_redraws_examples_only():
    words = [f" w{chr(97 + i % 26)}{i}" for i in range(300)]
    base = probe_splits(words, AbsorptionConfig(seed=7))
    redrawn = probe_splits(words, AbsorptionConfig(seed=7, example_seed=99))
    assert redrawn[:2] == base[:2]  # the same words in the same split
    for old, new in zip(base[2] + base[3], redrawn[2] + redrawn[3]):
        assert old.rsplit("\n", 1)[1] == new.rsplit("\n", 1)[1]  # the same word line
    assert sum(o != n for o, n in zip(base[2], redrawn[2])) == len(base[2])
    by_letter = [[w for w in base[1] if w[2] == c] for c in LETTERS]
    assert (scoring_prompts(by_letter, words, AbsorptionConfig(seed=7))
            != scoring_prompts(by_letter, words, AbsorptionConfig(seed=7, example_seed=99)))
    assert (probe_splits(words, AbsorptionConfig(seed=7, example_seed=99))
            == redrawn)  # seeded


# ---------------------------------------------------------------- tiny-gemma3 e2e


@pytest.fixture(scope="module")
def tiny():
    from atm_repro.corpus import load_articles
    from atm_repro.models import load_model

    texts = load_articles(CorpusConfig(max_articles=200))
    return load_model(ModelConfig(name="tiny-gemma3"), corpus_texts=texts)


TINY_CFG = AbsorptionConfig(n_words=300, min_letters=1,
                            probe_f1_threshold=0.0, probe_epochs=5, sparse_probe_epochs=5)


def test_word_sample_is_single_token_and_seeded(tiny):
    tok = tiny.tokenizer
    words, meta = sample_words(tok, TINY_CFG)
    assert len(words) == 300 == meta["n_words"] and len(set(words)) == 300
    assert sample_words(tok, TINY_CFG)[0] == words
    assert sample_words(tok, AbsorptionConfig(**{**TINY_CFG.__dict__, "seed": 1}))[0] != words
    kept, dropped = single_token_words(tok, words + meta["not_single_token_examples"])
    assert kept == words and dropped == meta["not_single_token_examples"]
    assert meta["n_not_single_token"] > 0  # this tokenizer has no " Z": Z-words drop
    for w in words[:50]:
        assert len(tok(w, add_special_tokens=False)["input_ids"]) == 1
    assert word_token_pos(tok, TINY_CFG) == -8  # " has the first letter:" is 7 tokens here
    with pytest.raises(ValueError, match="sits at token -8, not prompt_token_pos=-6"):
        word_token_pos(tok, dataclasses.replace(TINY_CFG, prompt_token_pos=-6))


def test_prefix_cache_gives_the_full_forward_activations(tiny):
    """The word's residual read on its prefix's key/value cache equals a forward of
    the whole prompt: right positions, right prefix, the word's own token."""
    import random

    words, _ = sample_words(tiny.tokenizer, TINY_CFG)
    pos = word_token_pos(tiny.tokenizer, TINY_CFG)
    prompts = shared_prefix_prompts(words[:80], words, random.Random(0), 10, 3)
    ids = tokenize_prompts(tiny.tokenizer, prompts, words[:80], pos)
    full = word_activations(tiny, [0, 1], ids, pos, 16)
    cached = word_activations(tiny, [0, 1], ids, pos, 16, shared_prefixes=True)
    for layer in (0, 1):
        np.testing.assert_allclose(cached[layer], full[layer], rtol=1e-4, atol=1e-4)
    # the reading is the word's token of the whole prompt
    from atm_repro.cache import capture_residuals
    direct = capture_residuals(tiny, ids, [1])[1][:, pos].numpy()
    np.testing.assert_allclose(full[1], direct, rtol=1e-5, atol=1e-5)
    # prompts cut after the word read the same as whole prompts
    whole = torch.cat([ids, ids[:, -1:]], dim=1)  # one token more after the word
    np.testing.assert_array_equal(word_activations(tiny, [1], whole, pos - 1, 16)[1], full[1])


def test_cached_preparation_is_per_model_dtype(tiny, tmp_path):
    """A bfloat16 forward gives other residuals: it must not read the float32 cache."""
    import copy
    f32 = prepare_absorption(tiny, [1], TINY_CFG, tmp_path)[1]
    bf16_model = dataclasses.replace(tiny, model=copy.deepcopy(tiny.model).to(torch.bfloat16))
    bf16 = prepare_absorption(bf16_model, [1], TINY_CFG, tmp_path)[1]
    assert len(list((tmp_path / "absorption").glob("*.npz"))) == 2
    assert not np.array_equal(bf16.acts_train_ND, f32.acts_train_ND)
    np.testing.assert_allclose(bf16.acts_train_ND, f32.acts_train_ND, rtol=0.1, atol=0.1)


def test_end_to_end_tiny_is_deterministic(tiny, tmp_path):
    cfg = TINY_CFG
    data = prepare_absorption(tiny, [1], cfg, tmp_path)[1]
    cached = list((tmp_path / "absorption").glob("tiny-gemma3-L1-*.npz"))
    assert len(cached) == 1
    again = prepare_absorption(tiny, [1], cfg, tmp_path)[1]  # from the cache
    both = prepare_absorption(tiny, [0, 1], cfg, tmp_path)  # L0 computed, L1 read back
    fresh = prepare_absorption(tiny, [0, 1], cfg, None)  # both in one pass
    np.testing.assert_array_equal(both[0].acts_train_ND, fresh[0].acts_train_ND)
    fresh = fresh[1]
    assert data.acts_train_ND.shape == (240, tiny.d_model)
    assert data.acts_test_ND.shape == (60, tiny.d_model)
    tp = np.concatenate([data.true_positives(c) for c in range(26)])
    np.testing.assert_array_equal(data.score_test_idx, tp)
    assert data.score_acts_ND.shape == (len(tp), tiny.d_model)
    # fresh prompts: the same words, other examples, so other activations
    assert not np.allclose(data.score_acts_ND, data.acts_test_ND[tp])
    for other in (again, fresh):
        assert other.words_test == data.words_test
        np.testing.assert_array_equal(other.acts_test_ND, data.acts_test_ND)
        np.testing.assert_array_equal(other.score_acts_ND, data.score_acts_ND)
        np.testing.assert_array_equal(other.probe_W_LD, data.probe_W_LD)

    sae = SAE(SAEConfig(d_in=tiny.d_model, d_sae=128))
    sae.init_weights(torch.Generator().manual_seed(0))
    r1 = run_absorption(sae, data, cfg, "rand")
    r2 = run_absorption(sae, fresh, cfg, "rand")
    j1, j2 = r1.to_json(), r2.to_json()  # NaN -> None, so equal runs compare equal
    assert j1["metrics"] == j2["metrics"]
    assert j1["details"]["per_letter"] == j2["details"]["per_letter"]
    assert r1.eval_name == "absorption"
    assert r1.metrics["n_letters_kept"] + len(r1.details["excluded_letters"]) == 26
    saved = read_result(write_result(tmp_path / "results", r1))
    assert saved["metrics"]["n_letters_kept"] == r1.metrics["n_letters_kept"]
    assert set(saved["details"]["per_letter"]) == set(r1.details["per_letter"])
