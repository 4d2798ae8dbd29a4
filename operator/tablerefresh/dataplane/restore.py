"""Swap a backup back in, atomically where the backup allows, taking a backup of what it replaces."""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane import backups, catalog, sql
from tablerefresh.dataplane.backups import Backup
from tablerefresh.dataplane.catalog import TableInfo
from tablerefresh.dataplane.lock import TableLock


@dataclass(frozen=True)
class Restored:
    backup: Backup
    undo_run_id: str  # restore this run id to undo the restore
    rows_before: int
    rows_after: int


def restore(client: Client, target: TableInfo, backup: Backup, lock: TableLock, run_id: str) -> Restored:
    tq = target.qualified
    bq = sql.table(target.database, backup.table)
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
        params = backup.params or {}
        backups.take_rows(client, target, run_id, backup.predicate, params)
        client.command(
            f"ALTER TABLE {tq} DELETE WHERE {backup.predicate}", parameters=params, settings={"mutations_sync": 2}
        )
        columns = sql.column_list(target.insertable_columns)
        client.command(f"INSERT INTO {tq} ({columns}) SELECT {columns} FROM {bq}", settings={"insert_deduplicate": 0})
    return Restored(backup, run_id, rows_before, _count(client, tq))


def _count(client: Client, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])
