"""What the controller tests without an API server share: a TableRefresh body, and a fake ``Kube``
that holds objects in memory and records every write."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tablerefresh.controller.kube import KubeError
from tablerefresh.controller.policy.admission import CREDENTIALS_LABEL
from tablerefresh.dataplane.run.runs import RunRecord

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """The controller's clock (``controller.clock.Clock``) as a test sets it: ``now()`` says ``at``,
    then moves on by ``step``; ``advance`` moves both sides."""

    def __init__(self, at: datetime = T0, step: timedelta = timedelta(0)) -> None:
        self.at, self.step, self.seconds = at, step, 0.0

    def now(self) -> datetime:
        at = self.at
        self.at += self.step
        return at

    def monotonic(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
        self.seconds += seconds
UID = "0f0e0d0c-0000-4000-8000-000000000001"


def tr_body(**spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedule": "15 */6 * * *",
        "clickhouse": {"url": "clickhouse://ch.analytics.svc:8123", "credentialsSecret": {"name": "ch"}},
        "target": {"table": "trades"},
        "slice": {"predicate": "ts >= {window_start:DateTime}"},
        "source": {"query": "SELECT 1"},
        "uniqueKey": ["id"],
        "freshnessColumn": "ts",
    }
    spec.update(spec_changes)
    return {
        "apiVersion": "tablerefresh.dev/v1alpha1",
        "kind": "TableRefresh",
        "metadata": {
            "name": "trades",
            "namespace": "ns",
            "uid": UID,
            "generation": 3,
            "labels": {"app.kubernetes.io/instance": "argo"},
        },
        "spec": spec,
    }


class FakeKube:
    """Every call of ``Kube``: CronJobs, Secrets, Pods, Jobs and TableRefresh objects in memory;
    status writes and Events recorded."""

    def __init__(self) -> None:
        self.cronjobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {("ns", "ch"): {}}
        # Each Secret's metadata; one not listed here opted in (labelled) as the tests' Secrets do.
        self.secret_meta: dict[tuple[str, str], dict[str, Any]] = {}
        self.tablerefreshes: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}  # by Job name
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.applied: list[tuple[str, dict[str, Any]]] = []  # (field manager, status)
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self.listed: list[str] = []  # Pod label selectors asked for
        self.applies = 0
        self.apply_error: KubeError | None = None
        self.gone = False  # the TableRefresh was deleted: status writes answer 404

    def get_tablerefresh(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.tablerefreshes.get((namespace, name))

    def apply_status(self, namespace: str, name: str, status: Mapping[str, Any], manager: str = "tablerefresh") -> None:
        if self.gone:
            raise KubeError(404, "not found")
        self.statuses.append(copy.deepcopy(dict(status)))
        self.applied.append((manager, copy.deepcopy(dict(status))))

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.cronjobs.get((namespace, name)))

    def apply_cronjob(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.apply_error:
            raise self.apply_error
        self.applies += 1
        applied = copy.deepcopy(dict(body))
        applied["metadata"]["uid"] = "cj-uid"
        applied["metadata"]["resourceVersion"] = str(self.applies)
        applied["metadata"]["managedFields"] = [{"manager": "tablerefresh", "operation": "Apply"}]
        applied["status"] = {"lastScheduleTime": "2026-01-01T06:15:00Z"}
        self.cronjobs[(body["metadata"]["namespace"], body["metadata"]["name"])] = applied
        return copy.deepcopy(applied)

    def secret_metadata(self, namespace: str, name: str) -> dict[str, Any] | None:
        if (namespace, name) not in self.secrets:
            return None
        return copy.deepcopy(self.secret_meta.get((namespace, name), {"labels": {CREDENTIALS_LABEL: "true"}}))

    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        meta = self.secret_metadata(namespace, name)
        return None if meta is None else (meta, dict(self.secrets[(namespace, name)]))

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.listed.append(label_selector)
        return self.pods.get(label_selector.split("=")[1], [])

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        key, _, value = label_selector.partition("=")
        return [
            copy.deepcopy(j)
            for (ns, _), j in self.jobs.items()
            if ns == namespace and (j["metadata"].get("labels") or {}).get(key) == value
        ]

    def create_job(self, body: Mapping[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.jobs:
            raise KubeError(409, "already exists")
        self.jobs[key] = copy.deepcopy(dict(body))

    def delete_job(self, namespace: str, name: str) -> None:
        self.jobs.pop((namespace, name), None)


def cond(type_: str, status: str, message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": "R", "message": message}


CRONJOB_UID = "cj-uid"


def job(name: str, *, end: str | None = None, at: datetime = T0, reason: str = "", message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": stamp(at - timedelta(seconds=60))}
    if end == "Complete":
        status |= {"completionTime": stamp(at), "conditions": [{"type": "Complete", "status": "True"}]}
    elif end == "Failed":
        failed = {"type": "Failed", "status": "True", "lastTransitionTime": stamp(at), "reason": reason}
        status["conditions"] = [{"type": "FailureTarget", "status": "True"}, failed | {"message": message}]
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": {"app.kubernetes.io/managed-by": "tablerefresh", "tablerefresh.dev/name": "trades"},
            "ownerReferences": [{"kind": "CronJob", "name": "trades", "uid": CRONJOB_UID, "controller": True}],
        },
        "spec": {"template": {"spec": {"containers": [{"env": ["the whole manifest"]}]}}},
        "status": status,
    }


def pod(container: dict[str, Any], created: str = "2026-01-01T11:59:00Z") -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "refresh", **container}]},
    }


def terminated(exit_code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {"state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}}


def summary_line(**fields: Any) -> str:
    return RunRecord(
        run_id="trades-1", target="db.trades", strategy="ReplacePartitions", started_at=T0, **fields
    ).summary_line()


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
