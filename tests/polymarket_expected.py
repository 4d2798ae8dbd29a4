"""The reference table computed from the engine's fills by the plain-Python rules
(``polymarket_reference``): what the refresh must produce."""

from __future__ import annotations

from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from tablerefresh.workloads import polymarket
from tests.polymarket_reference import (
    FILL_COLUMNS,
    RESOLUTION_COLUMNS,
    Fill,
    Resolution,
    Row,
    slice_rows,
)


def expected_rows(ch: Client, window_start: datetime) -> dict[tuple[object, ...], Row]:
    fills = [Fill(*r) for r in ch.query(f"SELECT {', '.join(FILL_COLUMNS)} FROM {polymarket.FILLS_TABLE}").result_rows]
    resolutions = [
        Resolution(*r)
        for r in ch.query(f"SELECT {', '.join(RESOLUTION_COLUMNS)} FROM {polymarket.RESOLUTIONS_TABLE}").result_rows
    ]
    naive = window_start.astimezone(UTC).replace(tzinfo=None)
    return {r.key: r for r in slice_rows(fills, resolutions, naive)}
