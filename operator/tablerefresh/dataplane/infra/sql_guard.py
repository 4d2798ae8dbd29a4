"""What a TableRefresh's author writes as SQL, checked with ClickHouse's own parser before it runs.

The slice predicate is pasted into the operator's and the run's statements, and the audits run as
they are, with credentials the author may not hold. A pattern over the text cannot tell what the
server will read (``DROP TABLE d.victim /* {table:Identifier} */`` "contains" the audit placeholder),
so the server parses it, in two steps that never execute it:

1. ``formatQuerySingleLine`` with the text as a query *parameter* (a value, never SQL) parses it as
   exactly one statement, or fails: several statements are a syntax error. The embedded engine runs
   every statement of a multi-statement text, so the text itself is never sent as SQL before this.
2. ``EXPLAIN AST`` of that formatted, single statement, as a subquery (so its answer is one row), gives
   its syntax tree. In a subquery the server accepts only a SELECT without FORMAT or INTO OUTFILE; the
   tree then shows a ``SETTINGS`` clause (``Set``), which could change limits under ``readonly=2``,
   and every table function, which could reach outside the server (``url``, ``s3``, ``remote``,
   ``mysql``, ``file``, …). Only the table functions that generate rows are allowed.

Both steps run with :data:`limits.READ_ONLY` and the caller's settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tablerefresh.dataplane.infra import limits
from tablerefresh.dataplane.infra.errors import InvalidInput, one_line

PREDICATE = "spec.slice.predicate"
# Table functions that only generate rows inside the server: the rest read files, URLs, object
# stores, other servers or databases (and new ones appear with each release, so this is an allowlist).
ALLOWED_TABLE_FUNCTIONS = frozenset({"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries"})
# Ordinary functions that read outside the tables: a server file, the HTTP request's headers.
OUTSIDE_FUNCTIONS = frozenset({"file", "getclienthttpheader"})
# What the server adds to a SELECT without FROM when it explains it as a subquery.
_NO_FROM = ["TablesInSelectQueryElement", "TableExpression", "TableIdentifier system.one"]
# The server's answer to EXPLAIN of a statement other than a plain SELECT, in a subquery.
_BAD_ARGUMENTS = 36
_CHILDREN = re.compile(r" \(children \d+\)$")


@dataclass
class Node:
    """One line of ``EXPLAIN AST``: ``Function greater (children 1)``, one space of indent per depth."""

    label: str
    children: list[Node] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.label.split(" ", 1)[0]

    @property
    def name(self) -> str:
        """The second word: a function's or an identifier's name."""
        words = self.label.split(" ")
        return words[1] if len(words) > 1 else ""

    def walk(self) -> list[tuple[Node, Node | None]]:
        """Every node below and including this one, with its parent."""
        found: list[tuple[Node, Node | None]] = [(self, None)]
        for node, _ in found:
            found.extend((child, node) for child in node.children)
        return found


def parse_ast(lines: list[str]) -> Node:
    """The tree of ``EXPLAIN AST`` lines. Raises ``ValueError`` when they are not one tree."""
    root: Node | None = None
    stack: list[Node] = []
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        node = Node(_CHILDREN.sub("", line.strip()))
        if depth == 0:
            if root is not None:
                raise ValueError("more than one statement")
            root = node
        elif depth > len(stack):
            raise ValueError(f"unexpected indent at {line!r}")
        else:
            stack[depth - 1].children.append(node)
        del stack[depth:]
        stack.append(node)
    if root is None:
        raise ValueError("no statement")
    return root


def check_predicate(
    client: Client, predicate: str, params: Mapping[str, Any], settings: Mapping[str, Any] | None = None
) -> None:
    """Refuse (``InvalidInput`` naming spec.slice.predicate) a predicate that is not one expression.

    It is checked as the select list of ``SELECT (\\n<predicate>\\n)``, the parentheses on lines of
    their own as every statement pastes it (``sql.slice_condition``), so a trailing ``--`` comment
    cannot swallow them: that must be one SELECT of one expression, with no FROM, WHERE or SETTINGS
    of its own, and subqueries in it may use only the allowed table functions."""
    root = _tree(client, f"SELECT (\n{predicate}\n)", PREDICATE, params, settings, "one boolean expression")
    select = _only_select(root)
    if select is None or not select.children or select.children[0].kind != "ExpressionList":
        raise InvalidInput(f"{PREDICATE} must be one boolean expression: it is read as more than one")
    items, *rest = select.children
    if len(items.children) != 1 or any(not _is_no_from(n) for n in rest):
        raise InvalidInput(
            f"{PREDICATE} must be one boolean expression: it closes the parentheses around it "
            "(several expressions, or a clause of its own)"
        )
    _refuse_outside(root, PREDICATE)


def check_select(
    client: Client, text: str, what: str, params: Mapping[str, Any], settings: Mapping[str, Any] | None = None
) -> None:
    """Refuse (``InvalidInput`` naming ``what``) a text that is not one read-only SELECT: one statement,
    a SELECT, without SETTINGS, FORMAT or INTO OUTFILE, using only the allowed table functions."""
    root = _tree(client, text, what, params, settings, "one SELECT")
    if root.kind != "SelectWithUnionQuery":
        raise InvalidInput(f"{what} must be one SELECT: it is read as {root.kind}")
    _refuse_outside(root, what)


def _tree(
    client: Client,
    text: str,
    what: str,
    params: Mapping[str, Any],
    settings: Mapping[str, Any] | None,
    must_be: str,
) -> Node:
    run_with = {**(settings or {}), **limits.READ_ONLY}
    try:
        formatted = client.query(
            "SELECT formatQuerySingleLine({text:String})", parameters={"text": text}, settings=run_with
        ).result_rows[0][0]
    except DatabaseError as exc:
        _reraise_unless_server(exc)
        raise InvalidInput(f"{what} does not compile: {one_line(exc)}") from exc
    try:
        # {parsed:Bool} keeps a server-side parameter in the text, so the client binds every parameter
        # on the server instead of %-formatting the text (which a % in it would break).
        lines = client.query(
            f"SELECT groupArray(explain) FROM (EXPLAIN AST {formatted}\n) WHERE {{parsed:Bool}}",
            parameters={**params, "parsed": True},
            settings=run_with,
        ).result_rows[0][0]
    except DatabaseError as exc:
        _reraise_unless_server(exc)
        if getattr(exc, "code", None) == _BAD_ARGUMENTS:  # not a SELECT, or one with FORMAT / INTO OUTFILE
            raise InvalidInput(f"{what} must be {must_be}, without FORMAT or INTO OUTFILE: {one_line(exc)}") from exc
        raise InvalidInput(f"{what} does not compile: {one_line(exc)}") from exc
    try:
        return parse_ast(list(lines))
    except ValueError as exc:
        raise InvalidInput(f"{what} must be {must_be}: {exc}") from exc


def _reraise_unless_server(exc: DatabaseError) -> None:
    """A refusal by the server carries its error code; anything else (the connection broke, the
    client refused a setting) is not the text's fault, and goes to the caller as it is."""
    if getattr(exc, "code", None) is None:
        raise exc


