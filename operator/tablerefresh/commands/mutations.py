"""``tablerefresh mutations``: pending mutations on the target; ``--kill-older-than`` kills the stuck."""

from __future__ import annotations

import argparse

from tablerefresh.commands._target import add_target_arguments, emit_json, guarded, open_target
from tablerefresh.dataplane.infra import catalog
from tablerefresh.dataplane.operations.operation import locked_target, new_run_id, refuse_while_locked
from tablerefresh.spec import parse_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--kill-older-than", metavar="DURATION", help="kill mutations pending longer (e.g. 10m)")


@guarded
def run(args: argparse.Namespace) -> int:
    manifest, connect = open_target(args)
    spec = manifest.spec
    database, table = spec.clickhouse.database, spec.target.table
    if args.kill_older_than:
        try:
            seconds = parse_duration(args.kill_older_than).total_seconds()
        except ValueError as exc:
            raise SystemExit(f"tablerefresh mutations: --kill-older-than: {exc}") from exc
        with locked_target(connect, spec, new_run_id("kill")) as held:
            killed = catalog.kill_mutations_older_than(held.client, database, table, seconds)
        if args.json:
            emit_json({"killed": [m.__dict__ for m in killed], "note": catalog.NOT_ROLLED_BACK})
            return 0
        for m in killed:
            print(f"killed {m.describe()}")
        print(f"{len(killed)} mutation(s) killed on {database}.{table}; {catalog.NOT_ROLLED_BACK}")
        return 0
    client = connect()
    refuse_while_locked(client, spec)
    pending = catalog.pending_mutations(client, database, table)
    if args.json:
        emit_json([m.__dict__ for m in pending])
        return 0
    if not pending:
        print(f"no mutations pending on {database}.{table}")
    for m in pending:
        print(m.describe())
    return 0
