"""Faults over the network: a connection broken at each step of a run, and a client that stops waiting.

Each run is ``tablerefresh refresh`` in a process of its own, talking HTTP to the served engine (the
real ClickHouse engine behind ClickHouse's own HTTP interface, ``tests/served_engine.py``) through
``tests/faultproxy.py``, a stand-in for toxiproxy. The proxy breaks the connection on the first
request of one step, one of three ways: the request never arrives, the server runs it and its answer
is lost, or the answer is cut midway. Every run must then leave the target with exactly its old rows
or exactly its new ones, no key twice, an exit code and outcome that say which (untouched is never
``FailedAfterSwap``; changed is ``FailedAfterSwap`` or a success), and a next run on a clean
connection that succeeds with exactly the new rows and nothing left beside the target. No statement
that changes anything is sent twice by the client itself: the swap and the lock's CREATE at most once
each, the run record written once.

One served engine for the session, a database per case, 2000 source rows. The whole step x fault
matrix is marked ``slow``; a representative case of each kind of outcome runs unmarked.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from tablerefresh.dataplane.infra.connection import connect
from tablerefresh.dataplane.infra.errors import ExitCode
from tablerefresh.dataplane.run import unanswered
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.refresh import Refresh
from tablerefresh.dataplane.run.runs import Outcome, RunRecord
from tablerefresh.dataplane.run.swap import PartitionChange
from tablerefresh.spec import TableRefreshSpec
from tests import refresh_fixtures as fx
from tests.conftest import repo_root
from tests.faultproxy import Fault, FaultProxy
from tests.served_engine import ServedClickHouse

USER = "alice"
ROWS = 2000
OUTCOME = {0: Outcome.SUCCEEDED, 1: Outcome.FAILED, 7: Outcome.FAILED_AFTER_SWAP}
LEFTOVERS = ("_tablerefresh_staging_", "_tablerefresh_lock__", "_tablerefresh_takeover__")

# The first request of each step, by its SQL.
LOCK_CREATE = r"CREATE TABLE \S*_tablerefresh_lock__"
SWAP = r"REPLACE PARTITION"
STEPS = {
    "lock": LOCK_CREATE,
    "staging table": r"CREATE TABLE \S*_tablerefresh_staging_\S* AS",
    "staging build": r"INSERT INTO \S*_tablerefresh_staging_.* FROM \(",
    "carry-over": r"INSERT INTO \S*_tablerefresh_staging_.* FROM `\w+`\.`positions` WHERE",
    "verification": r"SELECT _partition_id, count\(\) FROM \S*_tablerefresh_staging_\S* WHERE \(1\)",
    "swap": SWAP,
    "swap check": r"FROM `\w+`\.`positions` WHERE \(_partition_id IN",
    "staging drop": r"DROP TABLE IF EXISTS \S*_tablerefresh_staging_",
    "run record": r"INSERT INTO \S*_tablerefresh_runs",
    "lock release": r"DROP TABLE IF EXISTS \S*_tablerefresh_lock__",
}
A, B, C = Fault.REQUEST_LOST, Fault.ANSWER_LOST, Fault.ANSWER_CUT
# (step, fault) -> (exit code, what the target holds after the run), as measured.
# - A lost CREATE of the lock, a lost drop of it, a lost run record: the run looks on a new connection
#   and sends it again only when the first never arrived.
# - A read-only statement whose request or answer is lost is replayed by clickhouse-connect itself;
#   a cut answer (rows) is an error. A statement that returns no rows answers with its headers: a cut
#   in what follows them reads as the success it was.
# - A swap whose answer did not arrive is looked for: the target's parts say whether it ran.
EXPECTED: dict[tuple[str, Fault], tuple[int, str]] = {
    ("lock", A): (0, "new"),
    ("lock", B): (0, "new"),
    ("lock", C): (0, "new"),
    ("staging table", A): (1, "old"),
    ("staging table", B): (1, "old"),
    ("staging table", C): (0, "new"),
    ("staging build", A): (1, "old"),
    ("staging build", B): (1, "old"),
    ("staging build", C): (0, "new"),
    ("carry-over", A): (1, "old"),
    ("carry-over", B): (1, "old"),
    ("carry-over", C): (0, "new"),
    ("verification", A): (0, "new"),
    ("verification", B): (0, "new"),
    ("verification", C): (1, "old"),
    ("swap", A): (1, "old"),
    ("swap", B): (0, "new"),
    ("swap", C): (0, "new"),
    ("swap check", A): (0, "new"),
    ("swap check", B): (0, "new"),
    ("swap check", C): (7, "new"),
    ("staging drop", A): (0, "new"),
    ("staging drop", B): (0, "new"),
    ("staging drop", C): (0, "new"),
    ("run record", A): (0, "new"),
    ("run record", B): (0, "new"),
    ("run record", C): (0, "new"),
    ("lock release", A): (0, "new"),
    ("lock release", B): (0, "new"),
    ("lock release", C): (0, "new"),
}
# Unmarked: one case of each kind of outcome; the rest of the matrix is slow.
REPRESENTATIVE = {("lock", B), ("swap", A), ("swap", B), ("swap check", C), ("run record", B), ("lock release", A)}


@dataclass
class Case:
    """A database whose target holds the old rows, a source that now yields others, a manifest."""

    server: ServedClickHouse
    client: Client
    database: str
    manifest: Path
    old: tuple[int, int]
    new: tuple[int, int]

    @property
    def target(self) -> str:
        return f"{self.database}.positions"

    def checksum(self) -> tuple[int, int]:
        return fx.checksum(self.client, self.target)

    def state(self) -> str:
        now = self.checksum()
        return "old" if now == self.old else "new" if now == self.new else f"neither: {now}"

    def duplicates(self) -> int:
        return int(self.client.query(f"SELECT count() - uniqExact(id) FROM {self.target}").result_rows[0][0])

    def leftovers(self) -> list[str]:
        rows = self.client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": self.database}
        ).result_rows
        return [name for (name,) in rows if name.startswith(LEFTOVERS)]

    def records(self, run_id: str) -> int:
        return int(
            self.client.query(
                f"SELECT count() FROM {self.database}._tablerefresh_runs WHERE run_id = {{r:String}}",
                parameters={"r": run_id},
            ).result_rows[0][0]
        )

    def running(self) -> list[str]:
        """Statements of this case's database still running on the server."""
        rows = self.client.query(
            "SELECT query FROM system.processes WHERE position(query, {db:String}) > 0 AND query_id != queryID()",
            parameters={"db": self.database},
        ).result_rows
        return [q for (q,) in rows]


