"""atm_repro.report.paper: the paper's tables and numbers, their contract with
paper/main.tex, and a build of the paper from smoke-like inputs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
from helpers import (
    ONE_FAMILY,
    SNAPSHOT_BASE,
    STAMP,
    TIDY_METRICS,
    body_rows,
    internal_names,
    manifest,
    ours_with,
    pdf_text,
    sae_rows,
    synthetic_tidy,
)

from atm_repro import metrics
from atm_repro.config import REPO_ROOT, Profile
from atm_repro.profiles import load_profile
from atm_repro.report.claims import NOT_MEANINGFUL, PAPER_RESULTS
from atm_repro.report.comparisons import full_budget
from atm_repro.report.latex import booktabs_table, macro_name, numbers_tex, profile_tex
from atm_repro.report.paper import (
    TABLE_NAMES,
    figure_names,
    paper_numbers,
    paper_vs_ours_table,
    result_numbers,
    setting_numbers,
    table_names,
    write_paper_inputs,
    write_tables,
)
from atm_repro.report.provenance import (
    README_PATH,
    TABLES_DIR,
    OutputGuardError,
    Stamp,
    write_generated,
)
from atm_repro.report.results import LETTER_COLUMNS
from atm_repro.runs import record_stage_time, run_dir

PAPER_DIR = REPO_ROOT / "paper"
TOY = pd.DataFrame({"run": ["topk-k1", "topk-k4"], "sae": ["topk", "topk"], "param": ["k", "k"],
                    "value": [1, 4], "l0": [1.0, 4.0],
                    "explained_variance": [0.5, 0.9], "mean_absorption": [0.3, 0.1],
                    "mean_probe_full_absorption": [0.2, 0.1], "mean_absorption_alone": [0, 0]})


def test_setting_numbers_of_the_smoke_profile():
    cfg = load_profile("smoke")
    values = setting_numbers(cfg, manifest())
    assert values["train/layer"] == cfg.train.layer == 1
    assert values["setup/relative_depth"] == r"25\%"
    assert values["setup/cached_train_tokens"] == 15000
    assert values["setup/model_dtype"] == cfg.model.dtype == "float32"
    bf16 = setting_numbers(load_profile("smoke", {"model.dtype": "bfloat16"}), manifest())
    assert bf16["setup/model_dtype"] == "bfloat16"   # read from the profile, not fixed
    assert values["sae/atm/warmup_steps"] == 20  # the profile's value
    assert values["sae/atm/beta"] == "0.99"  # ATMConfig's default, resolved
    assert values["sae/atm/mask_draw"] == r"per\_latent"
    assert values["ablation/factors"] == "beta: 0.9, 0.99; c: 0, 1; r: 0.5, 2"
    numbers_tex(values, STAMP)  # every key makes a distinct macro


def test_paper_vs_ours_is_deterministic():
    ours = ours_with(0.01, 0.02, 0.03)
    assert paper_vs_ours_table(ours, STAMP) == paper_vs_ours_table(ours, STAMP)


def test_paper_vs_ours_table_rows():
    ours = ours_with(0.005, 0.03, 0.01)
    ours["atm"]["l0"] = 512.25
    rows = body_rows(paper_vs_ours_table(ours, STAMP))
    # the original's values as it prints them, ours at 3 significant digits
    assert rows[0] == (r"Absorption (full rate) & 0.0068 & 0.1402 & 0.0114 & 0.00500 & 0.0300 & "
                       r"0.0100 \\")
    assert rows[2] == r"$L_0$ & 3280 & 40 & -- & 512 & -- & -- \\"
    assert len(rows) == len(PAPER_RESULTS)
    with pytest.raises(ValueError, match="unknown variant"):
        paper_vs_ours_table({"atm-s0": {}}, STAMP)


def test_not_meaningful_absorption_prints_n_a():
    ours = ours_with(0.1, None, 0.3)
    ours["topk"][NOT_MEANINGFUL] = 1.0
    rows = [r for r in body_rows(paper_vs_ours_table(ours, STAMP)) if r.startswith("Absorption")]
    assert len(rows) == 2 and all(r.split(" & ")[5] == "n/a" for r in rows)


def test_result_numbers_match_the_table():
    values = result_numbers(ours_with(0.005, 0.03, None))
    assert values["paper/atm/mean_full_absorption"] == "0.0068"
    assert values["ours/atm/mean_full_absorption"] == "0.00500"
    assert values["ours/jumprelu/mean_full_absorption"] is None
    assert "paper/jumprelu/l0" not in values  # not given by the paper


def test_write_paper_inputs(runs_dir):
    cfg = Profile(name="cpu")
    stamp = Stamp("cpu", False, "abc1234")
    out = run_dir(cfg) / "paper" / "tables"
    table = paper_vs_ours_table(ours_with(0.01, 0.02, 0.03), stamp)
    written = write_paper_inputs(cfg, out, stamp, {"paper_vs_ours": table}, {"setup/x": 1})
    assert sorted(p.name for p in written) == ["numbers.tex", "paper_vs_ours.tex", "profile.tex",
                                               "statements.tex"]
    assert write_paper_inputs(cfg, out, stamp, {"paper_vs_ours": table}, {"setup/x": 1}) == []
    assert (out / "profile.tex").read_text().splitlines()[1] == r"\smokefalse"
    with pytest.raises(ValueError, match="unknown table"):
        write_paper_inputs(cfg, out, stamp, {"main": table}, {})
    with pytest.raises(ValueError, match="lacks"):
        write_paper_inputs(cfg, out, stamp, {"stability": table}, {})
    with pytest.raises(ValueError, match="does not start with"):
        write_paper_inputs(cfg, out, stamp, {"paper_vs_ours": table.replace("abc1234", "f")}, {})
    with pytest.raises(ValueError, match="does not describe"):
        write_paper_inputs(cfg, out, Stamp("smoke", True, "abc1234"), {}, {})


def test_smoke_profile_cannot_write_paper_inputs_into_the_repo(runs_dir):
    smoke = Profile(name="smoke", smoke=True)
    before = sorted(TABLES_DIR.iterdir()) if TABLES_DIR.is_dir() else []
    with pytest.raises(OutputGuardError):
        write_paper_inputs(smoke, TABLES_DIR, Stamp("smoke", True, "abc"), {}, {"setup/x": 1})
    assert (sorted(TABLES_DIR.iterdir()) if TABLES_DIR.is_dir() else []) == before


def test_write_tables_from_a_tidy_table(runs_dir):
    """Every table and numbers.tex come from the tidy table; main-table numbers are
    keyed by metric ids (per-dataset probing as <dataset>_top1); a rerun writes nothing."""
    cfg = load_profile("smoke")
    tidy = synthetic_tidy(cfg)
    readme_before = README_PATH.read_bytes()
    letters = pd.DataFrame([{"name": n, "seed": s, "letter": c, "full_absorption_rate": 0.1,
                             "mean_absorption_fraction": 0.2}
                            for n in cfg.train.saes for s in cfg.train.seeds_of(n)
                            for c in "abc"], columns=LETTER_COLUMNS)
    written = write_tables(cfg, tidy, TOY, manifest(), letters)
    assert README_PATH.read_bytes() == readme_before  # only the canonical run writes it
    out = run_dir(cfg) / "paper" / "tables"
    assert sorted(p.name for p in written) == sorted(
        ["results.csv", "profile.tex", "numbers.tex", "statements.tex",
         *(f"{n}.tex" for n in TABLE_NAMES if n != "cross_model")])  # smoke: no companion
    assert table_names(cfg) == tuple(n for n in TABLE_NAMES if n != "cross_model")
    assert "scale" not in table_names(load_profile("cpu"))  # snapshots, not a scale study
    numbers = (out / "numbers.tex").read_text()
    assert r"\newcommand{\MainAtmGenderTopOne}{" in numbers
    assert r"\newcommand{\MainAtmExplainedVariance}{" in numbers
    assert r"\newcommand{\MainAtmNSeeds}{2.00}" in numbers
    main = (out / "main_reconstruction.tex").read_text()
    assert "expl.\\ var." in main and "explained_variance" not in main
    assert "±" in main  # two seeds: mean ± interval
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns) == ["model", "layer", "group", "family", "name", "variant",
                                 "mask_mode", "sweep_param", "sweep_value", "seed", "metric",
                                 "value"]
    assert len(csv) == len(tidy) and set(csv["metric"]) == set(tidy["metric"])
    atm = csv[(csv["name"] == "atm") & (csv["metric"] == "core/l0")]
    assert set(atm["mask_mode"]) == {"importance"} and set(atm["seed"]) == set(cfg.train.seeds)
    assert "tab:matched" in (out / "matched.tex").read_text()
    assert write_tables(cfg, tidy, TOY, manifest(), letters) == []


def test_tables_without_their_input_say_why(runs_dir):
    """One seed of one family, no scale study: the tables that need a second family
    or a seed pair keep their caption and label and say why they are empty."""
    cfg = load_profile("smoke", ONE_FAMILY)
    tidy = synthetic_tidy(cfg, {m: v for m, v in TIDY_METRICS.items()
                                if not m.startswith("stability/")})
    letters = pd.DataFrame(columns=LETTER_COLUMNS)
    write_tables(cfg, tidy, TOY, manifest(), letters)
    out = run_dir(cfg) / "paper" / "tables"
    for name, reason in (("matched", "No comparison: this run did not train ATM"),
                         ("stability", "No seed pair: no main SAE was trained with two seeds")):
        text = (out / f"{name}.tex").read_text()
        assert f"\\label{{tab:{name}}}" in text and reason in text, name
        assert "tabular" not in text
    # no companion, no scale study: those tables are not written at all
    assert not (out / "cross_model.tex").exists() and not (out / "scale.tex").exists()
    claims = (out / "claims.tex").read_text()  # no factor ablation: said, not left blank
    assert "no ablation of $\\beta$, $c$ or $r$ in this profile" in claims
    assert "not testable here (not ablated)" in claims


# --------------------------------------------------------------------------- main.tex


def smoke_numbers() -> dict:
    return {**setting_numbers(load_profile("smoke"), manifest()),
            **result_numbers(ours_with(0.01, 0.02, None))}


def canonical_macros() -> set[str]:
    """Every macro the package can generate for the canonical profile: numbers.tex
    over a complete (synthetic) result table with SAE runs on disk: every main SAE
    at its own budget, and the full-budget ones also at each training snapshot."""
    cfg = load_profile("cpu")
    for run, wall_s in (("atm-s0", 300.0), ("topk-s2", 120.0), ("retired-s0", 999.0)):
        (sae_dir := run_dir(cfg) / "saes" / "L8" / run).mkdir(parents=True)
        (sae_dir / "metrics.json").write_text(json.dumps({"wall_s": wall_s}))
    record_stage_time(cfg, "03_ablations.ipynb", 60.0)  # a resumed run's short stage
    tidy = synthetic_tidy(cfg)
    snapshots = [sae_rows(cfg.train.layer, name, "snapshot", seed, tokens,
                          {m: 0.5 for m in SNAPSHOT_BASE})
                 for name in cfg.train.saes if full_budget(cfg, name)
                 for seed in cfg.train.seeds_of(name) for tokens in cfg.train.snapshot_tokens]
    tokens = tidy.drop_duplicates("sae_id").assign(  # each SAE's own budget
        metric=metrics.TRAIN_TOKENS.id,
        result=[float(cfg.train.for_spec(cfg.train.saes[n]).tokens) for n in
                tidy.drop_duplicates("sae_id")["base"]])
    stab = tidy[tidy["metric"] == metrics.STABILITY_MAX_COS.id]
    chance = stab.assign(metric=metrics.STABILITY_CHANCE.id, result=0.14)
    tidy = pd.concat([tidy, tokens, chance, pd.DataFrame([r for rows in snapshots for r in rows])],
                     ignore_index=True)
    tidy.loc[tidy["metric"] == metrics.MEANINGFUL.id, "result"] = 1.0  # every SAE passes
    numbers = paper_numbers(cfg, tidy, manifest(d_model=640, n_layers=18))
    # each SAE's own training time, summed; a run of no current spec is not counted
    assert numbers["compute/n_saes"] == 2 and numbers["compute/train_minutes"] == 7.0
    return {macro_name(k)[1:] for k in numbers}


def test_every_val_in_main_tex_is_generated(runs_dir):
    tex = (PAPER_DIR / "main.tex").read_text()
    used = set(re.findall(r"\\val\{(\w+)\}", tex))
    assert used, "main.tex quotes no \\val{} numbers"
    generated = canonical_macros()  # runs_dir: stage times go to a temp runs root
    assert used <= generated, sorted(used - generated)


def test_main_tex_uses_only_generated_macros_and_names():
    tex = (PAPER_DIR / "main.tex").read_text()
    generated = {macro_name(k)[1:] for k in smoke_numbers()}
    used = set(re.findall(r"\\((?:Setup|Train|Sae|Eval|Paper|Ours|Ablation)[A-Za-z]*)", tex))
    assert used and used <= generated, sorted(used - generated)
    assert set(re.findall(r"\\resulttable\{(\w+)\}", tex)) == set(table_names(load_profile("cpu")))
    assert set(re.findall(r"\\resultfigure(?:\[[^]]*\])?\{(\w+)\}", tex)) == \
        set(figure_names(load_profile("cpu")))


def write_smoke_inputs(root) -> None:
    """Smoke-like generated inputs (fake numbers, in a temp dir only)."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    stamp = Stamp("smoke", True, "abc1234")
    df = pd.DataFrame({"sae": ["ATM", "TopK"], "l0": [12.5, 16.0]})
    tables = {name: booktabs_table(df, {"sae": "SAE", "l0": "$L_0$"}, "Placeholder.",
                                   f"tab:{name}", stamp) for name in TABLE_NAMES}
    tables["paper_vs_ours"] = paper_vs_ours_table(ours_with(0.01, 0.02, None), stamp)
    files = {"profile.tex": profile_tex(stamp), "numbers.tex": numbers_tex(smoke_numbers(), stamp),
             **{f"{name}.tex": text for name, text in tables.items()}}
    for name, text in files.items():
        write_generated(root / "tables" / name, text)
    (root / "figures").mkdir()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(root / "figures" / "pareto_l0.pdf")
    plt.close(fig)


@pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("make") is None,
                    reason="latexmk/make not installed (Debian: apt-get install latexmk "
                           "texlive-latex-base texlive-latex-recommended); CI installs them")
def test_paper_builds_against_smoke_inputs(tmp_path):
    paper = tmp_path / "paper"
    paper.mkdir()
    for name in ("main.tex", "refs.bib", "Makefile"):
        shutil.copy(PAPER_DIR / name, paper / name)
    inputs = tmp_path / "run"
    write_smoke_inputs(inputs)
    tables, figures = inputs / "tables", inputs / "figures"

    refused = subprocess.run(["make", "-C", str(paper), "pdf", f"TABLES={tables}",
                              f"FIGURES={figures}"], capture_output=True, text=True)
    assert refused.returncode != 0 and "refusing" in refused.stderr
    assert not (paper / "main.pdf").exists()

    out = inputs / "paper"
    build = subprocess.run(["make", "-C", str(paper), "pdf", f"TABLES={tables}",
                            f"FIGURES={figures}", f"OUTDIR={out}"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert (out / "main.pdf").stat().st_size > 10_000
    log = (out / "main.log").read_text(errors="replace")
    assert "atm_repro: SMOKE PROFILE watermark on" in log
    assert "figures/convergence.pdf is missing" in log  # placeholder, not an error
    assert "figures/pareto_l0.pdf is missing" not in log
    assert not re.search(r"(Citation|Reference) `[^']*' on page \d+ undefined", log)
    if shutil.which("pdftotext"):  # the smoke PDF reads like the canonical one (test_paper_pdf)
        assert internal_names(pdf_text(out / "main.pdf")) == []
