"""Refresh benchmark on the embedded engine: each strategy against a bare INSERT … SELECT.

    .venv/bin/python -m bench.refresh [--fills 20000000] [--repeat 3] [--data-dir DIR]

Generates the reference workload, then measures, in one run (so the ratios share the machine's
noise): the baseline, a bare ``INSERT … SELECT`` of the slice into an empty table; each strategy end
to end, as a ratio to the baseline; the smallest slice row count a concurrent reader saw, polling
every 50 ms; and the client's peak memory. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from clickhouse_connect.driver.client import Client

from bench.workload import prepare, refresh, settle
from tablerefresh.dataplane.runs import Outcome
from tablerefresh.spec import Strategy, TableRefreshSpec
from tablerefresh.workloads import polymarket


class SliceReader:
    """Counts the slice every 50 ms from its own client, as a dashboard would."""

    def __init__(self, client: Client, predicate: str, window_start: int) -> None:
        self.client, self.predicate, self.window_start = client, predicate, window_start
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.counts.append(self.count())

    def count(self) -> int:
        sql = f"SELECT count() FROM {polymarket.TARGET_TABLE} WHERE {self.predicate}"
        return int(self.client.query(sql, parameters={"window_start": self.window_start}).result_rows[0][0])

    def __enter__(self) -> SliceReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--data-dir", type=Path, help="chDB path (default: a temporary directory)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step of each run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="tablerefresh-bench-") as tmp:
        run(args.data_dir or Path(tmp), args.fills, args.repeat)


def run(data_dir: Path, fills: int, repeat: int) -> None:
    started = time.monotonic()
    w = prepare(data_dir, fills, progress=lambda m: print(f"  {m}"))
    client, connect, spec, source, now = w.client, w.connect, w.spec, w.source, w.now
    predicate = f"({spec.slice.predicate})"
    window_start = int((now - spec.window_delta).timestamp())
    params = {"window_start": window_start, "run_time": int(now.timestamp())}

    def baseline() -> float:
        client.command("DROP TABLE IF EXISTS baseline SYNC")
        client.command(f"CREATE TABLE baseline AS {polymarket.TARGET_TABLE}")
        t0 = time.perf_counter()
        client.command(
            f"INSERT INTO baseline SELECT * FROM ({source})", parameters=params, settings={"insert_deduplicate": 0}
        )
        return time.perf_counter() - t0

    results: dict[str, list[float]] = {"baseline": []}
    reader_min: dict[str, int] = {}
    bounds: dict[str, int] = {}
    variants: dict[str, tuple[TableRefreshSpec, str]] = {
        "ReplacePartitions": (spec, source),
        # DeleteInsert deletes by the predicate, so its source is cut to exactly the predicate's rows.
        "DeleteInsert": (
            spec.model_copy(update={"strategy": Strategy.DELETE_INSERT}),
            f"SELECT * FROM ({source}) WHERE {predicate}",
        ),
    }

    def measure(name: str) -> None:
        settle(client)
        if name == "baseline":
            results["baseline"].append(baseline())
            return
        variant, query = variants[name]
        record = refresh(variant, connect, query)
        assert record.outcome == Outcome.SUCCEEDED, record.error
        results.setdefault(name, []).append(record.duration_seconds)

    def watch(name: str) -> None:
        """A run under a reader polling every 50 ms: not timed, the reader costs CPU of its own."""
        settle(client)
        variant, query = variants[name]
        reader = SliceReader(connect(), predicate, window_start)
        old = reader.count()
        with reader:
            record = refresh(variant, connect, query)
        assert record.outcome == Outcome.SUCCEEDED, record.error
        reader_min[name] = min(reader.counts, default=old)
        bounds[name] = min(old, reader.count())

    order = ["baseline", *variants]
    for i in range(repeat):  # each repeat starts with another measurement: no order is favoured
        for name in order[i % len(order) :] + order[: i % len(order)]:
            measure(name)
    for name in variants:
        watch(name)
    # Exchange rebuilds a whole table: measure it on a table that holds just the slice, same rows.
    exchange = spec.model_copy(update={"strategy": Strategy.EXCHANGE})
    client.command(f"TRUNCATE TABLE {polymarket.TARGET_TABLE}")
    refresh(exchange, connect, source)
    for _ in range(repeat):
        settle(client)
        record = refresh(exchange, connect, source)
        assert record.outcome == Outcome.SUCCEEDED, record.error
        results.setdefault("Exchange", []).append(record.duration_seconds)

    base_s = statistics.median(results["baseline"])
    print(f"\n{fills:,} fills, median of {repeat} (whole benchmark {time.monotonic() - started:.0f}s)")
    print(f"{'measurement':<34}{'seconds':>9}{'ratio':>8}")
    print(f"{'bare INSERT … SELECT (baseline)':<34}{base_s:>9.2f}{1:>8.2f}")
    for name in ("ReplacePartitions", "Exchange", "DeleteInsert"):
        s = statistics.median(results[name])
        print(f"{name + ' end to end':<34}{s:>9.2f}{s / base_s:>8.2f}")
    print("\nslice rows a reader saw, polling every 50 ms (lowest, and min(old, new)):")
    for name in variants:
        verdict = (
            "never below" if reader_min[name] >= bounds[name] else f"GAP of {bounds[name] - reader_min[name]:,} rows"
        )
        print(f"  {name:<20} lowest {reader_min[name]:>12,}  min(old,new) {bounds[name]:>12,}  {verdict}")
    _, peak = tracemalloc.get_traced_memory()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nclient peak memory: Python heap {peak / 2**20:.1f} MB (rows never pass through Python); "
        f"process RSS {rss_mb:.0f} MB, which includes the embedded ClickHouse engine itself"
    )


if __name__ == "__main__":
    main()
