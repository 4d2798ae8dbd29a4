"""Exchange: the whole table rebuilt in staging, then swapped in with ``EXCHANGE TABLES``; the
previous table is kept as a backup (at least one, whatever ``backup.keep`` says).
"""

from __future__ import annotations

import logging
import secrets

from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.dataplane.infra import names, sql
from tablerefresh.dataplane.infra.errors import FailedAfterSwap, RefreshError, one_line
from tablerefresh.dataplane.infra.failpoints import failpoint
from tablerefresh.dataplane.infra.lock import TableLock
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.run import measure, staging
from tablerefresh.dataplane.run.context import RunContext
from tablerefresh.dataplane.run.decide import Frame
from tablerefresh.dataplane.run.unanswered import find_out_exchange

log = logging.getLogger("tablerefresh.dataplane.run")


def exchange(ctx: RunContext, frame: Frame, lock: TableLock) -> None:
    tables, tq = frame.tables, frame.tables.target.qualified
    staging.load(ctx, frame)
    with ctx.step("verify staging"):
        vanishing = measure.vanishing_keys(ctx.client, ctx.scope, ctx.spec, tq, tables.staging, ctx.params)
        taken_at = ctx.clock()
        decision = measure.decision(ctx.client, frame, staging.measured(ctx, frame, vanishing=vanishing), taken_at)
        staging.verify(ctx, frame, decision.facts)
    with ctx.step("exchange tables"):
        lock.assert_held()
        # From here the staging name may hold the previous table: never drop it (a later run
        # keeps it as a backup if this one cannot).
        ctx.swap.start(
            f"the tables were exchanged or may have been; the previous table is {ctx.database}.{tables.staging_name}"
        )
        ctx.made.remove(tables.staging)
        previous = _exchange_tables(ctx, frame, decision.swap[0].text)
        failpoint("swapped")
        # The decision's backup statements, for the name the previous table has (another only when
        # the exchange's answer was lost and a new connection found it under another name).
        kept, keep = backups.table_backup(tables.target, ctx.options.run_id, previous, taken_at)
        ctx.execute(keep)
        ctx.swap.now_holds(f"the tables were exchanged: the previous table is kept as {ctx.database}.{kept}")
    ctx.record.duplicates = measure.duplicates(ctx.client, ctx.spec.unique_key, tq)
    staging.record_after(ctx, tq)
    staging.prune_backups(ctx, max(1, ctx.spec.backup.keep))


def _exchange_tables(ctx: RunContext, frame: Frame, statement: str) -> str:
    """``EXCHANGE TABLES``; returns the name that holds the previous table. When the answer does
    not arrive (or is an error), finds out on a new connection whether the exchange ran."""
    target, name = frame.tables.target, frame.tables.staging_name
    query_id = f"tablerefresh-exchange-{ctx.options.run_id}-{secrets.token_hex(4)}"
    try:
        ctx.client.command(statement, settings={"query_id": query_id})
        return name
    except ClickHouseError as exc:
        cause = one_line(exc)
    log.warning("the exchange's answer: %s; looking at the tables on a new connection", cause)
    fence = names.exchange_staging_table(target.name, f"{ctx.options.run_id}_fence", target.uuid)
    found = find_out_exchange(ctx.connect, ctx.database, target.name, target.uuid, name, fence, query_id)
    if found.client is not None:
        ctx.use_client(found.client, "the exchange")
    if found.exchanged:
        log.warning("%s: carrying on", found.detail)
        return found.previous
    if found.exchanged is False:
        ctx.swap.did_not_run()
        ctx.made.append(sql.table(ctx.database, found.staging))
        raise RefreshError(
            f"{cause} while sending the exchange; on a new connection {found.detail}: "
            f"the exchange did not run, {ctx.target} was not changed"
        )
    raise FailedAfterSwap(
        f"{cause} while sending the exchange, and whether it ran is unknown ({found.detail}): "
        f"{ctx.target} may be the new table; the next run keeps the previous one as a backup"
    )
