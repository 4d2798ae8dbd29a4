"""Open a clickhouse-connect client for a URL: a ClickHouse server, or the embedded chDB engine.

Both go through clickhouse-connect, so the refresh runs the same code path on either. Credentials
come from the environment (the Job gets them from a Secret), never from the manifest. When a
statement's answer does not arrive (:func:`unanswered`), a new client (:func:`reconnect`) finds out
what the server did.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from tablerefresh.contract import PASSWORD_ENV as PASSWORD_ENV
from tablerefresh.contract import USER_ENV as USER_ENV
from tablerefresh.dataplane.infra import embedded
from tablerefresh.dataplane.infra.embedded import PathInUse, open_embedded
from tablerefresh.dataplane.infra.errors import InvalidInput, Unreachable, connect_failure, one_line

log = logging.getLogger(__name__)

_SCHEMES = {"clickhouse": "http", "clickhouses": "https", "http": "http", "https": "https"}


def env_secrets() -> tuple[str, str]:
    """The credentials' values this process got from its environment (empty when unset): what
    ``errors.scrub`` takes out of every error text it shows."""
    return os.environ.get(USER_ENV, ""), os.environ.get(PASSWORD_ENV, "")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(
    url: str,
    *,
    database: str | None = None,
    settings: dict[str, str] | None = None,
    username: str | None = None,
    password: str | None = None,
    connect_timeout: float = 10,
    send_receive_timeout: float = 3600,
) -> Client:
    """A connected client, or ``Unreachable`` naming the URL (without its password) and the cause.

    The timeouts apply to a server; a health check passes short ones so a hung server frees its
    thread. For the embedded engine, ``connect_timeout`` is how long to wait for another process to
    close its path.
    """
    parts = urlsplit(url)
    settings = dict(settings or {})
    try:
        if parts.scheme == "chdb":
            _check_chdb_form(url)
            return open_embedded(chdb_url(url), database=database, settings=settings, wait=connect_timeout)
        interface = _SCHEMES.get(parts.scheme)
        if interface is None:
            raise InvalidInput(f"unsupported ClickHouse URL scheme {parts.scheme!r} in {redact(url)}")
        dsn = urlunsplit(parts._replace(scheme=interface))
        return clickhouse_connect.get_client(
            dsn=dsn,
            interface=interface,
            database=database,
            username=username or os.environ.get(USER_ENV) or None,
            password=password or os.environ.get(PASSWORD_ENV) or "",
            settings=settings,
            connect_timeout=connect_timeout,
            send_receive_timeout=send_receive_timeout,
            autogenerate_session_id=False,
        )
    except PathInUse as exc:  # the message says it all: no "cannot reach", no engine text
        raise Unreachable(str(exc)) from exc
    except ImportError as exc:
        raise Unreachable(
            f"{redact(url)}: the embedded engine needs chdb (pip install 'tablerefresh[embedded]')"
        ) from exc
    except ClickHouseError as exc:
        raise connect_failure(exc, redact(url), database) from exc


def _check_chdb_form(url: str) -> None:
    """``chdb:/srv/x`` (one slash) and ``chdb:x`` parse as a path too, but are no chdb URL."""
    if not url.startswith("chdb://"):
        raise InvalidInput(f"{redact(url)} is not a chdb URL: write chdb:///abs/path or chdb://rel/path")


# A directory the embedded engine has opened holds its catalog here.
_ENGINE_CATALOG = "metadata"


def require_embedded_database(url: str) -> None:
    """For the commands that work on a table (all but ``demo`` and ``serve``): a ``chdb://`` URL
    must name a directory the embedded engine made, or ``InvalidInput`` ("no embedded database
    at …", exit code 2). Opening a path creates an engine there, folders and all, so a mistyped
    path would otherwise leave a folder behind and fail later, blaming the database."""
    if urlsplit(url).scheme != "chdb":
        return
    _check_chdb_form(url)
    path = embedded.data_path(chdb_url(url))
    if path is not None and not (path / _ENGINE_CATALOG).is_dir():
        raise InvalidInput(
            f"no embedded database at {path} (from {url}): chdb:// names the directory of one that exists, "
            "as made by `tablerefresh demo` or `tablerefresh serve --data-dir`"
        )


def chdb_url(url: str) -> str:
    """``chdb:///abs/path`` as it is; ``chdb://rel/path`` made absolute, relative to the working
    directory (the URL parser would otherwise take its first folder for a host name)."""
    parts = urlsplit(url)
    path = parts.netloc + parts.path
    if not path or path == ":memory:":
        return url
    return f"chdb://{os.path.abspath(path)}"


# -- a statement whose answer did not arrive (the swap's: ``run/unanswered.py``) -----------------

RECONNECT_ATTEMPTS = 3
RECONNECT_PAUSE_SECONDS = 1.0


def unanswered(exc: BaseException) -> bool:
    """True when ``exc`` carries no answer from the server (a dropped connection, a cut answer, a
    timeout): the statement may have run. A server's error has a code; these do not."""
    return isinstance(exc, OperationalError) and getattr(exc, "code", None) is None


def reconnect(
    connect: Callable[[], Client],
    attempts: int = RECONNECT_ATTEMPTS,
    pause: float = RECONNECT_PAUSE_SECONDS,
) -> Client:
    """A new client (its first request opens a new connection), after a short pause per failure."""
    for attempt in range(1, attempts + 1):
        try:
            return connect()
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("reconnecting (attempt %d of %d): %s", attempt, attempts, one_line(exc))
            time.sleep(pause * attempt)
    raise AssertionError("unreachable")
