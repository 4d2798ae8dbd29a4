"""``tablerefresh render -f FILE``: print the CronJob the controller makes for a manifest."""

from __future__ import annotations

import argparse
import sys

NAME = "render"
HELP = "print the CronJob the controller makes for a manifest"

# Stands in for the TableRefresh's uid, which exists only once the API server has the object.
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, help="TableRefresh manifest (YAML)")
    parser.add_argument(
        "--owner-uid", help="uid for the ownerReference; default: the manifest's metadata.uid or a placeholder"
    )


def run(args: argparse.Namespace) -> int:
    from tablerefresh.controller.policy.cronjob import render_cronjob
    from tablerefresh.spec import ManifestError, load_manifest
    from tablerefresh.text import yaml_text

    try:
        tr = load_manifest(args.file)
    except ManifestError as exc:
        print(f"tablerefresh render: {exc}", file=sys.stderr)
        return 2
    uid = args.owner_uid or str((tr.metadata.model_extra or {}).get("uid") or PLACEHOLDER_UID)
    # Long strings (the manifest in the Job's env) as block scalars, readable and editable.
    sys.stdout.write(yaml_text(render_cronjob(tr, owner_uid=uid)))
    return 0
