"""The benchmarks' data set: the reference workload on a fresh embedded engine."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.refresh import Refresh, RunOptions
from tablerefresh.dataplane.runs import Outcome, RunRecord
from tablerefresh.spec import TableRefreshSpec
from tablerefresh.workloads import polymarket

DB = "bench"


@dataclass(frozen=True)
class Workload:
    connect: Callable[[], Client]
    client: Client
    spec: TableRefreshSpec
    source: str
    now: datetime


def prepare(data_dir: Path, fills: int, *, progress: Callable[[str], None] | None = None) -> Workload:
    """Generate ``fills`` fills and build the table's whole history, as production has it between runs."""
    url = f"chdb://{data_dir.resolve() / 'chdb'}"

    def connect() -> Client:
        return clickhouse_connect.get_client(dsn=url, database=DB)

    admin = clickhouse_connect.get_client(dsn=url)
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
    # One run whose window reaches back past the first resolution builds every month.
    history = refresh(spec.model_copy(update={"window": "5000d"}), connect, source)
    assert history.outcome == Outcome.SUCCEEDED, history.error
    print(f"history: {history.rows_after:,} rows built in {history.duration_seconds:.1f}s")
    return Workload(connect, client, spec, source, now)


def refresh(spec: TableRefreshSpec, connect: Callable[[], Client], source: str) -> RunRecord:
    now = datetime.now(UTC)
    run_id = f"bench-{now:%H%M%S%f}"
    options = RunOptions(run_id=run_id, owner=f"{run_id}@{socket.gethostname()}:{os.getpid()}", run_time=now)
    return Refresh(spec, connect, source, options).run()


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
