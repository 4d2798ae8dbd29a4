"""A per-target lock held in ClickHouse itself, so it works with or without Kubernetes.

The lock is a table: ``CREATE TABLE`` either creates it or fails because it exists, which makes
acquiring atomic on any ClickHouse. Its comment names the owner; the owner inserts heartbeat rows
while it runs. A lock whose newest heartbeat (by the server's clock) is older than the TTL belongs
to a dead run and is taken over.

Rules that keep it from wedging or from being stolen:
- Takeover is serialised by a marker table named after the stale lock's identity (owner, UUID,
  creation time: an Ordinary database gives every table the zero UUID). Only the contender that
  creates the marker may drop the stale lock, and only if the lock is still that same one. The
  marker is dropped when the takeover is done; a marker older than the TTL belongs to a contender
  that died and is itself dropped; the next holder drops every marker of its target.
- The heartbeat retries failed beats. A lock whose last good beat is older than TTL/2 counts as
  lost, for good: another run may take it over at the TTL, so the run must not swap. So it beats at
  least every TTL/6, whatever interval it is given: two beats may fail before the lock is lost.
- Release drops the lock only while the last good beat is fresh, so no contender can have taken it
  over in between. A lost lock is left to expire.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tablerefresh.dataplane.infra import names, sql
from tablerefresh.dataplane.infra.connection import reconnect, unanswered
from tablerefresh.dataplane.infra.errors import InvalidInput, LockHeld, LockLost, one_line
from tablerefresh.dataplane.infra.failpoints import failpoint

log = logging.getLogger(__name__)

LOCK_PREFIX = "_tablerefresh_lock__"
TAKEOVER_PREFIX = "_tablerefresh_takeover__"
_OWNER = re.compile(r"[A-Za-z0-9._:@\-]{1,200}")
_TABLE_EXISTS = 57
_UNKNOWN_TABLE = 60
_ATTEMPTS = 5
_BEATS_PER_TTL = 6  # at least: the lock is lost (TTL/2) only after two beats in a row fail


@dataclass(frozen=True)
class Holder:
    owner: str
    uuid: str
    created: str  # the lock table's metadata time, as the server shows it
    idle_seconds: float

    @property
    def identity(self) -> str:
        """Tells this lock from any later one on the same target, whatever the database engine."""
        return f"{self.owner}|{self.uuid}|{self.created}"


def takeover_prefix(target: str) -> str:
    return f"{TAKEOVER_PREFIX}{names.target_tag(target)}_"


def takeover_marker(target: str, stale: Holder) -> str:
    return takeover_prefix(target) + hashlib.sha256(stale.identity.encode()).hexdigest()[:16]


def target_lock(
    connect: Callable[[], Client], database: str, target: str, owner: str, *, ttl_seconds: float = 120.0
) -> TableLock:
    """The lock on ``database.target`` as every run and command takes it (or asks who holds it):
    heartbeats every TTL/12, at least every second, so no caller picks an interval of its own."""
    return TableLock(
        connect, database, target, owner, ttl_seconds=ttl_seconds, heartbeat_seconds=max(1.0, ttl_seconds / 12)
    )


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _OWNER.fullmatch(owner):
            raise InvalidInput(f"invalid lock owner {owner!r}")
        self._connect = connect
        self._client = connect()
        self.database = database
        self.target = target
        self.name = LOCK_PREFIX + target
        self.owner = owner
        self.ttl = ttl_seconds
        # An interval of TTL/2 or more would find the lock lost each time it wakes, before it beats.
        self.heartbeat_every = min(heartbeat_seconds, ttl_seconds / _BEATS_PER_TTL)
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat = float("-inf")
        self._taken = False  # another run's lock stands where ours was
        self._unanswered: Exception | None = None  # the last CREATE whose answer did not arrive

    @property
    def table(self) -> str:
        return sql.table(self.database, self.name)

    @property
    def lost(self) -> bool:
        """True once the lock was taken from us, or our beats stopped landing for TTL/2."""
        return self._taken or self.beat_age > self.ttl / 2

    @property
    def beat_age(self) -> float:
        """Seconds since the last heartbeat that landed."""
        return self._clock() - self._last_beat

    def __enter__(self) -> TableLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        # Never raises: an error here must not replace the run's own outcome. A lock left behind
        # expires after the TTL.
        try:
            self.release()
        except Exception as error:
            log.error("could not release the lock %s.%s: %s", self.database, self.name, one_line(error))

    def holder(self) -> Holder | None:
        rows = self._client.query(
            "SELECT comment, toString(uuid), toString(metadata_modification_time), "
            "dateDiff('millisecond', metadata_modification_time, now64(3)) "
            "FROM system.tables WHERE database = {db:String} AND name = {name:String}",
            parameters={"db": self.database, "name": self.name},
        ).result_rows
        if not rows:
            return None
        owner, uuid, created, created_ms = rows[0]
        try:
            # An empty lock (its owner died before the first beat) counts from its creation.
            beat_ms = self._client.query(
                f"SELECT dateDiff('millisecond', max(heartbeat), now64(3)) FROM {self.table}"
            ).result_rows[0][0]
        except DatabaseError as exc:
            if getattr(exc, "code", None) == _UNKNOWN_TABLE:
                return None
            raise
        return Holder(owner, uuid, created, min(float(created_ms), float(beat_ms)) / 1000)

    def acquire(self) -> None:
        for _ in range(_ATTEMPTS):
            created = self._try_create()
            holder = None if created else self.holder()
            if created or (holder is not None and holder.owner == self.owner):
                if not created:  # our CREATE ran, but its answer did not arrive
                    log.warning("lock %s.%s was created by this run: it holds it", self.database, self.name)
                self._hold()
                log.info("lock %s.%s taken by %s", self.database, self.name, self.owner)
                return
            if holder is None:
                continue  # released between our CREATE and our look, or our CREATE never arrived: try again
            if holder.idle_seconds <= self.ttl:
                raise LockHeld(
                    f"another run holds the lock on {self.database}.{self.target}: "
                    f"{holder.owner}, last heartbeat {holder.idle_seconds:.0f}s ago (expires after {self.ttl:.0f}s)"
                )
            self._take_over(holder)
        if self._unanswered is not None:  # not contended: our CREATEs never arrived
            raise self._unanswered
        raise LockHeld(f"could not take the lock {self.database}.{self.name}: contended")

    def assert_held(self) -> None:
        """Fencing before an irreversible step: the lock must still be ours, its last beat fresh."""
        if not self.lost:
            holder = self.holder()
            if holder is not None and holder.owner == self.owner:
                return
            self._taken = True
            now_held = holder.owner if holder else "nobody"
            raise LockLost(
                f"lost the lock on {self.database}.{self.name} (now held by {now_held}); nothing was swapped"
            )
        raise LockLost(
            f"lost the lock on {self.database}.{self.name}: "
            + ("another run took it over" if self._taken else f"no heartbeat landed for {self.beat_age:.0f}s")
            + "; nothing was swapped"
        )

    def release(self) -> None:
        """Drop the lock if it is surely ours. A drop whose answer did not arrive is looked at again
        on a new connection (``DROP … IF EXISTS`` of a lock still ours is safe to send twice): a lock
        left behind would stop every run until its TTL."""
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None
        for attempt in (1, 2):
            if self.lost:
                log.warning("lock %s.%s is not surely ours any more: leaving it to expire", self.database, self.name)
                return
            try:
                holder = self.holder()
                if holder is not None and holder.owner == self.owner:
                    self._client.command(f"DROP TABLE IF EXISTS {self.table} SYNC")
                    log.info("lock %s.%s released", self.database, self.name)
                return
            except DatabaseError as exc:
                if attempt == 2 or not unanswered(exc):
                    raise
                log.warning(
                    "releasing the lock %s.%s: %s; once more on a new connection",
                    self.database,
                    self.name,
                    one_line(exc),
                )
                self._renew_client()

    # -- internals ---------------------------------------------------------------------------

    def _try_create(self) -> bool:
        """True when this CREATE made the lock; False when a table stands there, or when the answer
        did not arrive (the caller then looks, on a new connection, whose lock stands there)."""
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
            if not unanswered(exc):
                raise
            log.warning(
                "the answer to the lock's CREATE did not arrive (%s): looking on a new connection", one_line(exc)
            )
            self._unanswered = exc
            self._renew_client()
            return False

    def _hold(self) -> None:
        """The lock is ours: its first beat, the dead takeovers' markers, the heartbeat. If that
        fails the run cannot go on, and a lock left behind would stop every run until its TTL."""
        try:
            self._beat(self._client)
            self._drop_markers()
        except Exception:
            try:
                self._renew_client()
                holder = self.holder()
                if holder is not None and holder.owner == self.owner:
                    self._client.command(f"DROP TABLE IF EXISTS {self.table} SYNC")
            except Exception as exc:
                log.error("could not drop the lock %s.%s: %s", self.database, self.name, one_line(exc))
            raise
        self._start_heartbeat()

    def _renew_client(self) -> None:
        """A new client in place of the one whose request failed."""
        old = self._client
        self._client = reconnect(self._connect)
        if old is not self._client:
            _close(old)

    def _take_over(self, stale: Holder) -> None:
        name = takeover_marker(self.target, stale)
        marker = sql.table(self.database, name)
        try:
            self._client.command(f"CREATE TABLE {marker} (x UInt8) ENGINE = Memory")
            failpoint("takeover-marked")
        except DatabaseError as exc:
            if getattr(exc, "code", None) != _TABLE_EXISTS:
                raise
            age = self._table_age(name)
            if age is not None and age > self.ttl:
                log.warning("dropping %s.%s, left by a takeover that did not finish", self.database, name)
                self._client.command(f"DROP TABLE IF EXISTS {marker} SYNC")
            return  # otherwise another contender is taking this stale lock over
        try:
            current = self.holder()
            if current is not None and current.identity == stale.identity:
                log.warning(
                    "taking over the lock %s.%s from %s, silent for %.0fs",
                    self.database,
                    self.name,
                    stale.owner,
                    stale.idle_seconds,
                )
                self._client.command(f"DROP TABLE IF EXISTS {self.table} SYNC")
        finally:
            self._client.command(f"DROP TABLE IF EXISTS {marker} SYNC")

    def _table_age(self, name: str) -> float | None:
        rows = self._client.query(
            "SELECT dateDiff('millisecond', metadata_modification_time, now64(3)) FROM system.tables "
            "WHERE database = {db:String} AND name = {name:String}",
            parameters={"db": self.database, "name": name},
        ).result_rows
        return float(rows[0][0]) / 1000 if rows else None

    def _drop_markers(self) -> None:
        """Markers of takeovers that died. Safe while we hold the lock: each names a lock that is gone."""
        rows = self._client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {p:String})",
            parameters={"db": self.database, "p": takeover_prefix(self.target)},
        ).result_rows
        for (name,) in rows:
            log.warning("dropping %s.%s, left by a takeover that did not finish", self.database, name)
            self._client.command(f"DROP TABLE IF EXISTS {sql.table(self.database, name)} SYNC")

    def _beat(self, client: Client) -> None:
        client.command(
            f"INSERT INTO {self.table} SELECT {{owner:String}}, now64(3)",
            parameters={"owner": self.owner},
            settings={"insert_deduplicate": 0},
        )
        self._last_beat = self._clock()

    def _still_ours(self, client: Client) -> bool:
        rows = client.query(
            "SELECT comment FROM system.tables WHERE database = {db:String} AND name = {name:String}",
            parameters={"db": self.database, "name": self.name},
        ).result_rows
        return bool(rows) and rows[0][0] == self.owner

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="lock-heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat_loop(self) -> None:
        client: Client | None = None  # its own client: the run's client is busy with long queries
        try:
            while not self._stop.wait(self.heartbeat_every):
                if self.lost:
                    log.error("lock %s.%s lost: no heartbeat landed for %.0fs", self.database, self.name, self.beat_age)
                    return
                try:
                    failpoint("heartbeat")
                    client = client or self._connect()
                    if not self._still_ours(client):
                        self._taken = True
                        log.error("lock %s.%s was taken from us", self.database, self.name)
                        return
                    self._beat(client)
                except Exception as exc:  # a blip: retry on the next beat, with a new connection
                    log.warning("lock heartbeat failed, retrying: %s", one_line(exc))
                    if client is not None:
                        _close(client)
                    client = None
        finally:
            if client is not None:
                _close(client)


def _close(client: Client) -> None:
    try:
        client.close()
    except Exception as exc:
        log.debug("closing the heartbeat's client: %s", one_line(exc))
