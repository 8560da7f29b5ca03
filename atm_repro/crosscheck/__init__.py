"""``atm-repro crosscheck``: SAEBench's own absorption eval against ours, same SAEs, same words.

SAEBench 0.6.0 is the reference for the absorption metric. This command

1. creates (once) a virtual environment with SAEBench and its pinned
   dependencies (``saebench-requirements.txt``) beside the model cache: SAEBench
   pins numpy < 2 and datasets < 4 and pulls TransformerLens, so it never
   shares the project's environment. torch is the project's own version;
2. draws the eval's word sample (``evals.absorption.sample_words``) and runs
   our absorption eval on the selected SAEs of the profile's main layer;
3. runs ``saebench_driver.py`` in that environment on the same saved SAEs
   (loaded by SAELens as they are on disk), the same words and the same seeds,
   with the model's residuals taken from one of two sources (``activations``):
   ``ours`` (the default) hands SAEBench the residuals our eval read, prompt for
   prompt (``residual_lookup``), so the check is of the metric's code alone;
   ``transformer-lens`` lets SAEBench run the model itself, which adds the two
   implementations' rounding (it moves letters at the probe's F1 cut);
4. writes ``runs/<profile>/crosscheck/<activations>/`` (both sides' raw output)
   and the wall times into docs/benchmarks.md; with ``ours`` on a canonical
   profile also ``paper/tables/crosscheck.csv`` and ``.tex``.

A row agrees when both sides keep the same letters and both measures differ
by at most ``TOLERANCE``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atm_repro.config import ConfigError, Profile, fingerprint
from atm_repro.corpus import load_articles
from atm_repro.crosscheck.residual_lookup import save_residuals
from atm_repro.evals.absorption import (
    LETTERS,
    REFERENCE_TOLERANCE,
    TEMPLATE,
    prepare_absorption,
    probe_splits,
    run_absorption,
    sample_words,
    scoring_prompts,
    word_token_pos,
)
from atm_repro.evaluate import discover_saes
from atm_repro.files import atomic_write_text, update_doc
from atm_repro.hardware import flush_subnormals
from atm_repro.models import cache_root, load_model
from atm_repro.profiles import eval_configs
from atm_repro.report.latex import booktabs_table
from atm_repro.report.provenance import (
    TABLES_DIR,
    Stamp,
    check_output_allowed,
    write_generated,
)
from atm_repro.runs import crosscheck_dir, eval_cache_dir
from atm_repro.saes.io import load_sae

SAEBENCH_VERSION = "0.6.0"
CROSSCHECK_MACRO = "CrosscheckSummary"  # the summary sentence paper/main.tex quotes
HERE = Path(__file__).resolve().parent
DRIVER = HERE / "saebench_driver.py"
REQUIREMENTS = HERE / "saebench-requirements.txt"
DOC_PATH = HERE.parent.parent / "docs" / "benchmarks.md"
TOLERANCE = REFERENCE_TOLERANCE
# Our model names -> TransformerLens's (it builds its config from the name).
TL_NAMES = {"gemma-3-270m": "google/gemma-3-270m", "google/gemma-2-2b": "google/gemma-2-2b"}
ACTIVATIONS = ("ours", "transformer-lens")  # where SAEBench's residuals come from
# two seeds of ATM and TopK (the claim), one of every other family and of ATM's
# controls: on our residuals SAEBench takes ~30 s per SAE on the 2-core machine
# (~2-6 min when it runs the model itself)
DEFAULT_SAES = ("atm-s0", "atm-s1", "topk-s0", "topk-s1", "jumprelu-s0", "batchtopk-s0",
                "matryoshka-s0", "standard-s0", "atm-random-s0", "atm-none-s0",
                "masked-reg-s0")


def saebench_python(progress: bool = True) -> Path:
    """The SAEBench environment's interpreter, creating the environment if needed."""
    env = cache_root() / f"saebench-{SAEBENCH_VERSION}"
    python = env / "bin" / "python"
    if (env / "complete").exists():
        return python
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    steps = [[sys.executable, "-m", "venv", "--clear", str(env)],
             [str(python), "-m", "pip", "install", "-q", torch_pin],
             [str(python), "-m", "pip", "install", "-q", "--no-deps",
              f"sae-bench=={SAEBENCH_VERSION}"],
             [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS), torch_pin]]
    for cmd in steps:
        if progress:
            print("[crosscheck] " + " ".join(cmd[-3:]), flush=True)
        subprocess.run(cmd, check=True)
    (env / "complete").write_text(torch_pin + "\n")
    return python


