"""``atm-repro crosscheck``: the comparison with SAEBench's output, SAE selection,
and the errors raised before any environment is built or model loaded.
(SAEBench itself runs only in the committed canonical crosscheck: CI has no
room for its environment.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atm_repro.config import ConfigError
from atm_repro.crosscheck import (
    TOLERANCE,
    compare,
    crosscheck_tex,
    publish,
    residuals_for_saebench,
    run_crosscheck,
    span,
)
from atm_repro.crosscheck.residual_lookup import ResidualLookup, load_residuals, save_residuals
from atm_repro.evals.absorption import (
    LETTERS,
    AbsorptionConfig,
    AbsorptionData,
    letter_index,
    probe_splits,
)
from atm_repro.evals.results import EvalResult
from atm_repro.profiles import load_profile
from atm_repro.report.provenance import Stamp


def ours(letters: str, full: float, frac: float) -> EvalResult:
    per_letter = {c: {} for c in letters}
    return EvalResult("absorption", "L8-atm-s0", {}, {"meaningful": 0.0, "max_k1_f1": 0.3},
                      {"per_letter": per_letter,
                       "measures": {"mean_full_absorption": full,
                                    "mean_absorption_fraction": frac}})


def ref(letters: str | None, full: float = 0.0, frac: float = 0.0, f1: dict | None = None):
    if letters is None:  # SAEBench stopped: too few letters
        return {"saes": {"L8-atm-s0": {"metrics": None, "probe_f1": f1 or {}}}}
    return {"saes": {"L8-atm-s0": {
        "metrics": {"mean_full_absorption_score": full, "mean_absorption_fraction_score": frac},
        "per_letter": {c: {} for c in letters}}}}


def test_compare_agrees_within_tolerance_on_the_same_letters():
    row = compare({"L8-atm-s0": ours("abc", 0.50, 0.30)}, ref("bca", 0.52, 0.33), 8).iloc[0]
    assert row["sae"] == "atm-s0" and row["letters_ours"] == row["letters_saebench"] == "abc"
    assert row["full_gap"] == pytest.approx(0.02) and row["fraction_gap"] == pytest.approx(0.03)
    assert bool(row["agrees"]) and not bool(row["meaningful_ours"])


@pytest.mark.parametrize("theirs", [ref("abc", 0.50 + TOLERANCE + 0.01, 0.30),
                                    ref("abc", 0.50, 0.30 - TOLERANCE - 0.01),
                                    ref("abd", 0.50, 0.30)])
def test_compare_flags_a_gap_or_other_letters(theirs):
    row = compare({"L8-atm-s0": ours("abc", 0.50, 0.30)}, theirs, 8).iloc[0]
    assert not bool(row["agrees"])


def test_compare_when_saebench_reports_nothing():
    theirs = ref(None, f1={"a": 0.9, "b": 0.5, "c": 0.7})
    row = compare({"L8-atm-s0": ours("ac", 0.5, 0.3)}, theirs, 8).iloc[0]
    assert row["letters_saebench"] == "ac" and math.isnan(row["full_saebench"])
    assert not bool(row["agrees"])


def test_crosscheck_tex_is_labelled():
    table = compare({"L8-atm-s0": ours("abc", 0.5, 0.3)}, ref("abc", 0.5, 0.3), 8)
    tex = crosscheck_tex(table, Stamp("cpu", False, "abc1234"))
    assert r"\label{tab:crosscheck}" in tex and "atm s0" in tex and "0.500" in tex


def test_span_names_one_value_once():
    assert span([1177, 1177]) == "1177" and span([1170, 1177, 1174]) == "1170-1177"


def summary_of(served: dict) -> dict:
    per_sae = {"L8-atm-s0": 2.0, "L8-topk-s0": 3.0}
    return {"profile": "cpu", "activations": "ours", "layer": 8, "machine": "x86_64, 2 cores",
            "served_from_ours": served,
            "words": {"n_words": 8000, "n_not_single_token": 3, "n_alphabetic_words": 139533},
            "prompts": {"probe_train_same": 6400, "probe_test_same": 1600, "probe_train_n": 6400,
                        "probe_test_n": 1600, "scoring_same_L8-atm-s0": 1177,
                        "scoring_n_L8-atm-s0": 1177},
            "timing": {"ours_prepare_s": 290.0, "ours_per_sae_s": per_sae,
                       "saebench_probe_s": 6.0, "saebench_total_s": 60.0,
                       "saebench_per_sae_s": {k: 26.0 for k in per_sae}}}


def test_publish_stamps_the_table_with_the_stamp_taken_before_the_docs(tmp_path, monkeypatch):
    import atm_repro.crosscheck as crosscheck
    import atm_repro.report.provenance as provenance
    monkeypatch.setattr(crosscheck, "DOC_PATH", tmp_path / "benchmarks.md")
    for module in (crosscheck, provenance):
        monkeypatch.setattr(module, "TABLES_DIR", tmp_path / "tables")
    table = compare({"L8-atm-s0": ours("abc", 0.5, 0.3)}, ref("abc", 0.5, 0.3), 8)
    publish(load_profile("cpu"), summary_of({"probe": 8000, "L8-atm-s0": 1177,
                                             "L8-topk-s0": 1177}), table,
            Stamp("cpu", False, "abc1234"))
    tex = (tmp_path / "tables" / "crosscheck.tex").read_text()
    assert tex.splitlines()[0].endswith("commit abc1234); do not edit")
    doc = (tmp_path / "benchmarks.md").read_text()
    assert "8000 probe prompts and 1177 scoring prompts per SAE" in doc
    assert "<!-- bench:crosscheck-cpu:start -->" in doc


def test_bad_requests_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("ATM_REPRO_RUNS", str(tmp_path))
    with pytest.raises(ConfigError, match="TransformerLens"):
        run_crosscheck(load_profile("smoke"))  # tiny-gemma3: no TransformerLens config
    with pytest.raises(ConfigError, match="no trained SAE"):
        run_crosscheck(load_profile("cpu"), ["atm-s7"])
    with pytest.raises(ConfigError, match="activations must be one of"):
        run_crosscheck(load_profile("cpu"), activations="tl")


def fake_to_tokens(prompts):  # SAEBench's prompts are all one length
    return torch.zeros(len(prompts), 7, dtype=torch.long)


def test_lookup_serves_each_prompts_residual_at_the_word_and_nan_elsewhere():
    acts = np.arange(6, dtype=np.float32).reshape(3, 2)
    lookup = ResidualLookup(["p0", "p1", "p2"], acts, "blocks.8.hook_resid_post", -3,
                            fake_to_tokens)
    logits, cache = lookup(["p2", "p0"], names_filter=["blocks.8.hook_resid_post"])
    out = cache["blocks.8.hook_resid_post"]
    assert logits is None and out.shape == (2, 7, 2)
    assert torch.equal(out[:, -3], torch.tensor([[4.0, 5.0], [0.0, 1.0]]))
    others = torch.cat([out[:, :-3], out[:, -2:]], dim=1)
    assert torch.isnan(others).all()  # a read of another position cannot look plausible
    assert lookup.served == 2


def test_lookup_refuses_what_it_does_not_hold():
    acts = np.ones((2, 2), np.float32)
    lookup = ResidualLookup(["p0", "p1"], acts, "h", -1, fake_to_tokens)
    with pytest.raises(KeyError, match="1 of 2 prompts were not built by our eval"):
        lookup(["p0", "other"], names_filter=["h"])
    with pytest.raises(ValueError, match="only 'h' is stored"):
        lookup(["p0"], names_filter=["blocks.4.hook_resid_post"])
    ResidualLookup(["p0", "p0"], acts, "h", -1, fake_to_tokens)  # a repeat, same residual
    with pytest.raises(ValueError, match="appears twice"):
        ResidualLookup(["p0", "p0"], np.array([[1, 2], [1, 3]], np.float32), "h", -1,
                       fake_to_tokens)


def test_residuals_file_round_trips(tmp_path):
    acts = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    save_residuals(tmp_path / "r.npz", ["a", "b\nc", "d"], acts)
    prompts, back = load_residuals(tmp_path / "r.npz")
    assert prompts == ["a", "b\nc", "d"] and np.array_equal(back, acts)
    with pytest.raises(ValueError, match="2 prompts but 3 rows"):
        save_residuals(tmp_path / "s.npz", ["a", "b"], acts)


def toy_absorption_data(cfg: AbsorptionConfig) -> tuple[AbsorptionData, list[str]]:
    """Rows marked by their index (train 1000+i, test 2000+i, scoring 3000+j); a
    probe that calls every test word its own letter (letter c's direction is e_c)."""
    words = [c + tail for c in LETTERS for tail in ("ab", "cd", "ef")]
    train, test, _, _ = probe_splits(words, cfg)
    y_train = np.array([letter_index(w) for w in train])
    y_test = np.array([letter_index(w) for w in test])
    acts_train = np.zeros((len(train), 27), np.float32)
    acts_train[:, 26] = 1000 + np.arange(len(train))
    acts_test = np.zeros((len(test), 27), np.float32)
    acts_test[np.arange(len(test)), y_test] = 1.0
    acts_test[:, 26] = 2000 + np.arange(len(test))
    W = np.eye(26, 27, dtype=np.float32)
    data = AbsorptionData(words, train, test, y_train, y_test, acts_train, acts_test, W,
                          np.full(26, -0.5, np.float32), np.ones(26), np.zeros(0, np.int64),
                          np.zeros((0, 27), np.float32), "fp")
    data.score_test_idx = np.concatenate([data.true_positives(c) for c in range(26)])
    data.score_acts_ND = np.zeros((len(data.score_test_idx), 27), np.float32)
    data.score_acts_ND[:, 26] = 3000 + np.arange(len(data.score_test_idx))
    return data, words


def test_residuals_for_saebench_pairs_every_prompt_with_its_own_row():
    cfg = AbsorptionConfig(n_icl_examples=3)
    data, words = toy_absorption_data(cfg)
    prompts, acts = residuals_for_saebench(data, words, cfg)
    n_tr, n_te, n_sc = len(data.words_train), len(data.words_test), len(data.score_test_idx)
    assert len(prompts) == len(acts) == n_tr + n_te + n_sc and n_sc == n_te
    rows = [*data.words_train, *data.words_test,
            *[data.words_test[i] for i in data.score_test_idx]]
    marks = [*(1000 + np.arange(n_tr)), *(2000 + np.arange(n_te)), *(3000 + np.arange(n_sc))]
    for prompt, word, row, mark in zip(prompts, rows, acts, marks):
        assert prompt.endswith(f"\n{word} has the first letter:") and row[26] == mark
    # the scoring prompts are in letter order, as SAEBench scores them
    scored = [data.words_test[i] for i in data.score_test_idx]
    assert scored == sorted(scored, key=letter_index)


def test_residuals_for_saebench_refuses_another_split():
    cfg = AbsorptionConfig(n_icl_examples=3)
    data, words = toy_absorption_data(cfg)
    with pytest.raises(ValueError, match="not this config's split"):
        residuals_for_saebench(data, words, AbsorptionConfig(n_icl_examples=3, seed=1))
