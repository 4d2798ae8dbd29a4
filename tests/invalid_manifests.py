"""Invalid TableRefresh manifests, each a different mistake, with the field the rejection must name:
the model rejects them (test_crd_invalid.py), and so does the API server (test_controller_kube.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

VALID: dict[str, Any] = {
    "apiVersion": "tablerefresh.dev/v1alpha1",
    "kind": "TableRefresh",
    "metadata": {"name": "bad"},
    "spec": {
        "schedule": "15 */6 * * *",
        "clickhouse": {"url": "clickhouse://clickhouse:8123", "credentialsSecret": {"name": "ch"}},
        "target": {"table": "trades"},
        "slice": {"predicate": "ts >= {window_start:DateTime}"},
        "source": {"query": "SELECT * FROM raw"},
        "uniqueKey": ["id"],
        "freshnessColumn": "ts",
    },
}


@dataclass(frozen=True)
class Invalid:
    id: str
    path: tuple[str, ...]  # under spec; the last element may be set to DELETE
    value: Any
    field: str  # what the API server's message must name
    model_rejects: bool = True  # False: only the CRD (CEL, list semantics) can tell

    def manifest(self) -> dict[str, Any]:
        document = copy.deepcopy(VALID)
        node = document["spec"]
        for name in self.path[:-1]:
            node = node.setdefault(name, {})
        if self.value is DELETE:
            del node[self.path[-1]]
        else:
            node[self.path[-1]] = self.value
        return document


DELETE = object()


CASES = [
    Invalid("bad-cron", ("schedule",), "every six hours", "spec.schedule"),
    Invalid("unknown-strategy", ("strategy",), "Upsert", "spec.strategy"),
    Invalid("negative-threshold", ("thresholds", "maxDuplicates"), -1, "spec.thresholds.maxDuplicates"),
    Invalid("zero-stale-hours", ("thresholds", "maxStaleHours"), 0, "spec.thresholds.maxStaleHours"),
    Invalid(
        "drop-fraction-above-one", ("thresholds", "maxSliceDropFraction"), 1.5, "spec.thresholds.maxSliceDropFraction"
    ),
    Invalid("bad-identifier", ("target", "table"), "trades; DROP TABLE x", "spec.target.table"),
    Invalid("bad-unique-key-column", ("uniqueKey",), ["id", "1st"], "spec.uniqueKey[1]"),
    Invalid(
        "missing-secret-name",
        ("clickhouse", "credentialsSecret"),
        {"usernameKey": "u"},
        "spec.clickhouse.credentialsSecret.name",
    ),
    Invalid(
        "bad-secret-name",
        ("clickhouse", "credentialsSecret"),
        {"name": "Bad_Name"},
        "spec.clickhouse.credentialsSecret.name",
    ),
    Invalid(
        "both-sources", ("source",), {"query": "SELECT 1", "configMapKeyRef": {"name": "q", "key": "k"}}, "spec.source"
    ),
    Invalid("no-source", ("source",), {}, "spec.source"),
    Invalid("batches-that-cannot-tell-apart", ("source",), {"query": "SELECT * FROM raw", "batches": 4}, "spec.source"),
    Invalid("too-many-batches", ("source", "batches"), 65, "spec.source.batches"),
    Invalid("unknown-url-scheme", ("clickhouse", "url"), "mysql://db:3306", "spec.clickhouse.url"),
    # A URL names where ClickHouse is: credentials come from the Secret, settings from spec.clickhouse.settings.
    Invalid("url-with-credentials", ("clickhouse", "url"), "clickhouse://ana:s3cret@db:8123", "spec.clickhouse.url"),
    Invalid("url-with-query", ("clickhouse", "url"), "https://db:8443/?access_token=x", "spec.clickhouse.url"),
    Invalid("url-with-password-param", ("clickhouse", "url"), "http://db:8123?password=x", "spec.clickhouse.url"),
    Invalid("predicate-calls-now", ("slice", "predicate"), "ts >= now() - 86400", "spec.slice.predicate"),
    Invalid("bad-duration", ("window",), "1 day", "spec.window"),
    Invalid("zero-window", ("window",), "0h", "spec.window"),
    Invalid("unknown-concurrency-policy", ("concurrencyPolicy",), "Allow", "spec.concurrencyPolicy"),
    Invalid("starting-deadline-zero", ("startingDeadlineSeconds",), 0, "spec.startingDeadlineSeconds"),
    Invalid("backoff-limit-too-high", ("backoffLimit",), 11, "spec.backoffLimit"),
    Invalid("missing-freshness-column", ("freshnessColumn",), DELETE, "spec.freshnessColumn"),
    Invalid("empty-unique-key", ("uniqueKey",), [], "spec.uniqueKey"),
    Invalid("repeated-unique-key", ("uniqueKey",), ["id", "id"], "spec.uniqueKey"),
    Invalid("bad-setting-name", ("clickhouse", "settings"), {"max-threads": "4"}, "spec.clickhouse.settings"),
    Invalid("unknown-pull-policy", ("job", "imagePullPolicy"), "Sometimes", "spec.job.imagePullPolicy"),
    Invalid(
        "bad-quantity",
        ("job", "resources"),
        {"limits": {"memory": "lots"}},
        "spec.job.resources.limits",
    ),
    Invalid(
        "zero-health-interval", ("healthCheck", "interval"), "0m", "spec.healthCheck.interval"
    ),
]
