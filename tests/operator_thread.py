"""The operator in the pytest process, in a thread of its own with its own event loop.

The health tests need it here rather than in a subprocess: chDB runs one engine per process and a
second process cannot open the same path, so the operator must share the tests' engine. Everything
else is the real thing: ``handlers.register`` on a ``Controller`` with ``ApiKube``, kopf watching
one namespace of the test control plane.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import kopf
from kubernetes import config

from tablerefresh.controller.kube import ApiKube
from tablerefresh.controller.runtime.controller import Controller
from tablerefresh.controller.runtime.handlers import register
from tablerefresh.controller.runtime.settings import operator_settings
from tests.kube_support import TEST_POLICY


class OperatorThread:
    def __init__(self, kubeconfig: Path, namespace: str, **controller_options: Any) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.options = {"resync_seconds": 5.0, "policy": TEST_POLICY, **controller_options}
        self.controller: Controller | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> OperatorThread:
        # kopf's login (kopf.login_via_client) reads $KUBECONFIG; the caller sets it (monkeypatch).
        assert os.environ.get("KUBECONFIG") == str(self.kubeconfig), "set KUBECONFIG to the test cluster first"
        api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.controller = Controller(ApiKube(api_client), **self.options)
        registry = kopf.OperatorRegistry()
        register(registry, self.controller)
        settings = operator_settings(standalone=True)
        self._stop.clear()
        self._ready.clear()

        def main() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        registry=registry,
                        settings=settings,
                        namespaces=[self.namespace],
                        standalone=True,
                        stop_flag=self._stop,
                        ready_flag=self._ready,
                    )
                )
            except BaseException as exc:  # reported by stop(); the test sees it
                self.error = exc
                self._ready.set()

        self._thread = threading.Thread(target=main, name=f"operator {self.namespace}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            raise AssertionError(f"the operator did not start: {self.error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        self._thread = None
        assert not alive, "the operator did not stop"
        if self.error is not None:
            raise AssertionError(f"the operator failed: {self.error!r}") from self.error
