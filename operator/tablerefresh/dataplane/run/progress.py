"""Whether a run's swap has started, and what the target holds since: the run's one piece of state
that a signal's thread reads too.

Before the swap, a failure leaves the target untouched and a signal may kill the run's statements.
Once it may have started, any failure is reported with what the target holds (``FailedAfterSwap``),
and no statement is killed: a replace stopped halfway would leave the target part old, part new.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class SwapProgress:
    def __init__(self, before_start: Callable[[], None]) -> None:
        # Called as the swap starts, under the lock: a stop asked for before it keeps it from starting.
        self._before_start = before_start
        self._lock = threading.Lock()
        self._holds: str | None = None

    @property
    def started(self) -> bool:
        return self._holds is not None

    @property
    def holds(self) -> str:
        """What the target holds, in words, once the swap may have started."""
        assert self._holds is not None, "the swap has not started"
        return self._holds

    def start(self, holds: str) -> None:
        """The swap is about to start; ``holds`` says what the target then holds."""
        with self._lock:
            if self._holds is None:
                self._before_start()
            self._holds = holds

    def now_holds(self, holds: str) -> None:
        """A later step of the swap: what the target holds now."""
        with self._lock:
            assert self._holds is not None, "the swap has not started"
            self._holds = holds

    def did_not_run(self) -> None:
        """Found out afterwards: the swap never reached the target, which is untouched."""
        with self._lock:
            self._holds = None

    def unless_started(self, action: Callable[[], None]) -> None:
        """Run ``action`` only while the swap has not started, and keep it from starting meanwhile."""
        with self._lock:
            if self._holds is None:
                action()
