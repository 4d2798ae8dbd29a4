"""The served engine's own process: chDB's engine with ClickHouse's HTTP and native listeners up,
until it is stopped. ``ServedEngine.start`` runs it as ``python -m tablerefresh.dataplane.server``.

The engine is clickhouse-local. It reads ``config.xml`` from its working directory when ``chdb`` is
imported, so the directory that holds it is entered first. Then one query, in a thread, starts the
listeners and runs until it is killed; the listeners live while it runs, and the GIL is released.
The output format is TabSeparated: it becomes the HTTP default, which clickhouse-connect's
handshake needs. A process can do this once. Every way to stop ends the serving query, whose end
closes the listeners: ``KILL QUERY … SYNC`` over HTTP from outside, or SIGTERM, SIGINT or the end
of the parent process, after which this process sends it itself. Then it exits.

When the serving query ends, the engine waits for the client connections still open, up to 5 s,
then exits at once with code 1, cutting them. An idle HTTP keep-alive connection closes within
``config.KEEP_ALIVE_SECONDS``, before that; a native client or a request still running is cut.

Exit codes: 0 stopped; 1 the engine failed, or cut connections at the stop; 2 another process
holds the data directory; 3 a port is in use. A failure is one line on stderr; the engine's own
messages go to ``engine.log`` in the configuration directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from tablerefresh.dataplane.infra.embedded import in_use
from tablerefresh.dataplane.server.interface import execute, kill_statement, serving_query

EXIT_OK, EXIT_FAILED, EXIT_HELD, EXIT_PORT_IN_USE = 0, 1, 2, 3
ENGINE_LOG = "engine.log"
_STOP_SECONDS = 30.0
_ENGINE_ERROR = re.compile(r"Code: (\d+)\. DB::Exception: (.*?)(?: \(version [^)]*\))?\.?(?: \(([A-Z_]+)\))?\s*$")
_CANCELLED, _CANNOT_LOCK = 394, 76


def held_message(data_dir: Path) -> str:
    return (
        f"another process holds the engine's data directory {data_dir} (its status file is locked): "
        "stop it, or serve another directory"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tablerefresh.dataplane.server")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--config-dir", type=Path, required=True, help="holds config.xml and users.xml")
    parser.add_argument("--host", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--token", required=True, help="marks the serving query")
    parser.add_argument("--watch-parent", type=int, help="stop when this process is no longer the parent")
    args = parser.parse_args(argv)
    return serve(
        args.data_dir.absolute(),
        args.config_dir.absolute(),
        host=args.host,
        http_port=args.http_port,
        token=args.token,
        watch_parent=args.watch_parent,
    )


def serve(
    data_dir: Path,
    config_dir: Path,
    *,
    host: str,
    http_port: int,
    token: str,
    watch_parent: int | None,
) -> int:
    if in_use(data_dir):
        return _fail(EXIT_HELD, held_message(data_dir))
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = config_dir / ENGINE_LOG
    _engine_stderr_to(log_path)
    os.chdir(config_dir)
    from chdb import _chdb  # reads ./config.xml: only after the chdir

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)

    result: list[str] = []

    def run() -> None:
        # chDB's one-shot entry point (clickhouse-local); its stub does not declare it.
        answer = _chdb.query(serving_query(token), "TabSeparated", path=str(data_dir))  # type: ignore[attr-defined]
        result.append(answer.error_message() if answer.has_error() else "")

    thread = threading.Thread(target=run, name="served-engine", daemon=True)
    thread.start()
    while thread.is_alive() and not stop.is_set():
        if watch_parent is not None and os.getppid() != watch_parent:
            break
        thread.join(0.1)
    if thread.is_alive():  # asked to stop: end the serving query, whose end closes the listeners
        try:
            execute(host, http_port, kill_statement(token), user="default", password=None, timeout=_STOP_SECONDS)
        except OSError as exc:  # HTTPError too
            _say(f"served engine: could not stop the serving query: {exc}")
        thread.join(_STOP_SECONDS)
        if thread.is_alive():
            _say("served engine: the engine did not stop; exiting without it")
            os._exit(EXIT_FAILED)  # without waiting on the engine's threads
        code = EXIT_OK
    else:
        code = _outcome(log_path, result[0] if result else "", data_dir)
    if watch_parent is not None and os.getppid() != watch_parent:
        shutil.rmtree(config_dir, ignore_errors=True)  # its starter is gone and cannot
    return code


def _outcome(log_path: Path, error: str, data_dir: Path) -> int:
    """The serving query ended by itself: killed from outside (a stop), or it never started serving."""
    lines = [error] if error else []
    with contextlib.suppress(OSError):
        lines += log_path.read_text(errors="replace").splitlines()
    found = [m for m in map(_ENGINE_ERROR.search, lines) if m]
    if not found:
        return _fail(EXIT_FAILED, "the engine's serving query ended without an error")
    code, message = int(found[-1].group(1)), found[-1].group(2)
    if code == _CANCELLED:
        return EXIT_OK
    if code == _CANNOT_LOCK:
        return _fail(EXIT_HELD, held_message(data_dir))
    if "Address already in use" in message:
        return _fail(EXIT_PORT_IN_USE, f"a port is in use: {message}")
    return _fail(EXIT_FAILED, f"the engine failed: code {code}: {message}")


def _engine_stderr_to(path: Path) -> None:
    """The engine writes its errors to file descriptor 2: send them to ``path``, and keep Python's
    own messages (``sys.stderr``) on the original stderr."""
    original = os.dup(2)
    sys.stderr = os.fdopen(original, "w", buffering=1)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 2)
    os.close(log)


def _fail(code: int, message: str) -> int:
    _say(message)
    return code


def _say(message: str) -> None:
    with contextlib.suppress(OSError):  # the starter, reading stderr, may be gone
        print(message, file=sys.stderr, flush=True)
