"""Run in a subprocess by the incremental crash tests (each process owns its chDB engine path).

python -m tests.incremental_crash_helper setup PATH DB MANIFEST   # tables, source, an incremental manifest
python -m tests.incremental_crash_helper change PATH DB N         # change N: new values, resolutions

``tests.crash_helper`` probes the target and computes the expected rows, as for full runs.
"""

from __future__ import annotations

import sys

import clickhouse_connect

from tests import refresh_fixtures as fx

# Each change touches other ids, and bumps updated_at, which is how the changed-keys query sees it.
CHANGES = {
    "1": ("value = value + 1", "id % 3 = 0", "id % 7 = 0"),
    "2": ("value = value + 5", "id % 5 = 1", "id % 11 = 1"),
}


def main(argv: list[str]) -> None:
    command, path, database = argv[:3]
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    if command == "setup":
        spec = fx.incremental_spec(database)
        fx.set_up_engine(client, path, database, spec, name="crash-incremental", rows=20_000, manifest=argv[3])
    elif command == "change":
        client.database = database
        update, which, resolving = CHANGES[argv[3]]
        sync = {"mutations_sync": 2}
        client.command(f"ALTER TABLE src UPDATE {update}, updated_at = now() WHERE {which}", settings=sync)
        client.command(
            f"ALTER TABLE src UPDATE resolved_at = now(), updated_at = now() WHERE resolved_at IS NULL AND {resolving}",
            settings=sync,
        )
    client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
