"""The manifest's source query against an independent Python implementation of the rules.

Each data set is generated on chDB, read back into Python, and the source query's rows for the
slice (unresolved, plus every month from window_start's on) must equal the reference's row for
row: floats within 1e-6 relative or 1e-9 absolute, everything else exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.spec import Strategy
from tablerefresh.workloads.polymarket import (
    FILLS_TABLE,
    ONE_BATCH,
    RESOLUTIONS_TABLE,
    TARGET_COLUMNS,
    TARGET_TABLE,
    GeneratedStats,
    create_schema,
    generate,
    manifest,
    source_query,
)
from tests.polymarket_reference import (
    FILL_COLUMNS,
    FLOAT_COLUMNS,
    RESOLUTION_COLUMNS,
    ROW_COLUMNS,
    Fill,
    Resolution,
    Row,
    effective_resolutions,
    slice_rows,
)

WINDOW = timedelta(hours=24)


@pytest.fixture(scope="module")
def dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """chDB allows one engine path per process: the session's base temp dir is that path for
    every test module, so all clients in this pytest run share it."""
    return f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}"


@pytest.fixture(scope="module")
def client(dsn: str) -> Client:
    return clickhouse_connect.get_client(dsn=dsn)


def database_client(dsn: str, database: str) -> Client:
    """A client whose current database is ``database``: the source query's names are unqualified."""
    return clickhouse_connect.get_client(dsn=dsn, database=database)


@dataclass(frozen=True)
class Dataset:
    database: str
    requested_fills: int
    stats: GeneratedStats
    now: datetime
    fills: list[Fill]
    resolutions: list[Resolution]
    sql_rows: list[Row]

    @property
    def window_start(self) -> datetime:
        return self.now - WINDOW

    @cached_property
    def reference_rows(self) -> list[Row]:
        return slice_rows(self.fills, self.resolutions, self.window_start)


# Sizes, seeds and clocks differ: a run just after a month turns (the window reaches back into
# the previous month), one mid-month, one across a year end.
DATASETS = [
    pytest.param((3_000, 11, datetime(2026, 3, 1, 4, 30)), id="3k-month-start"),
    pytest.param((12_000, 22, datetime(2026, 5, 17, 13, 5, 9)), id="12k-mid-month"),
    pytest.param((30_000, 33, datetime(2027, 1, 1, 10, 0)), id="30k-year-end"),
]


def run_source_query(dsn: str, database: str, window_start: datetime) -> list[Row]:
    result = database_client(dsn, database).query(
        f"SELECT {', '.join(ROW_COLUMNS)} FROM ({source_query()})",
        parameters={"window_start": window_start, **ONE_BATCH},
    )
    return [Row(*r) for r in result.result_rows]


@pytest.fixture(scope="module", params=DATASETS)
def dataset(client: Client, dsn: str, request: pytest.FixtureRequest) -> Iterator[Dataset]:
    fills, seed, now = request.param
    database = f"pm_rules_{seed}"
    client.command(f"DROP DATABASE IF EXISTS {database}")
    stats = generate(client, database, fills=fills, seed=seed, now=now)
    fill_rows = client.query(f"SELECT {', '.join(FILL_COLUMNS)} FROM {database}.{FILLS_TABLE}").result_rows
    resolution_rows = client.query(
        f"SELECT {', '.join(RESOLUTION_COLUMNS)} FROM {database}.{RESOLUTIONS_TABLE}"
    ).result_rows
    yield Dataset(
        database=database,
        requested_fills=fills,
        stats=stats,
        now=now,
        fills=[Fill(*r) for r in fill_rows],
        resolutions=[Resolution(*r) for r in resolution_rows],
        sql_rows=run_source_query(dsn, database, now - WINDOW),
    )
    client.command(f"DROP DATABASE IF EXISTS {database}")


