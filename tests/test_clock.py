"""The controller's one clock: made at start-up, passed down, read by nothing else. Pure unit tests on a
clock the test sets (no sleeping): every time the controller writes is the clock's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tablerefresh.controller.clock import SYSTEM_CLOCK
from tablerefresh.controller.policy.checks import check_of
from tablerefresh.controller.policy.jobs import new_token
from tablerefresh.controller.runtime.controller import Controller
from tests.controller_fakes import FakeClock, FakeKube, tr_body

NOW = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)  # no test could run then by accident


def test_every_time_the_controller_writes_is_its_clocks() -> None:
    async def scenario() -> None:
        clock = FakeClock(NOW)
        kube = FakeKube()
        kube.secrets.clear()  # no Secret: the health check fails on the credentials, nothing connects
        controller = Controller(kube, clock=clock)
        body = tr_body()
        controller.seen(body)
        await controller.reconcile(body, trigger="create")
        written = {c["lastTransitionTime"] for s in kube.statuses for c in s.get("conditions") or []}
        assert written == {"2031-05-06T07:08:09Z"}

        clock.advance(60)
        annotated = {**body, "metadata": {**body["metadata"], "annotations": {"tablerefresh.dev/run-now": "t"}}}
        controller.seen(annotated)
        await controller.run_now(annotated)
        assert kube.statuses[-1]["runNow"]["requestedAt"] == "2031-05-06T07:09:09Z"

        check = check_of(body)
        assert check is not None
        assert controller.prober(check).checked_at == NOW + timedelta(seconds=60)
        assert controller._timed_out(check, 5).checked_at == NOW + timedelta(seconds=60)

    asyncio.run(scenario())


def test_the_scheduler_measures_intervals_on_the_same_clock() -> None:
    async def scenario() -> None:
        clock = FakeClock(NOW)
        controller = Controller(FakeKube(), clock=clock)
        assert controller.health._clock() == 0.0
        clock.advance(42.5)
        assert controller.health._clock() == 42.5
        assert controller.writer._clock is clock and controller.prober._clock is clock

    asyncio.run(scenario())


def test_a_run_now_token_is_the_callers_time_not_policys() -> None:
    assert new_token(NOW) == "20310506T070809123456Z"
    assert new_token(NOW.astimezone()) == new_token(NOW)  # the same moment in any zone
    assert new_token(NOW + timedelta(microseconds=1)) != new_token(NOW)


def test_the_system_clock_is_utc_and_monotonic() -> None:
    assert SYSTEM_CLOCK.now().tzinfo is UTC
    first = SYSTEM_CLOCK.monotonic()
    assert SYSTEM_CLOCK.monotonic() >= first
