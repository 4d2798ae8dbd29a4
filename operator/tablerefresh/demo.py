"""The main job on the embedded engine: the reference workload, refreshed and checked, no cluster.

Creates a chDB database, generates Polymarket fills, refreshes ``pm_trade_fifo_roi_v3_mat_unified``
twice (the second run shows a rerun gives the same rows), runs the health query, and prints what the
operator would write to the TableRefresh's status.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from clickhouse_connect.driver.client import Client

from tablerefresh.controller.policy.checks import judge
from tablerefresh.controller.policy.status import format_time, merge
from tablerefresh.dataplane.health import measure
from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.connection import connect
from tablerefresh.dataplane.infra.names import BACKUP
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.refresh import Refresh
from tablerefresh.dataplane.run.runs import Outcome, RunRecord
from tablerefresh.spec import TableRefresh
from tablerefresh.text import yaml_text
from tablerefresh.workloads import polymarket


@dataclass(frozen=True)
class DemoResult:
    manifest: TableRefresh
    runs: list[RunRecord]
    status: dict[str, Any]


MANIFEST_FILE = "tablerefresh.yaml"
DATABASE_DIR = "chdb"
# The first line of the manifest the demo writes: how a later demo knows the directory is a demo's.
MANIFEST_HEADER = "# Written by `tablerefresh demo`"
# Databases every embedded engine has; ``default`` counts only when it holds a table.
_ENGINE_DATABASES = frozenset({"system", "information_schema", "INFORMATION_SCHEMA", "default"})
# The tables of the demo's database: the workload's, and the runs, backups, lock and staging of its runs.
_RUN_TABLES = "_tablerefresh_"


class DataDirRefused(Exception):
    """The demo's data directory holds something the demo did not make: it is left as it is."""


def write_manifest(path: Path, manifest: TableRefresh) -> None:
    """The demo's manifest, long strings (the source query) as YAML block scalars, readable and editable."""
    path.write_text(
        f"{MANIFEST_HEADER}: the reference manifest on the demo's database, with\n"
        "# minSliceRows scaled to its data (the shipped manifest guards a production table).\n"
        + yaml_text(manifest.model_dump(mode="json", by_alias=True, exclude_none=True))
    )


def earlier_demo(data_dir: Path, url: str, database: str) -> str | None:
    """What the demo would replace in ``data_dir``: None when the directory is new or empty, a
    description of the earlier demo it holds, or ``DataDirRefused`` (saying what it found) when
    it holds anything else: the demo drops its database, which must never be someone's data."""
    where = _shown(data_dir)
    if not data_dir.exists():
        return None
    if not data_dir.is_dir():
        raise DataDirRefused(f"--data-dir {where} is not a directory")
    entries = sorted(p.name for p in data_dir.iterdir())
    if not entries:
        return None
    manifest = data_dir / MANIFEST_FILE
    foreign = [e for e in entries if e not in (MANIFEST_FILE, DATABASE_DIR)]
    if foreign:
        found = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise DataDirRefused(f"--data-dir {where} holds {found}, which no earlier demo wrote; {_ELSEWHERE}")
    if not manifest.is_file() or not manifest.read_text(errors="replace").startswith(MANIFEST_HEADER):
        found = f"a {MANIFEST_FILE} the demo did not write" if manifest.exists() else "a chdb/ but no demo manifest"
        raise DataDirRefused(f"--data-dir {where} holds {found}; {_ELSEWHERE}")
    if not (data_dir / DATABASE_DIR).is_dir():
        return f"its manifest {MANIFEST_FILE} (it has no database)"
    client = connect(url)
    try:
        tables = client.query(
            "SELECT database, name FROM system.tables WHERE database NOT IN {engine:Array(String)} "
            "OR database = 'default' ORDER BY database, name",
            parameters={"engine": sorted(_ENGINE_DATABASES)},
        ).result_rows
        databases = {str(d) for (d,) in client.query("SELECT name FROM system.databases").result_rows}
        ours = set(polymarket.SCHEMA_TABLES)
        foreign = [f"database {d}" for d in sorted(databases - _ENGINE_DATABASES - {database})]
        foreign += [f"{d}.{t}" for d, t in tables if d != database or not (t in ours or t.startswith(_RUN_TABLES))]
        if foreign:
            found = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise DataDirRefused(f"--data-dir {where} holds {found}, besides an earlier demo's database; {_ELSEWHERE}")
        if database not in databases:
            return f"its manifest {MANIFEST_FILE} (its database {database} is gone)"
        names = [str(t) for d, t in tables if d == database]
        counted = {t: _rows(client, database, t) for t in names if t in ours}
        runs = _rows(client, database, "_tablerefresh_runs") if "_tablerefresh_runs" in names else 0
        kept = sum(1 for t in names if t.startswith(BACKUP))
    finally:
        client.close()
    figures = ", ".join(f"{t} {n:,} rows" for t, n in counted.items())
    return (
        f"its manifest {MANIFEST_FILE} and its database {database} ({figures}; "
        f"{runs:,} recorded run(s), {kept} backup(s)), dropped and made anew"
    )


_ELSEWHERE = "the demo replaces only an earlier demo: give a new or empty --data-dir"


