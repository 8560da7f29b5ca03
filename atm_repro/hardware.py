"""What the machine computes natively: is bfloat16 a fast path here?

A CPU runs bfloat16 matmuls natively with the AVX-512 BF16 or AMX-BF16
instructions (``avx512_bf16`` / ``amx_bf16`` in /proc/cpuinfo's flags); without
them torch emulates bfloat16 and it is slower than float32. A CUDA device says
so itself (``torch.cuda.is_bf16_supported``). Hardware facts stay out of the
config dataclasses: ``train.dtype: auto`` is resolved here when a run starts
(``resolve_dtype``) and bfloat16 requests are checked here before heavy work
(``require_native_dtype``). Also here: the floating-point mode of training and
evaluation (``flush_subnormals``, ``require_subnormal_flush``).
"""

from __future__ import annotations

import functools
from pathlib import Path

from atm_repro.config import ConfigError

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _machine_cpuinfo() -> str:
    """/proc/cpuinfo, read once per process (empty off Linux): every run resolves
    ``train.dtype: auto`` against it."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (``cpuinfo``: the text of /proc/cpuinfo; this
    machine's when None; empty off Linux)."""
    if cpuinfo is None:
        cpuinfo = _machine_cpuinfo()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def bf16_native(device: str, cpuinfo: str | None = None) -> bool:
    """Whether ``device`` ("cpu", "cuda", "cuda:1") has native bfloat16 matmuls."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags(cpuinfo) & set(CPU_BF16_FLAGS))


def resolve_dtype(dtype: str, device: str, cpuinfo: str | None = None) -> str:
    """``auto`` -> bfloat16 where ``device`` runs it natively, else float32; other
    values as they are. A run's key records the resolved dtype."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if bf16_native(device, cpuinfo) else "float32"


def require_native_dtype(where: str, dtype: str, device: str, cpuinfo: str | None = None
                         ) -> None:
    """``ConfigError`` when ``where`` asks for bfloat16 on a device without native
    bfloat16: emulated bfloat16 is slower than float32 and would only lose
    precision. Called before any heavy work (the run, the trainer, the model
    load), not when a profile is merely loaded, so that every machine can read every
    profile."""
    if dtype == "bfloat16" and not bf16_native(device, cpuinfo):
        what = ("this GPU" if device.startswith("cuda") else
                f"this CPU (no {' / '.join(CPU_BF16_FLAGS)} flag in /proc/cpuinfo)")
        raise ConfigError(f"{where}: bfloat16 is not native on {what}; torch would "
                          f"emulate it, slower than float32: set {where} to float32")


def flush_subnormals() -> None:
    """Flush subnormal floats to zero, in every command that trains or evaluates.

    Subnormals (e.g. sigmoid gradients of confident probe logits) make the
    absorption probe's matmuls ~1.4x slower on x86 for dense SAEs. The flush
    also rounds the model forwards of the eval preparation slightly
    differently, which moves absorption values a little (docs/benchmarks.md),
    so both commands that write the shared eval cache (``evaluate_profile``,
    ``atm-repro crosscheck``) call it: the same profile then gives the same
    numbers whichever prepares the cache first. The mode is per thread and
    worker threads copy it when created, so call it before the process's first
    parallel op.
    """
    import torch  # not at module level: the flag checks above run without torch

    torch.set_flush_denormal(True)


_PROBE_PER_THREAD = 1 << 17  # elements: above torch's parallel grain, so each thread gets a chunk


def require_subnormal_flush() -> None:
    """Flush subnormals on every CPU thread that trains, or raise before training.

    Why: a dead latent's weights get zero gradients, so their Adam first moments
    shrink by beta1 every step and turn subnormal after ~750 steps (ATM seed 0 at
    step 1,500: 435k of W_enc's 2.6M; docs/benchmarks.md). x86 computes on
    subnormals through slow microcode, and the 5M-token ATM runs slowed from 18k
    to 11-14k tokens/s. The flush may change numbers (such moments become 0;
    none of the cpu profile's 39 SAEs changed a byte), so a run is reproducible
    only when every intra-op thread flushes. A worker thread
    copies the mode when it is created: one created before ``flush_subnormals``
    keeps subnormals, and training then depends on what the process ran before,
    so this raises. The probe is the smallest subnormal by its bits (a float
    literal would itself be flushed on this thread), doubled by all threads,
    read back as integers (a comparison would treat it as zero here).
    No-op where torch has no flush mode (not x86): there every thread keeps
    subnormals alike.
    """
    import torch

    if not torch.set_flush_denormal(True):
        return
    threads = torch.get_num_threads()
    tiny = torch.ones(_PROBE_PER_THREAD * threads, dtype=torch.int32).view(torch.float32)
    kept = int(torch.count_nonzero((tiny * 2.0).view(torch.int32)))
    if kept:
        raise RuntimeError(
            f"{kept:,} of {tiny.numel():,} subnormal products were not flushed to zero: an "
            f"intra-op thread (of {threads}) was created before the flush mode was set. "
            "Call atm_repro.hardware.flush_subnormals() before the process's first parallel "
            "torch op (the notebooks and `atm-repro` do), or train in a fresh process.")
