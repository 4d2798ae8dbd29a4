"""The health check on the real API server and the embedded engine (issue 5's "Must show").

The operator runs in this process (``tests/operator_thread.py``) so that it measures the same chDB
engine the tests write to; each test has its own namespace, table and operator.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.fixtures import start_operator
from tests.harness.kube import Kube, condition, wait_for
from tests.harness.operators import InProcessOperator
from tests.health_env import (  # noqa: F401  (fixtures)
    TABLE,
    UNREACHABLE_URL,
    Target,
    Writes,
    checked_and_ready,
    has,
    sample,
    tablerefresh,
    target,
    writes,
)

pytestmark = pytest.mark.kube

NAME = "trades"


def test_a_fresh_table_is_ready_with_its_figures_and_metrics(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator
) -> None:
    api.apply(tablerefresh(namespace, NAME, target))
    tr = wait_for("Ready=True", lambda: checked_and_ready(api, namespace, NAME))
    for kind in ("ClickHouseReachable", "Fresh", "DuplicateFree", "Complete", "NoStuckMutations"):
        assert condition(tr, kind)["status"] == "True", (kind, tr["status"]["conditions"])
    health = tr["status"]["health"]
    assert (health["totalRows"], health["sliceRows"], health["distinctKeys"]) == (100, 100, 100)
    assert health["tableDuplicates"] == health["sliceDuplicates"] == 0
    assert health["pendingMutations"] == 0 and health["staleHours"] < 0.1
    assert "error" not in health and health["checkedAt"]
    assert not api.events(namespace, "DataStale")

    # The metrics say what the status says, once the check's write is published (just after it;
    # conditions are set after the gauges).
    wait_for("the metrics", lambda: sample("tablerefresh_condition", namespace, NAME, type="Fresh") == 1)
    assert sample("tablerefresh_condition", namespace, NAME, type="Ready") == 1
    assert sample("tablerefresh_slice_rows", namespace, NAME) == 100
    assert sample("tablerefresh_duplicate_rows", namespace, NAME) == 0
    assert sample("tablerefresh_runs_total", namespace, NAME, result="failed") == 0
    assert sample("tablerefresh_runs_total", namespace, NAME, result="succeeded") == 0
    assert sample("tablerefresh_health_check_errors_total", namespace, NAME) == 0
    assert sample("tablerefresh_schedule_period_seconds", namespace, NAME) == 6 * 3600
    assert sample("tablerefresh_last_success_timestamp_seconds", namespace, NAME) is None  # no run yet

    # kubectl get tr shows it.
    out = api.plane.kubectl("get", "tr", "-n", namespace).stdout.splitlines()
    assert out[0].split()[:6] == ["NAME", "SCHEDULE", "SUSPEND", "READY", "STALE(H)", "DUPS"]
    row = out[1].split()
    assert row[0] == NAME and row[7] == "True" and float(row[8]) < 0.1 and row[9] == "0", out


def test_stale_data_flips_fresh_posts_one_event_moves_the_metric_and_recovers(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator, writes: Writes
) -> None:
    api.apply(tablerefresh(namespace, NAME, target))
    wait_for("Fresh=True", lambda: has(api, namespace, NAME, "Fresh", "True"))
    # The metrics are set once the status write returns: a moment after the status shows it.
    wait_for("the staleness metric", lambda: sample("tablerefresh_staleness_seconds", namespace, NAME) is not None)
    fresh_seconds = sample("tablerefresh_staleness_seconds", namespace, NAME)
    assert fresh_seconds is not None and fresh_seconds < 600

    # Two days older: over maxStaleHours (1).
    target.command(
        f"ALTER TABLE {target.database}.{TABLE} UPDATE entry_time = entry_time - INTERVAL 2 DAY WHERE 1",
        mutations_sync=1,
    )
    tr = wait_for("Fresh=False", lambda: has(api, namespace, NAME, "Fresh", "False"))
    fresh = condition(tr, "Fresh")
    assert fresh["reason"] == "DataStale" and "over maxStaleHours 1" in fresh["message"]
    ready = condition(tr, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DataStale")
    assert 47.9 < tr["status"]["health"]["staleHours"] < 48.2
    checked = len(writes.of(namespace, NAME, "health"))
    # Three more checks, written with their Events: still one Event, not one per check.
    wait_for("three more checks", lambda: len(writes.of(namespace, NAME, "health")) >= checked + 3)
    stale_events = api.events(namespace, "DataStale")
    assert len(stale_events) == 1, stale_events
    (event,) = stale_events
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == NAME
    assert "old, over maxStaleHours 1" in event["message"]
    # The metric moved, and agrees with the status.
    tr = api.tr(namespace, NAME)
    seconds = sample("tablerefresh_staleness_seconds", namespace, NAME)
    assert seconds is not None and abs(seconds - tr["status"]["health"]["staleHours"] * 3600) < 60
    assert sample("tablerefresh_condition", namespace, NAME, type="Fresh") == 0
    assert sample("tablerefresh_condition", namespace, NAME, type="Ready") == 0
    # kubectl describe tr says it in plain words: the condition, and the Event.
    described = api.plane.kubectl("describe", "tr", "-n", namespace, NAME).stdout
    assert "Reason:                DataStale" in described
    events = described[described.index("Events:") :]
    assert "Warning  DataStale" in events and "over maxStaleHours 1" in events

    # Fixed: new rows.
    target.fill(10, first_id=1000)
    tr = wait_for("Fresh=True again", lambda: has(api, namespace, NAME, "Fresh", "True"))
    assert condition(tr, "Ready")["status"] == "True"
    recovered = wait_for("the Normal event", lambda: api.events(namespace, "DataFresh"))
    assert len(recovered) == 1 and recovered[0]["type"] == "Normal"
    assert recovered[0]["message"].startswith("The data is fresh again")
    assert len(api.events(namespace, "DataStale")) == 1
    assert sample("tablerefresh_condition", namespace, NAME, type="Fresh") == 1


def test_duplicates_make_duplicate_free_false(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator
) -> None:
    api.apply(tablerefresh(namespace, NAME, target))
    wait_for("DuplicateFree=True", lambda: has(api, namespace, NAME, "DuplicateFree", "True"))
    target.fill(5, first_id=0)  # ids 0..4 a second time
    tr = wait_for("DuplicateFree=False", lambda: has(api, namespace, NAME, "DuplicateFree", "False"))
    assert condition(tr, "DuplicateFree")["reason"] == "DuplicatesDetected"
    assert tr["status"]["health"]["sliceDuplicates"] == 5
    assert condition(tr, "Ready")["status"] == "False"
    wait_for("the Warning event", lambda: api.events(namespace, "DuplicatesDetected"))
    assert sample("tablerefresh_duplicate_rows", namespace, NAME) == 5


def test_a_small_slice_makes_complete_false(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator
) -> None:
    api.apply(tablerefresh(namespace, NAME, target, thresholds={"maxStaleHours": 1, "minSliceRows": 500}))
    tr = wait_for("Complete=False", lambda: has(api, namespace, NAME, "Complete", "False"))
    assert condition(tr, "Complete")["reason"] == "SliceTooSmall"
    assert "100 rows, under minSliceRows 500" in condition(tr, "Complete")["message"]
    wait_for("the Warning event", lambda: api.events(namespace, "SliceTooSmall"))


def test_a_stuck_mutation_makes_no_stuck_mutations_false(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator
) -> None:
    api.apply(tablerefresh(namespace, NAME, target))
    wait_for("NoStuckMutations=True", lambda: has(api, namespace, NAME, "NoStuckMutations", "True"))
    # A mutation that fails on every try stays pending; maxPending is 1s.
    target.command(f"ALTER TABLE {target.database}.{TABLE} UPDATE v = throwIf(1, 'stuck') WHERE 1", mutations_sync=0)
    tr = wait_for("NoStuckMutations=False", lambda: has(api, namespace, NAME, "NoStuckMutations", "False"))
    stuck = condition(tr, "NoStuckMutations")
    assert stuck["reason"] == "MutationStuck" and "over 1s" in stuck["message"]
    assert tr["status"]["health"]["pendingMutations"] == 1
    assert tr["status"]["health"]["oldestMutationAgeSeconds"] > 1
    wait_for("the Warning event", lambda: api.events(namespace, "MutationStuck"))


def test_clickhouse_unreachable_is_a_condition_not_a_crash(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator
) -> None:
    """chDB runs inside this process and cannot be stopped without stopping the tests, so
    "ClickHouse stops" is simulated: the object is pointed at a closed loopback port, then back."""
    api.apply(tablerefresh(namespace, NAME, target))
    wait_for("Ready=True", lambda: checked_and_ready(api, namespace, NAME))

    api.patch_spec(namespace, NAME, {"clickhouse": {"url": UNREACHABLE_URL}})
    tr = wait_for("ClickHouseReachable=False", lambda: has(api, namespace, NAME, "ClickHouseReachable", "False"))
    reachable = condition(tr, "ClickHouseReachable")
    assert reachable["reason"] == "ClickHouseUnreachable" and "127.0.0.1:9" in reachable["message"]
    # No health condition is left looking healthy, and none claims a problem nobody saw.
    for kind in ("Fresh", "DuplicateFree", "Complete", "NoStuckMutations"):
        assert condition(tr, kind)["status"] == "Unknown", condition(tr, kind)
    assert condition(tr, "Ready")["status"] == "False"
    health = tr["status"]["health"]
    assert "127.0.0.1:9" in health["error"] and "staleHours" not in health
    (event,) = wait_for("the Warning event", lambda: api.events(namespace, "ClickHouseUnreachable"))
    assert event["type"] == "Warning"
    wait_for("errors counted", lambda: (sample("tablerefresh_health_check_errors_total", namespace, NAME) or 0) >= 2)
    assert sample("tablerefresh_condition", namespace, NAME, type="ClickHouseReachable") == 0
    assert sample("tablerefresh_staleness_seconds", namespace, NAME) is None  # unknown, not old
    assert len(api.events(namespace, "ClickHouseUnreachable")) == 1
    assert operator.error is None

    api.patch_spec(namespace, NAME, {"clickhouse": {"url": target.url}})
    tr = wait_for("Ready=True again", lambda: checked_and_ready(api, namespace, NAME))
    assert "error" not in tr["status"]["health"]
    wait_for("the Normal event", lambda: api.events(namespace, "ClickHouseReachable"))
    # The data conditions went Unknown and came back True: no Event claims they had been bad.
    assert not api.events(namespace, "DataFresh") and not api.events(namespace, "DataStale")


def test_a_secret_created_late_clears_every_condition_naming_it_within_one_resync(
    api: Kube, namespace: str, target: Target, controlplane: Any, crd: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The health interval is an hour and the resync two seconds: only the reconciler, which reads
    the Secret on every resync, can have the health conditions checked again in time."""
    operator = start_operator(controlplane, namespace, monkeypatch, resync_seconds=2.0)
    try:
        secret = "late-credentials"
        clickhouse = {"url": target.url, "database": target.database, "credentialsSecret": {"name": secret}}
        api.apply(tablerefresh(namespace, NAME, target, clickhouse=clickhouse, healthCheck={"interval": "1h"}))

        def naming(tr: dict[str, Any]) -> list[str]:
            """The conditions that give the missing Secret as their cause."""
            missing = f"Secret {secret} does not exist"
            return [c["type"] for c in tr.get("status", {}).get("conditions", []) if missing in c.get("message", "")]

        before = wait_for(
            "the health check to name the missing Secret",
            lambda: "ClickHouseReachable" in (n := naming(api.tr(namespace, NAME))) and n,
        )
        assert {"Ready", "CredentialsFound", "ClickHouseReachable"} <= set(before), before

        controlplane.kubectl(
            "create", "secret", "generic", secret, "-n", namespace,
            "--from-literal=username=u", "--from-literal=password=p",
        )  # fmt: skip
        controlplane.kubectl("label", "secret", secret, "-n", namespace, "tablerefresh.dev/credentials=true")
        tr = wait_for(
            "every condition to stop naming the Secret",
            lambda: (t := checked_and_ready(api, namespace, NAME)) and not naming(t) and t,
        )
        for kind in ("CredentialsFound", "ClickHouseReachable", "Fresh", "DuplicateFree", "Complete"):
            assert condition(tr, kind)["status"] == "True", (kind, tr["status"]["conditions"])
        assert "error" not in tr["status"]["health"]
    finally:
        operator.stop()


