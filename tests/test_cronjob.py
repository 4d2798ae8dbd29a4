"""policy.cronjob is pure: these tests build models in memory and inspect dicts, no API server.
The CronJob (render_cronjob), whose CronJob is ours to overwrite, and a schedule's period."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tablerefresh.controller.policy.cronjob import (
    CRONJOB_NAME_MAX,
    cronjob_name,
    name_label_value,
    render_cronjob,
    schedule_period_seconds,
)
from tablerefresh.controller.policy.owners import foreign_owner
from tablerefresh.spec import TableRefresh, parse_manifest

ROOT = Path(__file__).resolve().parent.parent
UID = "6f1c2d3e-0000-4000-8000-000000000001"

MANIFEST: dict[str, Any] = {
    "apiVersion": "tablerefresh.dev/v1alpha1",
    "kind": "TableRefresh",
    "metadata": {
        "name": "trades-daily",
        "namespace": "analytics",
        "labels": {"app.kubernetes.io/instance": "argocd-app", "team": "data"},
        "annotations": {"argocd.argoproj.io/tracking-id": "app:tablerefresh.dev/TableRefresh:analytics/x"},
    },
    "spec": {
        "schedule": "15 */6 * * *",
        "clickhouse": {"url": "clickhouse://clickhouse:8123", "credentialsSecret": {"name": "ch"}},
        "target": {"table": "trades"},
        "slice": {"predicate": "ts >= {window_start:DateTime}"},
        "source": {"query": "SELECT * FROM raw_trades"},
        "uniqueKey": ["id"],
        "freshnessColumn": "ts",
    },
}


def make(**spec_changes: Any) -> TableRefresh:
    document = copy.deepcopy(MANIFEST)
    document["spec"].update(spec_changes)
    return parse_manifest(document)


def pod_spec(cronjob: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def container(cronjob: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(cronjob)["containers"]
    result: dict[str, Any] = only
    return result


def env(cronjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(cronjob)["env"]}


def test_identity_labels_and_owner() -> None:
    cj = render_cronjob(make(), owner_uid=UID)
    assert (cj["apiVersion"], cj["kind"]) == ("batch/v1", "CronJob")
    meta = cj["metadata"]
    assert (meta["name"], meta["namespace"]) == ("trades-daily", "analytics")
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "tablerefresh", "tablerefresh.dev/name": "trades-daily"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "tablerefresh.dev/v1alpha1",
            "kind": "TableRefresh",
            "name": "trades-daily",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert "annotations" not in meta


def test_no_label_or_annotation_of_the_tableRefresh_leaks() -> None:
    text = json.dumps(render_cronjob(make(), owner_uid=UID))
    for leaked in ("app.kubernetes.io/instance", "argocd-app", "team", "argocd.argoproj.io"):
        assert leaked not in text


def test_schedule_fields_pass_through() -> None:
    tr = make(
        schedule="*/5 * * * *",
        timeZone="Europe/Paris",
        suspend=True,
        concurrencyPolicy="Replace",
        startingDeadlineSeconds=60,
        successfulJobsHistoryLimit=1,
        failedJobsHistoryLimit=5,
        backoffLimit=2,
        activeDeadlineSeconds=1800,
    )
    spec = render_cronjob(tr, owner_uid=UID)["spec"]
    assert {k: v for k, v in spec.items() if k != "jobTemplate"} == {
        "schedule": "*/5 * * * *",
        "timeZone": "Europe/Paris",
        "suspend": True,
        "concurrencyPolicy": "Replace",
        "startingDeadlineSeconds": 60,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 5,
    }
    job = spec["jobTemplate"]["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"]) == (2, 1800)


def test_defaults_render_forbid_and_no_deadline() -> None:
    spec = render_cronjob(make(), owner_uid=UID)["spec"]
    assert (spec["concurrencyPolicy"], spec["startingDeadlineSeconds"], spec["timeZone"]) == ("Forbid", 300, "UTC")
    assert "activeDeadlineSeconds" not in spec["jobTemplate"]["spec"]


def test_container_runs_refresh_with_a_summary_in_the_termination_log() -> None:
    c = container(render_cronjob(make(), owner_uid=UID))
    assert c["args"] == ["refresh", "--summary-file", "/dev/termination-log"]
    assert c["command"] == ["tablerefresh"]
    assert c["image"] == "tablerefresh/tablerefresh:0.1.0"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def test_manifest_env_reads_back_as_the_same_spec_without_labels() -> None:
    tr = make(window="6h", strategy="Exchange")
    value = env(render_cronjob(tr, owner_uid=UID))["TABLEREFRESH_MANIFEST"]["value"]
    assert " " not in value.replace("15 */6 * * *", "").replace("SELECT * FROM raw_trades", "").replace(
        "ts >= {window_start:DateTime}", ""
    )
    document = json.loads(value)
    assert document["metadata"] == {"name": "trades-daily", "namespace": "analytics"}
    assert parse_manifest(document).spec == tr.spec


def test_run_id_comes_from_the_job_name_label() -> None:
    run_id = env(render_cronjob(make(), owner_uid=UID))["TABLEREFRESH_RUN_ID"]
    assert run_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}


def test_credentials_come_from_the_secret_keys() -> None:
    tr = make(
        clickhouse={
            "url": "https://ch:8443",
            "credentialsSecret": {"name": "creds", "usernameKey": "user", "passwordKey": "pass"},
        }
    )
    e = env(render_cronjob(tr, owner_uid=UID))
    assert e["CLICKHOUSE_USER"]["valueFrom"] == {"secretKeyRef": {"name": "creds", "key": "user"}}
    assert e["CLICKHOUSE_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "creds", "key": "pass"}}
    assert all("value" not in e[k] for k in ("CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"))


def test_no_secret_no_credential_env() -> None:
    e = env(render_cronjob(make(clickhouse={"url": "clickhouse://ch:8123"}), owner_uid=UID))
    assert "CLICKHOUSE_USER" not in e and "CLICKHOUSE_PASSWORD" not in e


def test_source_query_from_a_config_map_only_when_asked() -> None:
    assert "TABLEREFRESH_SOURCE_QUERY" not in env(render_cronjob(make(), owner_uid=UID))
    tr = make(source={"configMapKeyRef": {"name": "queries", "key": "trades.sql"}})
    e = env(render_cronjob(tr, owner_uid=UID))
    assert e["TABLEREFRESH_SOURCE_QUERY"]["valueFrom"] == {"configMapKeyRef": {"name": "queries", "key": "trades.sql"}}


def test_pod_is_locked_down() -> None:
    cj = render_cronjob(make(), owner_uid=UID)
    pod = pod_spec(cj)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(cj)["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container(cj)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    assert "serviceAccountName" not in pod


def test_job_settings_reach_the_pod() -> None:
    tr = make(
        job={
            "image": "registry.example/tablerefresh:1.2.3",
            "imagePullPolicy": "Always",
            "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}},
            "serviceAccountName": "refresher",
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "podLabels": {"team": "data", "tablerefresh.dev/name": "spoofed"},
            "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
        }
    )
    cj = render_cronjob(tr, owner_uid=UID)
    template = cj["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["labels"] == {
        "team": "data",
        "app.kubernetes.io/managed-by": "tablerefresh",
        "tablerefresh.dev/name": "trades-daily",
    }
    assert template["metadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    pod = template["spec"]
    assert pod["serviceAccountName"] == "refresher"
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]
    c = container(cj)
    assert (c["image"], c["imagePullPolicy"]) == ("registry.example/tablerefresh:1.2.3", "Always")
    assert c["resources"] == {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}
    # The Jobs carry the controller's labels only, for the Job watch.
    assert cj["spec"]["jobTemplate"]["metadata"]["labels"] == cj["metadata"]["labels"]


def test_long_names_fit_and_stay_distinct() -> None:
    a, b = "x" * 60 + "-a", "x" * 60 + "-b"
    assert len(cronjob_name(a)) <= CRONJOB_NAME_MAX and cronjob_name(a) != cronjob_name(b)
    assert len(name_label_value("y" * 200)) <= 63
    assert cronjob_name("short") == "short"


def test_rendering_is_deterministic_and_does_not_alias() -> None:
    tr = make()
    first, second = render_cronjob(tr, owner_uid=UID), render_cronjob(tr, owner_uid=UID)
    assert first == second
    first["metadata"]["labels"]["x"] = "y"
    assert "x" not in first["spec"]["jobTemplate"]["metadata"]["labels"]
    assert "&id" not in yaml.safe_dump(second)


def test_cronjob_validates_against_kubernetes_1_36() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for tr in (make(), make(source={"configMapKeyRef": {"name": "q", "key": "k"}}, activeDeadlineSeconds=60)):
        kubernetes_validate.validate(render_cronjob(tr, owner_uid=UID), "1.36.0", strict=True)


# examples/<workload> may be a symlink, which "**" does not follow; manifests/examples has more.
EXAMPLES = sorted(
    p
    for pattern in ("examples/*.yaml", "examples/*/*.yaml", "manifests/examples/*.yaml")
    for p in ROOT.glob(pattern)
    if "kind: TableRefresh" in p.read_text()
)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_render_to_valid_cronjobs(path: Path) -> None:
    from tablerefresh.spec import load_manifest

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(render_cronjob(load_manifest(path), owner_uid=UID), "1.36.0", strict=True)


def test_render_command_prints_the_cronjob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tablerefresh.cli import main

    manifest = tmp_path / "tr.yaml"
    manifest.write_text(yaml.safe_dump(MANIFEST))
    assert main(["render", "-f", str(manifest), "--owner-uid", UID]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == render_cronjob(make(), owner_uid=UID)


def test_render_command_names_the_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tablerefresh.cli import main

    document = copy.deepcopy(MANIFEST)
    document["spec"]["strategy"] = "Upsert"
    manifest = tmp_path / "tr.yaml"
    manifest.write_text(yaml.safe_dump(document))
    assert main(["render", "-f", str(manifest)]) == 2
    assert "spec.strategy" in capsys.readouterr().err


# Whose CronJob it is.


def test_only_a_cronjob_this_tablerefresh_controls_by_uid_is_ours() -> None:
    """A name can be chosen by anyone who may create a TableRefresh: ownership is the uid."""

    def controlled_by(kind: str, name: str, uid: str) -> dict[str, Any]:
        ref = {"kind": kind, "name": name, "uid": uid, "controller": True}
        return {"metadata": {"name": "t", "ownerReferences": [ref]}}

    assert foreign_owner(None, "t", UID) is None
    assert foreign_owner(controlled_by("TableRefresh", "t", UID), "t", UID) is None
    assert "Deployment x" in (foreign_owner(controlled_by("Deployment", "x", "d-uid"), "t", UID) or "")
    earlier = foreign_owner(controlled_by("TableRefresh", "t", "an-earlier-uid"), "t", UID) or ""
    assert "earlier TableRefresh t" in earlier
    assert foreign_owner({"metadata": {"name": "t"}}, "t", UID) is not None
    # Our labels and field manager without our controller reference: someone else's (it may be a copy).
    stripped = {
        "metadata": {
            "name": "t",
            "labels": {"app.kubernetes.io/managed-by": "tablerefresh"},
            "managedFields": [{"manager": "tablerefresh"}],
        }
    }
    assert "not controlled by this TableRefresh" in (foreign_owner(stripped, "t", UID) or "")


# The schedule.


def test_schedule_period_is_the_longest_gap() -> None:
    assert schedule_period_seconds("*/15 * * * *") == 900
    assert schedule_period_seconds("0 9 * * 1-5") == 72 * 3600  # Friday to Monday
    assert schedule_period_seconds("@daily", "Europe/Berlin") == 24 * 3600
    assert schedule_period_seconds("0 2 * * *", "Not/AZone") == 24 * 3600


def test_schedule_period_of_every_form_kubernetes_accepts() -> None:
    assert schedule_period_seconds("? * * * *") == 60
    assert schedule_period_seconds("+5 * * * *") == 3600
    assert schedule_period_seconds("@every 90m") == 90 * 60
    assert schedule_period_seconds("@every 500ms") == 1  # robfig runs it every second
    assert schedule_period_seconds("0 9 * * MON-fri") == 72 * 3600
    assert schedule_period_seconds("0 0 1-31 * 1") == 24 * 3600  # no star: a day matches either field
    assert schedule_period_seconds("0 0 29 2 *") == (datetime(2032, 2, 29) - datetime(2028, 2, 29)).total_seconds()
    assert schedule_period_seconds("0 0 30 2 *") is None  # valid, never fires: no period
    assert schedule_period_seconds(", * * * *") is None
