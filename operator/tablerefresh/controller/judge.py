"""Judging a health report against a TableRefresh's thresholds. Pure: figures in, conditions out."""

from __future__ import annotations

from tablerefresh.controller.conditions import Observation
from tablerefresh.dataplane.health import HealthReport
from tablerefresh.spec import TableRefreshSpec, parse_duration

CLICKHOUSE_REACHABLE = "ClickHouseReachable"
FRESH = "Fresh"
DUPLICATE_FREE = "DuplicateFree"
COMPLETE = "Complete"
NO_STUCK_MUTATIONS = "NoStuckMutations"
HEALTH_CONDITIONS = (FRESH, DUPLICATE_FREE, COMPLETE, NO_STUCK_MUTATIONS)


def judge(report: HealthReport, spec: TableRefreshSpec) -> list[Observation]:
    """ClickHouseReachable plus one observation per health condition, in a fixed order."""
    return [
        Observation(CLICKHOUSE_REACHABLE, "True", "Reachable", "the health query ran"),
        _fresh(report, spec),
        _duplicate_free(report, spec),
        _complete(report, spec),
        _mutations(report, spec),
    ]


def unreachable(error: str) -> list[Observation]:
    """When the check cannot run, health is Unknown: keeping the last 'True' would lie."""
    return [
        Observation(CLICKHOUSE_REACHABLE, "False", "ClickHouseUnreachable", error),
        *(
            Observation(kind, "Unknown", "ClickHouseUnreachable", "the health query could not run")
            for kind in HEALTH_CONDITIONS
        ),
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
