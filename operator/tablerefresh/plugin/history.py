"""A TableRefresh's runs: ``status.recentRuns`` when the operator keeps it, else the Jobs of its CronJob
with their outcomes, read as the operator reads them (the refresh's summary in the termination
message; the Kubernetes reason when there is none). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tablerefresh.controller.policy.jobs import ended_run, finished
from tablerefresh.plugin.words import ago, count, duration, parse_time

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
FIELDS = (
    "jobName",
    "startTime",
    "completionTime",
    "durationSeconds",
    "outcome",
    "reason",
    "error",
    "rowsBefore",
    "rowsAfter",
)


def runs(
    tr: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Oldest first. ``pods`` are the Jobs' Pods (any order)."""
    status = tr.get("status") or {}
    recorded = {str(r.get("jobName")): dict(r) for r in status.get("recentRuns") or [] if r.get("jobName")}
    last = status.get("lastRun") or {}
    if last.get("jobName"):
        recorded.setdefault(str(last["jobName"]), dict(last))
    out: dict[str, dict[str, Any]] = {}
    for job in jobs:
        name = str(job["metadata"]["name"])
        if name in recorded:
            out[name] = recorded[name]
            continue
        end = finished(job)
        start = (job.get("status") or {}).get("startTime")
        if end is None:
            out[name] = {"jobName": name, "startTime": start, "outcome": "Running"}
            continue
        mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(JOB_NAME_LABEL) == name]
        out[name] = ended_run(job, end, mine).last_run
    for name, run in recorded.items():  # runs whose Jobs the history limits already deleted
        out.setdefault(name, run)
    ordered = sorted(out.values(), key=lambda r: str(r.get("startTime") or r.get("completionTime") or ""))
    return [{k: r[k] for k in FIELDS if r.get(k) is not None} for r in ordered]


def table(rows: Sequence[Mapping[str, Any]], now: datetime) -> list[str]:
    header = ["JOB", "STARTED", "DURATION", "OUTCOME", "ROWS", "REASON"]
    lines = [header]
    for r in rows:
        rows_words = f"{count(r['rowsBefore'])} -> {count(r['rowsAfter'])}" if "rowsAfter" in r else "-"
        reason = r.get("reason", "")
        if r.get("error"):
            reason += f": {str(r['error']).strip().splitlines()[0][:80]}"
        lines.append(
            [
                str(r.get("jobName")),
                ago(parse_time(r.get("startTime")), now),
                duration(r.get("durationSeconds")),
                str(r.get("outcome", "?")),
                rows_words,
                reason or "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return [
        "   ".join([*(v.ljust(w) for v, w in zip(line[:-1], widths, strict=True)), line[-1]]).rstrip() for line in lines
    ]
