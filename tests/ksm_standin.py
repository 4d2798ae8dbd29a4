"""A stand-in for kube-state-metrics' CustomResourceState metrics of TableRefreshes, for the Prometheus
tests: kube-state-metrics is not packaged in Debian, and the dashboard's thresholds come from it.

It reads the shipped configuration (the ConfigMap in manifests/monitoring/kube-state-metrics.yaml),
lists the TableRefreshes of its namespaces at each scrape and serves what that configuration asks
for: ``labelsFromPath``; ``Gauge`` (``path``, ``nilIsZero``; numbers, booleans and RFC 3339 times as
Unix seconds); ``StateSet`` (``path``, ``labelsFromPath``, ``labelName``, ``valueFrom``, ``list``).
Series are named ``<metricNamePrefix>_<name>``. A field the object does not have gives no series.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.harness.kube import GROUP, PLURAL, VERSION

CONFIG = Path(__file__).resolve().parent.parent / "manifests" / "monitoring" / "kube-state-metrics.yaml"


def shipped_config() -> dict[str, Any]:
    configmap = next(d for d in yaml.safe_load_all(CONFIG.read_text()) if d["kind"] == "ConfigMap")
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"])
    return config


def _at(obj: Any, path: Sequence[str]) -> Any:
    for step in path:
        if not isinstance(obj, Mapping) or step not in obj:
            return None
        obj = obj[step]
    return obj


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _labels(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def render(resource: Mapping[str, Any], objects: Sequence[Mapping[str, Any]]) -> list[str]:
    prefix = resource["metricNamePrefix"]
    lines: list[str] = []
    for obj in objects:
        base = {k: str(_at(obj, p)) for k, p in resource.get("labelsFromPath", {}).items() if _at(obj, p) is not None}
        for metric in resource["metrics"]:
            name, each = f"{prefix}_{metric['name']}", metric["each"]
            if each["type"] == "Gauge":
                raw = _at(obj, each["gauge"]["path"])
                value = 0.0 if raw is None and each["gauge"].get("nilIsZero") else _number(raw)
                if value is not None:
                    lines.append(f"{name}{_labels(base)} {value}")
            elif each["type"] == "StateSet":
                spec = each["stateSet"]
                found = _at(obj, spec["path"])
                items = found if isinstance(found, list) else ([] if found is None else [found])
                for item in items:
                    extra = {k: str(_at(item, p)) for k, p in spec.get("labelsFromPath", {}).items()}
                    current = _at(item, spec["valueFrom"]) if "valueFrom" in spec else item
                    for state in spec["list"]:
                        labels = {**base, **extra, spec["labelName"]: state}
                        lines.append(f"{name}{_labels(labels)} {1.0 if current == state else 0.0}")
    return lines


class KubeStateMetrics:
    def __init__(self, api_client: client.ApiClient, namespaces: list[str]) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self.namespaces = namespaces
        (self.resource,) = shipped_config()["spec"]["resources"]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ksm stand-in", daemon=True)

    def text(self) -> str:
        objects: list[dict[str, Any]] = []
        for ns in self.namespaces:
            raw = self._custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _preload_content=False)
            objects.extend(json.loads(raw.data)["items"])
        return "\n".join(render(self.resource, objects)) + "\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> KubeStateMetrics:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
