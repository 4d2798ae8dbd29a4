"""``tablerefresh demo``: the reference workload end to end on the embedded engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from tablerefresh.dataplane.runs import Outcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path(".tablerefresh/demo"), help="where the database lives")
    parser.add_argument("--fills", type=int, default=500_000, help="synthetic fills to generate (default 500000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the data generator")


def run(args: argparse.Namespace) -> int:
    if args.fills < 1:
        raise SystemExit("tablerefresh demo: --fills must be positive")
    from tablerefresh.demo import run_demo  # imports chdb: only this command needs it

    result = run_demo(args.data_dir, fills=args.fills, seed=args.seed)
    return 0 if all(r.outcome == Outcome.SUCCEEDED for r in result.runs) else 1
