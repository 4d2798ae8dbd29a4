"""Run SQL on an embedded engine path from a process of its own (the tests' process keeps off it).

python -m tests.chdb_helper PATH STATEMENT [STATEMENT ...]   # runs each; prints the last one's rows as JSON

It connects the way the operator and the refresh do (``tablerefresh.dataplane.connection``), so it
waits its turn while a refresh Job or a health check has the path open.
"""

from __future__ import annotations

import json
import sys

from tablerefresh.dataplane.connection import connect


def main(argv: list[str]) -> None:
    path, *statements = argv
    client = connect(f"chdb://{path}", connect_timeout=120)
    try:
        rows: list[list[object]] = []
        for statement in statements:
            result = client.query(statement)
            rows = [list(r) for r in result.result_rows]
        print(json.dumps(rows, default=str))
    finally:
        client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
