"""Backups of what a swap replaced, and restoring them.

A backup is a table beside the target (``_tablerefresh_backup_<hash>_<time>_<run>``) whose comment
records, as JSON, the run, the time, the kind and the partitions it covers:

- ``partitions``: the replaced partitions, copied out of the target just before the swap with
  ``REPLACE PARTITION … FROM target``, which links the existing parts instead of copying rows;
- ``table``: the whole previous table, kept by ``Exchange`` (the table the exchange swapped out);
- ``rows``: the rows a ``DeleteInsert`` deleted, copied before the delete.

Restoring swaps a backup's content back the way it left and never consumes the backup, so a
restore can itself be restored from the backup it takes first.

Swap a backup back in, atomically where the backup allows, taking a backup of what it replaces.

A backup's COMMENT records what it holds, and anyone who may ALTER the backup table may rewrite it.
So a restore runs no SQL read from it: the rows backup of a DeleteInsert is restored with the slice
predicate of the manifest, after the server's parser has read it as one expression, and only when
the backup records that same predicate, and parameters a run of this manifest gives (see
:func:`rows_condition`); otherwise it refuses, naming both, with the target untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import catalog, names, sql, sql_guard
from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.infra.errors import InvalidInput
from tablerefresh.dataplane.infra.lock import TableLock
from tablerefresh.dataplane.run import keyset
from tablerefresh.dataplane.run.scope import BATCH_PARAM, BATCHES_PARAM
from tablerefresh.spec import TableRefreshSpec

log = logging.getLogger(__name__)

PARTITIONS = "partitions"
TABLE = "table"
ROWS = "rows"


@dataclass(frozen=True)
class Backup:
    table: str
    run_id: str
    taken_at: datetime
    kind: str
    partitions: tuple[str, ...]
    rows: int
    predicate: str = ""
    params: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "takenAt": self.taken_at.isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "rows": self.rows,
            "partitions": list(self.partitions),
            "table": self.table,
        }


def take_partitions(client: Client, target: TableInfo, run_id: str, partitions: list[str], taken_at: datetime) -> str:
    """Copy the target's current ``partitions`` aside (hard links, no row copies)."""
    present = catalog.partition_rows(client, target.qualified, "_partition_id IN {p:Array(String)}", {"p": partitions})
    name, statements = partitions_backup(target, run_id, partitions, set(present), taken_at)
    for statement in statements:
        statement.execute(client)
    return name


def partitions_backup(
    target: TableInfo, run_id: str, partitions: list[str], present: Collection[str], taken_at: datetime
) -> tuple[str, list[sql.Statement]]:
    """The backup of ``partitions`` (those ``present`` in the target hold rows) and its statements."""
    name = names.backup_table(target.name, run_id, taken_at)
    statements = _create(target, name, run_id, PARTITIONS, taken_at, partitions=partitions)
    commands = [
        f"REPLACE PARTITION ID {sql.partition_id(p)} FROM {target.qualified}" for p in partitions if p in present
    ]
    if commands:
        statements.append(sql.Statement(f"ALTER TABLE {sql.table(target.database, name)} {', '.join(commands)}"))
    return name, statements


def take_rows(
    client: Client, target: TableInfo, run_id: str, predicate: str, params: dict[str, Any], taken_at: datetime
) -> str:
    """Copy the rows matching ``predicate`` aside (DeleteInsert, whose slice is not whole partitions)."""
    name, statements = rows_backup(target, run_id, predicate, params, taken_at)
    for statement in statements:
        statement.execute(client)
    return name


def rows_backup(
    target: TableInfo, run_id: str, predicate: str, params: dict[str, Any], taken_at: datetime
) -> tuple[str, list[sql.Statement]]:
    name = names.backup_table(target.name, run_id, taken_at)
    columns = sql.column_list(target.insertable_columns)
    copy = sql.Statement(
        f"INSERT INTO {sql.table(target.database, name)} ({columns}) SELECT {columns} FROM {target.qualified} "
        f"WHERE {predicate}",
        parameters=params,
        settings={"insert_deduplicate": 0},
    )
    return name, [*_create(target, name, run_id, ROWS, taken_at, predicate=predicate, params=params), copy]


