"""What a reconcile found -> the status to write and the Events to post. Pure functions.

Kept apart from the loop so every branch (bad spec, missing Secret, foreign CronJob, rejected
apply) is a unit test on plain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tablerefresh.controller.conditions import (
    CREDENTIALS_FOUND,
    CRONJOB_READY,
    READY,
    Observation,
    by_type,
    merge,
)


class Secret(StrEnum):
    FOUND = "Found"
    MISSING = "Missing"
    NOT_CONFIGURED = "NotConfigured"
    UNCHECKED = "Unchecked"  # the spec could not be read, or the check failed


@dataclass(frozen=True)
class Facts:
    """Everything the read and apply steps learned; nothing here is computed from the clock."""

    generation: int
    cronjob_name: str
    spec_error: str | None = None
    conflict: str | None = None
    apply_error: str | None = None
    secret: Secret = Secret.UNCHECKED
    secret_name: str | None = None
    created: bool = False
    cronjob: Mapping[str, Any] | None = None  # as the API server returned it after the apply


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)


def observe(facts: Facts) -> list[Observation]:
    """The reconciler's own conditions, from the facts."""
    if facts.spec_error is not None:
        return [Observation(CRONJOB_READY, "False", "InvalidSpec", facts.spec_error)]
    if facts.conflict is not None:
        cronjob = Observation(CRONJOB_READY, "False", "CronJobConflict", facts.conflict)
    elif facts.apply_error is not None:
        cronjob = Observation(CRONJOB_READY, "False", "ApplyFailed", facts.apply_error)
    else:
        cronjob = Observation(CRONJOB_READY, "True", "Applied", f"CronJob {facts.cronjob_name} matches the spec")
    secret = {
        Secret.FOUND: Observation(CREDENTIALS_FOUND, "True", "SecretFound", f"Secret {facts.secret_name} exists"),
        Secret.NOT_CONFIGURED: Observation(CREDENTIALS_FOUND, "True", "NoSecretConfigured", "no credentials needed"),
        Secret.MISSING: Observation(
            CREDENTIALS_FOUND,
            "False",
            "SecretNotFound",
            f"Secret {facts.secret_name} does not exist in this namespace; refresh Jobs cannot start",
        ),
        Secret.UNCHECKED: Observation(CREDENTIALS_FOUND, "Unknown", "SecretUnchecked", "could not check the Secret"),
    }[facts.secret]
    return [cronjob, secret]


def _cronjob_status(cronjob: Mapping[str, Any] | None) -> dict[str, Any]:
    if not cronjob:
        return {}
    meta = cronjob.get("metadata", {})
    out: dict[str, Any] = {
        "cronJobRef": {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        }
    }
    last = (cronjob.get("status") or {}).get("lastScheduleTime")
    if last:
        out["lastScheduleTime"] = last
    return out


def desired_status(current: Mapping[str, Any], facts: Facts, *, now: datetime) -> dict[str, Any]:
    """The status fields the reconciler owns (applied with server-side apply; others untouched)."""
    conditions = merge(current.get("conditions") or [], observe(facts), generation=facts.generation, now=now)
    status: dict[str, Any] = {"observedGeneration": facts.generation, "conditions": conditions}
    if facts.spec_error is None and facts.conflict is None:
        status.update(_cronjob_status(facts.cronjob))
    elif current.get("cronJobRef") and facts.conflict is None:
        status["cronJobRef"] = current["cronJobRef"]  # an unreadable spec leaves the CronJob as it was
    return status


def owned_view(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the current status that ``desired`` would set, to skip writes that change nothing."""
    out = {k: current[k] for k in desired if k != "conditions" and k in current}
    mine = {c["type"] for c in desired.get("conditions", [])}
    out["conditions"] = [c for c in current.get("conditions") or [] if c.get("type") in mine]
    return out


def needs_write(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    wanted = dict(desired)
    have = owned_view(current, desired)
    key = lambda c: str(c.get("type"))  # noqa: E731
    wanted["conditions"] = sorted(desired.get("conditions", []), key=key)
    have["conditions"] = sorted(have["conditions"], key=key)
    # Fields the reconciler used to own but no longer sets must go too.
    dropped = ({"cronJobRef", "lastScheduleTime"} - desired.keys()) & current.keys()
    return wanted != have or bool(dropped)


def _caused_by(ready: Mapping[str, Any] | None, conditions: Sequence[Mapping[str, Any]], own: set[str]) -> bool:
    """Whether Ready is what it is because of one of the reconciler's own conditions."""
    return ready is not None and any(
        c.get("type") in own and (c.get("status"), c.get("reason")) == (ready.get("status"), ready.get("reason"))
        for c in conditions
    )


def events(previous: Sequence[Mapping[str, Any]], desired: Mapping[str, Any], facts: Facts) -> list[Event]:
    """Events for transitions only, never for a steady state, so a re-check does not repeat them.

    Only for Ready turning on the reconciler's own conditions: the health check and the Job watch
    post their own Events (DataStale, RefreshFailed, ...) for theirs.
    """
    out: list[Event] = []
    if facts.created and facts.cronjob is not None:
        out.append(Event("Normal", "CronJobCreated", f"Created CronJob {facts.cronjob_name}"))
    own = {str(c["type"]) for c in desired["conditions"]} - {READY}
    before = by_type(previous).get(READY)
    after = by_type(desired["conditions"])[READY]
    was = (before or {}).get("status"), (before or {}).get("reason")
    now = after["status"], after["reason"]
    if now == was:
        return out
    if after["status"] == "False" and _caused_by(after, desired["conditions"], own):
        out.append(Event("Warning", str(after["reason"]), str(after["message"])))
    elif after["status"] == "True" and was[0] == "False" and _caused_by(before, previous, own):
        out.append(Event("Normal", "Recovered", f"Ready again: {after['message']}"))
    return out


def decide(current: Mapping[str, Any], facts: Facts, *, now: datetime) -> Outcome:
    status = desired_status(current, facts, now=now)
    return Outcome(status=status, events=events(current.get("conditions") or [], status, facts))
