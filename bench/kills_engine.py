"""The kill soak's steps that touch the engine (``bench/kills.py``), each in a process of its own.

chDB runs one engine per process and one process per data path at a time, so the soak itself never
opens the embedded engine: it runs this module between the refresh processes it starts and kills.
With ``--server`` the engine is served (``bench/server.py``) and the soak calls :func:`answer`
itself, as one more client.

    python -m bench.kills_engine DATA_DIR REQUEST      # REQUEST is JSON; prints one JSON line last

A request holds any of, done in this order:
- ``setup: {"fills": N, "strategy": S}``: generate the reference workload, build the table's whole
  history, write the manifest the refresh processes run (``DATA_DIR/manifest.yaml``);
- ``snapshot: true``: copy the target as it is now (``kills_expected.after``);
- ``unchanged: true``: None when the target holds exactly the snapshot's rows, else what differs;
- ``checkSnapshot: true``: ``check`` of the snapshot instead of the target;
- ``check: true``: compare the target with the old and the new rows of the last ``prepare``, by
  unique key, and list the tables a run keeps beside it; for a mixed state, compare each partition
  too (``_partition_id``): one that holds exactly its old rows, its new rows, or neither (half done);
- ``prepare: TRIAL``: change the source so that the next run rebuilds different rows, then store the
  rows the target holds now (``old``) and the rows a run must leave (``new``, computed from the
  source query, not by a run). A market resolves (rows move between partitions, a swap of two)
  only while more than ``KEEP_OPEN`` are open; the workload starts with about fills/300 open, so
  from about trial fills/300 - 25 on, trials only add trades (a swap of the open partition).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import clickhouse_connect
import yaml
from clickhouse_connect.driver.client import Client

from bench.kills import Rows, difference
from bench.workload import DB, prepare
from tablerefresh.dataplane.infra import names, sql
from tablerefresh.dataplane.infra.lock import LOCK_PREFIX, TAKEOVER_PREFIX
from tablerefresh.spec import Strategy, TableRefreshSpec, load_manifest
from tablerefresh.workloads import polymarket

if TYPE_CHECKING:
    from bench.server import BenchServer

EXPECT = "kills_expected"  # the database holding the old and the new rows of the current trial
MANIFEST = "manifest.yaml"
LEFTOVER_PREFIXES = (names.STAGING, LOCK_PREFIX, TAKEOVER_PREFIX)
_INSERT = {"insert_deduplicate": 0}
KEEP_OPEN = 20  # markets the soak leaves open (``Trial.change``)


def engine_url(data_dir: Path) -> str:
    """The same path ``bench.workload.prepare`` uses."""
    return f"chdb://{data_dir.resolve() / 'chdb'}"


def setup(data_dir: Path, fills: int, strategy: str, server: BenchServer | None = None) -> dict[str, Any]:
    w = prepare(data_dir, fills, server=server)
    url = server.url if server is not None else engine_url(data_dir)
    spec = w.spec.model_copy(update={"clickhouse": w.spec.clickhouse.model_copy(update={"url": url})})
    if strategy == Strategy.EXCHANGE:
        # Exchange rebuilds the whole table: the reference query yields it all with a window that
        # reaches back past the first resolution (as the history run does).
        spec = spec.model_copy(update={"strategy": Strategy.EXCHANGE, "window": "5000d"})
    elif strategy != Strategy.REPLACE_PARTITIONS:
        raise ValueError(f"the soak does not run strategy {strategy}")
    manifest = polymarket.manifest().model_copy(update={"spec": spec})
    with open(data_dir / MANIFEST, "w") as out:
        yaml.safe_dump(manifest.model_dump(by_alias=True, exclude_none=True, mode="json"), out, sort_keys=False)
    rows = w.client.query(f"SELECT count() FROM {polymarket.TARGET_TABLE}").result_rows[0][0]
    return {"rows": int(rows)}


class CannotJudge(Exception):
    """The rows a trial would compare cannot tell its states apart (e.g. the target left by a failed
    run holds a key twice)."""


class Trial:
    """The target, and the expected rows, on one engine."""

    def __init__(self, data_dir: Path, server: BenchServer | None = None) -> None:
        self.spec: TableRefreshSpec = load_manifest(data_dir / MANIFEST).spec
        self.client: Client = (
            server.client(database=DB)
            if server is not None
            else clickhouse_connect.get_client(dsn=engine_url(data_dir), database=DB)
        )
        self.target = sql.table(DB, self.spec.target.table)
        if self.spec.source.query is None:
            raise SystemExit("the soak's manifest must hold its source query inline")
        self.source = self.spec.source.query

    def window(self) -> tuple[dict[str, Any], str]:
        """The query parameters of a run starting now, and the month the reference predicate reads."""
        now = datetime.now(UTC)
        params = {
            "window_start": int((now - self.spec.window_delta).timestamp()),
            "run_time": int(now.timestamp()),
            **polymarket.ONE_BATCH,
        }
        month = self.client.query("SELECT toString(toStartOfMonth({window_start:DateTime}))", parameters=params)
        return params, str(month.result_rows[0][0])

    def rows(self, table: str) -> Rows:
        result = self.client.query(f"SELECT * FROM {table}")
        columns = tuple(result.column_names)
        return Rows(
            columns=columns,
            key=tuple(columns.index(c) for c in self.spec.unique_key),
            floats=frozenset(i for i, t in enumerate(result.column_types) if "Float" in t.name),
            rows=[tuple(r) for r in result.result_rows],
        )

    def partition_rows(self, table: str) -> tuple[Rows, dict[str, Rows]]:
        """The table's rows by partition id (the old and new tables have the target's partitioning)."""
        result = self.client.query(f"SELECT _partition_id, * FROM {table}")
        columns = tuple(result.column_names[1:])
        empty = Rows(
            columns=columns,
            key=tuple(columns.index(c) for c in self.spec.unique_key),
            floats=frozenset(i for i, t in enumerate(result.column_types[1:]) if "Float" in t.name),
            rows=[],
        )
        parts: dict[str, Rows] = {}
        for partition, *row in result.result_rows:
            parts.setdefault(str(partition), Rows(empty.columns, empty.key, empty.floats, [])).rows.append(tuple(row))
        return empty, parts

    def partitions(self, table: str) -> dict[str, list[str]]:
        """Each partition of ``table`` (the target or its snapshot), the old rows or the new: ``old``
        (exactly its old rows), ``new`` (exactly its new rows; a partition the run leaves as it was
        is neither listed) or ``neither`` (half done: e.g. a new part beside its old one, some keys
        twice)."""
        empty, target = self.partition_rows(table)
        _, old = self.partition_rows(sql.table(EXPECT, "old"))
        _, new = self.partition_rows(sql.table(EXPECT, "new"))
        verdict: dict[str, list[str]] = {"old": [], "new": [], "neither": []}
        for partition in sorted(target.keys() | old.keys() | new.keys()):
            rows = target.get(partition, empty)
            is_old = difference(rows, old.get(partition, empty)) is None
            is_new = difference(rows, new.get(partition, empty)) is None
            if is_old != is_new:
                verdict["old" if is_old else "new"].append(partition)
            elif not is_old:
                verdict["neither"].append(partition)
        return verdict

    def change(self, trial: int) -> None:
        """One open market resolves (its rows move from the open partition to this month's, so the open
        partition shrinks); on even trials, new trades in open markets too (new keys, and new values
        for positions). Once only ``KEEP_OPEN`` markets are open, none resolves and every trial has
        new trades in open markets: resolving the last ones would empty the open partition, which a
        run refuses (``maxSliceDropFraction``). Each trial tags its rows."""
        fills, resolutions = polymarket.FILLS_TABLE, polymarket.RESOLUTIONS_TABLE
        settled = f"SELECT condition_id FROM {DB}.{resolutions} WHERE is_deleted = 0 AND payout_numerators != ''"
        params = {"tag": f"-k{trial}", "trial": trial}
        open_markets = f"SELECT DISTINCT condition_id FROM {DB}.{fills} WHERE condition_id NOT IN ({settled})"
        still_open = int(self.client.query(f"SELECT count() FROM ({open_markets})").result_rows[0][0])
        resolving = (
            self.client.query(
                f"SELECT condition_id FROM ({open_markets}) ORDER BY cityHash64(condition_id, {{trial:UInt32}}) "
                "LIMIT 1",
                parameters=params,
            ).result_rows
            if still_open > KEEP_OPEN
            else []
        )
        if trial % 2 == 0 or not resolving:
            self.client.command(
                f"INSERT INTO {DB}.{fills} SELECT concat(fill_id, {{tag:String}}), concat(tx_hash, {{tag:String}}), "
                "now(), wallet, condition_id, outcome_index, tokens_delta, usdc_delta, source, is_self_fill, "
                f"is_maker FROM {DB}.{fills} WHERE cityHash64(fill_id, {{trial:UInt32}}) % 40 = 0 "
                + (f"AND condition_id NOT IN ({settled})" if still_open else ""),
                parameters=params,
                settings=_INSERT,
            )
        if resolving:
            self.client.command(
                f"INSERT INTO {DB}.{resolutions} (condition_id, payout_numerators, resolved_at, is_deleted) "
                "VALUES ({condition:String}, if(cityHash64({trial:UInt32}) % 2 = 0, '[1,0]', '[0,1]'), now(), 0)",
                parameters={**params, "condition": resolving[0][0]},
                settings=_INSERT,
            )

    def prepare(self, trial: int) -> dict[str, Any]:
        self.change(trial)
        params, month = self.window()
        old, new = sql.table(EXPECT, "old"), sql.table(EXPECT, "new")
        self.client.command(f"CREATE DATABASE IF NOT EXISTS {EXPECT}")
        for table in (old, new):
            self.client.command(f"DROP TABLE IF EXISTS {table} SYNC")
            self.client.command(f"CREATE TABLE {table} AS {self.target}")
        self.client.command(f"INSERT INTO {old} SELECT * FROM {self.target}", settings=_INSERT)
        # What a run must leave: the target's rows outside the slice, untouched (none for Exchange,
        # whose window covers the whole table), and the source query's rows for the window.
        columns = ", ".join(
            sql.ident(c) for c in self.client.query(f"SELECT * FROM {self.target} LIMIT 0").column_names
        )
        self.client.command(
            f"INSERT INTO {new} SELECT * FROM {self.target} WHERE NOT ifNull(({self.spec.slice.predicate}), 0)",
            parameters=params,
            settings=_INSERT,
        )
        self.client.command(
            f"INSERT INTO {new} ({columns}) SELECT {columns} FROM ({self.source})",
            parameters=params,
            settings=_INSERT,
        )
        old_rows, new_rows = self.rows(old), self.rows(new)
        for name, rows in (("old", old_rows), ("new", new_rows)):
            if rows.duplicate_keys():
                raise CannotJudge(f"the {name} rows hold a unique key twice, so no state can be told apart")
        if difference(old_rows, new_rows) is None:
            raise CannotJudge(f"trial {trial}: the change left the target's rows as they were")
        return {"month": month, "old": len(old_rows.rows), "new": len(new_rows.rows)}

    def snapshot(self) -> None:
        """Copy the target as it is now (``kills_expected.after``), to be checked later."""
        after = sql.table(EXPECT, "after")
        self.client.command(f"DROP TABLE IF EXISTS {after} SYNC")
        self.client.command(f"CREATE TABLE {after} AS {self.target}")
        self.client.command(f"INSERT INTO {after} SELECT * FROM {self.target}", settings=_INSERT)

    def unchanged(self) -> str | None:
        """None when the target holds exactly the snapshot's rows; else what differs."""
        return difference(self.rows(self.target), self.rows(sql.table(EXPECT, "after")))

    def check(self, table: str | None = None) -> dict[str, Any]:
        """The target (or ``table``, its snapshot) against the old and the new rows; the tables a run
        leaves beside the target now."""
        table = table or self.target
        actual = self.rows(table)
        vs_old = difference(actual, self.rows(sql.table(EXPECT, "old")))
        vs_new = difference(actual, self.rows(sql.table(EXPECT, "new")))
        state = "old" if vs_old is None else "new" if vs_new is None else "mixed"
        tables = self.client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name", parameters={"db": DB}
        ).result_rows
        leftovers = [str(t) for (t,) in tables if str(t).startswith(LEFTOVER_PREFIXES)]
        _, month = self.window()
        partitions = self.partitions(table) if state == "mixed" else {}
        return {
            "state": state,
            "vsOld": vs_old,
            "vsNew": vs_new,
            "leftovers": leftovers,
            "month": month,
            "partitions": partitions,
        }


