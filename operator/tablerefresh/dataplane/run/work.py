"""What a run cost the engine: its peak memory and the rows and bytes its statements read and wrote,
carried in the run record (``peakMemoryBytes``, ``readRows``, ``readBytes``, ``writtenRows``,
``writtenBytes``) so a team sees a run's headroom shrink before the first ``MEMORY_LIMIT_EXCEEDED``
or OOMKill.

A server reports each statement's cost with its answer (``X-ClickHouse-Summary``, which
clickhouse-connect returns as the summary). The run adds up those of the statements it executes to
build, carry over and swap rows (``RunContext.execute``), where nearly all of its memory and I/O go;
its checks read more, and are not counted. The embedded engine reports neither memory nor written
rows, so there the peak is the refresh process's own (the engine runs inside it, so its peak RSS
bounds the engine's), and the rows and bytes are unknown (null).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_COUNTS = ("read_rows", "read_bytes", "written_rows", "written_bytes")


@dataclass
class Work:
    peak_memory_bytes: int | None = None
    read_rows: int | None = None
    read_bytes: int | None = None
    written_rows: int | None = None
    written_bytes: int | None = None

    def add(self, summary: Mapping[str, Any]) -> None:
        """One statement's summary, as a server sent it; a figure it lacks stays as it was."""
        memory = _figure(summary, "memory_usage")
        if memory is not None:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, memory)
        for name in _COUNTS:
            value = _figure(summary, name)
            if value is not None:
                setattr(self, name, (getattr(self, name) or 0) + value)


def _figure(summary: Mapping[str, Any], name: str) -> int | None:
    """A figure of a summary (a server sends them as strings); None when absent or not a number
    (a negative ``memory_usage`` is a statement that freed more than it took: no peak)."""
    try:
        value = int(summary[name])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value >= 0 else None


def process_peak_memory() -> int:
    """This process's peak resident memory, in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
