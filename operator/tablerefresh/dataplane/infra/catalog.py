"""What ClickHouse knows about a table: its columns, keys, partitions and pending mutations, and
killing the stuck ones (a killed mutation is not rolled back: parts it already rewrote keep its changes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.errors import InvalidInput, UnknownTable, one_line

# Columns a source must not provide: the server computes them.
NOT_ROLLED_BACK = "killed mutations are not rolled back: parts already rewritten keep their changes"
_COMPUTED_KINDS = {"MATERIALIZED", "ALIAS", "EPHEMERAL"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    default_kind: str = ""


@dataclass(frozen=True)
class TableInfo:
    database: str
    name: str
    engine: str
    engine_full: str
    partition_key: str
    sorting_key: str
    uuid: str
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return sql.table(self.database, self.name)

    @property
    def insertable_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.default_kind not in _COMPUTED_KINDS]

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.default_kind == ""]


@dataclass(frozen=True)
class Mutation:
    mutation_id: str
    command: str
    age_seconds: float
    parts_to_do: int
    latest_fail_reason: str

    def describe(self) -> str:
        text = f"{self.mutation_id} ({self.command.strip()[:120]}), pending {self.age_seconds:.0f}s"
        if self.parts_to_do:
            text += f", {self.parts_to_do} parts to do"
        if self.latest_fail_reason:
            text += f", last failure: {self.latest_fail_reason.splitlines()[0][:200]}"
        return text


def describe_table(client: Client, database: str, name: str) -> TableInfo:
    """The table's shape, or ``InvalidInput`` naming the table when it does not exist."""
    rows = client.query(
        "SELECT engine, engine_full, partition_key, sorting_key, toString(uuid) FROM system.tables "
        "WHERE database = {db:String} AND name = {name:String}",
        parameters={"db": database, "name": name},
    ).result_rows
    if not rows:
        raise UnknownTable(f"unknown table {database}.{name}")
    engine, engine_full, partition_key, sorting_key, uuid = rows[0]
    columns = client.query(
        "SELECT name, type, default_kind FROM system.columns "
        "WHERE database = {db:String} AND table = {name:String} ORDER BY position",
        parameters={"db": database, "name": name},
    ).result_rows
    return TableInfo(
        database=database,
        name=name,
        engine=engine,
        engine_full=engine_full,
        partition_key=partition_key,
        sorting_key=sorting_key,
        uuid=uuid,
        columns=tuple(Column(*c) for c in columns),
    )


def table_exists(client: Client, database: str, name: str) -> bool:
    return bool(
        client.query(
            "SELECT 1 FROM system.tables WHERE database = {db:String} AND name = {name:String}",
            parameters={"db": database, "name": name},
        ).result_rows
    )


def tables_with_prefix(client: Client, database: str, prefix: str) -> list[str]:
    rows = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {p:String}) ORDER BY name",
        parameters={"db": database, "p": prefix},
    ).result_rows
    return [r[0] for r in rows]


def query_columns(
    client: Client, query: str, parameters: dict[str, Any], what: str = "the source query"
) -> list[Column]:
    """The columns a query yields, found without running it."""
    try:
        rows = client.query(f"DESCRIBE ({query})", parameters=parameters).result_rows
    except DatabaseError as exc:
        if getattr(exc, "code", None) is None:
            raise  # the connection broke, not the query: the caller reports the connection
        raise InvalidInput(f"{what} does not compile: {one_line(exc)}") from exc
    return [Column(r[0], r[1]) for r in rows]


def check_source_columns(target: TableInfo, source: list[Column]) -> None:
    """Refuse a source whose columns do not match the target's by name, naming each difference."""
    names = [c.name for c in source]
    problems = []
    missing = [c for c in target.required_columns if c not in names]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    extra = [c for c in names if c not in target.insertable_columns]
    if extra:
        problems.append(f"column(s) not in {target.name}: {', '.join(extra)}")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        raise InvalidInput(f"the source query does not match {target.database}.{target.name}: " + "; ".join(problems))


