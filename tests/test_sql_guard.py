"""What a TableRefresh's author writes as SQL, against the operator's and the run's rights (issue 24).

The server's parser checks the slice predicate and the audits (``sql_guard``), and the health check
runs every query read-only and bounded (``limits``). On the real engine, the SQL findings of the
security review, replayed: audits that write or reach out (2), a result that would fill the
operator's memory (4), a predicate that is several statements (8). Each is refused with nothing
dropped, run or sent: a local socket listener stands for the outside, and a recording client shows
that the author's text never reached the server as SQL before the parser had read it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tablerefresh.cli import main
from tablerefresh.dataplane.health import measure
from tablerefresh.dataplane.infra import limits
from tablerefresh.dataplane.infra.errors import ExitCode, InvalidInput
from tablerefresh.dataplane.infra.sql_guard import PREDICATE, check_predicate, check_select, parse_ast
from tablerefresh.dataplane.run.runs import Outcome
from tests import refresh_fixtures as fx
from tests.commands import write_manifest

Connect = Callable[[], Client]

PARAMS = {"window_start": 1_700_000_000, "run_time": 1_700_086_400}
AUDIT_PARAMS = {**PARAMS, "table": "positions"}


def test_explain_lines_make_one_tree() -> None:
    root = parse_ast(
        [
            "SelectWithUnionQuery (children 1)",
            " ExpressionList (children 1)",
            "  SelectQuery (children 2)",
            "   ExpressionList (children 1)",
            "    Function url (alias u) (children 1)",
            "   Set",
        ]
    )
    assert root.kind == "SelectWithUnionQuery" and root.children[0].children[0].label == "SelectQuery"
    select = root.children[0].children[0]
    assert [n.kind for n in select.children] == ["ExpressionList", "Set"]
    assert select.children[0].children[0].name == "url"
    assert [n.kind for n, _ in root.walk()] == [
        "SelectWithUnionQuery",
        "ExpressionList",
        "SelectQuery",
        "ExpressionList",
        "Set",
        "Function",
    ]
    for broken in ([], ["A", "B"], ["A", "   B"]):
        with pytest.raises(ValueError):
            parse_ast(broken)


@pytest.mark.parametrize(
    "predicate",
    [
        "resolved_at IS NULL OR resolved_at >= toStartOfMonth({window_start:DateTime})",
        "ts >= {window_start:DateTime} -- a trailing comment cannot swallow the closing parenthesis",
        "id % 2 = 0",
        "id IN (SELECT number FROM numbers(10))",
        "(SELECT 1)",
        "1) OR (1",  # still one expression: (1) OR (1)
    ],
)
def test_a_predicate_that_is_one_expression_passes(ch: Client, predicate: str) -> None:
    check_predicate(ch, predicate, PARAMS)


@pytest.mark.parametrize(
    ("predicate", "reason"),
    [
        ("1), 0); DROP TABLE d.victim; SELECT ifNull((1", "does not compile: Syntax error"),
        ("1; DROP TABLE d.victim", "does not compile: Syntax error"),
        ("1), (2", "closes the parentheses"),
        ("1) WHERE (1", "closes the parentheses"),
        ("1) FROM system.one WHERE (1", "closes the parentheses"),
        ("1) UNION ALL SELECT (1", "read as more than one"),
        ("id IN (SELECT a FROM url('http://127.0.0.1:1/', CSV, 'a UInt8'))", "the table function url()"),
        ("id IN (SELECT 1 FROM remote('127.0.0.1', system.one))", "the table function remote()"),
        ("length(file('/etc/passwd')) > 0", "calls file()"),
        ("id IN (SELECT 1 SETTINGS max_result_rows = 0)", "must not have a SETTINGS clause"),
        ("resolved_at > /* unterminated", "does not compile"),
        ("{table:Identifier}", "does not compile"),  # a parameter no run gives
    ],
)
def test_a_predicate_that_is_not_one_expression_is_refused(ch: Client, predicate: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_predicate(ch, predicate, PARAMS)
    assert str(refused.value).startswith(PREDICATE), refused.value
    assert reason in str(refused.value), refused.value


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count() FROM {table:Identifier} WHERE id < 0",
        "SELECT countIf(value > 900) FROM {table:Identifier} WHERE resolved_at >= {window_start:DateTime}",
        "WITH bad AS (SELECT id FROM {table:Identifier} WHERE id < 0) SELECT count() FROM bad",
        "SELECT count() FROM {table:Identifier} WHERE id NOT IN (SELECT number FROM numbers(100))",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "SELECT count() FROM {table:Identifier} WHERE id % 2 = 0;",
    ],
)
def test_one_select_passes(ch: Client, query: str) -> None:
    check_select(ch, query, "audit a", AUDIT_PARAMS)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("DROP TABLE d.victim /* {table:Identifier} */", "must be one SELECT, without FORMAT or INTO OUTFILE"),
        ("SYSTEM DROP MARK CACHE", "must be one SELECT"),
        ("INSERT INTO d.t SELECT 1", "must be one SELECT"),
        ("SELECT 1; DROP TABLE d.victim", "does not compile: Syntax error"),
        ("SELECT count() FROM {table:Identifier} FORMAT JSON", "without FORMAT or INTO OUTFILE"),
        ("SELECT count() FROM {table:Identifier} INTO OUTFILE 'x.csv'", "without FORMAT or INTO OUTFILE"),
        ("SELECT count() FROM {table:Identifier} SETTINGS max_result_rows = 0", "must not have a SETTINGS clause"),
        ("SELECT count() FROM {table:Identifier} SETTINGS readonly = 0", "readonly"),
        ("SELECT count() FROM url('http://127.0.0.1:1/', CSV, 'a UInt8')", "the table function url()"),
        ("SELECT count() FROM s3('http://127.0.0.1:1/b/k', CSV, 'a UInt8')", "the table function s3()"),
        (
            "SELECT count() FROM {table:Identifier} AS t JOIN mysql('h:3306', 'd', 't', 'u', 'p') AS m USING id",
            "mysql()",
        ),
        (
            "SELECT count() FROM {table:Identifier} WHERE id IN (SELECT * FROM postgresql('h', 'd', 't', 'u', 'p'))",
            "postgresql()",
        ),
        ("SELECT count() FROM file('x.csv')", "the table function file()"),
        ("SELECT count() FROM view(SELECT 1)", "the table function view()"),
        ("SELEC count() FROM {table:Identifier}", "does not compile: Syntax error"),
    ],
)
def test_anything_but_one_read_only_select_is_refused(ch: Client, query: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_select(ch, query, "audit a", AUDIT_PARAMS)
    assert str(refused.value).startswith("audit a "), refused.value
    assert reason in str(refused.value), refused.value


# -- the findings, replayed ------------------------------------------------------------------------


class Listener:
    """A TCP port standing for the outside world (finding 2: ``url()`` made the operator connect
    out): it counts the connections it accepts."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


