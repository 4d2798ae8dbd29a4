"""The user's own checks of the data: each audit counts bad rows of ``{table:Identifier}``.

A run evaluates them on its staging table before the swap; the health check on the target. Both
check an audit first, the same way (:func:`check`), without running it: the server's parser must read
it as one read-only SELECT (``sql_guard``), and ``DESCRIBE`` must show it compiles against the target
and returns exactly one number; otherwise the run is refused as invalid input before any staging is
built, and the health check reports it without evaluating any audit.
"""

from __future__ import annotations

import re
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.dataplane.infra import limits, sql_guard
from tablerefresh.dataplane.infra.errors import InvalidInput, one_line
from tablerefresh.dataplane.report import AuditResult
from tablerefresh.spec import Audit

# One number: any integer or float type, possibly Nullable or LowCardinality (a count() is UInt64).
_NUMBER = re.compile(r"^(Nullable\()?(LowCardinality\()?(U?Int\d+|Float\d+|Decimal.*)\)*$")
# DESCRIBE lists an audit's columns, as many as its text names: enough to say what a wrong one returns.
_DESCRIBED_COLUMNS = 1024


def check(
    client: Client,
    audits: list[Audit],
    table: str,
    params: dict[str, Any],
    settings: dict[str, Any] | None = None,
) -> None:
    """Refuse, naming the audit, one that is not one read-only SELECT, does not compile or does not
    return one number. ``settings`` go with each query (the health check's limits).

    The parser's check comes first: DESCRIBE analyses the query, which for a table function such as
    ``url()`` already means reaching out to infer its columns."""
    described = limits.with_rows({**(settings or {}), **limits.READ_ONLY}, _DESCRIBED_COLUMNS)
    for audit in audits:
        what = f"audit {audit.name}"
        bound = {**params, "table": table}
        sql_guard.check_select(client, _query(audit), what, bound, settings)
        try:
            columns = client.query(f"DESCRIBE ({_query(audit)})", parameters=bound, settings=described).result_rows
        except ClickHouseError as exc:
            if getattr(exc, "code", None) is None:
                raise  # the connection broke, not the audit
            raise InvalidInput(f"{what} does not compile: {one_line(exc)}") from exc
        if len(columns) != 1 or not _NUMBER.match(str(columns[0][1])):
            kinds = ", ".join(f"{c[0]} {c[1]}" for c in columns)
            raise InvalidInput(f"{what} must return one number, the count of bad rows; it returns {kinds}")


def evaluate(
    client: Client,
    audits: list[Audit],
    table: str,
    params: dict[str, Any],
    settings: dict[str, Any] | None = None,
) -> list[AuditResult]:
    """Every audit's count of bad rows in ``table`` (a name in the client's database), each query
    with ``settings`` (the health check's bound the result to one row on the server)."""
    results = []
    for audit in audits:
        rows = client.query(_query(audit), parameters={**params, "table": table}, settings=settings).result_rows
        value = rows[0][0] if rows and rows[0] else 0
        results.append(AuditResult(audit.name, int(value or 0), audit.max_failing_rows))
    return results


def _query(audit: Audit) -> str:
    # On its own line: a trailing -- comment must not swallow what the caller wraps around it.
    return audit.query.strip().rstrip(";").rstrip() + "\n"
