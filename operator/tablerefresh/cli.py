"""The ``tablerefresh`` command: one subcommand per module in ``tablerefresh.commands``.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
the module is imported only when its command runs, so ``tablerefresh refresh`` in the production
image never imports kopf, and the controller never imports chdb.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tablerefresh import __version__

# name -> (module, one-line help). Order is the order of ``tablerefresh --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "refresh": ("tablerefresh.commands.refresh", "replace a table's slice from its source query, atomically"),
    "demo": ("tablerefresh.commands.demo", "run the reference workload end to end on the embedded engine"),
    "crd": ("tablerefresh.commands.crd", "print the TableRefresh CRD generated from the models"),
    "render": ("tablerefresh.commands.render", "print the CronJob the controller makes for a manifest"),
    "operator": ("tablerefresh.commands.operator", "run the Kubernetes controller"),
    "plan": ("tablerefresh.commands.plan", "show what a refresh would replace, changing nothing"),
    "history": ("tablerefresh.commands.history", "list a table's recorded runs, newest first"),
    "verify": ("tablerefresh.commands.verify", "rebuild a sample of keys in full and report the rows that differ"),
    "backups": ("tablerefresh.commands.backups", "list the backups swaps kept"),
    "restore": ("tablerefresh.commands.restore", "swap a backup back in, atomically"),
    "dedupe": ("tablerefresh.commands.dedupe", "rebuild the table or its slice with one row per key"),
    "mutations": ("tablerefresh.commands.mutations", "list pending mutations, or kill the stuck ones"),
    "run-now": ("tablerefresh.commands.run_now", "start a refresh Job now from the CronJob's template"),
    "serve": ("tablerefresh.commands.serve", "serve the embedded engine as a ClickHouse server on loopback"),
}


class _ShowDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tablerefresh", description="Keep derived ClickHouse tables fresh and duplicate-free."
    )
    parser.add_argument("--version", action="version", version=f"tablerefresh {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, formatter_class=_ShowDefaults).set_defaults(
            _module=module
        )
    return parser


def _scrub_logs() -> None:
    """A Job's log is read by whoever may read its Pod, who may not read its Secret: no value of the
    credentials in the environment goes into a log line."""
    from tablerefresh.dataplane.infra.connection import env_secrets
    from tablerefresh.dataplane.infra.errors import ScrubSecrets

    secrets = env_secrets()
    if any(secrets):
        for handler in logging.getLogger().handlers:
            handler.addFilter(ScrubSecrets(secrets))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # The command is the first word naming one; only its module is imported, to add its options.
    name = next((word for word in argv if word in COMMANDS), None)
    if name is not None:
        sub_actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        importlib.import_module(COMMANDS[name][0]).add_arguments(sub_actions[0].choices[name])
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    # A command that prints its own progress (the demo) logs only warnings, so each step shows once.
    level = getattr(module, "LOG_LEVEL", logging.INFO)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # Retries and pool warnings of the HTTP client: the error that matters reaches the user anyway.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    _scrub_logs()
    try:
        result: int = module.run(args)
    except KeyboardInterrupt:
        # Ctrl-C in a command that does not handle it itself (refresh does, with its summary):
        # one line, no traceback, the shell's code for it.
        print(f"tablerefresh {args.command}: interrupted", file=sys.stderr)
        return 130
    return result
