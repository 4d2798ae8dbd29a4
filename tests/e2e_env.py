"""What the end-to-end tests share: the operator as its own process, the Job runner, a ClickHouse
server with a target and a source table, and a TableRefresh on it with credentials from a Secret.

The server is the real engine served over ClickHouse's own HTTP interface (``tests/served_engine.py``),
started for the module with one password user, the Secret's ``refresher``: the operator's health
checks, each refresh the runner starts from a Job's Pod, and the test's own SQL all connect to it
over ``clickhouse://127.0.0.1:PORT`` at once, with those credentials, as in a cluster. Each test
works in the database ``e2e``, dropped after it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tablerefresh.dataplane.infra.connection import connect
from tablerefresh.dataplane.server import User
from tests.conftest import require
from tests.harness.kube import GROUP, VERSION, Kube, wait_for
from tests.jobrunner.cron import Clock
from tests.jobrunner.runner import JobRunner
from tests.served_engine import ServedClickHouse, served

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTALLED = str(BIN / "tablerefresh")  # the image's `tablerefresh` is this package's console script
DB, TABLE, SOURCE = "e2e", "trades", "trades_src"
NAME = "trades"
SECRET = "ch-credentials"
USER, PASSWORD = "refresher", "s3cret-from-the-secret"


class Target:
    """The ClickHouse server a test's TableRefresh points at: its URL, and SQL as the Secret's user."""

    def __init__(self, server: ServedClickHouse) -> None:
        self.server = server
        self.url = server.url

    def sql(self, *statements: str) -> list[list[Any]]:
        """Run statements; the last one's rows."""
        made = connect(self.url, username=USER, password=PASSWORD)
        try:
            rows: list[list[Any]] = []
            for statement in statements:
                rows = [list(r) for r in made.query(statement).result_rows]
            return rows
        finally:
            close_connections = getattr(made, "close_connections", None)
            if close_connections is not None:  # no idle keep-alive connection for the server's stop to wait for
                close_connections()
            made.close()


def sql(target: Target, *statements: str) -> list[list[Any]]:
    """Run statements on the test's ClickHouse server; the last one's rows."""
    return target.sql(*statements)


def create_tables(target: Target, *, source_rows: int = 100, target_old_rows: int = 50) -> None:
    """``trades`` (the target): ``target_old_rows`` rows three days old, outside the 24h slice;
    ``trades_src``: ``source_rows`` rows of the last minutes, the slice a refresh brings in."""
    columns = "(id UInt64, entry_time DateTime('UTC'), v UInt64)"
    sql(
        target,
        f"CREATE DATABASE IF NOT EXISTS {DB}",
        f"CREATE TABLE {DB}.{TABLE} {columns} ENGINE = MergeTree PARTITION BY toYYYYMMDD(entry_time) ORDER BY id",
        f"CREATE TABLE {DB}.{SOURCE} {columns} ENGINE = MergeTree ORDER BY id",
        f"INSERT INTO {DB}.{TABLE} SELECT 100000 + number, now() - INTERVAL 3 DAY - number, 1 "
        f"FROM numbers({target_old_rows})",
        f"INSERT INTO {DB}.{SOURCE} SELECT number, now() - number, 2 FROM numbers({source_rows})",
    )


def manifest(namespace: str, url: str, name: str = NAME, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schedule": "* * * * *",
        "clickhouse": {"url": url, "database": DB, "credentialsSecret": {"name": SECRET}},
        "target": {"table": TABLE},
        "slice": {"predicate": "entry_time >= {window_start:DateTime}"},
        "source": {"query": f"SELECT id, entry_time, v FROM {DB}.{SOURCE}"},
        "window": "24h",
        "uniqueKey": ["id"],
        "freshnessColumn": "entry_time",
        "thresholds": {"maxStaleHours": 1, "maxDuplicates": 0, "minSliceRows": 0},
        "healthCheck": {"interval": "2s"},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TableRefresh",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def credentials(api: Kube, namespace: str, **data: str) -> None:
    """The Secret the TableRefresh names, labelled for its use, with the server's user (or ``data``)."""
    api.secret(namespace, SECRET, data or {"username": USER, "password": PASSWORD})


def deploy(api: Kube, namespace: str, target: Target, **spec: Any) -> dict[str, Any]:
    """The Secret and a TableRefresh on ``target`` with these spec changes, applied; its CronJob once
    the operator has made it."""
    credentials(api, namespace)
    api.apply(manifest(namespace, target.url, **spec))
    (cronjob,) = wait_for("the CronJob", lambda: api.cronjobs(namespace), timeout=30)
    return cronjob


def last_run(api: Kube, namespace: str, job: str | None = None) -> dict[str, Any] | None:
    """status.lastRun once it records a Job (``job``, when given)."""
    run = (api.tr(namespace, NAME).get("status") or {}).get("lastRun") or {}
    return run if run and (job is None or run.get("jobName") == job) else None


# Fixtures.


@pytest.fixture(scope="module")
def e2e_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedClickHouse]:
    """The module's ClickHouse server, whose one password user is the Secret's."""
    require("chdb", "the embedded ClickHouse engine, served (pip install 'tablerefresh[embedded]')")
    with served(tmp_path_factory.mktemp("e2e-server") / "data", users=[User(USER, PASSWORD)]) as server:
        yield server


@pytest.fixture
def target(e2e_server: ServedClickHouse) -> Iterator[Target]:
    """The test's ClickHouse: the module's server, where the database ``e2e`` is the test's."""
    made = Target(e2e_server)
    yield made
    made.sql(f"DROP DATABASE IF EXISTS {DB} SYNC")


@pytest.fixture
def clock() -> Clock:
    """The CronJob controller's clock, stopped at the test's start: the test moves it."""
    stopped = Clock()
    stopped.set(datetime.now(UTC))
    return stopped


@pytest.fixture
def runner(
    kube_api: client.ApiClient, namespace: str, tmp_path: Path, clock: Clock, target: Target
) -> Iterator[JobRunner]:
    running = JobRunner(
        kube_api, [namespace], tmp_path / "pods", commands={"tablerefresh": INSTALLED}, clock=clock
    ).start()
    yield running
    running.stop()
    assert not running.errors, running.errors


def tick(runner: JobRunner, clock: Clock) -> None:
    """Move the CronJob controller's clock just past the next whole minute (the next time of
    `* * * * *`) after both its own time and the real one, so that a CronJob created before now is due."""
    latest = max(clock.now(), datetime.now(UTC))
    clock.set(latest.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1))
    runner.poke()

