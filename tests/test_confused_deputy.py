"""No confused deputy (issue 24): a TableRefresh makes the operator do only what its author could do.

Each test replays one finding of the security review as a tenant would, who may create TableRefresh
objects in a namespace but not read its Secrets, and shows it refused with nothing sent, run or
created. The operator's parts are the real ones (``workers.reconcile``, the ``Prober``, ``run_now``,
``ApiKube``) against the test API server; "ClickHouse" is a local listener posing as one, which
records every request it gets. The SQL findings (audits that write, predicates that are several
statements, results that would fill the operator's memory) are in ``test_sql_guard.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from tablerefresh.controller.kube import ApiKube
from tablerefresh.controller.policy.admission import (
    CREDENTIALS_FOR_ANNOTATION,
    OperatorPolicy,
    credentials_opt_in,
    pod_refusals,
)
from tablerefresh.controller.policy.checks import Failure, check_of
from tablerefresh.controller.policy.cronjob import cronjob_name
from tablerefresh.controller.runtime.controller import server_address
from tablerefresh.controller.runtime.status_writer import StatusMemory, StatusWriter
from tablerefresh.controller.runtime.workers import Prober, RunNowRefused, reconcile, run_now
from tablerefresh.spec import JobSpec
from tests.harness.kube import CREDENTIALS_LABELS, GROUP, PLURAL, VERSION, condition, install_crd

pytestmark = pytest.mark.kube

# What the tenant wants: a service-account token that lives in a Secret of their namespace.
TOKEN = "eyJhbGciOiJSUzI1NiJ9.a-service-account-token"
# A user name that is really another application's API key.
API_KEY = "sk-live-0123456789abcdef"


class Listener:
    """A local HTTP listener posing as ClickHouse, as in the review: records every request and
    answers as a ClickHouse that refuses the credentials (quoting the user name, as ClickHouse does),
    or, with ``page``, as some other web server would (404 and a page of its own)."""

    def __init__(self, page: bytes | None = None) -> None:
        self.requests: list[dict[str, str]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                listener.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                if page is not None:
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                user = _basic_user(self.headers.get("Authorization")) or self.headers.get("X-ClickHouse-User") or ""
                body = (
                    f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, or there "
                    "is no user with such name. (AUTHENTICATION_FAILED) (version 26.9.2.1)\n"
                ).encode()
                self.send_response(401)
                self.send_header("X-ClickHouse-Exception-Code", "516")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"clickhouse://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def credentials(self) -> list[str]:
        """Every user name and password that reached it, however sent."""
        found = []
        for request in self.requests:
            if (user := _basic_user(request.get("authorization"), whole=True)) is not None:
                found.append(user)
            found += [request[h] for h in ("x-clickhouse-user", "x-clickhouse-key") if h in request]
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _basic_user(header: str | None, whole: bool = False) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    decoded = base64.b64decode(header[6:]).decode()
    return decoded if whole else decoded.partition(":")[0]


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.close()


# Loopback is where the tests' ClickHouse lives; the shipped default allows in-cluster Services only.
LOOPBACK = OperatorPolicy(allowed_hosts=("127.0.0.1",), min_health_interval_seconds=0)


def body(namespace: str, name: str, url: str, **spec: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TableRefresh",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "0 */6 * * *",
            "clickhouse": {"url": url, "database": "d"},
            "target": {"table": "t"},
            "slice": {"predicate": "1"},
            "source": {"query": "SELECT 1 AS id, now() AS ts"},
            "uniqueKey": ["id"],
            "freshnessColumn": "ts",
            **spec,
        },
    }
    return document


class Cluster:
    """The API as the tenant and the operator use it: TableRefresh objects, Secrets, CronJobs, Jobs."""

    def __init__(self, api: client.ApiClient, controlplane: Any, namespace: str) -> None:
        self.core, self.batch = client.CoreV1Api(api), client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.kube = ApiKube(api)
        self.plane, self.ns = controlplane, namespace

    def create(self, document: dict[str, Any]) -> dict[str, Any]:
        made: dict[str, Any] = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, document)
        return made

    def secret(self, name: str, data: dict[str, str], labels: dict[str, str] | None = None, **annotations: str) -> None:
        meta = {"name": name, "labels": labels or {}, "annotations": annotations}
        self.core.create_namespaced_secret(self.ns, {"metadata": meta, "stringData": data})

    def label(self, name: str) -> None:
        self.core.patch_namespaced_secret(name, self.ns, {"metadata": {"labels": CREDENTIALS_LABELS}})

    def reconcile(self, tr: dict[str, Any], policy: OperatorPolicy = LOOPBACK) -> dict[str, Any]:
        """One reconcile by the operator's own code; the object as the API server then holds it."""
        current = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, tr["metadata"]["name"])
        reconcile(self.kube, StatusWriter(self.kube), StatusMemory(), current, policy)
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, tr["metadata"]["name"]
        )
        return found

    def cronjob(self, name: str) -> dict[str, Any] | None:
        return self.kube.get_cronjob(self.ns, cronjob_name(name))

    def jobs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            self.batch.list_namespaced_job(self.ns, _preload_content=False).data
        )["items"]
        return items