class Recording:
    """A client that records the SQL text and settings of every query before passing it on."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def query(self, query: str, parameters: Any = None, settings: Any = None, **kwargs: Any) -> Any:
        self.sent.append((query, dict(settings or {})))
        return self._client.query(query, parameters=parameters, settings=settings, **kwargs)

    def command(self, cmd: str, parameters: Any = None, settings: Any = None, **kwargs: Any) -> Any:
        self.sent.append((cmd, dict(settings or {})))
        return self._client.command(cmd, parameters=parameters, settings=settings, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def tables(ch: Client, database: str) -> set[str]:
    return {r[0] for r in ch.query(f"SELECT name FROM system.tables WHERE database = '{database}'").result_rows}


@pytest.fixture
def victim(ch: Client, connect: Connect, loaded: str) -> str:
    """A table the attacks aim at, beside a refreshed target."""
    ch.command(f"CREATE TABLE {loaded}.victim (a UInt8) ENGINE = MergeTree ORDER BY a")
    ch.command(f"INSERT INTO {loaded}.victim VALUES (1)")
    assert fx.run(connect, fx.spec(loaded)).outcome == Outcome.SUCCEEDED
    return f"{loaded}.victim"


def explained_only(recording: Recording, text: str) -> bool:
    """Whether ``text`` reached the server as SQL only inside EXPLAIN AST (parsed, never run)."""
    return all(q.startswith("SELECT groupArray(explain) FROM (EXPLAIN AST ") for q, _ in recording.sent if text in q)


def several_statements(victim: str) -> str:
    return f"1), 0); DROP TABLE {victim}; SELECT ifNull((1"


def test_the_embedded_engine_runs_every_statement_of_a_text(ch: Client, loaded: str) -> None:
    """Finding 8's premise: pasted as the operator used to paste it, the predicate drops a table."""
    ch.command(f"CREATE TABLE {loaded}.bait (a UInt8) ENGINE = Memory")
    predicate = several_statements(f"{loaded}.bait")
    with contextlib.suppress(DatabaseError):
        ch.query(f"SELECT count() FROM {loaded}.positions WHERE ifNull(({predicate}), 0)")
    assert "bait" not in tables(ch, loaded), "this engine no longer runs several statements: finding 8 is moot"


