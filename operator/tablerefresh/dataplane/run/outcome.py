"""How a run ends: its outcome, exit code and error in its record, and what the target then holds.

Once the swap has started, any failure is reported as ``FailedAfterSwap``, with what the target
holds, never as "untouched". A signal's stop is ``Interrupted``, whatever error the killed statement
raised. A bug still ends with a record the controller can read.
"""

from __future__ import annotations

import logging

from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.errors import (
    ExitCode,
    FailedAfterSwap,
    Interrupted,
    LockHeld,
    RefreshError,
    one_line,
    scrub,
)
from tablerefresh.dataplane.run.context import RunContext
from tablerefresh.dataplane.run.runs import Outcome
from tablerefresh.text import printable

log = logging.getLogger("tablerefresh.dataplane.run")


def finish(ctx: RunContext, outcome: str, error: RefreshError | None = None) -> None:
    record = ctx.record
    record.outcome = outcome
    record.finished_at = ctx.clock()
    if error is None:
        record.exit_code = 0
        log.info("run %s succeeded in %.1fs", record.run_id, record.duration_seconds)
        return
    record.exit_code = int(error.exit_code)
    record.reason = error.reason
    # Printable, without the credentials: it goes to the runs table, the summary and status.
    record.error = scrub(printable(str(error)), *ctx.options.secrets)
    # The error itself is the caller's to show (the command prints it once, as `error: …`).
    log.info("run %s ended %s (exit code %d)", record.run_id, outcome, record.exit_code)


def fail(ctx: RunContext, exc: Exception) -> None:
    stop = ctx.stopped
    if stop is not None:
        # Whatever the error (a killed statement's, most likely), a signal stopped the run.
        finish(ctx, Outcome.INTERRUPTED, exc if isinstance(exc, Interrupted) else ctx.interruption(stop))
        return
    if isinstance(exc, RefreshError):
        error = exc
    elif isinstance(exc, ClickHouseError):
        error = RefreshError(one_line(exc))
    else:  # a bug: still end with a summary the controller can read
        log.exception("run %s failed unexpectedly", ctx.record.run_id)
        error = RefreshError(f"internal error: {type(exc).__name__}: {exc}")
    if ctx.swap.started and not isinstance(error, FailedAfterSwap):
        error = FailedAfterSwap(f"{error}; {ctx.swap.holds}")
    if isinstance(error, FailedAfterSwap):
        outcome = Outcome.FAILED_AFTER_SWAP
    elif isinstance(error, LockHeld):
        outcome = Outcome.SKIPPED
    else:
        outcome = Outcome.FAILED
    finish(ctx, outcome, error)


def count_target_after_failure(ctx: RunContext) -> None:
    """A failed or refused run still reports the rows the target really holds."""
    record = ctx.record
    if record.exit_code == ExitCode.UNREACHABLE or not ctx.predicate_checked:
        return  # nothing to count with, or a predicate that must not reach a statement
    table = sql.table(ctx.database, ctx.spec.target.table)
    try:
        rows, in_slice = ctx.client.query(
            f"SELECT count(), countIf({ctx.in_slice}) FROM {table}", parameters=ctx.params
        ).result_rows[0]
    except Exception as exc:  # no table, a predicate that does not compile: the error says so already
        log.debug("could not count %s: %s", table, one_line(exc))
        return
    record.rows_after, record.slice_rows_after = int(rows), int(in_slice)
    if not ctx.swap.started:  # untouched: before is after, whether or not the run got to measure it
        record.rows_before, record.slice_rows_before = int(rows), int(in_slice)
