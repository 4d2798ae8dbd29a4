"""What went wrong, in one line a person can act on, without the client's internals.

clickhouse-connect reports a failed HTTP request as several lines of urllib3 text with the request's
query id; a server error as "HTTPDriver for … received ClickHouse error code 60" followed by the
server's own message. A person needs the cause: the server's message, or what happened to the
connection (refused, unknown host, timed out, dropped).
"""

from __future__ import annotations

import re

from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from tablerefresh.dataplane.errors import (
    CredentialsRefused,
    RefreshError,
    TimedOut,
    UnknownDatabase,
    Unreachable,
)

UNKNOWN_DATABASE = 81
# ClickHouse error codes meaning "who you are is not accepted", as opposed to "not reachable".
AUTH_CODES = frozenset({192, 193, 194, 516})

_CONNECTION_CAUSES = (
    (re.compile(r"Connection refused", re.I), "connection refused"),
    (
        re.compile(r"Name or service not known|nodename nor servname|name resolution|getaddrinfo failed", re.I),
        "unknown host",
    ),
    (re.compile(r"timed out|timeout", re.I), "timed out"),
    (re.compile(r"certificate|SSL", re.I), "TLS handshake failed"),
    (
        re.compile(r"Connection (reset|aborted)|RemoteDisconnected|Broken pipe|IncompleteRead", re.I),
        "the connection dropped",
    ),
)
_SERVER_MESSAGE = re.compile(r"DB::Exception: (.*?)(?: \(version [^)]*\))?\.?\s*$", re.S)
_QUERY_ID = re.compile(r"[?&]?query_id=[^&\s)]*")
_LIMIT = 300


def one_line(exc: BaseException) -> str:
    """The cause of ``exc`` in one line: the server's message, the connection's fate, or its first line."""
    text = str(exc).strip()
    for line in text.splitlines():
        found = _SERVER_MESSAGE.search(line)
        if found:
            return _clip(found.group(1))
    if not isinstance(exc, DatabaseError) or getattr(exc, "code", None) is None:
        cause = connection_cause(text)
        if cause is not None:
            return cause
    first = text.splitlines()[0] if text else type(exc).__name__
    return _clip(_QUERY_ID.sub("", first))


def connection_cause(text: str) -> str | None:
    for pattern, cause in _CONNECTION_CAUSES:
        if pattern.search(text):
            return cause
    return None


def connect_failure(exc: ClickHouseError, where: str, database: str | None) -> RefreshError:
    """Opening a client failed: each cause has its own error, since each has its own fix."""
    code = getattr(exc, "code", None)
    if code == UNKNOWN_DATABASE and database:
        return UnknownDatabase(
            f"ClickHouse at {where} has no database {database}: create it, or set spec.clickhouse.database"
        )
    if code in AUTH_CODES:
        return CredentialsRefused(f"ClickHouse refused the credentials at {where}: {one_line(exc)}")
    cause = connection_cause(str(exc)) if code is None else None
    if cause == "timed out":
        return TimedOut(f"ClickHouse at {where} did not answer in time")
    return Unreachable(f"cannot reach ClickHouse at {where}: {cause or one_line(exc)}")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _LIMIT else text[: _LIMIT - 1] + "…"


def scrub(text: str, *secrets: str) -> str:
    """``text`` with each secret value (a user name, a password) replaced by ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
