"""Readers during an incremental run see the old rows or the new ones, as during a full run: the
partitions it touches are swapped whole, the growing ones first. On both engines."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.run.incremental import INCREMENTAL
from tablerefresh.dataplane.run.runs import Outcome
from tests import refresh_fixtures as fx
from tests.readers import ROWS, Reader, snapshot

pytestmark = pytest.mark.engines()
SYNC = {"mutations_sync": 2}


def test_an_incremental_run_is_atomic_for_readers(
    ch: Client, connect: Callable[[], Client], database: str, reader_client: Client
) -> None:
    fx.create_tables(ch, database)
    fx.fill_source(ch, database, rows=ROWS)
    ch.command("ALTER TABLE src UPDATE updated_at = now() - 7200 WHERE 1", settings=SYNC)
    spec = fx.incremental_spec(database)
    assert fx.run(connect, spec).outcome == Outcome.SUCCEEDED
    old_open, old_total = snapshot(ch)
    # A tenth of the open rows get new values, a twentieth resolve now and move to this month.
    ch.command(
        "ALTER TABLE src UPDATE value = value + 1, updated_at = now() WHERE resolved_at IS NULL AND id % 10 = 0",
        settings=SYNC,
    )
    ch.command(
        "ALTER TABLE src UPDATE resolved_at = now(), updated_at = now() WHERE resolved_at IS NULL AND id % 20 = 1",
        settings=SYNC,
    )
    moved = ch.query("SELECT count() FROM src WHERE resolved_at >= now() - 120").result_rows[0][0]

    with Reader(reader_client) as reader:
        record = fx.run(connect, spec)

    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert record.kind == INCREMENTAL and record.changed_keys is not None and record.changed_keys > moved > 0
    new_open, new_total = snapshot(ch)
    assert new_open != old_open
    assert len(reader.open) > 10  # the reader really read throughout the run
    assert set(reader.open) <= {old_open, new_open}
    assert min(reader.totals) >= min(old_total, new_total)
    assert max(reader.totals) <= max(old_total, new_total) + moved