def partition_rows(
    client: Client,
    table: str,
    where: str = "1",
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Rows per partition id of ``table`` (already quoted) matching ``where``."""
    rows = client.query(
        f"SELECT _partition_id, count() FROM {table} WHERE ({where}) GROUP BY _partition_id",
        parameters=parameters or {},
        settings=settings,
    ).result_rows
    return {str(pid): int(n) for pid, n in rows}


def pending_mutations_summary(
    client: Client, database: str, name: str, settings: dict[str, Any] | None = None
) -> tuple[int, Mutation | None]:
    """How many mutations are pending on the table, and the oldest of them, in one row: for the
    health check, whose queries may return no more (``limits.bounded``)."""
    count, oldest = client.query(
        "SELECT count(), argMin((mutation_id, command, dateDiff('second', create_time, now()), parts_to_do, "
        "latest_fail_reason), create_time) FROM system.mutations "
        "WHERE database = {db:String} AND table = {name:String} AND NOT is_done",
        parameters={"db": database, "name": name},
        settings=settings,
    ).result_rows[0]
    if not count:
        return 0, None
    mutation_id, command, age, parts_to_do, fail_reason = oldest
    return int(count), Mutation(mutation_id, command, float(age), int(parts_to_do), fail_reason)


def pending_mutations(client: Client, database: str, name: str) -> list[Mutation]:
    rows = client.query(
        "SELECT mutation_id, command, dateDiff('second', create_time, now()), parts_to_do, "
        "latest_fail_reason FROM system.mutations "
        "WHERE database = {db:String} AND table = {name:String} AND NOT is_done ORDER BY create_time",
        parameters={"db": database, "name": name},
    ).result_rows
    return [Mutation(r[0], r[1], float(r[2]), int(r[3]), r[4]) for r in rows]


def kill_mutations_older_than(client: Client, database: str, table: str, seconds: float) -> list[Mutation]:
    """Kill every mutation pending longer than ``seconds``; returns those killed."""
    stuck = [m for m in pending_mutations(client, database, table) if m.age_seconds > seconds]
    for mutation in stuck:
        client.command(
            "KILL MUTATION WHERE database = {db:String} AND table = {t:String} AND mutation_id = {m:String} SYNC",
            parameters={"db": database, "t": table, "m": mutation.mutation_id},
        )
    return stuck


_REPLICATED = re.compile(
    r"^(?:Replicated|Shared)(\w*MergeTree)\(\s*'(?:[^'\\]|\\.)*'\s*,\s*'(?:[^'\\]|\\.)*'\s*(?:,\s*)?(.*?)\)(.*)$",
    re.S,
)


def local_engine(info: TableInfo) -> str | None:
    """For a replicated target, the same engine without replication, for a staging table whose parts
    can still be attached with REPLACE PARTITION. None when the target's own engine will do."""
    if not info.engine.startswith(("Replicated", "Shared")):
        return None
    match = _REPLICATED.match(info.engine_full)
    if not match:
        raise InvalidInput(f"cannot derive a staging engine from {info.engine_full!r}")
    kind, args, rest = match.groups()
    return f"{kind}({args}){rest}"


def create_like(client: Client, target: TableInfo, name: str) -> str:
    """A table beside the target with its structure and keys (a replicated target's copy is local),
    so its partitions can be swapped with the target's. Returns the quoted name."""
    create_like_statement(target, name).execute(client)
    return sql.table(target.database, name)


def create_like_statement(target: TableInfo, name: str) -> sql.Statement:
    """The statement :func:`create_like` executes."""
    ddl = f"CREATE TABLE {sql.table(target.database, name)} AS {target.qualified}"
    engine = local_engine(target)
    if engine is not None:
        ddl += f" ENGINE = {engine}"
    return sql.Statement(ddl)
