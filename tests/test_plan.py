"""``tablerefresh plan`` prints the statements a run then executes (``run/decide.py``, called by both):
a plan, then a real run with the same run id, run time and clock, and the statements the run sent
to the engine, recorded by a wrapper around its clients, equal the plan's. For each strategy, with
a backup, and for an incremental spec's full run and its incremental one (whose carried-over rows
are linked with ``ATTACH``, not copied).

Left out of the comparison: the statements on the lock and on the runs table, which a plan does not
list (``decide.py`` says what it lists).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.lock import LOCK_PREFIX, TAKEOVER_PREFIX
from tablerefresh.dataplane.run.incremental import FULL, INCREMENTAL
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.plan import Plan, plan
from tablerefresh.dataplane.run.runs import RUNS_TABLE, Outcome, RunRecord
from tablerefresh.spec import TableRefreshSpec
from tests import refresh_fixtures as fx

Connect = Callable[[], Client]
NOW = datetime.now(UTC).replace(microsecond=0)
# Not the run's own: the lock, its takeover markers, the runs table.
NOT_PLANNED = (LOCK_PREFIX, TAKEOVER_PREFIX, RUNS_TABLE)


class Recording:
    """A ``connect`` whose clients record each statement they send (``command``), as sent."""

    def __init__(self, connect: Connect, database: str) -> None:
        self._connect, self._database = connect, database
        self.statements: list[str] = []

    def __call__(self) -> Client:
        client = self._connect()
        client.database = self._database
        send = client.command

        def command(cmd: str, *args: Any, **kwargs: Any) -> Any:
            self.statements.append(cmd)
            return send(cmd, *args, **kwargs)

        client.command = command  # type: ignore[method-assign]
        return client

    def executed(self) -> list[str]:
        return [s for s in self.statements if not any(name in s for name in NOT_PLANNED)]


@pytest.fixture
def quiet_source(ch: Client, loaded: str) -> Iterator[str]:
    """Nothing in the source has changed for two hours, so an incremental run finds only what a
    test changes."""
    stamp = int((NOW - timedelta(hours=2)).timestamp())
    ch.command(f"ALTER TABLE src UPDATE updated_at = toDateTime({stamp}) WHERE 1", settings={"mutations_sync": 2})
    yield loaded


def plan_then_run(
    connect: Connect, spec: TableRefreshSpec, run_id: str, when: datetime
) -> tuple[Plan, RunRecord, list[str]]:
    """The plan, then the run it plans: the same run id, run time and clock (which names backups)."""
    options = RunOptions(run_id=run_id, owner=f"{run_id}@test:{os.getpid()}", run_time=when, clock=lambda: when)
    recording = Recording(connect, spec.clickhouse.database)
    client = recording()
    try:
        assert spec.source.query is not None
        planned = plan(client, spec, spec.source.query, options)
    finally:
        client.close()
    assert recording.statements == [], "a plan changes nothing"
    record = fx.run(recording, spec, run_id=run_id, run_time=when, clock=lambda: when)
    assert record.outcome == Outcome.SUCCEEDED, record.error
    return planned, record, recording.executed()


@pytest.mark.parametrize("strategy", ["ReplacePartitions", "Exchange", "DeleteInsert"])
def test_plan_lists_the_statements_a_full_run_executes(connect: Connect, loaded: str, strategy: str) -> None:
    spec = fx.spec(loaded, strategy=strategy, source={"query": fx.SOURCE_FOR[strategy]}, backup={"keep": 1})

    planned, record, executed = plan_then_run(connect, spec, "full-run", NOW)

    assert executed == planned.statements
    if strategy == "ReplacePartitions":
        assert [c.partition for c in planned.changes] == record.partitions
    assert any(s.startswith(("ALTER TABLE", "EXCHANGE TABLES")) for s in executed)
    assert any("MODIFY COMMENT" in s for s in executed)  # the backup


def test_plan_lists_the_statements_of_an_incremental_specs_full_and_incremental_runs(
    ch: Client, connect: Connect, quiet_source: str
) -> None:
    spec = fx.incremental_spec(quiet_source)
    planned, record, executed = plan_then_run(connect, spec, "first-run", NOW)
    assert record.kind == planned.kind == FULL
    assert executed == planned.statements

    stamp = int((NOW + timedelta(minutes=5)).timestamp())
    ch.command(
        f"ALTER TABLE src UPDATE value = value + 1, updated_at = toDateTime({stamp}) WHERE id % 10 = 0",
        settings={"mutations_sync": 2},
    )
    planned, record, executed = plan_then_run(connect, spec, "second-run", NOW + timedelta(minutes=10))

    assert record.kind == planned.kind == INCREMENTAL
    assert planned.changed_keys == record.changed_keys and record.partitions
    assert executed == planned.statements
    # The unchanged rows are linked into staging from the table the run linked and masked them in.
    attach = [s for s in executed if "ATTACH PARTITION" in s and "_tablerefresh_staging_" in s.split(" ATTACH")[0]]
    assert attach and not any(
        "INSERT INTO" in s and "FROM `" + quiet_source + "`.`positions` WHERE" in s for s in executed
    )
