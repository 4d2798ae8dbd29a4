"""A TableRefresh -> its CronJob, and what the reconciler writes about it. Pure: no API calls, no clock.

- Names and labels of what a TableRefresh owns, and :func:`parse` (the model, or what is wrong).
- :func:`render_cronjob`: the CronJob as a server-side-apply configuration. It names every field the
  controller owns and nothing else, so fields it stops setting are removed and fields others set
  are left alone.
- :class:`Facts` -> the reconciler's conditions (:func:`reconciler_conditions`), its status fields
  (:func:`reconciler_fields`) and its own Events (:func:`reconciler_events`).
- :func:`schedule_period_seconds`: the longest gap between two runs of a schedule.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from tablerefresh import spec as api
from tablerefresh.contract import MANIFEST_ENV, PASSWORD_ENV, RUN_ID_ENV, SOURCE_QUERY_ENV, USER_ENV
from tablerefresh.controller.policy.admission import (
    DEFAULT_POLICY,
    OperatorPolicy,
    job_image,
    no_credentials_message,
)
from tablerefresh.controller.policy.status import (
    CREDENTIALS_FOUND,
    CRONJOB_READY,
    RECONCILING,
    STALLED,
    Event,
    Observation,
    by_type,
)
from tablerefresh.schedule import Every, fire_times
from tablerefresh.schedule import parse as parse_schedule

# Names, labels and identities the controller puts on what it makes.

FIELD_MANAGER = "tablerefresh"  # the reconciler's, for the CronJob and its status fields
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tablerefresh"
NAME_LABEL = "tablerefresh.dev/name"
# The Job controller labels its pods with their Job's name; the refresh uses it as its run id.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

# A Job's name is the CronJob's plus an 11-character suffix, and must fit in 63.
CRONJOB_NAME_MAX = 52
LABEL_VALUE_MAX = 63

Key = tuple[str, str]  # a TableRefresh's namespace and name


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body["metadata"]
    return str(meta["namespace"]), str(meta["name"])


def _shorten(name: str, limit: int) -> str:
    """``name`` if it fits, else a prefix plus a hash of the whole, so distinct names stay distinct."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def cronjob_name(tr_name: str) -> str:
    return _shorten(tr_name, CRONJOB_NAME_MAX)


def name_label_value(tr_name: str) -> str:
    return _shorten(tr_name, LABEL_VALUE_MAX)


def owned_labels(tr_name: str) -> dict[str, str]:
    """The labels on everything a TableRefresh owns; selectors for the CronJob and Job watches."""
    return {MANAGED_BY_LABEL: MANAGED_BY, NAME_LABEL: name_label_value(tr_name)}


def parse(body: Mapping[str, Any]) -> api.TableRefresh | str:
    """The model, or the validation problems as one line naming the fields."""
    document = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": body.get("metadata", {}),
        "spec": body.get("spec", {}),
    }
    try:
        return api.TableRefresh.model_validate(document)
    except ValidationError as exc:
        return api.format_validation_error(exc)


# The CronJob.

CONTAINER_NAME = "refresh"
RUN_AS = 65532  # the image's non-root user
TMP_VOLUME = "tmp"
TMP_SIZE_LIMIT = "256Mi"
TERMINATION_LOG = "/dev/termination-log"


