"""The workload's tables: one CREATE TABLE IF NOT EXISTS per ``.sql`` file, names unqualified."""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

from tablerefresh.spec import IDENTIFIER_PATTERN

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

FILLS_TABLE = "pm_canonical_fills_v4"
RESOLUTIONS_TABLE = "pm_condition_resolutions"
TARGET_TABLE = "pm_trade_fifo_roi_v3_mat_unified"
SCHEMA_TABLES = (FILLS_TABLE, RESOLUTIONS_TABLE, TARGET_TABLE)

TARGET_COLUMNS = (
    "tx_hash",
    "wallet",
    "condition_id",
    "outcome_index",
    "entry_time",
    "resolved_at",
    "tokens",
    "cost_usd",
    "tokens_sold_early",
    "tokens_held",
    "exit_value",
    "pnl_usd",
    "roi",
    "pct_sold_early",
    "is_maker",
    "is_closed",
    "is_short",
)


def check_identifier(name: str) -> str:
    """Return ``name`` if it may be interpolated into SQL unquoted, else raise ValueError."""
    if not re.fullmatch(IDENTIFIER_PATTERN, name):
        raise ValueError(f"invalid ClickHouse identifier: {name!r}")
    return name


def schema_sql(table: str) -> str:
    """The CREATE TABLE IF NOT EXISTS statement of one table, with an unqualified name."""
    if table not in SCHEMA_TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {SCHEMA_TABLES}")
    return resources.files(__name__).joinpath(f"{table}.sql").read_text()


def create_schema(client: Client, database: str) -> None:
    """Create ``database`` and the three tables in it, unless they exist."""
    check_identifier(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    for table in SCHEMA_TABLES:
        # Qualify the name rather than rely on the client's current database.
        head = f"CREATE TABLE IF NOT EXISTS {table}\n"
        ddl = schema_sql(table)
        if head not in ddl:
            raise ValueError(f"schema/{table}.sql: expected a statement starting {head!r}")
        client.command(ddl.replace(head, f"CREATE TABLE IF NOT EXISTS {database}.{table}\n", 1))
