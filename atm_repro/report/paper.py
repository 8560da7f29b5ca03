"""The paper's generated inputs: its tables, numbers and figures (notebook 05).

paper/main.tex reads everything it reports from one directory (``paper/tables``
for the canonical run, ``runs/smoke/paper/tables`` for CI):

* ``profile.tex``: ``\\smoketrue``/``\\smokefalse`` (the smoke watermark), the
  profile name and commit;
* ``numbers.tex``: one ``\\newcommand`` per number the text quotes, named by
  ``latex.macro_name`` from a key such as ``ours/atm/mean_full_absorption``;
* ``<name>.tex`` for each name of ``table_names(profile)`` (``TABLE_NAMES``
  without the tables of parts the profile does not run): a table float labelled
  ``tab:<name>``;
* ``results.csv``: every SAE x metric in long form (``RESULTS_COLUMNS``), the
  table every other one is made from, for readers' own analyses; with the
  companion profiles' SAEs (``Profile.companions``: another model) beside the
  profile's own, told apart by the ``model`` column;

and the figures ``<figures dir>/<name>.pdf`` for each name in ``figure_names`` (the
canonical profile's; notebook 05 also draws the sparsity curves, the ablations,
the layers and the cross-model figure for profiles that have them).
Everything is made from ``report.results``' table, stamped and written only when
its bytes change (``report.provenance``); smoke writes under ``runs/smoke/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from atm_repro import metrics
from atm_repro.cache import CacheManifest
from atm_repro.config import Profile, format_value
from atm_repro.evaluate import training_minutes
from atm_repro.profiles import eval_configs, scale_runs
from atm_repro.report import convergence, style, verdicts
from atm_repro.report.claims import (
    NOT_MEANINGFUL,
    PAPER_RESULTS,
    PAPER_VARIANTS,
    ours_from_results,
    present,
)
from atm_repro.report.comparisons import (
    MATCHED_RULE,
    SHORT_VERDICT,
    main_setting_comparisons,
    matched_comparisons,
    matched_frame,
    matched_numbers,
    paper_setting,
    seed_interval_cells,
    targets,
)
from atm_repro.report.cross_model import (
    ModelResults,
    all_models,
    cross_model_frame,
    cross_model_numbers,
    cross_model_table,
    health_numbers,
)
from atm_repro.report.latex import (
    Tex,
    booktabs_table,
    escape_latex,
    format_cell,
    format_number,
    joined,
    missing_table,
    numbers_tex,
    profile_tex,
    setting_value,
)
from atm_repro.report.plots import save_figure
from atm_repro.report.provenance import (
    README_PATH,
    TABLES_DIR,
    Stamp,
    check_output_allowed,
    output_dirs,
    write_generated,
    writes_paper,
)
from atm_repro.report.readme import update_readme
from atm_repro.report.results import per_sae
from atm_repro.report.setup_tables import deviations_table, hyperparameters_table
from atm_repro.report.statements import BASELINE_TOP1, by_macro, check, statements_tex
from atm_repro.report.summaries import HEALTH_METRICS, absorption_health, main_table
from atm_repro.saes import build_config

TABLE_NAMES = ("claims", "deviations", "hyperparameters", "main_reconstruction",
               "main_interpretability", "matched", "cross_model", "paper_vs_ours",
               "stability", "absorption_health", "scale", "convergence", "toy")
FIGURE_NAMES = ("absorption_by_letter", "density", "convergence", "toy_absorption")


def figure_names(cfg: Profile) -> tuple[str, ...]:
    """The paper's figures for ``cfg``: ``FIGURE_NAMES``, and the one-factor ablations
    when the profile has them."""
    return FIGURE_NAMES + (("ablations",) if cfg.ablations.factors else ())


def table_names(cfg: Profile) -> tuple[str, ...]:
    """The tables ``write_tables`` writes for ``cfg``: ``TABLE_NAMES`` without the
    cross-model table when the profile has no companion and without the scale study
    when it has none."""
    skip = {"cross_model": not cfg.companions, "scale": not cfg.scale.saes}
    return tuple(n for n in TABLE_NAMES if not skip.get(n, False))


def write_paper_inputs(cfg: Profile, out_dir: Path | str, stamp: Stamp,
                       tables: dict[str, str], numbers: dict[str, Any]) -> list[Path]:
    """Write ``profile.tex``, ``numbers.tex`` and ``<name>.tex`` per table into
    ``out_dir`` (guarded); returns the files that changed.

    ``tables`` maps names from ``TABLE_NAMES`` to tables made with ``stamp`` and
    labelled ``tab:<name>`` (main.tex refers to them by that label)."""
    out_dir = check_output_allowed(cfg, out_dir)
    if (stamp.profile, stamp.smoke) != (cfg.name, cfg.smoke):
        raise ValueError(f"stamp {stamp} does not describe profile {cfg.name!r}")
    unknown = sorted(set(tables) - set(TABLE_NAMES))
    if unknown:
        raise ValueError(f"unknown table name(s) {unknown}; main.tex reads {list(TABLE_NAMES)}")
    for name, text in tables.items():
        if f"\\label{{tab:{name}}}" not in text:
            raise ValueError(f"table {name!r} lacks \\label{{tab:{name}}}")
        if not text.startswith(stamp.comment + "\n"):
            raise ValueError(f"table {name!r} does not start with {stamp.comment!r}")
    files = {"profile.tex": profile_tex(stamp), "numbers.tex": numbers_tex(numbers, stamp),
             "statements.tex": statements_tex(check(by_macro(numbers)), stamp),
             **{f"{name}.tex": text for name, text in sorted(tables.items())}}
    return [out_dir / f for f, text in files.items() if write_generated(out_dir / f, text)]



_TRAIN_SKIP = ("saes", "seeds", "device", "log_every", "checkpoint_every")


def setting_numbers(cfg: Profile, manifest: CacheManifest) -> dict[str, Any]:
    """Numbers (and names) of the run's setting the text quotes, from the profile
    and the activation cache's manifest (``ActivationCache.manifest``):
    ``setup/...`` (model, corpus, layers, tokens), ``train/<field>`` (scalars of
    ``TrainConfig``), ``sae/<name>/<field>`` (every SAE's resolved config),
    ``ablation/...`` (notebook 03's factors and sparsity sweeps) and
    ``eval/<eval>/<field>`` (every eval's resolved config)."""
    d_model = int(manifest.d_model)
    train = cfg.train
    out: dict[str, Any] = {
        "setup/model": cfg.model.name,
        "setup/model_dtype": cfg.model.dtype,
        "setup/corpus": cfg.corpus.name,
        "setup/context": cfg.corpus.context,
        "setup/n_layers": int(manifest.n_layers_model),
        "setup/relative_depth": Tex(f"{100 * train.layer / manifest.n_layers_model:.0f}\\%"),
        "setup/d_model": d_model,
        "setup/expansion": Tex(f"{train.width / d_model:.1f}"),
        "setup/cached_train_tokens": int(manifest.n_tokens["train"]),
        "setup/cached_eval_tokens": int(manifest.n_tokens["eval"]),
        "setup/token_mask_prob": setting_value(cfg.cache.token_mask_prob),
        "setup/cross_layers": setting_value(cfg.cross_layer.layers),
        "setup/seeds": setting_value(train.seeds),
        "setup/n_seeds": len(train.seeds),
        "setup/steps": train.tokens // train.batch_size,
    }
    for f in dataclasses.fields(train):
        if f.name not in _TRAIN_SKIP:
            out[f"train/{f.name}"] = setting_value(getattr(train, f.name))
    for name, spec in sorted(train.saes.items()):
        sae_cfg = build_config(spec.variant, spec.params, d_model, train.width,
                               f"train.saes.{name}")
        for field, value in sorted(dataclasses.asdict(sae_cfg).items()):
            if field not in ("d_in", "d_sae"):
                out[f"sae/{name}/{field}"] = setting_value(value)
        out[f"sae/{name}/lr"] = setting_value(spec.lr if spec.lr is not None else train.lr)
        out[f"sae/{name}/variant"] = setting_value(spec.variant)
        out[f"sae/{name}/tokens"] = setting_value(train.for_spec(spec).tokens)
        out[f"sae/{name}/n_seeds"] = len(train.seeds_of(name))
    abl = cfg.ablations
    out["ablation/sae"] = setting_value(abl.sae)
    out["ablation/factors"] = joined(
        [f"{escape_latex(p)}: {setting_value(v)}" for p, v in sorted(abl.factors.items())])
    out["ablation/sweeps"] = joined(
        [f"{escape_latex(name)} {escape_latex(s.param)}: {setting_value(s.values)}"
         for name, s in sorted(abl.sparsity_sweeps.items())])
    # the same, in words for the prose (labels, not keys)
    out["setup/sweeps"] = joined(
        [f"{prose(style.label(name))}, {prose(style.param_label(s.param))} "
         f"{setting_value(s.values)}" for name, s in abl.sparsity_sweeps.items()])
    out["setup/factors"] = joined(
        [f"{prose(style.param_label(p))} {prose(', '.join(map(format_value, v)))}"
         for p, v in abl.factors.items()])
    out["setup/scale"] = joined(
        [f"{', '.join(map(str, cfg.scale.widths))} latents",
         f"{', '.join(f'{m:g}' for m in cfg.scale.token_multiples)} times the tokens"]
        if cfg.scale.saes else [])
    evals = eval_configs(cfg)
    # test words per letter: the test share of the word sample, over 26 letters
    absorption = evals["absorption"]
    out["setup/words_per_letter"] = round(absorption.n_words * (1 - absorption.train_fraction)
                                          / 26)
    for name, eval_cfg in sorted(evals.items()):
        for key, value in _flat(dataclasses.asdict(eval_cfg), f"eval/{name}"):
            out[key] = setting_value(value)
    return out


GREEK_TEX = {"λ": r"$\lambda$", "β": r"$\beta$"}


def prose(text: str) -> Tex:
    """A label or setting value as words in LaTeX: escaped, Greek letters as math,
    underscores of setting values as spaces (``first_batch`` -> first batch)."""
    out = escape_latex(text.replace("_", " "))
    for char, tex in GREEK_TEX.items():
        out = out.replace(char, tex)
    return Tex(out)


def _flat(values: dict[str, Any], prefix: str):
    """(``prefix/a/b``, value) for every scalar or list leaf of nested dicts."""
    for key, value in sorted(values.items()):
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}/{key}")
        else:
            yield f"{prefix}/{key}", value



PAPER_VS_OURS_NOTE = (
    r"Absolute values are not comparable across the two settings (model, layer, corpus, "
    r"token budget and width differ; MSE and cosine also depend on the input scale, and our "
    r"probing tasks are offline stand-ins: bias detection is gender, sentiment film "
    r"reviews). {atm} A dash: not given by the paper, or "
    r"not measured here; n/a: absorption is not meaningful for that SAE (metric health). "
    r"The verdicts, at matched $L_0$ and with intervals, are in Table~\ref{tab:claims}."
)
ATM_SIDES = {  # which of our ATMs the table shows (``paper_names``)
    True: r"Both ATM columns are at the original's $\lambda$, neither at TopK's $L_0$.",
    False: r"The original's $\lambda$ is not trained here: our ATM column is ATM at TopK's "
           r"$L_0$, the original's a dense code.",
}


def paper_vs_ours_table(ours: dict[str, dict[str, float]], stamp: Stamp,
                        atm_at_paper_lambda: bool = True) -> str:
    """The paper's reported numbers beside ours (means over seeds), one row per
    metric; no verdict here (the claims table judges, at matched settings). ``ours``
    maps "atm" / "topk" / "jumprelu" to {``PaperMetric.key``: value}
    (``claims.ours_from_results`` builds it); ``atm_at_paper_lambda`` says whether our
    ATM is the one at the original's lambda (else the matched one: the note says so)."""
    unknown = sorted(set(ours) - set(PAPER_VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; expected {list(PAPER_VARIANTS)}")
    ours_cols = tuple(f"ours/{v}" for v in PAPER_VARIANTS)
    rows = []
    for m in PAPER_RESULTS:
        row: dict[str, Any] = {"metric": m.label}
        for v in PAPER_VARIANTS:
            row[f"paper/{v}"] = m.paper.get(v)
            value = present(ours, v, m.key)
            row[f"ours/{v}"] = (format_number(value) if value is not None else
                                "n/a" if m.rule == "absorption_ordering"
                                and ours.get(v, {}).get(NOT_MEANINGFUL) else None)
        rows.append(row)
    columns = {"metric": "Metric",
               **{f"paper/{v}": name for v, name in PAPER_VARIANTS.items()},
               **{f"ours/{v}": name for v, name in PAPER_VARIANTS.items()}}
    n = len(PAPER_VARIANTS)
    groups = [("", 1), ("original", n), ("ours", n)]
    caption = (r"The original's reported numbers (Gemma-2-2b, layer 12, width 16384) beside "
               r"ours (mean over seeds), metric by metric, at each side's own settings.")
    notes = PAPER_VS_OURS_NOTE.replace("{atm}", ATM_SIDES[atm_at_paper_lambda])
    return booktabs_table(pd.DataFrame(rows), columns, caption, "tab:paper_vs_ours", stamp,
                          notes=notes, tex_columns=("metric", *ours_cols),
                          align="l" + "r" * 2 * n, groups=groups)


def paper_names(cfg: Profile) -> dict[str, str]:
    """Our spec beside each of the original's variants: ATM at the original's lambda
    (``comparisons.paper_setting``), TopK and JumpReLU by name."""
    return {"atm": paper_setting(cfg) or "atm"}


def result_numbers(ours: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``paper/<variant>/<metric>`` (as the paper prints them) and
    ``ours/<variant>/<metric>`` (as the paper-vs-ours table prints them, so text and
    table agree) for every row of ``PAPER_RESULTS``."""
    out: dict[str, Any] = {}
    for m in PAPER_RESULTS:
        for v in PAPER_VARIANTS:
            if v in m.paper:
                out[f"paper/{v}/{m.key}"] = m.paper[v]
            value = present(ours, v, m.key)
            out[f"ours/{v}/{m.key}"] = format_number(value) if value is not None else None
    return out



# Main-table columns (metric ids of ``summaries.main_table``) -> LaTeX headers: one
# table for reconstruction, one for what the latents say (the per-dataset probing
# columns kept are the paper's "bias detection" and "sentiment").
MAIN_RECONSTRUCTION = (metrics.L0, metrics.EXPLAINED_VARIANCE, metrics.COSINE,
                       metrics.CE_LOSS_SCORE, metrics.FRAC_DEAD, metrics.FRAC_DENSE)
MAIN_INTERPRETABILITY = (metrics.FULL_ABSORPTION, metrics.ABSORPTION_FRACTION,
                         metrics.PROBING_TOP1, metrics.PROBING_GENDER, metrics.PROBING_SENTIMENT,
                         metrics.STABILITY_MAX_COS)
# beside the other families of metrics the stability column names its family
MAIN_TEX = {"n_seeds": "seeds",
            **{m.id: m.tex for m in (*MAIN_RECONSTRUCTION, *MAIN_INTERPRETABILITY)},
            metrics.PROBING_TOP1.id: "probe top-1", metrics.STABILITY_MAX_COS.id: "stability"}


def _main_table(table: pd.DataFrame, stamp: Stamp, columns: tuple[metrics.Metric, ...],
                label: str, caption: str) -> str:
    main = table[table["group"] == "main"]
    cols = [m.id for m in columns if m.id in main]
    per_sae_cols = [c for c in cols if metrics.eval_of(c) != metrics.STABILITY]
    pair_cols = [c for c in cols if metrics.eval_of(c) == metrics.STABILITY]
    rows = [{"name": style.label(name), "n_seeds": runs["seed"].nunique(),
             **seed_interval_cells(runs, per_sae_cols),
             # a seed pair's numbers sit on both of its SAEs: one row per disjoint pair
             **seed_interval_cells(runs.sort_values("seed").iloc[0::2], pair_cols)}
            for name, runs in main.groupby("name", sort=False)]
    frame = pd.DataFrame(rows, columns=["name", "n_seeds", *cols])
    return booktabs_table(
        frame, {"name": "SAE", **{k: MAIN_TEX[k] for k in ["n_seeds", *cols]}}, stamp=stamp,
        label=label, fmt={"n_seeds": "d"}, caption=caption)


MEAN_PM = ("mean over seeds $\\pm$ half the width of its 95\\% Student-$t$ interval (every "
           "value per seed is in \\texttt{results.csv})")


def _main_reconstruction(table: pd.DataFrame, stamp: Stamp) -> str:
    return _main_table(
        table, stamp, MAIN_RECONSTRUCTION, "tab:main_reconstruction",
        "Reconstruction at the main layer, every SAE of the main set at its own settings: "
        f"{MEAN_PM}. $L_0$, explained variance, cosine of $x$ and $\\hat x$, and the dead "
        "and dense fractions of latents on held-out tokens; CE-loss score with the SAE "
        "spliced into the model.")


def _main_interpretability(table: pd.DataFrame, stamp: Stamp) -> str:
    return _main_table(
        table, stamp, MAIN_INTERPRETABILITY, "tab:main_interpretability",
        f"What the latents say, same SAEs: {MEAN_PM}. First-letter absorption (full rate and "
        "fraction, lower is better; n/a where the metric is not meaningful, "
        "Table~\\ref{tab:absorption_health}); sparse-probing top-1 accuracy (mean over "
        "datasets; gender and sentiment tasks); best-match decoder cosine across disjoint "
        "seed pairs.")


SCALE_METRICS = (metrics.L0, metrics.EXPLAINED_VARIANCE, metrics.LETTERS_KEPT,
                 metrics.MEAN_K1_F1, metrics.MAX_K1_F1, metrics.MEANINGFUL)
SCALE_RAW = (metrics.FULL_ABSORPTION, metrics.ABSORPTION_FRACTION)  # raw, meaningful or not
SCALE_TEX = {"family": "SAE", "param": "changed", "value": "to",
             **{m.id: m.tex for m in SCALE_METRICS[:2]},
             **{m.raw_id: f"{m.tex}\\ (raw)" for m in SCALE_RAW},
             **{m.id: m.tex for m in SCALE_METRICS[2:]}}


def _scale(cfg: Profile, table: pd.DataFrame, stamp: Stamp) -> str:
    """The scale study: one row per changed setting (the main set's point first)."""
    caption = (f"Scale study at layer {cfg.train.layer}: ATM and TopK with one setting "
               f"changed (latents, or training tokens as a multiple of {cfg.train.tokens:,}; "
               "budgets beyond the cache repeat it in epochs). The canonical row is the main "
               "set's mean over its seeds; the others have the scale study's seeds "
               f"({len(cfg.scale.seeds)}). Absorption is raw (shown whether or not "
               "meaningful); letters kept and main-latent $F_1$ are the metric's health.")
    if not scale_runs(cfg):
        return missing_table("No scale study in this run.", caption, "tab:scale", stamp)
    at = table[table["layer"] == cfg.train.layer]
    rows = []
    for base in cfg.scale.saes:
        main = at[(at["group"] == "main") & (at["name"] == base)]
        points = [("canonical", f"{cfg.train.width}, 1x", main)]
        for (param, value), g in at[(at["group"] == "scale") & (at["base"] == base)].groupby(
                ["param", "value"], sort=True):
            points.append((param, f"{value:g}" + ("x" if param == "tokens" else ""), g))
        for param, value, g in points:
            rows.append({"family": style.label(base),
                         "param": param if param == "canonical" else style.param_label(param),
                         "value": value,
                         **{c: float(g[c].mean()) if c in g else None
                            for c in list(SCALE_TEX)[3:]}})
    frame = pd.DataFrame(rows, columns=list(SCALE_TEX))
    fmt = {m.id: m.fmt for m in SCALE_METRICS} | {m.raw_id: m.fmt for m in SCALE_RAW}
    return booktabs_table(
        frame, SCALE_TEX, stamp=stamp, label="tab:scale", fmt=fmt, caption=caption)


# the convergence table's columns (metric ids -> LaTeX headers) under their group headers
CONVERGENCE_GROUPS = {
    "": {"name": "SAE", "tokens": "tokens", "n_seeds": "seeds"},
    "reconstruction": {metrics.L0.id: metrics.L0.tex,
                       metrics.EXPLAINED_VARIANCE.id: metrics.EXPLAINED_VARIANCE.tex,
                       metrics.CE_LOSS_SCORE.id: metrics.CE_LOSS_SCORE.tex,
                       metrics.FRAC_DEAD.id: "dead"},
    "letter latents": {metrics.MAX_K1_F1.id: metrics.MAX_K1_F1.tex,
                       metrics.LETTER_LATENTS.id: "count"},
    "absorption": {metrics.FULL_ABSORPTION.raw_id: "full (raw)",
                   metrics.ABSORPTION_FRACTION.raw_id: "frac.\\ (raw)",
                   metrics.MEANINGFUL.id: "meaningful"},
    "stability": {metrics.STABILITY_MAX_COS.id: "best-match cos.",
                  metrics.STABILITY_CHANCE.id: metrics.STABILITY_CHANCE.tex},
}


def _convergence(cfg: Profile, table: pd.DataFrame, stamp: Stamp) -> str:
    """The convergence study (``report.convergence``): one row per family x token count,
    its snapshots then its finished SAE, mean over seeds (stability over disjoint pairs)."""
    t = cfg.train
    f1 = eval_configs(cfg)["absorption"].letter_latent_f1
    caption = (
        f"Convergence at layer {t.layer}: each SAE of the main set trained on "
        f"{t.tokens:,} tokens, read at its training snapshots and at its end (the last row "
        "of each SAE; tokens rounded, the exact counts are in \\texttt{results.csv}), mean "
        "over seeds. Rows before the last are the same run mid-way: they have not had the "
        f"learning-rate decay of the run's last {100 * t.lr_decay_frac:g}\\% of steps, so "
        "they are not SAEs trained to that budget. Best $F_1$: the best letter's single main "
        f"latent; letter latents: letters whose best latent reaches $F_1 \\geq {f1:g}$ (the "
        "metric's health). Absorption is raw, computed whether or not it is meaningful; "
        "meaningful: the share of seeds on which it is. Stability over disjoint seed pairs: "
        "mean best-match decoder cosine, and its chance level for two random decoders of "
        "the same shapes.")
    runs = convergence.convergence_runs(table, convergence.families(cfg), t.layer)
    if runs.empty:
        return missing_table("No training snapshots in this run.", caption, "tab:convergence",
                             stamp)
    frame = convergence.points(runs, [c for label, cols in CONVERGENCE_GROUPS.items() if label
                                      for c in cols if c in runs])
    first = ~frame["name"].duplicated()  # the SAE's name on its first row only
    frame["name"] = [style.label(n) if f else "" for n, f in zip(frame["name"], first)]
    frame["tokens"] = frame["tokens"].map(convergence.tick_label)
    # a column with one value throughout goes to the caption (the table stays in 8 pt)
    chance = metrics.STABILITY_CHANCE.id
    constant = {c: frame[c].dropna().unique() for c in ("n_seeds", chance) if c in frame}
    constant = {c: v[0] for c, v in constant.items() if len(v) == 1}
    if "n_seeds" in constant:
        caption += f" Every row is over {int(constant['n_seeds'])} seeds."
    if chance in constant:
        caption += f" The chance level is {constant[chance]:.3f} at every point."
    groups = [(label, {c: h for c, h in cols.items() if c in frame and c not in constant})
              for label, cols in CONVERGENCE_GROUPS.items()]
    groups = [(label, cols) for label, cols in groups if cols]
    return booktabs_table(
        frame, {c: h for _, cols in groups for c, h in cols.items()}, stamp=stamp,
        label="tab:convergence", fmt={"n_seeds": "d"}, caption=caption,
        groups=[(label, len(cols)) for label, cols in groups])


MATCHED_CAPTION = (
    "ATM minus each other family and minus ATM's controls (random mask at ATM's "
    "rate; no mask), at TopK's operating point (its main set's $L_0$ and "
    "explained variance), each family read off its sparsity curve, and at each "
    "one's own settings: difference [95\\% CI] and verdict (better / worse: "
    "ATM's, the interval excludes 0; no diff.: it includes 0; n.m.: absorption "
    "not meaningful, raw values shown; 1 seed: no interval).")


# verdicts of the matched table, short enough for one cell beside the difference
def _matched(cfg: Profile, table: pd.DataFrame, comparisons: list, letters: pd.DataFrame,
             stamp: Stamp) -> str:
    goal = targets(cfg, table)
    frame = matched_frame(comparisons + main_setting_comparisons(cfg, table, letters))
    if frame.empty:
        return missing_table("No comparison: this run did not train ATM and another "
                             "family.", MATCHED_CAPTION, "tab:matched", stamp)
    frame["other"] = frame["other"].map(style.label)
    cols, shown, caption = {"other": "against", "metric": "metric"}, [], MATCHED_CAPTION
    for match in ("L0", "EV", "main"):
        cells = []
        for diff, verdict in zip(frame.get(f"{match}_diff", pd.Series([None] * len(frame))),
                                 frame.get(f"{match}_verdict", pd.Series([""] * len(frame)))):
            short = SHORT_VERDICT.get(verdict if isinstance(verdict, str) else "", verdict)
            cells.append("n/a" if not isinstance(diff, str) else
                         f"{diff} {short}".strip() if diff != "n/a" else "n/a")
        frame[match] = cells
        if all(c in ("n/a", "(matched)") for c in cells):
            continue  # no comparison at this target: no column of n/a
        if match == "main" and shown and cells == frame[shown[0]].tolist():
            caption += (" Every family was trained at TopK's $L_0$, so the comparison at "
                        "their own settings is the one shown.")
            continue
        shown.append(match)
        cols[match] = {"L0": f"at $L_0 = {format_cell(goal['L0'], '.0f')}$",
                       "EV": f"at expl.\\ var.\\ {format_cell(goal['EV'], '.3f')}",
                       "main": "at own settings"}[match]
    return booktabs_table(
        frame, cols, stamp=stamp, label="tab:matched", align="ll" + "r" * len(shown),
        caption=caption, notes=MATCHED_RULE)


STABILITY_CAPTION = (
    "Feature stability across training seeds, over disjoint seed pairs (mean "
    "$\\pm$ half the 95\\% Student-$t$ interval where there are two pairs): mean "
    "best-match decoder cosine (chance: the same statistic for two random decoders of "
    "the same shapes, seeded), mean cosine of the optimal one-to-one assignment, "
    "and the fraction of latents whose best match exceeds 0.7 / 0.9 (both "
    "directions averaged).")


def _stability(table: pd.DataFrame, stamp: Stamp) -> str:
    cols = {m.id: m.tex for m in (metrics.STABILITY_MAX_COS, metrics.STABILITY_CHANCE,
                                  metrics.STABILITY_ASSIGNMENT, metrics.STABILITY_ABOVE_07,
                                  metrics.STABILITY_ABOVE_09)}
    main = table[table["group"] == "main"]
    present = [c for c in cols if c in main]
    rows = []
    for name, runs in main.groupby("name", sort=False):
        pairs = runs.sort_values("seed").iloc[0::2]  # a pair's numbers sit on both seeds
        pairs = pairs[pairs[present].notna().any(axis=1)] if present else pairs.iloc[:0]
        rows.append({"name": style.label(name), "n_pairs": len(pairs),
                     **seed_interval_cells(pairs, present)})
    frame = pd.DataFrame(rows, columns=["name", "n_pairs", *present])
    if not frame["n_pairs"].any():
        return missing_table("No seed pair: no main SAE was trained with two seeds.",
                             STABILITY_CAPTION,
                             "tab:stability", stamp)
    return booktabs_table(
        frame, {"name": "SAE", "n_pairs": "pairs", **{c: cols[c] for c in present}},
        stamp=stamp, label="tab:stability", fmt={"n_pairs": "d"}, caption=STABILITY_CAPTION)


HEALTH_TEX = {"layer": "layer", "name": "SAE", **{m.id: m.tex for m in HEALTH_METRICS}}
# letters kept is a mean over seeds here
HEALTH_FMT = {"layer": "d", **{m.id: m.fmt for m in HEALTH_METRICS},
              metrics.LETTERS_KEPT.id: ".1f"}


def _absorption_health(table: pd.DataFrame, stamp: Stamp) -> str:
    frame = absorption_health(table).reset_index()
    frame["name"] = frame["name"].map(style.label)
    return booktabs_table(
        frame, {k: v for k, v in HEALTH_TEX.items() if k in frame.columns}, stamp=stamp,
        label="tab:absorption_health",
        fmt={k: v for k, v in HEALTH_FMT.items() if k in frame.columns},
        caption="Health of the absorption metric, per layer and SAE (mean over seeds): "
                "letters whose ground-truth probe has $F_1 > 0.6$; test $F_1$ of the best "
                "single main latent (mean over kept letters, and the best letter); letters "
                "whose single main latent reaches $F_1 \\geq 0.5$; how often a letter's main "
                "latents fire on other letters' words; the share of seeds on which "
                "absorption is meaningful (at least 20 letters and one letter latent).")


def _toy(toy: pd.DataFrame, stamp: Stamp) -> str:
    cols = {"run": "SAE", "l0": "L0", "explained_variance": "expl. var.",
            "mean_absorption": "absorption (exact)",
            "mean_probe_full_absorption": "absorption (probe pipeline)",
            "mean_absorption_alone": "control"}
    toy = toy.sort_values(["sae", "l0"])
    toy = toy.assign(run=[prose(f"{style.label(r.sae)}, {style.param_label(r.param)} {r.value:g}")
                          for r in toy.itertuples()])
    present = {k: v for k, v in cols.items() if k in toy}
    return booktabs_table(
        toy, present, stamp=stamp, label="tab:toy", tex_columns=("run",),
        caption="Planted-absorption benchmark: every SAE across its sparsity sweep. Exact "
                "absorption against the planted ground truth beside the first-letter "
                "pipeline's full-absorption rate on the same tokens; the control is the "
                "exact rule applied where the parent fires alone.")


def number_key(metric: str) -> str:
    """The short key of a main-table column in number names: the metric's last
    part (``core/l0`` -> ``l0``), ``<dataset>_top1`` for per-dataset probing."""
    parts = metric.split("/")
    return f"{parts[1]}_top1" if metrics.is_probing_dataset(metric) else parts[-1]


def write_tables(cfg: Profile, tidy: pd.DataFrame, toy: pd.DataFrame,
                 manifest: CacheManifest, letters: pd.DataFrame,
                 models: list[ModelResults] | None = None) -> list[Path]:
    """Write results.csv, the tables, profile.tex and numbers.tex from
    ``report.results``' tidy table, its per-letter absorption (``letters``) and the
    toy benchmark's table; ``models``: every model's results for the cross-model
    table and results.csv (``cross_model.all_models``; computed when not given).
    Returns the changed files."""
    stamp = Stamp.for_profile(cfg)
    table = per_sae(tidy)
    comparisons = matched_comparisons(cfg, table)
    models = all_models(cfg, tidy) if models is None else models
    cross = cross_model_frame(models)
    out_dir = check_output_allowed(cfg, output_dirs(cfg)[1])
    every_model = pd.concat([m.tidy for m in models], ignore_index=True)
    changed = [out_dir / "results.csv"] if write_generated(
        out_dir / "results.csv", results_csv(every_model)) else []
    makers = {
        "claims": lambda: verdicts.claims_table(cfg, table, comparisons, stamp),
        "deviations": lambda: deviations_table(cfg, manifest, stamp),
        "hyperparameters": lambda: hyperparameters_table(cfg, manifest, stamp),
        "main_reconstruction": lambda: _main_reconstruction(table, stamp),
        "main_interpretability": lambda: _main_interpretability(table, stamp),
        "matched": lambda: _matched(cfg, table, comparisons, letters, stamp),
        "cross_model": lambda: cross_model_table(cross, stamp),
        "paper_vs_ours": lambda: paper_vs_ours_table(
            ours_from_results(tidy, paper_names(cfg)), stamp,
            atm_at_paper_lambda=paper_setting(cfg) is not None),
        "stability": lambda: _stability(table, stamp),
        "absorption_health": lambda: _absorption_health(table, stamp),
        "scale": lambda: _scale(cfg, table, stamp),
        "convergence": lambda: _convergence(cfg, table, stamp),
        "toy": lambda: _toy(toy, stamp)}
    tables = {name: makers[name]() for name in table_names(cfg)}
    numbers = {**paper_numbers(cfg, tidy, manifest, comparisons),
               **cross_model_numbers(cross), **health_numbers(models)}
    changed += write_paper_inputs(cfg, out_dir, stamp, tables, numbers)
    if writes_paper(cfg) and out_dir == TABLES_DIR.resolve() and update_readme(
            numbers, check(by_macro(numbers)), stamp):
        changed.append(README_PATH)
    return changed


# results.csv: the tidy table's columns under the names a reader expects
RESULTS_COLUMNS = {"model": "model", "layer": "layer", "group": "group", "base": "family",
                   "name": "name", "variant": "variant", "mask_mode": "mask_mode",
                   "param": "sweep_param", "value": "sweep_value", "seed": "seed",
                   "metric": "metric", "result": "value"}


def results_csv(tidy: pd.DataFrame) -> str:
    """``results.csv``: one row per SAE x metric (long form), sorted, full precision."""
    frame = tidy[list(RESULTS_COLUMNS)].rename(columns=RESULTS_COLUMNS)
    frame = frame.sort_values(["model", "layer", "family", "name", "seed", "metric"],
                              kind="stable")
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def paper_numbers(cfg: Profile, tidy: pd.DataFrame, manifest: CacheManifest,
                  comparisons: list | None = None) -> dict[str, Any]:
    """Every number the text may quote (``numbers.tex``), by key: the setting, the
    claims beside ours and their verdicts, each main SAE's main-table values,
    spreads over seeds, sparsity-sweep and scale-study points, the absorption
    metric's health and the matched comparisons (``comparisons``: computed here
    when not given)."""
    table = per_sae(tidy)
    if comparisons is None:
        comparisons = matched_comparisons(cfg, table)
    numbers = {**setting_numbers(cfg, manifest),
               **result_numbers(ours_from_results(tidy, paper_names(cfg)))}
    for name, row in main_table(table).iterrows():
        for metric, value in row.items():
            numbers[f"main/{name}/{number_key(metric)}"] = value
    main = table[table["group"] == "main"]
    if metrics.FRAC_DEAD.id in main:  # the text quotes the standard SAE's
        for name, dead in main.groupby("name", sort=False)[metrics.FRAC_DEAD.id].mean().items():
            numbers[f"main/{name}/dead_percent"] = 100 * dead
    numbers.update(_spread_and_sweep_numbers(table))
    numbers.update(convergence.convergence_numbers(cfg, table))
    numbers.update(_health_numbers(table))
    numbers.update(_probing_numbers(table))
    numbers.update(matched_numbers(comparisons, targets(cfg, table)))
    numbers.update(verdicts.claim_numbers(cfg, table, comparisons))
    n_saes, minutes = training_minutes(cfg)  # stage wall times are in the README
    if n_saes:
        numbers |= {"compute/n_saes": n_saes, "compute/train_minutes": minutes}
    return numbers


SPREAD_METRICS = tuple(m.id for m in (metrics.FULL_ABSORPTION, metrics.ABSORPTION_FRACTION,
                                      metrics.EXPLAINED_VARIANCE))


def _spread_and_sweep_numbers(table: pd.DataFrame) -> dict:
    """For the text: each main SAE's range over seeds (max - min) of the headline
    metrics, L0 / absorption / explained variance of every sparsity-sweep run
    (``sweep/<run name>/...``, mean over its seeds) and the scale study's points
    (``scale/<run name>/...``)."""
    out = {}
    main = table[table["group"] == "main"]
    kept = metrics.LETTERS_KEPT.id
    if kept in main and main[kept].notna().any():
        out[f"{metrics.ABSORPTION}/letters_kept"] = int(main[kept].max())
    for name, runs in main.groupby("name", sort=False):
        for col in SPREAD_METRICS:
            if col in runs and runs[col].notna().sum() > 1:
                out[f"spread/{name}/{col.split('/')[-1]}"] = runs[col].max() - runs[col].min()
    sweeps = table[table["param"].isin(["k", "l1_coefficient", "l0_coefficient"])]
    cols = [c for c in (metrics.L0.id, *SPREAD_METRICS) if c in sweeps]
    for name, row in sweeps.groupby("name", sort=False)[cols].mean().iterrows():
        for col in cols:
            if pd.notna(row[col]):
                out[f"sweep/{name}/{col.split('/')[-1]}"] = row[col]
    scale = table[table["group"] == "scale"]
    cols = [c for c in SCALE_NUMBERS if c in scale]
    for name, row in scale.groupby("name", sort=False)[cols].mean().iterrows():
        for col in cols:
            if pd.notna(row[col]):
                out[f"scale/{name}/{col.split('/')[-1]}"] = row[col]
    return out


SCALE_NUMBERS = (metrics.L0.id, metrics.EXPLAINED_VARIANCE.id, metrics.FULL_ABSORPTION.raw_id,
                 metrics.MAX_K1_F1.id, metrics.LETTERS_KEPT.id)


def _health_numbers(table: pd.DataFrame) -> dict:
    """For the text: the absorption metric's health over every main and cross-layer
    SAE (``summaries.absorption_health``): the range of letters kept, the best single
    main-latent F1 anywhere and at the main layer, and how many SAE/layer rows are
    meaningful."""
    health = absorption_health(table)
    out = {}
    kept, best, meaningful = (metrics.LETTERS_KEPT.id, metrics.MAX_K1_F1.id,
                              metrics.MEANINGFUL.id)
    if kept in health:
        out["health/letters_kept_min"] = int(health[kept].min())
        out["health/letters_kept_max"] = int(health[kept].max())
    if best in health:
        out["health/best_k1_f1"] = health[best].max()
        main_layers = set(table.loc[table["group"] == "main", "layer"])
        for layer in main_layers & set(health.index.get_level_values(0)):
            out["health/main_best_k1_f1"] = health.loc[layer, best].max()
    if meaningful in health:
        out["health/n_meaningful"] = int((health[meaningful] > 0).sum())
        out["health/n_rows"] = len(health)
        main_layer = health.loc[health.index.get_level_values(0).isin(
            set(table.loc[table["group"] == "main", "layer"]))]
        for (_, name), share in main_layer[meaningful].items():  # the share of seeds
            out[f"health/{name}/meaningful"] = share
    return out


def _probing_numbers(table: pd.DataFrame) -> dict:
    """For the text: the residual-stream top-1 baseline and the standard error of a
    mean over tasks, averaged over the main SAEs; how many tasks the probing rule
    counts (the same for every SAE of a layer: the baseline decides)."""
    main = table[table["group"] == "main"]
    out = {key: main[col].mean() for col, key in (
        (metrics.baseline(metrics.PROBING_TOP1).id, BASELINE_TOP1),
        (metrics.PROBING_TOP1_SE.id, metrics.PROBING_TOP1_SE.id)) if col in main}
    for m in (metrics.PROBING_TASKS_COUNTED, metrics.PROBING_TASKS, metrics.PROBING_TRAIN_MIN,
              metrics.PROBING_TEST_MIN):
        if m.id in main and main[m.id].notna().any():
            out[m.id] = int(main[m.id].max())
    return out


def write_figures(cfg: Profile, figures: dict) -> list[Path]:
    """Save each named figure as PDF and PNG (fixed metadata) into the figures dir."""
    out_dir = check_output_allowed(cfg, output_dirs(cfg)[0])
    stamp = Stamp.for_profile(cfg).comment.lstrip("% ")
    return [p for name, fig in sorted(figures.items())
            for p in save_figure(fig, out_dir, name, stamp)]
