"""atm_repro.runs: the runs/<profile>/ layout, SAE discovery and stage times."""

from __future__ import annotations

import json

from helpers import TINY_OVERRIDES

from atm_repro.evaluate import training_minutes
from atm_repro.profiles import derived_specs, load_profile
from atm_repro.runs import (
    METRICS,
    discover,
    parse_sae_dir,
    read_stage_times,
    record_stage_time,
    results_dir,
    run_dir,
    sae_dir,
    snapshot_dir,
)


def finished(path, complete: bool = True):
    path.mkdir(parents=True)
    if complete:
        (path / METRICS).write_text(json.dumps({"key": {"seed": 0}}))


def test_run_dir_follows_the_environment(runs_dir, tiny_profile):
    assert run_dir(tiny_profile) == runs_dir / "smoke"
    assert results_dir(tiny_profile) == runs_dir / "smoke" / "evals"


def test_sae_dir_round_trips():
    cfg = load_profile("smoke")
    path = sae_dir(cfg, 12, "masked-reg", 3)
    assert path.parts[-3:] == ("saes", "L12", "masked-reg-s3")
    assert parse_sae_dir(path) == (12, "masked-reg", 3)


def test_discover_groups_and_skips(runs_dir):
    cfg = load_profile("smoke", {**TINY_OVERRIDES, "cross_layer.layers": [1, 2],
                                 "cross_layer.saes": ["topk"]})
    ablations = derived_specs(cfg)
    finished(sae_dir(cfg, 1, "topk", 0))
    finished(sae_dir(cfg, 1, "topk", 1), complete=False)  # still training: not found
    finished(sae_dir(cfg, 1, "atm-beta0.9", 0))
    finished(sae_dir(cfg, 2, "topk", 0))
    finished(snapshot_dir(sae_dir(cfg, 1, "topk", 0), 2000))
    finished(snapshot_dir(sae_dir(cfg, 1, "topk", 0), 500))
    finished(snapshot_dir(sae_dir(cfg, 1, "topk", 0), 900), complete=False)  # being written
    finished(sae_dir(cfg, 2, "atm", 0))  # not a cross-layer SAE: a leftover
    finished(snapshot_dir(sae_dir(cfg, 2, "atm", 0), 500))  # nor its snapshot
    finished(sae_dir(cfg, 1, "gone", 0))  # no longer in the profile
    records = discover(cfg, ablations)
    found = {r.sae_id: r.group for r in records}
    assert found == {"L1-topk-s0": "main", "L1-topk-s0-t500": "snapshot",
                     "L1-topk-s0-t2000": "snapshot", "L1-atm-beta0.9-s0": "ablation",
                     "L2-topk-s0": "cross_layer"}
    assert [(r.sae_id, r.tokens) for r in records if r.name == "topk" and r.layer == 1] == [
        ("L1-topk-s0", None), ("L1-topk-s0-t500", 500), ("L1-topk-s0-t2000", 2000)]
    assert {r.sae_id for r in discover(cfg, [])} == {"L1-topk-s0", "L1-topk-s0-t500",
                                                     "L1-topk-s0-t2000", "L2-topk-s0"}
    # a profile that names its convergence families evaluates only their snapshots
    finished(sae_dir(cfg, 1, "atm", 0))
    finished(snapshot_dir(sae_dir(cfg, 1, "atm", 0), 500))
    only_atm = load_profile("smoke", {**TINY_OVERRIDES, "cross_layer.layers": [1, 2],
                                      "cross_layer.saes": ["topk"], "convergence.saes": ["atm"]})
    assert {r.sae_id for r in discover(only_atm, []) if r.group == "snapshot"} == {
        "L1-atm-s0-t500"}
    assert "L1-topk-s0" in {r.sae_id for r in discover(only_atm, [])}  # the run itself stays
    assert {r.sae_id for r in discover(cfg, []) if r.group == "snapshot"} == {
        "L1-topk-s0-t500", "L1-topk-s0-t2000", "L1-atm-s0-t500"}  # unset: every run's


def test_stage_times_are_recorded_per_notebook(runs_dir, tiny_profile):
    assert read_stage_times(tiny_profile) == {}
    record_stage_time(tiny_profile, "01_cache.ipynb", 12.345)
    record_stage_time(tiny_profile, "02_train.ipynb", 3.0)
    record_stage_time(tiny_profile, "01_cache.ipynb", 10.0)
    assert read_stage_times(tiny_profile) == {"01_cache.ipynb": 10.0, "02_train.ipynb": 3.0}


def test_training_minutes_count_each_run_once(runs_dir):
    """A snapshot's wall_s is the time to that point of a counted run: summing it too
    would count the run's first part again (51 SAEs and 154 minutes for 15 SAEs and
    106 minutes on the canonical run)."""
    cfg = load_profile("smoke", TINY_OVERRIDES)
    for path, wall in ((sae_dir(cfg, 1, "topk", 0), 600.0), (sae_dir(cfg, 1, "atm", 0), 300.0),
                       (snapshot_dir(sae_dir(cfg, 1, "topk", 0), 500), 60.0),
                       (snapshot_dir(sae_dir(cfg, 1, "atm", 0), 500), 30.0)):
        path.mkdir(parents=True)
        (path / METRICS).write_text(json.dumps({"key": {"seed": 0}, "wall_s": wall}))
    assert training_minutes(cfg) == (2, 15.0)
