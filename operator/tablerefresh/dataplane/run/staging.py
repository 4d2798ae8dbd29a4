"""The steps every strategy shares: the changed keys, staging built from the source, the checks that
judge it before the swap, and what the target holds after.
"""

from __future__ import annotations

import logging
from typing import Any

from tablerefresh.dataplane.infra.errors import AuditFailed, VerificationFailed
from tablerefresh.dataplane.infra.failpoints import failpoint
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.run import audits, measure, statements
from tablerefresh.dataplane.run.context import RunContext
from tablerefresh.dataplane.run.decide import Frame, Measured
from tablerefresh.dataplane.run.verify import StagingFacts, staging_problems

log = logging.getLogger("tablerefresh.dataplane.run")


def changed_keys(ctx: RunContext, frame: Frame) -> int | None:
    """The key table every run of an incremental spec names: the changed keys in an incremental run
    (returns how many), empty in a full run (whose source reads everything, but must find the table)."""
    assert ctx.spec.incremental is not None
    incremental, tables = ctx.scope.incremental, frame.tables
    query = ctx.spec.incremental.changed_keys_query
    with ctx.step("find the changed keys" if incremental else "create the (empty) changed-keys table"):
        ctx.make(statements.changed_keys(tables, ctx.scope, query, ctx.params), tables.keys)
        if incremental:
            ctx.record.changed_keys = measure.count(ctx.client, ctx.scope, tables.keys)
            log.info("%d changed key(s) since %s", ctx.record.changed_keys, ctx.scope.kind.since)
    failpoint("changed-keys")
    return ctx.record.changed_keys


def load(ctx: RunContext, frame: Frame) -> int:
    """Staging, with the source's rows; an incremental run then drops those of unchanged keys.
    Returns how many it dropped."""
    tables = frame.tables
    batches = ctx.spec.source.batches
    with ctx.step("build staging from the source query" + (f" in {batches} batches" if batches > 1 else "")):
        create, *fill = statements.load_staging(tables, frame.source_columns, frame.source_query, ctx.params, batches)
        ctx.make([create], tables.staging)
        failpoint("staging-created")
        for batch in fill:
            ctx.execute([batch])
            failpoint("batch-staged")
        unchanged = measure.unchanged_rows(ctx.client, ctx.scope, tables.staging, ctx.params)
        if unchanged:
            log.warning(
                "the source yielded %d row(s) of keys that did not change (does it read {changed_keys:Identifier}?); "
                "dropping them from staging",
                unchanged,
            )
            ctx.execute([statements.drop_unchanged(tables, ctx.scope, ctx.params)])
    failpoint("staged")
    return unchanged


def measured(ctx: RunContext, frame: Frame, **more: Any) -> Measured:
    """The target's rows and staging's, as :func:`decide.decide` takes them (``more``: the rest of
    :class:`Measured`); the run records the rows the target holds before it."""
    tq = frame.tables.target.qualified
    before = measure.target_counts(ctx.client, ctx.scope, tq, ctx.params)
    rebuilt = measure.rebuilt(ctx.client, ctx.scope, ctx.spec.unique_key, frame.tables.staging, ctx.params)
    ctx.record.rows_before = sum(c.rows for c in before.values())
    return Measured(rebuilt, before, **more)


def verify(ctx: RunContext, frame: Frame, facts: StagingFacts) -> None:
    """The thresholds, then the user's audits, on the staged data; the target untouched if any fails."""
    ctx.record.slice_rows_before = facts.old_slice_rows
    problems = staging_problems(facts, ctx.spec.thresholds)
    if problems:
        raise VerificationFailed("; ".join(problems) + f"; {ctx.target} was not changed")
    if ctx.spec.audits:
        results = audits.evaluate(ctx.client, ctx.spec.audits, frame.tables.staging_name, ctx.params)
        ctx.record.audits = [r.as_status() for r in results]
        failed = [r.describe() for r in results if not r.passed]
        if failed:
            raise AuditFailed("; ".join(failed) + f"; {ctx.target} was not changed")
    failpoint("verified")


def record_after(ctx: RunContext, table: str) -> None:
    ctx.record.rows_after = measure.count(ctx.client, ctx.scope, table)
    ctx.record.slice_rows_after = measure.count(ctx.client, ctx.scope, table, ctx.in_slice, ctx.params)


def prune_backups(ctx: RunContext, keep: int) -> None:
    # Every backup counts, dedupe's and restore's too: with keep 0 a refresh leaves none.
    ctx.quietly("prune old backups", lambda: backups.prune(ctx.client, ctx.database, ctx.spec.target.table, keep))