@pytest.fixture(scope="module")
def proxy(served_engine: ServedClickHouse) -> Iterator[FaultProxy]:
    with FaultProxy(served_engine.http_port, lifetime=1800) as running:
        yield running


@pytest.fixture
def case(served_engine: ServedClickHouse, tmp_path: Path) -> Iterator[Case]:
    yield make_case(served_engine, tmp_path)


def make_case(server: ServedClickHouse, tmp_path: Path, **spec: Any) -> Case:
    client = server.client(USER)
    database = f"nf_{uuid.uuid4().hex[:10]}"
    client.command(f"CREATE DATABASE {database}")
    fx.create_tables(client, database)
    fx.fill_source(client, database, rows=ROWS)
    # The target holds every row of the source, so the month of the window's start holds rows
    # outside the slice, which a run carries over.
    client.command(f"INSERT INTO {database}.positions SELECT * FROM {database}.src")
    old = fx.checksum(client, f"{database}.positions")
    for change in (
        "UPDATE value = value + 1 WHERE id % 3 = 0",
        "UPDATE resolved_at = now() WHERE resolved_at IS NULL AND id % 7 = 0",  # open -> this month
    ):
        client.command(f"ALTER TABLE {database}.src {change}", settings={"mutations_sync": 2})
    new = expected(client, database)
    assert new != old
    document = {
        "apiVersion": "tablerefresh.dev/v1alpha1",
        "kind": "TableRefresh",
        "metadata": {"name": "positions", "namespace": "default"},
        "spec": fx.spec(database, **{"clickhouse": {"url": "clickhouse://unused:8123"}, **spec}).model_dump(
            by_alias=True, exclude_none=True, mode="json"
        ),
    }
    manifest = tmp_path / f"{database}.yaml"
    manifest.write_text(yaml.safe_dump(document))
    return Case(server, client, database, manifest, old, new)


