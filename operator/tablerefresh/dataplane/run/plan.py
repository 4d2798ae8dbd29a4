"""What a run would do, computed without changing anything: no lock, no staging table.

The plan checks the inputs, chooses the kind of run from the runs table, and measures what the run
measures (``measure.py``): the target, with the same queries, and for staging, which it does not
build, the source's rows as staging would hold them. The changed keys, which the run writes into a
table, are bound to a CTE of the changed-keys query under the table's name. Then it calls the run's
:func:`decide.decide`, so it lists the partitions the run replaces and the statements it executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import sql_guard
from tablerefresh.dataplane.run import keyset, measure, runs
from tablerefresh.dataplane.run.decide import Decision, Frame, Measured, Rebuilt, nothing_to_rebuild
from tablerefresh.dataplane.run.incremental import choose
from tablerefresh.dataplane.run.inputs import check_inputs, source_text
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.scope import run_params, run_scope, run_time_of, window_start
from tablerefresh.dataplane.run.statements import run_tables
from tablerefresh.dataplane.run.swap import PartitionChange
from tablerefresh.dataplane.run.verify import staging_problems
from tablerefresh.spec import Strategy, TableRefreshSpec


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


def plan(client: Client, spec: TableRefreshSpec, source_query: str, options: RunOptions) -> Plan:
    """What a run with ``options`` would do now (``options.clock`` names its backup)."""
    decision, frame, rebuilt, changed = decide_now(client, spec, source_query, options)
    facts = decision.facts
    kind = frame.scope.kind
    return Plan(
        target=f"{spec.clickhouse.database}.{spec.target.table}",
        strategy=spec.strategy.value,
        window_start=str(window_start(spec, frame.run_time)),
        changes=list(decision.changes),
        source_rows=rebuilt.rows,
        source_duplicates=facts.duplicates,
        old_slice_rows=facts.old_slice_rows,
        new_slice_rows=facts.new_slice_rows,
        outside=facts.outside,
        statements=[s.text for s in decision.statements],
        problems=staging_problems(facts, spec.thresholds),
        kind=kind.kind,
        kind_reason=kind.reason,
        since=None if kind.since is None else str(kind.since),
        changed_keys=changed,
    )


def decide_now(
    client: Client, spec: TableRefreshSpec, source_query: str, options: RunOptions
) -> tuple[Decision, Frame, Rebuilt, int | None]:
    """The run's decision, from the source and the target as they are now."""
    run_time = run_time_of(options.run_time)
    scope = run_scope(spec, options.run_id)
    params = run_params(spec, run_time, scope)
    source_query = source_text(source_query)
    sql_guard.check_predicate(client, spec.slice.predicate, params)
    inputs = check_inputs(client, spec, source_query, scope, params)
    target = inputs.target
    past = runs.History()
    if spec.incremental is not None:
        past = runs.history(client, target.database, f"{target.database}.{target.name}", inputs.definition)
    scope.kind = choose(spec.incremental, past, inputs.definition, run_time, force_full=options.force_full)
    params.update(scope.params())
    changed: int | None = None
    if spec.incremental is not None:
        # No key table: its name bound to the changed keys (an incremental run), or to none (a full one).
        if scope.incremental:
            scope.keys_query = keyset.distinct_keys(scope.key, spec.incremental.changed_keys_query)
            changed = measure.count(client, scope, f"({scope.keys_query})", params=params)
        else:
            scope.keys_query = keyset.no_keys(target, scope.key)
    tables = run_tables(target, options.run_id, spec.strategy, scope.keys_name)
    frame = Frame(spec, options.run_id, run_time, scope, params, tables, source_query, inputs.source_columns)
    source = f"({source_query})"
    unchanged = 0 if nothing_to_rebuild(scope, changed) else measure.unchanged_rows(client, scope, source, params)
    staged = measure.source_as_staged(target, scope.source_rows(source_query, "*"))
    rebuilt = measure.rebuilt(client, scope, spec.unique_key, staged, params, once=True)
    before = measure.target_counts(client, scope, target.qualified, params)
    vanishing: dict[str, int] = {}
    if spec.strategy == Strategy.EXCHANGE:
        vanishing = measure.vanishing_keys(client, scope, spec, target.qualified, source, params)
    measured = Measured(rebuilt, before, changed_keys=changed, unchanged_rows=unchanged, vanishing=vanishing)
    return measure.decision(client, frame, measured, options.clock()), frame, rebuilt, changed
