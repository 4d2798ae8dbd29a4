"""SIGINT (Ctrl-C) and SIGTERM (the pod deleted, ``activeDeadlineSeconds``) while a refresh runs.

A signal asks the run to stop (:class:`Stop`); it does not raise where the signal lands, which could
be in the middle of a cleanup. The run checks at each step and stops there (``Interrupted``), and
ends as every run ends: staging dropped, the lock released, the run recorded, the summary written.

A statement already running would hold it up (a source query can take minutes; a pod gets 30 s):
Python runs a signal's handler only between statements on the embedded engine, whose statement runs
in C. So :func:`signals` also wakes a thread of its own on the signal (``signal.set_wakeup_fd``),
which calls what the run registered with :meth:`Stop.on_request`: the run kills its own statements
(``KILL QUERY``, by the ``log_comment`` its client sets), unless it is swapping.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop:
    """Set once a signal asked the run to stop; the first signal's number is kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signum: int | None = None
        self._callbacks: list[Callable[[int], None]] = []

    @property
    def signum(self) -> int | None:
        return self._signum

    @property
    def name(self) -> str:
        return signal.Signals(self._signum).name if self._signum is not None else ""

    def on_request(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(signum)`` (in the thread that saw the signal) when the stop is asked for."""
        self._callbacks.append(callback)

    def request(self, signum: int) -> None:
        with self._lock:
            if self._signum is not None:
                return  # the run is stopping already
            self._signum = signum
        log.warning("%s: stopping the run", signal.Signals(signum).name)
        for callback in self._callbacks:
            try:
                callback(signum)
            except Exception as exc:  # the run stops at its next step anyway
                log.warning("could not stop the running statement: %s", exc)


@contextmanager
def signals(stop: Stop) -> Iterator[Stop]:
    """While inside, SIGINT and SIGTERM ask ``stop`` to stop, at once even while the main thread
    waits for a statement. Call from the main thread (Python sets signal handlers only there)."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.request(signum)  # the watcher has seen it already, unless the wakeup was lost

    def watch() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in SIGNALS:
                    stop.request(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="tablerefresh-signals", daemon=True)
    watcher.start()
    try:
        yield stop
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, old in previous.items():
            signal.signal(signum, old)
        writer.close()  # the watcher's recv returns b"": it ends
        watcher.join(timeout=5)
        reader.close()
