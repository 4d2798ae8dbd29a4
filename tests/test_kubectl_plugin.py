"""``kubectl tablerefresh`` (issue 13): the plugin, run by a real kubectl against the test control plane,
with nothing but a kubeconfig, on a TableRefresh the real operator and the Job runner keep: status
of a healthy and of a stale table, run-now, history, suspend and resume, each also with ``-o json``."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tablerefresh.plugin import history, summary, words
from tests.e2e_env import (  # noqa: F401  (fixtures)
    BIN,
    DB,
    NAME,
    TABLE,
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
)
from tests.harness.kube import Kube, condition, wait_for
from tests.harness.operators import OperatorProcess
from tests.jobrunner.runner import JobRunner

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def kubectl_binary(controlplane: Any) -> str:
    bin_dir = getattr(controlplane, "bin_dir", None)
    found = str(Path(bin_dir) / "bin" / "kubectl") if bin_dir else shutil.which("kubectl")
    assert found, "no kubectl"
    return found


def plugin(controlplane: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``kubectl tablerefresh ARGS`` with only PATH (kubectl finds the plugin there), HOME and KUBECONFIG."""
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(Path(controlplane.kubeconfig).parent),
        "KUBECONFIG": str(controlplane.kubeconfig),
    }
    out = subprocess.run(
        [kubectl_binary(controlplane), "tablerefresh", *args], env=env, capture_output=True, text=True, timeout=60
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


# Pure: what status says, from an object.


def tablerefresh(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "orders"},
        "spec": manifest("shop", "clickhouse://clickhouse.shop:8123", "orders", schedule="0 */6 * * *")["spec"],
        "status": status,
    }


def test_status_of_a_healthy_table_in_a_few_lines() -> None:
    tr = tablerefresh(
        conditions=[{"type": "Ready", "status": "True", "reason": "Healthy", "message": "all conditions are True"}],
        health={
            "staleHours": 0.2,
            "sliceRows": 1200,
            "sliceDuplicates": 0,
            "tableDuplicates": 0,
            "checkedAt": stamp(NOW - timedelta(seconds=20)),
        },
        lastRun={
            "jobName": "orders-29000000",
            "outcome": "Succeeded",
            "completionTime": stamp(NOW - timedelta(hours=2)),
            "durationSeconds": 42.5,
            "rowsBefore": 1000,
            "rowsAfter": 1200,
        },
    )
    s = summary.summarize(tr, NOW)
    assert s["healthy"] and s["nextRun"] == "2026-01-02T18:00:00Z" and s["problems"] == []
    lines = summary.describe(s, NOW)
    assert lines[1] == "Ready:        True  Healthy: all conditions are True"
    assert lines[2] == "Staleness:    0.2h (threshold 1.0h)  ok"
    assert lines[3] == "Duplicates:   0 (threshold 0)  ok"
    assert "Job orders-29000000, took 42s, 1,000 -> 1,200 rows" in lines[6]
    assert lines[-1] == "Next run:     in 6h00m (0 */6 * * * UTC)"


def test_status_shows_the_last_runs_peak_memory_and_its_share_of_the_limit() -> None:
    run = {
        "jobName": "orders-29000000",
        "outcome": "Succeeded",
        "completionTime": stamp(NOW - timedelta(hours=2)),
        "peakMemoryBytes": 1_503_238_554,  # 1.4 GiB
    }
    tr = tablerefresh(lastRun=run)
    tr["spec"]["clickhouse"]["settings"] = {"max_memory_usage": "2684354560"}  # 2.5 GiB
    s = summary.summarize(tr, NOW)
    assert s["memoryLimitBytes"] == 2_684_354_560 and s["lastRun"]["peakMemoryBytes"] == 1_503_238_554  # -o json
    lines = summary.describe(s, NOW)
    assert lines[lines.index(next(x for x in lines if x.startswith("Last run:"))) + 1] == (
        "Peak memory:  1.4 GiB (56% of max_memory_usage 2.5 GiB)"
    )
    # No limit in the manifest (0 is ClickHouse's "unlimited"): the peak alone.
    tr["spec"]["clickhouse"]["settings"] = {"max_memory_usage": "0"}
    assert "Peak memory:  1.4 GiB" in summary.describe(summary.summarize(tr, NOW), NOW)
    # A limit written as a YAML number, in a spec the model refuses (settings are strings): still read.
    tr["spec"]["clickhouse"]["settings"] = {"max_memory_usage": 2_147_483_648}
    assert "Peak memory:  1.4 GiB (70% of max_memory_usage 2 GiB)" in summary.describe(summary.summarize(tr, NOW), NOW)
    # A run whose engine did not report its memory: no line, rather than a made-up figure.
    tr["status"]["lastRun"] = {k: v for k, v in run.items() if k != "peakMemoryBytes"}
    assert not any(x.startswith("Peak memory:") for x in summary.describe(summary.summarize(tr, NOW), NOW))


