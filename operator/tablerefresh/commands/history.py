"""``tablerefresh history``: the recorded runs of a table, newest first, from ``_tablerefresh_runs``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from tablerefresh.commands._target import add_target_arguments, emit_json, guarded, open_target
from tablerefresh.dataplane.infra import catalog
from tablerefresh.dataplane.run.runs import RUNS_TABLE, recent_runs

# The columns shown, by the runs table's names; --json gives every column.
_SHOWN = (
    "run_id",
    "started_at",
    "duration_seconds",
    "kind",
    "strategy",
    "outcome",
    "reason",
    "rows_before",
    "rows_after",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="show the newest N runs")


@guarded
def run(args: argparse.Namespace) -> int:
    manifest, connect = open_target(args)
    spec = manifest.spec
    client = connect()
    database, target = spec.clickhouse.database, f"{spec.clickhouse.database}.{spec.target.table}"
    runs = (
        recent_runs(client, database, target, max(1, args.limit))
        if catalog.table_exists(client, database, RUNS_TABLE)
        else []
    )
    if args.json:
        emit_json([_jsonable(r) for r in runs])
        return 0
    if not runs:
        print(f"no recorded runs of {target}")
        return 0
    # One meaning per word: "kind" is Full or Incremental, as in the summary and status.lastRun; the
    # strategy (or the operation: Dedupe, Restore) has a column of its own.
    print(
        f"{'run id':<36} {'started (UTC)':<19} {'took':>8} {'kind':<11} {'strategy/operation':<18} "
        f"{'outcome':<15} {'rows before':>12} {'rows after':>12}  reason / partitions"
    )
    for r in runs:
        detail = r["reason"] or ", ".join(r["partitions"]) or "-"
        print(
            f"{r['run_id']:<36} {r['started_at']:%Y-%m-%d %H:%M:%S} {r['duration_seconds']:>7.1f}s "
            f"{r.get('kind') or '-':<11} {r['strategy']:<18} {r['outcome']:<15} "
            f"{r['rows_before']:>12,} {r['rows_after']:>12,}  {detail}"
        )
    return 0


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Times as ISO 8601 in UTC, the runs table's zone."""
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _iso(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
