"""pytest plugin: the Kubernetes test control plane.

Register it with ``pytest_plugins = ["tests.controlplane.pytest_plugin"]`` in
the root conftest.py (or ``-p tests.controlplane.pytest_plugin``).

Fixtures:

``controlplane`` (session)
    etcd and the API server on free loopback ports, started once per session
    and stopped at its end. ``.kubeconfig`` is the kubeconfig's path;
    ``.kubectl(*args, check=True, input=None)`` runs kubectl against it and
    returns the ``subprocess.CompletedProcess`` (text); ``.server`` is the URL.
    When ``TABLEREFRESH_TEST_KUBECONFIG`` names a kubeconfig, that cluster
    (kind, k3s, ...) is used instead and nothing is started.
``kube_api`` (session)
    a ``kubernetes.client.ApiClient`` for that cluster.
``namespace`` (function)
    a fresh namespace, deleted after the test (deleting it deletes what the
    test left in it).

A missing optional part (the ``kubernetes`` client, ``kubernetes-validate``,
``cryptography``, apt/dpkg to build the binaries) skips the tests that need
the control plane, except in CI (``CI=true``), where it fails them.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

ENV_KUBECONFIG = "TABLEREFRESH_TEST_KUBECONFIG"

_timings: dict[str, float] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing(what: str) -> None:
    """Skip for a missing optional part; in CI, fail."""
    if in_ci():
        pytest.fail(f"CI must have {what}", pytrace=False)
    pytest.skip(f"{what} is missing")


def _require(module: str, what: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        missing(f"{what} ({module}: {exc})")


class ExternalCluster:
    """A cluster named by TABLEREFRESH_TEST_KUBECONFIG."""

    def __init__(self, kubeconfig: Path, cache_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir
        self.startup_seconds = 0.0
        self._kubectl: str | None = shutil.which("kubectl")

    @property
    def server(self) -> str:
        import yaml

        config = yaml.safe_load(self.kubeconfig.read_text())
        ctx_name = config.get("current-context")
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
        return next(c["cluster"]["server"] for c in config["clusters"] if c["name"] == ctx["cluster"])

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60.0) -> CompletedProcess[str]:
        from .cluster import build, run_kubectl

        if self._kubectl is None:
            self._kubectl = str(build() / "bin" / "kubectl")
        return run_kubectl(self._kubectl, self.kubeconfig, self.cache_dir, args,
                           check=check, input=input, timeout=timeout)

    def stop(self) -> None:
        pass


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    external = os.environ.get(ENV_KUBECONFIG)
    if external:
        path = Path(external).expanduser()
        if not path.is_file():
            pytest.fail(f"{ENV_KUBECONFIG}={external} is not a file", pytrace=False)
        yield ExternalCluster(path.resolve(), tmp_path_factory.mktemp("kubectl-cache"))
        return

    _require("cryptography", "the cryptography package")
    _require("kubernetes_validate", "the kubernetes-validate package (its schemas)")
    for tool in ("apt-get", "dpkg", "bash"):
        if shutil.which(tool) is None:
            missing(f"{tool} (the control plane is built from Debian packages)")

    from .cluster import ControlPlane, build

    began = time.monotonic()
    bin_dir = build(verbose=False)
    _timings["build (cached or not)"] = time.monotonic() - began
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"), bin_dir=bin_dir, tie_to_parent=True)
    cp.start()
    _timings["start"] = cp.startup_seconds or 0.0
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kube_api(controlplane: Any) -> Iterator[Any]:
    _require("kubernetes", "the kubernetes Python client")
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(controlplane.kubeconfig), client_configuration=configuration)
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(kube_api: Any) -> Iterator[str]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_api)
    name = f"test-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _timings:
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in _timings.items())
        terminalreporter.write_line(f"test control plane: {parts}")
