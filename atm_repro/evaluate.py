"""Run every evaluation over every trained SAE of a profile (notebook 05).

SAEs are found on disk (``runs/<profile>/saes/L<layer>/<name>-s<seed>``, each
complete when its ``metrics.json`` exists) and grouped:

* ``main``: ``train.saes`` at ``train.layer`` (every seed);
* ``ablation``: the notebook-03 runs (``config.derived_specs``) at ``train.layer``;
* ``cross_layer``: ``cross_layer.saes`` at the other ``cross_layer.layers``.

What each group gets (cost decides; the downstream splice runs the 262k-vocab
head and is the dearest eval): core activation metrics and absorption for
every SAE; the CE/KL splice and sparse probing for the main group and the
cross-layer group; stability for every main name with two or more seeds.
Model-side work (absorption prompts and probe, probing activations, the clean
and zero-ablated splice passes) is done once per layer and shared by all SAEs;
the absorption prompts and probing texts run once for all layers together.
A result whose key (SAE run key, eval config, code version) is unchanged is
not recomputed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from atm_repro.cache import ActivationCache, build_cache
from atm_repro.config import Profile, derived_runs, derived_specs, fingerprint, from_dict
from atm_repro.corpus import load_articles
from atm_repro.evals import EVAL_CONFIGS
from atm_repro.evals.absorption import prepare_absorption, run_absorption
from atm_repro.evals.core import run_core, splice_baseline, splice_sequences
from atm_repro.evals.probing import prepare_probing, run_baseline, run_probing
from atm_repro.evals.results import (
    EvalResult,
    is_fresh,
    load_results,
    read_result,
    result_key,
    result_path,
    write_result,
)
from atm_repro.evals.stability import pair_id, run_stability
from atm_repro.models import load_model
from atm_repro.saes.io import load_sae
from atm_repro.train import read_metrics


@dataclass(frozen=True)
class SAERecord:
    sae_id: str  # "L8-atm-s0"
    group: str  # main | ablation | cross_layer
    name: str  # the spec name ("atm", "atm-beta0.9")
    seed: int
    layer: int
    path: Path

    @property
    def run_key(self) -> str:
        """Fingerprint of the training run (spec, data, seed, code) from metrics.json."""
        return fingerprint(read_metrics(self.path)["key"])


def results_dir(profile: Profile) -> Path:
    return profile.run_dir / "evals"


def eval_configs(profile: Profile) -> dict:
    """Each eval's config: the profile's ``evals.<name>`` over the config's defaults."""
    return {name: from_dict(cls, profile.evals.get(name, {}), f"evals.{name}")
            for name, cls in EVAL_CONFIGS.items()}


def discover(profile: Profile) -> list[SAERecord]:
    """The complete SAE runs of ``profile`` on disk, grouped (see module docstring)."""
    main_layer = profile.train.layer
    ablation_names = set(derived_specs(profile))
    cross = profile.cross_layer
    records = []
    for layer_dir in sorted((profile.run_dir / "saes").glob("L*")):
        layer = int(layer_dir.name[1:])
        for path in sorted(layer_dir.iterdir()):
            if not (path / "metrics.json").exists():
                continue
            name, _, seed = path.name.rpartition("-s")
            if layer == main_layer and name in profile.train.saes:
                group = "main"
            elif layer == main_layer and name in ablation_names:
                group = "ablation"
            elif layer != main_layer and name in cross.saes and layer in cross.layers:
                group = "cross_layer"
            else:
                continue  # left over from another configuration of this profile
            records.append(SAERecord(f"L{layer}-{path.name}", group, name, int(seed), layer,
                                     path))
    return records


# Which SAE groups each per-SAE eval covers (cost decides: module docstring).
EVAL_GROUPS = {
    "core": {"main", "ablation", "cross_layer"},
    "absorption": {"main", "ablation", "cross_layer"},
    "probing": {"main", "cross_layer"},
}
SPLICE_GROUPS = {"main", "cross_layer"}


def _pending(root: Path, records: list[SAERecord], eval_name: str, cfg):
    """(record, result key) of the SAEs whose ``eval_name`` result is missing or stale."""
    out = []
    for r in records:
        if r.group in EVAL_GROUPS[eval_name]:
            key = result_key(r.run_key, cfg)
            if not is_fresh(root, r.sae_id, eval_name, key):
                out.append((r, key))
    return out


def _write(root: Path, result: EvalResult, key: str) -> None:
    write_result(root, dataclasses.replace(result, key=key))


