"""A container's environment, resolved as the kubelet resolves it before starting the container.

``value`` (with ``$(VAR)`` references to variables defined before it), ``secretKeyRef`` and
``configMapKeyRef`` read from the API, and ``fieldRef`` from the Pod. A missing Secret, ConfigMap or
key (unless ``optional``) is the kubelet's CreateContainerConfigError: the container does not start.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

_FIELD = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
_REFERENCE = re.compile(r"\$\((\w+)\)|\$\$")


class ConfigError(Exception):
    """CreateContainerConfigError: the message is the kubelet's."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` -> its value when defined (else left as is); ``$$`` -> ``$``, as Kubernetes does."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, text)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    meta = pod["metadata"]
    match = _FIELD.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path!r} (the stand-in kubelet resolves metadata and spec fields)")
    return str(simple[path] or "")


class Resolver:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api_client)

    def _data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        read = self._core.read_namespaced_secret if kind == "secret" else self._core.read_namespaced_config_map
        try:
            body = json.loads(read(name, namespace, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = dict(body.get("data") or {})
        if kind == "secret":
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return data

    def _key(self, kind: str, namespace: str, ref: Mapping[str, Any]) -> str | None:
        data = self._data(kind, namespace, str(ref["name"]))
        optional = bool(ref.get("optional"))
        if data is None:
            if optional:
                return None
            raise ConfigError(f'{kind} "{ref["name"]}" not found')
        if ref["key"] not in data:
            if optional:
                return None
            what = "secret" if kind == "secret" else "configmap"
            raise ConfigError(f"couldn't find key {ref['key']} in {what.capitalize()} {namespace}/{ref['name']}")
        return data[ref["key"]]

    def environment(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
        namespace = str(pod["metadata"]["namespace"])
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            name = str(var["name"])
            source = var.get("valueFrom")
            if source is None:
                env[name] = expand(str(var.get("value") or ""), env)
                continue
            value: str | None
            if "secretKeyRef" in source:
                value = self._key("secret", namespace, source["secretKeyRef"])
            elif "configMapKeyRef" in source:
                value = self._key("configmap", namespace, source["configMapKeyRef"])
            elif "fieldRef" in source:
                value = field_value(pod, str(source["fieldRef"]["fieldPath"]))
            else:
                raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)} in the stand-in kubelet")
            if value is not None:
                env[name] = value
        return env
