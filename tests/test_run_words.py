"""What `plan`, `history` and `refresh --full` call a run (issue 21, points 6-8), on the embedded engine.

One meaning per word: ``kind`` is Full or Incremental everywhere (summary, runs table, plan,
history); the strategy, or the operation (Dedupe, Restore), is shown under its own name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.cli import main
from tests import crash_helper
from tests import refresh_fixtures as fx
from tests.commands import cli, write_manifest

INCREMENTAL = {
    "source": {"query": fx.INCREMENTAL_SOURCE},
    "incremental": {"key": ["id"], "changedKeysQuery": fx.CHANGED_IDS, "lateness": "1s"},
}


def refresh(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """``tablerefresh refresh``: its summary is the last line of stdout."""
    code = main(["refresh", *args])
    out = capsys.readouterr().out
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return code, summary


def test_plan_of_a_spec_without_incremental_prints_the_header_and_the_kind(
    loaded: str, chdb_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path, chdb_url, loaded)
    code, text = cli(capsys, "plan", "-f", str(manifest))
    assert code == 0, text
    lines = text.splitlines()
    assert "full run: the spec has no incremental section" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("partition"))
    assert lines[header].split() == ["partition", "rows", "now", "kept", "rows", "after", "change"]
    assert lines[header + 1].split()[0] == "0"  # the open positions' partition, under its header

    code, planned = cli(capsys, "plan", "-f", str(manifest), "--json")
    assert code == 0 and planned["kind"] == "Full"
    assert planned["kind_reason"] == "the spec has no incremental section"


def test_history_shows_the_kind_and_the_strategy_or_operation_each_in_its_column(
    ch: Client, loaded: str, chdb_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path, chdb_url, loaded, **INCREMENTAL)
    assert refresh(capsys, "-f", str(manifest))[0] == 0  # the first: full
    crash_helper.change(ch, loaded)
    code, second = refresh(capsys, "-f", str(manifest))
    assert code == 0 and second["kind"] == "Incremental"
    assert cli(capsys, "dedupe", "-f", str(manifest))[0] == 0

    code, text = cli(capsys, "history", "-f", str(manifest))
    assert code == 0, text
    header, *rows = text.splitlines()
    assert header.split()[4:8] == ["took", "kind", "strategy/operation", "outcome"]
    # newest first: the dedupe (an operation, no kind), the incremental run, the full one
    shown = [(r.split()[4], r.split()[5], r.split()[6]) for r in rows]
    assert shown == [
        ("-", "Dedupe", "Succeeded"),
        ("Incremental", "ReplacePartitions", "Succeeded"),
        ("Full", "ReplacePartitions", "Succeeded"),
    ]
    code, listed = cli(capsys, "history", "-f", str(manifest), "--json")
    assert [(r["kind"], r["strategy"]) for r in listed] == [
        ("", "Dedupe"),
        ("Incremental", "ReplacePartitions"),
        ("Full", "ReplacePartitions"),
    ]


def test_full_on_an_incremental_manifest_gives_the_reason_full(
    ch: Client, loaded: str, chdb_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As in the issue: the plain manifest ran first, so the incremental one's definition differs, and
    # the run would be full anyway; the reason is still what the user asked for.
    plain = write_manifest(tmp_path, chdb_url, loaded)
    assert refresh(capsys, "-f", str(plain))[0] == 0
    (tmp_path / "incremental").mkdir()
    incremental = write_manifest(tmp_path / "incremental", chdb_url, loaded, **INCREMENTAL)
    code, planned = cli(capsys, "plan", "-f", str(incremental), "--json")
    assert "changed since the last run" in planned["kind_reason"]
    code, forced = refresh(capsys, "-f", str(incremental), "--full")
    assert code == 0 and (forced["kind"], forced["kindReason"]) == ("Full", "--full")
    # and after a run of the same definition, where it would have been incremental
    crash_helper.change(ch, loaded)
    code, again = refresh(capsys, "-f", str(incremental), "--full")
    assert code == 0 and (again["kind"], again["kindReason"]) == ("Full", "--full")
    code, listed = cli(capsys, "history", "-f", str(incremental), "--json")
    assert [r["kind_reason"] for r in listed[:2]] == ["--full", "--full"]
