"""Health check figures: how many TableRefresh objects one operator checks per minute, and its CPU and
RSS at 200 objects.

    python bench/health.py                 # starts a throwaway test control plane
    KUBECONFIG=... python bench/health.py  # or uses the cluster you point it at

Each object has a table of its own in an embedded chDB engine. chDB runs one engine per process, so
the operator runs in this process (a thread with its own event loop, kopf watching one namespace),
and the process's CPU and RSS include the engine's. CPU is split three ways: the operator itself
(scheduling, status writes, the watches), the health queries (chDB runs them in the operator's check
threads; against a ClickHouse server those threads would mostly wait), and chDB's own threads.

Phases: every object checked once (first round); checks back to back (interval 1s, so the operator's
limits, not the interval, set the pace); then at rest on the default interval (5m). Last, the
operator as deployed, in a process of its own without the engine, its objects pointed at a
ClickHouse that refuses connections: its own CPU per check and its RSS, without chDB's.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import clickhouse_connect  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.config import kube_config  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

GROUP, VERSION, PLURAL = "tablerefresh.dev", "v1alpha1", "tablerefreshes"
CHECKS = "tablerefresh_health_check_duration_seconds"


def manifest(namespace: str, name: str, url: str, database: str, table: str, interval: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TableRefresh",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "0 */6 * * *",
            "clickhouse": {"url": url, "database": database},
            "target": {"table": table},
            "slice": {"predicate": "entry_time >= {window_start:DateTime}"},
            "source": {"query": f"SELECT id, entry_time, v FROM {database}.{table}"},
            "uniqueKey": ["id"],
            "freshnessColumn": "entry_time",
            "healthCheck": {"interval": interval},
        },
    }


def kubectl(kubeconfig: str, *args: str) -> None:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    subprocess.run(["kubectl", *args], text=True, check=True, capture_output=True, env=env)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_split() -> tuple[float, float]:
    """CPU seconds of this process so far: (Python threads, everything else: the engine's threads)."""
    python = {t.native_id for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    ours = 0.0
    for task in Path("/proc/self/task").iterdir():
        if int(task.name) not in python:
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        ours += (int(fields[11]) + int(fields[12])) / tick
    # The rest of the process total (which also keeps the CPU of threads that ended).
    total = sum(os.times()[:2])
    return ours, max(0.0, total - ours)


def checks_done() -> tuple[float, float]:
    count = REGISTRY.get_sample_value(f"{CHECKS}_count") or 0.0
    seconds = REGISTRY.get_sample_value(f"{CHECKS}_sum") or 0.0
    return count, seconds


class ProbeCPU:
    """Wraps the controller's prober to add up the CPU its threads spend in it: the health queries,
    which chDB runs in the calling thread (against a server, that thread would mostly wait)."""

    def __init__(self, prober: Any) -> None:
        self.prober = prober
        self.seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, check: Any) -> Any:
        started = time.thread_time()
        try:
            return self.prober(check)
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self.seconds += spent


PROBE: ProbeCPU | None = None


def probe_cpu() -> float:
    return PROBE.seconds if PROBE else 0.0


def checked(custom: client.CustomObjectsApi, namespace: str) -> int:
    listed: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    items: list[dict[str, Any]] = listed["items"]
    return sum(1 for tr in items if ((tr.get("status") or {}).get("health") or {}).get("checkedAt"))


def window(label: str, seconds: float) -> float:
    """Measure for ``seconds``, print the figures; return the CPU seconds one check cost, all told."""
    count0, spent0 = checks_done()
    ours0, other0 = cpu_split()
    queries0 = probe_cpu()
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    count1, spent1 = checks_done()
    ours1, other1 = cpu_split()
    queries = probe_cpu() - queries0
    checks = count1 - count0
    per_minute = 60 / elapsed
    mean = (spent1 - spent0) / checks * 1000 if checks else 0.0
    print(
        f"{label}: {checks * per_minute:.0f} checks/min (mean check {mean:.0f} ms); CPU per minute: "
        f"{(ours1 - ours0 - queries) * per_minute:.1f} s operator (scheduling, status writes, watches), "
        f"{queries * per_minute:.1f} s health queries in its check threads, "
        f"{(other1 - other0) * per_minute:.1f} s chDB's own threads; RSS {rss_mib():.0f} MiB",
        flush=True,
    )
    return ((ours1 - ours0) + (other1 - other0)) / checks if checks else 0.0


def measure(kubeconfig: str, objects: int, rows: int, seconds: float, concurrency: int, workdir: Path) -> None:
    operator_thread: Any = importlib.import_module("tests.operator_thread")
    url = f"chdb://{workdir}/chdb"
    database = "bench"
    ch = clickhouse_connect.get_client(dsn=url)
    ch.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    for i in range(objects):
        table = f"t{i:03d}"
        ch.command(
            f"CREATE TABLE {database}.{table} (id UInt64, entry_time DateTime('UTC'), v UInt64) "
            "ENGINE = MergeTree ORDER BY id"
        )
        ch.command(f"INSERT INTO {database}.{table} SELECT number, now() - number, 0 FROM numbers({rows})")
    print(f"{objects} tables of {rows} rows in chDB; RSS {rss_mib():.0f} MiB before the operator", flush=True)

    os.environ["KUBECONFIG"] = kubeconfig
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = kubeconfig  # kopf's login reads the default path
    config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(client.ApiClient())
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(ROOT / "crds" / "tablerefresh.dev_tablerefreshes.yaml"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}")
    kubectl(kubeconfig, "create", "namespace", namespace)
    operator = operator_thread.OperatorThread(
        Path(kubeconfig), namespace, resync_seconds=60.0, health_concurrency=concurrency
    ).start()
    global PROBE
    PROBE = ProbeCPU(operator.controller.prober)
    operator.controller.prober = PROBE
    try:
        ours0, other0 = cpu_split()
        idle = rss_mib()
        started = time.monotonic()
        for i in range(objects):
            body = manifest(namespace, f"obj-{i:03d}", url, database, f"t{i:03d}", "1s")
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        while checked(custom, namespace) < objects:
            time.sleep(0.2)
        ours1, other1 = cpu_split()
        queries = probe_cpu()
        print(
            f"first round: {objects} objects created and each checked once in {time.monotonic() - started:.1f} s "
            f"(CPU {ours1 - ours0 - queries:.1f} s operator, {queries:.1f} s health queries, "
            f"{other1 - other0:.1f} s chDB's threads); "
            f"RSS {idle:.0f} MiB with no object, {rss_mib():.0f} MiB with {objects}",
            flush=True,
        )
        label = f"back to back ({objects} objects, interval 1s, --health-concurrency {concurrency})"
        per_check = window(label, seconds)

        for i in range(objects):
            patch = {"spec": {"healthCheck": {"interval": "5m"}}}
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, f"obj-{i:03d}", patch)
        # A new generation is checked at once; after that round nothing is due for 5 minutes.
        deadline = time.monotonic() + 300
        last, quiet_since = checks_done()[0], time.monotonic()
        while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            if checks_done()[0] != last:
                last, quiet_since = checks_done()[0], time.monotonic()
        window(f"at rest ({objects} objects, interval 5m, between two rounds)", seconds)
        needed = objects / 5
        print(
            f"on the default interval (5m), {objects} objects need {needed:.0f} checks/min: about "
            f"{needed * per_check:.1f} s CPU per minute ({needed * per_check / 60:.0%} of a core) at "
            f"{per_check * 1000:.0f} ms CPU per check, engine included",
            flush=True,
        )
    finally:
        operator.stop()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
        ch.close()


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return 0.0


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure_alone(kubeconfig: str, objects: int, seconds: float, concurrency: int, workdir: Path) -> None:
    """``tablerefresh operator`` in a process of its own, as deployed (no engine inside), its objects
    pointed at a ClickHouse that refuses connections: each check is a refused connect and a status write."""
    custom = client.CustomObjectsApi(client.ApiClient())
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "create", "namespace", namespace)
    metrics, live = free_port(), free_port()
    log = (workdir / "operator.log").open("wb")
    command = [sys.executable, "-m", "tablerefresh", "operator", "--namespace", namespace]
    command += ["--metrics-port", str(metrics), "--liveness", f"http://127.0.0.1:{live}/healthz"]
    command += ["--health-concurrency", str(concurrency)]
    command += ["--allow-host", "127.0.0.1", "--min-health-interval", "0"]
    proc = subprocess.Popen(command, env={**os.environ, "KUBECONFIG": kubeconfig}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{live}/healthz", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the operator did not start") from None
                time.sleep(0.1)
        idle = proc_rss(proc.pid)
        for i in range(objects):
            body = manifest(namespace, f"obj-{i:03d}", "clickhouse://127.0.0.1:9", "bench", f"t{i:03d}", "1s")
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        while checked(custom, namespace) < objects:
            time.sleep(0.2)
        count0, cpu0, started = scrape(metrics, f"{CHECKS}_count"), proc_cpu(proc.pid), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        checks = scrape(metrics, f"{CHECKS}_count") - count0
        cpu = proc_cpu(proc.pid) - cpu0
        print(
            f"the operator alone ({objects} objects, interval 1s, ClickHouse refusing connections): "
            f"{checks * 60 / elapsed:.0f} checks/min; CPU {cpu * 60 / elapsed:.1f} s per minute "
            f"({cpu / checks * 1000 if checks else 0:.1f} ms per check); "
            f"RSS {idle:.0f} MiB with no object, {proc_rss(proc.pid):.0f} MiB with {objects}",
            flush=True,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")


def run(kubeconfig: str, args: argparse.Namespace, workdir: Path) -> None:
    measure(kubeconfig, args.objects, args.rows, args.seconds, args.concurrency, workdir)
    measure_alone(kubeconfig, args.objects, args.seconds, args.concurrency, workdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per table")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each measured phase")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="--health-concurrency (at most half of it against one ClickHouse)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tablerefresh-bench-") as tmp:
        workdir = Path(tmp)
        if os.environ.get("KUBECONFIG"):
            run(os.environ["KUBECONFIG"], args, workdir)
            return 0
        # Imported by name: the test package is not part of what mypy checks here.
        cluster: Any = importlib.import_module("tests.controlplane.cluster")
        plane = cluster.ControlPlane(workdir / "controlplane", tie_to_parent=True).start()
        os.environ["PATH"] = f"{plane.bin_dir}/bin:{os.environ['PATH']}"  # its kubectl
        try:
            run(str(plane.kubeconfig), args, workdir)
        finally:
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
