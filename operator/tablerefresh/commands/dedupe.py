"""``tablerefresh dedupe``: one row per unique key, swapped in atomically, with a backup."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from tablerefresh.commands._target import add_target_arguments, emit_json, guarded, open_target
from tablerefresh.dataplane.dedupe import dedupe
from tablerefresh.dataplane.operation import locked_target, new_run_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--slice-only", action="store_true", help="rebuild only the partitions of the slice")


@guarded
def run(args: argparse.Namespace) -> int:
    manifest, connect = open_target(args)
    spec = manifest.spec
    run_id = new_run_id("dedupe")
    now = datetime.now(UTC)
    params = {"window_start": int((now - spec.window_delta).timestamp()), "run_time": int(now.timestamp())}
    started = time.monotonic()
    with locked_target(connect, spec, run_id) as held:
        done = dedupe(held.client, held.target, spec, held.lock, run_id, slice_only=args.slice_only, params=params)
    seconds = time.monotonic() - started
    if args.json:
        emit_json(
            {
                "runId": run_id,
                "rowsBefore": done.rows_before,
                "rowsAfter": done.rows_after,
                "distinctKeys": done.distinct_keys,
                "partitions": done.partitions,
                "seconds": round(seconds, 2),
            }
        )
        return 0
    scope = f"partitions {', '.join(done.partitions)}" if args.slice_only else "the whole table"
    print(
        f"deduplicated {scope} of {spec.clickhouse.database}.{spec.target.table} in {seconds:.1f}s: "
        f"{done.rows_before:,} -> {done.rows_after:,} rows ({done.rows_before - done.rows_after:,} duplicates removed)"
    )
    print(f"the previous rows are kept as the backup of run {run_id}")
    return 0