def test_sizes_read_as_a_person_reads_them() -> None:
    assert [words.size(v) for v in (None, 900, 1536, 512 << 20, 8 << 30, 1_503_238_554)] == [
        "-",
        "900 B",
        "1.5 KiB",
        "512 MiB",
        "8 GiB",
        "1.4 GiB",
    ]


def test_status_of_a_stale_table_says_why() -> None:
    stale = {
        "type": "Fresh",
        "status": "False",
        "reason": "DataStale",
        "message": "newest row 48.0h old, over maxStaleHours 1",
    }
    dups = {"type": "DuplicateFree", "status": "False", "reason": "DuplicatesDetected", "message": "5 duplicate keys"}
    tr = tablerefresh(
        conditions=[{**stale, "type": "Ready"}, stale, dups],
        health={
            "staleHours": 48.0,
            "sliceRows": 0,
            "sliceDuplicates": 0,
            "tableDuplicates": 5,
            "checkedAt": stamp(NOW),
        },
    )
    lines = summary.describe(summary.summarize(tr, NOW), NOW)
    assert lines[1] == "Ready:        False  DataStale: newest row 48.0h old, over maxStaleHours 1"
    assert lines[2].endswith("over") and lines[3] == "Duplicates:   5 (threshold 0)  over"
    assert "Not healthy because:" in lines
    assert lines[-1] == "  DuplicateFree=False  DuplicatesDetected: 5 duplicate keys"  # Ready says the first


def test_status_after_a_failed_audit_names_the_evidence_and_the_recent_runs() -> None:
    error = "audit no-negative-tokens: 12 failing row(s), at most 0 allowed; db.orders was not changed"
    failed = {"type": "LastRunSucceeded", "status": "False", "reason": "AuditFailed", "message": error}
    tr = tablerefresh(
        conditions=[{**failed, "type": "Ready"}, failed],
        health={"staleHours": 0.2, "sliceRows": 1200, "sliceDuplicates": 0, "tableDuplicates": 0},
        lastRun={
            "jobName": "orders-29000002",
            "outcome": "Aborted",
            "reason": "AuditFailed",
            "error": error,
            "completionTime": stamp(NOW - timedelta(minutes=5)),
            "durationSeconds": 8.0,
            "evidenceTable": "_tablerefresh_failed_0a1b_20260101T120000_orders-29000002",
        },
        recentRuns=[
            {
                "id": "orders-29000002",
                "outcome": "Aborted",
                "reason": "AuditFailed",
                "finished": stamp(NOW - timedelta(minutes=5)),
            },
            {"id": "orders-29000001", "outcome": "Succeeded", "finished": stamp(NOW - timedelta(hours=6))},
        ],
        lastSuccessfulRunTime=stamp(NOW - timedelta(hours=6)),
        lastFailureTime=stamp(NOW - timedelta(minutes=5)),
    )
    lines = summary.describe(summary.summarize(tr, NOW), NOW)
    text = "\n".join(lines)
    assert "AuditFailed: audit no-negative-tokens: 12 failing row(s)" in text
    assert "what it would have published: table _tablerefresh_failed_0a1b_20260101T120000_orders-29000002" in text
    assert "Recent runs:  Aborted 5m00s ago (AuditFailed), Succeeded 6h00m ago" in text, text


