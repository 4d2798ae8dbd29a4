"""The inputs, checked before anything is touched: the target, the keys, the source's columns, the
predicate, the audits; an incremental spec's changed-keys query too.

First of all (``sql_guard.check_predicate``, which the caller runs before :func:`check_inputs`): until
the server has read the predicate as one expression, it is pasted into nothing (on the embedded
engine, a text that closes the parentheses could run statements of its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.dataplane.infra import catalog
from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.infra.errors import InvalidInput, one_line
from tablerefresh.dataplane.run import audits, keyset
from tablerefresh.dataplane.run.incremental import definition_hash
from tablerefresh.dataplane.run.scope import Scope
from tablerefresh.spec import Strategy, TableRefreshSpec, check_batches

_ZERO_UUID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Inputs:
    target: TableInfo
    source_columns: list[str]
    definition: str  # what decides a key's rows (``incremental.definition_hash``)


def check_inputs(
    client: Client, spec: TableRefreshSpec, source_query: str, scope: Scope, params: dict[str, Any]
) -> Inputs:
    """Refuse (``InvalidInput``) what cannot run; call once the predicate is checked."""
    name = f"{spec.clickhouse.database}.{spec.target.table}"
    target = catalog.describe_table(client, spec.clickhouse.database, spec.target.table)
    columns = {c.name for c in target.columns}
    for role, wanted in (("uniqueKey", spec.unique_key), ("freshnessColumn", [spec.freshness_column])):
        unknown = [c for c in wanted if c not in columns]
        if unknown:
            raise InvalidInput(f"{role} names column(s) not in {name}: {', '.join(unknown)}")
    if spec.strategy == Strategy.REPLACE_PARTITIONS and not target.partition_key:
        raise InvalidInput(
            f"{name} has no PARTITION BY, so ReplacePartitions cannot isolate the slice; "
            "use strategy Exchange or DeleteInsert"
        )
    if spec.strategy == Strategy.EXCHANGE:
        if catalog.local_engine(target) is not None:
            raise InvalidInput(f"Exchange cannot rebuild the replicated table {name}")
        if target.uuid == _ZERO_UUID:
            raise InvalidInput(
                f"Exchange needs EXCHANGE TABLES, which {spec.clickhouse.database}'s database engine lacks (use Atomic)"
            )
    try:
        check_batches(source_query, spec.source.batches)  # a ConfigMap's query is read only now
    except ValueError as exc:
        raise InvalidInput(f"spec.source.batches: {exc}") from None
    source = source_query
    if spec.incremental is not None:
        keyset.check_query(client, spec.incremental.changed_keys_query, params, spec.incremental.key)
        # The key table does not exist yet: describe the source with an empty CTE in its place.
        source = keyset.with_keys(scope.keys_name, keyset.no_keys(target, spec.incremental.key), source)
    source_columns = catalog.query_columns(client, source, params)
    catalog.check_source_columns(target, source_columns)
    definition = definition_hash(spec, source_query, [(c.name, c.type) for c in target.columns])
    try:
        client.query(f"SELECT 1 FROM {target.qualified} WHERE {scope.in_slice} LIMIT 0", parameters=params)
    except ClickHouseError as exc:
        if getattr(exc, "code", None) is None:
            raise  # the connection broke, not the predicate
        raise InvalidInput(f"the slice predicate does not compile: {one_line(exc)}") from exc
    audits.check(client, spec.audits, target.name, params)
    return Inputs(target, [c.name for c in source_columns], definition)


def source_text(query: str) -> str:
    """The source query as the run sends it: wrapped in parentheses, so a newline after it keeps a
    trailing ``--`` comment from swallowing the closing one."""
    return query.strip().rstrip(";").rstrip() + "\n"
