"""Refresh Jobs (policy.jobs), without an API server: the Job run-now makes and when it may, and a
Job that ended and its Pods -> status.lastRun."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tablerefresh.controller.policy.cronjob import render_cronjob
from tablerefresh.controller.policy.jobs import (
    INSTANTIATE_ANNOTATION,
    active_refs,
    admit_run,
    ended_run,
    finished,
    job_from_cronjob,
    job_name,
    last_run_condition,
    newer_than_recorded,
    newly_ended,
    runs_update,
    summary_of,
)
from tablerefresh.dataplane.run.runs import Outcome
from tablerefresh.spec import load_manifest
from tests.controller_fakes import T0, job, pod, stamp, summary_line, terminated
from tests.harness.kube import ROOT

EXAMPLE = ROOT / "examples" / "polymarket" / "tablerefresh.yaml"













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
    result = ended_run(done, end, [pod(terminated(0, "Completed", line))])
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
    ok = last_run_condition(result.last_run)
    assert (ok.status, ok.reason) == ("True", "RefreshSucceeded")
    assert ok.message == "Job trades-1 succeeded in 42.5s: 10 -> 12 rows"
    # Without a summary (an old image): the Job's word and its times.
    bare = ended_run(done, end, [])
    assert bare.succeeded and bare.last_run["durationSeconds"] == 60 and "rowsAfter" not in bare.last_run


def failed_run(container: dict[str, Any] | None, reason: str = "BackoffLimitExceeded", message: str = "") -> Any:
    failed = job("trades-1", end="Failed", reason=reason, message=message)
    end = finished(failed)
    assert end is not None
    return ended_run(failed, end, [pod(container)] if container is not None else [])


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

    bad = last_run_condition(oom.last_run)
    assert (bad.status, bad.reason) == ("False", "OOMKilled")
    assert bad.message.startswith("Job trades-1 failed in 60.0s: the refresh container was killed")


def test_a_run_that_refused_to_swap_is_aborted_with_the_refresh_reason() -> None:
    line = summary_line(
        outcome=Outcome.FAILED, reason="VerificationFailed", error="the slice shrank by 80%", exit_code=4, rows_before=9
    )
    aborted = failed_run(terminated(4, "Error", line))
    assert (aborted.last_run["outcome"], aborted.last_run["reason"]) == ("Aborted", "VerificationFailed")
    assert aborted.last_run["error"] == "the slice shrank by 80%" and aborted.last_run["rowsBefore"] == 9
    assert "was aborted" in last_run_condition(aborted.last_run).message

    skipped = failed_run(terminated(3, "Error", summary_line(outcome=Outcome.SKIPPED, reason="LockHeld", exit_code=3)))
    assert (skipped.last_run["outcome"], skipped.last_run["reason"]) == ("Aborted", "LockHeld")

    broke = failed_run(terminated(1, "Error", summary_line(outcome=Outcome.FAILED, reason="RefreshFailed", error="x")))
    assert (broke.last_run["outcome"], broke.last_run["reason"]) == ("Failed", "RefreshFailed")

    # The refresh said it succeeded, but the Job failed anyway (killed after writing): Kubernetes wins.
    late = failed_run(terminated(137, "OOMKilled", summary_line(outcome=Outcome.SUCCEEDED, exit_code=0)))
    assert not late.succeeded and late.last_run["reason"] == "OOMKilled"


def with_figures(line: str, **figures: Any) -> str:
    """A summary line with figures the data plane adds (memory and work), as its JSON would carry them."""
    return json.dumps({**json.loads(line), **figures})


def test_a_run_records_its_peak_memory_and_work_and_leaves_out_what_the_engine_did_not_report() -> None:
    line = with_figures(
        summary_line(outcome=Outcome.SUCCEEDED),
        peakMemoryBytes=1_500_000_000,
        readRows=2_000_000,
        readBytes=96_000_000,
        writtenRows=1_000_000,
        writtenBytes=None,  # the engine did not say
    )
    done = job("trades-1", end="Complete")
    end = finished(done)
    assert end is not None
    last = ended_run(done, end, [pod(terminated(0, "Completed", line))]).last_run
    assert {k: last.get(k) for k in ("peakMemoryBytes", "readRows", "readBytes", "writtenRows")} == {
        "peakMemoryBytes": 1_500_000_000,
        "readRows": 2_000_000,
        "readBytes": 96_000_000,
        "writtenRows": 1_000_000,
    }
    assert "writtenBytes" not in last  # null is no figure, not 0
    # A run that hit its memory limit still tells how far it got; nonsense is not copied.
    failed = with_figures(
        summary_line(outcome=Outcome.FAILED, reason="RefreshFailed", error="MEMORY_LIMIT_EXCEEDED", exit_code=1),
        peakMemoryBytes=8_000_000_000,
        readRows=-1,
        readBytes=1.5,
        writtenRows=True,
    )
    broke = failed_run(terminated(1, "Error", failed)).last_run
    assert broke["outcome"] == "Failed" and broke["peakMemoryBytes"] == 8_000_000_000
    assert not {"readRows", "readBytes", "writtenRows", "writtenBytes"} & broke.keys()


# Run now.


def rendered() -> dict[str, Any]:
    cronjob = render_cronjob(load_manifest(EXAMPLE), owner_uid="0000-tr")
    cronjob["metadata"]["uid"] = "1111-cj"
    return cronjob


def test_the_job_is_the_cronjob_template_owned_by_the_cronjob() -> None:
    cronjob = rendered()
    job = job_from_cronjob(cronjob, token="t1")
    template = cronjob["spec"]["jobTemplate"]
    assert job["spec"] == template["spec"]
    assert job["metadata"]["labels"] == template["metadata"]["labels"]
    assert job["metadata"]["annotations"][INSTANTIATE_ANNOTATION] == "manual"
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": cronjob["metadata"]["name"],
        "uid": "1111-cj",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert job["metadata"]["name"] == job_name(cronjob["metadata"]["name"], "t1")
    assert len(job["metadata"]["name"]) <= 63
    assert job_name("x", "t1") == job_name("x", "t1") != job_name("x", "t2")


def test_a_dedupe_job_is_the_same_job_with_its_own_command() -> None:
    cronjob = rendered()
    job = job_from_cronjob(cronjob, token="t1", args=["dedupe", "--slice-only"], purpose="dedupe")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    (template,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["dedupe", "--slice-only"]
    assert {**container, "args": template["args"]} == template  # same image, env, security context
    assert template["args"][0] == "refresh"  # the CronJob's own template is untouched
    assert job["metadata"]["name"] != job_name(cronjob["metadata"]["name"], "t1")


def test_the_job_is_a_valid_kubernetes_job() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(job_from_cronjob(rendered(), token="t1"), "1.36", strict=True)


def _job(name: str, done: str | None) -> dict[str, Any]:
    conditions = [{"type": done, "status": "True"}] if done else []
    return {"metadata": {"name": name}, "status": {"conditions": conditions}}


def test_concurrency_rules_as_the_cronjob_controller_applies_them() -> None:
    done = [_job("a", "Complete"), _job("b", "Failed")]
    assert admit_run("Forbid", done).create
    running = [*done, _job("c", None)]
    forbid = admit_run("Forbid", running)
    assert not forbid.create and "c is still running" in forbid.reason
    replace = admit_run("Replace", running)
    assert replace.create and replace.delete == ["c"]


# A failed audit, and the runs a TableRefresh keeps.


def test_a_failed_audit_is_aborted_with_the_audit_its_count_and_the_evidence_table() -> None:
    audits = [
        {"name": "no-negative-tokens", "failingRows": 12, "maxFailingRows": 0, "passed": False},
        {"name": "held-within-tokens", "failingRows": 0, "maxFailingRows": 0, "passed": True},
    ]
    line = summary_line(
        outcome=Outcome.FAILED,
        reason="AuditFailed",
        error="audit no-negative-tokens: 12 failing row(s), at most 0 allowed; db.trades was not changed",
        exit_code=8,
        audits=audits,
        evidence_table="_tablerefresh_failed_ab12_20260101T120000_trades-1",
    )
    run = failed_run(terminated(8, "Error", line))
    assert (run.last_run["outcome"], run.last_run["reason"]) == ("Aborted", "AuditFailed")
    assert run.last_run["audits"] == audits
    assert run.last_run["evidenceTable"] == "_tablerefresh_failed_ab12_20260101T120000_trades-1"
    said = last_run_condition(run.last_run)
    assert (said.status, said.reason) == ("False", "AuditFailed")
    assert "no-negative-tokens: 12 failing row(s)" in said.message


def test_recent_runs_and_the_last_failure_after_a_mix_of_outcomes() -> None:
    """Newest first, at most five; lastFailureTime and lastSuccessfulRunTime each the latest of its kind,
    including Jobs that ended together while the operator was away."""
    status: dict[str, Any] = {}
    outcomes = ["Complete", "Failed", "Complete", "Failed", "Failed", "Complete", "Failed"]
    for i, end in enumerate(outcomes):
        ended_job = job(f"trades-{i}", end=end, at=T0 + timedelta(minutes=i), reason="BackoffLimitExceeded")
        ended = newly_ended([ended_job], status.get("lastRun"))
        update = runs_update([ended_job], status, ended, [])
        status = {**status, **update.fields}
    recent = status["recentRuns"]
    assert [r["id"] for r in recent] == ["trades-6", "trades-5", "trades-4", "trades-3", "trades-2"]
    assert [r["outcome"] for r in recent] == ["Failed", "Succeeded", "Failed", "Failed", "Succeeded"]
    assert recent[0]["reason"] == "BackoffLimitExceeded" and "reason" not in recent[1]
    assert recent[0]["finished"] == stamp(T0 + timedelta(minutes=6)) and recent[0]["durationSeconds"] == 60.0
    assert status["lastFailureTime"] == stamp(T0 + timedelta(minutes=6))
    assert status["lastSuccessfulRunTime"] == stamp(T0 + timedelta(minutes=5))

    # Three Jobs that ended while the operator was down: all listed, the newest recorded in full.
    later = [
        job(f"trades-{i}", end=end, at=T0 + timedelta(minutes=i))
        for i, end in ((7, "Failed"), (8, "Complete"), (9, "Complete"))
    ]
    update = runs_update(later, status, newly_ended(later, status["lastRun"]), [])
    assert [r["id"] for r in update.fields["recentRuns"]] == [
        "trades-9",
        "trades-8",
        "trades-7",
        "trades-6",
        "trades-5",
    ]
    assert [r["outcome"] for r in update.fields["recentRuns"]][:3] == ["Succeeded", "Succeeded", "Failed"]
    assert update.fields["lastFailureTime"] == stamp(T0 + timedelta(minutes=7))
    assert update.fields["lastSuccessfulRunTime"] == stamp(T0 + timedelta(minutes=9))
