"""Names, labels and identities the controller puts on what it makes. Pure and dependency-free."""

from __future__ import annotations

import hashlib

FIELD_MANAGER = "tablerefresh"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tablerefresh"
NAME_LABEL = "tablerefresh.dev/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
# The Job controller labels its pods with their Job's name; the refresh uses it as its run id.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

# A Job's name is the CronJob's plus an 11-character suffix, and must fit in 63.
CRONJOB_NAME_MAX = 52
LABEL_VALUE_MAX = 63


def _shorten(name: str, limit: int) -> str:
    """``name`` if it fits, else a prefix plus a hash of the whole, so distinct names stay distinct."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def cronjob_name(tr_name: str) -> str:
    return _shorten(tr_name, CRONJOB_NAME_MAX)


def name_label_value(tr_name: str) -> str:
    return _shorten(tr_name, LABEL_VALUE_MAX)


def owned_labels(tr_name: str) -> dict[str, str]:
    """The labels on everything a TableRefresh owns; selectors for the CronJob and Job watches."""
    return {MANAGED_BY_LABEL: MANAGED_BY, NAME_LABEL: name_label_value(tr_name)}
