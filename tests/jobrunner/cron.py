"""The stand-in CronJob controller's decisions, and the clock it reads. Pure but for the clock.

As the CronJob controller: the most recent schedule time due since ``status.lastScheduleTime`` (or
the CronJob's creation) starts one Job named ``<cronjob>-<minutes since the epoch>``, unless
``suspend``, or ``startingDeadlineSeconds`` has passed for it, or ``concurrencyPolicy`` says no
(Forbid: skip while a Job runs, without moving lastScheduleTime; Replace: delete the running ones
first). Finished Jobs beyond the history limits are deleted, oldest first.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tablerefresh.schedule import Every, fire_times
from tablerefresh.schedule import parse as parse_schedule
from tests.jobrunner.statuses import parse, stamp

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"


class Clock:
    """The time the CronJob controller sees: the real time, or, once ``set``, a time the test moves."""

    def __init__(self) -> None:
        self._fixed: datetime | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._fixed or datetime.now(UTC)

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._fixed = moment

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._fixed = (self._fixed or datetime.now(UTC)) + timedelta(seconds=seconds)
            return self._fixed


def finished(job: Mapping[str, Any]) -> str | None:
    """Complete or Failed, or None while it runs."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def owned_by(job: Mapping[str, Any], cronjob: Mapping[str, Any]) -> bool:
    uid = cronjob["metadata"].get("uid")
    return any(r.get("uid") == uid and r.get("controller") for r in job["metadata"].get("ownerReferences") or [])


def due(cronjob: Mapping[str, Any], now: datetime) -> datetime | None:
    """The most recent schedule time in (last schedule or creation, now], if any."""
    spec, status = cronjob["spec"], cronjob.get("status") or {}
    since = parse(status.get("lastScheduleTime")) or parse(cronjob["metadata"].get("creationTimestamp")) or now
    schedule = parse_schedule(spec["schedule"])
    if isinstance(schedule, Every):
        periods = int((now - since).total_seconds() // schedule.seconds)
        return since + timedelta(seconds=periods * schedule.seconds) if periods >= 1 else None
    zone = ZoneInfo(spec.get("timeZone") or "UTC")
    days = (now - since).days + 2
    times = [t for t in fire_times(schedule, since.astimezone(zone), days) if t <= now]
    return times[-1] if times else None


def job_name(cronjob: Mapping[str, Any], scheduled: datetime) -> str:
    return f"{cronjob['metadata']['name']}-{int(scheduled.timestamp()) // 60}"


def job_for(cronjob: Mapping[str, Any], scheduled: datetime) -> dict[str, Any]:
    template = cronjob["spec"]["jobTemplate"]
    meta = template.get("metadata") or {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(cronjob, scheduled),
            "namespace": cronjob["metadata"]["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": {**(meta.get("annotations") or {}), SCHEDULED_ANNOTATION: stamp(scheduled)},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cronjob["metadata"]["name"],
                    "uid": cronjob["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }


@dataclass
class Plan:
    create: dict[str, Any] | None = None
    delete: list[str] = field(default_factory=list)  # Jobs to delete (Replace, history limits)
    status: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""  # why a due run did not start


def plan(cronjob: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]], now: datetime) -> Plan:
    spec = cronjob["spec"]
    mine = [j for j in jobs if owned_by(j, cronjob)]
    active = [j for j in mine if finished(j) is None]
    out = Plan()
    scheduled = None if spec.get("suspend") else due(cronjob, now)
    deadline = spec.get("startingDeadlineSeconds")
    if scheduled is not None and deadline is not None and (now - scheduled).total_seconds() > float(deadline):
        out.skipped = f"missed the starting deadline for {stamp(scheduled)}"
        out.status["lastScheduleTime"] = stamp(scheduled)
        scheduled = None
    if scheduled is not None and any(j["metadata"]["name"] == job_name(cronjob, scheduled) for j in mine):
        out.status["lastScheduleTime"] = stamp(scheduled)  # already started
        scheduled = None
    if scheduled is not None:
        policy = spec.get("concurrencyPolicy") or "Allow"
        if active and policy == "Forbid":
            out.skipped = "JobAlreadyActive: concurrencyPolicy Forbid"
        else:
            if active and policy == "Replace":
                out.delete.extend(str(j["metadata"]["name"]) for j in active)
                active = []
            out.create = job_for(cronjob, scheduled)
            out.status["lastScheduleTime"] = stamp(scheduled)
    out.delete.extend(_over_history(spec, mine))
    refs = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": j["metadata"]["name"],
            "namespace": j["metadata"]["namespace"],
            "uid": j["metadata"].get("uid"),
        }
        for j in active
    ]
    out.status["active"] = refs or None
    successes = [parse((j.get("status") or {}).get("completionTime")) for j in mine if finished(j) == "Complete"]
    known = [s for s in successes if s is not None]
    if known:
        out.status["lastSuccessfulTime"] = stamp(max(known))
    return out


def _over_history(spec: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for kind, limit in (
        ("Complete", spec.get("successfulJobsHistoryLimit", 3)),
        ("Failed", spec.get("failedJobsHistoryLimit", 1)),
    ):
        ended = sorted(
            (j for j in jobs if finished(j) == kind),
            key=lambda j: str(j["metadata"].get("creationTimestamp") or ""),
        )
        if limit is not None and len(ended) > int(limit):
            out.extend(str(j["metadata"]["name"]) for j in ended[: len(ended) - int(limit)])
    return out
