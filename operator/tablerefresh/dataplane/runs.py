"""The record of each run: one row in a runs table in ClickHouse, and one JSON line on stdout."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from pydantic.alias_generators import to_camel

from tablerefresh.dataplane import sql

RUNS_TABLE = "_tablerefresh_runs"


class Outcome:
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"  # another run held the lock; nothing was changed
    FAILED_AFTER_SWAP = "FailedAfterSwap"  # the target holds the swapped data; a step after the swap failed


@dataclass
class RunRecord:
    run_id: str
    target: str
    strategy: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str = Outcome.FAILED
    reason: str = ""
    error: str = ""
    exit_code: int = 1
    rows_before: int = 0
    rows_after: int = 0
    slice_rows_before: int = 0
    slice_rows_after: int = 0
    duplicates: int = 0
    partitions: list[str] = field(default_factory=list)
    window_start: datetime | None = None
    # Each audit's count of bad rows in the staged data, and where a failed run's staging was kept.
    audits: list[dict[str, Any]] = field(default_factory=list)
    evidence_table: str = ""

    @property
    def duration_seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return round((end - self.started_at).total_seconds(), 3)

    def summary(self) -> dict[str, Any]:
        """camelCase, as the controller copies it into ``status.lastRun``."""
        data = asdict(self)
        data["duration_seconds"] = self.duration_seconds
        return {to_camel(key): _iso(value) if isinstance(value, datetime) else value for key, value in data.items()}

    def summary_line(self) -> str:
        return json.dumps(self.summary(), separators=(",", ":"), sort_keys=True)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ensure_runs_table(client: Client, database: str) -> None:
    client.command(
        f"CREATE TABLE IF NOT EXISTS {sql.table(database, RUNS_TABLE)} ("
        "run_id String, target String, strategy LowCardinality(String), "
        "started_at DateTime64(3, 'UTC'), finished_at DateTime64(3, 'UTC'), duration_seconds Float64, "
        "outcome LowCardinality(String), reason LowCardinality(String), error String, "
        "rows_before UInt64, rows_after UInt64, slice_rows_before UInt64, slice_rows_after UInt64, "
        "duplicates UInt64, partitions Array(String), window_start Nullable(DateTime('UTC'))"
        ") ENGINE = MergeTree ORDER BY (target, started_at)"
    )


def write_run(client: Client, database: str, record: RunRecord) -> None:
    ensure_runs_table(client, database)
    row = {
        "run_id": record.run_id,
        "target": record.target,
        "strategy": record.strategy,
        "started_at": record.started_at,
        "finished_at": record.finished_at or datetime.now(UTC),
        "duration_seconds": record.duration_seconds,
        "outcome": record.outcome,
        "reason": record.reason,
        "error": record.error,
        "rows_before": record.rows_before,
        "rows_after": record.rows_after,
        "slice_rows_before": record.slice_rows_before,
        "slice_rows_after": record.slice_rows_after,
        "duplicates": record.duplicates,
        "partitions": record.partitions,
        "window_start": record.window_start,
    }
    client.insert(
        RUNS_TABLE,
        [list(row.values())],
        database=database,
        column_names=list(row),
        settings={"insert_deduplicate": 0},
    )


def recent_runs(client: Client, database: str, target: str, limit: int = 20) -> list[dict[str, Any]]:
    result = client.query(
        f"SELECT * FROM {sql.table(database, RUNS_TABLE)} WHERE target = {{t:String}} "
        "ORDER BY started_at DESC LIMIT {n:UInt32}",
        parameters={"t": target, "n": limit},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
