"""Run now on the real API server: a Job from the CronJob's template, once per token, under the
CronJob's concurrency rules (the Job itself and the rules are unit-tested in test_jobs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tablerefresh.controller.policy.jobs import job_name
from tests.controller_env import create_secret, example
from tests.harness.kube import Kube, wait_for
from tests.harness.operators import OperatorProcess

pytestmark = pytest.mark.kube


def _jobs(api: Kube, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(api.batch.list_namespaced_job(namespace, _preload_content=False).data)[
        "items"
    ]
    return items


def _annotate(controlplane: Any, namespace: str, token: str) -> None:
    controlplane.kubectl(
        "annotate", "--overwrite", "-n", namespace, "tr/pm-trade-fifo-roi-unified", f"tablerefresh.dev/run-now={token}"
    )


def _run_now_status(api: Kube, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = (api.tr(namespace, "pm-trade-fifo-roi-unified").get("status") or {}).get("runNow") or {}
    return status


def _finish(api: Kube, namespace: str, name: str) -> None:
    api.batch.patch_namespaced_job_status(
        name, namespace, {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    )


def test_the_annotation_runs_once_per_token_and_keeps_forbid(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    api.apply(example(namespace))
    cronjob = wait_for("the CronJob", lambda: api.cronjob(namespace, "pm-trade-fifo-roi-unified"))

    _annotate(controlplane, namespace, "first")
    wait_for("run-now first handled", lambda: _run_now_status(api, namespace).get("token") == "first")
    (job,) = _jobs(api, namespace)
    assert job["metadata"]["name"] == job_name(cronjob["metadata"]["name"], "first")
    assert job["metadata"]["ownerReferences"][0]["uid"] == cronjob["metadata"]["uid"]
    # More events on the object (a label, a resync) do not run the same token again. kopf runs the
    # event's run-now handler before its update handler, so a counted update means it was handled.
    updates = operator_process.reconciles("update")
    controlplane.kubectl("label", "-n", namespace, "tr/pm-trade-fifo-roi-unified", "touched=yes")
    wait_for("the labelled object handled", lambda: operator_process.reconciles("update") > updates)
    assert len(_jobs(api, namespace)) == 1

    _annotate(controlplane, namespace, "second")  # the first Job still runs: Forbid refuses
    wait_for("run-now second handled", lambda: _run_now_status(api, namespace).get("token") == "second")
    assert "refused" in _run_now_status(api, namespace)["message"]
    assert len(_jobs(api, namespace)) == 1
    reasons = {e["reason"] for e in api.events(namespace)}
    assert {"RunNow", "RunNowRefused"} <= reasons

    _finish(api, namespace, job["metadata"]["name"])
    _annotate(controlplane, namespace, "third")
    wait_for("run-now third handled", lambda: _run_now_status(api, namespace).get("token") == "third")
    assert sorted(j["metadata"]["name"] for j in _jobs(api, namespace)) == sorted(
        [job["metadata"]["name"], job_name(cronjob["metadata"]["name"], "third")]
    )


def _cli(controlplane: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(controlplane.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "tablerefresh", "run-now", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )


def test_the_command_creates_a_job_and_replace_replaces_the_running_one(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    api.apply(example(namespace, concurrencyPolicy="Replace"))
    wait_for("the CronJob", lambda: api.cronjob(namespace, "pm-trade-fifo-roi-unified"))

    first = _cli(controlplane, f"{namespace}/pm-trade-fifo-roi-unified", "--token", "a")
    assert first.returncode == 0, first.stderr
    again = _cli(controlplane, f"{namespace}/pm-trade-fifo-roi-unified", "--token", "a")
    assert again.returncode == 0 and len(_jobs(api, namespace)) == 1  # same token, same Job

    second = _cli(controlplane, f"{namespace}/pm-trade-fifo-roi-unified", "--token", "b")
    assert second.returncode == 0, second.stderr
    names = [j["metadata"]["name"] for j in _jobs(api, namespace) if not j["metadata"].get("deletionTimestamp")]
    assert names == [second.stdout.split()[0].removeprefix("job.batch/")]


def test_dedupe_runs_as_a_one_off_job(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    api.apply(example(namespace))
    wait_for("the CronJob", lambda: api.cronjob(namespace, "pm-trade-fifo-roi-unified"))
    done = _cli(controlplane, f"{namespace}/pm-trade-fifo-roi-unified", "--dedupe", "--slice-only")
    assert done.returncode == 0, done.stderr
    (job,) = _jobs(api, namespace)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["dedupe", "--summary-file", "/dev/termination-log", "--slice-only"]
    assert any(e["name"] == "TABLEREFRESH_MANIFEST" for e in container["env"])


def test_the_command_names_what_is_wrong(controlplane: Any, crd: None, namespace: str) -> None:
    missing = _cli(controlplane, f"{namespace}/nope")
    assert missing.returncode == 2 and f"error: no TableRefresh {namespace}/nope" in missing.stderr
    bad = _cli(controlplane, "no-slash")
    assert bad.returncode == 2 and "NAMESPACE/NAME" in bad.stderr
