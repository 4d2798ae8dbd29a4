"""The controller at run time: one record per TableRefresh, and what sets its workers going.

A :class:`Record` holds everything the controller remembers about one object. It is created when
the object is first seen (:meth:`Controller.seen`) and dropped in one place, :meth:`Controller.drop`,
when the object goes; nothing about an object is kept anywhere else.

Triggers, all on the event loop: kopf's resume/create/update handlers and the periodic resync
(reconcile), events on the CronJobs we own (drift: reconcile), the Job watch (record runs), the
run-now annotation, and the health scheduler. Each worker (``workers``) runs in a thread holding
the object's lock, so no two write its status at once; after each, the object's metrics are set
from its status.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tablerefresh.controller.clock import SYSTEM_CLOCK, Clock
from tablerefresh.controller.kube import Kube, KubeError
from tablerefresh.controller.policy.admission import DEFAULT_POLICY, OperatorPolicy, endpoint
from tablerefresh.controller.policy.checks import Check, Failure, HealthResult, check_of, health_fields
from tablerefresh.controller.policy.checks import health_observations as health_conditions
from tablerefresh.controller.policy.cronjob import Key, Secret, cronjob_name, key_of
from tablerefresh.controller.policy.jobs import trim
from tablerefresh.controller.policy.owners import being_deleted, owner_of
from tablerefresh.controller.policy.status import HEALTH_CHECK
from tablerefresh.controller.runtime import metrics
from tablerefresh.controller.runtime.scheduler import Due, Scheduler
from tablerefresh.controller.runtime.status_writer import StatusMemory, StatusWriter
from tablerefresh.controller.runtime.workers import Prober, handle_run_now, reconcile, record_runs
from tablerefresh.dataplane.infra.connection import redact

log = logging.getLogger(__name__)

Group = tuple[str, str]  # a CronJob's namespace and name: what groups Jobs by owner


@dataclass(eq=False, slots=True)  # hundreds of them: no __dict__ each
class Record:
    """Everything the controller remembers about one TableRefresh, from first sight until it goes."""

    key: Key
    uid: str
    body: dict[str, Any]  # the latest copy from the watch
    series: metrics.ObjectSeries
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one worker at a time
    status: StatusMemory = field(default_factory=StatusMemory)  # what each source wrote, last known statuses
    check: Check | None = None  # its health check; rebuilt when the generation changes
    due: Due = field(default_factory=Due)  # when its health check last started
    health_failing: bool = False  # whether its last health check failed (logged on change only)
    secret: Secret | None = None  # what the last reconcile found of its credentials Secret
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # its CronJob's Jobs by name, trimmed
    cronjob_version: str | None = None  # the CronJob's resourceVersion after our last apply: its echo
    published: tuple[str, metrics.Samples] | None = None  # what its series were last set to


class Controller:
    def __init__(
        self,
        kube: Kube,
        *,
        resync_seconds: float = 60.0,
        concurrency: int = 8,
        health_concurrency: int = 8,
        health_timeout: float = 30.0,
        policy: OperatorPolicy = DEFAULT_POLICY,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.kube = kube
        self.policy = policy
        self.clock = clock  # the one clock: every worker, the writer and the scheduler get this one
        self.writer = StatusWriter(kube, clock)
        self.records: dict[Key, Record] = {}
        self._by_cronjob: dict[Group, Key] = {}  # a CronJob's name -> its TableRefresh: what a Job names
        # Jobs whose TableRefresh is not (or no longer) known: both watches start at once, so a Job
        # may come first. A record takes its own when it is created; a deleted Job goes from here.
        self.unclaimed_jobs: dict[Group, dict[str, dict[str, Any]]] = {}
        self.resync_seconds = resync_seconds
        self._limit = asyncio.Semaphore(concurrency)
        self.prober = Prober(kube, policy=policy, timeout=health_timeout, clock=clock)
        self.health = Scheduler(
            self._due_checks,
            self._probe,
            self._record_health,
            self._timed_out,
            concurrency=health_concurrency,
            timeout=health_timeout,
            server_key=server_address,
            clock=clock.monotonic,
        )
        self._background: set[asyncio.Task[None]] = set()

    # Records, fed by the TableRefresh watch.

    def seen(self, body: Mapping[str, Any]) -> Record:
        """The watch delivered the object: keep it, creating its record on first sight."""
        key = key_of(body)
        meta = body["metadata"]
        uid = str(meta.get("uid"))
        record = self.records.get(key)
        if record is not None and record.uid != uid:  # deleted and created again, the deletion unseen
            self.drop(key)
            record = None
        first = record is None
        if record is None:
            record = Record(key, uid, _kept(body), metrics.ObjectSeries(key))
            group = (key[0], cronjob_name(key[1]))
            record.jobs = self.unclaimed_jobs.pop(group, {})
            self.records[key] = record
            self._by_cronjob[group] = key
            metrics.OBJECTS.set(len(self.records))
        else:
            record.body = _kept(body)
        check = record.check
        if check is None or check.generation != meta.get("generation"):
            record.check = check_of(body, self.policy.min_health_interval_seconds)
            if record.check is not None:
                self.health.poke()  # a new object or a new spec: check it now
        self._publish(record)
        if first and record.jobs:  # its Jobs were listed before it
            self._spawn(self._record_runs_logged(record), f"runs {key[0]}/{key[1]}")
        return record

    def gone(self, body: Mapping[str, Any]) -> None:
        self.drop(key_of(body))

    def drop(self, key: Key) -> None:
        """Forget the object: its record, and with it everything the controller knew of it."""
        record = self.records.pop(key, None)
        if record is not None:
            record.series.remove()
            group = (key[0], cronjob_name(key[1]))
            if self._by_cronjob.get(group) == key:
                del self._by_cronjob[group]
        metrics.OBJECTS.set(len(self.records))

    def _record_of(self, body: Mapping[str, Any]) -> Record | None:
        """The record of this very object; None when it was dropped (or is another incarnation's).
        Only the watch creates records (``seen``, which kopf runs before any handler), so a
        trigger holding an old body can never bring a deleted object back."""
        record = self.records.get(key_of(body))
        return record if record is not None and record.uid == body["metadata"].get("uid") else None

    def _current(self, record: Record) -> bool:
        """Whether the record is still the object's (not dropped while a worker ran)."""
        return self.records.get(record.key) is record

    def _publish(self, record: Record) -> None:
        """Set the object's metrics from its status, as every source has left it; nothing for a
        record dropped meanwhile (a worker ending after the delete must not bring its series back)."""
        if not self._current(record):
            return
        status = self.writer.current(record.status, record.body)
        check = record.check
        spec = record.body.get("spec") or {}
        table = check.table if check else str((spec.get("target") or {}).get("table") or "")
        published = (table, metrics.samples(status, check.spec if check else None))
        if published != record.published:  # most watch events echo a write whose values are set already
            record.series.publish(*published)
            record.published = published

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Reconciling.

    async def reconcile(self, body: Mapping[str, Any], *, trigger: str, echo: str | None = None) -> None:
        """Reconcile one object, never two reconciles of the same object at once.

        ``echo``: the resourceVersion of a CronJob event; nothing to do when it is our own last apply.
        Raises KubeError for failures worth retrying; the caller decides how (kopf retries its
        handlers, the resync just tries again next round).
        """
        record = self._record_of(body)
        if record is None:
            return
        async with record.lock, self._limit:
            if not self._current(record):
                return  # deleted while it waited
            if echo is not None and echo == record.cronjob_version:
                return  # the event of an apply that was still under way when it came
            started = self.clock.monotonic()
            result = "error"
            try:
                # The record is at least as fresh as a handler's body (kopf feeds the watch first).
                facts = await asyncio.to_thread(
                    reconcile, self.kube, self.writer, record.status, record.body, self.policy
                )
                result = "ok"
            finally:
                metrics.RECONCILES.labels(trigger, result).inc()
                metrics.RECONCILE_SECONDS.observe(self.clock.monotonic() - started)
            version = ((facts.cronjob if facts else None) or {}).get("metadata", {}).get("resourceVersion")
            if version:
                record.cronjob_version = str(version)
            if facts is not None:
                self._secret_seen(record, facts.secret)
        self._publish(record)

    def _secret_seen(self, record: Record, secret: Secret) -> None:
        """The reconciler looked at the object's Secret. When it came or went, the health check reads
        it too, and its conditions (and Ready) may name a cause that is gone: check again now, not
        an interval later. The first look counts as a change when the last check failed."""
        before, record.secret = record.secret, secret
        changed = secret != before if before is not None else record.health_failing
        if changed and record.check is not None:
            self.health.check_now(record.due)

    async def owned_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A CronJob we own changed or went away: put it back as its TableRefresh says."""
        owner = owner_of(body)
        if owner is None or not owner.is_tablerefresh or event_type is None:  # None: the initial listing
            return  # (resume covers it)
        record = self.records.get(owner.key)
        if record is None:
            return
        version = body["metadata"].get("resourceVersion")
        echo = str(version) if event_type != "DELETED" and version is not None else None
        if echo is not None and echo == record.cronjob_version:
            return  # the event of our own apply
        tr: Mapping[str, Any] = record.body
        if event_type == "DELETED":
            # Deleted by hand, or by garbage collection because the TableRefresh is going:
            # ask the API server, not the record, which of the two.
            found = await asyncio.to_thread(self.kube.get_tablerefresh, *record.key)
            if found is None or being_deleted(found):
                return
            tr = found
        # The watch may deliver our apply's event before that reconcile has ended: it checks again,
        # holding the object's lock (a whole second reconcile per new object, before).
        await self.reconcile(tr, trigger="cronjob", echo=echo)

    async def resync_forever(self) -> None:
        """Reconcile everything every ``resync_seconds``: the backstop for whatever no event says
        (the Job watch's writes included: a failed one is tried again here)."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            records = list(self.records.values())
            results = await asyncio.gather(
                *(self.reconcile(r.body, trigger="resync") for r in records), return_exceptions=True
            )
            _report("resync", [r.key for r in records], results)
            with_jobs = [r for r in records if r.jobs]
            results = await asyncio.gather(*(self._record_runs(r) for r in with_jobs), return_exceptions=True)
            _report("run outcomes", [r.key for r in with_jobs], results)

    # The health check.

    async def check_health_forever(self) -> None:
        """Check every object on its own interval (see ``scheduler``) until cancelled."""
        await self.health.run_forever()

    def _due_checks(self) -> Iterator[tuple[Check, Due]]:
        return ((r.check, r.due) for r in self.records.values() if r.check is not None)

    def _probe(self, check: Check) -> HealthResult:
        started = self.clock.monotonic()
        try:
            return self.prober(check)
        finally:
            metrics.HEALTH_CHECK_SECONDS.observe(self.clock.monotonic() - started)

    def _timed_out(self, check: Check, seconds: float) -> HealthResult:
        url = redact(check.spec.clickhouse.url)
        error = f"ClickHouse at {url} did not answer the health query within {seconds:g}s"
        return HealthResult(self.clock.now(), failure=Failure.UNREACHABLE, error=error)

    async def _record_health(self, check: Check, result: HealthResult) -> None:
        record = self.records.get(check.key)
        if record is None or record.uid != check.uid:
            return  # deleted, or deleted and created again, while it was measured
        async with record.lock:
            if not self._current(record):
                return
            fields = health_fields(result)
            conditions = health_conditions(result, check.spec)
            await asyncio.to_thread(self.writer.write, record.status, record.body, HEALTH_CHECK, fields, conditions)
        if not result.ok and self._current(record):
            record.series.count_health_error()
        # Logged when it starts and stops failing, not at every interval while it fails.
        if not result.ok and not record.health_failing:
            record.health_failing = True
            log.warning("%s/%s: health check failed: %s", *check.key, result.error)
        elif result.ok and record.health_failing:
            record.health_failing = False
            log.info("%s/%s: health check works again", *check.key)
        self._publish(record)

    # Run outcomes.

    async def job_changed(self, event_type: str | None, job: Mapping[str, Any]) -> None:
        """A Job of ours started, changed or ended: keep it, and bring its TableRefresh's runs up to date."""
        owner = owner_of(job)
        if owner is None or not owner.is_cronjob:
            return
        meta = job["metadata"]
        group = owner.key
        found = self._by_cronjob.get(group)
        record = self.records.get(found) if found is not None else None
        jobs = record.jobs if record is not None else self.unclaimed_jobs.setdefault(group, {})
        if event_type == "DELETED":
            jobs.pop(str(meta["name"]), None)
        else:
            jobs[str(meta["name"])] = trim(job)
        if record is None:
            if not jobs:
                del self.unclaimed_jobs[group]
            return
        await self._record_runs(record)

    async def _record_runs_logged(self, record: Record) -> None:
        try:
            await self._record_runs(record)
        except Exception as exc:  # the resync tries again
            _report("run outcomes", [record.key], [exc])

    async def _record_runs(self, record: Record) -> None:
        async with record.lock:
            if not self._current(record) or being_deleted(record.body):
                return
            jobs = list(record.jobs.values())  # the watch changes them on the loop meanwhile
            results = await asyncio.to_thread(record_runs, self.kube, self.writer, record.status, record.body, jobs)
        if self._current(record):
            for succeeded in results or []:
                record.series.count_run("succeeded" if succeeded else "failed")
        self._publish(record)

    # Run now.

    async def run_now(self, body: Mapping[str, Any]) -> None:
        """The run-now annotation is on the object: handle its token, once. Raises KubeError."""
        record = self._record_of(body)
        if record is None:
            return
        async with record.lock:
            if self._current(record):
                now = self.clock.now()
                await asyncio.to_thread(handle_run_now, self.kube, self.writer, record.status, record.body, now)


async def server_address(check: Check) -> str:
    """The address a check's ClickHouse resolves to (its name when it does not resolve): the key of
    the per-server limit, so aliases of one server cannot take all the slots."""
    host, port = endpoint(check.spec.clickhouse.url)
    if port is None:
        return check.server  # the embedded engine: its path
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return check.server
    return min(f"{info[4][0]}:{port}" for info in found) if found else check.server


def _kept(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a record keeps of the watch's copy: all but metadata.managedFields, which nothing reads and
    which, with a field manager for each status writer, is the largest part of an object."""
    meta = body.get("metadata") or {}
    if "managedFields" not in meta:
        return dict(body)
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _report(what: str, keys: list[Key], results: list[Any]) -> None:
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, KubeError):
            log.warning("%s of %s/%s failed: %s", what, *key, result)
        elif isinstance(result, Exception):
            log.error("%s of %s/%s failed", what, *key, exc_info=result)
