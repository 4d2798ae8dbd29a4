"""What a run would do, computed without changing anything: no lock, no staging table.

The source query runs once, aggregated: rows per partition id (``partitionId`` of the target's
partition key, as the target would store them), slice rows, and duplicate keys. With an incremental
spec the plan makes the run's choice (full or incremental) from the runs table, and binds the
changed keys' table name to a CTE of the changed-keys query instead of creating the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tablerefresh.dataplane import keyset, names, sql
from tablerefresh.dataplane.refresh import Refresh
from tablerefresh.dataplane.swap import PartitionChange, swap_plan, swap_statement
from tablerefresh.dataplane.verify import StagingFacts, staging_problems
from tablerefresh.spec import Strategy


@dataclass(frozen=True)
class Plan:
    target: str
    strategy: str
    window_start: str
    changes: list[PartitionChange]
    source_rows: int
    source_duplicates: int
    old_slice_rows: int
    new_slice_rows: int
    outside: dict[str, int]
    statements: list[str]
    problems: list[str] = field(default_factory=list)
    kind: str = ""  # Full or Incremental, as the run would choose (every run of a spec without incremental is Full)
    kind_reason: str = ""
    since: str | None = None
    changed_keys: int | None = None

    @property
    def would_run(self) -> bool:
        return not self.problems


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


def plan(refresh: Refresh) -> Plan:
    target = refresh.check_inputs()
    kind = refresh.choose_kind()
    client, spec, params, scope = refresh.client, refresh.spec, refresh.params, refresh.scope
    tq, predicate = target.qualified, refresh.in_slice
    keys = f"tuple({sql.column_list(spec.unique_key)})"
    pid = f"partitionId({partition_key_args(target.partition_key)})" if target.partition_key else "'all'"
    source = scope.source_rows(refresh.source_query, "*")
    changed_keys: int | None = None
    replaced: str | None = None
    key_statements: list[str] = []
    if spec.incremental is not None:
        keys_table = sql.table(target.database, scope.keys_name)
        changed = keyset.distinct_keys(scope.key, spec.incremental.changed_keys_query)
        key_statements.append(f"CREATE TABLE {keys_table} ({sql.column_list(list(scope.key))}) (the changed keys)")
        if kind.incremental:
            source = keyset.with_keys(scope.keys_name, changed, source)
            replaced = f"ifNull({predicate} AND {keyset.member(scope.key, f'({changed})')}, 0)"
            changed_keys = int(client.query(f"SELECT count() FROM ({changed})", parameters=params).result_rows[0][0])
            key_statements.append(f"INSERT INTO {keys_table} {changed_keys} key(s) the changed-keys query yields")
        else:  # a full run: the source finds the table, empty, and reads all rows
            source = keyset.with_keys(scope.keys_name, keyset.no_keys(target, scope.key), source)
    rows = client.query(
        f"SELECT grouping(p) AS total, {pid} AS p, count(), countIf({predicate}), uniqExact({keys}) "
        f"FROM ({source}) GROUP BY GROUPING SETS ((p), ())",
        parameters=params,
    ).result_rows
    per_partition = {str(r[1]): (int(r[2]), int(r[3])) for r in rows if r[0] == 0}
    totals = next(r for r in rows if r[0] == 1)
    source_rows, new_slice, distinct = int(totals[2]), int(totals[3]), int(totals[4])
    before = refresh.target_counts(tq, replaced)
    old_slice_rows = sum(c.slice_rows for c in before.values())
    new_slice = old_slice_rows - sum(c.replaced for c in before.values()) + new_slice
    staging = sql.table(target.database, names.staging_table(target.name, refresh.options.run_id))
    rebuilt = "the changed keys' rows" if kind.incremental else "SELECT …"
    statements = [
        *key_statements,
        f"CREATE TABLE {staging} AS {tq}",
        f"INSERT INTO {staging} {rebuilt} FROM (<source query>)",
    ]
    outside = {p: rows - in_slice for p, (rows, in_slice) in per_partition.items() if rows != in_slice}
    vanishing: dict[str, int] = {}
    if spec.strategy == Strategy.REPLACE_PARTITIONS:
        # The same decision the run makes, from the same counts: the source's per partition, the target's.
        changes, old_slice_rows = refresh.without_surplus(
            tq, swap_plan(before, {p: rows for p, (rows, _) in per_partition.items()}), old_slice_rows, new_slice
        )
        carried = [c.partition for c in changes if c.kept]
        if changed_keys == 0:
            changes, carried, statements = [], [], [*key_statements, "no key changed: nothing to rebuild or swap"]
        if carried:
            kept = "the unchanged rows" if kind.incremental else "the rows outside the slice"
            where = f"{kept} of partitions {', '.join(carried)}"
            statements.append(f"INSERT INTO {staging} SELECT … FROM {tq} WHERE {where}")
        if spec.backup.keep:
            statements.append(f"copy partitions {', '.join(c.partition for c in changes)} of {tq} to a backup table")
        if changes:
            statements.append(swap_statement(tq, staging, changes))
    elif spec.strategy == Strategy.EXCHANGE:
        total = sum(c.rows for c in before.values())
        changes = [PartitionChange("*", total, source_rows)]
        outside = {}
        vanishing = refresh.vanishing_keys(tq, f"({refresh.source_query})")
        statements += [f"EXCHANGE TABLES {tq} AND {staging}", "keep the previous table as a backup"]
    else:
        changes = []
        outside = {"*": sum(outside.values())} if outside else {}
        if spec.backup.keep:
            statements.append(f"copy the rows of {tq} WHERE {predicate} to a backup table")
        statements += [f"ALTER TABLE {tq} DELETE WHERE {predicate}", f"INSERT INTO {tq} SELECT * FROM {staging}"]
    made = [staging] if changed_keys != 0 else []
    if key_statements:
        made.append(sql.table(target.database, scope.keys_name))
    statements.append(f"DROP TABLE {', '.join(made)}")
    facts = StagingFacts(
        duplicates=source_rows - distinct,
        old_slice_rows=old_slice_rows,
        new_slice_rows=new_slice,
        changes=tuple(changes),
        outside=outside,
        vanishing=vanishing,
    )
    return Plan(
        target=refresh.record.target,
        strategy=spec.strategy.value,
        window_start=str(refresh.window_start),
        changes=changes,
        source_rows=source_rows,
        source_duplicates=facts.duplicates,
        old_slice_rows=facts.old_slice_rows,
        new_slice_rows=new_slice,
        outside=outside,
        statements=statements,
        problems=staging_problems(facts, spec.thresholds),
        kind=kind.kind,
        kind_reason=kind.reason,
        since=None if kind.since is None else str(kind.since),
        changed_keys=changed_keys,
    )
