"""Times, durations and numbers as a person reads them. Pure."""

from __future__ import annotations

from datetime import datetime


def duration(seconds: float | None) -> str:
    """``42s``, ``3m10s``, ``5h02m``, ``2d4h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = int(abs(seconds))
    if abs(seconds) < 10:
        return f"{abs(seconds):.1f}s"
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 1:  # the writer's clock and ours round differently: not "in 0.7s"
        return "just now"
    return f"in {duration(-seconds)}" if seconds < 0 else f"{duration(seconds)} ago"


def until(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    return f"in {duration(seconds)}" if seconds >= 0 else f"{duration(-seconds)} ago"


def hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}h"


def count(value: int | float | None) -> str:
    return "-" if value is None else f"{int(value):,}"


_IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: int | float | None) -> str:
    """Bytes in binary units, as ClickHouse's formatReadableSize and kubectl's Gi: ``1.4 GiB``, ``512 MiB``,
    ``8 GiB``; ``-`` when unknown."""
    if value is None:
        return "-"
    amount, unit = float(value), 0
    while abs(amount) >= 1024 and unit < len(_IEC) - 1:
        amount, unit = amount / 1024, unit + 1
    if unit == 0:
        return f"{int(amount)} B"
    shown = f"{amount:.0f}" if abs(amount) >= 100 else f"{amount:.1f}".removesuffix(".0")
    return f"{shown} {_IEC[unit]}"


def parse_time(text: object) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
