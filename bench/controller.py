"""Controller figures: apply-to-CronJob latency, the time N objects take to converge, the operator's CPU and RSS.

    python bench/controller.py --objects 200                  # starts a throwaway test control plane
    KUBECONFIG=... python bench/controller.py                 # or uses the cluster you point it at
    python bench/controller.py --baseline ../old --rounds 2   # alternates with another checkout's operator

A checkout's operator runs on its own ``.venv`` when it has one (an older one may need other
libraries), else on this interpreter, with its ``operator/`` first on PYTHONPATH.

With ``--baseline``, each round runs the other checkout's operator, then this one, on the same control
plane (each with its own CRD, in a namespace of its own), and the figures end with this checkout's
ratios to the baseline's: the baseline is measured in the same run, on the same machine, never quoted
from elsewhere. The operator runs as ``tablerefresh operator --namespace NS``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

GROUP, VERSION, PLURAL = "tablerefresh.dev", "v1alpha1", "tablerefreshes"
CRD = Path("crds") / "tablerefresh.dev_tablerefreshes.yaml"
CREDENTIALS_LABEL = "tablerefresh.dev/credentials"  # the Secret's opt-in; older controllers ignore it
SETTLE_SECONDS = 10.0  # after convergence, before RSS is read: status writes, health checks


@dataclass(frozen=True)
class Checkout:
    """A repository checkout whose operator is measured: its ``operator/`` package and its CRD."""

    label: str
    root: Path
    python: str  # its own venv's interpreter (its dependencies may differ), else this one

    @classmethod
    def at(cls, label: str, root: Path) -> Checkout:
        venv = root / ".venv" / "bin" / "python"
        return cls(label, root, str(venv) if venv.exists() else sys.executable)

    def env(self, kubeconfig: str) -> dict[str, str]:
        # The checkout's package first on the path, whatever its interpreter has installed.
        path = os.pathsep.join(p for p in (str(self.root / "operator"), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "KUBECONFIG": kubeconfig, "PYTHONPATH": path}

    def operator_flags(self) -> list[str]:
        """The flags that keep health checks off a real server, as far as this checkout has them."""
        help_text = subprocess.run(
            [self.python, "-m", "tablerefresh", "operator", "--help"],
            env=self.env(""),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        flags = []
        if "--allow-host" in help_text:
            flags += ["--allow-host", "clickhouse"]
        if "--min-health-interval" in help_text:
            flags += ["--min-health-interval", "0"]
        return flags


@dataclass(frozen=True)
class Figures:
    checkout: str
    median_ms: float
    p95_ms: float
    max_ms: float
    converged: int
    converged_s: float
    cpu_s: float
    idle_mib: float
    rss_mib: float

    def lines(self, objects: int, applies: int) -> list[str]:
        return [
            f"[{self.checkout}] apply-to-CronJob latency over {applies} applies: median {self.median_ms:.0f} ms, "
            f"p95 {self.p95_ms:.0f} ms, max {self.max_ms:.0f} ms",
            f"[{self.checkout}] {self.converged} more TableRefresh objects created and converged in "
            f"{self.converged_s:.1f} s (operator CPU {self.cpu_s:.1f} s)",
            f"[{self.checkout}] operator RSS: {self.idle_mib:.0f} MiB idle, {self.rss_mib:.0f} MiB with "
            f"{objects} TableRefresh objects",
        ]


def manifest(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TableRefresh",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "0 */6 * * *",
            "clickhouse": {"url": "clickhouse://clickhouse:8123", "credentialsSecret": {"name": "ch"}},
            "target": {"table": "trades"},
            "slice": {"predicate": "ts >= {window_start:DateTime}"},
            "source": {"query": "SELECT * FROM raw_trades WHERE ts >= {window_start:DateTime}"},
            "uniqueKey": ["id"],
            "freshnessColumn": "ts",
        },
    }


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        ["kubectl", *args],
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "KUBECONFIG": kubeconfig},
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_operator(checkout: Checkout, kubeconfig: str, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            checkout.python,
            "-m",
            "tablerefresh",
            "operator",
            "--namespace",
            namespace,
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
            "--metrics-port",
            "0",
            *checkout.operator_flags(),
        ],
        env=checkout.env(kubeconfig),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("operator did not become live")


def cronjob_exists(batch: client.BatchV1Api, namespace: str, name: str) -> bool:
    try:
        batch.read_namespaced_cron_job(name, namespace, _preload_content=False)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def measure(
    checkout: Checkout, kubeconfig: str, applies: int, objects: int, workdir: Path, opt_in: bool = True
) -> Figures:
    config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    api = client.ApiClient()
    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(checkout.root / CRD))
    kubectl(kubeconfig, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}")
    kubectl(kubeconfig, "create", "namespace", namespace)
    kubectl(kubeconfig, "create", "secret", "generic", "ch", "-n", namespace, "--from-literal=username=u")
    if opt_in:  # as README says to: without it a controller since the opt-in holds every CronJob and warns
        kubectl(kubeconfig, "label", "secret", "ch", "-n", namespace, f"{CREDENTIALS_LABEL}=true")
    operator = start_operator(checkout, kubeconfig, namespace, workdir / f"operator-{namespace}.log")
    try:
        idle = rss_mib(operator.pid)
        latencies = []
        for i in range(applies):
            name = f"lat-{i:03d}"
            started = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest(namespace, name))
            while not cronjob_exists(batch, namespace, name):
                time.sleep(0.005)
            latencies.append(time.monotonic() - started)
        latencies.sort()
        p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]

        cpu_before, started = cpu_seconds(operator.pid), time.monotonic()
        for i in range(applies, objects):
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, manifest(namespace, f"obj-{i:04d}")
            )
        while True:
            listed = batch.list_namespaced_cron_job(namespace).items or []
            if len(listed) >= objects:
                break
            time.sleep(0.1)
        converged = time.monotonic() - started
        cpu = cpu_seconds(operator.pid) - cpu_before
        time.sleep(SETTLE_SECONDS)
        return Figures(
            checkout=checkout.label,
            median_ms=statistics.median(latencies) * 1000,
            p95_ms=p95 * 1000,
            max_ms=latencies[-1] * 1000,
            converged=objects - applies,
            converged_s=converged,
            cpu_s=cpu,
            idle_mib=idle,
            rss_mib=rss_mib(operator.pid),
        )
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=15)
        except subprocess.TimeoutExpired:
            operator.kill()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")


def ratios(figures: list[Figures], baseline: str, this: str) -> list[str]:
    """This checkout's figures over the baseline's, each the median of its runs (below 1: better)."""

    def median(label: str, attribute: str) -> float:
        return float(statistics.median(float(getattr(f, attribute)) for f in figures if f.checkout == label))

    out = []
    for attribute, words in (
        ("median_ms", "apply-to-CronJob median"),
        ("p95_ms", "apply-to-CronJob p95"),
        ("converged_s", "convergence"),
        ("cpu_s", "operator CPU"),
        ("rss_mib", "RSS"),
    ):
        old, new = median(baseline, attribute), median(this, attribute)
        out.append(f"{words}: {new:.1f} vs {old:.1f} baseline, ratio {new / old:.2f}")
    return out


def run(checkouts: list[Checkout], rounds: int, args: argparse.Namespace, kubeconfig: str, workdir: Path) -> None:
    figures = []
    for round_ in range(1, rounds + 1):
        for checkout in checkouts:  # alternating, so a change in the machine's load hits both
            result = measure(checkout, kubeconfig, args.applies, args.objects, workdir, not args.secret_without_opt_in)
            figures.append(result)
            print(f"round {round_}:", *result.lines(args.objects, args.applies), sep="\n  ", flush=True)
    if len(checkouts) == 2:
        print(f"{checkouts[1].label} over {checkouts[0].label} (medians of {rounds} round(s)):")
        for line in ratios(figures, checkouts[0].label, checkouts[1].label):
            print("  " + line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applies", type=int, default=50, help="objects created one at a time, each timed")
    parser.add_argument("--objects", type=int, default=200, help="objects in all (the rest created at once)")
    parser.add_argument(
        "--baseline", type=Path, metavar="CHECKOUT", help="another checkout (e.g. a git worktree) to alternate with"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each checkout")
    parser.add_argument(
        "--secret-without-opt-in",
        action="store_true",
        help=f"leave the credentials Secret without the {CREDENTIALS_LABEL} label (every object held, with a Warning)",
    )
    args = parser.parse_args()
    checkouts = [Checkout.at("this", ROOT)]
    if args.baseline is not None:
        if not (args.baseline / "operator" / "tablerefresh").is_dir():
            parser.error(f"{args.baseline} has no operator/tablerefresh")
        checkouts.insert(0, Checkout.at("baseline", args.baseline.resolve()))
    with tempfile.TemporaryDirectory(prefix="tablerefresh-bench-") as tmp:
        workdir = Path(tmp)
        if os.environ.get("KUBECONFIG"):
            run(checkouts, args.rounds, args, os.environ["KUBECONFIG"], workdir)
            return 0
        # Imported by name: the test package is not part of what mypy checks here.
        cluster: Any = importlib.import_module("tests.controlplane.cluster")
        plane = cluster.ControlPlane(workdir / "controlplane", tie_to_parent=True).start()
        os.environ["PATH"] = f"{plane.bin_dir}/bin:{os.environ['PATH']}"  # its kubectl
        try:
            run(checkouts, args.rounds, args, str(plane.kubeconfig), workdir)
        finally:
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
