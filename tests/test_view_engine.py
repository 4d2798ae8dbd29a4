"""Strategy RefreshableView on the served engine: the view created, refreshed by the server on its
schedule, changed, stopped, run now, dropped; its failures and refusals; its runs recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.errors import InvalidInput, UnknownTable
from tablerefresh.dataplane.view import apply
from tablerefresh.dataplane.view.definition import ViewDefinition, ViewNotOwned
from tablerefresh.dataplane.view.refreshes import ViewState
from tablerefresh.view_schedule import refresh_every
from tests.engines import SERVED, Engine

pytestmark = pytest.mark.engines(SERVED)

QUERY = "SELECT number AS id, number * 2 AS doubled FROM numbers(5)"
FAILING = "SELECT number AS id, throwIf(number = 3, 'source broke') * 0 + number AS doubled FROM numbers(5)"


@pytest.fixture
def atomic(engine: Engine) -> Iterator[Client]:
    """A database of its own for the test, Atomic, with the target table."""
    client = engine.client()
    name = f"v_{time.monotonic_ns()}"
    client.command(f"CREATE DATABASE {name} ENGINE = Atomic")
    client.database = name
    client.command("CREATE TABLE target (id UInt64, doubled UInt64) ENGINE = MergeTree ORDER BY id")
    yield client
    client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def definition(client: Client, schedule: str = "@every 1s", query: str = QUERY, owner: str = "ns/t") -> ViewDefinition:
    assert client.database is not None
    return ViewDefinition(client.database, "target", query, refresh_every(schedule), owner)


def wait_for(
    what: Callable[[], ViewState | None], until: Callable[[ViewState], bool], timeout: float = 20
) -> ViewState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found is not None and until(found):
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what()}")


def rows(client: Client) -> list[tuple[int, int]]:
    return [tuple(r) for r in client.query("SELECT id, doubled FROM target ORDER BY id").result_rows]


def test_the_view_refreshes_the_target_on_its_schedule(atomic: Client) -> None:
    view = definition(atomic)
    apply.apply(atomic, view, suspend=False)
    state = wait_for(lambda: apply.state(atomic, view.database, view.view), lambda s: s.last is not None)
    assert state.last is not None and state.last.outcome == "Succeeded" and state.next_run_time is not None
    assert rows(atomic) == [(n, 2 * n) for n in range(5)]
    assert apply.record(atomic, view.database, "target", state.last)
    assert not apply.record(atomic, view.database, "target", state.last)  # once


def test_a_failing_source_keeps_the_previous_data_and_says_why(atomic: Client) -> None:
    view = definition(atomic)
    apply.apply(atomic, view, suspend=False)
    wait_for(lambda: apply.state(atomic, view.database, view.view), lambda s: s.last is not None)
    apply.apply(atomic, definition(atomic, query=FAILING), suspend=False)
    state = wait_for(
        lambda: apply.state(atomic, view.database, view.view),
        lambda s: s.last is not None and s.last.outcome == "Failed",
    )
    assert state.last is not None and "source broke" in state.last.message
    assert rows(atomic) == [(n, 2 * n) for n in range(5)]


def test_a_schedule_change_alters_the_view_suspend_stops_it_and_run_now_runs_it(atomic: Client) -> None:
    view = definition(atomic, "@hourly")
    apply.apply(atomic, view, suspend=False)
    slower = definition(atomic, "@daily")
    owned = apply.existing(atomic, view.database, view.view)
    change = apply.statements(slower, owned, suspend=False)[0].text
    assert change.endswith("MODIFY REFRESH EVERY 1 DAY")  # altered, not replaced
    apply.apply(atomic, slower, suspend=True)
    state = wait_for(lambda: apply.state(atomic, view.database, view.view), lambda s: s.stopped)
    create = atomic.query(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {v:String}",
        parameters={"db": view.database, "v": view.view},
    ).result_rows[0][0]
    assert "EVERY 1 DAY" in create
    atomic.command("TRUNCATE TABLE target")
    apply.apply(atomic, slower, suspend=False)
    before = state.last_success_time
    time.sleep(1.1)  # last_success_time has whole seconds
    apply.refresh_now(atomic, view.database, view.view)
    wait_for(
        lambda: apply.state(atomic, view.database, view.view),
        lambda s: s.last_success_time is not None and s.last_success_time != before,
    )
    assert rows(atomic) == [(n, 2 * n) for n in range(5)]


def test_drop_removes_only_the_owners_view(atomic: Client) -> None:
    view = definition(atomic)
    apply.apply(atomic, view, suspend=False)
    with pytest.raises(ViewNotOwned):
        apply.drop(atomic, view.database, view.view, "other/t")
    assert apply.drop(atomic, view.database, view.view, "ns/t")
    assert apply.state(atomic, view.database, view.view) is None
    assert not apply.drop(atomic, view.database, view.view, "ns/t")


def test_a_view_it_does_not_own_is_refused_never_replaced(atomic: Client) -> None:
    view = definition(atomic)
    atomic.command(f"CREATE VIEW {view.view} AS SELECT 1 AS x")
    with pytest.raises(ViewNotOwned, match="not created by tablerefresh"):
        apply.apply(atomic, view, suspend=False)
    with pytest.raises(ViewNotOwned):
        apply.apply(atomic, definition(atomic, owner="other/t"), suspend=False)


def test_a_target_that_is_not_a_table_and_a_database_that_is_not_atomic_are_refused(atomic: Client) -> None:
    atomic.command("CREATE VIEW plain AS SELECT 1 AS id, 2 AS doubled")
    assert atomic.database is not None
    not_table = ViewDefinition(atomic.database, "plain", QUERY, refresh_every("@hourly"), "ns/t")
    with pytest.raises(InvalidInput, match="is a View, not a table"):
        apply.apply(atomic, not_table, suspend=False)
    with pytest.raises(UnknownTable):
        apply.apply(
            atomic, ViewDefinition(atomic.database, "absent", QUERY, refresh_every("@hourly"), "ns/t"), suspend=False
        )
    memory = f"{atomic.database}_mem"
    atomic.command(f"CREATE DATABASE {memory} ENGINE = Memory")
    try:
        atomic.command(f"CREATE TABLE {memory}.target (id UInt64, doubled UInt64) ENGINE = MergeTree ORDER BY id")
        with pytest.raises(InvalidInput, match="needs an Atomic or Replicated database"):
            apply.apply(
                atomic, ViewDefinition(memory, "target", QUERY, refresh_every("@hourly"), "ns/t"), suspend=False
            )
    finally:
        atomic.command(f"DROP DATABASE {memory} SYNC")
    assert apply.state(atomic, atomic.database, "_tablerefresh_view_t") is None  # nothing created


def test_a_source_that_is_not_one_select_is_refused_before_anything_is_created(atomic: Client) -> None:
    view = definition(atomic, query="SELECT 1 AS id, 1 AS doubled; DROP TABLE target")
    with pytest.raises(InvalidInput, match=r"spec\.source\.query"):
        apply.apply(atomic, view, suspend=False)
    assert apply.state(atomic, view.database, view.view) is None
