"""atm_repro.report.cross_model: the main comparison per model, on curves whose
answer is known, and the companions' results read from their own run dirs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import SWEEPS, body_rows, curve_table
from matplotlib.colors import to_hex

from atm_repro.config import ConfigError
from atm_repro.profiles import load_profile
from atm_repro.report import style
from atm_repro.report.cross_model import (
    ModelResults,
    companion_results,
    cross_model_frame,
    cross_model_numbers,
    cross_model_table,
    health_numbers,
)
from atm_repro.report.plots import plot_cross_model
from atm_repro.report.provenance import Stamp


@pytest.fixture(scope="module")
def models():
    """Gemma (cpu) as ``curve_table`` draws it; SmolLM2 with TopK's absorption
    below ATM's, so that the verdict flips between the models, and every L0 x2."""
    cpu, smol = load_profile(SWEEPS), load_profile("smollm2")
    second = curve_table(smol, shift_l0={f: 2.0 for f in smol.ablations.sparsity_sweeps})
    topk = second["base"] == "topk"
    for col in ("absorption/mean_full_absorption", "absorption/raw/mean_full_absorption"):
        second.loc[topk, col] = 0.05
    return [ModelResults(cpu, None, curve_table(cpu)), ModelResults(smol, None, second)]


def cell(frame, model, other, metric):
    row = frame[(frame["model"] == model) & (frame["other"] == other)
                & (frame["metric"] == metric)]
    assert len(row) == 1
    return row.iloc[0]


def test_each_model_is_compared_at_its_own_topk_l0(models):
    frame = cross_model_frame(models)
    full = "absorption/mean_full_absorption"
    gemma, smol = (cell(frame, m, "topk", full) for m in ("gemma-3-270m", "smollm2-135m"))
    assert gemma["target_l0"] == 40.0 and smol["target_l0"] == 80.0
    assert gemma["diff"] == pytest.approx(0.2 - 0.4) and gemma["verdict"] == "ATM better"
    assert smol["diff"] == pytest.approx(0.2 - 0.05) and smol["verdict"] == "ATM worse"
    assert (gemma["layer"], smol["layer"]) == (8, 14)
    # only the L0 match, only the three metrics; SmolLM2 has no batchtopk / standard
    assert set(frame["metric"]) == {"core/explained_variance", full,
                                    "absorption/mean_absorption_fraction"}
    assert not {"batchtopk", "standard"} & set(frame.loc[frame["model"] == "smollm2-135m",
                                                         "other"])
    assert cell(frame, "gemma-3-270m", "standard", full)["verdict"] == "not meaningful"


def test_table_has_a_column_per_model_and_numbers_per_model(models):
    frame = cross_model_frame(models)
    text = cross_model_table(frame, Stamp("cpu", False, "abc1234"))
    assert "\\label{tab:cross_model}" in text
    assert "gemma-3-270m, layer 8 ($L_0 = 40$)" in text
    assert "smollm2-135m, layer 14 ($L_0 = 80$)" in text
    topk_full = [r for r in body_rows(text) if r.startswith("TopK & full absorption")]
    assert len(topk_full) == 1
    assert "-0.200 [-0.200, -0.200] better" in topk_full[0]
    assert "0.150 [0.150, 0.150] worse" in topk_full[0]
    # a family the second model lacks says so, rather than showing a number
    standard = [r for r in body_rows(text) if r.startswith("standard (L1) & full")][0]
    assert standard.rstrip(" \\").endswith("& not trained")
    numbers = cross_model_numbers(frame)
    assert numbers["crossmodel/smollm2/topk/mean_full_absorption/diff"] == pytest.approx(0.15)
    assert numbers["crossmodel/smollm2/topk/mean_full_absorption/verdict"] == "ATM worse"
    assert numbers["crossmodel/sweeps/target"] == 40.0
    assert numbers["crossmodel/smollm2/model"] == "smollm2-135m"


def test_figure_has_a_row_per_model_in_family_colours(models):
    frame = cross_model_frame(models)
    fig = plot_cross_model(frame)
    axes = fig.axes
    assert len(axes) == 6  # 2 models x 3 metrics
    assert axes[0].get_ylabel().startswith("gemma-3-270m") and \
        axes[3].get_ylabel().startswith("smollm2-135m")
    assert axes[1].get_title() == "absorption fraction"
    labels = {style.label(f): f for f in style.families()}
    points = 0
    for ax in axes:
        for bars in ax.containers:
            line = bars.lines[0]
            assert to_hex(line.get_color()) == to_hex(style.family(labels[bars.get_label()]).color)
            points += 1
    assert points == len(frame.dropna(subset=["diff"]))
    # the first model's TopK point in the full-absorption panel sits at -0.2
    topk = [b for b in axes[2].containers if b.get_label() == "TopK"]
    assert np.allclose(topk[0].lines[0].get_ydata(), [-0.2])
    # standard's full absorption is not meaningful: a hollow marker
    std = [b for b in axes[2].containers if b.get_label() == style.label("standard")][0]
    assert std.lines[0].get_markerfacecolor() == "none"
    assert fig.get_figwidth() <= style.MAX_WIDTH


def test_companion_without_results_names_the_command(runs_dir):
    cpu = load_profile(SWEEPS)
    with pytest.raises(ConfigError, match="run `atm-repro run --profile smollm2` first"):
        companion_results(cpu)
    assert companion_results(load_profile("smoke")) == []


def test_missing_target_gives_na(models):
    cpu = models[0]
    far = cpu.table.copy()
    atm = far["base"] == "atm"
    far.loc[atm, "core/l0"] = far.loc[atm, "core/l0"] * 10  # ATM's curve starts at L0 200
    frame = cross_model_frame([ModelResults(cpu.cfg, None, far)])
    row = cell(frame, "gemma-3-270m", "topk", "core/explained_variance")
    assert math.isnan(row["diff"]) and row["verdict"] == "n/a"
    text = cross_model_table(frame, Stamp("cpu", False, "abc1234"))
    assert [r for r in body_rows(text) if r.startswith("TopK & expl")][0].rstrip(" \\") \
        .endswith("n/a")


def test_health_numbers_per_model(models):
    cpu, smol = models
    table = smol.table.copy()
    table["absorption/max_k1_f1"] = 0.3
    table.loc[table.index[4], "absorption/max_k1_f1"] = 0.45  # one SAE, any seed
    table.loc[table.index[:9], "absorption/meaningful"] = 0.0
    numbers = health_numbers([ModelResults(smol.cfg, None, table)])
    assert numbers["crossmodel/smollm2/best_letter_f1"] == 0.45
    assert numbers["crossmodel/smollm2/meaningful_percent"] == \
        pytest.approx(100 * (1 - 9 / len(table)))
