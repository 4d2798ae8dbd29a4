"""A TableRefresh -> "is my table healthy, and if not, why", as data and as a few lines. Pure.

Everything comes from the object itself (its spec, with the defaults the model gives, and the status
the operator wrote): Ready and its reason, staleness against maxStaleHours, duplicates against
maxDuplicates, slice rows against minSliceRows, the last run and the next one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from tablerefresh.contract import Outcome
from tablerefresh.controller.policy.status import READY_INPUTS
from tablerefresh.plugin.words import ago, count, duration, hours, parse_time, size, until
from tablerefresh.schedule import Every, ScheduleError, fire_times, parse
from tablerefresh.spec import TableRefreshSpec, memory_limit_bytes


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return next((dict(c) for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _spec(raw: Mapping[str, Any]) -> TableRefreshSpec | None:
    try:
        return TableRefreshSpec.model_validate(raw)
    except ValidationError:
        return None  # the operator reports an invalid spec in Ready; show what is there


# Days of fire times looked at: a schedule may fire once in four years (29 February), or never.
_HORIZON_DAYS = 9 * 366


def next_run(schedule: str, time_zone: str, now: datetime) -> datetime | None:
    """When the CronJob fires next (as Kubernetes reads the schedule); None if never or unreadable."""
    try:
        parsed = parse(schedule)
        zone = ZoneInfo(time_zone)
    except (ScheduleError, ValueError, KeyError):
        return None
    if isinstance(parsed, Every):  # counted from the last run; from now is the best guess here
        return now + timedelta(seconds=parsed.seconds)
    return next(fire_times(parsed, now.astimezone(zone), _HORIZON_DAYS), None)


def summarize(tr: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The answer as data (``-o json``)."""
    meta, raw, status = tr["metadata"], tr.get("spec") or {}, tr.get("status") or {}
    spec = _spec(raw)
    health = status.get("health") or {}
    ready = _condition(status, "Ready")
    duplicates = [int(health[k]) for k in ("sliceDuplicates", "tableDuplicates") if health.get(k) is not None]
    suspended = bool(raw.get("suspend"))
    schedule = str(raw.get("schedule") or "")
    zone = spec.time_zone if spec else str(raw.get("timeZone") or "UTC")
    upcoming = None if suspended or not schedule else next_run(schedule, zone, now)
    last = status.get("lastRun") or {}
    problems = [
        {"type": kind, "status": c.get("status"), "reason": c.get("reason"), "message": c.get("message")}
        for kind in READY_INPUTS  # the order Ready reads them: the order a person asks about them
        if (c := _condition(status, kind)) and c.get("status") != "True"
    ]
    database = spec.clickhouse.database if spec else (raw.get("clickhouse") or {}).get("database", "default")
    # From the manifest as written, so a spec that does not validate still shows its limit.
    settings = (raw.get("clickhouse") or {}).get("settings") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "table": f"{database}.{(raw.get('target') or {}).get('table', '?')}",
        "ready": {k: ready.get(k) for k in ("status", "reason", "message")},
        "healthy": ready.get("status") == "True",
        "staleHours": health.get("staleHours"),
        "maxStaleHours": spec.thresholds.max_stale_hours if spec else None,
        "duplicates": max(duplicates) if duplicates else None,
        "maxDuplicates": spec.thresholds.max_duplicates if spec else None,
        "sliceRows": health.get("sliceRows"),
        "minSliceRows": spec.thresholds.min_slice_rows if spec else None,
        "checkedAt": health.get("checkedAt"),
        "healthError": health.get("error"),
        "lastRun": dict(last) or None,
        "memoryLimitBytes": memory_limit_bytes(settings) if isinstance(settings, Mapping) else None,
        "lastSuccessfulRunTime": status.get("lastSuccessfulRunTime"),
        "lastFailureTime": status.get("lastFailureTime"),
        "recentRuns": list(status.get("recentRuns") or []),
        "schedule": schedule,
        "timeZone": zone,
        "suspended": suspended,
        "nextRun": upcoming.strftime("%Y-%m-%dT%H:%M:%SZ") if upcoming else None,
        "problems": problems,
    }


def _versus(value: str, limit: str, bad: bool | None) -> str:
    verdict = "" if bad is None else ("  over" if bad else "  ok")
    return f"{value} (threshold {limit}){verdict}"


def _memory(last: Mapping[str, Any] | None, limit: int | None) -> str | None:
    """``1.4 GiB (62% of max_memory_usage 8 GiB)``: the last run's peak, and its share of the limit when
    the manifest sets one; None when the run's engine did not report it."""
    peak = (last or {}).get("peakMemoryBytes")
    if not isinstance(peak, int | float) or isinstance(peak, bool):
        return None
    words = size(peak)
    if limit:
        words += f" ({peak / limit:.0%} of max_memory_usage {size(limit)})"
    return words


