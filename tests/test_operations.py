"""Operations and recovery on both engines: backups, restore, dedupe, mutations, plan.

The commands run in-process through ``tablerefresh.cli.main``, against the session's chDB engine or,
over HTTP as ``alice``, the session's served engine (``tests/engines.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.infra.lock import LOCK_PREFIX
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.run.runs import Outcome
from tests import refresh_fixtures as fx
from tests.commands import cli, write_manifest
from tests.engines import Engine

Connect = Callable[[], Client]
pytestmark = pytest.mark.engines()






def change_source(ch: Client, step: int) -> None:
    ch.command(f"ALTER TABLE src UPDATE value = value + {step} WHERE id % 5 = 0", settings={"mutations_sync": 2})
    ch.command(
        f"ALTER TABLE src UPDATE resolved_at = now() WHERE resolved_at IS NULL AND id % 97 = {step}",
        settings={"mutations_sync": 2},
    )


def test_each_swap_keeps_a_backup_and_retention_holds(ch: Client, connect: Connect, loaded: str) -> None:
    the_spec = fx.spec(loaded, backup={"keep": 2})
    previous = []
    run_ids = []
    for step in range(4):
        previous.append(fx.rows(ch, "positions"))
        record = fx.run(connect, the_spec)
        assert record.outcome == Outcome.SUCCEEDED, record.error
        run_ids.append(record.run_id)
        change_source(ch, step + 1)

    kept = backups.list_backups(ch, loaded, "positions")
    assert [b.run_id for b in kept] == run_ids[-2:]
    for backup, before in zip(kept, previous[-2:], strict=True):
        assert backup.kind == backups.PARTITIONS and backup.partitions
        # The backup holds exactly the rows its run replaced: the partitions as they were before it.
        replaced = [r for r in before if _partition(r) in backup.partitions]
        assert fx.rows(ch, backup.table) == sorted(replaced)


def _partition(row: tuple[Any, ...]) -> str:
    resolved_at = row[1]
    return "0" if resolved_at is None else f"{resolved_at:%Y%m}"


def test_restore_returns_the_previous_rows_and_can_itself_be_undone(
    ch: Client, connect: Connect, loaded: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path, engine.url, loaded, backup={"keep": 3})
    the_spec = fx.spec(loaded, backup={"keep": 3})
    fx.run(connect, the_spec)
    state_a = fx.rows(ch, "positions")
    change_source(ch, 1)
    second = fx.run(connect, the_spec)
    state_b = fx.rows(ch, "positions")
    assert state_a != state_b

    code, listed = cli(capsys, "backups", "-f", str(manifest), "--json")
    assert code == 0 and second.run_id in [b["runId"] for b in listed]

    code, out = cli(capsys, "restore", "-f", str(manifest), "--run", second.run_id, "--json")
    assert code == 0, out
    assert fx.rows(ch, "positions") == state_a

    code, undone = cli(capsys, "restore", "-f", str(manifest), "--run", out["undo"], "--json")
    assert code == 0, undone
    assert fx.rows(ch, "positions") == state_b


def test_restore_of_an_exchange_backup(
    ch: Client, connect: Connect, loaded: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    the_spec = fx.spec(loaded, strategy="Exchange", source={"query": fx.FULL_SOURCE})
    manifest = write_manifest(tmp_path, engine.url, loaded, strategy="Exchange", source={"query": fx.FULL_SOURCE})
    fx.run(connect, the_spec)
    state_a = fx.rows(ch, "positions")
    ch.command("INSERT INTO src SELECT number + 10000000, NULL, 1, now() FROM numbers(7)")
    second = fx.run(connect, the_spec)

    code, out = cli(capsys, "restore", "-f", str(manifest), "--run", second.run_id, "--json")
    assert code == 0, out
    assert fx.rows(ch, "positions") == state_a
    assert out["rowsBefore"] - out["rowsAfter"] == 7


def test_restore_of_a_delete_insert_backup_takes_the_predicate_from_the_manifest(
    ch: Client, connect: Connect, loaded: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rows backup's COMMENT records the predicate it was taken with, and whoever may ALTER the backup
    table may rewrite it (issue 24, finding 9): restore runs the manifest's, and refuses a backup
    whose record differs."""
    overrides: dict[str, Any] = {"strategy": "DeleteInsert", "backup": {"keep": 3}}
    the_spec = fx.spec(loaded, **overrides)
    manifest = write_manifest(tmp_path, engine.url, loaded, **overrides)
    # Rows outside the slice (resolved a month ago), which no run of this manifest deletes.
    ch.command("INSERT INTO positions SELECT number + 50000000, now() - INTERVAL 30 DAY, 1, now() FROM numbers(10)")
    fx.run(connect, the_spec)
    state_a = fx.rows(ch, "positions")
    change_source(ch, 1)
    second = fx.run(connect, the_spec)
    assert second.outcome == Outcome.SUCCEEDED, second.error
    state_b = fx.rows(ch, "positions")
    assert state_a != state_b and len([r for r in state_b if r[0] >= 50000000]) == 10
    backup = next(b for b in backups.list_backups(ch, loaded, "positions") if b.run_id == second.run_id)
    comment = ch.query(
        "SELECT comment FROM system.tables WHERE database = {d:String} AND name = {n:String}",
        parameters={"d": loaded, "n": backup.table},
    ).result_rows[0][0]

    def tamper(**changes: Any) -> None:
        meta = {**json.loads(comment), **changes}
        ch.command(f"ALTER TABLE {backup.table} MODIFY COMMENT {sql.string_literal(json.dumps(meta))}")

    # "1" would delete every row of the table, and put back only the slice the backup holds.
    tamper(predicate="1")
    code, out = cli(capsys, "restore", "-f", str(manifest), "--run", second.run_id)
    assert code == ExitCode.INVALID, out
    assert "records the slice predicate '1'" in out and fx.PREDICATE in out
    # A window moved back would delete more than the backup holds.
    tamper(params={**json.loads(comment)["params"], "window_start": 0})
    code, out = cli(capsys, "restore", "-f", str(manifest), "--run", second.run_id)
    assert code == ExitCode.INVALID and "not 24h apart as spec.window says" in out, out
    assert fx.rows(ch, "positions") == state_b  # untouched, rows outside the slice included

    tamper()  # as the run wrote it
    code, out = cli(capsys, "restore", "-f", str(manifest), "--run", second.run_id, "--json")
    assert code == 0, out
    assert fx.rows(ch, "positions") == state_a


