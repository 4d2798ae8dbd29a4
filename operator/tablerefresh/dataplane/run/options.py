"""What a run is asked to do beyond its spec: who runs it, for when, and how it may be stopped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tablerefresh.dataplane.infra.clock import Clock, utc_now
from tablerefresh.dataplane.infra.interrupt import Stop


@dataclass(frozen=True)
class RunOptions:
    run_id: str
    owner: str
    run_time: datetime
    lock_ttl_seconds: float = 120.0  # the lock's heartbeat follows it (``lock.target_lock``)
    force_full: bool = False  # an incremental spec's run is full whatever its history
    # Values that must never appear in the run's error (the credentials): replaced by *** (errors.scrub).
    secrets: tuple[str, ...] = ()
    # Set by a signal (``interrupt.signals``): the run stops at its next step, its statements killed.
    stop: Stop | None = None
    # The one clock the run reads: its record's times, its steps' durations, the names of its backups
    # and of refused staging kept as evidence, and how old such evidence is.
    clock: Clock = utc_now
