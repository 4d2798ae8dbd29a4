"""What the end-to-end tests share: the operator as its own process, the Job runner, a ClickHouse
server with a target and a source table, and a TableRefresh on it with credentials from a Secret.

The server is the real engine served over ClickHouse's own HTTP interface (``tests/served_engine.py``),
started for the module with one password user, the Secret's ``refresher``: the operator's health
checks, each refresh the runner starts from a Job's Pod, and the test's own SQL all connect to it
over ``clickhouse://127.0.0.1:PORT`` at once, with those credentials, as in a cluster. Each test
works in the database ``e2e``, dropped after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tablerefresh.dataplane.connection import connect
from tablerefresh.dataplane.server import User
from tests.conftest import require
from tests.controlplane.cluster import free_port
from tests.jobrunner.cron import Clock
from tests.jobrunner.runner import JobRunner
from tests.kube_support import (
    CREDENTIALS_LABELS,
    GROUP,
    PLURAL,
    TEST_POLICY_ARGS,
    VERSION,
    install_crd,
    stop_group,
    wait_for,
)
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


class OperatorProcess:
    """``tablerefresh operator`` watching one namespace, with its /metrics on a loopback port."""

    def __init__(self, kubeconfig: Path, namespace: str, directory: Path) -> None:
        self.kubeconfig, self.namespace, self.directory = kubeconfig, namespace, directory
        self.metrics_port = free_port()
        self.log = directory / "operator.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "KUBECONFIG": str(self.kubeconfig),
        }
        with self.log.open("wb") as out:
            self._process = subprocess.Popen(
                [
                    INSTALLED,
                    "operator",
                    "--namespace",
                    self.namespace,
                    "--metrics-port",
                    str(self.metrics_port),
                    "--resync",
                    "5",
                    *TEST_POLICY_ARGS,
                ],
                env=env,
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for("the operator's /metrics", self._serving, timeout=60)
        return self

    def _serving(self) -> bool:
        assert self._process is not None and self._process.poll() is None, self.log.read_text()[-3000:]
        try:
            return bool(self.metrics_text())
        except OSError:
            return False

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def sample(self, metric: str, **labels: str) -> float | None:
        """A series of its /metrics, scraped now (namespace, name and table filled in)."""
        wanted = {"namespace": self.namespace, "name": NAME, "table": TABLE, **labels}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name == metric and all(s.labels.get(k) == v for k, v in wanted.items()):
                    return float(s.value)
        return None

    def stop(self) -> None:
        stop_group(self._process)


class Kube:
    """Plain-dict reads and writes on the test cluster."""

    def __init__(self, api_client: client.ApiClient, plane: Any, namespace: str) -> None:
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.plane, self.ns = plane, namespace

    def apply(self, document: dict[str, Any]) -> None:
        self.plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(document))

    def secret(self, name: str = SECRET, **data: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": self.ns, "labels": dict(CREDENTIALS_LABELS)},
            "stringData": data or {"username": USER, "password": PASSWORD},
        }
        self.core.create_namespaced_secret(self.ns, body, _preload_content=False)

    def tr(self, name: str = NAME) -> dict[str, Any]:
        response = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, _preload_content=False
        )
        data: dict[str, Any] = json.loads(response.data)
        return data

    def _items(self, call: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(call(self.ns, _preload_content=False).data)["items"]
        return items

    def jobs(self) -> list[dict[str, Any]]:
        return self._items(self.batch.list_namespaced_job)

    def pods(self) -> list[dict[str, Any]]:
        return self._items(self.core.list_namespaced_pod)

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self._items(self.core.list_namespaced_event) if reason is None or e["reason"] == reason]


def condition(tr: dict[str, Any], kind: str) -> dict[str, Any]:
    found = next((c for c in (tr.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)
    return found or {}


def last_run(kube: Kube, job: str | None = None) -> dict[str, Any] | None:
    """status.lastRun once it records a Job (``job``, when given)."""
    run = (kube.tr().get("status") or {}).get("lastRun") or {}
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
def kube(kube_api: client.ApiClient, controlplane: Any, namespace: str) -> Kube:
    install_crd(controlplane)
    return Kube(kube_api, controlplane, namespace)


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


@pytest.fixture
def operator_process(
    controlplane: Any, kube: Kube, namespace: str, tmp_path: Path, target: Target
) -> Iterator[OperatorProcess]:
    """The operator, stopped before the test's database is dropped (it depends on ``target``)."""
    directory = tmp_path / "operator"
    directory.mkdir()
    running = OperatorProcess(Path(controlplane.kubeconfig), namespace, directory).start()
    yield running
    running.stop()


def tick(runner: JobRunner, clock: Clock) -> None:
    """Move the CronJob controller's clock just past the next whole minute (the next time of
    `* * * * *`) after both its own time and the real one, so that a CronJob created before now is due."""
    latest = max(clock.now(), datetime.now(UTC))
    clock.set(latest.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1))
    runner.poke()


def settle(seconds: float) -> None:
    time.sleep(seconds)
