"""Backups of what a swap replaced, and restoring them.

A backup is a table beside the target (``_tablerefresh_backup_<hash>_<time>_<run>``) whose comment
records, as JSON, the run, the time, the kind and the partitions it covers:

- ``partitions``: the replaced partitions, copied out of the target just before the swap with
  ``REPLACE PARTITION … FROM target``, which links the existing parts instead of copying rows;
- ``table``: the whole previous table, kept by ``Exchange`` (the table the exchange swapped out);
- ``rows``: the rows a ``DeleteInsert`` deleted, copied before the delete.

Restoring swaps a backup's content back the way it left and never consumes the backup, so a
restore can itself be restored from the backup it takes first.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane import catalog, names, sql
from tablerefresh.dataplane.catalog import TableInfo
from tablerefresh.dataplane.errors import InvalidInput

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


def take_partitions(client: Client, target: TableInfo, run_id: str, partitions: list[str]) -> str:
    """Copy the target's current ``partitions`` aside (hard links, no row copies)."""
    name = _create(client, target, run_id, PARTITIONS, partitions=partitions)
    present = catalog.partition_rows(client, target.qualified, "_partition_id IN {p:Array(String)}", {"p": partitions})
    commands = [
        f"REPLACE PARTITION ID {sql.partition_id(p)} FROM {target.qualified}" for p in partitions if p in present
    ]
    if commands:
        client.command(f"ALTER TABLE {sql.table(target.database, name)} {', '.join(commands)}")
    return name


def take_rows(client: Client, target: TableInfo, run_id: str, predicate: str, params: dict[str, Any]) -> str:
    """Copy the rows matching ``predicate`` aside (DeleteInsert, whose slice is not whole partitions)."""
    name = _create(client, target, run_id, ROWS, predicate=predicate, params=params)
    columns = sql.column_list(target.insertable_columns)
    client.command(
        f"INSERT INTO {sql.table(target.database, name)} ({columns}) SELECT {columns} FROM {target.qualified} "
        f"WHERE {predicate}",
        parameters=params,
        settings={"insert_deduplicate": 0},
    )
    return name


def keep_table(client: Client, target: TableInfo, run_id: str, previous: str) -> str:
    """Name ``previous`` (already holding the whole previous table) a backup."""
    name = names.backup_table(target.name, run_id, datetime.now(UTC))
    client.command(f"RENAME TABLE {sql.table(target.database, previous)} TO {sql.table(target.database, name)}")
    mark_table(client, target.database, name, run_id)
    return name


def mark_table(client: Client, database: str, name: str, run_id: str) -> None:
    """Record that ``name`` now holds a whole previous table."""
    _comment(client, database, name, {"runId": run_id, "kind": TABLE})


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
    client: Client,
    target: TableInfo,
    run_id: str,
    kind: str,
    *,
    partitions: list[str] | None = None,
    predicate: str = "",
    params: dict[str, Any] | None = None,
) -> str:
    name = names.backup_table(target.name, run_id, datetime.now(UTC))
    catalog.create_like(client, target, name)
    meta = {"runId": run_id, "kind": kind, "partitions": partitions or [], "predicate": predicate, "params": params}
    _comment(client, target.database, name, meta)
    return name


def _comment(client: Client, database: str, name: str, meta: dict[str, Any]) -> None:
    meta = {**meta, "takenAt": datetime.now(UTC).isoformat()}
    # COMMENT takes no query parameter: the JSON goes in as an escaped string literal.
    client.command(f"ALTER TABLE {sql.table(database, name)} MODIFY COMMENT {sql.string_literal(json.dumps(meta))}")