def _rows(client: Client, database: str, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {sql.table(database, table)}").result_rows[0][0])


def run_demo(
    data_dir: Path, *, fills: int, seed: int = 7, out: TextIO = sys.stdout, command: str = "tablerefresh"
) -> DemoResult:
    def say(message: str) -> None:
        print(message, file=out, flush=True)

    url = f"chdb://{data_dir.resolve() / 'chdb'}"
    base = polymarket.manifest()
    database = base.spec.clickhouse.database
    # Before anything is written: the directory is new, empty, or an earlier demo's (replaced).
    replaced = earlier_demo(data_dir, url, database)
    data_dir.mkdir(parents=True, exist_ok=True)
    # The shipped manifest guards a production table (minSliceRows 5M); scale it to the demo's data.
    min_rows = max(1, fills // 200)
    spec = base.spec.model_copy(
        update={
            "clickhouse": base.spec.clickhouse.model_copy(update={"url": url}),
            "thresholds": base.spec.thresholds.model_copy(update={"min_slice_rows": min_rows}),
        }
    )
    manifest = base.model_copy(update={"spec": spec})

    def client_factory() -> Client:
        return connect(url, database=database, settings=spec.clickhouse.settings)

    manifest_path = data_dir / MANIFEST_FILE
    if replaced:
        say(f"replacing the earlier demo in {_shown(data_dir)}: {replaced}")
    write_manifest(manifest_path, manifest)
    say(f"embedded ClickHouse: {url}, database {database}")
    admin = connect(url)
    admin.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    admin.command(f"CREATE DATABASE {database}")
    client = client_factory()
    now = datetime.now(UTC).replace(microsecond=0)
    say(f"generating {fills:,} fills (seed {seed}) ...")
    polymarket.generate(client, database, fills=fills, seed=seed, now=now, progress=lambda m: say(f"  {m}"))

    runs = []
    for attempt in ("first run: builds the slice", "second run: a rerun over the same source"):
        say(f"refresh, {attempt} ...")
        record = _refresh(manifest, client_factory)
        runs.append(record)
        say(
            f"  {record.outcome} in {record.duration_seconds:.1f}s: {record.slice_rows_before:,} -> "
            f"{record.slice_rows_after:,} slice rows, {record.rows_after:,} rows in all, "
            f"{len(record.partitions)} partitions swapped, {record.duplicates} duplicate keys"
            + (f"; {record.error}" if record.error else "")
        )
        if record.outcome != Outcome.SUCCEEDED:
            break

    quiet = _quiet_wallet_positions(client, spec.window_delta.total_seconds())
    say(
        f"open positions of wallets with no fill in the last {spec.window}: {quiet:,} "
        "(the seed plan deleted these and never rebuilt them; here they stay)"
    )

    report = measure(client, spec)
    conditions = merge([], judge(report, spec), generation=1, now=report.checked_at)
    last = runs[-1]
    status = {
        "observedGeneration": 1,
        "conditions": conditions,
        "health": report.as_status(),
        "lastRun": {
            "runId": last.run_id,
            "startTime": format_time(last.started_at),
            "completionTime": format_time(last.finished_at or last.started_at),
            "durationSeconds": last.duration_seconds,
            "outcome": last.outcome,
            "reason": last.reason or None,
            "rowsBefore": last.rows_before,
            "rowsAfter": last.rows_after,
            "sliceRowsBefore": last.slice_rows_before,
            "sliceRowsAfter": last.slice_rows_after,
            "duplicates": last.duplicates,
            "error": last.error or None,
        },
    }
    if last.outcome == Outcome.SUCCEEDED:
        status["lastSuccessfulRunTime"] = format_time(last.finished_at or last.started_at)
    say(f"\nstatus of TableRefresh {manifest.metadata.namespace}/{manifest.metadata.name}, as the operator writes it:")
    say(yaml.safe_dump({"status": status}, sort_keys=False).rstrip())
    shown = _shown(manifest_path)
    say(f"\nthe demo's manifest: {shown} (ClickHouse URL {url})")
    say("next, try:")
    for args, what in (
        (f"plan -f {shown}", "what a run would replace, changing nothing"),
        (f"refresh -f {shown}", "one more run, as the CronJob's Job does it"),
        # Not `backups`: the reference manifest keeps none (spec.backup.keep: 0).
        (f"history -f {shown}", "the runs so far, newest first"),
    ):
        say(f"  {command} {args:<48} # {what}")
    client.close()
    admin.close()
    return DemoResult(manifest=manifest, runs=runs, status=status)


def _refresh(manifest: TableRefresh, client_factory: Callable[[], Client]) -> RunRecord:
    now = datetime.now(UTC)
    run_id = f"demo-{now:%Y%m%dT%H%M%S%f}"
    options = RunOptions(run_id=run_id, owner=f"{run_id}@{socket.gethostname()}:{os.getpid()}", run_time=now)
    return Refresh(manifest.spec, client_factory, polymarket.source_query(), options).run()


def _quiet_wallet_positions(client: Client, window_seconds: float) -> int:
    """Open rows whose wallet has no fill inside the window: what the seed's rebuild would have lost."""
    return int(
        client.query(
            f"SELECT count() FROM {polymarket.TARGET_TABLE} WHERE resolved_at IS NULL AND wallet NOT IN "
            f"(SELECT wallet FROM {polymarket.FILLS_TABLE} WHERE event_time >= now() - {{w:UInt32}})",
            parameters={"w": int(window_seconds)},
        ).result_rows[0][0]
    )


def _shown(path: Path) -> str:
    """A path as the user can type it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())
