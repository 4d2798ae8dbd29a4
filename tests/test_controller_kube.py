"""The operator against the real API server of the test control plane (issue 4's "Must show").

Each test gets its own namespace and its own operator process watching only that namespace
(``python -m tablerefresh operator --namespace NS``), so a test can stop and restart it.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tablerefresh.controller.policy.cronjob import cronjob_name, render_cronjob
from tablerefresh.controller.runtime.wiring import DigestDiffBaseStorage
from tablerefresh.spec import load_manifest, parse_manifest
from tests.kube_support import CRD_FILE, GROUP, PLURAL, TEST_POLICY_ARGS, VERSION, install_crd, wait_for  # noqa: F401
from tests.test_crd_invalid import CASES, Invalid

pytestmark = pytest.mark.kube
PLUGIN = "tests.controlplane.pytest_plugin"

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "polymarket" / "tablerefresh.yaml"
ARGO_LABEL = "app.kubernetes.io/instance"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Operator:
    """``tablerefresh operator`` as a subprocess on the test kubeconfig."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.kubeconfig, self.namespace, self.log = kubeconfig, namespace, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0

    def start(self) -> Operator:
        port = free_port()
        self.metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tablerefresh",
                    "operator",
                    "--namespace",
                    self.namespace,
                    "--liveness",
                    f"http://127.0.0.1:{port}/healthz",
                    "--metrics-port",
                    str(self.metrics_port),
                    "--resync",
                    "5",
                    *TEST_POLICY_ARGS,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def alive() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("the operator's liveness endpoint", alive, timeout=30, interval=0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the running operator's /metrics (0 when absent): what it counted since it started."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series = f"{name}{{{wanted}}}" if labels else name
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.split(" ")[0] == series:
                    return float(line.split(" ")[1])
        return 0.0

    def reconciles(self, *triggers: str) -> float:
        """Reconciles that ended well, of these triggers (resume, create, update, cronjob, resync; all
        when none is named)."""
        names = triggers or ("resume", "create", "update", "cronjob", "resync")
        return sum(self.metric("tablerefresh_reconciles_total", result="ok", trigger=t) for t in names)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def _plugin_fixture(request: pytest.FixtureRequest, name: str) -> Any:
    """The control plane plugin's fixture, or a skip while the root conftest does not register it."""
    if not request.config.pluginmanager.has_plugin(PLUGIN):
        pytest.skip(f"the control plane plugin is not registered (pytest -p {PLUGIN})")
    return request.getfixturevalue(name)


@pytest.fixture
def plane(request: pytest.FixtureRequest) -> Any:
    return _plugin_fixture(request, "controlplane")


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    name: str = _plugin_fixture(request, "namespace")
    return name


@pytest.fixture
def crd(plane: Any) -> None:
    install_crd(plane)


@pytest.fixture
def operator(plane: Any, crd: None, ns: str, tmp_path: Path) -> Iterator[Operator]:
    running = Operator(Path(plane.kubeconfig), ns, tmp_path / "operator.log").start()
    yield running
    running.stop()


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Api:
    return Api(_plugin_fixture(request, "kube_api"))


class Api:
    """Plain-dict reads and writes (the wire JSON), as the operator itself does."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def tr(self, ns: str, name: str) -> dict[str, Any]:
        response = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, _preload_content=False)
        data: dict[str, Any] = json.loads(response.data)
        return data

    def cronjob(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.batch.read_namespaced_cron_job(name, ns, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(response.data)
        return data

    def cronjobs(self, ns: str) -> list[dict[str, Any]]:
        response = self.batch.list_namespaced_cron_job(ns, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def events(self, ns: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_event(ns, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items


def example(namespace: str, **spec_changes: Any) -> dict[str, Any]:
    """The reference Polymarket TableRefresh, moved into the test namespace, with an Argo CD label."""
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["namespace"] = namespace
    document["metadata"].setdefault("labels", {})[ARGO_LABEL] = "polymarket"
    document["spec"].update(spec_changes)
    return document


def apply(controlplane: Any, document: dict[str, Any]) -> None:
    """``kubectl apply --server-side``, as Argo CD does with ServerSideApply=true."""
    controlplane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(document))


def create_secret(controlplane: Any, namespace: str, name: str = "clickhouse-credentials") -> None:
    controlplane.kubectl(
        "create", "secret", "generic", name, "-n", namespace, "--from-literal=username=u", "--from-literal=password=p"
    )
    controlplane.kubectl("label", "secret", name, "-n", namespace, "tablerefresh.dev/credentials=true")


def contains(actual: Any, desired: Any, path: str = "") -> list[str]:
    """Where ``desired`` is not in ``actual`` (the server may add defaults; nothing else may differ)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return [f"{path}: not an object"]
        return [m for k, v in desired.items() for m in contains(actual.get(k), v, f"{path}.{k}")]
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [f"{path}: {actual!r} != {desired!r}"]
        return [m for i, (a, d) in enumerate(zip(actual, desired, strict=True)) for m in contains(a, d, f"{path}[{i}]")]
    return [] if actual == desired else [f"{path}: {actual!r} != {desired!r}"]


def condition(tr: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (tr.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def observed(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    """The TableRefresh once the controller has caught up with its current generation."""
    tr = api.tr(ns, name)
    status = tr.get("status") or {}
    ready = condition(tr, "Ready")
    if status.get("observedGeneration") == tr["metadata"]["generation"] and ready:
        return tr
    return None


def kopf_done(tr: dict[str, Any], **spec: Any) -> dict[str, Any] | None:
    """The object once kopf has handled a spec with ``spec`` in it and written its bookkeeping
    (status.kopf: the digest of the spec it last handled, no handler still in progress)."""
    kopf = (tr.get("status") or {}).get("kopf") or {}
    wanted = all(tr["spec"].get(k) == v for k, v in spec.items())
    done = wanted and DigestDiffBaseStorage().handled(tr) and not kopf.get("progress")
    return tr if done else None


def test_example_creates_its_cronjob_within_two_seconds(plane: Any, api: Api, ns: str, operator: Operator) -> None:
    create_secret(plane, ns)
    document = example(ns)
    name = document["metadata"]["name"]
    started = time.monotonic()
    apply(plane, document)
    cronjob = wait_for("the CronJob", lambda: api.cronjob(ns, name), timeout=5, interval=0.02)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"CronJob after {elapsed:.2f}s\n{operator.tail()}"

    tr = wait_for("status to catch up", lambda: observed(api, ns, name))
    assert tr["status"]["observedGeneration"] == tr["metadata"]["generation"]
    desired = render_cronjob(parse_manifest(tr), owner_uid=tr["metadata"]["uid"])
    assert contains(cronjob, desired) == []
    # The reconciler's own condition: Ready also carries the health check, which cannot reach the
    # example's ClickHouse from here (tests/test_health_kube.py has a reachable one).
    assert condition(tr, "CronJobReady")["status"] == "True", tr["status"]  # type: ignore[index]
    assert tr["status"]["cronJobRef"]["name"] == name
    assert tr["status"]["cronJobRef"]["uid"] == cronjob["metadata"]["uid"]


def test_kubectl_get_tr_shows_the_columns(plane: Any, api: Api, ns: str, operator: Operator) -> None:
    create_secret(plane, ns)
    document = example(ns)
    apply(plane, document)
    name = document["metadata"]["name"]
    # Once the first health check has run (it cannot reach the example's ClickHouse from here), the
    # columns show the object as it stays; tests/test_runs_kube.py fills them all from a real check and run.
    tr = wait_for("the first check", lambda: (t := observed(api, ns, name)) and (t["status"].get("health") and t))
    ready = condition(tr, "Ready")
    assert ready is not None
    out = plane.kubectl("get", "tr", "-n", ns).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == [
        *("NAME", "SCHEDULE", "SUSPEND", "READY", "STALE(H)", "DUPS"),
        *("LAST", "RUN", "LAST", "SUCCESS", "LAST", "FAILURE", "AGE"),
    ]
    assert row.split()[:8] == [name, "0", "*/6", "*", "*", "*", "false", ready["status"]]
    wide = plane.kubectl("get", "tablerefreshes", "-n", ns, "-o", "wide").stdout
    assert "REASON" in wide.splitlines()[0] and ready["reason"] in wide


def test_a_hand_edited_cronjob_is_reverted_and_a_deleted_one_recreated(
    plane: Any, api: Api, ns: str, operator: Operator
) -> None:
    create_secret(plane, ns)
    document = example(ns)
    name = document["metadata"]["name"]
    apply(plane, document)
    first = wait_for("the CronJob", lambda: api.cronjob(ns, name))

    plane.kubectl(
        "patch",
        "cronjob",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"schedule":"* * * * *","suspend":true}}',
    )
    wait_for(
        "the edit to be reverted",
        lambda: (cj := api.cronjob(ns, name)) and cj["spec"]["schedule"] == "0 */6 * * *" and not cj["spec"]["suspend"],
    )

    plane.kubectl("delete", "cronjob", name, "-n", ns, "--wait=false")
    again = wait_for(
        "the CronJob to come back",
        lambda: (cj := api.cronjob(ns, name)) and cj["metadata"]["uid"] != first["metadata"]["uid"] and cj,
    )
    assert again["spec"]["schedule"] == "0 */6 * * *"
    tr = wait_for(
        "cronJobRef to follow",
        lambda: (t := api.tr(ns, name))["status"]["cronJobRef"]["uid"] == again["metadata"]["uid"] and t,
    )
    assert len(api.cronjobs(ns)) == 1, tr


def test_schedule_change_and_suspend_reach_the_cronjob(plane: Any, api: Api, ns: str, operator: Operator) -> None:
    create_secret(plane, ns)
    document = example(ns)
    name = document["metadata"]["name"]
    apply(plane, document)
    before = wait_for("Ready", lambda: observed(api, ns, name))

    apply(plane, example(ns, schedule="*/15 * * * *", suspend=True))
    wait_for(
        "the change on the CronJob",
        lambda: (cj := api.cronjob(ns, name)) and cj["spec"]["schedule"] == "*/15 * * * *" and cj["spec"]["suspend"],
    )
    after = wait_for("observedGeneration to move", lambda: observed(api, ns, name))
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["status"]["observedGeneration"] == after["metadata"]["generation"]

    apply(plane, example(ns, schedule="*/15 * * * *", suspend=False))
    wait_for("resume", lambda: (cj := api.cronjob(ns, name)) and cj["spec"]["suspend"] is False)


def test_cronjob_has_the_owner_reference_and_none_of_the_tablerefresh_labels(
    plane: Any, api: Api, ns: str, operator: Operator
) -> None:
    create_secret(plane, ns)
    document = example(ns)
    name = document["metadata"]["name"]
    apply(plane, document)
    tr = wait_for("Ready", lambda: observed(api, ns, name))
    cronjob = api.cronjob(ns, name)
    assert cronjob is not None
    assert cronjob["metadata"]["ownerReferences"] == [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TableRefresh",
            "name": name,
            "uid": tr["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert cronjob["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "tablerefresh",
        "tablerefresh.dev/name": name,
    }
    everywhere = json.dumps(cronjob["spec"])
    for key in tr["metadata"]["labels"]:
        assert key not in everywhere and key not in cronjob["metadata"]["labels"]


def test_tablerefresh_gets_no_annotation_or_finalizer_from_the_controller(
    plane: Any, api: Api, ns: str, operator: Operator
) -> None:
    create_secret(plane, ns)
    document = example(ns)
    name = document["metadata"]["name"]
    apply(plane, document)
    wait_for("Ready", lambda: observed(api, ns, name))
    apply(plane, example(ns, suspend=True))  # an update runs kopf's update handler too
    wait_for("the update", lambda: (t := observed(api, ns, name)) and t["metadata"]["generation"] > 1 and t)
    tr = wait_for("kopf's own bookkeeping of the update", lambda: kopf_done(api.tr(ns, name), suspend=True))
    assert not tr["metadata"].get("annotations"), tr["metadata"].get("annotations")
    assert not tr["metadata"].get("finalizers")
    assert tr["metadata"]["labels"] == document["metadata"]["labels"]
    # Every field the controller writes is status (kopf's own bookkeeping included).
    controller_fields = [
        f for f in tr["metadata"]["managedFields"] if f["manager"] not in ("kubectl", "kubectl-client-side-apply")
    ]
    assert controller_fields and all(f.get("subresource") == "status" for f in controller_fields), controller_fields
    assert set(tr["status"]["kopf"]) == {"digest"}  # a digest of the spec, not a copy of it


def test_deleting_does_not_wait_for_the_operator(plane: Any, api: Api, ns: str, operator: Operator) -> None:
    create_secret(plane, ns)
    document = example(ns)
    name = document["metadata"]["name"]
    apply(plane, document)
    wait_for("Ready", lambda: observed(api, ns, name))
    operator.stop()
    plane.kubectl("delete", "tr", name, "-n", ns, "--timeout=10s")
    assert name not in plane.kubectl("get", "tr", "-n", ns, "-o", "name").stdout


def test_a_restart_converges_to_exactly_one_cronjob(plane: Any, api: Api, ns: str, operator: Operator) -> None:
    create_secret(plane, ns)
    document = example(ns)
    name = document["metadata"]["name"]
    apply(plane, document)
    wait_for("Ready", lambda: observed(api, ns, name))
    operator.stop()
    apply(plane, example(ns, schedule="5 4 * * *"))  # changed while the operator is down
    operator.start()
    wait_for(
        "the change after the restart",
        lambda: (cj := api.cronjob(ns, name)) and cj["spec"]["schedule"] == "5 4 * * *",
    )
    tr = wait_for("status", lambda: observed(api, ns, name))
    operator.stop()
    operator.start()  # and a restart with nothing to do
    # Its first reconcile: kopf's resume, or its update when the last stop came before kopf had
    # written down the spec it handled, or else the resync.
    wait_for("a reconcile after the restart", lambda: operator.reconciles() >= 1)
    wait_for("kopf to handle the object after the restart", lambda: operator.reconciles("resume", "update") >= 1)
    assert operator.reconciles("create") == 0  # kopf knew it: no create after a restart
    cronjobs = api.cronjobs(ns)
    assert [c["metadata"]["name"] for c in cronjobs] == [name]
    assert api.tr(ns, name)["status"]["observedGeneration"] == tr["metadata"]["generation"]


def test_kubectl_describe_shows_the_source_query_once(plane: Any, api: Api, ns: str, operator: Operator) -> None:
    create_secret(plane, ns)
    marker = "describe_shows_this_once"
    columns = ",\n".join(f"    sum(amount_{i}) AS total_{i}" for i in range(40))
    query = f"SELECT\n    wallet,\n{columns},\n    1 AS {marker}\nFROM fills\nGROUP BY wallet"
    document = example(ns)
    document["spec"]["source"] = {"query": query}
    name = document["metadata"]["name"]
    apply(plane, document)
    wait_for("Ready", lambda: observed(api, ns, name))
    wait_for("kopf's own bookkeeping", lambda: kopf_done(api.tr(ns, name), source={"query": query}))
    described = plane.kubectl("describe", "tr", name, "-n", ns).stdout
    assert described.count(marker) == 1, described
    assert described.count("sum(amount_39)") == 1


def test_a_missing_secret_is_ready_false_with_a_reason_and_a_warning_event(
    plane: Any, api: Api, ns: str, operator: Operator
) -> None:
    document = example(ns)
    name = document["metadata"]["name"]
    apply(plane, document)  # no Secret created
    tr = wait_for("Ready=False", lambda: (t := observed(api, ns, name)) and t)
    ready = condition(tr, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert "clickhouse-credentials" in ready["message"]
    events = wait_for(
        "the Warning event",
        lambda: [e for e in api.events(ns) if e["reason"] == "SecretNotFound" and e["type"] == "Warning"],
    )
    assert events[0]["involvedObject"]["name"] == name
    create_secret(plane, ns)  # the periodic resync notices
    found = wait_for(
        "CredentialsFound=True",
        lambda: (c := condition(api.tr(ns, name), "CredentialsFound")) and c["status"] == "True",
        timeout=15,
    )
    assert found
    ready = condition(api.tr(ns, name), "Ready")
    assert ready is not None and ready["reason"] != "SecretNotFound"


def test_an_invalid_spec_the_schema_lets_through_is_reported(plane: Any, api: Api, ns: str, operator: Operator) -> None:
    create_secret(plane, ns)
    document = example(ns, mutations={"maxPending": "0m"})  # a duration, but the model wants it above zero
    name = document["metadata"]["name"]
    apply(plane, document)
    tr = wait_for("Ready=False", lambda: observed(api, ns, name))
    ready = condition(tr, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.mutations.maxPending" in ready["message"]
    assert api.cronjob(ns, name) is None


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_api_server_rejects_invalid_manifests_naming_the_field(
    plane: Any, crd: None, ns: str, case: Invalid
) -> None:
    document = copy.deepcopy(case.manifest())
    document["metadata"]["namespace"] = ns
    result = plane.kubectl("create", "-f", "-", input=json.dumps(document), check=False)
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.field in result.stderr, result.stderr


def test_the_reference_example_is_accepted_as_it_is(plane: Any, crd: None, ns: str) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["namespace"] = ns
    plane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(document))
    load_manifest(EXAMPLE)


# kstatus: Reconciling and Stalled.


def versions_until(
    api: Api, ns: str, name: str, since: str, until: Callable[[dict[str, Any]], bool], timeout: int = 30
) -> list[dict[str, Any]]:
    """Every version of the object after resourceVersion ``since``, as a watch delivers them, up to the
    first for which ``until`` holds: the states in between, however briefly they lasted."""
    seen: list[dict[str, Any]] = []
    stream = watch.Watch()
    for event in stream.stream(
        api.custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        ns,
        PLURAL,
        field_selector=f"metadata.name={name}",
        resource_version=since,
        timeout_seconds=timeout,
    ):
        seen.append(event["object"])
        if until(event["object"]):
            stream.stop()
            return seen
    raise AssertionError(f"not reached within {timeout}s; statuses seen: {[t.get('status') for t in seen]}")


def caught_up(generation: int) -> Callable[[dict[str, Any]], bool]:
    def done(tr: dict[str, Any]) -> bool:
        said = condition(tr, "Reconciling") or {}
        return (tr.get("status") or {}).get("observedGeneration") == generation and said.get("status") == "False"

    return done


def test_reconciling_is_true_until_the_controller_has_applied_a_new_generation(
    plane: Any, api: Api, ns: str, operator: Operator
) -> None:
    create_secret(plane, ns)
    document = example(ns)
    name = document["metadata"]["name"]
    for generation, schedule in ((1, "0 */6 * * *"), (2, "30 */6 * * *")):
        document["spec"]["schedule"] = schedule
        applied = plane.kubectl("apply", "--server-side", "-o", "json", "-f", "-", input=json.dumps(document))
        since = json.loads(applied.stdout)["metadata"]["resourceVersion"]
        seen = versions_until(api, ns, name, since, caught_up(generation))
        saying = [t for t in seen if (condition(t, "Reconciling") or {}).get("status") == "True"]
        assert saying, [t.get("status") for t in seen]
        # Said before the CronJob had this generation's schedule, while observedGeneration was behind.
        first = saying[0]
        assert (condition(first, "Reconciling") or {})["observedGeneration"] == generation
        assert (first["status"].get("observedGeneration") or 0) < generation
        done = seen[-1]
        assert (condition(done, "Stalled") or {})["status"] == "False"
        assert (condition(done, "CronJobReady") or {})["status"] == "True"
        assert (api.cronjob(ns, name) or {})["spec"]["schedule"] == schedule


def test_stalled_names_what_a_person_must_fix_and_clears_once_it_is_fixed(
    plane: Any, api: Api, ns: str, operator: Operator
) -> None:
    def stalled(name: str, status: str, reason: str | None = None) -> dict[str, Any] | None:
        tr = api.tr(ns, name)
        said = condition(tr, "Stalled") or {}
        return tr if said.get("status") == status and reason in (None, said.get("reason")) else None

    # A missing Secret.
    document = example(ns)
    name = document["metadata"]["name"]
    apply(plane, document)
    tr = wait_for("Stalled=True", lambda: stalled(name, "True", "SecretNotFound"))
    assert "clickhouse-credentials" in (condition(tr, "Stalled") or {})["message"]
    assert (condition(tr, "Reconciling") or {})["status"] == "False"  # nothing left it can do alone
    create_secret(plane, ns)
    wait_for("Stalled=False", lambda: stalled(name, "False"), timeout=20)  # the resync (5 s) notices

    # A CronJob of the same name that the controller does not own.
    other = example(ns)
    other["metadata"]["name"] = "other"
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob_name("other"), "namespace": ns},
        "spec": {
            "schedule": "0 0 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "busybox"}]}}
                }
            },
        },
    }
    api.batch.create_namespaced_cron_job(ns, foreign)
    apply(plane, other)
    tr = wait_for("Stalled=True", lambda: stalled("other", "True", "CronJobConflict"))
    assert cronjob_name("other") in (condition(tr, "Stalled") or {})["message"]
    api.batch.delete_namespaced_cron_job(cronjob_name("other"), ns)
    wait_for("Stalled=False", lambda: stalled("other", "False"), timeout=20)

    # A spec the schema lets through and the model refuses.
    api.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "other", {"spec": {"mutations": {"maxPending": "0m"}}}
    )
    tr = wait_for("Stalled=True", lambda: stalled("other", "True", "InvalidSpec"))
    assert "spec.mutations.maxPending" in (condition(tr, "Stalled") or {})["message"]