def evaluate_profile(profile: Profile, progress: bool = True) -> None:
    """Run every pending eval of every discovered SAE, then stability; results go
    to ``results_dir(profile)`` (see ``results_table``). The toy benchmark needs no
    trained SAE: ``evals.toy.run_toy_benchmark``."""
    cfgs = eval_configs(profile)
    root = results_dir(profile)
    records = discover(profile)
    if not records:
        raise RuntimeError(f"no trained SAEs under {profile.run_dir / 'saes'}: run notebook 02")
    cache = ActivationCache.open(build_cache(profile), verify=False)
    model_dir = profile.run_dir / "eval_cache"
    todo = {}  # layer -> eval -> pending (record, key)
    for layer in sorted({r.layer for r in records}):
        at_layer = [r for r in records if r.layer == layer]
        pending = {name: _pending(root, at_layer, name, cfgs[name]) for name in EVAL_GROUPS}
        if any(pending.values()):
            todo[layer] = pending
    if todo:
        loaded = load_model(profile.model, corpus_texts=load_articles(profile.corpus))
        # Model-side prep of every layer that needs it, in one forward pass per input set.
        need = {name: [lay for lay in todo if todo[lay][name]]
                for name in ("absorption", "probing")}
        absorption = prepare_absorption(loaded, need["absorption"], cfgs["absorption"], model_dir,
                                        progress) if need["absorption"] else {}
        probing = prepare_probing(loaded, need["probing"], cfgs["probing"], model_dir,
                                  progress) if need["probing"] else {}
    for layer, pending in todo.items():
        bar = tqdm(total=sum(map(len, pending.values())), desc=f"evals L{layer}",
                   disable=not progress)
        core_cfg, baseline = cfgs["core"], None
        for r, key in pending["core"]:
            cfg = core_cfg if r.group in SPLICE_GROUPS else \
                dataclasses.replace(core_cfg, n_splice_sequences=0)
            if cfg.n_splice_sequences and baseline is None:
                baseline = splice_baseline(loaded, splice_sequences(cache, cfg), layer,
                                           cfg.splice_batch_size)
            _write(root, run_core(load_sae(r.path), loaded, cache, layer, cfg, r.sae_id,
                                  baseline), key)
            bar.update()
        for r, key in pending["absorption"]:
            _write(root, run_absorption(load_sae(r.path), absorption[layer], cfgs["absorption"],
                                        r.sae_id), key)
            bar.update()
        if pending["probing"]:
            base = run_baseline(probing[layer], cfgs["probing"])
            _write(root, dataclasses.replace(base, sae_id=f"L{layer}-model"),
                   result_key(cfgs["probing"]))
            for r, key in pending["probing"]:
                _write(root, run_probing(load_sae(r.path), probing[layer], cfgs["probing"],
                                         r.sae_id), key)
                bar.update()
        bar.close()
    _stability(records, cfgs["stability"], root)


def _stability(records: list[SAERecord], cfg, root: Path) -> None:
    """Seed pairs (first two seeds) of every main SAE name."""
    by_name: dict[str, list[SAERecord]] = {}
    for r in records:
        if r.group == "main":
            by_name.setdefault(r.name, []).append(r)
    for runs in by_name.values():
        if len(runs) < 2:
            continue
        a, b = sorted(runs, key=lambda r: r.seed)[:2]
        key = result_key(a.run_key, b.run_key, cfg)
        if is_fresh(root, pair_id(a.sae_id, b.sae_id), "stability", key):
            continue
        _write(root, run_stability(load_sae(a.path), load_sae(b.path), cfg, a.sae_id, b.sae_id),
               key)


def results_table(profile: Profile):
    """One row per discovered SAE: its group, variant, layer, seed, the ablated
    parameter and value (notebook-03 runs), and every scalar metric as
    ``<eval>/<metric>`` (e.g. ``core/l0``, ``absorption/mean_full_absorption``)."""
    import pandas as pd

    derived = {run.name: run for run in derived_runs(profile)}
    long = load_results(results_dir(profile))
    rows = []
    for r in discover(profile):
        spec = profile.train.saes.get(r.name) or derived[r.name].spec
        row = {"sae_id": r.sae_id, "group": r.group, "name": r.name, "variant": spec.variant,
               "layer": r.layer, "seed": r.seed,
               "base": derived[r.name].base if r.name in derived else r.name,
               "param": derived[r.name].param if r.name in derived else None,
               "value": derived[r.name].value if r.name in derived else None}
        for _, res in long[long["sae_id"] == r.sae_id].iterrows() if len(long) else []:
            row.update({f"{res['eval_name']}/{k}": v for k, v in res.items()
                        if k not in ("sae_id", "eval_name") and pd.notna(v)})
        rows.append(row)
    frame = pd.DataFrame(rows)
    stab = long[long["eval_name"] == "stability"] if len(long) else long
    for _, res in stab.iterrows():  # a seed pair's numbers go on both of its rows
        pair = frame["sae_id"].isin(res["sae_id"].split("__vs__"))
        for k, v in res.items():
            if k not in ("sae_id", "eval_name") and pd.notna(v):
                frame.loc[pair, f"stability/{k}"] = v
    return frame


def _first_seed_main(profile: Profile) -> list[SAERecord]:
    runs = [r for r in discover(profile) if r.group == "main"]
    first = min((r.seed for r in runs), default=0)
    return [r for r in runs if r.seed == first]


def absorption_by_letter(profile: Profile):
    """Per-letter absorption of each main SAE (first seed): name, letter, rates."""
    import pandas as pd

    rows = []
    for r in _first_seed_main(profile):
        path = result_path(results_dir(profile), r.sae_id, "absorption")
        for letter, d in read_result(path)["details"]["per_letter"].items():
            if d["n_true_positives"]:
                rows.append({"name": r.name, "letter": letter,
                             "full_absorption_rate": d["full_absorption_rate"],
                             "mean_absorption_fraction": d["mean_absorption_fraction"]})
    return pd.DataFrame(rows)


def density_histograms(profile: Profile) -> dict[str, dict]:
    """The core eval's latent-density histogram of each main SAE (first seed)."""
    return {r.name: read_result(result_path(results_dir(profile), r.sae_id, "core"))
            ["details"]["density_histogram"] for r in _first_seed_main(profile)}


def factor_defaults(profile: Profile) -> dict[str, float]:
    """The profile's own value of each ablated factor of ``ablations.sae``."""
    from atm_repro.saes import build_config

    spec = profile.train.saes[profile.ablations.sae]
    resolved = build_config(spec.variant, spec.params, 1, profile.train.width)
    return {f: getattr(resolved, f) for f in profile.ablations.factors}
