"""Refresh Jobs: the one run-now starts, and what the ones that end say. Pure.

- Run now: :func:`job_from_cronjob` makes the Job the CronJob controller would make from the
  CronJob's template, named after a token so a request makes one Job however often it is repeated;
  :func:`admit_run` applies the CronJob's concurrencyPolicy (Forbid refuses while a Job runs,
  Replace deletes it first).
- Ended Jobs: a Job and its Pods -> ``status.lastRun``, ``recentRuns``, ``lastFailureTime``,
  ``LastRunSucceeded`` and ``status.active``
  (:func:`runs_update`). The figures come from the refresh's JSON summary (``RunRecord.summary()``),
  which the Job's container writes to its termination message. A Job that failed before it could
  write one (OOMKilled, an image that cannot be pulled, a deadline) is still recorded, with the
  Kubernetes reason. Each Job is recorded once: an old Job listed again after a restart changes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tablerefresh.contract import ABORT_REASONS, REASON_PATTERN, Outcome, Reason
from tablerefresh.controller.policy.cronjob import CONTAINER_NAME, NAME_LABEL, name_label_value
from tablerefresh.controller.policy.owners import controlled_by
from tablerefresh.controller.policy.status import LAST_RUN_SUCCEEDED, Observation, format_time, parse_time

# status.lastRun's outcomes: the refresh's own, and Aborted for a run that stopped itself before
# touching the target (its summary says Skipped, or one of ABORT_REASONS).
SUCCEEDED, FAILED, FAILED_AFTER_SWAP = Outcome.SUCCEEDED, Outcome.FAILED, Outcome.FAILED_AFTER_SWAP
ABORTED = "Aborted"
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
_REASON = re.compile(REASON_PATTERN)
# Figures copied from the summary into status.lastRun, under the same names.
_SUMMARY_FIGURES = (
    "rowsBefore",
    "rowsAfter",
    "sliceRowsBefore",
    "sliceRowsAfter",
    "duplicates",
    "changedKeys",
    "sampleDifferences",
    # What the run used and did (the engine's figures; a figure the engine did not report is absent).
    "peakMemoryBytes",
    "readRows",
    "readBytes",
    "writtenRows",
    "writtenBytes",
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
class EndedRun:
    last_run: dict[str, Any]  # status.lastRun, camelCase
    succeeded: bool
    finished_at: datetime


# Run now.

ANNOTATION = "tablerefresh.dev/run-now"
TOKEN_ANNOTATION = "tablerefresh.dev/run-now-token"
# What `kubectl create job --from=cronjob/...` and the CronJob controller's manual runs carry.
INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"


@dataclass(frozen=True)
class Admission:
    create: bool
    delete: list[str]
    reason: str


def job_name(cronjob: str, token: str, purpose: str = "now") -> str:
    """<cronjob>-<purpose>-<hash of token>: at most 63 characters (CronJob names are kept to 52)."""
    suffix = f"-{purpose[:3]}-{hashlib.sha256(token.encode()).hexdigest()[:6]}"
    return cronjob + suffix


def is_active(job: Mapping[str, Any]) -> bool:
    """Neither complete nor failed yet."""
    conditions = job.get("status", {}).get("conditions") or []
    return not any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def admit_run(concurrency_policy: str, jobs: Sequence[Mapping[str, Any]]) -> Admission:
    """What the CronJob controller would do about a new run, given the Jobs it owns."""
    active = sorted(j["metadata"]["name"] for j in jobs if is_active(j))
    if not active:
        return Admission(True, [], "no Job is running")
    if concurrency_policy == "Replace":
        return Admission(True, active, f"concurrencyPolicy Replace: replacing {', '.join(active)}")
    return Admission(False, [], f"concurrencyPolicy {concurrency_policy}: Job {', '.join(active)} is still running")


def job_from_cronjob(
    cronjob: Mapping[str, Any], *, token: str, args: list[str] | None = None, purpose: str = "now"
) -> dict[str, Any]:
    """The Job the CronJob controller would create from this CronJob's template, owned by it.

    ``args`` replaces the container's arguments: a one-off ``dedupe`` runs with the refresh's image,
    environment, credentials and security context, and its own command line.
    """
    meta = cronjob["metadata"]
    template = copy.deepcopy(dict(cronjob["spec"]["jobTemplate"]))
    if args is not None:
        template["spec"]["template"]["spec"]["containers"][0]["args"] = args
    template_meta = template.get("metadata") or {}
    annotations = {
        **(template_meta.get("annotations") or {}),
        INSTANTIATE_ANNOTATION: "manual",
        TOKEN_ANNOTATION: token,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"], token, purpose),
            "namespace": meta["namespace"],
            "labels": dict(template_meta.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }


def new_token(now: datetime) -> str:
    """A run-now token for a request made ``now`` (the caller's clock: policy reads none)."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}"


def pending_token(body: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    """The annotation's token when it has not been handled yet (``status.runNow`` has the last one)."""
    token = (body.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    handled = (status.get("runNow") or {}).get("token")
    return str(token) if token and token != handled else None


# A Job that ran.


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
        return _reason(end.reason, Reason.FAILED), f"{job_words or 'the Job failed'} ({detail})"
    return _reason(end.reason, Reason.FAILED), job_words or "the Job failed"


# status.lastRun.


def ended_run(job: Mapping[str, Any], end: Finished, pods: Sequence[Mapping[str, Any]]) -> EndedRun:
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
        audits = [a for a in summary.get("audits") or [] if _audit_ok(a)]
        if audits:
            record["audits"] = audits[:64]
        if isinstance(summary.get("evidenceTable"), str) and summary["evidenceTable"]:
            record["evidenceTable"] = summary["evidenceTable"][:253]
    said = str((summary or {}).get("outcome") or "")
    succeeded = end.succeeded and said in ("", SUCCEEDED)
    if succeeded:
        record["outcome"] = SUCCEEDED
    elif summary is not None and said != SUCCEEDED:
        reason = _reason(str(summary.get("reason") or ""), Reason.FAILED)
        if said == FAILED_AFTER_SWAP:
            record["outcome"] = FAILED_AFTER_SWAP
        else:
            record["outcome"] = ABORTED if said == Outcome.SKIPPED or reason in ABORT_REASONS else FAILED
        record["reason"] = reason
        record["error"] = str(summary.get("error") or f"the refresh ended {said or 'without success'}")[:32768]
    else:  # nothing written, or the refresh said it succeeded and Kubernetes failed the Job anyway
        reason, error = kubernetes_failure(end, pod)
        record.update(outcome=FAILED, reason=reason, error=error[:32768])
    return EndedRun(last_run=record, succeeded=succeeded, finished_at=end.at)


def _audit_ok(audit: Any) -> bool:
    """An audit result as the summary writes it, safe to copy into the status."""
    return (
        isinstance(audit, dict)
        and isinstance(audit.get("name"), str)
        and isinstance(audit.get("failingRows"), int)
        and audit["failingRows"] >= 0
        and isinstance(audit.get("passed"), bool)
    )


def last_run_condition(last_run: Mapping[str, Any]) -> Observation:
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
    reason = str(last_run.get("reason") or Reason.FAILED)
    error = str(last_run.get("error") or "")
    return Observation(LAST_RUN_SUCCEEDED, "False", reason, f"Job {job} {verb}{took}: {error}"[:32768])


# A TableRefresh's runs.


RECENT_RUNS = 5  # status.recentRuns keeps this many, newest first


def recent_run(last_run: Mapping[str, Any]) -> dict[str, Any]:
    """A run as ``status.recentRuns`` lists it."""
    run: dict[str, Any] = {
        "id": str(last_run.get("runId") or last_run.get("jobName")),
        "outcome": str(last_run.get("outcome") or FAILED),
        "finished": str(last_run["completionTime"]),
    }
    if last_run.get("reason"):
        run["reason"] = str(last_run["reason"])
    if isinstance(last_run.get("durationSeconds"), int | float):
        run["durationSeconds"] = float(last_run["durationSeconds"])
    return run


@dataclass(frozen=True)
class RunsUpdate:
    fields: dict[str, Any]  # status.active; lastRun, recentRuns and the last success and failure once known
    conditions: list[Observation]  # LastRunSucceeded, once there is a run
    results: list[bool]  # whether each Job that ended since the last record succeeded, oldest first


def jobs_of(tr: Mapping[str, Any], jobs: Iterable[Mapping[str, Any]], status: Mapping[str, Any]) -> list[Any]:
    """The TableRefresh's Jobs: controlled by its CronJob (the uid in status.cronJobRef, once known)
    and labelled with its name."""
    cronjob_uid = (status.get("cronJobRef") or {}).get("uid")
    label = name_label_value(str(tr["metadata"]["name"]))
    return [
        j
        for j in jobs
        if (j["metadata"].get("labels") or {}).get(NAME_LABEL) == label
        and (cronjob_uid is None or controlled_by(j, cronjob_uid))
    ]


def newly_ended(jobs: Iterable[Mapping[str, Any]], last_run: Mapping[str, Any] | None) -> list[tuple[Any, Finished]]:
    """The Jobs that ended after the one ``status.lastRun`` records, oldest first."""
    ended = []
    for job in jobs:
        end = finished(job)
        if end is not None and newer_than_recorded(job, end, last_run):
            ended.append((job, end))
    return sorted(ended, key=lambda pair: (pair[1].at, str(pair[0]["metadata"]["name"])))


def runs_update(
    jobs: Sequence[Mapping[str, Any]],
    status: Mapping[str, Any],
    ended: Sequence[tuple[Mapping[str, Any], Finished]],
    pods: Sequence[Mapping[str, Any]],
) -> RunsUpdate:
    """status.active, lastRun, recentRuns, lastSuccessfulRunTime, lastFailureTime and LastRunSucceeded
    from the Jobs; ``pods`` are the newest ended Job's. Older Jobs that also ended meanwhile (the
    operator was down) are counted and listed in recentRuns with the Job's own outcome; only the
    newest is recorded in full."""
    last_run: Mapping[str, Any] | None = status.get("lastRun")
    results = [end.succeeded for _, end in ended]
    recent = [dict(r) for r in status.get("recentRuns") or []]
    if last_run and not recent and last_run.get("completionTime"):
        recent = [recent_run(last_run)]  # recorded before recentRuns existed
    last_success = parse_time(status.get("lastSuccessfulRunTime"))
    last_failure = parse_time(status.get("lastFailureTime"))
    if ended:
        job, end = ended[-1]
        run = ended_run(job, end, pods)
        last_run = run.last_run
        results[-1] = run.succeeded
        for (older, older_end), ok in zip(ended[:-1], results[:-1], strict=True):
            name = str(older["metadata"]["name"])
            outcome = {"runId": name, "completionTime": format_time(older_end.at)}
            recent.insert(0, recent_run({**outcome, "outcome": SUCCEEDED if ok else FAILED}))
        recent.insert(0, recent_run(last_run))
        moments = [e.at for _, e in ended]
        successes = [at for at, ok in zip(moments, results, strict=True) if ok]
        failures = [at for at, ok in zip(moments, results, strict=True) if not ok]
        last_success = max([*successes, *([last_success] if last_success else [])], default=None)
        last_failure = max([*failures, *([last_failure] if last_failure else [])], default=None)

    fields: dict[str, Any] = {"active": active_refs(jobs)}
    conditions: list[Observation] = []
    if last_run:
        fields["lastRun"] = dict(last_run)
        conditions.append(last_run_condition(last_run))
    if recent:
        fields["recentRuns"] = recent[:RECENT_RUNS]
    if last_success is not None:
        fields["lastSuccessfulRunTime"] = format_time(last_success)
    if last_failure is not None:
        fields["lastFailureTime"] = format_time(last_failure)
    return RunsUpdate(fields, conditions, results)
