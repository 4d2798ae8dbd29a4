"""A run killed at any step leaves the target as before or fully swapped, and the next run cleans up.

Each run is a real process SIGKILLed at a named failpoint: no finally block, no lock release.
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
from tablerefresh.dataplane.lock import LOCK_PREFIX, TAKEOVER_PREFIX
from tablerefresh.dataplane.runs import RUNS_TABLE
from tests.conftest import repo_root, require

DB = "crashdb"


def helper(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.crash_helper", *args], cwd=repo_root(), check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout) if out.stdout.strip() else {}


def refresh(manifest: Path, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(manifest.parent)}
    if failpoint:
        env["TABLEREFRESH_FAILPOINT"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "tablerefresh", "refresh", "-f", str(manifest), "--lock-ttl", "2"],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("failpoint", "state"),
    [
        ("locked", "before"),
        ("staging-created", "before"),
        ("staged", "before"),
        ("verified", "before"),
        ("swapped", "after"),
    ],
)
def test_a_run_killed_at_any_step_is_safe(tmp_path: Path, failpoint: str, state: str) -> None:
    require("chdb", "the embedded ClickHouse engine")
    path, manifest = str(tmp_path / "chdb"), tmp_path / "manifest.yaml"
    helper("setup", path, DB, str(manifest))
    first = refresh(manifest)
    assert first.returncode == 0, first.stderr
    helper("change", path, DB)
    before = helper("probe", path, DB)["checksum"]
    window_start = int((datetime.now(UTC) - timedelta(hours=24)).timestamp())
    after = helper("expected", path, DB, str(window_start))["checksum"]
    assert before != after

    killed = refresh(manifest, failpoint)

    assert killed.returncode == -9, killed.stderr
    probe = helper("probe", path, DB)
    assert probe["checksum"] == {"before": before, "after": after}[state]
    assert any(t.startswith(LOCK_PREFIX) for t in probe["tables"])  # the dead run's lock is still there

    time.sleep(2.2)  # the dead run's lock expires
    rerun = refresh(manifest)
    assert rerun.returncode == 0, rerun.stderr
    assert "taking over the lock" in rerun.stderr
    probe = helper("probe", path, DB)
    assert probe["checksum"] == helper("expected", path, DB, str(window_start))["checksum"]
    leftovers = [t for t in probe["tables"] if t.startswith((names.STAGING, LOCK_PREFIX))]
    assert leftovers == []
    assert RUNS_TABLE in probe["tables"]


def test_a_run_killed_in_the_middle_of_a_takeover_does_not_block_the_next(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine")
    path, manifest = str(tmp_path / "chdb"), tmp_path / "manifest.yaml"
    helper("setup", path, DB, str(manifest))
    assert refresh(manifest, "locked").returncode == -9  # leaves a lock that goes stale
    time.sleep(2.2)

    # The next run finds it stale, creates its takeover marker, and dies right there.
    killed = refresh(manifest, "takeover-marked")
    assert killed.returncode == -9, killed.stderr
    assert any(t.startswith(TAKEOVER_PREFIX) for t in helper("probe", path, DB)["tables"])

    time.sleep(2.2)  # the marker is older than the TTL: its owner is taken for dead too
    rerun = refresh(manifest)
    assert rerun.returncode == 0, rerun.stderr
    leftovers = [
        t for t in helper("probe", path, DB)["tables"] if t.startswith((names.STAGING, LOCK_PREFIX, TAKEOVER_PREFIX))
    ]
    assert leftovers == []
