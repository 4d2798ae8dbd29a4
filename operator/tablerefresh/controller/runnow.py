"""Run a refresh now: a Job made from the CronJob's template, as the CronJob controller makes one.

Used by ``tablerefresh run-now NS/NAME`` and by the annotation ``tablerefresh.dev/run-now: <token>``,
which the controller handles once per token. The Job's name comes from the token, so asking twice
with the same token creates one Job however often the request is repeated or retried.
The CronJob's concurrencyPolicy holds: Forbid refuses while a Job runs, Replace deletes it first.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tablerefresh.controller.conditions import format_time
from tablerefresh.controller.kube import TIMEOUT, Kube, KubeError, _error
from tablerefresh.controller.naming import NAME_LABEL, cronjob_name, name_label_value

ANNOTATION = "tablerefresh.dev/run-now"
TOKEN_ANNOTATION = "tablerefresh.dev/run-now-token"
# What `kubectl create job --from=cronjob/...` and the CronJob controller's manual runs carry.
INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"


class RunNowRefused(Exception):
    """The CronJob's concurrencyPolicy forbids a run now; the message names the running Job."""


@dataclass(frozen=True)
class Decision:
    create: bool
    delete: list[str]
    reason: str


def job_name(cronjob: str, token: str, purpose: str = "now") -> str:
    """<cronjob>-<purpose>-<hash of token>: at most 63 characters (CronJob names are kept to 52)."""
    suffix = f"-{purpose[:3]}-{hashlib.sha256(token.encode()).hexdigest()[:6]}"
    return cronjob + suffix


def is_active(job: Mapping[str, Any]) -> bool:
    """Neither complete nor failed yet."""
    conditions = job.get("status", {}).get("conditions") or []
    return not any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def decide(policy: str, jobs: Sequence[Mapping[str, Any]]) -> Decision:
    """What the CronJob controller would do about a new run, given the Jobs it owns."""
    active = sorted(j["metadata"]["name"] for j in jobs if is_active(j))
    if not active:
        return Decision(True, [], "no Job is running")
    if policy == "Replace":
        return Decision(True, active, f"concurrencyPolicy Replace: replacing {', '.join(active)}")
    return Decision(False, [], f"concurrencyPolicy {policy}: Job {', '.join(active)} is still running")


def job_from_cronjob(
    cronjob: Mapping[str, Any], *, token: str, args: list[str] | None = None, purpose: str = "now"
) -> dict[str, Any]:
    """The Job the CronJob controller would create from this CronJob's template, owned by it.

    ``args`` replaces the container's arguments: a one-off ``dedupe`` runs with the refresh's image,
    environment, credentials and security context, and its own command line.
    """
    meta = cronjob["metadata"]
    template = copy.deepcopy(dict(cronjob["spec"]["jobTemplate"]))
    if args is not None:
        template["spec"]["template"]["spec"]["containers"][0]["args"] = args
    template_meta = template.get("metadata") or {}
    annotations = {
        **(template_meta.get("annotations") or {}),
        INSTANTIATE_ANNOTATION: "manual",
        TOKEN_ANNOTATION: token,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"], token, purpose),
            "namespace": meta["namespace"],
            "labels": dict(template_meta.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }


def new_token(now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%S%fZ}"


class RunNow:
    """The API calls of a run now, on the official client."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._batch = client.BatchV1Api(api_client or client.ApiClient())

    def run(
        self, namespace: str, tablerefresh: str, token: str, *, args: list[str] | None = None, purpose: str = "now"
    ) -> str:
        """Create (or find) the Job for ``token``; returns its name. Raises RunNowRefused or KubeError."""
        cronjob = self._call(
            lambda: self._batch.read_namespaced_cron_job(
                cronjob_name(tablerefresh), namespace, _preload_content=False, _request_timeout=TIMEOUT
            )
        )
        job = job_from_cronjob(cronjob, token=token, args=args, purpose=purpose)
        existing = self._jobs(namespace, tablerefresh)
        if any(j["metadata"]["name"] == job["metadata"]["name"] for j in existing):
            return str(job["metadata"]["name"])  # this token was handled already
        decision = decide(cronjob["spec"].get("concurrencyPolicy", "Forbid"), existing)
        if not decision.create:
            raise RunNowRefused(decision.reason)
        for name in decision.delete:
            self._call(
                lambda name=name: self._batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Background", _preload_content=False, _request_timeout=TIMEOUT
                )
            )
        try:
            self._call(
                lambda: self._batch.create_namespaced_job(
                    namespace,
                    job,  # type: ignore[arg-type]  # the wire JSON, as everywhere in the controller
                    _preload_content=False,
                    _request_timeout=TIMEOUT,
                )
            )
        except KubeError as exc:
            if exc.status != 409:  # 409: created by a concurrent request for the same token
                raise
        return str(job["metadata"]["name"])

    def _jobs(self, namespace: str, tablerefresh: str) -> list[dict[str, Any]]:
        found = self._call(
            lambda: self._batch.list_namespaced_job(
                namespace,
                label_selector=f"{NAME_LABEL}={name_label_value(tablerefresh)}",
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        )
        return list(found.get("items") or [])

    @staticmethod
    def _call(call: Any) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(call().data or b"{}")
            return data
        except ApiException as exc:
            raise _error(exc) from exc


RUN_NOW_MANAGER = "tablerefresh-run-now"


def pending_token(body: Mapping[str, Any]) -> str | None:
    """The annotation's token when it has not been handled yet."""
    token = (body.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    handled = ((body.get("status") or {}).get("runNow") or {}).get("token")
    return str(token) if token and token != handled else None


def handle_annotation(body: Mapping[str, Any], runner: RunNow, kube: Kube, now: datetime | None = None) -> None:
    """Create the Job for a new token, then record the token in status so it is handled once."""
    token = pending_token(body)
    if token is None:
        return
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    record: dict[str, Any] = {"token": token, "requestedAt": format_time(now or datetime.now(UTC))}
    try:
        record["jobName"] = runner.run(namespace, name, token)
        record["message"] = f"created Job {record['jobName']}"
        kube.post_event(body, "Normal", "RunNow", f"run-now {token}: created Job {record['jobName']}")
    except RunNowRefused as exc:
        record["message"] = f"refused: {exc}"
        kube.post_event(body, "Warning", "RunNowRefused", f"run-now {token} refused: {exc}")
    kube.apply_status(namespace, name, {"runNow": record}, manager=RUN_NOW_MANAGER)