@pytest.mark.parametrize("slice_only", [False, True])
def test_dedupe_leaves_no_duplicates_and_loses_no_key(
    ch: Client,
    connect: Connect,
    loaded: str,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    slice_only: bool,
) -> None:
    fx.run(connect, fx.spec(loaded))
    keys_before = set(ch.query("SELECT DISTINCT id FROM positions").result_rows)
    # The seed's accident: the same rows inserted twice, in the slice and outside it.
    ch.command("INSERT INTO positions SELECT * FROM positions WHERE id % 3 = 0", settings={"insert_deduplicate": 0})
    dups = ch.query("SELECT count() - uniqExact(id) FROM positions").result_rows[0][0]
    assert dups > 0
    manifest = write_manifest(tmp_path, engine.url, loaded)
    table = "SELECT toString(uuid), engine_full FROM system.tables WHERE database = {db:String} AND name = 'positions'"
    before = ch.query(table, parameters={"db": loaded}).result_rows

    args = ["dedupe", "-f", str(manifest), "--json"] + (["--slice-only"] if slice_only else [])
    code, out = cli(capsys, *args)

    assert code == 0, out
    # The target stays the same table with its engine (a replicated one stays replicated): no exchange.
    assert ch.query(table, parameters={"db": loaded}).result_rows == before
    assert set(ch.query("SELECT DISTINCT id FROM positions").result_rows) == keys_before
    in_slice = f"WHERE {fx.PREDICATE}" if slice_only else ""
    params = {"window_start": int(time.time()) - 86400}
    remaining = ch.query(f"SELECT count() - uniqExact(id) FROM positions {in_slice}", parameters=params).result_rows
    assert remaining[0][0] == 0
    assert out["rowsBefore"] - out["rowsAfter"] > 0
    assert backups.list_backups(ch, loaded, "positions")  # the duplicated table is kept, in case


