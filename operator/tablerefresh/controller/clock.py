"""The controller's one clock, passed down from start-up to everything that needs the time.

Policy reads no clock: it is handed "now". The runtime asks this one (status times, Event times,
run-now's ``requestedAt``, a health check's ``checkedAt``; intervals and durations from its
monotonic side), so a test can stand in a clock it moves by hand and see every time the controller writes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, in UTC: what the status and Events say."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back: for intervals, timeouts and durations."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
