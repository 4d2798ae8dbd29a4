"""The plugin's API calls, with the user's kubeconfig (``--kubeconfig``, else ``$KUBECONFIG``, else
``~/.kube/config``; ``--context``) and nothing else: no in-cluster config, no operator in between."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tablerefresh.controller.policy.cronjob import JOB_NAME_LABEL, NAME_LABEL, cronjob_name, name_label_value
from tablerefresh.controller.policy.owners import owner_of
from tablerefresh.spec import GROUP, PLURAL, VERSION

TIMEOUT = (5.0, 30.0)


class PluginError(Exception):
    """Said to the user as it is, with exit code 1."""


def _data(call: Callable[[], Any], what: str) -> Any:
    try:
        return json.loads(call().data or b"{}")
    except ApiException as exc:
        if exc.status == 404:
            raise PluginError(f"{what} not found") from exc
        try:
            message = json.loads(exc.body or "{}").get("message") or exc.reason
        except ValueError:
            message = exc.reason
        raise PluginError(f"{what}: {message}") from exc
    except OSError as exc:
        raise PluginError(f"cannot reach the cluster: {exc}") from exc


class Cluster:
    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            self.api_client = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            if context:
                active = next(c for c in contexts if c["name"] == context)
        except (config.ConfigException, StopIteration, OSError) as exc:
            raise PluginError(f"cannot load the kubeconfig: {exc}") from exc
        self.default_namespace = str((active.get("context") or {}).get("namespace") or "default")
        self._custom = client.CustomObjectsApi(self.api_client)
        self._batch = client.BatchV1Api(self.api_client)
        self._core = client.CoreV1Api(self.api_client)

    def tablerefresh(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = _data(
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False, _request_timeout=TIMEOUT
            ),
            f'TableRefresh "{name}" in namespace "{namespace}"',
        )
        return found

    def tablerefreshes(self, namespace: str | None) -> list[dict[str, Any]]:
        """In one namespace, or in all (None)."""
        if namespace is None:
            listed = _data(
                lambda: self._custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _preload_content=False, _request_timeout=TIMEOUT
                ),
                "TableRefreshes",
            )
        else:
            listed = _data(
                lambda: self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, _preload_content=False, _request_timeout=TIMEOUT
                ),
                f'TableRefreshes in namespace "{namespace}"',
            )
        items: list[dict[str, Any]] = listed.get("items") or []
        return sorted(items, key=lambda t: (t["metadata"]["namespace"], t["metadata"]["name"]))

    def set_suspend(self, namespace: str, name: str, suspend: bool) -> dict[str, Any]:
        patched: dict[str, Any] = _data(
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"spec": {"suspend": suspend}},
                _preload_content=False,
                _request_timeout=TIMEOUT,
            ),
            f'TableRefresh "{name}" in namespace "{namespace}"',
        )
        return patched

    def jobs(self, namespace: str, name: str, cronjob_uid: str | None) -> list[dict[str, Any]]:
        """The Jobs of the TableRefresh's CronJob: labelled with its name and, when known, owned by it."""
        listed = _data(
            lambda: self._batch.list_namespaced_job(
                namespace,
                label_selector=f"{NAME_LABEL}={name_label_value(name)}",
                _preload_content=False,
                _request_timeout=TIMEOUT,
            ),
            "Jobs",
        )
        cronjob = cronjob_name(name)
        return [j for j in listed.get("items") or [] if _of_cronjob(j, cronjob, cronjob_uid)]

    def pods(self, namespace: str, jobs: list[str]) -> list[dict[str, Any]]:
        if not jobs:
            return []
        selector = f"{JOB_NAME_LABEL} in ({','.join(jobs)})"
        listed = _data(
            lambda: self._core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False, _request_timeout=TIMEOUT
            ),
            "Pods",
        )
        items: list[dict[str, Any]] = listed.get("items") or []
        return items


def _of_cronjob(job: Mapping[str, Any], cronjob: str, cronjob_uid: str | None) -> bool:
    """Controlled by the CronJob of that name (and uid, when known): the controller's own reading."""
    owner = owner_of(job)
    return owner is not None and owner.is_cronjob and owner.name == cronjob and cronjob_uid in (None, owner.uid)
