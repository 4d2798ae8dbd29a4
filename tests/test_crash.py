"""A run killed at any step leaves the target as before or fully swapped, and the next run cleans up.

Each run is a real ``tablerefresh refresh`` process SIGKILLed at a named failpoint: no finally
block, no lock release. On both engines: embedded, where the engine dies with the run, and served
over HTTP, where the server outlives its client and keeps whatever the run's statements did.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tablerefresh.dataplane.infra import names
from tablerefresh.dataplane.infra.lock import LOCK_PREFIX, TAKEOVER_PREFIX
from tablerefresh.dataplane.run.runs import RUNS_TABLE
from tests import crash_helper
from tests.crash_runs import change, probe, set_up
from tests.engines import EMBEDDED, SERVED, ProcessEngine, full_matrix

pytestmark = [pytest.mark.engines(), pytest.mark.slow]


def refresh(engine: ProcessEngine, manifest: Path, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    return engine.tablerefresh("refresh", "-f", str(manifest), "--lock-ttl", "2", failpoint=failpoint)


# Every failpoint of a full run on the embedded engine. On the served one CI kills the run after the
# verification (the last step before the swap: staging built, nothing swapped) and after the swap;
# the full matrix kills it at every step.
@pytest.mark.parametrize(
    ("engine_for_processes", "failpoint", "state"),
    [
        (EMBEDDED, "locked", "before"),
        (EMBEDDED, "staging-created", "before"),
        (EMBEDDED, "staged", "before"),
        (EMBEDDED, "verified", "before"),
        (EMBEDDED, "swapped", "after"),
        full_matrix(SERVED, "locked", "before"),
        full_matrix(SERVED, "staging-created", "before"),
        full_matrix(SERVED, "staged", "before"),
        (SERVED, "verified", "before"),
        (SERVED, "swapped", "after"),
    ],
    indirect=["engine_for_processes"],
)
def test_a_run_killed_at_any_step_is_safe(engine_for_processes: ProcessEngine, failpoint: str, state: str) -> None:
    engine = engine_for_processes
    manifest = set_up(engine)
    first = refresh(engine, manifest)
    assert first.returncode == 0, first.stderr
    window_start = int((datetime.now(UTC) - timedelta(hours=24)).timestamp())
    before, after = change(engine, window_start)
    assert before != after

    killed = refresh(engine, manifest, failpoint)

    assert killed.returncode == -9, killed.stderr
    found = probe(engine)
    assert found["checksum"] == {"before": before, "after": after}[state]
    assert any(t.startswith(LOCK_PREFIX) for t in found["tables"])  # the dead run's lock is still there

    time.sleep(2.2)  # the dead run's lock expires
    rerun = refresh(engine, manifest)
    assert rerun.returncode == 0, rerun.stderr
    assert "taking over the lock" in rerun.stderr
    found, now = engine.calls(
        (crash_helper.probe, engine.database), (crash_helper.expected, engine.database, window_start)
    )
    assert found["checksum"] == now["checksum"]
    leftovers = [t for t in found["tables"] if t.startswith((names.STAGING, LOCK_PREFIX))]
    assert leftovers == []
    assert RUNS_TABLE in found["tables"]


def test_a_run_killed_in_the_middle_of_a_takeover_does_not_block_the_next(
    engine_for_processes: ProcessEngine,
) -> None:
    engine = engine_for_processes
    manifest = set_up(engine)
    assert refresh(engine, manifest, "locked").returncode == -9  # leaves a lock that goes stale
    time.sleep(2.2)

    # The next run finds it stale, creates its takeover marker, and dies right there.
    killed = refresh(engine, manifest, "takeover-marked")
    assert killed.returncode == -9, killed.stderr
    assert any(t.startswith(TAKEOVER_PREFIX) for t in probe(engine)["tables"])

    time.sleep(2.2)  # the marker is older than the TTL: its owner is taken for dead too
    rerun = refresh(engine, manifest)
    assert rerun.returncode == 0, rerun.stderr
    leftovers = [t for t in probe(engine)["tables"] if t.startswith((names.STAGING, LOCK_PREFIX, TAKEOVER_PREFIX))]
    assert leftovers == []
