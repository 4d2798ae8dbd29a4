"""The TableRefresh status: what the controller and the health check write, as pydantic models.

The CRD's status schema is generated from these models, so every field written here is declared
and never pruned by the API server. Models read leniently (unknown fields are ignored) because a
newer controller may have written fields an older one does not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

# API conventions for condition types and reasons (metav1.Condition).
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

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
    error: str | None = Field(None, max_length=32768)


class RunNowStatus(_StatusModel):
    """The last tablerefresh.dev/run-now token handled, and what came of it."""

    token: str | None = Field(None, max_length=253)
    job_name: str | None = Field(None, max_length=253)
    requested_at: datetime | None = None
    message: str | None = Field(None, max_length=4096)


class KopfStatus(_StatusModel):
    """kopf's handler progress and last-handled spec, kept here instead of annotations."""

    progress: dict[str, Any] | None = Field(None, json_schema_extra=PRESERVE_UNKNOWN)
    dummy: str | None = Field(None, description="kopf's touch field, to re-trigger delayed handlers")
    diffbase: str | None = Field(None, description="The last handled spec, JSON-encoded")


class TableRefreshStatus(_StatusModel):
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list, max_length=32)
    cron_job_ref: ObjectRef | None = None
    last_schedule_time: datetime | None = None
    last_successful_run_time: datetime | None = None
    active: list[ObjectRef] = Field(default_factory=list, max_length=64)
    health: HealthStatus | None = None
    last_run: LastRunStatus | None = None
    run_now: RunNowStatus | None = None
    kopf: KopfStatus | None = None
