"""A cron schedule as a refreshable view's REFRESH EVERY clause (strategy RefreshableView): the forms
that map, the ones refused with the nearest that maps, and that each mapping fires when the cron does."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from tablerefresh.schedule import Cron, ScheduleError, fire_times, parse
from tablerefresh.view_schedule import NoRefreshEquivalent, RefreshEvery, interval, refresh_every

MAPPED = [
    ("@hourly", "EVERY 1 HOUR"),
    ("0 */6 * * *", "EVERY 6 HOUR"),
    ("0 0,6,12,18 * * *", "EVERY 6 HOUR"),  # the times, not the text
    ("15 * * * *", "EVERY 1 HOUR OFFSET 15 MINUTE"),
    ("*/15 * * * *", "EVERY 15 MINUTE"),
    ("5/15 * * * *", "EVERY 15 MINUTE OFFSET 5 MINUTE"),
    ("* * * * *", "EVERY 1 MINUTE"),
    ("30 2/6 * * *", "EVERY 6 HOUR OFFSET 2 HOUR 30 MINUTE"),
    ("@daily", "EVERY 1 DAY"),
    ("0 3 * * *", "EVERY 1 DAY OFFSET 3 HOUR"),
    ("@weekly", "EVERY 1 WEEK OFFSET 6 DAY"),  # ClickHouse's weeks start on Monday, cron's day 0 is Sunday
    ("30 4 * * sat", "EVERY 1 WEEK OFFSET 5 DAY 4 HOUR 30 MINUTE"),
    ("@monthly", "EVERY 1 MONTH"),
    ("0 0 5 * *", "EVERY 1 MONTH OFFSET 4 DAY"),
    ("@yearly", "EVERY 1 YEAR"),
    ("10 1 3 jul *", "EVERY 1 YEAR OFFSET 6 MONTH 2 DAY 1 HOUR 10 MINUTE"),
    ("@every 90m", "EVERY 90 MINUTE"),
    ("@every 48h", "EVERY 2 DAY"),
    ("@every 30s", "EVERY 30 SECOND"),
]


@pytest.mark.parametrize(("schedule", "clause"), MAPPED)
def test_a_schedule_maps_to_refresh_every(schedule: str, clause: str) -> None:
    assert refresh_every(schedule).sql() == clause


def fires_by_clause(every: RefreshEvery, start: datetime, end: datetime) -> list[datetime]:
    """When ClickHouse runs ``EVERY … OFFSET …``: the start of each period (weeks from Monday) plus the offset."""
    offset = dict((unit, n) for n, unit in every.offset)
    times = []
    for day in (start.date() + timedelta(days=n) for n in range((end - start).days + 1)):
        if every.unit == "WEEK" and day.weekday() != offset.get("DAY", 0):
            continue
        if every.unit == "MONTH" and day.day != offset.get("DAY", 0) + 1:
            continue
        if every.unit == "YEAR" and (day.month, day.day) != (offset.get("MONTH", 0) + 1, offset.get("DAY", 0) + 1):
            continue
        if every.unit in ("MINUTE", "HOUR"):
            step = every.count * (60 if every.unit == "HOUR" else 1)
            first = 60 * offset.get("HOUR", 0) + offset.get("MINUTE", 0)
            minutes = range(first, 24 * 60, step)
        else:
            minutes = range(60 * offset.get("HOUR", 0) + offset.get("MINUTE", 0), 24 * 60, 24 * 60)
        times += [datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=m) for m in minutes]
    return [t for t in times if start < t < end]


@pytest.mark.parametrize("schedule", [s for s, _ in MAPPED if not s.startswith("@every")])
def test_the_clause_fires_exactly_when_the_cron_does(schedule: str) -> None:
    every = refresh_every(schedule)
    days = 800 if every.unit in ("DAY", "WEEK", "MONTH", "YEAR") else 3  # two years, a leap day included
    start = datetime(2027, 12, 30, tzinfo=UTC)
    end = start + timedelta(days=days)
    parsed = parse(schedule)
    assert isinstance(parsed, Cron)
    cron = list(itertools.takewhile(lambda t: t < end, fire_times(parsed, start, days)))
    assert cron == fires_by_clause(every, start, end)


REFUSED = [
    ("0 9-17 * * *", "0 */3 * * *"),  # office hours: 9 times a day, about every 3 hours
    ("0 0 * * 1-5", "0 0 * * *"),  # weekdays: daily is nearest
    ("0 0 31 * *", "0 0 28 * *"),  # not every month has a 31st
    ("0 0 29 2 *", "0 0 28 2 *"),
    ("*/7 * * * *", "*/6 * * * *"),  # 7 does not divide an hour
    ("0 */5 * * *", "0 */4 * * *"),  # 5 does not divide a day
    ("0 0 1,15 * *", "0 0 1 * *"),
    ("0 0 * 1-6 1", "0 0 * * 1"),
    ("0 0 1 1,7 *", "0 0 1 1 *"),
]


@pytest.mark.parametrize(("schedule", "nearest"), REFUSED)
def test_a_schedule_without_equivalent_is_refused_naming_the_nearest(schedule: str, nearest: str) -> None:
    with pytest.raises(NoRefreshEquivalent) as info:
        refresh_every(schedule)
    message = str(info.value)
    assert repr(schedule) in message and f"the nearest that has one is {nearest!r}" in message
    assert f"({refresh_every(nearest).sql()})" in message  # and the nearest maps


def test_the_schedule_must_be_in_utc_as_clickhouse_runs_it() -> None:
    assert refresh_every("0 3 * * *", "Etc/UTC").sql() == "EVERY 1 DAY OFFSET 3 HOUR"
    with pytest.raises(NoRefreshEquivalent, match=r"timeZone 'Europe/Berlin': ClickHouse runs .* in UTC"):
        refresh_every("0 3 * * *", "Europe/Berlin")


def test_a_schedule_kubernetes_refuses_is_refused_as_before() -> None:
    with pytest.raises(ScheduleError) as info:
        refresh_every("0 0 L * *")
    assert not isinstance(info.value, NoRefreshEquivalent)


@pytest.mark.parametrize(("seconds", "expected"), [(5400, (90, "MINUTE")), (7200, (2, "HOUR")), (1, (1, "SECOND"))])
def test_an_interval_is_written_in_the_largest_unit_dividing_it(seconds: int, expected: tuple[int, str]) -> None:
    assert interval(seconds) == expected


def test_the_days_checked_include_a_leap_day() -> None:
    from tablerefresh import view_schedule

    assert date(2024, 2, 29) in view_schedule._DAYS
