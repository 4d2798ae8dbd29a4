"""What every command that changes a target shares with the refresh: its lock, and its record."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import catalog
from tablerefresh.dataplane.infra.catalog import TableInfo
from tablerefresh.dataplane.infra.errors import LockHeld
from tablerefresh.dataplane.infra.lock import TableLock, target_lock
from tablerefresh.spec import TableRefreshSpec


def new_run_id(kind: str = "run", now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{kind}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def owner_of(run_id: str) -> str:
    """Who holds a lock: the run, and where it runs, so a human can find it."""
    return re.sub(r"[^A-Za-z0-9._:@-]", "_", f"{run_id}@{socket.gethostname()}:{os.getpid()}")[:200]


@dataclass
class Locked:
    client: Client
    target: TableInfo
    lock: TableLock


@contextmanager
def locked_target(
    connect: Callable[[], Client], spec: TableRefreshSpec, run_id: str, *, ttl_seconds: float = 120.0
) -> Iterator[Locked]:
    """The target described and locked, as a refresh would hold it; refused while another run holds it."""
    client = connect()
    try:
        target = catalog.describe_table(client, spec.clickhouse.database, spec.target.table)
        with target_lock(
            connect, spec.clickhouse.database, target.name, owner_of(run_id), ttl_seconds=ttl_seconds
        ) as lock:
            yield Locked(client, target, lock)
    finally:
        client.close()


def refuse_while_locked(client: Client, spec: TableRefreshSpec, *, ttl_seconds: float = 120.0) -> None:
    """Read-only commands answer only while no run is changing the target under them."""
    lock = target_lock(lambda: client, spec.clickhouse.database, spec.target.table, "reader", ttl_seconds=ttl_seconds)
    holder = lock.holder()
    if holder is not None and holder.idle_seconds <= ttl_seconds:
        raise LockHeld(
            f"{spec.clickhouse.database}.{spec.target.table} is locked by {holder.owner}; try again when it is done"
        )