def select_saes(profile: Profile, wanted: list[str] | None):
    """Records of the requested SAEs of the main layer ("atm-s0" or "L8-atm-s0")."""
    layer = profile.train.layer
    records = {r.sae_id: r for r in discover_saes(profile)
               if r.group == "main" and r.layer == layer}
    names = list(wanted or DEFAULT_SAES)
    ids = [n if n.startswith("L") and "-" in n else f"L{layer}-{n}" for n in names]
    missing = [n for n, i in zip(names, ids) if i not in records]
    if missing:
        raise ConfigError(f"crosscheck: no trained SAE {missing} at layer {layer} of profile "
                          f"{profile.name!r}; available: {sorted(records)}")
    return [records[i] for i in ids]


def run_crosscheck(profile: Profile, wanted: list[str] | None = None,
                   progress: bool = True, activations: str = "ours") -> pd.DataFrame:
    """Both evals on the selected SAEs; returns the comparison table (see module doc)."""
    flush_subnormals()  # as notebook 05 does: the eval cache is shared
    if activations not in ACTIVATIONS:
        raise ConfigError(f"crosscheck: activations must be one of {ACTIVATIONS}, "
                          f"not {activations!r}")
    if profile.model.name not in TL_NAMES:
        raise ConfigError(f"crosscheck: SAEBench runs the model through TransformerLens, which "
                          f"knows {sorted(TL_NAMES)}, not {profile.model.name!r}")
    records = select_saes(profile, wanted)
    stamp = Stamp.for_profile(profile)  # now: the docs block written below would mark it dirty
    cfg = eval_configs(profile)["absorption"]
    layer = profile.train.layer
    out_dir = crosscheck_dir(profile) / activations
    out_dir.mkdir(parents=True, exist_ok=True)
    python = saebench_python(progress)

    loaded = load_model(profile.model, corpus_texts=load_articles(profile.corpus))
    words, word_meta = sample_words(loaded.tokenizer, cfg)
    # the eval cache of notebook 05: the layer's preparation is shared with it
    data = prepare_absorption(loaded, [layer], cfg, eval_cache_dir(profile),
                              progress)[layer]
    ours, ours_s = {}, {}
    for r in records:
        t0 = time.perf_counter()
        ours[r.sae_id] = run_absorption(load_sae(r.path), data, cfg, r.sae_id)
        ours_s[r.sae_id] = time.perf_counter() - t0
    residuals = None
    if activations == "ours":
        residuals = out_dir / "residuals.npz"
        save_residuals(residuals, *residuals_for_saebench(data, words, cfg))
    spec_path = write_spec(loaded, layer, words, cfg, records, out_dir, residuals)
    subprocess.run([str(python), str(DRIVER), str(spec_path)], check=True, cwd=out_dir)
    ref = json.loads((out_dir / "saebench.json").read_text())
    ref_s = ref["load_seconds"] + ref["probe_seconds"] + sum(
        ref["saes"][r.sae_id]["seconds"] for r in records)  # as if in one run (it resumes)

    table = compare(ours, ref, layer)
    prompts = prompt_agreement(data, ref, words, cfg)
    timing = {"ours_prepare_s": data.meta["prepare_seconds"],
              "ours_per_sae_s": {k: round(v, 1) for k, v in ours_s.items()},
              "saebench_total_s": round(ref_s, 1), "saebench_load_s": ref["load_seconds"],
              "saebench_probe_s": ref["probe_seconds"],
              "saebench_per_sae_s": {k: v["seconds"] for k, v in ref["saes"].items()}}
    summary = {"profile": profile.name, "activations": activations,
               "served_from_ours": served_from_ours(ref, records), "layer": layer,
               "config": asdict(cfg),
               "config_fingerprint": fingerprint(cfg), "words": word_meta,
               "prompts": prompts, "timing": timing, "tolerance": TOLERANCE,
               "machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores",
               "ours": {k: v.to_json() for k, v in ours.items()}}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    table.to_csv(out_dir / "crosscheck.csv", index=False)
    if not profile.smoke:
        publish(profile, summary, table, stamp)
    return table


