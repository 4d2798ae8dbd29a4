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
    block = done.stdout[done.stdout.index("status:") : done.stdout.index("\nthe demo's manifest:")]
    status = yaml.safe_load(block)["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True", status["conditions"]
    assert status["health"]["sliceDuplicates"] == 0 and status["health"]["tableDuplicates"] == 0
    assert status["health"]["sliceRows"] == status["lastRun"]["sliceRowsAfter"] > 0
    # The rerun found exactly the rows the first run built.
    assert status["lastRun"]["sliceRowsBefore"] == status["lastRun"]["sliceRowsAfter"]
    assert status["lastRun"]["rowsBefore"] == status["lastRun"]["rowsAfter"]

    # It says where its database is, as a URL that works, and what to try next, each step once.
    url = f"chdb://{(tmp_path / 'demo' / 'chdb').resolve()}"
    assert f"(ClickHouse URL {url})" in done.stdout
    next_steps = done.stdout[done.stdout.index("next, try:") :].splitlines()[1:]
    assert [line.split()[1] for line in next_steps] == ["plan", "refresh", "history"]
    assert done.stdout.count("fills: 30,000 / 30,000 rows") == 1
    assert "INFO" not in done.stderr
    manifest = str(tmp_path / "demo" / "tablerefresh.yaml")
    for line in next_steps:
        command = line.split("#")[0].split()
        again = subprocess.run(
            [sys.executable, "-m", "tablerefresh", *command[1:]], cwd=repo_root(), capture_output=True, text=True
        )
        assert again.returncode == 0, (command, again.stdout, again.stderr)
        assert manifest in command
