"""The Job watch's side: which TableRefresh a Job belongs to, and its runs written to that status.

Jobs are kept (trimmed) as the watch reports them, grouped by the CronJob that controls them, so a
Job seen before its TableRefresh (both watches start at once) is not lost, and ``status.active`` is
computed from every Job at once. The blocking part (:meth:`RunRecorder.sync`) runs in a worker
thread under the object's lock, like every status writer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from tablerefresh.controller.conditions import Observation, format_time
from tablerefresh.controller.jobs import (
    Finished,
    active_refs,
    cronjob_owner,
    finished,
    newer_than_recorded,
    observation,
    outcome_of,
    trim,
)
from tablerefresh.controller.kube import Kube
from tablerefresh.controller.naming import JOB_NAME_LABEL, NAME_LABEL, cronjob_name, name_label_value
from tablerefresh.controller.samples import parse_time
from tablerefresh.controller.writer import StatusWriter

log = logging.getLogger(__name__)

MANAGER = "tablerefresh-runs"
Group = tuple[str, str]  # namespace, CronJob name


class RunRecorder:
    def __init__(self, kube: Kube, writer: StatusWriter) -> None:
        self._kube = kube
        self._writer = writer
        self._jobs: dict[Group, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def job_event(self, event_type: str | None, job: Mapping[str, Any]) -> Group | None:
        """Keep the Job as it is now; return the CronJob it belongs to (None: not a CronJob's Job)."""
        owner = cronjob_owner(job)
        if owner is None:
            return None
        meta = job["metadata"]
        group = (str(meta["namespace"]), str(owner["name"]))
        with self._lock:
            jobs = self._jobs.setdefault(group, {})
            if event_type == "DELETED":
                jobs.pop(str(meta["name"]), None)
            else:
                jobs[str(meta["name"])] = trim(job)
        return group

    def has_jobs(self, namespace: str, tr_name: str) -> bool:
        with self._lock:
            return bool(self._jobs.get((namespace, cronjob_name(tr_name))))

    def forget(self, namespace: str, tr_name: str) -> None:
        with self._lock:
            self._jobs.pop((namespace, cronjob_name(tr_name)), None)

    def jobs_of(self, tr: Mapping[str, Any], status: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The TableRefresh's Jobs: controlled by its CronJob (the uid in status.cronJobRef, once known)
        and labelled with its name."""
        meta = tr["metadata"]
        with self._lock:
            jobs = list(self._jobs.get((str(meta["namespace"]), cronjob_name(str(meta["name"]))), {}).values())
        cronjob_uid = (status.get("cronJobRef") or {}).get("uid")
        label = name_label_value(str(meta["name"]))
        return [
            j
            for j in jobs
            if (j["metadata"].get("labels") or {}).get(NAME_LABEL) == label
            and (cronjob_uid is None or (cronjob_owner(j) or {}).get("uid") == cronjob_uid)
        ]

    def sync(self, tr: Mapping[str, Any]) -> list[bool] | None:
        """Bring status.active, status.lastRun and LastRunSucceeded up to date with the Jobs.

        Returns whether each newly ended Job succeeded (for the run counters), oldest first; None when
        there is nothing to write (no Jobs ever seen) or the object is gone.
        """
        current = self._writer.current(tr)
        jobs = self.jobs_of(tr, current)
        if not jobs and not current.get("active") and not current.get("lastRun"):
            return None
        last_run: Mapping[str, Any] | None = current.get("lastRun")
        ended: list[tuple[dict[str, Any], Finished]] = []
        for job in jobs:
            end = finished(job)
            if end is not None and newer_than_recorded(job, end, last_run):
                ended.append((job, end))
        ended.sort(key=lambda pair: (pair[1].at, str(pair[0]["metadata"]["name"])))
        results = [end.succeeded for _, end in ended]
        last_success = parse_time(current.get("lastSuccessfulRunTime"))

        if ended:
            # Older Jobs that also ended meanwhile (the operator was down) are counted, not recorded.
            job, end = ended[-1]
            name = str(job["metadata"]["name"])
            pods = self._kube.list_pods(str(tr["metadata"]["namespace"]), f"{JOB_NAME_LABEL}={name}")
            outcome = outcome_of(job, end, pods)
            last_run = outcome.last_run
            results[-1] = outcome.succeeded
            successes = [e.at for (j, e), ok in zip(ended, results, strict=True) if ok]
            last_success = max([*successes, *([last_success] if last_success else [])], default=None)

        fields: dict[str, Any] = {"active": active_refs(jobs)}
        observations: list[Observation] = []
        if last_run:
            fields["lastRun"] = dict(last_run)
            observations.append(observation(last_run))
        if last_success is not None:
            fields["lastSuccessfulRunTime"] = format_time(last_success)
        if self._writer.write(tr, fields, observations) is None:
            return None
        if ended:
            log.info("%s/%s: Job %s %s", tr["metadata"]["namespace"], tr["metadata"]["name"], *_said(last_run))
        return results


def _said(last_run: Mapping[str, Any] | None) -> tuple[str, str]:
    run = last_run or {}
    outcome = str(run.get("outcome", "")).lower()
    return str(run.get("jobName")), outcome + (f" ({run['reason']})" if run.get("reason") else "")
