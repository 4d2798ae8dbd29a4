"""A per-target lock held in ClickHouse itself, so it works with or without Kubernetes.

The lock is a table: ``CREATE TABLE`` either creates it or fails because it exists, which makes
acquiring atomic on any ClickHouse. Its comment names the owner; the owner inserts heartbeat rows
while it runs. A lock whose newest heartbeat (by the server's clock) is older than the TTL belongs
to a dead run and is taken over. Takeover is serialised by creating a marker table named after the
stale lock's UUID, so two contenders cannot both remove it, nor remove a fresh lock by mistake.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tablerefresh.dataplane import sql
from tablerefresh.dataplane.errors import InvalidInput, LockHeld, LockLost

log = logging.getLogger(__name__)

LOCK_PREFIX = "_tablerefresh_lock__"
TAKEOVER_PREFIX = "_tablerefresh_takeover__"
_OWNER = re.compile(r"[A-Za-z0-9._:@\-]{1,200}")
_TABLE_EXISTS = 57
_UNKNOWN_TABLE = 60


@dataclass(frozen=True)
class Holder:
    owner: str
    uuid: str
    idle_seconds: float


class TableLock:
    """``with TableLock(...):`` holds the lock on ``database.target`` and heartbeats until exit."""

    def __init__(
        self,
        connect: Callable[[], Client],
        database: str,
        target: str,
        owner: str,
        *,
        ttl_seconds: float = 120.0,
        heartbeat_seconds: float = 10.0,
    ) -> None:
        if not _OWNER.fullmatch(owner):
            raise InvalidInput(f"invalid lock owner {owner!r}")
        self._connect = connect
        self._client = connect()
        self.database = database
        self.name = LOCK_PREFIX + target
        self.owner = owner
        self.ttl = ttl_seconds
        self.heartbeat_every = heartbeat_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    @property
    def table(self) -> str:
        return sql.table(self.database, self.name)

    def __enter__(self) -> TableLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> Holder | None:
        rows = self._client.query(
            "SELECT comment, toString(uuid), dateDiff('millisecond', metadata_modification_time, now64(3)) "
            "FROM system.tables WHERE database = {db:String} AND name = {name:String}",
            parameters={"db": self.database, "name": self.name},
        ).result_rows
        if not rows:
            return None
        owner, uuid, created_ms = rows[0]
        try:
            # An empty lock (its owner died before the first beat) counts from its creation.
            beat_ms = self._client.query(
                f"SELECT dateDiff('millisecond', max(heartbeat), now64(3)) FROM {self.table}"
            ).result_rows[0][0]
        except DatabaseError as exc:
            if getattr(exc, "code", None) == _UNKNOWN_TABLE:
                return None
            raise
        return Holder(owner, uuid, min(float(created_ms), float(beat_ms)) / 1000)

    def acquire(self) -> None:
        for _ in range(3):
            if self._try_create():
                self._beat()
                self._start_heartbeat()
                log.info("lock %s.%s taken by %s", self.database, self.name, self.owner)
                return
            holder = self.holder()
            if holder is None:
                continue  # released between our CREATE and our look: try again
            if holder.idle_seconds <= self.ttl:
                raise LockHeld(
                    f"another run holds the lock on {self.database}.{self.name[len(LOCK_PREFIX) :]}: "
                    f"{holder.owner}, last heartbeat {holder.idle_seconds:.0f}s ago (expires after {self.ttl:.0f}s)"
                )
            self._take_over(holder)
        raise LockHeld(f"could not take the lock {self.database}.{self.name}: contended")

    def assert_held(self) -> None:
        """Fencing before an irreversible step: the lock must still be ours."""
        holder = self.holder()
        if self.lost or holder is None or holder.owner != self.owner:
            self.lost = True
            raise LockLost(
                f"lost the lock on {self.database}.{self.name} "
                f"(now held by {holder.owner if holder else 'nobody'}); nothing was swapped"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        holder = self.holder()
        if holder is not None and holder.owner == self.owner:
            self._client.command(f"DROP TABLE IF EXISTS {self.table} SYNC")
            log.info("lock %s.%s released", self.database, self.name)

    # -- internals ---------------------------------------------------------------------------

    def _try_create(self) -> bool:
        try:
            # The owner is validated above, so it can stand in the COMMENT literal, which takes no parameter.
            self._client.command(
                f"CREATE TABLE {self.table} (owner String, heartbeat DateTime64(3)) "
                f"ENGINE = MergeTree ORDER BY heartbeat COMMENT '{self.owner}'"
            )
            return True
        except DatabaseError as exc:
            if getattr(exc, "code", None) == _TABLE_EXISTS:
                return False
            raise

    def _take_over(self, stale: Holder) -> None:
        marker = sql.table(self.database, TAKEOVER_PREFIX + stale.uuid.replace("-", ""))
        try:
            self._client.command(f"CREATE TABLE {marker} (x UInt8) ENGINE = Memory")
        except DatabaseError as exc:
            if getattr(exc, "code", None) == _TABLE_EXISTS:
                return  # another contender is taking this stale lock over
            raise
        current = self.holder()
        if current is not None and current.uuid == stale.uuid:
            log.warning(
                "taking over the lock %s.%s from %s, silent for %.0fs",
                self.database,
                self.name,
                stale.owner,
                stale.idle_seconds,
            )
            self._client.command(f"DROP TABLE IF EXISTS {self.table} SYNC")

    def _beat(self) -> None:
        self._client.command(
            f"INSERT INTO {self.table} SELECT {{owner:String}}, now64(3)",
            parameters={"owner": self.owner},
            settings={"insert_deduplicate": 0},
        )

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="lock-heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat_loop(self) -> None:
        client = self._connect()  # a client of its own: the run's client is busy with long queries
        try:
            while not self._stop.wait(self.heartbeat_every):
                rows = client.query(
                    "SELECT comment FROM system.tables WHERE database = {db:String} AND name = {name:String}",
                    parameters={"db": self.database, "name": self.name},
                ).result_rows
                if not rows or rows[0][0] != self.owner:
                    self.lost = True
                    log.error("lock %s.%s was taken from us", self.database, self.name)
                    return
                client.command(
                    f"INSERT INTO {self.table} SELECT {{owner:String}}, now64(3)",
                    parameters={"owner": self.owner},
                    settings={"insert_deduplicate": 0},
                )
        except Exception:  # a heartbeat that fails lets the lock expire; the swap's fencing catches it
            log.exception("lock heartbeat failed")
        finally:
            client.close()
