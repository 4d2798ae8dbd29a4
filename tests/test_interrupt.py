"""Ctrl-C (SIGINT) and SIGTERM during a refresh (issue 21, point 3).

A real ``tablerefresh refresh`` process, signalled while its source query runs (a slow one:
``sleepEachRow``), or right after its swap (a failpoint that signals the process itself). Each
time: one line on stderr saying what the target holds, the JSON summary with outcome
``Interrupted``, a run record, no staging table, no lock, exit code 130 (SIGINT) or 143 (SIGTERM),
well within a pod's 30 s grace period: the running statement is killed, not waited for. On both
engines: embedded, where the statement runs in the refresh's own process, and served over HTTP,
where the server would go on running it after the client left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import names
from tablerefresh.dataplane.infra.errors import AFTER_SWAP_INTERRUPTION
from tablerefresh.dataplane.infra.lock import LOCK_PREFIX
from tablerefresh.dataplane.run.runs import Outcome, RunRecord, write_run
from tests import crash_helper
from tests import refresh_fixtures as fx
from tests.engines import EMBEDDED, SERVED, ProcessEngine

GRACE_SECONDS = 30  # a pod's default terminationGracePeriodSeconds
# 50,000 source rows at 0.6 ms each, on one thread: 30 s, a pod's whole grace period.
SLOW_SOURCE = fx.SOURCE.replace("FROM src WHERE", "FROM src WHERE sleepEachRow(0.0006) = 0 AND")
# One thread, so the slow source is slow; a block of the table may hold 32,768 rows.
SLOW_SETTINGS = {"max_threads": "1", "function_sleep_max_microseconds_per_block": "60000000"}


def recorded(client: Client, database: str, run_id: str) -> list[list[Any]]:
    """The run's record: outcome, reason, error (run by ``ProcessEngine.call``)."""
    rows = client.query(
        f"SELECT outcome, reason, error FROM {database}._tablerefresh_runs WHERE run_id = {{r:String}}",
        parameters={"r": run_id},
    ).result_rows
    return [list(r) for r in rows]


def running(client: Client, mark: str) -> int:
    """Statements of the run still running on the engine (its client marks them with log_comment)."""
    query = "SELECT count() FROM system.processes WHERE Settings['log_comment'] = {m:String}"
    return int(client.query(query, parameters={"m": mark}).result_rows[0][0])


