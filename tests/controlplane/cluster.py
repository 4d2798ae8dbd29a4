"""Start and stop the test control plane: etcd and our kube-apiserver on free
loopback ports, with TLS from a throwaway CA and a kubeconfig for a client
in group system:masters."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import pki, standins

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_SCRIPT = HERE / "build.sh"


class ControlPlaneError(RuntimeError):
    pass


def cache_root() -> Path:
    base = os.environ.get("TABLEREFRESH_CACHE") or str(Path.home() / ".cache" / "tablerefresh")
    return Path(base) / "controlplane"


def build(verbose: bool = True) -> Path:
    """Run build.sh (seconds when cached) and return the folder with bin/."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=None if verbose else subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT.relative_to(REPO)} failed with {proc.returncode}:\n{proc.stderr or ''}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the process that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _pid_alive(pid: int, name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(cmdline.decode(errors="replace")) == name


class ControlPlane:
    """etcd plus kube-apiserver with state in ``directory``.

    ``directory/kubeconfig`` is the kubeconfig; ``directory/state.json`` the
    processes; ``directory/logs`` their output; ``directory/etcd`` the data.
    """

    def __init__(self, directory: os.PathLike[str] | str, bin_dir: Path | None = None,
                 tie_to_parent: bool = False) -> None:
        self.dir = Path(directory).resolve()
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.tie_to_parent = tie_to_parent
        self.state: dict[str, Any] = {}
        self.startup_seconds: float | None = None
        state_file = self.dir / "state.json"
        if state_file.exists():
            self.state = json.loads(state_file.read_text())
            if not self.bin_dir and self.state.get("bin_dir"):
                self.bin_dir = Path(self.state["bin_dir"])

    # ---------------------------------------------------------------- paths
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def server(self) -> str:
        return self.state["server"]

    def _bin(self, name: str) -> str:
        assert self.bin_dir, "not built"
        return str(self.bin_dir / "bin" / name)

    def is_running(self) -> bool:
        return bool(self.state) and all(
            _pid_alive(self.state.get(f"{n}_pid", -1), n) for n in ("etcd", "kube-apiserver")
        )

    # ---------------------------------------------------------------- start
    def start(self, timeout: float = 60.0) -> ControlPlane:
        if self.is_running():
            raise ControlPlaneError(f"already running in {self.dir}")
        if self.bin_dir is None or not (self.bin_dir / "bin" / "kube-apiserver").exists():
            self.bin_dir = build()
        began = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        certs = pki.make_pki(self.dir / "pki")
        standin_file = standins.cached(cache_root())

        old = self.state
        ports = {}
        for name in ("etcd_client_port", "etcd_peer_port", "apiserver_port"):
            p = old.get(name)
            ports[name] = p if p and port_is_free(p) else free_port()
        etcd_url = f"http://127.0.0.1:{ports['etcd_client_port']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer_port']}"
        server = f"https://127.0.0.1:{ports['apiserver_port']}"
        self.state = {
            **ports,
            "server": server,
            "etcd": etcd_url,
            "bin_dir": str(self.bin_dir),
        }

        preexec = _die_with_parent if self.tie_to_parent else None
        with open(logs / "etcd.log", "ab") as log:
            etcd = subprocess.Popen(
                [
                    self._bin("etcd"),
                    "--name=default",
                    f"--data-dir={self.dir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=default={peer_url}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                    "--quota-backend-bytes=4294967296",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=not self.tie_to_parent,
                preexec_fn=preexec,
            )
        self.state["etcd_pid"] = etcd.pid
        self._save_state()
        try:
            self._wait_etcd(etcd, timeout)
            with open(logs / "kube-apiserver.log", "ab") as log:
                apiserver = subprocess.Popen(
                    [
                        self._bin("kube-apiserver"),
                        f"--etcd-servers={etcd_url}",
                        "--bind-address=127.0.0.1",
                        f"--secure-port={ports['apiserver_port']}",
                        f"--tls-cert-file={certs['server.crt']}",
                        f"--tls-private-key-file={certs['server.key']}",
                        f"--client-ca-file={certs['ca.crt']}",
                        f"--cert-dir={self.dir / 'pki'}",
                        "--watch-cache=false",
                        "--profiling=false",
                        "--shutdown-delay-duration=0s",
                        f"--standin-crds={standin_file}",
                        "--v=1",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=not self.tie_to_parent,
                    preexec_fn=preexec,
                )
            self.state["kube-apiserver_pid"] = apiserver.pid
            self._save_state()
            self._write_kubeconfig(certs)
            self._wait_ready(apiserver, certs, timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self.state["startup_seconds"] = round(self.startup_seconds, 3)
        self._save_state()
        return self

    def _save_state(self) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.dir / "state.json")

    def _log_tail(self, name: str, lines: int = 40) -> str:
        try:
            return "\n".join((self.dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_etcd(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        port = self.state["etcd_client_port"]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(f"etcd exited with {proc.returncode}:\n{self._log_tail('etcd')}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/health")
                body = conn.getresponse().read()
                conn.close()
                if b'"true"' in body:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise ControlPlaneError(f"etcd not healthy after {timeout}s:\n{self._log_tail('etcd')}")

    def ssl_context(self) -> ssl.SSLContext:
        pki_dir = self.dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(pki_dir / "client.crt"), str(pki_dir / "client.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET a path from the API server as the admin client."""
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.state["apiserver_port"], context=self.ssl_context(), timeout=timeout
        )
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _wait_ready(self, proc: subprocess.Popen, certs: dict[str, Path], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"kube-apiserver exited with {proc.returncode}:\n{self._log_tail('kube-apiserver')}"
                )
            try:
                status, body = self.get("/readyz", timeout=2)
                if status == 200:
                    return
                last = body.decode(errors="replace")
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.05)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {timeout}s: {last}\n{self._log_tail('kube-apiserver')}"
        )

    def _write_kubeconfig(self, certs: dict[str, Path]) -> None:
        def b64(p: Path) -> str:
            return b64encode(p.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tablerefresh-test",
                    "cluster": {
                        "server": self.state["server"],
                        "certificate-authority-data": b64(certs["ca.crt"]),
                    },
                }
            ],
            "users": [
                {
                    "name": "tablerefresh-test-admin",
                    "user": {
                        "client-certificate-data": b64(certs["client.crt"]),
                        "client-key-data": b64(certs["client.key"]),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "tablerefresh-test",
                    "context": {"cluster": "tablerefresh-test", "user": "tablerefresh-test-admin",
                                "namespace": "default"},
                }
            ],
            "current-context": "tablerefresh-test",
        }
        tmp = self.dir / "kubeconfig.tmp"
        tmp.write_text(json.dumps(config, indent=1))
        tmp.chmod(0o600)
        tmp.replace(self.kubeconfig)

    # ----------------------------------------------------------------- stop
    def stop(self, timeout: float = 10.0) -> None:
        """End the API server, then etcd (TERM, then KILL)."""
        for name in ("kube-apiserver", "etcd"):
            pid = self.state.get(f"{name}_pid")
            if not pid or not _pid_alive(pid, name):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _pid_alive(pid, name):
                try:
                    if os.waitpid(pid, os.WNOHANG) != (0, 0):
                        break
                except ChildProcessError:
                    pass
                time.sleep(0.05)
            if _pid_alive(pid, name):
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        for name in ("kube-apiserver", "etcd"):
            self.state.pop(f"{name}_pid", None)
        if self.dir.exists() and self.state:
            self._save_state()

    # -------------------------------------------------------------- kubectl
    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self._bin("kubectl"), self.kubeconfig, self.dir / "kubectl-cache", args,
                           check=check, input=input, timeout=timeout)


def run_kubectl(kubectl: str, kubeconfig: Path, cache_dir: Path, args: Sequence[str], *,
                check: bool = True, input: str | None = None,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run(
        [kubectl, f"--cache-dir={cache_dir}", *args],
        input=input,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise ControlPlaneError(
            f"kubectl {' '.join(args)} failed with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def which_kubectl() -> str | None:
    return shutil.which("kubectl")


__all__ = ["ControlPlane", "ControlPlaneError", "build", "cache_root", "free_port", "run_kubectl"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m tests.controlplane")
