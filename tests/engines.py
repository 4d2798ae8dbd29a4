"""One test body, both engines: the embedded engine (chDB, inside the refresh's own process) and the
same engine served over ClickHouse's own HTTP interface (``tests/served_engine.py``: a server in a
process of its own, the refresh its client, with a password user), as a deployed Job meets it.

- ``engine`` (fixture, ``tests/conftest.py``): clients for the test's own process and the URL a
  refresh in this process uses. Embedded: the session's chDB path. Served: the session's server,
  as ``alice`` (her credentials are also in ``CLICKHOUSE_USER``/``CLICKHOUSE_PASSWORD`` for the test,
  so the commands run in-process through ``tablerefresh.cli.main`` authenticate as a Job does).
- ``engine_for_processes`` (fixture): an engine that refreshes in processes of their own reach.
  Embedded: a fresh chDB path of the test's, which the test's own process never opens (one process
  at a time may open a path, so the test's SQL runs in a helper process each time, taking its turn).
  Served: the session's server, which any number of processes reach at once; the test's SQL runs
  from its own client.

A test opts into both with ``@pytest.mark.engines`` (module-wide with ``pytestmark``), ids
``embedded`` and ``served``; without it, it runs on the embedded engine as before. Variants beyond
the representative subset that CI runs are marked ``full_matrix``: deselected unless
``TABLEREFRESH_FULL_MATRIX=1`` (see ``conftest.pytest_collection_modifyitems``).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.connection import connect
from tablerefresh.spec import TableRefreshSpec

EMBEDDED, SERVED = "embedded", "served"
ENGINES = (EMBEDDED, SERVED)
# The served engine's password user the tests work as (served_engine in conftest creates her).
USER = "alice"
FULL_MATRIX_ENV = "TABLEREFRESH_FULL_MATRIX"
ROOT = Path(__file__).resolve().parent.parent


def full_matrix(*values: Any) -> Any:
    """A parameter set (an engine first, or an engine alone) that runs only in the full matrix, not
    in CI's subset: marked ``full_matrix`` and ``slow``."""
    return pytest.param(*values, marks=[pytest.mark.full_matrix, pytest.mark.slow])


@dataclass
class Engine:
    """Where a test's ClickHouse runs: ``url`` for a refresh, ``env`` for a refresh process's
    credentials, ``client()`` for the test's own SQL (closed after the test)."""

    name: str
    url: str
    env: dict[str, str]
    _open: Callable[[], Client] = field(repr=False)
    _made: list[Client] = field(default_factory=list, repr=False)

    @property
    def served(self) -> bool:
        return self.name == SERVED

    def client(self, database: str | None = None) -> Client:
        made = self._open()
        if database is not None:
            made.database = database
        self._made.append(made)
        return made

    def close(self) -> None:
        _close(self._made)


def _close(clients: list[Client]) -> None:
    """Close the clients, and their idle keep-alive connections: a served engine's stop would wait
    for those (seconds)."""
    for made in clients:
        close_connections = getattr(made, "close_connections", None)  # as in tests/served_engine.py
        if close_connections is not None:
            close_connections()
        made.close()
    clients.clear()


def embedded_engine(url: str) -> Engine:
    return Engine(EMBEDDED, url, {}, lambda: connect(url))


def served_clients(url: str, env: dict[str, str]) -> Callable[[], Client]:
    """New clients on a served engine as the user ``env`` names, connected as a refresh connects."""
    user, password = env["CLICKHOUSE_USER"], env["CLICKHOUSE_PASSWORD"]
    return lambda: connect(url, username=user, password=password)


def served_engine_as(url: str, env: dict[str, str]) -> Engine:
    return Engine(SERVED, url, dict(env), served_clients(url, env))


@dataclass
class ProcessEngine:
    """An engine reached by refreshes in processes of their own (``engine_for_processes``), with a
    database name of the test's own (``database``: not created; dropped after the test) and a
    directory for the processes' ``HOME``."""

    name: str
    url: str
    env: dict[str, str]
    database: str
    home: Path
    _client: Callable[[], Client] | None = field(default=None, repr=False)
    _made: list[Client] = field(default_factory=list, repr=False)

    @property
    def served(self) -> bool:
        return self.name == SERVED

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(client, *args)`` with a client on this engine, and its (JSON-able) answer: in
        the test's own process on the served engine; on the embedded one in a helper process
        (``python -m tests.engines``), which waits its turn for the path and lets go of it after."""
        return self.calls((function, *args))[0]

    def calls(self, *steps: tuple[Any, ...]) -> list[Any]:
        """Each ``(function, *args)`` of ``steps`` in turn, as ``call`` runs one, and their answers;
        on the embedded engine in one helper process (each costs a second of engine start-up)."""
        if self._client is not None:
            made = self._client()
            self._made.append(made)
            return [json.loads(json.dumps(function(made, *args), default=str)) for function, *args in steps]
        named = [[f"{function.__module__}:{function.__qualname__}", list(args)] for function, *args in steps]
        done = subprocess.run(
            [sys.executable, "-m", "tests.engines", self.url, json.dumps(named)],
            cwd=ROOT,
            env=self.process_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise AssertionError(f"{named} on {self.url} failed: {done.stderr[-3000:]}")
        answers: list[Any] = json.loads(done.stdout)
        return answers

    def process_env(self, **extra: str) -> dict[str, str]:
        """The environment of a process of the test's: PATH, the packages, the credentials."""
        pythonpath = os.pathsep.join([str(ROOT / "operator"), str(ROOT)])
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "PYTHONPATH": pythonpath, **self.env, **extra}

    def tablerefresh(
        self, *args: str, failpoint: str | None = None, timeout: float = 300, **popen: Any
    ) -> subprocess.CompletedProcess[str]:
        """``tablerefresh ARGS`` in a process of its own, with this engine's credentials."""
        extra = {"TABLEREFRESH_FAILPOINT": failpoint} if failpoint else {}
        return subprocess.run(
            [sys.executable, "-m", "tablerefresh", *args],
            cwd=ROOT,
            env=self.process_env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            **popen,
        )

    def close(self) -> None:
        if self._client is not None:
            drop = self._client()
            self._made.append(drop)
            drop.command(f"DROP DATABASE IF EXISTS {self.database} SYNC")
        _close(self._made)


def write_manifest(path: Path, spec: TableRefreshSpec, url: str, name: str = "t") -> Path:
    """A TableRefresh manifest at ``path`` for ``spec``, pointed at ``url``."""
    body = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    body["clickhouse"]["url"] = url
    document = {
        "apiVersion": "tablerefresh.dev/v1alpha1",
        "kind": "TableRefresh",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _main(argv: list[str]) -> None:
    """``python -m tests.engines URL '[["module:function", [ARG, ...]], ...]'``: print the answers,
    a JSON list."""
    url, steps = argv
    client = connect(url, connect_timeout=120)
    try:
        answers = []
        for target, args in json.loads(steps):
            module, _, name = target.partition(":")
            answers.append(getattr(importlib.import_module(module), name)(client, *args))
        print(json.dumps(answers, default=str))
    finally:
        client.close()


if __name__ == "__main__":
    _main(sys.argv[1:])
