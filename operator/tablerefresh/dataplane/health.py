"""The health query: what the seed plan's daily SQL measured by hand, for any TableRefresh.

It only reads. Judging the figures against thresholds is the control plane's (``controller/judge.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane import audits, catalog, sql
from tablerefresh.dataplane.audits import AuditResult
from tablerefresh.spec import TableRefreshSpec


@dataclass(frozen=True)
class HealthReport:
    checked_at: datetime
    total_rows: int
    slice_rows: int
    distinct_keys: int
    newest_freshness: datetime | None
    stale_hours: float | None
    slice_duplicates: int
    table_duplicates: int
    pending_mutations: int
    oldest_mutation_age_seconds: float | None
    oldest_mutation: str | None = None
    audits: tuple[AuditResult, ...] = ()

    def as_status(self) -> dict[str, Any]:
        """camelCase, the shape of ``status.health``."""
        return {
            "checkedAt": _iso(self.checked_at),
            "totalRows": self.total_rows,
            "sliceRows": self.slice_rows,
            "distinctKeys": self.distinct_keys,
            "newestFreshness": _iso(self.newest_freshness) if self.newest_freshness else None,
            "staleHours": None if self.stale_hours is None else round(self.stale_hours, 2),
            "sliceDuplicates": self.slice_duplicates,
            "tableDuplicates": self.table_duplicates,
            "pendingMutations": self.pending_mutations,
            "oldestMutationAgeSeconds": self.oldest_mutation_age_seconds,
            "audits": [a.as_status() for a in self.audits] or None,
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def measure(client: Client, spec: TableRefreshSpec, now: datetime | None = None) -> HealthReport:
    """Measure the target. Raises ClickHouse errors as they are: being unreachable is for the caller."""
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    database, name = spec.clickhouse.database, spec.target.table
    target = sql.table(database, name)
    # As the refresh reads it: a row for which the predicate is NULL is outside the slice.
    predicate = f"ifNull(({spec.slice.predicate}), 0)"
    keys = f"tuple({sql.column_list(spec.unique_key)})"
    params = {
        "window_start": int((now - spec.window_delta).timestamp()),
        "run_time": int(now.timestamp()),
    }
    freshness = sql.ident(spec.freshness_column)
    total, newest = client.query(
        f"SELECT count(), toUnixTimestamp(max({freshness})) FROM {target}", parameters=params
    ).result_rows[0]
    slice_rows, distinct = client.query(
        f"SELECT count(), uniqExact({keys}) FROM {target} WHERE {predicate}", parameters=params
    ).result_rows[0]
    # Duplicates in the whole table, without holding every key of a large table in memory at once:
    # within each partition, plus slice keys that also stand outside the slice (a row that moved twice).
    per_partition = client.query(
        f"SELECT sum(c - u) FROM (SELECT count() AS c, uniqExact({keys}) AS u FROM {target} GROUP BY _partition_id)"
    ).result_rows[0][0]
    across = client.query(
        f"SELECT count() FROM {target} WHERE NOT {predicate} AND {keys} IN "
        f"(SELECT {keys} FROM {target} WHERE {predicate})",
        parameters=params,
    ).result_rows[0][0]
    mutations = catalog.pending_mutations(client, database, name)
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
        pending_mutations=len(mutations),
        oldest_mutation_age_seconds=max((m.age_seconds for m in mutations), default=None),
        oldest_mutation=max(mutations, key=lambda m: m.age_seconds).describe() if mutations else None,
        audits=tuple(audits.evaluate(client, spec.audits, name, params)),
    )
