"""Incremental refresh benchmark: incremental runs as a ratio to a full run.

    .venv/bin/python -m bench.incremental [--fills 20000000] [--repeat 2] [--pattern uniform|clustered]
                                          [--data-dir DIR] [--server]

Generates the reference workload and builds its whole history (as ``bench.refresh`` does), then
refreshes it with the incremental manifest (``examples/polymarket/tablerefresh-incremental.yaml``)
and measures, in one run: the full run (forced), and incremental runs after 1%, 5% and 20% of the
slice's positions changed, each as a ratio to the full run. Time is simulated: run k runs 6 hours
after run k-1, and the changes between them happened in the 4 hours after run k-1, so each run
sees only its own batch (a run looks back ``lateness``, 2 hours, before the last one).

A batch gives each chosen position a new fill, and resolves a tenth as many open conditions (their
positions move from partition 0 to their month). Which positions a batch chooses is ``--pattern``:

- ``uniform`` (the default): each of the slice's positions with probability ``share``, independently.
  Every 8192-row granule of the fills table (sorted by condition) then holds a changed position, so
  the source reads the whole table: the worst case for an incremental run.
- ``clustered``: each condition is picked with probability ``p = 2 * share``, and within a picked
  condition each position with probability ``q = 0.5``, so ``p * q = share`` of the positions change,
  as with ``uniform``. This is what live trading looks like: between two 6-hourly runs new fills land
  on the markets that are live and trading, and on such a market many but not all of its holders
  trade (the rest hold, or left), hence q = 0.5 rather than every position of the picked conditions.
  The other conditions' granules get no new fill and the primary index lets the source skip them,
  though on the reference (~82 conditions to a granule of fills) few granules are left untouched
  once more than a few percent of the conditions are picked (bench/README.md).
 Then, untimed: a run under a reader polling the
slice every 50 ms (it must never see fewer rows than min(old, new)), and a forced full run whose
result is compared, row by row, with what the incremental runs had left (floats within 1e-6
relative), with its ``verifySample`` compare as well. Prints figures, asserts nothing.

On the embedded engine (the default) every run is in this process, the engine inside it, and "CPU
s" is this process's. With ``--server`` the engine is served over ClickHouse's HTTP in a process of
its own (``bench/server.py``) and each refresh runs in a process of its own, a client, as a Job
is: "CPU s" is then the server process's plus the refresh process's, and the benchmark also reports
the server's peak memory for each kind of run (its resident set's high-water mark over the run, and
the engine's own tracked memory sampled every 50 ms; there is no query log) and the refresh
process's own peak resident set.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from clickhouse_connect.driver.client import Client

from bench.refresh import SliceReader
from bench.server import BenchServer
from bench.workload import Measured, Workload, measured, prepare, settle
from tablerefresh.dataplane.infra.catalog import describe_table
from tablerefresh.dataplane.run import sample
from tablerefresh.dataplane.run.runs import RunRecord
from tablerefresh.spec import TableRefreshSpec
from tablerefresh.workloads import polymarket

SHARES = (1, 5, 20)  # percent of the slice's positions changed before a run
PATTERNS = ("uniform", "clustered")
WITHIN = 2  # clustered: a picked condition's positions change with probability 1 / WITHIN (q = 0.5)
STEP = timedelta(hours=6)
SNAPSHOT = "bench_incremental_result"


@dataclass
class Clock:
    """Simulated run times: one run every 6 hours from the data's ``now``."""

    now: datetime
    runs: int = 0

    def next_run(self) -> datetime:
        self.runs += 1
        return self.now + self.runs * STEP

    @property
    def last_run(self) -> datetime:
        return self.now + self.runs * STEP


def incremental_spec(w: Workload) -> tuple[TableRefreshSpec, str]:
    """The incremental manifest on the benchmark's database, with no floor on the slice and no
    verifying sample (a timed run compares nothing), and its source query."""
    base = polymarket.incremental_manifest().spec
    spec = base.model_copy(
        update={
            "clickhouse": base.clickhouse.model_copy(update={"database": w.spec.clickhouse.database}),
            "thresholds": base.thresholds.model_copy(update={"min_slice_rows": 0}),
            "incremental": base.incremental.model_copy(update={"verify_sample": 0}) if base.incremental else None,
        }
    )
    source = base.source.query
    assert source is not None
    return spec, source


