"""The test control plane against kubectl, the Python client and kopf.

These run against whatever cluster the ``controlplane`` fixture gives: our own
(etcd + the CRD-serving API server with stand-ins for the built-in kinds) or,
with TABLEREFRESH_TEST_KUBECONFIG, a real one. The assertions hold for both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.pytest_plugin import ExternalCluster

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parent.parent.parent
CRD_DIR = ROOT / "crds"

STANDINS = {
    "namespaces", "secrets", "configmaps", "serviceaccounts", "events", "pods",
    "cronjobs.batch", "jobs.batch", "leases.coordination.k8s.io",
    "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
    "clusterroles.rbac.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io",
}

TEST_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.controlplane.tablerefresh.dev"},
    "spec": {
        "group": "controlplane.tablerefresh.dev",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "colour": {"type": "string", "enum": ["red", "blue"]},
                        },
                    },
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }},
        }],
    },
}


def cronjob(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox:1", "command": ["sh", "-c", "true"]}],
            }}}},
        },
    }
    body["spec"].update(spec)
    return body


# --------------------------------------------------------------------- CRDs

def repo_crd_files() -> list[Path]:
    return sorted(
        p for p in CRD_DIR.glob("*.yaml")
        if any((d or {}).get("kind") == "CustomResourceDefinition" for d in yaml.safe_load_all(p.read_text()))
    )


def crd_documents(files: list[Path]) -> list[dict[str, Any]]:
    return [d for p in files for d in yaml.safe_load_all(p.read_text())
            if (d or {}).get("kind") == "CustomResourceDefinition"]


@pytest.fixture(scope="module")
def crd_files(controlplane: Any, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The repo's CRD files plus a small test CRD, applied and established."""
    test_crd = tmp_path_factory.mktemp("crd") / "widgets.yaml"
    test_crd.write_text(yaml.safe_dump(TEST_CRD))
    files = [*repo_crd_files(), test_crd]
    if repo_crd_files():
        # As a user would. (The folder's kustomization is named `Kustomization`, which -f skips.)
        controlplane.kubectl("apply", "-f", str(CRD_DIR))
    controlplane.kubectl("apply", "-f", str(test_crd))
    for doc in crd_documents(files):
        controlplane.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                             f"crd/{doc['metadata']['name']}")
    return files


def test_the_repo_has_crds() -> None:
    assert repo_crd_files(), f"no CustomResourceDefinition in {CRD_DIR.relative_to(ROOT)}/*.yaml"


def test_api_resources_lists_the_stand_ins_and_every_crd(controlplane: Any, crd_files: list[Path]) -> None:
    out = controlplane.kubectl("api-resources", "-o", "name").stdout.split()
    expected = set(STANDINS)
    for doc in crd_documents(crd_files):
        expected.add(f"{doc['spec']['names']['plural']}.{doc['spec']['group']}")
    assert expected <= set(out), f"missing from kubectl api-resources: {sorted(expected - set(out))}"

    wide = controlplane.kubectl("api-resources").stdout
    assert "CronJob" in wide and "batch/v1" in wide


def test_kubectl_apply_of_the_crds_is_idempotent(controlplane: Any, crd_files: list[Path]) -> None:
    for p in crd_files:
        out = controlplane.kubectl("apply", "-f", str(p)).stdout
        assert "unchanged" in out or "configured" in out, out
        server_side = controlplane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(p)).stdout
        assert "serverside-applied" in server_side


def _schema_breaker(doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """An object of this CRD whose spec gives a string field a number; the field's path."""
    version = next(v for v in doc["spec"]["versions"] if v.get("served"))
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    prop, value = next(
        ((k, 12345) for k, v in spec_schema.get("properties", {}).items() if v.get("type") == "string"),
        next((k, "not-a-number") for k, v in spec_schema["properties"].items() if v.get("type") == "integer"),
    )
    body = {
        "apiVersion": f"{doc['spec']['group']}/{version['name']}",
        "kind": doc["spec"]["names"]["kind"],
        "metadata": {"name": "broken"},
        "spec": {prop: value},
    }
    return body, f"spec.{prop}"


def test_a_custom_resource_that_breaks_its_schema_is_rejected_naming_the_field(
    controlplane: Any, crd_files: list[Path], namespace: str
) -> None:
    for doc in crd_documents(crd_files):
        body, field = _schema_breaker(doc)
        body["metadata"]["namespace"] = namespace
        proc = controlplane.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
        assert proc.returncode != 0, f"{doc['metadata']['name']}: accepted {body}"
        assert "is invalid" in proc.stderr and field in proc.stderr, proc.stderr
        # Omitted required fields are named too.
        required = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].get("required")
        if required:
            body["spec"] = {}
            proc = controlplane.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
            assert proc.returncode != 0
            assert f"spec.{required[0]}: Required value" in proc.stderr, proc.stderr


