"""The CRD generated from the models: committed file in sync, structural, defaults and rules right."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tablerefresh.controller.crd import CRD_NAME, build_crd, crd_yaml
from tablerefresh.spec import TableRefreshSpec

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "crds" / "tablerefresh.dev_tablerefreshes.yaml"

MINIMAL_SPEC: dict[str, Any] = {
    "schedule": "15 */6 * * *",
    "clickhouse": {"url": "clickhouse://clickhouse:8123", "credentialsSecret": {"name": "ch"}},
    "target": {"table": "trades"},
    "slice": {"predicate": "ts >= {window_start:DateTime}"},
    "source": {"query": "SELECT * FROM raw_trades"},
    "uniqueKey": ["id"],
    "freshnessColumn": "ts",
}


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")


def apply_defaults(value: Any, node: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it: fill absent fields, recurse into present ones."""
    if isinstance(value, dict) and "properties" in node:
        out = dict(value)
        for name, sub in node["properties"].items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(out[name], sub)
        return out
    if isinstance(value, list) and "items" in node:
        return [apply_defaults(v, node["items"]) for v in value]
    return value


def test_committed_crd_matches_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tablerefresh", "crd"], check=True, capture_output=True, text=True
    ).stdout
    assert out == crd_yaml()
    assert CRD_FILE.read_text() == out, (
        "crds/ is stale: run `tablerefresh crd -o crds/tablerefresh.dev_tablerefreshes.yaml`"
    )


def test_names_scope_and_subresource() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == CRD_NAME == "tablerefreshes.tablerefresh.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("TableRefresh", "tablerefreshes", ["tr"])
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["storage"] and version["served"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    default_columns = [c["name"] for c in columns if not c.get("priority")]
    assert default_columns == [
        *("Schedule", "Suspend", "Ready", "Stale(h)", "Dups"),
        *("Last Run", "Last Success", "Last Failure", "Age"),
    ]


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs"} & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert not isinstance(node.get("additionalProperties"), bool), path


def test_only_kopf_progress_preserves_unknown_fields() -> None:
    preserving = [p for p, n in _walk(_schema()) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserving == [".status.kopf.progress"]


def test_status_declares_every_field_the_controller_and_health_check_write() -> None:
    status = _schema()["properties"]["status"]["properties"]
    assert {
        "observedGeneration",
        "conditions",
        "cronJobRef",
        "lastScheduleTime",
        "lastSuccessfulRunTime",
        "lastFailureTime",
        "recentRuns",
        "active",
        "health",
        "lastRun",
        "kopf",
    } <= status.keys()
    assert set(status["health"]["properties"]) == {
        "checkedAt",
        "totalRows",
        "sliceRows",
        "distinctKeys",
        "newestFreshness",
        "staleHours",
        "sliceDuplicates",
        "tableDuplicates",
        "pendingMutations",
        "oldestMutationAgeSeconds",
        "audits",
        "error",
    }
    assert set(status["lastRun"]["properties"]) == {
        "jobName",
        "runId",
        "startTime",
        "completionTime",
        "durationSeconds",
        "outcome",
        "reason",
        "rowsBefore",
        "rowsAfter",
        "sliceRowsBefore",
        "sliceRowsAfter",
        "duplicates",
        "kind",
        "changedKeys",
        "sampleDifferences",
        "peakMemoryBytes",
        "readRows",
        "readBytes",
        "writtenRows",
        "writtenBytes",
        "audits",
        "evidenceTable",
        "error",
    }
    assert set(status["kopf"]["properties"]) == {"progress", "dummy", "digest", "diffbase"}
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    condition = conditions["items"]
    assert set(condition["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert condition["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_spec_defaults_from_the_model() -> None:
    spec = _schema()["properties"]["spec"]
    props = spec["properties"]
    assert props["timeZone"]["default"] == "UTC"
    assert props["concurrencyPolicy"] == {"enum": ["Forbid", "Replace"], "type": "string", "default": "Forbid"}
    assert props["startingDeadlineSeconds"]["default"] == 300
    assert props["thresholds"]["default"] == {}
    assert props["thresholds"]["properties"]["maxStaleHours"]["default"] == 8
    assert props["thresholds"]["properties"]["maxDuplicates"]["default"] == 100
    assert props["clickhouse"]["properties"]["credentialsSecret"]["properties"]["usernameKey"]["default"] == "username"
    assert "default" not in props["activeDeadlineSeconds"]  # optional: omitted, not null
    assert set(spec["required"]) == {
        "schedule",
        "clickhouse",
        "target",
        "slice",
        "source",
        "uniqueKey",
        "freshnessColumn",
    }


def test_server_defaulting_gives_what_the_model_gives() -> None:
    """A manifest defaulted by the schema reads exactly as the model reads the bare manifest."""
    defaulted = apply_defaults(MINIMAL_SPEC, _schema()["properties"]["spec"])
    assert defaulted != MINIMAL_SPEC
    assert TableRefreshSpec.model_validate(defaulted) == TableRefreshSpec.model_validate(MINIMAL_SPEC)
    assert defaulted["job"]["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }


def test_bounds_and_enums() -> None:
    props = _schema()["properties"]["spec"]["properties"]
    stale = props["thresholds"]["properties"]["maxStaleHours"]
    assert (stale["minimum"], stale["exclusiveMinimum"]) == (0, True)
    assert props["strategy"]["enum"] == ["ReplacePartitions", "Exchange", "DeleteInsert"]
    assert props["uniqueKey"]["x-kubernetes-list-type"] == "set"
    assert props["target"]["properties"]["table"]["pattern"].startswith("^[A-Za-z_]")


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        (("schedule",), "self.matches('^(?:@(?:yearly"),
        (("schedule",), "!self.contains('TZ')"),
        (("source",), "has(self.query) != has(self.configMapKeyRef)"),
        (("window",), "self.matches('[1-9]')"),
        (("healthCheck", "interval"), "self.matches('[1-9]')"),
        (("clickhouse", "settings"), "k.matches("),
    ],
)
def test_cel_rules_where_patterns_cannot_say_it(path: tuple[str, ...], needle: str) -> None:
    node = _schema()["properties"]["spec"]
    for name in path:
        node = node["properties"][name]
    assert any(needle in r["rule"] for r in node["x-kubernetes-validations"])


def test_crd_validates_against_kubernetes_schema() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), "1.36.0", strict=True)
