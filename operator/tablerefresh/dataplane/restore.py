"""Swap a backup back in, atomically where the backup allows, taking a backup of what it replaces.

A backup's COMMENT records what it holds, and anyone who may ALTER the backup table may rewrite it.
So a restore runs no SQL read from it: the rows backup of a DeleteInsert is restored with the slice
predicate of the manifest, after the server's parser has read it as one expression, and only when
the backup records that same predicate, and parameters a run of this manifest gives (see
:func:`rows_condition`); otherwise it refuses, naming both, with the target untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane import backups, catalog, keyset, sql, sql_guard
from tablerefresh.dataplane.backups import Backup
from tablerefresh.dataplane.catalog import TableInfo
from tablerefresh.dataplane.errors import InvalidInput
from tablerefresh.dataplane.lock import TableLock
from tablerefresh.spec import TableRefreshSpec

# The parameters a run passes along with its predicate: the window, and an incremental spec's.
_RUN_PARAMS = {"window_start", "run_time", keyset.CHANGED_KEYS_PARAM, keyset.FULL_RUN_PARAM, keyset.SINCE_PARAM}


@dataclass(frozen=True)
class Restored:
    backup: Backup
    undo_run_id: str  # restore this run id to undo the restore
    rows_before: int
    rows_after: int


def restore(
    client: Client, target: TableInfo, backup: Backup, lock: TableLock, run_id: str, spec: TableRefreshSpec
) -> Restored:
    """Restore ``backup`` into ``target``; ``spec`` is the manifest's (a rows backup takes its predicate)."""
    tq = target.qualified
    bq = sql.table(target.database, backup.table)
    condition, params = rows_condition(client, backup, spec) if backup.kind == backups.ROWS else ("", {})
    rows_before = _count(client, tq)
    lock.assert_held()
    if backup.kind == backups.PARTITIONS:
        backups.take_partitions(client, target, run_id, list(backup.partitions))
        present = catalog.partition_rows(client, bq)
        commands = [
            f"REPLACE PARTITION ID {sql.partition_id(p)} FROM {bq}"
            if p in present
            else f"DROP PARTITION ID {sql.partition_id(p)}"
            for p in backup.partitions
        ]
        if commands:
            client.command(f"ALTER TABLE {tq} {', '.join(commands)}")
    elif backup.kind == backups.TABLE:
        # Link the backup's parts into a fresh table, exchange it in: the fresh table then holds what
        # was current, and becomes the backup that undoes this restore. The original stays as it was.
        fresh = backups.take_partitions(client, target, run_id, [])
        fq = sql.table(target.database, fresh)
        parts = sorted(catalog.partition_rows(client, bq))
        if parts:
            client.command(
                f"ALTER TABLE {fq} " + ", ".join(f"REPLACE PARTITION ID {sql.partition_id(p)} FROM {bq}" for p in parts)
            )
        client.command(f"EXCHANGE TABLES {tq} AND {fq}")
        backups.mark_table(client, target.database, fresh, run_id)
    else:  # rows: a DeleteInsert's backup, restored the same non-atomic way
        backups.take_rows(client, target, run_id, condition, params)
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