def _last_run(last: Mapping[str, Any] | None, now: datetime) -> str:
    if not last:
        return "none yet"
    when = ago(parse_time(last.get("completionTime")), now)
    words = (
        f"{last.get('outcome', '?')} {when}, Job {last.get('jobName')}, took {duration(last.get('durationSeconds'))}"
    )
    if "rowsBefore" in last and "rowsAfter" in last:
        words += f", {count(last['rowsBefore'])} -> {count(last['rowsAfter'])} rows"
    if last.get("outcome") != Outcome.SUCCEEDED:
        error = str(last.get("error") or "").strip()
        first = error.splitlines()[0][:200] if error else ""
        words += f"\n              {last.get('reason', '')}: {first}"
        if last.get("evidenceTable"):
            words += f"\n              what it would have published: table {last['evidenceTable']}"
    return words


def _recent(runs: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """The last runs, newest first: ``Failed 2h (OOMKilled), Succeeded 8h, ...``."""
    words = [f"{r.get('outcome')} {ago(parse_time(r.get('finished')), now)}" for r in runs]
    return ", ".join(w + (f" ({r['reason']})" if r.get("reason") else "") for w, r in zip(words, runs, strict=True))


def describe(s: Mapping[str, Any], now: datetime) -> list[str]:
    """The answer in a few lines (``kubectl tablerefresh status NAME``)."""
    ready = s["ready"]
    state = ready.get("status") or "Unknown"
    why = f"{ready.get('reason')}: {ready.get('message')}" if ready.get("reason") else "not reconciled yet"
    stale, dups, rows = s["staleHours"], s["duplicates"], s["sliceRows"]
    limits = (s["maxStaleHours"], s["maxDuplicates"], s["minSliceRows"])
    lines = [
        f"{s['namespace']}/{s['name']}  table {s['table']}",
        f"Ready:        {state}  {why}",
        "Staleness:    "
        + _versus(hours(stale), hours(limits[0]), None if stale is None or limits[0] is None else stale > limits[0]),
        "Duplicates:   "
        + _versus(count(dups), count(limits[1]), None if dups is None or limits[1] is None else dups > limits[1]),
        "Slice rows:   "
        + _versus(
            count(rows), "min " + count(limits[2]), None if rows is None or limits[2] is None else rows < limits[2]
        ),
    ]
    if s["healthError"]:
        lines.append(f"Health check: failed {ago(parse_time(s['checkedAt']), now)}: {s['healthError'][:200]}")
    else:
        lines.append(f"Checked:      {ago(parse_time(s['checkedAt']), now)}")
    lines.append(f"Last run:     {_last_run(s['lastRun'], now)}")
    if (memory := _memory(s["lastRun"], s.get("memoryLimitBytes"))) is not None:
        lines.append(f"Peak memory:  {memory}")
    if s["lastRun"] and s["lastRun"].get("outcome") != Outcome.SUCCEEDED:
        lines.append(f"Last success: {ago(parse_time(s['lastSuccessfulRunTime']), now)}")
    if len(s["recentRuns"]) > 1:
        lines.append(f"Recent runs:  {_recent(s['recentRuns'], now)}")
    next_words = "suspended" if s["suspended"] else until(parse_time(s["nextRun"]), now)
    lines.append(f"Next run:     {next_words} ({s['schedule']} {s['timeZone']})")
    # Ready repeats the first problem; the others follow it.
    others = [p for p in s["problems"] if (p["reason"], p["message"]) != (ready.get("reason"), ready.get("message"))]
    if state != "True" and others:
        lines.append("Not healthy because:")
        lines.extend(f"  {p['type']}={p['status']}  {p['reason']}: {p['message']}" for p in others)
    return lines


def table(summaries: Sequence[Mapping[str, Any]], now: datetime, *, namespaces: bool) -> list[str]:
    """One line per TableRefresh (``kubectl tablerefresh status [-A]``)."""
    header = ["NAME", "READY", "REASON", "STALE", "DUPS", "SLICE ROWS", "LAST RUN", "NEXT RUN"]
    rows = []
    for s in summaries:
        last = s["lastRun"] or {}
        last_words = f"{last.get('outcome')} {ago(parse_time(last.get('completionTime')), now)}" if last else "-"
        row = [
            s["name"],
            s["ready"].get("status") or "Unknown",
            s["ready"].get("reason") or "-",
            f"{hours(s['staleHours'])}/{hours(s['maxStaleHours'])}",
            f"{count(s['duplicates'])}/{count(s['maxDuplicates'])}",
            count(s["sliceRows"]),
            last_words,
            "suspended" if s["suspended"] else until(parse_time(s["nextRun"]), now),
        ]
        rows.append([s["namespace"], *row] if namespaces else row)
    if namespaces:
        header = ["NAMESPACE", *header]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
