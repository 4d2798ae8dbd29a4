"""Schedules a CronJob accepts and refuses: the model and the CRD must agree with Kubernetes on each
(test_schedule.py on the model, test_schedule_kube.py on the API server)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from tests.invalid_manifests import VALID


@dataclass(frozen=True)
class Case:
    text: str
    refused: str | None = None  # a piece of the model's message; None: accepted
    crd_refuses_anyway: bool = False  # accepted by Kubernetes and the model, not by the CRD (see schedule.py)

    @property
    def id(self) -> str:
        return ascii(self.text)[1:-1] or "empty"

    def manifest(self) -> dict[str, object]:
        document = copy.deepcopy(VALID)
        document["spec"]["schedule"] = self.text
        return document


ACCEPTED = [
    Case("0 */6 * * *"),
    Case("15 1-5/2 * jan-mar mon-fri"),
    Case("? * * * *"),
    Case("*/15 * * * ?"),
    Case("0 0 1,15 * *"),
    Case("+5 * * * *"),  # strconv.Atoi takes a sign
    Case("005 0 01 * *"),  # and leading zeros
    Case("5/15 * * * *"),  # N/STEP runs from N to the maximum
    Case("59 23 31 12 6"),
    Case("0 0 31 2 *"),  # robfig checks each field alone: valid, and never fires
    Case(", * * * *"),  # empty list items are skipped, even all of them
    Case("1,,2, * * * *"),
    Case("*-whatever * * * *"),  # after "*-" robfig reads nothing
    Case("0 0 * JAN-Dec SUN"),
    Case("0 0 * * fr\u0130"),  # Go lower-cases U+0130 to "i"
    Case("0 0 * * mon-fr\u0130"),
    Case("+05-010 * * * *"),
    Case("\t0  0 * *\u00a0*\n"),  # strings.Fields: Go's Unicode whitespace
    Case("*/9223372036854775807 * * * *"),  # the largest step Atoi takes
    Case("@hourly"),
    Case("@daily"),
    Case("@midnight"),
    Case("@weekly"),
    Case("@monthly"),
    Case("@yearly"),
    Case("@annually"),
    Case("@every 1h30m"),
    Case("@every 1.5h"),
    Case("@every 500ms"),  # rounded up to 1s
    Case("@every -5m"),  # time.ParseDuration takes a sign; below 1s means 1s
    Case("@every 0"),
    Case("@every 2562047h47m16.854775807s", crd_refuses_anyway=True),  # 2**63-1 ns: CEL sums in float64
]


REFUSED = [
    Case("61 * * * *", "minute field: 61 is above 59"),
    Case("0 24 * * *", "hour field: 24 is above 23"),
    Case("0 0 0 * *", "day of month field: 0 is below 1"),
    Case("0 0 32 * *", "day of month field: 32 is above 31"),
    Case("0 0 * 13 *", "month field: 13 is above 12"),
    Case("0 0 * * 7", "day of week field: 7 is above 6"),  # cron(8)'s other Sunday
    Case("0 0 L * *", "day of month field: 'L' is not a number"),
    Case("0 0 * * 1#2", "day of week field: '1#2' is not a number or a name"),
    Case("0 0 * * 5L", "day of week field: '5L' is not a number"),
    Case("H * * * *", "minute field: 'H' is not a number"),
    Case("mon * * * *", "minute field: 'mon' is not a number"),  # names only where they mean something
    Case("0 0 * * \u017fun", "is not a number or a name"),  # RE2's (?i) would take U+017F for "s"; Go does not
    Case("\u0661 * * * *", "is not a number"),  # Python's int() reads Arabic-Indic digits, Atoi does not
    Case("1_0 * * * *", "is not a number"),
    Case("TZ=UTC 0 * * * *", "TZ or CRON_TZ"),
    Case("CRON_TZ=UTC 0 * * * *", "TZ or CRON_TZ"),
    Case("*-TZ * * * *", "TZ or CRON_TZ"),  # Kubernetes refuses "TZ" anywhere
    Case("5-1 * * * *", "range '5-1' starts after it ends"),
    Case("0 0 * dec-jan *", "starts after it ends"),
    Case("0 0 * * fr\u0130-mon", "starts after it ends"),
    Case("+010-05 * * * *", "starts after it ends"),
    Case("1-2-3 * * * *", "too many hyphens"),
    Case("*/2/3 * * * *", "too many slashes"),
    Case("*/0 * * * *", "step in '*/0' must be at least 1"),
    Case("*/-1 * * * *", "must be at least 1"),
    Case("*/9223372036854775808 * * * *", "fits in 64 bits"),
    Case("0 0 0 * * *", "expected 5 fields"),
    Case("0 * * *", "found 4"),
    Case("0\x1c0 * * *", "found 4"),  # \x1c is whitespace to Python, not to Go: 4 fields
    Case(" @hourly", "found 1"),  # a descriptor must start the schedule
    Case("@hourly ", "unknown descriptor"),
    Case("@reboot", "unknown descriptor"),
    Case("@every  1h", "not a Go duration"),
    Case("@every 1d", "unknown unit 'd'"),
    Case("@every 90", "missing unit"),
    Case("@every 2562048h", "out of range"),
    Case("", "at least 1 character"),
    Case("0" * 250 + " * * * *", "at most 256 characters"),  # Kubernetes has no limit; the CRD needs one
]


CASES = ACCEPTED + REFUSED
