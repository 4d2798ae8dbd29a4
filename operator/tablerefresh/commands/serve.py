"""``tablerefresh serve``: the embedded engine served as a ClickHouse server on loopback, until
Ctrl-C or SIGTERM, for development and tests."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

LOG_LEVEL = logging.WARNING  # the command says what it does itself


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="the engine's data directory, as in chdb://DIR; created if missing"
    )
    parser.add_argument("--port", type=int, help="HTTP port (default: a free one)")
    parser.add_argument("--tcp-port", type=int, help="native TCP port (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address: loopback only")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="a user with every right and this password (repeatable); default has none, always",
    )


def run(args: argparse.Namespace) -> int:
    from tablerefresh.dataplane.server import ServedEngine, ServeError, parse_user
    from tablerefresh.dataplane.server.config import ConfigRefused, check_host

    def say(text: str) -> None:
        print(text, flush=True)

    def refuse(text: str, code: int = 2) -> int:
        print(f"tablerefresh serve: {text}", file=sys.stderr, flush=True)
        return code

    try:
        check_host(args.host)
        users = [parse_user(text) for text in args.user]
    except ConfigRefused as exc:
        return refuse(str(exc))
    for name, port in (("--port", args.port), ("--tcp-port", args.tcp_port)):
        if port is not None and not 0 < port < 65536:
            return refuse(f"{name} {port}: a port is between 1 and 65535")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)

    data_dir: Path = args.data_dir
    if not data_dir.exists():
        try:
            data_dir.mkdir(parents=True)
        except OSError as exc:
            return refuse(f"cannot create the data directory {data_dir}: {exc.strerror}")
        say(f"created the data directory {data_dir}")
    try:
        engine = ServedEngine.start(data_dir, host=args.host, http_port=args.port, tcp_port=args.tcp_port, users=users)
    except ServeError as exc:
        return refuse(str(exc), exc.exit_code)
    try:
        version = engine.execute("SELECT version()").strip()
        accounts = ", ".join(
            f"{u.name} ({'password' if u.password is not None else 'no password'})" for u in engine.users.values()
        )
        say(f"serving {engine.data_dir} with chDB's ClickHouse {version} (no replication), in process {engine.pid}")
        say(f"  HTTP:   {engine.url}")
        host, tcp = engine.host, engine.tcp_port
        say(f"  native: {host}:{tcp} (clickhouse-client --host {host} --port {tcp})")
        say(f"  users:  {accounts}")
        say("stop with Ctrl-C or SIGTERM")
        while not stop.wait(0.5) and engine.running():
            pass
    finally:
        stopped = engine.stop()
    if not stop.is_set():
        return refuse(f"the server stopped without being asked: {stopped.message}", 1)
    say(f"{stopped.message} ({stopped.seconds:.1f}s); {engine.data_dir} is free")
    return 1 if stopped.killed else 0
