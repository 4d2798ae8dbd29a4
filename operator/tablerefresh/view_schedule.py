"""A TableRefresh schedule as a refreshable view's ``REFRESH EVERY … OFFSET …`` clause. Pure.

ClickHouse's ``REFRESH EVERY n UNIT`` runs at the start of every n-th unit (minute, hour, day, week
from Monday, month, year), shifted by ``OFFSET`` (``EVERY 1 DAY OFFSET 2 HOUR`` runs at 02:00). A cron
maps to that exactly when its times are the multiples of one such period plus a fixed offset:

- ``M * * * *`` (``@hourly``): ``EVERY 1 HOUR OFFSET M MINUTE``;
- ``M/n * * * *`` with n dividing 60: ``EVERY n MINUTE OFFSET M MINUTE``;
- ``M H/n * * *`` with n dividing 24: ``EVERY n HOUR OFFSET H HOUR M MINUTE``;
- one time a day (``@daily``), on one weekday (``@weekly``), on one day of the month up to the 28th
  (``@monthly``), or of the year (``@yearly``): ``EVERY 1 DAY``, ``1 WEEK``, ``1 MONTH``, ``1 YEAR``;
- ``@every d``: ``EVERY d`` in the largest unit that divides it (aligned to the clock, where a
  CronJob counts from when the controller started).

ClickHouse schedules refreshes in UTC (its ``CalendarTimeInterval`` counts from the epoch), so
``spec.timeZone`` must be UTC. Anything else (``0 9-17 * * *``, ``0 0 * * 1-5``, ``0 0 31 * *``) has
no equivalent and is refused with the nearest form that has one. The sets are compared, not the
text, so ``0 0,6,12,18 * * *`` is ``EVERY 6 HOUR`` as ``0 */6 * * *`` is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from tablerefresh.schedule import Cron, Every, ScheduleError, parse

MINUTES_A_DAY = 24 * 60
# Every day of four years, a leap year included: a day rule that holds on these holds on all.
_DAYS = [date(2024, 1, 1) + timedelta(days=n) for n in range(4 * 366)]
# A day of the month every month has: EVERY 1 MONTH OFFSET 30 DAY would run in March for February.
LAST_DAY_EVERY_MONTH_HAS = 28
# ClickHouse's refresh schedule is in UTC, whatever the server's time zone.
UTC_ZONES = frozenset({"UTC", "Etc/UTC"})
# The units of an interval, largest first: it is written in the largest that divides it.
_EVERY_UNITS = (("DAY", 86400), ("HOUR", 3600), ("MINUTE", 60), ("SECOND", 1))


class NoRefreshEquivalent(ScheduleError):
    """A valid CronJob schedule that REFRESH EVERY cannot express; the message names the nearest one
    that it can."""


@dataclass(frozen=True)
class RefreshEvery:
    """``EVERY count unit OFFSET …``: ``offset`` as (amount, unit) pairs, largest unit first, none zero."""

    count: int
    unit: str
    offset: tuple[tuple[int, str], ...] = ()

    def sql(self) -> str:
        text = f"EVERY {self.count} {self.unit}"
        if self.offset:
            text += " OFFSET " + " ".join(f"{n} {unit}" for n, unit in self.offset)
        return text


def refresh_every(schedule: str, time_zone: str = "UTC") -> RefreshEvery:
    """The REFRESH EVERY clause that runs at the times ``schedule`` fires in ``time_zone``.

    Raises ScheduleError when Kubernetes would refuse the schedule, and NoRefreshEquivalent when no
    clause runs at exactly those times: naming the nearest schedule that maps, or UTC."""
    if time_zone not in UTC_ZONES:
        raise NoRefreshEquivalent(
            f"timeZone {time_zone!r}: ClickHouse runs a refreshable view's schedule in UTC; "
            "set spec.timeZone to UTC and write the schedule in UTC"
        )
    parsed = parse(schedule)
    if isinstance(parsed, Every):
        return _every(parsed.seconds)
    found = _cron(parsed)
    if found is None:
        nearest = nearest_schedule(parsed)
        raise NoRefreshEquivalent(
            f"{schedule!r} has no REFRESH EVERY equivalent (a refreshable view runs at evenly spaced "
            f"times of one hour, day, week, month or year); the nearest that has one is {nearest!r} "
            f"({refresh_every(nearest).sql()})"
        )
    return found


def _every(seconds: int) -> RefreshEvery:
    return RefreshEvery(*interval(seconds))


def interval(seconds: int) -> tuple[int, str]:
    """``seconds`` in the largest unit that divides it: 5400 -> (90, "MINUTE"), for EVERY and RANDOMIZE FOR."""
    unit, size = next((u, s) for u, s in _EVERY_UNITS if seconds % s == 0)
    return seconds // size, unit


def _offset(*parts: tuple[int, str]) -> tuple[tuple[int, str], ...]:
    return tuple(p for p in parts if p[0])


def _cron(cron: Cron) -> RefreshEvery | None:
    within_day = _within_day(cron)
    if within_day is not None:
        return within_day if _fires_every_day(cron) else None
    if len(cron.minutes) != 1 or len(cron.hours) != 1:
        return None
    (minute,), (hour,) = cron.minutes, cron.hours
    days = _day_rule(cron)
    if days is None:
        return None
    count_unit, leading = days
    return RefreshEvery(1, count_unit, _offset(*leading, (hour, "HOUR"), (minute, "MINUTE")))


def _within_day(cron: Cron) -> RefreshEvery | None:
    """EVERY n MINUTE or n HOUR when the times of a day are evenly spaced below a day apart."""
    times = sorted(60 * h + m for h in cron.hours for m in cron.minutes)
    period = _even_period(times)
    if period is None or period == MINUTES_A_DAY:
        return None
    first = times[0]
    if period < 60:
        return RefreshEvery(period, "MINUTE", _offset((first, "MINUTE")))
    if period == 60:
        return RefreshEvery(1, "HOUR", _offset((first, "MINUTE")))
    return RefreshEvery(period // 60, "HOUR", _offset((first // 60, "HOUR"), (first % 60, "MINUTE")))


def _even_period(times: Sequence[int]) -> int | None:
    """The spacing, in minutes, of ``times`` (minutes of a day, sorted) when they are every
    ``period`` minutes round the clock, and a period ClickHouse aligns as cron does (a divisor of an
    hour, or whole hours dividing a day); None otherwise."""
    period = MINUTES_A_DAY // len(times)
    if MINUTES_A_DAY % len(times) or not (60 % period == 0 or (period % 60 == 0 and 24 % (period // 60) == 0)):
        return None
    return period if all(t == times[0] + i * period for i, t in enumerate(times)) else None


def _fires_on(cron: Cron, day: date) -> bool:
    return day.month in cron.months and cron.day_matches(day)


def _fires_every_day(cron: Cron) -> bool:
    return all(_fires_on(cron, d) for d in _DAYS)


def _same_days(cron: Cron, rule: Callable[[date], bool]) -> bool:
    return all(_fires_on(cron, d) == rule(d) for d in _DAYS)


def _day_rule(cron: Cron) -> tuple[str, tuple[tuple[int, str], ...]] | None:
    """The period and the offset's leading parts for a cron firing once on each day it fires."""
    if _fires_every_day(cron):
        return "DAY", ()
    first = next((d for d in _DAYS if _fires_on(cron, d)), None)
    if first is None:
        return None
    if _same_days(cron, lambda d: d.weekday() == first.weekday()):
        return "WEEK", _offset((first.weekday(), "DAY"))  # ClickHouse's weeks start on Monday
    if first.day > LAST_DAY_EVERY_MONTH_HAS:
        return None
    if _same_days(cron, lambda d: d.day == first.day):
        return "MONTH", _offset((first.day - 1, "DAY"))
    if _same_days(cron, lambda d: (d.month, d.day) == (first.month, first.day)):
        return "YEAR", _offset((first.month - 1, "MONTH"), (first.day - 1, "DAY"))
    return None


