"""Open the embedded engine (chDB), waiting while another process has its data path open.

One process at a time may open a chDB path (the engine locks ``PATH/status`` with flock and removes
the file when it closes). So the operator's health check, a refresh Job and a command run by hand on
the same path take turns instead of failing at once: each waits up to its connect timeout.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

_POLL_SECONDS = 0.05
# How long a failed open is tried again while no other process is seen holding the path.
_SETTLE = 2.0


class PathInUse(ClickHouseError):
    """Another process kept the engine's path open for the whole wait."""


def data_path(url: str) -> Path | None:
    """The directory of a ``chdb:///path`` URL; None for an in-memory engine."""
    parts = urlsplit(url)
    location = parts.path if not parts.netloc else ""
    return Path(location) if location not in ("", "memory", ":memory:") else None


def in_use(path: Path) -> bool:
    """Whether another process holds the engine at ``path`` (its status file is locked)."""
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except OSError:
        return False  # no status file: no engine is open there
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def open_embedded(url: str, *, database: str | None, settings: dict[str, str], wait: float) -> Client:
    """A client on the embedded engine, waiting up to ``wait`` seconds for the path to be free.

    Opened first and waited for only on failure: the status file is locked by this very process
    too while it has a client open there, and a second client of the same process shares the engine.
    A failure while no other process holds the path is tried again for a moment (``_SETTLE``): the
    holder may have let go between the failed open and the look, and the engine's error does not
    say which it was.
    """
    path = data_path(url)
    began = time.monotonic()
    deadline = began + wait
    while True:
        try:
            return clickhouse_connect.get_client(dsn=url, database=database, settings=settings)
        except ClickHouseError as exc:
            if path is None:
                raise
            held = in_use(path)
            now = time.monotonic()
            if not held and now - began >= min(wait, _SETTLE):
                raise
            if now >= deadline:
                raise PathInUse(f"another process has the embedded engine at {path} open (waited {wait:g}s)") from exc
            # Wait quietly while another process has it (each failed open prints the engine's error).
            while in_use(path) and time.monotonic() < deadline:
                time.sleep(_POLL_SECONDS)
            time.sleep(_POLL_SECONDS)
