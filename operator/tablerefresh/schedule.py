"""CronJob schedules: exactly what Kubernetes accepts in ``CronJob.spec.schedule``, and when it fires.

Kubernetes checks a CronJob's schedule with ``cron.ParseStandard`` from robfig/cron v3 and refuses
any schedule containing ``TZ`` (``validateScheduleFormat`` in pkg/apis/batch/validation). croniter
accepts more (``L``, ``#``, ``H``, ...), so a TableRefresh used to pass and its CronJob fail.
:func:`parse` follows ParseStandard step by step, odd corners included:

- five fields split on Go's Unicode whitespace, or a string starting with ``@``: one of the
  descriptors below verbatim, or ``@every `` and a Go duration (negative or below 1s means 1s);
- a field is a comma list of ranges, empty items skipped (``,5,,`` is 5; ``,`` alone never fires);
- a range is ``*`` or ``?`` (whatever follows a ``-`` after them is ignored: ``*-x`` is ``*``),
  ``N`` or ``N-M``, each with an optional ``/STEP``; ``N/STEP`` runs from N to the field's maximum;
- numbers are Go's ``strconv.Atoi``: ``+5`` and ``005`` are 5; month and weekday names are
  Go-lower-cased (``JAN``, ``fr\u0130``); day of week is 0-6 (7 is refused).

The CRD gets :data:`CEL_RULES`, built from the same tables: :data:`PATTERN` for the shape and every
number's bounds, then what a regular expression cannot say: no ``TZ``, ranges in order, steps and
``@every`` durations that fit Go's int64. Where they cannot follow Kubernetes exactly, they refuse:
schedules over :data:`MAX_LENGTH` characters (the model too), and ``@every`` durations within a few
hundred nanoseconds below 2**63 ns, which CEL sums in float64.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

# Schedules longer than this are refused; Kubernetes has no limit, the CEL cost estimate needs one.
MAX_LENGTH = 256


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is low + i

    def describe(self) -> str:
        return f"{self.name} field"


FIELDS = (
    Field("minute", 0, 59),
    Field("hour", 0, 23),
    Field("day of month", 1, 31),
    Field("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    Field("day of week", 0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
# robfig's descriptors build the same bit sets as these expressions (star bits included).
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
EVERY = "@every "
# Go's unicode.IsSpace, which strings.Fields splits on (Python's str.split also splits on \x1c-\x1f).
GO_SPACE = ((0x9, 0xD), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
            (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000))  # fmt: skip
# The only non-ASCII runes Go's strings.ToLower turns into ASCII letters.
GO_LOWER_TO_ASCII = {"\u0130": "i", "\u212a": "k"}
# time.ParseDuration's units, in nanoseconds.
DURATION_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                  "h": 3600 * 10**9}  # fmt: skip
INT64_MAX = 2**63 - 1  # Go's int on the 64-bit platforms Kubernetes runs on


class ScheduleError(ValueError):
    """A schedule Kubernetes would refuse; the message says what is wrong."""


@dataclass(frozen=True)
class Every:
    """``@every <duration>``: a run every ``seconds`` after the previous one (never less than 1)."""

    seconds: int


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday
    # robfig: when the day-of-month or day-of-week field has a '*' or '?' (unstepped, or step 1)
    # a day must match both fields; otherwise matching either is enough (cron(8)'s rule).
    both_days: bool

    def day_matches(self, day: date) -> bool:
        in_month = day.day in self.days
        in_week = (day.weekday() + 1) % 7 in self.weekdays
        return in_month and in_week if self.both_days else in_month or in_week


Schedule = Cron | Every


def validate(schedule: str) -> str:
    """``schedule`` when Kubernetes accepts it in a CronJob; ScheduleError saying why not otherwise."""
    parse(schedule)
    return schedule


def parse(schedule: str) -> Schedule:
    if not schedule:
        raise ScheduleError("must not be empty")
    if "TZ" in schedule:  # Kubernetes refuses "TZ" anywhere, not only a TZ=/CRON_TZ= prefix
        raise ScheduleError("cannot use TZ or CRON_TZ in the schedule; set spec.timeZone instead")
    if schedule.startswith("@"):
        return _descriptor(schedule)
    return _fields(schedule)


def _descriptor(schedule: str) -> Schedule:
    if schedule in DESCRIPTORS:
        return _fields(DESCRIPTORS[schedule])
    if schedule.startswith(EVERY):
        nanoseconds = max(go_duration(schedule[len(EVERY) :]), 10**9)
        return Every(nanoseconds // 10**9)
    known = ", ".join(DESCRIPTORS)
    raise ScheduleError(f"unknown descriptor {schedule!r}: use one of {known} or '@every <duration>'")


_SPLIT = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in GO_SPACE) + "]+")


def _fields(schedule: str) -> Cron:
    texts = [t for t in _SPLIT.split(schedule) if t]
    if len(texts) != len(FIELDS):
        raise ScheduleError(
            f"expected 5 fields (minute hour day-of-month month day-of-week) or a descriptor such as "
            f"@hourly, found {len(texts)}"
        )
    parsed = [_field(text, field) for text, field in zip(texts, FIELDS, strict=True)]
    (minutes, _), (hours, _), (days, day_star), (months, _), (weekdays, weekday_star) = parsed
    return Cron(minutes, hours, days, months, weekdays, both_days=day_star or weekday_star)


def _field(text: str, field: Field) -> tuple[frozenset[int], bool]:
    """The values of one field and whether robfig set its star bit."""
    values: set[int] = set()
    star = False
    for expr in (e for e in text.split(",") if e):
        found, starred = _range(expr, field)
        values |= found
        star = star or starred
    return frozenset(values), star


def _range(expr: str, field: Field) -> tuple[set[int], bool]:
    where = field.describe()
    range_and_step = expr.split("/")
    low_high = range_and_step[0].split("-")
    star = low_high[0] in ("*", "?")
    if star:
        start, end = field.low, field.high  # robfig ignores whatever follows "*-"
    else:
        start = _value(low_high[0], field)
        if len(low_high) > 2:
            raise ScheduleError(f"{where}: too many hyphens in {expr!r}")
        end = _value(low_high[1], field) if len(low_high) == 2 else start
    step = 1
    if len(range_and_step) > 2:
        raise ScheduleError(f"{where}: too many slashes in {expr!r}")
    if len(range_and_step) == 2:
        step = _step(range_and_step[1], expr, where)
        if len(low_high) == 1:
            end = field.high  # N/STEP means N-max/STEP
        star = star and step == 1
    _check_bounds(start, end, expr, field)
    return set(range(start, end + 1, step)), star


def _check_bounds(start: int, end: int, expr: str, field: Field) -> None:
    where = field.describe()
    if start < field.low:
        raise ScheduleError(f"{where}: {start} is below {field.low}")
    if start > field.high or end > field.high:
        raise ScheduleError(f"{where}: {max(start, end)} is above {field.high}")
    if start > end:
        raise ScheduleError(f"{where}: range {expr!r} starts after it ends")


def _value(text: str, field: Field) -> int:
    lowered = go_lower(text)
    if lowered in field.names:
        return field.low + field.names.index(lowered)
    number = go_atoi(text)
    if number is None:
        also = f" or a name such as {field.names[0]}" if field.names else ""
        raise ScheduleError(f"{field.describe()}: {text!r} is not a number{also}")
    if number < 0:  # unreachable through "-" splitting, kept as robfig has it
        raise ScheduleError(f"{field.describe()}: {number} is negative")
    return number


def _step(text: str, expr: str, where: str) -> int:
    step = go_atoi(text)
    if step is None:
        raise ScheduleError(f"{where}: step {text!r} in {expr!r} is not a number that fits in 64 bits")
    if step <= 0:
        raise ScheduleError(f"{where}: step in {expr!r} must be at least 1")
    return step


def go_atoi(text: str) -> int | None:
    """Go's strconv.Atoi: an optional sign and ASCII digits, within int64; None when it fails."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):  # int() would also take "1_0", " 5" and other digits
        return None
    number = int(text)
    return number if -INT64_MAX - 1 <= number <= INT64_MAX else None


