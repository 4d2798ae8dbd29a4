"""What a TableRefresh may make the operator do: the installer's policy, and the checks against it. Pure.

The operator holds rights its tenants lack (it creates CronJobs in their namespaces, reads their
Secrets, connects to ClickHouse). So nothing a TableRefresh's author writes is acted on unless the
installer's :class:`OperatorPolicy` allows it, or the owner of a Secret opted in:

- :func:`host_refusal`: the ClickHouse a spec names must match the policy's allowed hosts, before
  any connection (the operator's health check) and before a CronJob carries credentials to it.
- :func:`pod_refusals`: the refresh Job's image, ServiceAccount, node selector, tolerations, pod
  labels and annotations must be allowed by the policy. By default: the operator's own image and
  nothing else, so creating a TableRefresh lets its author run the refresh image in their namespace.
- :func:`credentials_opt_in`: a Secret is used only when its owner labelled it
  ``tablerefresh.dev/credentials: "true"`` (and, with the annotation, named this TableRefresh).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tablerefresh import spec as api

DEFAULT_IMAGE = "tablerefresh/tablerefresh:0.1.0"
# In-cluster Services. A ClickHouse elsewhere is named by the installer, never by a tenant.
DEFAULT_HOSTS = ("*.svc", "*.svc.cluster.local")
_DEFAULT_PORTS = {"clickhouse": 8123, "http": 8123, "clickhouses": 8443, "https": 8443}

CREDENTIALS_LABEL = "tablerefresh.dev/credentials"
# Optional, on the Secret: the TableRefresh names (comma-separated) that may use it; absent, any in its namespace.
CREDENTIALS_FOR_ANNOTATION = "tablerefresh.dev/tablerefreshes"


class AllowedToleration(BaseModel):
    """A toleration a spec may ask for: every field given here must match; ``tolerationSeconds`` is free."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None


class OperatorPolicy(BaseModel):
    """The installer's rules (``--policy FILE``, a ConfigMap in the shipped manifests). Patterns are
    shell globs (``*.analytics.svc``, ``registry.example/tablerefresh:*``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    # host or host:port globs; chdb:// paths (the embedded engine, for local use) as chdb://GLOB.
    allowed_hosts: tuple[str, ...] = DEFAULT_HOSTS
    job_image: str = Field(DEFAULT_IMAGE, min_length=1, description="the image of a spec that names none")
    allowed_images: tuple[str, ...] = ()  # besides job_image
    allowed_service_accounts: tuple[str, ...] = ()
    allowed_node_selectors: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # key -> value globs
    allowed_tolerations: tuple[AllowedToleration, ...] = ()
    allowed_pod_labels: tuple[str, ...] = ()  # key globs
    allowed_pod_annotations: tuple[str, ...] = ()  # key globs
    min_health_interval_seconds: float = Field(60.0, ge=0)


DEFAULT_POLICY = OperatorPolicy()


def _matches(value: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _listing(patterns: tuple[str, ...] | list[str]) -> str:
    return ", ".join(patterns) if patterns else "none"


def endpoint(url: str) -> tuple[str, int | None]:
    """The host (lower case) and port a URL points at; for chdb:// the URL itself and no port."""
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        return url, None
    return (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(parts.scheme)


def host_refusal(url: str, policy: OperatorPolicy) -> str | None:
    """Why the operator may not connect to ``url``; None when the policy allows it."""
    host, port = endpoint(url)
    if port is None:
        allowed = _matches(host, [p for p in policy.allowed_hosts if p.startswith("chdb://")])
    else:
        servers = [p for p in policy.allowed_hosts if not p.startswith("chdb://")]
        allowed = _matches(host, servers) or _matches(f"{host}:{port}", servers)
    if allowed:
        return None
    shown = host if port is None else f"{host}:{port}"
    return (
        f"spec.clickhouse.url: {shown} is not a ClickHouse host the operator's policy allows "
        f"(allowed: {_listing(policy.allowed_hosts)})"
    )


def job_image(job: api.JobSpec, policy: OperatorPolicy) -> str:
    return job.image or policy.job_image


def pod_refusals(job: api.JobSpec, policy: OperatorPolicy) -> list[str]:
    """Each field of ``spec.job`` the policy does not allow, named as kubectl names it."""
    out: list[str] = []
    image = job_image(job, policy)
    if image != policy.job_image and not _matches(image, policy.allowed_images):
        allowed = (policy.job_image, *policy.allowed_images)
        out.append(f"spec.job.image: {image} is not allowed by the operator's policy (allowed: {_listing(allowed)})")
    account = job.service_account_name
    if account and not _matches(account, policy.allowed_service_accounts):
        out.append(
            f"spec.job.serviceAccountName: {account} is not allowed by the operator's policy "
            f"(allowed: {_listing(policy.allowed_service_accounts)})"
        )
    for key, value in job.node_selector.items():
        if not _matches(value, policy.allowed_node_selectors.get(key, ())):
            out.append(f"spec.job.nodeSelector: {key}={value} is not allowed by the operator's policy")
    for i, toleration in enumerate(job.tolerations):
        if not any(_tolerates(toleration, allowed) for allowed in policy.allowed_tolerations):
            out.append(f"spec.job.tolerations[{i}]: {_describe(toleration)} is not allowed by the operator's policy")
    for field, keys, patterns in (
        ("podLabels", job.pod_labels, policy.allowed_pod_labels),
        ("podAnnotations", job.pod_annotations, policy.allowed_pod_annotations),
    ):
        refused = sorted(k for k in keys if not _matches(k, patterns))
        if refused:
            out.append(
                f"spec.job.{field}: {', '.join(refused)} not allowed by the operator's policy "
                f"(allowed: {_listing(patterns)})"
            )
    return out


def _tolerates(asked: api.Toleration, allowed: AllowedToleration) -> bool:
    return all(
        getattr(allowed, name) is None or getattr(allowed, name) == getattr(asked, name)
        for name in ("key", "operator", "value", "effect")
    )


def _describe(toleration: api.Toleration) -> str:
    return ", ".join(
        f"{name}={value}"
        for name in ("key", "operator", "value", "effect")
        if (value := getattr(toleration, name)) is not None
    )


def refusal(tr: api.TableRefresh, policy: OperatorPolicy) -> str | None:
    """Everything the policy does not allow in ``tr``, in one line; None when it allows it all."""
    problems = [p for p in [host_refusal(tr.spec.clickhouse.url, policy), *pod_refusals(tr.spec.job, policy)] if p]
    return "; ".join(problems) if problems else None


def credentials_opt_in(secret_meta: Mapping[str, Any] | None, tablerefresh: str) -> bool:
    """Whether the Secret's owner lets this TableRefresh use it: the label, and the annotation's
    list of names when there is one. A Secret that does not opt in is treated as one that does not
    exist, so a TableRefresh cannot tell the two apart."""
    if not secret_meta:
        return False
    if (secret_meta.get("labels") or {}).get(CREDENTIALS_LABEL) != "true":
        return False
    named = (secret_meta.get("annotations") or {}).get(CREDENTIALS_FOR_ANNOTATION)
    return named is None or tablerefresh in {n.strip() for n in named.split(",")}


def no_credentials_message(secret: str) -> str:
    """The one message for a Secret that is missing and for one that did not opt in."""
    return (
        f"Secret {secret} does not exist in this namespace or is not labelled "
        f'{CREDENTIALS_LABEL}: "true" for this TableRefresh'
    )

