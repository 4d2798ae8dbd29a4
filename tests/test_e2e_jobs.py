"""End to end, as deployed (issue 13): TableRefresh -> CronJob -> Job -> Pod running the rendered
command with the manifest and the Secret's credentials -> termination message -> status.lastRun ->
/metrics, against a ClickHouse server over ``clickhouse://`` (the engine served over HTTP, started
for the module) as the Secret's password user.

The Job runner (``tests/jobrunner``) stands in for the CronJob and Job controllers and the kubelet;
the operator is the real ``tablerefresh operator`` process; every refresh is the real
``tablerefresh refresh`` started from the Pod the controller's template made.
"""

from __future__ import annotations

import pytest

from tests.e2e_env import (  # noqa: F401  (fixtures)
    DB,
    INSTALLED,
    NAME,
    PASSWORD,
    SOURCE,
    TABLE,
    USER,
    Target,
    clock,
    create_tables,
    credentials,
    deploy,
    e2e_server,
    last_run,
    manifest,
    runner,
    sql,
    target,
    tick,
)
from tests.harness.kube import Kube, condition, wait_for
from tests.harness.operators import OperatorProcess
from tests.jobrunner.cron import Clock
from tests.jobrunner.runner import JobRunner

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def test_the_scheduled_job_runs_the_real_refresh_and_last_run_has_its_figures(
    api: Kube,
    namespace: str,
    crd: None,
    target: Target,
    operator_process: OperatorProcess,
    runner: JobRunner,
    clock: Clock,
) -> None:
    create_tables(target, source_rows=100, target_old_rows=50)
    deploy(api, namespace, target)

    tick(runner, clock)
    (job,) = wait_for("the scheduled Job", lambda: api.jobs(namespace), timeout=30)
    name = job["metadata"]["name"]
    assert job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    run = wait_for("status.lastRun", lambda: last_run(api, namespace, name), timeout=120)

    assert run["outcome"] == "Succeeded", run
    # The run's own figures: 50 old rows kept outside the slice, 100 brought in.
    assert (run["rowsBefore"], run["rowsAfter"]) == (50, 150), run
    assert (run["sliceRowsBefore"], run["sliceRowsAfter"]) == (0, 100), run
    assert run["duplicates"] == 0 and run["durationSeconds"] > 0
    assert run["runId"] == name  # TABLEREFRESH_RUN_ID from the Pod's job-name label (a fieldRef)
    assert sql(target, f"SELECT count() FROM {DB}.{TABLE}") == [[150]]

    # The Pod ran the rendered command, with the manifest and the Secret's credentials in its env.
    (pod_run,) = runner.runs_of(namespace, name)
    assert pod_run.argv is not None and pod_run.environment is not None
    assert pod_run.argv[:2] == ["tablerefresh", "refresh"] and "--summary-file" in pod_run.argv
    assert pod_run.environment["CLICKHOUSE_USER"] == USER
    assert pod_run.environment["CLICKHOUSE_PASSWORD"] == PASSWORD
    assert f'"table":"{TABLE}"' in pod_run.environment["TABLEREFRESH_MANIFEST"]
    (pod,) = api.pods(namespace)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Succeeded" and terminated["exitCode"] == 0
    assert '"outcome":"Succeeded"' in terminated["message"]  # the summary, from the termination message
    job = next(j for j in api.jobs(namespace) if j["metadata"]["name"] == name)
    assert job["status"]["succeeded"] == 1 and job["status"]["completionTime"]
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]

    tr = api.tr(namespace, NAME)
    assert condition(tr, "LastRunSucceeded")["status"] == "True"
    assert tr["status"]["lastSuccessfulRunTime"] == job["status"]["completionTime"]
    assert tr["status"]["active"] == []
    # The CronJob's lastScheduleTime (the CronJob controller's) reaches the TableRefresh's status.
    scheduled = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    wait_for(
        "status.lastScheduleTime",
        lambda: api.tr(namespace, NAME)["status"].get("lastScheduleTime") == scheduled,
        timeout=30,
    )
    wait_for("Ready=True", lambda: condition(api.tr(namespace, NAME), "Ready").get("status") == "True", timeout=30)
    # /metrics, scraped from the operator process.
    # /metrics follows the status write (the counter moves once the write is done).
    wait_for("the run counted", lambda: operator_process.sample("tablerefresh_runs_total", result="succeeded") == 1)
    assert operator_process.sample("tablerefresh_run_duration_seconds") == pytest.approx(run["durationSeconds"])
    wait_for("the slice's rows in /metrics", lambda: operator_process.sample("tablerefresh_slice_rows") == 100)


