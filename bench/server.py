"""The benchmarks' ClickHouse server, and what they read of it.

``--server`` runs a benchmark against the embedded engine (chDB) served over ClickHouse's own HTTP
interface by ``tablerefresh.dataplane.server``, in a process of its own: the real engine and
protocol, on loopback, without replication and without a query log. The refresh runs are then its
clients, as a Job is in a cluster: each in a process of its own (``bench/refresh_client.py``, or
``tablerefresh refresh`` in the kill soak), logged in as ``refresher`` with a password, so the
server's list of running statements tells theirs apart from the benchmark's own (``default``).

With no query log, the server's figures for a run come from its process:

- peak memory: the resident set's high-water mark (``VmHWM`` in ``/proc/PID/status``), reset to the
  current resident set just before the run by writing ``5`` to ``/proc/PID/clear_refs``. It is the
  whole process's (the engine's caches included), so the resident set at the run's start is
  reported beside it;
- the engine's own peak: its memory tracker (``MemoryTracking`` in ``system.metrics``, what the
  queries and merges hold, without the allocator's cache), sampled every 50 ms during the run, so a
  peak shorter than that may be missed;
- CPU: the process's user and system time (``/proc/PID/stat``) over the run. Background merges
  count too: the benchmarks wait for them to finish before each run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.connection import PASSWORD_ENV, USER_ENV
from tablerefresh.dataplane.run.runs import RunRecord
from tablerefresh.dataplane.server import PortInUse, ServedEngine
from tablerefresh.spec import TableRefreshSpec

RUN_USER = "refresher"  # the refresh processes' user; the benchmark itself is ``default``
_ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


_SAMPLE_SECONDS = 0.05


@dataclass
class Mark:
    """The server process at a run's start, and the engine's tracked memory sampled since."""

    cpu: float
    rss_mb: float
    peak_reset: bool  # whether VmHWM was reset (else it is the peak since the process started)
    sampler: TrackedPeak


@dataclass(frozen=True)
class ServerUse:
    """The server process over one run: CPU seconds, peak and starting resident set, and the
    engine's tracked memory at its highest sample."""

    cpu: float
    peak_mb: float
    start_mb: float
    peak_reset: bool
    tracked_peak_mb: float


