"""A real Prometheus (Debian's ``prometheus`` package) for the tests, on a loopback port.

It scrapes the targets it is given every second, evaluates the rule files it is given every second,
keeps its data in the test's directory, and answers the HTTP API (``query``, ``alerts``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.cluster import free_port
from tests.harness.kube import stop_group, wait_for

BINARY = "prometheus"


def find() -> str | None:
    return shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)


def short_rules(rules: Path, out: Path, hold: str = "2s") -> Path:
    """A copy of a rule file with every ``for:`` shortened to ``hold``: same expressions, faster alerts."""
    document = yaml.safe_load(rules.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = hold
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    return out


class Prometheus:
    def __init__(self, binary: str, directory: Path, targets: dict[str, str], rule_files: list[Path]) -> None:
        """``targets``: job name -> host:port, each scraped at /metrics with its own labels kept."""
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.log = directory / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                # honor_labels: the metrics' own namespace and name are the TableRefresh's (as the
                # shipped ServiceMonitor says with honorLabels).
                {"job_name": job, "honor_labels": True, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        with self.log.open("wb") as out:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for("Prometheus ready", self._ready, timeout=60, interval=0.2)
        return self

    def _ready(self) -> bool:
        assert self._process is not None and self._process.poll() is None, self.log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why in the body
            raise AssertionError(f"{path} {params}: {exc.read().decode(errors='replace')}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return [a for a in found if state is None or a["state"] == state]

    def rule_health(self) -> list[tuple[str, str, str]]:
        """(rule, health, lastError) of every rule: a rule that does not evaluate says so here."""
        groups = self.api("rules")["groups"]
        return [(r["name"], r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]]

    def stop(self) -> None:
        stop_group(self._process)
