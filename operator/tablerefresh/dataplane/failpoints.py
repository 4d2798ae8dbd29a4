"""Named points where a test can kill the refresh process, to prove a crash anywhere is safe.

Set ``TABLEREFRESH_FAILPOINT=<name>`` and the process SIGKILLs itself on reaching that point:
no ``finally`` runs, no lock is released, just as when a node dies or the OOM killer strikes.
"""

from __future__ import annotations

import os
import signal

ENV = "TABLEREFRESH_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
