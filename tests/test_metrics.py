"""The per-object metrics (runtime.metrics): values read off the status, and each object's series."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from tablerefresh.controller.runtime.metrics import ObjectSeries, Samples, samples
from tablerefresh.spec import TableRefreshSpec
from tests.controller_fakes import cond, tr_body

SPEC = TableRefreshSpec.model_validate(tr_body()["spec"])


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


def test_object_metrics_start_counters_at_zero_and_remove_everything() -> None:
    key = ("metrics-ns", "obj")
    series = ObjectSeries(key)

    def value(name: str, table: str = "t1", **labels: str) -> float | None:
        got: float | None = REGISTRY.get_sample_value(
            name, {"namespace": key[0], "name": key[1], "table": table, **labels}
        )
        return got

    series.publish("t1", Samples({"slice_rows": 5.0, "staleness_seconds": None}, {"Ready": 1.0}))
    assert value("tablerefresh_runs_total", result="failed") == 0
    assert value("tablerefresh_health_check_errors_total") == 0
    assert value("tablerefresh_slice_rows") == 5 and value("tablerefresh_staleness_seconds") is None
    series.count_run("failed")
    assert value("tablerefresh_runs_total", result="failed") == 1
    series.publish("t2", Samples({"slice_rows": 6.0}, {"Ready": 0.0}))  # the target table changed
    assert value("tablerefresh_slice_rows") is None and value("tablerefresh_slice_rows", "t2") == 6
    assert value("tablerefresh_condition", type="Ready") is None
    series.remove()
    assert value("tablerefresh_slice_rows", "t2") is None
    assert value("tablerefresh_condition", "t2", type="Ready") is None
    assert value("tablerefresh_runs_total", "t2", result="succeeded") is None


def test_each_audit_has_a_series_of_its_failing_rows_removed_when_it_goes() -> None:
    key = ("metrics-ns", "audited")
    series = ObjectSeries(key)

    def rows(audit: str) -> float | None:
        got: float | None = REGISTRY.get_sample_value(
            "tablerefresh_audit_failing_rows", {"namespace": key[0], "name": key[1], "table": "t", "audit": audit}
        )
        return got

    audits = [
        {"name": "no-negative-tokens", "failingRows": 12, "maxFailingRows": 0, "passed": False},
        {"name": "held-within-tokens", "failingRows": 0, "maxFailingRows": 0, "passed": True},
    ]
    series.publish("t", samples({"health": {"checkedAt": "2026-01-01T12:00:00Z", "audits": audits}}, SPEC))
    assert (rows("no-negative-tokens"), rows("held-within-tokens")) == (12, 0)
    # The spec dropped one audit: its series goes; a check that could not measure leaves none.
    series.publish("t", samples({"health": {"checkedAt": "2026-01-01T12:05:00Z", "audits": audits[1:]}}, SPEC))
    assert (rows("no-negative-tokens"), rows("held-within-tokens")) == (None, 0)
    series.publish("t", samples({"health": {"checkedAt": "2026-01-01T12:10:00Z", "error": "x"}}, SPEC))
    assert rows("held-within-tokens") is None
    series.publish("t", samples({"health": {"audits": audits}}, SPEC))
    series.remove()
    assert rows("no-negative-tokens") is None
