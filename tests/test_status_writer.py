"""The status writer (runtime.status_writer) on a fake API: every source's writes go through it."""

from __future__ import annotations

from datetime import timedelta

from tablerefresh.controller.policy.status import HEALTH_CHECK, RECONCILER, Observation
from tablerefresh.controller.runtime.status_writer import StatusMemory, StatusWriter
from tests.controller_fakes import T0, FakeClock, FakeKube, cond, tr_body


def health(status: str) -> list[Observation]:
    return [Observation("ClickHouseReachable", "True", "Reachable", "ok"), Observation("Fresh", status, "R", "m")]


def test_the_writer_recomputes_ready_from_every_writer_and_posts_each_event_once() -> None:
    kube = FakeKube()
    writer = StatusWriter(kube, clock=FakeClock(T0, step=timedelta(seconds=1)))
    body = tr_body()
    # The reconciler has written CronJobReady=False; the watch has not delivered it yet.
    applied = {"conditions": [cond("CronJobReady", "False") | {"reason": "ApplyFailed"}]}
    memory = StatusMemory(applied={RECONCILER.name: (-1, applied)})

    def write(fields: dict[str, object], conditions: list[Observation]) -> object:
        return writer.write(memory, body, HEALTH_CHECK, fields, conditions)

    assert write({"health": {"totalRows": 1}}, health("False")) is not None
    manager, status = kube.applied[-1]
    assert manager == "tablerefresh-health"
    assert [c["type"] for c in status["conditions"]] == ["ClickHouseReachable", "Fresh", "Ready"]
    assert status["conditions"][-1]["reason"] == "ApplyFailed"  # the other writer's condition counts
    assert [e[1] for e in kube.events] == ["DataStale"]

    write({"health": {"totalRows": 1}}, health("False"))
    assert len(kube.applied) == 1 and len(kube.events) == 1  # nothing new: no write, no Event
    write({"health": {"totalRows": 1}}, health("Unknown"))
    write({"health": {"totalRows": 1}}, health("False"))
    assert [e[1] for e in kube.events] == ["DataStale"]  # back from Unknown to False is no news
    write({"health": {"totalRows": 2}}, health("True"))
    assert [e[1] for e in kube.events] == ["DataStale", "DataFresh"]
    fresh = next(c for c in writer.current(memory, {})["conditions"] if c["type"] == "Fresh")
    assert fresh["lastTransitionTime"] == "2026-01-01T12:00:04Z"

    kube.gone = True
    assert write({"health": {"totalRows": 3}}, health("True")) is None
