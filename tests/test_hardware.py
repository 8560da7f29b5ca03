"""atm_repro.hardware and the dtype checks of profiles: bfloat16 only where native."""

from __future__ import annotations

import dataclasses

import pytest

from atm_repro.config import ConfigError
from atm_repro.hardware import bf16_native, cpu_flags
from atm_repro.profiles import check_dtypes, load_profile

WITH_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx2\n"
WITHOUT_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx2\n"


def test_cpu_flags_and_native_bf16():
    assert {"avx512_bf16", "avx2"} <= cpu_flags(WITH_BF16)
    assert bf16_native("cpu", WITH_BF16)
    assert bf16_native("cpu", "flags\t: sse2 amx_bf16 amx_tile\n")
    assert not bf16_native("cpu", WITHOUT_BF16)
    assert not bf16_native("cpu", "no flags line here\n")


@pytest.mark.parametrize("key", ["model.dtype", "train.dtype"])
def test_bfloat16_without_native_support_is_refused(key, monkeypatch):
    import atm_repro.profiles as profiles

    monkeypatch.setattr(profiles, "bf16_native", lambda device, cpuinfo=None: False)
    with pytest.raises(ConfigError, match=f"{key}: bfloat16 is not native on this CPU"):
        load_profile("smoke", {key: "bfloat16"})
    cfg = load_profile("smoke")  # float32 needs nothing
    check_dtypes(cfg, WITHOUT_BF16)


def test_bfloat16_where_native_loads():
    cfg = load_profile("smoke")
    both = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, dtype="bfloat16"),
        train=dataclasses.replace(cfg.train, dtype="bfloat16"))
    check_dtypes(both, WITH_BF16)
    with pytest.raises(ConfigError, match="model.dtype"):
        check_dtypes(both, WITHOUT_BF16)
