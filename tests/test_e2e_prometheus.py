"""Real Prometheus on the operator's real /metrics (issue 13): the shipped alert rules fire for a
stale table with duplicate keys and resolve once a refresh Job has fixed it; every query of the
Grafana dashboard returns series.

Prometheus (Debian's package) scrapes the operator process and a kube-state-metrics stand-in
(``tests/ksm_standin.py``, for the thresholds the dashboard draws) every second and evaluates a copy of
manifests/monitoring/rules.yaml whose ``for:`` are shortened to 2s; the expressions are the shipped ones.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests import prometheus_server
from tests.controlplane.pytest_plugin import missing
from tests.dashboard_queries import dashboard, expand, queries
from tests.e2e_env import (  # noqa: F401  (fixtures)
    DB,
    INSTALLED,
    NAME,
    SOURCE,
    TABLE,
    Target,
    clock,
    credentials,
    e2e_server,
    last_run,
    manifest,
    runner,
    sql,
    target,
)
from tests.harness.kube import Kube, wait_for
from tests.harness.operators import OperatorProcess
from tests.jobrunner.runner import JobRunner
from tests.ksm_standin import KubeStateMetrics

pytestmark = [pytest.mark.kube, pytest.mark.slow]

RULES = Path(__file__).resolve().parent.parent / "manifests" / "monitoring" / "rules.yaml"
DATA_ALERTS = {"TableRefreshDataStale", "TableRefreshDuplicatesDetected"}


@pytest.fixture
def ksm(kube_api: client.ApiClient, api: Kube, namespace: str, crd: None) -> Iterator[KubeStateMetrics]:
    running = KubeStateMetrics(kube_api, [namespace]).start()
    yield running
    running.stop()


@pytest.fixture
def prometheus(
    tmp_path: Path, operator_process: OperatorProcess, ksm: KubeStateMetrics
) -> Iterator[prometheus_server.Prometheus]:
    binary = prometheus_server.find()
    if binary is None:
        missing("prometheus (Debian package prometheus; scripts/system-deps installs it)")
        raise AssertionError("unreachable")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    rules = prometheus_server.short_rules(RULES, directory / "rules.yaml")
    targets = {
        "tablerefresh-metrics": f"127.0.0.1:{operator_process.metrics_port}",
        "kube-state-metrics": f"127.0.0.1:{ksm.port}",
    }
    running = prometheus_server.Prometheus(binary, directory, targets, [rules]).start()
    yield running
    running.stop()


def stale_with_duplicates(target: Target) -> None:
    """The target: ids 0..99 two days old, and 0..4 a second time. The source: the same ids, fresh."""
    columns = "(id UInt64, entry_time DateTime('UTC'), v UInt64)"
    sql(
        target,
        f"CREATE DATABASE IF NOT EXISTS {DB}",
        f"CREATE TABLE {DB}.{TABLE} {columns} ENGINE = MergeTree PARTITION BY toYYYYMMDD(entry_time) ORDER BY id",
        f"CREATE TABLE {DB}.{SOURCE} {columns} ENGINE = MergeTree ORDER BY id",
        f"INSERT INTO {DB}.{TABLE} SELECT number, now() - INTERVAL 2 DAY - number, 1 FROM numbers(100)",
        f"INSERT INTO {DB}.{TABLE} SELECT number, now() - INTERVAL 2 DAY - number, 1 FROM numbers(5)",
        f"INSERT INTO {DB}.{SOURCE} SELECT number, now() - number, 2 FROM numbers(100)",
    )


def firing(prometheus: prometheus_server.Prometheus, namespace: str) -> set[str]:
    return {a["labels"]["alertname"] for a in prometheus.alerts("firing") if a["labels"].get("namespace") == namespace}


def test_the_shipped_alerts_fire_on_the_operators_metrics_and_resolve_after_the_fix(
    api: Kube,
    namespace: str,
    crd: None,
    target: Target,
    operator_process: OperatorProcess,
    runner: JobRunner,
    prometheus: prometheus_server.Prometheus,
    controlplane: Any,
) -> None:
    stale_with_duplicates(target)
    credentials(api, namespace)
    # Exchange: the run rebuilds the whole table from the source; the schedule is never due here.
    # An audit that passes: its series feeds the dashboard's audit panel.
    audit = {"name": "no-future-rows", "query": "SELECT countIf(entry_time > now() + 3600) FROM {table:Identifier}"}
    body = manifest(
        namespace, target.url, schedule="0 0 1 1 *", strategy="Exchange", healthCheck={"interval": "1s"}, audits=[audit]
    )
    # A memory limit far above what the run uses: the memory panel's limit line, and no headroom alert.
    body["spec"]["clickhouse"]["settings"] = {"max_memory_usage": str(8 << 30)}
    api.apply(body)

    alerts = wait_for(
        "the stale and duplicate alerts firing",
        lambda: firing(prometheus, namespace) >= DATA_ALERTS and firing(prometheus, namespace),
        timeout=120,
        interval=0.5,
    )
    assert "TableRefreshClickHouseUnreachable" not in alerts
    details = {a["labels"]["alertname"]: a for a in prometheus.alerts("firing")}
    assert details["TableRefreshDataStale"]["labels"]["table"] == TABLE
    # The descriptions quote the raw gauges, queried when the rule is evaluated.
    stale_words = details["TableRefreshDataStale"]["annotations"]["description"]
    assert "over the object's spec.thresholds.maxStaleHours" in stale_words
    assert "repeated unique keys" in details["TableRefreshDuplicatesDetected"]["annotations"]["description"]
    wait_for("every rule evaluated without error", lambda: all(h == "ok" for _, h, _ in prometheus.rule_health()))

    # The fix: a refresh, run now, through the Job runner.
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(controlplane.kubeconfig)}
    out = subprocess.run(
        [INSTALLED, "run-now", f"{namespace}/{NAME}"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    run = wait_for("the refresh recorded", lambda: last_run(api, namespace), timeout=120)
    assert run["outcome"] == "Succeeded", run
    wait_for(
        "the data alerts resolved", lambda: not (DATA_ALERTS & firing(prometheus, namespace)), timeout=120, interval=0.5
    )
    assert sql(target, f"SELECT count(), uniqExact(id) FROM {DB}.{TABLE}") == [[100, 100]]
    assert operator_process.sample("tablerefresh_memory_limit_bytes") == 8 << 30
    # The run's peak memory is exported as its summary reported it (absent when the engine did not say).
    wait_for(
        "the run's peak memory in /metrics",
        lambda: operator_process.sample("tablerefresh_last_run_peak_memory_bytes") == run.get("peakMemoryBytes"),
        timeout=30,
    )
    assert "TableRefreshMemoryHeadroomLow" not in firing(prometheus, namespace)

    # The dashboard: every panel's every query returns series for this TableRefresh.
    for title, expr in queries(dashboard()):
        query = expand(expr, namespace, NAME)
        wait_for(f"series for the panel {title!r}: {query}", lambda q=query: prometheus.query(q), timeout=30)  # type: ignore[misc]
