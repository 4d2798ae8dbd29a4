"""The benchmarks' data set: the reference workload on a fresh embedded engine, in this process or
served over HTTP (``bench/server.py``); and how a benchmark runs and measures a refresh on either."""

from __future__ import annotations

import math
import os
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from bench.server import BenchServer, run_client
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.refresh import Refresh
from tablerefresh.dataplane.run.runs import Outcome, RunRecord
from tablerefresh.spec import TableRefreshSpec
from tablerefresh.workloads import polymarket

DB = "bench"
HISTORY_BATCH_FILLS = 6_000_000


@dataclass(frozen=True)
class Workload:
    connect: Callable[[], Client]
    client: Client
    spec: TableRefreshSpec
    source: str
    now: datetime
    server: BenchServer | None = None


def prepare(
    data_dir: Path,
    fills: int,
    *,
    progress: Callable[[str], None] | None = None,
    server: BenchServer | None = None,
) -> Workload:
    """Generate ``fills`` fills and build the table's whole history, as production has it between runs.

    The engine's data is ``data_dir/chdb``: opened in this process, or through ``server``, which
    serves that directory."""
    url = f"chdb://{data_dir.resolve() / 'chdb'}"

    def connect() -> Client:
        if server is not None:
            return server.client(database=DB)
        return clickhouse_connect.get_client(dsn=url, database=DB)

    admin = server.client() if server is not None else clickhouse_connect.get_client(dsn=url)
    admin.command(f"DROP DATABASE IF EXISTS {DB} SYNC")
    admin.command(f"CREATE DATABASE {DB}")
    client = connect()
    now = datetime.now(UTC).replace(microsecond=0)
    stats = polymarket.generate(client, DB, fills=fills, seed=11, now=now, progress=progress)
    print(f"data: {stats.summary()}")
    base = polymarket.manifest().spec
    spec = base.model_copy(
        update={
            "clickhouse": base.clickhouse.model_copy(update={"database": DB}),
            "thresholds": base.thresholds.model_copy(update={"min_slice_rows": 0}),
        }
    )
    source = polymarket.source_query()
    # One run whose window reaches back past the first resolution builds every month, in batches of
    # at most ~6M fills' positions (the manifest's 8 at 20M fills), so its memory does not grow with
    # the size either.
    batches = max(spec.source.batches, math.ceil(fills / HISTORY_BATCH_FILLS))
    history_spec = spec.model_copy(
        update={"window": "5000d", "source": spec.source.model_copy(update={"batches": batches})}
    )
    history = refresh(history_spec, connect, source)
    assert history.outcome == Outcome.SUCCEEDED, history.error
    print(f"history: {history.rows_after:,} rows built in {history.duration_seconds:.1f}s", flush=True)
    return Workload(connect, client, spec, source, now, server)


def refresh(spec: TableRefreshSpec, connect: Callable[[], Client], source: str) -> RunRecord:
    now = datetime.now(UTC)
    run_id = f"bench-{now:%H%M%S%f}"
    options = RunOptions(run_id=run_id, owner=f"{run_id}@{socket.gethostname()}:{os.getpid()}", run_time=now)
    return Refresh(spec, connect, source, options).run()


def cpu_seconds() -> float:
    """CPU time of this process, the embedded engine's included: steadier than wall time on a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Measured:
    """One refresh run and what it used.

    ``cpu``: on the embedded engine, this process's CPU seconds over the run (the engine's included);
    on a server, the server process's plus the refresh process's during the run. The other figures
    are a server run's: the refresh process's own CPU seconds during the run and over its whole life
    (its start-up included) and its peak resident set, the server process's peak resident set over
    the run and its resident set at the start, and the engine's tracked memory at its highest
    sample (``bench/server.py``)."""

    record: RunRecord
    cpu: float
    client_cpu: float | None = None
    client_process_cpu: float | None = None
    client_rss_mb: float | None = None
    server_peak_mb: float | None = None
    server_start_mb: float | None = None
    engine_peak_mb: float | None = None


def measured(
    workload: Workload, spec: TableRefreshSpec, source: str, run_time: datetime | None = None, *, full: bool = False
) -> Measured:
    """One refresh run, asserted to succeed: in this process on the embedded engine, or, on a server,
    in a process of its own (a client, as a Job is)."""
    run_time = run_time or datetime.now(UTC)
    run_id = f"bench-{run_time:%Y%m%dT%H%M%S}-{time.monotonic_ns() % 10**6}"
    if workload.server is not None:
        ran = run_client(workload.server, spec, source, run_time, full=full, run_id=run_id)
        assert ran.record.outcome == Outcome.SUCCEEDED, ran.record.error
        return Measured(
            ran.record,
            ran.server.cpu + ran.client_cpu,
            ran.client_cpu,
            ran.client_process_cpu,
            ran.client_rss_mb,
            ran.server.peak_mb,
            ran.server.start_mb,
            ran.server.tracked_peak_mb,
        )
    options = RunOptions(
        run_id=run_id, owner=f"{run_id}@{socket.gethostname()}:{os.getpid()}", run_time=run_time, force_full=full
    )
    before = cpu_seconds()
    record = Refresh(spec, workload.connect, source, options).run()
    assert record.outcome == Outcome.SUCCEEDED, record.error
    return Measured(record, cpu_seconds() - before)


def settle(client: Client, limit_seconds: float = 300) -> None:
    """Wait for background merges and mutations to finish, so one measurement does not pay for the last."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        busy = client.query(
            "SELECT (SELECT count() FROM system.merges WHERE database = {db:String}) "
            "+ (SELECT count() FROM system.mutations WHERE database = {db:String} AND NOT is_done)",
            parameters={"db": DB},
        ).result_rows[0][0]
        if not busy:
            return
        time.sleep(0.5)
