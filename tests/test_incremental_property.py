"""Incremental runs give exactly a full rebuild's rows, on random histories of the reference workload.

Each history (``tests/polymarket_history.py``) is refreshed twice over, on the real engine (embedded,
and served over HTTP: CI runs the first ``SERVED_IN_CI`` histories there, the full matrix all, with
the source in the manifests' batches; the embedded runs in one statement): the
reference table by the incremental manifest (its first run is full, every later one incremental),
and a second table by the full manifest, with the same run times. After every run the two tables
must hold the same rows, floats within the reference's tolerance, and the incremental table's slice
must be what the rules give (``tests/polymarket_reference.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.run.incremental import FULL, INCREMENTAL
from tablerefresh.dataplane.run.runs import Outcome, RunRecord
from tablerefresh.spec import TableRefreshSpec, parse_duration
from tablerefresh.workloads import polymarket
from tests import refresh_fixtures as fx
from tests.engines import EMBEDDED, SERVED, Engine, full_matrix
from tests.polymarket_expected import expected_rows
from tests.polymarket_history import History
from tests.polymarket_reference import FILL_COLUMNS, FLOAT_COLUMNS, RESOLUTION_COLUMNS, ROW_COLUMNS, Row

Connect = Callable[[], Client]
FULL_TABLE = "full_rebuild"
STEPS = 4
# More with TABLEREFRESH_HISTORIES=N (each history takes a few seconds).
HISTORIES = int(os.environ.get("TABLEREFRESH_HISTORIES", "20"))
SERVED_IN_CI = 3


def specs(database: str, *, batched: bool) -> tuple[TableRefreshSpec, TableRefreshSpec]:
    """The incremental manifest on the reference table, the full one on a second table. Small data:
    any slice size is fine, and a partition may empty (a condition resolving moves all its rows).
    ``batched``: the source in the manifests' batches, else in one statement (the batches change no
    row, which the served histories show; on small data each costs a statement's overhead)."""

    def local(spec: TableRefreshSpec, table: str) -> TableRefreshSpec:
        source = spec.source if batched else spec.source.model_copy(update={"batches": 1})
        return spec.model_copy(
            update={
                "clickhouse": spec.clickhouse.model_copy(update={"database": database}),
                "target": spec.target.model_copy(update={"table": table}),
                "thresholds": spec.thresholds.model_copy(update={"min_slice_rows": 0, "max_slice_drop_fraction": 1}),
                "source": source,
            }
        )

    return (
        local(polymarket.incremental_manifest().spec, polymarket.TARGET_TABLE),
        local(polymarket.manifest().spec, FULL_TABLE),
    )


def table_rows(ch: Client, table: str) -> dict[tuple[object, ...], Row]:
    rows = [Row(*r) for r in ch.query(f"SELECT {', '.join(ROW_COLUMNS)} FROM {table}").result_rows]
    by_key = {r.key: r for r in rows}
    assert len(by_key) == len(rows), f"{table}: a key stands twice"
    return by_key


def differences(actual: dict[tuple[object, ...], Row], expected: dict[tuple[object, ...], Row]) -> list[str]:
    found = [f"missing {k}" for k in sorted(expected.keys() - actual.keys())]
    found += [f"extra {k}" for k in sorted(actual.keys() - expected.keys())]
    for key in sorted(actual.keys() & expected.keys()):
        for name in ROW_COLUMNS:
            a, e = getattr(actual[key], name), getattr(expected[key], name)
            same = math.isclose(a, e, rel_tol=1e-6, abs_tol=1e-9) if name in FLOAT_COLUMNS else a == e
            if not same:
                found.append(f"{key} {name}: {a!r} != {e!r}")
    return found


def write(ch: Client, fills: list[Any], resolutions: list[Any]) -> None:
    if fills:
        ch.insert(polymarket.FILLS_TABLE, [list(f.__dict__.values()) for f in fills], column_names=FILL_COLUMNS)
    if resolutions:
        rows = [list(r.__dict__.values()) for r in resolutions]
        ch.insert(polymarket.RESOLUTIONS_TABLE, rows, column_names=RESOLUTION_COLUMNS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "seed"),
    [(EMBEDDED, seed) for seed in range(HISTORIES)]
    + [(SERVED, seed) if seed < SERVED_IN_CI else full_matrix(SERVED, seed) for seed in range(HISTORIES)],
    indirect=["engine"],
)
def test_incremental_runs_equal_full_rebuilds(
    engine: Engine, ch: Client, connect: Connect, database: str, seed: int
) -> None:
    polymarket.create_schema(ch, database)
    ch.command(f"CREATE TABLE {FULL_TABLE} AS {polymarket.TARGET_TABLE}")
    incremental, full = specs(database, batched=engine.served)
    assert incremental.incremental is not None
    history = History(seed, lateness=parse_duration(incremental.incremental.lateness))
    write(ch, *history.initial())
    kinds = []
    for step in range(STEPS + 1):
        if step:
            write(ch, *history.step(step))
        run_time = history.run_time(step)
        record = fx.run(connect, incremental, run_time=run_time)
        rebuilt = fx.run(connect, full, run_time=run_time)
        assert record.outcome == Outcome.SUCCEEDED, record.error
        assert rebuilt.outcome == Outcome.SUCCEEDED, rebuilt.error
        kinds.append(record.kind)

        found = differences(table_rows(ch, polymarket.TARGET_TABLE), table_rows(ch, FULL_TABLE))
        assert not found, f"seed {seed}, step {step} ({record.kind}): {found[:5]}"
        assert_slice_follows_the_rules(ch, record)
        if record.kind == INCREMENTAL:
            assert record.since == run_time - timedelta(hours=6) - history.lateness
            assert record.changed_keys is not None
    assert kinds == [FULL] + [INCREMENTAL] * STEPS


def assert_slice_follows_the_rules(ch: Client, record: RunRecord) -> None:
    assert record.window_start is not None
    expected = expected_rows(ch, record.window_start)
    predicate = "resolved_at IS NULL OR resolved_at >= toStartOfMonth({w:DateTime})"
    result = ch.query(
        f"SELECT {', '.join(ROW_COLUMNS)} FROM {polymarket.TARGET_TABLE} WHERE {predicate}",
        parameters={"w": int(record.window_start.timestamp())},
    ).result_rows
    found = differences({r.key: r for r in (Row(*x) for x in result)}, expected)
    assert not found, found[:5]
