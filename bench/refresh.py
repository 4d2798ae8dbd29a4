"""Refresh benchmark: each strategy against a bare INSERT … SELECT.

    .venv/bin/python -m bench.refresh [--fills 20000000] [--repeat 3] [--data-dir DIR] [--server]

Generates the reference workload, then measures, in one run (so the ratios share the machine's
noise): the baseline, a bare ``INSERT … SELECT`` of the slice into an empty table; each strategy end
to end, as a ratio to the baseline; the smallest slice row count a concurrent reader saw, polling
every 50 ms; and the client's peak memory. Prints figures, asserts nothing.

On the embedded engine (the default) every run is in this process, the engine inside it. With
``--server`` the engine is served over ClickHouse's HTTP in a process of its own
(``bench/server.py``), the baseline is sent to it, and each refresh runs in a process of its own, a
client, as a Job is; it also reports the server process's CPU seconds and peak memory for each
measurement (its resident set's high-water mark over the run, and the engine's own tracked memory
sampled every 50 ms; there is no query log), and the refresh process's own peak resident set.
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
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from bench.server import BenchServer
from bench.workload import Measured, measured, prepare, refresh, settle
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
    parser.add_argument(
        "--server", action="store_true", help="serve the engine over HTTP; each refresh is a client process"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="tablerefresh-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        if args.server:
            with BenchServer(data_dir / "chdb") as server:
                print(f"served engine at {server.url}, pid {server.pid}")
                run(data_dir, args.fills, args.repeat, server)
        else:
            run(data_dir, args.fills, args.repeat)


def run(data_dir: Path, fills: int, repeat: int, server: BenchServer | None = None) -> None:
    started = time.monotonic()
    w = prepare(data_dir, fills, progress=lambda m: print(f"  {m}"), server=server)
    client, connect, spec, source, now = w.client, w.connect, w.spec, w.source, w.now
    predicate = f"({spec.slice.predicate})"
    window_start = int((now - spec.window_delta).timestamp())
    batches = spec.source.batches
    params = {"window_start": window_start, "run_time": int(now.timestamp()), "batches": batches}

    def baseline() -> float:
        """The source's rows inserted as the manifest has a run build them (spec.source.batches
        statements), and nothing else: what a run costs beyond that is the operator's."""
        client.command("DROP TABLE IF EXISTS baseline SYNC")
        client.command(f"CREATE TABLE baseline AS {polymarket.TARGET_TABLE}")
        t0 = time.perf_counter()
        for batch in range(batches):
            client.command(
                f"INSERT INTO baseline SELECT * FROM ({source})",
                parameters={**params, "batch": batch},
                settings={"insert_deduplicate": 0},
            )
        return time.perf_counter() - t0

    results: dict[str, list[float]] = {"baseline": []}
    used: dict[str, list[Use]] = {"baseline": []}  # with --server: what each run used
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
            if server is None:
                results["baseline"].append(baseline())
                return
            mark = server.mark()
            seconds = baseline()
            use = server.since(mark)
            results["baseline"].append(seconds)
            used["baseline"].append(Use(use.cpu, use.peak_mb, use.start_mb, use.tracked_peak_mb))
            return
        variant, query = variants[name]
        run = measured(w, variant, query)
        results.setdefault(name, []).append(run.record.duration_seconds)
        used.setdefault(name, []).append(Use.of(run))

    def watch(name: str) -> None:
        """A run under a reader polling every 50 ms: not timed, the reader costs CPU of its own."""
        settle(client)
        variant, query = variants[name]
        reader = SliceReader(connect(), predicate, window_start)
        old = reader.count()
        with reader:
            measured(w, variant, query)  # asserts that it succeeded
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
        run = measured(w, exchange, source)
        results.setdefault("Exchange", []).append(run.record.duration_seconds)
        used.setdefault("Exchange", []).append(Use.of(run))

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
    if server is not None:
        served(used, repeat)
        return
    _, peak = tracemalloc.get_traced_memory()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nclient peak memory: Python heap {peak / 2**20:.1f} MB (rows never pass through Python); "
        f"process RSS {rss_mb:.0f} MB, which includes the embedded ClickHouse engine itself"
    )


@dataclass(frozen=True)
class Use:
    """What one measurement used on a server (``bench.workload.Measured``); the baseline has no client."""

    cpu: float
    server_peak_mb: float | None
    server_start_mb: float | None
    engine_peak_mb: float | None
    client_cpu: float | None = None
    client_process_cpu: float | None = None
    client_rss_mb: float | None = None

    @classmethod
    def of(cls, run: Measured) -> Use:
        return cls(
            run.cpu,
            run.server_peak_mb,
            run.server_start_mb,
            run.engine_peak_mb,
            run.client_cpu,
            run.client_process_cpu,
            run.client_rss_mb,
        )


def served(used: dict[str, list[Use]], repeat: int) -> None:
    """What the server and the refresh processes used, per measurement: CPU medians of ``repeat``
    runs, memory the highest of them."""
    base_cpu = statistics.median(m.cpu for m in used["baseline"])
    base_engine = max(m.engine_peak_mb or 0.0 for m in used["baseline"]) or 1.0
    print(
        "\nserver process (the engine) and refresh process (a client), per measurement "
        f"(CPU: median of {repeat}; memory: highest of {repeat}):"
    )
    print(
        f"{'measurement':<34}{'CPU s':>8}{'ratio':>8}{'server peak MB':>16}{'at start MB':>13}"
        f"{'engine MB':>11}{'ratio':>7}{'client CPU s':>14}{'(process)':>11}{'client RSS MB':>15}"
    )
    for name in ("baseline", "ReplacePartitions", "Exchange", "DeleteInsert"):
        runs = used[name]
        cpu = statistics.median(m.cpu for m in runs)
        peak = max(m.server_peak_mb or 0.0 for m in runs)
        start = max(m.server_start_mb or 0.0 for m in runs)
        engine = max(m.engine_peak_mb or 0.0 for m in runs)
        label = "bare INSERT … SELECT (baseline)" if name == "baseline" else f"{name} end to end"
        client_cpu = client_process = client_rss = ""
        if name != "baseline":
            client_cpu = f"{statistics.median(m.client_cpu or 0.0 for m in runs):.2f}"
            client_process = f"{statistics.median(m.client_process_cpu or 0.0 for m in runs):.2f}"
            client_rss = f"{max(m.client_rss_mb or 0.0 for m in runs):.0f}"
        print(
            f"{label:<34}{cpu:>8.2f}{cpu / base_cpu:>8.2f}{peak:>16.0f}{start:>13.0f}"
            f"{engine:>11.0f}{engine / base_engine:>7.2f}{client_cpu:>14}{client_process:>11}{client_rss:>15}"
        )
    print(
        "CPU s: the server process's over the run, plus the refresh process's during the run for a refresh; "
        "client CPU s (process): the refresh process's during the run (over its whole life, its start-up "
        "included); server peak MB: the server process's resident set high-water mark over the run (VmHWM, "
        "reset at its start), beside its resident set at the start; engine MB: the engine's tracked memory "
        "(MemoryTracking) at its highest sample, every 50 ms; client RSS MB: the refresh process's own peak."
    )


if __name__ == "__main__":
    main()
