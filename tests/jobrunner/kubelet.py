"""The stand-in kubelet: runs one Pod's container as a local process and writes the Pod's status.

What it does as the kubelet would: resolve the environment (``envvars``), expand ``$(VAR)`` in the
command and args, start the container's command with exactly that environment, report Running, and
when the process ends report the container terminated with its exit code and termination message
(``terminationMessagePath``, ``FallbackToLogsOnError``), the Pod Succeeded or Failed. A kill (the
Job's ``activeDeadlineSeconds``, the Job deleted) sends SIGTERM, then SIGKILL after the grace period.

What it cannot do, and does instead: there is no image, so the command's first word is looked up in
``commands`` (the image's ``tablerefresh`` -> the installed one) or else on this machine's PATH; there
is no container filesystem, so the termination message path is a file in the Pod's own directory,
and every argument naming that path names the file instead; the security context (user, read-only
root) and resources are not applied. One container per Pod (the refresh's Pods have one).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.jobrunner import statuses
from tests.jobrunner.envvars import ConfigError, Resolver, expand

log = logging.getLogger(__name__)

MERGE = "application/merge-patch+json"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
# A real kubelet waits terminationGracePeriodSeconds (30 by default); the stand-in, at most this.
MAX_GRACE_SECONDS = 5.0
# Base PATH of the processes, like an image's; the commands map adds the installed ones.
IMAGE_PATH = "/usr/local/bin:/usr/bin:/bin"


def _now() -> datetime:
    return datetime.now(UTC)


class PodRun:
    """One Pod on the stand-in node: a thread that starts, watches and reports its container."""

    def __init__(
        self,
        api_client: client.ApiClient,
        pod: Mapping[str, Any],
        directory: Path,
        commands: Mapping[str, str],
        on_change: Callable[[], None],
    ) -> None:
        self.pod = dict(pod)
        self.name = str(pod["metadata"]["name"])
        self.namespace = str(pod["metadata"]["namespace"])
        self.directory = directory
        self._core = client.CoreV1Api(api_client)
        self._resolver = Resolver(api_client)
        self._commands = dict(commands)
        self._on_change = on_change
        self._killed = threading.Event()
        self._kill_reason = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.environment: dict[str, str] | None = None  # what the container got, for the tests
        self.argv: list[str] | None = None
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"kubelet {self.namespace}/{self.name}", daemon=True)

    @property
    def log_file(self) -> Path:
        return self.directory / "container.log"

    @property
    def termination_file(self) -> Path:
        return self.directory / "termination-log"

    def start(self) -> PodRun:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def kill(self, reason: str) -> None:
        """Stop the container (deadline, deletion): SIGTERM, then SIGKILL after the grace period."""
        with self._lock:
            if self._killed.is_set():
                return
            self._kill_reason = reason
            self._killed.set()
            process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)

    # The thread.

    def _run(self) -> None:
        try:
            self._lifecycle()
        except Exception:
            log.exception("stand-in kubelet: pod %s/%s", self.namespace, self.name)
        finally:
            self._on_change()

    def _lifecycle(self) -> None:
        container = self.pod["spec"]["containers"][0]
        created = _now()
        while True:  # the kubelet retries a config error until the Pod is deleted or killed
            try:
                env = self._resolver.environment(self.pod, container)
                break
            except ConfigError as exc:
                self._status(statuses.waiting(self.pod, created, "CreateContainerConfigError", str(exc)))
                if self._killed.wait(1.0):
                    return
        if self._killed.is_set():
            return
        argv = self._argv(container, env)
        self.environment = env
        self.argv = argv
        started = _now()
        self._status(statuses.running(self.pod, started))
        exit_code = self._execute(container, argv, env)
        self.exit_code = exit_code
        file_text = self.termination_file.read_text(errors="replace") if self.termination_file.exists() else ""
        log_text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        message = statuses.termination_message(
            file_text,
            log_text,
            exit_code=exit_code,
            policy=str(container.get("terminationMessagePolicy") or "File"),
        )
        reason = "StartError" if exit_code == 128 and not file_text else ""
        self._status(statuses.terminated(self.pod, started, _now(), exit_code, message, reason))

    def _argv(self, container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
        path = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
        words = [expand(str(w), env) for w in [*(container.get("command") or []), *(container.get("args") or [])]]
        # No container filesystem: the path the kubelet would mount is the Pod's own file.
        return [w.replace(path, str(self.termination_file)) for w in words]

    def _execute(self, container: Mapping[str, Any], argv: list[str], env: Mapping[str, str]) -> int:
        program = self._commands.get(argv[0]) if argv else None
        program = program or (shutil.which(argv[0], path=IMAGE_PATH) if argv else None)
        if program is None:
            self.termination_file.write_text(f'exec: "{argv[0] if argv else ""}": executable file not found in $PATH')
            return 128
        extra = os.pathsep.join(sorted({str(Path(p).parent) for p in self._commands.values()}))
        process_env = {
            "PATH": f"{extra}{os.pathsep}{IMAGE_PATH}" if extra else IMAGE_PATH,
            "HOME": str(self.directory),
            "HOSTNAME": self.name,
            **env,
        }
        workdir = container.get("workingDir") or str(self.directory)
        with self._lock:
            if self._killed.is_set():
                return 137
            with self.log_file.open("wb") as out:
                self._process = subprocess.Popen(
                    [program, *argv[1:]],
                    env=process_env,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: a kill reaches its children
                )
        process = self._process
        grace = min(float(self.pod["spec"].get("terminationGracePeriodSeconds") or 30), MAX_GRACE_SECONDS)
        while not self._killed.is_set() and process.poll() is None:
            try:
                process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
        code = self._stop(process, grace) if process.poll() is None else process.returncode
        return 128 - code if code < 0 else code  # a signal: 128 + its number, as a container reports it

    @staticmethod
    def _stop(process: subprocess.Popen[bytes], grace: float) -> int:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def _status(self, status: dict[str, Any]) -> None:
        try:
            self._core.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": status}, _content_type=MERGE, _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to report to
                raise
        self._on_change()

    def record(self) -> dict[str, Any]:
        """What the test may want to see: the command line and environment the container got."""
        return {"pod": self.name, "argv": self.argv, "environment": self.environment, "exitCode": self.exit_code}

    def __repr__(self) -> str:
        return json.dumps(self.record())
