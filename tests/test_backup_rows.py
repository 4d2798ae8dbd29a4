"""``tablerefresh backups`` counts the rows a query of each backup returns (issue 21, point 1).

A backup of partitions links the target's parts; after an incremental run those parts carry a
lightweight delete's mask, and the parts' row counts (``system.parts.rows``, summed in
``system.tables.total_rows``) still count the masked rows. What the user sees must be ``count()``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import catalog
from tablerefresh.dataplane.operations import backups
from tests import refresh_fixtures as fx
from tests.commands import cli, write_manifest


def test_backups_show_the_rows_a_query_returns_not_the_masked_ones(
    ch: Client, loaded: str, chdb_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ch.command(f"INSERT INTO {loaded}.positions SELECT * FROM {loaded}.src")
    # Mask a tenth of the open positions, as an incremental run masks the rows it replaces.
    ch.command(f"DELETE FROM {loaded}.positions WHERE resolved_at IS NULL AND id % 10 = 0")
    target = catalog.describe_table(ch, loaded, "positions")
    partitions = sorted(catalog.partition_rows(ch, target.qualified))
    table = backups.take_partitions(ch, target, "run-with-masked-rows", partitions, datetime.now(UTC))

    counted = int(ch.query(f"SELECT count() FROM {loaded}.{table}").result_rows[0][0])
    in_parts = int(
        ch.query(
            "SELECT sum(rows) FROM system.parts WHERE database = {db:String} AND table = {t:String} AND active",
            parameters={"db": loaded, "t": table},
        ).result_rows[0][0]
    )
    assert in_parts > counted, "the backup's parts should carry masked rows, or this test proves nothing"

    [listed] = backups.list_backups(ch, loaded, "positions")
    assert listed.rows == counted
    manifest = write_manifest(tmp_path, chdb_url, loaded)
    code, shown = cli(capsys, "backups", "-f", str(manifest), "--json")
    assert code == 0 and [b["rows"] for b in shown] == [counted]
    code, text = cli(capsys, "backups", "-f", str(manifest))
    assert code == 0 and f"{counted:,}" in text and f"{in_parts:,}" not in text
    assert fx.rows(ch, table) == fx.rows(ch, "positions")
