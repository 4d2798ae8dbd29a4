"""Who owns what (policy.owners), and that every part of the controller asks it: pure unit tests."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from tablerefresh.controller.policy.cronjob import cronjob_name, render_cronjob
from tablerefresh.controller.policy.jobs import job_from_cronjob, jobs_of
from tablerefresh.controller.policy.owners import Owner, being_deleted, controlled_by, owner_of
from tablerefresh.controller.runtime.controller import Controller
from tablerefresh.spec import parse_manifest
from tests.controller_fakes import CRONJOB_UID, UID, FakeKube, job, tr_body


def rendered(body: dict[str, Any]) -> dict[str, Any]:
    """The CronJob the controller renders for ``body``, as the API server returns it (with a uid)."""
    cronjob = render_cronjob(parse_manifest(body), owner_uid=body["metadata"]["uid"])
    cronjob["metadata"]["uid"] = CRONJOB_UID
    return cronjob


def test_a_cronjobs_owner_is_its_tablerefresh_and_a_jobs_is_its_cronjob() -> None:
    body = tr_body()
    cronjob = rendered(body)
    assert owner_of(cronjob) == Owner("ns", "TableRefresh", "trades", UID)
    assert owner_of(cronjob).is_tablerefresh and owner_of(cronjob).key == ("ns", "trades")  # type: ignore[union-attr]
    made = job_from_cronjob(cronjob, token="t")  # run-now's Job, as the CronJob controller makes them
    assert owner_of(made) == Owner("ns", "CronJob", "trades", CRONJOB_UID)
    assert owner_of(made).is_cronjob  # type: ignore[union-attr]


def test_only_the_controller_reference_counts() -> None:
    assert owner_of(None) is None
    assert owner_of({"metadata": {"name": "x"}}) is None
    merely_owned = {"metadata": {"namespace": "ns", "ownerReferences": [{"kind": "CronJob", "name": "a", "uid": "u"}]}}
    assert owner_of(merely_owned) is None
    both = copy.deepcopy(merely_owned)
    both["metadata"]["ownerReferences"].append({"kind": "Deployment", "name": "d", "uid": "d-uid", "controller": True})
    assert owner_of(both) == Owner("ns", "Deployment", "d", "d-uid")


def test_control_is_proved_by_uid_never_by_name() -> None:
    mine = job("trades-1")
    assert controlled_by(mine, CRONJOB_UID)
    assert not controlled_by(mine, "another-cronjob")
    assert not controlled_by(mine, None)  # a CronJob not read yet proves nothing
    assert not controlled_by({"metadata": {"name": "x"}}, CRONJOB_UID)
    # jobs_of asks the same question: the Job of a CronJob of the same name is not ours.
    stranger = job("trades-2")
    stranger["metadata"]["ownerReferences"][0]["uid"] = "another-cronjob"
    status = {"cronJobRef": {"uid": CRONJOB_UID}}
    assert [j["metadata"]["name"] for j in jobs_of(tr_body(), [mine, stranger], status)] == ["trades-1"]


def test_being_deleted_is_a_deletion_timestamp() -> None:
    body = tr_body()
    assert not being_deleted(body)
    assert being_deleted({**body, "metadata": {**body["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert not being_deleted({})


def test_a_job_finds_its_record_through_its_cronjob_even_when_the_name_was_shortened() -> None:
    long_name = "trades-" + "x" * 80
    body = tr_body()
    body["metadata"]["name"] = long_name
    cronjob = cronjob_name(long_name)
    assert cronjob != long_name  # shortened: the Job's owner reference names the CronJob, not the TableRefresh

    async def scenario() -> None:
        controller = Controller(FakeKube())
        record = controller.seen(body)
        theirs = job("long-1")
        theirs["metadata"]["ownerReferences"][0]["name"] = cronjob
        await controller.job_changed("ADDED", theirs)
        assert list(record.jobs) == ["long-1"] and controller.unclaimed_jobs == {}
        controller.gone(body)
        await controller.job_changed("ADDED", job("long-2") | {"metadata": {**theirs["metadata"], "name": "long-2"}})
        assert list(controller.unclaimed_jobs) == [("ns", cronjob)]  # its record is gone: kept aside

    asyncio.run(scenario())