def _differences(actual: Row, expected: Row) -> list[str]:
    found = []
    for name in ROW_COLUMNS:
        a, e = getattr(actual, name), getattr(expected, name)
        if name in FLOAT_COLUMNS:
            if not math.isclose(a, e, rel_tol=1e-6, abs_tol=1e-9):
                found.append(f"{name}: sql={a!r} python={e!r}")
        elif a != e or type(a) is not type(e):
            found.append(f"{name}: sql={a!r} python={e!r}")
    return found


def test_generator_writes_exactly_the_requested_fills(dataset: Dataset) -> None:
    assert len(dataset.fills) == dataset.stats.fills == dataset.requested_fills
    assert dataset.stats.resolutions == len(dataset.resolutions)
    assert max(f.event_time for f in dataset.fills) < dataset.now
    assert max(r.resolved_at for r in dataset.resolutions) <= dataset.now


def test_source_query_matches_reference(dataset: Dataset) -> None:
    actual = dataset.sql_rows
    expected = dataset.reference_rows

    actual_by_key = {r.key: r for r in actual}
    expected_by_key = {r.key: r for r in expected}
    assert len(actual_by_key) == len(actual), "the source query yields a key twice"
    assert len(expected_by_key) == len(expected)
    missing = expected_by_key.keys() - actual_by_key.keys()
    extra = actual_by_key.keys() - expected_by_key.keys()
    assert not missing, f"{len(missing)} rows missing from the SQL, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} rows only the SQL has, e.g. {sorted(extra)[:3]}"

    mismatches = {}
    for key, row in actual_by_key.items():
        diff = _differences(row, expected_by_key[key])
        if diff:
            mismatches[key] = diff
    sample = dict(list(mismatches.items())[:5])
    assert not mismatches, f"{len(mismatches)} of {len(actual)} rows differ, e.g. {sample}"


def test_dataset_has_every_row_kind(dataset: Dataset) -> None:
    rows = dataset.reference_rows
    payouts = {c: r.payout_numerators for c, r in effective_resolutions(dataset.resolutions).items()}
    longs = [r for r in rows if not r.is_short]
    kinds: dict[str, int] = {
        "long": len(longs),
        "short": sum(1 for r in rows if r.is_short),
        "short resolved": sum(1 for r in rows if r.is_short and r.resolved_at is not None),
        "resolved [1,0]": sum(1 for r in rows if r.resolved_at and payouts[r.condition_id] == "[1,0]"),
        "resolved [0,1]": sum(1 for r in rows if r.resolved_at and payouts[r.condition_id] == "[0,1]"),
        "resolved [1,1]": sum(1 for r in rows if r.resolved_at and payouts[r.condition_id] == "[1,1]"),
        "unresolved open": sum(1 for r in longs if r.resolved_at is None and r.is_closed == 0),
        "unresolved closed": sum(1 for r in longs if r.resolved_at is None and r.is_closed == 1),
        "partially sold": sum(1 for r in longs if 0 < r.pct_sold_early < 1),
        # Whole months: rows resolved in window_start's month but before window_start.
        "resolved earlier in the month": sum(1 for r in rows if r.resolved_at and r.resolved_at < dataset.window_start),
    }
    assert all(kinds.values()), kinds


def test_dataset_has_every_source_quirk(dataset: Dataset) -> None:
    fills = dataset.fills
    by_id: dict[str, list[Fill]] = {}
    for f in fills:
        by_id.setdefault(f.fill_id, []).append(f)
    copies = [group for group in by_id.values() if len(group) > 1]
    quirks = {
        "exact duplicates": sum(1 for g in copies if len(set(g)) == 1),
        "self-fill maker sides": sum(1 for f in fills if f.is_self_fill and f.is_maker),
        "self-fill taker sides": sum(1 for f in fills if f.is_self_fill and not f.is_maker),
        "non-clob": sum(1 for f in fills if f.source != "clob"),
        "zero address": sum(1 for f in fills if f.wallet == "0x0000000000000000000000000000000000000000"),
        "tiny buys": sum(1 for f in fills if 0 < f.tokens_delta < 0.01),
        "sells": sum(1 for f in fills if f.tokens_delta < 0),
        "deleted resolutions": sum(1 for r in dataset.resolutions if r.is_deleted),
        "empty payouts": sum(1 for r in dataset.resolutions if r.payout_numerators == ""),
    }
    assert all(quirks.values()), quirks
    # Duplicates are 1-2% of the rows, mostly exact copies.
    assert 0.005 < sum(len(g) - 1 for g in copies) / len(fills) < 0.03


