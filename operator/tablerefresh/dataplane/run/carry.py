"""The carry-over: the rows of the partitions a ReplacePartitions run replaces that it does not
replace go into staging as they are, so no row outside what the run rebuilds is ever lost.

A full run of the reference replaces nearly all of each partition it touches, and copies the few
rows it keeps (``statements.carry``). An incremental run is the other way round: it replaces the
rows of a few percent of the keys and keeps the rest, most of the open positions' partition, which
copying would rewrite on every run. Instead the run links the target's parts of each partition it
may touch into a table of its own (``ATTACH PARTITION … FROM``: hard links, no data is copied),
marks the rows it replaces as deleted there (a lightweight ``DELETE``, which writes a mask, not the
rows), and links those parts into staging beside the rebuilt rows.

The swap then puts the masked parts back into the target: readers skip the masked rows, and merges
drop them. Until a merge does, the target's parts hold them on disk, at most until the next full
run (``fullEvery``) rewrites the partitions. A table the engine refuses a lightweight delete for
(one with projections) is carried over by copying, as a full run does.

Rows kept whose unique key the source yields too would be duplicates: an incremental run looks for
them among the changed keys' kept rows before the carry-over, a full run counts them after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clickhouse_connect.driver.exceptions import DatabaseError

from tablerefresh.dataplane.infra import catalog, sql
from tablerefresh.dataplane.infra.errors import VerificationFailed, one_line
from tablerefresh.dataplane.infra.failpoints import failpoint
from tablerefresh.dataplane.infra.sql import Statement
from tablerefresh.dataplane.run import keyset, measure, statements
from tablerefresh.dataplane.run.context import RunContext
from tablerefresh.dataplane.run.decide import Decision
from tablerefresh.dataplane.run.statements import RunTables
from tablerefresh.dataplane.run.swap import PartitionCounts

log = logging.getLogger("tablerefresh.dataplane.run")


# -- the run's carry-over ------------------------------------------------------------------------


@dataclass(frozen=True)
class Carried:
    # Keys the source yields that the kept rows hold too: duplicates the run would make (those
    # already among the kept rows are the table's, which the health check reports).
    kept_key_clashes: int
    # Duplicate keys staging then holds (an incremental run: among its changed keys' rows).
    staged_duplicates: int


def link_kept(ctx: RunContext, tables: RunTables, decision: Decision, before: dict[str, PartitionCounts]) -> bool:
    """An incremental run's kept rows, linked and masked (``decision.link``); False when the engine
    refuses the mask, and the run copies them instead."""
    *link, mask = decision.link
    touched = list(decision.touched)
    with ctx.step(f"link the rows of {len(touched)} partition(s) and mark the replaced ones"):
        _link(ctx, tables, link, before, touched)
        try:
            _mask(ctx, tables, link, mask, before, touched)
        except DatabaseError as exc:
            log.warning("cannot mark rows deleted (%s): copying the unchanged rows instead", one_line(exc))
            return False
    failpoint("linked")
    return True


def _link(
    ctx: RunContext, tables: RunTables, link: list[Statement], before: dict[str, PartitionCounts], touched: list[str]
) -> None:
    """Link the target's parts of ``touched`` into the kept table, which must hold the rows
    ``before`` says the target holds there."""
    ctx.make(link, tables.kept)
    linked = catalog.partition_rows(ctx.client, tables.kept)
    moved = [f"{p}: {before[p].rows} -> {linked.get(p, 0)}" for p in touched if linked.get(p, 0) != before[p].rows]
    if moved:
        raise VerificationFailed(
            f"rows changed in {ctx.target} while the run read it ({', '.join(moved)}); {ctx.target} was not changed"
        )


def _mask(
    ctx: RunContext,
    tables: RunTables,
    link: list[Statement],
    mask: Statement,
    before: dict[str, PartitionCounts],
    touched: list[str],
) -> None:
    """Mark the rows the run replaces deleted in the kept table.

    The engine tests a mask's condition twice per row (whether a part is touched, then each row),
    so the mask compares the keys by a 64-bit hash, several times cheaper to test than the key
    tuples (``Scope.replaced_by_hash``). That marks every replaced row, and on a hash collision a
    row of an unchanged key too; so the rows it leaves are checked against the replaced rows counted
    exactly (``measure.target_counts``), and if the mask took more, the run links the partitions
    again and masks by the key tuples."""
    ctx.execute([mask])
    kept = catalog.partition_rows(ctx.client, tables.kept)
    if all(before[p].kept == kept.get(p, 0) for p in touched):
        return
    log.warning(
        "the key hash of an unchanged key collides with a changed key's: marking the replaced rows by their keys"
    )
    sql.drop_table(tables.kept).execute(ctx.client)
    ctx.made.remove(tables.kept)
    _link(ctx, tables, link, before, touched)
    ctx.execute([statements.mask(tables.kept, ctx.scope.replaced, ctx.params)])


def carry_over(
    ctx: RunContext, tables: RunTables, decision: Decision, before: dict[str, PartitionCounts], *, linked: bool
) -> Carried:
    """Carry the replaced partitions' kept rows into staging, as they are: linked from the kept
    table, or copied."""
    source_duplicates, scope = decision.facts.duplicates, ctx.scope
    carried = decision.carried
    if not carried:
        return Carried(0, source_duplicates)
    clashes = 0
    if scope.incremental:
        # Only partitions with rows outside the slice hold kept rows of changed keys.
        outside = [p for p in carried if before[p].rows != before[p].slice_rows]
        clashes = _changed_key_clashes(ctx, tables, outside)
    carry = decision.carry if linked else statements.carry(tables, scope, carried, ctx.params, linked=False)
    what = "unchanged rows" if scope.incremental else "rows outside the slice"
    with ctx.step(f"carry over the {what} of {len(carried)} partition(s)"):
        ctx.execute(list(carry))
    failpoint("carried")
    if scope.incremental:
        return Carried(clashes, source_duplicates + clashes)
    unique_key = ctx.spec.unique_key
    kept_duplicates = measure.duplicates(
        ctx.client, unique_key, tables.target.qualified, statements.kept_rows(scope, carried), ctx.params
    )
    staged_duplicates = measure.duplicates(ctx.client, unique_key, tables.staging)
    return Carried(staged_duplicates - source_duplicates - kept_duplicates, staged_duplicates)


def _changed_key_clashes(ctx: RunContext, tables: RunTables, partitions: list[str]) -> int:
    """Kept rows whose unique key the source yields too. The source yields changed keys only, so
    only the changed keys' kept rows (those outside the slice) can clash: no need to count the
    duplicates of every kept row, as a full run does. ``partitions``: those with rows outside the
    slice (none, in a table partitioned by the slice)."""
    if not partitions:
        return 0
    keys = sql.column_list(ctx.spec.unique_key)
    staged = keyset.member(ctx.spec.unique_key, f"(SELECT {keys} FROM {tables.staging})")
    # The slice test first: it is cheap, and false for every row of a partition wholly in the slice.
    where = f"_partition_id IN {{carried:Array(String)}} AND NOT {ctx.in_slice} AND {ctx.scope.changed} AND {staged}"
    return measure.count(ctx.client, ctx.scope, tables.target.qualified, where, {**ctx.params, "carried": partitions})
