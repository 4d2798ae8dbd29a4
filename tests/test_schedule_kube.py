"""Every schedule of test_schedule.CASES applied to the API server with the repo's CRD: the ones
Kubernetes' CronJob refuses fail naming spec.schedule, the others apply, as the model decides."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.kube import install_crd
from tests.schedule_cases import CASES, Case

pytestmark = pytest.mark.kube


@pytest.fixture
def crd(controlplane: Any) -> None:
    install_crd(controlplane)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kubectl_apply_accepts_exactly_what_the_model_accepts(
    controlplane: Any, crd: None, namespace: str, case: Case
) -> None:
    document = case.manifest()
    document["metadata"] = {"name": "schedule", "namespace": namespace}
    result = controlplane.kubectl("apply", "-f", "-", input=json.dumps(document), check=False)
    if case.refused is None and not case.crd_refuses_anyway:
        assert result.returncode == 0, result.stderr
        got = controlplane.kubectl("get", "tr", "schedule", "-n", namespace, "-o", "json").stdout
        assert json.loads(got)["spec"]["schedule"] == case.text
    else:
        assert result.returncode != 0, f"{case.text!r} was accepted"
        assert "spec.schedule" in result.stderr, result.stderr
