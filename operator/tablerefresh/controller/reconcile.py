"""One reconcile of one TableRefresh, shaped like the kubebuilder CronJob tutorial:
read what exists, compute what should (pure), apply it, write status.

Level-based: the input is the whole object as it is now, never a diff, so a reconcile after a
restart, a missed event or a hand edit converges to the same single CronJob.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tablerefresh.controller.kube import Kube, KubeError
from tablerefresh.controller.naming import FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, cronjob_name
from tablerefresh.controller.outcome import Facts, Outcome, Secret, decide, needs_write
from tablerefresh.controller.render import render_cronjob
from tablerefresh.controller.written import Written
from tablerefresh.spec import API_VERSION, KIND, TableRefresh, format_validation_error

log = logging.getLogger(__name__)


def parse(body: Mapping[str, Any]) -> TableRefresh | str:
    """The model, or the validation problems as one line naming the fields."""
    document = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": body.get("metadata", {}),
        "spec": body.get("spec", {}),
    }
    try:
        return TableRefresh.model_validate(document)
    except ValidationError as exc:
        return format_validation_error(exc)


def foreign_owner(cronjob: Mapping[str, Any] | None, tr_name: str) -> str | None:
    """Why an existing CronJob of that name is not ours to overwrite, or None if it is ours.

    Ours: controlled by a TableRefresh of this name (its uid may be an older incarnation's),
    or last applied by our field manager with our label (someone stripped the ownerReference).
    """
    if cronjob is None:
        return None
    meta = cronjob.get("metadata", {})
    controller = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    if controller is not None:
        if controller.get("kind") == KIND and controller.get("name") == tr_name:
            return None
        return f"CronJob {meta.get('name')} is controlled by {controller.get('kind')} {controller.get('name')}"
    ours = (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY and any(
        f.get("manager") == FIELD_MANAGER for f in meta.get("managedFields") or []
    )
    return None if ours else f"CronJob {meta.get('name')} already exists and is not managed by tablerefresh"


class Reconciler:
    """Reconciles TableRefresh objects through a :class:`Kube`; synchronous, one object per call."""

    def __init__(
        self,
        kube: Kube,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        written: Written | None = None,
    ) -> None:
        self._kube = kube
        self._clock = clock
        # The status each object was last given, by uid, by every writer: the watch may not have
        # delivered it yet, and settling conditions against a stale copy would move lastTransitionTime.
        self._written = written or Written()
        # resourceVersion of each CronJob as our last apply left it: its watch event is our own echo.
        self._applied: dict[tuple[str, str], str] = {}

    def forget(self, namespace: str, name: str, uid: str) -> None:
        self._written.forget(uid)
        self._applied.pop((namespace, cronjob_name(name)), None)

    def is_echo(self, cronjob: Mapping[str, Any]) -> bool:
        """Whether this CronJob is exactly as our last apply left it (nothing to put back)."""
        meta = cronjob.get("metadata", {})
        version = self._applied.get((str(meta.get("namespace")), str(meta.get("name"))))
        return version is not None and version == meta.get("resourceVersion")

    def reconcile(self, body: Mapping[str, Any]) -> Outcome | None:
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None  # garbage collection takes the CronJob with it
        facts = self._observe_and_apply(body)
        current = self._current_status(meta["uid"], body.get("status") or {})
        outcome = decide(current, facts, now=self._clock())
        if needs_write(current, outcome.status):
            try:
                self._kube.apply_status(meta["namespace"], meta["name"], outcome.status)
            except KubeError as exc:
                if exc.status == 404:
                    return None  # deleted meanwhile
                raise
            self._written.record(meta["uid"], FIELD_MANAGER, outcome.status)
            ready = next(c for c in outcome.status["conditions"] if c["type"] == "Ready")
            log.info(
                "%s/%s: generation %s, Ready=%s (%s)",
                meta["namespace"],
                meta["name"],
                outcome.status["observedGeneration"],
                ready["status"],
                ready["reason"],
            )
        for event in outcome.events:
            try:
                self._kube.post_event(body, event.type, event.reason, event.message)
            except KubeError as exc:  # an Event is best effort; the status already says it
                log.warning("%s/%s: event %s not posted: %s", meta["namespace"], meta["name"], event.reason, exc)
        return outcome

    def _current_status(self, uid: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return self._written.overlay(uid, status)

    def _observe_and_apply(self, body: Mapping[str, Any]) -> Facts:
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        generation = int(meta.get("generation") or 0)
        target = cronjob_name(name)

        # Read.
        tr = parse(body)
        if isinstance(tr, str):
            return Facts(generation=generation, cronjob_name=target, spec_error=tr)
        existing = self._kube.get_cronjob(namespace, target)
        secret, secret_name = self._check_secret(tr)
        conflict = foreign_owner(existing, name)
        if conflict is not None:
            return Facts(generation, target, conflict=conflict, secret=secret, secret_name=secret_name)

        # Compute what should exist (pure), then apply it.
        desired = render_cronjob(tr, owner_uid=uid)
        try:
            applied = self._kube.apply_cronjob(desired)
        except KubeError as exc:
            if exc.transient:
                raise
            return Facts(generation, target, apply_error=str(exc), secret=secret, secret_name=secret_name)
        version = applied.get("metadata", {}).get("resourceVersion")
        if version:
            self._applied[(namespace, target)] = str(version)
        return Facts(
            generation,
            target,
            secret=secret,
            secret_name=secret_name,
            created=existing is None,
            cronjob=applied,
        )

    def _check_secret(self, tr: TableRefresh) -> tuple[Secret, str | None]:
        ref = tr.spec.clickhouse.credentials_secret
        if ref is None:
            return Secret.NOT_CONFIGURED, None
        try:
            found = self._kube.secret_exists(tr.metadata.namespace, ref.name)
        except KubeError as exc:
            log.warning("%s/%s: cannot check Secret %s: %s", tr.metadata.namespace, tr.metadata.name, ref.name, exc)
            return Secret.UNCHECKED, ref.name
        return (Secret.FOUND if found else Secret.MISSING), ref.name
