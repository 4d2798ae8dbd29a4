"""The harness's pytest fixtures, registered for every test module by ``tests/conftest.py``, on top
of the control plane plugin's ``controlplane``, ``kube_api`` and ``namespace``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.config import kube_config

from tests.harness.kube import Kube, install_crd
from tests.harness.operators import InProcessOperator, OperatorProcess


@pytest.fixture
def crd(controlplane: Any) -> None:
    """The repo's TableRefresh CRD, installed and established."""
    install_crd(controlplane)


@pytest.fixture
def api(kube_api: client.ApiClient, controlplane: Any) -> Kube:
    return Kube(kube_api, controlplane)


def start_operator(
    controlplane: Any, namespace: str, monkeypatch: pytest.MonkeyPatch, **controller_options: Any
) -> InProcessOperator:
    """The operator in this process, watching ``namespace``, with these ``Controller`` options."""
    # kopf's login loads the default kubeconfig, whose path the client reads from $KUBECONFIG at import.
    monkeypatch.setenv("KUBECONFIG", str(controlplane.kubeconfig))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(controlplane.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return InProcessOperator(Path(controlplane.kubeconfig), namespace, **controller_options).start()


@pytest.fixture
def operator(
    controlplane: Any, crd: None, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InProcessOperator]:
    """The operator in this process, watching the test's namespace."""
    running = start_operator(controlplane, namespace, monkeypatch)
    yield running
    running.stop()


@pytest.fixture
def operator_process(controlplane: Any, crd: None, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """``tablerefresh operator`` as a process of its own, watching the test's namespace."""
    running = OperatorProcess(Path(controlplane.kubeconfig), namespace, tmp_path / "operator").start()
    yield running
    running.stop()
