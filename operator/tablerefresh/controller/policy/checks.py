"""A health check's inputs and outputs. Pure: an object in, what to check; a result in, its status.

:func:`check_of` says what to check for an object; :func:`judge` holds the figures against the spec's
thresholds; :func:`health_observations` and :func:`health_fields` turn a result, measured or not,
into the health check's conditions and ``status.health``. Running a check is the runtime's
(``runtime.workers.Prober``, scheduled by ``runtime.scheduler``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from tablerefresh.controller.policy.cronjob import Key, key_of, parse
from tablerefresh.controller.policy.owners import being_deleted
from tablerefresh.controller.policy.status import (
    AUDITS_PASSING,
    CLICKHOUSE_REACHABLE,
    COMPLETE,
    DUPLICATE_FREE,
    FRESH,
    HEALTH_CONDITIONS,
    NO_STUCK_MUTATIONS,
    Observation,
    format_time,
)
from tablerefresh.dataplane.report import HealthReport
from tablerefresh.spec import TableRefreshSpec, parse_duration
from tablerefresh.text import printable


@dataclass(frozen=True)
class Check:
    """One object's health check, as its spec says (rebuilt when its generation changes)."""

    key: Key
    uid: str
    generation: int
    spec: TableRefreshSpec
    interval: float  # seconds
    server: str  # checks against one ClickHouse share its concurrency limit

    @property
    def table(self) -> str:
        return self.spec.target.table


def server_of(url: str) -> str:
    """The ClickHouse a URL points at, without credentials or path (chDB: its path, one engine)."""
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        return url
    return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}"


def check_of(body: Mapping[str, Any], min_interval: float = 0.0) -> Check | None:
    """The check for an object, or None when it has nothing to check (invalid spec, being deleted).

    Checked at most every ``min_interval`` seconds (the operator's policy), whatever the spec asks:
    a TableRefresh must not turn the operator into a load generator."""
    meta = body["metadata"]
    if being_deleted(body):
        return None
    tr = parse(body)
    if isinstance(tr, str):
        return None  # the reconciler reports the spec; there is no table to measure
    spec = tr.spec
    return Check(
        key=key_of(body),
        uid=str(meta.get("uid")),
        generation=int(meta.get("generation") or 0),
        spec=spec,
        interval=max(min_interval, parse_duration(spec.health_check.interval).total_seconds()),
        server=server_of(spec.clickhouse.url),
    )


class Failure(StrEnum):
    UNREACHABLE = "Unreachable"  # ClickHouse did not answer, refused the credentials, or timed out
    QUERY = "QueryFailed"  # ClickHouse answered with an error (a renamed column, a dropped table)
    CREDENTIALS = "CredentialsUnavailable"  # the Secret could not be read: nothing was asked
    NOT_ALLOWED = "HostNotAllowed"  # the operator's policy does not let it connect there: nothing was sent


@dataclass(frozen=True)
class HealthResult:
    checked_at: datetime
    report: HealthReport | None = None
    failure: Failure | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.report is not None


def health_observations(result: HealthResult, spec: TableRefreshSpec) -> list[Observation]:
    """The health check's conditions. When it could not measure, the health ones are Unknown: the
    last True would be a lie, and False would claim a problem nobody saw."""
    if result.report is not None:
        return judge(result.report, spec)
    if result.failure == Failure.UNREACHABLE:
        return unreachable(result.error)
    if result.failure == Failure.NOT_ALLOWED:
        return unreachable(result.error, reason=str(Failure.NOT_ALLOWED))
    if result.failure == Failure.QUERY:
        reachable = Observation(CLICKHOUSE_REACHABLE, "True", "Reachable", "ClickHouse answered")
        reason = "HealthCheckFailed"
    else:
        reachable = Observation(CLICKHOUSE_REACHABLE, "Unknown", str(Failure.CREDENTIALS), result.error)
        reason = str(Failure.CREDENTIALS)
    message = f"the health check failed: {result.error}"
    return [reachable, *(Observation(kind, "Unknown", reason, message) for kind in HEALTH_CONDITIONS)]


