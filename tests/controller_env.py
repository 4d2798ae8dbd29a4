"""What the controller's API-server tests share (test_controller_kube.py, test_runnow.py): the reference
TableRefresh moved into the test's namespace, its Secret, and reads of what the operator wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tablerefresh.controller.runtime.diffbase import DigestDiffBaseStorage
from tests.harness.kube import Kube, condition

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "polymarket" / "tablerefresh.yaml"
ARGO_LABEL = "app.kubernetes.io/instance"


def example(namespace: str, **spec_changes: Any) -> dict[str, Any]:
    """The reference Polymarket TableRefresh, moved into the test namespace, with an Argo CD label."""
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["namespace"] = namespace
    document["metadata"].setdefault("labels", {})[ARGO_LABEL] = "polymarket"
    document["spec"].update(spec_changes)
    return document


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


def observed(api: Kube, ns: str, name: str) -> dict[str, Any] | None:
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
