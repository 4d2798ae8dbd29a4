"""The operator's Prometheus metrics: its own work, and each TableRefresh's health.

Per-object series carry the labels namespace, name and table only (plus type or result), the
contract of the alert rules in manifests/monitoring/rules.yaml. Gauges are set from the status
(:func:`samples`, pure): derived from it rather than kept alongside, so /metrics and
``kubectl get tr -o yaml`` cannot disagree, and a value that is not known (no check yet, the check
failed, no success yet) removes its series rather than leaving an old value. Counters count what
happened. Each object's series are an :class:`ObjectSeries` in its record, removed with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from tablerefresh.controller.policy.cronjob import Key, schedule_period_seconds
from tablerefresh.controller.policy.status import parse_time
from tablerefresh.spec import TableRefreshSpec, memory_limit_bytes

RECONCILES = Counter(
    "tablerefresh_reconciles_total", "Reconciles of TableRefresh objects, by trigger and result", ["trigger", "result"]
)
RECONCILE_SECONDS = Histogram(
    "tablerefresh_reconcile_duration_seconds",
    "Time to reconcile one TableRefresh (read, apply, status)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OBJECTS = Gauge("tablerefresh_objects", "TableRefresh objects the operator currently watches")
HEALTH_CHECK_SECONDS = Histogram(
    "tablerefresh_health_check_duration_seconds",
    "Time to run one health check (credentials, connect, the health query)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

OBJECT_LABELS = ("namespace", "name", "table")

GAUGES: dict[str, Gauge] = {
    "staleness_seconds": Gauge(
        "tablerefresh_staleness_seconds",
        "Age of the newest freshnessColumn value at the last health check (status.health)",
        OBJECT_LABELS,
    ),
    "duplicate_rows": Gauge(
        "tablerefresh_duplicate_rows",
        "Repeated unique keys at the last health check: the larger of the slice's and the table's",
        OBJECT_LABELS,
    ),
    "slice_rows": Gauge("tablerefresh_slice_rows", "Rows in the slice at the last health check", OBJECT_LABELS),
    "last_success_timestamp_seconds": Gauge(
        "tablerefresh_last_success_timestamp_seconds",
        "When the last successful refresh Job finished (status.lastSuccessfulRunTime); absent before the first",
        OBJECT_LABELS,
    ),
    "run_duration_seconds": Gauge(
        "tablerefresh_run_duration_seconds", "Duration of the last finished refresh run (status.lastRun)", OBJECT_LABELS
    ),
    # What the last run used and did (status.lastRun), for the memory headroom alert and the dashboard.
    "last_run_peak_memory_bytes": Gauge(
        "tablerefresh_last_run_peak_memory_bytes",
        "Peak memory of the last finished refresh run (status.lastRun.peakMemoryBytes); absent when the "
        "engine did not report it",
        OBJECT_LABELS,
    ),
    "last_run_read_bytes": Gauge(
        "tablerefresh_last_run_read_bytes",
        "Bytes the last finished refresh run read (status.lastRun.readBytes)",
        OBJECT_LABELS,
    ),
    "last_run_written_rows": Gauge(
        "tablerefresh_last_run_written_rows",
        "Rows the last finished refresh run wrote (status.lastRun.writtenRows)",
        OBJECT_LABELS,
    ),
    "memory_limit_bytes": Gauge(
        "tablerefresh_memory_limit_bytes",
        "The max_memory_usage spec.clickhouse.settings sets for every query; absent when it sets none (or 0)",
        OBJECT_LABELS,
    ),
    "schedule_period_seconds": Gauge(
        "tablerefresh_schedule_period_seconds",
        "Longest gap between two runs of spec.schedule; absent while the object is suspended "
        "or when the schedule never fires",
        OBJECT_LABELS,
    ),
}
CONDITION = Gauge(
    "tablerefresh_condition", "1 when the condition is True, 0 when False or Unknown", (*OBJECT_LABELS, "type")
)
AUDIT_FAILING_ROWS = Gauge(
    "tablerefresh_audit_failing_rows",
    "Bad rows each spec.audits query counted in the table at the last health check (status.health.audits)",
    (*OBJECT_LABELS, "audit"),
)
RUNS = Counter("tablerefresh_runs", "Refresh Jobs finished, by result (succeeded, failed)", (*OBJECT_LABELS, "result"))
HEALTH_CHECK_ERRORS = Counter(
    "tablerefresh_health_check_errors",
    "Health checks that could not measure (ClickHouse unreachable, a query failed, no credentials)",
    OBJECT_LABELS,
)
RESULTS = ("succeeded", "failed")


@dataclass(frozen=True)
class Samples:
    gauges: dict[str, float | None]  # metric name -> value; None: no series
    conditions: dict[str, float]  # condition type -> 1 True, 0 otherwise
    audits: dict[str, float] = field(default_factory=dict)  # audit name -> failing rows at the last check


def _number(value: Any) -> float | None:
    return None if value is None or isinstance(value, bool) else float(value)


def samples(status: Mapping[str, Any], spec: TableRefreshSpec | None) -> Samples:
    """The values to export; ``spec`` None (it does not validate) leaves out the schedule's period and
    the memory limit."""
    health = status.get("health") or {}
    checked = parse_time(health.get("checkedAt"))
    newest = parse_time(health.get("newestFreshness"))
    duplicates = [_number(health.get(k)) for k in ("sliceDuplicates", "tableDuplicates")]
    known = [d for d in duplicates if d is not None]
    last_success = parse_time(status.get("lastSuccessfulRunTime"))
    last_run = status.get("lastRun") or {}
    gauges: dict[str, float | None] = {
        "staleness_seconds": (checked - newest).total_seconds() if checked and newest else None,
        # What the health check compares with maxDuplicates: the larger of the two counts.
        "duplicate_rows": max(known) if known else None,
        "slice_rows": _number(health.get("sliceRows")),
        "last_success_timestamp_seconds": last_success.timestamp() if last_success else None,
        "run_duration_seconds": _number(last_run.get("durationSeconds")),
        "last_run_peak_memory_bytes": _number(last_run.get("peakMemoryBytes")),
        "last_run_read_bytes": _number(last_run.get("readBytes")),
        "last_run_written_rows": _number(last_run.get("writtenRows")),
        "memory_limit_bytes": None if spec is None else _number(memory_limit_bytes(spec.clickhouse.settings)),
        "schedule_period_seconds": (
            None if spec is None or spec.suspend else schedule_period_seconds(spec.schedule, spec.time_zone)
        ),
    }
    conditions = {str(c.get("type")): 1.0 if c.get("status") == "True" else 0.0 for c in status.get("conditions") or []}
    audits = {
        str(a["name"]): float(a["failingRows"])
        for a in health.get("audits") or []
        if a.get("name") and _number(a.get("failingRows")) is not None
    }
    return Samples(gauges=gauges, conditions=conditions, audits=audits)


class ObjectSeries:
    """One object's series, and the labels they have now (table follows spec.target.table).

    Used on the event loop only.
    """

    __slots__ = ("audits", "key", "table", "types")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.table: str | None = None
        self.types: set[str] = set()  # condition types exported, to remove them by name
        self.audits: set[str] = set()  # audit names exported, likewise

    def publish(self, table: str, values: Samples) -> None:
        namespace, name = self.key
        if self.table != table:
            self.remove()
            # Counters start at 0 for every result, so increase() sees the first failure.
            for result in RESULTS:
                RUNS.labels(namespace, name, table, result)
            HEALTH_CHECK_ERRORS.labels(namespace, name, table)
            self.table = table
        for metric, value in values.gauges.items():
            if value is None:
                GAUGES[metric].remove(namespace, name, table)
            else:
                GAUGES[metric].labels(namespace, name, table).set(value)
        for kind, value in values.conditions.items():
            CONDITION.labels(namespace, name, table, kind).set(value)
        self.types.update(values.conditions)
        for audit in self.audits - values.audits.keys():  # gone from the spec, or no figures now
            AUDIT_FAILING_ROWS.remove(namespace, name, table, audit)
        for audit, rows in values.audits.items():
            AUDIT_FAILING_ROWS.labels(namespace, name, table, audit).set(rows)
        self.audits = set(values.audits)

    def count_run(self, result: str) -> None:
        if self.table is not None:
            RUNS.labels(*self.key, self.table, result).inc()

    def count_health_error(self) -> None:
        if self.table is not None:
            HEALTH_CHECK_ERRORS.labels(*self.key, self.table).inc()

    def remove(self) -> None:
        """Remove every series of the object (it went, or its table changed)."""
        if self.table is None:
            return
        labels = (*self.key, self.table)
        for gauge in GAUGES.values():
            gauge.remove(*labels)
        for kind in self.types:
            CONDITION.remove(*labels, kind)
        for audit in self.audits:
            AUDIT_FAILING_ROWS.remove(*labels, audit)
        for result in RESULTS:
            RUNS.remove(*labels, result)
        HEALTH_CHECK_ERRORS.remove(*labels)
        self.table, self.types, self.audits = None, set(), set()


def serve(port: int) -> None:
    """Serve /metrics on all interfaces in a background thread (0 turns it off)."""
    if port:
        start_http_server(port)