def publish(profile: Profile, summary: dict, table: pd.DataFrame, stamp: Stamp) -> None:
    """The docs/benchmarks.md block and, for ``ours``, the paper's table. ``stamp`` is
    taken before the block is written: the block is tracked, so a stamp taken after
    it would read the checkout as dirty."""
    block = f"crosscheck-{profile.name}"
    if summary["activations"] != "ours":
        block += f"-{summary['activations']}"
    update_doc(DOC_PATH, block, render_markdown(summary, table))
    if summary["activations"] == "ours":  # the paper's inputs: canonical profiles only
        tables = check_output_allowed(profile, TABLES_DIR)
        write_generated(tables / "crosscheck.csv", table.to_csv(index=False, float_format="%.4f"))
        write_generated(tables / "crosscheck.tex", crosscheck_tex(table, stamp))


def served_from_ours(ref: dict, records) -> dict | None:
    """How many prompts SAEBench's code asked for and got from our residuals (the
    probe data, and each SAE's scoring prompts); None: it ran the model itself."""
    if ref.get("probe_served_from_ours") is None:
        return None
    return {"probe": ref["probe_served_from_ours"],
            **{r.sae_id: ref["saes"][r.sae_id]["served_from_ours"] for r in records}}


def residuals_for_saebench(data, words: list[str], cfg) -> tuple[list[str], np.ndarray]:
    """Every prompt our eval ran (probe train and test, scoring) and the residual it
    read at the word, row for row: the prompts are rebuilt with the same draws as
    ``prepare_absorption``, and each must end in its row's word."""
    train, test, p_train, p_test = probe_splits(words, cfg)
    if train != data.words_train or test != data.words_test:
        raise ValueError("crosscheck: the eval cache's words are not this config's split")
    by_letter = [[test[i] for i in data.true_positives(c)] for c in range(len(LETTERS))]
    p_score = [p for ps in scoring_prompts(by_letter, words, cfg) for p in ps]
    scored = [test[i] for i in data.score_test_idx]
    prompts = [*p_train, *p_test, *p_score]
    for prompt, word in zip(prompts, [*train, *test, *scored]):
        if not prompt.endswith("\n" + TEMPLATE.format(word=word)):
            raise ValueError(f"crosscheck: prompt {prompt[-60:]!r} is not {word!r}'s")
    return prompts, np.concatenate([data.acts_train_ND, data.acts_test_ND, data.score_acts_ND])


def crosscheck_tex(table: pd.DataFrame, stamp: Stamp) -> str:
    """The paper's table: both sides' letters kept and measures, per SAE."""
    frame = table.assign(sae=table["sae"].str.replace("-s", " s", regex=False))
    same = int((table["letters_ours"] == table["letters_saebench"]).sum())
    summary = (f"largest gaps {table['full_gap'].max():.3f} in full absorption and "
               f"{table['fraction_gap'].max():.3f} in absorption fraction, tolerance "
               f"{TOLERANCE}; the same letters kept for {same} of {len(table)} SAEs")
    macro = f"\\newcommand{{\\{CROSSCHECK_MACRO}}}{{{summary}}}\n"
    cols = {"sae": "SAE", "n_letters_ours": "ours", "n_letters_saebench": "SAEBench",
            "full_ours": "ours", "full_saebench": "SAEBench",
            "fraction_ours": "ours", "fraction_saebench": "SAEBench"}
    stamp_line, table_tex = booktabs_table(
        frame, cols, stamp=stamp, label="tab:crosscheck",
        groups=[("", 1), ("letters kept", 2), ("full absorption", 2), ("fraction", 2)],
        fmt={c: ".3f" for c in cols if c.startswith(("full", "fraction"))},
        caption=f"Absorption computed by SAEBench {SAEBENCH_VERSION}'s own code and by ours "
                "on the same saved SAEs (main layer), the same word sample and the same "
                "seeds; SAEBench reads the residual stream our eval read, prompt for prompt "
                "(\\code{atm-repro crosscheck}). Values are the computed ones, also "
                "where the metric is not meaningful (Table~\\ref{tab:absorption_health}); "
                f"agreement means the same letters and gaps of at most {TOLERANCE}."
    ).split("\n", 1)
    return f"{stamp_line}\n{macro}{table_tex}"


