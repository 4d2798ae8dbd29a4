"""Readers during a run see the old slice or the new one, never a missing or doubled slice.

On both engines: the reader is a client of its own, in a thread (on the embedded engine, which one
process at a time may open, it cannot be another process; on the served one it is another HTTP
connection, as another process's would be: ``tests/test_concurrent_processes.py`` reads from one).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.run.runs import Outcome
from tests import refresh_fixtures as fx
from tests.readers import ROWS, Reader, snapshot

pytestmark = pytest.mark.engines()


def test_replace_partitions_is_atomic_for_readers(
    ch: Client, connect: Callable[[], Client], database: str, reader_client: Client
) -> None:
    fx.create_tables(ch, database)
    fx.fill_source(ch, database, rows=ROWS)
    assert fx.run(connect, fx.spec(database)).outcome == Outcome.SUCCEEDED
    old_open, old_total = snapshot(ch)
    # New values for open rows, and some open rows resolve now: they move to this month's partition.
    ch.command("ALTER TABLE src UPDATE value = value + 1 WHERE resolved_at IS NULL", settings={"mutations_sync": 2})
    ch.command(
        "ALTER TABLE src UPDATE resolved_at = now() WHERE resolved_at IS NULL AND id % 20 = 0",
        settings={"mutations_sync": 2},
    )
    moved = ch.query("SELECT count() FROM src WHERE resolved_at >= now() - 120").result_rows[0][0]

    with Reader(reader_client) as reader:
        record = fx.run(connect, fx.spec(database))

    assert record.outcome == Outcome.SUCCEEDED, record.error
    new_open, new_total = snapshot(ch)
    assert new_open != old_open and moved > 0
    # The reader really read throughout the run (each of its loops counts the table by reading it).
    assert len(reader.open) > 10
    # The open slice is one partition: a reader sees exactly the old one or exactly the new one.
    assert set(reader.open) <= {old_open, new_open}
    # Across partitions, a moving row may show in both for an instant, never in neither.
    assert min(reader.totals) >= min(old_total, new_total)
    assert max(reader.totals) <= max(old_total, new_total) + moved


def test_delete_insert_leaves_readers_a_gap_as_documented(
    ch: Client, connect: Callable[[], Client], database: str, reader_client: Client
) -> None:
    """The seed's method, kept for tables whose partitioning cannot isolate the slice: not atomic."""
    fx.create_tables(ch, database)
    fx.fill_source(ch, database, rows=ROWS * 2, resolved_share=0.1)
    the_spec = fx.spec(database, strategy="DeleteInsert", source={"query": fx.EXACT_SOURCE})
    assert fx.run(connect, the_spec).outcome == Outcome.SUCCEEDED
    (old_count, _), _ = snapshot(ch)

    with Reader(reader_client) as reader:
        record = fx.run(connect, the_spec)

    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert min(count for count, _ in reader.open) < old_count
