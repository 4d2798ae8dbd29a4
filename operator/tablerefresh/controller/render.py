"""TableRefresh -> batch/v1 CronJob. Pure: same input, same dict; no API calls, no clock.

The result is a server-side-apply configuration: it names every field the controller owns and
nothing else, so fields it stops setting are removed and fields others set are left alone.
"""

from __future__ import annotations

import json
from typing import Any

from tablerefresh import spec as api
from tablerefresh.controller.naming import JOB_NAME_LABEL, cronjob_name, owned_labels

CONTAINER_NAME = "refresh"
RUN_AS = 65532  # the image's non-root user
TMP_VOLUME = "tmp"
TMP_SIZE_LIMIT = "256Mi"
TERMINATION_LOG = "/dev/termination-log"

# The refresh command reads these when it gets no -f (the env contract with the job side).
ENV_MANIFEST = "TABLEREFRESH_MANIFEST"
ENV_RUN_ID = "TABLEREFRESH_RUN_ID"
ENV_SOURCE_QUERY = "TABLEREFRESH_SOURCE_QUERY"
ENV_USER = "CLICKHOUSE_USER"
ENV_PASSWORD = "CLICKHOUSE_PASSWORD"


def owner_reference(tr: api.TableRefresh, owner_uid: str) -> dict[str, Any]:
    """A controller reference: garbage collection deletes the CronJob with its TableRefresh."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": tr.metadata.name,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def manifest_json(tr: api.TableRefresh) -> str:
    """The manifest the Job needs, as compact JSON: only name, namespace and the full spec.

    Labels and annotations stay out, so a GitOps tool relabelling the TableRefresh does not
    change the CronJob; defaults are spelled out so the Job reads exactly what the controller read.
    """
    document = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": tr.metadata.name, "namespace": tr.metadata.namespace},
        "spec": tr.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def _env(tr: api.TableRefresh) -> list[dict[str, Any]]:
    spec = tr.spec
    env: list[dict[str, Any]] = [
        {"name": ENV_MANIFEST, "value": manifest_json(tr)},
        {"name": ENV_RUN_ID, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}},
    ]
    secret = spec.clickhouse.credentials_secret
    if secret is not None:
        for var, key in ((ENV_USER, secret.username_key), (ENV_PASSWORD, secret.password_key)):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}})
    ref = spec.source.config_map_key_ref
    if ref is not None:
        env.append({"name": ENV_SOURCE_QUERY, "valueFrom": {"configMapKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _resources(job: api.JobSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if job.resources.requests:
        out["requests"] = dict(job.resources.requests)
    if job.resources.limits:
        out["limits"] = dict(job.resources.limits)
    return out


def _container(tr: api.TableRefresh) -> dict[str, Any]:
    job = tr.spec.job
    return {
        "name": CONTAINER_NAME,
        "image": job.image,
        "imagePullPolicy": job.image_pull_policy,
        "command": ["tablerefresh"],
        "args": ["refresh", "--summary-file", TERMINATION_LOG],
        "env": _env(tr),
        "resources": _resources(job),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
        "terminationMessagePath": TERMINATION_LOG,
        # The refresh writes its JSON summary there; a crash before that still leaves the log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _pod_spec(tr: api.TableRefresh) -> dict[str, Any]:
    job = tr.spec.job
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the Job reads its spec from env, not from the API
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(tr)],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}],
    }
    if job.service_account_name:
        pod["serviceAccountName"] = job.service_account_name
    if job.node_selector:
        pod["nodeSelector"] = dict(job.node_selector)
    if job.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in job.tolerations]
    return pod


def render_cronjob(tr: api.TableRefresh, *, owner_uid: str) -> dict[str, Any]:
    """The CronJob for ``tr``, owned by the TableRefresh whose uid is ``owner_uid``.

    Carries only the controller's labels: never the TableRefresh's own, so a GitOps tool's
    tracking label (Argo CD's app.kubernetes.io/instance) does not make it adopt the child.
    """
    spec = tr.spec
    labels = owned_labels(tr.metadata.name)
    pod_labels = {**spec.job.pod_labels, **labels}  # ours win: the Job watch selects on them
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "template": {"metadata": {"labels": pod_labels}, "spec": _pod_spec(tr)},
    }
    if spec.job.pod_annotations:
        job_spec["template"]["metadata"]["annotations"] = dict(spec.job.pod_annotations)
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(tr.metadata.name),
            "namespace": tr.metadata.namespace,
            "labels": dict(labels),
            "ownerReferences": [owner_reference(tr, owner_uid)],
        },
        "spec": {
            "schedule": spec.schedule,
            "timeZone": spec.time_zone,
            "suspend": spec.suspend,
            "concurrencyPolicy": spec.concurrency_policy.value,
            "startingDeadlineSeconds": spec.starting_deadline_seconds,
            "successfulJobsHistoryLimit": spec.successful_jobs_history_limit,
            "failedJobsHistoryLimit": spec.failed_jobs_history_limit,
            "jobTemplate": {"metadata": {"labels": dict(labels)}, "spec": job_spec},
        },
    }
