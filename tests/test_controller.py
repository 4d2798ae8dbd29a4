"""The controller without an API server: conditions, outcomes, the reconcile loop on a fake Kube."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from tablerefresh.controller.conditions import Observation, merge, settle, summarize_ready
from tablerefresh.controller.handlers import register
from tablerefresh.controller.kube import KubeError
from tablerefresh.controller.outcome import Facts, Secret, decide, needs_write
from tablerefresh.controller.reconcile import Reconciler, foreign_owner
from tablerefresh.controller.run import Scope, ScopeError, resolve_scope
from tablerefresh.controller.runtime import Controller
from tablerefresh.controller.settings import operator_settings

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
UID = "0f0e0d0c-0000-4000-8000-000000000001"


def tr_body(**spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedule": "15 */6 * * *",
        "clickhouse": {"url": "clickhouse://ch:8123", "credentialsSecret": {"name": "ch"}},
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
    """Records calls; holds CronJobs, Secrets, TableRefresh status and Events in memory."""

    def __init__(self) -> None:
        self.cronjobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: set[tuple[str, str]] = {("ns", "ch")}
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.applies = 0
        self.apply_error: KubeError | None = None
        self.tablerefreshes: dict[tuple[str, str], dict[str, Any]] = {}

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

    def secret_exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.secrets

    def get_tablerefresh(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.tablerefreshes.get((namespace, name))

    def apply_status(self, namespace: str, name: str, status: Mapping[str, Any], manager: str = "tablerefresh") -> None:
        self.statuses.append(copy.deepcopy(dict(status)))

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == type_)
    return found


# Conditions.


def test_last_transition_time_moves_only_on_a_status_change() -> None:
    first = settle(Observation("X", "True", "Ok", "fine"), None, generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    same = settle(Observation("X", "True", "StillOk", "fine"), first, generation=2, now=later)
    flipped = settle(Observation("X", "False", "Bad", "broken"), first, generation=2, now=later)
    assert first["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert same["lastTransitionTime"] == first["lastTransitionTime"]
    assert (same["reason"], same["observedGeneration"]) == ("StillOk", 2)
    assert flipped["lastTransitionTime"] == "2026-01-01T12:05:00Z"


def test_ready_summarizes_false_before_unknown_before_true() -> None:
    def c(type_: str, status: str, reason: str = "R") -> dict[str, str]:
        return {"type": type_, "status": status, "reason": reason, "message": type_}

    assert summarize_ready([c("CronJobReady", "True"), c("CredentialsFound", "True")]).status == "True"
    assert summarize_ready([c("CronJobReady", "True"), c("Fresh", "False", "DataStale")]).reason == "DataStale"
    assert summarize_ready([c("CronJobReady", "Unknown"), c("Fresh", "False", "DataStale")]).status == "False"
    assert summarize_ready([c("CronJobReady", "Unknown")]).status == "Unknown"
    assert summarize_ready([c("SomethingElse", "False")]).status == "Unknown"  # not an input of Ready


def test_merge_returns_the_writers_conditions_and_ready_only() -> None:
    others = [{"type": "Fresh", "status": "False", "reason": "DataStale", "message": "old", "lastTransitionTime": "x"}]
    merged = merge(others, [Observation("CronJobReady", "True", "Applied", "ok")], generation=1, now=T0)
    assert [c["type"] for c in merged] == ["CronJobReady", "Ready"]
    assert merged[1]["status"] == "False" and merged[1]["reason"] == "DataStale"


# Outcomes.


def test_applied_and_secret_found_is_ready() -> None:
    facts = Facts(3, "trades", secret=Secret.FOUND, secret_name="ch", created=True, cronjob={"metadata": {}})
    outcome = decide({}, facts, now=T0)
    assert condition(outcome.status, "Ready")["status"] == "True"
    assert outcome.status["observedGeneration"] == 3
    assert [e.reason for e in outcome.events] == ["CronJobCreated"]


def test_missing_secret_is_not_ready_with_a_reason_and_one_warning() -> None:
    facts = Facts(3, "trades", secret=Secret.MISSING, secret_name="ch", cronjob={"metadata": {}})
    outcome = decide({}, facts, now=T0)
    ready = condition(outcome.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "SecretNotFound")]
    again = decide(outcome.status, facts, now=T0 + timedelta(minutes=1))
    assert again.events == []
    assert not needs_write(outcome.status, again.status)
    fixed = decide(outcome.status, Facts(3, "trades", secret=Secret.FOUND, secret_name="ch"), now=T0)
    assert [(e.type, e.reason) for e in fixed.events] == [("Normal", "Recovered")]


def test_invalid_spec_conflict_and_rejected_apply_each_name_their_reason() -> None:
    cases = {
        "InvalidSpec": Facts(1, "t", spec_error="spec.schedule: not a valid cron schedule"),
        "CronJobConflict": Facts(1, "t", conflict="CronJob t is controlled by Deployment x", secret=Secret.FOUND),
        "ApplyFailed": Facts(1, "t", apply_error="spec.timeZone: Invalid value", secret=Secret.FOUND),
    }
    for reason, facts in cases.items():
        outcome = decide({}, facts, now=T0)
        assert condition(outcome.status, "CronJobReady")["reason"] == reason
        assert condition(outcome.status, "Ready")["status"] == "False"
        assert "cronJobRef" not in outcome.status


def test_status_carries_the_cronjob_ref_and_its_last_schedule_time() -> None:
    cronjob = {
        "metadata": {"name": "trades", "namespace": "ns", "uid": "u1"},
        "status": {"lastScheduleTime": "2026-01-01T06:15:00Z"},
    }
    status = decide({}, Facts(2, "trades", secret=Secret.FOUND, cronjob=cronjob), now=T0).status
    assert status["cronJobRef"] == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "trades",
        "namespace": "ns",
        "uid": "u1",
    }
    assert status["lastScheduleTime"] == "2026-01-01T06:15:00Z"


def test_foreign_cronjobs_are_not_taken_over() -> None:
    assert foreign_owner(None, "t") is None
    ours = {"metadata": {"name": "t", "ownerReferences": [{"kind": "TableRefresh", "name": "t", "controller": True}]}}
    assert foreign_owner(ours, "t") is None
    theirs = {"metadata": {"name": "t", "ownerReferences": [{"kind": "Deployment", "name": "x", "controller": True}]}}
    assert "Deployment x" in (foreign_owner(theirs, "t") or "")
    assert foreign_owner({"metadata": {"name": "t"}}, "t") is not None
    stripped = {
        "metadata": {
            "name": "t",
            "labels": {"app.kubernetes.io/managed-by": "tablerefresh"},
            "managedFields": [{"manager": "tablerefresh"}],
        }
    }
    assert foreign_owner(stripped, "t") is None


# The reconcile loop on a fake API.


def test_reconcile_applies_the_cronjob_and_writes_status_once() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, clock=lambda: T0)
    body = tr_body()
    reconciler.reconcile(body)
    cronjob = kube.cronjobs[("ns", "trades")]
    assert cronjob["metadata"]["ownerReferences"][0]["uid"] == UID
    assert "app.kubernetes.io/instance" not in cronjob["metadata"]["labels"]
    (status,) = kube.statuses
    assert status["observedGeneration"] == 3
    assert condition(status, "Ready")["status"] == "True"
    assert kube.events == [("Normal", "CronJobCreated", "Created CronJob trades")]
    # Level-based: the same object again changes nothing but re-applies (a no-op on the server).
    reconciler.reconcile({**body, "status": status})
    assert len(kube.statuses) == 1 and len(kube.events) == 1 and kube.applies == 2


def test_reconcile_uses_what_it_wrote_when_the_watch_lags() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, clock=lambda: T0)
    reconciler.reconcile(tr_body())
    reconciler.reconcile(tr_body())  # status not yet seen on the object
    assert len(kube.statuses) == 1


def test_reconcile_puts_back_a_deleted_cronjob() -> None:
    kube = FakeKube()
    reconciler = Reconciler(kube, clock=lambda: T0)
    reconciler.reconcile(tr_body())
    kube.cronjobs.clear()
    reconciler.reconcile(tr_body())
    assert ("ns", "trades") in kube.cronjobs
    assert [e[1] for e in kube.events] == ["CronJobCreated", "CronJobCreated"]


def test_invalid_spec_applies_nothing() -> None:
    kube = FakeKube()
    Reconciler(kube, clock=lambda: T0).reconcile(tr_body(schedule="61 * * * *"))
    assert kube.applies == 0
    ready = condition(kube.statuses[0], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.schedule" in ready["message"]
    assert kube.events[0][:2] == ("Warning", "InvalidSpec")


def test_missing_secret_still_applies_the_cronjob_but_is_not_ready() -> None:
    kube = FakeKube()
    kube.secrets.clear()
    Reconciler(kube, clock=lambda: T0).reconcile(tr_body())
    assert kube.applies == 1
    assert condition(kube.statuses[0], "Ready")["reason"] == "SecretNotFound"
    assert ("Warning", "SecretNotFound") in [e[:2] for e in kube.events]


def test_rejected_apply_is_a_condition_and_a_transient_one_is_raised() -> None:
    kube = FakeKube()
    kube.apply_error = KubeError(422, 'CronJob.batch "trades" is invalid: spec.timeZone: Invalid value')
    Reconciler(kube, clock=lambda: T0).reconcile(tr_body())
    assert condition(kube.statuses[0], "CronJobReady")["reason"] == "ApplyFailed"
    kube.apply_error = KubeError(503, "unavailable")
    with pytest.raises(KubeError):
        Reconciler(kube, clock=lambda: T0).reconcile(tr_body())


def test_an_object_being_deleted_is_left_to_garbage_collection() -> None:
    kube = FakeKube()
    body = tr_body()
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert Reconciler(kube).reconcile(body) is None
    assert kube.applies == 0 and kube.statuses == []


def test_drift_event_reconciles_the_owner_and_ignores_deletion_by_gc() -> None:
    async def scenario() -> FakeKube:
        kube = FakeKube()
        controller = Controller(kube)
        body = tr_body()
        controller.seen(body)
        owned = {
            "metadata": {
                "name": "trades",
                "namespace": "ns",
                "ownerReferences": [{"kind": "TableRefresh", "name": "trades", "uid": UID, "controller": True}],
            }
        }
        await controller.owned_changed(None, owned)  # initial listing: resume covers it
        assert kube.applies == 0
        await controller.owned_changed("MODIFIED", owned)
        assert kube.applies == 1
        echo = kube.cronjobs[("ns", "trades")]
        await controller.owned_changed("MODIFIED", echo)  # our own apply coming back: nothing to do
        assert kube.applies == 1
        await controller.owned_changed("MODIFIED", {**echo, "metadata": {**echo["metadata"], "resourceVersion": "9"}})
        assert kube.applies == 2  # someone else changed it
        await controller.owned_changed("DELETED", owned)  # the TableRefresh is gone from the API
        assert kube.applies == 2
        kube.tablerefreshes[("ns", "trades")] = body
        await controller.owned_changed("DELETED", owned)  # deleted by hand: put back
        assert kube.applies == 3
        return kube

    asyncio.run(scenario())


# Wiring and settings.


def test_scope_from_flags_or_env() -> None:
    assert resolve_scope(["a", "b", "a"], False, None) == Scope(False, ("a", "b"))
    assert resolve_scope([], True, None) == Scope(True)
    assert resolve_scope([], False, "x, y") == Scope(False, ("x", "y"))
    assert resolve_scope([], False, "*") == Scope(True)
    assert resolve_scope(["a"], False, "*") == Scope(False, ("a",))
    for bad in ((["a"], True, None), ([], False, None), ([], False, " , ")):
        with pytest.raises(ScopeError):
            resolve_scope(*bad)


def test_kopf_keeps_its_state_in_status_not_annotations() -> None:
    settings = operator_settings(standalone=True)
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.StatusProgressStorage)
    assert isinstance(diffbase, kopf.StatusDiffBaseStorage)
    assert progress.field == ("status", "kopf", "progress")
    assert progress.touch_field == ("status", "kopf", "dummy")
    assert diffbase.field == ("status", "kopf", "diffbase")
    assert settings.peering.standalone is True


def test_no_handler_makes_kopf_add_a_finalizer() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, Controller(FakeKube()))
    changing = registry._changing.get_all_handlers()
    assert {h.id for h in changing} == {"reconcile-create", "reconcile-update", "reconcile-resume"}
    assert not any(h.requires_finalizer for h in changing)
    assert list(registry._spawning.get_all_handlers()) == []  # daemons and timers need finalizers
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert watching == {"cache", "drift", "run-now", "runs"}
