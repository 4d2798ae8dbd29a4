"""Rebuild a table, or its slice, with one row per unique key, and swap it in with a backup.

Which of a key's rows survives is not specified: duplicates here are copies of the same row, made by
overlapping inserts. No key is lost: the rebuilt table has exactly one row per distinct key.

The rebuilt partitions replace the target's with ``REPLACE PARTITION``, never ``EXCHANGE TABLES``:
the target stays the table it was, with its engine (a replicated table stays replicated), settings
and grants. A key's duplicates in two partitions are reduced within the same statement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import catalog, names, sql
from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.infra.errors import VerificationFailed, one_line
from tablerefresh.dataplane.infra.lock import TableLock
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.run.swap import PartitionChange, swap_statement
from tablerefresh.spec import TableRefreshSpec

log = logging.getLogger(__name__)


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
    taken_at: datetime,
) -> Deduped:
    """Rebuild the target's partitions (those with slice rows, with ``slice_only``) with one row per
    key and swap them in, after a backup taken at ``taken_at``."""
    tq = target.qualified
    keys = sql.column_list(spec.unique_key)
    staging_name = names.staging_table(target.name, run_id)
    # The command has had the server's parser check the predicate (sql_guard) before locking.
    where = sql.slice_condition(spec.slice.predicate) if slice_only else "1"
    partitions = sorted(catalog.partition_rows(client, tq, where, params))
    scope, scope_params = "_partition_id IN {scope:Array(String)}", {"scope": partitions}
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
        staged = catalog.partition_rows(client, staging)
        rows_after = sum(staged.values())
        if rows_after != int(distinct):
            raise VerificationFailed(
                f"dedupe built {rows_after} rows for {distinct} distinct keys; {target.name} was not changed"
            )
        lock.assert_held()
        backups.take_partitions(client, target, run_id, partitions, taken_at)
        changes = [PartitionChange(p, 0, staged.get(p, 0)) for p in partitions]
        if changes:
            client.command(swap_statement(tq, staging, changes))
        _quietly(lambda: backups.prune(client, target.database, target.name, max(1, spec.backup.keep)))
    finally:
        _quietly(lambda: client.command(f"DROP TABLE IF EXISTS {staging} SYNC"))
    return Deduped(int(rows_before), rows_after, int(distinct), partitions, run_id)


def _quietly(cleanup: Callable[[], object]) -> None:
    """A cleanup error is logged, never raised over the outcome."""
    try:
        cleanup()
    except Exception as exc:
        log.error("dedupe cleanup failed: %s", one_line(exc))
