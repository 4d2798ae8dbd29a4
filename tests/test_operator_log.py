"""What the operator's log says when ClickHouse cannot be reached: its own warning, once, and the
client libraries' retries and query ids only in the debug log (``logs.quiet_chatter``).

The real health check (``Prober``, clickhouse-connect over urllib3) against a closed loopback port,
run by the controller's own scheduler on a fake API.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from tablerefresh.controller.runtime.controller import Controller
from tablerefresh.controller.runtime.logs import LIBRARIES, quiet_chatter
from tests.controller_fakes import FakeKube, tr_body
from tests.harness.kube import TEST_POLICY


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: a connect is refused


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """``quiet_chatter`` configures loggers for the whole process: put them back for the other tests."""
    names = ("kopf.objects", "aiohttp.access", *LIBRARIES)
    saved = {n: (lg.level, lg.propagate, list(lg.handlers)) for n in names if (lg := logging.getLogger(n))}
    yield
    for name, (level, propagate, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers


def unreachable_check(url: str) -> None:
    """One health check of an object whose ClickHouse refuses connections, until its result is written."""

    async def scenario() -> None:
        controller = Controller(FakeKube(), health_timeout=20, policy=TEST_POLICY)
        record = controller.seen(tr_body(clickhouse={"url": url}))
        task = asyncio.create_task(controller.check_health_forever())
        try:
            async with asyncio.timeout(30):
                while not record.health_failing:  # set once the failed check is written
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def library_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] in LIBRARIES]


def test_at_info_an_unreachable_clickhouse_is_one_warning_of_the_operator_without_client_chatter(
    caplog: pytest.LogCaptureFixture, restore_loggers: None
) -> None:
    caplog.set_level(logging.INFO)
    quiet_chatter()  # as run_operator does, the CLI having set the level
    url = f"clickhouse://127.0.0.1:{closed_port()}"
    unreachable_check(url)

    lines = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records]
    ours = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("tablerefresh.")]
    assert [r.getMessage() for r in ours] == [
        f"ns/trades: health check failed: cannot reach ClickHouse at {url}: connection refused"
    ]
    assert library_records(caplog) == [], lines
    assert not any("query_id" in line or "Retrying" in line for line in lines), lines


def test_with_verbose_the_client_chatter_is_in_the_debug_log(
    caplog: pytest.LogCaptureFixture, restore_loggers: None
) -> None:
    caplog.set_level(logging.DEBUG)
    quiet_chatter()
    unreachable_check(f"clickhouse://127.0.0.1:{closed_port()}")

    chatter = library_records(caplog)
    assert any("Retrying" in r.getMessage() and "query_id" in r.getMessage() for r in chatter), chatter
    assert {r.levelname for r in chatter} == {"DEBUG"}, [(r.levelname, r.getMessage()) for r in chatter]
