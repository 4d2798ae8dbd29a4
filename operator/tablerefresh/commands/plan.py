"""``tablerefresh plan``: what a run would replace and why it would stop, changing nothing."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime

from tablerefresh.commands._target import add_target_arguments, emit_json, guarded, open_target, source_query
from tablerefresh.dataplane.operations.operation import new_run_id, owner_of, refuse_while_locked
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.plan import plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser, min_slice_rows=True)  # it says whether the threshold would stop the run


@guarded
def run(args: argparse.Namespace) -> int:
    manifest, connect = open_target(args)
    run_id = new_run_id("plan")
    options = RunOptions(run_id=run_id, owner=owner_of(run_id), run_time=datetime.now(UTC))
    client = connect()
    try:
        refuse_while_locked(client, manifest.spec)
        result = plan(client, manifest.spec, source_query(manifest.spec), options)
    finally:
        client.close()
    if args.json:
        emit_json(asdict(result) | {"wouldRun": result.would_run})
        return 0
    print(f"plan for {result.target} ({result.strategy}), window from {result.window_start}")
    changed = "" if result.changed_keys is None else f", {result.changed_keys:,} changed key(s)"
    print(f"{result.kind.lower()} run{changed}: {result.kind_reason}")
    print(f"{'partition':<14}{'rows now':>14}{'kept':>14}{'rows after':>14}{'change':>9}")
    for c in result.changes:
        change = (c.new_rows - c.old_rows) / c.old_rows if c.old_rows else float("inf") if c.new_rows else 0.0
        print(f"{c.partition:<14}{c.old_rows:>14,}{c.kept:>14,}{c.new_rows:>14,}{change:>+9.1%}")
    if not result.changes:
        print("(no partition is swapped)")
    print(f"slice rows: {result.old_slice_rows:,} now, {result.new_slice_rows:,} from the source")
    print(f"source: {result.source_rows:,} rows, {result.source_duplicates:,} duplicate keys")
    print("statements, in order:")
    for i, statement in enumerate(result.statements, 1):
        print(f"  {i}. {statement}")
    if result.problems:
        print("the run would stop before the swap:")
        for problem in result.problems:
            print(f"  - {problem}")
    else:
        print("no threshold would stop the run")
    return 0
