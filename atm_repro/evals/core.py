"""Core SAE metrics: sparsity, reconstruction, latent density, and the downstream splice.

Activation metrics are computed on the cache's held-out ``eval`` split and
accumulated batch by batch (float64 sums, never concatenated). The splice
runs the full model (with logits) on held-out token sequences three times:
clean, with the residual stream after block ``layer`` replaced by the SAE's
reconstruction, and with it zero-ablated; the replacement touches only
non-special positions (BOS/EOS/PAD keep their clean residual). The clean
and zero passes do not depend on the SAE: ``splice_baseline`` computes them
once (keeping the clean next-token log-probabilities for the KL) and
``splice_metrics`` then costs one forward pass and one LM head per SAE.

Definitions (docs/metrics.md, "Core"; the activation metrics are
``atm_repro.sae_metrics``, shared with the trainer's summary):
  * L0 / L1: mean count / sum of latents per token (a latent fires if > fire_eps).
  * MSE: mean over tokens of ||x - x_hat||^2; per element: that / D.
  * FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (mean over eval tokens);
    explained variance = 1 - FVU.
  * cosine similarity: mean over tokens of cos(x, x_hat).
  * density: firing frequency per latent; dead = 0, dense = > dense_threshold.
  * ce_loss_score = (CE_zero - CE_sae) / (CE_zero - CE_clean); delta CE and
    KL(P_clean || P_sae) over the same predicted positions.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from atm_repro import metrics
from atm_repro.cache import ActivationCache
from atm_repro.config import ConfigError, to_dict
from atm_repro.evals.registry import EVERY_GROUP, Eval, EvalContext, register
from atm_repro.evals.results import EvalResult
from atm_repro.models import LoadedModel
from atm_repro.sae_metrics import activation_stats


@dataclass(frozen=True)
class CoreConfig:
    """Sizes and thresholds of the core eval (``None`` = every available item)."""

    n_tokens: int | None = None  # eval-split tokens for the activation metrics
    batch_size: int = 2048  # tokens per SAE batch
    n_splice_sequences: int = 32  # eval sequences for the CE / KL splice
    splice_batch_size: int = 2  # sequences per forward (the vocab head is large)
    fire_eps: float = 0.0  # a latent fires when its activation is > fire_eps
    dense_threshold: float = 0.1  # dense = fires on more than this fraction of tokens
    hist_bins: int = 35  # log10-density histogram bins over [hist_log10_min, 0]
    hist_log10_min: float = -7.0
    seed: int = 0  # picks the token / sequence subsets when fewer than all are used

    def __post_init__(self) -> None:
        if self.n_tokens is not None and self.n_tokens <= 0:
            raise ConfigError("CoreConfig.n_tokens must be > 0 or None")
        if self.n_splice_sequences < 0:
            raise ConfigError("CoreConfig.n_splice_sequences must be >= 0 (0 skips the splice)")
        if self.batch_size <= 0 or self.splice_batch_size <= 0:
            raise ConfigError("CoreConfig batch sizes must be > 0")
        if not 0.0 < self.dense_threshold < 1.0:
            raise ConfigError("CoreConfig.dense_threshold must be in (0, 1)")
        if self.fire_eps < 0:
            raise ConfigError("CoreConfig.fire_eps must be >= 0")
        if self.hist_bins <= 0 or self.hist_log10_min >= 0:
            raise ConfigError("CoreConfig needs hist_bins > 0 and hist_log10_min < 0")


# --------------------------------------------------------------- activation metrics


def density_histogram(density_F: np.ndarray, n_bins: int = 35,
                      log10_min: float = -7.0) -> dict:
    """Histogram of log10(density) of the live latents on fixed edges
    [log10_min, 0] (smaller densities fall in the first bin); dead latents
    are counted separately as ``n_dead``."""
    density_F = np.asarray(density_F, dtype=np.float64)
    alive = density_F[density_F > 0]
    edges = np.linspace(log10_min, 0.0, n_bins + 1)
    counts, _ = np.histogram(np.clip(np.log10(alive), log10_min, 0.0), bins=edges)
    return {"log10_edges": edges.tolist(), "counts": counts.tolist(),
            "n_dead": int((density_F == 0).sum()), "n_latents": int(density_F.size)}


def density_summary(density_F: np.ndarray) -> dict[str, float]:
    """Quantiles of the per-latent firing frequency (all latents, dead included)."""
    density_F = np.asarray(density_F, dtype=np.float64)
    qs = {"min": 0.0, "p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9,
          "p99": 0.99, "max": 1.0}
    out = {name: float(np.quantile(density_F, q)) for name, q in qs.items()}
    out["mean"] = float(density_F.mean())
    return out


# --------------------------------------------------------------- special tokens


def special_token_ids(tokenizer) -> list[int]:
    """BOS, EOS and PAD ids of ``tokenizer`` (those it has)."""
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    return sorted(i for i in ids if i is not None)


def _non_special(tokens: np.ndarray | torch.Tensor, special: list[int]):
    if isinstance(tokens, torch.Tensor):
        return ~torch.isin(tokens, torch.tensor(special, dtype=tokens.dtype,
                                                device=tokens.device))
    return ~np.isin(tokens, special)


def eval_token_rows(cache: ActivationCache, layer: int, special: list[int],
                    n_tokens: int | None, seed: int) -> np.ndarray:
    """Rows of ``cache.source(layer, "eval")`` whose token is not special; a seeded,
    sorted subset of ``n_tokens`` of them when fewer than all are asked for."""
    body_NS = cache.tokens("eval")[:, 1:]  # cached rows are the non-BOS positions
    n_rows = len(cache.source(layer, "eval"))
    if body_NS.size != n_rows:
        raise ValueError(f"the eval tokens give {body_NS.size} positions but layer {layer} "
                         f"has {n_rows} cached rows")
    rows = np.flatnonzero(_non_special(body_NS.reshape(-1), special))
    if n_tokens is not None and n_tokens < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, n_tokens, replace=False))
    return rows


# --------------------------------------------------------------- downstream splice


def _splice_hook(sae, keep_BS: torch.Tensor, mode: str):
    """Forward hook on a decoder block: replace its output residual at ``keep``
    positions by the SAE reconstruction (``mode="sae"``) or by zeros (``"zero"``)."""

    def fn(_module, _args, output):
        resid = output[0] if isinstance(output, tuple) else output
        keep = keep_BS.to(resid.device).unsqueeze(-1)
        if mode == "zero":
            new = torch.zeros_like(resid)
        else:
            W_dec = sae.W_dec
            x_hat = sae(resid.to(device=W_dec.device, dtype=W_dec.dtype))
            new = x_hat.to(device=resid.device, dtype=resid.dtype)
        resid = torch.where(keep, new, resid)
        return (resid, *output[1:]) if isinstance(output, tuple) else resid

    return fn


def _final_hidden(loaded: LoadedModel, ids_BS, mask_BS, hook=None, layer: int = 0):
    """Final (normed) hidden states of the decoder stack, with ``hook`` on block ``layer``."""
    handle = loaded.layers[layer].register_forward_hook(hook) if hook is not None else None
    try:
        out = loaded.base(input_ids=ids_BS, attention_mask=mask_BS, use_cache=False)
    finally:
        if handle is not None:
            handle.remove()
    return out.last_hidden_state


_FLOAT32_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _float32_head(loaded: LoadedModel) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head's (weight, bias) in float32, cast once per head module and kept
    while the model lives (the splice calls the head twice per batch; a fresh cast of
    Gemma's head is 671 MB each time). A float32 model's own tensors, no copy."""
    head = loaded.model.get_output_embeddings()
    source = (head.weight.data_ptr(), head.weight.dtype)  # a cast or reload renews it
    cached = _FLOAT32_HEADS.get(head)
    if cached is None or cached[0] != source:
        cached = (source, head.weight.float(), None if head.bias is None else head.bias.float())
        _FLOAT32_HEADS[head] = cached
    return cached[1], cached[2]


