"""First-letter absorption: per-word scoring branches, known answers with
hand-built SAEs on synthetic letter activations, vocabulary filter, prompt
word location, and an end-to-end deterministic run on tiny-gemma3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atm_repro.config import ConfigError, CorpusConfig, ModelConfig
from atm_repro.evals.absorption import (
    LETTERS,
    AbsorptionConfig,
    AbsorptionData,
    alpha_word,
    build_absorption_data,
    build_prompt,
    build_vocabulary,
    locate_word_token,
    prepare_absorption,
    run_absorption,
    score_words,
    split_vocabulary,
    tokenize_prompts,
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


def synthetic_data(cfg: AbsorptionConfig) -> AbsorptionData:
    """a = 3 e_letter + noise; the first N_ABSORBED test words of 'a' also carry
    their own token direction 3 e_{26+j} (never seen in train)."""
    rng = np.random.default_rng(0)

    def split(n, prefix):
        words = [f"{letter}{prefix}{i}" for letter in LETTERS for i in range(n)]
        acts = 0.02 * rng.standard_normal((len(words), D))
        for r, w in enumerate(words):
            acts[r, LETTERS.index(w[0])] += 3.0
        return words, acts

    words_train, acts_train = split(N_TRAIN, "tr")
    words_test, acts_test = split(N_TEST, "te")
    for j in range(N_ABSORBED):  # test rows 0..N_TEST-1 are letter 'a'
        acts_test[j, 26 + j] += 3.0
    return build_absorption_data(words_train, acts_train, words_test, acts_test, cfg)


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
    (z = 2) with a decoder carrying the 'a' direction."""
    eye = np.eye(D)
    W_enc = np.hstack([eye, -eye, np.zeros((D, N_ABSORBED))])
    b_enc = np.zeros(2 * D + N_ABSORBED)
    W_dec = np.vstack([eye, -eye, np.zeros((N_ABSORBED, D))])
    for j in range(N_ABSORBED):
        t = 26 + j
        W_enc[t, 0] = -2.0  # z_0 = relu(3 - 2 * 3) = 0 on absorbed words
        W_enc[t, 2 * D + j] = 1.0
        b_enc[2 * D + j] = -1.0
        W_dec[2 * D + j] = 1.5 * (eye[0] + eye[t])
    return hand_sae(W_enc, b_enc, W_dec)


@pytest.fixture(scope="module")
def synth():
    cfg = AbsorptionConfig()
    return cfg, synthetic_data(cfg)


def test_ground_truth_probe_separates_synthetic_letters(synth):
    _, data = synth
    assert np.all(data.probe_f1_L > 0.99)


def test_identity_sae_has_no_absorption(synth):
    cfg, data = synth
    res = run_absorption(identity_sae(), data, cfg, "identity")
    assert res.metrics["n_letters_kept"] == 26
    assert res.metrics["mean_full_absorption"] == 0.0
    assert res.metrics["mean_absorption_fraction"] == 0.0
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
    assert res.metrics["std_full_absorption"] == pytest.approx(rates.std())


def test_low_f1_and_rare_letters_are_excluded(synth):
    cfg, data = synth
    strict = AbsorptionConfig(min_test_words=N_TEST + 1)
    res = run_absorption(identity_sae(), data, strict, "x")
    assert res.metrics["n_letters_kept"] == 0 and res.metrics["n_letters_scored"] == 0
    assert math.isnan(res.metrics["mean_full_absorption"])
    assert "too few words" in res.details["excluded_letters"]["a"]
    data.probe_f1_L[1] = 0.5  # pretend the 'b' probe is weak
    try:
        res = run_absorption(identity_sae(), data, cfg, "x")
    finally:
        data.probe_f1_L[1] = 1.0
    assert res.metrics["n_letters_kept"] == 25
    assert res.details["excluded_letters"] == {"b": "probe F1 0.500 <= 0.6"}


def test_run_rejects_mismatched_config(synth):
    _, data = synth
    with pytest.raises(ValueError, match="different config"):
        run_absorption(identity_sae(), data, AbsorptionConfig(seed=1), "x")


def test_bad_config_is_rejected():
    with pytest.raises(ConfigError, match="train_fraction"):
        AbsorptionConfig(train_fraction=1.5)
    with pytest.raises(ConfigError, match="n_icl_examples"):
        AbsorptionConfig(max_test_words=5)


# --------------------------------------------------------------- vocabulary, prompts


