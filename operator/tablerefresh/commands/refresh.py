"""``tablerefresh refresh``: one run of a TableRefresh, from a file or from the Job's environment."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from tablerefresh.commands._target import (
    add_override_arguments,
    read_manifest,
    shown,
    source_query,
    with_overrides,
)
from tablerefresh.contract import MANIFEST_ENV, RUN_ID_ENV
from tablerefresh.dataplane.infra.connection import connect, env_secrets, require_embedded_database
from tablerefresh.dataplane.infra.errors import ExitCode, RefreshError
from tablerefresh.dataplane.infra.interrupt import Stop, signals
from tablerefresh.dataplane.operations.operation import new_run_id, owner_of
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.refresh import Refresh
from tablerefresh.dataplane.run.runs import Outcome, RunRecord
from tablerefresh.spec import ManifestError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", help=f"TableRefresh manifest (YAML); default: ${MANIFEST_ENV} (JSON)")
    add_override_arguments(parser)
    parser.add_argument("--run-id", help=f"id of this run; default: ${RUN_ID_ENV} or a new one")
    parser.add_argument("--summary-file", type=Path, help="also write the JSON summary here (a termination log)")
    parser.add_argument("--lock-ttl", type=float, default=120.0, help="seconds before a silent lock is taken over")
    parser.add_argument("--full", action="store_true", help="a full run, even when the spec is incremental")
    parser.add_argument(
        "--statement-timeout",
        type=_seconds,
        default=3600,
        metavar="SECONDS",
        help="whole seconds the client waits for a statement's answer (default 3600); a write it stops waiting "
        "for may still run on the server",
    )
    # Every command that works on a table takes --json; this one's output is JSON already.
    parser.add_argument(
        "--json", action="store_true", help="accepted for symmetry: the summary (stdout's last line) is always JSON"
    )


def _seconds(text: str) -> int:
    """A whole number of seconds, at least 1 (the client reads its timeouts as whole seconds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 second: {value}")
    return value


def run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    run_id = args.run_id or os.environ.get(RUN_ID_ENV) or new_run_id("refresh", now)
    try:
        manifest = with_overrides(read_manifest(args.file), args)
        spec = manifest.spec
        url = args.clickhouse or spec.clickhouse.url
        require_embedded_database(url)
        query = source_query(spec)
    except (ManifestError, RefreshError) as exc:
        record = RunRecord(
            run_id=run_id,
            target="",
            strategy="",
            started_at=now,
            finished_at=now,
            outcome=Outcome.FAILED,
            reason="InvalidSpec",
            error=str(exc),
            exit_code=int(ExitCode.INVALID),
        )
        return emit(record, args.summary_file)

    def client_factory() -> Client:
        return connect(
            url,
            database=spec.clickhouse.database,
            settings=spec.clickhouse.settings,
            send_receive_timeout=args.statement_timeout,
        )

    options = RunOptions(
        run_id=run_id,
        owner=owner_of(run_id),
        run_time=now,
        lock_ttl_seconds=args.lock_ttl,
        force_full=args.full,
        secrets=env_secrets(),
        stop=Stop(),
    )
    assert options.stop is not None
    # Ctrl-C and SIGTERM stop the run at its next step, its running statement killed: it ends with
    # a summary (outcome Interrupted), a run record, staging dropped and the lock released.
    with signals(options.stop):
        record = Refresh(spec, client_factory, query, options).run()
    return emit(record, args.summary_file)


def emit(record: RunRecord, summary_file: Path | None) -> int:
    """The summary as the last stdout line, and in the termination log the controller reads.

    Its error is printable text without the credentials' values (CLICKHOUSE_USER, CLICKHOUSE_PASSWORD):
    the controller copies it into status, where whoever may read the TableRefresh reads it."""
    record.error = shown(record.error)
    line = record.summary_line()
    print(line, flush=True)
    if record.outcome == Outcome.INTERRUPTED:
        print(record.error, file=sys.stderr, flush=True)  # "interrupted by SIGINT: the target … is unchanged"
    elif record.exit_code:
        print(f"error: {record.error}", file=sys.stderr, flush=True)
    if summary_file is not None:
        try:
            summary_file.write_text(line + "\n")
        except OSError as exc:
            print(f"cannot write the summary to {summary_file}: {exc}", file=sys.stderr)
    return record.exit_code
