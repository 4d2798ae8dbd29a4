"""The TableRefresh CustomResourceDefinition, generated from the pydantic models. Pure.

- The status models: every field any source writes is declared here, so the API server never
  prunes it. They read leniently (unknown fields are ignored) because a newer controller may have
  written fields an older one does not know.
- :func:`structural_schema`: a pydantic model -> a structural OpenAPI v3 schema, as
  apiextensions.k8s.io/v1 accepts it. pydantic emits JSON Schema 2020-12 with ``$ref``s, ``anyOf`` for
  optionals and titles; a CRD needs everything inline, one type per node, no titles,
  ``exclusiveMinimum`` as a flag, and defaults the API server can apply. Anything it does not
  understand raises, so a model change that the CRD cannot express fails the build instead of
  loosening the schema.
- :func:`build_crd`: field types, enums, patterns, bounds and defaults come from the models. What
  a pattern cannot say (one of two fields, a duration above zero, map keys) is added as CEL rules,
  so the API server rejects the manifest and names the field before the controller ever sees it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from tablerefresh import schedule
from tablerefresh import spec as api
from tablerefresh.contract import REASON_PATTERN

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"

# The status.

# API conventions for condition types and reasons (metav1.Condition).
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = REASON_PATTERN

# Marks the one subtree whose unknown fields the API server must keep (kopf's own bookkeeping).
PRESERVE_UNKNOWN: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}


class _StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Condition(_StatusModel):
    """One condition, as the Kubernetes API conventions define it (metav1.Condition)."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    message: str = Field(max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(None, ge=0)


class ObjectRef(_StatusModel):
    """A reference to an object the TableRefresh owns (its CronJob, its active Jobs)."""

    api_version: str = Field(max_length=253)
    kind: str = Field(max_length=63)
    name: str = Field(max_length=253)
    namespace: str | None = Field(None, max_length=63)
    uid: str | None = Field(None, max_length=64)


class AuditStatus(_StatusModel):
    """One audit's count of bad rows (spec.audits), in the last health check or the last run."""

    name: str = Field(max_length=63)
    failing_rows: int = Field(ge=0)
    max_failing_rows: int | None = Field(None, ge=0)
    passed: bool


class HealthStatus(_StatusModel):
    """The last health check of the target table (filled by the health check)."""

    checked_at: datetime | None = None
    total_rows: int | None = Field(None, ge=0)
    slice_rows: int | None = Field(None, ge=0)
    distinct_keys: int | None = Field(None, ge=0)
    newest_freshness: datetime | None = Field(None, description="Newest freshnessColumn value")
    stale_hours: float | None = Field(None, description="Hours between checkedAt and newestFreshness")
    slice_duplicates: int | None = Field(None, ge=0, description="Repeated unique keys within the slice")
    table_duplicates: int | None = Field(None, ge=0, description="Repeated unique keys in the whole table")
    pending_mutations: int | None = Field(None, ge=0)
    oldest_mutation_age_seconds: float | None = Field(None, ge=0)
    audits: list[AuditStatus] = Field(default_factory=list, max_length=64, description="spec.audits on the table")
    error: str | None = Field(None, max_length=32768, description="Why the last check could not run")


