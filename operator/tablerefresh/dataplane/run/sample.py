"""A sample of keys rebuilt in full and compared with what the target holds for them.

Incremental runs miss a change that arrives later than ``lateness``; the next full run repairs it.
To see how often that happens, a full run of an incremental spec (and ``tablerefresh verify``, on
demand) draws ``verifySample`` keys, and compares the target's slice rows of those keys with a full
rebuild's: rows the target lacks, rows it holds that the rebuild does not, and rows under the same
unique key that differ. Floats are equal within 1e-6 relative or 1e-9 absolute, as in the reference
workload's rules: the same sums added in another order differ in their last bits.

The draw orders the keys by a salted hash, so each full run looks at other keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.catalog import Column, TableInfo
from tablerefresh.dataplane.run import keyset

REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 1e-9
EXAMPLES = 5


@dataclass(frozen=True)
class SampleReport:
    keys: int
    target_rows: int
    rebuilt_rows: int
    missing: int  # rebuilt rows whose unique key the target lacks
    extra: int  # target rows whose unique key the rebuild lacks
    changed: int  # rows under the same unique key with a different value
    examples: tuple[str, ...] = ()  # unique keys of a few differing rows

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.changed

    def describe(self) -> str:
        text = (
            f"{self.keys} sampled key(s): {self.target_rows} row(s) in the target, {self.rebuilt_rows} rebuilt; "
            f"{self.missing} missing from the target, {self.extra} the rebuild lacks, {self.changed} changed"
        )
        if self.examples:
            text += f" (e.g. {', '.join(self.examples)})"
        return text


def same(column: Column, left: str, right: str) -> str:
    """SQL: the column's two values are equal (NULL equals NULL; floats within the tolerance)."""
    a, b = f"{left}.{sql.ident(column.name)}", f"{right}.{sql.ident(column.name)}"
    if "Float" in column.type:
        close = f"abs({a} - {b}) <= greatest({ABS_TOLERANCE}, {REL_TOLERANCE} * greatest(abs({a}), abs({b})))"
        equal = f"(({a} = {b}) OR (isNaN({a}) AND isNaN({b})) OR {close})"
    else:
        equal = f"({a} = {b})"
    return f"ifNull({equal}, isNull({a}) AND isNull({b}))"


def comparison(columns: Sequence[Column], unique_key: Sequence[str], target_rows: str, rebuilt_rows: str) -> str:
    """SQL: one row of counts comparing two row sets (SELECTs of ``columns``) by unique key."""
    names = sql.column_list([c.name for c in columns])
    alike = " AND ".join(same(c, "t", "r") for c in columns if c.name not in unique_key) or "1"
    both = "t._tr_side = 1 AND r._tr_side = 1"
    differs = f"NOT ({both} AND {alike})"
    key = f"toString(tuple({sql.column_list(list(unique_key))}))"
    return (
        f"SELECT countIf(t._tr_side = 1), countIf(r._tr_side = 1), countIf(t._tr_side = 0), "
        f"countIf(r._tr_side = 0), countIf({both} AND NOT ({alike})), groupArrayIf({EXAMPLES})({key}, {differs}) "
        f"FROM (SELECT {names}, 1 AS _tr_side FROM ({target_rows})) AS t "
        f"FULL OUTER JOIN (SELECT {names}, 1 AS _tr_side FROM ({rebuilt_rows})) AS r "
        f"USING ({sql.column_list(list(unique_key))}) "
        "SETTINGS join_use_nulls = 0"
    )


@dataclass(frozen=True)
class Drawing:
    """How a sample is drawn: its key table beside the target, and the statements that fill it."""

    table: str  # quoted
    key: tuple[str, ...]
    create: sql.Statement
    draw: sql.Statement

    @property
    def statements(self) -> list[sql.Statement]:
        return [self.create, self.draw]


def drawing(
    target: TableInfo,
    name: str,
    key: Sequence[str],
    populations: Sequence[str],
    size: int,
    salt: int,
    params: dict[str, Any],
) -> Drawing:
    """A key table ``name`` beside the target, and the statement that draws ``size`` keys of the
    union of ``populations`` (SELECTs of the key columns) into it, ordered by a hash salted with ``salt``."""
    table = sql.table(target.database, name)
    names = sql.column_list(list(key))
    union = " UNION ALL ".join(f"SELECT {names} FROM ({p})" for p in populations)
    draw = sql.Statement(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM ({keyset.distinct_keys(key, union)}) "
        f"ORDER BY cityHash64({names}, {{sample_salt:UInt64}}) LIMIT {{sample_size:UInt64}}",
        parameters={**params, "sample_salt": salt, "sample_size": size},
        settings={"insert_deduplicate": 0},
    )
    return Drawing(table, tuple(key), keyset.create_statement(target, name, key), draw)


def draw(client: Client, sample: Drawing, made: Callable[[str], None]) -> int:
    """Create the sample's table (``made`` is told of it, for the caller to drop) and draw its keys;
    returns how many it drew. The one sampling of a full run (``verifySample``) and of
    ``tablerefresh verify``, which both then :func:`compare`."""
    sample.create.execute(client)
    made(sample.table)
    sample.draw.execute(client)
    return int(client.query(f"SELECT count() FROM {sample.table}").result_rows[0][0])


def compare(
    client: Client,
    target: TableInfo,
    unique_key: Sequence[str],
    keys: Sequence[str],
    sample_table: str,
    drawn: int,
    rebuilt: str,
    in_slice: str,
    params: dict[str, Any],
) -> SampleReport:
    """Compare the slice rows of the sampled keys in the target and in ``rebuilt`` (quoted names)."""
    columns = [c for c in target.columns if c.default_kind not in ("ALIAS", "EPHEMERAL")]
    names = sql.column_list([c.name for c in columns])
    where = f"{in_slice} AND {keyset.member(keys, sample_table)}"
    query = comparison(
        columns,
        unique_key,
        f"SELECT {names} FROM {target.qualified} WHERE {where}",
        f"SELECT {names} FROM {rebuilt} WHERE {where}",
    )
    row = client.query(query, parameters=params).result_rows[0]
    target_total, rebuilt_total, missing, extra, changed, examples = row
    return SampleReport(
        keys=drawn,
        target_rows=int(target_total),
        rebuilt_rows=int(rebuilt_total),
        missing=int(missing),
        extra=int(extra),
        changed=int(changed),
        examples=tuple(str(e) for e in examples),
    )
