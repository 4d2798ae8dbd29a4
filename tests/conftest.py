"""Shared fixtures: the embedded ClickHouse engine (chDB), the same engine served over ClickHouse's
own HTTP interface, and, through its plugin, the Kubernetes test control plane."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from tests.served_engine import ServedClickHouse, served

# The Kubernetes test control plane (fixtures controlplane, kube_api, namespace).
pytest_plugins = ["tests.controlplane.pytest_plugin"]


def require(module: str, what: str) -> None:
    """Skip when an optional part is missing, with the reason; in CI a missing part is a failure."""
    try:
        __import__(module)
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"CI must have {what} ({module}): {exc}") from exc
        pytest.skip(f"{what} is not installed ({module}): {exc}")


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One engine path for the whole session: chDB runs one engine per process."""
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    return f"chdb://{tmp_path_factory.getbasetemp()}/chdb"


@pytest.fixture(scope="session")
def served_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedClickHouse]:
    """The real ClickHouse engine (chDB) served over ClickHouse's own HTTP interface, in a process of
    its own, with ``alice`` (every right, a random password) beside the passwordless ``default``.
    Not a fake; it has no replication (``tests/served_engine.py``). One for the session: each test
    works in a database of its own."""
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    with served(tmp_path_factory.mktemp("served") / "data") as server:
        yield server


@pytest.fixture
def connect(chdb_url: str) -> Iterator[Callable[[], Client]]:
    """A factory of clients on the session's engine; every client it made is closed after the test."""
    made: list[Client] = []

    def factory() -> Client:
        client = clickhouse_connect.get_client(dsn=chdb_url)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture
def database(connect: Callable[[], Client]) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = connect()
    client.command(f"CREATE DATABASE {name}")
    yield name
    client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


@pytest.fixture
def ch(connect: Callable[[], Client], database: str) -> Client:
    client = connect()
    client.database = database
    return client


@pytest.fixture
def loaded(ch: Client, database: str) -> str:
    """The engine tests' generic workload (``tests/refresh_fixtures.py``): tables and 20k source rows."""
    from tests import refresh_fixtures as fx

    fx.create_tables(ch, database)
    fx.fill_source(ch, database, rows=20_000)
    return database


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
