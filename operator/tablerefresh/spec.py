"""The TableRefresh API: the one model both planes share.

The pydantic models here are the single source of truth. The CRD schema is generated from them
(``tablerefresh crd``), the controller renders CronJobs from them, and the refresh job reads them.
Constraints are written so they translate into OpenAPI (pattern, enum, bounds) and the API server
can reject a bad manifest with the field named, before any Python runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tablerefresh import schedule as cronjob_schedule

GROUP = "tablerefresh.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TableRefresh"
PLURAL = "tablerefreshes"
SINGULAR = "tablerefresh"
SHORT_NAMES = ["tr"]

# ClickHouse identifiers we accept unquoted: conservative on purpose, so every name can be
# interpolated into SQL after validation (values always travel as query parameters).
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# Go-style durations limited to whole units: 90s, 15m, 24h, 7d, 1h30m.
DURATION_PATTERN = r"^([0-9]+(s|m|h|d|w))+$"
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN, min_length=1, max_length=128)]
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
K8sName = Annotated[str, Field(pattern=K8S_NAME_PATTERN, min_length=1, max_length=253)]

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A Kubernetes resource quantity (500m, 1Gi, 2, 1.5e3); the CRD checks the same with CEL isQuantity().
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")


def positive_duration(text: str) -> str:
    if parse_duration(text) <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return text


def parse_duration(text: str) -> timedelta:
    """``"1h30m"`` -> 90 minutes. Raises ValueError naming the text when it is not a duration."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d, 1h30m)")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in re.findall(r"([0-9]+)([smhdw])", text))
    return timedelta(seconds=seconds)


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors, as in the CRD."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Strategy(StrEnum):
    REPLACE_PARTITIONS = "ReplacePartitions"
    EXCHANGE = "Exchange"
    DELETE_INSERT = "DeleteInsert"


class ConcurrencyPolicy(StrEnum):
    FORBID = "Forbid"
    REPLACE = "Replace"


class SecretRef(_Model):
    """A Secret in the TableRefresh's namespace holding the ClickHouse credentials."""

    name: K8sName
    username_key: str = Field("username", min_length=1, max_length=253)
    password_key: str = Field("password", min_length=1, max_length=253)


# A URL names where ClickHouse is, nothing else: credentials come from the Secret (in a URL they
# would travel in clear in the CronJob), settings from spec.clickhouse.settings (a query string
# becomes client options: ?access_token= would be sent as a Bearer token).
URL_USERINFO = r"^[a-z]+://[^/]*@"
URL_USERINFO_MESSAGE = "must not carry credentials (user:password@): name a Secret in spec.clickhouse.credentialsSecret"
URL_QUERY_MESSAGE = "must not have a query string or fragment: put settings in spec.clickhouse.settings"


# The per-query memory limit a manifest can set in spec.clickhouse.settings (ClickHouse's UInt64 bytes).
MAX_MEMORY_USAGE = "max_memory_usage"


def memory_limit_bytes(settings: Mapping[str, Any]) -> int | None:
    """The ``max_memory_usage`` that ``settings`` sets, in bytes: a whole number, as a string (the CRD's
    type) or an int. None when absent, 0 (ClickHouse's "no limit") or not a number ClickHouse would take."""
    value = settings.get(MAX_MEMORY_USAGE)
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):  # no sign, no fraction, no unit
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


class ClickHouseSpec(_Model):
    url: str = Field(
        pattern=r"^(clickhouse|clickhouses|http|https|chdb)://.*$",
        max_length=2048,
        description="clickhouse://host:port, https://host:8443, or chdb:///path for the embedded engine",
    )
    database: Identifier = "default"
    credentials_secret: SecretRef | None = None
    cluster: Identifier | None = Field(None, description="Reserved for ON CLUSTER DDL; not used yet")
    settings: dict[str, str] = Field(default_factory=dict, description="ClickHouse settings for every query")

    @field_validator("url")
    @classmethod
    def _where_only(cls, value: str) -> str:
        if re.search(URL_USERINFO, value):
            raise ValueError(URL_USERINFO_MESSAGE)
        if "?" in value or "#" in value:
            raise ValueError(URL_QUERY_MESSAGE)
        return value

    @field_validator("settings")
    @classmethod
    def _setting_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(IDENTIFIER_PATTERN, name):
                raise ValueError(f"invalid ClickHouse setting name: {name!r}")
        return value


class TargetSpec(_Model):
    table: Identifier


# A run evaluates the predicate several times (counting, carrying over, verifying) and must get the
# same answer each time: the clock and randomness come in as {run_time:DateTime}, never as a call.
UNSTABLE_FUNCTIONS = r"(?i)\b(now|now64|nowInBlock|today|yesterday|rand|rand32|rand64|randConstant|generateUUIDv4)\s*\("
UNSTABLE_MESSAGE = (
    "must not call now(), today() or random functions: a run evaluates it several times; "
    "use {run_time:DateTime} or {window_start:DateTime}"
)


