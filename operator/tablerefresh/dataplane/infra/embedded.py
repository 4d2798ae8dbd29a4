"""Open the embedded engine (chDB), waiting while another process has its data path open.

One process at a time may open a chDB path (the engine locks ``PATH/status`` with flock and removes
the file when it closes). So the operator's health check, a refresh Job and a command run by hand on
the same path take turns instead of failing at once: each waits up to its connect timeout. The
engine writes ``Code: 76 … Cannot lock file …/status`` straight to file descriptor 2 on each open it
refuses; that text is kept out of the process's stderr (anything else the engine writes there is
passed on), and a wait that ends without the path says so in one line (``PathInUse``).
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

_POLL_SECONDS = 0.05
# How long a failed open is tried again while no other process is seen holding the path.
_SETTLE = 2.0


# What the engine writes to stderr when another process holds the path.
_HELD_TEXT = re.compile(
    rb"Code: 76\. DB::Exception: Cannot lock file \S*status\. Another server instance in same directory is "
    rb"already running\. \(CANNOT_OPEN_FILE\)\s*"
)
# File descriptor 2 is the process's: one open at a time takes it over.
_STDERR = threading.Lock()


class PathInUse(ClickHouseError):
    """Another process kept the engine's path open for the whole wait."""

    def __init__(self, path: Path, waited: float) -> None:
        super().__init__(
            f"another process has the embedded engine at {path} open (waited {waited:g}s for it): one process "
            "at a time may open a chdb:// path; to share one, serve it (`tablerefresh serve`)"
        )


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
    A failure is waited out while another process holds the path (the engine said so, or its status
    file is locked); otherwise it is tried again for a moment (``_SETTLE``): the holder may have let
    go between the failed open and the look. Then the engine's own error is raised.
    """
    path = data_path(url)
    began = time.monotonic()
    deadline = began + wait
    while True:
        try:
            return _open_quietly(url, database, settings)
        except _Refused as refused:
            exc, said_held = refused.error, refused.said_held
            if path is None:
                raise exc from None
            held = said_held or in_use(path)
            now = time.monotonic()
            if not held and now - began >= min(wait, _SETTLE):
                raise exc from None
            if now >= deadline:
                raise PathInUse(path, wait) from exc
            while in_use(path) and time.monotonic() < deadline:
                time.sleep(_POLL_SECONDS)
            time.sleep(_POLL_SECONDS)


class _Refused(Exception):
    """An open the engine refused, and whether it said another process holds the path."""

    def __init__(self, error: ClickHouseError, said_held: bool) -> None:
        super().__init__(str(error))
        self.error, self.said_held = error, said_held


def _open_quietly(url: str, database: str | None, settings: dict[str, str]) -> Client:
    """``get_client``, with what the engine writes to file descriptor 2 meanwhile read back: the
    text saying another process holds the path is dropped (a refusal says whether it was there, in
    ``_Refused``), anything else is written to stderr as it was."""
    with _STDERR:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep clean
            try:
                return _open(url, database, settings)
            except ClickHouseError as exc:
                raise _Refused(exc, said_held=False) from None
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                client: Client | None = _open(url, database, settings)
                error = None
            except ClickHouseError as exc:
                client, error = None, exc
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
            caught.seek(0)
            text = caught.read()
    rest, held = _HELD_TEXT.subn(b"", text)
    if rest:
        os.write(2, rest)
    if error is not None:
        raise _Refused(error, held > 0)
    assert client is not None
    return client


def _open(url: str, database: str | None, settings: dict[str, str]) -> Client:
    return clickhouse_connect.get_client(dsn=url, database=database, settings=settings)
