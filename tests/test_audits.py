"""The user's audits, kept evidence and the run history, on the real engine: embedded and served."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.cli import main
from tablerefresh.dataplane.health import measure
from tablerefresh.dataplane.infra import names
from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.run.runs import Outcome
from tests import refresh_fixtures as fx
from tests.engines import Engine

Connect = Callable[[], Client]
pytestmark = pytest.mark.engines()
NO_BIG_VALUES = {"name": "no-big-values", "query": "SELECT countIf(value > 900) FROM {table:Identifier}"}
NO_NEGATIVE_IDS = {"name": "no-negative-ids", "query": "SELECT count() FROM {table:Identifier} WHERE id < 0"}


def tables(ch: Client, database: str) -> set[str]:
    return {r[0] for r in ch.query(f"SELECT name FROM system.tables WHERE database = '{database}'").result_rows}


def test_passing_audits_let_the_run_swap(ch: Client, connect: Connect, loaded: str) -> None:
    record = fx.run(connect, fx.spec(loaded, audits=[NO_NEGATIVE_IDS, {**NO_BIG_VALUES, "maxFailingRows": 10**6}]))

    assert record.outcome == Outcome.SUCCEEDED, record.error
    big = ch.query(
        f"SELECT countIf(value > 900) FROM ({fx.SOURCE})",
        parameters={"window_start": int(record.window_start.timestamp())},
    ).result_rows[0][0]  # type: ignore[union-attr]
    assert big > 0
    assert record.audits == [
        {"name": "no-negative-ids", "failingRows": 0, "maxFailingRows": 0, "passed": True},
        {"name": "no-big-values", "failingRows": big, "maxFailingRows": 10**6, "passed": True},
    ]
    assert "audits" in record.summary()


def test_a_failing_audit_leaves_the_target_and_keeps_the_evidence(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    ch.command(f"ALTER TABLE {loaded}.src UPDATE value = value + 1 WHERE 1", settings={"mutations_sync": 2})
    before = fx.checksum(ch, f"{loaded}.positions")
    would_publish = fx.run(connect, fx.spec(loaded, strategy="ReplacePartitions"), run_id="dry")  # for comparison
    assert would_publish.outcome == Outcome.SUCCEEDED
    published = fx.rows(ch, f"{loaded}.positions")
    ch.command(f"ALTER TABLE {loaded}.src UPDATE value = value - 1 WHERE 1", settings={"mutations_sync": 2})
    fx.run(connect, fx.spec(loaded))  # back to the data of `before`
    assert fx.checksum(ch, f"{loaded}.positions") == before
    ch.command(f"ALTER TABLE {loaded}.src UPDATE value = value + 1 WHERE 1", settings={"mutations_sync": 2})

    record = fx.run(connect, fx.spec(loaded, audits=[NO_BIG_VALUES], keepFailedStaging="1h"))

    assert record.outcome == Outcome.FAILED
    assert (record.exit_code, record.reason) == (ExitCode.AUDIT_FAILED, "AuditFailed")
    assert record.error.startswith("audit no-big-values: ") and "failing row(s), at most 0 allowed" in record.error
    assert "was not changed" in record.error
    assert fx.checksum(ch, f"{loaded}.positions") == before
    database, evidence = record.evidence_table.split(".")
    assert database == loaded and evidence.startswith(names.evidence_prefix("positions"))
    assert record.summary()["evidenceTable"] == record.evidence_table
    # Exactly what the run would have published: the rows of the partitions it would have replaced.
    assert fx.rows(ch, record.evidence_table) == published
    # It is not a backup, and a later run keeps it until it is older than keepFailedStaging.
    assert not [t for t in tables(ch, loaded) if t.startswith(names.backup_prefix("positions"))]
    assert fx.run(connect, fx.spec(loaded, keepFailedStaging="1h")).outcome == Outcome.SUCCEEDED
    assert evidence in tables(ch, loaded)
    later = datetime.now(UTC) + timedelta(seconds=1.1)  # the run's clock, past the evidence's second
    assert fx.run(connect, fx.spec(loaded, keepFailedStaging="1s"), clock=lambda: later).outcome == Outcome.SUCCEEDED
    assert evidence not in tables(ch, loaded)


def test_without_keep_failed_staging_nothing_is_kept(ch: Client, connect: Connect, loaded: str) -> None:
    record = fx.run(connect, fx.spec(loaded, audits=[NO_BIG_VALUES]))
    assert record.exit_code == ExitCode.AUDIT_FAILED and record.evidence_table == ""
    assert not [t for t in tables(ch, loaded) if t.startswith((names.EVIDENCE, names.STAGING))]


@pytest.mark.parametrize(
    ("audit", "expect"),
    [
        (
            {"name": "typo", "query": "SELEC count() FROM {table:Identifier}"},
            "audit typo does not compile: Syntax error",
        ),
        (
            {"name": "no-column", "query": "SELECT countIf(nope > 1) FROM {table:Identifier}"},
            "audit no-column does not",
        ),
        ({"name": "two", "query": "SELECT count(), 1 FROM {table:Identifier}"}, "audit two must return one number"),
        ({"name": "text", "query": "SELECT 'bad' FROM {table:Identifier}"}, "audit text must return one number"),
    ],
)
def test_a_bad_audit_is_invalid_input_found_before_staging(
    ch: Client, connect: Connect, loaded: str, audit: dict[str, Any], expect: str
) -> None:
    before = tables(ch, loaded)
    record = fx.run(connect, fx.spec(loaded, audits=[NO_NEGATIVE_IDS, audit]))
    assert record.exit_code == ExitCode.INVALID, record.error
    assert record.error.startswith(expect), record.error
    assert tables(ch, loaded) == before  # no staging, no lock, no runs table


def test_the_health_check_evaluates_the_audits_on_the_target(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    report = measure(ch, fx.spec(loaded, audits=[NO_NEGATIVE_IDS, NO_BIG_VALUES]))
    by_name = {a.name: a for a in report.audits}
    assert by_name["no-negative-ids"].passed
    failing = ch.query(f"SELECT countIf(value > 900) FROM {loaded}.positions").result_rows[0][0]
    assert failing > 0 and by_name["no-big-values"].failing_rows == failing and not by_name["no-big-values"].passed


def test_history_lists_the_recorded_runs_newest_first(
    ch: Client, connect: Connect, loaded: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import yaml

    ok = fx.run(connect, fx.spec(loaded))
    failed = fx.run(connect, fx.spec(loaded, audits=[NO_BIG_VALUES]))
    spec = fx.spec(loaded).model_dump(by_alias=True, exclude_none=True, mode="json")
    spec["clickhouse"]["url"] = engine.url
    manifest = tmp_path / "tr.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {"apiVersion": "tablerefresh.dev/v1alpha1", "kind": "TableRefresh", "metadata": {"name": "h"}, "spec": spec}
        )
    )

    assert main(["history", "-f", str(manifest), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["run_id"], r["outcome"], r["reason"]) for r in runs] == [
        (failed.run_id, "Failed", "AuditFailed"),
        (ok.run_id, "Succeeded", ""),
    ]
    assert runs[1]["rows_after"] == ok.rows_after and runs[1]["partitions"] == ok.partitions
    assert main(["history", "-f", str(manifest), "--limit", "1"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert len(text) == 2 and text[1].startswith(failed.run_id) and "AuditFailed" in text[1]
