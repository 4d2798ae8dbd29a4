"""Client failures in one line a person can act on: pure, no server needed."""

from __future__ import annotations

import logging

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tablerefresh.dataplane.infra.errors import (
    CredentialsRefused,
    ExitCode,
    InvalidInput,
    ScrubSecrets,
    TimedOut,
    UnknownDatabase,
    Unreachable,
    connect_failure,
    one_line,
    scrub,
)
from tablerefresh.text import printable

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


def test_the_http_clients_url_suffix_is_not_part_of_the_message() -> None:
    error = DatabaseError(
        "Received ClickHouse exception, code: 396, server response: Code: 396. DB::Exception: Limit for result "
        "exceeded, max rows: 1.00. (TOO_MANY_ROWS_OR_BYTES) (version 26.9.2.1) (for url http://127.0.0.1:8123)",
        code=396,
    )
    assert one_line(error) == "Limit for result exceeded, max rows: 1.00. (TOO_MANY_ROWS_OR_BYTES)"


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
    # Not the server's message: it starts with the user name, which may be any value of a Secret.
    assert str(auth) == "ClickHouse refused the credentials at clickhouse://db:8123 (code 516)"
    missing = connect_failure(
        DatabaseError("Code: 81. DB::Exception: Database pm does not exist", code=81), where, "pm"
    )
    assert isinstance(missing, UnknownDatabase) and missing.exit_code == ExitCode.INVALID
    assert str(missing).startswith("ClickHouse at clickhouse://db:8123 has no database pm")


# Tokens and keys a Secret may hold, posing as a user name (finding 1: a reply carries it).
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VydmljZS1hY2NvdW50.sig"


@pytest.mark.parametrize("code", [192, 193, 194, 516])
def test_refused_credentials_never_carry_the_servers_message(code: int) -> None:
    reply = DatabaseError(
        f"Code: {code}. DB::Exception: {TOKEN}: Authentication failed: password is incorrect", code=code
    )
    error = connect_failure(reply, "https://db:8443", "pm")
    assert isinstance(error, CredentialsRefused)
    assert str(error) == f"ClickHouse refused the credentials at https://db:8443 (code {code})"


def test_a_server_message_loses_the_user_name_it_starts_with() -> None:
    for message in (
        "Cannot execute query in readonly mode. (READONLY)",
        "Not enough privileges. To execute this query, it's necessary to have the grant SELECT ON pm.t.",
        "Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)",
    ):
        text = one_line(
            DatabaseError(
                f"HTTPDriver for http://db:8123 received ClickHouse error code 164\n"
                f" Code: 164. DB::Exception: {TOKEN}: {message} (version 25.8.1.1)",
                code=164,
            )
        )
        assert TOKEN not in text and text == message


def test_error_text_is_printable_whatever_the_server_sends() -> None:
    # A listener posing as ClickHouse answers with escape sequences (finding 9): they reach no terminal.
    hostile = OperationalError("HTTP 404: \x1b[2J\x1b]0;owned\x07not found\r\nforged: line\x9b31m\u202eevil")
    text = one_line(hostile)
    assert text.isprintable() and "\x1b" not in text and "\x9b" not in text and "\u202e" not in text
    assert text == "HTTP 404: [2J ]0;owned not found"  # one line: the forged one is not shown
    assert printable("a\tb\x00c\x7fd\x85e") == "a b c d e"
    assert printable("Straße 東京 ok") == "Straße 東京 ok"  # printable text stays as it is
    server = DatabaseError("Code: 60. DB::Exception: Unknown table \x1b[31mred\x1b[0m. (UNKNOWN_TABLE)", code=60)
    assert one_line(server) == "Unknown table [31mred [0m. (UNKNOWN_TABLE)"


def test_our_own_errors_are_their_text_never_a_connection_cause() -> None:
    # "ssl" in an audit's name is not a failed TLS handshake.
    error = InvalidInput("audit ssl-timeout does not compile: Syntax error")
    assert one_line(error) == "audit ssl-timeout does not compile: Syntax error"


def test_scrub_replaces_each_secret_value() -> None:
    text = f"{TOKEN}: Authentication failed for {TOKEN} with p%40ss and p@ss at https://db"
    assert scrub(text, TOKEN, "p@ss") == "***: Authentication failed for *** with *** and *** at https://db"
    assert scrub("nothing to hide", "", None) == "nothing to hide"
    # One secret inside another: the longer goes whole.
    assert scrub("abcdef-xyz", "abcdef-xyz", "abcdef") == "***"
    # A short one only as a word, so messages stay readable.
    assert scrub("bob: Cannot execute query; bobby", "bob") == "***: Cannot execute query; bobby"


def test_scrubbed_logs_carry_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.scrub")
    handler = caplog.handler
    handler.addFilter(ScrubSecrets((TOKEN, "hunter22")))
    try:
        with caplog.at_level(logging.INFO, logger="tests.scrub"):
            logger.info("connecting as %s with %s", TOKEN, "hunter22")
            try:
                raise RuntimeError(f"{TOKEN}: Authentication failed")
            except RuntimeError:
                logger.exception("failed")
    finally:
        handler.removeFilter(handler.filters[-1])
    assert TOKEN not in caplog.text and "hunter22" not in caplog.text
    assert "connecting as *** with ***" in caplog.text and "***: Authentication failed" in caplog.text
