"""The health check without an API server or ClickHouse: its pure parts, the status writer and the
scheduler on fakes."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from prometheus_client import REGISTRY

from tablerefresh.controller.conditions import Observation
from tablerefresh.controller.healthcheck import (
    Check,
    Failure,
    HealthResult,
    check_of,
    health_fields,
    observations,
    server_of,
)
from tablerefresh.controller.kube import KubeError
from tablerefresh.controller.metrics import ObjectMetrics
from tablerefresh.controller.outcome import Facts, Secret, decide
from tablerefresh.controller.probe import Prober
from tablerefresh.controller.samples import Samples, samples, schedule_period_seconds
from tablerefresh.controller.scheduler import Scheduler
from tablerefresh.controller.transitions import condition_events, known_statuses
from tablerefresh.controller.writer import StatusWriter
from tablerefresh.controller.written import Written
from tablerefresh.dataplane.errors import Unreachable
from tablerefresh.dataplane.health import HealthReport
from tablerefresh.spec import TableRefreshSpec
from tests import virtual_time
from tests.test_controller import T0, UID, tr_body
from tests.virtual_time import VirtualTimeLoop

SPEC = TableRefreshSpec.model_validate(tr_body()["spec"])


def report(**changes: Any) -> HealthReport:
    values: dict[str, Any] = {
        "checked_at": T0,
        "total_rows": 1000,
        "slice_rows": 200,
        "distinct_keys": 200,
        "newest_freshness": T0 - timedelta(hours=1),
        "stale_hours": 1.0,
        "slice_duplicates": 0,
        "table_duplicates": 0,
        "pending_mutations": 0,
        "oldest_mutation_age_seconds": None,
    }
    values.update(changes)
    return HealthReport(**values)


def by_type(found: list[Observation]) -> dict[str, Observation]:
    return {o.type: o for o in found}


# What the check writes.


def test_a_measured_report_is_judged_and_written_without_empty_fields() -> None:
    result = HealthResult(T0, report=report(newest_freshness=None, stale_hours=None, total_rows=0))
    judged = by_type(observations(result, SPEC))
    assert judged["ClickHouseReachable"].status == "True"
    assert judged["Fresh"].status == "False"  # no rows is not fresh
    health = health_fields(result)["health"]
    assert health["checkedAt"] == "2026-01-01T12:00:00Z" and health["totalRows"] == 0
    assert "newestFreshness" not in health and "staleHours" not in health and "error" not in health


@pytest.mark.parametrize(
    ("failure", "reachable", "reason"),
    [
        (Failure.UNREACHABLE, "False", "ClickHouseUnreachable"),
        (Failure.QUERY, "True", "HealthCheckFailed"),
        (Failure.CREDENTIALS, "Unknown", "CredentialsUnavailable"),
    ],
)
def test_a_check_that_could_not_measure_leaves_every_health_condition_unknown(
    failure: Failure, reachable: str, reason: str
) -> None:
    result = HealthResult(T0, failure=failure, error="it broke")
    judged = by_type(observations(result, SPEC))
    assert judged.pop("ClickHouseReachable").status == reachable
    assert set(judged) == {"Fresh", "DuplicateFree", "Complete", "NoStuckMutations"}
    assert all(o.status == "Unknown" and o.reason == reason for o in judged.values())
    # Only when it was tried and why: old figures beside a new checkedAt would pass for current.
    assert health_fields(result) == {"health": {"checkedAt": "2026-01-01T12:00:00Z", "error": "it broke"}}


def test_check_of_reads_the_interval_and_skips_what_cannot_be_checked() -> None:
    check = check_of(tr_body(healthCheck={"interval": "1m30s"}))
    assert check is not None
    assert (check.key, check.uid, check.generation, check.interval) == (("ns", "trades"), UID, 3, 90.0)
    assert check.server == "clickhouse://ch:8123"
    assert check_of(tr_body(schedule="61 * * * *")) is None
    deleting = tr_body()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert check_of(deleting) is None


def test_server_of_groups_by_host_not_by_credentials_or_database() -> None:
    assert server_of("https://u:p@ch.example:8443/db") == server_of("https://ch.example:8443/other")
    assert server_of("clickhouse://a:8123") != server_of("clickhouse://b:8123")
    assert server_of("chdb:///var/lib/x") == "chdb:///var/lib/x"


# Events.


def cond(type_: str, status: str, message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": "R", "message": message}


def test_events_once_per_transition_with_the_issue_reasons() -> None:
    bad = [cond("Fresh", "False", "newest is 50h old"), cond("DuplicateFree", "False"), cond("Ready", "False")]
    first = condition_events({}, bad)  # absent -> False is turning bad
    assert [(e.type, e.reason) for e in first] == [("Warning", "DataStale"), ("Warning", "DuplicatesDetected")]
    assert first[0].message == "newest is 50h old"
    assert condition_events({"Fresh": "False", "DuplicateFree": "False"}, bad) == []  # steady: nothing
    good = [cond("Fresh", "True", "newest is 0.1h old"), cond("DuplicateFree", "True")]
    recovered = condition_events({"Fresh": "False", "DuplicateFree": "Unknown"}, good)
    assert [(e.type, e.reason) for e in recovered] == [("Normal", "DataFresh")]
    assert recovered[0].message == "The data is fresh again: newest is 0.1h old"
    for kind, reason in [
        ("Complete", "SliceTooSmall"),
        ("NoStuckMutations", "MutationStuck"),
        ("LastRunSucceeded", "RefreshFailed"),
        ("ClickHouseReachable", "ClickHouseUnreachable"),
    ]:
        assert [e.reason for e in condition_events({kind: "True"}, [cond(kind, "False")])] == [reason]
    assert condition_events({}, [cond("CronJobReady", "False")]) == []  # the reconciler's own


def test_unknown_in_between_is_no_news() -> None:
    """False, then Unknown while ClickHouse is away, then False again: no second Warning."""
    last_known = {"Fresh": "False"}
    before = known_statuses([cond("Fresh", "Unknown")], last_known)
    assert condition_events(before, [cond("Fresh", "False")]) == []
    assert [e.reason for e in condition_events(before, [cond("Fresh", "True")])] == ["DataFresh"]
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


# The status writer.


class FakeKube:
    def __init__(self) -> None:
        self.applied: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.gone = False

    def apply_status(self, namespace: str, name: str, status: Mapping[str, Any], manager: str = "x") -> None:
        if self.gone:
            raise KubeError(404, "not found")
        self.applied.append((manager, copy.deepcopy(dict(status))))

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get((namespace, name))


def health(status: str) -> list[Observation]:
    return [Observation("ClickHouseReachable", "True", "Reachable", "ok"), Observation("Fresh", status, "R", "m")]


def test_the_writer_recomputes_ready_from_every_writer_and_posts_each_event_once() -> None:
    kube = FakeKube()
    written = Written()
    clock = iter(T0 + timedelta(seconds=i) for i in range(100))
    writer = StatusWriter(kube, written, "tablerefresh-health", clock=lambda: next(clock))  # type: ignore[arg-type]
    body = tr_body()
    # The reconciler has written CronJobReady=False; the watch has not delivered it yet.
    written.record(UID, "tablerefresh", {"conditions": [cond("CronJobReady", "False") | {"reason": "ApplyFailed"}]})

    assert writer.write(body, {"health": {"totalRows": 1}}, health("False")) is not None
    manager, status = kube.applied[-1]
    assert manager == "tablerefresh-health"
    assert [c["type"] for c in status["conditions"]] == ["ClickHouseReachable", "Fresh", "Ready"]
    assert status["conditions"][-1]["reason"] == "ApplyFailed"  # the other writer's condition counts
    assert [e[1] for e in kube.events] == ["DataStale"]

    writer.write(body, {"health": {"totalRows": 1}}, health("False"))
    assert len(kube.applied) == 1 and len(kube.events) == 1  # nothing new: no write, no Event
    writer.write(body, {"health": {"totalRows": 1}}, health("Unknown"))
    writer.write(body, {"health": {"totalRows": 1}}, health("False"))
    assert [e[1] for e in kube.events] == ["DataStale"]  # back from Unknown to False is no news
    writer.write(body, {"health": {"totalRows": 2}}, health("True"))
    assert [e[1] for e in kube.events] == ["DataStale", "DataFresh"]
    fresh = next(c for c in written.overlay(UID, {})["conditions"] if c["type"] == "Fresh")
    assert fresh["lastTransitionTime"] == "2026-01-01T12:00:04Z"

    kube.gone = True
    assert writer.write(body, {"health": {"totalRows": 3}}, health("True")) is None


def test_written_overlays_fields_and_merges_conditions_newest_last() -> None:
    written = Written()
    written.record("u", "a", {"x": 1, "conditions": [cond("A", "True"), cond("Ready", "True")]})
    written.record("u", "b", {"y": 2, "conditions": [cond("B", "False"), cond("Ready", "False")]})
    view = written.overlay("u", {"x": 0, "z": 3, "conditions": [cond("A", "False"), cond("C", "True")]})
    assert (view["x"], view["y"], view["z"]) == (1, 2, 3)
    statuses = {c["type"]: c["status"] for c in view["conditions"]}
    assert statuses == {"A": "True", "B": "False", "C": "True", "Ready": "False"}
    written.record("u", "a", {"x": 5, "conditions": [cond("Ready", "True")]})
    assert next(c for c in written.overlay("u", {})["conditions"] if c["type"] == "Ready")["status"] == "True"
    written.forget("u")
    assert written.overlay("u", {"x": 0}) == {"x": 0}


# The probe.


class FakeClient:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = False

    def query(self, *_: Any, **__: Any) -> Any:
        raise self.error

    def close(self) -> None:
        self.closed = True


def a_check(**spec_changes: Any) -> Check:
    check = check_of(tr_body(**spec_changes))
    assert check is not None
    return check


def test_the_probe_turns_every_failure_into_a_result() -> None:
    kube = FakeKube()
    check = a_check()
    missing = Prober(kube, connector=lambda *a, **k: None)(check)  # type: ignore[arg-type,return-value]
    assert missing.failure == Failure.CREDENTIALS and "Secret ch does not exist" in missing.error

    kube.secrets[("ns", "ch")] = {"username": "u"}
    partial = Prober(kube, connector=lambda *a, **k: None)(check)  # type: ignore[arg-type,return-value]
    assert partial.failure == Failure.CREDENTIALS and "no key password" in partial.error

    kube.secrets[("ns", "ch")] = {"username": "reader", "password": "s3cret"}
    seen: dict[str, Any] = {}

    def refuse(url: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Unreachable("cannot reach ClickHouse at clickhouse://ch:8123: refused")

    result = Prober(kube, connector=refuse, timeout=5)(check)
    assert result.failure == Failure.UNREACHABLE and "refused" in result.error
    assert (seen["username"], seen["password"], seen["send_receive_timeout"]) == ("reader", "s3cret", 5)

    broken = FakeClient(OperationalError("Error executing HTTP request"))
    lost = Prober(kube, connector=lambda *a, **k: broken)(check)
    assert lost.failure == Failure.UNREACHABLE and broken.closed
    renamed = FakeClient(DatabaseError("Code: 47. Unknown identifier ts\nStack trace: ..."))
    failed = Prober(kube, connector=lambda *a, **k: renamed)(check)
    assert failed.failure == Failure.QUERY and failed.error == "Code: 47. Unknown identifier ts"
    no_secret = Prober(kube, connector=lambda *a, **k: renamed)(a_check(clickhouse={"url": "clickhouse://ch:8123"}))
    assert no_secret.failure == Failure.QUERY


# Metrics from status.


def test_samples_follow_the_status() -> None:
    status = {
        "conditions": [cond("Ready", "True"), cond("Fresh", "False"), cond("Complete", "Unknown")],
        "health": {
            "checkedAt": "2026-01-01T12:00:00Z",
            "newestFreshness": "2026-01-01T10:30:00Z",
            "sliceRows": 200,
            "sliceDuplicates": 7,
            "tableDuplicates": 3,
        },
        "lastSuccessfulRunTime": "2026-01-01T11:00:00Z",
        "lastRun": {"durationSeconds": 12.5},
    }
    found = samples(status, SPEC)
    assert found.gauges == {
        "staleness_seconds": 5400.0,
        "duplicate_rows": 7.0,
        "slice_rows": 200.0,
        "last_success_timestamp_seconds": datetime(2026, 1, 1, 11, tzinfo=UTC).timestamp(),
        "run_duration_seconds": 12.5,
        "schedule_period_seconds": 6 * 3600.0,
    }
    assert found.conditions == {"Ready": 1.0, "Fresh": 0.0, "Complete": 0.0}
    suspended = SPEC.model_copy(update={"suspend": True})
    failed = samples({"health": {"checkedAt": "2026-01-01T12:00:00Z", "error": "x"}}, suspended)
    assert set(failed.gauges.values()) == {None}  # unknown is no series, not an old value


def test_schedule_period_is_the_longest_gap() -> None:
    assert schedule_period_seconds("*/15 * * * *") == 900
    assert schedule_period_seconds("0 9 * * 1-5") == 72 * 3600  # Friday to Monday
    assert schedule_period_seconds("@daily", "Europe/Berlin") == 24 * 3600
    assert schedule_period_seconds("0 2 * * *", "Not/AZone") == 24 * 3600


def test_object_metrics_start_counters_at_zero_and_remove_everything() -> None:
    metrics = ObjectMetrics()
    key = ("metrics-ns", "obj")

    def value(name: str, table: str = "t1", **labels: str) -> float | None:
        got: float | None = REGISTRY.get_sample_value(
            name, {"namespace": key[0], "name": key[1], "table": table, **labels}
        )
        return got

    metrics.publish(key, "t1", Samples({"slice_rows": 5.0, "staleness_seconds": None}, {"Ready": 1.0}))
    assert value("tablerefresh_runs_total", result="failed") == 0
    assert value("tablerefresh_health_check_errors_total") == 0
    assert value("tablerefresh_slice_rows") == 5 and value("tablerefresh_staleness_seconds") is None
    metrics.count_run(key, "failed")
    assert value("tablerefresh_runs_total", result="failed") == 1
    metrics.publish(key, "t2", Samples({"slice_rows": 6.0}, {"Ready": 0.0}))  # the target table changed
    assert value("tablerefresh_slice_rows") is None and value("tablerefresh_slice_rows", "t2") == 6
    assert value("tablerefresh_condition", type="Ready") is None
    metrics.forget(key)
    assert value("tablerefresh_slice_rows", "t2") is None
    assert value("tablerefresh_condition", "t2", type="Ready") is None
    assert value("tablerefresh_runs_total", "t2", result="succeeded") is None


# The scheduler, on a virtual clock: probes "take" virtual seconds, so the counts below are exact
# however loaded the machine is.


class Target:
    def __init__(self, name: str, server: str = "a", interval: float = 0.05) -> None:
        self.key = ("ns", name)
        self.generation = 1
        self.interval = interval
        self.server = server


def run_scheduler(
    targets: list[Target], probe: Callable[[VirtualTimeLoop, Target], Any], seconds: float, **options: Any
) -> tuple[list[tuple[str, Any]], Scheduler[Target, Any]]:
    recorded: list[tuple[str, Any]] = []

    async def record(target: Target, result: Any) -> None:
        recorded.append((target.key[1], result))

    async def main(loop: VirtualTimeLoop) -> Scheduler[Target, Any]:
        scheduler: Scheduler[Target, Any] = Scheduler(
            lambda: targets,
            lambda target: probe(loop, target),
            record,
            lambda t, s: f"timeout after {s}",
            max_sleep=0.02,
            clock=loop.time,
            **options,
        )
        task = asyncio.create_task(scheduler.run_forever())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return scheduler

    return recorded, virtual_time.run(main)


class Gauge:
    """Counts probes running at once, in all and per key."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def __call__(self, loop: VirtualTimeLoop, target: Target) -> str:
        for label in ("all", target.key[1], f"server {target.server}"):
            with self.lock:
                self.now[label] = self.now.get(label, 0) + 1
                self.peak[label] = max(self.peak.get(label, 0), self.now[label])
        loop.sleep_in_thread(self.seconds)
        for label in ("all", target.key[1], f"server {target.server}"):
            with self.lock:
                self.now[label] -= 1
        return "ok"


