"""``tablerefresh demo``: the reference workload end to end on the embedded engine."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tablerefresh.dataplane.run.runs import Outcome

LOG_LEVEL = logging.WARNING  # the demo says each step itself


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path(".tablerefresh/demo"), help="where the database lives")
    parser.add_argument("--fills", type=int, default=500_000, help="synthetic fills to generate")
    parser.add_argument("--seed", type=int, default=7, help="seed of the data generator")


def run(args: argparse.Namespace) -> int:
    if args.fills < 1:
        raise SystemExit("tablerefresh demo: --fills must be positive")
    from tablerefresh.demo import DataDirRefused, run_demo  # imports chdb: only this command needs it

    # The command as the user typed it (e.g. .venv/bin/tablerefresh), for the next steps it prints.
    typed = sys.argv[0] if Path(sys.argv[0]).name == "tablerefresh" else "tablerefresh"
    try:
        result = run_demo(args.data_dir, fills=args.fills, seed=args.seed, command=typed)
    except DataDirRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if all(r.outcome == Outcome.SUCCEEDED for r in result.runs) else 1
