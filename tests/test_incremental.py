"""Incremental runs on the embedded engine, with the engine tests' generic workload.

A row of ``src`` changes when its ``updated_at`` does; the incremental spec rebuilds the ids changed
since the last successful run (less a second of lateness). A second table, refreshed by full runs of
the same data at the same times, is what the incremental table must equal after every run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.operations.spot_check import verify_sample
from tablerefresh.dataplane.run.incremental import FULL, INCREMENTAL
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.plan import Plan, plan
from tablerefresh.dataplane.run.runs import RUNS_TABLE, Outcome, RunRecord
from tablerefresh.dataplane.run.sample import SampleReport
from tablerefresh.dataplane.run.scope import Scope
from tablerefresh.spec import TableRefreshSpec
from tests import refresh_fixtures as fx
from tests.commands import cli, write_manifest

Connect = Callable[[], Client]
FULL_TABLE = "positions_full"
At = Callable[[float], datetime]


@pytest.fixture
def at(ch: Client, loaded: str) -> At:
    """Run times, in minutes from now (the source's resolutions count from now too). Nothing in the
    source has changed for two hours."""
    start = datetime.now(UTC).replace(microsecond=0)
    stamp = int((start - timedelta(hours=2)).timestamp())
    ch.command(f"ALTER TABLE src UPDATE updated_at = toDateTime({stamp}) WHERE 1", settings={"mutations_sync": 2})
    return lambda minutes: start + timedelta(minutes=minutes)


def change(ch: Client, when: datetime, ids: str, resolving: str = "0") -> int:
    """New values for the ``ids`` rows, resolutions for the open ``resolving`` ones, all stamped ``when``."""
    stamp, sync = int(when.timestamp()), {"mutations_sync": 2}
    ch.command(f"ALTER TABLE src UPDATE value = value + 1, updated_at = toDateTime({stamp}) WHERE {ids}", settings=sync)
    ch.command(
        f"ALTER TABLE src UPDATE resolved_at = toDateTime({stamp}), updated_at = toDateTime({stamp}) "
        f"WHERE resolved_at IS NULL AND ({resolving})",
        settings=sync,
    )
    return int(ch.query(f"SELECT count() FROM src WHERE updated_at = toDateTime({stamp})").result_rows[0][0])


def both(connect: Connect, spec: TableRefreshSpec, when: datetime) -> RunRecord:
    """Run the incremental spec, and a full run of the same data on the second table."""
    record = fx.run(connect, spec, run_time=when)
    full = spec.model_copy(update={"incremental": None, "source": spec.source.model_copy(update={"query": fx.SOURCE})})
    full = full.model_copy(update={"target": full.target.model_copy(update={"table": FULL_TABLE})})
    rebuilt = fx.run(connect, full, run_time=when)
    assert rebuilt.outcome == Outcome.SUCCEEDED, rebuilt.error
    return record


@pytest.fixture
def twins(ch: Client, loaded: str) -> str:
    ch.command(f"CREATE TABLE {FULL_TABLE} AS positions")
    return loaded


def test_an_incremental_run_rebuilds_the_changed_keys_into_a_full_runs_rows(
    ch: Client, connect: Connect, twins: str, at: At
) -> None:
    spec = fx.incremental_spec(twins)
    first = both(connect, spec, at(0))
    assert first.kind == FULL and first.changed_keys is None and first.outcome == Outcome.SUCCEEDED
    changed = change(ch, at(5), "id % 10 = 0", "id % 13 = 0")
    moving = ch.query(
        "SELECT count() FROM src WHERE resolved_at = updated_at AND updated_at = {t:DateTime}",
        parameters={"t": int(at(5).timestamp())},
    ).result_rows[0][0]
    assert changed > 1000 and moving > 100

    second = both(connect, spec, at(10))

    assert second.outcome == Outcome.SUCCEEDED, second.error
    assert second.kind == INCREMENTAL and second.since == at(0) - timedelta(seconds=1)
    assert second.changed_keys == changed
    assert fx.rows(ch, "positions") == fx.rows(ch, FULL_TABLE)
    # The resolved rows left partition 0 for their month in the same swap, which touched both.
    assert {"0", f"{at(5):%Y%m}"} <= set(second.partitions)
    assert second.slice_rows_after == fx.checksum(ch, FULL_TABLE)[0] - outside_slice(ch, second)
    recorded = ch.query(
        f"SELECT kind, changed_keys, since, definition FROM {RUNS_TABLE} WHERE run_id = {{r:String}}",
        parameters={"r": second.run_id},
    ).result_rows
    assert recorded == [(INCREMENTAL, second.changed_keys, second.since.replace(tzinfo=None), first.definition)]
    assert second.summary()["kind"] == INCREMENTAL and second.summary()["changedKeys"] == second.changed_keys


def outside_slice(ch: Client, record: RunRecord) -> int:
    assert record.window_start is not None
    return int(
        ch.query(
            "SELECT count() FROM positions WHERE NOT ifNull(resolved_at IS NULL OR resolved_at >= {w:DateTime}, 0)",
            parameters={"w": int(record.window_start.timestamp())},
        ).result_rows[0][0]
    )


def test_with_no_changed_key_nothing_is_swapped_and_the_watermark_moves(
    ch: Client, connect: Connect, twins: str, at: At
) -> None:
    spec = fx.incremental_spec(twins)
    both(connect, spec, at(0))
    change(ch, at(5), "id % 10 = 0")
    both(connect, spec, at(10))
    before = fx.checksum(ch, "positions")

    quiet = fx.run(connect, spec, run_time=at(20))

    assert quiet.outcome == Outcome.SUCCEEDED, quiet.error
    assert quiet.kind == INCREMENTAL and quiet.changed_keys == 0 and quiet.partitions == []
    assert fx.checksum(ch, "positions") == before
    assert fx.run(connect, spec, run_time=at(30)).since == at(20) - timedelta(seconds=1)


def test_a_refused_run_leaves_the_watermark_so_the_next_run_catches_its_changes(
    ch: Client, connect: Connect, twins: str, at: At
) -> None:
    spec = fx.incremental_spec(twins)
    both(connect, spec, at(0))
    change(ch, at(5), "id % 10 = 0", "id % 13 = 0")
    refused = fx.run(connect, fx.incremental_spec(twins, thresholds={"minSliceRows": 10**9}), run_time=at(10))
    assert refused.outcome == Outcome.FAILED and refused.exit_code == ExitCode.VERIFY_FAILED
    assert refused.kind == INCREMENTAL

    caught_up = both(connect, spec, at(20))

    assert caught_up.kind == INCREMENTAL and caught_up.since == at(0) - timedelta(seconds=1)
    assert fx.rows(ch, "positions") == fx.rows(ch, FULL_TABLE)


def test_a_source_that_ignores_the_changed_keys_is_slower_never_wrong(
    ch: Client, connect: Connect, twins: str, at: At
) -> None:
    spec = fx.incremental_spec(twins).model_copy(update={"source": fx.spec(twins).source})
    both(connect, spec, at(0))
    change(ch, at(5), "id % 7 = 0", "id % 11 = 0")

    record = both(connect, spec, at(10))

    assert record.kind == INCREMENTAL and record.outcome == Outcome.SUCCEEDED, record.error
    assert fx.rows(ch, "positions") == fx.rows(ch, FULL_TABLE)


def test_a_table_the_engine_cannot_mask_rows_in_has_its_unchanged_rows_copied(
    ch: Client, connect: Connect, twins: str, at: At, caplog: pytest.LogCaptureFixture
) -> None:
    ch.command("ALTER TABLE positions ADD PROJECTION by_value (SELECT * ORDER BY value)")
    spec = fx.incremental_spec(twins)
    both(connect, spec, at(0))
    change(ch, at(5), "id % 10 = 0", "id % 13 = 0")

    record = both(connect, spec, at(10))

    assert record.kind == INCREMENTAL and record.outcome == Outcome.SUCCEEDED, record.error
    assert "copying the unchanged rows instead" in caplog.text
    assert fx.rows(ch, "positions") == fx.rows(ch, FULL_TABLE)


def test_a_key_hash_collision_in_the_mask_is_caught_and_the_replaced_rows_are_marked_by_their_keys(
    ch: Client, connect: Connect, twins: str, at: At, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run marks the replaced rows by a hash of their key; here every key hashes alike.
    monkeypatch.setattr(Scope, "key_hash", lambda self: "toUInt64(0)")
    spec = fx.incremental_spec(twins)
    both(connect, spec, at(0))
    change(ch, at(5), "id % 10 = 0", "id % 13 = 0")

    record = both(connect, spec, at(10))

    assert record.kind == INCREMENTAL and record.outcome == Outcome.SUCCEEDED, record.error
    assert "collides with a changed key's" in caplog.text
    assert fx.rows(ch, "positions") == fx.rows(ch, FULL_TABLE)


def test_a_change_later_than_lateness_is_missed_then_seen_by_the_sample_and_repaired_by_the_full_run(
    ch: Client, connect: Connect, twins: str, at: At
) -> None:
    spec = fx.incremental_spec(twins, {"verifySample": 500})
    both(connect, spec, at(0))
    late = change(ch, at(-60), "id % 10 = 0")  # happened an hour before the last run, written only now
    missed = both(connect, spec, at(10))
    assert late > 1000 and missed.kind == INCREMENTAL and missed.changed_keys == 0
    assert fx.rows(ch, "positions") != fx.rows(ch, FULL_TABLE)

    report = verify(connect, spec, at(15), 500)
    assert report.keys == 500 and report.changed > 0 and report.missing == report.extra == 0

    repaired = fx.run(connect, spec, run_time=at(20), force_full=True)

    assert repaired.kind == FULL and repaired.kind_reason == "--full"
    assert repaired.sample_keys == 500 and repaired.sample_differences is not None
    assert repaired.sample_differences > 0
    fx.run(
        connect,
        spec.model_copy(
            update={
                "incremental": None,
                "source": fx.spec(twins).source,
                "target": spec.target.model_copy(update={"table": FULL_TABLE}),
            }
        ),
        run_time=at(20),
    )
    assert fx.rows(ch, "positions") == fx.rows(ch, FULL_TABLE)
    assert verify(connect, spec, at(25), 500).differences == 0


def verify(connect: Connect, spec: TableRefreshSpec, when: datetime, size: int) -> SampleReport:
    """``tablerefresh verify`` at ``when``, as the command runs it."""
    assert spec.source.query is not None
    return verify_sample(in_database(connect, spec), spec, spec.source.query, options_at(when), size)


def plan_at(connect: Connect, spec: TableRefreshSpec, when: datetime) -> Plan:
    """``tablerefresh plan`` at ``when``, as the command runs it."""
    assert spec.source.query is not None
    client = in_database(connect, spec)()
    try:
        return plan(client, spec, spec.source.query, options_at(when))
    finally:
        client.close()


def in_database(connect: Connect, spec: TableRefreshSpec) -> Connect:
    def connected() -> Client:
        client = connect()
        client.database = spec.clickhouse.database
        return client

    return connected


def options_at(when: datetime) -> RunOptions:
    return RunOptions(run_id=f"verify-{when:%H%M%S}", owner="verify@test", run_time=when)


def test_a_new_definition_or_a_restore_makes_the_next_run_full(
    ch: Client, connect: Connect, twins: str, chdb_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], at: At
) -> None:
    spec = fx.incremental_spec(twins, {"verifySample": 100}).model_copy(
        update={"backup": fx.spec(twins).backup.model_copy(update={"keep": 2})}
    )
    assert fx.run(connect, spec, run_time=at(0)).kind == FULL
    assert fx.run(connect, spec, run_time=at(10)).kind == INCREMENTAL
    edited = spec.model_copy(update={"source": spec.source.model_copy(update={"query": fx.INCREMENTAL_SOURCE + " "})})
    assert fx.run(connect, edited, run_time=at(15)).kind == INCREMENTAL  # the same query, reformatted

    widened = spec.model_copy(update={"window": "48h"})
    redefined = fx.run(connect, widened, run_time=at(20))
    assert redefined.kind == FULL and "changed" in redefined.kind_reason
    assert redefined.sample_keys is None  # what it replaces was built by another definition

    manifest = write_manifest(tmp_path, chdb_url, twins, **spec_overrides(spec))
    code, out = cli(capsys, "restore", "-f", str(manifest), "--run", redefined.run_id)
    assert code == 0, out
    after_restore = fx.run(connect, spec, run_time=at(30))
    assert after_restore.kind == FULL and "restored" in after_restore.kind_reason


def spec_overrides(spec: TableRefreshSpec) -> dict[str, Any]:
    body = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {k: body[k] for k in ("source", "incremental", "backup", "window")}


def test_plan_predicts_an_incremental_run_and_changes_nothing(
    ch: Client, connect: Connect, twins: str, chdb_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], at: At
) -> None:
    spec = fx.incremental_spec(twins)
    fx.run(connect, spec, run_time=at(0))
    changed = change(ch, at(5), "id % 10 = 0", "id % 13 = 0")
    tables = ch.query("SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": twins})
    before = fx.checksum(ch, "positions")

    planned = plan_at(connect, spec, at(10))

    assert planned.kind == INCREMENTAL and planned.changed_keys == changed
    assert planned.problems == [] and fx.checksum(ch, "positions") == before
    assert (
        ch.query("SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": twins}).result_rows
        == tables.result_rows
    )
    manifest = write_manifest(tmp_path, chdb_url, twins, **spec_overrides(spec))
    code, text = cli(capsys, "plan", "-f", str(manifest))
    assert code == 0 and "incremental run" in text
    record = fx.run(connect, spec, run_time=at(10))
    assert record.kind == INCREMENTAL
    assert [c.partition for c in planned.changes] == record.partitions
    assert planned.new_slice_rows == record.slice_rows_after


def test_the_runs_table_of_an_earlier_version_gets_the_new_columns(
    ch: Client, connect: Connect, loaded: str, at: At
) -> None:
    ch.command(
        f"CREATE TABLE {RUNS_TABLE} (run_id String, target String, strategy LowCardinality(String), "
        "started_at DateTime64(3, 'UTC'), finished_at DateTime64(3, 'UTC'), duration_seconds Float64, "
        "outcome LowCardinality(String), reason LowCardinality(String), error String, "
        "rows_before UInt64, rows_after UInt64, slice_rows_before UInt64, slice_rows_after UInt64, "
        "duplicates UInt64, partitions Array(String), window_start Nullable(DateTime('UTC'))"
        ") ENGINE = MergeTree ORDER BY (target, started_at)"
    )
    ch.command(
        f"INSERT INTO {RUNS_TABLE} (run_id, target, strategy, outcome) VALUES ('old', '{loaded}.positions', "
        "'ReplacePartitions', 'Succeeded')"
    )
    spec = fx.incremental_spec(loaded)

    first = fx.run(connect, spec, run_time=at(0))
    second = fx.run(connect, spec, run_time=at(10))

    assert first.kind == FULL and "no earlier run" in first.kind_reason
    assert second.kind == INCREMENTAL
    kinds = ch.query(f"SELECT run_id, kind FROM {RUNS_TABLE} ORDER BY started_at").result_rows
    assert kinds == [("old", ""), (first.run_id, FULL), (second.run_id, INCREMENTAL)]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT id, value FROM src WHERE updated_at >= {since:DateTime}", "must yield exactly incremental.key: id"),
        ("SELECT id FROM nowhere WHERE updated_at >= {since:DateTime}", "the changed-keys query does not compile"),
    ],
)
def test_a_bad_changed_keys_query_is_refused_before_anything_is_touched(
    ch: Client, connect: Connect, loaded: str, query: str, message: str
) -> None:
    record = fx.run(connect, fx.incremental_spec(loaded, {"changedKeysQuery": query}))
    assert record.exit_code == ExitCode.INVALID and message in record.error
    assert ch.query(f"EXISTS TABLE {RUNS_TABLE}").result_rows[0][0] == 0


def test_the_commands_refresh_full_and_verify(
    ch: Client, twins: str, chdb_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], at: At
) -> None:
    spec = fx.incremental_spec(twins, {"verifySample": 300})
    manifest = str(write_manifest(tmp_path, chdb_url, twins, **spec_overrides(spec)))
    code, first = cli(capsys, "refresh", "-f", manifest)
    assert code == 0 and first["kind"] == FULL, first
    change(ch, at(-60), "id % 10 = 0")  # later than lateness: the incremental run misses it
    code, missed = cli(capsys, "refresh", "-f", manifest)
    assert code == 0 and missed["kind"] == INCREMENTAL and missed["changedKeys"] == 0, missed

    code, report = cli(capsys, "verify", "-f", manifest, "--json")
    assert code == ExitCode.VERIFY_FAILED and report["keys"] == 300 and report["changed"] > 0, report

    code, repaired = cli(capsys, "refresh", "-f", manifest, "--full")
    assert code == 0 and repaired["kind"] == FULL and repaired["sampleDifferences"] > 0, repaired
    code, text = cli(capsys, "verify", "-f", manifest, "--sample", "200")
    assert code == 0 and "as a full rebuild gives it: 200 sampled key(s)" in text
