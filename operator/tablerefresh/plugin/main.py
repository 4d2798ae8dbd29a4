"""``kubectl tablerefresh``: status, run-now, suspend, resume and history of TableRefreshes.

Installed with the package as ``kubectl-tablerefresh``, which kubectl runs for ``kubectl tablerefresh``
(any ``kubectl-NAME`` on PATH is a plugin). Needs only the user's kubeconfig.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tablerefresh.plugin import history, summary
from tablerefresh.plugin.cluster import Cluster, PluginError

PROG = "kubectl tablerefresh"


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: a flag given before the command is not reset by the command's own parser.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("-n", "--namespace", help="the namespace (default: the kubeconfig context's, else default)")
    common.add_argument("--context", help="the kubeconfig context to use")
    common.add_argument("--kubeconfig", help="the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    common.add_argument("-o", "--output", choices=("text", "json"), help="text (default) or json")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog=PROG, parents=[common], description="TableRefresh status and runs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Each command's help page opens with the same line as the command list.
    words = "is the table healthy, and if not, why"
    status = sub.add_parser("status", parents=[common], help=words, description=words)
    status.add_argument("name", nargs="?", help="one TableRefresh (default: every one in the namespace)")
    status.add_argument("-A", "--all-namespaces", action="store_true", default=False, help="in every namespace")
    for name, words in (
        ("run-now", "start a refresh Job now, under the CronJob's concurrencyPolicy"),
        ("suspend", "stop scheduling refreshes (sets spec.suspend)"),
        ("resume", "schedule refreshes again (clears spec.suspend)"),
        ("history", "the refresh Jobs and their outcomes, oldest first"),
    ):
        command = sub.add_parser(name, parents=[common], help=words, description=words)
        command.add_argument("name", help="the TableRefresh")
    return parser


def _print(output: str, data: Any, lines: Sequence[str]) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print("\n".join(lines))


def run(args: argparse.Namespace, now: datetime) -> int:
    cluster = Cluster(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    namespace = getattr(args, "namespace", None) or cluster.default_namespace
    output = getattr(args, "output", None) or "text"
    if args.command == "status":
        if args.name:
            one = summary.summarize(cluster.tablerefresh(namespace, args.name), now)
            _print(output, one, summary.describe(one, now))
            return 0
        found = cluster.tablerefreshes(None if args.all_namespaces else namespace)
        many = [summary.summarize(t, now) for t in found]
        if not many and output == "text":
            where = "any namespace" if args.all_namespaces else f'namespace "{namespace}"'
            print(f"No TableRefresh in {where}.", file=sys.stderr)
            return 0
        _print(output, many, summary.table(many, now, namespaces=args.all_namespaces))
        return 0
    if args.command == "run-now":
        return _run_now(cluster, namespace, args.name, output)
    if args.command in ("suspend", "resume"):
        suspend = args.command == "suspend"
        cluster.set_suspend(namespace, args.name, suspend)
        verb = "suspended" if suspend else "resumed"
        _print(
            output,
            {"namespace": namespace, "name": args.name, "suspend": suspend},
            [f"tablerefresh.tablerefresh.dev/{args.name} {verb}"],
        )
        return 0
    tr = cluster.tablerefresh(namespace, args.name)
    jobs = cluster.jobs(namespace, args.name, ((tr.get("status") or {}).get("cronJobRef") or {}).get("uid"))
    pods = cluster.pods(namespace, [str(j["metadata"]["name"]) for j in jobs])
    rows = history.runs(tr, jobs, pods)
    _print(output, rows, history.table(rows, now) if rows else [f"No runs of {namespace}/{args.name} yet."])
    return 0


def _run_now(cluster: Cluster, namespace: str, name: str, output: str) -> int:
    # The controller's own run-now: the Job the CronJob controller would make, under its policy.
    from tablerefresh.controller.kube import ApiKube, KubeError
    from tablerefresh.controller.policy.jobs import new_token
    from tablerefresh.controller.runtime.workers import RunNowRefused, run_now

    cluster.tablerefresh(namespace, name)  # a clear "not found" before anything else
    try:
        job = run_now(ApiKube(cluster.api_client), namespace, name, new_token(datetime.now(UTC)))
    except RunNowRefused as exc:
        raise PluginError(f"refused: {exc}") from exc
    except KubeError as exc:
        raise PluginError(str(exc)) from exc
    _print(output, {"namespace": namespace, "name": name, "job": job}, [f"job.batch/{job} created"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run(args, datetime.now(UTC))
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
