"""One status writer besides the reconciler (the health check, the Job watch): its own fields and
conditions, applied under its own field manager, Ready recomputed, Events on transitions.

Synchronous API calls: the caller runs :meth:`StatusWriter.write` in a worker thread, holding the
object's lock so that no two writers compute Ready from the same old status at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tablerefresh.controller.conditions import Observation, by_type, merge
from tablerefresh.controller.kube import Kube, KubeError
from tablerefresh.controller.outcome import Event
from tablerefresh.controller.transitions import condition_events, known_statuses
from tablerefresh.controller.written import Written

log = logging.getLogger(__name__)


def changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether applying ``desired`` would change anything the writer owns in ``current``."""
    have = by_type(current.get("conditions") or [])
    for condition in desired.get("conditions") or []:
        if have.get(condition["type"]) != condition:
            return True
    return any(current.get(k) != v for k, v in desired.items() if k != "conditions")


class StatusWriter:
    def __init__(
        self,
        kube: Kube,
        written: Written,
        manager: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kube = kube
        self._written = written
        self._manager = manager
        self._clock = clock
        # uid -> condition type -> the last True/False this writer saw (see transitions.known_statuses).
        self._known: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def current(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The object's status as every writer has left it."""
        return self._written.overlay(str(body["metadata"]["uid"]), body.get("status") or {})

    def write(
        self, body: Mapping[str, Any], fields: Mapping[str, Any], observations: Sequence[Observation]
    ) -> list[Event] | None:
        """Apply ``fields`` and the conditions observed; return the Events posted (None: object gone)."""
        meta = body["metadata"]
        uid = str(meta["uid"])
        current = self.current(body)
        previous = current.get("conditions") or []
        conditions = merge(previous, observations, generation=int(meta.get("generation") or 0), now=self._clock())
        status = {**fields, "conditions": conditions}
        if changed(current, status):
            try:
                self._kube.apply_status(meta["namespace"], meta["name"], status, manager=self._manager)
            except KubeError as exc:
                if exc.status == 404:
                    return None  # deleted meanwhile
                raise
        self._written.record(uid, self._manager, status)
        events = condition_events(self._before(uid, previous), conditions)
        for event in events:
            try:
                self._kube.post_event(body, event.type, event.reason, event.message)
            except KubeError as exc:  # best effort: the status already says it
                log.warning("%s/%s: event %s not posted: %s", meta["namespace"], meta["name"], event.reason, exc)
        self._remember(uid, conditions)
        return events

    def forget(self, uid: str) -> None:
        with self._lock:
            self._known.pop(uid, None)

    def _before(self, uid: str, previous: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        with self._lock:
            if uid not in self._known:  # first write since start: what the object says is all we know
                self._known[uid] = {}
                self._remember_locked(uid, previous)
            return known_statuses(previous, self._known[uid])

    def _remember(self, uid: str, conditions: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            self._remember_locked(uid, conditions)

    def _remember_locked(self, uid: str, conditions: Sequence[Mapping[str, Any]]) -> None:
        known = self._known.setdefault(uid, {})
        for condition in conditions:
            if condition.get("status") in ("True", "False"):
                known[str(condition["type"])] = str(condition["status"])
