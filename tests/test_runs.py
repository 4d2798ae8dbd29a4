"""Run outcomes without an API server: a Job and its Pods -> status.lastRun, and the Job watch's
bookkeeping (owner chain, status.active, each Job recorded once) on a fake."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tablerefresh.controller.jobs import (
    active_refs,
    finished,
    newer_than_recorded,
    observation,
    outcome_of,
    summary_of,
)
from tablerefresh.controller.recorder import RunRecorder
from tablerefresh.controller.writer import StatusWriter
from tablerefresh.controller.written import Written
from tablerefresh.dataplane.runs import Outcome, RunRecord
from tests.test_controller import T0, tr_body

CRONJOB_UID = "cj-uid"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def job(name: str, *, end: str | None = None, at: datetime = T0, reason: str = "", message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": stamp(at - timedelta(seconds=60))}
    if end == "Complete":
        status |= {"completionTime": stamp(at), "conditions": [{"type": "Complete", "status": "True"}]}
    elif end == "Failed":
        failed = {"type": "Failed", "status": "True", "lastTransitionTime": stamp(at), "reason": reason}
        status["conditions"] = [{"type": "FailureTarget", "status": "True"}, failed | {"message": message}]
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": {"app.kubernetes.io/managed-by": "tablerefresh", "tablerefresh.dev/name": "trades"},
            "ownerReferences": [{"kind": "CronJob", "name": "trades", "uid": CRONJOB_UID, "controller": True}],
        },
        "spec": {"template": {"spec": {"containers": [{"env": ["the whole manifest"]}]}}},
        "status": status,
    }


def pod(container: dict[str, Any], created: str = "2026-01-01T11:59:00Z") -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "refresh", **container}]},
    }


def terminated(exit_code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {"state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}}


def summary_line(**fields: Any) -> str:
    return RunRecord(
        run_id="trades-1", target="db.trades", strategy="ReplacePartitions", started_at=T0, **fields
    ).summary_line()


# The Job.


def test_finished_reads_the_final_conditions_only() -> None:
    assert finished(job("a")) is None
    done = finished(job("a", end="Complete"))
    assert done is not None and done.succeeded and done.at == T0
    failed = finished(job("a", end="Failed", reason="DeadlineExceeded", message="too long"))
    assert failed is not None and not failed.succeeded
    assert (failed.at, failed.reason, failed.message) == (T0, "DeadlineExceeded", "too long")
    assert finished({"status": {"conditions": [{"type": "Complete", "status": "False"}]}}) is None


def test_active_lists_running_jobs_by_name() -> None:
    refs = active_refs([job("b"), job("a"), job("c", end="Complete")])
    assert [r["name"] for r in refs] == ["a", "b"]
    assert refs[0] == {"apiVersion": "batch/v1", "kind": "Job", "name": "a", "namespace": "ns", "uid": "uid-a"}


def test_each_job_is_recorded_once_and_never_an_older_one() -> None:
    new = job("trades-2", end="Complete", at=T0)
    end = finished(new)
    assert end is not None
    assert newer_than_recorded(new, end, None)
    assert not newer_than_recorded(new, end, {"jobName": "trades-2", "completionTime": stamp(T0)})
    assert newer_than_recorded(new, end, {"jobName": "trades-1", "completionTime": stamp(T0 - timedelta(hours=6))})
    assert not newer_than_recorded(new, end, {"jobName": "trades-3", "completionTime": stamp(T0 + timedelta(hours=6))})


# Its summary.


def test_the_summary_is_the_message_or_the_last_json_line_of_the_log_tail() -> None:
    line = summary_line(outcome=Outcome.SUCCEEDED)
    assert summary_of(line)["outcome"] == "Succeeded"  # type: ignore[index]
    assert summary_of(f"INFO step done\n{line}\n")["runId"] == "trades-1"  # type: ignore[index]
    assert summary_of("Traceback (most recent call last):\n  MemoryError") is None
    assert summary_of('{"not": "a summary"}') is None
    assert summary_of(None) is None


def test_a_success_takes_its_figures_from_the_summary() -> None:
    line = summary_line(
        outcome=Outcome.SUCCEEDED,
        finished_at=T0 + timedelta(seconds=42.5),
        rows_before=10,
        rows_after=12,
        slice_rows_before=4,
        slice_rows_after=6,
        duplicates=0,
    )
    done = job("trades-1", end="Complete")
    end = finished(done)
    assert end is not None
    result = outcome_of(done, end, [pod(terminated(0, "Completed", line))])
    assert result.succeeded and result.finished_at == T0
    assert result.last_run == {
        "jobName": "trades-1",
        "runId": "trades-1",
        "startTime": "2026-01-01T11:59:00Z",
        "completionTime": "2026-01-01T12:00:00Z",
        "durationSeconds": 42.5,
        "outcome": "Succeeded",
        "rowsBefore": 10,
        "rowsAfter": 12,
        "sliceRowsBefore": 4,
        "sliceRowsAfter": 6,
        "duplicates": 0,
    }
    ok = observation(result.last_run)
    assert (ok.status, ok.reason) == ("True", "RefreshSucceeded")
    assert ok.message == "Job trades-1 succeeded in 42.5s: 10 -> 12 rows"
    # Without a summary (an old image): the Job's word and its times.
    bare = outcome_of(done, end, [])
    assert bare.succeeded and bare.last_run["durationSeconds"] == 60 and "rowsAfter" not in bare.last_run


def failed_run(container: dict[str, Any] | None, reason: str = "BackoffLimitExceeded", message: str = "") -> Any:
    failed = job("trades-1", end="Failed", reason=reason, message=message)
    end = finished(failed)
    assert end is not None
    return outcome_of(failed, end, [pod(container)] if container is not None else [])


def test_a_failure_before_any_summary_keeps_the_kubernetes_reason() -> None:
    oom = failed_run(terminated(137, "OOMKilled"), message="Job has reached the specified backoff limit")
    assert (oom.last_run["outcome"], oom.last_run["reason"]) == ("Failed", "OOMKilled")
    assert "more memory than its limit" in oom.last_run["error"] and not oom.succeeded

    waiting = {"state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}}}
    image = failed_run(waiting, "DeadlineExceeded", "Job was active longer than specified deadline")
    assert image.last_run["reason"] == "ImagePullBackOff"
    assert "never started" in image.last_run["error"] and "DeadlineExceeded" in image.last_run["error"]

    no_pod = failed_run(None, "DeadlineExceeded", "Job was active longer than specified deadline")
    assert no_pod.last_run["reason"] == "DeadlineExceeded"
    assert no_pod.last_run["error"] == "DeadlineExceeded: Job was active longer than specified deadline"

    crashed = failed_run(terminated(1, "Error", "Traceback ...\nKeyError: 'x'"))
    assert crashed.last_run["reason"] == "BackoffLimitExceeded"
    assert "exit code 1, Error: Traceback" in crashed.last_run["error"]

    odd = failed_run(None, "not a CamelCase reason!")
    assert odd.last_run["reason"] == "RefreshFailed"  # a condition reason must match the API's pattern

    bad = observation(oom.last_run)
    assert (bad.status, bad.reason) == ("False", "OOMKilled")
    assert bad.message.startswith("Job trades-1 failed in 60.0s: the refresh container was killed")


def test_a_run_that_refused_to_swap_is_aborted_with_the_refresh_reason() -> None:
    line = summary_line(
        outcome=Outcome.FAILED, reason="VerificationFailed", error="the slice shrank by 80%", exit_code=4, rows_before=9
    )
    aborted = failed_run(terminated(4, "Error", line))
    assert (aborted.last_run["outcome"], aborted.last_run["reason"]) == ("Aborted", "VerificationFailed")
    assert aborted.last_run["error"] == "the slice shrank by 80%" and aborted.last_run["rowsBefore"] == 9
    assert "was aborted" in observation(aborted.last_run).message

    skipped = failed_run(terminated(3, "Error", summary_line(outcome=Outcome.SKIPPED, reason="LockHeld", exit_code=3)))
    assert (skipped.last_run["outcome"], skipped.last_run["reason"]) == ("Aborted", "LockHeld")

    broke = failed_run(terminated(1, "Error", summary_line(outcome=Outcome.FAILED, reason="RefreshFailed", error="x")))
    assert (broke.last_run["outcome"], broke.last_run["reason"]) == ("Failed", "RefreshFailed")

    # The refresh said it succeeded, but the Job failed anyway (killed after writing): Kubernetes wins.
    late = failed_run(terminated(137, "OOMKilled", summary_line(outcome=Outcome.SUCCEEDED, exit_code=0)))
    assert not late.succeeded and late.last_run["reason"] == "OOMKilled"


# The Job watch on a fake.


class FakeKube:
    def __init__(self) -> None:
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.listed: list[str] = []

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.listed.append(label_selector)
        return self.pods.get(label_selector.split("=")[1], [])

    def apply_status(self, namespace: str, name: str, status: Mapping[str, Any], manager: str = "x") -> None:
        self.statuses.append(copy.deepcopy(dict(status)))

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


def recorder() -> tuple[RunRecorder, FakeKube, Written]:
    kube = FakeKube()
    written = Written()
    clock = lambda: datetime(2026, 1, 1, 13, tzinfo=UTC)  # noqa: E731
    return RunRecorder(kube, StatusWriter(kube, written, "tablerefresh-runs", clock=clock)), kube, written  # type: ignore[arg-type]


def test_the_watch_keeps_trimmed_jobs_of_the_owner_chain_only() -> None:
    runs, _, _ = recorder()
    tr = tr_body()
    tr["status"] = {"cronJobRef": {"uid": CRONJOB_UID}}
    assert runs.job_event("ADDED", {"metadata": {"name": "x", "namespace": "ns"}}) is None  # no CronJob owner
    assert runs.job_event("ADDED", job("trades-1")) == ("ns", "trades")
    stranger = job("trades-2")
    stranger["metadata"]["ownerReferences"][0]["uid"] = "another-cronjob"  # a CronJob of the same name, not ours
    runs.job_event("ADDED", stranger)
    relabelled = job("trades-3")
    relabelled["metadata"]["labels"]["tablerefresh.dev/name"] = "other"
    runs.job_event("ADDED", relabelled)
    kept = runs.jobs_of(tr, tr["status"])
    assert [j["metadata"]["name"] for j in kept] == ["trades-1"]
    assert "spec" not in kept[0]  # not the pod template with the whole manifest
    runs.job_event("DELETED", job("trades-1"))
    assert runs.jobs_of(tr, tr["status"]) == []


def test_sync_records_the_newest_ended_job_once_and_counts_the_others() -> None:
    runs, kube, written = recorder()
    tr = tr_body()
    assert runs.sync(tr) is None  # no Job ever: nothing to write
    runs.job_event("ADDED", job("trades-1"))
    assert runs.sync(tr) == []
    assert [a["name"] for a in kube.statuses[-1]["active"]] == ["trades-1"]
    assert [c["type"] for c in kube.statuses[-1]["conditions"]] == ["Ready"]

    # Two Jobs ended while nobody looked: both counted, the newer recorded.
    runs.job_event("MODIFIED", job("trades-1", end="Failed", at=T0, reason="BackoffLimitExceeded"))
    line = summary_line(outcome=Outcome.SUCCEEDED, rows_after=5)
    kube.pods["trades-2"] = [pod(terminated(0, "Completed", line))]
    runs.job_event("ADDED", job("trades-2", end="Complete", at=T0 + timedelta(minutes=5)))
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
    tr_after_restart = {**tr, "status": written.overlay(tr["metadata"]["uid"], {})}
    fresh, kube2, _ = recorder()
    fresh.job_event(None, job("trades-1", end="Failed", at=T0))
    fresh.job_event(None, job("trades-2", end="Complete", at=T0 + timedelta(minutes=5)))
    assert fresh.sync(tr_after_restart) == [] and kube2.statuses == [] and len(kube.statuses) == writes

    # A failure after the success: recorded, lastSuccessfulRunTime kept, one Warning.
    runs.job_event("ADDED", job("trades-3", end="Failed", at=T0 + timedelta(minutes=10), reason="DeadlineExceeded"))
    assert runs.sync(tr) == [False]
    status = kube.statuses[-1]
    assert status["lastRun"]["reason"] == "DeadlineExceeded"
    assert status["lastSuccessfulRunTime"] == "2026-01-01T12:05:00Z"
    assert kube.events == [("Warning", "RefreshFailed")]
