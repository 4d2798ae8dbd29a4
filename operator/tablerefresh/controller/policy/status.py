"""The status: every condition type, Ready, who writes which fields, and the one rule of a write. Pure.

Four sources write a TableRefresh's status, each with server-side apply under its own field
manager: the reconciler, the health check, the Job watch and run-now. Conditions merge by type, so
each source owns its own and leaves the others'. Every write goes through :func:`status_change`:

- a condition's ``lastTransitionTime`` moves only when its status changes (:func:`settle`);
- ``Ready`` is recomputed from every condition the object has (:func:`summarize_ready`), by
  whichever source writes;
- the write is needed only when it changes something the source owns;
- Events mark transitions, never steady states (:func:`condition_events`).

The sources, and the Events each condition posts, are tables here; the runtime's ``StatusWriter``
applies the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tablerefresh.contract import Reason
from tablerefresh.text import printable

Status = Literal["True", "False", "Unknown"]

# Every condition type. The reconciler's:
CRONJOB_READY = "CronJobReady"
CREDENTIALS_FOUND = "CredentialsFound"
# The health check's:
CLICKHOUSE_REACHABLE = "ClickHouseReachable"
FRESH = "Fresh"
DUPLICATE_FREE = "DuplicateFree"
COMPLETE = "Complete"
NO_STUCK_MUTATIONS = "NoStuckMutations"
AUDITS_PASSING = "AuditsPassing"
HEALTH_CONDITIONS = (FRESH, DUPLICATE_FREE, COMPLETE, NO_STUCK_MUTATIONS, AUDITS_PASSING)
# The Job watch's:
LAST_RUN_SUCCEEDED = "LastRunSucceeded"
# Their summary, which every source recomputes:
READY = "Ready"
# kstatus's abnormal-true conditions (sigs.k8s.io/cli-utils/pkg/kstatus), the reconciler's: True
# while it has not caught up with the spec, and True when the spec cannot be acted on without a person.
RECONCILING = "Reconciling"
STALLED = "Stalled"

# What Ready summarizes, in the order that picks its reason; absent ones are skipped.
READY_INPUTS: tuple[str, ...] = (
    CRONJOB_READY,
    CREDENTIALS_FOUND,
    CLICKHOUSE_REACHABLE,
    FRESH,
    DUPLICATE_FREE,
    COMPLETE,
    NO_STUCK_MUTATIONS,
    AUDITS_PASSING,
    LAST_RUN_SUCCEEDED,
)


@dataclass(frozen=True)
class Observation:
    """A condition as a source sees it now, before lastTransitionTime is settled."""

    type: str
    status: Status
    reason: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", printable(self.message))


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", printable(self.message))


@dataclass(frozen=True)
class Source:
    """One writer of the status: its field manager and the top-level fields it owns."""

    name: str
    manager: str
    fields: frozenset[str]
    conditions: bool = True  # it writes conditions, and so Ready


RECONCILER = Source("reconcile", "tablerefresh", frozenset({"observedGeneration", "cronJobRef", "lastScheduleTime"}))
HEALTH_CHECK = Source("health", "tablerefresh-health", frozenset({"health"}))
JOB_WATCH = Source(
    "runs",
    "tablerefresh-runs",
    frozenset({"active", "lastRun", "recentRuns", "lastSuccessfulRunTime", "lastFailureTime"}),
)
RUN_NOW = Source("run-now", "tablerefresh-run-now", frozenset({"runNow"}), conditions=False)

# Events. The conditions with Events of their own: the Warning reason when one turns False, the
# Normal reason and the opening words of its message when it is True again.
WARNING_REASONS: dict[str, str] = {
    FRESH: "DataStale",
    DUPLICATE_FREE: "DuplicatesDetected",
    COMPLETE: "SliceTooSmall",
    NO_STUCK_MUTATIONS: "MutationStuck",
    AUDITS_PASSING: "AuditFailed",
    LAST_RUN_SUCCEEDED: Reason.FAILED,
    CLICKHOUSE_REACHABLE: "ClickHouseUnreachable",
}
RECOVERIES: dict[str, tuple[str, str]] = {
    FRESH: ("DataFresh", "The data is fresh again"),
    DUPLICATE_FREE: ("DuplicatesResolved", "Duplicates are back under the threshold"),
    COMPLETE: ("SliceComplete", "The slice is complete again"),
    NO_STUCK_MUTATIONS: ("MutationsClear", "No mutation is stuck any more"),
    AUDITS_PASSING: ("AuditsPassing", "Every audit passes again"),
    LAST_RUN_SUCCEEDED: ("RefreshSucceeded", "A refresh succeeded again"),
    CLICKHOUSE_REACHABLE: ("ClickHouseReachable", "ClickHouse is reachable again"),
}
# A failed run whose reason has a Warning of its own, instead of RefreshFailed.
RUN_WARNING_REASONS = frozenset({Reason.AUDIT_FAILED})
# The reconciler's conditions speak through Ready instead (see condition_events).
THROUGH_READY = frozenset({CRONJOB_READY, CREDENTIALS_FOUND})


# Times as Kubernetes writes them.


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes metav1.Time."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Conditions and Ready.


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
    """A source's own conditions plus Ready, settled against what the object has now.

    Returns only the source's conditions and Ready (what it applies); conditions other sources
    own are read for Ready but left to them.
    """
    previous = by_type(current)
    mine = [settle(o, previous.get(o.type), generation=generation, now=now) for o in observations]
    everything = {**previous, **{c["type"]: c for c in mine}}
    ready = summarize_ready(everything.values())
    return [*mine, settle(ready, previous.get(READY), generation=generation, now=now)]


def overlay(status: Mapping[str, Any], applied: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``status`` (as the watch delivered it) with what each source applied since on top, oldest first.

    The watch may lag behind writes made a moment ago; settling against a stale copy would move
    lastTransitionTime. Top-level fields replace; conditions merge by type, so Ready is whichever
    source set it last.
    """
    out = dict(status)
    conditions = {str(c.get("type")): c for c in status.get("conditions") or []}
    for fields in applied:
        out.update({k: v for k, v in fields.items() if k != "conditions"})
        conditions.update({str(c["type"]): c for c in fields.get("conditions") or []})
    if conditions:
        out["conditions"] = list(conditions.values())
    return out


