"""What the command tests share: a manifest on disk, and `tablerefresh` run as a user runs it
(in a process of its own, or in-process through ``tablerefresh.cli.main``) with its JSON summary read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tablerefresh.cli import main
from tests import refresh_fixtures as fx
from tests.conftest import repo_root


def refresh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tablerefresh", "refresh", *args],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def manifest(tmp_path: Path, **spec_changes: Any) -> Path:
    document = yaml.safe_load((repo_root() / "examples/polymarket/tablerefresh.yaml").read_text())
    document["spec"].update(spec_changes)
    path = tmp_path / "tr.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def write_manifest(tmp_path: Path, url: str, database: str, **overrides: Any) -> Path:
    spec = fx.spec(database, **overrides).model_dump(by_alias=True, exclude_none=True, mode="json")
    spec["clickhouse"]["url"] = url
    path = tmp_path / "tr.yaml"
    document = {
        "apiVersion": "tablerefresh.dev/v1alpha1",
        "kind": "TableRefresh",
        "metadata": {"name": "t"},
        "spec": spec,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(list(args))
    out = capsys.readouterr()
    try:
        return code, json.loads(out.out)
    except ValueError:
        return code, out.out + out.err
