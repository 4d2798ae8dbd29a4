"""The embedded engine's path is one process's at a time: a second process waits its turn (up to its
connect timeout) instead of failing, and a second client of the same process does not wait at all.
While it waits, the engine's own refusals (``Code: 76 … Cannot lock file``) stay out of its stderr;
when it gives up, it says so in one line.

Each side is a process of its own: the tests' process keeps its own engine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tablerefresh.dataplane.infra.embedded import data_path
from tests import crash_helper
from tests.conftest import repo_root, require
from tests.engines import ProcessEngine

HOLD = """
import sys, time
from tablerefresh.dataplane.infra.connection import connect
client = connect("chdb://" + sys.argv[1])
client.query("SELECT 1")
print("open", flush=True)
time.sleep(float(sys.argv[2]))
client.close()
time.sleep(30)  # still alive, the path closed
"""
OPEN = """
import sys, time
from tablerefresh.dataplane.infra.connection import connect
from tablerefresh.dataplane.infra.errors import Unreachable
began = time.monotonic()
try:
    first = connect("chdb://" + sys.argv[1], connect_timeout=float(sys.argv[2]))
    second = connect("chdb://" + sys.argv[1], connect_timeout=float(sys.argv[2]))  # same process: no wait
    print(second.query("SELECT 1").result_rows[0][0], round(time.monotonic() - began, 2))
except Unreachable as exc:
    print("unreachable", round(time.monotonic() - began, 2), exc)
"""


ENGINE_SAID = ("Code: 76", "Cannot lock file", "DB::Exception")


def _python(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=repo_root(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def _quiet(stderr: str) -> bool:
    return not any(text in stderr for text in ENGINE_SAID)


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    holder = _python(HOLD, str(path), str(seconds))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
    return holder


def test_a_second_process_waits_for_the_path_then_opens_it(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine")
    holder = _hold(tmp_path / "db", 2.0)
    try:
        out = subprocess.run(
            [sys.executable, "-c", OPEN, str(tmp_path / "db"), "30"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
    answer, waited = out.stdout.split()[:2]
    assert answer == "1", out.stdout + out.stderr
    assert 1.0 < float(waited) < 20, waited
    assert _quiet(out.stderr), out.stderr


def test_a_path_held_past_the_timeout_is_unreachable_and_says_why(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine")
    holder = _hold(tmp_path / "db", 20.0)
    try:
        began = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", OPEN, str(tmp_path / "db"), "1"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
    assert out.stdout.startswith("unreachable"), out.stdout + out.stderr
    assert "another process has the embedded engine" in out.stdout and "waited 1s" in out.stdout
    assert time.monotonic() - began < 15
    assert _quiet(out.stderr), out.stderr


def test_a_free_path_opens_at_once_with_two_clients_in_one_process(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine")
    out = subprocess.run(
        [sys.executable, "-c", OPEN, str(tmp_path / "db"), "10"],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    answer, took = out.stdout.split()[:2]
    assert answer == "1" and float(took) < 5, out.stdout + out.stderr


def test_refresh_and_plan_that_give_up_on_a_held_path_say_so_in_one_line(
    engine_for_processes: ProcessEngine,
) -> None:
    """Both wait their connect timeout (10 s) for the path, then exit 6 with one line naming the path,
    without the engine's ``Code: 76`` text."""
    engine = engine_for_processes
    manifest = engine.home / "manifest.yaml"
    engine.call(crash_helper.setup, engine.url, engine.database, str(manifest))
    path = data_path(engine.url)
    assert path is not None
    holder = _hold(path, 30.0)
    try:
        started = {
            command: subprocess.Popen(
                [sys.executable, "-m", "tablerefresh", command, "-f", str(manifest)],
                cwd=repo_root(),
                env=engine.process_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for command in ("refresh", "plan")
        }
        done = {command: (*p.communicate(timeout=120), p.returncode) for command, p in started.items()}
    finally:
        holder.kill()
    line = (
        f"another process has the embedded engine at {path} open (waited 10s for it): one process at a "
        "time may open a chdb:// path; to share one, serve it (`tablerefresh serve`)"
    )
    for _, err, code in done.values():
        assert code == 6, err
        assert _quiet(err), err
        assert [e for e in err.splitlines() if e.startswith("error")] == [f"error: {line}"], err
    summary = json.loads(done["refresh"][0].strip().splitlines()[-1])
    assert (summary["reason"], summary["error"]) == ("ClickHouseUnreachable", line)
    assert done["plan"][0] == ""