def expected(client: Client, database: str) -> tuple[int, int]:
    """What a run must leave: the target's rows outside the slice, and the source's rows of the slice."""
    window_start = int(datetime.now(UTC).timestamp()) - 24 * 3600
    source = fx.SOURCE.replace("FROM src", f"FROM {database}.src")
    count, total = client.query(
        f"SELECT count(), sum(cityHash64(*)) FROM (SELECT * FROM {database}.positions "
        f"WHERE NOT ifNull(({fx.PREDICATE}), 0) UNION ALL {source})",
        parameters={"window_start": window_start},
    ).result_rows[0]
    return int(count), int(total or 0)


@dataclass
class Ran:
    code: int
    summary: dict[str, Any]
    stderr: str


def refresh(case: Case, url: str, *args: str) -> Ran:
    """``tablerefresh refresh`` in a process of its own, against ``url``."""
    done = subprocess.run(
        [sys.executable, "-m", "tablerefresh", "refresh", "--clickhouse", url, "-f", str(case.manifest), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo_root() / "operator"), **case.server.env(USER)},
    )
    return Ran(done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr)


def converges(case: Case, spec: TableRefreshSpec | None = None, query: str = fx.SOURCE) -> RunRecord:
    """The next run, on a clean connection: it succeeds with exactly the new rows, nothing beside."""
    run_id = f"next-{uuid.uuid4().hex[:8]}"

    def clean() -> Client:
        return connect(case.server.url, database=case.database, username=USER, password=case.server.users[USER] or "")

    options = RunOptions(
        run_id=run_id,
        owner=f"{run_id}@{socket.gethostname()}:{os.getpid()}",
        run_time=datetime.now(UTC),
        lock_ttl_seconds=30,
    )
    record = Refresh(spec or fx.spec(case.database), clean, query, options).run()
    assert record.exit_code == 0, record.error
    assert case.checksum() == case.new
    assert case.duplicates() == 0
    assert case.leftovers() == []
    assert case.records(run_id) == 1
    return record


def assert_honest(ran: Ran, state: str) -> None:
    """The exit code and the outcome say what happened to the target."""
    assert ran.summary["exitCode"] == ran.code
    assert ran.summary["outcome"] == OUTCOME[ran.code]
    if state == "old":
        assert ran.code != ExitCode.AFTER_SWAP and ran.summary["outcome"] != Outcome.FAILED_AFTER_SWAP
    elif ran.code:
        assert ran.summary["outcome"] == Outcome.FAILED_AFTER_SWAP


def matrix() -> list[Any]:
    return [
        pytest.param(
            step,
            fault,
            id=f"{step.replace(' ', '-')}-{fault.name.lower()}",
            marks=() if (step, fault) in REPRESENTATIVE else (pytest.mark.slow,),
        )
        for (step, fault) in EXPECTED
    ]


@pytest.mark.served
@pytest.mark.parametrize(("step", "fault"), matrix())
def test_a_connection_broken_at_each_step(proxy: FaultProxy, case: Case, step: str, fault: Fault) -> None:
    proxy.clear()
    proxy.arm(STEPS[step], fault)

    ran = refresh(case, proxy.url, "--lock-ttl", "30")

    fired = proxy.fired
    assert fired is not None, f"no request of the step {step} passed the proxy"
    assert proxy.settled()
    code, state = EXPECTED[step, fault]
    assert (ran.code, case.state()) == (code, state), ran.summary["error"]
    assert_honest(ran, state)
    assert case.duplicates() == 0
    # No statement that changes anything was sent twice by the client itself: the swap at most once,
    # the lock's CREATE once, or twice when the first never reached the server (the run looked, and
    # found no lock); the run is recorded once.
    assert len(proxy.matching(SWAP)) <= 1
    creates = proxy.matching(LOCK_CREATE)
    assert len(creates) == 1 or (len(creates) == 2 and creates[0].fault is Fault.REQUEST_LOST)
    assert case.records(ran.summary["runId"]) == 1
    if (step, fault) == ("swap", A):
        assert "the swap did not run" in ran.summary["error"] and "was not changed" in ran.summary["error"]
    if (step, fault) == ("swap", B):
        assert "the swap ran (every partition holds the new parts)" in ran.stderr

    converges(case)


# -- a client that stops waiting -------------------------------------------------------------------