def refresh(w: Workload, spec: TableRefreshSpec, source: str, run_time: datetime, *, full: bool = False) -> RunRecord:
    return measured(w, spec, source, run_time, full=full).record


def change(
    client: Client, spec: TableRefreshSpec, clock: Clock, share: int, batch: int, pattern: str = "uniform"
) -> int:
    """A new fill in ``share`` % of the slice's positions, written with times after the last run;
    resolutions for a tenth as many open conditions. ``pattern`` says which positions (module docstring).
    Returns how many conditions got a new fill."""
    lo = int(clock.last_run.timestamp()) + 1
    span = 4 * 3600 - 2  # ends before the next run's `since` (its run time less 2h of lateness)
    params = {
        "window_start": int((clock.last_run - spec.window_delta).timestamp()),
        "batch": batch,
        "share": share * 100,
        "lo": lo,
        "span": span,
    }
    if pattern == "uniform":
        picked = "cityHash64(wallet, condition_id, outcome_index, {batch:UInt32}) % 10000 < {share:UInt32}"
    elif pattern == "clustered":
        params["conditions"] = share * 100 * WITHIN
        params["within"] = WITHIN
        picked = (
            "cityHash64(condition_id, {batch:UInt32}, 'condition') % 10000 < {conditions:UInt32} "
            "AND cityHash64(wallet, condition_id, outcome_index, {batch:UInt32}) % {within:UInt32} = 0"
        )
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    client.command(
        f"INSERT INTO {polymarket.FILLS_TABLE} "
        "SELECT concat('bench-', toString({batch:UInt32}), '-', wallet, condition_id, toString(outcome_index)), "
        "concat('0xbench', hex(cityHash64(wallet, condition_id, outcome_index, {batch:UInt32}))), "
        "toDateTime({lo:UInt32} + cityHash64(wallet, condition_id, {batch:UInt32}) % {span:UInt32}), "
        "wallet, condition_id, outcome_index, 1 + cityHash64(condition_id, wallet) % 9 AS tokens, "
        "-tokens * 0.42, 'clob', 0, 0 "
        f"FROM (SELECT DISTINCT wallet, condition_id, outcome_index FROM {polymarket.TARGET_TABLE} "
        f"WHERE ({spec.slice.predicate}) AND wallet != '0x0000000000000000000000000000000000000000') "
        f"WHERE {picked}",
        parameters=params,
        settings={"insert_deduplicate": 0},
    )
    client.command(
        f"INSERT INTO {polymarket.RESOLUTIONS_TABLE} "
        "SELECT condition_id, if(cityHash64(condition_id) % 2, '[1,0]', '[0,1]'), "
        "toDateTime({lo:UInt32} + cityHash64(condition_id, {batch:UInt32}) % {span:UInt32}), 0 "
        f"FROM (SELECT DISTINCT condition_id FROM {polymarket.TARGET_TABLE} WHERE resolved_at IS NULL) "
        "WHERE cityHash64(condition_id, {batch:UInt32}) % 100000 < {share:UInt32}",
        parameters=params,
        settings={"insert_deduplicate": 0},
    )
    rows = client.query(
        f"SELECT uniqExact(condition_id) FROM {polymarket.FILLS_TABLE} WHERE startsWith(fill_id, {{prefix:String}})",
        parameters={"prefix": f"bench-{batch}-"},
    ).result_rows
    return int(rows[0][0])


def slice_positions(client: Client, spec: TableRefreshSpec, run_time: datetime) -> int:
    rows = client.query(
        f"SELECT uniqExact(wallet, condition_id, outcome_index) FROM {polymarket.TARGET_TABLE} "
        f"WHERE {spec.slice.predicate}",
        parameters={"window_start": int((run_time - spec.window_delta).timestamp())},
    ).result_rows
    return int(rows[0][0])


