"""When health checks run and how many at once (runtime.scheduler), on fake targets and probes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from tablerefresh.controller.runtime.scheduler import Due, Scheduler
from tests import virtual_time
from tests.virtual_time import VirtualTimeLoop

# On a virtual clock: probes "take" virtual seconds, so the counts below are exact however loaded
# the machine is.


class Target:
    def __init__(self, name: str, server: str = "a", interval: float = 0.05) -> None:
        self.key = ("ns", name)
        self.generation = 1
        self.interval = interval
        self.server = server
        self.due = Due()  # what a record keeps for the scheduler


def run_scheduler(
    targets: list[Target], probe: Callable[[VirtualTimeLoop, Target], Any], seconds: float, **options: Any
) -> tuple[list[tuple[str, Any]], Scheduler[Target, Any]]:
    recorded: list[tuple[str, Any]] = []

    async def record(target: Target, result: Any) -> None:
        recorded.append((target.key[1], result))

    async def main(loop: VirtualTimeLoop) -> Scheduler[Target, Any]:
        scheduler: Scheduler[Target, Any] = Scheduler(
            lambda: [(t, t.due) for t in targets],
            lambda target: probe(loop, target),
            record,
            lambda t, s: f"timeout after {s}",
            max_sleep=0.02,
            clock=loop.time,
            **options,
        )
        task = asyncio.create_task(scheduler.run_forever())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return scheduler

    return recorded, virtual_time.run(main)


class Gauge:
    """Counts probes running at once, in all and per key."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def __call__(self, loop: VirtualTimeLoop, target: Target) -> str:
        for label in ("all", target.key[1], f"server {target.server}"):
            with self.lock:
                self.now[label] = self.now.get(label, 0) + 1
                self.peak[label] = max(self.peak.get(label, 0), self.now[label])
        loop.sleep_in_thread(self.seconds)
        for label in ("all", target.key[1], f"server {target.server}"):
            with self.lock:
                self.now[label] -= 1
        return "ok"


def test_concurrency_is_bounded_and_checks_never_pile_up() -> None:
    """Probes slower than the interval: each object still has one in flight, at most 3 run at once."""
    gauge = Gauge(0.1)
    targets = [Target(f"o{i}", server=f"s{i % 3}", interval=0.01) for i in range(9)]
    recorded, scheduler = run_scheduler(targets, gauge, 0.8, concurrency=3, per_server=3)
    assert gauge.peak["all"] == 3
    assert all(gauge.peak[t.key[1]] == 1 for t in targets)
    assert len(recorded) >= 9 and scheduler.in_flight() == 0


def test_a_slow_server_delays_only_its_own_objects() -> None:
    def probe(loop: VirtualTimeLoop, target: Target) -> str:
        loop.sleep_in_thread(0.5 if target.server == "slow" else 0.005)
        return "ok"

    slow = [Target(f"slow{i}", server="slow") for i in range(6)]
    fast = [Target(f"fast{i}", server="fast", interval=0.02) for i in range(3)]
    recorded, _ = run_scheduler([*slow, *fast], probe, 0.6, concurrency=4)  # per server: half of 4
    counts = {name: sum(1 for n, _ in recorded if n == name) for name in [t.key[1] for t in slow + fast]}
    assert all(counts[t.key[1]] >= 5 for t in fast), counts  # kept their cadence
    assert sum(counts[t.key[1]] for t in slow) <= 2, counts  # two slots for the slow server


def test_a_check_past_its_timeout_is_reported_and_keeps_its_slot_until_it_ends() -> None:
    gauge = Gauge(0.4)
    targets = [Target("hung", interval=0.01), Target("other", server="b", interval=0.01)]
    recorded, _ = run_scheduler(targets, gauge, 0.6, concurrency=2, timeout=0.1)
    hung = [r for n, r in recorded if n == "hung"]
    assert hung[0] == "timeout after 0.1"  # at the deadline, not when the probe returned
    assert gauge.peak["hung"] == 1  # the timed-out thread was not joined by a second one
    assert gauge.peak["all"] <= 2


def test_a_new_generation_is_checked_at_once() -> None:
    calls: list[int] = []
    target = Target("o", interval=60)

    def probe(t: Target) -> str:
        calls.append(t.generation)
        return "ok"

    async def main(loop: VirtualTimeLoop) -> None:
        async def record(t: Target, r: Any) -> None:
            pass

        scheduler: Scheduler[Target, Any] = Scheduler(
            lambda: [(target, target.due)], probe, record, lambda t, s: "x", clock=loop.time
        )
        task = asyncio.create_task(scheduler.run_forever())
        await asyncio.sleep(0.1)
        target.generation = 2
        scheduler.poke()
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    virtual_time.run(main)
    assert calls == [1, 2]


def test_a_check_asked_for_runs_at_once_and_again_after_one_in_flight() -> None:
    """An hour's interval: only ``check_now`` can start the second and third checks. The third is
    asked for while the second is in flight (it may have read what just changed), so it follows it."""
    started: list[float] = []
    target = Target("o", interval=3600)

    async def main(loop: VirtualTimeLoop) -> None:
        def probe(t: Target) -> str:
            started.append(loop.time())
            loop.sleep_in_thread(0.5)
            return "ok"

        async def record(t: Target, r: Any) -> None:
            pass

        scheduler: Scheduler[Target, Any] = Scheduler(
            lambda: [(target, target.due)], probe, record, lambda t, s: "x", clock=loop.time
        )
        task = asyncio.create_task(scheduler.run_forever())
        await asyncio.sleep(1.0)  # the first check, at once, and done
        scheduler.check_now(target.due)
        await asyncio.sleep(0.1)  # the second is in flight
        scheduler.check_now(target.due)
        await asyncio.sleep(2.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    virtual_time.run(main)
    assert len(started) == 3, started
    first, second, third = started
    assert second - first < 1.2 and third - second >= 0.5  # asked for, and not while the other ran
