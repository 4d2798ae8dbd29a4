"""Refresh processes started at once against one engine (issue 18, point 4).

On the served engine, any number of processes connect: the lock lets exactly one run work, the
others exit 3 (LockHeld) having changed nothing, while a reader and the operator's health query,
each in a process of its own, go on reading and never see the slice empty. On the embedded engine,
one process at a time may open the path: the runs take turns on the engine itself (each waits up to
its connect timeout, 10 s), so none meets another's lock, and one that waits too long exits 6 with
one line saying why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tablerefresh.dataplane.infra.lock import LOCK_PREFIX
from tests import crash_helper
from tests import refresh_fixtures as fx
from tests.crash_runs import expected, probe, set_up
from tests.engines import EMBEDDED, ROOT, SERVED, ProcessEngine, write_manifest

RUNS = 5
# The source sleeps 4 s over the 50k source rows (at most 3 s a block, blocks of up to 32k rows):
# the run that wins the lock holds it while every other process starts, even on a loaded machine.
SLOW_SOURCE = fx.SOURCE.replace("FROM src WHERE", "FROM src WHERE sleepEachRow(0.00008) = 0 AND")


def set_up_slow(engine: ProcessEngine) -> tuple[Path, Path]:
    """The crash tests' tables and source, their manifest, and one whose source is slow."""
    manifest = set_up(engine)
    spec = fx.spec(engine.database, source={"query": SLOW_SOURCE})
    return manifest, write_manifest(engine.home / "slow.yaml", spec, engine.url)


