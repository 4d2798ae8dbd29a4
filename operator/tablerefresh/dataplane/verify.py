"""Judging staged data before it replaces anything. Pure: numbers in, problems out."""

from __future__ import annotations

from dataclasses import dataclass, field

from tablerefresh.spec import Thresholds


@dataclass(frozen=True)
class PartitionChange:
    partition: str
    old_rows: int
    new_rows: int

    @property
    def drop_fraction(self) -> float:
        if self.old_rows == 0:
            return 0.0
        return max(0, self.old_rows - self.new_rows) / self.old_rows


@dataclass(frozen=True)
class StagingFacts:
    """What a run measured of its staged data and of the slice it is about to replace."""

    duplicates: int
    old_slice_rows: int
    new_slice_rows: int
    changes: tuple[PartitionChange, ...] = ()
    # Staged rows that would land outside what the run replaces, by partition (or "*").
    outside: dict[str, int] = field(default_factory=dict)


def staging_problems(facts: StagingFacts, thresholds: Thresholds) -> list[str]:
    """Every reason the staged data must not be swapped in; empty when it may."""
    problems = []
    if facts.duplicates > 0:
        problems.append(f"staging holds {facts.duplicates} duplicate unique key(s)")
    if facts.outside:
        where = ", ".join(f"{p}: {n}" for p, n in sorted(facts.outside.items()))
        problems.append(f"staging holds rows outside the replaced slice ({where})")
    if facts.new_slice_rows < thresholds.min_slice_rows:
        problems.append(
            f"the new slice has {facts.new_slice_rows} rows, under minSliceRows {thresholds.min_slice_rows}"
        )
    limit = thresholds.max_slice_drop_fraction
    if facts.old_slice_rows:
        drop = max(0, facts.old_slice_rows - facts.new_slice_rows) / facts.old_slice_rows
        if drop > limit:
            problems.append(
                f"the slice would shrink by {drop:.1%} ({facts.old_slice_rows} -> {facts.new_slice_rows} rows), "
                f"over maxSliceDropFraction {limit:g}"
            )
    for change in facts.changes:
        if change.drop_fraction > limit:
            problems.append(
                f"partition {change.partition} would shrink by {change.drop_fraction:.1%} "
                f"({change.old_rows} -> {change.new_rows} rows), over maxSliceDropFraction {limit:g}; "
                "a source query must yield whole partitions"
            )
    return problems


def swap_order(changes: list[PartitionChange]) -> list[PartitionChange]:
    """Partitions that grow first, those that shrink last.

    One ALTER swaps the partitions one after another. Rows that move between partitions (a position
    that resolved moves from the open partition to its month) then appear briefly in both rather
    than in neither, so a reader never sees fewer rows than min(old, new).
    """
    return sorted(changes, key=lambda c: (-(c.new_rows - c.old_rows), c.partition))