@pytest.mark.served
def test_a_client_timeout_shorter_than_the_staging_build(served_engine: ServedClickHouse, tmp_path: Path) -> None:
    """The client stops waiting; the server goes on building staging, then drops it when the run's
    cleanup (which also stopped waiting) reaches it. The target is never touched."""
    # About 5.4 s before it yields a row: three blocks of one row, each under the engine's limit of
    # 3 s of sleep per block.
    slow = (
        f"SELECT id, resolved_at, value, updated_at FROM src WHERE ({fx.PREDICATE}) AND id NOT IN "
        "(SELECT number + 1000000000 FROM numbers(3) WHERE sleepEachRow(1.8) = 0 SETTINGS max_block_size = 1)"
    )
    case = make_case(served_engine, tmp_path, source={"query": slow})

    ran = refresh(case, served_engine.url, "--statement-timeout", "2")

    assert ran.code == ExitCode.FAILED and ran.summary["outcome"] == Outcome.FAILED
    assert ran.summary["error"] == "timed out"
    # The build went on on the server: the cleanup's drop waited there for it to end, longer than
    # the client waits.
    assert "could not drop the staging table: timed out" in ran.stderr
    assert case.state() == "old"
    deadline = time.monotonic() + 60
    while case.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert case.running() == []
    assert case.state() == "old"  # what the server went on with left no change
    assert case.leftovers() == []  # the drop the client stopped waiting for ran on the server
    converges(case)


@pytest.mark.served
def test_a_swap_that_arrives_after_the_run_said_untouched_cannot_land(proxy: FaultProxy, case: Case) -> None:
    """The swap's request is held past the client's timeout, then delivered. The run has looked
    meanwhile, found every partition as it was, and dropped staging first: the late swap fails."""
    proxy.arm(SWAP, Fault.REQUEST_LATE, delay=4)

    ran = refresh(case, proxy.url, "--statement-timeout", "2")

    assert ran.code == ExitCode.FAILED and ran.summary["outcome"] == Outcome.FAILED
    assert ran.summary["error"].startswith("timed out while sending the swap")
    assert "the swap did not run" in ran.summary["error"]
    assert proxy.settled() and proxy.answered  # delivered, and answered: with an error
    assert case.state() == "old"
    converges(case)


@pytest.mark.served
@pytest.mark.slow
def test_a_swap_answer_later_than_the_client_timeout(proxy: FaultProxy, case: Case) -> None:
    proxy.arm(SWAP, Fault.ANSWER_LATE, delay=4)

    ran = refresh(case, proxy.url, "--statement-timeout", "2")

    assert (ran.code, ran.summary["outcome"], case.state()) == (0, Outcome.SUCCEEDED, "new")
    assert "the swap's answer: timed out" in ran.stderr and "the swap ran" in ran.stderr
    converges(case)


# -- Exchange ----------------------------------------------------------------------------------------


@pytest.mark.served
@pytest.mark.slow
@pytest.mark.parametrize(("fault", "code", "state"), [(A, 1, "old"), (B, 0, "new")])
def test_an_exchange_whose_answer_is_lost(
    served_engine: ServedClickHouse, proxy: FaultProxy, tmp_path: Path, fault: Fault, code: int, state: str
) -> None:
    exchange = {"strategy": "Exchange", "source": {"query": fx.FULL_SOURCE}}
    case = make_case(served_engine, tmp_path, **exchange)
    case.new = fx.checksum(case.client, f"{case.database}.src")
    proxy.clear()
    proxy.arm(r"EXCHANGE TABLES", fault)

    ran = refresh(case, proxy.url)

    assert (ran.code, case.state()) == (code, state), ran.summary["error"]
    assert_honest(ran, state)
    assert len(proxy.matching("EXCHANGE TABLES")) == 1
    backups = [
        name
        for (name,) in case.client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, '_tablerefresh_backup_')",
            parameters={"db": case.database},
        ).result_rows
    ]
    if state == "new":  # the previous table is kept, as after any exchange
        assert [fx.checksum(case.client, f"{case.database}.{b}") for b in backups] == [case.old]
    else:
        assert "the exchange did not run" in ran.summary["error"] and backups == []
    assert case.leftovers() == []
    converges(case, fx.spec(case.database, **exchange), fx.FULL_SOURCE)


