"""``tablerefresh dedupe``: one row per unique key, swapped in atomically, with a backup.

Recorded like a refresh run (strategy ``Dedupe``): a row in the runs table and, with
``--summary-file``, the JSON summary a Job's termination message carries to the controller.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.commands._target import (
    add_target_arguments,
    check_predicate_first,
    emit_json,
    guarded,
    open_target,
    shown,
)
from tablerefresh.dataplane.infra.clock import utc_now
from tablerefresh.dataplane.infra.errors import RefreshError, one_line
from tablerefresh.dataplane.operations.dedupe import dedupe
from tablerefresh.dataplane.operations.operation import locked_target, new_run_id
from tablerefresh.dataplane.run.runs import Outcome, RunRecord, write_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--slice-only", action="store_true", help="rebuild only the partitions of the slice")
    parser.add_argument("--summary-file", type=Path, help="also write the JSON summary here (a termination log)")


@guarded
def run(args: argparse.Namespace) -> int:
    manifest, connect = open_target(args)
    spec = manifest.spec
    now = utc_now()
    run_id = new_run_id("dedupe", now)
    record = RunRecord(
        run_id=run_id, target=f"{spec.clickhouse.database}.{spec.target.table}", strategy="Dedupe", started_at=now
    )
    params = {"window_start": int((now - spec.window_delta).timestamp()), "run_time": int(now.timestamp())}
    check_predicate_first(connect, spec, params)
    try:
        with locked_target(connect, spec, run_id) as held:
            try:
                done = dedupe(
                    held.client,
                    held.target,
                    spec,
                    held.lock,
                    run_id,
                    slice_only=args.slice_only,
                    params=params,
                    taken_at=utc_now(),
                )
                record.outcome, record.exit_code = Outcome.SUCCEEDED, 0
                record.rows_before, record.rows_after = done.rows_before, done.rows_after
                record.partitions = done.partitions
            except (RefreshError, ClickHouseError) as exc:
                record.reason = getattr(exc, "reason", "DedupeFailed")
                record.error = shown(str(exc) if isinstance(exc, RefreshError) else one_line(exc))
                record.exit_code = int(getattr(exc, "exit_code", 1))
            record.finished_at = utc_now()
            write_run(held.client, spec.clickhouse.database, record)
    finally:
        if args.summary_file is not None and record.finished_at is not None:
            args.summary_file.write_text(record.summary_line() + "\n")
    if record.outcome != Outcome.SUCCEEDED:
        print(f"error: {record.error}", file=sys.stderr)
        return record.exit_code
    if args.json:
        emit_json(record.summary())
        return 0
    scope = f"partitions {', '.join(record.partitions)}" if args.slice_only else "the whole table"
    print(
        f"deduplicated {scope} of {record.target} in {record.duration_seconds:.1f}s: {record.rows_before:,} -> "
        f"{record.rows_after:,} rows ({record.rows_before - record.rows_after:,} duplicates removed)"
    )
    print(f"the previous rows are kept as the backup of run {run_id}")
    return 0