def start(engine: ProcessEngine, manifest: Path, failpoint: str | None = None) -> subprocess.Popen[str]:
    extra = {"TABLEREFRESH_FAILPOINT": failpoint} if failpoint else {}
    return subprocess.Popen(
        [sys.executable, "-m", "tablerefresh", "refresh", "-f", str(manifest), "--run-id", f"stop-{time.time_ns()}"],
        cwd=Path(__file__).resolve().parent.parent,
        env=engine.process_env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def set_up(engine: ProcessEngine) -> tuple[Path, Path, list[int]]:
    """The tables, a first run, new source data; a manifest whose source takes 30 s; and the target's
    checksum."""
    manifest = engine.home / "manifest.yaml"
    engine.call(crash_helper.setup, engine.url, engine.database, str(manifest))
    first = engine.tablerefresh("refresh", "-f", str(manifest))
    assert first.returncode == 0, first.stderr
    document = yaml.safe_load(manifest.read_text())
    document["spec"]["source"]["query"] = SLOW_SOURCE
    document["spec"]["clickhouse"]["settings"] = SLOW_SETTINGS
    slow = engine.home / "slow.yaml"
    slow.write_text(yaml.safe_dump(document))
    _, found = engine.calls((crash_helper.change, engine.database), (crash_helper.probe, engine.database))
    return manifest, slow, found["checksum"]


def wait_for(process: subprocess.Popen[str], words: str) -> list[str]:
    """stderr's lines up to the one that holds ``words``."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line.rstrip("\n"))
        if words in line:
            return seen
    raise AssertionError(f"the run ended before {words!r}: {seen}")


def finish(process: subprocess.Popen[str], seen: list[str]) -> tuple[dict[str, Any], list[str]]:
    out, err = process.communicate(timeout=120)
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary, seen + err.splitlines()


def no_staging_no_lock(left: list[str]) -> None:
    assert not [t for t in left if t.startswith((names.STAGING, LOCK_PREFIX))], left


@pytest.mark.parametrize(
    ("engine_for_processes", "signum", "code"),
    [(EMBEDDED, signal.SIGINT, 130), (EMBEDDED, signal.SIGTERM, 143), (SERVED, signal.SIGTERM, 143)],
    indirect=["engine_for_processes"],
)
def test_a_signal_while_the_source_runs_stops_the_run_at_once_and_leaves_the_target_unchanged(
    engine_for_processes: ProcessEngine, signum: signal.Signals, code: int
) -> None:
    engine = engine_for_processes
    manifest, slow, before = set_up(engine)

    run = start(engine, slow)
    seen = wait_for(run, "build staging from the source query")
    time.sleep(1.0)  # inside the source's INSERT, which would take 29 s more
    signalled = time.monotonic()
    run.send_signal(signum)
    summary, lines = finish(run, seen)
    took = time.monotonic() - signalled

    assert run.returncode == code, lines
    assert took < 5 < GRACE_SECONDS, took  # the statement was killed, not waited for
    message = f"interrupted by {signum.name}: the target {engine.database}.positions is unchanged"
    assert lines[-1] == message
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines), lines
    assert summary["outcome"] == "Interrupted" and summary["reason"] == "Interrupted"
    assert summary["exitCode"] == code and summary["error"] == message
    found, records, still_running = engine.calls(
        (crash_helper.probe, engine.database),
        (recorded, engine.database, summary["runId"]),
        (running, f"tablerefresh run {summary['runId']}"),
    )
    assert found["checksum"] == before
    no_staging_no_lock(found["tables"])
    assert records == [["Interrupted", "Interrupted", message]]
    # Killed where it ran: a server would otherwise go on running the statement after the client left.
    assert still_running == 0

    # Nothing in the way of the next run.
    rerun = engine.tablerefresh("refresh", "-f", str(manifest))
    assert rerun.returncode == 0, rerun.stderr
    assert "left by an earlier run" not in rerun.stderr and "taking over the lock" not in rerun.stderr


@pytest.mark.engines(EMBEDDED)
def test_a_signal_after_the_swap_says_the_target_holds_the_new_rows(engine_for_processes: ProcessEngine) -> None:
    engine = engine_for_processes
    manifest, _, before = set_up(engine)

    run = start(engine, manifest, failpoint="swapped=sigterm")  # the process sends itself SIGTERM there
    summary, lines = finish(run, [])

    assert run.returncode == 143, lines
    assert lines[-1].startswith("interrupted by SIGTERM after the swap: the swap of partitions ")
    assert summary["outcome"] == "Interrupted" and summary["reason"] == AFTER_SWAP_INTERRUPTION
    found, [(outcome, reason, _)] = engine.calls(
        (crash_helper.probe, engine.database), (recorded, engine.database, summary["runId"])
    )
    assert found["checksum"] != before  # the new rows are in
    no_staging_no_lock(found["tables"])
    assert (outcome, reason) == ("Interrupted", AFTER_SWAP_INTERRUPTION)


def test_after_an_interruption_after_the_swap_the_next_incremental_run_is_full(
    ch: Client, connect: Callable[[], Client], loaded: str
) -> None:
    """The target holds what the interrupted run swapped in, which no successful run vouches for."""
    spec = fx.incremental_spec(loaded)
    first = fx.run(connect, spec)
    assert first.outcome == Outcome.SUCCEEDED, first.error
    assert fx.run(connect, spec).kind == "Incremental"
    stopped = RunRecord(
        run_id="stopped",
        target=first.target,
        strategy="ReplacePartitions",
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
        outcome=Outcome.INTERRUPTED,
        reason=AFTER_SWAP_INTERRUPTION,
        kind="Incremental",
        run_time=datetime.now(UTC),
        definition=first.definition,
    )
    write_run(ch, loaded, stopped)
    after = fx.run(connect, spec)
    assert (after.kind, after.kind_reason) == ("Full", "the last run to change the target (stopped) ended Interrupted")
    # An interruption before the swap changed nothing: the run after it is incremental again.
    write_run(ch, loaded, replace(stopped, run_id="stopped-early", reason="Interrupted", started_at=datetime.now(UTC)))
    assert fx.run(connect, spec).kind == "Incremental"


def test_ctrl_c_in_another_command_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tablerefresh.cli import main
    from tablerefresh.commands import history

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(history, "run", interrupted)
    assert main(["history", "-f", "x.yaml"]) == 130
    assert capsys.readouterr().err == "tablerefresh history: interrupted\n"
