"""The health query: what the seed plan's daily SQL measured by hand, for any TableRefresh.

It only reads, and the server makes sure of it: the operator runs it with the credentials a
TableRefresh names, on SQL its author partly wrote (the slice predicate, the audits). So it checks
the predicate and the audits with the server's parser before anything else (``sql_guard``, the
audits exactly as the refresh Job does), and every query it makes carries the limits of
``limits.bounded``: read-only, stopped on the server before the client gives up, one row of result.
Judging the figures against thresholds is the control plane's (``controller/judge.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import catalog, limits, sql, sql_guard
from tablerefresh.dataplane.report import HealthReport
from tablerefresh.dataplane.run import audits
from tablerefresh.spec import TableRefreshSpec


def measure(
    client: Client,
    spec: TableRefreshSpec,
    now: datetime | None = None,
    *,
    timeout: float = limits.DEFAULT_TIMEOUT,
) -> HealthReport:
    """Measure the target. ``timeout``: the client's wait for one query, in seconds; the server stops
    each query just before it.

    Raises ``InvalidInput`` (naming the field) for a predicate or an audit the server's parser does
    not accept, before running either; ClickHouse errors as they are (an audit that would return more
    than one row fails on the server with code 396): being unreachable is for the caller."""
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    database, name = spec.clickhouse.database, spec.target.table
    target = sql.table(database, name)
    params = {
        "window_start": int((now - spec.window_delta).timestamp()),
        "run_time": int(now.timestamp()),
    }
    # Per query, so they come after the client's own settings (the spec's), which cannot lift them.
    bounded = limits.bounded(timeout)
    sql_guard.check_predicate(client, spec.slice.predicate, params, bounded)
    audits.check(client, spec.audits, name, params, bounded)
    # As the refresh reads it: a row for which the predicate is NULL is outside the slice.
    predicate = sql.slice_condition(spec.slice.predicate)
    keys = f"tuple({sql.column_list(spec.unique_key)})"
    freshness = sql.ident(spec.freshness_column)

    def one_row(query: str, parameters: dict[str, Any] | None = None) -> tuple[Any, ...]:
        return tuple(client.query(query, parameters=parameters, settings=bounded).result_rows[0])

    total, newest = one_row(f"SELECT count(), toUnixTimestamp(max({freshness})) FROM {target}", params)
    slice_rows, distinct = one_row(f"SELECT count(), uniqExact({keys}) FROM {target} WHERE {predicate}", params)
    # Duplicates in the whole table, without holding every key of a large table in memory at once:
    # within each partition, plus slice keys that also stand outside the slice (a row that moved twice).
    (per_partition,) = one_row(
        f"SELECT sum(c - u) FROM (SELECT count() AS c, uniqExact({keys}) AS u FROM {target} GROUP BY _partition_id)"
    )
    (across,) = one_row(
        f"SELECT count() FROM {target} WHERE NOT {predicate} AND {keys} IN "
        f"(SELECT {keys} FROM {target} WHERE {predicate})",
        params,
    )
    pending, oldest = catalog.pending_mutations_summary(client, database, name, bounded)
    newest_at = datetime.fromtimestamp(int(newest), UTC) if total else None
    return HealthReport(
        checked_at=now,
        total_rows=int(total),
        slice_rows=int(slice_rows),
        distinct_keys=int(distinct),
        newest_freshness=newest_at,
        stale_hours=(now - newest_at).total_seconds() / 3600 if newest_at else None,
        slice_duplicates=int(slice_rows) - int(distinct),
        table_duplicates=int(per_partition or 0) + int(across),
        pending_mutations=pending,
        oldest_mutation_age_seconds=oldest.age_seconds if oldest else None,
        oldest_mutation=oldest.describe() if oldest else None,
        audits=tuple(audits.evaluate(client, spec.audits, name, params, bounded)),
    )
