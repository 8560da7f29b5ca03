"""Command line: ``atm-repro run|plan|cache|bench|crosscheck`` (``python -m atm_repro.cli``).

Each command loads its profile once (``profiles.load_profile``) and passes it on.
``plan --explain KEY`` prints a config field's documentation (``config.explain``).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from atm_repro.bench import DEFAULT_STEPS, BenchError, format_table, run_bench
from atm_repro.cache import build_cache, check_cache_request
from atm_repro.config import ConfigError, explain, to_dict
from atm_repro.crosscheck import ACTIVATIONS, run_crosscheck
from atm_repro.pipeline import PipelineError, refresh_references, run
from atm_repro.profiles import load_profile


def parse_sets(items: list[str]) -> dict:
    """``["train.width=1024", "cache.layers=[4, 8]"]`` -> overrides (values parsed as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atm-repro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    refresh = sub.add_parser("refresh-notebooks",
                             help="re-run the notebooks on smoke; store nbval references")
    refresh.add_argument("--only", nargs="+")
    for name, help_ in (("run", "run the notebooks with papermill"),
                        ("plan", "validate a profile (and its model) and print what it "
                                 "would do"),
                        ("cache", "build the activation cache(s) of a profile"),
                        ("bench", "measure throughput, FLOP rate and memory (docs/benchmarks.md)"),
                        ("crosscheck", "SAEBench's absorption eval against ours on the same SAEs")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--profile", default="cpu",
                       help="a profile under profiles/ (smoke, cpu, paper, ...) or a YAML path")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (YAML), e.g. train.width=1024; "
                            "'atm-repro plan --explain KEY' says what KEY does")
        if name == "plan":
            p.add_argument("--explain", metavar="KEY",
                           help="print what config field KEY (e.g. train.lr) does, its "
                                "default, this profile's value and the paper's")
        if name == "run":
            p.add_argument("--only", nargs="+", help="notebook numbers or names, e.g. 01 02")
            p.add_argument("--timeout", type=int, default=None,
                           help="seconds per notebook cell (default: no limit; notebook "
                                "02 trains every SAE in one cell)")
        if name == "crosscheck":
            p.add_argument("--saes", nargs="+", help="main-layer SAEs, e.g. atm-s0 topk-s1")
            p.add_argument("--activations", choices=ACTIVATIONS, default="ours",
                           help="SAEBench reads our residuals (the paper's table) or runs "
                                "the model itself through TransformerLens")
        if name == "bench":
            p.add_argument("--steps", type=int,
                           help=f"training steps per SAE (default {DEFAULT_STEPS})")
            p.add_argument("--only", nargs="+",
                           help="sections: load caching training saelens evals")
    args = parser.parse_args(argv)
    try:
        if args.command == "refresh-notebooks":
            for path in refresh_references(args.only):
                print(f"updated {path}")
            return 0
        overrides = parse_sets(args.sets)
        profile = load_profile(args.profile, overrides)
        if args.command == "plan" and args.explain:
            print(explain(profile, args.explain))
        elif args.command == "plan":
            check_cache_request(profile)
            print(yaml.safe_dump(to_dict(profile), sort_keys=False))
        elif args.command == "cache":
            print(build_cache(profile))
            if any(s.token_masked for s in profile.train.saes.values()):
                print(build_cache(profile, masked=True))
        elif args.command == "bench":
            print(format_table(run_bench(profile, args.steps, args.only)))
        elif args.command == "crosscheck":
            print(run_crosscheck(profile, args.saes, activations=args.activations)
                  .to_string(index=False))
        else:
            for stage in run(profile, args.profile, overrides, args.only, args.timeout):
                print(f"{stage.notebook}: {stage.seconds:.0f} s -> {stage.output}")
    except ConfigError as exc:
        print(f"atm-repro: configuration error: {exc}", file=sys.stderr)
        return 2
    except (PipelineError, BenchError) as exc:
        print(f"atm-repro: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