def write_spec(loaded, layer: int, words: list[str], cfg, records, out_dir: Path,
               residuals: Path | None = None) -> Path:
    """The driver's input: model, layer, words, seeds, SAEs, where to write, and
    the residuals to serve (None: SAEBench runs the model)."""
    spec = {"model_dir": str(loaded.model.name_or_path), "tl_model_name": TL_NAMES[loaded.name],
            "layer": layer, "words": words, "seed": cfg.seed,
            "prompt_token_pos": word_token_pos(loaded.tokenizer, cfg),
            "llm_batch_size": cfg.batch_size,
            "saes": {r.sae_id: str(r.path) for r in records},
            "residuals": str(residuals) if residuals else None,
            "out": str(out_dir / "saebench.json")}
    path = out_dir / "spec.json"
    atomic_write_text(path, json.dumps(spec))
    return path


def _kept(per_letter: dict) -> str:
    return "".join(sorted(per_letter))


def compare(ours: dict, ref: dict, layer: int) -> pd.DataFrame:
    """One row per SAE: letters kept and both measures on each side, and the gaps."""
    rows = []
    for sae_id, result in ours.items():
        entry = ref["saes"][sae_id]
        m, ref_m = result.details["measures"], entry.get("metrics")
        ref_letters = (_kept(entry["per_letter"]) if ref_m else
                       "".join(c for c in LETTERS if entry.get("probe_f1", {}).get(c, 0) > 0.6))
        row = {"sae": sae_id.split("-", 1)[1], "layer": layer,
               "letters_ours": _kept(result.details["per_letter"]), "letters_saebench": ref_letters,
               "full_ours": m["mean_full_absorption"],
               "full_saebench": ref_m["mean_full_absorption_score"] if ref_m else float("nan"),
               "fraction_ours": m["mean_absorption_fraction"],
               "fraction_saebench": (ref_m["mean_absorption_fraction_score"] if ref_m
                                     else float("nan")),
               "meaningful_ours": bool(result.metrics["meaningful"]),
               "max_k1_f1_ours": result.metrics["max_k1_f1"]}
        row["n_letters_ours"], row["n_letters_saebench"] = (len(row["letters_ours"]),
                                                            len(row["letters_saebench"]))
        row["full_gap"] = abs(row["full_ours"] - row["full_saebench"])
        row["fraction_gap"] = abs(row["fraction_ours"] - row["fraction_saebench"])
        row["agrees"] = bool(row["letters_ours"] == row["letters_saebench"]
                             and row["full_gap"] <= TOLERANCE
                             and row["fraction_gap"] <= TOLERANCE)
        rows.append(row)
    return pd.DataFrame(rows)


def prompt_agreement(data, ref: dict, words: list[str], cfg) -> dict:
    """How many of SAEBench's prompts are, string for string, the ones we built."""
    train, test, p_train, p_test = probe_splits(words, cfg)
    out = {}
    for split, ours in (("train", p_train), ("test", p_test)):
        theirs = ref["probe_prompts"][split]["prompts"]
        out[f"probe_{split}_same"] = sum(a == b for a, b in zip(ours, theirs))
        out[f"probe_{split}_n"] = max(len(ours), len(theirs))
    by_letter = [[test[i] for i in data.true_positives(c)] for c in range(len(LETTERS))]
    ours_scoring = [p for ps in scoring_prompts(by_letter, words, cfg) for p in ps]
    for sae_id, entry in ref["saes"].items():
        if "scoring" in entry:
            theirs = entry["scoring"]["prompts"]
            out[f"scoring_same_{sae_id}"] = sum(a == b for a, b in zip(ours_scoring, theirs))
            out[f"scoring_n_{sae_id}"] = max(len(ours_scoring), len(theirs))
    return out


