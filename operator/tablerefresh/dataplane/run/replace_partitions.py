"""ReplacePartitions: the partitions the slice touches, rebuilt in staging with the rows the run
keeps carried over, then swapped in with one ``ALTER TABLE … REPLACE PARTITION`` (``swap.py``).

Read top to bottom: the changed keys (an incremental spec), staging, measure and decide, the
carry-over, the checks, a full run's sample of keys, the backup, the swap and its check.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.dataplane.infra import catalog, sql
from tablerefresh.dataplane.infra.errors import FailedAfterSwap, RefreshError, VerificationFailed, one_line
from tablerefresh.dataplane.infra.failpoints import failpoint
from tablerefresh.dataplane.infra.lock import TableLock
from tablerefresh.dataplane.run import carry, measure, sample, staging
from tablerefresh.dataplane.run.context import RunContext
from tablerefresh.dataplane.run.decide import Decision, Frame, nothing_to_rebuild
from tablerefresh.dataplane.run.swap import PartitionChange, mismatched
from tablerefresh.dataplane.run.unanswered import Landed, find_out_swap, top_blocks

log = logging.getLogger("tablerefresh.dataplane.run")


def replace_partitions(ctx: RunContext, frame: Frame, lock: TableLock) -> None:
    tables, tq = frame.tables, frame.tables.target.qualified
    changed = staging.changed_keys(ctx, frame) if ctx.scope.keyed else None
    if nothing_to_rebuild(ctx.scope, changed):
        _nothing_changed(ctx, tq)
        return
    unchanged = staging.load(ctx, frame)
    with ctx.step("verify staging"):
        measured = staging.measured(ctx, frame, changed_keys=changed, unchanged_rows=unchanged)
        before = measured.target
        decision = measure.decision(ctx.client, frame, measured, ctx.clock())
        linked = ctx.scope.incremental and carry.link_kept(ctx, tables, decision, before)
        carried = carry.carry_over(ctx, tables, decision, before, linked=linked)
        staged = catalog.partition_rows(ctx.client, tables.staging)
        ctx.record.partitions = decision.partitions
        moved = mismatched(list(decision.changes), staged)
        if moved:
            raise VerificationFailed(
                f"rows outside the slice changed in {ctx.target} while the run built staging "
                f"(expected -> staged: {', '.join(moved)}); {ctx.target} was not changed"
            )
        facts = dataclasses.replace(decision.facts, kept_key_clashes=carried.kept_key_clashes)
        staging.verify(ctx, frame, facts)
    if decision.sample is not None:
        ctx.quietly("compare a sample of keys", lambda: _compare_sample(ctx, frame, decision))
    _swap(ctx, frame, decision, lock)
    with ctx.step("verify the swap"):
        # Each replaced partition must now hold exactly the staged parts. Then its keys are the
        # staged keys, already checked for duplicates, and its slice rows are the staged ones.
        after = catalog.partition_rows(
            ctx.client, tq, "_partition_id IN {replace:Array(String)}", {"replace": decision.partitions}
        )
        wrong = mismatched(list(decision.changes), after)
        if wrong:
            raise FailedAfterSwap(
                f"after the swap {ctx.target} does not hold the staged rows (expected -> found: {', '.join(wrong)}); "
                "the swap ran, the target is changed"
            )
        ctx.record.duplicates = carried.staged_duplicates
        ctx.record.rows_after = measure.count(ctx.client, ctx.scope, tq)
        ctx.record.slice_rows_after = facts.new_slice_rows
    staging.prune_backups(ctx, ctx.spec.backup.keep)


def _nothing_changed(ctx: RunContext, tq: str) -> None:
    """No key changed: nothing to rebuild, nothing to swap; the run succeeds as it is."""
    record = ctx.record
    record.rows_before = record.rows_after = measure.count(ctx.client, ctx.scope, tq)
    record.slice_rows_before = record.slice_rows_after = measure.count(
        ctx.client, ctx.scope, tq, ctx.in_slice, ctx.params
    )


def _compare_sample(ctx: RunContext, frame: Frame, decision: Decision) -> None:
    drawing = decision.sample
    assert drawing is not None and ctx.spec.incremental is not None
    size = ctx.spec.incremental.verify_sample
    with ctx.step(f"compare {size} sampled key(s) with what the incremental runs left"):
        drawn = sample.draw(ctx.client, drawing, ctx.made.append)
        report = sample.compare(
            ctx.client,
            frame.tables.target,
            ctx.spec.unique_key,
            drawing.key,
            drawing.table,
            drawn,
            frame.tables.staging,
            ctx.in_slice,
            ctx.params,
        )
    ctx.record.sample_keys, ctx.record.sample_differences = report.keys, report.differences
    if report.differences:
        log.warning(
            "the incremental runs since the last full run left rows a full rebuild does not give, for %s; "
            "this full run repairs them (changes later than incremental.lateness?)",
            report.describe(),
        )
    else:
        log.info("sample: %s", report.describe())


def _swap(ctx: RunContext, frame: Frame, decision: Decision, lock: TableLock) -> None:
    changes = list(decision.changes)
    with ctx.step(f"swap {len(changes)} partition(s)"):
        lock.assert_held()
        if decision.backup:
            ctx.execute(list(decision.backup))
            failpoint("backed-up")
        if changes:
            ctx.swap.start(
                f"the swap of partitions {', '.join(decision.partitions)} into {frame.tables.target.qualified} "
                "ran or may have run, so the target may hold new partitions; the next run rebuilds them"
            )
            _send_swap(ctx, frame, changes, decision.swap[0].text)
        failpoint("swapped")


def _send_swap(ctx: RunContext, frame: Frame, changes: list[PartitionChange], statement: str) -> None:
    """The swap statement; when its answer does not arrive (or is an error), find out on a new
    connection what it did (``unanswered.py``): carry on if it ran, say "not changed" only if
    every partition holds the parts it had, and what is known otherwise."""
    target, staged = frame.tables.target, frame.tables.staging
    before = top_blocks(ctx.client, ctx.database, target.name, [c.partition for c in changes])
    query_id = f"tablerefresh-swap-{ctx.options.run_id}-{secrets.token_hex(4)}"
    try:
        ctx.client.command(statement, settings={"query_id": query_id})
        return
    except ClickHouseError as exc:
        cause = one_line(exc)
    log.warning("the swap's answer: %s; looking at the target's partitions on a new connection", cause)

    def drop_staging(client: Client) -> None:
        sql.drop_table(staged).execute(client)

    found = find_out_swap(ctx.connect, ctx.database, target.name, changes, before, query_id, drop_staging)
    if found.client is not None:
        ctx.use_client(found.client, "the swap")
    if found.staging_dropped and staged in ctx.made:
        ctx.made.remove(staged)
    if found.landed is Landed.ALL:
        log.warning("the swap ran (%s): carrying on", found.detail)
        return
    if found.landed is Landed.NONE:
        ctx.swap.did_not_run()
        raise RefreshError(
            f"{cause} while sending the swap; on a new connection {found.detail}: "
            f"the swap did not run, {ctx.target} was not changed"
        )
    if found.landed is Landed.SOME:
        raise FailedAfterSwap(
            f"{cause} while sending the swap; on a new connection {found.detail}: "
            f"{ctx.target} holds part of the new data; the next run rebuilds every partition of the slice"
        )
    raise FailedAfterSwap(
        f"{cause} while sending the swap, and whether it ran is unknown ({found.detail}): "
        f"{ctx.target} may hold new partitions; the next run rebuilds them"
    )
