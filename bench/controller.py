"""Controller figures: apply-to-CronJob latency over 50 applies, and the operator's RSS at 200 objects.

    python bench/controller.py                 # starts a throwaway test control plane
    KUBECONFIG=... python bench/controller.py  # or uses the cluster you point it at

Prints one line per figure. The operator runs as ``tablerefresh operator --namespace NS``.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

GROUP, VERSION, PLURAL = "tablerefresh.dev", "v1alpha1", "tablerefreshes"


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


def start_operator(kubeconfig: str, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tablerefresh",
            "operator",
            "--namespace",
            namespace,
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
            "--metrics-port",
            "0",
            *("--allow-host", "clickhouse", "--min-health-interval", "0"),
        ],
        env={**os.environ, "KUBECONFIG": kubeconfig},
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


def measure(kubeconfig: str, applies: int, objects: int, workdir: Path) -> None:
    config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    api = client.ApiClient()
    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(ROOT / "crds" / "tablerefresh.dev_tablerefreshes.yaml"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}")
    kubectl(kubeconfig, "create", "namespace", namespace)
    kubectl(kubeconfig, "create", "secret", "generic", "ch", "-n", namespace, "--from-literal=username=u")
    operator = start_operator(kubeconfig, namespace, workdir / "operator.log")
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
        print(
            "first five (ms):", [round(x * 1000) for x in latencies[:5]], "slowest at", latencies.index(max(latencies))
        )
        latencies.sort()
        p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
        print(
            f"apply-to-CronJob latency over {applies} applies: median {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )

        cpu_before, started = cpu_seconds(operator.pid), time.monotonic()
        for i in range(applies, objects):
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, manifest(namespace, f"obj-{i:03d}")
            )
        while True:
            listed = batch.list_namespaced_cron_job(namespace).items or []
            if len(listed) >= objects:
                break
            time.sleep(0.1)
        converged = time.monotonic() - started
        print(
            f"{objects - applies} more TableRefresh objects created and converged in {converged:.1f} s "
            f"(operator CPU {cpu_seconds(operator.pid) - cpu_before:.1f} s)"
        )
        time.sleep(10)  # settle: status writes, a resync round
        print(f"operator RSS: {idle:.0f} MiB idle, {rss_mib(operator.pid):.0f} MiB with {objects} TableRefresh objects")
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=15)
        except subprocess.TimeoutExpired:
            operator.kill()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applies", type=int, default=50)
    parser.add_argument("--objects", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tablerefresh-bench-") as tmp:
        workdir = Path(tmp)
        if os.environ.get("KUBECONFIG"):
            measure(os.environ["KUBECONFIG"], args.applies, args.objects, workdir)
            return 0
        # Imported by name: the test package is not part of what mypy checks here.
        cluster: Any = importlib.import_module("tests.controlplane.cluster")
        plane = cluster.ControlPlane(workdir / "controlplane", tie_to_parent=True).start()
        os.environ["PATH"] = f"{plane.bin_dir}/bin:{os.environ['PATH']}"  # its kubectl
        try:
            measure(str(plane.kubeconfig), args.applies, args.objects, workdir)
        finally:
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
