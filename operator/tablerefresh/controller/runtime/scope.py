"""The namespaces the operator watches: from its flags, or from ``$TABLEREFRESH_NAMESPACES``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NAMESPACES_ENV = "TABLEREFRESH_NAMESPACES"


class ScopeError(ValueError):
    """The namespaces to watch are not given, or given two contradictory ways."""


@dataclass(frozen=True)
class Scope:
    clusterwide: bool
    namespaces: tuple[str, ...] = ()


def resolve_scope(flags: Sequence[str], all_namespaces: bool, env: str | None) -> Scope:
    """Flags win over ``$TABLEREFRESH_NAMESPACES`` (comma-separated, ``*`` for all)."""
    if flags and all_namespaces:
        raise ScopeError("give --namespace or --all-namespaces, not both")
    if all_namespaces:
        return Scope(clusterwide=True)
    if flags:
        return Scope(clusterwide=False, namespaces=tuple(dict.fromkeys(flags)))
    names = [n.strip() for n in (env or "").split(",") if n.strip()]
    if "*" in names:
        return Scope(clusterwide=True)
    if names:
        return Scope(clusterwide=False, namespaces=tuple(dict.fromkeys(names)))
    raise ScopeError(f"no namespaces: give --namespace NS (repeatable), --all-namespaces, or ${NAMESPACES_ENV}")
