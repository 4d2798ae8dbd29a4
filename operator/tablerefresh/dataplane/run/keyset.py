"""A set of keys (a prefix of the unique key) held in a table beside the target.

An incremental run writes the changed keys into such a table once, so every later step (the source,
the count of replaced rows, the carry-over) sees the same keys, however the data moves meanwhile.
The source query names it as ``{changed_keys:Identifier}``: the table's unqualified name, in the
connection's database (ClickHouse takes no database in an Identifier parameter), which is the
target's. Its name starts as a staging table's does, so a crashed run's keys are dropped by the next
run's cleanup. The sample of ``tablerefresh verify`` is a key set too.

Before anything exists (the input checks, ``tablerefresh plan``) the same name is bound to a CTE
instead (:func:`with_keys`), so the source can be described and planned without creating a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import catalog, sql
from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.infra.errors import InvalidInput

# Query parameters every run of an incremental spec binds, full or incremental.
CHANGED_KEYS_PARAM = "changed_keys"
FULL_RUN_PARAM = "full_run"
SINCE_PARAM = "since"
# ``since`` for "every key that ever changed": DateTime parameters given as epoch seconds, and 0
# does not parse as one.
BEGINNING = 86400


def member(columns: Sequence[str], keys: str) -> str:
    """SQL: the row's key is in ``keys`` (a table or a subquery). A one-column key is no tuple: the
    engine compares a 1-tuple with a one-column set as a mismatch."""
    if len(columns) == 1:
        return f"{sql.ident(columns[0])} IN {keys}"
    return f"({sql.column_list(list(columns))}) IN {keys}"


def distinct_keys(columns: Sequence[str], query: str) -> str:
    """SQL: the distinct keys a query yields."""
    names = sql.column_list(list(columns))
    return f"SELECT DISTINCT {names} FROM ({query})"


def with_keys(name: str, keys_query: str, query: str) -> str:
    """``query`` with ``name`` bound to ``keys_query`` as a CTE, for when no table holds the keys."""
    return f"WITH {sql.ident(name)} AS ({keys_query}) SELECT * FROM ({query})"


def no_keys(target: TableInfo, columns: Sequence[str]) -> str:
    """SQL: an empty set of keys, typed as the target's key columns."""
    return f"SELECT {sql.column_list(list(columns))} FROM {target.qualified} LIMIT 0"


def check_query(client: Client, query: str, params: dict[str, Any], columns: Sequence[str]) -> None:
    """The changed-keys query compiles and yields exactly the key's columns (by name, any order)."""
    found = [c.name for c in catalog.query_columns(client, query, params, what="the changed-keys query")]
    if sorted(found) != sorted(columns):
        raise InvalidInput(
            f"the changed-keys query yields column(s) {', '.join(found)}; "
            f"it must yield exactly incremental.key: {', '.join(columns)}"
        )


def create(client: Client, target: TableInfo, name: str, columns: Sequence[str]) -> str:
    """An empty key table beside the target, typed as the target's columns. Returns its quoted name."""
    create_statement(target, name, columns).execute(client)
    return sql.table(target.database, name)


def create_statement(target: TableInfo, name: str, columns: Sequence[str]) -> sql.Statement:
    types = {c.name: c.type for c in target.columns}
    body = ", ".join(f"{sql.ident(c)} {types[c]}" for c in columns)
    return sql.Statement(
        f"CREATE TABLE {sql.table(target.database, name)} ({body}) ENGINE = MergeTree ORDER BY tuple()"
    )


def fill(client: Client, table: str, columns: Sequence[str], query: str, params: dict[str, Any]) -> int:
    """Write the distinct keys ``query`` yields into ``table``; returns how many."""
    fill_statement(table, columns, query, params).execute(client)
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


def fill_statement(table: str, columns: Sequence[str], query: str, params: dict[str, Any]) -> sql.Statement:
    names = sql.column_list(list(columns))
    return sql.Statement(
        f"INSERT INTO {table} ({names}) {distinct_keys(columns, query)}",
        parameters=params,
        settings={"insert_deduplicate": 0},
    )