def next_token_log_probs(loaded: LoadedModel, hidden_BSD: torch.Tensor) -> torch.Tensor:
    """float32 log-probabilities [B, S-1, V] from final hidden states: the LM head
    plus Gemma's final-logit soft-capping when the config sets it (as the HF
    causal-LM forward does; tests check the two agree).

    The head runs in float32 whatever the model's dtype: on CPU a bfloat16 matmul
    against Gemma's 262k-row head took 3.6 s per two sequences against 0.6 s in
    float32 (docs/benchmarks.md), and float32 logits are the more exact. For a
    float32 model nothing changes (``.float()`` returns the tensor itself)."""
    logits = F.linear(hidden_BSD[:, :-1].float(), *_float32_head(loaded))
    cap = getattr(loaded.model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return F.log_softmax(logits, dim=-1)


def _splice_batches(loaded: LoadedModel, tokens_NS: np.ndarray, batch_size: int):
    """(ids, attention mask, keep, scored, target) per batch of sequences."""
    special = special_token_ids(loaded.tokenizer)
    pad = loaded.tokenizer.pad_token_id
    device = next(loaded.model.parameters()).device
    for start in range(0, len(tokens_NS), batch_size):
        ids_BS = torch.from_numpy(np.asarray(tokens_NS[start : start + batch_size],
                                             dtype=np.int64)).to(device)
        keep_BS = _non_special(ids_BS, special)
        mask_BS = (ids_BS != pad).long() if pad is not None else torch.ones_like(ids_BS)
        scored_BT = keep_BS[:, :-1] & keep_BS[:, 1:]
        yield ids_BS, mask_BS, keep_BS, scored_BT, ids_BS[:, 1:].unsqueeze(-1)


def _nll_sum(lp_BTV: torch.Tensor, target_BT1: torch.Tensor, scored_BT: torch.Tensor) -> float:
    return float(-lp_BTV.gather(-1, target_BT1).squeeze(-1)[scored_BT].double().sum())


@dataclass
class SpliceBaseline:
    """The SAE-independent part of the splice for one (model, layer, sequences):
    clean and zero-ablated CE, and the clean next-token log-probabilities (for
    the KL; float32, B x (S-1) x V per batch: 1.1 GB for Gemma-3's 262k vocabulary
    over 8 sequences of 128, kept rather than recomputed, which would double the
    head's work per SAE). Compute it once with ``splice_baseline`` and reuse it
    for every SAE."""

    layer: int
    tokens_NS: np.ndarray
    batch_size: int
    lp_clean: list[torch.Tensor]  # per batch, [B, S-1, V]
    ce_clean: float
    ce_zero: float
    count: int  # scored (predicted) positions


def _check_layer(loaded: LoadedModel, layer: int) -> None:
    if not 0 <= layer < loaded.n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {loaded.n_layers} layers")


@torch.no_grad()
def splice_baseline(loaded: LoadedModel, tokens_NS: np.ndarray, layer: int,
                    batch_size: int = 2) -> SpliceBaseline:
    """Clean and zero-ablated passes over ``tokens_NS`` (int [n_seq, context]).

    Predicted positions: position t (predicting token t + 1) counts when both
    token t and token t + 1 are non-special. Position 0 (BOS input) is thus
    excluded: the splice cannot change its prediction. The zero pass's logits
    are reduced batch by batch in float32 and not kept; the clean pass keeps its
    log-probabilities for every SAE's KL.
    """
    _check_layer(loaded, layer)
    lp_clean, clean, zero, count = [], 0.0, 0.0, 0
    for ids_BS, mask_BS, keep_BS, scored_BT, target_BT1 in _splice_batches(
            loaded, tokens_NS, batch_size):
        lp_clean.append(next_token_log_probs(loaded, _final_hidden(loaded, ids_BS, mask_BS)))
        clean += _nll_sum(lp_clean[-1], target_BT1, scored_BT)
        h_zero = _final_hidden(loaded, ids_BS, mask_BS, _splice_hook(None, keep_BS, "zero"),
                               layer)
        zero += _nll_sum(next_token_log_probs(loaded, h_zero), target_BT1, scored_BT)
        count += int(scored_BT.sum())
    if count == 0:
        raise ValueError("no non-special predicted positions in the splice sequences")
    return SpliceBaseline(layer, np.asarray(tokens_NS), batch_size, lp_clean, clean / count,
                          zero / count, count)


@torch.no_grad()
def splice_metrics(sae, loaded: LoadedModel, baseline: SpliceBaseline) -> dict[str, float]:
    """CE with the SAE spliced in at ``baseline.layer``, ce_loss_score, delta CE and
    KL(P_clean || P_sae), over the baseline's predicted positions."""
    if sae.W_dec.shape[1] != loaded.d_model:
        raise ValueError(f"the SAE takes d_in={sae.W_dec.shape[1]} but the model has "
                         f"d_model={loaded.d_model}")
    ce_sum, kl_sum = 0.0, 0.0
    batches = _splice_batches(loaded, baseline.tokens_NS, baseline.batch_size)
    for (ids_BS, mask_BS, keep_BS, scored_BT, target_BT1), lp_clean_BTV in zip(
            batches, baseline.lp_clean, strict=True):
        h_sae = _final_hidden(loaded, ids_BS, mask_BS, _splice_hook(sae, keep_BS, "sae"),
                              baseline.layer)
        lp_sae_BTV = next_token_log_probs(loaded, h_sae)
        ce_sum += _nll_sum(lp_sae_BTV, target_BT1, scored_BT)
        kl_BT = F.kl_div(lp_sae_BTV, lp_clean_BTV, reduction="none", log_target=True).sum(-1)
        kl_sum += float(kl_BT[scored_BT].double().sum())
        del lp_sae_BTV
    ce_sae = ce_sum / baseline.count
    gap = baseline.ce_zero - baseline.ce_clean
    return {
        "ce_clean": baseline.ce_clean,
        "ce_sae": ce_sae,
        "ce_zero": baseline.ce_zero,
        metrics.DELTA_CE.name: ce_sae - baseline.ce_clean,
        metrics.CE_LOSS_SCORE.name: (baseline.ce_zero - ce_sae) / gap if gap != 0
        else float("nan"),
        metrics.KL_DIV.name: kl_sum / baseline.count,
        "n_splice_tokens": baseline.count,
    }


# --------------------------------------------------------------- runner


def splice_sequences(cache: ActivationCache, cfg: CoreConfig) -> np.ndarray:
    """The eval sequences the splice runs on: a seeded, sorted subset of
    ``cfg.n_splice_sequences`` (all when fewer exist)."""
    seqs = cache.tokens("eval")
    if cfg.n_splice_sequences < len(seqs):
        pick = np.random.default_rng(cfg.seed + 1).choice(len(seqs), cfg.n_splice_sequences,
                                                          replace=False)
        seqs = seqs[np.sort(pick)]
    return seqs


def run_core(sae, loaded: LoadedModel, cache: ActivationCache, layer: int, cfg: CoreConfig,
             sae_id: str, baseline: SpliceBaseline | None = None) -> EvalResult:
    """All core metrics of ``sae`` at ``layer``: activation metrics on the cache's
    eval split, splice on ``splice_sequences(cache, cfg)``. Pass ``baseline``
    (``splice_baseline`` of those sequences) to share the clean and zero passes
    across SAEs; without it they are computed here."""
    if cache.d_model != sae.W_dec.shape[1]:
        raise ValueError(f"the SAE takes d_in={sae.W_dec.shape[1]} but the cache has "
                         f"d_model={cache.d_model}")
    if cache.manifest.model_fingerprint != loaded.fingerprint:
        raise ValueError(f"the cache at {cache.path} was built with another model "
                         f"({cache.manifest.model}) than {loaded.name}")
    special = special_token_ids(loaded.tokenizer)
    rows = eval_token_rows(cache, layer, special, cfg.n_tokens, cfg.seed)
    if cfg.n_splice_sequences and baseline is not None:
        if baseline.layer != layer or not np.array_equal(baseline.tokens_NS,
                                                         splice_sequences(cache, cfg)):
            raise ValueError("the splice baseline was computed for another layer or other "
                             "sequences than this cache and CoreConfig select")
    was_training = sae.training
    sae.eval()
    try:
        stats = activation_stats(sae, cache.source(layer, "eval"), rows, cfg.batch_size,
                                 cfg.fire_eps)
        values = stats.compute(cfg.dense_threshold)
        if cfg.n_splice_sequences:
            if baseline is None:
                baseline = splice_baseline(loaded, splice_sequences(cache, cfg), layer,
                                           cfg.splice_batch_size)
            values.update(splice_metrics(sae, loaded, baseline))
    finally:
        sae.train(was_training)
    density = stats.density_F
    details = {
        "density_histogram": density_histogram(density, cfg.hist_bins, cfg.hist_log10_min),
        "density_summary": density_summary(density),
    }
    config = {**to_dict(cfg), "layer": layer, "model": loaded.name, "cache": str(cache.path)}
    return EvalResult(metrics.CORE, sae_id, config, values, details)


# The groups whose SAEs get the CE / KL splice (``evaluate``'s docstring: cost decides).
SPLICE_GROUPS = frozenset({"main", "ablation", "cross_layer", "snapshot"})


@dataclass
class CoreLayer:
    """Core's state per layer: the splice baseline, computed for the first SAE
    that needs it and shared by the rest."""

    loaded: LoadedModel
    cache: ActivationCache
    layer: int
    baseline: SpliceBaseline | None = None


def _prepare(ctx: EvalContext, layers: list[int], cfg: CoreConfig) -> dict[int, CoreLayer]:
    return {layer: CoreLayer(ctx.loaded, ctx.cache, layer) for layer in layers}


def _run(sae, record, state: CoreLayer, cfg: CoreConfig) -> EvalResult:
    if record.group not in SPLICE_GROUPS:
        cfg = dataclasses.replace(cfg, n_splice_sequences=0)
    if cfg.n_splice_sequences and state.baseline is None:
        state.baseline = splice_baseline(state.loaded, splice_sequences(state.cache, cfg),
                                         state.layer, cfg.splice_batch_size)
    return run_core(sae, state.loaded, state.cache, state.layer, cfg, record.sae_id,
                    state.baseline)


register(Eval(metrics.CORE, CoreConfig, EVERY_GROUP, _run, _prepare))
