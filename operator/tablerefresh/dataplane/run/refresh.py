"""One refresh run: rebuild a table's slice from its source query and swap it in atomically.

The run, in order:
  1. check the inputs (table, keys, source columns, predicate) before touching anything (``inputs.py``);
  2. take the target's lock (``infra/lock.py``), clean up what a crashed run left, refuse while a
     mutation is stuck on the target (``housekeeping.py``);
  3. with an incremental spec, choose a full or an incremental run (``incremental.py``) and write
     the changed keys into a table beside the target (``keyset.py``);
  4. build the slice (or the changed keys' rows of it: ``scope.py``) in a staging table with the
     target's structure (``staging.py``); measure it and the target (``measure.py``) and decide what
     to replace and the statements to execute (``decide.py``, which ``tablerefresh plan`` calls too);
     carry over the rows of the partitions it replaces that it does not replace (``carry.py``);
  5. verify it (``verify.py``), and abort with the target untouched if it fails; a full run of an
     incremental spec also compares a sample of keys with what the target held (``sample.py``);
  6. swap it in, as the strategy says (``replace_partitions.py``, ``exchange.py``,
     ``delete_insert.py``), check the result, and record the run (``runs.py``), which moves the
     incremental watermark only when the run succeeded.

Once the swap has started, any failure is reported as ``FailedAfterSwap``, with what the target
holds, never as "untouched" (``outcome.py``). Cleanup errors are logged and never replace the run's
first error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import sql_guard
from tablerefresh.dataplane.infra.errors import VerificationFailed
from tablerefresh.dataplane.infra.failpoints import failpoint
from tablerefresh.dataplane.infra.lock import TableLock, target_lock
from tablerefresh.dataplane.run import housekeeping, outcome, runs
from tablerefresh.dataplane.run.context import RunContext
from tablerefresh.dataplane.run.decide import Frame
from tablerefresh.dataplane.run.delete_insert import delete_insert
from tablerefresh.dataplane.run.exchange import exchange
from tablerefresh.dataplane.run.incremental import RunKind, choose
from tablerefresh.dataplane.run.inputs import Inputs, check_inputs
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.replace_partitions import replace_partitions
from tablerefresh.dataplane.run.runs import Outcome, RunRecord, write_run
from tablerefresh.dataplane.run.statements import run_tables
from tablerefresh.spec import Strategy, TableRefreshSpec

log = logging.getLogger("tablerefresh.dataplane.run")

STRATEGIES: dict[Strategy, Callable[[RunContext, Frame, TableLock], None]] = {
    Strategy.REPLACE_PARTITIONS: replace_partitions,
    Strategy.EXCHANGE: exchange,
    Strategy.DELETE_INSERT: delete_insert,
}


class Refresh:
    """A single run of one TableRefresh against one ClickHouse."""

    def __init__(
        self, spec: TableRefreshSpec, connect: Callable[[], Client], source_query: str, options: RunOptions
    ) -> None:
        self.ctx = RunContext(spec, connect, source_query, options)

    @property
    def record(self) -> RunRecord:
        return self.ctx.record

    def run(self) -> RunRecord:
        ctx = self.ctx
        locked = False
        try:
            with ctx.step("check inputs"):
                inputs = self._check_inputs()
            lock = target_lock(
                ctx.connect,
                ctx.database,
                inputs.target.name,
                ctx.options.owner,
                ttl_seconds=ctx.options.lock_ttl_seconds,
            )
            with lock:  # its exit never raises
                locked = True
                failpoint("locked")
                frame: Frame | None = None
                try:
                    with ctx.step("clean up leftovers"):
                        housekeeping.clean_leftovers(ctx, inputs.target)
                    with ctx.step("pre-flight"):
                        housekeeping.preflight(ctx, inputs.target)
                    with ctx.step("choose a full or an incremental run"):
                        choose_kind(ctx)
                    frame = self._frame(inputs)
                    STRATEGIES[ctx.spec.strategy](ctx, frame, lock)
                except VerificationFailed:
                    staging = frame.tables.staging if frame is not None else None
                    ctx.quietly("keep the failed run's staging table", lambda: housekeeping.keep_evidence(ctx, staging))
                    raise
                finally:
                    ctx.quietly("drop the staging table", ctx.drop_made)
            outcome.finish(ctx, Outcome.SUCCEEDED)
        except Exception as exc:
            outcome.fail(ctx, exc)
            outcome.count_target_after_failure(ctx)
        ctx.record.set_work(ctx.work())
        # An interrupted run is recorded even before it held the lock: its stop is no one else's.
        if locked or ctx.record.outcome == Outcome.INTERRUPTED:
            ctx.quietly(
                "write the run record", lambda: write_run(ctx.client, ctx.database, ctx.record, reconnect=ctx.connect)
            )
        ctx.close()
        return ctx.record

    def _check_inputs(self) -> Inputs:
        ctx = self.ctx
        # First: until the server has read it as one expression, the predicate is pasted into nothing.
        sql_guard.check_predicate(ctx.client, ctx.spec.slice.predicate, ctx.params)
        ctx.predicate_checked = True
        inputs = check_inputs(ctx.client, ctx.spec, ctx.source_query, ctx.scope, ctx.params)
        ctx.record.definition = inputs.definition
        return inputs

    def _frame(self, inputs: Inputs) -> Frame:
        ctx = self.ctx
        tables = run_tables(inputs.target, ctx.options.run_id, ctx.spec.strategy, ctx.scope.keys_name)
        return Frame(
            ctx.spec,
            ctx.options.run_id,
            ctx.run_time,
            ctx.scope,
            ctx.params,
            tables,
            ctx.source_query,
            inputs.source_columns,
        )


def choose_kind(ctx: RunContext) -> RunKind:
    """Full or incremental, from the runs table (read only); call once the inputs are checked."""
    past = runs.History()
    if ctx.spec.incremental is not None:
        past = runs.history(ctx.client, ctx.database, ctx.target, ctx.record.definition)
    kind = choose(ctx.spec.incremental, past, ctx.record.definition, ctx.run_time, force_full=ctx.options.force_full)
    ctx.scope.kind = kind
    ctx.params.update(ctx.scope.params())
    ctx.record.kind, ctx.record.kind_reason, ctx.record.since = kind.kind, kind.reason, kind.since
    log.info("%s run: %s", kind.kind.lower(), kind.reason)
    return kind
