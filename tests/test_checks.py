"""A health check's inputs and outputs (policy.checks): what to check, the thresholds, and a result ->
status.health and the health conditions. Pure: no API server, no ClickHouse."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tablerefresh.controller.policy.checks import (
    Failure,
    HealthResult,
    check_of,
    health_fields,
    health_observations,
    server_of,
)
from tablerefresh.controller.policy.status import Observation
from tablerefresh.dataplane.report import AuditResult, HealthReport
from tablerefresh.spec import TableRefreshSpec
from tests.controller_fakes import T0, UID, tr_body

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
    judged = by_type(health_observations(result, SPEC))
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
    judged = by_type(health_observations(result, SPEC))
    assert judged.pop("ClickHouseReachable").status == reachable
    assert set(judged) == {"Fresh", "DuplicateFree", "Complete", "NoStuckMutations", "AuditsPassing"}
    assert all(o.status == "Unknown" and o.reason == reason for o in judged.values())
    # Only when it was tried and why: old figures beside a new checkedAt would pass for current.
    assert health_fields(result) == {"health": {"checkedAt": "2026-01-01T12:00:00Z", "error": "it broke"}}


def test_check_of_reads_the_interval_and_skips_what_cannot_be_checked() -> None:
    check = check_of(tr_body(healthCheck={"interval": "1m30s"}))
    assert check is not None
    assert (check.key, check.uid, check.generation, check.interval) == (("ns", "trades"), UID, 3, 90.0)
    assert check.server == "clickhouse://ch.analytics.svc:8123"
    assert check_of(tr_body(schedule="61 * * * *")) is None
    deleting = tr_body()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert check_of(deleting) is None


def test_server_of_groups_by_host_not_by_credentials_or_database() -> None:
    assert server_of("https://u:p@ch.example:8443/db") == server_of("https://ch.example:8443/other")
    assert server_of("clickhouse://a:8123") != server_of("clickhouse://b:8123")
    assert server_of("chdb:///var/lib/x") == "chdb:///var/lib/x"


def test_audits_are_judged_against_their_own_limits() -> None:
    none = by_type(health_observations(HealthResult(T0, report=report()), SPEC))["AuditsPassing"]
    assert (none.status, none.reason) == ("True", "NoAudits")
    passing = AuditResult("held-within-tokens", 3, 5)
    failing = AuditResult("no-negative-tokens", 12, 0)
    result = HealthResult(T0, report=report(audits=(passing, failing)))
    judged = by_type(health_observations(result, SPEC))["AuditsPassing"]
    assert (judged.status, judged.reason) == ("False", "AuditFailed")
    assert "no-negative-tokens: 12 failing row(s), at most 0 allowed" in judged.message
    assert "held-within-tokens" not in judged.message
    assert health_fields(result)["health"]["audits"] == [
        {"name": "held-within-tokens", "failingRows": 3, "maxFailingRows": 5, "passed": True},
        {"name": "no-negative-tokens", "failingRows": 12, "maxFailingRows": 0, "passed": False},
    ]
    ok = by_type(health_observations(HealthResult(T0, report=report(audits=(passing,))), SPEC))["AuditsPassing"]
    assert (ok.status, ok.reason) == ("True", "AuditsPassed")
    assert "audits" not in health_fields(HealthResult(T0, report=report()))["health"]
