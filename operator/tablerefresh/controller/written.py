"""What each status writer last applied, per object: the newest status before the watch shows it.

Three writers share a TableRefresh's status (the reconciler, the health check, the Job watch), each
with its own field manager. A writer settles its conditions and recomputes Ready against the status
as it is now; the watch may lag behind writes made a moment ago, by itself or by another writer, so
every writer reads through :meth:`Written.overlay` and records what it applied.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any


class Written:
    def __init__(self) -> None:
        # uid -> manager -> (sequence, the status that manager applied last)
        self._by_uid: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
        self._sequence = itertools.count()
        self._lock = threading.Lock()  # writers run in worker threads

    def record(self, uid: str, manager: str, status: Mapping[str, Any]) -> None:
        with self._lock:
            self._by_uid.setdefault(uid, {})[manager] = (next(self._sequence), dict(status))

    def overlay(self, uid: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """``status`` (as the watch delivered it) with every writer's last apply on top, oldest first.

        Top-level fields replace; conditions merge by type, so Ready is whichever writer set it last.
        """
        with self._lock:
            applied = sorted(self._by_uid.get(uid, {}).values(), key=lambda entry: entry[0])
        out = dict(status)
        conditions = {str(c.get("type")): c for c in status.get("conditions") or []}
        for _, fields in applied:
            out.update({k: v for k, v in fields.items() if k != "conditions"})
            conditions.update({str(c["type"]): c for c in fields.get("conditions") or []})
        if conditions:
            out["conditions"] = list(conditions.values())
        return out

    def forget(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)
