"""``tablerefresh operator``: run the Kubernetes controller."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tablerefresh.controller.policy.admission import OperatorPolicy
from tablerefresh.spec import format_validation_error

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
        "--policy",
        metavar="FILE",
        help="the installer's policy (YAML): allowedHosts, jobImage, allowedImages, allowedServiceAccounts, "
        "allowedNodeSelectors, allowedTolerations, allowedPodLabels, allowedPodAnnotations, "
        "minHealthIntervalSeconds (see SECURITY.md)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also allow connecting to this ClickHouse host (a glob: host, host:port, *.ns.svc; "
        "chdb://GLOB for embedded paths; repeatable)",
    )
    parser.add_argument(
        "--min-health-interval",
        type=float,
        metavar="SECONDS",
        help="check no object more often than this, whatever its spec says (default 60)",
    )
    parser.add_argument(
        "--health-timeout",
        type=_positive(float),
        default=30.0,
        metavar="SECONDS",
        help="give up on one health check after this",
    )


def load_policy(path: str | None, allow_hosts: list[str], min_health_interval: float | None) -> OperatorPolicy:
    """The policy file (none: the defaults), with the flags' hosts added and interval set."""
    document: dict[str, Any] = {}
    if path is not None:
        try:
            document = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"{path}: cannot read the policy: {exc}") from exc
        if not isinstance(document, dict):
            raise PolicyError(f"{path}: the policy must be a mapping")
    try:
        policy = OperatorPolicy.model_validate(document)
    except ValidationError as exc:
        raise PolicyError(f"{path}: {format_validation_error(exc)}") from exc
    changes: dict[str, Any] = {}
    if allow_hosts:
        changes["allowed_hosts"] = (*policy.allowed_hosts, *allow_hosts)
    if min_health_interval is not None:
        changes["min_health_interval_seconds"] = min_health_interval
    return policy.model_copy(update=changes)


class PolicyError(ValueError):
    pass


def run(args: argparse.Namespace) -> int:
    from tablerefresh.controller.runtime.options import Options
    from tablerefresh.controller.runtime.scope import NAMESPACES_ENV, ScopeError, resolve_scope
    from tablerefresh.controller.runtime.startup import run_operator

    try:
        scope = resolve_scope(args.namespace, args.all_namespaces, os.environ.get(NAMESPACES_ENV))
        policy = load_policy(args.policy, args.allow_host, args.min_health_interval)
    except (ScopeError, PolicyError) as exc:
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
            policy=policy,
        )
    )
    return 0
