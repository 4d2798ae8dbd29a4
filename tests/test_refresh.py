"""The refresh engine's guarantees, each on the real ClickHouse engine (chDB), embedded and served
over HTTP (``tests/engines.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import names
from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.run.runs import RUNS_TABLE, Outcome, RunRecord, recent_runs
from tests import refresh_fixtures as fx

Connect = Callable[[], Client]
pytestmark = pytest.mark.engines()


def test_first_run_builds_the_slice_and_records_it(ch: Client, connect: Connect, loaded: str) -> None:
    record = fx.run(connect, fx.spec(loaded))

    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert record.exit_code == 0
    source = fx.source_rows(ch, record)
    assert fx.rows(ch, f"{loaded}.positions") == source
    assert record.rows_after == len(source)
    assert record.slice_rows_after == fx.expected_slice(ch, loaded, record.window_start)  # type: ignore[arg-type]
    assert record.duplicates == 0
    assert "0" in record.partitions

    (row,) = recent_runs(ch, loaded, f"{loaded}.positions")
    assert row["run_id"] == record.run_id and row["outcome"] == "Succeeded"
    assert row["rows_after"] == record.rows_after and row["strategy"] == "ReplacePartitions"
    # Nothing of the run is left behind: no staging table, no lock.
    leftovers = ch.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND name LIKE '\\_tablerefresh%'",
        parameters={"db": loaded},
    ).result_rows
    assert leftovers == [(RUNS_TABLE,)]


def test_a_source_ending_in_a_comment_runs(ch: Client, connect: Connect, loaded: str) -> None:
    commented = fx.SOURCE + "\n-- the window's rows;\n"
    record = fx.run(connect, fx.spec(loaded, source={"query": commented}))
    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert fx.rows(ch, f"{loaded}.positions") == fx.source_rows(ch, record)


def test_rerun_over_the_same_source_gives_the_same_rows(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    first = fx.rows(ch, f"{loaded}.positions")
    second_record = fx.run(connect, fx.spec(loaded))
    assert second_record.outcome == Outcome.SUCCEEDED, second_record.error
    assert fx.rows(ch, f"{loaded}.positions") == first


@pytest.mark.parametrize("strategy", ["ReplacePartitions", "Exchange", "DeleteInsert"])
def test_inserts_are_not_dropped_by_insert_deduplication(
    ch: Client, connect: Connect, database: str, strategy: str
) -> None:
    # A deduplication window makes ClickHouse drop an INSERT whose block it has seen before:
    # a rerun inserting the same rows would silently insert nothing.
    fx.create_tables(ch, database, settings="non_replicated_deduplication_window = 1000")
    fx.fill_source(ch, database, rows=5_000)
    the_spec = fx.spec(database, strategy=strategy, source={"query": fx.SOURCE_FOR[strategy]})
    for _ in range(3):
        record = fx.run(connect, the_spec)
        assert record.outcome == Outcome.SUCCEEDED, record.error
        assert fx.checksum(ch, f"{database}.positions")[0] == record.rows_after
    assert record.rows_after == len(fx.source_rows(ch, record, fx.SOURCE_FOR[strategy]))


def test_rows_that_resolve_move_to_their_month_in_the_same_run(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    open_before = ch.query(f"SELECT count() FROM {loaded}.positions WHERE resolved_at IS NULL").result_rows[0][0]
    ch.command(
        f"ALTER TABLE {loaded}.src UPDATE resolved_at = now() WHERE resolved_at IS NULL AND id % 10 = 0",
        settings={"mutations_sync": 2},
    )
    moved = ch.query(f"SELECT count() FROM {loaded}.src WHERE resolved_at >= now() - 60").result_rows[0][0]

    record = fx.run(connect, fx.spec(loaded))

    assert record.outcome == Outcome.SUCCEEDED, record.error
    open_after = ch.query(f"SELECT count() FROM {loaded}.positions WHERE resolved_at IS NULL").result_rows[0][0]
    assert open_after == open_before - moved
    assert ch.query(f"SELECT count() - uniqExact(id) FROM {loaded}.positions").result_rows[0][0] == 0
    assert (
        ch.query(f"SELECT count() FROM {loaded}.positions WHERE resolved_at >= now() - 60").result_rows[0][0] == moved
    )


def test_concurrent_runs_exactly_one_works(ch: Client, connect: Connect, loaded: str) -> None:
    # A slow source keeps the first run inside its lock while the second starts.
    slow = fx.SOURCE.replace("FROM src WHERE", "FROM src WHERE sleepEachRow(0.0001) = 0 AND")
    the_spec = fx.spec(loaded, source={"query": slow})
    start = threading.Barrier(2)
    records = []

    def one() -> None:
        start.wait()
        records.append(fx.run(connect, the_spec))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    outcomes = sorted(r.outcome for r in records)
    assert outcomes == [Outcome.SKIPPED, Outcome.SUCCEEDED]
    skipped = next(r for r in records if r.outcome == Outcome.SKIPPED)
    assert skipped.exit_code == ExitCode.LOCKED
    assert "another run holds the lock" in skipped.error
    assert ch.query(f"SELECT count() - uniqExact(id) FROM {loaded}.positions").result_rows[0][0] == 0
    # The refused run changed nothing, not even the runs table.
    assert [r["run_id"] for r in recent_runs(ch, loaded, f"{loaded}.positions")] == [
        next(r for r in records if r.outcome == Outcome.SUCCEEDED).run_id
    ]


def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(ch: Client, connect: Connect, loaded: str) -> None:
    lock = f"{loaded}.{names_lock()}"
    ch.command(
        f"CREATE TABLE {lock} (owner String, heartbeat DateTime64(3)) ENGINE = MergeTree ORDER BY heartbeat "
        "COMMENT 'crashed-run@host:1'"
    )
    ch.command(f"INSERT INTO {lock} SELECT 'crashed-run@host:1', now64(3)")

    refused = fx.run(connect, fx.spec(loaded), lock_ttl=5)
    assert refused.exit_code == ExitCode.LOCKED
    assert "crashed-run@host:1" in refused.error
    assert fx.checksum(ch, f"{loaded}.positions") == (0, 0)

    time.sleep(2.5)
    record = fx.run(connect, fx.spec(loaded), lock_ttl=2)
    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert record.rows_after > 0


def names_lock() -> str:
    from tablerefresh.dataplane.infra.lock import LOCK_PREFIX

    return LOCK_PREFIX + "positions"


def test_leftover_staging_of_a_crashed_run_is_cleaned_up(ch: Client, connect: Connect, loaded: str) -> None:
    leftover = names.staging_table("positions", "crashed-run")
    ch.command(f"CREATE TABLE {loaded}.{leftover} AS {loaded}.positions")
    other = names.staging_table("positions_v2", "its-own-run")  # another target's: must survive
    ch.command(f"CREATE TABLE {loaded}.{other} AS {loaded}.positions")

    assert fx.run(connect, fx.spec(loaded)).outcome == Outcome.SUCCEEDED

    tables = {r[0] for r in ch.query(f"SELECT name FROM system.tables WHERE database = '{loaded}'").result_rows}
    assert leftover not in tables
    assert other in tables


# -- verified before swap: each failure leaves the target exactly as it was ---------------------


def _assert_refused(ch: Client, connect: Connect, database: str, the_spec: object, expect: str) -> None:
    before = fx.checksum(ch, f"{database}.positions")
    record = fx.run(connect, the_spec)  # type: ignore[arg-type]
    assert record.outcome == Outcome.FAILED
    assert record.exit_code == ExitCode.VERIFY_FAILED, record.error
    assert expect in record.error
    assert "was not changed" in record.error
    assert fx.checksum(ch, f"{database}.positions") == before
    (row,) = [r for r in recent_runs(ch, database, f"{database}.positions") if r["run_id"] == record.run_id]
    assert row["outcome"] == "Failed" and expect in row["error"]


def test_staged_duplicates_abort(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    doubled = (
        f"{fx.SOURCE} UNION ALL SELECT id, resolved_at, value, updated_at FROM src WHERE resolved_at IS NULL LIMIT 3"
    )
    _assert_refused(ch, connect, loaded, fx.spec(loaded, source={"query": doubled}), "3 duplicate unique key(s)")


def test_staged_rows_outside_the_slice_abort(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    # Also yields a month long before the window: replacing it would wipe that month's other rows.
    wide = "SELECT id, resolved_at, value, updated_at FROM src"
    ch.command(f"INSERT INTO {loaded}.src VALUES (99999999, '2020-01-15 00:00:00', 1, now())")
    _assert_refused(ch, connect, loaded, fx.spec(loaded, source={"query": wide}), "rows outside the slice predicate")


def test_slice_under_min_rows_aborts(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    _assert_refused(ch, connect, loaded, fx.spec(loaded, thresholds={"minSliceRows": 10**9}), "under minSliceRows")


def test_slice_shrinking_too_much_aborts(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    ch.command(f"DELETE FROM {loaded}.src WHERE resolved_at IS NULL AND id % 4 != 0")
    _assert_refused(ch, connect, loaded, fx.spec(loaded), "over maxSliceDropFraction")


def _open_partition_doubled(ch: Client, connect: Connect, database: str) -> None:
    """What an engine that dies inside a swap leaves (the embedded one dies with its run; found by
    bench/kills.py): the last partition it replaced, the open one, holds its old part beside its new
    one, so every key twice. Here the open partition shrinks, as it does when positions resolve."""
    fx.run(connect, fx.spec(database))
    ch.command(f"CREATE TABLE {database}.old_open AS {database}.positions")
    ch.command(f"INSERT INTO {database}.old_open SELECT * FROM {database}.positions WHERE resolved_at IS NULL")
    ch.command(
        f"ALTER TABLE {database}.src UPDATE resolved_at = now() WHERE resolved_at IS NULL AND id % 10 = 0",
        settings={"mutations_sync": 2},
    )
    fx.run(connect, fx.spec(database))
    ch.command(f"INSERT INTO {database}.positions SELECT * FROM {database}.old_open")


def test_a_partition_an_interrupted_swap_left_doubled_is_rebuilt(ch: Client, connect: Connect, loaded: str) -> None:
    _open_partition_doubled(ch, connect, loaded)
    doubled = ch.query(f"SELECT count() - uniqExact(id) FROM {loaded}.positions").result_rows[0][0]
    assert doubled > 0

    # The open partition holds about twice the rows it will: without its second copies, it shrinks little.
    record = fx.run(connect, fx.spec(loaded))

    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert fx.rows(ch, f"{loaded}.positions") == sorted(fx.source_rows(ch, record) + _outside_the_slice(ch, record))
    assert ch.query(f"SELECT count() - uniqExact(id) FROM {loaded}.positions").result_rows[0][0] == 0


def test_a_doubled_partition_still_refuses_a_source_that_shrinks(ch: Client, connect: Connect, loaded: str) -> None:
    _open_partition_doubled(ch, connect, loaded)
    ch.command(f"DELETE FROM {loaded}.src WHERE resolved_at IS NULL AND id % 4 != 0")
    _assert_refused(ch, connect, loaded, fx.spec(loaded), "whose key it holds twice")


def _outside_the_slice(ch: Client, record: RunRecord) -> list[tuple[Any, ...]]:
    assert record.window_start is not None
    rows = ch.query(
        f"SELECT * FROM positions WHERE NOT ifNull(({fx.PREDICATE}), 0)",
        parameters={"window_start": int(record.window_start.timestamp())},
    ).result_rows
    return [tuple(r) for r in rows]


def test_an_emptied_slice_drops_its_partitions_when_allowed(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    ch.command(f"TRUNCATE TABLE {loaded}.src")
    record = fx.run(connect, fx.spec(loaded, thresholds={"maxSliceDropFraction": 1}))
    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert record.slice_rows_after == 0
    assert ch.query(f"SELECT count() FROM {loaded}.positions WHERE resolved_at IS NULL").result_rows[0][0] == 0


# -- pre-flight ----------------------------------------------------------------------------------


def test_a_stuck_mutation_refuses_the_run_and_is_named(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    before = fx.checksum(ch, f"{loaded}.positions")
    ch.command(
        f"ALTER TABLE {loaded}.positions UPDATE value = throwIf(1, 'boom') WHERE 1", settings={"mutations_sync": 0}
    )
    time.sleep(2.1)
    record = fx.run(connect, fx.spec(loaded, mutations={"maxPending": "1s"}))
    assert record.exit_code == ExitCode.PREFLIGHT
    assert "mutation_" in record.error and "throwIf" in record.error
    assert fx.checksum(ch, f"{loaded}.positions") == before
    ch.command(f"KILL MUTATION WHERE database = '{loaded}' SYNC")


# -- bad input fails before anything is touched --------------------------------------------------


def _tables(ch: Client, database: str) -> set[str]:
    return {r[0] for r in ch.query(f"SELECT name FROM system.tables WHERE database = '{database}'").result_rows}


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        ({"target": {"table": "no_such_table"}}, "unknown table"),
        ({"source": {"query": "SELECT id, value, updated_at FROM src"}}, "missing column(s) resolved_at"),
        ({"source": {"query": fx.SOURCE.replace("updated_at FROM", "updated_at, 1 AS extra FROM")}}, "extra"),
        ({"source": {"query": "SELECT id FROM no_such_source"}}, "does not compile"),
        ({"uniqueKey": ["id", "nope"]}, "uniqueKey names column(s)"),
        ({"slice": {"predicate": "no_such_column > 1"}}, "predicate does not compile"),
    ],
)
def test_bad_input_fails_before_anything_is_touched(
    ch: Client, connect: Connect, loaded: str, overrides: dict[str, object], expect: str
) -> None:
    tables = _tables(ch, loaded)
    record = fx.run(connect, fx.spec(loaded, **overrides))
    assert record.exit_code == ExitCode.INVALID
    assert expect in record.error
    assert _tables(ch, loaded) == tables  # no lock, no staging, no runs table


def test_unreachable_clickhouse_is_its_own_outcome(loaded: str) -> None:
    from tablerefresh.dataplane.infra.connection import connect as real_connect

    def nowhere() -> Client:
        return real_connect("clickhouse://127.0.0.1:9/db")

    record = fx.run(nowhere, fx.spec(loaded))
    assert record.exit_code == ExitCode.UNREACHABLE
    assert "cannot reach ClickHouse at clickhouse://127.0.0.1:9" in record.error


# -- strategies ----------------------------------------------------------------------------------


def test_exchange_rebuilds_the_whole_table_and_keeps_the_previous_one(
    ch: Client, connect: Connect, loaded: str
) -> None:
    the_spec = fx.spec(loaded, strategy="Exchange", source={"query": fx.FULL_SOURCE})
    first = fx.run(connect, the_spec)
    assert first.outcome == Outcome.SUCCEEDED, first.error
    assert fx.checksum(ch, f"{loaded}.positions") == fx.checksum(ch, f"{loaded}.src")
    ch.command(f"INSERT INTO {loaded}.src SELECT number + 10000000, NULL, 1, now() FROM numbers(10)")
    previous = fx.checksum(ch, f"{loaded}.positions")

    second = fx.run(connect, the_spec)

    assert second.outcome == Outcome.SUCCEEDED, second.error
    assert second.rows_after == second.rows_before + 10
    backups = [t for t in _tables(ch, loaded) if t.startswith(names.backup_prefix("positions"))]
    assert len(backups) == 1
    assert fx.checksum(ch, f"{loaded}.{backups[0]}") == previous


def test_delete_insert_replaces_exactly_the_slice(ch: Client, connect: Connect, loaded: str) -> None:
    record = fx.run(connect, fx.spec(loaded, strategy="DeleteInsert", source={"query": fx.EXACT_SOURCE}))
    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert record.slice_rows_after == fx.expected_slice(ch, loaded, record.window_start)  # type: ignore[arg-type]
    assert record.rows_after == record.slice_rows_after
    assert record.duplicates == 0