def test_a_broken_source_query_fails_with_its_error_an_event_and_ready_false(
    api: Kube,
    namespace: str,
    crd: None,
    target: Target,
    operator_process: OperatorProcess,
    runner: JobRunner,
    clock: Clock,
) -> None:
    create_tables(target)
    broken = f"SELECT id, entry_time, v FROM {DB}.no_such_table"
    deploy(api, namespace, target, source={"query": broken})

    tick(runner, clock)
    (job,) = wait_for("the scheduled Job", lambda: api.jobs(namespace), timeout=30)
    run = wait_for("status.lastRun", lambda: last_run(api, namespace, job["metadata"]["name"]), timeout=120)

    assert run["outcome"] == "Failed", run
    assert "no_such_table" in run["error"], run
    assert run["reason"] == "InvalidSpec", run
    (pod,) = api.pods(namespace)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Failed" and terminated["exitCode"] == 2
    job = next(j for j in api.jobs(namespace) if j["metadata"]["name"] == job["metadata"]["name"])
    assert job["status"]["failed"] == 1 and "completionTime" not in job["status"]
    assert [c["reason"] for c in job["status"]["conditions"]] == ["BackoffLimitExceeded"] * 2

    tr = api.tr(namespace, NAME)
    failed = condition(tr, "LastRunSucceeded")
    assert (failed["status"], failed["reason"]) == ("False", "InvalidSpec") and "no_such_table" in failed["message"]
    assert condition(tr, "Ready")["status"] == "False"
    (event,) = wait_for("the RefreshFailed Event", lambda: api.events(namespace, "RefreshFailed"), timeout=30)
    assert event["type"] == "Warning" and "no_such_table" in event["message"]
    wait_for("the failure counted", lambda: operator_process.sample("tablerefresh_runs_total", result="failed") == 1)
    assert operator_process.sample("tablerefresh_runs_total", result="succeeded") == 0
    # The target is as it was.
    assert sql(target, f"SELECT count() FROM {DB}.{TABLE}") == [[50]]


def test_run_now_and_the_annotation_each_run_exactly_one_job(
    api: Kube,
    namespace: str,
    crd: None,
    target: Target,
    operator_process: OperatorProcess,
    runner: JobRunner,
    controlplane: object,
) -> None:
    import subprocess

    create_tables(target)
    # A schedule that is never due here: only run-now starts Jobs.
    deploy(api, namespace, target, schedule="0 0 1 1 *")

    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(controlplane.kubeconfig)}  # type: ignore[attr-defined]
    out = subprocess.run(
        [INSTALLED, "run-now", f"{namespace}/{NAME}"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    (job,) = wait_for("the run-now Job", lambda: api.jobs(namespace), timeout=30)
    first = job["metadata"]["name"]
    wait_for("its run recorded", lambda: last_run(api, namespace, first), timeout=120)

    api.custom.patch_namespaced_custom_object(
        "tablerefresh.dev",
        "v1alpha1",
        namespace,
        "tablerefreshes",
        NAME,
        {"metadata": {"annotations": {"tablerefresh.dev/run-now": "token-1"}}},
    )
    second = wait_for(
        "the annotation's Job", lambda: [j for j in api.jobs(namespace) if j["metadata"]["name"] != first], timeout=30
    )[0]["metadata"]["name"]
    run = wait_for("its run recorded", lambda: last_run(api, namespace, second), timeout=120)
    assert run["outcome"] == "Succeeded"
    # A resync of the object after its run, and a runner pass after that: nothing else starts.
    resyncs = operator_process.reconciles("resync")
    wait_for("a resync", lambda: operator_process.reconciles("resync") > resyncs, timeout=30)
    runner.look()
    jobs = sorted(j["metadata"]["name"] for j in api.jobs(namespace))
    assert jobs == sorted([first, second])
    assert len(api.pods(namespace)) == 2  # one Pod per Job: each ran once
    assert api.tr(namespace, NAME)["status"]["runNow"]["jobName"] == second


def test_a_suspended_tablerefresh_runs_no_job(
    api: Kube,
    namespace: str,
    crd: None,
    target: Target,
    operator_process: OperatorProcess,
    runner: JobRunner,
    clock: Clock,
) -> None:
    create_tables(target)
    cronjob = deploy(api, namespace, target, suspend=True)
    assert cronjob["spec"]["suspend"] is True
    for _ in range(3):  # three minutes of `* * * * *`, each looked at by the runner
        tick(runner, clock)
        runner.look()
    assert api.jobs(namespace) == [] and api.pods(namespace) == []
    assert "lastRun" not in (api.tr(namespace, NAME).get("status") or {})


def test_a_secret_without_the_password_key_never_starts_the_refresh(
    api: Kube,
    namespace: str,
    crd: None,
    target: Target,
    operator_process: OperatorProcess,
    runner: JobRunner,
    clock: Clock,
) -> None:
    """The kubelet cannot build the container's env: the Pod waits (CreateContainerConfigError) until the
    Job's deadline, and status.lastRun says why, with the Kubernetes reason."""
    create_tables(target)
    credentials(api, namespace, username=USER)  # no password key
    api.apply(manifest(namespace, target.url, activeDeadlineSeconds=3))
    wait_for("the CronJob", lambda: api.batch.list_namespaced_cron_job(namespace).items, timeout=30)

    tick(runner, clock)
    (job,) = wait_for("the scheduled Job", lambda: api.jobs(namespace), timeout=30)
    run = wait_for("status.lastRun", lambda: last_run(api, namespace, job["metadata"]["name"]), timeout=60)

    assert (run["outcome"], run["reason"]) == ("Failed", "CreateContainerConfigError"), run
    assert "never started" in run["error"] and "password" in run["error"] and "DeadlineExceeded" in run["error"]
    (pod,) = api.pods(namespace)
    assert pod["status"]["phase"] == "Pending"
    assert runner.runs_of(namespace, job["metadata"]["name"])[0].argv is None  # no process was started
    assert sql(target, f"SELECT count() FROM {DB}.{TABLE}") == [[50]]