def span(values) -> str:
    """"a-b" for the range of ``values``, or "a" when they are all equal."""
    values = list(values)
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def render_markdown(summary: dict, table: pd.DataFrame) -> str:
    """The crosscheck block of docs/benchmarks.md (one per activation source)."""
    t, p = summary["timing"], summary["prompts"]
    n = len(t["ours_per_sae_s"])
    scoring_same = [v for k, v in p.items() if k.startswith("scoring_same")] or [0]
    scoring_n = [v for k, v in p.items() if k.startswith("scoring_n")] or [0]
    ours_total = t["ours_prepare_s"] + sum(t["ours_per_sae_s"].values())
    served = summary["served_from_ours"]
    if served is None:
        source = ("SAEBench runs the model itself (TransformerLens on our converted "
                  "checkpoint)")
        ref_prep = "probe data and probe; scoring prompts run per SAE"
    else:
        source = (f"SAEBench reads the residuals our eval read, prompt for prompt: "
                  f"{served['probe']} probe prompts and "
                  f"{span(v for k, v in served.items() if k != 'probe')} scoring prompts per "
                  "SAE, each found among ours (a prompt we did not build would stop the run)")
        ref_prep = "the probe, on our residuals: no model forward"
    lines = [f"### Absorption crosscheck, profile `{summary['profile']}`, activations "
             f"`{summary['activations']}`", "",
             f"`atm-repro crosscheck --profile {summary['profile']} --activations "
             f"{summary['activations']}`: SAEBench "
             f"{SAEBENCH_VERSION}'s absorption eval and ours on the same {n} SAEs of layer "
             f"{summary['layer']}, {summary['words']['n_words']} words "
             f"({summary['words']['n_not_single_token']} of "
             f"{summary['words']['n_alphabetic_words']} alphabetic vocabulary entries dropped: "
             f"not one token in the prompt). {source}. Machine: {summary['machine']}.", "",
             "| | ours | SAEBench |", "|---|---|---|",
             f"| model-side preparation (prompts, probe, scoring prompts) | "
             f"{t['ours_prepare_s']:.0f} s | {t['saebench_probe_s']:.0f} s ({ref_prep}) |",
             f"| per SAE, median | {pd.Series(t['ours_per_sae_s']).median():.1f} s | "
             f"{pd.Series(t['saebench_per_sae_s']).median():.0f} s |",
             f"| all {n} SAEs, wall | {ours_total:.0f} s | {t['saebench_total_s']:.0f} s |", "",
             "Wall times are those of the runs that made the table; other jobs may have "
             "shared the machine, so the per-SAE ratio is the figure to read. The "
             "model-side row of ours is this layer's share of one preparation for layers "
             "4, 8 and 12.", "",
             f"Prompts: {p['probe_train_same'] + p['probe_test_same']} of "
             f"{p['probe_train_n'] + p['probe_test_n']} probe prompts are the same strings on "
             f"both sides; of the scoring prompts, {min(scoring_same)} of {max(scoring_n)} "
             "are (when the two ground-truth probes differ on a borderline word, every "
             "draw after it differs).", "",
             f"Agreement (|gap| <= {TOLERANCE} on both measures, same letters kept): "
             f"{int(table['agrees'].sum())} of {len(table)} SAEs; largest gaps "
             f"{table['full_gap'].max():.3f} (full absorption), "
             f"{table['fraction_gap'].max():.3f} (fraction)."
             + (" Table: `paper/tables/crosscheck.csv`." if served is not None else "")]
    return "\n".join(lines) + "\n"
