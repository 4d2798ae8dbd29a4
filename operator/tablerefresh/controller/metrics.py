"""The operator's Prometheus metrics: its own work, and each TableRefresh's health.

Per-object series carry the labels namespace, name and table only (plus type or result), the
contract of the alert rules in manifests/monitoring/rules.yaml. Gauges are set from the status
(``samples``); counters count what happened; a deleted object's series go with it.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from tablerefresh.controller.samples import Samples
from tablerefresh.controller.store import Key

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
RUNS = Counter("tablerefresh_runs", "Refresh Jobs finished, by result (succeeded, failed)", (*OBJECT_LABELS, "result"))
HEALTH_CHECK_ERRORS = Counter(
    "tablerefresh_health_check_errors",
    "Health checks that could not measure (ClickHouse unreachable, a query failed, no credentials)",
    OBJECT_LABELS,
)
RESULTS = ("succeeded", "failed")


class ObjectMetrics:
    """The series of each object, and the labels each has now (table follows spec.target.table)."""

    def __init__(self) -> None:
        self._tables: dict[Key, str] = {}
        self._types: dict[Key, set[str]] = {}  # condition types exported, to remove them by name
        self._lock = threading.Lock()

    def publish(self, key: Key, table: str, samples: Samples) -> None:
        namespace, name = key
        with self._lock:
            before = self._tables.get(key)
            if before != table:
                if before is not None:
                    self._remove(key, before)
                # Counters start at 0 for every result, so increase() sees the first failure.
                for result in RESULTS:
                    RUNS.labels(namespace, name, table, result)
                HEALTH_CHECK_ERRORS.labels(namespace, name, table)
                self._tables[key] = table
            for metric, value in samples.gauges.items():
                if value is None:
                    GAUGES[metric].remove(namespace, name, table)
                else:
                    GAUGES[metric].labels(namespace, name, table).set(value)
            for kind, value in samples.conditions.items():
                CONDITION.labels(namespace, name, table, kind).set(value)
            self._types.setdefault(key, set()).update(samples.conditions)

    def count_run(self, key: Key, result: str) -> None:
        with self._lock:
            table = self._tables.get(key)
        if table is not None:
            RUNS.labels(*key, table, result).inc()

    def count_health_error(self, key: Key) -> None:
        with self._lock:
            table = self._tables.get(key)
        if table is not None:
            HEALTH_CHECK_ERRORS.labels(*key, table).inc()

    def forget(self, key: Key) -> None:
        with self._lock:
            table = self._tables.pop(key, None)
            if table is not None:
                self._remove(key, table)

    def _remove(self, key: Key, table: str) -> None:
        labels = (*key, table)
        for gauge in GAUGES.values():
            gauge.remove(*labels)
        for kind in self._types.pop(key, set()):
            CONDITION.remove(*labels, kind)
        for result in RESULTS:
            RUNS.remove(*labels, result)
        HEALTH_CHECK_ERRORS.remove(*labels)


def serve(port: int) -> None:
    """Serve /metrics on all interfaces in a background thread (0 turns it off)."""
    if port:
        start_http_server(port)
