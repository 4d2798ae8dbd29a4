"""A real ClickHouse server for the tests: the embedded engine (chDB), served over ClickHouse's own
HTTP and native TCP interfaces by ``tablerefresh.dataplane.server``.

It is the same engine the ``chdb://`` tests run in-process, in a process of its own, answering the
real protocol with password-checked users: not a fake. What it lacks: replication
(ReplicatedMergeTree stays read-only, ``ON CLUSTER`` is refused) and SQL-managed users (``CREATE
USER`` and ``GRANT`` are refused with code 514; users and their grants come from ``users.xml``).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra.connection import PASSWORD_ENV, USER_ENV
from tablerefresh.dataplane.server import ServedEngine, User


@dataclass
class ServedClickHouse:
    """One served engine: its URL, ports, users (name -> password, None for none) and data dir."""

    engine: ServedEngine
    users: dict[str, str | None]
    _clients: list[Client] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return self.engine.url

    @property
    def http_port(self) -> int:
        return self.engine.http_port

    @property
    def tcp_port(self) -> int:
        return self.engine.tcp_port

    @property
    def data_dir(self) -> Path:
        return self.engine.data_dir

    def client(
        self, user: str = "default", *, password: str | None = None, database: str | None = None, **options: Any
    ) -> Client:
        """A clickhouse-connect client over HTTP as ``user`` (with its own password unless one is
        given), closed when the server stops."""
        made = clickhouse_connect.get_client(
            host=self.engine.host,
            port=self.http_port,
            username=user,
            password=(self.users.get(user) or "") if password is None else password,
            database=database,
            **options,
        )
        self._clients.append(made)
        return made

    def env(self, user: str) -> dict[str, str]:
        """The variables a refresh reads its credentials from, for ``user``."""
        return {USER_ENV: user, PASSWORD_ENV: self.users.get(user) or ""}

    def close_clients(self) -> None:
        """Close the clients and their idle keep-alive connections, which a stop would wait for."""
        for made in self._clients:
            close_connections = getattr(made, "close_connections", None)
            if close_connections is not None:
                close_connections()
            made.close()
        self._clients.clear()


@contextlib.contextmanager
def served(data_dir: Path, users: Iterable[User] | None = None) -> Iterator[ServedClickHouse]:
    """A served engine on ``data_dir``; by default with ``alice``, every right and a random password.
    Its clients are closed, then it is stopped, on the way out."""
    chosen = list(users) if users is not None else [User("alice", secrets.token_urlsafe(12))]
    engine = ServedEngine.start(data_dir, users=chosen)
    server = ServedClickHouse(engine, {name: user.password for name, user in engine.users.items()})
    try:
        yield server
    finally:
        server.close_clients()
        engine.stop()