@pytest.fixture
def cluster(kube_api: client.ApiClient, controlplane: Any, namespace: str) -> Cluster:
    install_crd(controlplane)
    return Cluster(kube_api, controlplane, namespace)


def secret_refs(cronjob: dict[str, Any]) -> list[str]:
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    env = pod["containers"][0]["env"]
    return [e["valueFrom"]["secretKeyRef"]["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})]


# Finding 1, critical: Secret exfiltration.


@pytest.mark.parametrize(
    "keys", [{}, {"usernameKey": "token", "passwordKey": "token"}], ids=["default-keys", "token-key"]
)
def test_a_secret_that_did_not_opt_in_never_reaches_a_listener(
    cluster: Cluster, listener: Listener, keys: dict[str, str]
) -> None:
    cluster.secret("app", {"username": "app-user", "password": "app-password", "token": TOKEN})
    tr = cluster.create(body(cluster.ns, "steal", listener.url, clickhouse={
        "url": listener.url, "database": "d", "credentialsSecret": {"name": "app", **keys}
    }))  # fmt: skip
    check = check_of(tr)
    assert check is not None

    result = Prober(cluster.kube, policy=LOOPBACK, timeout=5)(check)
    assert result.failure == Failure.CREDENTIALS
    assert listener.requests == []  # nothing was sent at all
    # Reported exactly as a Secret that does not exist: the tenant cannot tell the two apart.
    absent = check_of(body(cluster.ns, "steal", listener.url, clickhouse={
        "url": listener.url, "database": "d", "credentialsSecret": {"name": "none", **keys}
    }) | {"metadata": tr["metadata"]})  # fmt: skip
    assert absent is not None
    missing = Prober(cluster.kube, policy=LOOPBACK, timeout=5)(absent)
    assert result.error == missing.error.replace("Secret none ", "Secret app ")

    # The CronJob names no Secret that did not opt in (a pod may read what its creator cannot), and waits.
    status = cluster.reconcile(tr)
    cronjob = cluster.cronjob("steal")
    assert cronjob is not None and secret_refs(cronjob) == [] and cronjob["spec"]["suspend"] is True
    assert condition(status, "CredentialsFound")["reason"] == "SecretNotFound"
    assert condition(status, "Stalled")["status"] == "True"
    with pytest.raises(RunNowRefused, match="does not exist in this namespace or is not labelled"):
        run_now(cluster.kube, cluster.ns, "steal", "t1")
    assert cluster.jobs() == []

    # The owner opts in: now, and only now, the credentials are used (so the listener would have told).
    cluster.label("app")
    Prober(cluster.kube, policy=LOOPBACK, timeout=5)(check)
    assert listener.credentials(), listener.requests
    cluster.reconcile(tr)
    cronjob = cluster.cronjob("steal")
    assert cronjob is not None and set(secret_refs(cronjob)) == {"app"} and cronjob["spec"]["suspend"] is False


def test_a_secret_can_name_the_tablerefresh_objects_that_may_use_it() -> None:
    labelled = {"labels": CREDENTIALS_LABELS}
    assert credentials_opt_in(labelled, "anyone")
    named = {"labels": CREDENTIALS_LABELS, "annotations": {CREDENTIALS_FOR_ANNOTATION: "orders, trades"}}
    assert credentials_opt_in(named, "trades") and not credentials_opt_in(named, "steal")
    assert not credentials_opt_in({"labels": {}}, "trades")
    assert not credentials_opt_in({"labels": {"tablerefresh.dev/credentials": "yes"}}, "trades")
    assert not credentials_opt_in(None, "trades")


def test_a_user_name_quoted_by_the_server_never_reaches_status(cluster: Cluster, listener: Listener) -> None:
    """ClickHouse's "<user>: Authentication failed" put another application's API key into
    status.health.error: the user name is never shown, even from a Secret that opted in."""
    cluster.secret("ch", {"username": API_KEY, "password": "wrong"}, CREDENTIALS_LABELS)
    tr = cluster.create(body(cluster.ns, "t", listener.url, clickhouse={
        "url": listener.url, "database": "d", "credentialsSecret": {"name": "ch"}
    }))  # fmt: skip
    check = check_of(tr)
    assert check is not None
    result = Prober(cluster.kube, policy=LOOPBACK, timeout=5)(check)
    assert listener.credentials() and API_KEY in listener.credentials()[0]  # it was sent, and quoted back
    assert result.failure == Failure.UNREACHABLE
    assert "refused the credentials" in result.error
    assert API_KEY not in result.error and "wrong" not in result.error


# Finding 3, high: a TableRefresh as a way to create arbitrary Pods.


def test_pod_fields_outside_the_policy_are_refused_naming_each_field() -> None:
    job = JobSpec.model_validate(
        {
            "image": "registry.evil.example/miner:latest",
            "serviceAccountName": "namespace-admin",
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
            "podLabels": {"allow-egress": "true"},
            "podAnnotations": {"container.apparmor.security.beta.kubernetes.io/refresh": "unconfined"},
        }
    )
    refused = pod_refusals(job, OperatorPolicy())
    fields = [r.split(":")[0] for r in refused]
    assert fields == [
        "spec.job.image",
        "spec.job.serviceAccountName",
        "spec.job.nodeSelector",
        "spec.job.tolerations[0]",
        "spec.job.podLabels",
        "spec.job.podAnnotations",
    ], refused
    # The default: the operator's own image, no ServiceAccount, nothing else.
    assert pod_refusals(JobSpec(), OperatorPolicy()) == []
    # What the installer allows is allowed.
    allowing = OperatorPolicy.model_validate(
        {
            "allowedImages": ["registry.evil.example/*"],
            "allowedServiceAccounts": ["namespace-admin"],
            "allowedNodeSelectors": {"node-role.kubernetes.io/control-plane": [""]},
            "allowedTolerations": [{"key": "node-role.kubernetes.io/control-plane"}],
            "allowedPodLabels": ["allow-*"],
            "allowedPodAnnotations": ["container.apparmor.security.beta.kubernetes.io/*"],
        }
    )
    assert pod_refusals(job, allowing) == []


def test_a_refused_pod_is_stalled_and_no_cronjob_is_made(cluster: Cluster) -> None:
    tr = cluster.create(body(cluster.ns, "miner", "clickhouse://127.0.0.1:9", job={
        "image": "registry.evil.example/miner:latest", "serviceAccountName": "namespace-admin"
    }))  # fmt: skip
    status = cluster.reconcile(tr)
    stalled = condition(status, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "NotAllowed")
    assert "spec.job.image: registry.evil.example/miner:latest" in stalled["message"]
    assert "spec.job.serviceAccountName: namespace-admin" in stalled["message"]
    assert condition(status, "Ready")["status"] == "False"
    assert cluster.cronjob("miner") is None


# Finding 5, medium: SSRF.


def test_a_host_the_policy_does_not_allow_is_never_contacted(cluster: Cluster, listener: Listener) -> None:
    cluster.secret("ch", {"username": "u", "password": "p"}, CREDENTIALS_LABELS)
    tr = cluster.create(body(cluster.ns, "probe", listener.url, clickhouse={
        "url": listener.url, "database": "d", "credentialsSecret": {"name": "ch"}
    }))  # fmt: skip
    check = check_of(tr)
    assert check is not None
    in_cluster_only = OperatorPolicy()
    result = Prober(cluster.kube, policy=in_cluster_only, timeout=5)(check)
    assert result.failure == Failure.NOT_ALLOWED
    assert result.error.startswith("spec.clickhouse.url: 127.0.0.1:") and "not a ClickHouse host" in result.error
    assert listener.requests == []
    status = cluster.reconcile(tr, in_cluster_only)
    assert condition(status, "Stalled")["reason"] == "NotAllowed"
    assert cluster.cronjob("probe") is None  # no Job carries the credentials there either


def test_another_servers_answer_is_not_reflected_into_status(cluster: Cluster) -> None:
    page = Listener(page=b"<html>internal admin page: db-password=hunter2</html>")
    try:
        tr = body(cluster.ns, "t", page.url)
        tr["metadata"]["uid"] = "u"
        check = check_of(tr)
        assert check is not None
        result = Prober(cluster.kube, policy=LOOPBACK, timeout=5)(check)
    finally:
        page.close()
    assert page.requests  # it was asked (the host is allowed), and answered
    assert "HTTP 404" in result.error and "hunter2" not in result.error and "admin" not in result.error


def test_aliases_of_one_server_share_its_limit() -> None:
    def key(url: str) -> str:
        check = check_of(body("ns", "t", url))
        assert check is not None
        return asyncio.run(server_address(check))

    assert key("clickhouse://localhost:8123") == key("http://127.0.0.1:8123") == "127.0.0.1:8123"
    assert key("clickhouse://127.0.0.1:8124") != key("clickhouse://127.0.0.1:8123")


# Finding 6, medium: run-now on a CronJob that is not the operator's.


def test_run_now_refuses_a_cronjob_it_does_not_control(cluster: Cluster) -> None:
    """A TableRefresh named after someone else's CronJob, plus run-now: no Job from its template."""
    template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "their/image:1"}]}}
    cluster.batch.create_namespaced_cron_job(
        cluster.ns,
        {
            "metadata": {"name": "backup", "labels": {"tablerefresh.dev/name": "backup"}},
            "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": template}}},
        },
    )
    tr = cluster.create(body(cluster.ns, "backup", "clickhouse://127.0.0.1:9"))
    status = cluster.reconcile(tr)
    assert condition(status, "CronJobReady")["reason"] == "CronJobConflict"
    for _ in range(3):
        with pytest.raises(RunNowRefused, match="CronJobConflict"):
            run_now(cluster.kube, cluster.ns, "backup", "t1")
    assert cluster.jobs() == []
    cronjob = cluster.cronjob("backup")  # untouched: still theirs
    assert cronjob is not None
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == "their/image:1"


# Finding 7, medium: load.


def test_a_health_interval_under_the_policy_minimum_is_raised_to_it() -> None:
    tr = body("ns", "t", "clickhouse://ch.ns.svc:8123", healthCheck={"interval": "1s"})
    tr["metadata"]["uid"] = "u"
    check = check_of(tr, OperatorPolicy().min_health_interval_seconds)
    assert check is not None and check.interval == 60.0


# Finding 9, low.


def test_every_exception_around_connecting_becomes_a_result(cluster: Cluster) -> None:
    def explode(*_: Any, **__: Any) -> Any:
        raise ValueError("unexpected keyword argument 'password'")

    tr = body(cluster.ns, "t", "clickhouse://127.0.0.1:9")
    tr["metadata"]["uid"] = "u"
    check = check_of(tr)
    assert check is not None
    result = Prober(cluster.kube, policy=LOOPBACK, timeout=5, connector=explode)(check)
    assert result.failure == Failure.UNREACHABLE and "unexpected keyword" in result.error
