"""A refreshable view's last attempt as status (strategy RefreshableView), pure: the fields and the
LastRunSucceeded condition a CronJob's runs have, each attempt recorded once."""

from __future__ import annotations

from datetime import UTC, datetime

from tablerefresh.controller.policy.status import condition_events
from tablerefresh.controller.policy.view_runs import view_runs_update
from tablerefresh.dataplane.view.refreshes import view_state

VIEW = "db._tablerefresh_view_t"


def last(hour: int, error: str = "") -> dict[str, object]:
    at = datetime(2026, 1, 2, hour)
    row = {"status": "Scheduled", "last_success_time": at, "last_success_duration_ms": 1500, "written_rows": 7}
    if error:
        row.update(last_refresh_time=at, exception=error)
    state = view_state(row)
    assert state.last is not None
    return state.last.summary()


def test_a_success_is_the_last_run_with_the_next_one() -> None:
    update = view_runs_update({}, last(6), "2026-01-02T12:00:00Z", VIEW)
    assert update.fields["lastRun"] == {
        "runId": "view-20260102T060001",
        "outcome": "Succeeded",
        "startTime": "2026-01-02T06:00:00Z",
        "completionTime": "2026-01-02T06:00:01Z",
        "durationSeconds": 1.5,
        "writtenRows": 7,
    }
    assert update.fields["nextRunTime"] == "2026-01-02T12:00:00Z"
    assert update.fields["lastSuccessfulRunTime"] == "2026-01-02T06:00:01Z"
    assert update.fields["recentRuns"][0]["id"] == "view-20260102T060001"
    (condition,) = update.conditions
    assert (condition.status, condition.message) == ("True", f"view {VIEW} refreshed in 1.5s: 7 rows written")
    assert update.results == [True]


def test_a_failure_says_why_keeps_the_last_success_and_posts_refresh_failed() -> None:
    before = view_runs_update({}, last(6), None, VIEW).fields
    update = view_runs_update(before, last(12, "Code: 60. DB::Exception: Unknown table db.gone"), None, VIEW)
    assert update.fields["lastRun"]["outcome"] == "Failed"
    assert update.fields["lastFailureTime"] == "2026-01-02T12:00:00Z"
    assert "lastSuccessfulRunTime" not in update.fields  # unchanged: the writer keeps the one before
    (condition,) = update.conditions
    assert (condition.status, condition.reason) == ("False", "RefreshFailed")
    assert "Unknown table db.gone" in condition.message and "keeps its previous data" in condition.message
    assert [r["outcome"] for r in update.fields["recentRuns"]] == ["Failed", "Succeeded"]
    ready = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": ""}
    was = {"type": "LastRunSucceeded", "status": "True", "reason": "RefreshSucceeded", "message": ""}
    now = {"type": "LastRunSucceeded", "status": "False", "reason": "RefreshFailed", "message": condition.message}
    events = condition_events([ready, was], [ready, now], {})
    assert any(e.type == "Warning" and e.reason == "RefreshFailed" for e in events)


def test_the_same_attempt_read_again_changes_nothing() -> None:
    first = view_runs_update({}, last(6), None, VIEW)
    again = view_runs_update(first.fields, last(6), None, VIEW)
    assert again.results == [] and again.fields["recentRuns"] == first.fields["recentRuns"]
    assert again.fields["lastRun"] == first.fields["lastRun"]


def test_a_view_that_has_not_run_has_no_last_run() -> None:
    update = view_runs_update({}, None, "2026-01-02T12:00:00Z", VIEW)
    assert update.fields == {"nextRunTime": "2026-01-02T12:00:00Z"} and update.conditions == []


def test_times_are_utc() -> None:
    summary = last(6)
    assert str(summary["completionTime"]).endswith("Z")
    assert datetime.fromisoformat(str(summary["startTime"])).tzinfo == UTC
