"""What the crash tests share on top of ``crash_helper``: set up a target on an engine, and read what
a killed run left there (test_crash.py, test_incremental_crash.py, test_concurrent_processes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests import crash_helper
from tests.engines import ProcessEngine


def set_up(engine: ProcessEngine, **kwargs: Any) -> Path:
    manifest = engine.home / "manifest.yaml"
    engine.call(crash_helper.setup, engine.url, engine.database, str(manifest), *kwargs.values())
    return manifest


def probe(engine: ProcessEngine) -> dict[str, Any]:
    found: dict[str, Any] = engine.call(crash_helper.probe, engine.database)
    return found


def expected(engine: ProcessEngine, window_start: int) -> list[int]:
    found: list[int] = engine.call(crash_helper.expected, engine.database, window_start)["checksum"]
    return found


def change(engine: ProcessEngine, window_start: int) -> tuple[list[int], list[int]]:
    """New source data; then the target's checksum (what a killed run must leave) and what the next
    run must build (for ``window_start``), from one helper process."""
    _, found, now = engine.calls(
        (crash_helper.change, engine.database),
        (crash_helper.probe, engine.database),
        (crash_helper.expected, engine.database, window_start),
    )
    return found["checksum"], now["checksum"]
