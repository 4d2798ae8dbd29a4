"""Where the operator's log lines go: what it changes at INFO, the client libraries' chatter at debug."""

from __future__ import annotations

import logging

# The client libraries of a health check. Their warnings repeat, in their words, a failure the
# operator reports once in its own (urllib3's "Retrying (...)" with a query_id in the URL, then
# clickhouse-connect's "Unexpected Http Driver Exception"), so they belong in the debug log.
LIBRARIES = ("urllib3", "clickhouse_connect")


class AsDebug(logging.Handler):
    """Passes a library's records on to the root logger's handlers, its warnings and below as debug
    records: shown with ``--verbose``, never at INFO. Its errors pass on as they are."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        root = logging.getLogger()
        if root.isEnabledFor(record.levelno):
            root.handle(record)


def quiet_chatter() -> None:
    """At INFO, log what the controller changes, not every watch event and probe it handles; the
    client libraries' warnings only in the debug log (see ``AsDebug``)."""
    root = logging.getLogger()
    if root.getEffectiveLevel() >= logging.INFO:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in LIBRARIES:
        library = logging.getLogger(name)
        if not any(isinstance(h, AsDebug) for h in library.handlers):
            library.addHandler(AsDebug())
        library.propagate = False
        # Not at debug: drop their warnings where they are made, rather than demote then drop them.
        library.setLevel(logging.DEBUG if root.isEnabledFor(logging.DEBUG) else logging.ERROR)
