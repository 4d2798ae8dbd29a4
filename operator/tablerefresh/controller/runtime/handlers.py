"""kopf's handlers: which event calls which :class:`~.controller.Controller` method.

No handler here makes kopf add a finalizer (no on.delete, no daemons, no timers): deleting a
TableRefresh never waits for the operator, and its CronJob goes by garbage collection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import kopf

from tablerefresh.controller.kube import KubeError
from tablerefresh.controller.policy.cronjob import MANAGED_BY, MANAGED_BY_LABEL
from tablerefresh.controller.policy.jobs import ANNOTATION as RUN_NOW_ANNOTATION
from tablerefresh.controller.runtime.controller import Controller
from tablerefresh.spec import GROUP, PLURAL, VERSION

RETRY_DELAY = 5.0


async def _reconcile(controller: Controller, body: Mapping[str, Any], trigger: str) -> None:
    try:
        await controller.reconcile(body, trigger=trigger)
    except KubeError as exc:
        if exc.transient:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
        raise kopf.PermanentError(str(exc)) from exc


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Register every handler of the operator on ``registry``."""
    background: list[asyncio.Task[None]] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def start(**_: Any) -> None:
        background.append(asyncio.create_task(controller.resync_forever(), name="resync"))
        background.append(asyncio.create_task(controller.check_health_forever(), name="health"))

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # First for every event of the object: kopf runs its event handlers before its change handlers.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="cache")
    async def cache(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:  # on the loop: it pokes tasks
        if event.get("type") == "DELETED":
            controller.gone(body)
        else:
            controller.seen(body)

    # One reconcile for every change of the object itself; the id says which trigger ran it.
    for trigger, on in (("resume", kopf.on.resume), ("create", kopf.on.create), ("update", kopf.on.update)):

        async def reconcile(body: kopf.Body, trigger: str = trigger, **_: Any) -> None:
            await _reconcile(controller, body, trigger)

        on(
            GROUP,
            VERSION,
            PLURAL,
            registry=registry,
            id=f"reconcile-{trigger}",
            errors=kopf.ErrorsMode.TEMPORARY,
            backoff=RETRY_DELAY,
        )(reconcile)

    @kopf.on.event(
        GROUP, VERSION, PLURAL, annotations={RUN_NOW_ANNOTATION: kopf.PRESENT}, registry=registry, id="run-now"
    )
    async def on_run_now(event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        if event.get("type") == "DELETED":
            return
        try:
            await controller.run_now(body)
        except KubeError as exc:  # the next event or resync of the object tries again
            logger.warning(f"run-now: {exc}")

    @kopf.on.event("batch", "v1", "cronjobs", labels={MANAGED_BY_LABEL: MANAGED_BY}, registry=registry, id="drift")
    async def on_cronjob(event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        try:
            await controller.owned_changed(event.get("type"), body)
        except KubeError as exc:  # the resync tries again
            logger.warning(f"could not restore the CronJob: {exc}")

    @kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY_LABEL: MANAGED_BY}, registry=registry, id="runs")
    async def on_job(event: Mapping[str, Any], body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        try:
            await controller.job_changed(event.get("type"), body)
        except KubeError as exc:  # the resync tries again
            logger.warning(f"could not record the run: {exc}")
