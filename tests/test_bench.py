"""The bench (atm_repro.bench): the section registry, one tiny run of the caching
and training sections in their subprocesses, the rendering, the doc update, and the
SAELens row without SAELens. Nothing here asserts on speed."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from atm_repro import bench, cli
from atm_repro.bench import (
    Row,
    common,
    format_table,
    headline_fidelity,
    prompt_prefixes,
    render_markdown,
    run_bench,
    saelens,
)
from atm_repro.cache import ArraySource, build_cache
from atm_repro.config import ConfigError, SAESpec, TrainConfig
from atm_repro.files import update_doc
from atm_repro.hardware import bf16_native
from atm_repro.runs import bench_dir, eval_cache_dir
from atm_repro.saes import build_config
from atm_repro.saes.base import StepContext
from atm_repro.saes.io import SAEMeta, load_sae
from atm_repro.saes.registry import VARIANTS
from atm_repro.train import CHECKPOINT, BatchOrder, lr_multiplier, train_sae


def _rows(result: dict) -> dict[tuple[str, str], dict]:
    return {(r["stage"], r["measurement"]): r for r in result["rows"]}


def test_one_module_per_section_in_run_order():
    """Each section is the ``run`` of the package module named as it; the order of
    ``SECTIONS`` is the run order of ``run_bench`` (and of bench.json's sections)."""
    assert bench.SECTIONS == ("load", "caching", "training", "saelens", "evals",
                              "prompt_prefixes", "bfloat16", "bf16_fidelity", "bf16_forward",
                              "headline", "headline_fidelity", "bf16_cache")
    for name, run in bench.STAGES.items():
        module = importlib.import_module(f"atm_repro.bench.{name}")
        assert run is module.run
        assert module.__doc__.startswith(f"``{name}``: ")  # the section's definition
    assert set(bench.NEEDS_CACHE) == set(bench.SECTIONS) - {"load"}


def test_sections_share_code_only_through_common():
    """No section imports another: what two sections share lives once, in ``common``."""
    for name in bench.SECTIONS:
        path = Path(importlib.import_module(f"atm_repro.bench.{name}").__file__)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        assert {m for m in imported if m.startswith("atm_repro.bench")} == \
            {"atm_repro.bench.common"}, name


def test_cli_reports_a_bench_error_as_a_message(runs_dir, capsys):
    """A missing cache stops ``atm-repro bench`` with exit 1 and how to build it."""
    assert cli.main(["bench", "--profile", "smoke", "--only", "training"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("atm-repro: ") and "atm-repro cache --profile smoke" in err
    assert "Traceback" not in err


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


def test_prompt_prefixes_section_compares_both_preparations(tiny_profile):
    """Per-word and shared-prefix preparations of the same words, each SAE scored
    on both, and the change set against the crosscheck tolerance."""
    build_cache(tiny_profile, progress=False)
    rows, details = prompt_prefixes.run(tiny_profile, 2)
    modes = ["per word", "per word, examples redrawn",
             *(f"{n} prefixes" for n in prompt_prefixes.PREFIX_COUNTS)]
    assert list(details["modes"]) == modes
    by_name = {r.measurement: r for r in rows}
    saes = [n for n in prompt_prefixes.PREFIX_SAES if n in tiny_profile.train.saes]
    assert saes
    for mode in modes:
        assert by_name[f"{mode}: letters kept"].value == len(details["modes"][mode]["letters"])
        for name in saes:
            assert (by_name[f"{mode}: {name} full absorption (raw)"].value
                    == pytest.approx(details["modes"][mode]["saes"][name]
                                     ["mean_full_absorption"], nan_ok=True))
    shared = modes[2]
    assert f"{modes[1]}: {saes[0]} |full - per word|" in by_name
    assert f"{modes[1]}: forward speed-up over per word" not in by_name
    for name in saes:
        gap = by_name[f"{shared}: {name} |full - per word|"]
        full = details["modes"]
        assert gap.value == pytest.approx(abs(full[shared]["saes"][name]["mean_full_absorption"]
                                              - full["per word"]["saes"][name]
                                              ["mean_full_absorption"]), nan_ok=True)
        assert gap.target == "<= 0.05"
    # the two preparations saw the same words through different prompts
    assert details["modes"]["per word"]["probe_f1"] != details["modes"][shared]["probe_f1"]


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
             Row("saelens", saelens.SAELENS_MISSING, None).to_json()],
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
    assert saelens.SAELENS_MISSING in text


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
    rows, details = saelens.run(tiny_profile, steps=2)
    assert details == {"installed": False}
    assert [(r.stage, r.measurement, r.value, r.passed) for r in rows] == \
        [("saelens", "SAELens: not installed (pip install -e .[bench])", None, None)]


def test_saelens_side_by_side(tiny_profile):
    """Runs where the optional extra is installed (pip install -e .[bench])."""
    pytest.importorskip("sae_lens")
    build_cache(tiny_profile, progress=False)
    rows, details = saelens.run(tiny_profile, steps=3)
    assert details["saes"] == ["standard", "topk"]
    full = tiny_profile.train.tokens // tiny_profile.train.batch_size  # steps is not used
    assert {n: r["steps"] for n, r in details["runs"].items()} == {"standard": full, "topk": full}
    values = {r.measurement: r.value for r in rows}
    for name in details["saes"]:
        for m in ("ours", "SAELens", "ours / SAELens tokens/s"):
            assert math.isfinite(values[f"{name}: {m}"]) and values[f"{name}: {m}"] > 0
        assert 0 < values[f"{name}: FVU SAELens"] < 10


# --------------------------------------------------------------------------- SAELens mapping

SYN_D, SYN_F, SYN_B, SYN_STEPS = 8, 24, 32, 12


def _synthetic(n: int = 600) -> ArraySource:
    rng = np.random.default_rng(0)
    return ArraySource((rng.normal(size=(n, SYN_D)) * 4 + 2).astype(np.float32))


def _tcfg(**kw) -> TrainConfig:
    base = dict(width=SYN_F, batch_size=SYN_B, tokens=SYN_B * SYN_STEPS, lr=1e-3,
                lr_warmup_steps=3, lr_decay_frac=0.25, dead_tokens=4 * SYN_B + 5,
                init_sample_tokens=400, seeds=[3])
    return TrainConfig(**{**base, **kw})


SYN_SPECS = {"standard": SAESpec("standard", {"l1_coefficient": 2.0, "coeff_warmup_frac": 0.5}),
             "topk": SAESpec("topk", {"k": 3}, lr=2e-3)}


def test_saelens_schedule_decays_like_ours():
    assert saelens.saelens_schedule(496, 25, 0.2) == {"lr_warm_up_steps": 25, "lr_decay_steps": 99}
    assert saelens.saelens_schedule(10, 25, 0.2) == {"lr_warm_up_steps": 8, "lr_decay_steps": 2}
    assert saelens.saelens_schedule(10, 0, 0.0) == {"lr_warm_up_steps": 0, "lr_decay_steps": 0}


@pytest.mark.parametrize("dead_tokens,batch", [(100_000, 512), (1024, 512), (1000, 512),
                                               (512, 512), (100, 512)])
def test_saelens_dead_window_is_ours(dead_tokens, batch):
    """Ours: dead once the steps without firing hold >= dead_tokens tokens; SAELens:
    dead after more than ``window`` such steps. Same steps for every count."""
    window = saelens.saelens_dead_window(dead_tokens, batch)
    for n in range(300):
        assert (n * batch >= dead_tokens) == (n > window), n


def test_our_init_is_the_trainers(tmp_path):
    """``our_init`` starts exactly where ``train_sae`` starts (weights, b_dec, scale)."""
    source, tcfg = _synthetic(), _tcfg()
    for name, spec in SYN_SPECS.items():
        meta = SAEMeta(model_name="synthetic", hook_name="blocks.0.hook_resid_post", layer=0,
                       context_size=8, dataset_path="synthetic")
        result = train_sae(name, spec, 3, tcfg, source, tmp_path / name, meta, progress=False,
                           stop_after_steps=0)  # checkpoint of the initial state
        ckpt = torch.load(tmp_path / name / CHECKPOINT, map_location="cpu", weights_only=True)
        assert result.steps == 0
        sae, scale = saelens.our_init(spec, tcfg, source, 3)
        assert scale == ckpt["input_scale"]
        for key, value in sae.state_dict().items():
            torch.testing.assert_close(value, ckpt["sae"][key], rtol=0, atol=0)


def _saelens_shaped(D: int, F: int, W_dec_shape: tuple[int, int] | None = None) -> torch.nn.Module:
    """A module with SAELens's parameter names and layout."""
    module = torch.nn.Module()
    for name, shape in (("W_enc", (D, F)), ("W_dec", W_dec_shape or (F, D)), ("b_enc", (F,)),
                        ("b_dec", (D,))):
        setattr(module, name, torch.nn.Parameter(torch.zeros(shape)))
    return module


def test_copy_init_copies_every_tensor_and_refuses_a_transpose():
    source, tcfg = _synthetic(), _tcfg()
    ours, _ = saelens.our_init(SYN_SPECS["topk"], tcfg, source, 3)
    theirs = _saelens_shaped(SYN_D, SYN_F)
    saelens.copy_init(ours, theirs)
    for name in saelens.SAELENS_TENSORS:
        assert torch.equal(getattr(theirs, name), getattr(ours, name))
    with pytest.raises(bench.BenchError, match="W_dec"):
        saelens.copy_init(ours, _saelens_shaped(SYN_D, SYN_F, W_dec_shape=(SYN_D, SYN_F)))
    jumprelu, _ = saelens.our_init(SAESpec("jumprelu", {}), tcfg, source, 3)
    with pytest.raises(bench.BenchError, match="parameters SAELens lacks"):
        saelens.copy_init(jumprelu, _saelens_shaped(SYN_D, SYN_F))


def test_saelens_unmatched_names_what_saelens_hard_codes():
    cfg = build_config("topk", {"k": 3}, SYN_D, SYN_F)
    assert saelens.saelens_unmatched(_tcfg(), cfg, SYN_STEPS) == []
    odd = saelens.saelens_unmatched(_tcfg(grad_clip=0.5, lr_warmup_steps=11),
                                  build_config("topk", {"k": 3, "aux_k": 2}, SYN_D, SYN_F),
                                  SYN_STEPS)
    assert [n.split()[0] for n in odd] == ["grad_clip", "aux_k", "lr"]


@pytest.mark.parametrize("name", list(SYN_SPECS))
def test_saelens_trainer_runs_our_recipe(name):
    """SAELens's trainer, set up by the bench, against ours step by step: the same
    first loss (init, layout, scale, L1 definition), lr and sparsity coefficient at
    every step, betas, dead window, and the batches in our order."""
    sae_lens = pytest.importorskip("sae_lens")
    source, tcfg, spec = _synthetic(), _tcfg(), SYN_SPECS[name]
    trainer = saelens.saelens_trainer(sae_lens, spec, tcfg, source, SYN_STEPS)
    ours, scale = saelens.our_init(spec, tcfg, source, 3)
    lr = spec.lr or tcfg.lr
    assert (trainer.cfg.adam_beta1, trainer.cfg.adam_beta2) == ours.adam_betas
    assert not trainer.cfg.autocast
    assert trainer.cfg.dead_feature_window == 4  # ceil((4 B + 5) / B) - 1

    seen = []
    forward = trainer.sae.training_forward_pass

    def record(step_input):
        out = forward(step_input)
        seen.append((trainer.optimizer.param_groups[0]["lr"],
                     step_input.coefficients.get("l1"), out.loss.item(), step_input.sae_in))
        return out

    trainer.sae.training_forward_pass = record
    trainer.fit()
    assert len(seen) == SYN_STEPS
    order = BatchOrder(len(source), SYN_B, 3)
    for t, (step_lr, coeff, _, x) in enumerate(seen):
        assert step_lr == pytest.approx(lr * lr_multiplier(t, SYN_STEPS, 3, 0.25), rel=1e-6), t
        ctx = StepContext(t, SYN_STEPS, torch.zeros(SYN_F, dtype=torch.bool), torch.Generator())
        if name == "standard":
            assert coeff == pytest.approx(2.0 * ctx.warmup(0.5), rel=1e-6), t
        torch.testing.assert_close(x, torch.from_numpy(source.gather(order.indices(t))) * scale)
    assert seen[-1][0] < lr / 2  # decays
    x0 = seen[0][3]
    ctx = StepContext(0, SYN_STEPS, torch.zeros(SYN_F, dtype=torch.bool), torch.Generator())
    assert seen[0][2] == pytest.approx(ours.training_forward(x0, ctx).loss.item(), rel=1e-5)


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
    for name in common.FIDELITY_SPECS:
        for _, label in common.FIDELITY_METRICS:
            assert sum(m.startswith(f"{name} {label}: bfloat16 - float32 (95% CI [")
                       for m in fidelity) == 1
            std = rows[("bf16 fidelity", f"{name} {label}: float32 seed std")]["value"]
            # the tiny model may keep no letter: absorption can be undefined there
            assert std >= 0 or (math.isnan(std) and "absorption" in label)
    values = result["stages"]["bf16_fidelity"]["details"]["values"]
    assert len(values["topk/float32"]["l0"]) == len(common.FIDELITY_SEEDS)
    assert values["topk/float32"]["l0"] == values["topk/bfloat16"]["l0"]  # L0 = k both ways
    assert values["atm/float32"]["explained_variance"] != values["atm/bfloat16"][
        "explained_variance"]


@pytest.mark.skipif(not bf16_native("cpu"), reason="bfloat16 is not native on this CPU")
def test_bf16_forward_section_runs_each_pipeline_on_its_own_data(tiny_profile, tmp_path):
    build_cache(tiny_profile, progress=False)
    result = run_bench(tiny_profile, steps=2, only=["bf16_forward"],
                       doc_path=tmp_path / "benchmarks.md", progress=False)
    rows = _rows(result)
    for dtype in ("float32", "bfloat16"):
        assert rows[("bf16 forward", f"absorption preparation, {dtype}: model forwards")][
            "value"] > 0
    layer = tiny_profile.train.layer
    bf16 = common.with_model_dtype(tiny_profile, "bfloat16")
    bf16 = dataclasses.replace(bf16, cache=dataclasses.replace(bf16.cache, layers=[layer]),
                               cross_layer=dataclasses.replace(bf16.cross_layer, layers=[layer]))
    assert common.open_cache(bf16).layers == [layer]  # built here, cut after the main layer
    prepared = list((eval_cache_dir(tiny_profile) / "absorption").glob("*.npz"))
    assert len(prepared) == 2  # one preparation per model dtype
    values = result["stages"]["bf16_forward"]["details"]["values"]
    # TopK trains in float32 either way: only the residuals it reads differ
    assert values["topk/float32"]["explained_variance"] != values["topk/bfloat16"][
        "explained_variance"]
    assert sum(m.startswith("atm L0: bfloat16 - float32 (95% CI [")
               for s, m in rows if s == "bf16 forward") == 1


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


def test_evals_section_times_absorption_probing_and_the_splice(tiny_profile):
    build_cache(tiny_profile, progress=False)
    result = run_bench(tiny_profile, steps=2, only=["evals"], progress=False)
    rows = _rows(result)
    names = list(result["stages"]["evals"]["details"]["saes"])
    assert names                                        # bench runs stand in for main runs
    for measurement in (["absorption: prepare", "probing: prepare"]
                        + [f"{e}: {n}" for e in ("absorption", "probing", "core splice")
                           for n in names]):
        assert rows[("evals", measurement)]["value"] > 0, measurement
    splice = [m for (stage, m) in rows if m.startswith("core splice: clean and zero")]
    head = [m for (stage, m) in rows if m.startswith("core splice: LM head")]
    assert len(splice) == len(head) == 1
    assert rows[("evals", head[0])]["value"] > 0


@pytest.mark.skipif(not bf16_native("cpu"), reason="bfloat16 is not native on this CPU")
def test_headline_sections(tiny_profile, tmp_path):
    """Headline shapes: every family compiled in bfloat16 at width 4096 and both
    batches, rated against one square GEMM, ATM and JumpReLU against the standard
    SAE, evals timed per SAE; its fidelity check trains each family both ways; the
    bfloat16 cache halves the bytes and moves the rows by bfloat16 rounding only."""
    build_cache(tiny_profile, progress=False)
    result = run_bench(tiny_profile, steps=2, only=["headline", "headline_fidelity",
                                                    "bf16_cache"],
                       doc_path=tmp_path / "benchmarks.md", progress=False)
    rows = _rows(result)
    specs = common.headline_specs(tiny_profile)
    assert sorted(s.variant for s in specs.values()) == sorted(VARIANTS)  # every family
    assert all(specs[n].params == s.params for n, s in tiny_profile.train.saes.items()
               if n in specs and s.variant != "atm")  # the profile's own, where it has them
    assert all(s.dtype == "bfloat16" for s in specs.values())
    assert all(s.params["warmup_steps"] == 0 for s in specs.values() if s.variant == "atm")
    assert rows[("headline", "square bfloat16 GEMM (2048^3)")]["value"] > 0
    for B in common.HEADLINE_BATCHES:
        for name in specs:
            assert rows[("headline", f"B {B}, {name}: tokens/s")]["value"] > 0
            assert rows[("headline", f"B {B}, {name}: achieved / square GEMM")]["target"] == \
                ">= 0.6"
        for name in ("atm", "jumprelu"):
            assert rows[("headline", f"B {B}: {name} / standard tokens/s")]["target"] == ">= 0.85"
    for name in specs:
        for what in ("absorption", "probing", "core splice"):
            assert rows[("headline evals", f"{what}: {name}")]["value"] > 0
    largest = max(common.HEADLINE_BATCHES)
    trained = load_sae(bench_dir(tiny_profile) / "headline" / f"atm-B{largest}")
    assert trained.cfg.d_sae == common.HEADLINE_WIDTH
    values = result["stages"]["headline_fidelity"]["details"]["values"]
    for name in specs:
        for arm in ("float32", "compiled bfloat16"):
            assert len(values[f"{name}/{arm}"]["l0"]) == \
                len(headline_fidelity.HEADLINE_FIDELITY_SEEDS)
        assert rows[("headline fidelity", f"{name} l0: outside the float32 range by")][
            "target"] == "<= 0"
    assert values["atm/float32"]["mse"] != values["atm/compiled bfloat16"]["mse"]  # both ran
    for split in ("train", "eval"):
        err = rows[("bf16 cache", f"{split} rows: mean relative error")]["value"]
        assert 0 < err < 100 * 2.0**-8  # percent: bfloat16 keeps 8 significant bits
    assert 0.45 < rows[("bf16 cache", "bytes on disk: bfloat16 / float32")]["value"] < 0.55
    assert sum(s == "bf16 cache" and "bfloat16 - float32" in m for s, m in rows) == \
        len(common.FIDELITY_SPECS) * len(common.FIDELITY_METRICS)


def test_headline_steady_state_and_run_rates(tiny_profile):
    """The headline bench counts a latent dead after a few silent batches (AuxK runs
    from the start), and sets the profile's own finished runs at a headline
    shape beside its timing: median tokens/s over the seeds found, and run / bench."""
    from atm_repro.bench import headline
    from atm_repro.runs import sae_dir

    B = common.HEADLINE_BATCHES[0]
    shaped = common.headline_profile(tiny_profile, B)
    assert headline.steady_state(shaped).train.dead_tokens == headline.STEADY_DEAD_BATCHES * B
    name = next(iter(tiny_profile.train.saes))
    assert headline.run_rates(shaped, {}) == []  # no finished runs
    for seed, rate in zip(tiny_profile.train.seeds_of(name), (1000.0, 3000.0, 2000.0)):
        path = sae_dir(shaped, shaped.train.layer, name, seed)
        path.mkdir(parents=True)
        (path / "metrics.json").write_text(json.dumps({"tokens_per_s": rate}))
    n = len(tiny_profile.train.seeds_of(name))
    rows = {r.measurement: r.value for r in headline.run_rates(shaped, {(name, B): B / 4000.0})}
    median = float(np.median([1000.0, 3000.0, 2000.0][:n]))
    assert rows[f"B {B}, {name}: tokens/s over the run (median of {n})"] == median
    assert rows[f"B {B}, {name}: run / bench tokens/s"] == pytest.approx(median / 4000.0)
    narrow = dataclasses.replace(shaped, train=dataclasses.replace(shaped.train, width=2048))
    assert headline.run_rates(narrow, {}) == []  # not a headline shape


def test_headline_specs_time_every_variant():
    """The headline bench times every variant whatever the profile trains: the
    profile's first clean spec of a variant (its parameters, ATM masking from step 1,
    the profile's budget ignored), else the variant at its defaults."""
    from atm_repro.profiles import load_profile

    cpu = load_profile("cpu")
    specs = common.headline_specs(cpu)
    assert sorted(s.variant for s in specs.values()) == sorted(VARIANTS)
    assert specs["topk"].params == cpu.train.saes["topk"].params
    assert specs["topk"].lr == cpu.train.saes["topk"].lr
    assert specs["atm"].params == {**cpu.train.saes["atm"].params, "warmup_steps": 0}
    assert "atm-paper" not in specs and "atm-short" not in specs  # first spec per variant
    assert "standard" not in cpu.train.saes and specs["standard"].params == {}
    assert all(s.dtype == "bfloat16" and s.width is None and s.tokens is None
               for s in specs.values())
