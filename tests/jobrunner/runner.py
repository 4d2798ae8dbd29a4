"""The stand-in for the CronJob controller, the Job controller and the kubelet, on the test control plane.

One thread polls the namespaces it is given (``poll`` seconds apart) and, for each:

- CronJobs (``cron.plan``): starts the Job a due schedule time asks for, on the runner's ``clock``;
- Jobs, as the Job controller: sets ``startTime``, creates the Job's Pod from its template (the
  Job controller's labels and ownerReference; ``nodeName`` the stand-in node, as if scheduled), a new
  one after a failure while ``backoffLimit`` allows (at once: no back-off delay), and writes the
  Job's status from its Pods: ``active``/``ready``/``succeeded``/``failed``, then the conditions
  SuccessCriteriaMet + Complete with ``completionTime``, or FailureTarget + Failed with
  BackoffLimitExceeded or, past ``activeDeadlineSeconds``, DeadlineExceeded (the Pods killed);
- Pods, as the kubelet (``kubelet.PodRun``): runs each new Pod of a Job it owns;
- garbage collection, for what it made only: the Pods of a deleted Job are killed and deleted.

It touches nothing outside its namespaces, so other tests that play these controllers by hand are
left alone.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.jobrunner import cron, statuses
from tests.jobrunner.kubelet import MERGE, PodRun

log = logging.getLogger(__name__)

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"


def _suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def _now() -> datetime:
    return datetime.now(UTC)


class JobRunner:
    def __init__(
        self,
        api_client: client.ApiClient,
        namespaces: list[str],
        directory: Path,
        *,
        commands: Mapping[str, str] | None = None,
        clock: cron.Clock | None = None,
        poll: float = 0.1,
    ) -> None:
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._batch = client.BatchV1Api(api_client)
        self.namespaces = list(namespaces)
        self.directory = directory
        self.commands = dict(commands or {})
        self.clock = clock or cron.Clock()
        self._poll = poll
        self.pods: dict[tuple[str, str], PodRun] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._passes = 0  # whole passes over every namespace, counted under _passed
        self._passed = threading.Condition()
        self.errors: list[BaseException] = []
        self.skipped: list[str] = []  # CronJob runs not started, and why

    # Life.

    def start(self) -> JobRunner:
        self._thread = threading.Thread(target=self._loop, name="job runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        for run in self.pods.values():
            run.kill("the runner stopped")
        for run in self.pods.values():
            run.join(30)

    def poke(self) -> None:
        """Look now rather than at the next poll (after moving the clock, say)."""
        self._wake.set()

    def look(self, timeout: float = 30.0) -> None:
        """Return once a whole pass has run that started after this call: what the runner would do
        now (after moving the clock, say) is done, the signal a test waits on before asserting that
        nothing started."""
        with self._passed:
            wanted = self._passes + 2  # the pass under way may have started before the call
        self.poke()
        with self._passed:
            if not self._passed.wait_for(lambda: self._passes >= wanted, timeout):
                raise TimeoutError(f"the job runner made no whole pass in {timeout}s")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for namespace in self.namespaces:
                    self._sync(namespace)
            except Exception as exc:  # kept for the test to see; the loop goes on
                log.exception("job runner")
                self.errors.append(exc)
            with self._passed:
                self._passes += 1
                self._passed.notify_all()
            self._wake.wait(self._poll)
            self._wake.clear()

    # One pass.

    def _list(self, call: Any, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(call(namespace, _preload_content=False).data)["items"]
        return items

    def _sync(self, namespace: str) -> None:
        cronjobs = self._list(self._batch.list_namespaced_cron_job, namespace)
        jobs = self._list(self._batch.list_namespaced_job, namespace)
        for cronjob in cronjobs:
            self._cronjob(cronjob, jobs)
        jobs = self._list(self._batch.list_namespaced_job, namespace)
        pods = self._list(self._core.list_namespaced_pod, namespace)
        uids = {j["metadata"]["uid"] for j in jobs}
        for job in jobs:
            mine = [
                p for p in pods if (p["metadata"].get("labels") or {}).get(CONTROLLER_UID) == job["metadata"]["uid"]
            ]
            self._job(job, mine)
        for pod in pods:  # garbage collection of the Pods of deleted Jobs
            owner = (pod["metadata"].get("labels") or {}).get(CONTROLLER_UID)
            if owner is not None and owner not in uids:
                self._delete_pod(pod)

    def _cronjob(self, cronjob: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        decided = cron.plan(cronjob, jobs, self.clock.now())
        for name in decided.delete:
            self._delete_job(cronjob["metadata"]["namespace"], name)
        if decided.create is not None:
            try:
                self._batch.create_namespaced_job(
                    cronjob["metadata"]["namespace"], decided.create, _preload_content=False
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
        if decided.skipped:
            self.skipped.append(f"{cronjob['metadata']['name']}: {decided.skipped}")
        current = cronjob.get("status") or {}
        if any(current.get(k) != v for k, v in decided.status.items()):
            self._batch.patch_namespaced_cron_job_status(
                cronjob["metadata"]["name"],
                cronjob["metadata"]["namespace"],
                {"status": decided.status},
                _content_type=MERGE,
                _preload_content=False,
            )

    def _job(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        if cron.finished(job) is not None:
            return
        meta, spec = job["metadata"], job["spec"]
        now = _now()
        status = statuses.job_status(job.get("status") or {}, pods, now)
        started = statuses.parse(status["startTime"])
        deadline = spec.get("activeDeadlineSeconds")
        end: list[dict[str, Any]] = []
        if status.get("succeeded", 0) >= int(spec.get("completions") or 1):
            end = [
                statuses.job_condition(
                    "SuccessCriteriaMet", now, "CompletionsReached", "Reached expected number of succeeded pods"
                ),
                statuses.job_condition(
                    "Complete", now, "CompletionsReached", "Reached expected number of succeeded pods"
                ),
            ]
            status["completionTime"] = statuses.stamp(now)
        elif status.get("failed", 0) > int(spec.get("backoffLimit", 6)):
            message = "Job has reached the specified backoff limit"
            end = [
                statuses.job_condition("FailureTarget", now, "BackoffLimitExceeded", message),
                statuses.job_condition("Failed", now, "BackoffLimitExceeded", message),
            ]
        elif deadline is not None and started is not None and (now - started).total_seconds() > float(deadline):
            for pod in pods:
                self._kill(pod, "DeadlineExceeded")
            message = "Job was active longer than specified deadline"
            end = [
                statuses.job_condition("FailureTarget", now, "DeadlineExceeded", message),
                statuses.job_condition("Failed", now, "DeadlineExceeded", message),
            ]
        elif status["active"] == 0 and not spec.get("suspend"):
            self._create_pod(job)
            status["active"] = 1
        if end:
            status.update(conditions=end, active=0, ready=0)
        current = job.get("status") or {}
        if any(current.get(k) != v for k, v in status.items()):
            self._batch.patch_namespaced_job_status(
                meta["name"], meta["namespace"], {"status": status}, _content_type=MERGE, _preload_content=False
            )

    # Pods.

    def _create_pod(self, job: Mapping[str, Any]) -> None:
        meta, template = job["metadata"], job["spec"]["template"]
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            CONTROLLER_UID: meta["uid"],
            JOB_NAME: meta["name"],
            "controller-uid": meta["uid"],
            "job-name": meta["name"],
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{_suffix()}",
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": statuses.NODE},
        }
        created: dict[str, Any] = json.loads(
            self._core.create_namespaced_pod(meta["namespace"], pod, _preload_content=False).data
        )
        key = (str(meta["namespace"]), str(created["metadata"]["name"]))
        directory = self.directory / key[0] / key[1]
        self.pods[key] = PodRun(self._api, created, directory, self.commands, self.poke).start()

    def _kill(self, pod: Mapping[str, Any], reason: str) -> None:
        run = self.pods.get((str(pod["metadata"]["namespace"]), str(pod["metadata"]["name"])))
        if run is not None:
            run.kill(reason)
            run.join(30)

    def _delete_pod(self, pod: Mapping[str, Any]) -> None:
        self._kill(pod, "deleted")
        try:
            self._core.delete_namespaced_pod(
                pod["metadata"]["name"], pod["metadata"]["namespace"], _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _delete_job(self, namespace: str, name: str) -> None:
        try:
            self._batch.delete_namespaced_job(name, namespace, propagation_policy="Background", _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # For the tests.

    def runs_of(self, namespace: str, job: str) -> list[PodRun]:
        return [
            run
            for (ns, _), run in self.pods.items()
            if ns == namespace and run.pod["metadata"]["labels"].get(JOB_NAME) == job
        ]
