"""What the health and run-outcome tests share: the operator in this process (the harness's ``operator``),
a TableRefresh over a chDB table of the session's engine, and reads of status, Events and metrics.

chDB cannot be stopped from inside the process that runs it, and the operator must run in the
tests' process to share its engine; so "ClickHouse unreachable" is a TableRefresh pointed at a
closed loopback port (``UNREACHABLE_URL``) and back, not a server going down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from tablerefresh.controller.runtime import status_writer
from tests.harness.kube import GROUP, VERSION, Kube, condition

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE_URL = "clickhouse://127.0.0.1:9"  # the discard port: nothing listens, connect is refused
TABLE = "trades"


# The target table.


@dataclass
class Target:
    ch: Client
    database: str
    url: str

    def fill(self, rows: int, *, age_seconds: int = 0, first_id: int = 0) -> None:
        """``rows`` rows, the newest ``age_seconds`` old, one second apart."""
        self.ch.command(
            f"INSERT INTO {self.database}.{TABLE} SELECT {first_id} + number, "
            f"now() - {age_seconds} - number, 0 FROM numbers({rows})"
        )

    def command(self, sql: str, **settings: Any) -> None:
        self.ch.command(sql, settings=settings or None)


@pytest.fixture
def target(ch: Client, database: str, chdb_url: str) -> Iterator[Target]:
    """A fresh ``trades`` table (id, entry_time, v) with 100 rows from the last two minutes."""
    ch.command(
        f"CREATE TABLE {database}.{TABLE} (id UInt64, entry_time DateTime('UTC'), v UInt64) "
        "ENGINE = MergeTree ORDER BY id"
    )
    made = Target(ch, database, chdb_url)
    made.fill(100)
    yield made
    # Failing mutations retry in the background for as long as they exist: stop them.
    ch.command(f"KILL MUTATION WHERE database = '{database}'")


def tablerefresh(namespace: str, name: str, target: Target, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schedule": "0 */6 * * *",
        "clickhouse": {"url": target.url, "database": target.database},
        "target": {"table": TABLE},
        "slice": {"predicate": "entry_time >= {window_start:DateTime}"},
        "source": {"query": f"SELECT id, entry_time, v FROM {target.database}.{TABLE}"},
        "window": "24h",
        "uniqueKey": ["id"],
        "freshnessColumn": "entry_time",
        "thresholds": {"maxStaleHours": 1, "maxDuplicates": 0, "minSliceRows": 0},
        "healthCheck": {"interval": "1s"},
        "mutations": {"maxPending": "1s"},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TableRefresh",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


# Reading what the operator wrote.


def has(api: Kube, ns: str, name: str, type_: str, status: str) -> dict[str, Any] | None:
    """The object once its condition ``type_`` has ``status``."""
    tr = api.tr(ns, name)
    return tr if condition(tr, type_).get("status") == status else None


def checked_and_ready(api: Kube, ns: str, name: str) -> dict[str, Any] | None:
    """The object once a health check has judged it and Ready=True (the reconciler alone can say True)."""
    tr = api.tr(ns, name)
    judged = condition(tr, "Fresh") and (tr.get("status") or {}).get("health")
    return tr if judged and condition(tr, "Ready").get("status") == "True" else None


def sample(metric: str, ns: str, name: str, **labels: str) -> float | None:
    """A per-object series of the operator's metrics (it runs in this process, on the default registry)."""
    value: float | None = REGISTRY.get_sample_value(metric, {"namespace": ns, "name": name, "table": TABLE, **labels})
    return value


class Writes:
    """The status writer's line for each write, Events included (see ``StatusWriter.write``): a
    signal that a write is done, where "nothing happened" is what a test asserts."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog
        caplog.set_level(logging.DEBUG, logger=status_writer.log.name)

    def of(self, ns: str, name: str, source: str) -> list[str]:
        """What the writes of ``source`` (health, runs, reconcile, run-now) to the object said: applied or unchanged."""
        prefix = f"{ns}/{name}: {source} status "
        lines = [r.getMessage() for r in list(self._caplog.records) if r.name == status_writer.log.name]
        return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


@pytest.fixture
def writes(caplog: pytest.LogCaptureFixture) -> Writes:
    return Writes(caplog)
