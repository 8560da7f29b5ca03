"""Runs SAEBench 0.6.0's own absorption eval on saved SAEs (inside its own venv).

This file is executed by the SAEBench environment's Python, never imported by
atm_repro: it may only use what that environment has (SAEBench, SAELens,
TransformerLens, transformers, torch). ``atm_repro.crosscheck`` writes the
spec it reads and reads the JSON it writes.

Usage: python saebench_driver.py SPEC.json

What it changes in SAEBench, and only through its public module attributes:
* the vocabulary (``get_alpha_tokens``) is the spec's word sample, so both
  sides use the same words (SAEBench's full Gemma-3 vocabulary takes hours);
* the model is built once from the local checkpoint and handed to ``run_eval``
  (it would otherwise load a hub model by name);
* Python's ``random`` is seeded before the probe data are drawn (``seed``) and
  before each SAE's scoring prompts (``seed + 1``), as atm_repro does;
* with a ``residuals`` file in the spec, ``model.run_with_cache`` returns the
  residuals atm_repro's eval read, prompt for prompt (``residual_lookup``), and
  the model serves only as tokenizer; without one, it runs TransformerLens and
  stops after the hooked layer (``stop_at_layer``): the residual stream read
  there is the same, and the 262k-token unembedding that SAEBench would compute
  and discard is skipped.
Everything else (probe training, k-sparse probing, scoring, aggregation, the
20-letter minimum) is SAEBench's code with its default config. The SAEs are
loaded with ``sae_lens.SAE.load_from_disk`` exactly as saved.
"""

import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import sae_bench.evals.absorption.common as sb_common
import sae_bench.evals.absorption.feature_absorption as sb_feature_absorption
import sae_bench.evals.absorption.main as sb_main
import torch
from residual_lookup import ResidualLookup, load_residuals  # beside this file
from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
from sae_lens import SAE
from transformer_lens import HookedTransformer
from transformers import AutoModelForCausalLM, AutoTokenizer


def load_model(spec):
    hf_model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    # TransformerLens treats a model with a quantization_config as quantised; ours is
    # dequantised float32 (converted from GGUF), so the attribute is dropped.
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    return HookedTransformer.from_pretrained_no_processing(
        spec["tl_model_name"], hf_model=hf_model, tokenizer=tokenizer, device="cpu",
        dtype=torch.float32)


def probe_prompts(probe_dir: Path) -> dict:
    out = {}
    for split in ("train", "test"):
        df = pd.read_csv(probe_dir / f"{split}_df.csv", keep_default_na=False, na_values=[""])
        out[split] = {"words": df["token"].tolist(), "prompts": df["prompt"].tolist()}
    return out


