"""Run every evaluation over every trained SAE of a profile (notebook 05).

SAEs are found on disk (``runs.discover``: each complete when its
``metrics.json`` exists) and grouped:

* ``main``: ``train.saes`` at ``train.layer`` (every seed);
* ``ablation``: the notebook-03 runs (``profiles.derived_specs``) at ``train.layer``;
* ``scale``: the notebook-03 scale study (``profiles.scale_specs``) at ``train.layer``;
* ``cross_layer``: ``cross_layer.saes`` at the other ``cross_layer.layers``;
* ``snapshot``: any of these runs' SAEs saved mid-training (``train.snapshot_tokens``).

What each group gets (cost decides; the downstream splice runs the 262k-vocab
head and is the dearest per-SAE eval): core activation metrics and absorption
for every SAE; the CE/KL splice also for the sweeps and factor ablations (the
matched comparisons read the CE-loss score off the sweeps) and the snapshots
(a convergence curve reads them as it reads finished SAEs), not for the scale
study; sparse probing for the main group and the cross-layer group; stability
for every main name with two or more seeds, and for its snapshots at each
token count.
Model-side work (absorption prompts and probe, probing activations, the clean
and zero-ablated splice passes) is done once per layer and shared by all SAEs;
the absorption prompts and probing texts run once for all layers together.
A result whose key (SAE run key, eval config, code version) is unchanged is
not recomputed. The per-SAE evals, their groups and preparations are those
registered in ``evals.registry`` (each eval module registers itself); stability
runs on seed pairs here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm.auto import tqdm

from atm_repro import metrics
from atm_repro.cache import ActivationCache, build_cache
from atm_repro.config import Profile
from atm_repro.corpus import load_articles
from atm_repro.evals import EVALS
from atm_repro.evals.registry import Eval, EvalContext
from atm_repro.evals.results import EvalResult, is_fresh, result_key, write_result
from atm_repro.evals.stability import pair_id, run_stability
from atm_repro.hardware import flush_subnormals
from atm_repro.models import load_model
from atm_repro.profiles import derived_specs, eval_configs, scale_specs
from atm_repro.runs import SAERecord, discover, eval_cache_dir, read_metrics, results_dir, run_dir
from atm_repro.saes.io import load_sae


def discover_saes(profile: Profile) -> list[SAERecord]:
    """The profile's complete SAE runs on disk, grouped (``runs.discover``)."""
    return discover(profile, derived_specs(profile), scale_specs(profile))


def training_minutes(profile: Profile) -> tuple[int, float]:
    """(SAEs, their summed training time in minutes) over the profile's complete
    runs. Each SAE records its own training wall time (``wall_s``, carried across
    resumes), so the sum is the same for a run made from empty, resumed or partly
    cached, where the stages' wall times are those of the last invocation only.
    Snapshots are excluded: each is a point inside a counted run (its ``wall_s`` is
    the time to that point), not an SAE trained on its own."""
    records = [r for r in discover_saes(profile) if r.tokens is None]
    return len(records), sum(read_metrics(r.path)["wall_s"] for r in records) / 60


def _pending(root: Path, records: list[SAERecord], spec: Eval, cfg):
    """(record, result key) of the SAEs whose ``spec`` result is missing or stale."""
    out = []
    for r in records:
        if r.group in spec.groups:
            key = result_key(r.run_key, cfg, code=_code(spec))
            if not is_fresh(root, r.sae_id, spec.name, key):
                out.append((r, key))
    return out


def _code(spec: Eval) -> tuple:
    """The roots of ``spec``'s code key: its own functions."""
    return tuple(f for f in (spec.prepare, spec.run, spec.layer_results) if f is not None)


def _write(root: Path, result: EvalResult, key: str) -> None:
    write_result(root, dataclasses.replace(result, key=key))


def evaluate_profile(profile: Profile, progress: bool = True) -> None:
    """Run every pending eval of every discovered SAE, then stability; results go
    to ``runs.results_dir(profile)`` (``report.results`` reads them). The toy
    benchmark needs no trained SAE: ``toybench.run_toy_benchmark``."""
    flush_subnormals()
    cfgs = eval_configs(profile)
    root = results_dir(profile)
    records = discover_saes(profile)
    if not records:
        raise RuntimeError(f"no trained SAEs under {run_dir(profile) / 'saes'}: run notebook 02")
    cache = ActivationCache.open(build_cache(profile), verify=False)
    per_sae = [spec for spec in EVALS.values() if spec.groups]
    todo = {}  # layer -> eval name -> pending (record, key)
    for layer in sorted({r.layer for r in records}):
        at_layer = [r for r in records if r.layer == layer]
        pending = {s.name: _pending(root, at_layer, s, cfgs[s.name]) for s in per_sae}
        if any(pending.values()):
            todo[layer] = pending
    states: dict[str, dict] = {}  # eval name -> layer -> its preparation
    if todo:
        loaded = load_model(profile.model, corpus_texts=load_articles(profile.corpus))
        context = EvalContext(loaded, cache, eval_cache_dir(profile), progress)
        # Each eval's preparation of every layer that needs it at once (one forward
        # pass per input set).
        for s in per_sae:
            layers = [lay for lay in todo if todo[lay][s.name]]
            states[s.name] = (s.prepare(context, layers, cfgs[s.name])
                              if s.prepare and layers else {})
    for layer, pending in todo.items():
        bar = tqdm(total=sum(map(len, pending.values())), desc=f"evals L{layer}",
                   disable=not progress)
        for s in per_sae:
            cfg, state = cfgs[s.name], states[s.name].get(layer)
            if pending[s.name] and s.layer_results:
                for result in s.layer_results(state, cfg):
                    _write(root, result, result_key(cfg, code=_code(s)))
            for r, key in pending[s.name]:
                _write(root, s.run(load_sae(r.path), r, state, cfg), key)
                bar.update()
        bar.close()
    _stability(records, cfgs[metrics.STABILITY], root)


STABILITY_GROUPS = ("main", "snapshot")


def _stability(records: list[SAERecord], cfg, root: Path) -> None:
    """Disjoint seed pairs ((s0, s1), (s2, s3), ...) of every main SAE name and of
    its snapshots at each token count (the convergence curve): with five seeds,
    two independent pairs, so stability gets a spread too."""
    by_name: dict[tuple, list[SAERecord]] = {}
    for r in records:
        if r.group in STABILITY_GROUPS:
            by_name.setdefault((r.group, r.name, r.tokens), []).append(r)
    for runs in by_name.values():
        if len(runs) < 2:
            continue
        ordered = sorted(runs, key=lambda r: r.seed)
        for a, b in zip(ordered[0::2], ordered[1::2]):
            key = result_key(a.run_key, b.run_key, cfg, code=(run_stability,))
            if is_fresh(root, pair_id(a.sae_id, b.sae_id), "stability", key):
                continue
            _write(root, run_stability(load_sae(a.path), load_sae(b.path), cfg, a.sae_id,
                                       b.sae_id), key)