def test_history_reads_jobs_as_the_operator_does_and_prefers_recent_runs() -> None:
    def job(name: str, minute: int, ended: str | None) -> dict[str, Any]:
        status: dict[str, Any] = {"startTime": stamp(NOW + timedelta(minutes=minute))}
        if ended:
            status["conditions"] = [
                {
                    "type": ended,
                    "status": "True",
                    "lastTransitionTime": stamp(NOW + timedelta(minutes=minute, seconds=30)),
                    "reason": "BackoffLimitExceeded" if ended == "Failed" else "",
                }
            ]
            if ended == "Complete":
                status["completionTime"] = stamp(NOW + timedelta(minutes=minute, seconds=30))
        return {"metadata": {"name": name}, "status": status}

    pod = {
        "metadata": {"labels": {"batch.kubernetes.io/job-name": "b"}, "creationTimestamp": stamp(NOW)},
        "status": {
            "containerStatuses": [
                {"name": "refresh", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ]
        },
    }
    tr = {
        "status": {"lastRun": {"jobName": "c", "outcome": "Succeeded", "startTime": stamp(NOW + timedelta(minutes=2))}}
    }
    rows = history.runs(
        tr, [job("c", 2, "Complete"), job("a", 0, "Complete"), job("b", 1, "Failed"), job("d", 3, None)], [pod]
    )
    assert [(r["jobName"], r["outcome"]) for r in rows] == [
        ("a", "Succeeded"),
        ("b", "Failed"),
        ("c", "Succeeded"),
        ("d", "Running"),
    ]
    assert rows[1]["reason"] == "OOMKilled"
    recent = {"status": {"recentRuns": [{"jobName": "a", "outcome": "Aborted", "startTime": stamp(NOW)}]}}
    assert history.runs(recent, [], [])[0]["outcome"] == "Aborted"  # kept by the operator, its Job gone


# On the cluster.


@pytest.mark.kube
@pytest.mark.slow
def test_the_plugin_on_a_live_tablerefresh(
    api: Kube,
    namespace: str,
    crd: None,
    target: Target,
    operator_process: OperatorProcess,
    runner: JobRunner,
    controlplane: Any,
) -> None:
    create_tables(target)
    deploy(api, namespace, target, schedule="0 */6 * * *")

    created = plugin(controlplane, "run-now", NAME, "-n", namespace, "-o", "json")
    job = json.loads(created.stdout)["job"]
    wait_for("the run recorded", lambda: last_run(api, namespace, job), timeout=120)
    wait_for("Ready=True", lambda: condition(api.tr(namespace, NAME), "Ready").get("status") == "True", timeout=60)

    healthy = plugin(controlplane, "status", NAME, "-n", namespace).stdout
    print(f"\n$ kubectl tablerefresh status {NAME}\n{healthy}")
    assert f"{namespace}/{NAME}  table {DB}.{TABLE}" in healthy
    assert "Ready:        True" in healthy and "(threshold 1.0h)  ok" in healthy
    assert "Succeeded" in healthy and "50 -> 150 rows" in healthy and "Next run:     in " in healthy
    as_json = json.loads(plugin(controlplane, "status", NAME, "-n", namespace, "-o", "json").stdout)
    assert as_json["healthy"] is True and as_json["sliceRows"] == 100 and as_json["lastRun"]["jobName"] == job

    runs = plugin(controlplane, "history", NAME, "-n", namespace).stdout
    print(f"$ kubectl tablerefresh history {NAME}\n{runs}")
    assert job in runs and "Succeeded" in runs and "50 -> 150" in runs
    (row,) = json.loads(plugin(controlplane, "history", NAME, "-n", namespace, "-o", "json").stdout)
    assert (row["jobName"], row["outcome"], row["rowsAfter"]) == (job, "Succeeded", 150)

    # Stale: only the rows three days old are left.
    sql(
        target,
        f"ALTER TABLE {DB}.{TABLE} DELETE WHERE entry_time > now() - INTERVAL 1 DAY SETTINGS mutations_sync = 1",
    )
    wait_for("Fresh=False", lambda: condition(api.tr(namespace, NAME), "Fresh").get("status") == "False", timeout=60)
    stale = plugin(controlplane, "status", NAME, "-n", namespace).stdout
    print(f"$ kubectl tablerefresh status {NAME}\n{stale}")
    assert "Ready:        False  DataStale:" in stale and "(threshold 1.0h)  over" in stale

    listed = plugin(controlplane, "status", "-A").stdout.splitlines()
    print("$ kubectl tablerefresh status -A\n" + "\n".join(listed))
    assert listed[0].split()[:4] == ["NAMESPACE", "NAME", "READY", "REASON"]
    assert any(line.split()[:4] == [namespace, NAME, "False", "DataStale"] for line in listed[1:])
    in_namespace = json.loads(plugin(controlplane, "status", "-n", namespace, "-o", "json").stdout)
    assert [s["name"] for s in in_namespace] == [NAME]

    assert json.loads(plugin(controlplane, "suspend", NAME, "-n", namespace, "-o", "json").stdout)["suspend"] is True
    wait_for(
        "the CronJob suspended",
        lambda: api.batch.read_namespaced_cron_job(NAME, namespace).spec.suspend is True,
        timeout=30,
    )
    assert "Next run:     suspended" in plugin(controlplane, "status", NAME, "-n", namespace).stdout
    assert plugin(controlplane, "resume", NAME, "-n", namespace).stdout.strip().endswith("resumed")
    wait_for(
        "the CronJob resumed",
        lambda: api.batch.read_namespaced_cron_job(NAME, namespace).spec.suspend is False,
        timeout=30,
    )

    missing = plugin(controlplane, "status", "nope", "-n", namespace, check=False)
    assert missing.returncode == 1 and 'TableRefresh "nope"' in missing.stderr and "not found" in missing.stderr