def test_alpha_word_filter():
    assert alpha_word("\u2581cat") == ("cat", True)
    assert alpha_word("\u0120dog") == ("dog", True)
    assert alpha_word("Cat") == ("Cat", False)
    for bad in ("cat1", "\u2581", "\u00dc", "\u2581\u2581cat", "", "caf\u00e9"):
        assert alpha_word(bad) is None


class _FakeTokenizer:
    all_special_tokens = ["<bos>"]

    def get_vocab(self):
        return {t: i for i, t in enumerate(
            ["<bos>", "\u2581cat", "cat", "dog", "\u0120Dog", "x1", "\u2581", "\u00dc", "emu"])}


def test_build_vocabulary_dedupes_and_prefers_spaced_form():
    assert build_vocabulary(_FakeTokenizer()) == [" Dog", " cat", "dog", "emu"]


def test_prompt_format():
    prompt, end = build_prompt(" cat", [" dog", "emu"])
    assert prompt == ("\n dog has the first letter: D\nemu has the first letter: E\n"
                      " cat has the first letter:")
    assert prompt[:end].endswith(" cat") and prompt[end:].startswith(" has")


def test_locate_word_token_on_offsets():
    offsets = [(0, 1), (1, 3), (3, 5), (5, 9)]
    assert locate_word_token(offsets, 5) == 2
    assert locate_word_token(offsets, 4) is None  # the word ends inside a token


def test_split_is_seeded_and_disjoint():
    words = [f" w{chr(97 + i % 26)}{i}" for i in range(100)]
    cfg = AbsorptionConfig(max_train_words=50, max_test_words=15)
    train, test = split_vocabulary(words, cfg)
    assert (len(train), len(test)) == (50, 15) and not set(train) & set(test)
    assert split_vocabulary(words, cfg) == (train, test)
    assert split_vocabulary(words, AbsorptionConfig(seed=1, max_train_words=50,
                                                    max_test_words=15)) != (train, test)


# ---------------------------------------------------------------- tiny-gemma3 e2e


@pytest.fixture(scope="module")
def tiny():
    from atm_repro.corpus import load_articles
    from atm_repro.models import load_model

    texts = load_articles(CorpusConfig(max_articles=200))
    return load_model(ModelConfig(name="tiny-gemma3"), corpus_texts=texts)


def test_located_token_is_last_piece_of_word(tiny):
    tok = tiny.tokenizer
    vocab = build_vocabulary(tok)
    surfaces = vocab[::200] + [" zqxvjkw", "Xylophonequark"]  # last two: several pieces
    prompts = [build_prompt(s, [" dog", " cat"]) for s in surfaces]
    encoded = tokenize_prompts(tok, prompts)
    n_pieces = []
    for surface, (ids, pos) in zip(surfaces, encoded):
        word = surface.strip()
        assert ids[0] == tok.bos_token_id
        piece = tok.decode([ids[pos]]).strip()
        assert piece and word.endswith(piece)
        assert tok.decode(ids[1 : pos + 1]).endswith(surface)
        assert tok.decode([ids[pos + 1]]) == " has"
        n_pieces.append(len(tok(surface, add_special_tokens=False)["input_ids"]))
    assert max(n_pieces) > 1  # multi-token words were located too


def test_end_to_end_tiny_is_deterministic(tiny, tmp_path):
    cfg = AbsorptionConfig(max_train_words=80, max_test_words=30, min_train_words=2,
                           min_test_words=1, probe_f1_threshold=0.0, probe_max_iter=200)
    data = prepare_absorption(tiny, [1], cfg, tmp_path)[1]
    cached = list((tmp_path / "absorption").glob("tiny-gemma3-L1-*.npz"))
    assert len(cached) == 1
    again = prepare_absorption(tiny, [1], cfg, tmp_path)[1]  # from the cache
    both = prepare_absorption(tiny, [0, 1], cfg, tmp_path)  # L0 computed, L1 read back
    fresh = prepare_absorption(tiny, [0, 1], cfg, None)  # both in one pass
    np.testing.assert_array_equal(both[0].acts_train_ND, fresh[0].acts_train_ND)
    fresh = fresh[1]
    assert data.acts_train_ND.shape == (80, tiny.d_model)
    assert data.acts_test_ND.shape == (30, tiny.d_model)
    for other in (again, fresh):
        assert other.words_test == data.words_test
        np.testing.assert_array_equal(other.acts_test_ND, data.acts_test_ND)
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
