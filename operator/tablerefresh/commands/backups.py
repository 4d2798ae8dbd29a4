"""``tablerefresh backups``: what the swaps kept, newest last."""

from __future__ import annotations

import argparse

from tablerefresh.commands._target import add_target_arguments, emit_json, guarded, open_target
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.operations.operation import refuse_while_locked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)


@guarded
def run(args: argparse.Namespace) -> int:
    manifest, connect = open_target(args)
    spec = manifest.spec
    client = connect()
    refuse_while_locked(client, spec)
    found = backups.list_backups(client, spec.clickhouse.database, spec.target.table)
    if args.json:
        emit_json([b.describe() for b in found])
        return 0
    if not found:
        print(
            f"no backups of {spec.clickhouse.database}.{spec.target.table}: a refresh keeps the newest "
            f"spec.backup.keep ({spec.backup.keep}) backups, dedupe's and restore's included"
        )
        return 0
    print(f"{'run id':<40}{'taken at (UTC)':<22}{'kind':<12}{'rows':>14}  partitions")
    for b in found:
        print(
            f"{b.run_id:<40}{b.taken_at:%Y-%m-%d %H:%M:%S}   {b.kind:<12}{b.rows:>14,}  "
            f"{', '.join(b.partitions) or '-'}"
        )
    return 0
