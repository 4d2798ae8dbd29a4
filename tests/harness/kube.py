"""What the tests against the API server share: names, the tests' operator policy, waiting on an
observable signal, the TableRefresh CRD installed, plain-dict reads and writes (``Kube``) and
``condition``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tablerefresh.controller.policy.admission import CREDENTIALS_LABEL, OperatorPolicy

GROUP, VERSION, PLURAL = "tablerefresh.dev", "v1alpha1", "tablerefreshes"
ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "tablerefresh.dev_tablerefreshes.yaml"

T = TypeVar("T")
_crd_installed: set[str] = set()


# The tests' operator policy: ClickHouse on this machine (loopback, embedded paths), and health
# checks as often as a test's spec asks. The shipped default allows in-cluster Services only.
TEST_POLICY = OperatorPolicy(allowed_hosts=("127.0.0.1", "localhost", "chdb://*"), min_health_interval_seconds=0)
TEST_POLICY_ARGS = [
    *("--allow-host", "127.0.0.1", "--allow-host", "localhost", "--allow-host", "chdb://*"),
    *("--min-health-interval", "0"),
]
# What a Secret's owner sets to let TableRefresh objects use it.
CREDENTIALS_LABELS = {CREDENTIALS_LABEL: "true"}


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.05) -> T:
    """The probe's first truthy value, or an AssertionError naming what never came."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def install_crd(plane: Any) -> None:
    """The repo's CRD, applied and established, once per cluster."""
    if str(plane.kubeconfig) in _crd_installed:
        return
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{PLURAL}.{GROUP}")
    _crd_installed.add(str(plane.kubeconfig))


def stop_group(process: subprocess.Popen[Any] | None, timeout: float = 30) -> None:
    """Stop a server started in its own process group (``start_new_session``): TERM, then KILL."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Kube:
    """Plain-dict reads and writes (the wire JSON, as the operator itself reads it) on the test
    control plane; ``apply`` is ``kubectl apply --server-side``, as Argo CD does with ServerSideApply."""

    def __init__(self, api_client: client.ApiClient, plane: Any) -> None:
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.plane = plane

    def apply(self, document: Mapping[str, Any]) -> None:
        self.plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(document))

    def tr(self, ns: str, name: str) -> dict[str, Any]:
        response = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, _preload_content=False)
        data: dict[str, Any] = json.loads(response.data)
        return data

    def patch_spec(self, ns: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": spec})

    def cronjob(self, ns: str, name: str) -> dict[str, Any] | None:
        """The CronJob, or None when there is none."""
        try:
            response = self.batch.read_namespaced_cron_job(name, ns, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(response.data)
        return data

    def cronjobs(self, ns: str) -> list[dict[str, Any]]:
        return self._items(self.batch.list_namespaced_cron_job, ns)

    def jobs(self, ns: str) -> list[dict[str, Any]]:
        return self._items(self.batch.list_namespaced_job, ns)

    def pods(self, ns: str) -> list[dict[str, Any]]:
        return self._items(self.core.list_namespaced_pod, ns)

    def events(self, ns: str, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self._items(self.core.list_namespaced_event, ns) if reason is None or e["reason"] == reason]

    def secret(
        self, ns: str, name: str, data: Mapping[str, str], labels: Mapping[str, str] = CREDENTIALS_LABELS
    ) -> None:
        """A Secret with ``data``, labelled (by default) as one its owner lets TableRefresh objects use."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
            "stringData": dict(data),
        }
        self.core.create_namespaced_secret(ns, body, _preload_content=False)

    @staticmethod
    def _items(call: Callable[..., Any], ns: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(call(ns, _preload_content=False).data)["items"]
        return items


def condition(of: Mapping[str, Any], type_: str) -> dict[str, Any]:
    """The condition ``type_`` of a TableRefresh or of its status; {} when there is none."""
    status = of if "conditions" in of else (of.get("status") or {})
    found = next((c for c in status.get("conditions") or [] if c["type"] == type_), None)
    return dict(found) if found else {}
