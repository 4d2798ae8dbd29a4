"""The Grafana dashboard and its queries as Grafana sends them (variables expanded): read by the
dashboard test and by the Prometheus end-to-end test, which runs every query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel."""
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets") or []]


def expand(expr: str, namespace: str, name: str) -> str:
    """A panel's query as Grafana sends it with one namespace and one TableRefresh selected."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    # Kubernetes names need no regex escaping: letters, digits, '-' and '.' (a '.' matching itself too).
    return expr.replace("$namespace", namespace).replace("$name", name)


ROOT = Path(__file__).resolve().parent.parent


MONITORING = ROOT / "manifests" / "monitoring"


DASHBOARD = MONITORING / "dashboard.json"


# Grafana's own variables, as the tests substitute them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