def test_unresolved_position_without_recent_fills_exists(dataset: Dataset) -> None:
    """The seed plan rebuilt only wallets active in the window and so lost positions like these."""
    rows = dataset.sql_rows
    last_fill: dict[str, datetime] = {}
    for f in dataset.fills:
        last_fill[f.wallet] = max(f.event_time, last_fill.get(f.wallet, f.event_time))
    quiet = {r.wallet for r in rows if r.resolved_at is None and last_fill[r.wallet] < dataset.window_start}
    active = {r.wallet for r in rows if r.resolved_at is None} - quiet
    assert quiet, "no wallet holds an unresolved position without trading in the window"
    assert active, "no wallet with an unresolved position traded in the window"


def _checksum(client: Client, database: str) -> tuple[Any, ...]:
    return tuple(
        client.query(f"SELECT count(), sum(cityHash64(*)) FROM {database}.{table}").result_rows[0]
        for table in (FILLS_TABLE, RESOLUTIONS_TABLE)
    )


def test_generator_is_deterministic(client: Client) -> None:
    now = datetime(2026, 4, 2, 8, 0)
    sums = []
    # The second run also merges its parts: the content must not depend on the physical layout.
    for database, seed, optimize in (("pm_det_a", 7, False), ("pm_det_b", 7, True), ("pm_det_c", 8, False)):
        client.command(f"DROP DATABASE IF EXISTS {database}")
        generate(client, database, fills=5_000, seed=seed, now=now, optimize=optimize)
        sums.append(_checksum(client, database))
        client.command(f"DROP DATABASE {database}")
    assert sums[0] == sums[1]
    assert sums[0] != sums[2]


def test_source_query_fills_the_target_table(client: Client, dsn: str) -> None:
    """INSERT INTO target SELECT source: the column names and types fit the table's."""
    database = "pm_insert"
    now = datetime(2026, 6, 30, 23, 0)
    client.command(f"DROP DATABASE IF EXISTS {database}")
    generate(client, database, fills=4_000, seed=5, now=now)
    local = database_client(dsn, database)
    local.command(
        f"INSERT INTO {TARGET_TABLE} ({', '.join(TARGET_COLUMNS)}) {source_query()}",
        parameters={"window_start": now - WINDOW, **ONE_BATCH},
    )
    described = local.query(f"DESCRIBE ({source_query()})", parameters={"window_start": now - WINDOW, **ONE_BATCH})
    table = client.query(f"DESCRIBE TABLE {database}.{TARGET_TABLE}")
    assert [r[:2] for r in described.result_rows] == [r[:2] for r in table.result_rows]
    partitions = client.query(
        f"SELECT DISTINCT partition FROM system.parts WHERE database = '{database}' "
        f"AND table = '{TARGET_TABLE}' AND active ORDER BY partition"
    ).result_rows
    assert partitions == [("0",), ("202606",)]
    client.command(f"DROP DATABASE {database}")


def test_manifest_is_valid_and_matches_the_schema(client: Client) -> None:
    spec = manifest().spec
    assert spec.target.table == TARGET_TABLE
    assert spec.strategy is Strategy.REPLACE_PARTITIONS
    assert spec.window_delta == WINDOW
    assert spec.unique_key == ["wallet", "condition_id", "outcome_index", "tx_hash"]
    assert "{window_start:DateTime}" in spec.slice.predicate
    create_schema(client, "pm_schema")
    create_schema(client, "pm_schema")  # idempotent
    tables = client.query("SELECT name FROM system.tables WHERE database = 'pm_schema' ORDER BY name").result_rows
    assert tables == sorted((t,) for t in (FILLS_TABLE, RESOLUTIONS_TABLE, TARGET_TABLE))
    client.command("DROP DATABASE pm_schema")
