"""The one owner of the runs layout: what lives where under ``runs/<profile>/``.

::

    runs/<profile>/                  ``run_dir`` ($ATM_REPRO_RUNS, default <repo>/runs)
      cache/                         activation caches (``atm_repro.cache`` names them)
      saes/L<layer>/<name>-s<seed>/  one trained SAE (``sae_dir``; ``atm_repro.train``
                                     writes it, metrics.json last)
        snapshots/t<tokens>/         the same run's SAE after <tokens> training tokens
                                     (``snapshot_dir``; train.snapshot_tokens)
      evals/<sae_id>/<eval>.json     eval results (``results_dir``; ``evals.results``)
      eval_cache/                    model-side eval inputs, shared by every SAE
      toy/                           the planted-absorption benchmark (``toy_dir``)
      notebooks/                     executed copies of the notebooks (``pipeline``)
      bench/, crosscheck/            ``atm-repro bench`` / ``crosscheck`` work files
      stage_times.json               seconds per notebook of the last run (``pipeline``)
      figures/, paper/tables/        smoke outputs (other profiles write into the repo)

An SAE's id is ``L<layer>-<name>-s<seed>`` (a snapshot's: ``...-t<tokens>``);
``discover`` finds the complete SAE runs and snapshots on disk and groups them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from atm_repro.config import REPO_ROOT, Profile, fingerprint
from atm_repro.files import atomic_write_json

METRICS = "metrics.json"  # an SAE run's summary, written last: marks it complete
TRAIN_LOG = "train_log.jsonl"
STAGE_TIMES = "stage_times.json"


def run_dir(profile: Profile) -> Path:
    """``runs/<profile name>/`` (under $ATM_REPRO_RUNS when set)."""
    return Path(os.environ.get("ATM_REPRO_RUNS", REPO_ROOT / "runs")) / profile.name


def cache_root(profile: Profile) -> Path:
    return run_dir(profile) / "cache"


def sae_dir(profile: Profile, layer: int, name: str, seed: int) -> Path:
    return run_dir(profile) / "saes" / f"L{layer}" / f"{name}-s{seed}"


def snapshot_dir(run_path: Path, tokens: int) -> Path:
    """Where the run at ``run_path`` saves its SAE after ``tokens`` training tokens."""
    return Path(run_path) / "snapshots" / f"t{tokens}"


def parse_sae_dir(path: Path) -> tuple[int, str, int]:
    """(layer, name, seed) of an ``sae_dir``."""
    path = Path(path)
    name, _, seed = path.name.rpartition("-s")
    return int(path.parent.name[1:]), name, int(seed)


def results_dir(profile: Profile) -> Path:
    return run_dir(profile) / "evals"


def eval_cache_dir(profile: Profile) -> Path:
    return run_dir(profile) / "eval_cache"


def toy_dir(profile: Profile) -> Path:
    return run_dir(profile) / "toy"


def notebooks_dir(profile: Profile) -> Path:
    return run_dir(profile) / "notebooks"


def bench_dir(profile: Profile) -> Path:
    return run_dir(profile) / "bench"


def crosscheck_dir(profile: Profile) -> Path:
    return run_dir(profile) / "crosscheck"


def own_output_dirs(profile: Profile) -> tuple[Path, Path]:
    """(figures dir, paper tables dir) under the run directory, for a profile that
    does not write the paper's (smoke: paper/Makefile's ``smoke`` target reads them)."""
    return run_dir(profile) / "figures", run_dir(profile) / "paper" / "tables"


def read_metrics(out_dir: Path) -> dict:
    """The ``metrics.json`` of a finished SAE run (an error names a missing run)."""
    path = Path(out_dir) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"no finished SAE run at {out_dir} (missing {METRICS})")
    return json.loads(path.read_text())


def read_train_logs(sae_dirs: dict[str, Path]) -> pd.DataFrame:
    """Concatenate the ``train_log.jsonl`` of each named SAE directory."""
    frames = []
    for label, path in sae_dirs.items():
        lines = (Path(path) / TRAIN_LOG).read_text().splitlines()
        frame = pd.DataFrame([json.loads(line) for line in lines])
        frame["sae"] = label
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class SAERecord:
    sae_id: str  # "L8-atm-s0"
    group: str  # main | ablation | scale | cross_layer
    name: str  # the spec name ("atm", "atm-beta0.9")
    seed: int
    layer: int
    path: Path
    tokens: int | None = None  # a snapshot's training tokens (None: the finished run)

    @property
    def run_key(self) -> str:
        """Fingerprint of the training run (spec, data, seed, code) from metrics.json."""
        return fingerprint(read_metrics(self.path)["key"])


def discover(profile: Profile, ablation_names: Collection[str],
             scale_names: Collection[str] = ()) -> list[SAERecord]:
    """The complete SAE runs of ``profile`` on disk, grouped: ``main`` (``train.saes``
    at ``train.layer``), ``ablation`` (``ablation_names``, the profile's derived
    runs, at ``train.layer``), ``scale`` (``scale_names``, the scale study, at
    ``train.layer``), ``cross_layer`` (``cross_layer.saes`` at the other
    ``cross_layer.layers``), and ``snapshot`` (a listed run's complete snapshots,
    fewest tokens first; of ``convergence.saes`` only, when the profile names them).
    Runs left over from another configuration are skipped."""
    main_layer = profile.train.layer
    cross = profile.cross_layer
    with_snapshots = profile.convergence.saes
    records = []
    for layer_dir in sorted((run_dir(profile) / "saes").glob("L*")):
        for path in sorted(layer_dir.iterdir()):
            if not (path / METRICS).exists():
                continue
            layer, name, seed = parse_sae_dir(path)
            if layer == main_layer and name in profile.train.saes:
                group = "main"
            elif layer == main_layer and name in ablation_names:
                group = "ablation"
            elif layer == main_layer and name in scale_names:
                group = "scale"
            elif layer != main_layer and name in cross.saes and layer in cross.layers:
                group = "cross_layer"
            else:
                continue
            records.append(SAERecord(f"L{layer}-{path.name}", group, name, seed, layer, path))
            if with_snapshots is not None and name not in with_snapshots:
                continue
            snaps = [p for p in snapshot_dir(path, 0).parent.glob("t*") if (p / METRICS).exists()]
            for snap in sorted(snaps, key=lambda p: int(p.name[1:])):
                records.append(SAERecord(f"L{layer}-{path.name}-{snap.name}", "snapshot", name,
                                         seed, layer, snap, int(snap.name[1:])))
    return records


def read_stage_times(profile: Profile) -> dict[str, float]:
    """Seconds per notebook of the last recorded run ({} when none)."""
    path = run_dir(profile) / STAGE_TIMES
    return json.loads(path.read_text()) if path.is_file() else {}


def record_stage_time(profile: Profile, notebook: str, seconds: float) -> None:
    """Record (replace) one notebook's wall time for the next run's estimates."""
    times = {**read_stage_times(profile), notebook: round(seconds, 1)}
    run_dir(profile).mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir(profile) / STAGE_TIMES, times)