# Events.


def remember(last_known: Mapping[str, str], conditions: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``last_known`` updated with every condition now True or False (Unknown leaves it as it was)."""
    out = dict(last_known)
    for condition in conditions:
        if condition.get("status") in ("True", "False"):
            out[str(condition["type"])] = str(condition["status"])
    return out


def known_statuses(conditions: Iterable[Mapping[str, Any]], last_known: Mapping[str, str]) -> dict[str, str]:
    """Each condition's status, with Unknown replaced by the last True/False seen, when there was one."""
    out: dict[str, str] = {}
    for condition in conditions:
        kind, status = str(condition.get("type")), str(condition.get("status"))
        out[kind] = last_known.get(kind, status) if status == "Unknown" else status
    return out


def condition_events(
    previous: Sequence[Mapping[str, Any]], written: Iterable[Mapping[str, Any]], last_known: Mapping[str, str]
) -> list[Event]:
    """The Events of one write (``written``: the conditions it sets, Ready included): one per
    transition, never one per check.

    - A condition with Events of its own (``WARNING_REASONS``) posts a Warning when it turns False
      (absent counts as not False) and a Normal when it is True after being False.
    - The reconciler's conditions (``THROUGH_READY``) speak through Ready: a write of theirs that
      turns Ready False on one of them posts a Warning named after Ready's reason, and one that turns
      Ready True after that posts ``Recovered``.
    - Unknown (the check could not run) is no news either way: False, then Unknown while ClickHouse
      was away, then False again posts nothing, which is why ``last_known`` stands in for Unknown.

    The statuses before come from the object itself, so a restart repeats nothing.
    """
    before = known_statuses(previous, last_known)
    old = by_type(previous)
    conditions = list(written)
    out: list[Event] = []
    for condition in conditions:
        kind, status = str(condition.get("type")), condition.get("status")
        if kind == READY:
            out.extend(_ready_events(old.get(READY), condition, previous, conditions))
            continue
        was = before.get(kind)
        if kind not in WARNING_REASONS or status == was:
            continue
        message = str(condition.get("message") or "")
        if status == "False":
            reason = str(condition.get("reason"))
            if kind != LAST_RUN_SUCCEEDED or reason not in RUN_WARNING_REASONS:
                reason = WARNING_REASONS[kind]
            out.append(Event("Warning", reason, message or kind))
        elif status == "True" and was == "False":
            reason, words = RECOVERIES[kind]
            out.append(Event("Normal", reason, f"{words}: {message}" if message else words))
    return out


def _through_ready(ready: Mapping[str, Any] | None, conditions: Iterable[Mapping[str, Any]]) -> bool:
    """Whether Ready is what it is because of one of the reconciler's conditions."""
    return ready is not None and any(
        c.get("type") in THROUGH_READY
        and (c.get("status"), c.get("reason")) == (ready.get("status"), ready.get("reason"))
        for c in conditions
    )


def _ready_events(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    previous: Iterable[Mapping[str, Any]],
    written: Sequence[Mapping[str, Any]],
) -> list[Event]:
    was = (before or {}).get("status"), (before or {}).get("reason")
    if (after.get("status"), after.get("reason")) == was or not any(c.get("type") in THROUGH_READY for c in written):
        return []
    if after.get("status") == "False" and _through_ready(after, written):
        return [Event("Warning", str(after["reason"]), str(after["message"]))]
    if after.get("status") == "True" and was[0] == "False" and _through_ready(before, previous):
        return [Event("Normal", "Recovered", f"Ready again: {after['message']}")]
    return []


# One write.


@dataclass(frozen=True)
class StatusChange:
    status: dict[str, Any]  # what the source applies: its fields, and its conditions with Ready
    changed: bool  # whether applying it changes anything the source owns
    events: list[Event]  # to post once it is applied
    last_known: dict[str, str]  # the last True/False of every condition, after this write


def status_change(
    current: Mapping[str, Any],
    source: Source,
    fields: Mapping[str, Any],
    observations: Sequence[Observation] = (),
    *,
    generation: int,
    now: datetime,
    last_known: Mapping[str, str] | None,
    events: Sequence[Event] = (),
) -> StatusChange:
    """What a source writes, given the status every source has left (``current``).

    ``last_known`` is None before the first write since start: what the object says is all there is.
    ``events`` are the source's own (not transitions), posted first.
    """
    previous = list(current.get("conditions") or [])
    status = dict(fields)
    if source.conditions:
        status["conditions"] = merge(previous, observations, generation=generation, now=now)
    conditions = status.get("conditions") or []
    known = remember({}, previous) if last_known is None else dict(last_known)
    return StatusChange(
        status=status,
        changed=_changes(current, source, status),
        events=[*events, *condition_events(previous, conditions, known)],
        last_known=remember(known, conditions),
    )


def _changes(current: Mapping[str, Any], source: Source, status: Mapping[str, Any]) -> bool:
    have = by_type(current.get("conditions") or [])
    if any(have.get(c["type"]) != c for c in status.get("conditions") or []):
        return True
    if any(k not in current or current[k] != v for k, v in status.items() if k != "conditions"):
        return True
    # A field the source owns but no longer sets must go: only an apply without it removes it.
    return bool((source.fields - status.keys()) & current.keys())
