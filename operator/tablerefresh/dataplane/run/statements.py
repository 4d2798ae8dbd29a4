"""The statements a run executes, built from names and measurements. Pure: nothing here touches
ClickHouse.

:func:`decide.decide` strings them together in the order the run executes them, which is what
``tablerefresh plan`` prints; the run executes the decision's, and those it sends before it can
decide (the changed keys, staging) from the same functions here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tablerefresh.dataplane.infra import catalog, names, sql
from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.infra.sql import Statement
from tablerefresh.dataplane.run import keyset
from tablerefresh.dataplane.run.scope import BATCH_PARAM, Scope
from tablerefresh.dataplane.run.swap import PartitionChange, swap_statement
from tablerefresh.spec import Strategy

# Every statement that writes rows: a rerun must never be dropped as a "duplicate block".
INSERT_SETTINGS = {"insert_deduplicate": 0, "deduplicate_blocks_in_dependent_materialized_views": 0}
# Carried-over rows keep their MATERIALIZED values as they are, instead of having them recomputed.
CARRY_SETTINGS = {**INSERT_SETTINGS, "insert_allow_materialized_columns": 1}
# A mutation the run waits for: the next step reads what it left.
MUTATION_SETTINGS = {"mutations_sync": 2}


@dataclass(frozen=True)
class RunTables:
    """The target, and the tables a run makes beside it (names unquoted; properties quoted). Named
    as its staging table is, so the next run's cleanup of a crashed run's leftovers drops them all."""

    target: TableInfo
    staging_name: str
    keys_name: str  # the changed keys' table; "" when the spec has no incremental section
    kept_name: str  # an incremental run's target rows that it keeps, linked (``carry.py``)
    sample_name: str  # a full run's sample of keys (``sample.py``)

    @property
    def database(self) -> str:
        return self.target.database

    @property
    def staging(self) -> str:
        return sql.table(self.database, self.staging_name)

    @property
    def keys(self) -> str:
        return sql.table(self.database, self.keys_name)

    @property
    def kept(self) -> str:
        return sql.table(self.database, self.kept_name)


def run_tables(target: TableInfo, run_id: str, strategy: Strategy, keys_name: str) -> RunTables:
    if strategy == Strategy.EXCHANGE:
        # Named after the target's UUID: once exchanged, the previous table is known by its name.
        staging = names.exchange_staging_table(target.name, run_id, target.uuid)
    else:
        staging = names.staging_table(target.name, run_id)
    return RunTables(
        target,
        staging,
        keys_name,
        names.run_table(target.name, run_id, "kept"),
        names.run_table(target.name, run_id, "sample"),
    )


def changed_keys(tables: RunTables, scope: Scope, query: str, params: dict[str, Any]) -> list[Statement]:
    """The key table every run of an incremental spec names; an incremental run fills it with the
    changed keys (a full run's source reads everything, but must find the table it names)."""
    if not scope.keyed:
        return []
    create = keyset.create_statement(tables.target, tables.keys_name, scope.key)
    if not scope.incremental:
        return [create]
    return [create, keyset.fill_statement(tables.keys, scope.key, query, params)]


def load_staging(
    tables: RunTables, source_columns: list[str], source_query: str, params: dict[str, Any], batches: int = 1
) -> list[Statement]:
    """A staging table with the target's structure, and the source's rows in it, as they are: one
    ``INSERT … SELECT`` per batch (``spec.source.batches``), each binding its ``{batch:UInt32}``."""
    columns = sql.column_list(source_columns)
    inserts = [
        Statement(
            f"INSERT INTO {tables.staging} ({columns}) SELECT {columns} FROM ({source_query})",
            parameters={**params, BATCH_PARAM: batch},
            settings=INSERT_SETTINGS,
        )
        for batch in range(batches)
    ]
    return [catalog.create_like_statement(tables.target, tables.staging_name), *inserts]


def drop_unchanged(tables: RunTables, scope: Scope, params: dict[str, Any]) -> Statement:
    """An incremental run takes only the changed keys' rows from the source.

    It filters what the source put in staging, not the source's output: the engine pushes a filter
    on the output down to the source's scan, where it would test every row the source reads against
    the key table a second time (a source written for incremental runs tests the same keys there
    already); on the reference that added a third to the source's cost. Staging then holds only the
    changed keys' rows, and the check costs a scan of those; a source that ignores
    ``{changed_keys:Identifier}`` fills staging with more, which the run deletes."""
    return Statement(
        f"ALTER TABLE {tables.staging} DELETE WHERE {scope.unchanged}", parameters=params, settings=MUTATION_SETTINGS
    )


# -- the statements ------------------------------------------------------------------------------


def link(tables: RunTables, partitions: Sequence[str]) -> list[Statement]:
    """The kept table (``carry.py``): beside the target, holding its parts of ``partitions``, linked, not copied."""
    create = catalog.create_like_statement(tables.target, tables.kept_name)
    if not partitions:
        return [create]
    return [create, Statement(attach_statement(tables.kept, tables.target.qualified, partitions))]


def mask(table: str, replaced: str, params: dict[str, Any]) -> Statement:
    """Mark the ``replaced`` rows of ``table`` deleted."""
    return Statement(f"DELETE FROM {table} WHERE {replaced}", parameters=params, settings=MUTATION_SETTINGS)


def attach_statement(into: str, source: str, partitions: Sequence[str]) -> str:
    """One ALTER linking the parts of ``partitions`` of ``source`` into ``into`` (names quoted)."""
    commands = ", ".join(f"ATTACH PARTITION ID {sql.partition_id(p)} FROM {source}" for p in partitions)
    return f"ALTER TABLE {into} {commands}"


def carry(
    tables: RunTables, scope: Scope, carried: Sequence[str], params: dict[str, Any], *, linked: bool
) -> list[Statement]:
    """The kept rows of ``carried`` into staging: linked from the kept table, or copied."""
    if not carried:
        return []
    if linked:
        return [Statement(attach_statement(tables.staging, tables.kept, carried))]
    return [copy_kept(tables, scope, carried, params)]


def copy_kept(tables: RunTables, scope: Scope, carried: Sequence[str], params: dict[str, Any]) -> Statement:
    columns = sql.column_list([c.name for c in tables.target.columns if c.default_kind not in ("ALIAS", "EPHEMERAL")])
    return Statement(
        f"INSERT INTO {tables.staging} ({columns}) SELECT {columns} FROM {tables.target.qualified} "
        f"WHERE {kept_rows(scope, carried)}",
        parameters=params,
        settings=CARRY_SETTINGS,
    )


def kept_rows(scope: Scope, carried: Sequence[str]) -> str:
    """SQL: the rows of the ``carried`` partitions the run does not replace."""
    return f"_partition_id IN ({', '.join(sql.partition_id(p) for p in carried)}) AND NOT {scope.replaced}"


def replace_partitions(tables: RunTables, changes: list[PartitionChange]) -> list[Statement]:
    return [Statement(swap_statement(tables.target.qualified, tables.staging, changes))] if changes else []


def exchange(tables: RunTables) -> Statement:
    return Statement(f"EXCHANGE TABLES {tables.target.qualified} AND {tables.staging}")


def delete_insert(tables: RunTables, scope: Scope, params: dict[str, Any]) -> list[Statement]:
    """Delete the slice, then insert the staged one: not atomic, readers see a gap."""
    target = tables.target.qualified
    columns = sql.column_list(tables.target.insertable_columns)
    return [
        Statement(f"ALTER TABLE {target} DELETE WHERE {scope.in_slice}", parameters=params, settings=MUTATION_SETTINGS),
        Statement(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {tables.staging}", settings=INSERT_SETTINGS),
    ]


def drop(made: list[str]) -> list[Statement]:
    """The run's tables (quoted), dropped last made first."""
    return [sql.drop_table(table) for table in reversed(made)]