def nearest_schedule(cron: Cron) -> str:
    """A schedule that maps to REFRESH EVERY, fires about as often as ``cron`` and starts at its first
    time: the suggestion of a refusal."""
    times = sorted(60 * h + m for h in cron.hours for m in cron.minutes)
    if len(times) > 1:
        return _spaced(times[0], MINUTES_A_DAY // len(times))
    hour, minute = divmod(times[0], 60)
    fires = [d for d in _DAYS if _fires_on(cron, d)] or _DAYS[:1]
    first, a_year = fires[0], len(fires) / 4
    candidates = {  # a schedule for each period, and how often it fires in a year
        f"{minute} {hour} * * *": 365.0,
        f"{minute} {hour} * * {(first.weekday() + 1) % 7}": 52.0,
        f"{minute} {hour} {min(first.day, LAST_DAY_EVERY_MONTH_HAS)} * *": 12.0,
        f"{minute} {hour} {min(first.day, LAST_DAY_EVERY_MONTH_HAS)} {first.month} *": 1.0,
    }
    return min(candidates, key=lambda c: abs(math.log(max(a_year, 0.25) / candidates[c])))


def _spaced(first: int, spacing: int) -> str:
    """A cron every ``period`` minutes from ``first``, for the allowed period nearest ``spacing``."""
    periods = [p for p in range(1, MINUTES_A_DAY + 1) if _even_period(range(0, MINUTES_A_DAY, p)) == p]
    period = min(periods, key=lambda p: (abs(p - spacing), p))
    start = first % period
    hour, minute = divmod(start, 60)
    if period < 60:
        return f"{'*' if minute == 0 else minute}/{period} * * * *"
    if period == 60:
        return f"{minute} * * * *"
    if period == MINUTES_A_DAY:
        return f"{minute} {hour} * * *"
    return f"{minute} {'*' if hour == 0 else hour}/{period // 60} * * *"
