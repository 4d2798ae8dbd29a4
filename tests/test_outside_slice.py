"""No row outside the slice predicate is lost, whatever the partitioning, on the real engine.

The case a new user writes first: a table partitioned by month, the predicate ``ts >= window_start``
with a 24h window, and a source that yields the window's rows. A run replaces the whole month
partition, so the month's rows from before the window must be carried over, as they are, or the
run must refuse with the table untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.run.runs import Outcome
from tablerefresh.spec import TableRefreshSpec
from tests import refresh_fixtures as fx

Connect = Callable[[], Client]
RUN_TIME = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)
WINDOW_START = RUN_TIME - timedelta(hours=24)
PREDICATE = "ts >= {window_start:DateTime}"
WINDOW_SOURCE = f"SELECT id, ts, value FROM events_src WHERE {PREDICATE}"


def events_spec(database: str, **overrides: Any) -> TableRefreshSpec:
    body: dict[str, Any] = {
        "slice": {"predicate": PREDICATE},
        "source": {"query": WINDOW_SOURCE},
        "target": {"table": "events"},
        "freshnessColumn": "ts",
        **overrides,
    }
    return fx.spec(database, **body)


@pytest.fixture
def events(ch: Client, database: str) -> str:
    """16 rows in June: 10 inside the window (the last 24h before RUN_TIME), 6 before it; and a
    row in May. The source has the window's rows with new values, plus one new row."""
    for table in ("events", "events_src"):
        ch.command(
            f"CREATE TABLE {database}.{table} (id UInt64, ts DateTime('UTC'), value Float64) "
            "ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY id"
        )
    before_window = [(i, WINDOW_START - timedelta(days=i + 1), float(i)) for i in range(6)]
    in_window = [(100 + i, WINDOW_START + timedelta(hours=i + 1), float(i)) for i in range(10)]
    may = [(500, datetime(2026, 5, 3, tzinfo=UTC), 5.0)]
    ch.insert(f"{database}.events", before_window + in_window + may, column_names=["id", "ts", "value"])
    rebuilt = [(i, ts, v + 1000) for i, ts, v in in_window] + [(200, WINDOW_START + timedelta(hours=20), 7.0)]
    ch.insert(f"{database}.events_src", rebuilt, column_names=["id", "ts", "value"])
    return database


def outside_rows(ch: Client, database: str) -> list[tuple[Any, ...]]:
    return fx.rows(ch, f"(SELECT * FROM {database}.events WHERE ts < toDateTime({int(WINDOW_START.timestamp())}))")


@pytest.mark.parametrize("strategy", ["ReplacePartitions", "DeleteInsert"])
def test_rows_outside_the_window_survive_a_window_source(
    ch: Client, connect: Connect, events: str, strategy: str
) -> None:
    outside = outside_rows(ch, events)
    assert len(outside) == 7  # 6 of June before the window, 1 of May

    record = fx.run(connect, events_spec(events, strategy=strategy), run_time=RUN_TIME)

    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert outside_rows(ch, events) == outside  # still there, unchanged
    window = fx.rows(ch, f"(SELECT * FROM {events}.events WHERE ts >= toDateTime({int(WINDOW_START.timestamp())}))")
    assert window == fx.rows(ch, f"{events}.events_src")  # the window is the source's
    assert record.rows_after == 7 + 11
    if strategy == "ReplacePartitions":
        assert record.partitions == ["202606"]  # the month partition was replaced whole, its old rows kept


def test_exchange_refuses_when_keys_outside_the_slice_would_vanish(ch: Client, connect: Connect, events: str) -> None:
    before = fx.checksum(ch, f"{events}.events")

    record = fx.run(connect, events_spec(events, strategy="Exchange"), run_time=RUN_TIME)

    assert record.outcome == Outcome.FAILED
    assert record.exit_code == ExitCode.VERIFY_FAILED
    assert "key(s) outside the slice predicate would vanish" in record.error
    assert "partition 202606: 6" in record.error and "partition 202605: 1" in record.error
    assert "allowVanishingKeys" in record.error
    assert fx.checksum(ch, f"{events}.events") == before


