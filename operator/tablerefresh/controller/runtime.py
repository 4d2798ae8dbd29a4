"""The asynchronous side of the controller: who triggers a reconcile, and one at a time per object.

Triggers: kopf's create/update/resume handlers, events on the CronJobs we own (drift), and a
periodic resync (a Secret created later, anything a lost event missed). The reconcile itself is
synchronous API calls, run in a worker thread.

Two more writers share each object's status: the health check (``scheduler`` decides when, ``probe``
measures) and the Job watch (``recorder``). Each takes the object's lock to write, so Ready is always
computed from the newest conditions; after every write the object's metrics are set from its status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from tablerefresh.controller import healthcheck, metrics, recorder
from tablerefresh.controller.healthcheck import Check, Failure, HealthResult, check_of
from tablerefresh.controller.kube import Kube, KubeError
from tablerefresh.controller.naming import cronjob_name
from tablerefresh.controller.probe import Prober
from tablerefresh.controller.reconcile import Reconciler
from tablerefresh.controller.recorder import RunRecorder
from tablerefresh.controller.samples import samples
from tablerefresh.controller.scheduler import Scheduler
from tablerefresh.controller.store import Key, Store, key_of
from tablerefresh.controller.writer import StatusWriter
from tablerefresh.controller.written import Written
from tablerefresh.dataplane.connection import redact
from tablerefresh.spec import KIND

log = logging.getLogger(__name__)


def controller_owner(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The TableRefresh controller reference of an owned object, if any."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND:
            return dict(ref)
    return None


class Controller:
    def __init__(
        self,
        kube: Kube,
        *,
        resync_seconds: float = 60.0,
        concurrency: int = 8,
        health_concurrency: int = 8,
        health_timeout: float = 30.0,
    ) -> None:
        self.kube = kube
        self.store = Store()
        self.written = Written()  # every writer's last apply, shared so Ready is computed from all
        self.reconciler = Reconciler(kube, written=self.written)
        self.resync_seconds = resync_seconds
        self._limit = asyncio.Semaphore(concurrency)
        self._locks: dict[Key, asyncio.Lock] = {}
        self.object_metrics = metrics.ObjectMetrics()
        self._checks: dict[Key, Check] = {}  # rebuilt when an object's uid or generation changes
        self.prober = Prober(kube, timeout=health_timeout)
        self.health_writer = StatusWriter(kube, self.written, healthcheck.MANAGER)
        self.health = Scheduler(
            lambda: list(self._checks.values()),
            self._probe,
            self._record_health,
            self._timed_out,
            concurrency=health_concurrency,
            timeout=health_timeout,
        )
        self.runs = RunRecorder(kube, StatusWriter(kube, self.written, recorder.MANAGER))
        self._background: set[asyncio.Task[None]] = set()
        self._failing: set[Key] = set()  # objects whose last health check failed

    # The cache, fed by the TableRefresh watch.

    def seen(self, body: Mapping[str, Any]) -> None:
        key = key_of(body)
        first = self.store.get(key) is None
        self.store.put(body)
        metrics.OBJECTS.set(len(self.store))
        meta = body["metadata"]
        known = self._checks.get(key)
        if known is None or (known.uid, known.generation) != (meta.get("uid"), meta.get("generation")):
            check = check_of(body)
            if check is None:
                self._checks.pop(key, None)
            else:
                self._checks[key] = check
                self.health.poke()  # a new object or a new spec: check it now
        self._publish(key)
        if first and self.runs.has_jobs(*key):  # its Jobs were listed before it
            self._spawn(self._sync_runs_logged(key), f"runs {key[0]}/{key[1]}")

    def gone(self, body: Mapping[str, Any]) -> None:
        key = key_of(body)
        uid = str(body["metadata"].get("uid"))
        self.store.remove(key)
        self._locks.pop(key, None)
        self.reconciler.forget(*key, uid)  # also what every writer wrote (the shared Written)
        self._checks.pop(key, None)
        self.health.forget(key)
        self.health_writer.forget(uid)
        self.runs.forget(*key)
        self.object_metrics.forget(key)
        self._failing.discard(key)
        metrics.OBJECTS.set(len(self.store))

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _publish(self, key: Key) -> None:
        """Set the object's metrics from its status, as every writer has left it."""
        body = self.store.get(key)
        if body is None:
            return
        check = self._checks.get(key)
        status = self.written.overlay(str(body["metadata"].get("uid")), body.get("status") or {})
        table = check.table if check else str(((body.get("spec") or {}).get("target") or {}).get("table") or "")
        self.object_metrics.publish(key, table, samples(status, check.spec if check else None))

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Reconciling.

    async def reconcile(self, body: Mapping[str, Any], *, trigger: str) -> None:
        """Reconcile one object, never two reconciles of the same object at once.

        Raises KubeError for failures worth retrying; the caller decides how (kopf retries its
        handlers, the resync just tries again next round).
        """
        key = key_of(body)
        async with self._lock(key), self._limit:
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
        self._publish(key)

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
        """Reconcile everything every ``resync_seconds``: the backstop for whatever no event says
        (the Job watch's writes included: a failed one is tried again here)."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            bodies = self.store.snapshot()
            results = await asyncio.gather(
                *(self.reconcile(b, trigger="resync") for b in bodies), return_exceptions=True
            )
            _report("resync", [key_of(b) for b in bodies], results)
            keys = [key_of(b) for b in bodies if self.runs.has_jobs(*key_of(b))]
            results = await asyncio.gather(*(self._sync_runs(k) for k in keys), return_exceptions=True)
            _report("run outcomes", keys, results)

    # The health check.

    async def check_health_forever(self) -> None:
        """Check every object on its own interval (see ``scheduler``) until cancelled."""
        await self.health.run_forever()

    def _probe(self, check: Check) -> HealthResult:
        started = time.monotonic()
        try:
            return self.prober(check)
        finally:
            metrics.HEALTH_CHECK_SECONDS.observe(time.monotonic() - started)

    @staticmethod
    def _timed_out(check: Check, seconds: float) -> HealthResult:
        url = redact(check.spec.clickhouse.url)
        error = f"ClickHouse at {url} did not answer the health query within {seconds:g}s"
        return HealthResult(datetime.now(UTC), failure=Failure.UNREACHABLE, error=error)

    async def _record_health(self, check: Check, result: HealthResult) -> None:
        key = check.key
        async with self._lock(key):
            body = self.store.get(key)
            if body is None or body["metadata"].get("uid") != check.uid:
                return  # deleted, or deleted and created again, while it was measured
            fields = healthcheck.health_fields(result)
            observed = healthcheck.observations(result, check.spec)
            await asyncio.to_thread(self.health_writer.write, body, fields, observed)
        if not result.ok:
            self.object_metrics.count_health_error(key)
        # Logged when it starts and stops failing, not at every interval while it fails.
        if not result.ok and key not in self._failing:
            self._failing.add(key)
            log.warning("%s/%s: health check failed: %s", *key, result.error)
        elif result.ok and key in self._failing:
            self._failing.discard(key)
            log.info("%s/%s: health check works again", *key)
        self._publish(key)

    # Run outcomes.

    async def job_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Job of ours started, changed or ended: bring its TableRefresh's runs up to date."""
        group = self.runs.job_event(event_type, body)
        if group is None:
            return
        key = self._owner_of_cronjob(*group)
        if key is not None:
            await self._sync_runs(key)

    def _owner_of_cronjob(self, namespace: str, cronjob: str) -> Key | None:
        """The TableRefresh whose CronJob has this name (the name is the TableRefresh's, unless shortened)."""
        if self.store.get((namespace, cronjob)) is not None:
            return namespace, cronjob
        for body in self.store.snapshot():
            key = key_of(body)
            if key[0] == namespace and cronjob_name(key[1]) == cronjob:
                return key
        return None

    async def _sync_runs_logged(self, key: Key) -> None:
        try:
            await self._sync_runs(key)
        except Exception as exc:  # the resync tries again
            _report("run outcomes", [key], [exc])

    async def _sync_runs(self, key: Key) -> None:
        async with self._lock(key):
            body = self.store.get(key)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            results = await asyncio.to_thread(self.runs.sync, body)
        for succeeded in results or []:
            self.object_metrics.count_run(key, "succeeded" if succeeded else "failed")
        self._publish(key)


def _report(what: str, keys: list[Key], results: list[Any]) -> None:
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, KubeError):
            log.warning("%s of %s/%s failed: %s", what, *key, result)
        elif isinstance(result, Exception):
            log.error("%s of %s/%s failed", what, *key, exc_info=result)
