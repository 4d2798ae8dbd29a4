"""The controller's own Prometheus metrics. Per-object health metrics (the health issue) go here too."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "tablerefresh_reconciles_total", "Reconciles of TableRefresh objects, by trigger and result", ["trigger", "result"]
)
RECONCILE_SECONDS = Histogram(
    "tablerefresh_reconcile_duration_seconds",
    "Time to reconcile one TableRefresh (read, apply, status)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OBJECTS = Gauge("tablerefresh_objects", "TableRefresh objects the operator currently watches")


def serve(port: int) -> None:
    """Serve /metrics on all interfaces in a background thread (0 turns it off)."""
    if port:
        start_http_server(port)
