"""Judging a health report against a TableRefresh's thresholds. Pure: figures in, conditions out."""

from __future__ import annotations

from dataclasses import dataclass

from tablerefresh.dataplane.health import HealthReport
from tablerefresh.spec import TableRefreshSpec, parse_duration

HEALTH_CONDITIONS = ("Fresh", "DuplicateFree", "Complete", "NoStuckMutations")


@dataclass(frozen=True)
class Verdict:
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "True"


def judge(report: HealthReport, spec: TableRefreshSpec) -> list[Verdict]:
    """One verdict per health condition, in a fixed order."""
    t = spec.thresholds
    verdicts = []
    if report.stale_hours is None:
        verdicts.append(Verdict("Fresh", "False", "DataStale", f"{spec.target.table} has no rows"))
    elif report.stale_hours > t.max_stale_hours:
        verdicts.append(
            Verdict(
                "Fresh",
                "False",
                "DataStale",
                f"newest {spec.freshness_column} is {report.stale_hours:.1f}h old, "
                f"over maxStaleHours {t.max_stale_hours:g}",
            )
        )
    else:
        verdicts.append(
            Verdict("Fresh", "True", "Fresh", f"newest {spec.freshness_column} is {report.stale_hours:.1f}h old")
        )
    dups = max(report.slice_duplicates, report.table_duplicates)
    if dups > t.max_duplicates:
        verdicts.append(
            Verdict(
                "DuplicateFree",
                "False",
                "DuplicatesDetected",
                f"{report.slice_duplicates} repeated keys in the slice, {report.table_duplicates} in the table, "
                f"over maxDuplicates {t.max_duplicates}",
            )
        )
    else:
        verdicts.append(Verdict("DuplicateFree", "True", "NoDuplicates", f"{dups} repeated keys"))
    if report.slice_rows < t.min_slice_rows:
        verdicts.append(
            Verdict(
                "Complete",
                "False",
                "SliceTooSmall",
                f"the slice has {report.slice_rows} rows, under minSliceRows {t.min_slice_rows}",
            )
        )
    else:
        verdicts.append(Verdict("Complete", "True", "SliceComplete", f"the slice has {report.slice_rows} rows"))
    limit = parse_duration(spec.mutations.max_pending).total_seconds()
    age = report.oldest_mutation_age_seconds
    if age is not None and age > limit:
        verdicts.append(
            Verdict(
                "NoStuckMutations",
                "False",
                "MutationStuck",
                f"{report.pending_mutations} mutation(s) pending, the oldest for {age:.0f}s "
                f"(over {spec.mutations.max_pending}): {report.oldest_mutation}",
            )
        )
    else:
        verdicts.append(
            Verdict("NoStuckMutations", "True", "NoStuckMutations", f"{report.pending_mutations} mutation(s) pending")
        )
    return verdicts


def unreachable(error: str) -> list[Verdict]:
    """When the check cannot run, every health condition is Unknown: a stale 'True' would lie."""
    return [Verdict(kind, "Unknown", "ClickHouseUnreachable", error) for kind in HEALTH_CONDITIONS]


def summary(verdicts: list[Verdict]) -> Verdict:
    """Ready: true only when every other condition is."""
    bad = [v for v in verdicts if not v.ok]
    if not bad:
        return Verdict("Ready", "True", "Healthy", "all checks pass")
    first = bad[0]
    return Verdict("Ready", "False", first.reason, "; ".join(f"{v.type}: {v.message}" for v in bad))
