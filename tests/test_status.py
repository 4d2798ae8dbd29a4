"""The one rule of a status write (policy.status): conditions, Ready, Events, and what each source
owns. Pure: plain data in and out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from tablerefresh.controller.policy.cronjob import (
    Facts,
    Secret,
    reconciler_conditions,
    reconciler_events,
    reconciler_fields,
)
from tablerefresh.controller.policy.status import (
    RECONCILER,
    Event,
    Observation,
    StatusChange,
    condition_events,
    known_statuses,
    merge,
    overlay,
    settle,
    status_change,
    summarize_ready,
)
from tests.controller_fakes import T0, cond
from tests.harness.kube import condition


def decide(current: Mapping[str, Any], facts: Facts, *, now: datetime) -> StatusChange:
    """What a reconcile that learned ``facts`` writes, given the status as it is."""
    return status_change(
        current,
        RECONCILER,
        reconciler_fields(current, facts),
        reconciler_conditions(facts),
        generation=facts.generation,
        now=now,
        last_known=None,
        events=reconciler_events(facts),
    )




# Conditions.


def test_last_transition_time_moves_only_on_a_status_change() -> None:
    first = settle(Observation("X", "True", "Ok", "fine"), None, generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    same = settle(Observation("X", "True", "StillOk", "fine"), first, generation=2, now=later)
    flipped = settle(Observation("X", "False", "Bad", "broken"), first, generation=2, now=later)
    assert first["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert same["lastTransitionTime"] == first["lastTransitionTime"]
    assert (same["reason"], same["observedGeneration"]) == ("StillOk", 2)
    assert flipped["lastTransitionTime"] == "2026-01-01T12:05:00Z"


def test_ready_summarizes_false_before_unknown_before_true() -> None:
    def c(type_: str, status: str, reason: str = "R") -> dict[str, str]:
        return {"type": type_, "status": status, "reason": reason, "message": type_}

    assert summarize_ready([c("CronJobReady", "True"), c("CredentialsFound", "True")]).status == "True"
    assert summarize_ready([c("CronJobReady", "True"), c("Fresh", "False", "DataStale")]).reason == "DataStale"
    assert summarize_ready([c("CronJobReady", "Unknown"), c("Fresh", "False", "DataStale")]).status == "False"
    assert summarize_ready([c("CronJobReady", "Unknown")]).status == "Unknown"
    assert summarize_ready([c("SomethingElse", "False")]).status == "Unknown"  # not an input of Ready


def test_merge_returns_the_writers_conditions_and_ready_only() -> None:
    others = [{"type": "Fresh", "status": "False", "reason": "DataStale", "message": "old", "lastTransitionTime": "x"}]
    merged = merge(others, [Observation("CronJobReady", "True", "Applied", "ok")], generation=1, now=T0)
    assert [c["type"] for c in merged] == ["CronJobReady", "Ready"]
    assert merged[1]["status"] == "False" and merged[1]["reason"] == "DataStale"


def test_written_overlays_fields_and_merges_conditions_newest_last() -> None:
    a = {"x": 1, "conditions": [cond("A", "True"), cond("Ready", "True")]}
    b = {"y": 2, "conditions": [cond("B", "False"), cond("Ready", "False")]}
    view = overlay({"x": 0, "z": 3, "conditions": [cond("A", "False"), cond("C", "True")]}, [a, b])
    assert (view["x"], view["y"], view["z"]) == (1, 2, 3)
    statuses = {c["type"]: c["status"] for c in view["conditions"]}
    assert statuses == {"A": "True", "B": "False", "C": "True", "Ready": "False"}
    a_again = {"x": 5, "conditions": [cond("Ready", "True")]}
    assert next(c for c in overlay({}, [b, a_again])["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert overlay({"x": 0}, []) == {"x": 0}


# The reconciler's writes.


def test_applied_and_secret_found_is_ready() -> None:
    facts = Facts(3, "trades", secret=Secret.FOUND, secret_name="ch", created=True, cronjob={"metadata": {}})
    outcome = decide({}, facts, now=T0)
    assert condition(outcome.status, "Ready")["status"] == "True"
    assert outcome.status["observedGeneration"] == 3
    assert [e.reason for e in outcome.events] == ["CronJobCreated"]


def test_missing_secret_is_not_ready_with_a_reason_and_one_warning() -> None:
    facts = Facts(3, "trades", secret=Secret.MISSING, secret_name="ch", cronjob={"metadata": {}})
    outcome = decide({}, facts, now=T0)
    ready = condition(outcome.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "SecretNotFound")]
    again = decide(outcome.status, facts, now=T0 + timedelta(minutes=1))
    assert again.events == []
    assert not again.changed
    fixed = decide(outcome.status, Facts(3, "trades", secret=Secret.FOUND, secret_name="ch"), now=T0)
    assert [(e.type, e.reason) for e in fixed.events] == [("Normal", "Recovered")]


def test_invalid_spec_conflict_and_rejected_apply_each_name_their_reason() -> None:
    cases = {
        "InvalidSpec": Facts(1, "t", spec_error="spec.schedule: not a valid cron schedule"),
        "CronJobConflict": Facts(1, "t", conflict="CronJob t is controlled by Deployment x", secret=Secret.FOUND),
        "ApplyFailed": Facts(1, "t", apply_error="spec.timeZone: Invalid value", secret=Secret.FOUND),
    }
    for reason, facts in cases.items():
        outcome = decide({}, facts, now=T0)
        assert condition(outcome.status, "CronJobReady")["reason"] == reason
        assert condition(outcome.status, "Ready")["status"] == "False"
        assert "cronJobRef" not in outcome.status
        # kstatus: none of these resolves itself; each needs a person, and the reconciler is done.
        assert (condition(outcome.status, "Stalled")["status"], condition(outcome.status, "Stalled")["reason"]) == (
            "True",
            reason,
        )
        assert condition(outcome.status, "Reconciling")["status"] == "False"


def test_status_carries_the_cronjob_ref_and_its_last_schedule_time() -> None:
    cronjob = {
        "metadata": {"name": "trades", "namespace": "ns", "uid": "u1"},
        "status": {"lastScheduleTime": "2026-01-01T06:15:00Z"},
    }
    status = decide({}, Facts(2, "trades", secret=Secret.FOUND, cronjob=cronjob), now=T0).status
    assert status["cronJobRef"] == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "trades",
        "namespace": "ns",
        "uid": "u1",
    }
    assert status["lastScheduleTime"] == "2026-01-01T06:15:00Z"


# Events.


def test_events_once_per_transition_with_the_issue_reasons() -> None:
    bad = [cond("Fresh", "False", "newest is 50h old"), cond("DuplicateFree", "False"), cond("Ready", "False")]
    first = condition_events([], bad, {})  # absent -> False is turning bad
    assert [(e.type, e.reason) for e in first] == [("Warning", "DataStale"), ("Warning", "DuplicatesDetected")]
    assert first[0].message == "newest is 50h old"
    assert condition_events(bad, bad, {}) == []  # steady: nothing
    good = [cond("Fresh", "True", "newest is 0.1h old"), cond("DuplicateFree", "True")]
    recovered = condition_events([cond("Fresh", "False"), cond("DuplicateFree", "Unknown")], good, {})
    assert [(e.type, e.reason) for e in recovered] == [("Normal", "DataFresh")]
    assert recovered[0].message == "The data is fresh again: newest is 0.1h old"
    for kind, reason in [
        ("Complete", "SliceTooSmall"),
        ("NoStuckMutations", "MutationStuck"),
        ("LastRunSucceeded", "RefreshFailed"),
        ("ClickHouseReachable", "ClickHouseUnreachable"),
        ("AuditsPassing", "AuditFailed"),
    ]:
        assert [e.reason for e in condition_events([cond(kind, "True")], [cond(kind, "False")], {})] == [reason]
    # A run that failed an audit says so in its Warning's reason.
    audit = {**cond("LastRunSucceeded", "False", "audit x: 3 failing row(s)"), "reason": "AuditFailed"}
    (event,) = condition_events([cond("LastRunSucceeded", "True")], [audit], {})
    assert (event.type, event.reason, event.message) == ("Warning", "AuditFailed", "audit x: 3 failing row(s)")
    assert condition_events([], [cond("CronJobReady", "False")], {}) == []  # speaks through Ready


def test_unknown_in_between_is_no_news() -> None:
    """False, then Unknown while ClickHouse is away, then False again: no second Warning."""
    last_known = {"Fresh": "False"}
    before = [cond("Fresh", "Unknown")]
    assert condition_events(before, [cond("Fresh", "False")], last_known) == []
    assert [e.reason for e in condition_events(before, [cond("Fresh", "True")], last_known)] == ["DataFresh"]
    assert known_statuses([cond("Fresh", "Unknown")], {}) == {"Fresh": "Unknown"}


def test_the_reconciler_leaves_the_health_checks_events_to_it() -> None:
    """Ready turning False on Fresh (the health check's) must not also post a Ready-based Warning."""
    stale = {"type": "Fresh", "status": "False", "reason": "DataStale", "message": "old"}
    ready_true = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok"}
    facts = Facts(3, "trades", secret=Secret.FOUND, secret_name="ch", cronjob={"metadata": {}})
    # Secret missing, then found while the data is stale: Ready goes (False, SecretNotFound) -> (False, DataStale).
    missing = decide({"conditions": [stale, ready_true]}, Facts(3, "trades", secret=Secret.MISSING), now=T0)
    assert [e.reason for e in missing.events] == ["SecretNotFound"]
    found = decide({"conditions": [stale, *missing.status["conditions"]]}, facts, now=T0)
    assert found.events == []


def test_control_characters_never_reach_a_condition_or_an_event() -> None:
    """A server's error text may carry ESC sequences; kubectl, the plugin and logs would play them."""
    hostile = "Code: 60. \x1b[2J\x1b]0;owned\x07table \x9bgone\x00"
    observation = Observation("Fresh", "False", "DataStale", hostile)
    event = Event("Warning", "DataStale", hostile)
    for text in (observation.message, event.message):
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text), repr(text)
        assert "Code: 60." in text and "table" in text and "gone" in text