class LastRunStatus(_StatusModel):
    """The outcome of the most recent refresh Job (filled from its summary or its pod state)."""

    job_name: str | None = Field(None, max_length=253)
    run_id: str | None = Field(None, max_length=253)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    duration_seconds: float | None = Field(None, ge=0)
    outcome: str | None = Field(
        None,
        max_length=64,
        description="Succeeded, Failed, Aborted (target untouched) or FailedAfterSwap (target changed)",
    )
    reason: str | None = Field(None, max_length=1024, description="Kubernetes or refresh reason, CamelCase")
    rows_before: int | None = Field(None, ge=0)
    rows_after: int | None = Field(None, ge=0)
    slice_rows_before: int | None = Field(None, ge=0)
    slice_rows_after: int | None = Field(None, ge=0)
    duplicates: int | None = Field(None, ge=0)
    kind: str | None = Field(None, max_length=32, description="Full or Incremental")
    changed_keys: int | None = Field(None, ge=0, description="Keys an incremental run rebuilt")
    sample_differences: int | None = Field(
        None, ge=0, description="Rows of a full run's sampled keys that the incremental runs had left different"
    )
    peak_memory_bytes: int | None = Field(
        None,
        ge=0,
        description="The run's peak memory: its largest statement's memory_usage on a server, "
        "the refresh process's peak RSS on the embedded engine",
    )
    read_rows: int | None = Field(None, ge=0, description="Rows the run's statements read")
    read_bytes: int | None = Field(None, ge=0, description="Bytes the run's statements read")
    written_rows: int | None = Field(None, ge=0, description="Rows the run's statements wrote")
    written_bytes: int | None = Field(None, ge=0, description="Bytes the run's statements wrote")
    audits: list[AuditStatus] = Field(default_factory=list, max_length=64, description="spec.audits on the staged rows")
    evidence_table: str | None = Field(
        None, max_length=253, description="Where a refused run's staged rows were kept (spec.keepFailedStaging)"
    )
    error: str | None = Field(None, max_length=32768)


class RecentRun(_StatusModel):
    """One of the last runs, newest first in status.recentRuns."""

    id: str = Field(max_length=253, description="The run id (the Job's name)")
    outcome: str = Field(max_length=64)
    reason: str | None = Field(None, max_length=1024)
    finished: datetime
    duration_seconds: float | None = Field(None, ge=0)


class RunNowStatus(_StatusModel):
    """The last tablerefresh.dev/run-now token handled, and what came of it."""

    token: str | None = Field(None, max_length=253)
    job_name: str | None = Field(None, max_length=253)
    requested_at: datetime | None = None
    message: str | None = Field(None, max_length=4096)


class KopfStatus(_StatusModel):
    """kopf's handler progress and the digest of the last handled spec, kept here instead of annotations."""

    progress: dict[str, Any] | None = Field(None, json_schema_extra=PRESERVE_UNKNOWN)
    dummy: str | None = Field(None, description="kopf's touch field, to re-trigger delayed handlers")
    digest: str | None = Field(None, description="sha256 of the last handled spec, labels and annotations")
    diffbase: str | None = Field(
        None, description="The last handled spec, JSON-encoded, by operators before the digest; removed once read"
    )


class TableRefreshStatus(_StatusModel):
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list, max_length=32)
    cron_job_ref: ObjectRef | None = None
    last_schedule_time: datetime | None = None
    last_successful_run_time: datetime | None = None
    last_failure_time: datetime | None = Field(None, description="When the last run that did not succeed ended")
    recent_runs: list[RecentRun] = Field(default_factory=list, max_length=5, description="The last runs, newest first")
    active: list[ObjectRef] = Field(default_factory=list, max_length=64)
    health: HealthStatus | None = None
    last_run: LastRunStatus | None = None
    run_now: RunNowStatus | None = None
    kopf: KopfStatus | None = None


# Model -> structural schema.

Schema = dict[str, Any]

# Keys copied as they are; everything else is translated below or rejected.
_PASSTHROUGH = {
    "type",
    "description",
    "enum",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "default",
}
_DROPPED = {"title", "$defs", "examples"}
_FORMATS = {"date-time", "date", "int32", "int64", "double", "float", "byte", "uri"}
PRESERVE_KEY = "x-kubernetes-preserve-unknown-fields"


class SchemaError(ValueError):
    """The model uses a construct a structural schema cannot express."""


