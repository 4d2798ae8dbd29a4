"""An incremental run killed at any step leaves the old rows or the new ones, and the next run,
which looks for changes since the last run that succeeded, catches up with every change.

Each run is a real process SIGKILLed at a named failpoint: no finally block, no lock release, no
run record, so the watermark stays where the last successful run left it.
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

from tablerefresh.dataplane import names
from tablerefresh.dataplane.incremental import INCREMENTAL
from tablerefresh.dataplane.lock import LOCK_PREFIX
from tests.conftest import repo_root, require
from tests.test_crash import DB, helper

# Long enough that a heartbeat (every TTL/12, at least 1s) never comes late on a loaded machine.
LOCK_TTL = 6.0


def refresh(manifest: Path, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(manifest.parent)}
    if failpoint:
        env["TABLEREFRESH_FAILPOINT"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "tablerefresh", "refresh", "-f", str(manifest), "--lock-ttl", str(LOCK_TTL)],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def changed(path: str, n: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.incremental_crash_helper", "change", path, DB, str(n)],
        cwd=repo_root(),
        check=True,
        capture_output=True,
    )


def expected(path: str) -> Any:
    window_start = int((datetime.now(UTC) - timedelta(hours=24)).timestamp())
    return helper("expected", path, DB, str(window_start))["checksum"]


def summary(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("failpoint", "state"),
    [
        ("locked", "before"),
        ("changed-keys", "before"),
        ("staging-created", "before"),
        ("staged", "before"),
        ("linked", "before"),
        ("carried", "before"),
        ("verified", "before"),
        ("swapped", "after"),
        ("drop-staging", "after"),
    ],
)
def test_an_incremental_run_killed_at_any_step_is_caught_up(tmp_path: Path, failpoint: str, state: str) -> None:
    require("chdb", "the embedded ClickHouse engine")
    path, manifest = str(tmp_path / "chdb"), tmp_path / "manifest.yaml"
    subprocess.run(
        [sys.executable, "-m", "tests.incremental_crash_helper", "setup", path, DB, str(manifest)],
        cwd=repo_root(),
        check=True,
        capture_output=True,
    )
    first = refresh(manifest)
    assert first.returncode == 0, first.stderr
    assert summary(first)["kind"] == "Full"
    changed(path, 1)
    before, after = helper("probe", path, DB)["checksum"], expected(path)
    assert before != after

    killed = refresh(manifest, failpoint)

    assert killed.returncode == -9, killed.stderr
    probe = helper("probe", path, DB)
    assert probe["checksum"] == {"before": before, "after": after}[state]
    assert any(t.startswith(LOCK_PREFIX) for t in probe["tables"])

    changed(path, 2)  # more changes before the next run: it must catch both
    time.sleep(LOCK_TTL + 0.2)  # the dead run's lock expires
    rerun = refresh(manifest)

    assert rerun.returncode == 0, rerun.stderr
    done = summary(rerun)
    assert done["kind"] == INCREMENTAL and done["changedKeys"] > 0, done
    probe = helper("probe", path, DB)
    assert probe["checksum"] == expected(path)
    assert [t for t in probe["tables"] if t.startswith((names.STAGING, LOCK_PREFIX))] == []
