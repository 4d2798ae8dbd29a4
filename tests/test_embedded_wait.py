"""The embedded engine's path is one process's at a time: a second process waits its turn (up to its
connect timeout) instead of failing, and a second client of the same process does not wait at all.

Each side is a process of its own: the tests' process keeps its own engine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import repo_root, require

HOLD = """
import sys, time
from tablerefresh.dataplane.connection import connect
client = connect("chdb://" + sys.argv[1])
client.query("SELECT 1")
print("open", flush=True)
time.sleep(float(sys.argv[2]))
client.close()
time.sleep(30)  # still alive, the path closed
"""
OPEN = """
import sys, time
from tablerefresh.dataplane.connection import connect
from tablerefresh.dataplane.errors import Unreachable
began = time.monotonic()
try:
    first = connect("chdb://" + sys.argv[1], connect_timeout=float(sys.argv[2]))
    second = connect("chdb://" + sys.argv[1], connect_timeout=float(sys.argv[2]))  # same process: no wait
    print(second.query("SELECT 1").result_rows[0][0], round(time.monotonic() - began, 2))
except Unreachable as exc:
    print("unreachable", round(time.monotonic() - began, 2), exc)
"""


def _python(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=repo_root(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


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
