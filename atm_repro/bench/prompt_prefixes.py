"""``prompt_prefixes``: the absorption preparation on ``train.layer`` with
SAEBench's per-word prompts, with per-word prompts whose examples are drawn again
(same words and split: the metric's own prompt noise), and with shared prompt
prefixes (``PREFIX_COUNTS``, ``AbsorptionConfig.prompt_prefixes``): seconds of
model forwards and of the whole preparation, letters kept, and both raw measures
of ``PREFIX_SAES`` each way, with their change against the crosscheck tolerance."""

from __future__ import annotations

import dataclasses
import time

from atm_repro.bench.common import Row, eval_saes, load_profile_model
from atm_repro.config import Profile
from atm_repro.evals.absorption import (
    LETTERS,
    REFERENCE_TOLERANCE,
    letter_exclusions,
    prepare_absorption,
    run_absorption,
)
from atm_repro.profiles import eval_configs
from atm_repro.saes.io import load_sae

PREFIX_COUNTS = (64,)  # shared example sets tried against per-word prompts
PREFIX_SAES = ("atm", "topk", "jumprelu")  # main runs compared both ways (lowest seed)
REDRAW_SEED_OFFSET = 1000  # example_seed of the redrawn per-word prompts: seed + this


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Each absorption preparation (module docstring), timed, and ``PREFIX_SAES`` on each."""
    base = eval_configs(profile)["absorption"]
    saes = {n: load_sae(p) for n, (p, _) in eval_saes(profile, steps).items()
            if n in PREFIX_SAES}
    loaded = load_profile_model(profile)
    layer = profile.train.layer
    per_word = dataclasses.replace(base, prompt_prefixes=0, example_seed=None)
    modes = {"per word": per_word,
             # the same words and split, other example draws: the prompts' own noise
             "per word, examples redrawn": dataclasses.replace(
                 per_word, example_seed=base.seed + REDRAW_SEED_OFFSET),
             **{f"{n} prefixes": dataclasses.replace(per_word, prompt_prefixes=n)
                for n in PREFIX_COUNTS}}
    rows, details = [], {}
    for mode, cfg in modes.items():
        start = time.perf_counter()
        data = prepare_absorption(loaded, [layer], cfg, None)[layer]
        wall = time.perf_counter() - start
        kept = [c for c in LETTERS if c not in letter_exclusions(data, cfg)]
        rows += [Row("prompt_prefixes", f"{mode}: model forwards", data.meta["forward_seconds"],
                     "s"),
                 Row("prompt_prefixes", f"{mode}: preparation", wall, "s"),
                 Row("prompt_prefixes", f"{mode}: letters kept", len(kept))]
        details[mode] = {"letters": "".join(kept), "probe_f1": data.probe_f1_L.tolist(),
                         "forward_s": data.meta["forward_seconds"], "wall_s": wall, "saes": {}}
        for name, sae in saes.items():
            measures = run_absorption(sae, data, cfg, name).details["measures"]
            details[mode]["saes"][name] = measures
            rows += [Row("prompt_prefixes", f"{mode}: {name} full absorption (raw)",
                         measures["mean_full_absorption"]),
                     Row("prompt_prefixes", f"{mode}: {name} absorption fraction (raw)",
                         measures["mean_absorption_fraction"])]
    ref = details["per word"]
    for mode in list(modes)[1:]:
        if mode in (f"{n} prefixes" for n in PREFIX_COUNTS):
            rows.append(Row("prompt_prefixes", f"{mode}: forward speed-up over per word",
                            ref["forward_s"] / details[mode]["forward_s"], "x"))
        for name in saes:
            for key, label in (("mean_full_absorption", "full"),
                               ("mean_absorption_fraction", "fraction")):
                gap = abs(details[mode]["saes"][name][key] - ref["saes"][name][key])
                rows.append(Row("prompt_prefixes", f"{mode}: {name} |{label} - per word|", gap,
                                "", "<=", REFERENCE_TOLERANCE))
    return rows, {"layer": layer, "modes": details}