def sha256_dir(path: str) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def sha256_file(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def main(spec_path: str) -> None:
    """Probe once, then each SAE; resumes: the probe and every SAE already done
    with the same inputs (words, seeds, model, layer; the SAE's files) are kept."""
    spec = json.loads(Path(spec_path).read_text())
    out_path = Path(spec["out"])
    words = list(spec["words"])
    sb_common.get_alpha_tokens = lambda *_a, **_k: list(words)
    sb_feature_absorption.get_alpha_tokens = lambda *_a, **_k: list(words)
    key = hashlib.sha256(json.dumps({**{k: spec[k] for k in (
        "model_dir", "tl_model_name", "layer", "words", "seed", "prompt_token_pos")},
        "residuals": sha256_file(spec["residuals"])}, sort_keys=True).encode()).hexdigest()
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    probes_dir = out_path.parent / "saebench_probes"
    if previous.get("key") != key:
        previous = {}
        shutil.rmtree(probes_dir, ignore_errors=True)
    # SAEBench's default result folders live inside its package: start them empty so
    # that nothing of an earlier run is read back instead of recomputed
    shutil.rmtree(sb_common.RESULTS_DIR, ignore_errors=True)
    work = out_path.parent / "saebench_work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "results").mkdir(parents=True)  # run_eval writes each SAE's JSON there

    t0 = time.perf_counter()
    model = load_model(spec)
    lookup = None
    if spec["residuals"]:
        lookup = ResidualLookup(*load_residuals(spec["residuals"]),
                                f"blocks.{spec['layer']}.hook_resid_post",
                                spec["prompt_token_pos"], model.to_tokens)
        model.run_with_cache = lookup
    else:
        full_run_with_cache = model.run_with_cache
        model.run_with_cache = lambda *a, **k: full_run_with_cache(
            *a, **{"stop_at_layer": spec["layer"] + 1, **k})
    sb_main.HookedTransformer = SimpleNamespace(
        from_pretrained_no_processing=lambda *_a, **_k: model)
    load_s = time.perf_counter() - t0

    seed, layer = spec["seed"], spec["layer"]
    config = AbsorptionEvalConfig(model_name=spec["tl_model_name"], random_seed=seed,
                                  prompt_token_pos=spec["prompt_token_pos"],
                                  llm_batch_size=spec["llm_batch_size"], llm_dtype="float32",
                                  precalc_k_sparse_probe_sae_acts=True)
    probe_dir = Path(sb_common.PROBES_DIR) / model.cfg.model_name / f"layer_{layer}"
    if previous:  # the probe of an earlier run with the same inputs, put back
        shutil.copytree(probes_dir, probe_dir)
        result = previous
    else:
        t0 = time.perf_counter()
        random.seed(seed)
        torch.manual_seed(seed)
        sb_common.train_and_save_probes(model, layers=[layer],
                                        base_template=config.prompt_template,
                                        pos_idx=config.prompt_token_pos, device="cpu")
        shutil.copytree(probe_dir, probes_dir)
        result = {"key": key, "load_seconds": round(load_s, 1),
                  "probe_seconds": round(time.perf_counter() - t0, 1),
                  "probe_served_from_ours": lookup.served if lookup else None,
                  "probe_prompts": probe_prompts(probe_dir), "saes": {}}
        write_json(out_path, result)

    for sae_id, sae_path in spec["saes"].items():
        sae_hash = sha256_dir(sae_path)
        if result["saes"].get(sae_id, {}).get("sae_sha256") == sae_hash:
            continue
        print(f"[saebench] {sae_id}", flush=True)
        sae = SAE.load_from_disk(sae_path, device="cpu")
        random.seed(seed + 1)
        torch.manual_seed(seed)
        served = lookup.served if lookup else 0
        t0 = time.perf_counter()
        out = sb_main.run_eval(config, [(sae_id, sae)], "cpu", str(work / "results"),
                               force_rerun=True)
        entry = {"sae_sha256": sae_hash, "seconds": round(time.perf_counter() - t0, 1),
                 "served_from_ours": lookup.served - served if lookup else None}
        k_sparse = sorted(Path(sb_common.RESULTS_DIR).glob(
            f"k_sparse_probing/{sae_id}_*/*metrics*"))
        if k_sparse:
            df = pd.read_parquet(k_sparse[0])
            entry["probe_f1"] = dict(zip(df["letter"], df["f1_probe"].astype(float)))
        if out:
            (res,) = out.values()
            entry["metrics"] = res["eval_result_metrics"]["mean"]
            entry["per_letter"] = {d["first_letter"]: d for d in res["eval_result_details"]}
            scored = sorted(Path(sb_common.RESULTS_DIR).glob(
                f"feature_absorption/{sae_id}_*/*.parquet"))
            df = pd.read_parquet(scored[0])
            entry["scoring"] = {"letters": df["letter"].tolist(), "words": df["token"].tolist(),
                                "prompts": df["prompt"].tolist()}
        else:
            entry["metrics"] = None  # fewer than min_feats_for_eval letters: SAEBench stops
        result["saes"][sae_id] = entry
        write_json(out_path, result)


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


if __name__ == "__main__":
    main(sys.argv[1])