def health_fields(result: HealthResult) -> dict[str, Any]:
    """``status.health``: the figures when measured; when not, only when it was tried and why it failed
    (old figures next to a new checkedAt would pass for current)."""
    if result.report is not None:
        measured = {k: v for k, v in result.report.as_status().items() if v is not None}
        return {"health": measured}
    return {"health": {"checkedAt": format_time(result.checked_at), "error": printable(result.error)[:32768]}}


# Judging the figures.


def judge(report: HealthReport, spec: TableRefreshSpec) -> list[Observation]:
    """ClickHouseReachable plus one observation per health condition, in a fixed order."""
    return [
        Observation(CLICKHOUSE_REACHABLE, "True", "Reachable", "the health query ran"),
        _fresh(report, spec),
        _duplicate_free(report, spec),
        _complete(report, spec),
        _mutations(report, spec),
        _audits(report),
    ]


def unreachable(error: str, reason: str = "ClickHouseUnreachable") -> list[Observation]:
    """When the check cannot run, health is Unknown: keeping the last 'True' would lie."""
    return [
        Observation(CLICKHOUSE_REACHABLE, "False", reason, error),
        *(Observation(kind, "Unknown", reason, "the health query could not run") for kind in HEALTH_CONDITIONS),
    ]


def _fresh(report: HealthReport, spec: TableRefreshSpec) -> Observation:
    limit = spec.thresholds.max_stale_hours
    column = spec.freshness_column
    if report.stale_hours is None:
        return Observation(FRESH, "False", "DataStale", f"{spec.target.table} has no rows")
    if report.stale_hours > limit:
        return Observation(
            FRESH,
            "False",
            "DataStale",
            f"newest {column} is {report.stale_hours:.1f}h old, over maxStaleHours {limit:g}",
        )
    return Observation(FRESH, "True", "Fresh", f"newest {column} is {report.stale_hours:.1f}h old")


def _duplicate_free(report: HealthReport, spec: TableRefreshSpec) -> Observation:
    limit = spec.thresholds.max_duplicates
    found = f"{report.slice_duplicates} repeated keys in the slice, {report.table_duplicates} in the table"
    if max(report.slice_duplicates, report.table_duplicates) > limit:
        return Observation(DUPLICATE_FREE, "False", "DuplicatesDetected", f"{found}, over maxDuplicates {limit}")
    return Observation(DUPLICATE_FREE, "True", "NoDuplicates", found)


def _complete(report: HealthReport, spec: TableRefreshSpec) -> Observation:
    limit = spec.thresholds.min_slice_rows
    if report.slice_rows < limit:
        return Observation(
            COMPLETE, "False", "SliceTooSmall", f"the slice has {report.slice_rows} rows, under minSliceRows {limit}"
        )
    return Observation(COMPLETE, "True", "SliceComplete", f"the slice has {report.slice_rows} rows")


def _mutations(report: HealthReport, spec: TableRefreshSpec) -> Observation:
    limit = parse_duration(spec.mutations.max_pending).total_seconds()
    age = report.oldest_mutation_age_seconds
    if age is not None and age > limit:
        return Observation(
            NO_STUCK_MUTATIONS,
            "False",
            "MutationStuck",
            f"{report.pending_mutations} mutation(s) pending, the oldest for {age:.0f}s "
            f"(over {spec.mutations.max_pending}): {report.oldest_mutation}",
        )
    return Observation(
        NO_STUCK_MUTATIONS, "True", "NoStuckMutations", f"{report.pending_mutations} mutation(s) pending"
    )


def _audits(report: HealthReport) -> Observation:
    if not report.audits:
        return Observation(AUDITS_PASSING, "True", "NoAudits", "spec.audits is empty")
    failed = [a for a in report.audits if not a.passed]
    if failed:
        words = "; ".join(a.describe() for a in failed)
        return Observation(
            AUDITS_PASSING, "False", "AuditFailed", f"{len(failed)} of {len(report.audits)} failed: {words}"
        )
    names = ", ".join(a.name for a in report.audits)
    return Observation(AUDITS_PASSING, "True", "AuditsPassed", f"{len(report.audits)} audit(s) passed: {names}")
