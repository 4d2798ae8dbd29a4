"""``tablerefresh run-now NS/NAME``: start a refresh now, as the CronJob would, with its rules."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from tablerefresh.controller.kube import ApiKube, KubeError, load_config
from tablerefresh.controller.policy.cronjob import TERMINATION_LOG
from tablerefresh.controller.policy.jobs import new_token
from tablerefresh.controller.runtime.workers import RunNowRefused, run_now
from tablerefresh.dataplane.infra.errors import ExitCode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Kubernetes access: $KUBECONFIG or ~/.kube/config (current context), or a pod's service account."
    parser.add_argument("target", metavar="NS/NAME", help="the TableRefresh, as namespace/name")
    parser.add_argument("--token", help="makes the request idempotent: the same token creates one Job")
    parser.add_argument("--dedupe", action="store_true", help="run `tablerefresh dedupe` as a one-off Job instead")
    parser.add_argument("--slice-only", action="store_true", help="with --dedupe: only the slice's partitions")


def run(args: argparse.Namespace) -> int:
    namespace, _, name = args.target.partition("/")
    if not namespace or not name:
        print(f"error: expected NAMESPACE/NAME, got {args.target!r}", file=sys.stderr)
        return int(ExitCode.INVALID)
    load_config()
    try:
        # --dedupe: the same Job with the dedupe command line; otherwise the template's own.
        command = ["dedupe", "--summary-file", TERMINATION_LOG, *(["--slice-only"] if args.slice_only else [])]
        job = run_now(
            ApiKube(),
            namespace,
            name,
            args.token or new_token(datetime.now(UTC)),
            args=command if args.dedupe else None,
            purpose="dedupe" if args.dedupe else "now",
        )
    except RunNowRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.LOCKED)
    except KubeError as exc:
        if exc.status == 404:  # the CronJob is missing: say which object the user named
            print(
                f"error: no TableRefresh {namespace}/{name} with a CronJob "
                f"(kubectl get tablerefresh -n {namespace}; the operator creates the CronJob)",
                file=sys.stderr,
            )
            return int(ExitCode.INVALID)
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.FAILED)
    print(f"job.batch/{job} created in {namespace}")
    return 0
