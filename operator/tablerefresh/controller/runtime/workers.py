"""The per-object workers: what the controller does for one TableRefresh, each read top-down like the
kubebuilder CronJob tutorial: read what exists, compute what should (``policy``, pure), apply it,
write the status (through the ``StatusWriter``).

- :func:`reconcile`: the TableRefresh -> its CronJob, CronJobReady and CredentialsFound.
- :class:`Prober`: one health check: credentials from the Secret, connect, measure.
- :func:`record_runs`: its Jobs -> status.active, status.lastRun and LastRunSucceeded.
- :func:`run_now` and :func:`handle_run_now`: a Job now, from the CronJob's template.

All are blocking: the runtime runs them in worker threads, holding the object's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from tablerefresh.controller.clock import SYSTEM_CLOCK, Clock
from tablerefresh.controller.kube import Kube, KubeError
from tablerefresh.controller.policy.admission import (
    DEFAULT_POLICY,
    OperatorPolicy,
    credentials_opt_in,
    host_refusal,
    no_credentials_message,
    refusal,
)
from tablerefresh.controller.policy.checks import Check, Failure, HealthResult
from tablerefresh.controller.policy.cronjob import (
    HELD_ANNOTATION,
    JOB_NAME_LABEL,
    NAME_LABEL,
    Facts,
    Secret,
    cronjob_name,
    held_reason,
    name_label_value,
    parse,
    reconciler_conditions,
    reconciler_events,
    reconciler_fields,
    reconciling,
    render_cronjob,
)
from tablerefresh.controller.policy.jobs import (
    admit_run,
    job_from_cronjob,
    jobs_of,
    newly_ended,
    pending_token,
    runs_update,
)
from tablerefresh.controller.policy.owners import being_deleted, controlled_by, foreign_owner
from tablerefresh.controller.policy.status import (
    JOB_WATCH,
    READY,
    RECONCILER,
    RUN_NOW,
    Event,
    StatusChange,
    format_time,
)
from tablerefresh.controller.runtime.status_writer import StatusMemory, StatusWriter
from tablerefresh.dataplane.health import measure
from tablerefresh.dataplane.infra.connection import connect, redact
from tablerefresh.dataplane.infra.errors import RefreshError, Unreachable, one_line, scrub
from tablerefresh.spec import TableRefresh

log = logging.getLogger(__name__)


# Reconcile. Level-based: the input is the whole object as it is now, never a diff, so a reconcile
# after a restart, a missed event or a hand edit converges to the same single CronJob.

# The requests of a reconcile that wait on nothing run alongside each other: the Reconciling write,
# the Secret's look-up and the CronJob's read. Two round trips to the API server before the CronJob
# is applied, not four: the apply-to-CronJob latency is mostly round trips.
_ALONGSIDE = ThreadPoolExecutor(max_workers=16, thread_name_prefix="reconcile")


def reconcile(
    kube: Kube,
    writer: StatusWriter,
    memory: StatusMemory,
    body: Mapping[str, Any],
    policy: OperatorPolicy = DEFAULT_POLICY,
) -> Facts | None:
    """Reconcile one TableRefresh; None when there is nothing to do (it is being deleted, or is gone).

    Raises KubeError for failures worth retrying; the caller decides how.
    """
    meta = body["metadata"]
    if being_deleted(body):
        return None  # garbage collection takes the CronJob with it
    current = writer.current(memory, body)
    pending = reconciling(current, int(meta.get("generation") or 0))
    said: Future[StatusChange | None] | None = None
    if pending is not None:  # a new generation: say so as it is acted on (kstatus's Reconciling)
        kept = {k: current[k] for k in RECONCILER.fields if k in current}
        said = _ALONGSIDE.submit(writer.write, memory, body, RECONCILER, kept, pending)
    try:
        facts = _observe_and_apply(kube, body, policy)
    finally:
        # Always landed before the result is written, which would otherwise be overwritten by it.
        first = said.result() if said is not None else None
    if said is not None and first is None:
        return None  # deleted meanwhile
    fields = reconciler_fields(writer.current(memory, body), facts)
    written = writer.write(
        memory, body, RECONCILER, fields, reconciler_conditions(facts), events=reconciler_events(facts)
    )
    if written is None:
        return None  # deleted meanwhile
    if written.changed:
        ready = next(c for c in written.status["conditions"] if c["type"] == READY)
        log.info(
            "%s/%s: generation %s, Ready=%s (%s)",
            meta["namespace"],
            meta["name"],
            facts.generation,
            ready["status"],
            ready["reason"],
        )
    return facts


def _observe_and_apply(kube: Kube, body: Mapping[str, Any], policy: OperatorPolicy) -> Facts:
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    generation = int(meta.get("generation") or 0)
    target = cronjob_name(name)

    # Read.
    tr = parse(body)
    if isinstance(tr, str):
        return Facts(generation=generation, cronjob_name=target, spec_error=tr)
    looked_up = _ALONGSIDE.submit(_check_secret, kube, tr)
    refused = refusal(tr, policy)
    if refused is not None:  # the last admitted CronJob, if any, stays as it was
        secret, secret_name = looked_up.result()
        return Facts(generation, target, refused=refused, secret=secret, secret_name=secret_name)
    existing = kube.get_cronjob(namespace, target)
    secret, secret_name = looked_up.result()
    conflict = foreign_owner(existing, name, uid)
    if conflict is not None:
        return Facts(generation, target, conflict=conflict, secret=secret, secret_name=secret_name)

    # Compute what should exist (pure), then apply it.
    desired = render_cronjob(tr, owner_uid=uid, policy=policy, held=held_reason(secret, secret_name))
    try:
        applied = kube.apply_cronjob(desired)
    except KubeError as exc:
        if exc.transient:
            raise
        return Facts(generation, target, apply_error=str(exc), secret=secret, secret_name=secret_name)
    return Facts(
        generation,
        target,
        secret=secret,
        secret_name=secret_name,
        created=existing is None,
        cronjob=applied,
    )


@dataclass(frozen=True)
class SecretLookup:
    state: Secret  # FOUND, MISSING or UNREADABLE
    data: dict[str, str]  # what it holds: only when asked for, and only when FOUND
    error: KubeError | None = None  # why it is UNREADABLE


def look_up_secret(kube: Kube, namespace: str, tablerefresh: str, secret: str, *, data: bool) -> SecretLookup:
    """The one look-up of a TableRefresh's credentials Secret, by the reconciler and the health check:
    it may be used when it exists and its metadata opts in for this TableRefresh
    (``policy.admission.credentials_opt_in``). Its data is read only with ``data`` (the health
    check); the reconciler reads its metadata alone. Never raises: a failed read is UNREADABLE."""
    try:
        if data:
            found = kube.read_secret(namespace, secret)
            meta, values = found if found is not None else (None, {})
        else:
            meta, values = kube.secret_metadata(namespace, secret), {}
    except KubeError as exc:
        return SecretLookup(Secret.UNREADABLE, {}, exc)
    if meta is None or not credentials_opt_in(meta, tablerefresh):
        return SecretLookup(Secret.MISSING, {})
    return SecretLookup(Secret.FOUND, values)


def _check_secret(kube: Kube, tr: TableRefresh) -> tuple[Secret, str | None]:
    """Whether the credentials Secret may be used. Raises KubeError when the API server is away."""
    ref = tr.spec.clickhouse.credentials_secret
    if ref is None:
        return Secret.NOT_CONFIGURED, None
    found = look_up_secret(kube, tr.metadata.namespace, tr.metadata.name, ref.name, data=False)
    if found.error is not None:
        if found.error.transient:
            raise found.error
        log.warning("%s/%s: cannot read Secret %s: %s", tr.metadata.namespace, tr.metadata.name, ref.name, found.error)
    return found.state, ref.name


# A health check. Never raises: every way it can fail becomes a HealthResult saying which
# (unreachable, query failed, no credentials), so the caller always has a status to write.

Connect = Callable[..., Client]


class CredentialsError(Exception):
    pass


class Prober:
    def __init__(
        self,
        kube: Kube,
        *,
        policy: OperatorPolicy = DEFAULT_POLICY,
        timeout: float = 30.0,
        connector: Connect = connect,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._kube = kube
        self._policy = policy
        self._timeout = timeout
        self._connect = connector
        self._clock = clock

    def __call__(self, check: Check) -> HealthResult:
        now = self._clock.now()
        spec = check.spec
        refused = host_refusal(spec.clickhouse.url, self._policy)
        if refused is not None:  # before the Secret is read or anything is sent
            return HealthResult(now, failure=Failure.NOT_ALLOWED, error=refused)
        try:
            username, password = self._credentials(check)
        except CredentialsError as exc:
            return HealthResult(now, failure=Failure.CREDENTIALS, error=str(exc))
        result = self._measure(check, now, username, password)
        # The server's words may quote the user name ("alice: Authentication failed"): never shown.
        return replace(result, error=scrub(result.error, username or "", password or ""))

    def _measure(self, check: Check, now: datetime, username: str | None, password: str | None) -> HealthResult:
        spec = check.spec
        try:
            client = self._connect(
                spec.clickhouse.url,
                database=spec.clickhouse.database,
                settings=spec.clickhouse.settings,
                username=username,
                password=password,
                connect_timeout=min(10.0, self._timeout),
                send_receive_timeout=self._timeout,
            )
        except Unreachable as exc:
            return HealthResult(now, failure=Failure.UNREACHABLE, error=str(exc))
        except RefreshError as exc:  # e.g. an unsupported URL scheme
            return HealthResult(now, failure=Failure.QUERY, error=str(exc))
        except Exception as exc:  # whatever the client raises on a URL or an answer it did not expect
            return HealthResult(now, failure=Failure.UNREACHABLE, error=_describe(exc, spec.clickhouse.url))
        try:
            return HealthResult(now, report=measure(client, spec, now=now, timeout=self._timeout))
        except OperationalError as exc:  # the connection broke off: the network, not the query
            return HealthResult(now, failure=Failure.UNREACHABLE, error=_describe(exc, spec.clickhouse.url))
        except (ClickHouseError, RefreshError) as exc:
            return HealthResult(now, failure=Failure.QUERY, error=one_line(exc))
        except Exception as exc:  # a bug must not stop the other checks
            log.exception("%s/%s: health check failed", *check.key)
            error = f"internal error: {type(exc).__name__}: {one_line(exc)}"
            return HealthResult(now, failure=Failure.QUERY, error=error)
        finally:
            client.close()

    def _credentials(self, check: Check) -> tuple[str | None, str | None]:
        ref = check.spec.clickhouse.credentials_secret
        if ref is None:
            return None, None
        found = look_up_secret(self._kube, check.key[0], check.key[1], ref.name, data=True)
        if found.error is not None:
            raise CredentialsError(f"cannot read Secret {ref.name}: {found.error}") from found.error
        if found.state != Secret.FOUND:
            raise CredentialsError(no_credentials_message(ref.name))
        data = found.data
        missing = [k for k in (ref.username_key, ref.password_key) if k not in data]
        if missing:
            raise CredentialsError(f"Secret {ref.name} has no key {', '.join(missing)}")
        return data[ref.username_key], data[ref.password_key]


def _describe(exc: BaseException, url: str) -> str:
    return f"lost the connection to ClickHouse at {redact(url)}: {one_line(exc)}"


# The Job watch's record of runs.


def record_runs(
    kube: Kube,
    writer: StatusWriter,
    memory: StatusMemory,
    body: Mapping[str, Any],
    jobs: Iterable[Mapping[str, Any]],
) -> list[bool] | None:
    """Bring status.active, status.lastRun and LastRunSucceeded up to date with the Jobs the watch
    has seen (``jobs``: the ones of this TableRefresh's CronJob).

    Returns whether each newly ended Job succeeded (for the run counters), oldest first; None when
    there is nothing to write (no Jobs ever seen) or the object is gone.
    """
    current = writer.current(memory, body)
    mine = jobs_of(body, jobs, current)
    if not mine and not current.get("active") and not current.get("lastRun"):
        return None
    ended = newly_ended(mine, current.get("lastRun"))
    pods = []
    if ended:
        newest = str(ended[-1][0]["metadata"]["name"])
        pods = kube.list_pods(str(body["metadata"]["namespace"]), f"{JOB_NAME_LABEL}={newest}")
    update = runs_update(mine, current, ended, pods)
    if writer.write(memory, body, JOB_WATCH, update.fields, update.conditions) is None:
        return None
    if ended:
        run = update.fields["lastRun"]
        outcome = str(run.get("outcome", "")).lower() + (f" ({run['reason']})" if run.get("reason") else "")
        log.info("%s/%s: Job %s %s", body["metadata"]["namespace"], body["metadata"]["name"], run["jobName"], outcome)
    return update.results


# Run now.


class RunNowRefused(Exception):
    """The CronJob's concurrencyPolicy forbids a run now; the message names the running Job."""


def run_now(
    kube: Kube,
    namespace: str,
    tablerefresh: str,
    token: str,
    *,
    owner_uid: str | None = None,
    args: list[str] | None = None,
    purpose: str = "now",
) -> str:
    """Create (or find) the Job for ``token`` from the CronJob's template, as the CronJob controller
    would, under its concurrencyPolicy; returns its name. Raises RunNowRefused or KubeError.

    Only from a CronJob this TableRefresh controls (``owner_uid``, read from the API when not
    given), and only counting and replacing the Jobs that CronJob controls: a name is no proof.
    """
    if owner_uid is None:
        tr = kube.get_tablerefresh(namespace, tablerefresh)
        if tr is None:
            raise KubeError(404, f"TableRefresh {tablerefresh} not found in {namespace}")
        owner_uid = str(tr["metadata"]["uid"])
    cronjob = kube.get_cronjob(namespace, cronjob_name(tablerefresh))
    if cronjob is None:
        raise KubeError(404, f"CronJob {cronjob_name(tablerefresh)} not found in {namespace}")
    conflict = foreign_owner(cronjob, tablerefresh, owner_uid)
    if conflict is not None:
        raise RunNowRefused(f"CronJobConflict: {conflict}")
    held = (cronjob["metadata"].get("annotations") or {}).get(HELD_ANNOTATION)
    if held:
        raise RunNowRefused(held)
    job = job_from_cronjob(cronjob, token=token, args=args, purpose=purpose)
    cronjob_uid = cronjob["metadata"].get("uid")
    existing = [
        j
        for j in kube.list_jobs(namespace, f"{NAME_LABEL}={name_label_value(tablerefresh)}")
        if controlled_by(j, cronjob_uid)
    ]
    if any(j["metadata"]["name"] == job["metadata"]["name"] for j in existing):
        return str(job["metadata"]["name"])  # this token was handled already
    admission = admit_run(cronjob["spec"].get("concurrencyPolicy", "Forbid"), existing)
    if not admission.create:
        raise RunNowRefused(admission.reason)
    for name in admission.delete:
        kube.delete_job(namespace, name)
    try:
        kube.create_job(job)
    except KubeError as exc:
        if exc.status != 409:  # 409: created by a concurrent request for the same token
            raise
    return str(job["metadata"]["name"])


def handle_run_now(
    kube: Kube, writer: StatusWriter, memory: StatusMemory, body: Mapping[str, Any], now: datetime
) -> None:
    """The annotation ``tablerefresh.dev/run-now: <token>``: create the Job for a new token, then
    record the token in status.runNow so that it is handled once."""
    token = pending_token(body, writer.current(memory, body))
    if token is None:
        return
    meta = body["metadata"]
    record: dict[str, Any] = {"token": token, "requestedAt": format_time(now)}
    try:
        record["jobName"] = run_now(kube, meta["namespace"], meta["name"], token, owner_uid=str(meta["uid"]))
        record["message"] = f"created Job {record['jobName']}"
        event = Event("Normal", "RunNow", f"run-now {token}: created Job {record['jobName']}")
    except RunNowRefused as exc:
        record["message"] = f"refused: {exc}"
        event = Event("Warning", "RunNowRefused", f"run-now {token} refused: {exc}")
    writer.write(memory, body, RUN_NOW, {"runNow": record}, events=[event])
