"""Deploy manifests: valid against the Kubernetes 1.36 schema, least privilege, locked-down pods."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tablerefresh.controller.policy.admission import OperatorPolicy, credentials_opt_in
from tablerefresh.controller.policy.cronjob import render_cronjob
from tablerefresh.spec import parse_manifest

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "manifests" / "base"
EXAMPLES = ROOT / "manifests" / "examples"
K8S = "1.36.0"
# Kinds kubernetes-validate has no schema for: checked by their own tests (CRD, model) or by shape.
FOREIGN = {"Application", "TableRefresh", "Kustomization"}


def documents(*paths: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            out.extend(d for d in yaml.safe_load_all(file.read_text()) if d)
    return out


def by_kind(kind: str, docs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [d for d in (docs if docs is not None else documents(BASE)) if d["kind"] == kind]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(kind) if name is None or d["metadata"]["name"] == name]
    return doc


ALL = documents(BASE, EXAMPLES)


@pytest.mark.parametrize(
    "doc",
    [d for d in ALL if d["kind"] not in FOREIGN],
    ids=[f"{d['kind']}/{d['metadata']['name']}" for d in ALL if d["kind"] not in FOREIGN],
)
def test_manifest_validates_against_kubernetes_1_36(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, K8S, strict=True)


def test_every_kind_the_issue_names_is_there() -> None:
    kinds = {d["kind"] for d in documents(BASE)}
    assert {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ConfigMap"
    } <= kinds  # fmt: skip


def test_examples_are_valid_tablerefreshes_and_render_valid_cronjobs() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    examples = by_kind("TableRefresh", documents(EXAMPLES, ROOT / "examples" / "polymarket" / "tablerefresh.yaml"))
    assert len(examples) >= 2
    for doc in examples:
        cronjob = render_cronjob(parse_manifest(doc), owner_uid="00000000-0000-0000-0000-000000000000")
        kubernetes_validate.validate(cronjob, K8S, strict=True)


def find_kubectl() -> str | None:
    """kubectl on PATH, else the one the test control plane build put in its cache."""
    found = shutil.which("kubectl")
    if found:
        return found
    from tests.controlplane.cluster import cache_root

    built = sorted(cache_root().glob("*/bin/kubectl"), key=lambda p: p.stat().st_mtime)
    return str(built[-1]) if built else None


def test_kustomize_builds_and_every_output_validates() -> None:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for root in (BASE, EXAMPLES):
        built = subprocess.run([kubectl, "kustomize", str(root)], check=True, capture_output=True, text=True).stdout
        docs = [d for d in yaml.safe_load_all(built) if d]
        assert docs
        for doc in docs:
            if doc["kind"] not in FOREIGN:
                kubernetes_validate.validate(doc, K8S, strict=True)
    crds = subprocess.run([kubectl, "kustomize", str(BASE)], check=True, capture_output=True, text=True).stdout
    assert "kind: CustomResourceDefinition" in crds


def test_deployment_is_one_replica_recreated_with_probes_on_the_liveness_endpoint() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "operator" and "--all-namespaces" in args
    liveness = next(a.split("=", 1)[1] for a in args if a.startswith("--liveness="))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert liveness == f"http://0.0.0.0:{ports['health']}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--metrics-port={ports['metrics']}" in args and ports["metrics"] == 8080
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]


def test_operator_pod_is_non_root_and_read_only() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_metrics_service_selects_the_operator() -> None:
    service = one("Service")
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def _verbs(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_cluster_role_is_least_privilege() -> None:
    verbs = _verbs(one("ClusterRole", "tablerefresh"))
    assert all("*" not in v and "*" not in k for k, v in verbs.items())
    assert verbs == {
        ("tablerefresh.dev", "tablerefreshes"): {"get", "list", "watch", "patch"},
        ("tablerefresh.dev", "tablerefreshes/status"): {"get", "patch"},
        ("tablerefresh.dev", "tablerefreshes/finalizers"): {"update"},
        ("batch", "cronjobs"): {"get", "list", "watch", "create", "update", "patch"},
        ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
        ("", "pods"): {"list"},
        ("", "events"): {"create", "patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
        ("", "namespaces"): {"list", "watch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }


def test_secrets_are_get_only_in_a_role_of_their_own() -> None:
    """Apart, so that an installer can bind it per namespace instead (the example does)."""
    assert _verbs(one("ClusterRole", "tablerefresh-credentials")) == {("", "secrets"): {"get"}}
    (per_namespace,) = by_kind("RoleBinding", documents(EXAMPLES))
    assert per_namespace["roleRef"] == one("ClusterRoleBinding", "tablerefresh-credentials")["roleRef"]


@pytest.mark.parametrize("name", ["tablerefresh", "tablerefresh-credentials"])
def test_bindings_tie_the_roles_to_the_service_account(name: str) -> None:
    binding = one("ClusterRoleBinding", name)
    account = one("ServiceAccount")
    assert binding["roleRef"]["name"] == one("ClusterRole", name)["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]


def test_the_shipped_policy_is_the_default_and_the_deployment_reads_it() -> None:
    from tablerefresh.commands.operator import load_policy

    (config,) = by_kind("ConfigMap")
    path = Path("/etc/tablerefresh/policy.yaml")
    deployment = one("Deployment")["spec"]["template"]["spec"]
    assert f"--policy={path}" in deployment["containers"][0]["args"]
    mount = next(m for m in deployment["containers"][0]["volumeMounts"] if m["mountPath"] == str(path.parent))
    volume = next(v for v in deployment["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    shipped = yaml.safe_load(config["data"][path.name])
    assert load_policy(None, [], None).model_dump() == OperatorPolicy.model_validate(shipped).model_dump()


def test_the_example_secret_opts_in_for_every_example_that_names_it() -> None:
    (secret,) = by_kind("Secret", documents(EXAMPLES))
    users = [d for d in documents(EXAMPLES, ROOT / "examples" / "polymarket") if d["kind"] == "TableRefresh"]
    assert users
    for tr in users:
        assert tr["spec"]["clickhouse"]["credentialsSecret"]["name"] == secret["metadata"]["name"]
        assert credentials_opt_in(secret["metadata"], tr["metadata"]["name"]), tr["metadata"]["name"]


def test_argocd_application_points_at_the_reference_example() -> None:
    (app,) = [d for d in documents(EXAMPLES / "argocd-application.yaml") if d["kind"] == "Application"]
    source = app["spec"]["source"]
    assert (ROOT / source["path"] / source["directory"]["include"]).is_file()
    assert app["spec"]["destination"]["namespace"] == "polymarket"
    (operator_app,) = documents(EXAMPLES / "argocd-operator.yaml")
    assert (ROOT / operator_app["spec"]["source"]["path"] / "kustomization.yaml").is_file()


def test_dockerfile_is_slim_non_root_and_without_the_embedded_engine() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert [i for i in instructions if i.startswith("FROM ")][-1] == "FROM python:3.11-slim"
    assert "USER 65532:65532" in instructions
    assert 'ENTRYPOINT ["tablerefresh"]' in instructions
    install = next(i for i in instructions if "pip install" in i)
    assert install.rstrip().endswith(" .") and "[" not in install and "chdb" not in install
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!operator/" in ignored  # .venv, .git and tests stay out of the context