def start_refresh(engine: ProcessEngine, manifest: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tablerefresh", "refresh", "-f", str(manifest), *args],
        cwd=ROOT,
        env=engine.process_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, json.loads(out.strip().splitlines()[-1]), err


class Watchers:
    """A reader and the health query, each in a process of its own (``tests/readers.py``)."""

    def __init__(self, engine: ProcessEngine, manifest: Path) -> None:
        self.stop_file = engine.home / "stop"
        self.processes = {
            kind: subprocess.Popen(
                [sys.executable, "-m", "tests.readers", kind, str(manifest), str(self.stop_file)],
                cwd=ROOT,
                env=engine.process_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for kind in ("reader", "health")
        }
        deadline = time.monotonic() + 60
        while not all(self.stop_file.with_suffix(f".{kind}.ready").exists() for kind in self.processes):
            for kind, process in self.processes.items():
                assert process.poll() is None, f"{kind}: {process.communicate()}"
            assert time.monotonic() < deadline, "the reader and the health query never read"
            time.sleep(0.05)

    def stop(self) -> dict[str, dict[str, Any]]:
        self.stop_file.touch()
        seen = {}
        for kind, process in self.processes.items():
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            seen[kind] = json.loads(out)
        return seen


@pytest.mark.engines(SERVED)
def test_runs_started_at_once_on_a_server_one_swaps_the_others_exit_3(engine_for_processes: ProcessEngine) -> None:
    engine = engine_for_processes
    fast, manifest = set_up_slow(engine)
    first = engine.tablerefresh("refresh", "-f", str(fast))
    assert first.returncode == 0, first.stderr
    engine.call(crash_helper.change, engine.database)
    old_slice = json.loads(first.stdout.strip().splitlines()[-1])["sliceRowsAfter"]
    old_open = engine.call(crash_helper.open_rows, engine.database)
    window_start = int((datetime.now(UTC) - timedelta(hours=24)).timestamp())
    new = expected(engine, window_start)

    watchers = Watchers(engine, manifest)
    try:
        runs = [start_refresh(engine, manifest) for _ in range(RUNS)]
        results = [finish(run) for run in runs]
    finally:
        seen = watchers.stop()

    codes = sorted(code for code, _, _ in results)
    print(f"exit codes of {RUNS} runs started at once: {[code for code, _, _ in results]}; watchers: {seen}")
    assert codes == [0] + [3] * (RUNS - 1), [(code, summary["error"]) for code, summary, _ in results]
    (winner,) = [summary for code, summary, _ in results if code == 0]
    for code, summary, err in results:
        if code == 3:
            assert (summary["outcome"], summary["reason"]) == ("Skipped", "LockHeld"), summary
            assert "another run holds the lock" in summary["error"] and winner["runId"] in summary["error"]
            assert err.splitlines()[-1].startswith("error: another run holds the lock")
    # The refused runs changed nothing, not even the runs table; every key stands once.
    assert [r["runId"] for r in engine.call(crash_helper.runs, engine.database)][1:] == [winner["runId"]]
    assert probe(engine)["checksum"] == new
    keys = engine.call(crash_helper.keys, engine.database)
    assert keys["rows"] == keys["keys"] == new[0]
    assert not [t for t in probe(engine)["tables"] if t.startswith(LOCK_PREFIX)]
    # The reader and the health query read all along, without an error, and never saw the slice
    # empty or short: the old slice, the new one, or for an instant a moving row in both.
    lowest = min(old_slice, winner["sliceRowsAfter"])
    for kind, what in seen.items():
        assert what["errorCount"] == 0, (kind, what["errors"])
        assert what["loops"] > 5, (kind, what)
        assert what["minSliceRows"] >= lowest > 0, (kind, what)
    # The open slice is one partition: the reader saw exactly the old one or exactly the new one.
    new_open = engine.call(crash_helper.open_rows, engine.database)
    assert set(seen["reader"]["openRowsSeen"]) <= {old_open, new_open} and old_open != new_open, seen["reader"]
    assert seen["reader"]["openDuplicates"] == 0, seen["reader"]


@pytest.mark.engines(SERVED)
def test_runs_started_at_once_on_a_stale_lock_one_takes_it_over(engine_for_processes: ProcessEngine) -> None:
    """A Job killed holding the lock, then several runs at once: one drops the stale lock, one takes
    the lock, and the others meet the takeover marker or the new lock and exit 3."""
    engine = engine_for_processes
    fast, manifest = set_up_slow(engine)
    ttl = "4"  # a heartbeat every 1 s, lost after 2 s without one: room for a loaded machine
    killed = engine.tablerefresh("refresh", "-f", str(fast), "--lock-ttl", ttl, failpoint="locked")
    assert killed.returncode == -9, killed.stderr
    time.sleep(4.2)  # its lock is stale
    window_start = int((datetime.now(UTC) - timedelta(hours=24)).timestamp())

    results = [finish(run) for run in [start_refresh(engine, manifest, "--lock-ttl", ttl) for _ in range(RUNS)]]

    codes = sorted(code for code, _, _ in results)
    print(f"exit codes of {RUNS} runs started at once on a stale lock: {[code for code, _, _ in results]}")
    assert codes == [0] + [3] * (RUNS - 1), [(code, summary["error"]) for code, summary, _ in results]
    # One of them dropped the stale lock (the marker let only one do it); the one that then created
    # the lock first won, which need not be the same run.
    assert sum("taking over the lock" in err for _, _, err in results) == 1
    found = probe(engine)
    assert found["checksum"] == expected(engine, window_start)
    assert not [t for t in found["tables"] if t.startswith("_tablerefresh_") and t != "_tablerefresh_runs"]


@pytest.mark.engines(EMBEDDED)
def test_runs_started_at_once_on_the_embedded_engine_take_turns(engine_for_processes: ProcessEngine) -> None:
    engine = engine_for_processes
    manifest = set_up(engine)
    window_start = int((datetime.now(UTC) - timedelta(hours=24)).timestamp())

    results = [finish(run) for run in [start_refresh(engine, manifest) for _ in range(4)]]

    codes = [code for code, _, _ in results]
    print(f"exit codes of 4 runs started at once on the embedded engine: {codes}")
    # Each run waited for the engine's path, then ran alone: no lock was ever met. One that waited
    # longer than its connect timeout says so in one line.
    assert set(codes) <= {0, 6} and 0 in codes, [(c, s["error"]) for c, s, _ in results]
    for code, summary, err in results:
        assert "Code: 76" not in err and "Cannot lock file" not in err, err
        if code == 6:
            assert summary["reason"] == "ClickHouseUnreachable"
            assert err.splitlines()[-1].startswith("error: another process has the embedded engine"), err
    runs, found, now, keys = engine.calls(
        (crash_helper.runs, engine.database),
        (crash_helper.probe, engine.database),
        (crash_helper.expected, engine.database, window_start),
        (crash_helper.keys, engine.database),
    )
    assert len(runs) == codes.count(0)
    assert found["checksum"] == now["checksum"]
    assert keys["rows"] == keys["keys"]
