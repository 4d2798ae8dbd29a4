"""``tablerefresh verify``: rebuild a sample of keys in full and report the rows that differ.

Exits 0 when the sample's rows are what a full rebuild gives, 4 when some differ (changes that came
later than ``incremental.lateness``: the next full run repairs them), 3 while a run holds the lock.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime

from tablerefresh.commands._target import add_target_arguments, emit_json, guarded, open_target, source_query
from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.operations.operation import new_run_id, owner_of
from tablerefresh.dataplane.operations.spot_check import verify_sample
from tablerefresh.dataplane.run.options import RunOptions

DEFAULT_SAMPLE = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help=f"keys to rebuild (default: incremental.verifySample, else {DEFAULT_SAMPLE})",
    )


@guarded
def run(args: argparse.Namespace) -> int:
    manifest, connect = open_target(args)
    spec = manifest.spec
    run_id = new_run_id("verify")
    options = RunOptions(run_id=run_id, owner=owner_of(run_id), run_time=datetime.now(UTC))
    size = args.sample or (spec.incremental.verify_sample if spec.incremental else 0) or DEFAULT_SAMPLE
    report = verify_sample(connect, spec, source_query(spec), options, size)
    target = f"{spec.clickhouse.database}.{spec.target.table}"
    if args.json:
        emit_json(asdict(report) | {"differences": report.differences})
    elif report.differences:
        print(f"{target}: rows differ from a full rebuild: {report.describe()}")
        print("changes later than incremental.lateness? the next full run repairs them (tablerefresh refresh --full)")
    else:
        print(f"{target}: as a full rebuild gives it: {report.describe()}")
    return int(ExitCode.VERIFY_FAILED) if report.differences else 0
