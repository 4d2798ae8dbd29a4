"""The Job runner itself, on the test control plane, with shell commands: what the end-to-end tests
rely on it doing as Kubernetes does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.harness.kube import wait_for
from tests.jobrunner.cron import Clock
from tests.jobrunner.runner import JobRunner

pytestmark = pytest.mark.kube


@pytest.fixture
def clock() -> Clock:
    stopped = Clock()
    stopped.set(datetime.now(UTC))
    return stopped


@pytest.fixture
def runner(kube_api: client.ApiClient, namespace: str, tmp_path: Path, clock: Clock) -> Iterator[JobRunner]:
    running = JobRunner(kube_api, [namespace], tmp_path, clock=clock).start()
    yield running
    running.stop()
    assert not running.errors, running.errors


def job(name: str, script: str, env: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c", script],
        "env": env or [],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }


def read(kube_api: client.ApiClient, namespace: str, kind: str, name: str | None = None) -> Any:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    calls = {
        "jobs": batch.list_namespaced_job,
        "pods": core.list_namespaced_pod,
        "cronjobs": batch.list_namespaced_cron_job,
    }
    items = json.loads(calls[kind](namespace, _preload_content=False).data)["items"]
    return next((i for i in items if i["metadata"]["name"] == name), None) if name else items


def ended(kube_api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    found = read(kube_api, namespace, "jobs", name)
    return (
        found
        if found
        and any(c["type"] in ("Complete", "Failed") for c in (found.get("status") or {}).get("conditions") or [])
        else None
    )


def test_env_from_the_api_the_termination_message_and_backoff(
    kube_api: client.ApiClient, namespace: str, runner: JobRunner
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"user": "alice"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"colour": "blue"}})
    env = [
        {"name": "WHO", "valueFrom": {"secretKeyRef": {"name": "s", "key": "user"}}},
        {"name": "COLOUR", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "colour"}}},
        {"name": "JOB", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}},
        {"name": "BOTH", "value": "$(WHO)-$(COLOUR)"},
    ]
    script = 'printf "%s %s %s" "$BOTH" "$JOB" "$KUBECONFIG" > /dev/termination-log; exit 3'
    client.BatchV1Api(kube_api).create_namespaced_job(namespace, job("env", script, env, backoffLimit=1))

    done = wait_for("the Job failed", lambda: ended(kube_api, namespace, "env"), timeout=30)
    assert done["status"]["failed"] == 2 and done["status"]["active"] == 0  # backoffLimit 1: two tries
    assert [c["type"] for c in done["status"]["conditions"]] == ["FailureTarget", "Failed"]
    assert done["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    pods = read(kube_api, namespace, "pods")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed" and pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "env"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        # The environment is the Pod's, not the test process's (no KUBECONFIG leaks in).
        assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (3, "Error", "alice-blue env ")


def test_a_failure_without_a_message_falls_back_to_the_log(
    kube_api: client.ApiClient, namespace: str, runner: JobRunner
) -> None:
    client.BatchV1Api(kube_api).create_namespaced_job(namespace, job("log", "echo first; echo 'the tail'; exit 1"))
    wait_for("the Job failed", lambda: ended(kube_api, namespace, "log"), timeout=30)
    (pod,) = read(kube_api, namespace, "pods")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "first\nthe tail"


def test_success_completes_the_job(kube_api: client.ApiClient, namespace: str, runner: JobRunner) -> None:
    client.BatchV1Api(kube_api).create_namespaced_job(namespace, job("ok", "echo done > /dev/termination-log"))
    done = wait_for("the Job complete", lambda: ended(kube_api, namespace, "ok"), timeout=30)
    assert done["status"]["succeeded"] == 1 and done["status"]["completionTime"]
    assert [c["type"] for c in done["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    (pod,) = read(kube_api, namespace, "pods")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], terminated["reason"], terminated["message"]) == ("Succeeded", "Completed", "done\n")


def test_active_deadline_seconds_kills_the_container(
    kube_api: client.ApiClient, namespace: str, runner: JobRunner
) -> None:
    client.BatchV1Api(kube_api).create_namespaced_job(namespace, job("slow", "sleep 60", activeDeadlineSeconds=1))
    done = wait_for("the deadline", lambda: ended(kube_api, namespace, "slow"), timeout=30)
    assert done["status"]["conditions"][-1]["reason"] == "DeadlineExceeded"
    pod = wait_for(
        "the Pod terminated",
        lambda: [p for p in read(kube_api, namespace, "pods") if (p.get("status") or {}).get("phase") == "Failed"],
        timeout=30,
    )[0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143  # SIGTERM


def test_a_missing_secret_keeps_the_container_waiting(
    kube_api: client.ApiClient, namespace: str, runner: JobRunner
) -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]
    client.BatchV1Api(kube_api).create_namespaced_job(namespace, job("cfg", "true", env))

    def waiting() -> dict[str, Any] | None:
        pods = read(kube_api, namespace, "pods")
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return statuses[0]["state"].get("waiting") if statuses else None

    state = wait_for("CreateContainerConfigError", waiting, timeout=30)
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "nope" not found'}
    assert ended(kube_api, namespace, "cfg") is None


def test_cronjobs_run_on_the_clock_under_their_concurrency_policy(
    kube_api: client.ApiClient, namespace: str, runner: JobRunner, clock: Clock
) -> None:
    batch = client.BatchV1Api(kube_api)
    template = job("x", "sleep 60")
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "every-minute"},
        "spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"metadata": {"labels": {"app": "x"}}, "spec": template["spec"]},
        },
    }
    batch.create_namespaced_cron_job(namespace, cronjob)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)

    def at(minutes: int) -> None:
        clock.set(minute + timedelta(minutes=minutes, seconds=1))
        runner.poke()

    at(1)
    (first,) = wait_for("the first Job", lambda: read(kube_api, namespace, "jobs"), timeout=30)
    assert first["metadata"]["name"] == f"every-minute-{int((minute + timedelta(minutes=1)).timestamp()) // 60}"
    wait_for("it runs", lambda: runner.runs_of(namespace, first["metadata"]["name"]), timeout=30)
    at(2)  # Forbid: the first still runs
    wait_for("the skip", lambda: any("Forbid" in s for s in runner.skipped), timeout=30)
    assert [j["metadata"]["name"] for j in read(kube_api, namespace, "jobs")] == [first["metadata"]["name"]]

    batch.patch_namespaced_cron_job("every-minute", namespace, {"spec": {"concurrencyPolicy": "Replace"}})
    at(3)  # Replace: the running one goes, a new one comes
    second = f"every-minute-{int((minute + timedelta(minutes=3)).timestamp()) // 60}"
    wait_for(
        "the replacement",
        lambda: [j["metadata"]["name"] for j in read(kube_api, namespace, "jobs")] == [second],
        timeout=30,
    )

    batch.patch_namespaced_cron_job("every-minute", namespace, {"spec": {"suspend": True}})
    at(5)
    runner.look()  # a whole pass at the new time
    cj = wait_for("the CronJob's status", lambda: read(kube_api, namespace, "cronjobs", "every-minute"), timeout=30)
    assert [j["metadata"]["name"] for j in read(kube_api, namespace, "jobs")] == [second]  # suspended: none
    assert cj["status"]["lastScheduleTime"] == (minute + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
