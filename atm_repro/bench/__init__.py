"""``atm-repro bench``: throughput, FLOP rate and memory of every stage, in one run.

Every ratio is measured in the same run on the same machine. Each section runs
in its own subprocess (same torch thread count as the caller), so the peak
resident memory it reports is its own: ``VmHWM`` of the child, because Linux
hands a child's ``ru_maxrss`` the peak of the parent that spawned it.

One module per section (``SECTIONS``, in run order; ``--only`` picks some), named
as the section, whose docstring defines what it measures and whose ``run(profile,
steps)`` returns its rows and details; what several sections share is in
``common``, the table and markdown in ``render``.

Outputs: ``runs/<profile>/bench/bench.json`` and ``bench.md``; for non-smoke
profiles the table also replaces the profile's block in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

from atm_repro.bench import (
    bf16_cache,
    bf16_fidelity,
    bf16_forward,
    bfloat16,
    caching,
    evals,
    headline,
    headline_fidelity,
    load,
    prompt_prefixes,
    saelens,
    training,
)
from atm_repro.bench.common import BenchError, Row, open_cache
from atm_repro.bench.render import format_table, render_markdown
from atm_repro.config import REPO_ROOT, ConfigError, Profile, fingerprint, to_dict
from atm_repro.files import atomic_write_json, atomic_write_text, update_doc
from atm_repro.runs import bench_dir

__all__ = ["DEFAULT_STEPS", "SECTIONS", "BenchError", "Row", "format_table", "render_markdown",
           "run_bench"]

DEFAULT_STEPS = 100
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"
STAGES: dict[str, Callable[[Profile, int], tuple[list[Row], dict]]] = {
    module.__name__.rsplit(".", 1)[1]: module.run
    for module in (load, caching, training, saelens, evals, prompt_prefixes, bfloat16,
                   bf16_fidelity, bf16_forward, headline, headline_fidelity, bf16_cache)}
SECTIONS = tuple(STAGES)
NEEDS_CACHE = ("caching", "training", "saelens", "evals", "prompt_prefixes", "bfloat16",
               "bf16_fidelity", "bf16_forward", "headline", "headline_fidelity", "bf16_cache")


# --------------------------------------------------------------------------- machine and memory


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key:`` line of a /proc file (None off Linux or if absent)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.split(":", 1)[0].strip() == key), None)


def peak_rss_mib() -> float:
    """Peak resident memory of this process since its exec (MiB)."""
    hwm = _proc_field("/proc/self/status", "VmHWM")
    if hwm is not None:
        return int(hwm.split()[0]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, RAM, Python / torch versions and threads (and the GPU, if used)."""
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor()
            or platform.machine(),
            "logical_cores": os.cpu_count(), "usable_cores": usable,
            "ram_gib": round(int(mem_kib.split()[0]) / 2**20, 1) if mem_kib else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


# --------------------------------------------------------------------------- driver


def _run_stage(section: str, profile: Profile, steps: int, tmp: Path) -> dict:
    """Run one section in a fresh interpreter; its rows, wall time and peak memory."""
    profile_json, out = tmp / "profile.json", tmp / f"{section}.json"
    profile_json.write_text(json.dumps(to_dict(profile)))
    threads = torch.get_num_threads()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "atm_repro.bench", section, str(profile_json),
                           str(steps), str(threads), str(out)], env=env)
    if proc.returncode != 0:
        raise BenchError(f"bench section {section!r} failed (exit {proc.returncode}); "
                         "its traceback is above")
    return json.loads(out.read_text())


def run_bench(profile: Profile, steps: int | None = None, only: list[str] | None = None,
              doc_path: Path | None = DOC_PATH, progress: bool = True) -> dict:
    """Run the ``only`` sections (default: all) with ``steps`` training steps per SAE
    (default ``DEFAULT_STEPS``); write ``bench.json``, ``bench.md`` and, unless the
    profile is a smoke profile or ``doc_path`` is None, the profile's block of
    ``doc_path`` (a run of some sections only: a block of its own, named by the
    profile and the sections, so that it replaces no other run's rows). Returns the
    bench.json content."""
    steps = DEFAULT_STEPS if steps is None else steps
    sections = list(SECTIONS) if only is None else list(only)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ConfigError(f"bench: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if steps < 1:
        raise ConfigError(f"bench: --steps must be >= 1, got {steps}")
    sections = [s for s in SECTIONS if s in sections]
    if any(s in NEEDS_CACHE for s in sections):
        open_cache(profile)
    rows, stages = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for section in sections:
            if progress:
                print(f"bench: {section} ...", flush=True)
            out = _run_stage(section, profile, steps, Path(tmp))
            rows += [Row(**r) for r in out["rows"]]
            rows.append(Row(section, "peak resident memory", out["peak_rss_mib"], "MiB"))
            stages[section] = {"wall_s": out["wall_s"], "peak_rss_mib": out["peak_rss_mib"],
                               "details": out["details"]}
    command = f"atm-repro bench --profile {profile.name} --steps {steps}"
    if only is not None:
        command += " --only " + " ".join(sections)
    result = {"profile": profile.name, "profile_fingerprint": fingerprint(profile)[:12],
              "command": command, "steps": steps, "sections": sections,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
              "machine": machine_info(profile.train.device),
              "rows": [r.to_json() for r in rows], "stages": stages}
    out_dir = bench_dir(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "bench.json", result)
    atomic_write_text(out_dir / "bench.md", render_markdown(result))
    if doc_path is not None and not profile.smoke:  # a partial run gets its own block
        block = profile.name if sections == list(SECTIONS) else \
            f"{profile.name}:{'+'.join(sections)}"
        update_doc(Path(doc_path), block, render_markdown(result))
    return result