def test_deleting_the_object_removes_its_series(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator
) -> None:
    api.apply(tablerefresh(namespace, NAME, target))
    wait_for("Ready=True", lambda: checked_and_ready(api, namespace, NAME))
    assert sample("tablerefresh_condition", namespace, NAME, type="Ready") == 1
    api.plane.kubectl("delete", "tr", NAME, "-n", namespace, "--timeout=10s")
    wait_for(
        "the series to go",
        lambda: (
            sample("tablerefresh_condition", namespace, NAME, type="Ready") is None
            and sample("tablerefresh_runs_total", namespace, NAME, result="failed") is None
            and sample("tablerefresh_slice_rows", namespace, NAME) is None
        ),
    )


def test_a_failing_audit_on_the_table_makes_audits_passing_false_with_its_count(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator
) -> None:
    late_ids = {"name": "no-late-ids", "query": "SELECT countIf(id >= 90) FROM {table:Identifier}"}
    api.apply(tablerefresh(namespace, NAME, target, audits=[late_ids]))
    tr = wait_for("AuditsPassing=False", lambda: has(api, namespace, NAME, "AuditsPassing", "False"))
    audits = condition(tr, "AuditsPassing")
    assert audits["reason"] == "AuditFailed"
    assert "no-late-ids: 10 failing row(s), at most 0 allowed" in audits["message"]
    assert tr["status"]["health"]["audits"] == [
        {"name": "no-late-ids", "failingRows": 10, "maxFailingRows": 0, "passed": False}
    ]
    assert (condition(tr, "Ready")["status"], condition(tr, "Ready")["reason"]) == ("False", "AuditFailed")
    (event,) = wait_for("the AuditFailed Event", lambda: api.events(namespace, "AuditFailed"))
    assert event["type"] == "Warning" and "no-late-ids" in event["message"]
    wait_for(
        "the metric", lambda: sample("tablerefresh_audit_failing_rows", namespace, NAME, audit="no-late-ids") == 10
    )
    assert sample("tablerefresh_condition", namespace, NAME, type="AuditsPassing") == 0

    # Allowing ten bad rows makes it pass, with one Normal Event.
    api.patch_spec(namespace, NAME, {"audits": [{**late_ids, "maxFailingRows": 10}]})
    tr = wait_for("AuditsPassing=True", lambda: checked_and_ready(api, namespace, NAME))
    assert condition(tr, "AuditsPassing")["reason"] == "AuditsPassed"
    (recovered,) = wait_for("the recovery Event", lambda: api.events(namespace, "AuditsPassing"))
    assert recovered["type"] == "Normal"
    assert len(api.events(namespace, "AuditFailed")) == 1


def test_kubectl_wait_for_ready_returns_once_the_object_is_healthy(
    api: Kube, namespace: str, target: Target, operator: InProcessOperator
) -> None:
    api.apply(tablerefresh(namespace, NAME, target))
    waited = api.plane.kubectl(
        "wait", "--for=condition=Ready", f"tablerefresh/{NAME}", "-n", namespace, "--timeout=60s", check=False
    )
    assert waited.returncode == 0, waited.stderr
    assert f"tablerefresh.tablerefresh.dev/{NAME} condition met" in waited.stdout
    assert condition(api.tr(namespace, NAME), "Ready")["status"] == "True"

    # An object that is not healthy (stale data) makes it time out, once the check has said so.
    target.command(f"TRUNCATE TABLE {target.database}.{TABLE}")
    target.fill(100, age_seconds=5 * 3600)
    wait_for("Ready=False", lambda: has(api, namespace, NAME, "Ready", "False"))
    timed_out = api.plane.kubectl(
        "wait", "--for=condition=Ready", f"tablerefresh/{NAME}", "-n", namespace, "--timeout=2s", check=False
    )
    assert timed_out.returncode != 0 and "timed out" in timed_out.stderr, timed_out
