"""The record of each run: one row in a runs table in ClickHouse, and one JSON line on stdout.

The runs table is also the incremental watermark: the next run reads its predecessors here
(:func:`history`). Columns added since the table was first created are added to an existing table
with ``ADD COLUMN IF NOT EXISTS``; a table that lacks them reads as having no predecessor, so the
first run after an upgrade is a full run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from pydantic.alias_generators import to_camel

from tablerefresh.contract import Outcome as Outcome  # re-exported: the run pipeline imports it from here
from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.connection import unanswered
from tablerefresh.dataplane.infra.errors import AFTER_SWAP_INTERRUPTION, one_line
from tablerefresh.dataplane.run.work import Work

log = logging.getLogger(__name__)

RUNS_TABLE = "_tablerefresh_runs"


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
    # Which kind of run (Full or Incremental; empty for other operations) and why.
    kind: str = ""
    kind_reason: str = ""
    run_time: datetime | None = None
    since: datetime | None = None  # an incremental run's changes since
    changed_keys: int | None = None  # keys an incremental run rebuilt
    definition: str = ""  # hash of what defines the rows (definition_hash): a change forces a full run
    sample_keys: int | None = None  # keys a full run compared with what the incremental runs left
    sample_differences: int | None = None  # rows among them that differed
    # What the run cost the engine (work.py): null where the engine does not say.
    peak_memory_bytes: int | None = None
    read_rows: int | None = None
    read_bytes: int | None = None
    written_rows: int | None = None
    written_bytes: int | None = None

    def set_work(self, work: Work) -> None:
        for figure in fields(work):
            setattr(self, figure.name, getattr(work, figure.name))

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


# Added after the first release: existing tables get them with ADD COLUMN IF NOT EXISTS.
_ADDED_COLUMNS = (
    ("kind", "LowCardinality(String)"),
    ("kind_reason", "String"),
    ("run_time", "Nullable(DateTime('UTC'))"),
    ("since", "Nullable(DateTime('UTC'))"),
    ("changed_keys", "Nullable(UInt64)"),
    ("definition", "String"),
    ("sample_keys", "Nullable(UInt64)"),
    ("sample_differences", "Nullable(UInt64)"),
    *((figure.name, "Nullable(UInt64)") for figure in fields(Work)),
)


def ensure_runs_table(client: Client, database: str) -> None:
    table = sql.table(database, RUNS_TABLE)
    added = ", ".join(f"{name} {kind}" for name, kind in _ADDED_COLUMNS)
    client.command(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        "run_id String, target String, strategy LowCardinality(String), "
        "started_at DateTime64(3, 'UTC'), finished_at DateTime64(3, 'UTC'), duration_seconds Float64, "
        "outcome LowCardinality(String), reason LowCardinality(String), error String, "
        "rows_before UInt64, rows_after UInt64, slice_rows_before UInt64, slice_rows_after UInt64, "
        f"duplicates UInt64, partitions Array(String), window_start Nullable(DateTime('UTC')), {added}"
        ") ENGINE = MergeTree ORDER BY (target, started_at)"
    )
    missing = [(n, k) for n, k in _ADDED_COLUMNS if n not in _columns(client, database)]
    if missing:
        client.command(f"ALTER TABLE {table} " + ", ".join(f"ADD COLUMN IF NOT EXISTS {n} {k}" for n, k in missing))


def _columns(client: Client, database: str) -> set[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": database, "t": RUNS_TABLE},
    ).result_rows
    return {r[0] for r in rows}


def _write_run(client: Client, database: str, record: RunRecord) -> None:
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
        "kind": record.kind,
        "kind_reason": record.kind_reason,
        "run_time": record.run_time,
        "since": record.since,
        "changed_keys": record.changed_keys,
        "definition": record.definition,
        "sample_keys": record.sample_keys,
        "sample_differences": record.sample_differences,
        **{figure.name: getattr(record, figure.name) for figure in fields(Work)},
    }
    _insert_row(client, database, row)


def write_run(
    client: Client, database: str, record: RunRecord, *, reconnect: Callable[[], Client] | None = None
) -> None:
    """One row for ``record``, exactly once. Sent as a statement, which clickhouse-connect never
    replays (its ``insert()`` replays a batch whose connection dropped, after the server may have
    written it: two rows). When the answer does not arrive, a new connection from ``reconnect``
    looks whether the row is there and writes it only if it is not."""
    try:
        _write_run(client, database, record)
    except OperationalError as exc:
        if reconnect is None or not unanswered(exc):
            raise
        log.warning(
            "the answer to the run record's insert did not arrive (%s): looking on a new connection", one_line(exc)
        )
        fresh = reconnect()
        try:
            if not recorded(fresh, database, record):
                _write_run(fresh, database, record)
        finally:
            fresh.close()


def recorded(client: Client, database: str, record: RunRecord) -> bool:
    rows = client.query(
        f"SELECT count() FROM {sql.table(database, RUNS_TABLE)} WHERE run_id = {{r:String}} AND target = {{t:String}}",
        parameters={"r": record.run_id, "t": record.target},
    ).result_rows
    return bool(rows[0][0])


# The runs table's DateTime columns (without a fraction); the DateTime64(3) ones carry milliseconds.
_SECONDS = frozenset({"window_start", "run_time", "since"})


def _insert_row(client: Client, database: str, row: dict[str, Any]) -> None:
    values = {
        name: _text_time(value, name in _SECONDS) if isinstance(value, datetime) else value
        for name, value in row.items()
    }
    client.command(
        f"INSERT INTO {sql.table(database, RUNS_TABLE)} ({sql.column_list(list(row))}) FORMAT JSONEachRow",
        data=json.dumps(values),
        settings={"insert_deduplicate": 0},
    )


def _text_time(value: datetime, seconds: bool) -> str:
    """In UTC, as ClickHouse reads a DateTime('UTC') or DateTime64(3, 'UTC') from text."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    return utc.strftime("%Y-%m-%d %H:%M:%S") + ("" if seconds else f".{utc.microsecond // 1000:03d}")


def recent_runs(client: Client, database: str, target: str, limit: int = 20) -> list[dict[str, Any]]:
    result = client.query(
        f"SELECT * FROM {sql.table(database, RUNS_TABLE)} WHERE target = {{t:String}} "
        "ORDER BY started_at DESC LIMIT {n:UInt32}",
        parameters={"t": target, "n": limit},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


# Runs of these strategies change the target (Dedupe only drops copies of rows, so it does not count).
RESTORE = "Restore"


@dataclass(frozen=True)
class PastRun:
    run_id: str
    strategy: str
    outcome: str
    kind: str
    run_time: datetime | None
    definition: str


@dataclass(frozen=True)
class History:
    """What the next run needs to know of its predecessors."""

    last_change: PastRun | None = None  # the newest run that changed, or may have changed, the target
    last_full: datetime | None = None  # run time of the newest successful full run of ``definition``


def history(client: Client, database: str, target: str, definition: str) -> History:
    """Read-only: a missing table, or one from before the incremental columns, has no history."""
    if not {name for name, _ in _ADDED_COLUMNS} <= _columns(client, database):
        return History()
    table = sql.table(database, RUNS_TABLE)
    changed = [Outcome.SUCCEEDED, Outcome.FAILED_AFTER_SWAP]
    params = {"t": target, "d": definition, "restore": RESTORE, "changed": changed, "after": AFTER_SWAP_INTERRUPTION}
    rows = client.query(
        f"SELECT run_id, strategy, outcome, kind, run_time, definition FROM {table} "
        "WHERE target = {t:String} AND (outcome IN {changed:Array(String)} OR strategy = {restore:String} "
        "OR reason = {after:String}) "
        "AND strategy != 'Dedupe' ORDER BY started_at DESC LIMIT 1",
        parameters=params,
    ).result_rows
    full = client.query(
        f"SELECT max(run_time) FROM {table} WHERE target = {{t:String}} AND outcome = 'Succeeded' "
        "AND kind = 'Full' AND definition = {d:String}",
        parameters=params,
    ).result_rows
    last = PastRun(*rows[0]) if rows else None
    last_full = full[0][0] if full and full[0][0] is not None else None
    return History(last_change=_utc(last) if last else None, last_full=_as_utc(last_full))


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc(run: PastRun) -> PastRun:
    return PastRun(run.run_id, run.strategy, run.outcome, run.kind, _as_utc(run.run_time), run.definition)
