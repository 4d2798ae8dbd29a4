"""The per-object metrics (runtime.metrics): values read off the status, and each object's series."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from tablerefresh.controller.runtime.metrics import ObjectSeries, Samples, samples
from tablerefresh.spec import TableRefreshSpec, memory_limit_bytes
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
        "last_run_peak_memory_bytes": None,  # a run that did not report its memory and work: no series
        "last_run_read_bytes": None,
        "last_run_written_rows": None,
        "memory_limit_bytes": None,  # spec.clickhouse.settings sets no max_memory_usage
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


def limited(max_memory_usage: object) -> TableRefreshSpec:
    """SPEC with spec.clickhouse.settings.max_memory_usage set, as a manifest would write it."""
    clickhouse = {**tr_body()["spec"]["clickhouse"], "settings": {"max_memory_usage": max_memory_usage}}
    return TableRefreshSpec.model_validate(tr_body(clickhouse=clickhouse)["spec"])


def test_the_last_runs_memory_and_work_and_the_memory_limit_have_series_removed_with_the_object() -> None:
    key = ("metrics-ns", "memory")
    series = ObjectSeries(key)

    def value(name: str) -> float | None:
        got: float | None = REGISTRY.get_sample_value(name, {"namespace": key[0], "name": key[1], "table": "t"})
        return got

    last_run = {"peakMemoryBytes": 6_700_000_000, "readBytes": 12_000_000_000, "writtenRows": 3_000_000}
    series.publish("t", samples({"lastRun": last_run}, limited("8000000000")))
    assert value("tablerefresh_last_run_peak_memory_bytes") == 6_700_000_000
    assert value("tablerefresh_last_run_read_bytes") == 12_000_000_000
    assert value("tablerefresh_last_run_written_rows") == 3_000_000
    assert value("tablerefresh_memory_limit_bytes") == 8_000_000_000
    # The next run's engine did not report its memory; the limit was taken out of the manifest.
    series.publish("t", samples({"lastRun": {"readBytes": 5}}, SPEC))
    assert value("tablerefresh_last_run_peak_memory_bytes") is None
    assert value("tablerefresh_memory_limit_bytes") is None
    assert value("tablerefresh_last_run_read_bytes") == 5
    series.publish("t", samples({"lastRun": last_run}, limited("8000000000")))
    series.remove()  # the object was deleted
    for name in (
        "tablerefresh_last_run_peak_memory_bytes",
        "tablerefresh_last_run_read_bytes",
        "tablerefresh_last_run_written_rows",
        "tablerefresh_memory_limit_bytes",
    ):
        assert value(name) is None, name


def test_the_memory_limit_is_the_max_memory_usage_setting_and_zero_is_no_limit() -> None:
    def limit(spec: TableRefreshSpec | None) -> float | None:
        return samples({}, spec).gauges["memory_limit_bytes"]

    assert limit(limited("8589934592")) == 8589934592
    assert limit(limited(" 1000 ")) == 1000
    assert limit(limited("0")) is None  # ClickHouse's "unlimited"
    assert limit(limited("8G")) is None  # not a number ClickHouse takes for it: no made-up limit
    assert limit(limited("-5")) is None
    assert limit(SPEC) is None
    assert limit(None) is None  # a spec that does not validate


def test_a_setting_written_as_a_number_is_read_as_one() -> None:
    # The CRD types settings as strings; a manifest read from a file may still carry a YAML integer.
    assert memory_limit_bytes({"max_memory_usage": 4_000_000_000}) == 4_000_000_000
    assert memory_limit_bytes({"max_memory_usage": 0}) is None
    assert memory_limit_bytes({"max_memory_usage": True}) is None
    assert memory_limit_bytes({"max_threads": "8"}) is None
