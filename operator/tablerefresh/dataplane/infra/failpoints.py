"""Named points where a test can kill the refresh process, or make a step fail, to prove that a
crash or an error anywhere is safe.

``TABLEREFRESH_FAILPOINT`` holds a comma-separated list of ``name`` or ``name=action``:
- ``kill`` (the default): the process SIGKILLs itself on reaching that point: no ``finally`` runs,
  no lock is released, just as when a node dies or the OOM killer strikes;
- ``error``: the step raises :class:`InjectedFault`, as a dropped connection would;
- ``sigint``, ``sigterm``: the process sends itself that signal, as Ctrl-C or Kubernetes would.
"""

from __future__ import annotations

import os
import signal

from clickhouse_connect.driver.exceptions import OperationalError

ENV = "TABLEREFRESH_FAILPOINT"
_SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}


class InjectedFault(OperationalError):
    """A failure a test asked for at a named point: the error clickhouse-connect raises for a
    connection that drops."""


def failpoint(name: str) -> None:
    action = _armed().get(name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "error":
        raise InjectedFault(f"injected failure at {name}")
    elif action in _SIGNALS:
        os.kill(os.getpid(), _SIGNALS[action])


def _armed() -> dict[str, str]:
    armed = {}
    for item in os.environ.get(ENV, "").split(","):
        name, _, action = item.strip().partition("=")
        if name:
            armed[name] = action or "kill"
    return armed
