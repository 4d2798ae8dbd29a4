"""What a run will do, decided from what it measured: which partitions it replaces and what each will
hold, the facts about its staged data that the checks judge, and the statements it executes, in
order. Pure: measurements in, a :class:`Decision` out.

The run decides once it has built and measured staging; ``tablerefresh plan`` decides from the same
measurements of the source, changing nothing. Both call :func:`decide`, so what a plan prints is
what the run then executes.

The statements it lists are the run's data path: the changed keys, staging, the rows it keeps
(linked and masked by an incremental run, ``carry.py``), a full run's sample of keys, the backup, the
swap, and dropping its tables. Not listed: the lock, the runs table, cleaning up after crashed runs
and pruning old backups.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.sql import Statement
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.run import sample, statements
from tablerefresh.dataplane.run.scope import Scope
from tablerefresh.dataplane.run.statements import RunTables
from tablerefresh.dataplane.run.swap import PartitionChange, PartitionCounts, swap_plan
from tablerefresh.dataplane.run.verify import StagingFacts
from tablerefresh.spec import Strategy, TableRefreshSpec


@dataclass(frozen=True)
class Frame:
    """A run before it measures anything: what it rebuilds, from what, into which tables."""

    spec: TableRefreshSpec
    run_id: str
    run_time: datetime
    scope: Scope
    params: dict[str, Any]
    tables: RunTables
    source_query: str
    source_columns: list[str]

    @property
    def samples(self) -> bool:
        """A full run of an incremental spec compares a sample of keys before it replaces them, when
        what it replaces is what runs of the same definition left."""
        incremental, kind = self.spec.incremental, self.scope.kind
        return incremental is not None and incremental.verify_sample > 0 and not kind.incremental and kind.continues


@dataclass(frozen=True)
class Rebuilt:
    """The rebuilt rows (staging's, or the plan's source's): per partition, rows and slice rows; in
    all, rows, slice rows and duplicate unique keys."""

    partitions: dict[str, PartitionCounts]
    rows: int
    slice_rows: int
    duplicates: int

    @property
    def outside(self) -> dict[str, int]:
        """Rows outside the slice predicate, by partition."""
        return {p: c.rows - c.slice_rows for p, c in self.partitions.items() if c.rows != c.slice_rows}


@dataclass(frozen=True)
class Surplus:
    """Second copies of a key the target holds: per partition, and among its slice rows."""

    partitions: dict[str, int]
    slice_rows: int


@dataclass(frozen=True)
class Measured:
    rebuilt: Rebuilt
    target: dict[str, PartitionCounts]  # with the rows an incremental run replaces
    changed_keys: int | None = None  # an incremental run's
    unchanged_rows: int = 0  # rows of keys that did not change, which the source yielded anyway
    vanishing: dict[str, int] = field(default_factory=dict)  # Exchange's
    surplus: Surplus | None = None  # counted only when a shrink would stop the run


@dataclass(frozen=True)
class Decision:
    changes: tuple[PartitionChange, ...]
    facts: StagingFacts  # without the kept rows' key clashes, which a full run counts after the carry-over
    keys: tuple[Statement, ...] = ()
    staging: tuple[Statement, ...] = ()
    link: tuple[Statement, ...] = ()  # an incremental run's kept rows, linked, then masked
    carry: tuple[Statement, ...] = ()
    sample: sample.Drawing | None = None
    backup: tuple[Statement, ...] = ()
    swap: tuple[Statement, ...] = ()
    drop: tuple[Statement, ...] = ()
    touched: tuple[str, ...] = ()  # partitions an incremental run links: those it may replace rows in
    nothing_changed: bool = False  # no key changed: nothing to rebuild, nothing to swap
    needs_surplus: bool = False  # a shrink would stop the run: decide again with Measured.surplus

    @property
    def partitions(self) -> list[str]:
        return [c.partition for c in self.changes]

    @property
    def carried(self) -> list[str]:
        """The replaced partitions with rows the run keeps, which it carries over into staging."""
        return [c.partition for c in self.changes if c.kept]

    @property
    def statements(self) -> list[Statement]:
        drawn = self.sample.statements if self.sample is not None else []
        phases = (self.keys, self.staging, self.link, self.carry, drawn, self.backup, self.swap, self.drop)
        return [s for phase in phases for s in phase]


def nothing_to_rebuild(scope: Scope, changed_keys: int | None) -> bool:
    """An incremental run whose changed-keys query found no key."""
    return scope.incremental and changed_keys == 0


def decide(frame: Frame, measured: Measured, taken_at: datetime) -> Decision:
    """What the run does, given what it measured; ``taken_at`` names its backup."""
    tables, scope, params, spec = frame.tables, frame.scope, frame.params, frame.spec
    keys = statements.changed_keys(
        tables, scope, spec.incremental.changed_keys_query if spec.incremental else "", params
    )
    made = [tables.keys] if scope.keyed else []
    if nothing_to_rebuild(scope, measured.changed_keys):
        slice_rows = sum(c.slice_rows for c in measured.target.values())
        facts = StagingFacts(duplicates=0, old_slice_rows=slice_rows, new_slice_rows=slice_rows)
        return Decision((), facts, tuple(keys), drop=tuple(statements.drop(made)), nothing_changed=True)
    staging = statements.load_staging(tables, frame.source_columns, frame.source_query, params, spec.source.batches)
    if measured.unchanged_rows:
        staging.append(statements.drop_unchanged(tables, scope, params))
    made.append(tables.staging)
    decided = {
        Strategy.REPLACE_PARTITIONS: _replace_partitions,
        Strategy.EXCHANGE: _exchange,
        Strategy.DELETE_INSERT: _delete_insert,
    }[spec.strategy](frame, measured, taken_at, made)
    return replace(decided, keys=tuple(keys), staging=tuple(staging), drop=tuple(statements.drop(made)))


def _replace_partitions(frame: Frame, measured: Measured, taken_at: datetime, made: list[str]) -> Decision:
    tables, scope, spec, before, rebuilt = frame.tables, frame.scope, frame.spec, measured.target, measured.rebuilt
    old_slice_rows = sum(c.slice_rows for c in before.values())
    # The slice after the swap: the rows not replaced, and the rebuilt ones.
    new_slice_rows = old_slice_rows - sum(c.replaced for c in before.values()) + rebuilt.slice_rows
    changes = swap_plan(before, {p: c.rows for p, c in rebuilt.partitions.items()})
    needs_surplus = False
    if _shrinks(frame, changes, old_slice_rows, new_slice_rows):
        if measured.surplus is None:
            needs_surplus = True
        else:
            # Counted as rows, second copies of a key (an engine that died inside a swap) would make
            # a shrinking partition look halved: measured without them (``measure.surplus``).
            surplus = measured.surplus
            changes = [replace(c, old_surplus=surplus.partitions.get(c.partition, 0)) for c in changes]
            old_slice_rows -= surplus.slice_rows
    carried = [c.partition for c in changes if c.kept]
    link: list[Statement] = []
    touched: list[str] = []
    if scope.incremental:
        touched = sorted(p for p in before if before[p].slice_rows or p in rebuilt.partitions)
        link = [*statements.link(tables, touched), statements.mask(tables.kept, scope.replaced_by_hash, frame.params)]
        made.append(tables.kept)
    drawing = _drawing(frame, made)
    backup: list[Statement] = []
    if spec.backup.keep:
        present = [c.partition for c in changes if c.old_rows]
        _, backup = backups.partitions_backup(
            tables.target, frame.run_id, [c.partition for c in changes], present, taken_at
        )
    facts = StagingFacts(
        duplicates=rebuilt.duplicates,
        old_slice_rows=old_slice_rows,
        new_slice_rows=new_slice_rows,
        changes=tuple(changes),
        outside=rebuilt.outside,
    )
    return Decision(
        tuple(changes),
        facts,
        link=tuple(link),
        carry=tuple(statements.carry(tables, scope, carried, frame.params, linked=scope.incremental)),
        sample=drawing,
        backup=tuple(backup),
        swap=tuple(statements.replace_partitions(tables, changes)),
        touched=tuple(touched),
        needs_surplus=needs_surplus,
    )


def _shrinks(frame: Frame, changes: list[PartitionChange], old_slice_rows: int, new_slice_rows: int) -> bool:
    """Whether the slice, or a partition, would shrink by more than the threshold allows."""
    limit = frame.spec.thresholds.max_slice_drop_fraction
    slice_drop = max(0, old_slice_rows - new_slice_rows) / old_slice_rows if old_slice_rows else 0.0
    return slice_drop > limit or any(c.drop_fraction > limit for c in changes)


def _exchange(frame: Frame, measured: Measured, taken_at: datetime, made: list[str]) -> Decision:
    tables, before, rebuilt = frame.tables, measured.target, measured.rebuilt
    changes = (PartitionChange("*", sum(c.rows for c in before.values()), rebuilt.rows),)
    facts = StagingFacts(
        duplicates=rebuilt.duplicates,
        old_slice_rows=sum(c.slice_rows for c in before.values()),
        new_slice_rows=rebuilt.slice_rows,
        changes=changes,
        vanishing=measured.vanishing,
    )
    # From the exchange on, the staging name holds the previous table, which becomes the backup.
    made.remove(tables.staging)
    _, keep = backups.table_backup(tables.target, frame.run_id, tables.staging_name, taken_at)
    return Decision(changes, facts, swap=(statements.exchange(tables), *keep))


def _delete_insert(frame: Frame, measured: Measured, taken_at: datetime, made: list[str]) -> Decision:
    tables, before, rebuilt = frame.tables, measured.target, measured.rebuilt
    outside = rebuilt.rows - rebuilt.slice_rows
    facts = StagingFacts(
        duplicates=rebuilt.duplicates,
        old_slice_rows=sum(c.slice_rows for c in before.values()),
        new_slice_rows=rebuilt.slice_rows,
        outside={"*": outside} if outside else {},
    )
    backup: list[Statement] = []
    if frame.spec.backup.keep:
        _, backup = backups.rows_backup(tables.target, frame.run_id, frame.scope.in_slice, frame.params, taken_at)
    swap = statements.delete_insert(tables, frame.scope, frame.params)
    return Decision((), facts, backup=tuple(backup), swap=tuple(swap))


def _drawing(frame: Frame, made: list[str]) -> sample.Drawing | None:
    """A full run's sample of keys, drawn from the target's slice and staging's (``sample.py``); only
    an incremental spec's full runs draw one, and only ReplacePartitions runs incrementally."""
    if not frame.samples:
        return None
    assert frame.spec.incremental is not None
    tables, key, in_slice = frame.tables, frame.scope.key, frame.scope.in_slice
    columns = sql.column_list(list(key))
    populations = [f"SELECT {columns} FROM {t} WHERE {in_slice}" for t in (tables.target.qualified, tables.staging)]
    size, salt = frame.spec.incremental.verify_sample, int(frame.run_time.timestamp())
    drawing = sample.drawing(tables.target, tables.sample_name, key, populations, size, salt, frame.params)
    made.append(drawing.table)
    return drawing
