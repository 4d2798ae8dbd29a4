"""An incremental run killed at any step leaves the old rows or the new ones, and the next run,
which looks for changes since the last run that succeeded, catches up with every change.

Each run is a real ``tablerefresh refresh`` process SIGKILLed at a named failpoint: no finally
block, no lock release, no run record, so the watermark stays where the last successful run left
it. On both engines (``tests/engines.py``); on the served one, the server outlives the run.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tablerefresh.dataplane.infra import names
from tablerefresh.dataplane.infra.lock import LOCK_PREFIX
from tablerefresh.dataplane.run.incremental import INCREMENTAL
from tests import crash_helper
from tests.crash_runs import set_up
from tests.engines import EMBEDDED, SERVED, ProcessEngine, full_matrix

# Long enough that a heartbeat (every TTL/12, at least 1s) never comes late on a loaded machine.
LOCK_TTL = 6.0
FAILPOINTS = [
    ("locked", "before"),
    ("changed-keys", "before"),
    ("staging-created", "before"),
    ("staged", "before"),
    ("linked", "before"),
    ("carried", "before"),
    ("verified", "before"),
    ("swapped", "after"),
    ("drop-staging", "after"),
]
# On the served engine CI kills a run at the two steps where an incremental run differs most from a
# full one (parts linked into staging, nothing swapped; the swap done, nothing recorded); the full
# matrix kills it at every one.
SERVED_IN_CI = {"linked", "swapped"}


def refresh(engine: ProcessEngine, manifest: Path, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    return engine.tablerefresh("refresh", "-f", str(manifest), "--lock-ttl", str(LOCK_TTL), failpoint=failpoint)


def window_start() -> int:
    """The 24h window's start, now."""
    return int((datetime.now(UTC) - timedelta(hours=24)).timestamp())


def summary(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine_for_processes", "failpoint", "state"),
    [(EMBEDDED, failpoint, state) for failpoint, state in FAILPOINTS]
    + [(SERVED, f, state) if f in SERVED_IN_CI else full_matrix(SERVED, f, state) for f, state in FAILPOINTS],
    indirect=["engine_for_processes"],
)
def test_an_incremental_run_killed_at_any_step_is_caught_up(
    engine_for_processes: ProcessEngine, failpoint: str, state: str
) -> None:
    engine = engine_for_processes
    manifest = set_up(engine, incremental=True)
    first = refresh(engine, manifest)
    assert first.returncode == 0, first.stderr
    assert summary(first)["kind"] == "Full"
    _, found, now = engine.calls(
        (crash_helper.change_incremental, engine.database, 1),
        (crash_helper.probe, engine.database),
        (crash_helper.expected, engine.database, window_start()),
    )
    before, after = found["checksum"], now["checksum"]
    assert before != after

    killed = refresh(engine, manifest, failpoint)

    assert killed.returncode == -9, killed.stderr
    found, _ = engine.calls(
        (crash_helper.probe, engine.database),
        (crash_helper.change_incremental, engine.database, 2),  # more changes before the next run
    )
    assert found["checksum"] == {"before": before, "after": after}[state]
    assert any(t.startswith(LOCK_PREFIX) for t in found["tables"])

    time.sleep(LOCK_TTL + 0.2)  # the dead run's lock expires
    rerun = refresh(engine, manifest)

    assert rerun.returncode == 0, rerun.stderr
    done = summary(rerun)
    assert done["kind"] == INCREMENTAL and done["changedKeys"] > 0, done
    found, now = engine.calls(
        (crash_helper.probe, engine.database), (crash_helper.expected, engine.database, window_start())
    )
    assert found["checksum"] == now["checksum"]
    assert [t for t in found["tables"] if t.startswith((names.STAGING, LOCK_PREFIX))] == []
