"""The refreshable view on the server: checked, created or changed, stopped or started, dropped, read.

Everything is refused before a statement changes anything: a database that cannot hold a refreshable
view (not ``Atomic`` or ``Replicated``), a target that is not a table, a source query that is not
one read-only SELECT, and an object of the view's name that this TableRefresh does not own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.contract import Outcome, Reason
from tablerefresh.dataplane.infra import sql, sql_guard
from tablerefresh.dataplane.infra.errors import InvalidInput, UnknownDatabase, UnknownTable
from tablerefresh.dataplane.run import runs
from tablerefresh.dataplane.view import definition as ddl
from tablerefresh.dataplane.view.definition import OwnedView, ViewDefinition, ViewNotOwned
from tablerefresh.dataplane.view.refreshes import COLUMNS, FinishedRefresh, ViewState, view_state

STRATEGY = "RefreshableView"
SOURCE = "spec.source.query"
# Databases whose tables have UUIDs, which a refreshable view's atomic swap needs.
VIEW_DATABASES = frozenset({"Atomic", "Replicated"})
# Engines that hold no rows of their own: a view cannot refresh into them.
_NOT_TABLES = frozenset({"View", "MaterializedView", "LiveView", "WindowView", "Dictionary", "Merge", "Distributed"})


def check(client: Client, view: ViewDefinition, settings: Mapping[str, Any] | None = None) -> OwnedView | None:
    """Refuse what the view cannot be made of; the view of its name as its comment says (None: none)."""
    engines = client.query(
        "SELECT engine FROM system.databases WHERE name = {db:String}", parameters={"db": view.database}
    ).result_rows
    if not engines:
        raise UnknownDatabase(f"unknown database {view.database}")
    if engines[0][0] not in VIEW_DATABASES:
        raise InvalidInput(
            f"database {view.database} is {engines[0][0]}: a refreshable view needs an Atomic or Replicated database"
        )
    target = _engine_and_comment(client, view.database, view.target)
    if target is None:
        raise UnknownTable(f"unknown table {view.database}.{view.target}")
    if target[0] in _NOT_TABLES:
        raise InvalidInput(f"{view.database}.{view.target} is a {target[0]}, not a table a view can refresh into")
    sql_guard.check_select(client, view.query, SOURCE, {}, settings)
    return existing(client, view.database, view.view)


def _engine_and_comment(client: Client, database: str, name: str) -> tuple[str, str] | None:
    rows = client.query(
        "SELECT engine, comment FROM system.tables WHERE database = {db:String} AND name = {name:String}",
        parameters={"db": database, "name": name},
    ).result_rows
    return None if not rows else (rows[0][0], rows[0][1])


def existing(client: Client, database: str, view: str) -> OwnedView | None:
    """The owned view of that name, None when there is none; ViewNotOwned when something else has it."""
    found = _engine_and_comment(client, database, view)
    if found is None:
        return None
    owned = ddl.read_comment(found[1]) if found[0] == "MaterializedView" else None
    if owned is None:
        raise ViewNotOwned(f"{database}.{view} exists and was not created by tablerefresh: it is left as it is")
    return owned


def statements(view: ViewDefinition, owned: OwnedView | None, *, suspend: bool) -> list[sql.Statement]:
    """What :func:`apply` runs: the view's changes, then STOP VIEW while suspended (START when not)."""
    verb = "STOP" if suspend else "START"
    return [*ddl.changes(view, owned), ddl.system(verb, view.database, view.view)]


def apply(client: Client, view: ViewDefinition, *, suspend: bool, settings: Mapping[str, Any] | None = None) -> None:
    """Make the server's view what ``view`` says, checked first (:func:`check`)."""
    for statement in statements(view, check(client, view, settings), suspend=suspend):
        statement.execute(client)


def drop(client: Client, database: str, view: str, owner: str) -> bool:
    """Drop the view when it is ``owner``'s; False when there was none."""
    owned = existing(client, database, view)
    if owned is None:
        return False
    if owned.owner != owner:
        raise ViewNotOwned(f"view {database}.{view} belongs to {owned.owner}, not {owner}")
    ddl.drop(database, view).execute(client)
    return True


def refresh_now(client: Client, database: str, view: str) -> None:
    ddl.system("REFRESH", database, view).execute(client)


def state(client: Client, database: str, view: str) -> ViewState | None:
    """The view's ``system.view_refreshes`` row, read; None when the server has no such view."""
    answer = client.query(
        f"SELECT {sql.column_list(list(COLUMNS))} FROM system.view_refreshes "
        "WHERE database = {db:String} AND view = {view:String}",
        parameters={"db": database, "view": view},
    )
    rows = list(answer.named_results())
    return view_state(rows[0]) if rows else None


def record(client: Client, database: str, target: str, finished: FinishedRefresh) -> bool:
    """Append ``finished`` to the runs table unless it is there already; whether it was appended."""
    row = runs.RunRecord(
        run_id=finished.run_id,
        target=target,
        strategy=STRATEGY,
        started_at=finished.started_at or finished.finished_at,
        finished_at=finished.finished_at,
        outcome=finished.outcome,
        reason="" if finished.outcome == Outcome.SUCCEEDED else Reason.FAILED,
        error=finished.message,
        exit_code=0 if finished.outcome == Outcome.SUCCEEDED else 1,
        written_rows=finished.written_rows,
    )
    runs.ensure_runs_table(client, database)
    if runs.recorded(client, database, row):
        return False
    runs.write_run(client, database, row)
    return True