# ------------------------------------------------------ Python client, CronJob

@pytest.fixture
def dyn(kube_api: Any) -> Any:
    from kubernetes import dynamic

    return dynamic.DynamicClient(kube_api)


def _rejected(resource: Any, body: dict[str, Any], namespace: str) -> tuple[int, str]:
    from kubernetes.dynamic.exceptions import DynamicApiError

    try:
        resource.create(body=body, namespace=namespace)
    except DynamicApiError as exc:
        return exc.status, json.loads(exc.body)["message"]
    raise AssertionError(f"accepted: {body}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["spec"].pop("schedule"), "spec.schedule"),
        (lambda b: b["spec"].__setitem__("jobTemplate", "every day"), "jobTemplate"),
        (lambda b: b["spec"].__setitem__("concurrencyPolicy", 5), "concurrencyPolicy"),
        (lambda b: b["spec"]["jobTemplate"]["spec"]["template"]["spec"].pop("restartPolicy"), "restartPolicy"),
        (lambda b: b["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].pop("name"),
         "containers[0].name"),
    ],
    ids=["no-schedule", "jobTemplate-string", "concurrencyPolicy-number", "no-restartPolicy", "container-no-name"],
)
def test_a_malformed_cronjob_is_rejected(dyn: Any, namespace: str, change: Any, field: str) -> None:
    body = cronjob("malformed")
    change(body)
    status, message = _rejected(dyn.resources.get(api_version="batch/v1", kind="CronJob"), body, namespace)
    assert status in (400, 422), (status, message)
    assert field in message, message


def test_a_valid_cronjob_reads_back_with_the_servers_defaults(kube_api: Any, namespace: str) -> None:
    from kubernetes import client

    batch = client.BatchV1Api(kube_api)
    created = batch.create_namespaced_cron_job(namespace, cronjob("defaults"))
    assert created.spec.concurrency_policy == "Allow"
    assert created.spec.suspend is False
    assert created.spec.successful_jobs_history_limit == 3
    assert created.spec.failed_jobs_history_limit == 1
    container = created.spec.job_template.spec.template.spec.containers[0]
    assert container.termination_message_path == "/dev/termination-log"
    assert created.metadata.uid and created.metadata.resource_version


