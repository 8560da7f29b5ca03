"""The command line, the papermill chain and notebook 05's evaluation driver."""

from __future__ import annotations

import re
import time

import nbformat
import pytest
from helpers import ONE_FAMILY, TINY_OVERRIDES, save_tiny_checkpoint

from atm_repro import cli, pipeline
from atm_repro.cache import ActivationCache, build_cache
from atm_repro.config import ConfigError, CorpusConfig
from atm_repro.corpus import load_articles
from atm_repro.evaluate import discover_saes, evaluate_profile
from atm_repro.profiles import load_profile
from atm_repro.report.provenance import output_dirs
from atm_repro.report.results import per_sae, read_results
from atm_repro.report.summaries import main_table
from atm_repro.runs import results_dir
from atm_repro.train import train_ablations, train_profile


def test_set_values_are_parsed_as_yaml():
    assert cli.parse_sets(["train.width=64", "cache.layers=[1, 2]", "model.name=x"]) == {
        "train.width": 64, "cache.layers": [1, 2], "model.name": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        cli.parse_sets(["train.width"])


def test_plan_prints_the_profile_and_bad_keys_exit_2(capsys):
    assert cli.main(["plan", "--profile", "paper"]) == 0
    assert "google/gemma-2-2b" in capsys.readouterr().out
    assert cli.main(["plan", "--profile", "smoke", "--set", "train.nope=1"]) == 2
    assert "unknown key(s) ['nope']" in capsys.readouterr().err


def test_notebook_selection():
    names = [nb.name for nb in pipeline.notebooks()]
    assert names == sorted(names) and len(names) == 5 and names[0].startswith("01_")
    assert [nb.name for nb in pipeline.notebooks(["03"])] == ["03_ablations.ipynb"]
    with pytest.raises(pipeline.PipelineError, match="no notebook matches"):
        pipeline.notebooks(["09"])


def only_notebook(tmp_path, monkeypatch, name: str, cells: list) -> None:
    """Make ``name`` (a parameters cell, then ``cells``) the chain's only notebook."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\noverrides = {}')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / name)
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path / "nb")


def test_failing_notebook_names_cell_and_partial_copy(tmp_path, monkeypatch, runs_dir):
    only_notebook(tmp_path, monkeypatch, "01_fails.ipynb",
                  [nbformat.v4.new_code_cell("x = 1"),
                   nbformat.v4.new_code_cell("raise RuntimeError('boom')")])
    with pytest.raises(pipeline.PipelineError, match=r"01_fails.ipynb failed in cell \d+ "
                                                     r"\(RuntimeError: boom\); partial copy"):
        pipeline.run(load_profile("smoke"), "smoke", log=lambda *a: None, timeout=120)
    assert (runs_dir / "smoke" / "notebooks" / "01_fails.ipynb").exists()


def test_run_rejects_bad_overrides_before_running(monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise AssertionError("a notebook ran")

    monkeypatch.setattr("papermill.execute_notebook", boom)
    assert cli.main(["run", "--profile", "smoke", "--set", "cache.nope=1"]) == 2
    assert "unknown key(s) ['nope']" in capsys.readouterr().err


def test_layer_beyond_the_model_is_refused_before_notebook_01(tmp_path, runs_dir, monkeypatch,
                                                              capsys):
    """A 4-layer checkpoint directory (weights removed: only its config and tokenizer
    may be read) with layer 6 cached: ``plan`` and ``run`` refuse it, no notebook runs."""
    def boom(*args, **kwargs):
        raise AssertionError("a notebook ran")

    monkeypatch.setattr("papermill.execute_notebook", boom)
    path = save_tiny_checkpoint(tmp_path / "neox", "gpt_neox",
                                load_articles(CorpusConfig(max_articles=120)))
    (path / "model.safetensors").unlink()
    sets = ["--set", f"model.name={path}", "--set", "cache.layers=[1, 2, 6]"]
    for command in ("plan", "run"):
        assert cli.main([command, "--profile", "smoke", *sets]) == 2
        err = capsys.readouterr().err
        assert re.search(r"configuration error: layer\(s\) \[6\] out of range for .*neox', "
                         r"which has 4 layers", err), err


def test_evaluate_profile_covers_every_sae_and_reruns_nothing(runs_dir):
    overrides = {**TINY_OVERRIDES, "cross_layer.layers": [1], "cross_layer.saes": ["topk"],
                 "train.tokens": 1024, "train.batch_size": 128, "ablations.factors": {},
                 "ablations.sparsity_sweeps": {"topk": {"param": "k", "values": [4]}},
                 "train.saes.topk.params.k": 8,
                 "evals.core.n_splice_sequences": 2,
                 "evals.absorption": {"n_words": 100},
                 "evals.probing": {"datasets": ["wiki_topic"], "n_train": 10, "n_test": 6,
                                   "max_tokens": 16}}
    cfg = load_profile("smoke", overrides)
    cache = ActivationCache.open(build_cache(cfg, progress=False))
    train_profile(cfg, cache, names=["topk"], progress=False)
    train_ablations(cfg, cache, progress=False)
    assert [r.sae_id for r in discover_saes(cfg)] == ["L1-topk-k4-s0", "L1-topk-s0", "L1-topk-s1"]

    evaluate_profile(cfg, progress=False)
    table = per_sae(read_results(cfg)).set_index("sae_id")
    assert table.loc["L1-topk-k4-s0", "group"] == "ablation"
    assert table.loc["L1-topk-k4-s0", "core/l0"] == pytest.approx(4.0)
    assert table.loc["L1-topk-k4-s0", "core/ce_loss_score"] == pytest.approx(
        table.loc["L1-topk-k4-s0", "core/ce_loss_score"])    # spliced: a number, not NaN
    assert table["probing/n_tasks"].isna()["L1-topk-k4-s0"]  # ablations are not probed
    for sae in ("L1-topk-s0", "L1-topk-s1"):
        assert table.loc[sae, "core/l0"] == pytest.approx(8.0)
        assert 0 <= table.loc[sae, "probing/n_tasks_counted"] <= table.loc[sae, "probing/n_tasks"]
        assert table.loc[sae, "probing/n_tasks"] > 0
        assert "core/ce_loss_score" in table.columns
        assert 0 < table.loc[sae, "stability/max_cos_mean"] <= 1
    assert list(main_table(per_sae(read_results(cfg))).index) == ["topk"]

    files = {p: p.stat().st_mtime_ns for p in results_dir(cfg).rglob("*.json")}
    evaluate_profile(cfg, progress=False)
    assert {p: p.stat().st_mtime_ns for p in results_dir(cfg).rglob("*.json")} == files


@pytest.mark.slow
def test_one_seed_one_family_profile_runs_notebooks_03_to_05_to_the_end(runs_dir):
    """``train.seeds: [0]`` and one SAE family (no ablation, sweep or second layer):
    notebooks 03 and 04 find nothing to train and say so; notebook 05 evaluates it and
    writes every table and figure; where the input is missing (a seed pair, a family to
    compare with) the table says why."""
    cfg = load_profile("smoke", ONE_FAMILY)
    train_profile(cfg, ActivationCache.open(build_cache(cfg, progress=False)), progress=False)
    lines = []
    stages = pipeline.run(cfg, "smoke", ONE_FAMILY, only=["03", "04", "05"],
                          log=lines.append, timeout=900)
    assert [s.notebook for s in stages] == ["03_ablations.ipynb", "04_cross_layer.ipynb",
                                            "05_evaluate.ipynb"]
    assert any(line.endswith("| 0 runs; factors: []") for line in lines)
    assert any(line.endswith("| layers: []; SAEs per layer: []") for line in lines)
    assert any(line.endswith("| 1 SAEs evaluated") for line in lines)
    assert any(re.search(r"\| \d+ files written$", line) for line in lines)  # the last cell
    assert list(per_sae(read_results(cfg))["sae_id"]) == ["L1-topk-s0"]
    figures, tables = output_dirs(cfg)
    assert "No seed pair" in (tables / "stability.tex").read_text()
    assert (figures / "density.pdf").exists() and not (figures / "stability.pdf").exists()


def test_progress_shows_cells_output_estimates_and_records_times(tmp_path, monkeypatch,
                                                                 runs_dir):
    only_notebook(tmp_path, monkeypatch, "01_hello.ipynb", [
        nbformat.v4.new_markdown_cell("# Title, not counted"),
        nbformat.v4.new_code_cell("# say hello\nprint('hello')\nprint('two')"),
        nbformat.v4.new_code_cell("import sys\nprint('bar', file=sys.stderr)")])
    lines = []
    pipeline.run(load_profile("smoke"), "smoke", log=lines.append, timeout=120)
    assert lines[0] == "[smoke] dtypes: model forward float32; SAE training float32"
    assert lines[1] == "[smoke] no recorded stage times yet: no estimate"
    cells = [line for line in lines if " cell " in line]
    assert not any("Title" in line for line in lines)
    assert re.fullmatch(r"\[smoke\] 01_hello cell 3/4 \(00:\d\d\) # say hello", cells[2])
    assert re.fullmatch(r"\[smoke\] 01_hello cell 3/4 \(00:\d\d\) \| hello", cells[3])
    assert cells[4].endswith("| two") and not any("bar" in line for line in lines)
    assert any(line.startswith("[smoke] figures: ") for line in lines)
    again = []
    pipeline.run(load_profile("smoke"), "smoke", log=again.append, timeout=120)
    assert re.fullmatch(r"\[smoke\] estimate from the last run: 01_hello 00:\d\d; "
                        r"total about 00:\d\d", again[1])


def test_cell_progress_heartbeat_and_partial_lines():
    lines = []
    with pipeline.CellProgress("[x] nb", 3, lines.append, heartbeat_s=0.05) as progress:
        progress.write("no newline yet")
        time.sleep(0.3)
    assert any(line.endswith("... still running") for line in lines)
    assert lines[-1].endswith("| no newline yet")
    assert pipeline.clock(3725) == "1:02:05" and pipeline.clock(72) == "01:12"


def test_companions_run_first_without_the_overrides(tmp_path, monkeypatch, runs_dir):
    only_notebook(tmp_path, monkeypatch, "01_hello.ipynb",
                  [nbformat.v4.new_code_cell("print(profile, overrides)")])
    companion = tmp_path / "buddy.yaml"
    companion.write_text("name: buddy\nsmoke: true\nwrites_paper: false\n")
    lines = []
    overrides = {"companions": [str(companion)], "seed": 3}
    results = pipeline.run(load_profile("smoke", overrides), "smoke", overrides,
                           log=lines.append, timeout=120)
    assert [r.output.parent.parent.name for r in results] == ["buddy", "smoke"]
    said = [line for line in lines if "| " in line]
    assert said[0].startswith("[buddy]") and said[0].endswith(f"| {companion} {{}}")
    assert said[1].startswith("[smoke]") and "'seed': 3" in said[1]


def test_published_notebook_keeps_figures_and_drops_machine_details(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"start_time": "2026-11-30T12:00:00", "input_path": "/x"}
    cell = nbformat.v4.new_code_cell("print(path)")
    cell.metadata["papermill"] = {"duration": 1.5}
    cell.metadata["execution"] = {"iopub.execute_input": "2026-11-30T12:00:00"}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout",
                               text=f"wrote {pipeline.REPO_ROOT}/figures/x.pdf\n"),
        nbformat.v4.new_output("stream", name="stderr", text="100%|####| 5/5 [00:01]\n"),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=",
                                                     "text/plain": "<Figure>"}),
    ]
    nb.cells = [cell]
    src, target = tmp_path / "in.ipynb", tmp_path / "out" / "05.ipynb"
    nbformat.write(nb, src)
    assert pipeline.publish(src, target)
    out = nbformat.read(target, as_version=4)
    assert "papermill" not in out.metadata
    (published,) = out.cells
    assert not {"papermill", "execution"} & set(published.metadata)
    assert [o.output_type for o in published.outputs] == ["stream", "display_data"]
    assert published.outputs[0].text == "wrote <repo>/figures/x.pdf\n"
    assert published.outputs[1].data["image/png"] == "iVBORw0KGgo="
    assert str(pipeline.REPO_ROOT) not in target.read_text()
    assert not pipeline.publish(src, target)  # unchanged: not rewritten
