"""``tablerefresh operator``: run the Kubernetes controller."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

NAME = "operator"
HELP = "run the Kubernetes controller"


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Kubernetes access: in a pod, its service account; elsewhere $KUBECONFIG or ~/.kube/config, "
        "current context. Namespaces: -n/-A, or $TABLEREFRESH_NAMESPACES (comma-separated)."
    )
    parser.add_argument(
        "-n", "--namespace", action="append", default=[], metavar="NS", help="watch this namespace (repeatable)"
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness", metavar="URL", help="serve kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz"
    )
    parser.add_argument(
        "--peering", metavar="NAME", help="coordinate replicas through kopf peering NAME (default: standalone)"
    )
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port (0: off)")
    parser.add_argument("--resync", type=float, default=60.0, metavar="SECONDS", help="reconcile everything this often")
    parser.add_argument("--concurrency", type=int, default=8, help="reconciles running at once")
    parser.add_argument(
        "--health-concurrency",
        type=_positive(int),
        default=8,
        metavar="N",
        help="health checks running at once (at most half of them against one ClickHouse)",
    )
    parser.add_argument(
        "--health-timeout",
        type=_positive(float),
        default=30.0,
        metavar="SECONDS",
        help="give up on one health check after this",
    )


def run(args: argparse.Namespace) -> int:
    from tablerefresh.controller.runtime.wiring import NAMESPACES_ENV, Options, ScopeError, resolve_scope, run_operator

    try:
        scope = resolve_scope(args.namespace, args.all_namespaces, os.environ.get(NAMESPACES_ENV))
    except ScopeError as exc:
        print(f"tablerefresh operator: {exc}", file=sys.stderr)
        return 2
    run_operator(
        Options(
            scope=scope,
            liveness=args.liveness,
            peering=args.peering,
            metrics_port=args.metrics_port,
            resync_seconds=args.resync,
            concurrency=args.concurrency,
            health_concurrency=args.health_concurrency,
            health_timeout=args.health_timeout,
        )
    )
    return 0
