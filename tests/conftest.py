"""Shared fixtures: the embedded ClickHouse engine (chDB), the same engine served over ClickHouse's
own HTTP interface, one test body on either (``engine``, ``tests/engines.py``), and, through its
plugin, the Kubernetes test control plane."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tests.engines import (
    EMBEDDED,
    ENGINES,
    FULL_MATRIX_ENV,
    SERVED,
    USER,
    Engine,
    ProcessEngine,
    embedded_engine,
    served_clients,
    served_engine_as,
)
from tests.served_engine import ServedClickHouse, served

# The Kubernetes test control plane (fixtures controlplane, kube_api, namespace) and the harness on
# it (api, crd, operator, operator_process).
pytest_plugins = ["tests.controlplane.pytest_plugin", "tests.harness.fixtures"]


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.engines`` runs a test that uses ``engine`` (or ``engine_for_processes``) on
    each engine its arguments name (default: both); a test that parametrizes them itself is left be."""
    marker = metafunc.definition.get_closest_marker("engines")
    if marker is None:
        return
    for name in ("engine", "engine_for_processes"):
        if name in metafunc.fixturenames and not any(
            name in _argnames(m) for m in metafunc.definition.iter_markers("parametrize")
        ):
            chosen = marker.args or ENGINES
            ids = [c if isinstance(c, str) else c.values[0] for c in chosen]
            metafunc.parametrize(name, chosen, indirect=True, ids=ids)


def _argnames(marker: pytest.Mark) -> list[str]:
    names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
    return [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test's served-engine variant is marked ``served``. The served engine's full matrix is
    deselected (not skipped: CI skips nothing) unless asked for; CI runs the representative subset,
    ``TABLEREFRESH_FULL_MATRIX=1 scripts/test -m full_matrix`` the rest. Tests marked ``slow`` run first."""
    full = os.environ.get(FULL_MATRIX_ENV) == "1"
    kept, deselected = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if SERVED in (params.get("engine"), params.get("engine_for_processes")):
            item.add_marker(pytest.mark.served)
        # What a test needs, from the fixtures it uses: `-m "not kube"` runs without the control plane.
        if "chdb_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.embedded)
        if "controlplane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kube)
        if not full and item.get_closest_marker("full_matrix") is not None:
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    # The long tests first (a stable sort keeps each group's order): pytest-xdist hands tests out in
    # this order, so the last minutes are not one worker finishing a long test while the other waits.
    items[:] = sorted(kept, key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The test's engine: embedded unless the test is parametrized (``@pytest.mark.engines``).
    Served: as ``alice``, whose credentials the environment carries for commands run in-process."""
    kind = getattr(request, "param", EMBEDDED)
    if kind == SERVED:
        server: ServedClickHouse = request.getfixturevalue("served_engine")
        env = server.env(USER)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        made = served_engine_as(server.url, env)
    else:
        made = embedded_engine(request.getfixturevalue("chdb_url"))
    yield made
    made.close()


@pytest.fixture
def engine_for_processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessEngine]:
    """An engine that refreshes in processes of their own reach: a fresh chDB path the test's own
    process never opens, or the session's served engine (see ``tests/engines.py``)."""
    kind = getattr(request, "param", EMBEDDED)
    name = f"p_{uuid.uuid4().hex[:12]}"
    if kind == SERVED:
        server: ServedClickHouse = request.getfixturevalue("served_engine")
        env = server.env(USER)
        made = ProcessEngine(SERVED, server.url, env, name, tmp_path, served_clients(server.url, env))
    else:
        require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
        made = ProcessEngine(EMBEDDED, f"chdb://{tmp_path}/chdb", {}, name, tmp_path)
    yield made
    made.close()


@pytest.fixture
def connect(engine: Engine) -> Callable[[], Client]:
    """A factory of clients on the test's engine; every client it made is closed after the test."""
    return engine.client


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


@pytest.fixture
def reader_client(connect: Callable[[], Client], database: str) -> Client:
    """A second client on the test's database, for a reader beside the refresh (same engine)."""
    client = connect()
    client.database = database
    return client
