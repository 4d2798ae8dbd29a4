"""Run outcomes on the real API server (issue 5's "Must show": a failed Job gives LastRunSucceeded=False
with its reason; a successful one gives the figures from its summary).

The test control plane runs no built-in controllers, so each test plays the CronJob and Job
controllers and the kubelet: it creates the Job from the CronJob's template (labels, ownerReference),
its Pod, and sets their status as they would, with the refresh's real JSON summary as the container's
termination message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tablerefresh.controller.policy.status import parse_time
from tablerefresh.dataplane.run.runs import Outcome, RunRecord
from tests.harness.kube import Kube, condition, wait_for
from tests.harness.operators import InProcessOperator
from tests.health_env import (  # noqa: F401  (fixtures)
    Target,
    Writes,
    checked_and_ready,
    has,
    sample,
    tablerefresh,
    target,
    writes,
)
from tests.jobrunner import cron

pytestmark = pytest.mark.kube

NAME = "trades"
MERGE = "application/merge-patch+json"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """The CronJob controller, the Job controller and the kubelet, by hand."""

    def __init__(self, api: Kube, namespace: str) -> None:
        self.api, self.ns = api, namespace

    def start_job(self, suffix: str, started: datetime) -> dict[str, Any]:
        job = cron.job_for(self.api.cronjob(self.ns, NAME), started)  # as the Job runner's CronJob controller
        name = job["metadata"]["name"] = f"{NAME}-{suffix}"
        created: dict[str, Any] = json.loads(
            self.api.batch.create_namespaced_job(self.ns, job, _preload_content=False).data
        )
        self.job_status(name, {"startTime": stamp(started), "active": 1})
        return created

    def job_status(self, name: str, status: dict[str, Any]) -> None:
        self.api.batch.patch_namespaced_job_status(name, self.ns, {"status": status}, _content_type=MERGE)

    def pod(self, job: dict[str, Any], container: dict[str, Any], phase: str) -> None:
        """The Job's Pod, with the refresh container in the given state."""
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        template = job["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-x7k2p",
                "namespace": self.ns,
                "labels": {
                    **template["metadata"]["labels"],
                    "batch.kubernetes.io/job-name": name,
                    "job-name": name,
                    "batch.kubernetes.io/controller-uid": uid,
                },
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": True}
                ],
            },
            "spec": template["spec"],
        }
        self.api.core.create_namespaced_pod(self.ns, pod)
        status = {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "refresh",
                    "image": template["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    **container,
                }
            ],
        }
        self.api.core.patch_namespaced_pod_status(f"{name}-x7k2p", self.ns, {"status": status}, _content_type=MERGE)

    def end(self, job: dict[str, Any], *, succeeded: bool, at: datetime, reason: str = "", message: str = "") -> None:
        kind = "Complete" if succeeded else "Failed"
        condition = {"type": kind, "status": "True", "lastTransitionTime": stamp(at)}
        if reason:
            condition |= {"reason": reason, "message": message}
        status: dict[str, Any] = {"active": 0, "conditions": [condition]}
        if succeeded:
            status |= {"completionTime": stamp(at), "succeeded": 1}
        else:
            status["failed"] = 1
        self.job_status(job["metadata"]["name"], status)


def summary(job: str, started: datetime, seconds: float, **fields: Any) -> str:
    record = RunRecord(
        run_id=job,
        target=f"db.{NAME}",
        strategy="ReplacePartitions",
        started_at=started,
        finished_at=started + timedelta(seconds=seconds),
        **fields,
    )
    return record.summary_line()


def terminated(exit_code: int, reason: str, message: str, started: datetime, seconds: float) -> dict[str, Any]:
    return {
        "state": {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "message": message,
                "startedAt": stamp(started),
                "finishedAt": stamp(started + timedelta(seconds=seconds)),
            }
        }
    }


@pytest.fixture
def ready(api: Kube, namespace: str, target: Target, operator: InProcessOperator) -> Cluster:
    api.apply(tablerefresh(namespace, NAME, target))
    wait_for("Ready=True", lambda: checked_and_ready(api, namespace, NAME))
    return Cluster(api, namespace)


