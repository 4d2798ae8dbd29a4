"""Each way of not getting to the data is its own error, message and exit code, on the real engine
and the real client: an unknown database, an unknown table, an unreachable or unknown host, a server
that does not answer. (Refused credentials need a server with users, which the embedded engine is
not: tests/test_failures.py covers their wording from the error the client raises.)"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.connection import connect as real_connect
from tablerefresh.dataplane.infra.errors import ExitCode, TimedOut
from tests import refresh_fixtures as fx
from tests.commands import manifest, refresh, summary


def test_an_unknown_database_is_not_called_unreachable(tmp_path: Path) -> None:
    empty = tmp_path / "empty-engine"
    # An embedded engine with no database of the manifest's, made in a process of its own (this one
    # holds the session's engine, and chDB runs one per process).
    make = (
        "import clickhouse_connect; "
        f"clickhouse_connect.get_client(dsn='chdb://{empty}').command('CREATE DATABASE other')"
    )
    subprocess.run([sys.executable, "-c", make], check=True, capture_output=True, timeout=120)
    done = refresh("-f", str(manifest(tmp_path)), "--clickhouse", f"chdb://{empty}")
    assert done.returncode == ExitCode.INVALID
    out = summary(done)
    assert out["reason"] == "UnknownDatabase"
    assert out["error"] == (
        f"ClickHouse at chdb://{empty} has no database polymarket: create it, or set spec.clickhouse.database"
    )
    assert done.stderr.strip().endswith(f"error: {out['error']}")


def test_an_unknown_table(connect: Callable[[], Client], loaded: str) -> None:
    record = fx.run(connect, fx.spec(loaded, target={"table": "no_such_table"}))
    assert (record.exit_code, record.reason) == (ExitCode.INVALID, "UnknownTable")
    assert record.error == f"unknown table {loaded}.no_such_table"


@pytest.mark.parametrize(
    ("url", "cause"),
    [("clickhouse://127.0.0.1:9", "connection refused"), ("clickhouse://no-such-host.invalid:8123", "unknown host")],
)
def test_an_unreachable_host_in_one_line(tmp_path: Path, url: str, cause: str) -> None:
    done = refresh("-f", str(manifest(tmp_path)), "--clickhouse", url)
    assert done.returncode == ExitCode.UNREACHABLE
    out = summary(done)
    assert out["reason"] == "ClickHouseUnreachable"
    assert out["error"] == f"cannot reach ClickHouse at {url}: {cause}"
    assert "HTTPConnectionPool" not in done.stderr and "query_id" not in done.stderr  # no client internals
    assert "Retrying" not in done.stderr  # nor urllib3's warnings


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never answers, as a hung ClickHouse does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_does_not_answer_is_a_timeout(silent_server: int) -> None:
    url = f"clickhouse://127.0.0.1:{silent_server}"
    with pytest.raises(TimedOut) as info:
        real_connect(url, connect_timeout=1, send_receive_timeout=1)
    assert str(info.value) == f"ClickHouse at {url} did not answer in time"
    assert info.value.exit_code == ExitCode.UNREACHABLE and info.value.reason == "ClickHouseTimeout"
