"""The planted-absorption benchmark's driver: train every toy run, score it.

The data, the runs (``evals.toy.toy_runs``, named like a profile's derived
runs) and the scoring (``evals.toy.run_toy_absorption``) are the eval's; this
module is the experiment around them: it trains each run with the project
trainer (unchanged runs are reused) and writes one result per run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from atm_repro.config import fingerprint
from atm_repro.evals.results import write_result
from atm_repro.evals.toy import (
    ToyBenchmarkConfig,
    make_toy_data,
    prepare_toy_probes,
    run_toy_absorption,
    toy_runs,
)
from atm_repro.saes.io import SAEMeta, load_sae
from atm_repro.train import train_sae


def run_toy_benchmark(cfg: ToyBenchmarkConfig, out_dir: str | Path,
                      progress: bool = True) -> pd.DataFrame:
    """Train every sweep run on the toy data into ``out_dir/<run>/``, score it
    (``run_toy_absorption``), write ``out_dir/evals/<run>/toy_absorption.json``
    and return one row per run: the run, its sweep value and the result's metrics."""
    out_dir = Path(out_dir)
    runs = toy_runs(cfg)
    train, test = make_toy_data(cfg.data).split(cfg.eval_tokens)
    data_key = fingerprint({"data": cfg.data, "eval_tokens": cfg.eval_tokens})
    meta = SAEMeta(model_name="toy", hook_name="toy", layer=0, context_size=1,
                   dataset_path=f"toy:{data_key[:16]}")
    tcfg = cfg.train_config()
    probes = prepare_toy_probes(train, test, cfg.probe)
    rows = []
    for run in runs:
        result = train_sae(run.name, run.spec, cfg.seed, tcfg, train.source(),
                           out_dir / run.name, meta, eval_source=test.source(),
                           data_key=data_key, progress=progress)
        evaluated = run_toy_absorption(load_sae(result.path), probes, cfg, run.name)
        write_result(out_dir / "evals", evaluated)
        m = evaluated.metrics
        if progress:
            tqdm.write(f"{run.name}: {result.status}, L0 {m['l0']:.2f}, absorption exact "
                       f"{m['mean_absorption']:.3f} / probe {m['mean_probe_full_absorption']:.3f}")
        rows.append({"run": run.name, "sae": run.base, "variant": run.spec.variant,
                     "param": run.param, "value": run.value, **m})
    return pd.DataFrame(rows)
