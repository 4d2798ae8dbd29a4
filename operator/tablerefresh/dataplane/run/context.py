"""What the steps of one run share: its spec and options, its connection, its parameters and scope,
its record, the tables it made, and whether its swap has started.

The steps (``inputs.py``, ``housekeeping.py``, the strategies) are functions over a :class:`RunContext`;
``refresh.py`` calls them in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.httpclient import HttpClient

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.errors import Interrupted, one_line
from tablerefresh.dataplane.infra.failpoints import failpoint
from tablerefresh.dataplane.infra.interrupt import Stop
from tablerefresh.dataplane.infra.sql import Statement
from tablerefresh.dataplane.run.inputs import source_text
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.progress import SwapProgress
from tablerefresh.dataplane.run.runs import RunRecord
from tablerefresh.dataplane.run.scope import run_params, run_scope, run_time_of, window_start
from tablerefresh.dataplane.run.work import Work, process_peak_memory
from tablerefresh.spec import TableRefreshSpec

log = logging.getLogger("tablerefresh.dataplane.run")


class RunContext:
    def __init__(
        self, spec: TableRefreshSpec, connect: Callable[[], Client], source_query: str, options: RunOptions
    ) -> None:
        self.spec = spec
        self.connect = connect
        self.source_query = source_text(source_query)
        self.options = options
        self.clock = options.clock
        self.database = spec.clickhouse.database
        self.run_time = run_time_of(options.run_time)
        self.window_start = window_start(spec, self.run_time)
        # Slice membership as one boolean: a predicate that is NULL for a row does not select it,
        # and NOT of it must then select the row (NOT NULL would lose it from both sides). Pasted into
        # statements only once the server's parser has read it as one expression (``refresh.py``).
        self.scope = run_scope(spec, options.run_id)
        self.params = run_params(spec, self.run_time, self.scope)
        self.predicate_checked = False
        self.record = RunRecord(
            run_id=options.run_id,
            target=f"{self.database}.{spec.target.table}",
            strategy=spec.strategy.value,
            started_at=self.clock(),
            window_start=self.window_start,
            kind=self.scope.kind.kind,
            run_time=self.run_time,
        )
        self._client: Client | None = None
        self.made: list[str] = []  # the tables this run made (quoted), dropped at its end, last first
        self._work = Work()
        self.swap = SwapProgress(self.check_stop)
        if options.stop is not None:
            options.stop.on_request(self._kill_statements)

    @property
    def in_slice(self) -> str:
        return self.scope.in_slice

    @property
    def target(self) -> str:
        """The target as messages name it: ``database.table``."""
        return self.record.target

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self.connect()
            # What marks this run's statements in system.processes, for _kill_statements.
            self._client.set_client_setting("log_comment", self._statement_mark)
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None

    def use_client(self, client: Client, what: str) -> None:
        """Carry on with ``client``, closing the one ``what`` was sent on."""
        old, self._client = self._client, client
        if old is not None:
            self.quietly(f"close the connection {what} was sent on", old.close)

    def close(self) -> None:
        if self._client is not None:
            self.quietly("close the connection", self._client.close)
            self._client = None

    # -- statements and the tables they make ----------------------------------------------------

    def execute(self, statements: list[Statement]) -> None:
        """Execute ``statements`` in turn, adding up what each cost the engine (``work.py``)."""
        for statement in statements:
            self._work.add(statement.execute(self.client))

    def make(self, statements: list[Statement], table: str) -> str:
        """Execute ``statements``, the first of which creates ``table`` (quoted), which the run drops
        at its end. Returns ``table``."""
        first, *rest = statements
        self.execute([first])
        self.made.append(table)
        self.execute(rest)
        return table

    def work(self) -> Work:
        """What the run's statements cost the engine so far; on the embedded engine, which reports
        no memory, the peak memory of this process, which the engine runs in."""
        if self._client is not None and not isinstance(self._client, HttpClient):
            return Work(peak_memory_bytes=process_peak_memory())
        return self._work

    def drop_made(self) -> None:
        failpoint("drop-staging")
        while self.made:
            sql.drop_table(self.made[-1]).execute(self.client)
            self.made.pop()

    # -- steps --------------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One line as a step starts; its time too when it took long enough to matter."""
        self.check_stop()
        started = self.clock()
        log.info("%s ...", name)
        yield
        took = (self.clock() - started).total_seconds()
        log.log(logging.INFO if took >= 1 else logging.DEBUG, "%s done in %.1fs", name, took)

    def quietly(self, what: str, action: Callable[[], object]) -> None:
        """Cleanup: an error is logged beside the run's outcome, never in place of it."""
        try:
            action()
        except Exception as exc:
            log.error("could not %s: %s", what, one_line(exc))

    # -- a signal's stop ----------------------------------------------------------------------

    @property
    def stopped(self) -> Stop | None:
        """The stop a signal asked for, if one did."""
        stop = self.options.stop
        return stop if stop is not None and stop.signum is not None else None

    def check_stop(self) -> None:
        stop = self.stopped
        if stop is not None:
            raise self.interruption(stop)

    def interruption(self, stop: Stop) -> Interrupted:
        assert stop.signum is not None
        if self.swap.started:
            return Interrupted(
                f"interrupted by {stop.name} after the swap: {self.swap.holds}", stop.signum, after_swap=True
            )
        return Interrupted(f"interrupted by {stop.name}: the target {self.target} is unchanged", stop.signum)

    @property
    def _statement_mark(self) -> str:
        return f"tablerefresh run {self.options.run_id}"

    def _kill_statements(self, signum: int) -> None:
        """From the signal's thread: kill the statements this run's client is running, so that it
        stops within a pod's grace period; never once the swap may have started (the swap is quick,
        and a replace stopped halfway would leave the target part old, part new)."""
        self.swap.unless_started(self._kill)

    def _kill(self) -> None:
        if self._client is None:
            return
        killer = self.connect()
        try:
            killer.command(
                "KILL QUERY WHERE Settings['log_comment'] = "
                f"{sql.string_literal(self._statement_mark)} AND query_id != queryID() ASYNC"
            )
        finally:
            killer.close()
