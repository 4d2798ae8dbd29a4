"""What a ReplacePartitions swap replaces, what each partition will hold, in what order. Pure.

The run and ``tablerefresh plan`` both decide with :func:`swap_plan` (``decide.py``), so what a plan
lists is what the run then replaces. A partition is replaced when the target holds rows in it that the run replaces
or the source yields rows for it; it will hold the source's rows plus the target's rows the run
does not replace, which the run carries over into staging, so no row outside the predicate is ever
lost. A full run replaces the slice's rows; an incremental run only the slice's rows of the keys
that changed, so a partition it touches is rebuilt as its unchanged rows plus the rebuilt ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tablerefresh.dataplane.infra import sql


@dataclass(frozen=True)
class PartitionCounts:
    rows: int
    slice_rows: int
    # An incremental run replaces only the slice rows of the changed keys; None: all slice rows.
    replaced_rows: int | None = None

    @property
    def replaced(self) -> int:
        """Rows the run replaces: the slice's, or in an incremental run its rows of changed keys."""
        return self.slice_rows if self.replaced_rows is None else self.replaced_rows

    @property
    def kept(self) -> int:
        """Rows the run does not replace: it keeps them as they are."""
        return self.rows - self.replaced


@dataclass(frozen=True)
class PartitionChange:
    partition: str
    old_rows: int
    new_rows: int
    kept: int = 0  # of new_rows, the target's rows outside the slice, carried over
    # Of old_rows, the second copies of keys the partition holds more than once (the replace drops
    # them; they are not rows lost). Counted only when the shrink would otherwise stop the run.
    old_surplus: int = 0

    @property
    def drop_fraction(self) -> float:
        distinct = self.old_rows - self.old_surplus
        if distinct <= 0:
            return 0.0
        return max(0, distinct - self.new_rows) / distinct


_NONE = PartitionCounts(0, 0)


def swap_plan(target: Mapping[str, PartitionCounts], source: Mapping[str, int]) -> list[PartitionChange]:
    """The partitions to replace, each with its rows now and after the swap, in swap order."""
    replace = {p for p, c in target.items() if c.replaced} | {p for p, n in source.items() if n}
    return swap_order(
        [
            PartitionChange(
                p,
                old_rows=target.get(p, _NONE).rows,
                new_rows=source.get(p, 0) + target.get(p, _NONE).kept,
                kept=target.get(p, _NONE).kept,
            )
            for p in replace
        ]
    )


def swap_order(changes: list[PartitionChange]) -> list[PartitionChange]:
    """Partitions that grow first, those that shrink last.

    One ALTER swaps the partitions one after another. Rows that move between partitions (a position
    that resolved moves from the open partition to its month) then appear briefly in both rather
    than in neither, so a reader never sees fewer rows than min(old, new).
    """
    return sorted(changes, key=lambda c: (-(c.new_rows - c.old_rows), c.partition))


def swap_statement(target: str, staging: str, changes: list[PartitionChange]) -> str:
    """One ALTER for all of them: a partition left with no rows is dropped. Names already quoted."""
    commands = ", ".join(
        f"REPLACE PARTITION ID {sql.partition_id(c.partition)} FROM {staging}"
        if c.new_rows
        else f"DROP PARTITION ID {sql.partition_id(c.partition)}"
        for c in changes
    )
    return f"ALTER TABLE {target} {commands}"


def mismatched(changes: list[PartitionChange], counted: Mapping[str, int]) -> list[str]:
    """``partition: expected -> counted`` for each partition whose rows are not what its change expects."""
    return [
        f"{c.partition}: {c.new_rows} -> {counted.get(c.partition, 0)}"
        for c in changes
        if counted.get(c.partition, 0) != c.new_rows
    ]