def keep_table(client: Client, target: TableInfo, run_id: str, previous: str, taken_at: datetime) -> str:
    """Name ``previous`` (already holding the whole previous table) a backup."""
    name, statements = table_backup(target, run_id, previous, taken_at)
    for statement in statements:
        statement.execute(client)
    return name


def table_backup(target: TableInfo, run_id: str, previous: str, taken_at: datetime) -> tuple[str, list[sql.Statement]]:
    name = names.backup_table(target.name, run_id, taken_at)
    rename = sql.Statement(f"RENAME TABLE {sql.table(target.database, previous)} TO {sql.table(target.database, name)}")
    return name, [rename, _comment(target.database, name, {"runId": run_id, "kind": TABLE}, taken_at)]


def mark_table(client: Client, database: str, name: str, run_id: str, taken_at: datetime) -> None:
    """Record that ``name`` now holds a whole previous table."""
    _comment(database, name, {"runId": run_id, "kind": TABLE}, taken_at).execute(client)


def list_backups(client: Client, database: str, target: str) -> list[Backup]:
    """Oldest first, each with the rows a query of it returns.

    Not ``system.tables.total_rows``: that sums the parts' rows, which count the rows a lightweight
    ``DELETE`` only masks (an incremental run's swapped partitions carry such masks, and a backup of
    them links the same parts)."""
    rows = client.query(
        "SELECT name, comment FROM system.tables "
        "WHERE database = {db:String} AND startsWith(name, {p:String}) ORDER BY name",
        parameters={"db": database, "p": names.backup_prefix(target)},
    ).result_rows
    backups = []
    for name, comment in rows:
        try:
            meta = json.loads(comment)
        except ValueError:
            continue  # not one of ours after all
        total = client.query(f"SELECT count() FROM {sql.table(database, name)}").result_rows[0][0]
        backups.append(
            Backup(
                table=name,
                run_id=meta["runId"],
                taken_at=datetime.fromisoformat(meta["takenAt"]),
                kind=meta["kind"],
                partitions=tuple(meta.get("partitions", [])),
                rows=int(total or 0),
                predicate=meta.get("predicate", ""),
                params=meta.get("params"),
            )
        )
    return backups


def find(client: Client, database: str, target: str, run_id: str) -> Backup:
    matches = [b for b in list_backups(client, database, target) if b.run_id == run_id]
    if not matches:
        raise InvalidInput(f"no backup of {database}.{target} for run {run_id!r} (tablerefresh backups lists them)")
    return matches[-1]


def prune(client: Client, database: str, target: str, keep: int) -> list[str]:
    """Drop all but the newest ``keep`` backups; returns the dropped tables."""
    backups = list_backups(client, database, target)
    dropped = [b.table for b in backups[: max(0, len(backups) - keep)]]
    for name in dropped:
        client.command(f"DROP TABLE IF EXISTS {sql.table(database, name)} SYNC")
        log.info("dropped old backup %s.%s", database, name)
    return dropped


def _create(
    target: TableInfo,
    name: str,
    run_id: str,
    kind: str,
    taken_at: datetime,
    *,
    partitions: list[str] | None = None,
    predicate: str = "",
    params: dict[str, Any] | None = None,
) -> list[sql.Statement]:
    meta = {"runId": run_id, "kind": kind, "partitions": partitions or [], "predicate": predicate, "params": params}
    return [catalog.create_like_statement(target, name), _comment(target.database, name, meta, taken_at)]


def _comment(database: str, name: str, meta: dict[str, Any], taken_at: datetime) -> sql.Statement:
    meta = {**meta, "takenAt": taken_at.astimezone(UTC).isoformat()}
    # COMMENT takes no query parameter: the JSON goes in as an escaped string literal.
    return sql.Statement(
        f"ALTER TABLE {sql.table(database, name)} MODIFY COMMENT {sql.string_literal(json.dumps(meta))}"
    )


# -- restoring --------------------------------------------------------------------------------

_RUN_PARAMS = {
    "window_start",
    "run_time",
    BATCH_PARAM,
    BATCHES_PARAM,
    keyset.CHANGED_KEYS_PARAM,
    keyset.FULL_RUN_PARAM,
    keyset.SINCE_PARAM,
}


