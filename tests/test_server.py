"""``tablerefresh serve`` and the served engine: the real ClickHouse engine (chDB) over ClickHouse's
own HTTP and native interfaces, with password-checked users, started and stopped leaving no process."""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tablerefresh.dataplane.infra.connection import connect
from tablerefresh.dataplane.infra.embedded import in_use
from tablerefresh.dataplane.infra.errors import CredentialsRefused
from tablerefresh.dataplane.server import PortInUse, ServedEngine, ServeRefused, User
from tablerefresh.dataplane.server import engine as engine_process
from tablerefresh.dataplane.server.process import free_port
from tests import refresh_fixtures as fx
from tests.conftest import repo_root, require
from tests.served_engine import ServedClickHouse

ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo_root() / "operator")}
URL = re.compile(r"HTTP:\s+(clickhouse://127\.0\.0\.1:(\d+))")
NATIVE = re.compile(r"native:\s+127\.0\.0\.1:(\d+)")
PID = re.compile(r"in process (\d+)")


def tablerefresh(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tablerefresh", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, **(env or {})},
    )


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` has exited (and been reaped) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return True  # a zombie: exited, its parent has not reaped it yet
        time.sleep(0.05)
    return False


def holders(data_dir: Path) -> list[int]:
    """Processes whose command line names ``data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(data_dir) in line:
                found.append(int(entry.name))
    return found


@dataclass
class ServeCommand:
    """``tablerefresh serve`` running in a process of its own, its stdout read line by line."""

    process: subprocess.Popen[str]
    data_dir: Path
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, data_dir: Path, *args: str) -> ServeCommand:
        process = subprocess.Popen(
            [sys.executable, "-m", "tablerefresh", "serve", "--data-dir", str(data_dir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        command = cls(process, data_dir)
        threading.Thread(target=command._read, daemon=True).start()
        command.wait_for("stop with Ctrl-C")
        return command

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} in {timeout}s; so far {self.lines}") from None
            if line is None:
                raise AssertionError(f"serve ended before {text!r}: {self.lines}; {self.process.stderr}")
            self.lines.append(line)
            if text in line:
                return line

    def match(self, pattern: re.Pattern[str]) -> re.Match[str]:
        found = next((m for m in map(pattern.search, self.lines) if m), None)
        assert found, f"{pattern.pattern} not in {self.lines}"
        return found

    @property
    def url(self) -> str:
        return self.match(URL).group(1)

    @property
    def http_port(self) -> int:
        return int(self.match(URL).group(2))

    @property
    def engine_pid(self) -> int:
        return int(self.match(PID).group(1))

    def signal_and_wait(self, signum: int, timeout: float = 30) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self.wait_for("is free")
        return code


@pytest.fixture(scope="module")
def password() -> str:
    return secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def serve_command(tmp_path_factory: pytest.TempPathFactory, password: str) -> Iterator[ServeCommand]:
    """``tablerefresh serve --user alice:…`` on a data directory it has to create."""
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    data_dir = tmp_path_factory.mktemp("serve") / "new" / "data"
    command = ServeCommand.start(data_dir, "--user", f"alice:{password}")
    yield command
    if command.process.poll() is None:
        command.process.terminate()
        command.process.wait(30)


def test_serve_creates_the_data_dir_and_prints_the_url(serve_command: ServeCommand) -> None:
    assert serve_command.lines[0] == f"created the data directory {serve_command.data_dir}"
    assert serve_command.url == f"clickhouse://127.0.0.1:{serve_command.http_port}"
    assert int(serve_command.match(NATIVE).group(1)) != serve_command.http_port
    assert "alice (password)" in "\n".join(serve_command.lines)
    client = connect(serve_command.url, username="default")
    assert client.query("SELECT currentUser()").result_rows == [("default",)]
    client.close()


def test_refresh_runs_against_the_served_engine_with_the_credentials_from_the_environment(
    serve_command: ServeCommand, password: str, tmp_path: Path
) -> None:
    client = connect(serve_command.url, username="alice", password=password)
    client.command("CREATE DATABASE shop")
    fx.create_tables(client, "shop")
    fx.fill_source(client, "shop", rows=2000)
    document = {
        "apiVersion": "tablerefresh.dev/v1alpha1",
        "kind": "TableRefresh",
        "metadata": {"name": "positions", "namespace": "default"},
        "spec": fx.spec("shop", clickhouse={"url": "clickhouse://clickhouse.example:8123"}).model_dump(
            by_alias=True, exclude_none=True, mode="json"
        ),
    }
    manifest = tmp_path / "tr.yaml"
    manifest.write_text(yaml.safe_dump(document))

    def refresh(secret: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        done = tablerefresh(
            "refresh",
            "--clickhouse",
            serve_command.url,
            "-f",
            str(manifest),
            env={"CLICKHOUSE_USER": "alice", "CLICKHOUSE_PASSWORD": secret},
        )
        return done, json.loads(done.stdout.strip().splitlines()[-1])

    done, summary = refresh(password)
    assert done.returncode == 0, done.stderr
    assert summary["outcome"] == "Succeeded"
    window_start = client.query("SELECT max(window_start) FROM shop._tablerefresh_runs").result_rows[0][0]
    assert fx.checksum(client, "shop.positions")[0] == fx.expected_slice(client, "shop", window_start) > 0

    done, summary = refresh("not-the-password")
    assert done.returncode == 6
    assert summary["reason"] == "CredentialsRefused"
    assert done.stderr.splitlines()[-1].startswith("error: ClickHouse refused the credentials at clickhouse://")
    client.close()


def test_a_second_server_on_the_same_data_dir_is_refused_in_one_line(serve_command: ServeCommand) -> None:
    done = tablerefresh("serve", "--data-dir", str(serve_command.data_dir))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"tablerefresh serve: another process holds the engine's data directory {serve_command.data_dir} "
        "(its status file is locked): stop it, or serve another directory\n"
    )
    with pytest.raises(ServeRefused, match="another process holds"):
        ServedEngine.start(serve_command.data_dir)


def test_sigterm_stops_the_server_cleanly_leaving_no_process(serve_command: ServeCommand) -> None:
    pid = serve_command.engine_pid
    assert serve_command.signal_and_wait(signal.SIGTERM) == 0
    assert serve_command.lines[-1].startswith("stopped (")
    assert gone(pid)
    assert holders(serve_command.data_dir) == []
    assert not in_use(serve_command.data_dir)


def test_ctrl_c_stops_a_server_on_a_given_port(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    port = free_port()
    command = ServeCommand.start(tmp_path / "data", "--port", str(port))
    assert command.url == f"clickhouse://127.0.0.1:{port}"
    assert command.signal_and_wait(signal.SIGINT) == 0
    assert gone(command.engine_pid)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "::1", "example.com"])
def test_an_address_other_than_ipv4_loopback_is_refused(tmp_path: Path, host: str) -> None:
    done = tablerefresh("serve", "--data-dir", str(tmp_path / "data"), "--host", host)
    assert done.returncode == 2
    assert done.stderr.startswith(f"tablerefresh serve: listen address {host}") and done.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()
    with pytest.raises(ServeRefused, match="listen address"):
        ServedEngine.start(tmp_path / "data", host=host)


def test_clickhouse_connect_talks_http_to_the_served_engine(served_engine: ServedClickHouse) -> None:
    client = served_engine.client()
    assert client.query("SELECT 1 + 1").result_rows == [(2,)]
    assert client.server_version.startswith("26.")
    assert served_engine.url == f"clickhouse://127.0.0.1:{served_engine.http_port}"


def test_a_password_user_authenticates_and_a_wrong_password_is_refused(served_engine: ServedClickHouse) -> None:
    alice = served_engine.client("alice")
    assert alice.query("SELECT currentUser()").result_rows == [("alice",)]
    for user, secret in (("alice", "wrong"), ("alice", ""), ("nobody", "x")):
        with pytest.raises(DatabaseError) as refused:
            served_engine.client(user, password=secret)
        assert refused.value.code == 516
        with pytest.raises(CredentialsRefused, match="refused the credentials"):
            connect(served_engine.url, username=user, password=secret)


def test_the_native_port_serves_and_checks_passwords_too(
    served_engine: ServedClickHouse, connect: Callable[[], Client]
) -> None:
    """Read through the native protocol by the in-process engine's ``remote()``."""
    local = connect()
    where = f"'127.0.0.1:{served_engine.tcp_port}'"
    alice = served_engine.users["alice"]
    assert local.query(
        f"SELECT * FROM remote({where}, view(SELECT currentUser()), 'alice', '{alice}')"
    ).result_rows == [("alice",)]
    with pytest.raises(DatabaseError, match=r"516|AUTHENTICATION_FAILED"):
        local.query(f"SELECT 1 FROM remote({where}, system.one, 'alice', 'wrong')")


def test_grants_come_from_users_xml_and_sql_user_management_is_refused(tmp_path: Path) -> None:
    """A user with fewer rights, and what the served engine cannot do; a stop with clients still
    connected (idle keep-alive) is clean; the data outlives the process."""
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    users = [User("alice", "a"), User("reader", "r", grants=("GRANT SELECT ON shop.*",))]
    engine = ServedEngine.start(tmp_path / "data", users=users)

    def client(user: str, password: str) -> Client:
        return clickhouse_connect.get_client(host=engine.host, port=engine.http_port, username=user, password=password)

    alice, reader = client("alice", "a"), client("reader", "r")
    for statement in (
        "CREATE DATABASE shop",
        "CREATE DATABASE other",
        "CREATE TABLE shop.t (x UInt8) ENGINE = MergeTree ORDER BY x",
        "CREATE TABLE other.t (x UInt8) ENGINE = MergeTree ORDER BY x",
        "INSERT INTO shop.t VALUES (1), (2)",
    ):
        alice.command(statement)
    assert reader.query("SELECT count() FROM shop.t").result_rows == [(2,)]
    for denied in ("INSERT INTO shop.t VALUES (3)", "SELECT count() FROM other.t", "DROP TABLE shop.t"):
        with pytest.raises(DatabaseError) as refused:
            reader.command(denied)
        assert refused.value.code == 497  # ACCESS_DENIED
    assert reader.query("SHOW GRANTS").result_rows == [("GRANT SELECT ON shop.* TO reader",)]
    # No writable user directory: users and their grants come from users.xml only.
    for statement, code in (("CREATE USER carol IDENTIFIED BY 'c'", 514), ("GRANT SELECT ON other.* TO reader", 495)):
        with pytest.raises(DatabaseError) as refused:
            alice.command(statement)
        assert refused.value.code == code  # ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND, ACCESS_STORAGE_READONLY

    stopped = engine.stop()  # the clients' idle connections are still open
    assert stopped.clean and stopped.message == "stopped" and stopped.seconds < 5
    assert gone(engine.pid) and not engine.config_dir.exists()

    with ServedEngine.start(tmp_path / "data", users=users) as again:
        assert again.execute("SELECT sum(x) FROM shop.t").strip() == "3"
    assert again.stopped is not None and again.stopped.clean


def test_default_keeps_no_password(tmp_path: Path) -> None:
    """The engine's own session logs in as default without a password: one on it is refused first."""
    done = tablerefresh("serve", "--data-dir", str(tmp_path / "data"), "--user", "default:secret")
    assert done.returncode == 2
    assert done.stderr.startswith("tablerefresh serve: default keeps no password and every right")
    with pytest.raises(ServeRefused, match="default keeps no password"):
        ServedEngine.start(tmp_path / "data", users=[User("default", grants=("GRANT SELECT ON *.*",))])


@pytest.mark.slow
def test_a_connection_left_open_is_cut_after_five_seconds(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    engine = ServedEngine.start(tmp_path / "data")
    with socket.create_connection((engine.host, engine.tcp_port)):  # opened, never speaks
        stopped = engine.stop()
    assert not stopped.clean and not stopped.killed
    assert stopped.message.startswith("stopped, cutting client connections still open 5 s after the stop")
    assert 4 < stopped.seconds < 15
    assert gone(engine.pid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_engine_process_stops_it_cleanly(tmp_path: Path, signum: int) -> None:
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    engine = ServedEngine.start(tmp_path / "data")
    os.kill(engine.pid, signum)
    assert engine.process.wait(15) == 0
    stopped = engine.stop()
    assert stopped.clean and stopped.message.startswith("had stopped already")
    assert not in_use(tmp_path / "data")


def test_the_engine_stops_when_the_process_that_started_it_dies(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from tablerefresh.dataplane.server import ServedEngine\n"
            f"engine = ServedEngine.start({str(tmp_path / 'data')!r})\n"
            "print(engine.pid, engine.config_dir, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert starter.stdout is not None
    pid_text, config_text = starter.stdout.readline().split()
    pid, config_dir = int(pid_text), Path(config_text)
    assert config_dir.is_dir()
    starter.kill()
    starter.wait()
    assert gone(pid)
    assert not in_use(tmp_path / "data")
    assert not config_dir.exists()


def test_a_given_port_in_use_is_named(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine (pip install 'tablerefresh[embedded]')")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"a port is in use: .*Address already in use: 127.0.0.1:{port}"):
            ServedEngine.start(tmp_path / "data", http_port=port)
    assert holders(tmp_path / "data") == []


@pytest.mark.parametrize(
    ("log", "code"),
    [
        ("Code: 394. DB::Exception: Query was cancelled. (QUERY_WAS_CANCELLED)", engine_process.EXIT_OK),
        (
            "Code: 76. DB::Exception: Cannot lock file /d/status. Another server instance in same directory is "
            "already running. (CANNOT_OPEN_FILE)",
            engine_process.EXIT_HELD,
        ),
        ("", engine_process.EXIT_FAILED),
    ],
)
def test_how_the_engine_process_reads_the_end_of_its_serving_query(tmp_path: Path, log: str, code: int) -> None:
    path = tmp_path / "engine.log"
    path.write_text(log + "\n")
    assert engine_process._outcome(path, "", tmp_path) == code
