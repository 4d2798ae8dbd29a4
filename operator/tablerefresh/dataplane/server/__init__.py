"""The embedded engine served as a ClickHouse server, for development and tests.

chDB's engine in a process of its own, with ClickHouse's own HTTP and native TCP listeners up, on
loopback: the real engine and protocol, with password-checked users from ``users.xml``, but no
replication and no SQL-managed users. ``tablerefresh serve`` runs it until Ctrl-C or SIGTERM.

- ``config``: ``config.xml`` and ``users.xml``, and the rules on addresses and users;
- ``interface``: ping and one statement over HTTP, the serving query;
- ``engine``: the engine's own process (``python -m tablerefresh.dataplane.server``);
- ``process``: ``ServedEngine``, which starts it, waits until it answers, and stops it.
"""

from tablerefresh.dataplane.server.config import LOOPBACK, User, parse_user
from tablerefresh.dataplane.server.process import PortInUse, ServedEngine, ServeError, ServeRefused

__all__ = ["LOOPBACK", "PortInUse", "ServeError", "ServeRefused", "ServedEngine", "User", "parse_user"]
