"""What a health check measured: the figures the control plane judges. Plain data, no I/O, so the
controller's pure policy can read it without importing a ClickHouse client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class AuditResult:
    name: str
    failing_rows: int
    max_failing_rows: int

    @property
    def passed(self) -> bool:
        return self.failing_rows <= self.max_failing_rows

    def describe(self) -> str:
        return f"audit {self.name}: {self.failing_rows} failing row(s), at most {self.max_failing_rows} allowed"

    def as_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "failingRows": self.failing_rows,
            "maxFailingRows": self.max_failing_rows,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class HealthReport:
    checked_at: datetime
    total_rows: int
    slice_rows: int
    distinct_keys: int
    newest_freshness: datetime | None
    stale_hours: float | None
    slice_duplicates: int
    table_duplicates: int
    pending_mutations: int
    oldest_mutation_age_seconds: float | None
    oldest_mutation: str | None = None
    audits: tuple[AuditResult, ...] = ()

    def as_status(self) -> dict[str, Any]:
        """camelCase, the shape of ``status.health``."""
        return {
            "checkedAt": _iso(self.checked_at),
            "totalRows": self.total_rows,
            "sliceRows": self.slice_rows,
            "distinctKeys": self.distinct_keys,
            "newestFreshness": _iso(self.newest_freshness) if self.newest_freshness else None,
            "staleHours": None if self.stale_hours is None else round(self.stale_hours, 2),
            "sliceDuplicates": self.slice_duplicates,
            "tableDuplicates": self.table_duplicates,
            "pendingMutations": self.pending_mutations,
            "oldestMutationAgeSeconds": self.oldest_mutation_age_seconds,
            "audits": [a.as_status() for a in self.audits] or None,
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