def last_run_of(api: Kube, ns: str, job: str) -> dict[str, Any] | None:
    tr = api.tr(ns, NAME)
    last = (tr.get("status") or {}).get("lastRun") or {}
    return tr if last.get("jobName") == job else None


def test_a_successful_run_records_the_figures_from_its_summary(
    api: Kube, namespace: str, ready: Cluster, controlplane: Any, operator: InProcessOperator, writes: Writes
) -> None:
    started = T0
    job = ready.start_job("29000000", started)
    name = job["metadata"]["name"]
    tr = wait_for("status.active", lambda: (t := api.tr(namespace, NAME))["status"].get("active") and t)
    assert [a["name"] for a in tr["status"]["active"]] == [name]
    assert tr["status"]["active"][0]["uid"] == job["metadata"]["uid"]

    line = summary(
        name,
        started,
        42.5,
        outcome=Outcome.SUCCEEDED,
        exit_code=0,
        rows_before=1000,
        rows_after=1020,
        slice_rows_before=200,
        slice_rows_after=220,
        duplicates=0,
    )
    # The memory and work figures, as the data plane's summary carries them (null: not reported).
    work = {"peakMemoryBytes": 1_500_000_000, "readBytes": 96_000_000, "writtenRows": 20, "writtenBytes": None}
    line = json.dumps({**json.loads(line), **work})
    ready.pod(job, terminated(0, "Completed", line, started, 43), "Succeeded")
    ready.end(job, succeeded=True, at=started + timedelta(seconds=45))

    tr = wait_for("lastRun", lambda: last_run_of(api, namespace, name))
    last = tr["status"]["lastRun"]
    assert last == {
        "jobName": name,
        "runId": name,
        "startTime": stamp(started),
        "completionTime": stamp(started + timedelta(seconds=45)),
        "durationSeconds": 42.5,  # the refresh's own figure
        "outcome": "Succeeded",
        "rowsBefore": 1000,
        "rowsAfter": 1020,
        "sliceRowsBefore": 200,
        "sliceRowsAfter": 220,
        "duplicates": 0,
        "peakMemoryBytes": 1_500_000_000,  # kept by the API server: the CRD has the fields
        "readBytes": 96_000_000,
        "writtenRows": 20,
    }
    assert tr["status"]["lastSuccessfulRunTime"] == stamp(started + timedelta(seconds=45))
    assert tr["status"]["active"] == []
    succeeded = condition(tr, "LastRunSucceeded")
    assert (succeeded["status"], succeeded["reason"]) == ("True", "RefreshSucceeded")
    assert "1000 -> 1020 rows" in succeeded["message"]
    assert condition(tr, "Ready")["status"] == "True"

    # The metrics agree with the status.
    assert sample("tablerefresh_runs_total", namespace, NAME, result="succeeded") == 1
    assert sample("tablerefresh_runs_total", namespace, NAME, result="failed") == 0
    success = parse_time(tr["status"]["lastSuccessfulRunTime"])
    assert success is not None
    assert sample("tablerefresh_last_success_timestamp_seconds", namespace, NAME) == success.timestamp()
    assert sample("tablerefresh_run_duration_seconds", namespace, NAME) == 42.5
    assert sample("tablerefresh_last_run_peak_memory_bytes", namespace, NAME) == 1_500_000_000
    assert sample("tablerefresh_last_run_written_rows", namespace, NAME) == 20
    assert sample("tablerefresh_condition", namespace, NAME, type="LastRunSucceeded") == 1

    # kubectl describe tr: the conditions in words.
    described = controlplane.kubectl("describe", "tr", "-n", namespace, NAME).stdout
    assert "Type:                  LastRunSucceeded" in described and "succeeded in 42.5s" in described

    # kubectl get tr: every column filled.
    out = controlplane.kubectl("get", "tr", "-n", namespace).stdout.splitlines()
    header, row = out[0].split(), out[1].split()
    assert header == [
        *("NAME", "SCHEDULE", "SUSPEND", "READY", "STALE(H)", "DUPS"),
        *("LAST", "RUN", "LAST", "SUCCESS", "LAST", "FAILURE", "AGE"),
    ]
    assert row[7:11] == ["True", row[8], "0", "Succeeded"] and float(row[8]) < 0.1, out
    line = out[1]
    assert line[out[0].index("LAST FAILURE") : out[0].index("AGE")].strip() == "", out  # no failure yet

    # A restart records nothing twice: the Job is listed again, and status.lastRun already has it.
    before = api.tr(namespace, NAME)["status"]
    operator.stop()
    runs_before = len(writes.of(namespace, NAME, "runs"))
    operator.start()
    # The Job listed again and its runs brought up to date: a runs write that changed nothing.
    wait_for("the Job listed again", lambda: len(writes.of(namespace, NAME, "runs")) > runs_before)
    assert set(writes.of(namespace, NAME, "runs")[runs_before:]) == {"unchanged, 0 event(s)"}
    after = api.tr(namespace, NAME)["status"]
    assert after["lastRun"] == before["lastRun"]
    assert condition({"status": after}, "LastRunSucceeded") == condition({"status": before}, "LastRunSucceeded")
    assert sample("tablerefresh_runs_total", namespace, NAME, result="succeeded") == 1


