"""The refreshable view a TableRefresh of strategy RefreshableView owns, as statements. Pure.

The view is ``CREATE MATERIALIZED VIEW db.view REFRESH … TO db.target AS <source query>``: the server
rebuilds the target whole on the schedule and swaps it in. Its COMMENT says who owns it, its target,
a digest of its query and its REFRESH clause, so a later apply knows, without parsing the server's
rewrite of the statement, whether the view is the operator's and what changed:

- nothing: no statement;
- the REFRESH clause: ``ALTER TABLE … MODIFY REFRESH`` (the next refresh moves, none runs now);
- the query: ``ALTER TABLE … MODIFY QUERY`` (the next refresh uses it);
- the target: ``CREATE OR REPLACE MATERIALIZED VIEW``, one statement that swaps the definition, so
  the target is never without its view (the new view refreshes at once, as a new view does).

The comment is written last, so a change cut short is made again by the next apply.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.errors import InvalidInput
from tablerefresh.dataplane.infra.names import target_tag
from tablerefresh.view_schedule import RefreshEvery, interval

VIEW_PREFIX = "_tablerefresh_view_"
_MAX_IDENTIFIER = 128
# The comment of an owned view: "tablerefresh owner=ns/name target=t query=<sha256, 16> refresh=<clause>".
_COMMENT = re.compile(
    r"^tablerefresh owner=(?P<owner>\S+) target=(?P<target>\S+) query=(?P<query>[0-9a-f]{16}) refresh=(?P<refresh>.+)$"
)
# A view's query runs on the server's schedule, where nobody binds parameters.
_PARAMETER = re.compile(r"\{\s*[A-Za-z_][A-Za-z0-9_]*\s*:")


def view_name(tablerefresh: str) -> str:
    """The view of the TableRefresh named ``tablerefresh``: named after it (``-`` and ``.`` become
    ``_``), or after its hash when that would be too long. Named after the TableRefresh, not the
    target, so that a new target is the same view replaced, not a second view."""
    name = VIEW_PREFIX + re.sub(r"[-.]", "_", tablerefresh)
    return name if len(name) <= _MAX_IDENTIFIER else f"{VIEW_PREFIX}{target_tag(tablerefresh)}"


@dataclass(frozen=True)
class ViewDefinition:
    """What the view should be: ``owner`` is ``namespace/name`` of the TableRefresh, whose name names it."""

    database: str
    target: str
    query: str
    every: RefreshEvery
    owner: str
    randomize_for_seconds: int | None = None
    depends_on: tuple[str, ...] = ()  # other views of the same database

    def __post_init__(self) -> None:
        if _PARAMETER.search(self.query):
            raise InvalidInput(
                "spec.source.query of a RefreshableView cannot use query parameters ({name:Type}): "
                "the server runs it on its schedule, with nothing to bind them"
            )

    @property
    def view(self) -> str:
        return view_name(self.owner.rpartition("/")[2])

    @property
    def qualified(self) -> str:
        return sql.table(self.database, self.view)

    def refresh_clause(self) -> str:
        clause = self.every.sql()
        if self.randomize_for_seconds:
            count, unit = interval(self.randomize_for_seconds)
            clause += f" RANDOMIZE FOR {count} {unit}"
        if self.depends_on:
            clause += " DEPENDS ON " + ", ".join(sql.table(self.database, v) for v in self.depends_on)
        return clause

    def query_digest(self) -> str:
        return hashlib.sha256(self.query.encode()).hexdigest()[:16]

    def comment(self) -> str:
        return (
            f"tablerefresh owner={self.owner} target={self.target} query={self.query_digest()} "
            f"refresh={self.refresh_clause()}"
        )


@dataclass(frozen=True)
class OwnedView:
    """What an existing view's comment says; None fields when the comment is not ours."""

    owner: str
    target: str
    query: str  # its digest
    refresh: str


def read_comment(comment: str) -> OwnedView | None:
    found = _COMMENT.match(comment)
    return None if found is None else OwnedView(found["owner"], found["target"], found["query"], found["refresh"])


def create(definition: ViewDefinition, *, replace: bool = False) -> sql.Statement:
    """The view, created (or, with ``replace``, swapped in for the one of that name in one statement).

    The query stands on lines of its own, as it was checked (one SELECT), so a trailing ``--``
    comment cannot swallow the COMMENT clause."""
    verb = "CREATE OR REPLACE" if replace else "CREATE"
    return sql.Statement(
        f"{verb} MATERIALIZED VIEW {definition.qualified}\n"
        f"REFRESH {definition.refresh_clause()}\n"
        f"TO {sql.table(definition.database, definition.target)}\n"
        f"AS\n{definition.query}\n"
        f"COMMENT {sql.string_literal(definition.comment())}"
    )


def changes(definition: ViewDefinition, existing: OwnedView | None) -> list[sql.Statement]:
    """The statements that make the owned view ``existing`` (None: there is none) what ``definition`` says."""
    if existing is None:
        return [create(definition)]
    if existing.owner != definition.owner:
        raise ViewNotOwned(
            f"view {definition.database}.{definition.view} belongs to {existing.owner}, not {definition.owner}"
        )
    if existing.target != definition.target:
        return [create(definition, replace=True)]
    alter = f"ALTER TABLE {definition.qualified}"
    changed = []
    if existing.query != definition.query_digest():
        changed.append(sql.Statement(f"{alter} MODIFY QUERY\n{definition.query}\n"))
    if existing.refresh != definition.refresh_clause():
        changed.append(sql.Statement(f"{alter} MODIFY REFRESH {definition.refresh_clause()}"))
    if changed:
        return [*changed, sql.Statement(f"{alter} MODIFY COMMENT {sql.string_literal(definition.comment())}")]
    return []


class ViewNotOwned(InvalidInput):
    """A view (or table) of the view's name that this TableRefresh did not create: never replaced."""


def drop(database: str, view: str) -> sql.Statement:
    return sql.Statement(f"DROP VIEW IF EXISTS {sql.table(database, view)} SYNC")


def system(verb: str, database: str, view: str) -> sql.Statement:
    """``SYSTEM REFRESH VIEW`` (run now), ``STOP VIEW`` (suspend) or ``START VIEW`` (resume)."""
    if verb not in ("REFRESH", "STOP", "START"):
        raise ValueError(f"not a SYSTEM … VIEW verb: {verb}")
    return sql.Statement(f"SYSTEM {verb} VIEW {sql.table(database, view)}")
