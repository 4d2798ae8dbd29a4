"""The target's lock at its edges, on the real engine: contended takeovers, takeovers that die,
databases without table UUIDs, heartbeats that fail, and locks that must never be stolen back.

On both engines. On the served one, the contenders here are clients of one process; separate
processes contend in ``tests/test_concurrent_processes.py`` (CI runs that, and the slowest two here
only in the full matrix)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import names
from tablerefresh.dataplane.infra.errors import ExitCode, LockHeld, LockLost
from tablerefresh.dataplane.infra.failpoints import ENV as FAILPOINT
from tablerefresh.dataplane.infra.lock import LOCK_PREFIX, TAKEOVER_PREFIX, TableLock
from tablerefresh.dataplane.run.runs import Outcome
from tests import refresh_fixtures as fx
from tests.engines import EMBEDDED, SERVED, full_matrix

Connect = Callable[[], Client]
TTL = 2.0
# Long enough that a winner whose heartbeat is starved on a loaded machine is not taken for dead
# during the round (seen in CI with 1 s): that takeover would be a second, legitimate win.
CONTENDED_TTL = 4.0
pytestmark = pytest.mark.engines()


def stale_lock(ch: Client, database: str, owner: str = "crashed-run@host:1", ttl: float = TTL) -> None:
    """What a run SIGKILLed while holding the lock leaves: the table, a last beat long ago. The
    lock's age counts from its creation too, so it is stale once ``ttl`` has passed."""
    table = f"{database}.{LOCK_PREFIX}positions"
    ch.command(
        f"CREATE TABLE {table} (owner String, heartbeat DateTime64(3)) ENGINE = MergeTree ORDER BY heartbeat "
        f"COMMENT '{owner}'"
    )
    ch.command(f"INSERT INTO {table} SELECT '{owner}', now64(3) - 3600")
    time.sleep(ttl + 0.2)


def ours(ch: Client, database: str) -> list[str]:
    return sorted(
        r[0]
        for r in ch.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, '_tablerefresh_')",
            parameters={"db": database},
        ).result_rows
    )


def lock(
    connect: Connect, database: str, owner: str, clock: Callable[[], float] = time.monotonic, ttl: float = TTL
) -> TableLock:
    return TableLock(connect, database, "positions", owner, ttl_seconds=ttl, heartbeat_seconds=ttl / 10, clock=clock)


@pytest.mark.engines(EMBEDDED, full_matrix(SERVED))
def test_contenders_for_a_stale_lock_one_wins_and_nothing_is_left(ch: Client, connect: Connect, database: str) -> None:
    def contend(owner: str, start: threading.Barrier, won: list[TableLock], refused: list[str]) -> None:
        contender = lock(connect, database, owner, ttl=CONTENDED_TTL)
        start.wait()
        try:
            contender.acquire()
            won.append(contender)
        except LockHeld as exc:
            refused.append(str(exc))

    for round_ in range(4):
        stale_lock(ch, database, ttl=CONTENDED_TTL)
        start = threading.Barrier(3)
        won: list[TableLock] = []
        refused: list[str] = []
        threads = [threading.Thread(target=contend, args=(f"run-{round_}-{i}", start, won, refused)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert len(won) == 1, (won, refused)
        assert len(refused) == 2
        assert ours(ch, database) == [LOCK_PREFIX + "positions"]  # no takeover marker is left
        won[0].release()
        assert ours(ch, database) == []


@pytest.mark.engines(EMBEDDED, full_matrix(SERVED))
def test_takeover_works_without_table_uuids(ch: Client, connect: Connect) -> None:
    # An Ordinary database gives every table the zero UUID: a marker named after it would be
    # the same for every stale lock, and the first one left would block all later takeovers.
    database = "t_ordinary_lock"
    ch.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    ch.command(f"CREATE DATABASE {database} ENGINE = Ordinary", settings={"allow_deprecated_database_ordinary": 1})
    try:
        for i in range(3):
            stale_lock(ch, database, owner=f"crashed-{i}@host:1")
            taker = lock(connect, database, f"taker-{i}")
            taker.acquire()
            assert taker.holder() is not None and taker.holder().owner == f"taker-{i}"  # type: ignore[union-attr]
            taker._stop.set()  # dies holding it: the next round finds a stale lock again
            ch.command(f"DROP TABLE {database}.{LOCK_PREFIX}positions SYNC")
        assert ours(ch, database) == []
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def test_a_takeover_marker_older_than_the_ttl_is_taken_over(ch: Client, connect: Connect, database: str) -> None:
    # A contender that died right after creating its marker: in process, the failpoint raises
    # where the real one would kill (tests/test_crash.py kills a real process there).
    stale_lock(ch, database)
    first = lock(connect, database, "dies-mid-takeover")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAILPOINT, "takeover-marked=error")
        with pytest.raises(Exception, match="injected failure at takeover-marked"):
            first.acquire()
    markers = [t for t in ours(ch, database) if t.startswith(TAKEOVER_PREFIX)]
    assert len(markers) == 1

    with pytest.raises(LockHeld):  # the marker is fresh: its owner may still be at work
        lock(connect, database, "too-early").acquire()
    time.sleep(TTL + 0.3)
    later = lock(connect, database, "after-the-ttl")
    later.acquire()
    assert ours(ch, database) == [LOCK_PREFIX + "positions"]
    later.release()


@pytest.fixture
def heartbeats_fail() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAILPOINT, "heartbeat=error")
        yield


