"""A small generic workload for the engine's tests: positions that are open (resolved_at NULL) or
resolved in a month, partitioned like the reference table, rebuilt from a source table."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.clock import Clock, utc_now
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.refresh import Refresh
from tablerefresh.dataplane.run.runs import RunRecord
from tablerefresh.spec import TableRefreshSpec
from tests.engines import write_manifest

COLUMNS = "id UInt64, resolved_at Nullable(DateTime), value Float64, updated_at DateTime"
PREDICATE = "resolved_at IS NULL OR resolved_at >= {window_start:DateTime}"
# What most users write: the source yields the predicate's rows. A run keeps the rest of each
# partition it replaces (the month's rows from before the window) as they are.
SOURCE = f"SELECT id, resolved_at, value, updated_at FROM src WHERE {PREDICATE}"
EXACT_SOURCE = SOURCE
# Exchange rebuilds the whole table.
FULL_SOURCE = "SELECT id, resolved_at, value, updated_at FROM src"
SOURCE_FOR = {"ReplacePartitions": SOURCE, "Exchange": FULL_SOURCE, "DeleteInsert": SOURCE}
# No resolution within an hour of the 24h window's start at fill time, so a few minutes between two
# runs never move a row across the window's edge (which would make "the source's rows" ambiguous).
_EDGE, _MARGIN = 24 * 3600, 3600


def create_tables(client: Client, database: str, *, settings: str = "") -> None:
    extra = f", {settings}" if settings else ""
    client.command(
        f"CREATE TABLE {database}.positions ({COLUMNS}) ENGINE = MergeTree "
        "PARTITION BY if(resolved_at IS NULL, 0, toYYYYMM(resolved_at)) ORDER BY id "
        f"SETTINGS allow_nullable_key = 1{extra}"
    )
    client.command(f"CREATE TABLE {database}.src ({COLUMNS}) ENGINE = MergeTree ORDER BY id")


def fill_source(client: Client, database: str, *, rows: int, seed: int = 0, resolved_share: float = 0.5) -> None:
    """Rows: a share resolved over the last ~90 days (some inside the last day), the rest open."""
    ago = f"cityHash64({seed}, number, 1) % (90 * 86400 - {2 * _MARGIN})"
    client.command(
        f"INSERT INTO {database}.src SELECT number, "
        f"if(cityHash64({seed}, number) % 1000 < {int(resolved_share * 1000)}, "
        f"   now() - toIntervalSecond(if({ago} < {_EDGE - _MARGIN}, {ago}, {ago} + {2 * _MARGIN})), NULL), "
        f"(cityHash64({seed}, number, 2) % 100000) / 100, now() - toIntervalSecond(number % 3600) "
        f"FROM numbers({rows})"
    )


def spec(database: str, **overrides: Any) -> TableRefreshSpec:
    body: dict[str, Any] = {
        "schedule": "0 */6 * * *",
        "clickhouse": {"url": "chdb://unused", "database": database},
        "target": {"table": "positions"},
        "slice": {"predicate": PREDICATE},
        "source": {"query": SOURCE},
        "window": "24h",
        "uniqueKey": ["id"],
        "freshnessColumn": "updated_at",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return TableRefreshSpec.model_validate(body)


def run(
    connect: Callable[[], Client],
    the_spec: TableRefreshSpec,
    *,
    run_id: str | None = None,
    lock_ttl: float = 30.0,
    run_time: datetime | None = None,
    force_full: bool = False,
    clock: Clock = utc_now,
    source_query: str | None = None,
) -> RunRecord:
    """One run of ``the_spec``; ``source_query``: the text a ConfigMap source holds."""
    run_id = run_id or f"test-{uuid.uuid4().hex[:8]}"
    options = RunOptions(
        run_id=run_id,
        owner=f"{run_id}@{socket.gethostname()}:{os.getpid()}",
        run_time=run_time or datetime.now(UTC),
        lock_ttl_seconds=lock_ttl,
        force_full=force_full,
        clock=clock,
    )
    query = source_query or the_spec.source.query
    assert query is not None

    def in_database() -> Client:  # as connection.connect() does with spec.clickhouse.database
        client = connect()
        client.database = the_spec.clickhouse.database
        return client

    return Refresh(the_spec, in_database, query, options).run()


def source_rows(client: Client, record: RunRecord, query: str = SOURCE) -> list[tuple[Any, ...]]:
    """What the source query yields for the run's window, in the client's database."""
    assert record.window_start is not None
    result = client.query(
        f"SELECT * FROM ({query}) ORDER BY tuple(*)", parameters={"window_start": int(record.window_start.timestamp())}
    )
    return [tuple(r) for r in result.result_rows]


def rows(client: Client, table: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(f"SELECT * FROM {table} ORDER BY tuple(*)").result_rows]


def checksum(client: Client, table: str) -> tuple[int, int]:
    """(rows, order-independent sum of row hashes): equal iff the same multiset of rows, in practice."""
    count, total = client.query(f"SELECT count(), sum(cityHash64(*)) FROM {table}").result_rows[0]
    return int(count), int(total or 0)


def expected_slice(client: Client, database: str, window_start: datetime) -> int:
    """Rows of the source the predicate selects, as the run computes them."""
    return int(
        client.query(
            f"SELECT count() FROM {database}.src WHERE resolved_at IS NULL OR resolved_at >= {{w:DateTime}}",
            parameters={"w": int(window_start.timestamp())},
        ).result_rows[0][0]
    )


# An incremental spec of the same workload: a row changes when its updated_at does. The source reads
# only the changed ids in an incremental run, everything in a full run.
CHANGED_IDS = "SELECT id FROM src WHERE updated_at >= {since:DateTime}"
INCREMENTAL_SOURCE = (
    "SELECT id, resolved_at, value, updated_at FROM src "
    f"WHERE ({PREDICATE}) AND ({{full_run:UInt8}} OR id IN {{changed_keys:Identifier}})"
)


def incremental_spec(database: str, incremental: dict[str, Any] | None = None, **overrides: Any) -> TableRefreshSpec:
    section = {"key": ["id"], "changedKeysQuery": CHANGED_IDS, "lateness": "1s", **(incremental or {})}
    return spec(database, **{"source": {"query": INCREMENTAL_SOURCE}, "incremental": section, **overrides})


def set_up_engine(
    client: Client, url: str, database: str, spec: TableRefreshSpec, *, name: str, rows: int, manifest: str
) -> None:
    """For the crash tests: the database, its tables, ``rows`` of source, and at ``manifest`` the
    TableRefresh for ``spec`` pointed at the engine at ``url``."""
    client.command(f"CREATE DATABASE {database}")
    create_tables(client, database)
    fill_source(client, database, rows=rows)
    write_manifest(Path(manifest), spec, url, name)
