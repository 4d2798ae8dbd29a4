"""README's first command, as a new user runs it: the demo on the embedded engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import repo_root, require


def test_demo_refreshes_the_reference_table_and_prints_a_healthy_status(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine")
    done = subprocess.run(
        [sys.executable, "-m", "tablerefresh", "demo", "--fills", "30000", "--data-dir", str(tmp_path / "demo")],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fills: 30,000 / 30,000 rows" in done.stdout  # progress is shown
    assert done.stdout.count("Succeeded in") == 2
    status = yaml.safe_load(done.stdout[done.stdout.index("status:") :])["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True", status["conditions"]
    assert status["health"]["sliceDuplicates"] == 0 and status["health"]["tableDuplicates"] == 0
    assert status["health"]["sliceRows"] == status["lastRun"]["sliceRowsAfter"] > 0
    # The rerun found exactly the rows the first run built.
    assert status["lastRun"]["sliceRowsBefore"] == status["lastRun"]["sliceRowsAfter"]
    assert status["lastRun"]["rowsBefore"] == status["lastRun"]["rowsAfter"]
