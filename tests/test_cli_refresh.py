"""``tablerefresh refresh`` as the Job runs it: exit codes, the JSON summary, the termination log."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.commands import manifest, refresh, summary


def test_an_invalid_identifier_is_refused_naming_the_field(tmp_path: Path) -> None:
    done = refresh("-f", str(manifest(tmp_path, target={"table": "pm; DROP TABLE x"})))
    assert done.returncode == 2
    out = summary(done)
    assert out["outcome"] == "Failed" and out["reason"] == "InvalidSpec"
    assert "spec.target.table" in out["error"]


def test_unreachable_clickhouse_exits_6_and_writes_the_termination_log(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = refresh(
        "-f", str(manifest(tmp_path)), "--clickhouse", "clickhouse://127.0.0.1:9", "--summary-file", str(log)
    )
    assert done.returncode == 6
    out = summary(done)
    assert out["reason"] == "ClickHouseUnreachable"
    assert "cannot reach ClickHouse at clickhouse://127.0.0.1:9" in out["error"]
    assert json.loads(log.read_text()) == out


def test_the_manifest_can_come_from_the_environment_as_the_cronjob_passes_it(tmp_path: Path) -> None:
    document = yaml.safe_load(manifest(tmp_path).read_text())
    done = refresh(
        "--clickhouse",
        "clickhouse://127.0.0.1:9",
        env={"TABLEREFRESH_MANIFEST": json.dumps(document), "TABLEREFRESH_RUN_ID": "pm-refresh-29123456"},
    )
    assert summary(done)["runId"] == "pm-refresh-29123456"
    assert done.returncode == 6  # it got as far as connecting


def test_a_config_map_source_needs_its_variable(tmp_path: Path) -> None:
    path = manifest(tmp_path, source={"configMapKeyRef": {"name": "pm-source", "key": "query.sql"}})
    done = refresh("-f", str(path))
    assert done.returncode == 2
    assert "TABLEREFRESH_SOURCE_QUERY" in summary(done)["error"]


def test_no_manifest_at_all(tmp_path: Path) -> None:
    done = refresh()
    assert done.returncode == 2
    assert "no manifest" in summary(done)["error"]
