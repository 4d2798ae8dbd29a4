"""The latest copy of every TableRefresh the operator watches, fed by the watch stream.

It lets a CronJob event or the periodic resync find its TableRefresh without an API call, and is
where periodic per-object work (the health check) finds what to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]  # namespace, name


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body["metadata"]
    return str(meta["namespace"]), str(meta["name"])


class Store:
    def __init__(self) -> None:
        self._bodies: dict[Key, dict[str, Any]] = {}

    def put(self, body: Mapping[str, Any]) -> None:
        self._bodies[key_of(body)] = dict(body)

    def remove(self, key: Key) -> dict[str, Any] | None:
        return self._bodies.pop(key, None)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._bodies.get(key)

    def snapshot(self) -> list[dict[str, Any]]:
        return list(self._bodies.values())

    def __len__(self) -> int:
        return len(self._bodies)
