"""What a run does around the rebuild, holding the lock: it cleans up what crashed runs left, refuses
while a mutation is stuck on the target, and keeps the staging a check refused as evidence.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from tablerefresh.dataplane.infra import catalog, names, sql
from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.infra.errors import PreflightRefused
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.run.context import RunContext
from tablerefresh.spec import parse_duration

log = logging.getLogger("tablerefresh.dataplane.run")


def clean_leftovers(ctx: RunContext, target: TableInfo) -> None:
    """Staging tables of crashed runs. Safe: we hold the lock, so no other run owns them.

    An Exchange killed between the exchange and naming the backup left the previous table under
    its staging name: that one is kept as a backup, never dropped."""
    client, database = ctx.client, ctx.database
    for name in catalog.tables_with_prefix(client, database, names.staging_prefix(target.name)):
        leftover = catalog.describe_table(client, database, name)
        run = names.exchanged_run(target.name, name, leftover.uuid)
        if run is not None:
            kept = backups.keep_table(client, target, run, name, ctx.clock())
            log.warning("%s.%s held the table an interrupted exchange replaced: kept as %s", database, name, kept)
            continue
        log.warning("dropping %s.%s, left by an earlier run that did not finish", database, name)
        sql.drop_table(sql.table(database, name)).execute(client)
    _drop_old_evidence(ctx, target)


def _drop_old_evidence(ctx: RunContext, target: TableInfo) -> None:
    keep = ctx.spec.keep_failed_staging
    oldest = ctx.clock() - (parse_duration(keep) if keep else timedelta(0))
    for name in catalog.tables_with_prefix(ctx.client, ctx.database, names.evidence_prefix(target.name)):
        kept_at = names.evidence_time(name)
        if kept_at is not None and kept_at < oldest:
            log.info("dropping %s.%s, the staged data of a failed run, kept long enough", ctx.database, name)
            sql.drop_table(sql.table(ctx.database, name)).execute(ctx.client)


def preflight(ctx: RunContext, target: TableInfo) -> None:
    """Kill the mutations stuck longer than ``mutations.killStuckAfter``; refuse while any is pending
    longer than ``mutations.maxPending``."""
    mutations = ctx.spec.mutations
    if mutations.kill_stuck_after is not None:
        seconds = parse_duration(mutations.kill_stuck_after).total_seconds()
        for m in catalog.kill_mutations_older_than(ctx.client, ctx.database, target.name, seconds):
            log.warning("killed stuck mutation %s (%s)", m.describe(), catalog.NOT_ROLLED_BACK)
    limit = parse_duration(mutations.max_pending).total_seconds()
    stuck = [m for m in catalog.pending_mutations(ctx.client, ctx.database, target.name) if m.age_seconds > limit]
    if stuck:
        raise PreflightRefused(
            f"{ctx.target} has mutation(s) pending longer than {mutations.max_pending}: "
            + "; ".join(m.describe() for m in stuck)
        )


def keep_evidence(ctx: RunContext, staging: str | None) -> None:
    """With spec.keepFailedStaging, the staged data a check refused stays for the user to query."""
    if ctx.spec.keep_failed_staging is None or staging is None or staging not in ctx.made:
        return
    name = names.evidence_table(ctx.spec.target.table, ctx.options.run_id, ctx.clock())
    ctx.client.command(f"RENAME TABLE {staging} TO {sql.table(ctx.database, name)}")
    ctx.made.remove(staging)
    ctx.record.evidence_table = f"{ctx.database}.{name}"
    log.info("kept the refused staged data as %s", ctx.record.evidence_table)
