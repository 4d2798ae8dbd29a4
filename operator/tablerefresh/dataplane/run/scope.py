"""What one ReplacePartitions run replaces, as SQL: the slice, or the slice's rows of changed keys.

A full run replaces every slice row. An incremental run replaces a row only when it lies in the
slice AND its key (``incremental.key``, a prefix of the unique key) is among the changed keys; its
source is cut to those keys, and everything else of a partition it touches is carried over. So
one code path serves both kinds: only :attr:`Scope.replaced` and :meth:`Scope.source_rows` differ.

Two notions, kept apart: :attr:`Scope.keyed`, the spec has an incremental section, so every run of
it (full ones too) binds a changed-keys table; and :attr:`Scope.incremental`, this run is incremental
(its :class:`RunKind`). Only the second decides what a run replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tablerefresh.dataplane.infra import names, sql
from tablerefresh.dataplane.run import keyset
from tablerefresh.dataplane.run.incremental import FULL, RunKind
from tablerefresh.spec import TableRefreshSpec


@dataclass
class Scope:
    in_slice: str  # the slice predicate as one boolean (never NULL)
    key: tuple[str, ...] = ()  # incremental.key; empty when the spec has no incremental section
    keys_name: str = ""  # the changed keys' table, bound as {changed_keys:Identifier}
    kind: RunKind = field(default_factory=lambda: RunKind(FULL, ""))
    # ``tablerefresh plan`` creates no key table: the changed keys' SELECT, bound to its name (:meth:`bind`).
    keys_query: str = ""

    @property
    def keyed(self) -> bool:
        """The spec has an incremental section: the run binds a changed-keys table, full or not."""
        return bool(self.key)

    @property
    def incremental(self) -> bool:
        """This run is incremental: it replaces only the changed keys' slice rows."""
        return self.kind.incremental

    def bind(self, query: str) -> str:
        """``query`` as sent: where no table holds the changed keys (the plan), their name bound to
        :attr:`keys_query` as a CTE."""
        if not self.keys_query:
            return query
        return f"WITH {sql.ident(self.keys_name)} AS ({self.keys_query}) {query}"

    @property
    def changed(self) -> str:
        """SQL: the row's key is a changed key. The key table is named as the source names it,
        unqualified (so ``tablerefresh plan`` can bind the name to a CTE instead)."""
        return keyset.member(self.key, sql.ident(self.keys_name))

    @property
    def replaced(self) -> str:
        """SQL: the run replaces this row of the target."""
        if not self.incremental:
            return self.in_slice
        return f"ifNull({self.in_slice} AND {self.changed}, 0)"

    def source_rows(self, query: str, columns: str) -> str:
        """SQL: the rows the run takes from the source. An incremental run keeps only the changed
        keys' rows, whether or not the source reads only those: a source that ignores
        ``{changed_keys:Identifier}`` is slower, never wrong. (The run itself inserts the source's
        rows as they are and then drops the others, :attr:`unchanged`: see ``statements.py``.)"""
        select = f"SELECT {columns} FROM ({query})"
        return f"{select} WHERE {self.changed}" if self.incremental else select

    def key_hash(self) -> str:
        """SQL: a 64-bit hash of the row's key."""
        return f"cityHash64({sql.column_list(list(self.key))})"

    @property
    def replaced_by_hash(self) -> str:
        """SQL: :attr:`replaced` with the key compared by its hash (:meth:`key_hash`), several times
        cheaper to test than the key tuple: every row the run replaces, and on a hash collision a row
        of an unchanged key too."""
        if not self.incremental:
            return self.in_slice
        return f"ifNull({self.in_slice} AND {self._hash_changed}, 0)"

    @property
    def replaced_checked(self) -> str:
        """SQL: exactly :attr:`replaced`, testing the key tuple only where the hash matched (when the
        engine short-circuits ``AND``: ``short_circuit_function_evaluation``)."""
        if not self.incremental:
            return self.in_slice
        return f"ifNull({self.in_slice} AND {self._hash_changed} AND {self.changed}, 0)"

    @property
    def _hash_changed(self) -> str:
        return f"{self.key_hash()} IN (SELECT {self.key_hash()} FROM {sql.ident(self.keys_name)})"

    @property
    def unchanged(self) -> str:
        """SQL: a row the source yielded that an incremental run does not take (its key did not
        change): exactly the rows :meth:`source_rows` leaves out."""
        return f"NOT ifNull({self.changed}, 0)"

    def params(self) -> dict[str, Any]:
        """The query parameters of an incremental spec's runs, full ones included: the source names
        the key table in both kinds, and reads all rows when ``full_run`` is 1."""
        if not self.key:
            return {}
        since = self.kind.since
        return {
            keyset.CHANGED_KEYS_PARAM: self.keys_name,
            keyset.FULL_RUN_PARAM: 0 if self.incremental else 1,
            keyset.SINCE_PARAM: int(since.timestamp()) if since is not None else keyset.BEGINNING,
        }


def run_scope(spec: TableRefreshSpec, run_id: str) -> Scope:
    """A run's scope before it chooses its kind: the slice, and an incremental spec's key table."""
    scope = Scope(sql.slice_condition(spec.slice.predicate))
    if spec.incremental is not None:
        scope.key = tuple(spec.incremental.key)
        scope.keys_name = names.run_table(spec.target.table, run_id, "changed")
    return scope


def window_start(spec: TableRefreshSpec, run_time: datetime) -> datetime:
    return run_time - spec.window_delta


# The parameters a source run in batches reads (spec.source.batches).
BATCH_PARAM, BATCHES_PARAM = "batch", "batches"


def run_params(spec: TableRefreshSpec, run_time: datetime, scope: Scope) -> dict[str, Any]:
    """The parameters of a run's statements: its window, and an incremental spec's (``scope.params``)."""
    # Epoch seconds: a DateTime parameter given as a number means the same instant in any time zone.
    params: dict[str, Any] = {
        "window_start": int(window_start(spec, run_time).timestamp()),
        "run_time": int(run_time.timestamp()),
        # A source run in batches reads which one it is (statements.load_staging binds each).
        BATCH_PARAM: 0,
        BATCHES_PARAM: spec.source.batches,
    }
    return {**params, **scope.params()}


def run_time_of(moment: datetime) -> datetime:
    """A run's time as it is recorded and bound: UTC, whole seconds."""
    return moment.astimezone(UTC).replace(microsecond=0)
