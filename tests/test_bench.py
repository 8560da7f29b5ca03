"""The bench (atm_repro.bench): one tiny run of the caching and training sections
in their subprocesses, the rendering, the doc update, and the SAELens row without
SAELens. Nothing here asserts on speed."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import pytest

from atm_repro import bench
from atm_repro.bench import Row, format_table, render_markdown, run_bench, update_doc
from atm_repro.cache import build_cache
from atm_repro.config import ConfigError
from atm_repro.hardware import bf16_native
from atm_repro.runs import bench_dir


def _rows(result: dict) -> dict[tuple[str, str], dict]:
    return {(r["stage"], r["measurement"]): r for r in result["rows"]}


def test_caching_and_training_sections(tiny_profile, tmp_path):
    build_cache(tiny_profile, progress=False)
    doc = tmp_path / "benchmarks.md"
    result = run_bench(tiny_profile, steps=2, only=["training", "caching"], doc_path=doc,
                       progress=False)

    out = bench_dir(tiny_profile)
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(result))
    assert result["sections"] == ["caching", "training"]  # SECTIONS order, not --only's
    assert result["command"].endswith("--steps 2 --only caching training")
    assert set(result["machine"]) >= {"cpu", "logical_cores", "ram_gib", "torch",
                                      "torch_threads"}
    assert result["machine"]["torch_threads"] == 1
    assert set(result["stages"]) == {"caching", "training"}
    assert set(result["stages"]["training"]["details"]) >= {"B", "D", "F", "reference_s"}
    for row in result["rows"]:
        assert set(row) == {"stage", "measurement", "value", "unit", "target", "passed"}

    rows = _rows(result)
    saes = tiny_profile.train.saes
    expected = [("caching", m) for m in ("capture_residuals", "bare truncated forward",
                                         "capture / bare", "peak resident memory")]
    expected += [("training", m) for m in ("matmul reference (peak)", "peak resident memory")]
    expected += [("training", f"{n}: {m}") for n in saes
                 for m in ("tokens/s", "achieved / peak FLOP rate")]
    expected += [("training", f"{n}: tokens/s / standard tokens/s")  # masked-reg: batchtopk
                 for n in ("topk", "batchtopk", "masked-reg")]
    expected += [("training", "atm: step time overhead over standard")]
    assert sorted(rows) == sorted(expected)

    for (stage, name), row in rows.items():
        if row["unit"] in ("x", "tok/s", "GFLOP/s", "MiB"):
            assert math.isfinite(row["value"]) and row["value"] > 0, (stage, name)
        assert (row["target"] is None) == (row["passed"] is None), (stage, name)
    assert rows[("caching", "capture / bare")]["target"] == ">= 0.9"
    assert rows[("training", "atm: achieved / peak FLOP rate")]["target"] == ">= 0.6"
    assert rows[("training", "jumprelu: achieved / peak FLOP rate")]["target"] is None
    assert 100 < rows[("caching", "peak resident memory")]["value"] < 4096

    md = (out / "bench.md").read_text()
    assert "| stage | measurement | value | target | pass |" in md
    assert "| caching | capture / bare |" in md
    assert not doc.exists()  # smoke numbers never reach docs/
    # each SAE ran exactly the asked steps in the bench's own directory
    metrics = json.loads((out / "saes" / "atm" / "metrics.json").read_text())
    assert metrics["steps"] == 2


def test_bad_requests_fail_before_any_stage(tiny_profile):
    with pytest.raises(ConfigError, match="unknown section"):
        run_bench(tiny_profile, only=["caching", "speed"], progress=False)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        run_bench(tiny_profile, steps=0, progress=False)
    with pytest.raises(bench.BenchError, match="atm-repro cache --profile smoke"):
        run_bench(tiny_profile, only=["training"], progress=False)  # no cache built


RESULT = {
    "profile": "cpu", "profile_fingerprint": "abc", "command": "atm-repro bench --profile cpu",
    "date": "2026-01-01", "steps": 5, "sections": ["caching"],
    "machine": {"cpu": "Test CPU", "logical_cores": 2, "usable_cores": 2, "ram_gib": 8.0,
                "python": "3.11", "torch": "2.13", "torch_threads": 2, "device": "cpu"},
    "rows": [Row("caching", "capture / bare", 0.95, "x", ">=", 0.9).to_json(),
             Row("caching", "capture_residuals", 1234.5, "tok/s").to_json(),
             Row("training", "atm: step time overhead over standard", 22.0, "%", "<=",
                 15.0).to_json(),
             Row("saelens", bench.SAELENS_MISSING, None).to_json()],
}


def test_rendering_and_targets():
    rows = RESULT["rows"]
    assert [r["passed"] for r in rows] == [True, None, False, None]
    md = render_markdown(RESULT)
    assert "| stage | measurement | value | target | pass |" in md
    assert "| caching | capture / bare | 0.950 x | >= 0.9 | pass |" in md
    assert "| caching | capture_residuals | 1,234 tok/s |  |  |" in md
    assert "| training | atm: step time overhead over standard | 22.00 % | <= 15 | miss |" in md
    assert "Test CPU, 2 logical cores" in md and "torch 2.13, torch threads: 2" in md
    text = format_table(RESULT)
    assert text.splitlines()[0].split() == ["stage", "measurement", "value", "target", "pass"]
    assert bench.SAELENS_MISSING in text


def test_update_doc_replaces_only_its_profile_block(tmp_path):
    doc = tmp_path / "docs" / "benchmarks.md"
    update_doc(doc, "cpu", "first\n")
    update_doc(doc, "paper", "paper table\n")
    doc.write_text("# Benchmarks\n\nprose\n\n" + doc.read_text())
    update_doc(doc, "cpu", "second\n")
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nprose\n")
    assert "first" not in text and text.count("second") == 1
    assert "<!-- bench:cpu:start -->\nsecond\n<!-- bench:cpu:end -->" in text
    assert "paper table" in text


def test_saelens_row_without_saelens(tiny_profile, monkeypatch):
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # import sae_lens -> ImportError
    rows, details = bench.bench_saelens(tiny_profile, steps=2)
    assert details == {"installed": False}
    assert [(r.stage, r.measurement, r.value, r.passed) for r in rows] == \
        [("saelens", "SAELens: not installed (pip install -e .[bench])", None, None)]


def test_saelens_side_by_side(tiny_profile):
    """Runs where the optional extra is installed (pip install -e .[bench])."""
    pytest.importorskip("sae_lens")
    build_cache(tiny_profile, progress=False)
    rows, details = bench.bench_saelens(tiny_profile, steps=3)
    assert details["saes"] == ["standard", "topk"]
    values = {r.measurement: r.value for r in rows}
    for name in details["saes"]:
        for m in ("ours", "SAELens", "ours / SAELens tokens/s"):
            assert math.isfinite(values[f"{name}: {m}"]) and values[f"{name}: {m}"] > 0
        assert 0 < values[f"{name}: FVU SAELens"] < 10


@pytest.mark.skipif(not bf16_native("cpu"), reason="bfloat16 is not native on this CPU")
def test_bfloat16_sections(tiny_profile, tmp_path):
    build_cache(tiny_profile, progress=False)
    result = run_bench(tiny_profile, steps=2, only=["bfloat16", "bf16_fidelity"],
                       doc_path=tmp_path / "benchmarks.md", progress=False)
    rows = _rows(result)
    layers = tiny_profile.cache.layers
    for dtype in ("float32", "bfloat16"):
        assert rows[("bfloat16", f"caching, {dtype}: capture_residuals")]["value"] > 0
    speed = rows[("bfloat16", "caching: bfloat16 / float32 speed")]
    assert speed["target"] == ">= 1.3" and speed["value"] > 0
    for layer in layers:
        # bfloat16 keeps ~3 significant digits: the residuals move, but by well under 10%
        err = rows[("bfloat16", f"caching, layer {layer}: mean relative error")]["value"]
        assert 0 < err < 10
        assert 0.9 < rows[("bfloat16", f"caching, layer {layer}: worst per-token cosine")][
            "value"] < 1
    for name in tiny_profile.train.saes:
        assert rows[("bfloat16", f"training {name}: bfloat16 / float32 speed")]["value"] > 0
    fidelity = [m for s, m in rows if s == "bf16 fidelity"]
    for name in bench.FIDELITY_SPECS:
        for _, label in bench.FIDELITY_METRICS:
            assert sum(m.startswith(f"{name} {label}: bfloat16 - float32 (95% CI [")
                       for m in fidelity) == 1
            std = rows[("bf16 fidelity", f"{name} {label}: float32 seed std")]["value"]
            # the tiny model may keep no letter: absorption can be undefined there
            assert std >= 0 or (math.isnan(std) and "absorption" in label)
    values = result["stages"]["bf16_fidelity"]["details"]["values"]
    assert len(values["topk/float32"]["l0"]) == len(bench.FIDELITY_SEEDS)
    assert values["topk/float32"]["l0"] == values["topk/bfloat16"]["l0"]  # L0 = k both ways
    assert values["atm/float32"]["explained_variance"] != values["atm/bfloat16"][
        "explained_variance"]


def test_a_partial_run_gets_its_own_doc_block(runs_dir, tmp_path, monkeypatch):
    from atm_repro.profiles import load_profile

    monkeypatch.setattr(bench, "_run_stage", lambda section, profile, steps, tmp: {
        "rows": [dataclasses.asdict(Row(section, "x", 1.0))], "wall_s": 0.0, "peak_rss_mib": 1.0,
        "details": {}})
    doc = tmp_path / "benchmarks.md"
    doc.write_text("intro\n<!-- bench:cpu:start -->\nfull run\n<!-- bench:cpu:end -->\n")
    run_bench(load_profile("cpu"), only=["load"], doc_path=doc, progress=False)
    text = doc.read_text()
    assert "full run" in text  # the full run's block is kept
    assert "<!-- bench:cpu:load:start -->" in text and "| load | x | 1.00 |" in text
