"""Rebuild a table, or its slice, with one row per unique key, and swap it in atomically with a backup.

Which of a key's rows survives is not specified: duplicates here are copies of the same row, made by
overlapping inserts. No key is lost: the rebuilt table has exactly one row per distinct key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane import backups, catalog, names, sql
from tablerefresh.dataplane.catalog import TableInfo
from tablerefresh.dataplane.errors import VerificationFailed
from tablerefresh.dataplane.lock import TableLock
from tablerefresh.spec import TableRefreshSpec


@dataclass(frozen=True)
class Deduped:
    rows_before: int
    rows_after: int
    distinct_keys: int
    partitions: list[str]
    backup_run_id: str


def dedupe(
    client: Client,
    target: TableInfo,
    spec: TableRefreshSpec,
    lock: TableLock,
    run_id: str,
    *,
    slice_only: bool,
    params: dict[str, Any],
) -> Deduped:
    tq = target.qualified
    keys = sql.column_list(spec.unique_key)
    staging_name = names.staging_table(target.name, run_id)
    predicate = f"({spec.slice.predicate})"
    if slice_only:
        partitions = sorted(catalog.partition_rows(client, tq, predicate, params))
        scope, scope_params = "_partition_id IN {scope:Array(String)}", {"scope": partitions}
    else:
        partitions, scope, scope_params = [], "1", {}
    staging = catalog.create_like(client, target, staging_name)
    try:
        rows_before, distinct = client.query(
            f"SELECT count(), uniqExact(tuple({keys})) FROM {tq} WHERE {scope}", parameters=scope_params
        ).result_rows[0]
        client.command(
            f"INSERT INTO {staging} SELECT * FROM {tq} WHERE {scope} LIMIT 1 BY {keys}",
            parameters=scope_params,
            settings={"insert_deduplicate": 0, "max_threads": 0},
        )
        rows_after = int(client.query(f"SELECT count() FROM {staging}").result_rows[0][0])
        if rows_after != int(distinct):
            raise VerificationFailed(
                f"dedupe built {rows_after} rows for {distinct} distinct keys; {target.name} was not changed"
            )
        lock.assert_held()
        if slice_only:
            backups.take_partitions(client, target, run_id, partitions)
            present = catalog.partition_rows(client, staging)
            commands = [
                f"REPLACE PARTITION ID {sql.partition_id(p)} FROM {staging}"
                if p in present
                else f"DROP PARTITION ID {sql.partition_id(p)}"
                for p in partitions
            ]
            if commands:
                client.command(f"ALTER TABLE {tq} {', '.join(commands)}")
        else:
            client.command(f"EXCHANGE TABLES {tq} AND {staging}")
            backups.keep_table(client, target, run_id, staging_name)
        backups.prune(client, target.database, target.name, max(1, spec.backup.keep))
    finally:
        client.command(f"DROP TABLE IF EXISTS {staging} SYNC")
    return Deduped(int(rows_before), rows_after, int(distinct), partitions, run_id)
