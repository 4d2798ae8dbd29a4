"""The operator's log follows Ready (issue 21, point 11): one INFO line per change of Ready's status
or reason, whichever source's write changed it (reconciler, health check, Job watch), none for a
write that leaves Ready as it was. The status writer (the one place every write goes through) on a
fake API."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from tablerefresh.controller.policy.status import HEALTH_CHECK, JOB_WATCH, RECONCILER, Observation
from tablerefresh.controller.runtime.status_writer import StatusMemory, StatusWriter
from tests.controller_fakes import T0, FakeClock, FakeKube, tr_body

WRITER_LOG = "tablerefresh.controller.runtime.status_writer"


def test_each_change_of_ready_is_logged_once_whichever_source_made_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=WRITER_LOG)
    writer = StatusWriter(FakeKube(), clock=FakeClock(T0, step=timedelta(seconds=1)))
    body, memory = tr_body(), StatusMemory()

    def lines() -> list[str]:
        said = [r.getMessage() for r in caplog.records if r.name == WRITER_LOG and r.levelno == logging.INFO]
        caplog.clear()
        return said

    def reachable(status: str, reason: str, message: str) -> list[Observation]:
        return [Observation("ClickHouseReachable", status, reason, message)]

    writer.write(memory, body, RECONCILER, {}, [Observation("CronJobReady", "True", "Applied", "ok")])
    assert lines() == ["ns/trades: Ready unset -> True (Reconciled: all conditions are met), from the reconciler"]

    # As at the operator's start in the issue: the health check finds ClickHouse down 49 ms later.
    writer.write(memory, body, HEALTH_CHECK, {}, reachable("False", "ConnectionRefused", "connection refused"))
    assert lines() == [
        "ns/trades: Ready True -> False (ConnectionRefused: connection refused), from the health check"
    ]
    writer.write(memory, body, HEALTH_CHECK, {}, reachable("False", "ConnectionRefused", "connection refused"))
    writer.write(memory, body, RECONCILER, {}, [Observation("CronJobReady", "True", "Applied", "ok")])
    assert lines() == []  # Ready as it was: nothing to say

    # Fixed: the line the issue missed.
    writer.write(memory, body, HEALTH_CHECK, {}, reachable("True", "Reachable", "ok"))
    assert lines() == ["ns/trades: Ready False -> True (Reconciled: all conditions are met), from the health check"]

    # A run that failed turns it False; the next that succeeds, True again.
    failed = [Observation("LastRunSucceeded", "False", "VerificationFailed", "the new slice has 0 rows")]
    writer.write(memory, body, JOB_WATCH, {}, failed)
    assert lines() == [
        "ns/trades: Ready True -> False (VerificationFailed: the new slice has 0 rows), from the Job watch"
    ]
    writer.write(memory, body, JOB_WATCH, {}, [Observation("LastRunSucceeded", "True", "Succeeded", "ok")])
    assert lines() == ["ns/trades: Ready False -> True (Reconciled: all conditions are met), from the Job watch"]