def owner_reference(tr: api.TableRefresh, owner_uid: str) -> dict[str, Any]:
    """A controller reference: garbage collection deletes the CronJob with its TableRefresh."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": tr.metadata.name,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def manifest_json(tr: api.TableRefresh) -> str:
    """The manifest the Job needs, as compact JSON: only name, namespace and the full spec.

    Labels and annotations stay out, so a GitOps tool relabelling the TableRefresh does not
    change the CronJob; defaults are spelled out so the Job reads exactly what the controller read.
    """
    document = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": tr.metadata.name, "namespace": tr.metadata.namespace},
        "spec": tr.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def _env(tr: api.TableRefresh, credentials: bool) -> list[dict[str, Any]]:
    spec = tr.spec
    env: list[dict[str, Any]] = [
        {"name": MANIFEST_ENV, "value": manifest_json(tr)},
        {"name": RUN_ID_ENV, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}},
    ]
    secret = spec.clickhouse.credentials_secret
    if secret is not None and credentials:
        for var, key in ((USER_ENV, secret.username_key), (PASSWORD_ENV, secret.password_key)):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}})
    ref = spec.source.config_map_key_ref
    if ref is not None:
        env.append({"name": SOURCE_QUERY_ENV, "valueFrom": {"configMapKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _resources(job: api.JobSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if job.resources.requests:
        out["requests"] = dict(job.resources.requests)
    if job.resources.limits:
        out["limits"] = dict(job.resources.limits)
    return out


def _container(tr: api.TableRefresh, image: str, credentials: bool) -> dict[str, Any]:
    job = tr.spec.job
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": job.image_pull_policy,
        "command": ["tablerefresh"],
        "args": ["refresh", "--summary-file", TERMINATION_LOG],
        "env": _env(tr, credentials),
        "resources": _resources(job),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
        "terminationMessagePath": TERMINATION_LOG,
        # The refresh writes its JSON summary there; a crash before that still leaves the log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _pod_spec(tr: api.TableRefresh, image: str, credentials: bool) -> dict[str, Any]:
    job = tr.spec.job
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the Job reads its spec from env, not from the API
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(tr, image, credentials)],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}],
    }
    if job.service_account_name:
        pod["serviceAccountName"] = job.service_account_name
    if job.node_selector:
        pod["nodeSelector"] = dict(job.node_selector)
    if job.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in job.tolerations]
    return pod


# On a CronJob the controller holds back: why (the credentials Secret cannot be used). run-now refuses it.
HELD_ANNOTATION = "tablerefresh.dev/held"


def render_cronjob(
    tr: api.TableRefresh, *, owner_uid: str, policy: OperatorPolicy = DEFAULT_POLICY, held: str | None = None
) -> dict[str, Any]:
    """The CronJob for ``tr``, owned by the TableRefresh whose uid is ``owner_uid``.

    Carries only the controller's labels: never the TableRefresh's own, so a GitOps tool's
    tracking label (Argo CD's app.kubernetes.io/instance) does not make it adopt the child.
    ``held`` (why its credentials cannot be used) suspends it and leaves the Secret out of its
    pods: a pod may name a Secret its creator cannot read, so only one that opted in is named.
    """
    spec = tr.spec
    labels = owned_labels(tr.metadata.name)
    pod_labels = {**spec.job.pod_labels, **labels}  # ours win: the Job watch selects on them
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": _pod_spec(tr, job_image(spec.job, policy), credentials=held is None),
        },
    }
    if spec.job.pod_annotations:
        job_spec["template"]["metadata"]["annotations"] = dict(spec.job.pod_annotations)
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    metadata: dict[str, Any] = {
        "name": cronjob_name(tr.metadata.name),
        "namespace": tr.metadata.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(tr, owner_uid)],
    }
    if held is not None:
        metadata["annotations"] = {HELD_ANNOTATION: held}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata,
        "spec": {
            "schedule": spec.schedule,
            "timeZone": spec.time_zone,
            "suspend": spec.suspend or held is not None,
            "concurrencyPolicy": spec.concurrency_policy.value,
            "startingDeadlineSeconds": spec.starting_deadline_seconds,
            "successfulJobsHistoryLimit": spec.successful_jobs_history_limit,
            "failedJobsHistoryLimit": spec.failed_jobs_history_limit,
            "jobTemplate": {"metadata": {"labels": dict(labels)}, "spec": job_spec},
        },
    }


# What the reconciler writes.


class Secret(StrEnum):
    FOUND = "Found"  # exists and opted in for this TableRefresh
    MISSING = "Missing"  # does not exist, or did not opt in: the same to the TableRefresh
    UNREADABLE = "Unreadable"  # the operator may not read Secrets in this namespace
    NOT_CONFIGURED = "NotConfigured"
    UNCHECKED = "Unchecked"  # the spec could not be read


def held_reason(secret: Secret, secret_name: str | None) -> str | None:
    """Why the CronJob must not run (and name no Secret): its credentials cannot be used."""
    if secret == Secret.MISSING:
        return no_credentials_message(str(secret_name))
    if secret == Secret.UNREADABLE:
        return f"the operator may not read Secret {secret_name} in this namespace (see SECURITY.md)"
    return None


@dataclass(frozen=True)
class Facts:
    """Everything a reconcile's read and apply steps learned; nothing here is computed from the clock."""

    generation: int
    cronjob_name: str
    spec_error: str | None = None
    refused: str | None = None  # what the operator's policy does not allow
    conflict: str | None = None
    apply_error: str | None = None
    secret: Secret = Secret.UNCHECKED
    secret_name: str | None = None
    created: bool = False
    cronjob: Mapping[str, Any] | None = None  # as the API server returned it after the apply


def reconciler_conditions(facts: Facts) -> list[Observation]:
    """CronJobReady, CredentialsFound (not when the spec is invalid), and kstatus's Reconciling and
    Stalled: a reconcile that got this far has caught up with the spec; what is left either works
    or needs a person."""
    if facts.spec_error is not None:
        cronjob = Observation(CRONJOB_READY, "False", "InvalidSpec", facts.spec_error)
        return [cronjob, _caught_up(facts), _stalled(cronjob, None)]
    if facts.refused is not None:
        cronjob = Observation(CRONJOB_READY, "False", "NotAllowed", facts.refused)
    elif facts.conflict is not None:
        cronjob = Observation(CRONJOB_READY, "False", "CronJobConflict", facts.conflict)
    elif facts.apply_error is not None:
        cronjob = Observation(CRONJOB_READY, "False", "ApplyFailed", facts.apply_error)
    else:
        cronjob = Observation(CRONJOB_READY, "True", "Applied", f"CronJob {facts.cronjob_name} matches the spec")
    secret = {
        Secret.FOUND: Observation(
            CREDENTIALS_FOUND, "True", "SecretFound", f"Secret {facts.secret_name} exists and opted in"
        ),
        Secret.NOT_CONFIGURED: Observation(CREDENTIALS_FOUND, "True", "NoSecretConfigured", "no credentials needed"),
        Secret.MISSING: Observation(
            CREDENTIALS_FOUND,
            "False",
            "SecretNotFound",
            f"{held_reason(facts.secret, facts.secret_name)}; the CronJob is suspended until it is",
        ),
        Secret.UNREADABLE: Observation(
            CREDENTIALS_FOUND,
            "False",
            "SecretUnreadable",
            f"{held_reason(facts.secret, facts.secret_name)}; the CronJob is suspended until it may",
        ),
        Secret.UNCHECKED: Observation(CREDENTIALS_FOUND, "Unknown", "SecretUnchecked", "could not check the Secret"),
    }[facts.secret]
    return [cronjob, secret, _caught_up(facts), _stalled(cronjob, secret)]


def _caught_up(facts: Facts) -> Observation:
    return Observation(RECONCILING, "False", "Reconciled", f"generation {facts.generation} is reconciled")


def _stalled(cronjob: Observation, secret: Observation | None) -> Observation:
    """Stalled when the spec cannot be acted on without a person: an invalid spec, a CronJob the
    controller may not overwrite or the API server refuses, a missing Secret."""
    for blocker in (cronjob, secret):
        if blocker is not None and blocker.status == "False":
            return Observation(STALLED, "True", blocker.reason, blocker.message)
    return Observation(STALLED, "False", "Progressing", "nothing the controller needs from a person")


def reconciling(current: Mapping[str, Any], generation: int) -> list[Observation] | None:
    """What the reconciler writes before it acts on a generation it has not observed: its conditions
    as they are, with Reconciling True. None when it has observed this generation already (or has
    said so): a resync of an unchanged spec writes nothing first."""
    conditions = by_type(current.get("conditions") or [])
    said = conditions.get(RECONCILING) or {}
    if current.get("observedGeneration") == generation or (
        said.get("status") == "True" and said.get("observedGeneration") == generation
    ):
        return None
    kept = [
        Observation(kind, c["status"], str(c["reason"]), str(c.get("message") or ""))
        for kind in (CRONJOB_READY, CREDENTIALS_FOUND, STALLED)
        if (c := conditions.get(kind)) is not None
    ]
    return [*kept, Observation(RECONCILING, "True", "GenerationChanged", f"applying generation {generation}")]


def _cronjob_status(cronjob: Mapping[str, Any] | None) -> dict[str, Any]:
    if not cronjob:
        return {}
    meta = cronjob.get("metadata", {})
    out: dict[str, Any] = {
        "cronJobRef": {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        }
    }
    last = (cronjob.get("status") or {}).get("lastScheduleTime")
    if last:
        out["lastScheduleTime"] = last
    return out


def reconciler_fields(current: Mapping[str, Any], facts: Facts) -> dict[str, Any]:
    """The top-level status fields the reconciler owns, besides its conditions."""
    status: dict[str, Any] = {"observedGeneration": facts.generation}
    if facts.spec_error is None and facts.refused is None and facts.conflict is None:
        status.update(_cronjob_status(facts.cronjob))
    elif current.get("cronJobRef") and facts.conflict is None:
        status["cronJobRef"] = current["cronJobRef"]  # an unreadable spec leaves the CronJob as it was
    return status


def reconciler_events(facts: Facts) -> list[Event]:
    """The reconciler's Events besides transitions: a CronJob it created."""
    if facts.created and facts.cronjob is not None:
        return [Event("Normal", "CronJobCreated", f"Created CronJob {facts.cronjob_name}")]
    return []


# The schedule.

# Fire times looked at for a schedule's period; enough to include a weekend or a short month.
_PERIOD_SAMPLE = 40
_PERIOD_FROM = datetime(2025, 1, 1)  # a fixed start: the period of a schedule must not depend on the clock
_PERIOD_DAYS = 9 * 366  # the days searched: enough for two 29ths of February


@functools.lru_cache(maxsize=1024)
def schedule_period_seconds(schedule: str, time_zone: str = "UTC") -> float | None:
    """The longest gap between two runs of the schedule: 'two periods without a success' must not
    fire over every weekend of a weekday schedule. None when it does not fire twice in nine years
    (``0 0 30 2 *`` is a valid schedule that never fires)."""
    parsed = parse_schedule(schedule)
    if isinstance(parsed, Every):
        return float(parsed.seconds)
    try:
        zone: tzinfo = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC  # the CronJob reports the bad zone; the period in UTC is close enough
    # In UTC: subtracting two times of one zone would ignore a DST change between them.
    times = fire_times(parsed, _PERIOD_FROM.replace(tzinfo=zone), _PERIOD_DAYS)
    fires = list(itertools.islice(times, _PERIOD_SAMPLE))
    if len(fires) < 2:
        return None
    return float(max((b - a).total_seconds() for a, b in itertools.pairwise(fires)))
