"""What the tests against the API server share: names, waiting, and the TableRefresh CRD installed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tablerefresh.controller.policy.admission import CREDENTIALS_LABEL, OperatorPolicy

GROUP, VERSION, PLURAL = "tablerefresh.dev", "v1alpha1", "tablerefreshes"
ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "crds" / "tablerefresh.dev_tablerefreshes.yaml"

T = TypeVar("T")
_crd_installed: set[str] = set()


# The tests' operator policy: ClickHouse on this machine (loopback, embedded paths), and health
# checks as often as a test's spec asks. The shipped default allows in-cluster Services only.
TEST_POLICY = OperatorPolicy(allowed_hosts=("127.0.0.1", "localhost", "chdb://*"), min_health_interval_seconds=0)
TEST_POLICY_ARGS = [
    *("--allow-host", "127.0.0.1", "--allow-host", "localhost", "--allow-host", "chdb://*"),
    *("--min-health-interval", "0"),
]
# What a Secret's owner sets to let TableRefresh objects use it.
CREDENTIALS_LABELS = {CREDENTIALS_LABEL: "true"}

def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.05) -> T:
    """The probe's first truthy value, or an AssertionError naming what never came."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def install_crd(plane: Any) -> None:
    """The repo's CRD, applied and established, once per cluster."""
    if str(plane.kubeconfig) in _crd_installed:
        return
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{PLURAL}.{GROUP}")
    _crd_installed.add(str(plane.kubeconfig))


def stop_group(process: subprocess.Popen[Any] | None, timeout: float = 30) -> None:
    """Stop a server started in its own process group (``start_new_session``): TERM, then KILL."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
