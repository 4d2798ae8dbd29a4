"""One refresh run: rebuild a table's slice from its source query and swap it in atomically.

The run, in order:
  1. check the inputs (table, keys, source columns, predicate) before touching anything;
  2. take the target's lock (``lock.py``), clean up what a crashed run left, refuse while a
     mutation is stuck on the target;
  3. build the slice in a staging table with the target's structure;
  4. verify it (``verify.py``), and abort with the target untouched if it fails;
  5. swap it in, as the strategy says, check the result, and record the run (``runs.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.dataplane import backups, catalog, mutations, names, sql
from tablerefresh.dataplane.catalog import TableInfo, first_line
from tablerefresh.dataplane.errors import (
    InvalidInput,
    LockHeld,
    PreflightRefused,
    RefreshError,
    VerificationFailed,
)
from tablerefresh.dataplane.failpoints import failpoint
from tablerefresh.dataplane.lock import TableLock
from tablerefresh.dataplane.runs import Outcome, RunRecord, write_run
from tablerefresh.dataplane.verify import PartitionChange, StagingFacts, staging_problems, swap_order
from tablerefresh.spec import Strategy, TableRefreshSpec, parse_duration

log = logging.getLogger(__name__)

# Every statement that writes rows: a rerun must never be dropped as a "duplicate block".
_INSERT_SETTINGS = {"insert_deduplicate": 0, "deduplicate_blocks_in_dependent_materialized_views": 0}


@dataclass(frozen=True)
class RunOptions:
    run_id: str
    owner: str
    run_time: datetime
    lock_ttl_seconds: float = 120.0
    heartbeat_seconds: float = 10.0


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
        self.source_query = source_query.strip().rstrip(";")
        self.options = options
        self.database = spec.clickhouse.database
        self.run_time = options.run_time.astimezone(UTC).replace(microsecond=0)
        self.window_start = self.run_time - spec.window_delta
        # Epoch seconds: a DateTime parameter given as a number means the same instant in any time zone.
        self.params: dict[str, Any] = {
            "window_start": int(self.window_start.timestamp()),
            "run_time": int(self.run_time.timestamp()),
        }
        self.predicate = f"({spec.slice.predicate})"
        self.record = RunRecord(
            run_id=options.run_id,
            target=f"{self.database}.{spec.target.table}",
            strategy=spec.strategy.value,
            started_at=datetime.now(UTC),
            window_start=self.window_start,
        )
        self._client: Client | None = None
        self._staging: str | None = None
        self._source_columns: list[str] = []
        self._staging_name = ""

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self.connect()
        return self._client

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
            with lock:
                locked = True
                failpoint("locked")
                try:
                    with self._step("clean up leftovers"):
                        self._clean_leftovers(target)
                    with self._step("pre-flight"):
                        self._preflight(target)
                    self._run_strategy(target, lock)
                finally:
                    self._drop_staging()
            self._finish(Outcome.SUCCEEDED)
        except RefreshError as exc:
            self._finish(Outcome.SKIPPED if isinstance(exc, LockHeld) else Outcome.FAILED, exc)
        except ClickHouseError as exc:
            self._finish(Outcome.FAILED, RefreshError(first_line(exc)))
        except Exception as exc:  # a bug: still end with a summary the controller can read
            log.exception("run %s failed unexpectedly", self.record.run_id)
            self._finish(Outcome.FAILED, RefreshError(f"internal error: {type(exc).__name__}: {exc}"))
        if locked:
            self._write_record()
        if self._client is not None:
            self._client.close()
            self._client = None
        return self.record

    def _run_strategy(self, target: TableInfo, lock: TableLock) -> None:
        strategy = {
            Strategy.REPLACE_PARTITIONS: self._replace_partitions,
            Strategy.EXCHANGE: self._exchange,
            Strategy.DELETE_INSERT: self._delete_insert,
        }[self.spec.strategy]
        strategy(target, lock)

    def _finish(self, outcome: str, error: RefreshError | None = None) -> None:
        self.record.outcome = outcome
        self.record.finished_at = datetime.now(UTC)
        if error is None:
            self.record.exit_code = 0
            log.info("run %s succeeded in %.1fs", self.record.run_id, self.record.duration_seconds)
            return
        self.record.exit_code = int(error.exit_code)
        self.record.reason = error.reason
        self.record.error = str(error)
        log.error("run %s %s: %s", self.record.run_id, outcome.lower(), error)

    def _write_record(self) -> None:
        try:
            write_run(self.client, self.database, self.record)
        except ClickHouseError as exc:  # the JSON summary still carries the outcome
            log.error("could not write the run record: %s", first_line(exc))

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        log.info("%s ...", name)
        yield
        log.info("%s done in %.2fs", name, time.monotonic() - started)

    # -- checks before anything is touched ---------------------------------------------------

    def check_inputs(self) -> TableInfo:
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
        if self.spec.strategy == Strategy.EXCHANGE and catalog.local_engine(target) is not None:
            raise InvalidInput(f"Exchange cannot rebuild the replicated table {self.record.target}")
        source_columns = catalog.query_columns(self.client, self.source_query, self.params)
        catalog.check_source_columns(target, source_columns)
        self._source_columns = [c.name for c in source_columns]
        try:
            self.client.query(
                f"SELECT 1 FROM {target.qualified} WHERE {self.predicate} LIMIT 0", parameters=self.params
            )
        except ClickHouseError as exc:
            raise InvalidInput(f"the slice predicate does not compile: {first_line(exc)}") from exc
        return target

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
        """Staging tables of crashed runs. Safe: we hold the lock, so no other run owns them."""
        for name in catalog.tables_with_prefix(self.client, self.database, names.staging_prefix(target.name)):
            log.warning("dropping %s.%s, left by an earlier run that did not finish", self.database, name)
            self.client.command(f"DROP TABLE IF EXISTS {sql.table(self.database, name)} SYNC")

    # -- staging -----------------------------------------------------------------------------

    def _create_staging(self, target: TableInfo) -> str:
        name = names.staging_table(target.name, self.options.run_id)
        staging = catalog.create_like(self.client, target, name)
        self._staging = staging
        self._staging_name = name
        return staging

    def _drop_staging(self) -> None:
        if self._staging is not None:
            self.client.command(f"DROP TABLE IF EXISTS {self._staging} SYNC")
            self._staging = None

    def _load_staging(self, target: TableInfo) -> str:
        with self._step("build staging from the source query"):
            staging = self._create_staging(target)
            failpoint("staging-created")
            columns = sql.column_list(self._source_columns)
            self.client.command(
                f"INSERT INTO {staging} ({columns}) SELECT {columns} FROM ({self.source_query})",
                parameters=self.params,
                settings=_INSERT_SETTINGS,
            )
        failpoint("staged")
        return staging

    def _duplicates(self, table: str, where: str = "1", params: dict[str, Any] | None = None) -> int:
        keys = sql.column_list(self.spec.unique_key)
        # tuple(): aggregate functions skip rows with a NULL argument, a tuple is never NULL.
        rows = self.client.query(
            f"SELECT count() - uniqExact(tuple({keys})) FROM {table} WHERE {where}", parameters=params or {}
        ).result_rows
        return int(rows[0][0])

    def _count(self, table: str, where: str = "1") -> int:
        return int(
            self.client.query(f"SELECT count() FROM {table} WHERE {where}", parameters=self.params).result_rows[0][0]
        )

    def _verify(self, facts: StagingFacts) -> None:
        self.record.slice_rows_before = facts.old_slice_rows
        problems = staging_problems(facts, self.spec.thresholds)
        if problems:
            raise VerificationFailed("; ".join(problems) + f"; {self.record.target} was not changed")
        failpoint("verified")

    # -- strategies --------------------------------------------------------------------------

    def _replace_partitions(self, target: TableInfo, lock: TableLock) -> None:
        staging = self._load_staging(target)
        tq = target.qualified
        with self._step("verify staging"):
            staged, staged_slice = self._partition_counts(staging)
            old_slice = catalog.partition_rows(self.client, tq, self.predicate, self.params)
            replace = sorted(set(old_slice) | {p for p, n in staged_slice.items() if n})
            in_replace = "_partition_id IN {replace:Array(String)}"
            old = catalog.partition_rows(self.client, tq, in_replace, {"replace": replace})
            changes = [PartitionChange(p, old.get(p, 0), staged.get(p, 0)) for p in replace]
            self.record.rows_before = self._count(tq)
            self.record.partitions = replace
            duplicates = self._duplicates(staging)
            self._verify(
                StagingFacts(
                    duplicates=duplicates,
                    old_slice_rows=sum(old_slice.values()),
                    new_slice_rows=sum(staged_slice.values()),
                    changes=tuple(changes),
                    outside={p: n for p, n in staged.items() if p not in replace},
                )
            )
        with self._step(f"swap {len(replace)} partition(s)"):
            lock.assert_held()
            if self.spec.backup.keep:
                backups.take_partitions(self.client, target, self.options.run_id, replace)
                failpoint("backed-up")
            if changes:
                commands = ", ".join(
                    f"REPLACE PARTITION ID {sql.partition_id(c.partition)} FROM {staging}"
                    if c.new_rows
                    else f"DROP PARTITION ID {sql.partition_id(c.partition)}"
                    for c in swap_order(changes)
                )
                self.client.command(f"ALTER TABLE {tq} {commands}")
            failpoint("swapped")
        with self._step("verify the swap"):
            # Each replaced partition must now hold exactly the staged parts. Then its keys are the
            # staged keys, already checked for duplicates, and its slice rows are the staged ones.
            after = catalog.partition_rows(self.client, tq, in_replace, {"replace": replace})
            wrong = [
                f"{p}: {after.get(p, 0)} != {staged.get(p, 0)}" for p in replace if after.get(p, 0) != staged.get(p, 0)
            ]
            if wrong:
                raise VerificationFailed(
                    f"after the swap {self.record.target} does not hold the staged rows ({', '.join(wrong)})"
                )
            self.record.duplicates = duplicates
            self.record.rows_after = self._count(tq)
            self.record.slice_rows_after = sum(staged_slice.values())
        if self.spec.backup.keep:
            backups.prune(self.client, self.database, target.name, self.spec.backup.keep)

    def _partition_counts(self, table: str) -> tuple[dict[str, int], dict[str, int]]:
        """Rows, and slice rows, per partition of ``table``, in one scan."""
        result = self.client.query(
            f"SELECT _partition_id, count(), countIf({self.predicate}) FROM {table} GROUP BY _partition_id",
            parameters=self.params,
        ).result_rows
        return {str(p): int(n) for p, n, _ in result}, {str(p): int(k) for p, _, k in result}

    def _exchange(self, target: TableInfo, lock: TableLock) -> None:
        staging = self._load_staging(target)
        tq = target.qualified
        with self._step("verify staging"):
            old_total, new_total = self._count(tq), self._count(staging)
            self.record.rows_before = old_total
            self._verify(
                StagingFacts(
                    duplicates=self._duplicates(staging),
                    old_slice_rows=self._count(tq, self.predicate),
                    new_slice_rows=self._count(staging, self.predicate),
                    changes=(PartitionChange("*", old_total, new_total),),
                )
            )
        with self._step("exchange tables"):
            lock.assert_held()
            self.client.command(f"EXCHANGE TABLES {tq} AND {staging}")
            failpoint("swapped")
            # The staging name now holds the previous table: keep it as the backup.
            assert self._staging is not None
            backups.keep_table(self.client, target, self.options.run_id, self._staging_name)
            self._staging = None
            backups.prune(self.client, self.database, target.name, max(1, self.spec.backup.keep))
        self.record.duplicates = self._duplicates(tq)
        self._record_after(tq)

    def _delete_insert(self, target: TableInfo, lock: TableLock) -> None:
        staging = self._load_staging(target)
        tq = target.qualified
        columns = sql.column_list(target.insertable_columns)
        with self._step("verify staging"):
            new_total = self._count(staging)
            new_slice = self._count(staging, self.predicate)
            self.record.rows_before = self._count(tq)
            self._verify(
                StagingFacts(
                    duplicates=self._duplicates(staging),
                    old_slice_rows=self._count(tq, self.predicate),
                    new_slice_rows=new_slice,
                    outside={"*": new_total - new_slice} if new_total != new_slice else {},
                )
            )
        with self._step("delete the slice, then insert it (not atomic: readers see a gap)"):
            lock.assert_held()
            if self.spec.backup.keep:
                backups.take_rows(self.client, target, self.options.run_id, self.predicate, self.params)
            self.client.command(
                f"ALTER TABLE {tq} DELETE WHERE {self.predicate}",
                parameters=self.params,
                settings={"mutations_sync": 2},
            )
            failpoint("deleted")
            self.client.command(
                f"INSERT INTO {tq} ({columns}) SELECT {columns} FROM {staging}", settings=_INSERT_SETTINGS
            )
            failpoint("swapped")
        self.record.duplicates = self._duplicates(tq, self.predicate, self.params)
        self._record_after(tq)
        if self.spec.backup.keep:
            backups.prune(self.client, self.database, target.name, self.spec.backup.keep)

    def _record_after(self, table: str) -> None:
        self.record.rows_after = self._count(table)
        self.record.slice_rows_after = self._count(table, self.predicate)
