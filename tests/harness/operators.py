"""The operator, run two ways against the test control plane.

``InProcessOperator`` runs it in the tests' process on ``kopf.testing.KopfRunner`` (kopf's own
harness: ``kopf run`` in a thread of its own with its own loop), with the product's registry
(``handlers.register`` on a ``Controller`` over ``ApiKube``) and settings. The health tests need it
there: chDB runs one engine per process, so the operator must share the tests' engine, and the
per-object metrics are read from this process's registry.

``OperatorProcess`` is ``tablerefresh operator`` as a process of its own, as the image runs it, for
what only a process shows: a restart, its log, its liveness endpoint and its /metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import kopf
from kopf.testing import KopfRunner
from kubernetes import config
from prometheus_client.parser import text_string_to_metric_families

from tablerefresh.controller.kube import ApiKube
from tablerefresh.controller.runtime.controller import Controller
from tablerefresh.controller.runtime.handlers import register
from tablerefresh.controller.runtime.settings import operator_settings
from tests.controlplane.cluster import free_port
from tests.harness.kube import TEST_POLICY, TEST_POLICY_ARGS, stop_group, wait_for

INSTALLED = str(
    Path(sys.executable).parent / "tablerefresh"
)  # the image's `tablerefresh`: this package's console script


class InProcessOperator:
    """The operator watching one namespace, in this process, on ``KopfRunner``."""

    def __init__(self, kubeconfig: Path, namespace: str, **controller_options: Any) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.options = {"resync_seconds": 5.0, "policy": TEST_POLICY, **controller_options}
        self.controller: Controller | None = None
        self._runner: KopfRunner | None = None
        self._default_registry = kopf.get_default_registry()

    def start(self) -> InProcessOperator:
        # kopf's login (kopf.login_via_client) reads $KUBECONFIG; the caller sets it (fixtures.start_operator).
        assert os.environ.get("KUBECONFIG") == str(self.kubeconfig), "set KUBECONFIG to the test cluster first"
        api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        registry = kopf.OperatorRegistry()
        self.controller = Controller(ApiKube(api_client), **self.options)
        register(registry, self.controller)
        # --quiet: the root logger stays at WARNING, as without kopf's CLI (tests raise what they read).
        args = ["run", "--standalone", "--quiet", "--namespace", self.namespace]
        # kopf run makes the registry it is given the process's default: put the old one back at stop,
        # so that a later KopfRunner of another test does not run this operator's handlers too.
        self._default_registry = kopf.get_default_registry()
        self._runner = KopfRunner(args, registry=registry, settings=operator_settings(standalone=True), timeout=30)
        self._runner.__enter__()
        return self

    @property
    def error(self) -> BaseException | None:
        """What ended the operator's run early, if it has ended; None while it runs."""
        if self._runner is None or not self._runner.future.done():
            return None
        return self._runner.future.exception() or self._runner.future.result().exception

    def stop(self) -> None:
        """Stop it; kopf's exit code and any exception of its run fail the test here."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            runner.__exit__(None, None, None)  # raises what the operator raised
        finally:
            kopf.set_default_registry(self._default_registry)
        assert runner.exit_code == 0, runner.output[-3000:]


class OperatorProcess:
    """``tablerefresh operator`` watching one namespace, with its liveness endpoint and /metrics on
    loopback ports and its log in ``directory``; it can be stopped and started again."""

    def __init__(self, kubeconfig: Path, namespace: str, directory: Path) -> None:
        self.kubeconfig, self.namespace, self.directory = kubeconfig, namespace, directory
        self.log = directory / "operator.log"
        self.metrics_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        # A free port can be taken by another process before the operator binds it (the other xdist
        # worker picks ports too): then it exits saying so, and it is started again on new ports.
        for _ in range(3):
            if self._start_once():
                return self
        raise AssertionError(f"the operator found no free port three times:\n{self.tail()}")

    def _start_once(self) -> bool:
        """Start it and wait for its liveness endpoint; False when a port it was given was taken."""
        liveness = free_port()
        self.metrics_port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "KUBECONFIG": str(self.kubeconfig),
        }
        logged = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    INSTALLED,
                    "operator",
                    *("--namespace", self.namespace),
                    *("--liveness", f"http://127.0.0.1:{liveness}/healthz"),
                    *("--metrics-port", str(self.metrics_port)),
                    *("--resync", "5"),
                    *TEST_POLICY_ARGS,
                ],
                env=env,
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def alive() -> bool | None:
            assert self._process is not None
            if self._process.poll() is not None:
                said = self.log.read_bytes()[logged:].decode(errors="replace")
                assert "address already in use" in said, self.tail()
                return None  # stop waiting: a port was taken
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        def settled() -> bool:
            state = alive()
            return state is None or state

        wait_for("the operator's liveness endpoint", settled, timeout=60, interval=0.1)
        return self._process.poll() is None

    def stop(self) -> None:
        stop_group(self._process)
        self._process = None

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text

    def sample(self, metric: str, **labels: str) -> float | None:
        """The first series of its /metrics, scraped now, with these labels (among others); None when absent."""
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def reconciles(self, *triggers: str) -> float:
        """Reconciles that ended well, of these triggers (resume, create, update, cronjob, resync; all
        when none is named), since it started."""
        names = triggers or ("resume", "create", "update", "cronjob", "resync")
        return sum(self.sample("tablerefresh_reconciles_total", result="ok", trigger=t) or 0.0 for t in names)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