# -- what the client replays by itself ---------------------------------------------------------------


@pytest.mark.served
def test_what_clickhouse_connect_replays_when_a_connection_drops(
    served_engine: ServedClickHouse, proxy: FaultProxy
) -> None:
    """A read-only statement is sent again after its request or answer is lost; a write never is,
    except a batch of rows sent with ``insert()``, which is sent again after its answer is lost:
    the server then holds it twice. The run sends its rows as statements (the run record)."""
    import clickhouse_connect

    admin = served_engine.client(USER)
    database = f"nf_{uuid.uuid4().hex[:10]}"
    admin.command(f"CREATE DATABASE {database}")
    admin.command(f"CREATE TABLE {database}.t (x UInt64) ENGINE = MergeTree ORDER BY x")
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=proxy.port, username=USER, password=served_engine.users[USER] or "", database=database
    )

    def sent(pattern: str, action: Callable[[], object], fault: Fault) -> tuple[int, bool]:
        proxy.clear()
        proxy.arm(pattern, fault)
        try:
            action()
            ok = True
        except OperationalError:
            ok = False
        assert proxy.fired is not None
        return len(proxy.matching(pattern)), ok

    def rows() -> int:
        return int(admin.query(f"SELECT count() FROM {database}.t").result_rows[0][0])

    read = "SELECT 42 AS answer"
    assert sent(re.escape(read), lambda: client.query(read), A) == (2, True)
    assert sent(re.escape(read), lambda: client.query(read), B) == (2, True)
    assert sent(re.escape(read), lambda: client.query(read), C) == (1, False)
    write = "INSERT INTO t SELECT 1"
    assert sent(re.escape(write), lambda: client.command(write), A) == (1, False)
    assert rows() == 0
    assert sent(re.escape(write), lambda: client.command(write), B) == (1, False)
    assert rows() == 1  # ran once, its answer lost
    statement = "INSERT INTO t (x) FORMAT JSONEachRow"
    assert sent(re.escape(statement), lambda: client.command(statement, data='{"x": 2}'), B) == (1, False)
    assert rows() == 2
    batch = r"INSERT INTO `?t`? \(`?x`?\) FORMAT Native"
    assert sent(batch, lambda: client.insert("t", [[3]], column_names=["x"]), B) == (2, True)
    assert rows() == 4  # the batch [3], twice
    client.close()
    admin.command(f"DROP DATABASE {database} SYNC")


# -- reading the parts after a swap whose answer was lost ----------------------------------------------


def change(partition: str, new_rows: int = 10) -> PartitionChange:
    return PartitionChange(partition, old_rows=10, new_rows=new_rows)


@pytest.mark.parametrize(
    ("changes", "before", "parts", "found"),
    [
        # swapped: every part is above the partition's highest block before the swap
        ([change("a"), change("b")], {"a": 5, "b": 7}, [("a", 9, 9), ("b", 10, 10)], (["a", "b"], [], [])),
        # untouched, parts merged meanwhile: a merge keeps its blocks within the old range
        ([change("a")], {"a": 5}, [("a", 1, 5)], ([], ["a"], [])),
        # one swapped, one not
        ([change("a"), change("b")], {"a": 5, "b": 7}, [("a", 9, 9), ("b", 2, 7)], (["a"], ["b"], [])),
        # old part beside a new one, and a merge of both
        ([change("a"), change("b")], {"a": 5, "b": 7}, [("a", 1, 5), ("a", 9, 9), ("b", 2, 9)], ([], [], ["a", "b"])),
        # a partition the swap creates: swapped once it has parts, untouched while it has none
        ([change("n")], {}, [("n", 9, 9)], (["n"], [], [])),
        ([change("n")], {}, [], ([], ["n"], [])),
        # a partition the swap drops: swapped once it has no part
        ([change("d", new_rows=0)], {"d": 4}, [], (["d"], [], [])),
        ([change("d", new_rows=0)], {"d": 4}, [("d", 1, 4)], ([], ["d"], [])),
    ],
)
def test_which_partitions_a_swap_changed(
    changes: list[PartitionChange],
    before: dict[str, int],
    parts: list[tuple[str, int, int]],
    found: tuple[list[str], list[str], list[str]],
) -> None:
    assert unanswered.classify(changes, before, parts) == found
