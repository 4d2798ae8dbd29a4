"""Start the served engine in a process of its own, wait until it answers, and stop it.

``ServedEngine.start`` checks what it can before starting anything (a loopback address, the users, a
free data directory), writes the configuration into a private temporary directory, starts
``python -m tablerefresh.dataplane.server`` and waits until ``GET /ping`` answers and the listener
is seen to be this engine's. ``stop`` kills the serving query over HTTP (``KILL QUERY … SYNC``),
waits for the process to exit, and removes the configuration: no process is left behind. The engine
also stops when its starter's process ends.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import tablerefresh
from tablerefresh.dataplane.infra.embedded import in_use
from tablerefresh.dataplane.server import engine as child
from tablerefresh.dataplane.server.config import LOOPBACK, ConfigRefused, User, check_host, users_of, write_config
from tablerefresh.dataplane.server.interface import count_statement, execute, kill_statement, ping

_POLL_SECONDS = 0.05
_PORT_ATTEMPTS = 3


class ServeError(Exception):
    """The engine could not be served; the message is one line. ``exit_code`` for the command."""

    exit_code = 1


class ServeRefused(ServeError):
    """Refused before anything started: an address other than loopback, a bad user, a held directory."""

    exit_code = 2


class PortInUse(ServeError):
    pass


@dataclass(frozen=True)
class Stopped:
    """How the engine stopped: ``clean`` when its process exited 0 after ending the serving query."""

    exit_code: int
    seconds: float
    message: str
    clean: bool
    killed: bool = False


@dataclass
class ServedEngine:
    """The embedded engine (chDB) served over ClickHouse's own HTTP and native TCP interfaces.

    The real engine and protocol, on loopback only, without replication (ReplicatedMergeTree stays
    read-only, ``ON CLUSTER`` is refused) and with users from ``users.xml`` only (no SQL
    ``CREATE USER``). ``data_dir`` is the same directory as ``chdb://DATA_DIR``; one process at a
    time may hold it.
    """

    data_dir: Path
    host: str
    http_port: int
    tcp_port: int
    users: dict[str, User]
    process: subprocess.Popen[bytes]
    config_dir: Path
    token: str
    started_seconds: float = 0.0
    stopped: Stopped | None = None
    _last_words: str = field(default="", repr=False)

    @classmethod
    def start(
        cls,
        data_dir: Path | str,
        *,
        host: str = LOOPBACK,
        http_port: int | None = None,
        tcp_port: int | None = None,
        users: Mapping[str, str | None] | Iterable[User] = (),
        timeout: float = 60.0,
    ) -> ServedEngine:
        """Serve ``data_dir`` (created if missing); ports are free ones unless given.

        ``users``: name -> password (None: no password), each with every right, or ``User`` objects
        with their grants. ``default`` is always there, with no password and every right (see
        ``config.users_of``).
        """
        try:
            host = check_host(host)
            by_name = users_of(users)
        except ConfigRefused as exc:
            raise ServeRefused(str(exc)) from None
        if importlib.util.find_spec("chdb") is None:
            raise ServeRefused("the served engine is chDB's: pip install 'tablerefresh[embedded]'")
        data_dir = Path(data_dir).absolute()
        if in_use(data_dir):
            raise ServeRefused(child.held_message(data_dir))
        data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if http_port is not None and tcp_port is not None else _PORT_ATTEMPTS
        for attempt in range(attempts):
            try:
                return cls._start_once(data_dir, host, http_port, tcp_port, by_name, timeout)
            except PortInUse as exc:
                # Another process took a port picked here between the pick and the listen: pick again.
                given = [port for port in (http_port, tcp_port) if port is not None]
                if attempt == attempts - 1 or any(re.search(rf":{port}\b", str(exc)) for port in given):
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start_once(
        cls,
        data_dir: Path,
        host: str,
        http_port: int | None,
        tcp_port: int | None,
        users: dict[str, User],
        timeout: float,
    ) -> ServedEngine:
        began = time.monotonic()
        http_port = http_port or free_port(host)
        tcp_port = tcp_port or free_port(host, avoid=http_port)
        config_dir = Path(tempfile.mkdtemp(prefix="tablerefresh-serve-"))
        write_config(config_dir, host=host, http_port=http_port, tcp_port=tcp_port, users=users)
        token = secrets.token_hex(8)
        env = dict(os.environ)
        # The child imports this very package, wherever it was imported from.
        root = str(Path(tablerefresh.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        # Its own session: a Ctrl-C meant for the starter reaches the engine through stop(), in order.
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tablerefresh.dataplane.server",
                "--data-dir",
                str(data_dir),
                "--config-dir",
                str(config_dir),
                "--host",
                host,
                "--http-port",
                str(http_port),
                "--token",
                token,
                "--watch-parent",
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        engine = cls(data_dir, host, http_port, tcp_port, users, process, config_dir, token)
        try:
            engine._wait_until_serving(began + timeout)
        except BaseException:
            engine.stop()
            raise
        engine.started_seconds = time.monotonic() - began
        return engine

    @property
    def url(self) -> str:
        return f"clickhouse://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def execute(self, sql: str, *, timeout: float = 30.0) -> str:
        """One statement as ``default``, its answer as text (for checks; use a client for work)."""
        return execute(self.host, self.http_port, sql, user="default", password=None, timeout=timeout)

    def stop(self, timeout: float = 30.0) -> Stopped:
        """Kill the serving query, wait for the process to exit (SIGKILL if it has not within
        ``timeout``), remove the configuration. No process is left, whatever the answer says."""
        if self.stopped is not None:
            return self.stopped
        began = time.monotonic()
        asked = killed = False
        if self.process.poll() is None:
            try:
                self.execute(kill_statement(self.token), timeout=timeout)
            except OSError:  # refused or unreachable (HTTPError is an OSError)
                self.process.send_signal(signal.SIGTERM)  # the engine's process tries it itself
            asked = True
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                killed = True
        said = self._said()
        shutil.rmtree(self.config_dir, ignore_errors=True)
        code = self.process.returncode
        if killed:
            message = f"killed: the engine had not exited {timeout:g}s after the stop"
        elif code == child.EXIT_OK:
            message = "stopped" if asked else "had stopped already (its serving query was killed)"
        elif asked and code == child.EXIT_FAILED and not said:
            message = (
                "stopped, cutting client connections still open 5 s after the stop "
                "(the engine waits that long for them, then exits at once)"
            )
        else:
            message = said or f"the engine's process exited with code {code}"
        seconds = time.monotonic() - began
        self.stopped = Stopped(code, seconds, message, clean=code == child.EXIT_OK and not killed, killed=killed)
        return self.stopped

    def _said(self) -> str:
        """The last line the engine's process wrote (its failure, if it failed), once it has exited."""
        try:
            _, err = self.process.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            err = b""
        lines = [line.strip() for line in (err or b"").decode(errors="replace").splitlines() if line.strip()]
        if lines:
            self._last_words = lines[-1]
        return self._last_words

    def _wait_until_serving(self, deadline: float) -> None:
        while True:
            code = self.process.poll()
            if code is not None:
                message = self._said() or f"the engine's process exited with code {code}"
                error = {child.EXIT_HELD: ServeRefused, child.EXIT_PORT_IN_USE: PortInUse}.get(code, ServeError)
                raise error(message)
            if ping(self.host, self.http_port, timeout=1.0) and self._serving():
                return
            if time.monotonic() > deadline:
                raise ServeError(f"the engine did not answer on {self.url} in time")
            time.sleep(_POLL_SECONDS)

    def _serving(self) -> bool:
        """Whether the listener that answers is this engine (not another server on a given port)."""
        try:
            return self.execute(count_statement(self.token), timeout=5).strip() == "1"
        except OSError:  # HTTPError too: another server there refuses default; the engine will say the port is taken
            return False

    def __enter__(self) -> ServedEngine:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def free_port(host: str = LOOPBACK, avoid: int | None = None) -> int:
    """A port nothing listens on now (another process may take it before the engine does: the
    start tries again with others when it did)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port != avoid:
            return port
