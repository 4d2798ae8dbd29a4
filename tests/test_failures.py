"""Client failures in one line a person can act on: pure, no server needed."""

from __future__ import annotations

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tablerefresh.dataplane.errors import (
    CredentialsRefused,
    ExitCode,
    TimedOut,
    UnknownDatabase,
    Unreachable,
)
from tablerefresh.dataplane.failures import connect_failure, one_line

# What clickhouse-connect raises, as it words it.
HTTP_REFUSED = OperationalError(
    "Error HTTPConnectionPool(host='db', port=8123): Max retries exceeded with url: "
    "/?query_id=5a0c1c55-53a1-4e7b-a0b9-1e6e0b0b8f21&database=polymarket (Caused by NewConnectionError("
    "'<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new connection: "
    "[Errno 111] Connection refused')) executing HTTP request attempt 1 (http://db:8123)"
)
HTTP_SERVER_ERROR = DatabaseError(
    "HTTPDriver for http://db:8123 received ClickHouse error code 60\n"
    " Code: 60. DB::Exception: Unknown table expression identifier 'nope' in scope SELECT * FROM nope. "
    "(UNKNOWN_TABLE) (version 25.8.1.1)",
    code=60,
)
NO_HOST = OperationalError("Error HTTPConnectionPool(host='nowhere', port=8123): [Errno -2] Name or service not known")
READ_TIMEOUT = OperationalError("Error HTTPConnectionPool(host='db', port=8123): Read timed out. (read timeout=5)")


def test_a_server_error_is_the_servers_own_message() -> None:
    assert one_line(HTTP_SERVER_ERROR) == (
        "Unknown table expression identifier 'nope' in scope SELECT * FROM nope. (UNKNOWN_TABLE)"
    )


def test_a_connection_failure_is_its_cause_without_query_ids() -> None:
    assert one_line(HTTP_REFUSED) == "connection refused"
    assert one_line(NO_HOST) == "unknown host"
    assert one_line(READ_TIMEOUT) == "timed out"
    assert "query_id" not in one_line(OperationalError("boom /?query_id=abc&x=1"))


def test_each_connect_failure_is_its_own_error() -> None:
    where = "clickhouse://db:8123"
    assert isinstance(connect_failure(HTTP_REFUSED, where, "pm"), Unreachable)
    assert (
        str(connect_failure(HTTP_REFUSED, where, "pm"))
        == "cannot reach ClickHouse at clickhouse://db:8123: connection refused"
    )
    assert str(connect_failure(NO_HOST, where, "pm")).endswith(": unknown host")
    timeout = connect_failure(READ_TIMEOUT, where, "pm")
    assert isinstance(timeout, TimedOut) and timeout.reason == "ClickHouseTimeout"
    auth = connect_failure(DatabaseError("Code: 516. DB::Exception: ana: Authentication failed", code=516), where, "pm")
    assert isinstance(auth, CredentialsRefused) and auth.reason == "CredentialsRefused"
    assert auth.exit_code == ExitCode.UNREACHABLE
    assert str(auth) == "ClickHouse refused the credentials at clickhouse://db:8123: ana: Authentication failed"
    missing = connect_failure(
        DatabaseError("Code: 81. DB::Exception: Database pm does not exist", code=81), where, "pm"
    )
    assert isinstance(missing, UnknownDatabase) and missing.exit_code == ExitCode.INVALID
    assert str(missing).startswith("ClickHouse at clickhouse://db:8123 has no database pm")