class TrackedPeak:
    """The highest ``MemoryTracking`` the engine reports, sampled every 50 ms from a client of its own."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tracked-peak", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        rows = self.client.query("SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'").result_rows
        self.peak = max(self.peak, int(rows[0][0]) if rows else 0)

    def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a sample lost to a busy server is a sample missed
                self._sample()
            if self._stop.wait(_SAMPLE_SECONDS):
                return

    def stop(self) -> float:
        """Stop sampling (one last sample first); the peak in MB."""
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            self._sample()
        self.client.close()
        return self.peak / 2**20


class BenchServer:
    """A served engine on ``data_dir`` (the same directory as ``chdb://data_dir``), with one password
    user, ``refresher``, for the refresh processes."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.absolute()
        self.password = secrets.token_urlsafe(12)
        self.engine = self._start()
        self.restarts = 0

    def _start(self, http_port: int | None = None, tcp_port: int | None = None) -> ServedEngine:
        return ServedEngine.start(
            self.data_dir, users={RUN_USER: self.password}, http_port=http_port, tcp_port=tcp_port
        )

    @property
    def url(self) -> str:
        return self.engine.url

    @property
    def pid(self) -> int:
        return self.engine.pid

    def client(self, *, database: str | None = None, user: str = "default", **options: Any) -> Client:
        """A clickhouse-connect client over HTTP: ``default`` (no password) unless ``user`` says
        ``refresher``."""
        return clickhouse_connect.get_client(
            host=self.engine.host,
            port=self.engine.http_port,
            username=user,
            password=self.password if user == RUN_USER else "",
            database=database,
            autogenerate_session_id=False,
            **options,
        )

    def env(self) -> dict[str, str]:
        """The environment of a refresh process: the credentials, as a Job gets them from its Secret."""
        return {**os.environ, USER_ENV: RUN_USER, PASSWORD_ENV: self.password}

    # -- what the process uses ----------------------------------------------------------------

    def _status_kb(self, field_name: str) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name == field_name:
                    return int(value.split()[0])
        raise KeyError(field_name)

    def rss_mb(self) -> float:
        return self._status_kb("VmRSS") / 1024

    def peak_mb(self) -> float:
        return self._status_kb("VmHWM") / 1024

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            after_name = stat.read().rpartition(")")[2].split()
        # utime and stime are fields 14 and 15 of the line, 12 and 13 after the name's ")".
        return (int(after_name[11]) + int(after_name[12])) / _CLOCK_TICKS

    def mark(self) -> Mark:
        """Reset the peak to the resident set now, note the CPU time and start sampling the engine's
        tracked memory: call just before a run, and :meth:`since` just after."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as clear:
                clear.write("5")
            reset = True
        except OSError:
            reset = False
        sampler = TrackedPeak(self.client())
        return Mark(self.cpu_seconds(), self.rss_mb(), reset, sampler)

    def since(self, mark: Mark) -> ServerUse:
        tracked = mark.sampler.stop()
        return ServerUse(self.cpu_seconds() - mark.cpu, self.peak_mb(), mark.rss_mb, mark.peak_reset, tracked)

    # -- statements of the refresh processes --------------------------------------------------

    def running(self, user: str = RUN_USER) -> int:
        """How many statements of ``user`` the server is running now."""
        with contextlib.closing(self.client()) as admin:
            rows = admin.query(
                "SELECT count() FROM system.processes WHERE user = {u:String}", parameters={"u": user}
            ).result_rows
        return int(rows[0][0])

    def drain(self, limit: float = 300.0, user: str = RUN_USER) -> float | None:
        """Wait until the server runs no statement of ``user`` (a killed client's statement runs on):
        the seconds waited, 0.0 when none ran, None when some still ran after ``limit``."""
        began = time.monotonic()
        if not self.running(user):
            return 0.0
        while self.running(user):
            if time.monotonic() - began > limit:
                return None
            time.sleep(0.05)
        return time.monotonic() - began

    # -- a crash -------------------------------------------------------------------------------

    def crash(self) -> None:
        """SIGKILL the server's process, the engine in it: a server crash."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.engine.process.wait()
        self.engine.stop()  # only removes its configuration: the process is gone

    def restart(self) -> float:
        """Serve the same data directory again, on the same ports if they are free (a client
        reconnecting finds it), else on others; the seconds until it answered."""
        began = time.monotonic()
        old = self.engine
        try:
            self.engine = self._start(old.http_port, old.tcp_port)
        except PortInUse:
            self.engine = self._start()
        self.restarts += 1
        return time.monotonic() - began

    def stop(self) -> None:
        self.engine.stop()

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


# -- a refresh run as a client process ---------------------------------------------------------

_DATETIMES = {f.name for f in fields(RunRecord) if "datetime" in str(f.type)}


def record_to_json(record: RunRecord) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(record).items()}


def record_from_json(data: dict[str, Any]) -> RunRecord:
    values: dict[str, Any] = {
        k: datetime.fromisoformat(v) if k in _DATETIMES and v is not None else v for k, v in data.items()
    }
    return RunRecord(**values)


@dataclass(frozen=True)
class ClientRun:
    """One refresh run as a client of the server: its record, its own process's CPU seconds during
    the run and over its whole life (start-up included), its peak resident set, and the server's use
    over the run (the client's start-up included: the server is idle meanwhile)."""

    record: RunRecord
    client_cpu: float
    client_process_cpu: float
    client_rss_mb: float
    server: ServerUse


def run_client(
    server: BenchServer,
    spec: TableRefreshSpec,
    source: str,
    run_time: datetime,
    *,
    full: bool = False,
    run_id: str | None = None,
) -> ClientRun:
    """Run one refresh in a process of its own (``bench/refresh_client.py``) against ``server``."""
    request = client_request(server.url, spec, source, run_time, full=full, run_id=run_id)
    mark = server.mark()
    try:
        record, answer = client_process(request, server.env())
    finally:
        use = server.since(mark)
    return ClientRun(record, answer["cpu"], answer["process_cpu"], answer["rss_mb"], use)


def client_process(request: dict[str, Any], env: dict[str, str] | None = None) -> tuple[RunRecord, dict[str, Any]]:
    """Run ``bench/refresh_client.py`` on ``request`` in a process of its own: the run's record and
    the client's answer (its CPU seconds and peak resident set). With a ``chdb://`` URL the engine
    runs inside that process, as in ``tablerefresh refresh`` on the embedded engine."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.refresh_client"],
        input=json.dumps(request),
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the refresh client failed ({done.returncode}): {done.stderr.strip()[-3000:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return record_from_json(answer["record"]), answer


def client_request(
    url: str, spec: TableRefreshSpec, source: str, run_time: datetime, *, full: bool = False, run_id: str | None = None
) -> dict[str, Any]:
    """What ``bench/refresh_client.py`` reads: one run of ``spec`` at ``run_time`` against ``url``."""
    return {
        "url": url,
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "source": source,
        "run_time": run_time.isoformat(),
        "full": full,
        "run_id": run_id or f"bench-{run_time:%Y%m%dT%H%M%S}-{time.monotonic_ns() % 10**6}",
    }
