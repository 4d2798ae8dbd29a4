"""A refreshable view's ``system.view_refreshes`` row, read as the runs the operator reports. Pure.

The row holds the last attempt only, and only until the server restarts: whoever reads it appends
each finished attempt it has not seen to the runs table, so history outlives the server's memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tablerefresh.contract import Outcome, Reason
from tablerefresh.text import printable

# The row's columns this module reads (ClickHouse 24.10 and later).
COLUMNS = (
    "status",
    "last_success_time",
    "last_success_duration_ms",
    "last_refresh_time",
    "next_refresh_time",
    "exception",
    "written_rows",
)


@dataclass(frozen=True)
class FinishedRefresh:
    """The last attempt that ended: ``started_at`` is known for a success only (the row gives a
    failure's end alone), ``written_rows`` when the server reports it."""

    outcome: str
    finished_at: datetime
    started_at: datetime | None
    duration_seconds: float | None
    message: str
    written_rows: int | None

    @property
    def run_id(self) -> str:
        """One id per attempt, the same however often it is read."""
        return f"view-{self.finished_at.astimezone(UTC):%Y%m%dT%H%M%S}"

    def summary(self) -> dict[str, Any]:
        """camelCase, in the shape of ``status.lastRun`` (a figure the server does not give is left out)."""
        said: dict[str, Any] = {"runId": self.run_id, "outcome": self.outcome, "completionTime": _iso(self.finished_at)}
        if self.started_at is not None:
            said["startTime"] = _iso(self.started_at)
        if self.duration_seconds is not None:
            said["durationSeconds"] = self.duration_seconds
        if self.written_rows is not None:
            said["writtenRows"] = self.written_rows
        if self.outcome != Outcome.SUCCEEDED:
            said.update(reason=Reason.FAILED, error=self.message)
        return said


@dataclass(frozen=True)
class ViewState:
    status: str  # Scheduled, Running, Disabled (stopped), WaitingForDependencies, ...
    next_run_time: datetime | None
    last: FinishedRefresh | None
    last_success_time: datetime | None

    @property
    def stopped(self) -> bool:
        return self.status == "Disabled"


def _iso(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes a time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def view_state(row: Mapping[str, Any]) -> ViewState:
    """The state a row says: the last attempt failed when it carries an exception."""
    success = _utc(row.get("last_success_time"))
    ended = _utc(row.get("last_refresh_time"))
    error = str(row.get("exception") or "").strip()
    written = row.get("written_rows")
    last = None
    if error and ended is not None:
        last = FinishedRefresh(Outcome.FAILED, ended, None, None, printable(error.splitlines()[0]), None)
    elif success is not None:
        millis = row.get("last_success_duration_ms")
        duration = None if millis is None else millis / 1000
        finished = success + timedelta(seconds=duration) if duration is not None else ended or success
        last = FinishedRefresh(
            Outcome.SUCCEEDED, finished, success, duration, "", written if isinstance(written, int) else None
        )
    return ViewState(
        status=str(row.get("status") or ""),
        next_run_time=_utc(row.get("next_refresh_time")),
        last=last,
        last_success_time=success,
    )


def unseen(state: ViewState, recorded_ids: set[str]) -> FinishedRefresh | None:
    """The last attempt when the runs table does not hold it yet."""
    if state.last is None or state.last.run_id in recorded_ids:
        return None
    return state.last
