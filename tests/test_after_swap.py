"""Failures say what happened to the data: after the swap a failure is its own outcome and exit
code, an Exchange never loses the previous table, and a cleanup error never hides the first error."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import names
from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.infra.failpoints import ENV as FAILPOINT
from tablerefresh.dataplane.run.runs import Outcome, recent_runs
from tests import refresh_fixtures as fx

Connect = Callable[[], Client]


@pytest.fixture
def inject() -> Iterator[Callable[[str], None]]:
    with pytest.MonkeyPatch.context() as patch:
        yield lambda points: patch.setenv(FAILPOINT, points)


def changed_source(ch: Client, database: str) -> None:
    ch.command(f"ALTER TABLE {database}.src UPDATE value = value + 1 WHERE 1", settings={"mutations_sync": 2})


def tables(ch: Client, database: str) -> list[str]:
    return [r[0] for r in ch.query(f"SELECT name FROM system.tables WHERE database = '{database}'").result_rows]


def test_a_failure_after_the_swap_is_not_reported_as_untouched(
    ch: Client, connect: Connect, loaded: str, inject: Callable[[str], None]
) -> None:
    fx.run(connect, fx.spec(loaded))
    changed_source(ch, loaded)
    inject("swapped=error")

    record = fx.run(connect, fx.spec(loaded))

    assert record.outcome == Outcome.FAILED_AFTER_SWAP
    assert record.exit_code == ExitCode.AFTER_SWAP == 7
    assert record.reason == "FailedAfterSwap"
    assert "injected failure at swapped" in record.error
    assert "the swap of partitions" in record.error and "was not changed" not in record.error
    assert fx.rows(ch, f"{loaded}.positions") == fx.source_rows(ch, record)  # the new rows are in
    (row,) = [r for r in recent_runs(ch, loaded, f"{loaded}.positions") if r["run_id"] == record.run_id]
    assert row["outcome"] == "FailedAfterSwap"


def test_exchange_keeps_the_previous_table_when_it_fails_after_the_exchange(
    ch: Client, connect: Connect, loaded: str, inject: Callable[[str], None]
) -> None:
    # Two backups kept: the one the rerun finds, and the one it makes itself.
    the_spec = fx.spec(loaded, strategy="Exchange", source={"query": fx.FULL_SOURCE}, backup={"keep": 2})
    fx.run(connect, the_spec)
    changed_source(ch, loaded)
    previous = fx.checksum(ch, f"{loaded}.positions")
    inject("swapped=error")

    failed = fx.run(connect, the_spec)

    assert failed.outcome == Outcome.FAILED_AFTER_SWAP and failed.exit_code == ExitCode.AFTER_SWAP
    assert "the previous table is" in failed.error
    assert fx.checksum(ch, f"{loaded}.positions") == fx.checksum(ch, f"{loaded}.src")
    kept = [t for t in tables(ch, loaded) if t.startswith(names.STAGING)]
    assert len(kept) == 1 and fx.checksum(ch, f"{loaded}.{kept[0]}") == previous  # not dropped

    inject("")
    rerun = fx.run(connect, the_spec)  # finds it, and keeps it as a backup instead of dropping it

    assert rerun.outcome == Outcome.SUCCEEDED, rerun.error
    backups = [t for t in tables(ch, loaded) if t.startswith(names.backup_prefix("positions"))]
    assert previous in [fx.checksum(ch, f"{loaded}.{b}") for b in backups]
    assert not [t for t in tables(ch, loaded) if t.startswith(names.STAGING)]


def test_a_cleanup_error_never_replaces_the_first_error(
    ch: Client, connect: Connect, loaded: str, inject: Callable[[str], None]
) -> None:
    fx.run(connect, fx.spec(loaded))
    before = fx.checksum(ch, f"{loaded}.positions")
    inject("verified=error,drop-staging=error")

    record = fx.run(connect, fx.spec(loaded))

    assert record.outcome == Outcome.FAILED
    assert "injected failure at verified" in record.error
    assert "drop-staging" not in record.error
    assert fx.checksum(ch, f"{loaded}.positions") == before
    inject("")
    assert fx.run(connect, fx.spec(loaded)).outcome == Outcome.SUCCEEDED  # and the leftover is cleaned
    assert not [t for t in tables(ch, loaded) if t.startswith(names.STAGING)]
