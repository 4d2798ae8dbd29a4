"""An asyncio event loop on a virtual clock, for tests of code that waits on time (the scheduler).

The clock stands still while anything can run: a ready callback, or a worker thread that is not
waiting on the clock. When everything waits, it jumps to the next timer. So a test of "a check
every 50 ms for 0.8 s" runs in milliseconds and sees the same sequence on a loaded machine.

Worker threads take part through :meth:`VirtualTimeLoop.sleep_in_thread` (instead of
``time.sleep``). A job handed to ``run_in_executor`` counts as running from submission, so an
executor must have a thread free for every job submitted at once, or the clock never moves.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

# How long, in real time, one select waits for a worker thread before looking again.
_REAL_WAIT = 0.05


class _Selector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        assert loop is not None
        if timeout is not None and timeout <= 0:
            return list(super().select(0))
        if loop.busy:  # a worker thread runs: real time passes, the clock does not
            return list(super().select(_REAL_WAIT))
        ready = list(super().select(0))
        if ready:
            return ready
        if timeout is None:  # no timer at all: only the outside world can wake us
            return list(super().select(None))
        loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0
        # asyncio runs a timer up to one clock resolution early; on a clock that does not move by
        # itself that would loop forever on a timer one float step ahead. Timers run once passed.
        self._clock_resolution = 0.0
        self.busy = 0  # executor jobs not waiting on the clock; changed on the loop's thread only
        self._sleepers: set[threading.Event] = set()

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now = math.nextafter(self._now + seconds, math.inf)  # just past the timer, so it runs

    def run_in_executor(self, executor: Executor | None, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        self.busy += 1
        future = super().run_in_executor(executor, func, *args)
        future.add_done_callback(self._job_done)
        return future

    def _job_done(self, _: asyncio.Future[Any]) -> None:
        self.busy -= 1

    def close(self) -> None:
        # A thread still asleep when the test ends would never wake, and the interpreter joins
        # executor threads at exit: let them all finish now.
        for woke in list(self._sleepers):
            woke.set()
        super().close()

    def sleep_in_thread(self, seconds: float) -> None:
        """``time.sleep`` on the virtual clock, for code running in a worker thread."""
        woke = threading.Event()
        self._sleepers.add(woke)

        def wake() -> None:
            self.busy += 1
            self._sleepers.discard(woke)
            woke.set()

        def arm() -> None:
            self.busy -= 1
            self.call_later(seconds, wake)

        self.call_soon_threadsafe(arm)
        woke.wait()


def run(main: Callable[[VirtualTimeLoop], Awaitable[T]]) -> T:
    """Run ``main(loop)`` to completion on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, VirtualTimeLoop)
        return runner.run(_call(main, loop))


async def _call(main: Callable[[VirtualTimeLoop], Awaitable[T]], loop: VirtualTimeLoop) -> T:
    return await main(loop)
