"""Events for conditions turning bad or recovering. Pure: statuses before and after in, Events out.

One Event per transition, never one per check: the previous status comes from the object itself,
so a restart does not repeat them. Unknown (the check could not run) is no news either way: a
condition that was False, went Unknown while ClickHouse was away and comes back False posts nothing,
which is why the caller passes the last known status in place of Unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tablerefresh.controller.outcome import Event

# The condition types with Events of their own: the Warning reason when it turns False, the Normal
# reason and the opening words of its message when it is True again.
WARNING_REASONS: dict[str, str] = {
    "Fresh": "DataStale",
    "DuplicateFree": "DuplicatesDetected",
    "Complete": "SliceTooSmall",
    "NoStuckMutations": "MutationStuck",
    "LastRunSucceeded": "RefreshFailed",
    "ClickHouseReachable": "ClickHouseUnreachable",
}
RECOVERIES: dict[str, tuple[str, str]] = {
    "Fresh": ("DataFresh", "The data is fresh again"),
    "DuplicateFree": ("DuplicatesResolved", "Duplicates are back under the threshold"),
    "Complete": ("SliceComplete", "The slice is complete again"),
    "NoStuckMutations": ("MutationsClear", "No mutation is stuck any more"),
    "LastRunSucceeded": ("RefreshSucceeded", "A refresh succeeded again"),
    "ClickHouseReachable": ("ClickHouseReachable", "ClickHouse is reachable again"),
}


def known_statuses(conditions: Iterable[Mapping[str, Any]], last_known: Mapping[str, str]) -> dict[str, str]:
    """Each condition's status, with Unknown replaced by the last True/False seen, when there was one."""
    out: dict[str, str] = {}
    for condition in conditions:
        kind, status = str(condition.get("type")), str(condition.get("status"))
        out[kind] = last_known.get(kind, status) if status == "Unknown" else status
    return out


def condition_events(before: Mapping[str, str], after: Iterable[Mapping[str, Any]]) -> list[Event]:
    """A Warning for each condition now False that was not (absent counts as not), a Normal for each
    now True that was False. ``before`` maps type to status (see :func:`known_statuses`)."""
    out: list[Event] = []
    for condition in after:
        kind, status = str(condition.get("type")), condition.get("status")
        message = str(condition.get("message") or "")
        was = before.get(kind)
        if kind not in WARNING_REASONS or status == was:
            continue
        if status == "False":
            out.append(Event("Warning", WARNING_REASONS[kind], message or kind))
        elif status == "True" and was == "False":
            reason, words = RECOVERIES[kind]
            out.append(Event("Normal", reason, f"{words}: {message}" if message else words))
    return out
