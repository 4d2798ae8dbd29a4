"""Starting the operator: logs, the API client, metrics, the one clock, the controller, then kopf."""

from __future__ import annotations

import asyncio

import kopf

from tablerefresh.controller.clock import SYSTEM_CLOCK, Clock
from tablerefresh.controller.kube import ApiKube, load_config
from tablerefresh.controller.runtime import metrics
from tablerefresh.controller.runtime.controller import Controller
from tablerefresh.controller.runtime.handlers import register
from tablerefresh.controller.runtime.logs import quiet_chatter
from tablerefresh.controller.runtime.options import Options
from tablerefresh.controller.runtime.settings import operator_settings


def run_operator(options: Options, clock: Clock = SYSTEM_CLOCK) -> None:
    """Start the operator: which namespaces, which endpoints, then hand over to kopf. ``clock`` is
    the one every part of the controller reads (the API client's Events included)."""
    quiet_chatter()
    load_config()
    metrics.serve(options.metrics_port)
    registry = kopf.OperatorRegistry()
    controller = Controller(
        ApiKube(clock=clock),
        clock=clock,
        resync_seconds=options.resync_seconds,
        concurrency=options.concurrency,
        health_concurrency=options.health_concurrency,
        health_timeout=options.health_timeout,
        policy=options.policy,
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
