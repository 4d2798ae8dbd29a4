"""kopf wiring: which events call which controller method, kopf's settings (its diff base kept as a
digest: :class:`DigestDiffBaseStorage`), and starting the operator.

No logic of its own besides the diff base. No handler here makes kopf add a finalizer (no on.delete, no daemons, no
timers): deleting a TableRefresh never waits for the operator, and its CronJob goes by garbage
collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import kopf

from tablerefresh.controller.kube import ApiKube, KubeError, load_config
from tablerefresh.controller.policy.admission import DEFAULT_POLICY, OperatorPolicy
from tablerefresh.controller.policy.cronjob import MANAGED_BY, MANAGED_BY_LABEL
from tablerefresh.controller.policy.jobs import ANNOTATION as RUN_NOW_ANNOTATION
from tablerefresh.controller.runtime import metrics
from tablerefresh.controller.runtime.controller import Controller
from tablerefresh.spec import GROUP, PLURAL, VERSION

RETRY_DELAY = 5.0
NAMESPACES_ENV = "TABLEREFRESH_NAMESPACES"


# kopf's diff base.

# kopf's diff base as a digest: what kopf needs to tell a change from a status write, without a copy
# of the whole spec in ``status`` (where ``kubectl describe`` showed the source query twice).
#
# kopf keeps the "essence" of the object it last handled (spec, labels, annotations) and compares the
# current one with it: none stored means a create, a difference an update, none a resume or nothing.
# The controller never reads the diff: reconcile is level-based, the whole object in. So the essence
# itself need not be kept, only its digest, in ``status.kopf.digest``:
#
# - the digest matches the current essence: :meth:`fetch` returns the current essence, kopf sees no
#   change (a status write, a restart: resume);
# - it does not (the spec, a label or an annotation changed): an empty essence, kopf sees an update;
# - no digest: nothing was handled yet, a create. An object last handled by an operator that kept the
#   whole essence (``status.kopf.diffbase``) is updated once, which writes its digest and removes that.
#
# The essence is built as kopf builds it, without extra fields: no handler here watches a field of
# the status (kopf adds those to the essence), so kopf's and :meth:`fetch`'s essences are the same.

FIELD = "digest"
LEGACY_FIELD = "diffbase"  # the whole essence, JSON-encoded, as kopf.StatusDiffBaseStorage kept it


def digest(essence: Mapping[str, Any]) -> str:
    encoded = json.dumps(essence, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(encoded.encode()).hexdigest()


def _kopf_status(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], (body.get("status") or {}).get("kopf") or {})


class DigestDiffBaseStorage(kopf.DiffBaseStorage):
    """The digest of the last handled essence, in ``status.kopf.digest`` (see the comment above)."""

    def handled(self, body: Mapping[str, Any]) -> bool:
        """Whether kopf has handled the object as it is now (its spec, labels and annotations)."""
        stored = _kopf_status(body).get(FIELD)
        return stored is not None and stored == digest(self.build(body=kopf.Body(cast(kopf.RawBody, dict(body)))))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        status = _kopf_status(body)
        if status.get(FIELD) is None and status.get(LEGACY_FIELD) is None:
            return None  # never handled: a create
        current = self.build(body=body)
        if status.get(FIELD) == digest(current):
            return current  # unchanged
        return cast(kopf.BodyEssence, {})  # changed since, or kept the old way: an update

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        stanza = patch.setdefault("status", {}).setdefault("kopf", {})
        stanza[FIELD] = digest(essence)
        if _kopf_status(body).get(LEGACY_FIELD) is not None:
            stanza[LEGACY_FIELD] = None  # a merge patch: removed


# Handlers.


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


# Settings.


def operator_settings(*, standalone: bool, workers: int = 16) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf's handler progress and the digest of the last handled spec live in status, declared in
    # the CRD, so the controller never annotates a TableRefresh (a GitOps tool would see it as drift).
    # A digest, not a copy of the spec: kubectl describe shows the spec once (see DigestDiffBaseStorage).
    settings.persistence.progress_storage = kopf.StatusProgressStorage(
        field="status.kopf.progress", touch_field="status.kopf.dummy"
    )
    settings.persistence.diffbase_storage = DigestDiffBaseStorage()
    # No handler needs a finalizer (no on.delete, no daemons or timers), so kopf adds none; the
    # name is ours in case a future handler does, never kopf's default.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # The status writer posts the controller's Events on transitions; kopf's per-handler ones only on trouble.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = standalone
    settings.execution.max_workers = workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


# Start-up.


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
    policy: OperatorPolicy = DEFAULT_POLICY


# The client libraries of a health check. Their warnings repeat, in their words, a failure the
# operator reports once in its own (urllib3's "Retrying (...)" with a query_id in the URL, then
# clickhouse-connect's "Unexpected Http Driver Exception"), so they belong in the debug log.
LIBRARIES = ("urllib3", "clickhouse_connect")


class AsDebug(logging.Handler):
    """Passes a library's records on to the root logger's handlers, its warnings and below as debug
    records: shown with ``--verbose``, never at INFO. Its errors pass on as they are."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        root = logging.getLogger()
        if root.isEnabledFor(record.levelno):
            root.handle(record)


def quiet_chatter() -> None:
    """At INFO, log what the controller changes, not every watch event and probe it handles; the
    client libraries' warnings only in the debug log (see ``AsDebug``)."""
    root = logging.getLogger()
    if root.getEffectiveLevel() >= logging.INFO:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in LIBRARIES:
        library = logging.getLogger(name)
        if not any(isinstance(h, AsDebug) for h in library.handlers):
            library.addHandler(AsDebug())
        library.propagate = False
        # Not at debug: drop their warnings where they are made, rather than demote then drop them.
        library.setLevel(logging.DEBUG if root.isEnabledFor(logging.DEBUG) else logging.ERROR)


def run_operator(options: Options) -> None:
    """Start the operator: which namespaces, which endpoints, then hand over to kopf."""
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
