"""Operations benchmark on the embedded engine: dedupe time, and what a backup adds to a swap.

    .venv/bin/python -m bench.operations [--fills 20000000] [--repeat 3] [--data-dir DIR]

Same data set as ``bench/refresh.py``. Dedupe: the table is built, then the seed's accident is
replayed (the open slice inserted a second time), then ``dedupe`` of the whole table and of the
slice only is timed; the seed's script took 35-40 minutes on the production table. Backups: a
``ReplacePartitions`` run with ``backup.keep: 1`` against the same run without, as a ratio, the two
interleaved so they share the machine's noise. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clickhouse_connect.driver.client import Client

from bench.workload import prepare, refresh, settle
from tablerefresh.dataplane.operations.dedupe import dedupe
from tablerefresh.dataplane.operations.operation import locked_target, new_run_id
from tablerefresh.dataplane.run.runs import Outcome
from tablerefresh.spec import BackupSpec, TableRefreshSpec
from tablerefresh.workloads import polymarket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tablerefresh-bench-") as tmp:
        run(args.data_dir or Path(tmp), args.fills, args.repeat)


def run(data_dir: Path, fills: int, repeat: int) -> None:
    w = prepare(data_dir, fills)
    client, connect, spec, source = w.client, w.connect, w.spec, w.source

    with_backup = spec.model_copy(update={"backup": BackupSpec(keep=1)})
    plain: list[float] = []
    backed: list[float] = []
    for _ in range(repeat):
        for variant, into in ((spec, plain), (with_backup, backed)):
            settle(client)
            record = refresh(variant, connect, source)
            assert record.outcome == Outcome.SUCCEEDED, record.error
            into.append(record.duration_seconds)
    p, b = statistics.median(plain), statistics.median(backed)
    print(f"\nReplacePartitions, median of {repeat}: {p:.2f}s without backup, {b:.2f}s with backup.keep 1")
    print(f"backup overhead per swap: {b / p:.3f}x")

    total = int(client.query(f"SELECT count() FROM {polymarket.TARGET_TABLE}").result_rows[0][0])
    for slice_only in (False, True):
        # The seed's accident: the open slice inserted a second time by an overlapping run.
        client.command(
            f"INSERT INTO {polymarket.TARGET_TABLE} SELECT * FROM {polymarket.TARGET_TABLE} WHERE resolved_at IS NULL",
            settings={"insert_deduplicate": 0},
        )
        seconds, before, after = timed_dedupe(connect, spec, slice_only=slice_only)
        scope = "slice only" if slice_only else "whole table"
        print(
            f"dedupe ({scope}): {before:,} -> {after:,} rows in {seconds:.1f}s "
            f"(table of {total:,} rows; the seed's script: 35-40 min on 590M rows)"
        )


def timed_dedupe(connect: Callable[[], Client], spec: TableRefreshSpec, *, slice_only: bool) -> tuple[float, int, int]:
    now = datetime.now(UTC)
    params = {"window_start": int((now - timedelta(hours=24)).timestamp()), "run_time": int(now.timestamp())}
    run_id = new_run_id("dedupe")
    started = time.perf_counter()
    with locked_target(connect, spec, run_id) as held:
        done = dedupe(
            held.client, held.target, spec, held.lock, run_id, slice_only=slice_only, params=params, taken_at=now
        )
    return time.perf_counter() - started, done.rows_before, done.rows_after


if __name__ == "__main__":
    main()
