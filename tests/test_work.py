"""What a run cost the engine (``dataplane/run/work.py``): added up from the statements' summaries
as a server sends them, and carried in the run record, its summary and the runs table."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.run.runs import Outcome, recent_runs
from tablerefresh.dataplane.run.work import Work, process_peak_memory
from tests import refresh_fixtures as fx
from tests.engines import Engine


def test_the_peak_is_the_largest_statement_and_the_counts_add_up() -> None:
    work = Work()
    work.add({"read_rows": "10", "read_bytes": "80", "written_rows": "4", "written_bytes": "32", "memory_usage": "900"})
    work.add({"read_rows": "5", "read_bytes": "40", "written_rows": "5", "written_bytes": "40", "memory_usage": "300"})
    assert work == Work(peak_memory_bytes=900, read_rows=15, read_bytes=120, written_rows=9, written_bytes=72)


def test_a_figure_the_engine_does_not_send_stays_unknown() -> None:
    work = Work()
    work.add({})  # a statement that returned rows: no summary
    work.add({"read_rows": "7", "elapsed_ns": "100"})
    # A statement that freed more than it took reports a negative memory_usage: no peak of its own.
    work.add({"memory_usage": "-4096", "written_rows": "not a number"})
    assert work == Work(read_rows=7)


@pytest.mark.engines()
def test_a_run_records_its_peak_memory_and_the_rows_it_read_and_wrote(
    engine: Engine, ch: Client, connect: Callable[[], Client], loaded: str
) -> None:
    record = fx.run(connect, fx.spec(loaded))

    assert record.outcome == Outcome.SUCCEEDED, record.error
    summary = record.summary()
    (row,) = recent_runs(ch, loaded, record.target)
    for name, key in [
        ("peak_memory_bytes", "peakMemoryBytes"),
        ("read_rows", "readRows"),
        ("read_bytes", "readBytes"),
        ("written_rows", "writtenRows"),
        ("written_bytes", "writtenBytes"),
    ]:
        assert summary[key] == getattr(record, name) == row[name], name
    assert record.peak_memory_bytes is not None and record.peak_memory_bytes > 0
    if engine.served:
        # The source statement alone read every source row and wrote the slice into staging.
        source_rows = int(ch.query("SELECT count() FROM src").result_rows[0][0])
        assert record.read_rows is not None and record.read_rows >= source_rows
        assert record.written_rows is not None and record.written_rows >= record.slice_rows_after > 0
        assert record.read_bytes and record.written_bytes
    else:
        # The embedded engine says neither; its peak is the process's, which it runs in.
        assert record.peak_memory_bytes <= process_peak_memory()
        assert (record.read_rows, record.read_bytes, record.written_rows, record.written_bytes) == (None,) * 4
