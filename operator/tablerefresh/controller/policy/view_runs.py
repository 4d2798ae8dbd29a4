"""A refreshable view's runs (strategy RefreshableView) as status. Pure.

The server runs the view; each health interval the operator reads the view's last attempt
(``dataplane.view.refreshes``, as a ``status.lastRun``-shaped summary) and the next time it runs.
The fields and ``LastRunSucceeded`` are those of a CronJob's runs, so Ready, the ``RefreshFailed``
Event, the metrics, the alerts and the dashboard read a view as they read Jobs; a run is recorded
once, however often the same attempt is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tablerefresh.contract import Outcome, Reason
from tablerefresh.controller.policy.jobs import RECENT_RUNS, RunsUpdate, recent_run
from tablerefresh.controller.policy.status import LAST_RUN_SUCCEEDED, Observation, parse_time

_COPIED = ("runId", "outcome", "startTime", "completionTime", "durationSeconds", "writtenRows", "reason", "error")


def view_runs_update(
    status: Mapping[str, Any], last: Mapping[str, Any] | None, next_run: str | None, view: str
) -> RunsUpdate:
    """lastRun, recentRuns, lastSuccessfulRunTime, lastFailureTime, nextRunTime and LastRunSucceeded
    from the view's last attempt (None: it has not run since the server started)."""
    fields: dict[str, Any] = {}
    if next_run is not None:
        fields["nextRunTime"] = next_run
    recorded: Mapping[str, Any] | None = status.get("lastRun")
    recent = [dict(r) for r in status.get("recentRuns") or []]
    results: list[bool] = []
    if last is not None and (recorded is None or recorded.get("runId") != last.get("runId")):
        recorded = {k: last[k] for k in _COPIED if k in last}
        succeeded = recorded.get("outcome") == Outcome.SUCCEEDED
        results.append(succeeded)
        recent.insert(0, recent_run(recorded))
        moment = parse_time(recorded.get("completionTime"))
        field = "lastSuccessfulRunTime" if succeeded else "lastFailureTime"
        if moment is not None and (parse_time(status.get(field)) or moment) <= moment:
            fields[field] = recorded["completionTime"]
    conditions = []
    if recorded:
        fields["lastRun"] = dict(recorded)
        conditions.append(view_run_condition(recorded, view))
    if recent:
        fields["recentRuns"] = recent[:RECENT_RUNS]
    return RunsUpdate(fields, conditions, results)


def view_run_condition(last_run: Mapping[str, Any], view: str) -> Observation:
    """``LastRunSucceeded`` for a view's refresh, in words ``kubectl describe`` can show."""
    duration = last_run.get("durationSeconds")
    took = f" in {float(duration):.1f}s" if isinstance(duration, int | float) else ""
    if last_run.get("outcome") == Outcome.SUCCEEDED:
        rows = f": {last_run['writtenRows']} rows written" if "writtenRows" in last_run else ""
        return Observation(LAST_RUN_SUCCEEDED, "True", "RefreshSucceeded", f"view {view} refreshed{took}{rows}")
    error = str(last_run.get("error") or "")
    reason = str(last_run.get("reason") or Reason.FAILED)
    message = f"view {view} failed to refresh (the target keeps its previous data): {error}"
    return Observation(LAST_RUN_SUCCEEDED, "False", reason, message[:32768])
