"""The operator against the real API server of the test control controlplane (issue 4's "Must show").

Each test gets its own namespace and its own operator process watching only that namespace
(``python -m tablerefresh operator --namespace NS``), so a test can stop and restart it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import watch

from tablerefresh.controller.policy.cronjob import cronjob_name, render_cronjob
from tablerefresh.spec import load_manifest, parse_manifest
from tests.controller_env import EXAMPLE, contains, create_secret, example, kopf_done, observed
from tests.harness.kube import (
    GROUP,
    PLURAL,
    VERSION,
    Kube,
    condition,
    wait_for,
)
from tests.harness.operators import OperatorProcess
from tests.invalid_manifests import CASES, Invalid

pytestmark = pytest.mark.kube


def test_example_creates_its_cronjob_and_status_catches_up(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)
    # How fast is bench/controller.py's question (apply-to-CronJob latency), never a timed assert here.
    cronjob = wait_for("the CronJob", lambda: api.cronjob(namespace, name), timeout=30)

    tr = wait_for("status to catch up", lambda: observed(api, namespace, name))
    assert tr["status"]["observedGeneration"] == tr["metadata"]["generation"]
    desired = render_cronjob(parse_manifest(tr), owner_uid=tr["metadata"]["uid"])
    assert contains(cronjob, desired) == []
    # The reconciler's own condition: Ready also carries the health check, which cannot reach the
    # example's ClickHouse from here (tests/test_health_kube.py has a reachable one).
    assert condition(tr, "CronJobReady")["status"] == "True", tr["status"]  # type: ignore[index]
    assert tr["status"]["cronJobRef"]["name"] == name
    assert tr["status"]["cronJobRef"]["uid"] == cronjob["metadata"]["uid"]


def test_kubectl_get_tr_shows_the_columns(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    api.apply(document)
    name = document["metadata"]["name"]
    # Once the first health check has run (it cannot reach the example's ClickHouse from here), the
    # columns show the object as it stays; tests/test_runs_kube.py fills them all from a real check and run.
    tr = wait_for(
        "the first check", lambda: (t := observed(api, namespace, name)) and (t["status"].get("health") and t)
    )
    ready = condition(tr, "Ready")
    assert ready is not None
    out = controlplane.kubectl("get", "tr", "-n", namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == [
        *("NAME", "SCHEDULE", "SUSPEND", "READY", "STALE(H)", "DUPS"),
        *("LAST", "RUN", "LAST", "SUCCESS", "LAST", "FAILURE", "AGE"),
    ]
    assert row.split()[:8] == [name, "0", "*/6", "*", "*", "*", "false", ready["status"]]
    wide = controlplane.kubectl("get", "tablerefreshes", "-n", namespace, "-o", "wide").stdout
    assert "REASON" in wide.splitlines()[0] and ready["reason"] in wide


def test_a_hand_edited_cronjob_is_reverted_and_a_deleted_one_recreated(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)
    first = wait_for("the CronJob", lambda: api.cronjob(namespace, name))

    controlplane.kubectl(
        "patch",
        "cronjob",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"schedule":"* * * * *","suspend":true}}',
    )
    wait_for(
        "the edit to be reverted",
        lambda: (
            (cj := api.cronjob(namespace, name))
            and cj["spec"]["schedule"] == "0 */6 * * *"
            and not cj["spec"]["suspend"]
        ),
    )

    controlplane.kubectl("delete", "cronjob", name, "-n", namespace, "--wait=false")
    again = wait_for(
        "the CronJob to come back",
        lambda: (cj := api.cronjob(namespace, name)) and cj["metadata"]["uid"] != first["metadata"]["uid"] and cj,
    )
    assert again["spec"]["schedule"] == "0 */6 * * *"
    tr = wait_for(
        "cronJobRef to follow",
        lambda: (t := api.tr(namespace, name))["status"]["cronJobRef"]["uid"] == again["metadata"]["uid"] and t,
    )
    assert len(api.cronjobs(namespace)) == 1, tr


def test_schedule_change_and_suspend_reach_the_cronjob(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)
    before = wait_for("Ready", lambda: observed(api, namespace, name))

    api.apply(example(namespace, schedule="*/15 * * * *", suspend=True))
    wait_for(
        "the change on the CronJob",
        lambda: (
            (cj := api.cronjob(namespace, name)) and cj["spec"]["schedule"] == "*/15 * * * *" and cj["spec"]["suspend"]
        ),
    )
    after = wait_for("observedGeneration to move", lambda: observed(api, namespace, name))
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["status"]["observedGeneration"] == after["metadata"]["generation"]

    api.apply(example(namespace, schedule="*/15 * * * *", suspend=False))
    wait_for("resume", lambda: (cj := api.cronjob(namespace, name)) and cj["spec"]["suspend"] is False)


def test_cronjob_has_the_owner_reference_and_none_of_the_tablerefresh_labels(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)
    tr = wait_for("Ready", lambda: observed(api, namespace, name))
    cronjob = api.cronjob(namespace, name)
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
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)
    wait_for("Ready", lambda: observed(api, namespace, name))
    api.apply(example(namespace, suspend=True))  # an update runs kopf's update handler too
    wait_for("the update", lambda: (t := observed(api, namespace, name)) and t["metadata"]["generation"] > 1 and t)
    tr = wait_for("kopf's own bookkeeping of the update", lambda: kopf_done(api.tr(namespace, name), suspend=True))
    assert not tr["metadata"].get("annotations"), tr["metadata"].get("annotations")
    assert not tr["metadata"].get("finalizers")
    assert tr["metadata"]["labels"] == document["metadata"]["labels"]
    # Every field the controller writes is status (kopf's own bookkeeping included).
    controller_fields = [
        f for f in tr["metadata"]["managedFields"] if f["manager"] not in ("kubectl", "kubectl-client-side-apply")
    ]
    assert controller_fields and all(f.get("subresource") == "status" for f in controller_fields), controller_fields
    assert set(tr["status"]["kopf"]) == {"digest"}  # a digest of the spec, not a copy of it


def test_deleting_does_not_wait_for_the_operator(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)
    wait_for("Ready", lambda: observed(api, namespace, name))
    operator_process.stop()
    controlplane.kubectl("delete", "tr", name, "-n", namespace, "--timeout=10s")
    assert name not in controlplane.kubectl("get", "tr", "-n", namespace, "-o", "name").stdout


def test_a_restart_converges_to_exactly_one_cronjob(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)
    wait_for("Ready", lambda: observed(api, namespace, name))
    operator_process.stop()
    api.apply(example(namespace, schedule="5 4 * * *"))  # changed while the operator is down
    operator_process.start()
    wait_for(
        "the change after the restart",
        lambda: (cj := api.cronjob(namespace, name)) and cj["spec"]["schedule"] == "5 4 * * *",
    )
    tr = wait_for("status", lambda: observed(api, namespace, name))
    operator_process.stop()
    operator_process.start()  # and a restart with nothing to do
    # Its first reconcile: kopf's resume, or its update when the last stop came before kopf had
    # written down the spec it handled, or else the resync.
    wait_for("a reconcile after the restart", lambda: operator_process.reconciles() >= 1)
    wait_for(
        "kopf to handle the object after the restart", lambda: operator_process.reconciles("resume", "update") >= 1
    )
    assert operator_process.reconciles("create") == 0  # kopf knew it: no create after a restart
    cronjobs = api.cronjobs(namespace)
    assert [c["metadata"]["name"] for c in cronjobs] == [name]
    assert api.tr(namespace, name)["status"]["observedGeneration"] == tr["metadata"]["generation"]


def test_kubectl_describe_shows_the_source_query_once(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    marker = "describe_shows_this_once"
    columns = ",\n".join(f"    sum(amount_{i}) AS total_{i}" for i in range(40))
    query = f"SELECT\n    wallet,\n{columns},\n    1 AS {marker}\nFROM fills\nGROUP BY wallet"
    document = example(namespace)
    document["spec"]["source"] = {"query": query}
    name = document["metadata"]["name"]
    api.apply(document)
    wait_for("Ready", lambda: observed(api, namespace, name))
    stored = {"query": query, "batches": 1}  # as the API server stores it, with the CRD's default
    wait_for("kopf's own bookkeeping", lambda: kopf_done(api.tr(namespace, name), source=stored))
    described = controlplane.kubectl("describe", "tr", name, "-n", namespace).stdout
    assert described.count(marker) == 1, described
    assert described.count("sum(amount_39)") == 1


def test_a_missing_secret_is_ready_false_with_a_reason_and_a_warning_event(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)  # no Secret created
    tr = wait_for("Ready=False", lambda: (t := observed(api, namespace, name)) and t)
    ready = condition(tr, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert "clickhouse-credentials" in ready["message"]
    events = wait_for(
        "the Warning event",
        lambda: [e for e in api.events(namespace) if e["reason"] == "SecretNotFound" and e["type"] == "Warning"],
    )
    assert events[0]["involvedObject"]["name"] == name
    create_secret(controlplane, namespace)  # the periodic resync notices
    found = wait_for(
        "CredentialsFound=True",
        lambda: (c := condition(api.tr(namespace, name), "CredentialsFound")) and c["status"] == "True",
        timeout=15,
    )
    assert found
    ready = condition(api.tr(namespace, name), "Ready")
    assert ready is not None and ready["reason"] != "SecretNotFound"


def test_an_invalid_spec_the_schema_lets_through_is_reported(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace, mutations={"maxPending": "0m"})  # a duration, but the model wants it above zero
    name = document["metadata"]["name"]
    api.apply(document)
    tr = wait_for("Ready=False", lambda: observed(api, namespace, name))
    ready = condition(tr, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.mutations.maxPending" in ready["message"]
    assert api.cronjob(namespace, name) is None


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_api_server_rejects_invalid_manifests_naming_the_field(
    controlplane: Any, crd: None, namespace: str, case: Invalid
) -> None:
    document = copy.deepcopy(case.manifest())
    document["metadata"]["namespace"] = namespace
    result = controlplane.kubectl("create", "-f", "-", input=json.dumps(document), check=False)
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.field in result.stderr, result.stderr


def test_the_reference_example_is_accepted_as_it_is(controlplane: Any, crd: None, namespace: str) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["namespace"] = namespace
    controlplane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(document))
    load_manifest(EXAMPLE)


# kstatus: Reconciling and Stalled.


def versions_until(
    api: Kube, namespace: str, name: str, since: str, until: Callable[[dict[str, Any]], bool], timeout: int = 30
) -> list[dict[str, Any]]:
    """Every version of the object after resourceVersion ``since``, as a watch delivers them, up to the
    first for which ``until`` holds: the states in between, however briefly they lasted."""
    seen: list[dict[str, Any]] = []
    stream = watch.Watch()
    for event in stream.stream(
        api.custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
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
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    create_secret(controlplane, namespace)
    document = example(namespace)
    name = document["metadata"]["name"]
    for generation, schedule in ((1, "0 */6 * * *"), (2, "30 */6 * * *")):
        document["spec"]["schedule"] = schedule
        applied = controlplane.kubectl("apply", "--server-side", "-o", "json", "-f", "-", input=json.dumps(document))
        since = json.loads(applied.stdout)["metadata"]["resourceVersion"]
        seen = versions_until(api, namespace, name, since, caught_up(generation))
        saying = [t for t in seen if (condition(t, "Reconciling") or {}).get("status") == "True"]
        assert saying, [t.get("status") for t in seen]
        # Said before the CronJob had this generation's schedule, while observedGeneration was behind.
        first = saying[0]
        assert (condition(first, "Reconciling") or {})["observedGeneration"] == generation
        assert (first["status"].get("observedGeneration") or 0) < generation
        done = seen[-1]
        assert (condition(done, "Stalled") or {})["status"] == "False"
        assert (condition(done, "CronJobReady") or {})["status"] == "True"
        assert (api.cronjob(namespace, name) or {})["spec"]["schedule"] == schedule


def test_stalled_names_what_a_person_must_fix_and_clears_once_it_is_fixed(
    controlplane: Any, api: Kube, namespace: str, operator_process: OperatorProcess
) -> None:
    def stalled(name: str, status: str, reason: str | None = None) -> dict[str, Any] | None:
        tr = api.tr(namespace, name)
        said = condition(tr, "Stalled") or {}
        return tr if said.get("status") == status and reason in (None, said.get("reason")) else None

    # A missing Secret.
    document = example(namespace)
    name = document["metadata"]["name"]
    api.apply(document)
    tr = wait_for("Stalled=True", lambda: stalled(name, "True", "SecretNotFound"))
    assert "clickhouse-credentials" in (condition(tr, "Stalled") or {})["message"]
    assert (condition(tr, "Reconciling") or {})["status"] == "False"  # nothing left it can do alone
    create_secret(controlplane, namespace)
    wait_for("Stalled=False", lambda: stalled(name, "False"), timeout=20)  # the resync (5 s) notices

    # A CronJob of the same name that the controller does not own.
    other = example(namespace)
    other["metadata"]["name"] = "other"
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob_name("other"), "namespace": namespace},
        "spec": {
            "schedule": "0 0 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "busybox"}]}}
                }
            },
        },
    }
    api.batch.create_namespaced_cron_job(namespace, foreign)
    api.apply(other)
    tr = wait_for("Stalled=True", lambda: stalled("other", "True", "CronJobConflict"))
    assert cronjob_name("other") in (condition(tr, "Stalled") or {})["message"]
    api.batch.delete_namespaced_cron_job(cronjob_name("other"), namespace)
    wait_for("Stalled=False", lambda: stalled("other", "False"), timeout=20)

    # A spec the schema lets through and the model refuses.
    api.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "other", {"spec": {"mutations": {"maxPending": "0m"}}}
    )
    tr = wait_for("Stalled=True", lambda: stalled("other", "True", "InvalidSpec"))
    assert "spec.mutations.maxPending" in (condition(tr, "Stalled") or {})["message"]