def test_a_run_whose_heartbeats_fail_aborts_before_the_swap(
    ch: Client, connect: Connect, loaded: str, heartbeats_fail: None
) -> None:
    fx.run(connect, fx.spec(loaded))
    ch.command(f"ALTER TABLE {loaded}.src UPDATE value = value + 1 WHERE 1", settings={"mutations_sync": 2})
    before = fx.checksum(ch, f"{loaded}.positions")
    # The source takes longer than TTL/2, so the lock counts as lost before the swap.
    slow = fx.SOURCE.replace("FROM src WHERE", "FROM src WHERE sleepEachRow(0.0001) = 0 AND")

    record = fx.run(connect, fx.spec(loaded, source={"query": slow}), lock_ttl=TTL)

    assert record.outcome == Outcome.FAILED
    assert record.exit_code == ExitCode.LOCKED and record.reason == "LockLost"
    assert "no heartbeat landed" in record.error and "nothing was swapped" in record.error
    assert fx.checksum(ch, f"{loaded}.positions") == before
    # The lost lock is left to expire, not dropped: another run may hold it by now.
    assert LOCK_PREFIX + "positions" in ours(ch, loaded)
    assert not [t for t in ours(ch, loaded) if t.startswith(names.STAGING)]


def test_a_heartbeat_blip_is_retried(ch: Client, connect: Connect, database: str) -> None:
    held = lock(connect, database, "survives-a-blip")
    held.acquire()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAILPOINT, "heartbeat=error")
        time.sleep(0.5)  # two or three beats fail, well under TTL/2
    beats_before = held.beat_age
    deadline = time.monotonic() + 5
    while held.beat_age >= beats_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not held.lost
    held.assert_held()
    held.release()
    assert ours(ch, database) == []


def test_a_heartbeat_as_long_as_half_the_ttl_keeps_the_lock(ch: Client, connect: Connect, database: str) -> None:
    # `tablerefresh refresh --lock-ttl 2` beats every max(1, TTL/12) = 1 s, which is TTL/2: the loop
    # woke to find its last beat older than TTL/2 and gave the lock up before beating again, so
    # every run that held it past its first second failed with LockLost (found by bench/kills.py).
    held = TableLock(connect, database, "positions", "a-long-run", ttl_seconds=2.0, heartbeat_seconds=1.0)
    held.acquire()
    time.sleep(2.5)
    assert not held.lost, f"no beat landed for {held.beat_age:.2f}s"
    held.assert_held()
    held.release()
    assert ours(ch, database) == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lost_lock_is_never_dropped_from_under_its_new_holder(ch: Client, connect: Connect, database: str) -> None:
    clock = FakeClock()
    first = lock(connect, database, "first", clock=clock)
    first.acquire()
    clock.now += TTL  # no beat has landed for TTL/2 and more: lost, and its heartbeat stops
    assert first.lost
    time.sleep(TTL + 0.5)  # by the server's clock too, the lock is stale
    second = lock(connect, database, "second")
    second.acquire()

    first.release()

    holder = second.holder()
    assert holder is not None and holder.owner == "second"
    with pytest.raises(LockLost):
        first.assert_held()
    second.release()
    assert ours(ch, database) == []
