"""A source run in batches (``spec.source.batches``): each ``INSERT … SELECT`` binds its
``{batch:UInt32}``, staging gets the same rows as from one run, and a run killed between two batches
leaves the target as it was. On both engines."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.run.runs import Outcome
from tablerefresh.dataplane.run.statements import load_staging, run_tables
from tablerefresh.spec import BATCHES_MESSAGE, TableRefreshSpec
from tests import crash_helper
from tests import refresh_fixtures as fx
from tests.crash_runs import change, set_up
from tests.engines import ProcessEngine

pytestmark = pytest.mark.engines()
# Each batch yields the ids of its residue: every row once over all batches.
BATCHED = f"SELECT * FROM ({fx.SOURCE}) WHERE id % {{batches:UInt32}} = {{batch:UInt32}}"


def batched(database: str, batches: int) -> TableRefreshSpec:
    return fx.spec(database, source={"query": BATCHED, "batches": batches})


def test_a_source_in_batches_gives_the_rows_of_one_run(ch: Client, connect: Callable[[], Client], loaded: str) -> None:
    once = fx.run(connect, fx.spec(loaded))
    assert once.outcome == Outcome.SUCCEEDED, once.error
    rows = fx.rows(ch, f"{loaded}.positions")

    record = fx.run(connect, batched(loaded, 4))

    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert fx.rows(ch, f"{loaded}.positions") == rows
    assert record.slice_rows_after == once.slice_rows_after and record.duplicates == 0


def test_batches_that_overlap_stop_at_the_duplicate_check(
    ch: Client, connect: Callable[[], Client], loaded: str
) -> None:
    assert fx.run(connect, fx.spec(loaded)).outcome == Outcome.SUCCEEDED
    before = fx.rows(ch, f"{loaded}.positions")
    overlapping = BATCHED.replace("= {batch:UInt32}", ">= {batch:UInt32}")  # batch 0 yields every row

    record = fx.run(connect, fx.spec(loaded, source={"query": overlapping, "batches": 2}))

    assert record.exit_code == ExitCode.VERIFY_FAILED and "duplicate" in record.error, record
    assert fx.rows(ch, f"{loaded}.positions") == before


def test_each_batch_is_one_statement_binding_its_number() -> None:
    target = TableInfo("db", "positions", "MergeTree", "MergeTree", "p", "id", "", ())
    tables = run_tables(target, "run", batched("db", 3).strategy, "keys")
    create, *inserts = load_staging(tables, ["id"], BATCHED, {"window_start": 0, "batch": 0, "batches": 3}, 3)
    assert [(s.parameters or {})["batch"] for s in inserts] == [0, 1, 2]
    assert {(s.parameters or {})["batches"] for s in inserts} == {3}
    assert len({s.text for s in inserts}) == 1 and create.text.startswith("CREATE TABLE")


def test_batches_whose_source_cannot_tell_them_apart_are_refused() -> None:
    with pytest.raises(ValidationError, match="reads \\{batch:UInt32\\}"):
        fx.spec("db", source={"query": fx.SOURCE, "batches": 2})
    assert "{batch:UInt32}" in BATCHES_MESSAGE


def test_a_configmap_source_that_cannot_tell_batches_apart_refuses_the_run(
    ch: Client, connect: Callable[[], Client], loaded: str
) -> None:
    """A ConfigMap's query is read only when the run starts: the run refuses it, target untouched."""
    assert fx.run(connect, fx.spec(loaded)).outcome == Outcome.SUCCEEDED
    before = fx.rows(ch, f"{loaded}.positions")
    spec = fx.spec(loaded, source={"query": None, "configMapKeyRef": {"name": "q", "key": "sql"}, "batches": 2})

    record = fx.run(connect, spec, source_query=fx.SOURCE)

    assert record.outcome == Outcome.FAILED and record.exit_code == ExitCode.INVALID, record
    assert "spec.source.batches" in record.error and "{batch:UInt32}" in record.error
    assert fx.rows(ch, f"{loaded}.positions") == before


def test_a_run_killed_between_two_batches_leaves_the_target_as_it_was(engine_for_processes: ProcessEngine) -> None:
    engine = engine_for_processes
    manifest = set_up(engine)
    document = yaml.safe_load(manifest.read_text())
    document["spec"]["source"] = {"query": BATCHED, "batches": 3}
    manifest.write_text(yaml.safe_dump(document))
    first = refresh(engine, manifest)
    assert first.returncode == 0, first.stderr
    window_start = int((datetime.now(UTC) - timedelta(hours=24)).timestamp())
    before, after = change(engine, window_start)
    assert before != after

    killed = refresh(engine, manifest, "batch-staged")

    assert killed.returncode == -9, killed.stderr
    (after_kill,) = engine.calls((crash_helper.probe, engine.database))
    assert after_kill["checksum"] == before


def refresh(engine: ProcessEngine, manifest: object, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    return engine.tablerefresh("refresh", "-f", str(manifest), "--lock-ttl", "2", failpoint=failpoint)
