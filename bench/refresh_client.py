"""One refresh run in a process of its own: what ``bench.refresh --server``, ``bench.incremental
--server`` and ``bench.scale`` time (``bench/server.py``).

    python -m bench.refresh_client < REQUEST.json      # prints one JSON line

The request holds ``url`` (``clickhouse://HOST:PORT``, a client of a server as a Job is, or
``chdb://PATH``, the engine in this process), ``spec`` (a TableRefresh spec, as in a manifest),
``source``, ``run_time`` (ISO 8601), ``full`` and ``run_id``. The credentials come from
``CLICKHOUSE_USER`` and ``CLICKHOUSE_PASSWORD``, as a Job has them. It connects as ``tablerefresh
refresh`` does and runs the same ``Refresh``, with a run time of the benchmark's choosing (which
the command does not take). The answer: ``record`` (the run's record), ``cpu`` (this process's user
and system seconds during the run), ``process_cpu`` (the same, its start-up included: imports take
about half a second) and ``rss_mb`` (its peak resident set, the Python interpreter and every module
a run imports included).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
from datetime import datetime

from clickhouse_connect.driver.client import Client

from bench.server import record_to_json
from tablerefresh.dataplane.infra.connection import connect, env_secrets
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.refresh import Refresh
from tablerefresh.spec import TableRefreshSpec


def main() -> None:
    request = json.loads(sys.stdin.read())
    spec = TableRefreshSpec.model_validate(request["spec"])
    url: str = request["url"]

    def client_factory() -> Client:
        return connect(url, database=spec.clickhouse.database, settings=spec.clickhouse.settings)

    run_id = request["run_id"]
    options = RunOptions(
        run_id=run_id,
        owner=f"{run_id}@{socket.gethostname()}:{os.getpid()}",
        run_time=datetime.fromisoformat(request["run_time"]),
        force_full=bool(request["full"]),
        secrets=env_secrets(),
    )
    started = _cpu()
    record = Refresh(spec, client_factory, request["source"], options).run()
    answer = {
        "record": record_to_json(record),
        "cpu": _cpu() - started,
        "process_cpu": _cpu(),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(answer), flush=True)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
