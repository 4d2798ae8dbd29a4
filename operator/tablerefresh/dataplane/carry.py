"""Keeping the rows an incremental run does not replace, without copying them.

A full run of the reference replaces nearly all of each partition it touches, and copies the few
rows it keeps (``Refresh._carry_over``). An incremental run is the other way round: it replaces the
rows of a few percent of the keys and keeps the rest, most of the open positions' partition, which
copying would rewrite on every run. Instead the run links the target's parts of each partition it
may touch into a table of its own (``ATTACH PARTITION … FROM``: hard links, no data is copied),
marks the rows it replaces as deleted there (a lightweight ``DELETE``, which writes a mask, not the
rows), and links those parts into staging beside the rebuilt rows. The count of what is left is the
count of the rows kept, so the replaced rows need no count of their own.

The swap then puts the masked parts back into the target: readers skip the masked rows, and merges
drop them. Until a merge does, the target's parts hold them on disk, at most until the next full
run (``fullEvery``) rewrites the partitions. A table the engine refuses a lightweight delete for
(one with projections) is carried over by copying, as a full run does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane import catalog, sql
from tablerefresh.dataplane.catalog import TableInfo


def link(client: Client, target: TableInfo, name: str, partitions: Sequence[str]) -> tuple[str, dict[str, int]]:
    """A new table ``name`` beside the target holding its parts of ``partitions``, linked, not copied.
    Returns its quoted name and its rows per partition."""
    table = catalog.create_like(client, target, name)
    if partitions:
        client.command(attach_statement(table, target.qualified, partitions))
    return table, catalog.partition_rows(client, table)


def mask(client: Client, table: str, replaced: str, params: dict[str, Any]) -> dict[str, int]:
    """Mark the ``replaced`` rows of ``table`` deleted; returns the rows left per partition."""
    client.command(f"DELETE FROM {table} WHERE {replaced}", parameters=params, settings={"mutations_sync": 2})
    return catalog.partition_rows(client, table)


def attach_statement(into: str, source: str, partitions: Sequence[str]) -> str:
    """One ALTER linking the parts of ``partitions`` of ``source`` into ``into`` (names quoted)."""
    commands = ", ".join(f"ATTACH PARTITION ID {sql.partition_id(p)} FROM {source}" for p in partitions)
    return f"ALTER TABLE {into} {commands}"