def answer(data_dir: Path, request: dict[str, Any], server: BenchServer | None = None) -> dict[str, Any]:
    """Do what ``request`` asks (module docstring), on the embedded engine or through ``server``."""
    answered: dict[str, Any] = {}
    if "setup" in request:
        answered["setup"] = setup(data_dir, **request["setup"], server=server)
    if request.keys() & {"snapshot", "unchanged", "checkSnapshot", "check", "prepare"}:
        trial = Trial(data_dir, server)
        try:
            if request.get("snapshot"):
                trial.snapshot()
            if request.get("unchanged"):
                answered["unchanged"] = trial.unchanged()
            if request.get("checkSnapshot"):
                answered["checkSnapshot"] = trial.check(sql.table(EXPECT, "after"))
            if request.get("check"):
                answered["check"] = trial.check()
            if "prepare" in request:
                try:
                    answered["prepare"] = trial.prepare(int(request["prepare"]))
                except CannotJudge as exc:
                    answered["prepare"] = {"error": str(exc)}
        finally:
            trial.client.close()
    return answered


def quietly(data_dir: Path, request: dict[str, Any], server: BenchServer) -> dict[str, Any]:
    """:func:`answer` in the soak's own process, its progress lines kept off the soak's output (as
    they are when it runs in a process of its own)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return answer(data_dir, request, server)


def main(argv: list[str]) -> None:
    data_dir, request = Path(argv[0]), json.loads(argv[1])
    print(json.dumps(answer(data_dir, request)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
