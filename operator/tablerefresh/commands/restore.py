"""``tablerefresh restore``: swap a backup back in, holding the refresh lock, after backing up."""

from __future__ import annotations

import argparse
import sys

from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.commands._target import add_target_arguments, emit_json, guarded, open_target, shown
from tablerefresh.dataplane.infra.clock import utc_now
from tablerefresh.dataplane.infra.errors import RefreshError, one_line
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.operations.backups import restore
from tablerefresh.dataplane.operations.operation import locked_target, new_run_id
from tablerefresh.dataplane.run.runs import RESTORE, Outcome, RunRecord, write_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--run", required=True, metavar="RUN_ID", help="the run whose backup to restore")


@guarded
def run(args: argparse.Namespace) -> int:
    manifest, connect = open_target(args)
    spec = manifest.spec
    run_id = new_run_id("restore")
    with locked_target(connect, spec, run_id) as held:
        backup = backups.find(held.client, spec.clickhouse.database, spec.target.table, args.run)
        # Recorded whatever happens: the next incremental refresh must know the target changed under
        # it, and run in full.
        record = RunRecord(
            run_id=run_id,
            target=f"{spec.clickhouse.database}.{spec.target.table}",
            strategy=RESTORE,
            started_at=utc_now(),
        )
        try:
            done = restore(held.client, held.target, backup, held.lock, run_id, spec, record.started_at)
            record.outcome, record.exit_code = Outcome.SUCCEEDED, 0
            record.rows_before, record.rows_after = done.rows_before, done.rows_after
        except RefreshError as exc:
            record.reason, record.error, record.exit_code = exc.reason, shown(str(exc)), int(exc.exit_code)
            raise
        finally:
            record.finished_at = utc_now()
            try:
                write_run(held.client, spec.clickhouse.database, record)
            except ClickHouseError as exc:
                print(f"warning: could not record the restore: {one_line(exc)}", file=sys.stderr)
    if args.json:
        emit_json(
            {
                "restored": backup.describe(),
                "undo": done.undo_run_id,
                "rowsBefore": done.rows_before,
                "rowsAfter": done.rows_after,
            }
        )
        return 0
    print(
        f"restored {backup.kind} backup of run {backup.run_id} into {spec.clickhouse.database}.{spec.target.table}: "
        f"{done.rows_before:,} -> {done.rows_after:,} rows"
    )
    print(f"what it replaced is kept as the backup of run {done.undo_run_id}: restore that to undo")
    return 0
