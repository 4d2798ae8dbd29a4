"""A refresh Job and its Pods -> ``status.lastRun``, ``LastRunSucceeded`` and ``status.active``. Pure.

The figures come from the refresh's JSON summary (``RunRecord.summary()``), which the Job's container
writes to its termination message. A Job that failed before it could write one (OOMKilled, an image
that cannot be pulled, a deadline) is still recorded, with the Kubernetes reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tablerefresh.controller.conditions import Observation, format_time
from tablerefresh.controller.render import CONTAINER_NAME
from tablerefresh.controller.samples import parse_time

LAST_RUN_SUCCEEDED = "LastRunSucceeded"
SUCCEEDED, FAILED, ABORTED = "Succeeded", "Failed", "Aborted"
# The refresh's own outcome when the swap ran and a later step failed: the target holds new data.
FAILED_AFTER_SWAP = "FailedAfterSwap"
# Refresh reasons for a run that stopped itself before touching the target (see dataplane.errors).
ABORT_REASONS = frozenset({"VerificationFailed", "MutationPending", "LockHeld", "LockLost"})
# A container stuck waiting for one of these never ran the refresh.
WAITING_FAILURES = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")  # metav1.Condition reason
# Figures copied from the summary into status.lastRun, under the same names.
_SUMMARY_FIGURES = (
    "rowsBefore",
    "rowsAfter",
    "sliceRowsBefore",
    "sliceRowsAfter",
    "duplicates",
    "changedKeys",
    "sampleDifferences",
)
# The kinds of run a refresh reports (an incremental spec's runs are one or the other).
_RUN_KINDS = frozenset({"Full", "Incremental"})


@dataclass(frozen=True)
class Finished:
    succeeded: bool
    at: datetime
    reason: str  # the Job's condition reason (BackoffLimitExceeded, DeadlineExceeded, ...)
    message: str


@dataclass(frozen=True)
class RunOutcome:
    last_run: dict[str, Any]  # status.lastRun, camelCase
    succeeded: bool
    finished_at: datetime


# The Job itself.


def cronjob_owner(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The CronJob that controls this Job (the first link of Job -> CronJob -> TableRefresh)."""
    for ref in job.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "CronJob":
            return dict(ref)
    return None


def finished(job: Mapping[str, Any]) -> Finished | None:
    """How and when the Job ended, or None while it runs (Complete and Failed are the final conditions)."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True" or condition.get("type") not in ("Complete", "Failed"):
            continue
        succeeded = condition["type"] == "Complete"
        at = parse_time(status.get("completionTime") if succeeded else None) or parse_time(
            condition.get("lastTransitionTime")
        )
        if at is None:
            continue
        return Finished(succeeded, at, str(condition.get("reason") or ""), str(condition.get("message") or ""))
    return None


def trim(job: Mapping[str, Any]) -> dict[str, Any]:
    """What the Job watch keeps of a Job: not its pod template (which holds the whole manifest)."""
    meta = job.get("metadata", {})
    kept = ("name", "namespace", "uid", "labels", "ownerReferences", "creationTimestamp")
    return {"metadata": {k: meta[k] for k in kept if k in meta}, "status": dict(job.get("status") or {})}


def active_refs(jobs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``status.active``: the Jobs still running, by name."""
    running = [j for j in jobs if finished(j) is None]
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": j["metadata"]["name"],
            "namespace": j["metadata"].get("namespace"),
            "uid": j["metadata"].get("uid"),
        }
        for j in sorted(running, key=lambda j: str(j["metadata"]["name"]))
    ]


def newer_than_recorded(job: Mapping[str, Any], end: Finished, last_run: Mapping[str, Any] | None) -> bool:
    """Whether this ended Job comes after the one ``status.lastRun`` records: each Job is recorded once,
    and an old Job listed again after a restart changes nothing."""
    if not last_run:
        return True
    if last_run.get("jobName") == job["metadata"]["name"]:
        return False
    recorded = parse_time(last_run.get("completionTime"))
    return recorded is None or (end.at, job["metadata"]["name"]) > (recorded, str(last_run.get("jobName") or ""))


# Its Pods.