def test_a_predicate_of_several_statements_runs_nothing_in_the_health_check(ch: Client, victim: str) -> None:
    database = victim.split(".")[0]
    spec = fx.spec(database, slice={"predicate": several_statements(victim)})
    recording = Recording(ch)
    with pytest.raises(InvalidInput, match=r"^spec\.slice\.predicate does not compile"):
        measure(cast(Client, recording), spec)
    assert "victim" in tables(ch, database)
    # The text travelled only as the value of a parameter, never as SQL.
    assert not [q for q, _ in recording.sent if "DROP TABLE" in q]


def test_a_predicate_of_several_statements_is_refused_by_a_run(ch: Client, connect: Connect, victim: str) -> None:
    database = victim.split(".")[0]
    before = fx.checksum(ch, f"{database}.positions"), tables(ch, database)
    record = fx.run(connect, fx.spec(database, slice={"predicate": several_statements(victim)}))
    assert (record.exit_code, record.reason) == (ExitCode.INVALID, "InvalidSpec"), record.error
    assert record.error.startswith("spec.slice.predicate does not compile: Syntax error"), record.error
    assert (fx.checksum(ch, f"{database}.positions"), tables(ch, database)) == before  # victim, no lock, no staging


@pytest.mark.parametrize("command", ["refresh", "plan", "dedupe"])
def test_every_command_that_uses_the_predicate_checks_it_first(
    ch: Client,
    victim: str,
    chdb_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    database = victim.split(".")[0]
    manifest = write_manifest(tmp_path, chdb_url, database, slice={"predicate": several_statements(victim)})
    before = fx.checksum(ch, f"{database}.positions"), tables(ch, database)
    assert main([command, "-f", str(manifest)]) == ExitCode.INVALID
    assert "spec.slice.predicate does not compile" in capsys.readouterr().err
    assert (fx.checksum(ch, f"{database}.positions"), tables(ch, database)) == before


def drop_audit(victim: str) -> dict[str, str]:
    # {table:Identifier} in a comment satisfies the CRD's pattern; formatted, it is DROP TABLE d.victim.
    return {"name": "drop", "query": f"DROP TABLE {victim} /* {{table:Identifier}} */"}


def test_an_audit_that_drops_a_table_is_refused_by_the_health_check_and_a_run(
    ch: Client, connect: Connect, victim: str
) -> None:
    database = victim.split(".")[0]
    spec = fx.spec(database, audits=[drop_audit(victim)])
    with pytest.raises(InvalidInput, match=r"^audit drop must be one SELECT"):
        measure(ch, spec)
    record = fx.run(connect, spec)
    assert (record.exit_code, record.error.split(",")[0]) == (ExitCode.INVALID, "audit drop must be one SELECT")
    assert "victim" in tables(ch, database)


def test_audits_that_run_system_statements_or_reach_out_are_refused_with_nothing_sent(
    ch: Client, connect: Connect, victim: str, listener: Listener
) -> None:
    database = victim.split(".")[0]
    url = f"http://127.0.0.1:{listener.port}/"
    audits = [
        {"name": "system", "query": "SYSTEM DROP MARK CACHE /* {table:Identifier} */"},
        {"name": "url", "query": f"SELECT count() FROM url('{url}', CSV, 'a UInt8') /* {{table:Identifier}} */"},
        {
            "name": "url-in-subquery",
            "query": "SELECT count() FROM {table:Identifier} "
            f"WHERE id IN (SELECT a FROM url('{url}', 'CSV', 'a UInt64'))",
        },
        {"name": "remote", "query": f"SELECT count() FROM remote('127.0.0.1:{listener.port}', {{table:Identifier}})"},
    ]
    for audit in audits:
        spec = fx.spec(database, audits=[audit])
        recording = Recording(ch)
        with pytest.raises(InvalidInput) as refused:
            measure(cast(Client, recording), spec)
        assert str(refused.value).startswith(f"audit {audit['name']} must"), refused.value
        assert explained_only(recording, audit["query"].split(" /*")[0])
        record = fx.run(connect, spec)
        assert record.exit_code == ExitCode.INVALID and record.error == str(refused.value)
    assert listener.accepted == 0


HOSTILE_SESSION = {"readonly": "0", "max_result_rows": "0", "result_overflow_mode": "break", "max_execution_time": "0"}


def test_every_health_query_is_read_only_and_bounded_whatever_the_spec_sets(
    connect: Connect, ch: Client, loaded: str
) -> None:
    fx.run(connect, fx.spec(loaded))
    # The spec's settings are the client's session settings; the operator's go with each query, after.
    client = connect()
    for name, value in HOSTILE_SESSION.items():
        client.set_client_setting(name, value)
    client.database = loaded
    recording = Recording(client)
    audit = {"name": "no-negative-ids", "query": "SELECT count() FROM {table:Identifier} WHERE id < 0"}
    report = measure(cast(Client, recording), fx.spec(loaded, audits=[audit]), timeout=12)
    assert report.total_rows > 0 and report.audits[0].passed
    expected = {**limits.READ_ONLY, "max_execution_time": 11, "cancel_http_readonly_queries_on_client_close": 1}
    assert len(recording.sent) >= 9
    for query, settings in recording.sent:
        # DESCRIBE lists an audit's columns (its text bounds them); every other query returns one row.
        wanted = {**expected, "max_result_rows": 1024 if query.startswith("DESCRIBE") else 1}
        assert {name: settings.get(name) for name in wanted} == wanted, query


def test_an_audit_of_millions_of_rows_fails_on_the_server_and_the_memory_stays_flat(
    connect: Connect, ch: Client, loaded: str
) -> None:
    """Finding 4: the whole result was loaded into the operator's memory (354 MiB for 3M rows)."""
    fx.run(connect, fx.spec(loaded))
    client = connect()
    for name, value in HOSTILE_SESSION.items():
        client.set_client_setting(name, value)
    client.database = loaded
    query = "SELECT number FROM numbers(3000000) WHERE number NOT IN (SELECT id FROM {table:Identifier} WHERE 0)"
    spec = fx.spec(loaded, audits=[{"name": "millions", "query": query}])

    def bounded() -> None:
        with pytest.raises(DatabaseError) as failed:
            measure(client, spec)
        assert getattr(failed.value, "code", None) == 396, failed.value  # TOO_MANY_ROWS_OR_BYTES

    def unbounded() -> None:  # as the health check did before: the rows come back to the process
        rows = client.query(query, parameters={"table": "positions"}).result_rows
        assert len(rows) == 3_000_000

    # Once first: the embedded engine lives in this process, and its first such query maps in code and
    # starts threads (~60 MiB, once per process), which is not what a health check costs.
    bounded()
    grown, baseline = peak_rss_growth(bounded), peak_rss_growth(unbounded)
    assert baseline > 100 * MIB, f"the baseline should show the rows' cost: {baseline / MIB:.0f} MiB"
    assert grown < 50 * MIB, f"the bounded health check grew the process by {grown / MIB:.0f} MiB"


MIB = 1024 * 1024


def peak_rss_growth(action: Callable[[], None]) -> int:
    """How far the process's resident memory rose above where it stood, at its peak, during ``action``
    (Linux: writing 5 to clear_refs resets the peak, VmHWM, to the current size)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak resident size: {exc}")
    before = _status_kib("VmRSS")
    action()
    return (_status_kib("VmHWM") - before) * 1024


def _status_kib(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert found is not None
    return int(found.group(1))
