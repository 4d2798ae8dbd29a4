"""Judging staged data before it replaces anything. Pure: numbers in, problems out."""

from __future__ import annotations

from dataclasses import dataclass, field

from tablerefresh.dataplane.run.swap import PartitionChange
from tablerefresh.spec import Thresholds


@dataclass(frozen=True)
class StagingFacts:
    """What a run measured of its staged data and of the slice it is about to replace."""

    duplicates: int
    old_slice_rows: int  # without second copies of a key, when they were counted (see ``measure.surplus``)
    new_slice_rows: int
    changes: tuple[PartitionChange, ...] = ()
    # Rows the source yielded outside the slice predicate, by partition (or "*").
    outside: dict[str, int] = field(default_factory=dict)
    # Keys the source yields that the target also holds outside the slice, in a replaced partition.
    kept_key_clashes: int = 0
    # Keys outside the slice predicate that the swap would remove, by partition (Exchange).
    vanishing: dict[str, int] = field(default_factory=dict)


def staging_problems(facts: StagingFacts, thresholds: Thresholds) -> list[str]:
    """Every reason the staged data must not be swapped in; empty when it may."""
    problems = []
    if facts.duplicates > 0:
        problems.append(f"staging holds {facts.duplicates} duplicate unique key(s)")
    if facts.kept_key_clashes > 0:
        problems.append(
            f"the source yields {facts.kept_key_clashes} key(s) that the target holds outside the slice "
            "predicate, which the run keeps (a row whose key moved into the slice?); "
            "widen the predicate to select those rows"
        )
    if facts.outside:
        where = ", ".join(f"{p}: {n}" for p, n in sorted(facts.outside.items()))
        problems.append(
            f"the source yielded rows outside the slice predicate ({where}); it must yield only the "
            "predicate's rows (the rows outside it are kept from the target)"
        )
    if facts.vanishing:
        where = ", ".join(f"partition {p}: {n}" for p, n in sorted(facts.vanishing.items()))
        problems.append(
            f"key(s) outside the slice predicate would vanish ({where}); "
            "set spec.allowVanishingKeys: true if the source means to drop them"
        )
    if facts.new_slice_rows < thresholds.min_slice_rows:
        problems.append(
            f"the new slice has {facts.new_slice_rows} rows, under minSliceRows {thresholds.min_slice_rows} "
            "(spec.thresholds.minSliceRows; `--min-slice-rows N` overrides it for one command)"
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
            twice = f", not counting {change.old_surplus} whose key it holds twice" if change.old_surplus else ""
            problems.append(
                f"partition {change.partition} would shrink by {change.drop_fraction:.1%} "
                f"({change.old_rows} -> {change.new_rows} rows{twice}), over maxSliceDropFraction {limit:g}"
            )
    return problems
