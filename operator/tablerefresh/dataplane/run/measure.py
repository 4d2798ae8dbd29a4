"""What a run, and ``tablerefresh plan``, measure before they decide: free functions over a client
and a scope.

Each takes the rows it measures as a relation. The run measures its staging table; the plan, which
builds none, the source's rows as staging would hold them (:func:`source_as_staged`). Both measure
the target with the same queries, the changed keys bound to a table (the run) or to a CTE of the
changed-keys query (the plan: :meth:`Scope.bind`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.run.decide import Decision, Frame, Measured, Rebuilt, Surplus, decide
from tablerefresh.dataplane.run.scope import Scope
from tablerefresh.dataplane.run.swap import PartitionCounts
from tablerefresh.spec import TableRefreshSpec

# A condition ``a AND b`` evaluates b only where a holds, whatever b is.
SHORT_CIRCUIT = {"short_circuit_function_evaluation": "force_enable"}


def count(client: Client, scope: Scope, relation: str, where: str = "1", params: dict[str, Any] | None = None) -> int:
    query = scope.bind(f"SELECT count() FROM {relation} WHERE {where}")
    return int(client.query(query, parameters=params or {}).result_rows[0][0])


def duplicates(
    client: Client, unique_key: Sequence[str], table: str, where: str = "1", params: dict[str, Any] | None = None
) -> int:
    keys = sql.column_list(list(unique_key))
    # tuple(): aggregate functions skip rows with a NULL argument, a tuple is never NULL.
    rows = client.query(
        f"SELECT count() - uniqExact(tuple({keys})) FROM {table} WHERE {where}", parameters=params or {}
    ).result_rows
    return int(rows[0][0])


def rebuilt(
    client: Client,
    scope: Scope,
    unique_key: Sequence[str],
    relation: str,
    params: dict[str, Any],
    *,
    once: bool = False,
) -> Rebuilt:
    """The rows of ``relation`` (with a ``_partition_id``) per partition, and in all.

    A table is read twice: its rows per partition, then its distinct keys in all. ``once``: read
    it once (the plan's source, which would run twice), at the price of counting each partition's
    distinct keys too."""
    keys = f"tuple({sql.column_list(list(unique_key))})"
    counts = f"_partition_id, count(), countIf({scope.in_slice})"
    if once:
        rows = client.query(
            scope.bind(
                f"SELECT grouping(_partition_id) AS total, {counts}, uniqExact({keys}) "
                f"FROM {relation} GROUP BY GROUPING SETS ((_partition_id), ())"
            ),
            parameters=params,
        ).result_rows
        partitions = {str(r[1]): PartitionCounts(int(r[2]), int(r[3])) for r in rows if r[0] == 0}
        distinct = next(int(r[4]) for r in rows if r[0] == 1)
    else:
        rows = client.query(
            scope.bind(f"SELECT {counts} FROM {relation} GROUP BY _partition_id"), parameters=params
        ).result_rows
        partitions = {str(p): PartitionCounts(int(n), int(k)) for p, n, k in rows}
        distinct = int(
            client.query(scope.bind(f"SELECT uniqExact({keys}) FROM {relation}"), parameters=params).result_rows[0][0]
        )
    total = sum(c.rows for c in partitions.values())
    return Rebuilt(partitions, total, sum(c.slice_rows for c in partitions.values()), total - distinct)


def target_counts(client: Client, scope: Scope, table: str, params: dict[str, Any]) -> dict[str, PartitionCounts]:
    """Rows, and slice rows, per partition of ``table``; in an incremental run also the rows it
    replaces, counted exactly (the key tuple tested only where its hash matched) in the partitions
    with slice rows."""
    result = client.query(
        f"SELECT _partition_id, count(), countIf({scope.in_slice}) FROM {table} GROUP BY _partition_id",
        parameters=params,
    ).result_rows
    counts = {str(p): PartitionCounts(int(n), int(k)) for p, n, k in result}
    if not scope.incremental:
        return counts
    in_slice = [p for p, c in counts.items() if c.slice_rows]
    where = f"_partition_id IN {{in_slice:Array(String)}} AND {scope.replaced_checked}"
    replaced = client.query(
        scope.bind(f"SELECT _partition_id, count() FROM {table} WHERE {where} GROUP BY _partition_id"),
        parameters={**params, "in_slice": in_slice},
        settings=SHORT_CIRCUIT,
    ).result_rows
    replaced_rows = {str(p): int(n) for p, n in replaced}
    return {p: dataclasses.replace(c, replaced_rows=replaced_rows.get(p, 0)) for p, c in counts.items()}


def surplus(
    client: Client, scope: Scope, unique_key: Sequence[str], table: str, partitions: list[str], params: dict[str, Any]
) -> Surplus:
    """Second copies of a key in ``partitions`` of ``table``: counted only when a shrink would stop
    the run (see ``decide.py``)."""
    keys = f"tuple({sql.column_list(list(unique_key))})"
    rows = client.query(
        f"SELECT _partition_id, count() - uniqExact({keys}), "
        f"countIf({scope.in_slice}) - uniqExactIf({keys}, {scope.in_slice}) "
        f"FROM {table} WHERE _partition_id IN {{replace:Array(String)}} GROUP BY _partition_id",
        parameters={**params, "replace": partitions},
    ).result_rows
    return Surplus({str(p): int(n) for p, n, _ in rows}, sum(int(n) for _, _, n in rows))


def vanishing_keys(
    client: Client, scope: Scope, spec: TableRefreshSpec, target: str, rebuilt: str, params: dict[str, Any]
) -> dict[str, int]:
    """Per partition, the target's keys outside the slice that the rebuilt rows do not hold (none
    looked for with ``allowVanishingKeys``)."""
    if spec.allow_vanishing_keys:
        return {}
    keys = f"tuple({sql.column_list(spec.unique_key)})"
    rows = client.query(
        f"SELECT _partition_id, count() FROM {target} WHERE NOT {scope.in_slice} "
        f"AND {keys} NOT IN (SELECT {keys} FROM {rebuilt}) GROUP BY _partition_id",
        parameters=params,
        settings={"transform_null_in": 1},
    ).result_rows
    return {str(p): int(n) for p, n in rows}


def unchanged_rows(client: Client, scope: Scope, relation: str, params: dict[str, Any]) -> int:
    """Rows of ``relation`` whose key did not change (an incremental run drops them from staging)."""
    return count(client, scope, relation, scope.unchanged, params) if scope.incremental else 0


def source_as_staged(target: TableInfo, source: str) -> str:
    """The plan's relation: ``source``'s rows with the partition the target would store each in."""
    key = target.partition_key
    pid = f"partitionId({partition_key_args(key)})" if key and key != "tuple()" else "'all'"
    return f"(SELECT *, {pid} AS _partition_id FROM ({source}))"


def partition_key_args(key: str) -> str:
    """``(a, b)`` -> ``a, b``; a single expression stays as it is (partitionId takes the key's parts)."""
    key = key.strip()
    if key.startswith("(") and key.endswith(")"):
        depth = 0
        for i, ch in enumerate(key):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(key) - 1:
                return key  # the parentheses close early: not one wrapping tuple
        return key[1:-1]
    return key


def decision(client: Client, frame: Frame, measured: Measured, taken_at: datetime) -> Decision:
    """:func:`decide`, after measuring the target's second copies of a key when it asks for them."""
    decided = decide(frame, measured, taken_at)
    if not decided.needs_surplus:
        return decided
    found = surplus(
        client,
        frame.scope,
        frame.spec.unique_key,
        frame.tables.target.qualified,
        decided.partitions,
        frame.params,
    )
    return decide(frame, dataclasses.replace(measured, surplus=found), taken_at)
