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
from tests.operator_process import (  # noqa: F401  (fixtures)
    Api,
    api,
    apply,
    crd,
    create_secret,
    example,
    ns,
    operator,
    plane,
    wait_for,
)

pytestmark = pytest.mark.kube


def _jobs(api: Api, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(api.batch.list_namespaced_job(namespace, _preload_content=False).data)[
        "items"
    ]
    return items


def _annotate(plane: Any, namespace: str, token: str) -> None:
    plane.kubectl(
        "annotate", "--overwrite", "-n", namespace, "tr/pm-trade-fifo-roi-unified", f"tablerefresh.dev/run-now={token}"
    )


def _run_now_status(api: Api, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = (api.tr(namespace, "pm-trade-fifo-roi-unified").get("status") or {}).get("runNow") or {}
    return status


def _finish(api: Api, namespace: str, name: str) -> None:
    api.batch.patch_namespaced_job_status(
        name, namespace, {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    )


def test_the_annotation_runs_once_per_token_and_keeps_forbid(plane: Any, api: Api, ns: str, operator: Any) -> None:
    create_secret(plane, ns)
    apply(plane, example(ns))
    cronjob = wait_for("the CronJob", lambda: api.cronjob(ns, "pm-trade-fifo-roi-unified"))

    _annotate(plane, ns, "first")
    wait_for("run-now first handled", lambda: _run_now_status(api, ns).get("token") == "first")
    (job,) = _jobs(api, ns)
    assert job["metadata"]["name"] == job_name(cronjob["metadata"]["name"], "first")
    assert job["metadata"]["ownerReferences"][0]["uid"] == cronjob["metadata"]["uid"]
    # More events on the object (a label, a resync) do not run the same token again. kopf runs the
    # event's run-now handler before its update handler, so a counted update means it was handled.
    updates = operator.reconciles("update")
    plane.kubectl("label", "-n", ns, "tr/pm-trade-fifo-roi-unified", "touched=yes")
    wait_for("the labelled object handled", lambda: operator.reconciles("update") > updates)
    assert len(_jobs(api, ns)) == 1

    _annotate(plane, ns, "second")  # the first Job still runs: Forbid refuses
    wait_for("run-now second handled", lambda: _run_now_status(api, ns).get("token") == "second")
    assert "refused" in _run_now_status(api, ns)["message"]
    assert len(_jobs(api, ns)) == 1
    reasons = {e["reason"] for e in api.events(ns)}
    assert {"RunNow", "RunNowRefused"} <= reasons

    _finish(api, ns, job["metadata"]["name"])
    _annotate(plane, ns, "third")
    wait_for("run-now third handled", lambda: _run_now_status(api, ns).get("token") == "third")
    assert sorted(j["metadata"]["name"] for j in _jobs(api, ns)) == sorted(
        [job["metadata"]["name"], job_name(cronjob["metadata"]["name"], "third")]
    )


def _cli(plane: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
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
    plane: Any, api: Api, ns: str, operator: Any
) -> None:
    create_secret(plane, ns)
    apply(plane, example(ns, concurrencyPolicy="Replace"))
    wait_for("the CronJob", lambda: api.cronjob(ns, "pm-trade-fifo-roi-unified"))

    first = _cli(plane, f"{ns}/pm-trade-fifo-roi-unified", "--token", "a")
    assert first.returncode == 0, first.stderr
    again = _cli(plane, f"{ns}/pm-trade-fifo-roi-unified", "--token", "a")
    assert again.returncode == 0 and len(_jobs(api, ns)) == 1  # same token, same Job

    second = _cli(plane, f"{ns}/pm-trade-fifo-roi-unified", "--token", "b")
    assert second.returncode == 0, second.stderr
    names = [j["metadata"]["name"] for j in _jobs(api, ns) if not j["metadata"].get("deletionTimestamp")]
    assert names == [second.stdout.split()[0].removeprefix("job.batch/")]


def test_dedupe_runs_as_a_one_off_job(plane: Any, api: Api, ns: str, operator: Any) -> None:
    create_secret(plane, ns)
    apply(plane, example(ns))
    wait_for("the CronJob", lambda: api.cronjob(ns, "pm-trade-fifo-roi-unified"))
    done = _cli(plane, f"{ns}/pm-trade-fifo-roi-unified", "--dedupe", "--slice-only")
    assert done.returncode == 0, done.stderr
    (job,) = _jobs(api, ns)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["dedupe", "--summary-file", "/dev/termination-log", "--slice-only"]
    assert any(e["name"] == "TABLEREFRESH_MANIFEST" for e in container["env"])


def test_the_command_names_what_is_wrong(plane: Any, crd: None, ns: str) -> None:
    missing = _cli(plane, f"{ns}/nope")
    assert missing.returncode == 2 and f"error: no TableRefresh {ns}/nope" in missing.stderr
    bad = _cli(plane, "no-slash")
    assert bad.returncode == 2 and "NAMESPACE/NAME" in bad.stderr
