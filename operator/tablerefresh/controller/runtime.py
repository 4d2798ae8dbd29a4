"""The asynchronous side of the controller: who triggers a reconcile, and one at a time per object.

Triggers: kopf's create/update/resume handlers, events on the CronJobs we own (drift), and a
periodic resync (a Secret created later, anything a lost event missed). The reconcile itself is
synchronous API calls, run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from tablerefresh.controller import metrics
from tablerefresh.controller.kube import Kube, KubeError
from tablerefresh.controller.reconcile import Reconciler
from tablerefresh.controller.store import Key, Store, key_of
from tablerefresh.spec import KIND

log = logging.getLogger(__name__)


def controller_owner(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The TableRefresh controller reference of an owned object, if any."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND:
            return dict(ref)
    return None


class Controller:
    def __init__(self, kube: Kube, *, resync_seconds: float = 60.0, concurrency: int = 8) -> None:
        self.kube = kube
        self.store = Store()
        self.reconciler = Reconciler(kube)
        self.resync_seconds = resync_seconds
        self._limit = asyncio.Semaphore(concurrency)
        self._locks: dict[Key, asyncio.Lock] = {}

    # The cache, fed by the TableRefresh watch.

    def seen(self, body: Mapping[str, Any]) -> None:
        self.store.put(body)
        metrics.OBJECTS.set(len(self.store))

    def gone(self, body: Mapping[str, Any]) -> None:
        key = key_of(body)
        self.store.remove(key)
        self._locks.pop(key, None)
        self.reconciler.forget(*key, str(body["metadata"].get("uid")))
        metrics.OBJECTS.set(len(self.store))

    # Reconciling.

    async def reconcile(self, body: Mapping[str, Any], *, trigger: str) -> None:
        """Reconcile one object, never two reconciles of the same object at once.

        Raises KubeError for failures worth retrying; the caller decides how (kopf retries its
        handlers, the resync just tries again next round).
        """
        key = key_of(body)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock, self._limit:
            latest = self.store.get(key)
            # The cache is at least as fresh as a handler's body (kopf feeds it first).
            if latest is not None and latest["metadata"].get("uid") == body["metadata"].get("uid"):
                body = latest
            started = time.monotonic()
            result = "error"
            try:
                await asyncio.to_thread(self.reconciler.reconcile, body)
                result = "ok"
            finally:
                metrics.RECONCILES.labels(trigger, result).inc()
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    async def owned_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A CronJob we own changed or went away: put it back as its TableRefresh says."""
        owner = controller_owner(body)
        if owner is None or event_type is None:  # None: the initial listing; resume covers it
            return
        if event_type != "DELETED" and self.reconciler.is_echo(body):
            return  # the event of our own apply
        key = (str(body["metadata"]["namespace"]), str(owner["name"]))
        tr = self.store.get(key)
        if tr is None:
            return
        if event_type == "DELETED":
            # Deleted by hand, or by garbage collection because the TableRefresh is going:
            # ask the API server, not the cache, which of the two.
            tr = await asyncio.to_thread(self.kube.get_tablerefresh, *key)
            if tr is None or tr["metadata"].get("deletionTimestamp"):
                return
        await self.reconcile(tr, trigger="cronjob")

    async def resync_forever(self) -> None:
        """Reconcile everything every ``resync_seconds``: the backstop for whatever no event says.

        Periodic per-object work (the health check) gets a loop of the same shape.
        """
        while True:
            await asyncio.sleep(self.resync_seconds)
            bodies = self.store.snapshot()
            results = await asyncio.gather(
                *(self.reconcile(b, trigger="resync") for b in bodies), return_exceptions=True
            )
            for body, result in zip(bodies, results, strict=True):
                if isinstance(result, KubeError):
                    log.warning("resync of %s/%s failed: %s", *key_of(body), result)
                elif isinstance(result, Exception):
                    log.error("resync of %s/%s failed", *key_of(body), exc_info=result)
