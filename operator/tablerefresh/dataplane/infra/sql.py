"""SQL text helpers. Identifiers are validated before they are ever interpolated; values never are."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tablerefresh.dataplane.infra.errors import InvalidInput

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Partition ids come from system.parts: digits, hex hashes, and '-'/'_' joined tuples.
_PARTITION_ID = re.compile(r"[A-Za-z0-9_\-]{1,256}")


def ident(name: str) -> str:
    """A validated identifier, backquoted."""
    if not _IDENTIFIER.fullmatch(name):
        raise InvalidInput(f"invalid identifier: {name!r}")
    return f"`{name}`"


def table(database: str, name: str) -> str:
    return f"{ident(database)}.{ident(name)}"


def partition_id(pid: str) -> str:
    """A partition id as a SQL string literal for ``PARTITION ID``, which takes no parameters."""
    if not _PARTITION_ID.fullmatch(pid):
        raise InvalidInput(f"unexpected partition id: {pid!r}")
    return f"'{pid}'"


def column_list(columns: list[str]) -> str:
    return ", ".join(ident(c) for c in columns)


def string_literal(value: str) -> str:
    """A quoted SQL string, for the few places ClickHouse takes no parameter (COMMENT)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def slice_condition(predicate: str) -> str:
    """The slice predicate as one boolean that is never NULL: a row for which it is NULL is outside
    the slice, and ``NOT`` of it must then select the row (NOT NULL would lose it from both sides).

    The predicate stands between parentheses on lines of their own, exactly as
    ``sql_guard.check_predicate`` parsed it, so a trailing ``--`` comment cannot swallow them."""
    return f"ifNull((\n{predicate}\n), 0)"


@dataclass(frozen=True)
class Statement:
    """A statement that changes something, as a run executes it and ``tablerefresh plan`` shows it:
    its text, and the parameters and settings it is sent with."""

    text: str
    parameters: Mapping[str, Any] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def execute(self, client: Client) -> Mapping[str, Any]:
        """Execute it; what the engine said it cost (``QuerySummary.summary``: empty for a
        statement that returned rows)."""
        parameters = None if self.parameters is None else dict(self.parameters)
        answer = client.command(self.text, parameters=parameters, settings=dict(self.settings) or None)
        summary = getattr(answer, "summary", None)
        return summary if isinstance(summary, Mapping) else {}


def drop_table(table: str) -> Statement:
    """``table`` (quoted) dropped, whether or not it is there."""
    return Statement(f"DROP TABLE IF EXISTS {table} SYNC")