def summary_of(message: str | None) -> dict[str, Any] | None:
    """The refresh's JSON summary in a termination message: the whole message, or its last JSON line
    when the message is the log's tail (FallbackToLogsOnError)."""
    for line in reversed((message or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "outcome" in data:
                return data
    return None


def _latest(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The last attempt: the newest Pod (a Job with retries has one per attempt)."""
    return max(pods, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp") or ""), default=None)


def _container(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    statuses = list((pod or {}).get("status", {}).get("containerStatuses") or [])
    return next((s for s in statuses if s.get("name") == CONTAINER_NAME), statuses[0] if statuses else {})


def _reason(text: str, fallback: str) -> str:
    return text if text and _REASON.match(text) and len(text) <= 1024 else fallback


def kubernetes_failure(end: Finished, pod: Mapping[str, Any] | None) -> tuple[str, str]:
    """The most specific reason Kubernetes gives for a failed run, and the words around it."""
    container = _container(pod)
    state = container.get("state") or {}
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    waiting = state.get("waiting") or {}
    job_words = f"{end.reason}: {end.message}" if end.message else end.reason
    if terminated.get("reason") == "OOMKilled":
        return "OOMKilled", (
            f"the refresh container was killed for using more memory than its limit "
            f"(exit code {terminated.get('exitCode', 137)}); raise spec.job.resources.limits.memory"
        )
    if waiting.get("reason") in WAITING_FAILURES:
        detail = f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
        return str(waiting["reason"]), f"the refresh container never started ({detail}); Job: {job_words}"
    if terminated:
        detail = f"exit code {terminated.get('exitCode')}"
        if terminated.get("reason"):
            detail += f", {terminated['reason']}"
        tail = (terminated.get("message") or "").strip()
        if tail:
            detail += f": {tail[-2000:]}"
        return _reason(end.reason, "RefreshFailed"), f"{job_words or 'the Job failed'} ({detail})"
    return _reason(end.reason, "RefreshFailed"), job_words or "the Job failed"


# The record.


def outcome_of(job: Mapping[str, Any], end: Finished, pods: Sequence[Mapping[str, Any]]) -> RunOutcome:
    """``status.lastRun`` for an ended Job: the summary's figures if the refresh wrote one, else the
    Kubernetes reason. Times are the Job's; the duration is the refresh's own when it reported one."""
    pod = _latest(pods)
    summary = summary_of(((_container(pod).get("state") or {}).get("terminated") or {}).get("message"))
    start = parse_time((job.get("status") or {}).get("startTime"))
    record: dict[str, Any] = {"jobName": job["metadata"]["name"], "runId": job["metadata"]["name"]}
    if start is not None:
        record["startTime"] = format_time(start)
    record["completionTime"] = format_time(end.at)
    if start is not None:
        record["durationSeconds"] = max(0.0, (end.at - start).total_seconds())

    if summary is not None:
        if summary.get("runId"):
            record["runId"] = str(summary["runId"])[:253]
        if isinstance(summary.get("durationSeconds"), int | float):
            record["durationSeconds"] = max(0.0, float(summary["durationSeconds"]))
        for figure in _SUMMARY_FIGURES:
            value = summary.get(figure)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                record[figure] = value
        if summary.get("kind") in _RUN_KINDS:
            record["kind"] = summary["kind"]
    said = str((summary or {}).get("outcome") or "")
    succeeded = end.succeeded and said in ("", SUCCEEDED)
    if succeeded:
        record["outcome"] = SUCCEEDED
    elif summary is not None and said != SUCCEEDED:
        reason = _reason(str(summary.get("reason") or ""), "RefreshFailed")
        if said == FAILED_AFTER_SWAP:
            record["outcome"] = FAILED_AFTER_SWAP
        else:
            record["outcome"] = ABORTED if said == "Skipped" or reason in ABORT_REASONS else FAILED
        record["reason"] = reason
        record["error"] = str(summary.get("error") or f"the refresh ended {said or 'without success'}")[:32768]
    else:  # nothing written, or the refresh said it succeeded and Kubernetes failed the Job anyway
        reason, error = kubernetes_failure(end, pod)
        record.update(outcome=FAILED, reason=reason, error=error[:32768])
    return RunOutcome(last_run=record, succeeded=succeeded, finished_at=end.at)


def observation(last_run: Mapping[str, Any]) -> Observation:
    """``LastRunSucceeded`` from ``status.lastRun``, in words ``kubectl describe`` can show."""
    job = last_run.get("jobName")
    duration = last_run.get("durationSeconds")
    took = f" in {float(duration):.1f}s" if isinstance(duration, int | float) else ""
    if last_run.get("outcome") == SUCCEEDED:
        rows = ""
        if "rowsBefore" in last_run and "rowsAfter" in last_run:
            rows = f": {last_run['rowsBefore']} -> {last_run['rowsAfter']} rows"
        return Observation(LAST_RUN_SUCCEEDED, "True", "RefreshSucceeded", f"Job {job} succeeded{took}{rows}")
    verb = {ABORTED: "was aborted", FAILED_AFTER_SWAP: "swapped the new data in, then failed"}.get(
        str(last_run.get("outcome")), "failed"
    )
    reason = str(last_run.get("reason") or "RefreshFailed")
    error = str(last_run.get("error") or "")
    return Observation(LAST_RUN_SUCCEEDED, "False", reason, f"Job {job} {verb}{took}: {error}"[:32768])
