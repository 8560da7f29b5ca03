"""Sparse probing (docs/metrics.md "Sparse probing"; higher is better).

Tasks: for each dataset of ``atm_repro.probing_data`` and each class, a binary
task: positives = that class, negatives drawn evenly from the other classes,
50/50, fixed train/test sizes, seeded (a 2-class dataset gives one task).
Each class contributes a fixed, seeded pool of ``n_train / 2`` train and
``n_test / 2`` test texts; every task draws from these pools, so train and
test never share a text and the model runs on few texts.

Features of a text: the mean over its non-special tokens of the residual
stream after block ``layer`` (model baseline) or of the SAE latents of each
token. Top-k: the k dimensions with the largest |mean_pos - mean_neg| on train
(raw values) feed a logistic regression (L2, C = 1, at most 1000 solver
iterations) on the raw values, as SAEBench's ``train_sklearn_probe`` fits them;
test accuracy for each k and for all dimensions, each with its binomial
standard error sqrt(acc (1 - acc) / n_test); a dataset's and the overall mean
carry the standard error of a mean of independent tasks (``*_se`` keys).

Which tasks count (``task_counts``): a task enters the means only when the
residual-stream probe on all dimensions is clearly above chance, the lower end
of its 95% interval (normal, binomial s.e.) above the majority rate of its
test texts plus ``CHANCE_MARGIN``. A task the model's own residual cannot solve
says nothing about an SAE; such tasks are listed per dataset in the details
(``counted``), and a dataset with none has no keys (n/a downstream).

Cost: ``prepare_probing`` runs the model (truncated forward) once per (model,
dataset) over the selected texts only, for all requested layers at once, and
caches their per-token activations per layer on disk (float16 unless a value
overflows it, plus per-text row offsets); every SAE then only encodes those
rows (``run_probing``). The cache key covers the model, its weights'
fingerprint and dtype, the layer and the exact token ids, so any change to
texts, tokenizer or truncation recomputes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from atm_repro import metrics
from atm_repro.cache import capture_residuals
from atm_repro.config import fingerprint, require
from atm_repro.evals.registry import Eval, EvalContext, register
from atm_repro.evals.results import EvalResult
from atm_repro.files import atomic_save_npy, atomic_write_json, keyed_json, sha256_file
from atm_repro.models import LoadedModel
from atm_repro.probing_data import DATASET_NAMES, load_dataset

EVAL_NAME = metrics.PROBING
PROBE_C = 1.0  # inverse L2 strength of every probe (docs/metrics.md)
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class ProbingConfig:
    datasets: list[str] = field(default_factory=lambda: list(DATASET_NAMES))
    n_train: int = 4000  # texts per task, half positive (SAEBench's sizes; fewer where a
    n_test: int = 1000   # class cannot supply its share, ``class_quotas``)
    max_tokens: int = 64  # per text, BOS included
    max_chars: int = 2000  # texts are cut to this before tokenising (cheap pre-truncation)
    k_values: list[int] = field(default_factory=lambda: [1, 2, 5])
    batch_size: int = 16  # texts per forward pass
    encode_batch_tokens: int = 8192  # tokens per SAE encode call
    max_iter: int = 1000  # logistic-regression solver iterations (SAEBench's)
    seed: int = 0

    def __post_init__(self) -> None:
        require(len(self.datasets) > 0, "probing.datasets must not be empty")
        require(len(set(self.datasets)) == len(self.datasets), "probing.datasets has duplicates")
        for name in self.datasets:
            require(name in DATASET_NAMES,
                     f"unknown probing dataset {name!r}; known: {list(DATASET_NAMES)}")
        require(self.n_train >= 2 and self.n_train % 2 == 0,
                 f"probing.n_train must be even and >= 2, got {self.n_train}")
        require(self.n_test >= 2 and self.n_test % 2 == 0,
                 f"probing.n_test must be even and >= 2, got {self.n_test}")
        require(self.max_tokens >= 2, "probing.max_tokens must be >= 2 (BOS + one token)")
        require(self.max_chars >= 1, "probing.max_chars must be >= 1")
        require(len(self.k_values) > 0 and all(k >= 1 for k in self.k_values)
                 and len(set(self.k_values)) == len(self.k_values),
                 f"probing.k_values must be distinct integers >= 1, got {self.k_values}")
        require(self.batch_size >= 1 and self.encode_batch_tokens >= 1,
                 "probing batch sizes must be >= 1")
        require(self.max_iter >= 1, "probing.max_iter must be >= 1")

    def selection(self) -> dict:
        """The fields that decide which texts and tokens a ``ProbingData`` holds."""
        return {k: getattr(self, k) for k in
                ("datasets", "n_train", "n_test", "max_tokens", "max_chars", "seed")}


# --------------------------------------------------------------------------- tasks


@dataclass
class ProbingTask:
    """One balanced binary task; indices point into a dataset's selected texts."""

    name: str
    train_idx: np.ndarray
    train_y: np.ndarray  # 1 = the positive class
    test_idx: np.ndarray
    test_y: np.ndarray


