"""When health checks run, and how many at once.

- Each object is checked every ``interval`` of its own, and again at once when its spec changes or
  when the caller asks (:meth:`Scheduler.check_now`: the reconciler, when the Secret it names came or went).
- At most one check per object is in flight: a check slower than its interval delays the next one
  instead of piling up behind it.
- At most ``concurrency`` checks run at all, and at most ``per_server`` (half of them by default)
  against one ClickHouse, so a slow server holds no more than its share of the slots and the
  objects on other servers keep being checked. One ClickHouse is one address (``server_key``, the
  resolved one in the operator), so several names of one server share its limit.
- A check that outlives ``timeout`` is reported as such at once; its thread keeps its slots until it
  ends (the probe's socket timeouts see to that), so hung threads can never exceed the limits.

The blocking probe runs in a thread pool of its own, leaving the default one to the reconciler.
What the scheduler remembers of an object (:class:`Due`) is kept by the caller, in the object's
record, and goes with it; the scheduler itself keeps nothing per object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from tablerefresh.controller.policy.cronjob import Key

log = logging.getLogger(__name__)


class Schedulable(Protocol):
    @property
    def key(self) -> Key: ...
    @property
    def generation(self) -> int: ...
    @property
    def interval(self) -> float: ...
    @property
    def server(self) -> str: ...


@dataclass(slots=True)
class Due:
    """The scheduler's memory of one object: when its last check started, for which generation, and
    whether a check was asked for since (one in flight then runs again as soon as it ends)."""

    started: float | None = None
    generation: int | None = None
    in_flight: bool = False
    asked: bool = False


C = TypeVar("C", bound=Schedulable)
R = TypeVar("R")


async def _named_server(check: Schedulable) -> str:
    return check.server


class Scheduler(Generic[C, R]):
    def __init__(
        self,
        targets: Callable[[], Iterable[tuple[C, Due]]],
        probe: Callable[[C], R],
        record: Callable[[C, R], Awaitable[None]],
        timed_out: Callable[[C, float], R],
        *,
        concurrency: int = 8,
        per_server: int | None = None,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_sleep: float = 1.0,
        server_key: Callable[[C], Awaitable[str]] | None = None,
    ) -> None:
        self._targets = targets
        self._probe = probe
        self._record = record
        self._timed_out = timed_out
        self.concurrency = concurrency
        self.per_server = per_server or max(1, concurrency // 2)
        self.timeout = timeout
        self._clock = clock
        self._max_sleep = max_sleep
        self._server_key = server_key or _named_server
        self._limit = asyncio.Semaphore(concurrency)
        self._servers: dict[str, asyncio.Semaphore] = {}
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="health")
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.checks = 0  # started, for the benchmark

    def poke(self) -> None:
        """Something changed (an object came or its spec did): look again now, not at the next due time."""
        self._wake.set()

    def check_now(self, due: Due) -> None:
        """Check this object now, not at its next due time; if a check is in flight (it may have read
        what just changed), once more when it ends."""
        due.asked = True
        self._wake.set()

    def in_flight(self) -> int:
        return self._running

    async def run_forever(self) -> None:
        try:
            while True:
                wake_at = self._start_due()
                self._wake.clear()
                delay = max(0.0, min(self._max_sleep, wake_at - self._clock()))
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that arrives as the event is set, and the scheduler then never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _start_due(self) -> float:
        """Start every check that is due; return when the next one will be."""
        now = self._clock()
        wake_at = now + self._max_sleep
        for check, due in self._targets():
            if due.in_flight:
                continue
            started = due.started
            # Never checked, checked for an older spec, or asked for: now.
            stale = started is None or due.generation != check.generation or due.asked
            at = now if stale or started is None else started + check.interval
            if at <= now:
                self._start(check, due, now)
                at = now + check.interval
            wake_at = min(wake_at, at)
        return wake_at

    def _start(self, check: C, due: Due, now: float) -> None:
        due.started, due.generation, due.in_flight, due.asked = now, check.generation, True, False
        self._running += 1
        self.checks += 1
        task = asyncio.create_task(self._run(check, due), name=f"health {check.key[0]}/{check.key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, check: C, due: Due) -> None:
        try:
            result = await self._measure(check)
            if result is not None:
                await self._record(check, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("health check of %s/%s failed", *check.key)
        finally:
            due.in_flight = False
            self._running -= 1
            self._wake.set()  # its next due time may already have passed

    async def _measure(self, check: C) -> R | None:
        """The probe's result, or the timeout's (already recorded: returns None)."""
        server = self._servers.setdefault(await self._server_key(check), asyncio.Semaphore(self.per_server))
        # The server's slot first: waiting for a slow server must not hold one of the global slots.
        async with server, self._limit:
            future = asyncio.get_running_loop().run_in_executor(self._pool, self._probe, check)
            try:
                async with asyncio.timeout(self.timeout):  # not wait_for: see run_forever
                    return await asyncio.shield(future)
            except TimeoutError:
                await self._record(check, self._timed_out(check, self.timeout))
                with contextlib.suppress(Exception):
                    await future  # keep the slots until the thread is free again
                return None
