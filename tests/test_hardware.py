"""atm_repro.hardware and the dtype checks: bfloat16 only where it is native, and
refused before any heavy work (not when a profile is merely read)."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys

import pytest

import atm_repro.hardware as hardware_mod
from atm_repro import pipeline
from atm_repro.config import ConfigError, SAESpec
from atm_repro.hardware import bf16_native, cpu_flags, require_native_dtype
from atm_repro.profiles import check_dtypes, load_profile

WITH_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx2\n"
WITHOUT_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx2\n"


def test_cpu_flags_and_native_bf16():
    assert {"avx512_bf16", "avx2"} <= cpu_flags(WITH_BF16)
    assert bf16_native("cpu", WITH_BF16)
    assert bf16_native("cpu", "flags\t: sse2 amx_bf16 amx_tile\n")
    assert not bf16_native("cpu", WITHOUT_BF16)
    assert not bf16_native("cpu", "no flags line here\n")


def test_every_dtype_the_profile_asks_for_is_checked():
    cfg = load_profile("smoke")
    check_dtypes(cfg, WITHOUT_BF16)  # float32 needs nothing
    for where, changed in (
            ("model.dtype", {"model": dataclasses.replace(cfg.model, dtype="bfloat16")}),
            ("train.dtype", {"train": dataclasses.replace(cfg.train, dtype="bfloat16")}),
            ("train.saes.topk.dtype", {"train": dataclasses.replace(cfg.train, saes={
                **cfg.train.saes, "topk": SAESpec("topk", {"k": 4}, dtype="bfloat16")})})):
        bf16 = dataclasses.replace(cfg, **changed)
        check_dtypes(bf16, WITH_BF16)
        with pytest.raises(ConfigError, match=f"{where}: bfloat16 is not native on this CPU"):
            check_dtypes(bf16, WITHOUT_BF16)
    require_native_dtype("x", "float32", "cpu", WITHOUT_BF16)


def test_emulated_bfloat16_stops_the_run_before_any_notebook(monkeypatch, runs_dir):
    monkeypatch.setattr(hardware_mod, "bf16_native", lambda device, cpuinfo=None: False)

    def boom(*args, **kwargs):
        raise AssertionError("a notebook ran")

    monkeypatch.setattr("papermill.execute_notebook", boom)
    cfg = load_profile("smoke", {"train.dtype": "bfloat16"})  # reading the profile is fine
    with pytest.raises(ConfigError, match="train.dtype: bfloat16 is not native"):
        pipeline.run(cfg, "smoke", {"train.dtype": "bfloat16"}, log=lambda *a: None)


def test_trainer_and_model_load_refuse_emulated_bfloat16(monkeypatch, tmp_path):
    import numpy as np

    from atm_repro.cache import ArraySource
    from atm_repro.config import ModelConfig, TrainConfig
    from atm_repro.models import load_model
    from atm_repro.saes.io import SAEMeta
    from atm_repro.train import train_sae

    monkeypatch.setattr(hardware_mod, "bf16_native", lambda device, cpuinfo=None: False)
    meta = SAEMeta(model_name="synthetic", hook_name="blocks.0.hook_resid_post", layer=0,
                   context_size=8, dataset_path="synthetic")
    source = ArraySource(np.ones((256, 8), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"train.saes.topk.dtype \(or train.dtype\)"):
        train_sae("topk", SAESpec("topk", {"k": 2}, dtype="bfloat16"), 0,
                  TrainConfig(width=16, batch_size=64, tokens=128), source, tmp_path, meta,
                  progress=False)
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(ConfigError, match="model.dtype: bfloat16 is not native"):
        load_model(ModelConfig(name="tiny-gemma3", dtype="bfloat16"))


def test_auto_resolves_per_machine_and_specs_override_it():
    from atm_repro.config import TrainConfig
    from atm_repro.hardware import resolve_dtype
    from atm_repro.profiles import describe_dtypes
    from atm_repro.saes.io import SAEMeta
    from atm_repro.train import run_config, run_key

    assert resolve_dtype("auto", "cpu", WITH_BF16) == "bfloat16"
    assert resolve_dtype("auto", "cpu", WITHOUT_BF16) == "float32"
    assert resolve_dtype("float32", "cpu", WITH_BF16) == "float32"
    cfg = TrainConfig(dtype="auto")
    native = "bfloat16" if bf16_native("cpu") else "float32"
    atm, topk = SAESpec("atm"), SAESpec("topk", {"k": 4}, dtype="float32")
    assert cfg.for_spec(atm).dtype == "auto"  # the config reads no hardware
    assert run_config(cfg, atm).dtype == native  # the run resolves it
    assert run_config(cfg, topk).dtype == "float32"
    # a run's key records the resolved dtype: "auto" keys as that dtype asked for outright
    meta = SAEMeta(model_name="m", hook_name="h", layer=1, context_size=8, dataset_path="d")
    keyed = run_key(atm, 0, run_config(cfg, atm), meta, "data")
    assert keyed["train"]["dtype"] == native
    assert keyed == run_key(atm, 0, run_config(TrainConfig(dtype=native), atm), meta, "data")
    smoke = load_profile("smoke")
    saes = {**smoke.train.saes, "topk": SAESpec("topk", {"k": 4}, dtype="float32")}
    auto = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, dtype="auto",
                                                                saes=saes))
    assert describe_dtypes(auto, WITH_BF16) == (
        "dtypes: model forward float32; SAE training bfloat16 (auto: bfloat16 is native "
        "here), except topk float32")
    assert describe_dtypes(auto, WITHOUT_BF16) == (
        "dtypes: model forward float32; SAE training float32 (auto: bfloat16 is not native "
        "here)")


def test_flush_subnormals_zeroes_subnormal_results_in_a_fresh_process():
    """Run apart: the mode is per thread and would leak into other tests."""
    code = ("import torch; from atm_repro.hardware import flush_subnormals; "
            "x = torch.tensor([1e-39]); before = (x * 1.0).item(); flush_subnormals(); "
            "print(before > 0, (x * 1.0).item() == 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


X86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                         reason="torch has a subnormal flush mode on x86 only")


@X86
@pytest.mark.parametrize("first", ["flush_subnormals(); ", ""])
def test_require_subnormal_flush_catches_a_worker_thread_made_before_the_flush(first):
    """Two threads: the worker made by the first parallel op keeps subnormals when
    the flush comes after it, and the check sees that half of the probe."""
    code = ("import torch; torch.set_num_threads(2); "
            "from atm_repro.hardware import flush_subnormals, require_subnormal_flush; "
            f"{first}torch.ones(1 << 20).mul_(2); flush_subnormals(); require_subnormal_flush()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if first:
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode != 0 and "created before the flush mode was set" in out.stderr