def test_concurrency_is_bounded_and_checks_never_pile_up() -> None:
    """Probes slower than the interval: each object still has one in flight, at most 3 run at once."""
    gauge = Gauge(0.1)
    targets = [Target(f"o{i}", server=f"s{i % 3}", interval=0.01) for i in range(9)]
    recorded, scheduler = run_scheduler(targets, gauge, 0.8, concurrency=3, per_server=3)
    assert gauge.peak["all"] == 3
    assert all(gauge.peak[t.key[1]] == 1 for t in targets)
    assert len(recorded) >= 9 and scheduler.in_flight() == 0


def test_a_slow_server_delays_only_its_own_objects() -> None:
    def probe(loop: VirtualTimeLoop, target: Target) -> str:
        loop.sleep_in_thread(0.5 if target.server == "slow" else 0.005)
        return "ok"

    slow = [Target(f"slow{i}", server="slow") for i in range(6)]
    fast = [Target(f"fast{i}", server="fast", interval=0.02) for i in range(3)]
    recorded, _ = run_scheduler([*slow, *fast], probe, 0.6, concurrency=4)  # per server: half of 4
    counts = {name: sum(1 for n, _ in recorded if n == name) for name in [t.key[1] for t in slow + fast]}
    assert all(counts[t.key[1]] >= 5 for t in fast), counts  # kept their cadence
    assert sum(counts[t.key[1]] for t in slow) <= 2, counts  # two slots for the slow server