def go_lower(text: str) -> str:
    """Go's strings.ToLower, as far as it can produce an ASCII name."""
    return "".join(GO_LOWER_TO_ASCII.get(c, c.lower() if c.isascii() else c) for c in text)


def go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds, step by step, overflow checks included."""

    def bad(problem: str) -> ScheduleError:
        return ScheduleError(f"@every: {text!r} is not a Go duration such as 90m or 1h30m ({problem})")

    negative, rest = text[:1] == "-", text[1:] if text[:1] in ("-", "+") else text
    if rest == "0":
        return 0
    if not rest:
        raise bad("empty")
    total = 0
    while rest:
        number = re.match(r"([0-9]*)(?:\.([0-9]*))?", rest)
        unit = re.match(r"[^0-9.]*", rest[number.end() :]) if number else None
        assert number is not None and unit is not None  # both can match nothing
        whole, fraction, rest = number.group(1), number.group(2), rest[number.end() + unit.end() :]
        if not whole and not fraction:
            raise bad("a number must come first")
        if not unit.group():
            raise bad("missing unit")
        if unit.group() not in DURATION_UNITS:
            raise bad(f"unknown unit {unit.group()!r}")
        total += _duration_part(whole, fraction or "", DURATION_UNITS[unit.group()])
        if total > 2**63:
            raise bad("out of range")
    if not negative and total > INT64_MAX:
        raise bad("out of range")
    return -total if negative else total


def _duration_part(whole: str, fraction: str, unit: int) -> int:
    """One number and unit of a duration in nanoseconds; above 2**63 when Go finds it too large."""
    value = _go_leading_int(whole)
    if value is None or value > 2**63 // unit:
        return 2**63 + 1
    value *= unit
    digits, scale = _go_leading_fraction(fraction)
    if digits > 0:
        value += int(float(digits) * (float(unit) / scale))  # Go does this step in float64
    return value


def _go_leading_int(digits: str) -> int | None:
    value = 0
    for c in digits:
        if value > 2**63 // 10:
            return None
        value = value * 10 + int(c)
        if value > 2**63:
            return None
    return value


def _go_leading_fraction(digits: str) -> tuple[int, float]:
    """Go stops taking digits where they would overflow, and keeps going without them."""
    value, scale = 0, 1.0
    for c in digits:
        if value > INT64_MAX // 10 or value * 10 + int(c) > 2**63:
            break
        value, scale = value * 10 + int(c), scale * 10
    return value, scale


# When it fires.


def fire_times(schedule: Cron, start: datetime, days: int) -> Iterator[datetime]:
    """The times after ``start`` (aware, in the schedule's zone) on ``days`` local days, in UTC, in order.

    A local time that does not exist (the hour DST skips) does not fire, one that happens twice
    fires twice, as robfig's Next does. (Around a half-hour DST shift, as on Lord Howe Island,
    robfig steps whole hours and misses some times that exist; this does not.)
    """
    zone = start.tzinfo
    assert zone is not None
    for offset in range(days):
        day = start.date() + timedelta(days=offset)
        if day.month not in schedule.months or not schedule.day_matches(day):
            continue
        instants = {
            _instant(datetime.combine(day, time(hour, minute)), zone, fold)
            for hour in schedule.hours
            for minute in schedule.minutes
            for fold in (0, 1)
        }
        yield from sorted(t for t in instants if t is not None and t > start)


def _instant(local: datetime, zone: tzinfo, fold: int) -> datetime | None:
    moment = local.replace(tzinfo=zone, fold=fold).astimezone(UTC)
    return moment if moment.astimezone(zone).replace(tzinfo=None) == local else None


# The CRD's rules, built from the tables above. They are CEL (not the schema's pattern, whose
# error message would quote the whole expression), with regular expressions in the RE2 syntax the
# API server compiles them with. RE2's (?i) folds U+017F (long s) into 's', which Go's ToLower
# does not, and misses U+0130, which ToLower makes an 'i': those letters get explicit classes.
RE2_FOLDS = {"k": "\u212a", "s": "\u017f"}  # ASCII letters whose RE2 case folding has a third member
# Go's unicode.IsSpace: \t-\r, NEL and every Unicode separator (Zs, Zl, Zp).
SPACE = r"[\t-\r\x{85}\pZ]"


def _char(c: str) -> str:
    return c if c.isascii() else f"\\x{{{ord(c):X}}}"


def _digits(low: int, high: int) -> str:
    return str(low) if low == high else f"[{low}{high}]" if high == low + 1 else f"[{low}-{high}]"


def _decimal(low: int, high: int) -> str:
    """Numbers from low to high without leading zeros, e.g. 0-59 -> [0-9]|[1-5][0-9]."""
    assert 0 <= low <= high < 100
    parts = [_digits(low, min(high, 9))] if low < 10 else []
    tens = range(max(low, 10) // 10, high // 10 + 1)
    full = [t for t in tens if 10 * t >= low and 10 * t + 9 <= high]  # consecutive
    if full:
        parts.append(f"{_digits(full[0], full[-1])}[0-9]")
    parts += [f"{t}{_digits(max(low, 10 * t) % 10, min(high, 10 * t + 9) % 10)}" for t in tens if t not in full]
    return "|".join(parts)


def _letter_class(letter: str) -> str | None:
    """An explicit class for a letter where RE2's (?i) and Go's ToLower disagree, else None."""
    go = {letter, letter.upper(), *(c for c, lower in GO_LOWER_TO_ASCII.items() if lower == letter)}
    re2 = {letter, letter.upper(), *RE2_FOLDS.get(letter, "")}
    return None if go == re2 else "[" + "".join(_char(c) for c in sorted(go)) + "]"


def _name(name: str) -> str:
    r"""One name, e.g. sep -> [Ss](?i:ep), fri -> (?i:fr)[Ii\x{130}]."""
    parts: list[str] = []
    for c in name:
        special = _letter_class(c)
        if special:
            parts.append(special)
        elif parts and parts[-1].startswith("(?i:"):
            parts[-1] = parts[-1][:-1] + c + ")"
        else:
            parts.append(f"(?i:{c})")
    return "".join(parts)


def _names(names: tuple[str, ...]) -> list[str]:
    """Alternatives for names: (?i:jan|feb|...) for those (?i) gets right, the others one by one."""
    plain = [n for n in names if all(_letter_class(c) is None for c in n)]
    others = [_name(n) for n in names if n not in plain]
    return ([f"(?i:{'|'.join(plain)})"] if plain else []) + others


def _value_pattern(field: Field) -> str:
    return "|".join([rf"\+?0*(?:{_decimal(field.low, field.high)})", *_names(field.names)])


def _field_pattern(field: Field) -> str:
    value = f"(?:{_value_pattern(field)})"
    star = rf"[*?](?:-[^,/{SPACE[1:-1]}]*)?"  # whatever follows "*-" is ignored
    step = r"/\+?0*[1-9][0-9]*"  # Atoi: a sign, leading zeros; 0 is refused, its size is a CEL rule
    one = f"(?:{star}|{value}(?:-{value})?)(?:{step})?"
    return f",*{one}(?:,+{one})*,*|,+"  # empty items are skipped, but two ranges need a comma


def _duration_part_pattern() -> str:
    """A number and a unit of a Go duration, e.g. 1.5h."""
    units = "|".join("".join(map(_char, u)) for u in sorted(DURATION_UNITS, key=len, reverse=True))
    return rf"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:{units})"


def _pattern() -> str:
    descriptors = "@(?:" + "|".join(d.removeprefix("@") for d in DESCRIPTORS) + ")"
    fields = f"{SPACE}+".join(f"(?:{_field_pattern(f)})" for f in FIELDS)
    every = rf"{EVERY}[-+]?(?:0|(?:{_duration_part_pattern()})+)"
    return f"^(?:{descriptors}|{every}|{SPACE}*{fields}{SPACE}*)$"


# The shape of a schedule and each number's bounds.
PATTERN = _pattern()


def _cel_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + "".join(c if c.isascii() else f"\\u{ord(c):04x}" for c in escaped) + "'"


def _cel_ranges_in_order() -> str:
    # Each N-M right after a comma or a space (one is put before the schedule), so never the ignored
    # tail of a "*-..." range. Bounds are matched as the pattern allows them, so int() and the name
    # lookup cannot fail even on a schedule the pattern refuses. split(_, 2) and substring() keep
    # the cost estimate linear in the schedule's length.
    names = {n: f.low + i for f in FIELDS for i, n in enumerate(f.names)}  # month and day names differ
    bound = "(?:" + "|".join([r"\+?0*[0-9]{1,2}", *_names(tuple(names))]) + ")"
    table = "{" + ", ".join(f"'{n}': {v}" for n, v in names.items()) + "}"
    lowered = "t.lowerAscii()" + "".join(
        f".replace({_cel_string(c)}, '{lower}')" for c, lower in GO_LOWER_TO_ASCII.items()
    )
    value = f"t.matches('^[+0-9]') ? int(t) : {table}[{lowered}]"
    ranges = f"[,{SPACE[1:-1]}]{bound}-{bound}"
    in_order = f"r.substring(1).split('-', 2).map(t, {value}).isSorted()"
    return f"self.startsWith('@') || (' ' + self).findAll({_cel_string(ranges)}).all(r, {in_order})"


def _cel_steps_fit() -> str:
    # Atoi refuses a step above 9223372036854775807; decimal strings of one length compare as numbers.
    steps = r"/\+?0*[1-9][0-9]{18,}"
    digits = "s.find('[1-9][0-9]*')"
    return f"self.findAll({_cel_string(steps)}).all(s, {digits}.size() == 19 && {digits} <= '{INT64_MAX}')"


def _cel_every_fits() -> str:
    # The sum of the duration's parts in float64, where Go counts in integers: durations within a
    # few hundred nanoseconds below 2**63 ns (292 years) round up to 2**63 and are refused although
    # Go takes them (and -2**63). Refusing there keeps the CRD from ever taking what Go refuses.
    per_unit = "{" + ", ".join(f"{_cel_string(u)}: {float(n)!r}" for u, n in DURATION_UNITS.items()) + "}"
    nanoseconds = f"double(p.find('^[0-9.]+')) * {per_unit}[p.find('[^0-9.]+$')]"
    total = f"self.findAll({_cel_string(_duration_part_pattern())}).map(p, {nanoseconds}).sum()"
    return f"!self.startsWith({_cel_string(EVERY)}) || {total} < {float(2**63)!r}"


def _syntax() -> str:
    fields = ", ".join(
        f"{f.name} {f.low}-{f.high}" + (f" or {f.names[0]}-{f.names[-1]}" if f.names else "") for f in FIELDS
    )
    descriptors = ", ".join(d for d in DESCRIPTORS if d not in ("@annually", "@midnight"))
    return (
        f"must be a schedule a Kubernetes CronJob accepts: 5 fields ({fields}), each a comma list of *, ?, "
        f"N or N-M with an optional /step; or {descriptors} or @every <duration> such as 1h30m"
    )


CEL_RULES: list[dict[str, str]] = [
    {"rule": f"self.matches({_cel_string(PATTERN)})", "message": _syntax()},
    {"rule": "!self.contains('TZ')", "message": "cannot use TZ or CRON_TZ in the schedule; set spec.timeZone instead"},
    {"rule": _cel_ranges_in_order(), "message": "a range must not start after it ends, as 5-1 does"},
    {"rule": _cel_steps_fit(), "message": f"a step must be at most {INT64_MAX}"},
    {"rule": _cel_every_fits(), "message": "an @every duration must be under 2562047h47m16.854775808s (2**63 ns)"},
]
