"""The per-object workers (runtime.workers) on a fake API: reconcile, a health check's probe, the
Job watch's record of runs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tablerefresh.controller.kube import KubeError
from tablerefresh.controller.policy.checks import Check, Failure, check_of
from tablerefresh.controller.policy.cronjob import Facts
from tablerefresh.controller.policy.jobs import trim
from tablerefresh.controller.runtime.status_writer import StatusMemory, StatusWriter
from tablerefresh.controller.runtime.workers import Prober, reconcile, record_runs
from tablerefresh.dataplane.infra.errors import Unreachable
from tablerefresh.dataplane.run.runs import Outcome
from tests.controller_fakes import T0, UID, FakeClock, FakeKube, job, pod, summary_line, terminated, tr_body
from tests.harness.kube import condition

# Reconcile.


class Reconciler:
    """reconcile() as the runtime calls it: one writer, and the object's memory across calls."""

    def __init__(self, kube: FakeKube, clock: FakeClock | None = None) -> None:
        clock = clock or FakeClock(T0)
        self.kube, self.writer, self.memory = kube, StatusWriter(kube, clock=clock), StatusMemory()

    def reconcile(self, body: Mapping[str, Any]) -> Facts | None:
        return reconcile(self.kube, self.writer, self.memory, body)


def test_reconcile_says_reconciling_applies_the_cronjob_and_writes_status() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, clock=FakeClock(T0))
    body = tr_body()
    reconciler.reconcile(body)
    cronjob = kube.cronjobs[("ns", "trades")]
    assert cronjob["metadata"]["ownerReferences"][0]["uid"] == UID
    assert "app.kubernetes.io/instance" not in cronjob["metadata"]["labels"]
    # kstatus: Reconciling True before it acts on the new generation, False once it has.
    before, status = kube.statuses
    assert "observedGeneration" not in before
    assert (condition(before, "Reconciling")["status"], condition(before, "Reconciling")["observedGeneration"]) == (
        "True",
        3,
    )
    assert status["observedGeneration"] == 3
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Reconciling")["status"] == "False"
    assert condition(status, "Stalled")["status"] == "False"
    assert kube.events == [("Normal", "CronJobCreated", "Created CronJob trades")]
    # Level-based: the same object again changes nothing but re-applies (a no-op on the server).
    reconciler.reconcile({**body, "status": status})
    assert len(kube.statuses) == 2 and len(kube.events) == 1 and kube.applies == 2
    # A new generation: Reconciling again, first.
    reconciler.reconcile({**body, "metadata": {**body["metadata"], "generation": 4}, "status": status})
    assert [condition(s, "Reconciling")["status"] for s in kube.statuses[2:]] == ["True", "False"]
    assert kube.statuses[2]["observedGeneration"] == 3 and kube.statuses[3]["observedGeneration"] == 4


def test_reconcile_uses_what_it_wrote_when_the_watch_lags() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, clock=FakeClock(T0))
    reconciler.reconcile(tr_body())
    reconciler.reconcile(tr_body())  # status not yet seen on the object
    assert len(kube.statuses) == 2  # Reconciling, then the result; nothing more


def test_reconcile_puts_back_a_deleted_cronjob() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, clock=FakeClock(T0))
    reconciler.reconcile(tr_body())
    kube.cronjobs.clear()
    reconciler.reconcile(tr_body())
    assert ("ns", "trades") in kube.cronjobs
    assert [e[1] for e in kube.events] == ["CronJobCreated", "CronJobCreated"]


