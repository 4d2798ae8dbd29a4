"""The layers are a contract (pyproject.toml's [tool.importlinter]), checked by import-linter over the
real import graph: policy does no I/O, the data plane never imports the control plane, commands and
the plugin sit on top."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(package_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run(
        # The contracts are read from pyproject.toml in the working directory (import-linter 2.0, the
        # floor, takes no config file as an argument).
        [str(LINT), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_the_code_keeps_every_contract() -> None:
    result = lint(ROOT / "operator")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "0 broken" in result.stdout


def test_a_policy_module_that_imports_the_clickhouse_client_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "operator"
    shutil.copytree(ROOT / "operator" / "tablerefresh", copy / "tablerefresh")
    status = copy / "tablerefresh" / "controller" / "policy" / "status.py"
    status.write_text(status.read_text() + "\nimport clickhouse_connect  # noqa\n")
    result = lint(copy)
    assert result.returncode != 0
    assert "tablerefresh.controller.policy is not allowed to import clickhouse_connect" in result.stdout
