"""The TableRefresh CustomResourceDefinition, generated from the pydantic models.

Field types, enums, patterns, bounds and defaults come from the models. What a pattern cannot say
(one of two fields, a duration above zero, map keys) is added here as CEL rules, so the API server
rejects the manifest and names the field before the controller ever sees it.
"""

from __future__ import annotations

from typing import Any

import yaml

from tablerefresh import schedule
from tablerefresh import spec as api
from tablerefresh.controller.openapi import Schema, structural_schema, subschema
from tablerefresh.controller.status import TableRefreshStatus

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"


def _rule(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


# Rules the model's field constraints cannot express, keyed by the path inside spec. The model
# checks the same things in Python, so the two agree.
SPEC_RULES: dict[tuple[str, ...], list[dict[str, str]]] = {
    ("schedule",): schedule.CEL_RULES,
    ("source",): [
        _rule("has(self.query) != has(self.configMapKeyRef)", "exactly one of query or configMapKeyRef"),
    ],
    ("slice", "predicate"): [
        _rule(f"!self.matches('{api.UNSTABLE_FUNCTIONS.replace(chr(92), chr(92) * 2)}')", api.UNSTABLE_MESSAGE),
    ],
    # Every unit adds time, so a duration is above zero exactly when it has a non-zero digit.
    ("window",): [_rule("self.matches('[1-9]')", "must be greater than zero")],
    ("healthCheck", "interval"): [_rule("self.matches('[1-9]')", "must be greater than zero")],
    ("clickhouse", "settings"): [
        _rule(
            f"self.all(k, k.matches('{api.IDENTIFIER_PATTERN}'))",
            "setting names must be ClickHouse identifiers",
        ),
    ],
    ("job", "resources", "requests"): [
        _rule("self.all(k, isQuantity(self[k]))", "values must be quantities such as 500m or 1Gi"),
    ],
    ("job", "resources", "limits"): [
        _rule("self.all(k, isQuantity(self[k]))", "values must be quantities such as 500m or 1Gi"),
    ],
}

# Extra schema keys per spec path: list semantics for server-side apply, and size bounds that keep
# the CEL cost estimate of the rules above inside the API server's budget.
SPEC_EXTRAS: dict[tuple[str, ...], Schema] = {
    ("uniqueKey",): {"x-kubernetes-list-type": "set"},  # the API server rejects repeated columns
    ("audits",): {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ("clickhouse", "settings"): {"maxProperties": 128},
    ("job", "resources", "requests"): {"maxProperties": 16},
    ("job", "resources", "limits"): {"maxProperties": 16},
    ("job", "tolerations"): {"x-kubernetes-list-type": "atomic"},
}

STATUS_EXTRAS: dict[tuple[str, ...], Schema] = {
    # Conditions merge by type, so several field managers can each own their own conditions.
    ("conditions",): {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ("active",): {"x-kubernetes-list-type": "atomic"},
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Stale(h)", "type": "number", "jsonPath": ".status.health.staleHours"},
    {"name": "Dups", "type": "integer", "jsonPath": ".status.health.tableDuplicates"},
    {"name": "Last Run", "type": "string", "jsonPath": ".status.lastRun.outcome"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Reason", "type": "string", "priority": 1, "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    {"name": "Last Schedule", "type": "date", "priority": 1, "jsonPath": ".status.lastScheduleTime"},
    {"name": "Last Success", "type": "date", "priority": 1, "jsonPath": ".status.lastSuccessfulRunTime"},
]


def spec_schema() -> Schema:
    schema = structural_schema(api.TableRefreshSpec)
    for path, rules in SPEC_RULES.items():
        subschema(schema, *path)["x-kubernetes-validations"] = rules
    for path, extras in SPEC_EXTRAS.items():
        subschema(schema, *path).update(extras)
    return schema


def status_schema() -> Schema:
    schema = structural_schema(TableRefreshStatus)
    for path, extras in STATUS_EXTRAS.items():
        subschema(schema, *path).update(extras)
    return schema


def build_crd() -> dict[str, Any]:
    """The whole CRD object, ready to apply."""
    root: Schema = {
        "type": "object",
        "description": "TableRefresh keeps a slice of a ClickHouse table fresh from a source query, "
        "on a schedule, and reports its health.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "tablerefresh"}},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the committed file holds it: deterministic, key order as built."""
    return yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)
