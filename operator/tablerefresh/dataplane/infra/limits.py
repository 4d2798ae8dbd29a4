"""The settings that make a query of the operator's read-only and bounded on the server.

The health check runs with the credentials a TableRefresh names, on SQL its author partly wrote (the
slice predicate, the audits) and with settings its author chose (``spec.clickhouse.settings``, set on
the client). These settings go with every query, per query: the client sends a query's own settings
after its session's, so the author's cannot lift them. The server enforces them, whatever the SQL is:

- ``readonly=2``: reads only (no DDL, no INSERT, no SYSTEM), and ``SETTINGS readonly=0`` is refused;
- ``max_execution_time``: the server stops the query before the client gives up on it, instead of
  letting it run on after a timeout;
- ``cancel_http_readonly_queries_on_client_close``: a query whose client went away is cancelled;
- ``max_result_rows=1`` with ``result_overflow_mode=throw``: every query of the health check returns
  one row; one that would return more fails on the server (code 396) after its first block, so its
  rows never reach the operator's memory;
- ``timeout_overflow_mode=throw``: a query that runs out of time fails instead of returning part of
  its result (``break``), which would be read as a wrong figure;
- ``dialect=clickhouse``: the text is parsed by the parser that validated it (``sql_guard``).

A ClickHouse user with ``readonly=1`` may change no setting at all, so these cannot be set for it: the
client refuses before sending (``Setting readonly is readonly``). The health check's user needs
``readonly=2`` (or 0) in its profile.
"""

from __future__ import annotations

from typing import Any

# The client's default wait for a health query (the controller's prober passes its own).
DEFAULT_TIMEOUT = 30.0

READ_ONLY: dict[str, Any] = {
    "readonly": 2,
    "max_result_rows": 1,
    "result_overflow_mode": "throw",
    "timeout_overflow_mode": "throw",
    "dialect": "clickhouse",
}


def bounded(timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """:data:`READ_ONLY`, plus a server-side time limit just under the client's ``timeout`` (seconds)."""
    return {
        **READ_ONLY,
        "max_execution_time": max(1, int(timeout) - 1),
        "cancel_http_readonly_queries_on_client_close": 1,
    }


def with_rows(settings: dict[str, Any], rows: int) -> dict[str, Any]:
    """``settings`` allowing a result of ``rows`` rows: for the one statement whose result is a list
    bounded by the text of a query (DESCRIBE lists its columns), never by the data."""
    return {**settings, "max_result_rows": rows}
