"""Start the operator: which namespaces, which endpoints, then hand over to kopf."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import kopf

from tablerefresh.controller import metrics
from tablerefresh.controller.handlers import register
from tablerefresh.controller.kube import ApiKube, load_config
from tablerefresh.controller.runtime import Controller
from tablerefresh.controller.settings import operator_settings

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


@dataclass(frozen=True)
class Options:
    scope: Scope
    liveness: str | None = None
    peering: str | None = None  # None: standalone, one replica (the Deployment uses Recreate)
    metrics_port: int = 8080
    resync_seconds: float = 60.0
    concurrency: int = 8
    health_concurrency: int = 8
    health_timeout: float = 30.0


def quiet_chatter() -> None:
    """At INFO, log what the controller changes, not every watch event and probe it handles."""
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        # A health check that cannot reach ClickHouse says so once, in the operator's words.
        logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)


def run_operator(options: Options) -> None:
    quiet_chatter()
    load_config()
    metrics.serve(options.metrics_port)
    registry = kopf.OperatorRegistry()
    controller = Controller(
        ApiKube(),
        resync_seconds=options.resync_seconds,
        concurrency=options.concurrency,
        health_concurrency=options.health_concurrency,
        health_timeout=options.health_timeout,
    )
    register(registry, controller)
    asyncio.run(
        kopf.operator(
            registry=registry,
            settings=operator_settings(standalone=options.peering is None),
            clusterwide=options.scope.clusterwide,
            namespaces=list(options.scope.namespaces),
            standalone=options.peering is None,
            peering_name=options.peering,
            liveness_endpoint=options.liveness,
        )
    )
