"""What one ReplacePartitions run replaces, as SQL: the slice, or the slice's rows of changed keys.

A full run replaces every slice row. An incremental run replaces a row only when it lies in the
slice AND its key (``incremental.key``, a prefix of the unique key) is among the changed keys; its
source is cut to those keys, and everything else of a partition it touches is carried over. So
one code path serves both kinds: only :attr:`Scope.replaced` and :meth:`Scope.source_rows` differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tablerefresh.dataplane import keyset, sql
from tablerefresh.dataplane.incremental import FULL, RunKind


@dataclass
class Scope:
    in_slice: str  # the slice predicate as one boolean (never NULL)
    key: tuple[str, ...] = ()  # incremental.key; empty when the spec has no incremental section
    keys_name: str = ""  # the changed keys' table, bound as {changed_keys:Identifier}
    kind: RunKind = field(default_factory=lambda: RunKind(FULL, ""))

    @property
    def incremental(self) -> bool:
        return self.kind.incremental

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
        rows as they are and then drops the others, :attr:`unchanged`: see ``Refresh._load_staging``.)"""
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