def _only_select(root: Node) -> Node | None:
    """The one SelectQuery of ``SelectWithUnionQuery > ExpressionList > SelectQuery``, else None."""
    if root.kind != "SelectWithUnionQuery" or len(root.children) != 1:
        return None
    union = root.children[0]
    if union.kind != "ExpressionList" or len(union.children) != 1 or union.children[0].kind != "SelectQuery":
        return None
    return union.children[0]


def _is_no_from(node: Node) -> bool:
    """The FROM the server adds to a SELECT without one (``system.one``), nothing the text wrote."""
    return node.kind == "TablesInSelectQuery" and [n.label for n, _ in node.walk()[1:]] == _NO_FROM


def _refuse_outside(root: Node, what: str) -> None:
    for node, parent in root.walk():
        if node.kind == "Set":
            raise InvalidInput(f"{what} must not have a SETTINGS clause: the operator sets the limits")
        if node.kind != "Function":
            continue
        name = node.name.lower()
        if parent is not None and parent.kind == "TableExpression":
            if name not in ALLOWED_TABLE_FUNCTIONS:
                allowed = ", ".join(sorted(ALLOWED_TABLE_FUNCTIONS))
                raise InvalidInput(
                    f"{what} must read only tables: it uses the table function {node.name}() (allowed: {allowed})"
                )
        elif name in OUTSIDE_FUNCTIONS:
            raise InvalidInput(f"{what} must read only tables: it calls {node.name}()")