@dataclass(frozen=True)
class Restored:
    backup: Backup
    undo_run_id: str  # restore this run id to undo the restore
    rows_before: int
    rows_after: int


def restore(
    client: Client,
    target: TableInfo,
    backup: Backup,
    lock: TableLock,
    run_id: str,
    spec: TableRefreshSpec,
    taken_at: datetime,
) -> Restored:
    """Restore ``backup`` into ``target``, taking a backup of what it replaces at ``taken_at``;
    ``spec`` is the manifest's (a rows backup takes its predicate)."""
    tq = target.qualified
    bq = sql.table(target.database, backup.table)
    condition, params = rows_condition(client, backup, spec) if backup.kind == ROWS else ("", {})
    rows_before = _count(client, tq)
    lock.assert_held()
    if backup.kind == PARTITIONS:
        take_partitions(client, target, run_id, list(backup.partitions), taken_at)
        present = catalog.partition_rows(client, bq)
        commands = [
            f"REPLACE PARTITION ID {sql.partition_id(p)} FROM {bq}"
            if p in present
            else f"DROP PARTITION ID {sql.partition_id(p)}"
            for p in backup.partitions
        ]
        if commands:
            client.command(f"ALTER TABLE {tq} {', '.join(commands)}")
    elif backup.kind == TABLE:
        # Link the backup's parts into a fresh table, exchange it in: the fresh table then holds what
        # was current, and becomes the backup that undoes this restore. The original stays as it was.
        fresh = take_partitions(client, target, run_id, [], taken_at)
        fq = sql.table(target.database, fresh)
        parts = sorted(catalog.partition_rows(client, bq))
        if parts:
            client.command(
                f"ALTER TABLE {fq} " + ", ".join(f"REPLACE PARTITION ID {sql.partition_id(p)} FROM {bq}" for p in parts)
            )
        client.command(f"EXCHANGE TABLES {tq} AND {fq}")
        mark_table(client, target.database, fresh, run_id, taken_at)
    else:  # rows: a DeleteInsert's backup, restored the same non-atomic way
        take_rows(client, target, run_id, condition, params, taken_at)
        client.command(f"ALTER TABLE {tq} DELETE WHERE {condition}", parameters=params, settings={"mutations_sync": 2})
        columns = sql.column_list(target.insertable_columns)
        client.command(f"INSERT INTO {tq} ({columns}) SELECT {columns} FROM {bq}", settings={"insert_deduplicate": 0})
    return Restored(backup, run_id, rows_before, _count(client, tq))


def rows_condition(client: Client, backup: Backup, spec: TableRefreshSpec) -> tuple[str, dict[str, Any]]:
    """The condition and parameters that select the rows a rows backup replaced, from the manifest.

    The backup's recorded predicate must be the manifest's, as a run writes it (today's form, or the
    one-line form of earlier releases); its parameters only those a run passes, as numbers and names,
    with ``window_start`` exactly ``run_time`` less the manifest's window. Refused otherwise: then the
    backup was taken with another manifest, or its comment was changed."""
    predicate = spec.slice.predicate
    taken_with = {sql.slice_condition(predicate), f"ifNull(({predicate}), 0)"}
    if backup.predicate not in taken_with:
        raise InvalidInput(
            f"the backup of run {backup.run_id} records the slice predicate {backup.predicate!r}, "
            f"but spec.slice.predicate is {predicate!r}: restore it with the manifest it was taken with "
            f"(or restore {backup.table} by hand)"
        )
    params = dict(backup.params or {})
    unknown = sorted(set(params) - _RUN_PARAMS)
    if unknown or not all(type(v) in (int, str) for v in params.values()):
        raise InvalidInput(f"the backup of run {backup.run_id} records parameters no run passes: {params!r}")
    window = int(spec.window_delta.total_seconds())
    start, run_time = params.get("window_start"), params.get("run_time")
    if not isinstance(start, int) or not isinstance(run_time, int) or run_time - start != window:
        raise InvalidInput(
            f"the backup of run {backup.run_id} records window_start {start!r} and run_time {run_time!r}, "
            f"which are not {spec.window} apart as spec.window says"
        )
    sql_guard.check_predicate(client, predicate, params)
    return sql.slice_condition(predicate), params


def _count(client: Client, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])
