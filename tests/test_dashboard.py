"""The Grafana dashboard: manifests/monitoring/dashboard.json is its one source; the ConfigMap beside it
(labelled for Grafana's dashboard sidecar) carries the same JSON and is regenerated with
    .venv/bin/python -m tests.test_dashboard
Every panel's queries are evaluated by a real Prometheus in tests/test_e2e_prometheus.py.
"""

from __future__ import annotations

import json
import sys

import yaml

from tests.dashboard_queries import DASHBOARD, MONITORING, ROOT, dashboard, queries

CONFIGMAP = MONITORING / "grafana-dashboard.yaml"
SIDECAR_LABEL = "grafana_dashboard"  # the label kube-prometheus-stack's Grafana sidecar looks for
HEADER = """\
# GENERATED from dashboard.json by `.venv/bin/python -m tests.test_dashboard`: edit dashboard.json, not
# this file (tests/test_dashboard.py fails when the two differ). Grafana's dashboard sidecar loads every
# ConfigMap labelled grafana_dashboard: "1" in the namespaces it watches (kube-prometheus-stack: its own,
# or all with sidecar.dashboards.searchNamespace: ALL).
"""
# What the issue asks each TableRefresh's dashboard to show: metric -> the panel title that shows it.
SHOWN = {
    "tablerefresh_staleness_seconds": "Staleness against the threshold",
    "kube_tablerefresh_spec_max_stale_hours": "Staleness against the threshold",
    "tablerefresh_duplicate_rows": "Duplicate rows",
    "tablerefresh_slice_rows": "Slice rows",
    "tablerefresh_run_duration_seconds": "Run duration",
    "tablerefresh_runs_total": "Runs by result",
    "tablerefresh_last_success_timestamp_seconds": "Last success",
    "tablerefresh_health_check_errors_total": "Health-check errors",
    "tablerefresh_audit_failing_rows": "Audit failing rows",
    "tablerefresh_last_run_peak_memory_bytes": "Peak memory against the limit",
    "tablerefresh_memory_limit_bytes": "Peak memory against the limit",
}








def render_configmap() -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "tablerefresh-dashboard",
            "namespace": "monitoring",
            "labels": {
                SIDECAR_LABEL: "1",
                "app.kubernetes.io/name": "tablerefresh",
                "app.kubernetes.io/part-of": "tablerefresh",
            },
            "annotations": {"grafana_folder": "TableRefresh"},
        },
        "data": {"tablerefresh.json": DASHBOARD.read_text()},
    }

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=200)


def test_the_configmap_carries_the_dashboard_and_the_sidecar_label() -> None:
    assert CONFIGMAP.read_text() == render_configmap(), "regenerate: .venv/bin/python -m tests.test_dashboard"
    configmap = yaml.safe_load(CONFIGMAP.read_text())
    assert configmap["metadata"]["labels"][SIDECAR_LABEL] == "1"
    assert json.loads(configmap["data"]["tablerefresh.json"]) == dashboard()


def test_each_thing_the_issue_asks_for_has_its_panel() -> None:
    board = dashboard()
    for metric, title in SHOWN.items():
        assert any(t == title and metric in e for t, e in queries(board)), (metric, title)


def test_every_query_is_per_tablerefresh_and_uses_the_variables() -> None:
    board = dashboard()
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "name"} <= variables
    (row,) = [p for p in board["panels"] if p["type"] == "row"]
    assert row["repeat"] == "name"  # one row of panels per TableRefresh
    for title, expr in queries(board):
        assert 'namespace=~"$namespace"' in expr and 'name=~"$name"' in expr, (title, expr)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_the_kustomization_ships_it() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert CONFIGMAP.name in kustomization["resources"]


if __name__ == "__main__":
    CONFIGMAP.write_text(render_configmap())
    print(f"wrote {CONFIGMAP.relative_to(ROOT)}", file=sys.stderr)