def test_a_failing_mutation_is_reported_then_killed(
    ch: Client, connect: Connect, loaded: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx.run(connect, fx.spec(loaded))
    ch.command(
        "ALTER TABLE positions UPDATE value = throwIf(1, 'bad mutation') WHERE 1", settings={"mutations_sync": 0}
    )
    manifest = write_manifest(tmp_path, engine.url, loaded)
    time.sleep(2.1)

    code, pending = cli(capsys, "mutations", "-f", str(manifest), "--json")
    assert code == 0
    assert len(pending) == 1 and "bad mutation" in pending[0]["latest_fail_reason"]
    code, text = cli(capsys, "mutations", "-f", str(manifest), "--kill-older-than", "1s")
    assert code == 0
    assert "killed mutation_" in text and "not rolled back" in text
    assert (
        ch.query(f"SELECT count() FROM system.mutations WHERE database = '{loaded}' AND NOT is_done").result_rows[0][0]
        == 0
    )


def test_the_refresh_can_kill_stuck_mutations_in_its_preflight(ch: Client, connect: Connect, loaded: str) -> None:
    fx.run(connect, fx.spec(loaded))
    ch.command("ALTER TABLE positions UPDATE value = throwIf(1, 'stuck') WHERE 1", settings={"mutations_sync": 0})
    time.sleep(2.1)
    record = fx.run(connect, fx.spec(loaded, mutations={"maxPending": "1m", "killStuckAfter": "1s"}))
    assert record.outcome == Outcome.SUCCEEDED, record.error


def test_plan_changes_nothing_and_predicts_the_run(
    ch: Client, connect: Connect, loaded: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx.run(connect, fx.spec(loaded))
    change_source(ch, 1)
    manifest = write_manifest(tmp_path, engine.url, loaded)
    tables = set(ch.query(f"SELECT name FROM system.tables WHERE database = '{loaded}'").result_rows)
    before = fx.checksum(ch, "positions")

    code, planned = cli(capsys, "plan", "-f", str(manifest), "--json")

    assert code == 0, planned
    assert fx.checksum(ch, "positions") == before
    assert set(ch.query(f"SELECT name FROM system.tables WHERE database = '{loaded}'").result_rows) == tables
    assert planned["wouldRun"] and planned["problems"] == []
    assert any(s.startswith("ALTER TABLE") and "REPLACE PARTITION" in s for s in planned["statements"])
    record = fx.run(connect, fx.spec(loaded))
    assert [c["partition"] for c in planned["changes"]] == record.partitions  # the same list, in swap order
    assert planned["new_slice_rows"] == record.slice_rows_after

    code, text = cli(
        capsys, "plan", "-f", str(write_manifest(tmp_path, engine.url, loaded, thresholds={"minSliceRows": 10**9}))
    )
    assert code == 0 and "under minSliceRows" in text


@pytest.mark.parametrize(
    "command",
    [
        ["plan"],
        ["backups"],
        ["restore", "--run", "x"],
        ["dedupe"],
        ["mutations"],
        ["mutations", "--kill-older-than", "1m"],
    ],
)
def test_each_command_refuses_while_a_refresh_holds_the_lock(
    ch: Client, loaded: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    lock = f"{LOCK_PREFIX}positions"
    ch.command(
        f"CREATE TABLE {lock} (owner String, heartbeat DateTime64(3)) ENGINE = MergeTree ORDER BY heartbeat "
        "COMMENT 'refresh-1@node:7'"
    )
    ch.command(f"INSERT INTO {lock} SELECT 'refresh-1@node:7', now64(3)")
    manifest = write_manifest(tmp_path, engine.url, loaded)
    before = fx.checksum(ch, "positions")

    code, text = cli(capsys, command[0], "-f", str(manifest), *command[1:])

    assert code == ExitCode.LOCKED
    assert "refresh-1@node:7" in text
    assert fx.checksum(ch, "positions") == before