FAILURES = {
    # The container used more memory than its limit: nothing written, the kubelet says OOMKilled.
    "oom": (
        lambda start: terminated(137, "OOMKilled", "", start, 30),
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        "OOMKilled",
        "more memory than its limit",
    ),
    # The image never pulled; the Job's deadline ended it.
    "image": (
        lambda start: {
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}}
        },
        ("DeadlineExceeded", "Job was active longer than specified deadline"),
        "ImagePullBackOff",
        "DeadlineExceeded",
    ),
    # The refresh ran and refused to swap: its summary says why.
    "summary": (
        lambda start: terminated(
            4,
            "Error",
            summary(
                "x",
                start,
                12.0,
                outcome=Outcome.FAILED,
                reason="VerificationFailed",
                error="the slice has 3 rows, under minSliceRows 10",
                exit_code=4,
                rows_before=1000,
                rows_after=1000,
            ),
            start,
            12,
        ),
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        "VerificationFailed",
        "under minSliceRows 10",
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failed_run_gives_last_run_succeeded_false_with_its_reason(
    api: Kube, namespace: str, ready: Cluster, case: str
) -> None:
    container, (job_reason, job_message), reason, words = FAILURES[case]
    started = T0
    job = ready.start_job("29000001", started)
    name = job["metadata"]["name"]
    ready.pod(job, container(started), "Failed" if case != "image" else "Pending")
    ready.end(job, succeeded=False, at=started + timedelta(seconds=60), reason=job_reason, message=job_message)

    tr = wait_for("lastRun", lambda: last_run_of(api, namespace, name))
    last = tr["status"]["lastRun"]
    assert last["reason"] == reason and words in last["error"], last
    assert last["outcome"] == ("Aborted" if case == "summary" else "Failed")
    failed = condition(tr, "LastRunSucceeded")
    assert (failed["status"], failed["reason"]) == ("False", reason)
    assert condition(tr, "Ready")["status"] == "False"
    assert "lastSuccessfulRunTime" not in tr["status"]
    if case == "summary":
        assert (last["rowsBefore"], last["rowsAfter"], last["durationSeconds"]) == (1000, 1000, 12.0)
    (event,) = wait_for("the Warning event", lambda: api.events(namespace, "RefreshFailed"))
    assert event["type"] == "Warning" and name in event["message"]
    assert sample("tablerefresh_runs_total", namespace, NAME, result="failed") == 1
    assert sample("tablerefresh_condition", namespace, NAME, type="LastRunSucceeded") == 0


def test_failures_post_one_event_and_a_success_recovers(api: Kube, namespace: str, ready: Cluster) -> None:
    for i in range(2):  # two failures in a row: one transition, one Event
        started = T0 + timedelta(minutes=i)
        job = ready.start_job(f"2900001{i}", started)
        ready.pod(job, terminated(137, "OOMKilled", "", started, 5), "Failed")
        ready.end(job, succeeded=False, at=started + timedelta(seconds=10), reason="BackoffLimitExceeded")
        name = job["metadata"]["name"]
        wait_for("lastRun", lambda: last_run_of(api, namespace, name))  # noqa: B023 (called at once)
    started = T0 + timedelta(minutes=5)
    job = ready.start_job("29000020", started)
    line = summary("y", started, 3.0, outcome=Outcome.SUCCEEDED, exit_code=0)
    ready.pod(job, terminated(0, "Completed", line, started, 3), "Succeeded")
    ready.end(job, succeeded=True, at=started + timedelta(seconds=4))
    tr = wait_for("LastRunSucceeded=True", lambda: has(api, namespace, NAME, "LastRunSucceeded", "True"))
    assert tr["status"]["lastRun"]["jobName"] == job["metadata"]["name"]
    assert len(api.events(namespace, "RefreshFailed")) == 1
    (recovered,) = wait_for("the Normal event", lambda: api.events(namespace, "RefreshSucceeded"))
    assert recovered["type"] == "Normal"
    assert sample("tablerefresh_runs_total", namespace, NAME, result="failed") == 2
    assert sample("tablerefresh_runs_total", namespace, NAME, result="succeeded") == 1


AUDITS = [
    {"name": "no-negative-tokens", "failingRows": 12, "maxFailingRows": 0, "passed": False},
    {"name": "held-within-tokens", "failingRows": 0, "maxFailingRows": 0, "passed": True},
]
EVIDENCE = "_tablerefresh_failed_0a1b2c3d_20260101T120000_trades-29000100"


def test_after_a_failed_run_ready_stays_false_through_the_next_job_until_one_succeeds(
    api: Kube, namespace: str, ready: Cluster, writes: Writes
) -> None:
    started = T0
    first = ready.start_job("29000100", started)
    error = "audit no-negative-tokens: 12 failing row(s), at most 0 allowed; db.trades was not changed"
    line = summary(
        first["metadata"]["name"],
        started,
        8.0,
        outcome=Outcome.FAILED,
        reason="AuditFailed",
        error=error,
        exit_code=8,
        rows_before=100,
        rows_after=100,
        audits=AUDITS,
        evidence_table=EVIDENCE,
    )
    ready.pod(first, terminated(8, "Error", line, started, 8), "Failed")
    ready.end(first, succeeded=False, at=started + timedelta(seconds=10), reason="BackoffLimitExceeded")
    tr = wait_for("lastRun", lambda: last_run_of(api, namespace, first["metadata"]["name"]))
    last = tr["status"]["lastRun"]
    assert (last["outcome"], last["reason"], last["error"]) == ("Aborted", "AuditFailed", error)
    assert last["audits"] == AUDITS and last["evidenceTable"] == EVIDENCE
    ready_condition = condition(tr, "Ready")
    assert (ready_condition["status"], ready_condition["reason"]) == ("False", "AuditFailed")
    (event,) = wait_for("the AuditFailed Event", lambda: api.events(namespace, "AuditFailed"))
    assert event["type"] == "Warning" and "no-negative-tokens: 12 failing row(s)" in event["message"]

    # The next Job starts: Ready stays False, with the failed run's reason, through health checks.
    second = ready.start_job("29000101", started + timedelta(minutes=10))
    wait_for("status.active", lambda: (t := api.tr(namespace, NAME))["status"].get("active") and t)
    checks = len(writes.of(namespace, NAME, "health"))
    wait_for("two more health checks", lambda: len(writes.of(namespace, NAME, "health")) >= checks + 2)
    tr = api.tr(namespace, NAME)
    assert [a["name"] for a in tr["status"]["active"]] == [second["metadata"]["name"]]
    assert (condition(tr, "Ready")["status"], condition(tr, "Ready")["reason"]) == ("False", "AuditFailed")
    assert condition(tr, "Fresh")["status"] == "True"  # the data is fine; the run is what failed

    # It succeeds: Ready turns True.
    done = started + timedelta(minutes=11)
    good = summary(second["metadata"]["name"], done, 30.0, outcome=Outcome.SUCCEEDED, exit_code=0)
    ready.pod(second, terminated(0, "Completed", good, done, 30), "Succeeded")
    ready.end(second, succeeded=True, at=done)
    tr = wait_for("Ready=True", lambda: has(api, namespace, NAME, "Ready", "True"))
    assert condition(tr, "LastRunSucceeded")["status"] == "True"
    assert tr["status"]["lastFailureTime"] == stamp(started + timedelta(seconds=10))
    assert tr["status"]["lastSuccessfulRunTime"] == stamp(done)


def test_recent_runs_and_last_failure_time_after_a_mix_of_outcomes(
    api: Kube, namespace: str, ready: Cluster, controlplane: Any
) -> None:
    """Six runs: the five newest listed newest first, with outcome, reason, finish and duration."""
    runs: list[tuple[str, str]] = []  # (job name, how it ended)
    plan = ["ok", "oom", "ok", "aborted", "ok", "oom"]
    for i, how in enumerate(plan):
        started = T0 + timedelta(minutes=10 * i)
        job = ready.start_job(f"2900020{i}", started)
        if how == "ok":
            line = summary(job["metadata"]["name"], started, 20.0, outcome=Outcome.SUCCEEDED, exit_code=0)
            ready.pod(job, terminated(0, "Completed", line, started, 20), "Succeeded")
            ready.end(job, succeeded=True, at=started + timedelta(seconds=21))
        elif how == "aborted":
            line = summary(
                job["metadata"]["name"],
                started,
                5.0,
                outcome=Outcome.FAILED,
                reason="VerificationFailed",
                error="the slice shrank by 80%",
                exit_code=4,
            )
            ready.pod(job, terminated(4, "Error", line, started, 5), "Failed")
            ready.end(job, succeeded=False, at=started + timedelta(seconds=6), reason="BackoffLimitExceeded")
        else:
            ready.pod(job, terminated(137, "OOMKilled", "", started, 30), "Failed")
            ready.end(job, succeeded=False, at=started + timedelta(seconds=31), reason="BackoffLimitExceeded")
        runs.append((job["metadata"]["name"], how))
        wait_for("lastRun", lambda: last_run_of(api, namespace, job["metadata"]["name"]))  # noqa: B023

    status = api.tr(namespace, NAME)["status"]
    expected = []
    for i, (name, how) in reversed(list(enumerate(runs))):
        started = T0 + timedelta(minutes=10 * i)
        entry: dict[str, Any] = {"id": name}
        if how == "ok":
            entry |= {
                "outcome": "Succeeded",
                "finished": stamp(started + timedelta(seconds=21)),
                "durationSeconds": 20.0,
            }
        elif how == "aborted":
            entry |= {
                "outcome": "Aborted",
                "reason": "VerificationFailed",
                "finished": stamp(started + timedelta(seconds=6)),
                "durationSeconds": 5.0,
            }
        else:
            entry |= {
                "outcome": "Failed",
                "reason": "OOMKilled",
                "finished": stamp(started + timedelta(seconds=31)),
                "durationSeconds": 31.0,  # the Job's, start to end: the refresh reported nothing
            }
        expected.append(entry)
    assert status["recentRuns"] == expected[:5]
    assert status["lastFailureTime"] == stamp(T0 + timedelta(minutes=50, seconds=31))
    assert status["lastSuccessfulRunTime"] == stamp(T0 + timedelta(minutes=40, seconds=21))

    # kubectl get tr shows both.
    header, row = controlplane.kubectl("get", "tr", "-n", namespace).stdout.splitlines()[:2]
    assert "LAST SUCCESS" in header and "LAST FAILURE" in header
    assert row.split()[10] == "Failed", row
    assert row[header.index("LAST FAILURE") : header.index("AGE")].strip(), row
