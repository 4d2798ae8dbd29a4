"""A reader of the target and the operator's health query, each in a process of its own, in a loop
until a stop file appears; then one JSON line of what they saw.

python -m tests.readers reader MANIFEST STOP_FILE   # the open slice (one partition) and the slice
python -m tests.readers health MANIFEST STOP_FILE   # tablerefresh.dataplane.health.measure

They connect as the refresh does, to the manifest's URL with ``CLICKHOUSE_USER`` and
``CLICKHOUSE_PASSWORD``. An error is recorded, not raised: the loop goes on.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.health import measure
from tablerefresh.dataplane.infra.connection import connect
from tablerefresh.dataplane.infra.errors import one_line
from tablerefresh.spec import load_manifest


def main(argv: list[str]) -> None:
    kind, manifest, stop = argv
    spec = load_manifest(manifest).spec
    client = connect(spec.clickhouse.url, database=spec.clickhouse.database)
    target = f"{spec.clickhouse.database}.{spec.target.table}"
    seen: dict[str, Any] = {"loops": 0, "errors": [], "openRows": [], "sliceRows": [], "openDuplicates": 0}
    ready = Path(stop).with_suffix(f".{kind}.ready")
    while not Path(stop).exists():
        try:
            if kind == "reader":
                open_rows, open_keys = client.query(
                    f"SELECT count(), uniqExact(id) FROM {target} WHERE resolved_at IS NULL"
                ).result_rows[0]
                slice_rows = client.query(
                    f"SELECT count() FROM {target} WHERE {spec.slice.predicate}",
                    parameters={"window_start": int(time.time()) - 24 * 3600},
                ).result_rows[0][0]
                seen["openRows"].append(int(open_rows))
                seen["openDuplicates"] = max(seen["openDuplicates"], int(open_rows) - int(open_keys))
            else:
                slice_rows = measure(client, spec).slice_rows
            seen["sliceRows"].append(int(slice_rows))
        except Exception as exc:  # recorded for the test to see
            seen["errors"].append(one_line(exc))
        seen["loops"] += 1
        ready.touch()
    client.close()
    summary = {
        "loops": seen["loops"],
        "errors": seen["errors"][:5],
        "errorCount": len(seen["errors"]),
        "minSliceRows": min(seen["sliceRows"], default=None),
        "sliceRowsSeen": sorted(set(seen["sliceRows"])),
        "minOpenRows": min(seen["openRows"], default=None),
        "openRowsSeen": sorted(set(seen["openRows"])),
        "openDuplicates": seen["openDuplicates"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])


ROWS = 400_000


class Reader:
    """Polls the target from its own client, as a dashboard would, until stopped."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.open: list[tuple[int, float]] = []
        self.totals: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop)

    def _loop(self) -> None:
        while not self._stop.is_set():
            open_rows, open_value, total = self.client.query(SEEN).result_rows[0]
            self.open.append((int(open_rows), round(float(open_value or 0), 2)))
            self.totals.append(int(total))

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def snapshot(client: Client) -> tuple[tuple[int, float], int]:
    open_rows, open_value, total = client.query(SEEN).result_rows[0]
    return (int(open_rows), round(float(open_value or 0), 2)), int(total)


# The open slice (its rows and their sum) and the whole table's rows, from one read of the table: one
# instant. Counted by reading, not from the parts' metadata: the engine's "trivial count" decides
# whether it may trust part row counts before it reads the parts, so a swap that brings a table its
# first lightweight-delete masks in between makes a bare count() include masked rows
# (docs/incremental.md).
SEEN = "SELECT countIf(resolved_at IS NULL), sumIf(value, resolved_at IS NULL), count() FROM positions"
