"""The served engine's HTTP interface as its starter and its own process use it: ping, and one
statement as an administrator (to check that the listener is ours, and to stop it)."""

from __future__ import annotations

import urllib.error
import urllib.request

MARKER = "tablerefresh-serve"


def serving_query(token: str) -> str:
    """The statements the engine runs while it serves: the listeners live as long as the last one runs.

    It reads no data and returns no row; it wakes five times a second to see whether it was killed.
    """
    return (
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        "SELECT number FROM system.numbers WHERE sleepEachRow(0.2) "
        "SETTINGS max_block_size = 1, function_sleep_max_microseconds_per_block = 0, max_execution_time = 0 "
        f"/* {MARKER}:{token} */"
    )


def _serving(token: str) -> str:
    # Split, so that the statement that looks for the serving query does not match its own text.
    return f"query LIKE concat('%{MARKER}', ':{token}%')"


def kill_statement(token: str) -> str:
    return f"KILL QUERY WHERE {_serving(token)} SYNC"


def count_statement(token: str) -> str:
    return f"SELECT count() FROM system.processes WHERE {_serving(token)}"


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something answers ClickHouse's ``GET /ping`` there."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=timeout) as answer:
            return bool(answer.status == 200 and answer.read().strip() == b"Ok.")
    except (OSError, ValueError):
        return False


def execute(host: str, port: int, sql: str, *, user: str, password: str | None, timeout: float) -> str:
    """One statement's answer as text; ``urllib.error.HTTPError`` carries the server's refusal."""
    request = urllib.request.Request(
        f"http://{host}:{port}/",
        data=sql.encode(),
        headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password or ""},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        text: str = answer.read().decode()
        return text