def test_exchange_drops_them_when_the_manifest_says_so(ch: Client, connect: Connect, events: str) -> None:
    the_spec = events_spec(events, strategy="Exchange", allowVanishingKeys=True)

    record = fx.run(connect, the_spec, run_time=RUN_TIME)

    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert fx.rows(ch, f"{events}.events") == fx.rows(ch, f"{events}.events_src")


def test_a_source_row_outside_the_predicate_is_refused(ch: Client, connect: Connect, events: str) -> None:
    before = fx.checksum(ch, f"{events}.events")
    wide = "SELECT id, ts, value FROM events_src UNION ALL SELECT 900, toDateTime('2026-06-02', 'UTC'), 1"

    record = fx.run(connect, events_spec(events, source={"query": wide}), run_time=RUN_TIME)

    assert record.exit_code == ExitCode.VERIFY_FAILED
    assert "the source yielded rows outside the slice predicate (202606: 1)" in record.error
    assert fx.checksum(ch, f"{events}.events") == before


def test_a_key_that_moved_into_the_slice_is_refused_not_doubled(ch: Client, connect: Connect, events: str) -> None:
    # Row 3 stands before the window in the table; the source now yields it inside the window.
    ch.command(f"INSERT INTO {events}.events_src VALUES (3, toDateTime({int(WINDOW_START.timestamp()) + 60}), 3)")
    before = fx.checksum(ch, f"{events}.events")

    record = fx.run(connect, events_spec(events), run_time=RUN_TIME)

    assert record.exit_code == ExitCode.VERIFY_FAILED
    assert "the source yields 1 key(s) that the target holds outside the slice predicate" in record.error
    assert fx.checksum(ch, f"{events}.events") == before


def test_rows_where_the_predicate_is_null_are_kept(ch: Client, connect: Connect, database: str) -> None:
    # NOT (NULL) is NULL: a carry-over written as NOT predicate would lose these rows.
    for table in ("scores", "scores_src"):
        ch.command(
            f"CREATE TABLE {database}.{table} (id UInt64, bucket UInt8, score Nullable(Float64)) "
            "ENGINE = MergeTree PARTITION BY bucket ORDER BY id"
        )
    ch.command(
        f"INSERT INTO {database}.scores SELECT number, number % 2, if(number % 3 = 0, NULL, number) FROM numbers(30)"
    )
    ch.command(
        f"INSERT INTO {database}.scores_src SELECT number, number % 2, number + 0.5 FROM numbers(30) "
        "WHERE number > 10 AND number % 3 != 0"  # not the keys the table holds with a NULL score
    )
    kept = fx.rows(ch, f"(SELECT * FROM {database}.scores WHERE NOT ifNull(score > 10, 0))")
    the_spec = fx.spec(
        database,
        target={"table": "scores"},
        slice={"predicate": "score > 10"},
        source={"query": "SELECT id, bucket, score FROM scores_src WHERE score > 10"},
        uniqueKey=["id"],
        freshnessColumn="id",
    )

    record = fx.run(connect, the_spec)

    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert fx.rows(ch, f"(SELECT * FROM {database}.scores WHERE NOT ifNull(score > 10, 0))") == kept
    assert any(r[2] is None for r in kept)


def test_plan_lists_what_the_run_then_replaces_and_keeps(ch: Client, connect: Connect, events: str) -> None:
    import os

    from tablerefresh.dataplane.run.options import RunOptions
    from tablerefresh.dataplane.run.plan import plan

    the_spec = events_spec(events)
    options = RunOptions(run_id="plan", owner=f"plan@host:{os.getpid()}", run_time=RUN_TIME)

    def in_database() -> Client:
        client = connect()
        client.database = events
        return client

    planned = plan(in_database(), the_spec, WINDOW_SOURCE, options)
    record = fx.run(connect, the_spec, run_time=RUN_TIME)

    assert [c.partition for c in planned.changes] == record.partitions == ["202606"]
    (june,) = planned.changes
    assert (june.old_rows, june.kept, june.new_rows) == (16, 6, 17)  # 6 kept + 11 from the source
    # The carry-over of the rows outside the slice of partition 202606, the statement the run executes.
    assert any(
        s.startswith(f"INSERT INTO `{events}`.`_tablerefresh_staging_")
        and f"FROM `{events}`.`events` WHERE _partition_id IN ('202606') AND NOT " in s
        for s in planned.statements
    )
