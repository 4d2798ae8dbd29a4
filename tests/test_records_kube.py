"""The operator's memory stays flat as objects come and go: 500 TableRefresh objects created and deleted
on the real API server, and the controller's per-object state back to empty.

Everything the controller remembers about an object is in its record (``runtime.controller.Record``),
so empty records, no Jobs waiting for an owner, no check in flight and no per-object metric series
is all of it; no ``Record`` is left alive anywhere either.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from tablerefresh.controller.runtime.controller import Record
from tests.harness.fixtures import start_operator
from tests.harness.kube import GROUP, PLURAL, VERSION, wait_for
from tests.harness.operators import InProcessOperator
from tests.health_env import UNREACHABLE_URL

pytestmark = [pytest.mark.kube, pytest.mark.slow]

OBJECTS = 500


@pytest.fixture
def operator(
    controlplane: Any, crd: None, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InProcessOperator]:
    # No resync during the test: every object is reconciled and checked once, on sight.
    running = start_operator(controlplane, namespace, monkeypatch, resync_seconds=3600.0)
    yield running
    running.stop()


def manifest(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TableRefresh",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "0 */6 * * *",
            "clickhouse": {"url": UNREACHABLE_URL},  # each check: a refused connect and a status write
            "target": {"table": f"t_{name.replace('-', '_')}"},
            "slice": {"predicate": "ts >= {window_start:DateTime}"},
            "source": {"query": "SELECT * FROM raw WHERE ts >= {window_start:DateTime}"},
            "uniqueKey": ["id"],
            "freshnessColumn": "ts",
            "healthCheck": {"interval": "1h"},
        },
    }


def series_of(namespace: str) -> list[str]:
    """The operator's metric series labelled with this namespace."""
    return [
        f"{sample.name}{sample.labels}"
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.labels.get("namespace") == namespace
    ]


def test_500_objects_come_and_go_and_the_controller_forgets_them(
    kube_api: client.ApiClient, namespace: str, operator: InProcessOperator
) -> None:
    controller = operator.controller
    assert controller is not None
    custom = client.CustomObjectsApi(kube_api)

    def create(i: int) -> None:
        body = manifest(namespace, f"obj-{i:03d}")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(OBJECTS)))

    def converged() -> bool:
        listed: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        statuses = [tr.get("status") or {} for tr in listed["items"]]
        return sum(1 for s in statuses if s.get("observedGeneration") and (s.get("health") or {}).get("checkedAt")) == (
            OBJECTS
        )

    wait_for("every object reconciled and checked", converged, timeout=300, interval=1.0)
    assert len(controller.records) == OBJECTS
    assert all(r.status.applied and r.check is not None for r in controller.records.values())
    assert len(series_of(namespace)) > OBJECTS

    custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    wait_for("every record dropped", lambda: not controller.records, timeout=120, interval=0.2)
    wait_for("no check in flight", lambda: controller.health.in_flight() == 0, timeout=60, interval=0.2)
    assert controller.unclaimed_jobs == {}
    assert series_of(namespace) == []
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, Record)] == []
