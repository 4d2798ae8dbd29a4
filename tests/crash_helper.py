"""Run in a subprocess by the crash tests: each process owns its own chDB engine path.

python -m tests.crash_helper setup PATH DB MANIFEST   # tables, source, a first run, then new source data
python -m tests.crash_helper probe PATH DB            # JSON: target checksum, tables beside it
python -m tests.crash_helper expected PATH DB         # JSON: checksum of what the source yields now
"""

from __future__ import annotations

import json
import sys

import clickhouse_connect

from tests import refresh_fixtures as fx


def main(argv: list[str]) -> None:
    command, path, database = argv[:3]
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    if command == "setup":
        fx.set_up_engine(client, path, database, fx.spec(database), name="crash", rows=50_000, manifest=argv[3])
        client.close()
        return
    client.database = database
    if command == "probe":
        tables = sorted(
            r[0] for r in client.query(f"SELECT name FROM system.tables WHERE database = '{database}'").result_rows
        )
        print(json.dumps({"checksum": fx.checksum(client, "positions"), "tables": tables}))
    elif command == "expected":
        rows = client.query(
            f"SELECT count(), sum(cityHash64(*)) FROM ({fx.SOURCE})",
            parameters={"window_start": int(argv[3])},
        ).result_rows[0]
        print(json.dumps({"checksum": [int(rows[0]), int(rows[1] or 0)]}))
    elif command == "change":
        client.command("ALTER TABLE src UPDATE value = value + 1 WHERE id % 3 = 0", settings={"mutations_sync": 2})
        client.command(
            "ALTER TABLE src UPDATE resolved_at = now() WHERE resolved_at IS NULL AND id % 7 = 0",
            settings={"mutations_sync": 2},
        )
    client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
