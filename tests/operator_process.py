"""`tablerefresh operator` in a process of its own against the test control plane, with the fixtures
and reads the controller's API-server tests share (test_controller_kube.py, test_runnow.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tablerefresh.controller.runtime.diffbase import DigestDiffBaseStorage
from tests.kube_support import CRD_FILE, GROUP, PLURAL, TEST_POLICY_ARGS, VERSION, install_crd, wait_for  # noqa: F401

PLUGIN = "tests.controlplane.pytest_plugin"


ROOT = Path(__file__).resolve().parent.parent


EXAMPLE = ROOT / "examples" / "polymarket" / "tablerefresh.yaml"


ARGO_LABEL = "app.kubernetes.io/instance"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Operator:
    """``tablerefresh operator`` as a subprocess on the test kubeconfig."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.kubeconfig, self.namespace, self.log = kubeconfig, namespace, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0

    def start(self) -> Operator:
        port = free_port()
        self.metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tablerefresh",
                    "operator",
                    "--namespace",
                    self.namespace,
                    "--liveness",
                    f"http://127.0.0.1:{port}/healthz",
                    "--metrics-port",
                    str(self.metrics_port),
                    "--resync",
                    "5",
                    *TEST_POLICY_ARGS,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def alive() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("the operator's liveness endpoint", alive, timeout=30, interval=0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the running operator's /metrics (0 when absent): what it counted since it started."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series = f"{name}{{{wanted}}}" if labels else name
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.split(" ")[0] == series:
                    return float(line.split(" ")[1])
        return 0.0

    def reconciles(self, *triggers: str) -> float:
        """Reconciles that ended well, of these triggers (resume, create, update, cronjob, resync; all
        when none is named)."""
        names = triggers or ("resume", "create", "update", "cronjob", "resync")
        return sum(self.metric("tablerefresh_reconciles_total", result="ok", trigger=t) for t in names)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def _plugin_fixture(request: pytest.FixtureRequest, name: str) -> Any:
    """The control plane plugin's fixture, or a skip while the root conftest does not register it."""
    if not request.config.pluginmanager.has_plugin(PLUGIN):
        pytest.skip(f"the control plane plugin is not registered (pytest -p {PLUGIN})")
    return request.getfixturevalue(name)


@pytest.fixture
def plane(request: pytest.FixtureRequest) -> Any:
    return _plugin_fixture(request, "controlplane")


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    name: str = _plugin_fixture(request, "namespace")
    return name


@pytest.fixture
def crd(plane: Any) -> None:
    install_crd(plane)


@pytest.fixture
def operator(plane: Any, crd: None, ns: str, tmp_path: Path) -> Iterator[Operator]:
    running = Operator(Path(plane.kubeconfig), ns, tmp_path / "operator.log").start()
    yield running
    running.stop()


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Api:
    return Api(_plugin_fixture(request, "kube_api"))


class Api:
    """Plain-dict reads and writes (the wire JSON), as the operator itself does."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def tr(self, ns: str, name: str) -> dict[str, Any]:
        response = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, _preload_content=False)
        data: dict[str, Any] = json.loads(response.data)
        return data

    def cronjob(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.batch.read_namespaced_cron_job(name, ns, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(response.data)
        return data

    def cronjobs(self, ns: str) -> list[dict[str, Any]]:
        response = self.batch.list_namespaced_cron_job(ns, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def events(self, ns: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_event(ns, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items


def example(namespace: str, **spec_changes: Any) -> dict[str, Any]:
    """The reference Polymarket TableRefresh, moved into the test namespace, with an Argo CD label."""
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["namespace"] = namespace
    document["metadata"].setdefault("labels", {})[ARGO_LABEL] = "polymarket"
    document["spec"].update(spec_changes)
    return document


def apply(controlplane: Any, document: dict[str, Any]) -> None:
    """``kubectl apply --server-side``, as Argo CD does with ServerSideApply=true."""
    controlplane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(document))


def create_secret(controlplane: Any, namespace: str, name: str = "clickhouse-credentials") -> None:
    controlplane.kubectl(
        "create", "secret", "generic", name, "-n", namespace, "--from-literal=username=u", "--from-literal=password=p"
    )
    controlplane.kubectl("label", "secret", name, "-n", namespace, "tablerefresh.dev/credentials=true")


def contains(actual: Any, desired: Any, path: str = "") -> list[str]:
    """Where ``desired`` is not in ``actual`` (the server may add defaults; nothing else may differ)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return [f"{path}: not an object"]
        return [m for k, v in desired.items() for m in contains(actual.get(k), v, f"{path}.{k}")]
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [f"{path}: {actual!r} != {desired!r}"]
        return [m for i, (a, d) in enumerate(zip(actual, desired, strict=True)) for m in contains(a, d, f"{path}[{i}]")]
    return [] if actual == desired else [f"{path}: {actual!r} != {desired!r}"]


def condition(tr: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (tr.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def observed(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    """The TableRefresh once the controller has caught up with its current generation."""
    tr = api.tr(ns, name)
    status = tr.get("status") or {}
    ready = condition(tr, "Ready")
    if status.get("observedGeneration") == tr["metadata"]["generation"] and ready:
        return tr
    return None


def kopf_done(tr: dict[str, Any], **spec: Any) -> dict[str, Any] | None:
    """The object once kopf has handled a spec with ``spec`` in it and written its bookkeeping
    (status.kopf: the digest of the spec it last handled, no handler still in progress)."""
    kopf = (tr.get("status") or {}).get("kopf") or {}
    wanted = all(tr["spec"].get(k) == v for k, v in spec.items())
    done = wanted and DigestDiffBaseStorage().handled(tr) and not kopf.get("progress")
    return tr if done else None