class _WithFactoryDefaults(GenerateJsonSchema):
    """Emit defaults the API server should fill in, including those from default factories.

    A nested model defaults to ``{}`` (plus whatever differs from its own defaults), so the API
    server fills the nested defaults too; ``None`` and empty collections are left out.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
        else:
            value = schema.get("default", NoDefault)
        if value is None or value is NoDefault:
            return NoDefault
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        if isinstance(value, dict | list) and not value:
            return NoDefault
        return value


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model``, wire names (camelCase) as properties."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    return _convert(raw, raw.get("$defs", {}), path=model.__name__)


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _inline(node, defs, path)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "format":
            if value in _FORMATS:
                out[key] = value
        elif key in _PASSTHROUGH or key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            _additional(out, node, value, defs, path)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 gives the bound; OpenAPI v3.0 takes the bound plus a flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            raise SchemaError(f"{path}: cannot express {key!r} in a structural schema")
    if "type" not in out and not out.get(PRESERVE_KEY):
        raise SchemaError(f"{path}: no single type")
    return out


def _inline(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    """Resolve ``$ref`` and drop the ``null`` branch of an optional, keeping the outer keys."""
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            outer = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **outer}
        elif "anyOf" in node:
            branches = [b for b in node["anyOf"] if b != {"type": "null"}]
            if len(branches) != 1:
                raise SchemaError(f"{path}: unions other than Optional[X] have no structural form")
            outer = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**branches[0], **outer}
        else:
            return node


def _additional(out: Schema, node: Schema, value: Any, defs: dict[str, Schema], path: str) -> None:
    if value is False:
        return  # extra="forbid": the API server prunes unknown fields (and kubectl rejects them)
    if value is True:
        if not node.get(PRESERVE_KEY):
            raise SchemaError(f"{path}: free-form object; mark it with {PRESERVE_KEY} on purpose")
        return
    if "properties" in node:
        raise SchemaError(f"{path}: properties and additionalProperties together are not structural")
    out["additionalProperties"] = _convert(value, defs, f"{path}.*")


def subschema(schema: Schema, *path: str) -> Schema:
    """The node at a property path, e.g. ``subschema(spec, "clickhouse", "settings")``."""
    node = schema
    for name in path:
        node = node["items"] if name == "[]" else node["properties"][name]
    return node


# The CRD.


def _rule(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


# Rules the model's field constraints cannot express, keyed by the path inside spec. The model
# checks the same things in Python, so the two agree.
SPEC_RULES: dict[tuple[str, ...], list[dict[str, str]]] = {
    ("schedule",): schedule.CEL_RULES,
    ("source",): [
        _rule("has(self.query) != has(self.configMapKeyRef)", "exactly one of query or configMapKeyRef"),
        _rule(
            "!has(self.batches) || self.batches <= 1 || !has(self.query) "
            f"|| self.query.contains('{api.BATCH_PARAMETER}')",
            api.BATCHES_MESSAGE,
        ),
    ],
    ("slice", "predicate"): [
        _rule(f"!self.matches('{api.UNSTABLE_FUNCTIONS.replace(chr(92), chr(92) * 2)}')", api.UNSTABLE_MESSAGE),
    ],
    # Every unit adds time, so a duration is above zero exactly when it has a non-zero digit.
    ("window",): [_rule("self.matches('[1-9]')", "must be greater than zero")],
    ("healthCheck", "interval"): [_rule("self.matches('[1-9]')", "must be greater than zero")],
    ("clickhouse", "url"): [
        _rule(f"!self.matches('{api.URL_USERINFO}')", api.URL_USERINFO_MESSAGE),
        _rule("!self.contains('?') && !self.contains('#')", api.URL_QUERY_MESSAGE),
    ],
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
    ("recentRuns",): {"x-kubernetes-list-type": "atomic"},
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Stale(h)", "type": "number", "jsonPath": ".status.health.staleHours"},
    {"name": "Dups", "type": "integer", "jsonPath": ".status.health.tableDuplicates"},
    {"name": "Last Run", "type": "string", "jsonPath": ".status.lastRun.outcome"},
    {"name": "Last Success", "type": "date", "jsonPath": ".status.lastSuccessfulRunTime"},
    {"name": "Last Failure", "type": "date", "jsonPath": ".status.lastFailureTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Reason", "type": "string", "priority": 1, "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    {"name": "Last Schedule", "type": "date", "priority": 1, "jsonPath": ".status.lastScheduleTime"},
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
