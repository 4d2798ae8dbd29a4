"""What a run would do, computed without changing anything: no lock, no staging table.

The source query runs once, aggregated: rows per partition id (``partitionId`` of the target's
partition key, as the target would store them), slice rows, and duplicate keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tablerefresh.dataplane import names, sql
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
    client, spec, params = refresh.client, refresh.spec, refresh.params
    tq, predicate = target.qualified, refresh.in_slice
    keys = f"tuple({sql.column_list(spec.unique_key)})"
    pid = f"partitionId({partition_key_args(target.partition_key)})" if target.partition_key else "'all'"
    rows = client.query(
        f"SELECT grouping(p) AS total, {pid} AS p, count(), countIf({predicate}), uniqExact({keys}) "
        f"FROM ({refresh.source_query}) GROUP BY GROUPING SETS ((p), ())",
        parameters=params,
    ).result_rows
    per_partition = {str(r[1]): (int(r[2]), int(r[3])) for r in rows if r[0] == 0}
    totals = next(r for r in rows if r[0] == 1)
    source_rows, new_slice, distinct = int(totals[2]), int(totals[3]), int(totals[4])
    before = refresh.partition_counts(tq)
    old_slice_rows = sum(c.slice_rows for c in before.values())
    staging = sql.table(target.database, names.staging_table(target.name, refresh.options.run_id))
    statements = [f"CREATE TABLE {staging} AS {tq}", f"INSERT INTO {staging} SELECT … FROM (<source query>)"]
    outside = {p: rows - in_slice for p, (rows, in_slice) in per_partition.items() if rows != in_slice}
    vanishing: dict[str, int] = {}
    if spec.strategy == Strategy.REPLACE_PARTITIONS:
        # The same decision the run makes, from the same counts: the source's per partition, the target's.
        changes, old_slice_rows = refresh.without_surplus(
            tq, swap_plan(before, {p: rows for p, (rows, _) in per_partition.items()}), old_slice_rows, new_slice
        )
        carried = [c.partition for c in changes if c.kept]
        if carried:
            statements.append(
                f"INSERT INTO {staging} SELECT … FROM {tq} WHERE the rows outside the slice of partitions "
                + ", ".join(carried)
            )
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
    statements.append(f"DROP TABLE {staging}")
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
    )