def test_patch_namespaced_cron_job_is_a_strategic_merge(kube_api: Any, namespace: str) -> None:
    from kubernetes import client

    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_cron_job(namespace, cronjob("smp"))
    patched = batch.patch_namespaced_cron_job(
        "smp",
        namespace,
        {"spec": {"suspend": True, "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "main", "image": "busybox:2"}]}}}}}},
    )
    assert patched.spec.suspend is True
    (container,) = patched.spec.job_template.spec.template.spec.containers
    # Merged by name: the image changed, the command stayed.
    assert container.image == "busybox:2"
    assert container.command == ["sh", "-c", "true"]
    # The status subresource takes strategic merge patches too.
    now = "2030-01-01T00:00:00Z"
    status = batch.patch_namespaced_cron_job_status("smp", namespace, {"status": {"lastScheduleTime": now}})
    assert status.status.last_schedule_time is not None
    assert batch.read_namespaced_cron_job("smp", namespace).spec.suspend is True


def test_server_side_apply_of_a_cronjob_with_field_managers_and_conflicts(dyn: Any, namespace: str) -> None:
    from kubernetes.dynamic.exceptions import DynamicApiError

    cronjobs = dyn.resources.get(api_version="batch/v1", kind="CronJob")
    body = cronjob("ssa")
    body["metadata"]["namespace"] = namespace
    applied = cronjobs.server_side_apply(body=body, namespace=namespace, field_manager="tablerefresh")
    managers = {m["manager"]: m["operation"] for m in applied.metadata.managedFields}
    assert managers == {"tablerefresh": "Apply"}

    # Same manager, changed intent: applied.
    body["spec"]["schedule"] = "0 * * * *"
    again = cronjobs.server_side_apply(body=body, namespace=namespace, field_manager="tablerefresh")
    assert again.spec.schedule == "0 * * * *"

    # Another manager wanting the same field: a conflict naming both.
    other = json.loads(json.dumps(body))
    other["spec"]["schedule"] = "1 * * * *"
    with pytest.raises(DynamicApiError) as info:
        cronjobs.server_side_apply(body=other, namespace=namespace, field_manager="someone-else")
    assert info.value.status == 409
    message = json.loads(info.value.body)["message"]
    assert "tablerefresh" in message and ".spec.schedule" in message, message

    forced = cronjobs.server_side_apply(body=other, namespace=namespace, field_manager="someone-else",
                                        force_conflicts=True)
    assert forced.spec.schedule == "1 * * * *"

    # Server-side apply on a core stand-in.
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": namespace},
          "data": {"a": "1"}}
    assert configmaps.server_side_apply(body=cm, namespace=namespace, field_manager="tablerefresh").data.a == "1"


def test_a_watch_sees_added_modified_deleted(kube_api: Any, namespace: str) -> None:
    from kubernetes import client, watch

    core = client.CoreV1Api(kube_api)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def run() -> None:
        for event in w.stream(core.list_namespaced_config_map, namespace, resource_version=rv,
                              timeout_seconds=20):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                w.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "watched"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("watched", namespace, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("watched", namespace)
    thread.join(timeout=25)
    assert [t for t, n in seen if n == "watched"] == ["ADDED", "MODIFIED", "DELETED"]


def test_a_watch_on_custom_resources(kube_api: Any, crd_files: list[Path], namespace: str) -> None:
    from kubernetes import client, watch

    api = client.CustomObjectsApi(kube_api)
    group, version, plural = "controlplane.tablerefresh.dev", "v1", "widgets"
    rv = api.list_namespaced_custom_object(group, version, namespace, plural)["metadata"]["resourceVersion"]
    seen: list[str] = []
    w = watch.Watch()

    def run() -> None:
        for event in w.stream(api.list_namespaced_custom_object, group, version, namespace, plural,
                              resource_version=rv, timeout_seconds=20):
            seen.append(event["type"])
            if event["type"] == "DELETED":
                w.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    body = {"apiVersion": f"{group}/{version}", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    api.create_namespaced_custom_object(group, version, namespace, plural, body)
    api.patch_namespaced_custom_object_status(group, version, namespace, plural, "w", {"status": {"ok": True}})
    api.delete_namespaced_custom_object(group, version, namespace, plural, "w")
    thread.join(timeout=25)
    assert seen == ["ADDED", "MODIFIED", "DELETED"]


def test_events_can_be_created(kube_api: Any, namespace: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "subject"}})
    event = core.create_namespaced_event(namespace, {
        "metadata": {"generateName": "subject-"},
        "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": "subject", "namespace": namespace},
        "reason": "Tested",
        "message": "an event",
        "type": "Normal",
        "source": {"component": "tablerefresh-tests"},
    })
    assert event.metadata.name.startswith("subject-")
    reasons = [e.reason for e in core.list_namespaced_event(namespace).items]
    assert "Tested" in reasons


def test_namespaces_secrets_and_kubectl_create(controlplane: Any, kube_api: Any) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    name = f"kubectl-{uuid.uuid4().hex[:8]}"
    controlplane.kubectl("create", "namespace", name)
    try:
        controlplane.kubectl("create", "secret", "generic", "creds", "-n", name, "--from-literal=password=p")
        assert core.read_namespace(name).status.phase == "Active"
        secret = core.read_namespaced_secret("creds", name)
        assert secret.type == "Opaque" and secret.data == {"password": "cA=="}
        # stringData is folded into data, as a real server does.
        made = core.create_namespaced_secret(name, {"metadata": {"name": "sd"}, "stringData": {"k": "v"}})
        assert made.data == {"k": "dg=="} and not made.string_data
        out = controlplane.kubectl("get", "secrets", "-n", name, "-o", "name").stdout.split()
        assert sorted(out) == ["secret/creds", "secret/sd"]
    finally:
        controlplane.kubectl("delete", "namespace", name)
    # Deleting a namespace deletes what is in it.
    deadline = time.monotonic() + 60
    while core.list_namespaced_secret(name).items and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not core.list_namespaced_secret(name).items


