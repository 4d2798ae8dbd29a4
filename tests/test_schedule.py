"""CronJob schedules: the Python check against what Kubernetes accepts (robfig/cron v3's ParseStandard
plus its "no TZ" rule), the CRD's pattern built from the same grammar, and when a schedule fires.

CASES is shared with test_schedule_kube.py, which applies each one to the API server: the model and
the CRD must agree with each other and with Kubernetes, except where a case says the CRD cannot.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic_core import SchemaValidator, ValidationError, core_schema

from tablerefresh import schedule
from tablerefresh.schedule import Cron, Every, ScheduleError, fire_times, go_duration, parse
from tablerefresh.spec import ManifestError, parse_manifest
from tests.schedule_cases import ACCEPTED, CASES, REFUSED, Case


def test_the_table_has_both_kinds_and_the_issue_examples() -> None:
    texts = {c.text for c in CASES}
    assert len(texts) == len(CASES)
    issue = {"61 * * * *", "0 0 L * *", "0 0 * * 1#2", "H * * * *", "TZ=UTC 0 * * * *", "CRON_TZ=UTC 0 * * * *"}
    assert issue <= {c.text for c in REFUSED}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_model_accepts_exactly_what_kubernetes_accepts(case: Case) -> None:
    if case.refused is None:
        assert parse_manifest(case.manifest()).spec.schedule == case.text
        return
    with pytest.raises(ManifestError) as info:
        parse_manifest(case.manifest())
    assert "spec.schedule" in str(info.value) and case.refused in str(info.value)


PATTERN = SchemaValidator(core_schema.str_schema(pattern=schedule.PATTERN))  # Rust's regex, RE2's syntax


def matches(text: str) -> bool:
    try:
        PATTERN.validate_python(text)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_the_crd_pattern_takes_every_accepted_schedule(case: Case) -> None:
    assert matches(case.text)


@pytest.mark.parametrize(
    "text", ["61 * * * *", "0 0 L * *", "0 0 * * 1#2", "H * * * *", "0 0 * * 7", "0 0 * * \u017fun", "0 * * *"]
)
def test_the_crd_pattern_refuses_what_it_can_see(text: str) -> None:
    assert not matches(text)


def test_the_patterns_space_is_gos_unicode_whitespace() -> None:
    space = SchemaValidator(core_schema.str_schema(pattern=f"^{schedule.SPACE}$"))
    go_space = {c for a, b in schedule.GO_SPACE for c in range(a, b + 1)}
    for code in range(0x10000):
        try:
            space.validate_python(chr(code))
            found = True
        except ValidationError:
            found = False
        assert found == (code in go_space), hex(code)


def test_crd_rules_are_cel_with_readable_messages() -> None:
    rules = schedule.CEL_RULES
    assert rules[0]["rule"].startswith("self.matches('^(?:@(?:yearly")
    assert "minute 0-59" in rules[0]["message"] and "@every <duration>" in rules[0]["message"]
    assert any(r["rule"] == "!self.contains('TZ')" for r in rules)


# What a schedule means.


def test_descriptors_are_the_five_field_schedules_robfig_builds() -> None:
    assert parse("@hourly") == parse("0 * * * *")
    assert parse("@weekly") == parse("0 0 * * 0")
    assert parse("@annually") == parse("@yearly") == parse("0 0 1 1 *")


def test_fields_read_names_steps_and_the_star_rule() -> None:
    parsed = parse("15 1-5/2 * jan-mar mon-fri")
    assert isinstance(parsed, Cron)
    assert (parsed.minutes, parsed.hours, parsed.months) == ({15}, {1, 3, 5}, {1, 2, 3})
    assert parsed.weekdays == {1, 2, 3, 4, 5} and parsed.both_days  # dom is *: both must match
    stepped = parse("0 0 */2 * 1")
    assert isinstance(stepped, Cron) and not stepped.both_days  # */2 drops the star: either matches
    assert isinstance(one := parse("0 0 */1 * 1"), Cron) and one.both_days  # */1 keeps it


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("@every 90m", 5400), ("@every 1.5s", 1), ("@every 999ms", 1), ("@every -1h", 1), ("@every 1h0.5m", 3630)],
)
def test_every_runs_every_whole_second_at_least_one(text: str, seconds: int) -> None:
    assert parse(text) == Every(seconds)


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("0", 0),
        ("-0", 0),
        ("+.5s", 500_000_000),
        ("1.h", 3600 * 10**9),
        ("1\u00b5s2\u03bcs", 3000),
        ("9223372036854775807ns", 2**63 - 1),
        ("-9223372036854775808ns", -(2**63)),
        ("0.99999999999999999999h", 3600 * 10**9),  # Go stops reading digits where they would overflow
    ],
)
def test_go_durations(text: str, nanoseconds: int) -> None:
    assert go_duration(text) == nanoseconds


@pytest.mark.parametrize(
    "text", ["", "00", ".s", "1", "1hm", "9223372036854775808ns", "1e3s", "1 h", "99999999999999999999h"]
)
def test_not_go_durations(text: str) -> None:
    with pytest.raises(ScheduleError):
        go_duration(text)


def fires(text: str, zone: str, start: datetime, count: int) -> list[datetime]:
    parsed = parse(text)
    assert isinstance(parsed, Cron)
    return list(itertools.islice(fire_times(parsed, start.replace(tzinfo=ZoneInfo(zone)), 400), count))


def test_a_time_dst_skips_does_not_fire_and_one_it_repeats_fires_twice() -> None:
    spring = fires("30 2 * * *", "America/New_York", datetime(2025, 3, 8), 2)
    assert [t.date().isoformat() for t in spring] == ["2025-03-08", "2025-03-10"]
    autumn = fires("30 1 * * *", "America/New_York", datetime(2025, 11, 2), 3)
    assert autumn[1] - autumn[0] == timedelta(hours=1)  # 01:30 EDT, then 01:30 EST
    assert autumn[0] == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)


def test_day_of_month_and_day_of_week_match_either_unless_one_is_a_star() -> None:
    start = datetime(2025, 1, 1)  # a Wednesday
    either = fires("0 0 1-31 * 1", "UTC", start, 3)  # no star: every day matches 1-31
    assert [t.day for t in either] == [2, 3, 4]
    mondays = fires("0 0 * * 1", "UTC", start, 2)
    assert [t.day for t in mondays] == [6, 13]
    odd_or_monday = fires("0 0 */2 * 1", "UTC", start, 4)
    assert [t.day for t in odd_or_monday] == [3, 5, 6, 7]
