"""One refresh run: rebuild a table's slice from its source query and swap it in atomically.

The run, in order:
  1. check the inputs (table, keys, source columns, predicate) before touching anything;
  2. take the target's lock (``lock.py``), clean up what a crashed run left, refuse while a
     mutation is stuck on the target;
  3. with an incremental spec, choose a full or an incremental run (``incremental.py``) and write
     the changed keys into a table beside the target (``keyset.py``);
  4. build the slice (or the changed keys' rows of it: ``scope.py``) in a staging table with the
     target's structure, and carry over the rows of the partitions it replaces that it does not
     replace (``swap.py``);
  5. verify it (``verify.py``), and abort with the target untouched if it fails; a full run of an
     incremental spec also compares a sample of keys with what the target held (``sample.py``);
  6. swap it in, as the strategy says, check the result, and record the run (``runs.py``), which
     moves the incremental watermark only when the run succeeded.

Once the swap has started, any failure is reported as ``FailedAfterSwap``, with what the target
holds, never as "untouched". Cleanup errors are logged and never replace the run's first error.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from tablerefresh.dataplane import (
    audits,
    backups,
    carry,
    catalog,
    keyset,
    mutations,
    names,
    runs,
    sample,
    sql,
    sql_guard,
    unanswered,
)
from tablerefresh.dataplane.catalog import TableInfo
from tablerefresh.dataplane.errors import (
    AuditFailed,
    ExitCode,
    FailedAfterSwap,
    Interrupted,
    InvalidInput,
    LockHeld,
    PreflightRefused,
    RefreshError,
    VerificationFailed,
)
from tablerefresh.dataplane.failpoints import failpoint
from tablerefresh.dataplane.failures import one_line, scrub
from tablerefresh.dataplane.incremental import RunKind, choose, definition_hash
from tablerefresh.dataplane.interrupt import Stop
from tablerefresh.dataplane.lock import TableLock
from tablerefresh.dataplane.runs import Outcome, RunRecord, write_run
from tablerefresh.dataplane.scope import Scope
from tablerefresh.dataplane.swap import PartitionChange, PartitionCounts, mismatched, swap_plan, swap_statement
from tablerefresh.dataplane.verify import StagingFacts, staging_problems
from tablerefresh.spec import Strategy, TableRefreshSpec, parse_duration
from tablerefresh.text import printable

log = logging.getLogger(__name__)

# Every statement that writes rows: a rerun must never be dropped as a "duplicate block".
_INSERT_SETTINGS = {"insert_deduplicate": 0, "deduplicate_blocks_in_dependent_materialized_views": 0}
# Carried-over rows keep their MATERIALIZED values as they are, instead of having them recomputed.
_CARRY_SETTINGS = {**_INSERT_SETTINGS, "insert_allow_materialized_columns": 1}
_ZERO_UUID = "00000000-0000-0000-0000-000000000000"
# A condition ``a AND b`` evaluates b only where a holds, whatever b is.
_SHORT_CIRCUIT = {"short_circuit_function_evaluation": "force_enable"}


@dataclass(frozen=True)
class RunOptions:
    run_id: str
    owner: str
    run_time: datetime
    lock_ttl_seconds: float = 120.0
    heartbeat_seconds: float = 10.0
    force_full: bool = False  # an incremental spec's run is full whatever its history
    # Values that must never appear in the run's error (the credentials): replaced by *** (failures.scrub).
    secrets: tuple[str, ...] = ()
    # Set by a signal (``interrupt.signals``): the run stops at its next step, its statements killed.
    stop: Stop | None = None


class Refresh:
    """A single run of one TableRefresh against one ClickHouse."""

    def __init__(
        self,
        spec: TableRefreshSpec,
        connect: Callable[[], Client],
        source_query: str,
        options: RunOptions,
    ) -> None:
        self.spec = spec
        self.connect = connect
        # The run wraps the query in parentheses: a newline after it keeps a trailing -- comment
        # from swallowing the closing one.
        self.source_query = source_query.strip().rstrip(";").rstrip() + "\n"
        self.options = options
        self.database = spec.clickhouse.database
        self.run_time = options.run_time.astimezone(UTC).replace(microsecond=0)
        self.window_start = self.run_time - spec.window_delta
        # Epoch seconds: a DateTime parameter given as a number means the same instant in any time zone.
        self.params: dict[str, Any] = {
            "window_start": int(self.window_start.timestamp()),
            "run_time": int(self.run_time.timestamp()),
        }
        # Slice membership as one boolean: a predicate that is NULL for a row does not select it,
        # and NOT of it must then select the row (NOT NULL would lose it from both sides). Pasted into
        # statements only once the server's parser has read it as one expression (check_inputs).
        self.in_slice = sql.slice_condition(spec.slice.predicate)
        self._predicate_checked = False
        self.scope = Scope(self.in_slice)
        if spec.incremental is not None:
            self.scope.key = tuple(spec.incremental.key)
            self.scope.keys_name = names.run_table(spec.target.table, options.run_id, "changed")
        self.params.update(self.scope.params())
        self.record = RunRecord(
            run_id=options.run_id,
            target=f"{self.database}.{spec.target.table}",
            strategy=spec.strategy.value,
            started_at=datetime.now(UTC),
            window_start=self.window_start,
            kind=self.scope.kind.kind,
            run_time=self.run_time,
        )
        self._client: Client | None = None
        self._staging: str | None = None
        self._scratch: list[str] = []  # other tables of this run (key sets), dropped at its end
        self._source_columns: list[str] = []
        self._staging_name = ""
        # Set once the target may have changed: what it holds then, for the error of a later failure.
        # Set and read under a lock: a signal's thread kills the run's statements only before the swap.
        self._swap_lock = threading.Lock()
        self.__swapped: str | None = None
        if options.stop is not None:
            options.stop.on_request(self._kill_statements)

    @property
    def _swapped(self) -> str | None:
        return self.__swapped

    @_swapped.setter
    def _swapped(self, what: str | None) -> None:
        with self._swap_lock:
            if self.__swapped is None and what is not None:
                self._check_stop()  # a stop asked for before the swap: the swap never starts
            self.__swapped = what

    @property
    def source_columns(self) -> list[str]:
        """The source's columns, known once :meth:`check_inputs` ran."""
        return list(self._source_columns)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self.connect()
            # What marks this run's statements in system.processes, for _kill_statements.
            self._client.set_client_setting("log_comment", self._statement_mark)
        return self._client

    @property
    def _statement_mark(self) -> str:
        return f"tablerefresh run {self.options.run_id}"

    # -- a signal's stop ---------------------------------------------------------------------

    def _check_stop(self) -> None:
        stop = self.options.stop
        if stop is not None and stop.signum is not None:
            raise self._interruption(stop)

    def _interruption(self, stop: Stop) -> Interrupted:
        assert stop.signum is not None
        if self.__swapped is not None:
            what = f"interrupted by {stop.name} after the swap: {self.__swapped}"
            return Interrupted(what, stop.signum, after_swap=True)
        return Interrupted(f"interrupted by {stop.name}: the target {self.record.target} is unchanged", stop.signum)

    def _kill_statements(self, signum: int) -> None:
        """From the signal's thread: kill the statements this run's client is running, so that it
        stops within a pod's grace period; never once the swap may have started (the swap is quick,
        and a replace stopped halfway would leave the target part old, part new)."""
        with self._swap_lock:
            if self.__swapped is not None or self._client is None:
                return
            killer = self.connect()
            try:
                killer.command(
                    "KILL QUERY WHERE Settings['log_comment'] = "
                    f"{sql.string_literal(self._statement_mark)} AND query_id != queryID() ASYNC"
                )
            finally:
                killer.close()

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> RunRecord:
        locked = False
        try:
            with self._step("check inputs"):
                target = self.check_inputs()
            lock = TableLock(
                self.connect,
                self.database,
                target.name,
                self.options.owner,
                ttl_seconds=self.options.lock_ttl_seconds,
                heartbeat_seconds=self.options.heartbeat_seconds,
            )
            with lock:  # its exit never raises
                locked = True
                failpoint("locked")
                try:
                    with self._step("clean up leftovers"):
                        self._clean_leftovers(target)
                    with self._step("pre-flight"):
                        self._preflight(target)
                    with self._step("choose a full or an incremental run"):
                        self.choose_kind()
                    self._run_strategy(target, lock)
                except VerificationFailed:
                    self._quietly("keep the failed run's staging table", lambda: self._keep_evidence(target))
                    raise
                finally:
                    self._quietly("drop the staging table", self._drop_staging)
            self._finish(Outcome.SUCCEEDED)
        except Exception as exc:
            self._fail(exc)
            self._count_target_after_failure()
        # An interrupted run is recorded even before it held the lock: its stop is no one else's.
        if locked or self.record.outcome == Outcome.INTERRUPTED:
            self._quietly(
                "write the run record",
                lambda: write_run(self.client, self.database, self.record, reconnect=self.connect),
            )
        if self._client is not None:
            self._quietly("close the connection", self._client.close)
            self._client = None
        return self.record

    def _run_strategy(self, target: TableInfo, lock: TableLock) -> None:
        strategy = {
            Strategy.REPLACE_PARTITIONS: self._replace_partitions,
            Strategy.EXCHANGE: self._exchange,
            Strategy.DELETE_INSERT: self._delete_insert,
        }[self.spec.strategy]
        strategy(target, lock)

    def _fail(self, exc: Exception) -> None:
        stop = self.options.stop
        if stop is not None and stop.signum is not None:
            # Whatever the error (a killed statement's, most likely), a signal stopped the run.
            interrupted = exc if isinstance(exc, Interrupted) else self._interruption(stop)
            self._finish(Outcome.INTERRUPTED, interrupted)
            return
        if isinstance(exc, RefreshError):
            error = exc
        elif isinstance(exc, ClickHouseError):
            error = RefreshError(one_line(exc))
        else:  # a bug: still end with a summary the controller can read
            log.exception("run %s failed unexpectedly", self.record.run_id)
            error = RefreshError(f"internal error: {type(exc).__name__}: {exc}")
        if self._swapped is not None and not isinstance(error, FailedAfterSwap):
            error = FailedAfterSwap(f"{error}; {self._swapped}")
        if isinstance(error, FailedAfterSwap):
            outcome = Outcome.FAILED_AFTER_SWAP
        elif isinstance(error, LockHeld):
            outcome = Outcome.SKIPPED
        else:
            outcome = Outcome.FAILED
        self._finish(outcome, error)

    def _finish(self, outcome: str, error: RefreshError | None = None) -> None:
        self.record.outcome = outcome
        self.record.finished_at = datetime.now(UTC)
        if error is None:
            self.record.exit_code = 0
            log.info("run %s succeeded in %.1fs", self.record.run_id, self.record.duration_seconds)
            return
        self.record.exit_code = int(error.exit_code)
        self.record.reason = error.reason
        # Printable, without the credentials: it goes to the runs table, the summary and status.
        self.record.error = scrub(printable(str(error)), *self.options.secrets)
        # The error itself is the caller's to show (the command prints it once, as `error: …`).
        log.info("run %s ended %s (exit code %d)", self.record.run_id, outcome, self.record.exit_code)

    def _count_target_after_failure(self) -> None:
        """A failed or refused run still reports the rows the target really holds."""
        if self.record.exit_code == ExitCode.UNREACHABLE or not self._predicate_checked:
            return  # nothing to count with, or a predicate that must not reach a statement
        table = sql.table(self.database, self.spec.target.table)
        try:
            rows, in_slice = self.client.query(
                f"SELECT count(), countIf({self.in_slice}) FROM {table}", parameters=self.params
            ).result_rows[0]
        except Exception as exc:  # no table, a predicate that does not compile: the error says so already
            log.debug("could not count %s: %s", table, one_line(exc))
            return
        self.record.rows_after, self.record.slice_rows_after = int(rows), int(in_slice)
        if self._swapped is None:  # untouched: before is after, whether or not the run got to measure it
            self.record.rows_before, self.record.slice_rows_before = int(rows), int(in_slice)

    def _quietly(self, what: str, action: Callable[[], object]) -> None:
        """Cleanup: an error is logged beside the run's outcome, never in place of it."""
        try:
            action()
        except Exception as exc:
            log.error("could not %s: %s", what, one_line(exc))

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        """One line as a step starts; its time too when it took long enough to matter."""
        self._check_stop()
        started = time.monotonic()
        log.info("%s ...", name)
        yield
        took = time.monotonic() - started
        log.log(logging.INFO if took >= 1 else logging.DEBUG, "%s done in %.1fs", name, took)

    # -- checks before anything is touched ---------------------------------------------------

    def check_inputs(self) -> TableInfo:
        # First: until the server has read it as one expression, the predicate is pasted into nothing
        # (on the embedded engine, a text that closes the parentheses could run statements of its own).
        sql_guard.check_predicate(self.client, self.spec.slice.predicate, self.params)
        self._predicate_checked = True
        target = catalog.describe_table(self.client, self.database, self.spec.target.table)
        columns = {c.name for c in target.columns}
        for role, wanted in (("uniqueKey", self.spec.unique_key), ("freshnessColumn", [self.spec.freshness_column])):
            unknown = [c for c in wanted if c not in columns]
            if unknown:
                raise InvalidInput(f"{role} names column(s) not in {self.record.target}: {', '.join(unknown)}")
        if self.spec.strategy == Strategy.REPLACE_PARTITIONS and not target.partition_key:
            raise InvalidInput(
                f"{self.record.target} has no PARTITION BY, so ReplacePartitions cannot isolate the slice; "
                "use strategy Exchange or DeleteInsert"
            )
        if self.spec.strategy == Strategy.EXCHANGE:
            if catalog.local_engine(target) is not None:
                raise InvalidInput(f"Exchange cannot rebuild the replicated table {self.record.target}")
            if target.uuid == _ZERO_UUID:
                raise InvalidInput(
                    f"Exchange needs EXCHANGE TABLES, which {self.database}'s database engine lacks (use Atomic)"
                )
        source = self.source_query
        if self.spec.incremental is not None:
            key = self.spec.incremental.key
            keyset.check_query(self.client, self.spec.incremental.changed_keys_query, self.params, key)
            # The key table does not exist yet: describe the source with an empty CTE in its place.
            source = keyset.with_keys(self.scope.keys_name, keyset.no_keys(target, key), source)
        source_columns = catalog.query_columns(self.client, source, self.params)
        catalog.check_source_columns(target, source_columns)
        self._source_columns = [c.name for c in source_columns]
        self.record.definition = definition_hash(
            self.spec, self.source_query, [(c.name, c.type) for c in target.columns]
        )
        try:
            self.client.query(f"SELECT 1 FROM {target.qualified} WHERE {self.in_slice} LIMIT 0", parameters=self.params)
        except ClickHouseError as exc:
            if getattr(exc, "code", None) is None:
                raise  # the connection broke, not the predicate
            raise InvalidInput(f"the slice predicate does not compile: {one_line(exc)}") from exc
        audits.check(self.client, self.spec.audits, target.name, self.params)
        return target

    def choose_kind(self) -> RunKind:
        """Full or incremental, from the runs table (read only); call after :meth:`check_inputs`."""
        past = runs.History()
        if self.spec.incremental is not None:
            past = runs.history(self.client, self.database, self.record.target, self.record.definition)
        kind = choose(
            self.spec.incremental, past, self.record.definition, self.run_time, force_full=self.options.force_full
        )
        self.scope.kind = kind
        self.params.update(self.scope.params())
        self.record.kind, self.record.kind_reason, self.record.since = kind.kind, kind.reason, kind.since
        log.info("%s run: %s", kind.kind.lower(), kind.reason)
        return kind

    def _preflight(self, target: TableInfo) -> None:
        kill_after = self.spec.mutations.kill_stuck_after
        if kill_after is not None:
            killed = mutations.kill_older_than(
                self.client, self.database, target.name, parse_duration(kill_after).total_seconds()
            )
            for m in killed:
                log.warning("killed stuck mutation %s (%s)", m.describe(), mutations.NOT_ROLLED_BACK)
        limit = parse_duration(self.spec.mutations.max_pending).total_seconds()
        stuck = [m for m in mutations.pending(self.client, self.database, target.name) if m.age_seconds > limit]
        if stuck:
            raise PreflightRefused(
                f"{self.record.target} has mutation(s) pending longer than {self.spec.mutations.max_pending}: "
                + "; ".join(m.describe() for m in stuck)
            )

    def _clean_leftovers(self, target: TableInfo) -> None:
        """Staging tables of crashed runs. Safe: we hold the lock, so no other run owns them.

        An Exchange killed between the exchange and naming the backup left the previous table under
        its staging name: that one is kept as a backup, never dropped."""
        prefix = names.staging_prefix(target.name)
        for name in catalog.tables_with_prefix(self.client, self.database, prefix):
            leftover = catalog.describe_table(self.client, self.database, name)
            run = names.exchanged_run(target.name, name, leftover.uuid)
            if run is not None:
                kept = backups.keep_table(self.client, target, run, name)
                log.warning(
                    "%s.%s held the table an interrupted exchange replaced: kept as %s", self.database, name, kept
                )
                continue
            log.warning("dropping %s.%s, left by an earlier run that did not finish", self.database, name)
            self.client.command(f"DROP TABLE IF EXISTS {sql.table(self.database, name)} SYNC")
        self._drop_old_evidence(target)

    # -- staging -----------------------------------------------------------------------------

    def _drop_staging(self) -> None:
        failpoint("drop-staging")
        if self._staging is not None:
            self.client.command(f"DROP TABLE IF EXISTS {self._staging} SYNC")
            self._staging = None
        while self._scratch:
            self.client.command(f"DROP TABLE IF EXISTS {self._scratch[-1]} SYNC")
            self._scratch.pop()

    def _load_staging(self, target: TableInfo, name: str | None = None) -> str:
        with self._step("build staging from the source query"):
            self._staging_name = name or names.staging_table(target.name, self.options.run_id)
            self._staging = staging = catalog.create_like(self.client, target, self._staging_name)
            failpoint("staging-created")
            columns = sql.column_list(self._source_columns)
            # The source's rows as they are: an incremental run drops those of unchanged keys after.
            self.client.command(
                f"INSERT INTO {staging} ({columns}) SELECT {columns} FROM ({self.source_query})",
                parameters=self.params,
                settings=_INSERT_SETTINGS,
            )
            if self.scope.incremental:
                self._drop_unchanged_keys(staging)
        failpoint("staged")
        return staging

    def _drop_unchanged_keys(self, staging: str) -> None:
        """An incremental run takes only the changed keys' rows from the source.

        It filters what the source put in staging, not the source's output: the engine pushes a
        filter on the output down to the source's scan, where it would test every row the source
        reads against the key table a second time (a source written for incremental runs tests the
        same keys there already); on the reference that added a third to the source's cost. Staging
        then holds only the changed keys' rows, and the check costs a scan of those; a source that
        ignores ``{changed_keys:Identifier}`` fills staging with more, which the run deletes."""
        unchanged = self.scope.unchanged
        extra = self._count(staging, unchanged)
        if extra:
            log.warning(
                "the source yielded %d row(s) of keys that did not change (does it read {changed_keys:Identifier}?); "
                "dropping them from staging",
                extra,
            )
            self.client.command(
                f"ALTER TABLE {staging} DELETE WHERE {unchanged}",
                parameters=self.params,
                settings={"mutations_sync": 2},
            )

    def _target_before(
        self, target: TableInfo, source: dict[str, PartitionCounts]
    ) -> tuple[dict[str, PartitionCounts], str | None]:
        """The target's rows per partition, and those the run replaces. An incremental run also links
        the rows it keeps into a table of its own (``carry.py``), which it returns, and counts what it
        replaces as what that table lost; None when the engine refuses, and the run copies them."""
        counts = self.partition_counts(target.qualified)
        if not self.scope.incremental:
            return counts, None
        touched = sorted(p for p in counts if counts[p].slice_rows or p in source)
        name = names.run_table(target.name, self.options.run_id, "kept")
        with self._step(f"link the rows of {len(touched)} partition(s) and mark the replaced ones"):
            table = self._link(target, name, touched, counts)
            try:
                table, kept = self._mask(target, name, table, touched, counts)
            except DatabaseError as exc:
                log.warning("cannot mark rows deleted (%s): copying the unchanged rows instead", one_line(exc))
                return self.target_counts(target.qualified), None
        failpoint("linked")
        replaced = {p: counts[p].rows - kept.get(p, 0) for p in touched}
        return {p: dataclasses.replace(c, replaced_rows=replaced.get(p, 0)) for p, c in counts.items()}, table

    def _link(self, target: TableInfo, name: str, touched: list[str], counts: dict[str, PartitionCounts]) -> str:
        """Link the target's parts of ``touched`` into a new table ``name`` (``carry.py``), which must
        hold the rows ``counts`` says the target holds there."""
        table, linked = carry.link(self.client, target, name, touched)
        self._scratch.append(table)
        moved = [f"{p}: {counts[p].rows} -> {linked.get(p, 0)}" for p in touched if linked.get(p, 0) != counts[p].rows]
        if moved:
            raise VerificationFailed(
                f"rows changed in {self.record.target} while the run read it ({', '.join(moved)}); "
                f"{self.record.target} was not changed"
            )
        return table

    def _mask(
        self, target: TableInfo, name: str, table: str, touched: list[str], counts: dict[str, PartitionCounts]
    ) -> tuple[str, dict[str, int]]:
        """Mark the rows the run replaces deleted in ``table``, the target's parts of ``touched`` as
        linked by :meth:`_link`; returns the table and the rows it has left per partition.

        The engine tests a mask's condition twice per row (whether a part is touched, then each row),
        so the mask compares the keys by a 64-bit hash, several times cheaper to test than the key
        tuples (``Scope.replaced_by_hash``). That marks every replaced row, and on a hash collision a
        row of an unchanged key too; so the run first counts the replaced rows exactly (testing the
        tuple only where the hash matched), and if the mask took more, links the partitions again and
        masks by the key tuples."""
        exact = catalog.partition_rows(self.client, table, self.scope.replaced_checked, self.params, _SHORT_CIRCUIT)
        kept = carry.mask(self.client, table, self.scope.replaced_by_hash, self.params)
        if all(counts[p].rows - kept.get(p, 0) == exact.get(p, 0) for p in touched):
            return table, kept
        log.warning(
            "the key hash of an unchanged key collides with a changed key's: marking the replaced rows by their keys"
        )
        self.client.command(f"DROP TABLE IF EXISTS {table} SYNC")
        self._scratch.remove(table)
        table = self._link(target, name, touched, counts)
        return table, carry.mask(self.client, table, self.scope.replaced, self.params)

    def _carry_over(
        self,
        target: TableInfo,
        staging: str,
        changes: list[PartitionChange],
        source_duplicates: int,
        kept_table: str | None = None,
        outside_slice: Collection[str] = (),
    ) -> tuple[int, int]:
        """Carry the replaced partitions' rows the run does not replace into staging, as they are:
        copied, or linked from ``kept_table``. ``outside_slice``: the partitions that hold rows
        outside the slice, the only ones whose kept rows an incremental run's source can clash with.

        Returns how many keys the source yields that these rows hold too (duplicates the run would
        make; those already among the kept rows are the table's, which the health check reports),
        and the duplicates staging then holds (an incremental run: among its changed keys' rows)."""
        carried = [c.partition for c in changes if c.kept]
        if not carried:
            return 0, source_duplicates
        kept = f"_partition_id IN {{carried:Array(String)}} AND NOT {self.scope.replaced}"
        params = {**self.params, "carried": carried}
        if self.scope.incremental:
            outside = [p for p in carried if p in outside_slice]
            clashes = self._changed_key_clashes(target.qualified, staging, {**params, "carried": outside})
        what = "unchanged rows" if self.scope.incremental else "rows outside the slice"
        with self._step(f"carry over the {what} of {len(carried)} partition(s)"):
            if kept_table is not None:
                self.client.command(carry.attach_statement(staging, kept_table, carried))
            else:
                columns = [c.name for c in target.columns if c.default_kind not in ("ALIAS", "EPHEMERAL")]
                names_ = sql.column_list(columns)
                self.client.command(
                    f"INSERT INTO {staging} ({names_}) SELECT {names_} FROM {target.qualified} WHERE {kept}",
                    parameters=params,
                    settings=_CARRY_SETTINGS,
                )
        failpoint("carried")
        if self.scope.incremental:
            return clashes, source_duplicates + clashes
        kept_duplicates = self._duplicates(target.qualified, kept, params)
        staged_duplicates = self._duplicates(staging)
        return staged_duplicates - source_duplicates - kept_duplicates, staged_duplicates

    def _changed_key_clashes(self, target: str, staging: str, params: dict[str, Any]) -> int:
        """Kept rows whose unique key the source yields too. The source yields changed keys only, so
        only the changed keys' kept rows (those outside the slice) can clash: no need to count the
        duplicates of every kept row, as a full run does. ``params["carried"]`` names the partitions
        to look in: those with rows outside the slice (none, in a table partitioned by the slice)."""
        if not params["carried"]:
            return 0
        keys = sql.column_list(self.spec.unique_key)
        staged = keyset.member(self.spec.unique_key, f"(SELECT {keys} FROM {staging})")
        # The slice test first: it is cheap, and false for every row of a partition wholly in the slice.
        where = f"_partition_id IN {{carried:Array(String)}} AND NOT {self.in_slice} AND {self.scope.changed}"
        return self._count(target, f"{where} AND {staged}", params)

    def _duplicates(self, table: str, where: str = "1", params: dict[str, Any] | None = None) -> int:
        keys = sql.column_list(self.spec.unique_key)
        # tuple(): aggregate functions skip rows with a NULL argument, a tuple is never NULL.
        rows = self.client.query(
            f"SELECT count() - uniqExact(tuple({keys})) FROM {table} WHERE {where}",
            parameters=self.params if params is None else params,
        ).result_rows
        return int(rows[0][0])

    def _count(self, table: str, where: str = "1", params: dict[str, Any] | None = None) -> int:
        return int(
            self.client.query(
                f"SELECT count() FROM {table} WHERE {where}", parameters=self.params if params is None else params
            ).result_rows[0][0]
        )

    def partition_counts(self, table: str) -> dict[str, PartitionCounts]:
        """Rows, and slice rows, per partition of ``table``, in one scan."""
        result = self.client.query(
            f"SELECT _partition_id, count(), countIf({self.in_slice}) FROM {table} GROUP BY _partition_id",
            parameters=self.params,
        ).result_rows
        return {str(p): PartitionCounts(int(n), int(k)) for p, n, k in result}

    def without_surplus(
        self, table: str, changes: list[PartitionChange], old_slice_rows: int, new_slice_rows: int
    ) -> tuple[list[PartitionChange], int]:
        """The changes, and the old slice rows, measured without second copies of a key when a shrink
        would stop the run.

        An engine that dies inside a swap (the embedded one dies with its run) can leave a replaced
        partition's old part beside its new one: every key twice. The next replace drops those copies,
        which are no rows lost; counted as rows, they would make a shrinking partition look halved, and
        every later run would refuse. Counted only then, so a run that shrinks nothing pays nothing; a
        source that yields too few rows is still refused."""
        limit = self.spec.thresholds.max_slice_drop_fraction
        slice_drop = max(0, old_slice_rows - new_slice_rows) / old_slice_rows if old_slice_rows else 0.0
        if slice_drop <= limit and all(c.drop_fraction <= limit for c in changes):
            return changes, old_slice_rows
        keys = f"tuple({sql.column_list(self.spec.unique_key)})"
        rows = self.client.query(
            f"SELECT _partition_id, count() - uniqExact({keys}), "
            f"countIf({self.in_slice}) - uniqExactIf({keys}, {self.in_slice}) "
            f"FROM {table} WHERE _partition_id IN {{replace:Array(String)}} GROUP BY _partition_id",
            parameters={**self.params, "replace": [c.partition for c in changes]},
        ).result_rows
        surplus = {str(p): int(n) for p, n, _ in rows}
        slice_surplus = sum(int(n) for _, _, n in rows)
        return [replace(c, old_surplus=surplus.get(c.partition, 0)) for c in changes], old_slice_rows - slice_surplus

    def target_counts(self, table: str, replaced: str | None = None) -> dict[str, PartitionCounts]:
        """:meth:`partition_counts`, and in an incremental run the rows it replaces (``replaced``:
        SQL, by default the scope's), counted in the partitions with slice rows only."""
        counts = self.partition_counts(table)
        if not self.scope.incremental:
            return counts
        in_slice = [p for p, c in counts.items() if c.slice_rows]
        where = f"_partition_id IN {{in_slice:Array(String)}} AND {replaced or self.scope.replaced}"
        rows = catalog.partition_rows(self.client, table, where, {**self.params, "in_slice": in_slice})
        return {p: dataclasses.replace(c, replaced_rows=rows.get(p, 0)) for p, c in counts.items()}

    def vanishing_keys(self, target: str, staging: str) -> dict[str, int]:
        """Per partition, the target's keys outside the slice that staging does not hold."""
        if self.spec.allow_vanishing_keys:
            return {}
        keys = f"tuple({sql.column_list(self.spec.unique_key)})"
        rows = self.client.query(
            f"SELECT _partition_id, count() FROM {target} WHERE NOT {self.in_slice} "
            f"AND {keys} NOT IN (SELECT {keys} FROM {staging}) GROUP BY _partition_id",
            parameters=self.params,
            settings={"transform_null_in": 1},
        ).result_rows
        return {str(p): int(n) for p, n in rows}

    def _verify(self, facts: StagingFacts) -> None:
        self.record.slice_rows_before = facts.old_slice_rows
        problems = staging_problems(facts, self.spec.thresholds)
        if problems:
            raise VerificationFailed("; ".join(problems) + f"; {self.record.target} was not changed")
        if self.spec.audits:
            assert self._staging_name
            results = audits.evaluate(self.client, self.spec.audits, self._staging_name, self.params)
            self.record.audits = [r.as_status() for r in results]
            failed = [r.describe() for r in results if not r.passed]
            if failed:
                raise AuditFailed("; ".join(failed) + f"; {self.record.target} was not changed")
        failpoint("verified")

    def _keep_evidence(self, target: TableInfo) -> None:
        """With spec.keepFailedStaging, the staged data a check refused stays for the user to query."""
        if self.spec.keep_failed_staging is None or self._staging is None:
            return
        name = names.evidence_table(target.name, self.options.run_id, datetime.now(UTC))
        self.client.command(f"RENAME TABLE {self._staging} TO {sql.table(self.database, name)}")
        self._staging = None
        self.record.evidence_table = f"{self.database}.{name}"
        log.info("kept the refused staged data as %s", self.record.evidence_table)

    def _drop_old_evidence(self, target: TableInfo) -> None:
        keep = self.spec.keep_failed_staging
        oldest = datetime.now(UTC) - (parse_duration(keep) if keep else timedelta(0))
        for name in catalog.tables_with_prefix(self.client, self.database, names.evidence_prefix(target.name)):
            kept_at = names.evidence_time(name)
            if kept_at is not None and kept_at < oldest:
                log.info("dropping %s.%s, the staged data of a failed run, kept long enough", self.database, name)
                self.client.command(f"DROP TABLE IF EXISTS {sql.table(self.database, name)} SYNC")

    def _record_after(self, table: str) -> None:
        self.record.rows_after = self._count(table)
        self.record.slice_rows_after = self._count(table, self.in_slice)

    # -- strategies --------------------------------------------------------------------------

    def _replace_partitions(self, target: TableInfo, lock: TableLock) -> None:
        tq = target.qualified
        if self.spec.incremental is not None and self._changed_keys(target) == 0:
            self._nothing_changed(tq)
            return
        staging = self._load_staging(target)
        with self._step("verify staging"):
            source = self.partition_counts(staging)
            duplicates = self._duplicates(staging)  # the source's own
            before, kept = self._target_before(target, source)
            old_slice_rows = sum(c.slice_rows for c in before.values())
            # The slice after the swap: the rows not replaced, and the rebuilt ones.
            new_slice_rows = old_slice_rows - sum(c.replaced for c in before.values())
            new_slice_rows += sum(c.slice_rows for c in source.values())
            changes, measured_old_slice_rows = self.without_surplus(
                tq, swap_plan(before, {p: c.rows for p, c in source.items()}), old_slice_rows, new_slice_rows
            )
            outside_slice = {p for p, c in before.items() if c.rows != c.slice_rows}
            clashes, staged_duplicates = self._carry_over(target, staging, changes, duplicates, kept, outside_slice)
            staged = catalog.partition_rows(self.client, staging)
            self.record.rows_before = sum(c.rows for c in before.values())
            self.record.partitions = [c.partition for c in changes]
            moved = mismatched(changes, staged)
            if moved:
                raise VerificationFailed(
                    f"rows outside the slice changed in {self.record.target} while the run built staging "
                    f"(expected -> staged: {', '.join(moved)}); {self.record.target} was not changed"
                )
            self._verify(
                StagingFacts(
                    duplicates=duplicates,
                    kept_key_clashes=clashes,
                    old_slice_rows=measured_old_slice_rows,
                    new_slice_rows=new_slice_rows,
                    changes=tuple(changes),
                    outside={p: c.kept for p, c in source.items() if c.kept},
                )
            )
        if self._sampling:
            self._quietly("compare a sample of keys", lambda: self._compare_sample(target, staging))
        with self._step(f"swap {len(changes)} partition(s)"):
            lock.assert_held()
            if self.spec.backup.keep:
                backups.take_partitions(self.client, target, self.options.run_id, self.record.partitions)
                failpoint("backed-up")
            if changes:
                self._swapped = (
                    f"the swap of partitions {', '.join(self.record.partitions)} into {tq} ran or may have run, "
                    "so the target may hold new partitions; the next run rebuilds them"
                )
                self._swap(target, staging, changes)
            failpoint("swapped")
        with self._step("verify the swap"):
            # Each replaced partition must now hold exactly the staged parts. Then its keys are the
            # staged keys, already checked for duplicates, and its slice rows are the staged ones.
            after = catalog.partition_rows(
                self.client, tq, "_partition_id IN {replace:Array(String)}", {"replace": self.record.partitions}
            )
            wrong = mismatched(changes, after)
            if wrong:
                raise FailedAfterSwap(
                    f"after the swap {self.record.target} does not hold the staged rows "
                    f"(expected -> found: {', '.join(wrong)}); "
                    "the swap ran, the target is changed"
                )
            self.record.duplicates = staged_duplicates
            self.record.rows_after = self._count(tq)
            self.record.slice_rows_after = new_slice_rows
        # Every backup counts, dedupe's and restore's too: with keep 0 a refresh leaves none.
        self._quietly(
            "prune old backups",
            lambda: backups.prune(self.client, self.database, target.name, self.spec.backup.keep),
        )

    def _swap(self, target: TableInfo, staging: str, changes: list[PartitionChange]) -> None:
        """The swap statement; when its answer does not arrive (or is an error), find out on a new
        connection what it did (``unanswered.py``): carry on if it ran, say "not changed" only if
        every partition holds the parts it had, and what is known otherwise."""
        partitions = [c.partition for c in changes]
        before = unanswered.top_blocks(self.client, self.database, target.name, partitions)
        query_id = f"tablerefresh-swap-{self.options.run_id}-{secrets.token_hex(4)}"
        try:
            self.client.command(swap_statement(target.qualified, staging, changes), settings={"query_id": query_id})
            return
        except ClickHouseError as exc:
            cause = one_line(exc)
        log.warning("the swap's answer: %s; looking at the target's partitions on a new connection", cause)

        def drop_staging(client: Client) -> None:
            client.command(f"DROP TABLE IF EXISTS {staging} SYNC")

        found = unanswered.find_out_swap(
            self.connect, self.database, target.name, changes, before, query_id, drop_staging
        )
        if found.client is not None:
            old, self._client = self._client, found.client
            if old is not None:
                self._quietly("close the connection the swap was sent on", old.close)
        if found.staging_dropped:
            self._staging = None
        if found.landed is unanswered.Landed.ALL:
            log.warning("the swap ran (%s): carrying on", found.detail)
            return
        if found.landed is unanswered.Landed.NONE:
            self._swapped = None
            raise RefreshError(
                f"{cause} while sending the swap; on a new connection {found.detail}: "
                f"the swap did not run, {self.record.target} was not changed"
            )
        if found.landed is unanswered.Landed.SOME:
            raise FailedAfterSwap(
                f"{cause} while sending the swap; on a new connection {found.detail}: "
                f"{self.record.target} holds part of the new data; the next run rebuilds every partition of the slice"
            )
        raise FailedAfterSwap(
            f"{cause} while sending the swap, and whether it ran is unknown ({found.detail}): "
            f"{self.record.target} may hold new partitions; the next run rebuilds them"
        )

    def _changed_keys(self, target: TableInfo) -> int | None:
        """The key table: the changed keys in an incremental run (returns how many), empty in a full
        run (which the source reads everything in, but must find the table it names)."""
        assert self.spec.incremental is not None
        incremental = self.scope.incremental
        with self._step("find the changed keys" if incremental else "create the (empty) changed-keys table"):
            table = keyset.create(self.client, target, self.scope.keys_name, self.scope.key)
            self._scratch.append(table)
            if incremental:
                query = self.spec.incremental.changed_keys_query
                self.record.changed_keys = keyset.fill(self.client, table, self.scope.key, query, self.params)
                log.info("%d changed key(s) since %s", self.record.changed_keys, self.scope.kind.since)
        failpoint("changed-keys")
        return self.record.changed_keys

    def _nothing_changed(self, tq: str) -> None:
        """No key changed: nothing to rebuild, nothing to swap; the run succeeds as it is."""
        self.record.rows_before = self.record.rows_after = self._count(tq)
        self.record.slice_rows_before = self.record.slice_rows_after = self._count(tq, self.in_slice)

    @property
    def _sampling(self) -> bool:
        """A full run of an incremental spec compares a sample of keys before it replaces them, when
        what it replaces is what runs of the same definition left."""
        incremental, kind = self.spec.incremental, self.scope.kind
        return incremental is not None and incremental.verify_sample > 0 and not kind.incremental and kind.continues

    def _compare_sample(self, target: TableInfo, staging: str) -> None:
        assert self.spec.incremental is not None
        size, key, tq = self.spec.incremental.verify_sample, self.scope.key, target.qualified
        with self._step(f"compare {size} sampled key(s) with what the incremental runs left"):
            name = names.run_table(target.name, self.options.run_id, "sample")
            table = keyset.create(self.client, target, name, key)
            self._scratch.append(table)
            columns = sql.column_list(list(key))
            populations = [f"SELECT {columns} FROM {t} WHERE {self.in_slice}" for t in (tq, staging)]
            drawn = sample.draw(self.client, table, key, populations, size, int(self.run_time.timestamp()), self.params)
            report = sample.compare(
                self.client, target, self.spec.unique_key, key, table, drawn, staging, self.in_slice, self.params
            )
        self.record.sample_keys, self.record.sample_differences = report.keys, report.differences
        if report.differences:
            log.warning(
                "the incremental runs since the last full run left rows a full rebuild does not give, for %s; "
                "this full run repairs them (changes later than incremental.lateness?)",
                report.describe(),
            )
        else:
            log.info("sample: %s", report.describe())

    def _exchange(self, target: TableInfo, lock: TableLock) -> None:
        name = names.exchange_staging_table(target.name, self.options.run_id, target.uuid)
        staging = self._load_staging(target, name)
        tq = target.qualified
        with self._step("verify staging"):
            old_total, new_total = self._count(tq), self._count(staging)
            self.record.rows_before = old_total
            self._verify(
                StagingFacts(
                    duplicates=self._duplicates(staging),
                    old_slice_rows=self._count(tq, self.in_slice),
                    new_slice_rows=self._count(staging, self.in_slice),
                    changes=(PartitionChange("*", old_total, new_total),),
                    vanishing=self.vanishing_keys(tq, staging),
                )
            )
        with self._step("exchange tables"):
            lock.assert_held()
            # From here the staging name may hold the previous table: never drop it (a later run
            # keeps it as a backup if this one cannot).
            self._swapped = f"the tables were exchanged or may have been; the previous table is {self.database}.{name}"
            self._staging = None
            previous = self._exchange_tables(target, name)
            failpoint("swapped")
            kept = backups.keep_table(self.client, target, self.options.run_id, previous)
            self._swapped = f"the tables were exchanged: the previous table is kept as {self.database}.{kept}"
        self.record.duplicates = self._duplicates(tq)
        self._record_after(tq)
        self._quietly(
            "prune old backups",
            lambda: backups.prune(self.client, self.database, target.name, max(1, self.spec.backup.keep)),
        )

    def _exchange_tables(self, target: TableInfo, name: str) -> str:
        """``EXCHANGE TABLES``; returns the name that holds the previous table. When the answer does
        not arrive (or is an error), finds out on a new connection whether the exchange ran."""
        staging = sql.table(self.database, name)
        query_id = f"tablerefresh-exchange-{self.options.run_id}-{secrets.token_hex(4)}"
        try:
            self.client.command(f"EXCHANGE TABLES {target.qualified} AND {staging}", settings={"query_id": query_id})
            return name
        except ClickHouseError as exc:
            cause = one_line(exc)
        log.warning("the exchange's answer: %s; looking at the tables on a new connection", cause)
        fence = names.exchange_staging_table(target.name, f"{self.options.run_id}_fence", target.uuid)
        found = unanswered.find_out_exchange(
            self.connect, self.database, target.name, target.uuid, name, fence, query_id
        )
        if found.client is not None:
            old, self._client = self._client, found.client
            if old is not None:
                self._quietly("close the connection the exchange was sent on", old.close)
        if found.exchanged:
            log.warning("%s: carrying on", found.detail)
            return found.previous
        if found.exchanged is False:
            self._swapped = None
            self._staging = sql.table(self.database, found.staging)
            raise RefreshError(
                f"{cause} while sending the exchange; on a new connection {found.detail}: "
                f"the exchange did not run, {self.record.target} was not changed"
            )
        raise FailedAfterSwap(
            f"{cause} while sending the exchange, and whether it ran is unknown ({found.detail}): "
            f"{self.record.target} may be the new table; the next run keeps the previous one as a backup"
        )

    def _delete_insert(self, target: TableInfo, lock: TableLock) -> None:
        staging = self._load_staging(target)
        tq = target.qualified
        columns = sql.column_list(target.insertable_columns)
        with self._step("verify staging"):
            new_total = self._count(staging)
            new_slice = self._count(staging, self.in_slice)
            self.record.rows_before = self._count(tq)
            self._verify(
                StagingFacts(
                    duplicates=self._duplicates(staging),
                    old_slice_rows=self._count(tq, self.in_slice),
                    new_slice_rows=new_slice,
                    outside={"*": new_total - new_slice} if new_total != new_slice else {},
                )
            )
        with self._step("delete the slice, then insert it (not atomic: readers see a gap)"):
            lock.assert_held()
            if self.spec.backup.keep:
                backups.take_rows(self.client, target, self.options.run_id, self.in_slice, self.params)
            self._swapped = f"the slice of {tq} was deleted, or may have been, and may be missing until a run succeeds"
            self.client.command(
                f"ALTER TABLE {tq} DELETE WHERE {self.in_slice}",
                parameters=self.params,
                settings={"mutations_sync": 2},
            )
            failpoint("deleted")
            self.client.command(
                f"INSERT INTO {tq} ({columns}) SELECT {columns} FROM {staging}", settings=_INSERT_SETTINGS
            )
            self._swapped = f"the new slice was inserted into {tq}"
            failpoint("swapped")
        self.record.duplicates = self._duplicates(tq, self.in_slice)
        self._record_after(tq)
        # Every backup counts, dedupe's and restore's too: with keep 0 a refresh leaves none.
        self._quietly(
            "prune old backups",
            lambda: backups.prune(self.client, self.database, target.name, self.spec.backup.keep),
        )
