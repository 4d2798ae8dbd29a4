"""The health check's inputs and outputs. Pure: an object in, what to check; a result in, its status.

Running the check is ``probe`` (blocking) and ``scheduler`` (when, how many at once); judging the
figures against the spec's thresholds is ``judge``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from tablerefresh.controller.conditions import Observation, format_time
from tablerefresh.controller.judge import CLICKHOUSE_REACHABLE, HEALTH_CONDITIONS, judge, unreachable
from tablerefresh.controller.reconcile import parse
from tablerefresh.controller.store import Key, key_of
from tablerefresh.dataplane.health import HealthReport
from tablerefresh.spec import TableRefreshSpec, parse_duration

MANAGER = "tablerefresh-health"


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


def check_of(body: Mapping[str, Any]) -> Check | None:
    """The check for an object, or None when it has nothing to check (invalid spec, being deleted)."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
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
        interval=parse_duration(spec.health_check.interval).total_seconds(),
        server=server_of(spec.clickhouse.url),
    )


class Failure(StrEnum):
    UNREACHABLE = "Unreachable"  # ClickHouse did not answer, refused the credentials, or timed out
    QUERY = "QueryFailed"  # ClickHouse answered with an error (a renamed column, a dropped table)
    CREDENTIALS = "CredentialsUnavailable"  # the Secret could not be read: nothing was asked


@dataclass(frozen=True)
class HealthResult:
    checked_at: datetime
    report: HealthReport | None = None
    failure: Failure | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.report is not None


def observations(result: HealthResult, spec: TableRefreshSpec) -> list[Observation]:
    """The health check's conditions. When it could not measure, the health ones are Unknown: the
    last True would be a lie, and False would claim a problem nobody saw."""
    if result.report is not None:
        return judge(result.report, spec)
    if result.failure == Failure.UNREACHABLE:
        return unreachable(result.error)
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
    return {"health": {"checkedAt": format_time(result.checked_at), "error": result.error[:32768]}}