class SliceSpec(_Model):
    predicate: str = Field(
        min_length=1,
        max_length=4096,
        description="Boolean SQL over the target's columns selecting the rows a run replaces; "
        "may use {window_start:DateTime} and {run_time:DateTime}",
    )

    @field_validator("predicate")
    @classmethod
    def _stable(cls, value: str) -> str:
        if re.search(UNSTABLE_FUNCTIONS, value):
            raise ValueError(UNSTABLE_MESSAGE)
        return value


class ConfigMapKeyRef(_Model):
    name: K8sName
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


BATCH_PARAMETER = "{batch:UInt32}"
BATCHES_MESSAGE = (
    "batches above 1 needs a source query that reads {batch:UInt32}: each batch must yield its own share of "
    "the rows (for example WHERE cityHash64(wallet) % {batches:UInt32} = {batch:UInt32})"
)


class SourceSpec(_Model):
    """The SELECT that yields the slice's rows, with the target's column names."""

    query: str | None = Field(None, min_length=1, max_length=262144)
    config_map_key_ref: ConfigMapKeyRef | None = None
    batches: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Run the query this many times into the same staging table, binding {batch:UInt32} "
            "(0 to batches-1) and {batches:UInt32}, so that each yields a share of the keys and the "
            "engine holds only that share's aggregation at once"
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        if (self.query is None) == (self.config_map_key_ref is None):
            raise ValueError("source needs exactly one of query or configMapKeyRef")
        if self.query is not None:
            check_batches(self.query, self.batches)
        return self


def check_batches(query: str, batches: int) -> None:
    """A source run in batches must tell them apart: one that ignores ``{batch:UInt32}`` would yield
    every row in each batch. (The query of a ConfigMap is checked when a run reads it.)"""
    if batches > 1 and BATCH_PARAMETER not in query:
        raise ValueError(BATCHES_MESSAGE)


class Thresholds(_Model):
    max_stale_hours: float = Field(8, gt=0, description="Fresh=False when the newest row is older")
    max_duplicates: int = Field(100, ge=0, description="DuplicateFree=False above this many repeated keys")
    min_slice_rows: int = Field(0, ge=0, description="A run aborts, and Complete=False, below this")
    max_slice_drop_fraction: float = Field(
        0.5, ge=0, le=1, description="A run aborts when the slice or a partition shrinks by more"
    )


AUDIT_TABLE = "{table:Identifier}"


