"""``tablerefresh crd``: print the TableRefresh CRD generated from the models."""

from __future__ import annotations

import argparse
import sys

NAME = "crd"
HELP = "print the TableRefresh CRD generated from the models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    from tablerefresh.controller.crd import crd_yaml

    text = crd_yaml()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