def test_a_check_past_its_timeout_is_reported_and_keeps_its_slot_until_it_ends() -> None:
    gauge = Gauge(0.4)
    targets = [Target("hung", interval=0.01), Target("other", server="b", interval=0.01)]
    recorded, _ = run_scheduler(targets, gauge, 0.6, concurrency=2, timeout=0.1)
    hung = [r for n, r in recorded if n == "hung"]
    assert hung[0] == "timeout after 0.1"  # at the deadline, not when the probe returned
    assert gauge.peak["hung"] == 1  # the timed-out thread was not joined by a second one
    assert gauge.peak["all"] <= 2


def test_a_new_generation_is_checked_at_once() -> None:
    calls: list[int] = []
    target = Target("o", interval=60)

    def probe(t: Target) -> str:
        calls.append(t.generation)
        return "ok"

    async def main(loop: VirtualTimeLoop) -> None:
        async def record(t: Target, r: Any) -> None:
            pass

        scheduler: Scheduler[Target, Any] = Scheduler(
            lambda: [target], probe, record, lambda t, s: "x", clock=loop.time
        )
        task = asyncio.create_task(scheduler.run_forever())
        await asyncio.sleep(0.1)
        target.generation = 2
        scheduler.poke()
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    virtual_time.run(main)
    assert calls == [1, 2]
