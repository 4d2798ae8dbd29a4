"""The status writer: every status write of every source goes through :meth:`StatusWriter.write`,
and its ``apply_status`` is the only call in the controller that writes the status subresource.

A write: overlay what each source applied on the status the watch delivered (the watch may lag
behind writes made a moment ago), let ``policy.status.status_change`` settle the source's conditions
and Ready and say whether anything changed, apply only then, and post the Events of the write.
What it remembers of an object is a :class:`StatusMemory` kept in the object's record.

Synchronous API calls: the caller runs a write in a worker thread, holding the object's lock, so
that no two sources compute Ready from the same old status at once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tablerefresh.controller.clock import SYSTEM_CLOCK, Clock
from tablerefresh.controller.kube import Kube, KubeError
from tablerefresh.controller.policy.status import (
    READY,
    Event,
    Observation,
    Source,
    StatusChange,
    overlay,
    status_change,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StatusMemory:
    """What the writer remembers of one object's status (kept in its record, gone with it).

    Each write replaces these dicts rather than changing them, so a reader on another thread (the
    metrics, on the event loop) always sees a whole one.
    """

    # source name -> (order of the write, what the source applied in it)
    applied: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    # condition type -> its last True/False; None until the first write since start
    last_known: dict[str, str] | None = None


class StatusWriter:
    def __init__(self, kube: Kube, clock: Clock = SYSTEM_CLOCK) -> None:
        self._kube = kube
        self._clock = clock
        self._order = itertools.count()

    def current(self, memory: StatusMemory, body: Mapping[str, Any]) -> dict[str, Any]:
        """The object's status as every source has left it."""
        applied = sorted(memory.applied.values(), key=lambda entry: entry[0])
        return overlay(body.get("status") or {}, (status for _, status in applied))

    def write(
        self,
        memory: StatusMemory,
        body: Mapping[str, Any],
        source: Source,
        fields: Mapping[str, Any],
        conditions: Sequence[Observation] = (),
        events: Sequence[Event] = (),
    ) -> StatusChange | None:
        """Apply ``source``'s ``fields`` and ``conditions`` if that changes anything, then post the
        write's Events. Returns what was decided; None when the object is gone."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        current = self.current(memory, body)
        change = status_change(
            current,
            source,
            fields,
            conditions,
            generation=int(meta.get("generation") or 0),
            now=self._clock.now(),
            last_known=memory.last_known,
            events=events,
        )
        if change.changed:
            try:
                self._kube.apply_status(namespace, name, change.status, manager=source.manager)
            except KubeError as exc:
                if exc.status == 404:
                    return None  # deleted meanwhile
                raise
        memory.applied = {**memory.applied, source.name: (next(self._order), change.status)}
        if change.changed:
            _log_ready(namespace, name, source, current, change.status)
        for event in change.events:
            try:
                self._kube.post_event(body, event.type, event.reason, event.message)
            except KubeError as exc:  # best effort: the status already says it
                log.warning("%s/%s: event %s not posted: %s", namespace, name, event.reason, exc)
        memory.last_known = change.last_known
        # Tests wait on this line to know a write is done, Events included.
        log.debug(
            "%s/%s: %s status %s, %d event(s)",
            namespace,
            name,
            source.name,
            "applied" if change.changed else "unchanged",
            len(change.events),
        )
        return change


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == READY), {})


def _log_ready(
    namespace: str, name: str, source: Source, before: Mapping[str, Any], after: Mapping[str, Any]
) -> None:
    """One INFO line whenever Ready's status (or the reason it gives) changes, whichever source's
    write changed it: the reconciler, a health check or a run, so the log never lags the object."""
    old, new = _ready(before), _ready(after)
    if not new or (old.get("status"), old.get("reason")) == (new.get("status"), new.get("reason")):
        return
    log.info(
        "%s/%s: Ready %s -> %s (%s: %s), from the %s",
        namespace,
        name,
        old.get("status", "unset"),
        new.get("status"),
        new.get("reason"),
        new.get("message"),
        _WRITERS.get(source.name, source.name),
    )


# How a source is named in that line.
_WRITERS = {"reconcile": "reconciler", "health": "health check", "runs": "Job watch"}
