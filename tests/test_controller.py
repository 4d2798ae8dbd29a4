"""The controller at run time, on a fake API: per-object records, the triggers, and the kopf wiring."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kopf
import pytest
from prometheus_client import REGISTRY

from tablerefresh.controller.policy.jobs import jobs_of
from tablerefresh.controller.runtime.controller import Controller
from tablerefresh.controller.runtime.diffbase import DigestDiffBaseStorage
from tablerefresh.controller.runtime.scope import Scope, ScopeError, resolve_scope
from tablerefresh.controller.runtime.settings import operator_settings
from tests.controller_fakes import CRONJOB_UID, UID, FakeKube, job, tr_body

# Records.


def series(name: str, **labels: str) -> float | None:
    value: float | None = REGISTRY.get_sample_value(
        name, {"namespace": "ns", "name": "trades", "table": "trades", **labels}
    )
    return value


def test_a_record_is_made_on_first_sight_and_dropped_with_everything_it_held() -> None:
    async def scenario() -> None:
        controller = Controller(FakeKube())
        await controller.job_changed("ADDED", job("trades-1"))  # its Job is listed before it
        assert list(controller.unclaimed_jobs) == [("ns", "trades")]
        body = tr_body()
        body["spec"]["clickhouse"]["settings"] = {"max_memory_usage": "8000000000"}
        record = controller.seen(body)
        assert controller.records == {("ns", "trades"): record}
        assert list(record.jobs) == ["trades-1"] and controller.unclaimed_jobs == {}  # it took its Job
        await controller.reconcile(body, trigger="create")
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))  # its runs
        assert record.cronjob_version == "1" and record.check is not None
        assert {"reconcile", "runs"} <= set(record.status.applied)
        assert series("tablerefresh_runs_total", result="failed") == 0
        assert series("tablerefresh_memory_limit_bytes") == 8_000_000_000  # the spec's max_memory_usage

        controller.gone(body)
        assert controller.records == {} and controller.unclaimed_jobs == {}
        assert series("tablerefresh_runs_total", result="failed") is None
        assert series("tablerefresh_memory_limit_bytes") is None
        assert series("tablerefresh_condition", type="Ready") is None
        await controller.job_changed("DELETED", job("trades-1"))  # garbage collection takes its Job later
        assert controller.unclaimed_jobs == {}

        # Deleted and created again without the deletion being seen: nothing carries over.
        first = controller.seen(body)
        again = controller.seen({**body, "metadata": {**body["metadata"], "uid": "another-uid"}})
        assert again is not first and controller.records == {("ns", "trades"): again}
        assert again.status.applied == {} and again.cronjob_version is None
        controller.gone(body)
        assert controller.records == {}

    asyncio.run(scenario())


def test_the_watch_keeps_trimmed_jobs_of_the_owner_chain_only() -> None:
    async def scenario() -> None:
        controller = Controller(FakeKube())
        tr = tr_body()
        tr["status"] = {"cronJobRef": {"uid": CRONJOB_UID}}
        record = controller.seen(tr)
        await controller.job_changed("ADDED", {"metadata": {"name": "x", "namespace": "ns"}})  # no CronJob owner
        assert record.jobs == {} and controller.unclaimed_jobs == {}
        await controller.job_changed("ADDED", job("trades-1"))
        assert list(record.jobs) == ["trades-1"]  # found through its CronJob
        stranger = job("trades-2")
        stranger["metadata"]["ownerReferences"][0]["uid"] = "another-cronjob"  # a CronJob of the same name, not ours
        await controller.job_changed("ADDED", stranger)
        relabelled = job("trades-3")
        relabelled["metadata"]["labels"]["tablerefresh.dev/name"] = "other"
        await controller.job_changed("ADDED", relabelled)
        kept = jobs_of(tr, record.jobs.values(), tr["status"])
        assert [j["metadata"]["name"] for j in kept] == ["trades-1"]
        assert "spec" not in kept[0]  # not the pod template with the whole manifest
        await controller.job_changed("DELETED", job("trades-1"))
        assert jobs_of(tr, record.jobs.values(), tr["status"]) == []

    asyncio.run(scenario())


# Triggers.


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


def test_a_secret_that_comes_or_goes_asks_for_a_health_check_at_once() -> None:
    async def scenario() -> None:
        kube = FakeKube()
        del kube.secrets[("ns", "ch")]
        controller = Controller(kube)
        body = tr_body()
        record = controller.seen(body)
        await controller.reconcile(body, trigger="create")
        assert not record.due.asked  # the first look, before any check failed: the new check is due anyway
        await controller.reconcile(body, trigger="resync")
        assert not record.due.asked  # still missing: nothing new to check
        kube.secrets[("ns", "ch")] = {}
        await controller.reconcile(body, trigger="resync")
        assert record.due.asked  # it appeared
        record.due.asked = False
        del kube.secrets[("ns", "ch")]
        await controller.reconcile(body, trigger="resync")
        assert record.due.asked  # it went

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
    assert isinstance(progress, kopf.StatusProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, DigestDiffBaseStorage)
    assert progress.field == ("status", "kopf", "progress")
    assert progress.touch_field == ("status", "kopf", "dummy")
    assert settings.peering.standalone is True


def changing_cause(storage: DigestDiffBaseStorage, body: dict[str, Any]) -> str:
    """What kopf makes of the object with this diff base after a restart, as its DiffBaseStorage
    contract says: nothing stored is a create, a stored essence unlike the current one an update,
    the same one a resume. (That kopf does so on a real API server: test_controller_kube.py.)"""
    old = storage.fetch(body=kopf.Body(body))
    if old is None:
        return "create"
    return "resume" if old == storage.build(body=kopf.Body(body)) else "update"


def handled(storage: DigestDiffBaseStorage, body: dict[str, Any]) -> dict[str, Any]:
    """The object once kopf has stored its diff base (the status patch applied)."""
    patch = kopf.Patch()
    storage.store(body=kopf.Body(body), patch=patch, essence=storage.build(body=kopf.Body(body)))
    kopf_status = {
        k: v for k, v in {**body.get("status", {}).get("kopf", {}), **patch["status"]["kopf"]}.items() if v is not None
    }
    return {**body, "status": {**body.get("status", {}), "kopf": kopf_status}}


def test_the_diff_base_is_a_digest_that_tells_spec_changes_from_status_writes() -> None:
    storage = DigestDiffBaseStorage()
    body = tr_body(source={"query": "SELECT " + ", ".join(f"c{i}" for i in range(500))})
    assert changing_cause(storage, body) == "create"  # never handled

    body = handled(storage, body)
    assert set(body["status"]["kopf"]) == {"digest"}
    assert len(json.dumps(body["status"])) < 200  # not a copy of the spec's long query
    assert changing_cause(storage, body) == "resume"  # a restart: no create, no update
    body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    body["status"]["kopf"]["dummy"] = "touched"
    assert changing_cause(storage, body) == "resume"  # a status write is no change

    for changed in (
        {**body, "spec": {**body["spec"], "suspend": True}},
        {**body, "metadata": {**body["metadata"], "labels": {"team": "b"}}},
        {**body, "metadata": {**body["metadata"], "annotations": {"tablerefresh.dev/run-now": "1"}}},
    ):
        assert changing_cause(storage, changed) == "update"
        assert changing_cause(storage, handled(storage, changed)) == "resume"


def test_an_object_handled_with_the_whole_spec_in_status_is_updated_once_and_loses_it() -> None:
    storage = DigestDiffBaseStorage()
    body = tr_body()
    legacy = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    patch = kopf.Patch()
    legacy.store(body=kopf.Body(body), patch=patch, essence=legacy.build(body=kopf.Body(body)))
    body = {**body, "status": patch["status"]}
    assert changing_cause(storage, body) == "update"  # not a create
    body = handled(storage, body)
    assert set(body["status"]["kopf"]) == {"digest"}
    assert changing_cause(storage, body) == "resume"




# A dropped object stays dropped.


def dropped_series(name: str) -> float | None:
    value: float | None = REGISTRY.get_sample_value(
        "tablerefresh_condition", {"namespace": "ns", "name": name, "table": "trades", "type": "Ready"}
    )
    return value


def named(name: str) -> dict[str, Any]:
    """A TableRefresh of its own name (the metrics registry is the process's), Ready already."""
    body = tr_body()
    body["metadata"] = {**body["metadata"], "name": name, "uid": f"uid-{name}"}
    ready = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "x"}
    body["status"] = {"conditions": [ready]}
    return body


