"""What the crash tests do on the engine, as functions of a client: on the embedded engine they run
in a helper process (``ProcessEngine.call``, ``tests/engines.py``), since each process owns the chDB
path it opens; on the served engine, from the test's own client.

- ``setup``: tables, source rows, and the manifest of a TableRefresh on them pointed at the engine;
- ``probe``: the target's checksum and the tables beside it;
- ``expected``: the checksum of what the source yields now;
- ``change``: new source data (new values, rows that resolve now).
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client

from tests import refresh_fixtures as fx

SYNC = {"mutations_sync": 2}
# Each incremental change touches other ids, and bumps updated_at, which is how the changed-keys
# query sees it.
CHANGES = {
    1: ("value = value + 1", "id % 3 = 0", "id % 7 = 0"),
    2: ("value = value + 5", "id % 5 = 1", "id % 11 = 1"),
}


def setup(client: Client, url: str, database: str, manifest: str, incremental: bool = False) -> None:
    if incremental:
        spec = fx.incremental_spec(database)
        fx.set_up_engine(client, url, database, spec, name="crash-incremental", rows=20_000, manifest=manifest)
    else:
        fx.set_up_engine(client, url, database, fx.spec(database), name="crash", rows=50_000, manifest=manifest)


def probe(client: Client, database: str) -> dict[str, Any]:
    tables = sorted(
        r[0]
        for r in client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": database}
        ).result_rows
    )
    return {"checksum": list(fx.checksum(client, f"{database}.positions")), "tables": tables}


def expected(client: Client, database: str, window_start: int) -> dict[str, Any]:
    source = fx.SOURCE.replace("FROM src", f"FROM {database}.src")
    rows = client.query(
        f"SELECT count(), sum(cityHash64(*)) FROM ({source})", parameters={"window_start": window_start}
    ).result_rows[0]
    return {"checksum": [int(rows[0]), int(rows[1] or 0)]}


def change(client: Client, database: str) -> None:
    client.command(f"ALTER TABLE {database}.src UPDATE value = value + 1 WHERE id % 3 = 0", settings=SYNC)
    client.command(
        f"ALTER TABLE {database}.src UPDATE resolved_at = now() WHERE resolved_at IS NULL AND id % 7 = 0",
        settings=SYNC,
    )


def change_incremental(client: Client, database: str, n: int) -> None:
    update, which, resolving = CHANGES[n]
    client.command(f"ALTER TABLE {database}.src UPDATE {update}, updated_at = now() WHERE {which}", settings=SYNC)
    client.command(
        f"ALTER TABLE {database}.src UPDATE resolved_at = now(), updated_at = now() "
        f"WHERE resolved_at IS NULL AND {resolving}",
        settings=SYNC,
    )


def runs(client: Client, database: str) -> list[dict[str, Any]]:
    """The recorded runs, oldest first: id, outcome, start and end (epoch seconds)."""
    found = client.query(
        "SELECT run_id, outcome, toUnixTimestamp64Milli(started_at) / 1000, "
        f"toUnixTimestamp64Milli(finished_at) / 1000 FROM {database}._tablerefresh_runs ORDER BY started_at"
    ).result_rows
    return [{"runId": r[0], "outcome": r[1], "started": float(r[2]), "finished": float(r[3])} for r in found]


def keys(client: Client, database: str) -> dict[str, int]:
    """Rows and distinct unique keys of the target."""
    rows, distinct = client.query(f"SELECT count(), uniqExact(id) FROM {database}.positions").result_rows[0]
    return {"rows": int(rows), "keys": int(distinct)}


def open_rows(client: Client, database: str) -> int:
    """Rows of the open slice (one partition: resolved_at NULL) of the target."""
    return int(client.query(f"SELECT count() FROM {database}.positions WHERE resolved_at IS NULL").result_rows[0][0])