# ------------------------------------------------------------------------ kopf

OPERATOR = textwrap.dedent(
    """
    import kopf

    @kopf.on.login()
    def login(**kwargs):
        # The kubernetes client reads $KUBECONFIG when first imported, before
        # the test sets it; kopf's own kubeconfig reader reads it now.
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create("configmaps", labels={"kopf-test": "yes"})
    def created(body, patch, logger, **_):
        patch.metadata.annotations["kopf-test/handled"] = body["data"]["value"]
        kopf.info(body, reason="Handled", message=f"handled {body['metadata']['name']}")
    """
)


def test_kopf_runs_against_it(controlplane: Any, kube_api: Any, namespace: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from kopf.testing import KopfRunner
    from kubernetes import client

    operator = tmp_path / "operator.py"
    operator.write_text(OPERATOR)
    monkeypatch.setenv("KUBECONFIG", str(controlplane.kubeconfig))
    core = client.CoreV1Api(kube_api)
    args = ["run", "--standalone", "--namespace", namespace, "--verbose", str(operator)]
    with KopfRunner(args, timeout=60) as runner:
        core.create_namespaced_config_map(namespace, {
            "metadata": {"name": "kopf-subject", "labels": {"kopf-test": "yes"}},
            "data": {"value": "42"},
        })
        deadline = time.monotonic() + 30
        annotations: dict[str, str] = {}
        while time.monotonic() < deadline:
            annotations = core.read_namespaced_config_map("kopf-subject", namespace).metadata.annotations or {}
            if "kopf-test/handled" in annotations:
                break
            time.sleep(0.1)
        events: list[Any] = []
        while time.monotonic() < deadline:
            events = core.list_namespaced_event(namespace).items
            if any(e.reason == "Handled" for e in events):
                break
            time.sleep(0.1)
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
    assert annotations.get("kopf-test/handled") == "42", runner.output
    assert "Handler 'created' succeeded" in runner.output
    handled = [e for e in events if e.reason == "Handled"]
    assert handled and handled[0].involved_object.name == "kopf-subject", events
    assert handled[0].message == "handled kopf-subject"


# --------------------------------------------------------- start, stop, timing

@pytest.fixture
def own_controlplane(controlplane: Any) -> Any:
    if isinstance(controlplane, ExternalCluster):
        pytest.skip("an external cluster is in use (TABLEREFRESH_TEST_KUBECONFIG)")
    return controlplane


def test_a_warm_start_takes_under_5_seconds(own_controlplane: Any, tmp_path: Path) -> None:
    from tests.controlplane.cluster import ControlPlane

    began = time.monotonic()
    second = ControlPlane(tmp_path / "second", bin_dir=own_controlplane.bin_dir, tie_to_parent=True)
    try:
        second.start()
        elapsed = time.monotonic() - began
        assert second.kubectl("get", "namespaces").returncode == 0
    finally:
        second.stop()
    print(f"warm start: {elapsed:.2f}s")
    assert elapsed < 5, f"warm start took {elapsed:.2f}s"


def test_python_m_tests_controlplane_start_and_stop(own_controlplane: Any, tmp_path: Path) -> None:
    state = tmp_path / "cp"
    run = [sys.executable, "-m", "tests.controlplane"]
    started = subprocess.run([*run, "start", "--dir", str(state)], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        assert (state / "kubeconfig").is_file()
        status = subprocess.run([*run, "status", "--dir", str(state)], cwd=ROOT, capture_output=True, text=True)
        assert status.returncode == 0 and "running" in status.stdout
        version = subprocess.run(
            [str(Path(own_controlplane.bin_dir) / "bin" / "kubectl"), "--kubeconfig", str(state / "kubeconfig"),
             "version", "-o", "json"],
            capture_output=True, text=True, timeout=30,
        )
        assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == "v1.36.4", version.stderr
    finally:
        stopped = subprocess.run([*run, "stop", "--dir", str(state)], cwd=ROOT, capture_output=True, text=True,
                                 timeout=60)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    status = subprocess.run([*run, "status", "--dir", str(state)], cwd=ROOT, capture_output=True, text=True)
    assert status.returncode == 3

