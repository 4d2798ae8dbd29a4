"""The Kubernetes client: every API call the controller makes, behind one small interface (``Kube``).

Objects travel as plain dicts (the wire JSON), not the client's generated models: what is
rendered is what is sent, and tests can stand in a fake with the same methods. Every failure is a
:class:`KubeError` carrying the HTTP status and the API server's own message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tablerefresh import spec as api
from tablerefresh.controller.clock import SYSTEM_CLOCK, Clock
from tablerefresh.controller.policy.cronjob import FIELD_MANAGER
from tablerefresh.controller.policy.status import format_time

APPLY = "application/apply-patch+yaml"  # server-side apply; JSON is valid YAML
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
TIMEOUT = (5.0, 30.0)  # connect, read


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Worth retrying: the server is away, busy or raced us; not a request it rejected."""
        return self.status in (0, 409, 429) or self.status >= 500


class Kube(Protocol):
    # The TableRefresh: read it, write its status (runtime.status_writer is the only caller), tell of it.
    def get_tablerefresh(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def apply_status(
        self, namespace: str, name: str, status: Mapping[str, Any], manager: str = FIELD_MANAGER
    ) -> None: ...
    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...
    # What it owns and uses.
    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def apply_cronjob(self, body: Mapping[str, Any]) -> dict[str, Any]: ...
    def secret_metadata(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, str]] | None: ...
    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    def create_job(self, body: Mapping[str, Any]) -> None: ...
    def delete_job(self, namespace: str, name: str) -> None: ...


def _error(exc: ApiException) -> KubeError:
    """The API server's own message (it names the field for invalid objects)."""
    message = str(exc.reason or "")
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(exc.body or "{}").get("message") or message
    return KubeError(int(exc.status or 0), message)


def load_config() -> None:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


# Connections kept open to the API server: room for every thread that may call at once (the reconciles
# and their requests alongside each other, the health checks' Secret reads). The client's default is
# 5 per core; past it, urllib3 drops a connection after each request and the next one opens a new TLS one.
POOL_SIZE = 48


def _pooled(configuration: client.Configuration) -> client.Configuration:
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, POOL_SIZE)
    return configuration


class ApiKube:
    """The real thing, on the official client's configuration."""

    def __init__(self, api_client: client.ApiClient | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self._client = api_client or client.ApiClient(_pooled(client.Configuration.get_default_copy()))
        self._clock = clock
        self._serial = itertools.count()  # with the time, keeps Event names apart
        self._core = client.CoreV1Api(self._client)
        self._batch = client.BatchV1Api(self._client)
        self._custom = client.CustomObjectsApi(self._client)
        self._instance = os.environ.get("POD_NAME") or socket.gethostname()

    @staticmethod
    def _request(
        call: Callable[[], Any], *, allow_missing: bool = False, answer: bool = True
    ) -> dict[str, Any] | None:
        """Run one call; 404 is None when ``allow_missing``; every failure becomes a KubeError.
        ``answer=False``: the caller does not read the answer, so it is not decoded (a status write's
        answer is the whole object: decoding it was most of the JSON the operator parsed)."""
        try:
            body = call().data  # read whole, which hands the connection back to the pool
            if not answer:
                return None
            data: dict[str, Any] = json.loads(body or b"{}")
            return data
        except ApiException as exc:
            if allow_missing and exc.status == 404:
                return None
            raise _error(exc) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, str(exc)) from exc

    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._request(
            lambda: self._batch.read_namespaced_cron_job(
                name, namespace, _preload_content=False, _request_timeout=TIMEOUT
            ),
            allow_missing=True,
        )

    def apply_cronjob(self, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        applied = self._request(
            lambda: self._batch.patch_namespaced_cron_job(
                meta["name"],
                meta["namespace"],
                dict(body),
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        )
        return applied or {}

    def secret_metadata(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret's metadata (its opt-in label), never what it holds; None when it does not exist."""
        found = self._request(
            lambda: self._core.read_namespaced_secret(
                name, namespace, _headers={"Accept": METADATA_ONLY}, _preload_content=False, _request_timeout=TIMEOUT
            ),
            allow_missing=True,
        )
        return None if found is None else dict(found.get("metadata") or {})

    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The Secret's metadata and data, decoded; None when it does not exist. Only the health
        check reads it, and uses it only when the metadata opts in (``policy.admission``)."""
        found = self._request(
            lambda: self._core.read_namespaced_secret(
                name, namespace, _preload_content=False, _request_timeout=TIMEOUT
            ),
            allow_missing=True,
        )
        if found is None:
            return None
        out: dict[str, str] = {}
        for key, value in (found.get("data") or {}).items():
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                out[str(key)] = base64.b64decode(str(value)).decode()
        return dict(found.get("metadata") or {}), out

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        found = self._request(
            lambda: self._core.list_namespaced_pod(
                namespace, label_selector=label_selector, _preload_content=False, _request_timeout=TIMEOUT
            )
        )
        return list((found or {}).get("items") or [])

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        found = self._request(
            lambda: self._batch.list_namespaced_job(
                namespace, label_selector=label_selector, _preload_content=False, _request_timeout=TIMEOUT
            )
        )
        return list((found or {}).get("items") or [])

    def create_job(self, body: Mapping[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        self._request(
            lambda: self._batch.create_namespaced_job(
                namespace,
                dict(body),  # type: ignore[arg-type]  # the wire JSON, as everywhere in the controller
                _preload_content=False,
                _request_timeout=TIMEOUT,
            ),
            answer=False,
        )

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its Pods (as the CronJob controller's Replace does)."""
        self._request(
            lambda: self._batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background", _preload_content=False, _request_timeout=TIMEOUT
            ),
            answer=False,
        )

    def get_tablerefresh(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._request(
            lambda: self._custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, _preload_content=False, _request_timeout=TIMEOUT
            ),
            allow_missing=True,
        )

    def apply_status(self, namespace: str, name: str, status: Mapping[str, Any], manager: str = FIELD_MANAGER) -> None:
        """Server-side apply of the status fields ``manager`` owns; other writers' fields stay.

        Each source (see ``policy.status``) uses its own manager, so a field one stops setting is
        removed without touching the others'.
        """
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        self._request(
            lambda: self._custom.patch_namespaced_custom_object_status(
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                name,
                body,
                field_manager=manager,
                force=True,
                _content_type=APPLY,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            ),
            answer=False,
        )

    def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = involved["metadata"]
        at = self._clock.now()
        now = format_time(at)
        # Named like kubectl's events: the object's name and a unique suffix (the time, then a serial).
        suffix = f"{int(at.timestamp() * 1_000_000):x}{next(self._serial) % 0x1000:03x}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name'][:230]}.{suffix}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": f"{api.GROUP}/controller",
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        model = client.CoreV1Event.from_dict(event)
        assert model is not None  # from_dict returns None only for None
        self._request(
            lambda: self._core.create_namespaced_event(
                meta["namespace"], model, _preload_content=False, _request_timeout=TIMEOUT
            ),
            answer=False,
        )