def test_a_trigger_holding_an_old_body_never_brings_a_deleted_object_back() -> None:
    """The resync and run-now hold bodies taken before the delete: they find no record and do nothing."""

    async def scenario() -> FakeKube:
        kube = FakeKube()
        controller = Controller(kube)
        body = named("resynced")
        controller.seen(body)
        controller.gone(body)
        await controller.reconcile(body, trigger="resync")
        annotated = {**body, "metadata": {**body["metadata"], "annotations": {"tablerefresh.dev/run-now": "1"}}}
        await controller.run_now(annotated)
        assert controller.records == {}
        assert dropped_series("resynced") is None
        return kube

    kube = asyncio.run(scenario())
    assert kube.applies == 0 and kube.statuses == [] and kube.jobs == {}


def test_a_reconcile_that_ends_after_the_delete_publishes_no_series() -> None:
    """The object goes while its reconcile runs: the series removed by the delete stay removed."""

    class DeletedDuringApply(FakeKube):
        def apply_cronjob(self, body: Any) -> dict[str, Any]:
            controller.gone(named("raced"))  # the watch's DELETED, while the worker thread applies
            return super().apply_cronjob(body)

    controller = Controller(DeletedDuringApply())

    async def scenario() -> None:
        body = named("raced")
        controller.seen(body)
        assert dropped_series("raced") is not None
        await controller.reconcile(body, trigger="create")
        assert controller.records == {}
        assert dropped_series("raced") is None

    asyncio.run(scenario())
