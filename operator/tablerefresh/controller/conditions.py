"""Conditions per the Kubernetes API conventions, and ``Ready`` as their summary. Pure functions.

Several writers own conditions on one TableRefresh (the reconciler now, the health check and the
Job watch later); each applies its own with server-side apply, and conditions merge by type.
``Ready`` is always recomputed from all of them with :func:`summarize_ready`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]

READY = "Ready"
CRONJOB_READY = "CronJobReady"
CREDENTIALS_FOUND = "CredentialsFound"

# The conditions Ready summarizes. The health issue adds Fresh, DuplicateFree, Complete,
# NoStuckMutations, LastRunSucceeded and ClickHouseReachable here; absent ones are skipped.
READY_INPUTS: tuple[str, ...] = (
    CRONJOB_READY,
    CREDENTIALS_FOUND,
    "ClickHouseReachable",
    "Fresh",
    "DuplicateFree",
    "Complete",
    "NoStuckMutations",
    "LastRunSucceeded",
)


@dataclass(frozen=True)
class Observation:
    """A condition as a writer sees it now, before lastTransitionTime is settled."""

    type: str
    status: Status
    reason: str
    message: str


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes metav1.Time."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def by_type(conditions: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in conditions}


def settle(
    observation: Observation, previous: Mapping[str, Any] | None, *, generation: int, now: datetime
) -> dict[str, Any]:
    """The condition to write: lastTransitionTime moves only when the status changes."""
    unchanged = previous is not None and previous.get("status") == observation.status
    since = str(previous["lastTransitionTime"]) if unchanged and previous else format_time(now)
    return {
        "type": observation.type,
        "status": observation.status,
        "reason": observation.reason,
        "message": observation.message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def summarize_ready(conditions: Iterable[Mapping[str, Any]]) -> Observation:
    """Ready is False if any input is False, Unknown if any is Unknown, True when all present are True."""
    known = by_type(conditions)
    inputs = [known[t] for t in READY_INPUTS if t in known]
    for wanted in ("False", "Unknown"):
        for condition in inputs:
            if condition.get("status") == wanted:
                return Observation(READY, wanted, str(condition["reason"]), str(condition.get("message", "")))
    if not inputs:
        return Observation(READY, "Unknown", "Reconciling", "not reconciled yet")
    return Observation(READY, "True", "Reconciled", "all conditions are met")


def merge(
    current: Iterable[Mapping[str, Any]],
    observations: Iterable[Observation],
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The writer's own conditions plus Ready, settled against what the object has now.

    Returns only the writer's conditions and Ready (what it applies); conditions other writers
    own are read for Ready but left to them.
    """
    previous = by_type(current)
    mine = [settle(o, previous.get(o.type), generation=generation, now=now) for o in observations]
    everything = {**previous, **{c["type"]: c for c in mine}}
    ready = summarize_ready(everything.values())
    return [*mine, settle(ready, previous.get(READY), generation=generation, now=now)]