def slice_condition_count(client: Client, spec: TableRefreshSpec, run_time: datetime) -> int:
    rows = client.query(
        f"SELECT uniqExact(condition_id) FROM {polymarket.TARGET_TABLE} WHERE {spec.slice.predicate}",
        parameters={"window_start": int((run_time - spec.window_delta).timestamp())},
    ).result_rows
    return int(rows[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--fills", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the median is reported")
    parser.add_argument(
        "--pattern", choices=PATTERNS, default="uniform", help="which positions a batch changes (see the docstring)"
    )
    parser.add_argument("--data-dir", type=Path, help="chDB path (default: a temporary directory)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step of each run")
    parser.add_argument(
        "--server", action="store_true", help="serve the engine over HTTP; each refresh is a client process"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="tablerefresh-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        if args.server:
            with BenchServer(data_dir / "chdb") as server:
                print(f"served engine at {server.url}, pid {server.pid}")
                run(data_dir, args.fills, args.repeat, args.pattern, server)
        else:
            run(data_dir, args.fills, args.repeat, args.pattern)


def run(data_dir: Path, fills: int, repeat: int, pattern: str = "uniform", server: BenchServer | None = None) -> None:
    started = time.monotonic()
    w = prepare(data_dir, fills, progress=lambda m: print(f"  {m}"), server=server)
    client, connect = w.client, w.connect
    spec, source = incremental_spec(w)
    base = polymarket.incremental_manifest().spec
    clock = Clock(w.now)
    settle(client)
    first = refresh(w, spec, source, clock.last_run)  # the first run of this definition: full
    print(f"first run of the incremental manifest: {first.kind}, {first.duration_seconds:.1f}s")
    positions = slice_positions(client, spec, clock.last_run)
    slice_conditions = slice_condition_count(client, spec, clock.last_run)
    print(f"slice: {first.slice_rows_after:,} rows, {positions:,} positions, {slice_conditions:,} conditions")

    full: list[Measured] = []
    incremental: dict[int, list[Measured]] = {share: [] for share in SHARES}
    conditions: dict[int, list[int]] = {share: [] for share in SHARES}
    batch = 0
    for _ in range(repeat):
        settle(client)
        full.append(measured(w, spec, source, clock.next_run(), full=True))
        for share in SHARES:
            batch += 1
            conditions[share].append(change(client, spec, clock, share, batch, pattern))
            settle(client)
            run = measured(w, spec, source, clock.next_run())
            assert run.record.kind == "Incremental", run.record.kind_reason
            incremental[share].append(run)

    # A run under a reader, untimed: it must never see the slice drop.
    batch += 1
    change(client, spec, clock, 5, batch, pattern)
    settle(client)
    run_time = clock.next_run()
    window_start = int((run_time - spec.window_delta).timestamp())
    reader = SliceReader(connect(), f"({spec.slice.predicate})", window_start)
    old = reader.count()
    with reader:
        watched = refresh(w, spec, source, run_time)
    lowest, bound = min(reader.counts, default=old), min(old, reader.count())

    # What the incremental runs left, against a full rebuild of the same data.
    client.command(f"DROP TABLE IF EXISTS {SNAPSHOT} SYNC")
    client.command(f"CREATE TABLE {SNAPSHOT} AS {polymarket.TARGET_TABLE}")
    client.command(
        f"INSERT INTO {SNAPSHOT} SELECT * FROM {polymarket.TARGET_TABLE}", settings={"insert_deduplicate": 0}
    )
    checked = spec.model_copy(update={"incremental": base.incremental})
    repaired = refresh(w, checked, source, clock.next_run(), full=True)
    target = describe_table(client, w.spec.clickhouse.database, polymarket.TARGET_TABLE)
    names = ", ".join(c.name for c in target.columns)
    predicate = spec.slice.predicate
    diff = client.query(
        sample.comparison(
            target.columns,
            spec.unique_key,
            f"SELECT {names} FROM {SNAPSHOT} WHERE {predicate}",
            f"SELECT {names} FROM {polymarket.TARGET_TABLE} WHERE {predicate}",
        ),
        parameters={"window_start": int((clock.last_run - spec.window_delta).timestamp())},
    ).result_rows[0]
    client.command(f"DROP TABLE IF EXISTS {SNAPSHOT} SYNC")

    full_s = statistics.median(m.record.duration_seconds for m in full)
    full_cpu = statistics.median(m.cpu for m in full)
    print(
        f"\n{fills:,} fills; {pattern} changes; slice {first.slice_rows_after:,} rows, {positions:,} positions, "
        f"{slice_conditions:,} conditions; "
        f"median of {repeat} "
        f"(whole benchmark {time.monotonic() - started:.0f}s)"
    )
    print(
        f"{'run':<28}{'conditions':>12}{'changed keys':>14}{'of positions':>14}"
        f"{'seconds':>9}{'ratio':>8}{'CPU s':>8}{'ratio':>8}"
    )
    print(f"{'full (forced)':<28}{'':>12}{'':>14}{'':>14}{full_s:>9.2f}{1:>8.2f}{full_cpu:>8.2f}{1:>8.2f}")
    for share in SHARES:
        runs = incremental[share]
        seconds = statistics.median(m.record.duration_seconds for m in runs)
        used = statistics.median(m.cpu for m in runs)
        keys = int(statistics.median(m.record.changed_keys or 0 for m in runs))
        touched = int(statistics.median(conditions[share]))
        print(
            f"{f'incremental, {share}% changed':<28}{touched:>12,}{keys:>14,}{keys / positions:>14.1%}{seconds:>9.2f}"
            f"{seconds / full_s:>8.2f}{used:>8.2f}{used / full_cpu:>8.2f}"
        )
    verdict = "never below" if lowest >= bound else f"GAP of {bound - lowest:,} rows"
    print(
        f"\nslice rows a reader saw during an incremental run ({watched.changed_keys:,} keys), polling every 50 ms: "
        f"lowest {lowest:,}, min(old,new) {bound:,}: {verdict}"
    )
    target_rows, rebuilt_rows, missing, extra, changed = (int(x) for x in diff[:5])
    print(
        f"incremental result vs a full rebuild of the same data: {target_rows:,} vs {rebuilt_rows:,} slice rows, "
        f"{missing} missing, {extra} extra, {changed} different; the full run's sample: "
        f"{repaired.sample_differences} of {repaired.sample_keys} keys' rows differ "
        f"(full run with the sample {repaired.duration_seconds:.1f}s)"
    )
    if server is not None:
        served(full, incremental, repeat)
        return
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process RSS peak {rss_mb:.0f} MB (the embedded ClickHouse engine included)")


def served(full: list[Measured], incremental: dict[int, list[Measured]], repeat: int) -> None:
    """What the server and the refresh processes used, per kind of run: CPU medians, memory the highest."""
    print(
        "\nserver process (the engine) and refresh process (a client), per kind of run "
        f"(CPU: median of {repeat}; memory: highest of {repeat}):"
    )
    print(
        f"{'run':<28}{'server CPU s':>14}{'server peak MB':>16}{'at start MB':>13}{'engine MB':>11}"
        f"{'client CPU s':>14}{'(process)':>11}{'client RSS MB':>15}"
    )
    kinds = [("full (forced)", full)] + [(f"incremental, {share}% changed", incremental[share]) for share in SHARES]
    for label, runs in kinds:
        server_cpu = statistics.median(m.cpu - (m.client_cpu or 0.0) for m in runs)
        client_cpu = statistics.median(m.client_cpu or 0.0 for m in runs)
        client_process = statistics.median(m.client_process_cpu or 0.0 for m in runs)
        peak = max(m.server_peak_mb or 0.0 for m in runs)
        start = max(m.server_start_mb or 0.0 for m in runs)
        rss = max(m.client_rss_mb or 0.0 for m in runs)
        engine = max(m.engine_peak_mb or 0.0 for m in runs)
        print(
            f"{label:<28}{server_cpu:>14.2f}{peak:>16.0f}{start:>13.0f}{engine:>11.0f}{client_cpu:>14.2f}"
            f"{client_process:>11.2f}"
            f"{rss:>15.0f}"
        )
    print(
        "CPU s in the table above is the server's over the run plus the client's during the run; client CPU s "
        "(process): the refresh process's during the run (over its whole life, its start-up included); server "
        "peak MB: the server process's resident set high-water mark over the run (VmHWM, reset at its start), "
        "beside its resident set at the start; engine MB: the engine's tracked memory (MemoryTracking) at its "
        "highest sample, every 50 ms; client RSS MB: the refresh process's own peak (the interpreter and its "
        "modules included)."
    )


if __name__ == "__main__":
    main()
