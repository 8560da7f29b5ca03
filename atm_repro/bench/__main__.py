"""``python -m atm_repro.bench SECTION PROFILE_JSON STEPS THREADS OUT``: one section
in this fresh process (``run_bench`` starts one per section); its rows, details,
wall time and peak memory as JSON into OUT."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from atm_repro.bench import STAGES, peak_rss_mib
from atm_repro.config import Profile, from_dict
from atm_repro.files import atomic_write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atm_repro.bench")
    for arg in ("section", "profile_json", "steps", "threads", "out"):
        parser.add_argument(arg)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(args.threads))
    profile = from_dict(Profile, json.loads(Path(args.profile_json).read_text()))
    start = time.perf_counter()
    rows, details = STAGES[args.section](profile, int(args.steps))
    atomic_write_json(Path(args.out), {
        "rows": [dataclasses.asdict(r) for r in rows], "details": details,
        "wall_s": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