class Audit(_Model):
    """A check of the data a run would publish: a SELECT counting the bad rows of {table:Identifier}."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$", min_length=1, max_length=63)
    query: str = Field(
        min_length=1,
        max_length=65536,
        pattern=r"[\s\S]*\{table:Identifier\}[\s\S]*",
        description="A SELECT returning one number, the count of bad rows of {table:Identifier}; "
        "may use {window_start:DateTime} and {run_time:DateTime}",
    )
    max_failing_rows: int = Field(0, ge=0, description="The audit fails above this many bad rows")


class HealthCheckSpec(_Model):
    interval: Duration = "5m"

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: str) -> str:
        return positive_duration(value)


class MutationsSpec(_Model):
    max_pending: Duration = Field("10m", description="Refuse to run while a mutation is pending longer")
    kill_stuck_after: Duration | None = Field(None, description="Kill mutations pending longer (off by default)")

    @field_validator("max_pending", "kill_stuck_after")
    @classmethod
    def _positive(cls, value: str | None) -> str | None:
        return None if value is None else positive_duration(value)


class BackupSpec(_Model):
    keep: int = Field(
        0,
        ge=0,
        le=100,
        description=(
            "Backups to keep: after each swap a refresh drops all but the newest N backup tables of the "
            "target, those of dedupe and restore included (Exchange keeps at least 1; dedupe and restore "
            "always take one, their undo)"
        ),
    )


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class ResourceRequirements(_Model):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for resource, quantity in value.items():
            if not _QUANTITY.match(quantity):
                raise ValueError(f"{resource}: {quantity!r} is not a quantity such as 500m or 1Gi")
        return value


class IncrementalSpec(_Model):
    """Rebuild only the keys that changed since the last successful run (strategy ReplacePartitions)."""

    # A run finds the changed keys with changedKeysQuery, rebuilds their rows from the source (which
    # reads {changed_keys:Identifier}, or everything when {full_run:UInt8} is 1) and swaps each
    # partition it touches whole: the target's rows of unchanged keys plus the rebuilt rows.

    key: list[Identifier] = Field(
        min_length=1,
        max_length=32,
        description="The leading columns of uniqueKey that name what changes (e.g. a position); "
        "the changed-keys query yields these columns",
    )
    changed_keys_query: str = Field(
        min_length=1,
        max_length=65536,
        description="SELECT yielding the key of everything whose rows may have changed since "
        "{since:DateTime} (the last successful run's time minus lateness); may use {window_start:DateTime} "
        "and {run_time:DateTime}",
    )
    lateness: Duration = Field("1h", description="How late a change may arrive and still be caught")
    full_every: Duration = Field("7d", description="A run at least this long after the last full run is full")
    verify_sample: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Keys a full run (and tablerefresh verify) rebuilds in full and compares with what "
        "the incremental runs left; 0 turns the full run's check off",
    )

    @field_validator("full_every")
    @classmethod
    def _positive(cls, value: str) -> str:
        return positive_duration(value)


class JobSpec(_Model):
    """The refresh Job's pod. Image, ServiceAccount, node selector, tolerations, pod labels and
    annotations are admitted by the operator's policy (its installer's), not by this spec alone."""

    image: str | None = Field(
        None, min_length=1, max_length=1024, description="Default: the operator's refresh image"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "512Mi"}
        )
    )
    service_account_name: K8sName | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    pod_labels: dict[str, str] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(default_factory=dict)


class TableRefreshSpec(_Model):
    # Exactly what a CronJob accepts: checked here by the validator, in the CRD by CEL rules built
    # from the same grammar (tablerefresh.schedule).
    schedule: str = Field(
        min_length=1,
        max_length=cronjob_schedule.MAX_LENGTH,
        description="When to run, as a Kubernetes CronJob schedule: five fields or @hourly, @every 90m, ...",
    )
    time_zone: str = Field("UTC", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$")
    suspend: bool = False
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    starting_deadline_seconds: int = Field(300, ge=1)
    active_deadline_seconds: int | None = Field(None, ge=1)
    backoff_limit: int = Field(0, ge=0, le=10)
    successful_jobs_history_limit: int = Field(3, ge=0, le=100)
    failed_jobs_history_limit: int = Field(3, ge=0, le=100)

    clickhouse: ClickHouseSpec
    target: TargetSpec
    slice: SliceSpec
    source: SourceSpec
    window: Duration = "24h"
    strategy: Strategy = Strategy.REPLACE_PARTITIONS
    allow_vanishing_keys: bool = Field(
        False,
        description="Exchange: let a rebuild remove keys the slice predicate does not select "
        "(by default such a run refuses, naming the partitions)",
    )
    unique_key: list[Identifier] = Field(min_length=1, max_length=32)
    freshness_column: Identifier
    thresholds: Thresholds = Field(default_factory=Thresholds)
    audits: list[Audit] = Field(default_factory=list, max_length=32)
    keep_failed_staging: Duration | None = Field(
        None,
        description="Keep the staging table of a run that failed verification or an audit this long, "
        "under the name its summary gives (never swapped in)",
    )
    health_check: HealthCheckSpec = Field(default_factory=HealthCheckSpec)
    mutations: MutationsSpec = Field(default_factory=MutationsSpec)
    backup: BackupSpec = Field(default_factory=BackupSpec)
    incremental: IncrementalSpec | None = None
    job: JobSpec = Field(default_factory=JobSpec)

    @field_validator("schedule")
    @classmethod
    def _cronjob_schedule(cls, value: str) -> str:
        return cronjob_schedule.validate(value)

    @field_validator("window")
    @classmethod
    def _positive_window(cls, value: str) -> str:
        return positive_duration(value)

    @field_validator("audits")
    @classmethod
    def _distinct_audits(cls, value: list[Audit]) -> list[Audit]:
        names = [a.name for a in value]
        if len(set(names)) != len(names):
            raise ValueError("two audits have the same name")
        return value

    @field_validator("keep_failed_staging")
    @classmethod
    def _positive_keep(cls, value: str | None) -> str | None:
        return None if value is None else positive_duration(value)

    @field_validator("unique_key")
    @classmethod
    def _distinct_key(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("uniqueKey lists a column twice")
        return value

    @model_validator(mode="after")
    def _incremental_fits(self) -> TableRefreshSpec:
        if self.incremental is None:
            return self
        if self.strategy != Strategy.REPLACE_PARTITIONS:
            raise ValueError("incremental needs strategy ReplacePartitions")
        key = self.incremental.key
        if self.unique_key[: len(key)] != key:
            raise ValueError(f"incremental.key {key} must be a prefix of uniqueKey {self.unique_key}")
        return self

    @property
    def window_delta(self) -> timedelta:
        return parse_duration(self.window)


class ObjectMeta(_Model):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: K8sName
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TableRefresh(_Model):
    """A whole manifest. Status is the controller's and is ignored when reading a file."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    api_version: Literal["tablerefresh.dev/v1alpha1"] = "tablerefresh.dev/v1alpha1"
    kind: Literal["TableRefresh"] = "TableRefresh"
    metadata: ObjectMeta
    spec: TableRefreshSpec


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the field."""


def load_manifest(path: str | Path) -> TableRefresh:
    """Read the one TableRefresh in a YAML file (other documents in the file are skipped)."""
    path = Path(path)
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
    found = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(found) != 1:
        raise ManifestError(f"{path}: expected exactly one {KIND}, found {len(found)}")
    return parse_manifest(found[0], origin=str(path))


def parse_manifest(document: dict[str, Any], origin: str = "manifest") -> TableRefresh:
    try:
        return TableRefresh.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(f"{origin}: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field as kubectl would (spec.thresholds.minSliceRows)."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"{field}: {err['msg']}")
    return "; ".join(lines)
