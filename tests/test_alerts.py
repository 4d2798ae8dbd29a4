"""Monitoring manifests: alert rules checked and unit-tested by a real promtool, the PrometheusRule kept
equal to the rule file, the ServiceMonitor aimed at the metrics Service, the kube-state-metrics config
aimed at fields the CRD has.

manifests/monitoring/rules.yaml is the one source of the alerts; prometheusrule.yaml wraps the same
groups in the Prometheus Operator's CRD. After editing rules.yaml, regenerate it with
    .venv/bin/python tests/test_alerts.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.cluster import build

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "manifests" / "monitoring"
RULES = MONITORING / "rules.yaml"
RULES_TEST = MONITORING / "rules.test.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
RUNBOOK = MONITORING / "RUNBOOK.md"
CRD = ROOT / "crds" / "tablerefresh.dev_tablerefreshes.yaml"
K8S = "1.36.0"

# What the operator must export for the rules to work: metric name -> labels besides namespace, name, table.
OPERATOR_METRICS = {
    "tablerefresh_condition": {"type"},
    "tablerefresh_staleness_seconds": set(),
    "tablerefresh_duplicate_rows": set(),
    "tablerefresh_slice_rows": set(),
    "tablerefresh_last_success_timestamp_seconds": set(),
    "tablerefresh_schedule_period_seconds": set(),
    "tablerefresh_runs_total": {"result"},
    "tablerefresh_health_check_errors_total": set(),
    "tablerefresh_audit_failing_rows": {"audit"},
    "tablerefresh_last_run_peak_memory_bytes": set(),
    "tablerefresh_memory_limit_bytes": set(),
}
OBJECT_LABELS = {"namespace", "name", "table"}
# The alerts the issue asks for, and the extra ones.
REQUIRED_ALERTS = {
    "TableRefreshDataStale",  # stale over the threshold
    "TableRefreshDuplicatesDetected",  # duplicates over the threshold
    "TableRefreshSliceTooSmall",  # slice under the minimum
    "TableRefreshNoRecentSuccess",  # last success older than two schedule periods
    "TableRefreshNotReady",  # Ready false for 15 minutes
    "TableRefreshRefreshFailed",  # refresh failed
    "TableRefreshLastRunFailed",  # the last run failed, and none has succeeded since
    "TableRefreshAuditFailing",  # an audit counts bad rows in the table
}
EXTRA_ALERTS = {
    "TableRefreshMutationStuck",
    "TableRefreshClickHouseUnreachable",
    "TableRefreshHealthCheckFailing",
    "TableRefreshOperatorDown",
    "TableRefreshMemoryHeadroomLow",  # the last run used more than 80% of max_memory_usage
}

PROMETHEUS_RULE_HEADER = """\
# GENERATED from rules.yaml by `.venv/bin/python tests/test_alerts.py`: edit rules.yaml, not this file
# (tests/test_alerts.py fails when the two differ). The Prometheus Operator's form of the same rules.
# Your Prometheus must select it (ruleSelector / ruleNamespaceSelector): add the label it expects
# (e.g. release: <name> for kube-prometheus-stack) with a kustomize patch.
"""
PROMETHEUS_RULE_METADATA = {
    "name": "tablerefresh",
    "namespace": "tablerefresh-system",
    "labels": {"app.kubernetes.io/name": "tablerefresh", "app.kubernetes.io/part-of": "tablerefresh"},
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


class _BlockDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def render_prometheus_rule() -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": PROMETHEUS_RULE_METADATA,
        "spec": {"groups": load(RULES)["groups"]},
    }
    body = yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=120, allow_unicode=True)
    return PROMETHEUS_RULE_HEADER + body


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian package prometheus; scripts/system-deps installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    return found


def run_promtool(*args: str, cwd: Path) -> str:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


# promtool, for real


def test_promtool_check_rules() -> None:
    output = run_promtool("check", "rules", RULES.name, cwd=MONITORING)
    assert f"SUCCESS: {len(alerting_rules())} rules found" in output


def test_promtool_test_rules() -> None:
    output = run_promtool("test", "rules", RULES_TEST.name, cwd=MONITORING)
    assert "SUCCESS" in output and "FAILED" not in output


def test_the_prometheus_rule_itself_passes_promtool(tmp_path: Path) -> None:
    """What is deployed is the PrometheusRule: its spec, as a rule file, passes check and the unit tests."""
    (tmp_path / RULES.name).write_text(yaml.safe_dump(load(PROMETHEUS_RULE)["spec"], sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    run_promtool("check", "rules", RULES.name, cwd=tmp_path)
    run_promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests have teeth: the stale alert without its ClickHouse guard fails them."""
    text = RULES.read_text()
    guard = (
        "          unless on (namespace, name, table)\n"
        '          min by (namespace, name, table) (tablerefresh_condition{type="ClickHouseReachable"}) == 0\n'
    )
    stale = text.index("alert: TableRefreshDataStale")
    assert text.find(guard, stale) > stale
    (tmp_path / RULES.name).write_text(text[:stale] + text[stale:].replace(guard, "", 1))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = subprocess.run(
        [promtool(), "test", "rules", RULES_TEST.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "TableRefreshDataStale" in result.stdout + result.stderr


# One source of truth


def test_prometheus_rule_is_generated_from_the_rule_file() -> None:
    rule = load(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load(RULES)["groups"], "run: .venv/bin/python tests/test_alerts.py"
    assert PROMETHEUS_RULE.read_text() == render_prometheus_rule(), "run: .venv/bin/python tests/test_alerts.py"


# The rules themselves


def test_the_issue_alerts_are_all_there() -> None:
    names = [rule["alert"] for rule in alerting_rules()]
    assert len(names) == len(set(names))
    assert set(names) == REQUIRED_ALERTS | EXTRA_ALERTS


def test_ready_false_waits_fifteen_minutes() -> None:
    (rule,) = (r for r in alerting_rules() if r["alert"] == "TableRefreshNotReady")
    assert rule["for"] == "15m"
    assert 'tablerefresh_condition{type="Ready"}' in rule["expr"]


def _headings(markdown: str) -> set[str]:
    """GitHub's anchors for the Markdown headings."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_has_a_summary_a_description_a_severity_and_a_runbook_section() -> None:
    anchors = _headings(RUNBOOK.read_text())
    for rule in alerting_rules():
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert "://" not in path and not path.startswith("/"), "runbook links are relative to the repository"
        assert (ROOT / path).resolve() == RUNBOOK, rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for group in load(RULES_TEST)["tests"]:
        for case in group.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert fired == names
    assert silent == names


def test_rules_use_only_the_operator_metrics_and_its_labels() -> None:
    """Metric names and labels are the operator's contract (OPERATOR_METRICS); no threshold in a rule."""
    used: set[str] = set()
    for rule in alerting_rules():
        text = rule["expr"] + " ".join(rule["annotations"].values())
        used |= set(re.findall(r"\btablerefresh_[a-z_]+\b", text)) - {"tablerefresh_metrics"}
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", text):
            labels = {label.strip() for label in grouping.split(",")}
            assert labels <= OBJECT_LABELS | {"type", "audit"}, (rule["alert"], labels)
        for matcher in re.findall(r"\{([^}]*)\}", rule["expr"]):
            for label in re.findall(r"([a-z_]+)\s*!?=~?", matcher):
                allowed = OBJECT_LABELS | {"type", "result", "job"}
                assert label in allowed, (rule["alert"], label)
    assert used == set(OPERATOR_METRICS)


def test_the_operator_exports_what_the_rules_use() -> None:
    """Once the operator serves its metrics, every name the rules use must be in its source."""
    source = "\n".join(p.read_text() for p in (ROOT / "operator").rglob("*.py"))
    if "tablerefresh_condition" not in source:
        pytest.skip("the operator does not serve its per-object metrics yet")
    # prometheus_client adds _total to a Counter's name, so its source may spell it without.
    missing = [m for m in OPERATOR_METRICS if m.removesuffix("_total") not in source]
    assert not missing, f"the rules use metrics the operator does not export: {missing}"


# ServiceMonitor


def test_service_monitor_selects_the_metrics_service_and_keeps_the_object_labels() -> None:
    base = ROOT / "manifests" / "base"
    service = load(base / "service.yaml")
    kustomization = load(base / "kustomization.yaml")
    labels = dict(service["metadata"].get("labels", {}))
    for entry in kustomization.get("labels", []):
        labels.update(entry["pairs"])
    monitor = load(MONITORING / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The metrics' namespace label is the TableRefresh's; without honorLabels it becomes exported_namespace.
    assert endpoint["honorLabels"] is True
    # The job label is the Service's name, which the operator-down alert looks for.
    assert f'up{{job="{service["metadata"]["name"]}"}}' in RULES.read_text()


# kube-state-metrics


def _schema_has(schema: dict[str, Any], path: list[str]) -> bool:
    for i, segment in enumerate(path):
        if schema.get("type") == "array":
            schema = schema["items"]
        properties = schema.get("properties", {})
        if segment not in properties:
            return i == 1 and path[0] == "metadata" and segment in {"name", "namespace", "generation"}
        schema = properties[segment]
    return True


def _ksm_config() -> dict[str, Any]:
    docs = yaml.safe_load_all((MONITORING / "kube-state-metrics.yaml").read_text())
    (configmap,) = (d for d in docs if d and d["kind"] == "ConfigMap")
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"])
    return config


def test_kube_state_metrics_config_reads_fields_the_crd_has() -> None:
    crd = load(CRD)
    config = _ksm_config()
    assert config["kind"] == "CustomResourceStateMetrics"
    (resource,) = config["spec"]["resources"]
    (version,) = crd["spec"]["versions"]
    gvk = resource["groupVersionKind"]
    assert gvk == {"group": crd["spec"]["group"], "version": version["name"], "kind": crd["spec"]["names"]["kind"]}
    schema = version["schema"]["openAPIV3Schema"]
    assert set(resource["labelsFromPath"]) == OBJECT_LABELS
    for path in resource["labelsFromPath"].values():
        assert _schema_has(schema, path), path
    names = [metric["name"] for metric in resource["metrics"]]
    assert len(names) == len(set(names))
    for metric in resource["metrics"]:
        each = metric["each"]
        assert metric["help"], metric["name"]
        spec = each[{"Gauge": "gauge", "StateSet": "stateSet", "Info": "info"}[each["type"]]]
        assert _schema_has(schema, spec["path"]), metric["name"]
        element = spec["path"]
        for sub in [spec.get("valueFrom", []), *spec.get("labelsFromPath", {}).values()]:
            assert _schema_has(schema, element + sub), (metric["name"], sub)


def test_kube_state_metrics_exposes_what_the_issue_names() -> None:
    (resource,) = _ksm_config()["spec"]["resources"]
    paths = {}
    for metric in resource["metrics"]:
        spec = next(v for k, v in metric["each"].items() if k != "type")
        paths[tuple(spec["path"]) + tuple(spec.get("valueFrom", []))] = metric
    conditions = paths[("status", "conditions", "status")]
    assert conditions["each"]["stateSet"]["labelsFromPath"] == {"type": ["type"]}
    assert conditions["each"]["stateSet"]["list"] == ["True", "False", "Unknown"]
    for path in [
        ("metadata", "generation"),
        ("status", "observedGeneration"),
        ("status", "health", "staleHours"),
        ("status", "health", "sliceDuplicates"),
        ("status", "health", "sliceRows"),
        ("status", "lastRun", "outcome"),
        ("status", "lastRun", "durationSeconds"),
    ]:
        assert path in paths, path
    outcome = paths[("status", "lastRun", "outcome")]["each"]["stateSet"]["list"]
    assert set(outcome) == {"Succeeded", "Failed", "Aborted", "FailedAfterSwap"}


# The kustomization


def test_monitoring_kustomization_builds_and_native_objects_validate() -> None:
    # kubectl on PATH, or the one the test control plane is built with (scripts/test builds it).
    kubectl = shutil.which("kubectl") or str(build(verbose=False) / "bin" / "kubectl")
    built = subprocess.run([kubectl, "kustomize", str(MONITORING)], check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    kinds = sorted(d["kind"] for d in docs)
    # The ConfigMaps: kube-state-metrics' configuration and the Grafana dashboard.
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap", "PrometheusRule", "ServiceMonitor"]
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(doc, K8S, strict=True)


if __name__ == "__main__":
    PROMETHEUS_RULE.write_text(render_prometheus_rule())
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}", file=sys.stderr)
