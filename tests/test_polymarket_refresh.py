"""The engine on the reference workload: the seed plan's failures, each shown not to happen.

After every run, the table must hold exactly what the rules give (``tests/polymarket_reference.py``,
an independent Python implementation) for every unresolved condition, for every wallet, whether
or not the wallet traded inside the window; conditions that resolved move to their month.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.run.runs import Outcome, RunRecord
from tablerefresh.spec import TableRefreshSpec
from tablerefresh.workloads import polymarket
from tests import refresh_fixtures as fx
from tests.polymarket_expected import expected_rows
from tests.polymarket_reference import (
    FLOAT_COLUMNS,
    ROW_COLUMNS,
    Row,
)

Connect = Callable[[], Client]
TARGET = polymarket.TARGET_TABLE


def reference_spec(database: str) -> TableRefreshSpec:
    base = polymarket.manifest().spec
    return base.model_copy(
        update={
            "clickhouse": base.clickhouse.model_copy(update={"database": database}),
            "thresholds": base.thresholds.model_copy(update={"min_slice_rows": 0}),
        }
    )




def table_slice(ch: Client, window_start: datetime) -> dict[tuple[object, ...], Row]:
    """The target's rows in the partitions a run with this window replaces."""
    result = ch.query(
        f"SELECT {', '.join(ROW_COLUMNS)} FROM {TARGET} "
        "WHERE resolved_at IS NULL OR resolved_at >= toStartOfMonth({w:DateTime})",
        parameters={"w": int(window_start.timestamp())},
    ).result_rows
    rows = [Row(*r) for r in result]
    by_key = {r.key: r for r in rows}
    assert len(by_key) == len(rows), "a key stands twice in the table"
    return by_key


def assert_matches_rules(ch: Client, record: RunRecord) -> dict[tuple[object, ...], Row]:
    assert record.window_start is not None
    expected = expected_rows(ch, record.window_start)
    actual = table_slice(ch, record.window_start)
    missing, extra = expected.keys() - actual.keys(), actual.keys() - expected.keys()
    assert not missing, f"{len(missing)} rows lost, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} rows the rules do not give, e.g. {sorted(extra)[:3]}"
    for key, row in actual.items():
        want = expected[key]
        for name in ROW_COLUMNS:
            a, e = getattr(row, name), getattr(want, name)
            same = math.isclose(a, e, rel_tol=1e-6, abs_tol=1e-9) if name in FLOAT_COLUMNS else a == e
            assert same, f"{key} {name}: table={a!r} rules={e!r}"
    return expected


@pytest.fixture
def workload(ch: Client, database: str) -> str:
    polymarket.generate(ch, database, fills=15_000, seed=5, now=datetime.now(UTC))
    return database


def quiet_unresolved_positions(ch: Client, window_seconds: int) -> set[tuple[str, str, int]]:
    rows = ch.query(
        f"SELECT DISTINCT wallet, condition_id, outcome_index FROM {TARGET} WHERE resolved_at IS NULL "
        f"AND wallet NOT IN (SELECT wallet FROM {polymarket.FILLS_TABLE} WHERE event_time >= now() - {{w:UInt32}})",
        parameters={"w": window_seconds},
    ).result_rows
    return {tuple(r) for r in rows}  # type: ignore[misc]


def test_every_run_leaves_exactly_what_the_rules_give(ch: Client, connect: Connect, workload: str) -> None:
    spec = reference_spec(workload)
    first = fx.run(connect, spec)
    assert first.outcome == Outcome.SUCCEEDED, first.error
    assert_matches_rules(ch, first)
    quiet = quiet_unresolved_positions(ch, 86400)
    assert quiet, "the data set must hold the seed's failure case"

    # Six hours later: new trades by a few wallets, and a market that resolves.
    ch.command(
        f"INSERT INTO {polymarket.FILLS_TABLE} SELECT concat(fill_id, '-later'), tx_hash, now(), wallet, condition_id, "
        "outcome_index, tokens_delta, usdc_delta, source, is_self_fill, is_maker "
        f"FROM {polymarket.FILLS_TABLE} WHERE cityHash64(fill_id) % 50 = 0",
        settings={"insert_deduplicate": 0},
    )
    (resolving,) = ch.query(
        f"SELECT condition_id FROM {TARGET} WHERE resolved_at IS NULL "
        "GROUP BY condition_id ORDER BY count() DESC LIMIT 1"
    ).result_rows[0]
    ch.command(
        f"INSERT INTO {polymarket.RESOLUTIONS_TABLE} VALUES ({{c:String}}, '[0,1]', now(), 0)",
        parameters={"c": resolving},
    )

    second = fx.run(connect, spec)

    assert second.outcome == Outcome.SUCCEEDED, second.error
    expected = assert_matches_rules(ch, second)
    # The resolved market's rows moved to this month's partition in the same swap.
    moved = ch.query(
        f"SELECT countIf(resolved_at IS NULL), countIf(toYYYYMM(resolved_at) = toYYYYMM(now())) FROM {TARGET} "
        "WHERE condition_id = {c:String}",
        parameters={"c": resolving},
    ).result_rows[0]
    assert moved[0] == 0 and moved[1] == sum(1 for r in expected.values() if r.condition_id == resolving) > 0
    # The seed's failure: positions of wallets with no fill in the window keep their rows.
    still_open = {p for p in quiet if p[1] != resolving}
    assert still_open <= _positions_now_active(ch)


def _positions_now_active(ch: Client) -> set[tuple[str, str, int]]:
    rows = ch.query(
        f"SELECT DISTINCT wallet, condition_id, outcome_index FROM {TARGET} WHERE resolved_at IS NULL"
    ).result_rows
    return {tuple(r) for r in rows}  # type: ignore[misc]


def test_the_reference_refresh_is_idempotent(ch: Client, connect: Connect, workload: str) -> None:
    spec = reference_spec(workload)
    fx.run(connect, spec)
    first = fx.checksum(ch, TARGET)
    record = fx.run(connect, spec)
    assert record.outcome == Outcome.SUCCEEDED, record.error
    assert fx.checksum(ch, TARGET) == first