def test_invalid_spec_applies_nothing() -> None:
    kube = FakeKube()
    Reconciler(kube, clock=FakeClock(T0)).reconcile(tr_body(schedule="61 * * * *"))
    assert kube.applies == 0
    ready = condition(kube.statuses[-1], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.schedule" in ready["message"]
    stalled = condition(kube.statuses[-1], "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert condition(kube.statuses[-1], "Reconciling")["status"] == "False"
    assert kube.events[0][:2] == ("Warning", "InvalidSpec")


def test_missing_secret_still_applies_the_cronjob_but_is_not_ready() -> None:
    kube = FakeKube()
    kube.secrets.clear()
    Reconciler(kube, clock=FakeClock(T0)).reconcile(tr_body())
    assert kube.applies == 1
    assert condition(kube.statuses[-1], "Ready")["reason"] == "SecretNotFound"
    assert condition(kube.statuses[-1], "Stalled")["reason"] == "SecretNotFound"
    assert ("Warning", "SecretNotFound") in [e[:2] for e in kube.events]


def test_rejected_apply_is_a_condition_and_a_transient_one_is_raised() -> None:
    kube = FakeKube()
    kube.apply_error = KubeError(422, 'CronJob.batch "trades" is invalid: spec.timeZone: Invalid value')
    Reconciler(kube, clock=FakeClock(T0)).reconcile(tr_body())
    assert condition(kube.statuses[-1], "CronJobReady")["reason"] == "ApplyFailed"
    assert condition(kube.statuses[-1], "Stalled")["status"] == "True"
    kube.apply_error = KubeError(503, "unavailable")
    kube.statuses.clear()
    with pytest.raises(KubeError):
        Reconciler(kube, clock=FakeClock(T0)).reconcile(tr_body())
    # Retried later: what the object says meanwhile is that the controller has not caught up.
    (said,) = kube.statuses
    assert condition(said, "Reconciling")["status"] == "True"


def test_an_object_being_deleted_is_left_to_garbage_collection() -> None:
    kube = FakeKube()
    body = tr_body()
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert Reconciler(kube).reconcile(body) is None
    assert kube.applies == 0 and kube.statuses == []


# A health check's probe.


class FakeClient:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = False

    def query(self, *_: Any, **__: Any) -> Any:
        raise self.error

    def close(self) -> None:
        self.closed = True


def a_check(**spec_changes: Any) -> Check:
    check = check_of(tr_body(**spec_changes))
    assert check is not None
    return check


def test_the_probe_turns_every_failure_into_a_result() -> None:
    kube = FakeKube()
    kube.secrets.clear()
    check = a_check()
    missing = Prober(kube, connector=lambda *a, **k: None)(check)  # type: ignore[arg-type,return-value]
    assert missing.failure == Failure.CREDENTIALS and "Secret ch does not exist" in missing.error

    kube.secrets[("ns", "ch")] = {"username": "u"}
    partial = Prober(kube, connector=lambda *a, **k: None)(check)  # type: ignore[arg-type,return-value]
    assert partial.failure == Failure.CREDENTIALS and "no key password" in partial.error

    kube.secrets[("ns", "ch")] = {"username": "reader", "password": "s3cret"}
    seen: dict[str, Any] = {}

    def refuse(url: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Unreachable("cannot reach ClickHouse at clickhouse://ch:8123: refused")

    result = Prober(kube, connector=refuse, timeout=5)(check)
    assert result.failure == Failure.UNREACHABLE and "refused" in result.error
    assert (seen["username"], seen["password"], seen["send_receive_timeout"]) == ("reader", "s3cret", 5)

    broken = FakeClient(OperationalError("Error executing HTTP request"))
    lost = Prober(kube, connector=lambda *a, **k: broken)(check)
    assert lost.failure == Failure.UNREACHABLE and broken.closed
    renamed = FakeClient(DatabaseError("Code: 47. Unknown identifier ts\nStack trace: ..."))
    failed = Prober(kube, connector=lambda *a, **k: renamed)(check)
    assert failed.failure == Failure.QUERY and failed.error == "Code: 47. Unknown identifier ts"
    no_secret = Prober(kube, connector=lambda *a, **k: renamed)(a_check(clickhouse={"url": "clickhouse://ch.analytics.svc:8123"}))
    assert no_secret.failure == Failure.QUERY


# The Job watch's record of runs.


class Runs:
    """record_runs() as the Job watch calls it: the Jobs seen so far, one writer, the object's memory."""

    def __init__(self) -> None:
        self.kube = FakeKube()
        self.writer = StatusWriter(self.kube, clock=FakeClock(datetime(2026, 1, 1, 13, tzinfo=UTC)))
        self.memory = StatusMemory()
        self.jobs: dict[str, dict[str, Any]] = {}

    def job(self, event_type: str | None, body: dict[str, Any]) -> None:
        """As the Job watch keeps a Job (Controller.job_changed)."""
        if event_type == "DELETED":
            self.jobs.pop(body["metadata"]["name"], None)
        else:
            self.jobs[body["metadata"]["name"]] = trim(body)

    def sync(self, tr: Mapping[str, Any]) -> list[bool] | None:
        return record_runs(self.kube, self.writer, self.memory, tr, list(self.jobs.values()))


def test_sync_records_the_newest_ended_job_once_and_counts_the_others() -> None:
    runs = Runs()
    kube = runs.kube
    tr = tr_body()
    assert runs.sync(tr) is None  # no Job ever: nothing to write
    runs.job("ADDED", job("trades-1"))
    assert runs.sync(tr) == []
    assert [a["name"] for a in kube.statuses[-1]["active"]] == ["trades-1"]
    assert [c["type"] for c in kube.statuses[-1]["conditions"]] == ["Ready"]

    # Two Jobs ended while nobody looked: both counted, the newer recorded.
    runs.job("MODIFIED", job("trades-1", end="Failed", at=T0, reason="BackoffLimitExceeded"))
    line = summary_line(outcome=Outcome.SUCCEEDED, rows_after=5)
    kube.pods["trades-2"] = [pod(terminated(0, "Completed", line))]
    runs.job("ADDED", job("trades-2", end="Complete", at=T0 + timedelta(minutes=5)))
    assert runs.sync(tr) == [False, True]
    assert kube.listed == ["batch.kubernetes.io/job-name=trades-2"]
    status = kube.statuses[-1]
    assert status["lastRun"]["jobName"] == "trades-2" and status["lastRun"]["rowsAfter"] == 5
    assert status["lastSuccessfulRunTime"] == "2026-01-01T12:05:00Z"
    assert status["active"] == []
    assert kube.events == []  # LastRunSucceeded appeared True: nothing turned bad

    # Again (another event, a resync, a restart): nothing new, nothing written.
    writes = len(kube.statuses)
    assert runs.sync(tr) == []
    tr_after_restart = {**tr, "status": runs.writer.current(runs.memory, {})}
    fresh = Runs()
    kube2 = fresh.kube
    fresh.job(None, job("trades-1", end="Failed", at=T0))
    fresh.job(None, job("trades-2", end="Complete", at=T0 + timedelta(minutes=5)))
    assert fresh.sync(tr_after_restart) == [] and kube2.statuses == [] and len(kube.statuses) == writes

    # A failure after the success: recorded, lastSuccessfulRunTime kept, one Warning.
    runs.job("ADDED", job("trades-3", end="Failed", at=T0 + timedelta(minutes=10), reason="DeadlineExceeded"))
    assert runs.sync(tr) == [False]
    status = kube.statuses[-1]
    assert status["lastRun"]["reason"] == "DeadlineExceeded"
    assert status["lastSuccessfulRunTime"] == "2026-01-01T12:05:00Z"
    assert [e[:2] for e in kube.events] == [("Warning", "RefreshFailed")]