def class_quotas(counts: list[int], n_train: int, n_test: int) -> tuple[int, int]:
    """Train and test texts per class: ``n / 2`` each, scaled down together (same
    train:test ratio) when the smallest class is too small to supply them."""
    q_train, q_test = n_train // 2, n_test // 2
    smallest = min(counts)
    if smallest >= q_train + q_test:
        return q_train, q_test
    q_train = smallest * q_train // (q_train + q_test)
    q_test = smallest - q_train
    if q_train < 1 or q_test < 1:
        raise ValueError(f"the smallest class has only {smallest} texts: too few for a task")
    return q_train, q_test


def _even_counts(total: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` split over ``n_groups`` as evenly as possible; seeded groups take the remainder."""
    counts = np.full(n_groups, total // n_groups)
    counts[rng.choice(n_groups, size=total % n_groups, replace=False)] += 1
    return counts


def make_tasks(
    labels_N: np.ndarray, classes: list[str], n_train: int, n_test: int, seed: int | list[int]
) -> tuple[np.ndarray, list[ProbingTask]]:
    """Select texts and build the one-vs-rest tasks.

    Returns ``rows`` (indices into the dataset of the selected texts, grouped
    by class) and tasks whose indices point into ``rows``.
    """
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"a probing dataset needs >= 2 classes, got {classes}")
    q_train, q_test = class_quotas(np.bincount(labels_N, minlength=n_classes).tolist(),
                                   n_train, n_test)
    rng = np.random.default_rng(seed)
    rows, pools = [], []
    for c in range(n_classes):
        members = rng.permutation(np.flatnonzero(labels_N == c))[: q_train + q_test]
        start = sum(len(r) for r in rows)
        rows.append(members)
        pools.append({"train": np.arange(start, start + q_train),
                      "test": np.arange(start + q_train, start + q_train + q_test)})
    tasks = []
    for c in range(n_classes if n_classes > 2 else 1):
        others = [o for o in range(n_classes) if o != c]
        parts = {}
        for split, quota in (("train", q_train), ("test", q_test)):
            take = _even_counts(quota, len(others), rng)
            neg = np.sort(np.concatenate([rng.choice(pools[o][split], size=n, replace=False)
                                          for o, n in zip(others, take)]))
            parts[split] = (np.concatenate([pools[c][split], neg]),
                            np.concatenate([np.ones(quota, np.int64), np.zeros(quota, np.int64)]))
        name = classes[c] if n_classes > 2 else f"{classes[0]}_vs_{classes[1]}"
        tasks.append(ProbingTask(name, *parts["train"], *parts["test"]))
    return np.concatenate(rows), tasks


def _dataset_seed(seed: int, name: str) -> list[int]:
    """Per-dataset seed, so one dataset's tasks do not depend on which others run."""
    return [seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")]


# --------------------------------------------------------------------------- activations


def tokenize_texts(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """BOS + the first ``max_tokens - 1`` tokens of each text."""
    if tokenizer.bos_token_id is None:
        raise ValueError("the tokenizer has no BOS token")
    ids = tokenizer(texts, add_special_tokens=False, truncation=True,
                    max_length=max_tokens - 1)["input_ids"]
    return [[tokenizer.bos_token_id, *seq] for seq in ids]


@torch.no_grad()
def token_activations(
    loaded: LoadedModel, ids: list[list[int]], layers: list[int], batch_size: int,
    progress: bool = False,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Residual stream after each block of ``layers`` at the non-special tokens of
    each sequence, from one forward pass per batch.

    Returns, per layer, ``acts_TD`` float32 (the kept tokens of all texts, in
    order) and ``offsets_N1`` int64 (text i owns rows ``offsets[i]:offsets[i + 1]``).
    Texts are batched longest first, right-padded, with an attention mask.
    """
    tok = loaded.tokenizer
    special = np.array(sorted(set(tok.all_special_ids)))
    keep = [~np.isin(np.asarray(seq), special) for seq in ids]
    empty = [i for i, k in enumerate(keep) if not k.any()]
    if empty:
        raise ValueError(f"text(s) {empty[:5]} have no non-special token")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.bos_token_id
    device = next(loaded.model.parameters()).device
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    per_text = {layer: [np.empty(0)] * len(ids) for layer in layers}
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="probing acts"):
        batch = order[start : start + batch_size]
        width = len(ids[batch[0]])
        input_ids_BS = torch.full((len(batch), width), pad, dtype=torch.long)
        mask_BS = torch.zeros((len(batch), width), dtype=torch.long)
        for j, i in enumerate(batch):
            input_ids_BS[j, : len(ids[i])] = torch.tensor(ids[i])
            mask_BS[j, : len(ids[i])] = 1
        resid = capture_residuals(loaded, input_ids_BS.to(device), layers, mask_BS.to(device))
        for layer, acts_BSD in resid.items():
            acts_BSD = acts_BSD.float().cpu().numpy()
            for j, i in enumerate(batch):
                per_text[layer][i] = acts_BSD[j, : len(ids[i])][keep[i]]
    offsets_N1 = np.concatenate([[0], np.cumsum([int(k.sum()) for k in keep])]).astype(np.int64)
    return {layer: (np.concatenate(texts), offsets_N1) for layer, texts in per_text.items()}


@dataclass
class DatasetActs:
    """One dataset's selected texts: labels, tasks and cached per-token activations."""

    name: str
    classes: list[str]
    source: str
    rows: np.ndarray  # indices of the selected texts in ``load_dataset(name)``
    labels_N: np.ndarray
    tasks: list[ProbingTask]
    acts_TD: np.ndarray  # memory-mapped, float16 or float32
    offsets_N1: np.ndarray
    cache_path: Path

    def sizes(self) -> dict:
        task = self.tasks[0]
        return {"n_texts": int(len(self.rows)), "n_tokens": int(self.offsets_N1[-1]),
                "n_tasks": len(self.tasks), "n_train": int(len(task.train_idx)),
                "n_test": int(len(task.test_idx)), "classes": self.classes}


@dataclass
class ProbingData:
    """Everything ``run_probing`` needs, shared by every SAE of one (model, layer)."""

    model: str
    model_fingerprint: str
    layer: int
    d_model: int
    cfg: ProbingConfig
    datasets: dict[str, DatasetActs]
    _baselines: dict = field(default_factory=dict, repr=False)  # probe settings -> EvalResult


def _load_cached(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    meta = keyed_json(path / "meta.json", key)
    if meta is None:
        return None
    for name, sha in meta["sha256"].items():
        if not (path / name).is_file() or sha256_file(path / name) != sha:
            return None  # corrupt or partial: recompute
    return (np.load(path / "acts.npy", mmap_mode="r"), np.load(path / "offsets.npy"))


def _write_cache(path: Path, key: str, acts_TD: np.ndarray, offsets_N1: np.ndarray) -> None:
    path.mkdir(parents=True, exist_ok=True)
    fits16 = bool(np.isfinite(acts_TD).all() and np.abs(acts_TD).max() <= FLOAT16_MAX)
    acts_TD = acts_TD.astype(np.float16 if fits16 else np.float32)
    shas = {"acts.npy": atomic_save_npy(path / "acts.npy", acts_TD),
            "offsets.npy": atomic_save_npy(path / "offsets.npy", offsets_N1)}
    atomic_write_json(path / "meta.json", {"key": key, "dtype": str(acts_TD.dtype),
                                      "n_tokens": int(len(acts_TD)), "sha256": shas})


def prepare_probing(
    loaded: LoadedModel, layers: list[int], cfg: ProbingConfig, cache_dir: str | Path,
    progress: bool = False,
) -> dict[int, ProbingData]:
    """Select the texts and tasks of every dataset and get their per-token
    activations at each of ``layers`` (computed once, the missing layers in one
    forward pass per dataset, then read from ``cache_dir``)."""
    for layer in layers:
        if not 0 <= layer < loaded.n_layers:
            raise ValueError(f"layer {layer} out of range: {loaded.name} has "
                             f"{loaded.n_layers} layers")
    model_dtype = str(next(loaded.model.parameters()).dtype)
    datasets: dict[int, dict[str, DatasetActs]] = {layer: {} for layer in layers}
    for name in cfg.datasets:
        ds = load_dataset(name, max_chars=cfg.max_chars)
        rows, tasks = make_tasks(ds.labels, ds.classes, cfg.n_train, cfg.n_test,
                                 _dataset_seed(cfg.seed, name))
        ids = tokenize_texts(loaded.tokenizer, [ds.texts[i] for i in rows], cfg.max_tokens)
        keys, paths, cached = {}, {}, {}
        for layer in layers:
            keys[layer] = fingerprint({"model": loaded.name,
                                       "model_fingerprint": loaded.fingerprint,
                                       "dtype": model_dtype, "layer": layer, "dataset": name,
                                       "ids": ids})
            paths[layer] = (Path(cache_dir) / f"{loaded.name.replace('/', '--')}-L{layer}-"
                            f"{name}-{keys[layer][:12]}")
            cached[layer] = _load_cached(paths[layer], keys[layer])
        todo = [layer for layer in layers if cached[layer] is None]
        if todo:
            for layer, acts in token_activations(loaded, ids, todo, cfg.batch_size,
                                                 progress).items():
                _write_cache(paths[layer], keys[layer], *acts)
                cached[layer] = _load_cached(paths[layer], keys[layer])
        for layer in layers:
            datasets[layer][name] = DatasetActs(name, ds.classes, ds.source, rows,
                                                ds.labels[rows], tasks, *cached[layer],
                                                paths[layer])
    return {layer: ProbingData(loaded.name, loaded.fingerprint, layer, loaded.d_model, cfg,
                               datasets[layer]) for layer in layers}


# --------------------------------------------------------------------------- features


@torch.no_grad()
def pooled_features(ds: DatasetActs, sae=None, batch_tokens: int = 8192) -> np.ndarray:
    """Mean over each text's tokens of the activations (``sae`` None) or of
    ``sae.encode`` of each token's activation; float32 [N, D or F].

    The per-text sums are one ``index_add_`` per chunk (0.005 s for 8,192 x 4,096
    latents); numpy's ``add.reduceat`` over the same rows took 0.32 s, more than
    the chunk's encode (docs/benchmarks.md, "Sparse probing").
    """
    offsets, n_texts = ds.offsets_N1, len(ds.offsets_N1) - 1
    chunks, start = [], 0
    while start < n_texts:
        # the longest run of whole texts within batch_tokens (at least one text)
        end = max(start + 1, int(np.searchsorted(offsets, offsets[start] + batch_tokens,
                                                 side="right")) - 1)
        end = min(end, n_texts)
        x_TD = torch.from_numpy(np.asarray(ds.acts_TD[offsets[start] : offsets[end]],
                                           dtype=np.float32))
        if sae is not None:
            param = next(sae.parameters())
            x_TD = sae.encode(x_TD.to(param.device, param.dtype)).float().cpu()
        lengths_N = torch.from_numpy(np.diff(offsets[start : end + 1]))
        text_T = torch.repeat_interleave(torch.arange(end - start), lengths_N)
        sums_ND = torch.zeros(end - start, x_TD.shape[1]).index_add_(0, text_T, x_TD)
        chunks.append((sums_ND / lengths_N[:, None].float()).numpy())
        start = end
    return np.concatenate(chunks)


# --------------------------------------------------------------------------- probes


def top_k_dims(x_ND: np.ndarray, y_N: np.ndarray, k: int) -> np.ndarray:
    """The k dimensions with the largest |mean_pos - mean_neg| (ties: lower index first)."""
    diff = np.abs(x_ND[y_N == 1].mean(0) - x_ND[y_N == 0].mean(0))
    return np.argsort(-diff, kind="stable")[:k]


def probe_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    max_iter: int,
) -> tuple[float, bool]:
    """Test accuracy of an L2 logistic regression (C = 1) on the raw features,
    and whether the solver converged (sklearn imported here: loading a profile needs
    none)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe = LogisticRegression(C=PROBE_C, max_iter=max_iter)
        probe.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return float((probe.predict(x_test) == y_test).mean()), converged


def evaluate_task(feats_ND: np.ndarray, task: ProbingTask, k_values: list[int],
                  max_iter: int) -> dict:
    """Accuracies ``top{k}`` and ``all``, the ranked top dimensions, unconverged fits.

    BLAS runs single-threaded here: these fits are small, threads only add
    overhead (8x slower on a shared 2-core machine) and can change the last bits.
    """
    x_train, x_test = feats_ND[task.train_idx], feats_ND[task.test_idx]
    ranked = top_k_dims(x_train, task.train_y, max(k_values))
    out: dict = {"top_dims": ranked.tolist(), "n_not_converged": 0}
    subsets = {f"top{k}": ranked[:k] for k in k_values}
    subsets["all"] = np.arange(feats_ND.shape[1])
    with threadpool_limits(limits=1):
        for key, dims in subsets.items():
            acc, converged = probe_accuracy(x_train[:, dims], task.train_y, x_test[:, dims],
                                            task.test_y, max_iter)
            out[key] = acc
            out[f"{key}_se"] = binomial_se(acc, len(task.test_y))
            out["n_not_converged"] += int(not converged)
    return out


def binomial_se(acc: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent test texts."""
    return math.sqrt(acc * (1.0 - acc) / n)


def se_of_mean(ses: list[float]) -> float:
    """Standard error of the mean of independent estimates with standard errors ``ses``."""
    return math.sqrt(sum(se * se for se in ses)) / len(ses)


CHANCE_MARGIN = 0.05  # how far above the majority rate a task's residual probe must be


def task_counts(residual: dict, task: ProbingTask) -> bool:
    """The probing rule: the residual-stream probe on all dimensions (``residual``,
    an ``evaluate_task`` result) has a 95% interval whose lower end lies above the
    majority rate of the task's test texts by more than ``CHANCE_MARGIN``."""
    majority = max(task.test_y.mean(), 1.0 - task.test_y.mean())
    return bool(residual["all"] - 1.96 * residual["all_se"] > majority + CHANCE_MARGIN)


def _evaluate(data: ProbingData, cfg: ProbingConfig, sae=None,
              counted: dict[str, list[str]] | None = None) -> tuple[dict, dict]:
    """(metrics, details) of the SAE's latents, or of the residual stream if ``sae`` is
    None. Means run over the tasks that count: ``counted`` per dataset (the
    baseline's), or for the baseline itself by ``task_counts``."""
    keys = [f"top{k}" for k in cfg.k_values] + ["all"]
    values, details = {}, {}
    for name, ds in data.datasets.items():
        feats_ND = pooled_features(ds, sae, cfg.encode_batch_tokens)
        tasks = {t.name: evaluate_task(feats_ND, t, cfg.k_values, cfg.max_iter)
                 for t in ds.tasks}
        keep = (counted[name] if counted is not None
                else [t.name for t in ds.tasks if task_counts(tasks[t.name], t)])
        details[name] = {"tasks": tasks, "counted": keep, **ds.sizes()}
        for key in keys if keep else []:
            values[f"{name}/{key}"] = float(np.mean([tasks[t][key] for t in keep]))
            values[f"{name}/{key}_se"] = se_of_mean([tasks[t][f"{key}_se"] for t in keep])
    scored = [n for n in data.datasets if details[n]["counted"]]
    for key in keys if scored else []:
        values[f"mean_{key}"] = float(np.mean([values[f"{n}/{key}"] for n in scored]))
        values[f"mean_{key}_se"] = se_of_mean([values[f"{n}/{key}_se"] for n in scored])
    for size in ("n_train", "n_test") if scored else []:  # fewest texts per counted task
        values[f"{size}_min"] = min(details[n][size] for n in scored)
    values["n_tasks_counted"] = sum(len(details[n]["counted"]) for n in data.datasets)
    values["n_tasks"] = sum(len(ds.tasks) for ds in data.datasets.values())
    return values, details


def _check_cfg(data: ProbingData, cfg: ProbingConfig) -> None:
    if data.cfg.selection() != cfg.selection():
        raise ValueError(f"the probing data was prepared for {data.cfg.selection()}, not for "
                         f"{cfg.selection()}: call prepare_probing with this config")


def _result_config(data: ProbingData, cfg: ProbingConfig, **extra) -> dict:
    return {"probing": cfg, "model": data.model, "model_fingerprint": data.model_fingerprint,
            "layer": data.layer, **extra}


def run_baseline(data: ProbingData, cfg: ProbingConfig) -> EvalResult:
    """Probes on the mean-pooled residual stream (computed once per ``data`` and settings)."""
    _check_cfg(data, cfg)
    key = (tuple(cfg.k_values), cfg.max_iter)
    if key not in data._baselines:
        values, details = _evaluate(data, cfg)
        data._baselines[key] = EvalResult(EVAL_NAME, "baseline", _result_config(data, cfg),
                                          values, {"datasets": details})
    return data._baselines[key]


def run_probing(sae, data: ProbingData, cfg: ProbingConfig, sae_id: str) -> EvalResult:
    """Sparse-probing accuracies of ``sae``'s latents, with the residual-stream
    baseline beside them under ``baseline/...``.

    Keys: ``<dataset>/top<k>`` and ``<dataset>/all`` (mean over the dataset's
    tasks that count, ``task_counts``) and ``mean_top<k>`` / ``mean_all`` over the
    datasets with one; ``n_tasks_counted`` of ``n_tasks``; ``n_train_min`` /
    ``n_test_min``, the sizes of the smallest counted tasks (``class_quotas``). Headline (the
    paper's "sparse probing accuracy"): ``mean_top1``; its "bias detection"
    and "sentiment" stand-ins: ``gender/top1`` and ``sentiment/top1``.
    """
    _check_cfg(data, cfg)
    if sae.cfg.d_in != data.d_model:
        raise ValueError(f"the SAE reads d_in={sae.cfg.d_in} but the probing activations "
                         f"have d_model={data.d_model}")
    baseline = run_baseline(data, cfg)
    counted = {n: d["counted"] for n, d in baseline.details["datasets"].items()}
    values, details = _evaluate(data, cfg, sae, counted)
    values.update({f"{metrics.BASELINE}/{k}": v for k, v in baseline.metrics.items()})
    return EvalResult(EVAL_NAME, sae_id, _result_config(data, cfg, d_sae=sae.cfg.d_sae), values,
                      {"datasets": details, "baseline": baseline.details["datasets"]})


def _prepare(ctx: EvalContext, layers: list[int], cfg: ProbingConfig) -> dict[int, ProbingData]:
    return prepare_probing(ctx.loaded, layers, cfg, ctx.model_dir, ctx.progress)


def _run(sae, record, data: ProbingData, cfg: ProbingConfig) -> EvalResult:
    return run_probing(sae, data, cfg, record.sae_id)


def _model_baseline(data: ProbingData, cfg: ProbingConfig) -> list[EvalResult]:
    """The residual-stream baseline of the layer, as the result of ``L<layer>-model``."""
    return [dataclasses.replace(run_baseline(data, cfg), sae_id=f"L{data.layer}-model")]


register(Eval(EVAL_NAME, ProbingConfig, frozenset({"main", "cross_layer"}), _run, _prepare,
              _model_baseline))
