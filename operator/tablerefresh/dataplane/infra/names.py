"""Names of the tables tablerefresh keeps beside a target.

Staging and backup tables carry a short hash of the target's name, so that cleaning up one
target's leftovers (by prefix) can never match another target whose name merely starts alike.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

STAGING = "_tablerefresh_staging_"
BACKUP = "_tablerefresh_backup_"
EVIDENCE = "_tablerefresh_failed_"
_TIME = "%Y%m%dT%H%M%S%f"


def target_tag(target: str) -> str:
    return hashlib.sha256(target.encode()).hexdigest()[:12]


def run_tag(run_id: str) -> str:
    """A run id reduced to identifier characters, short enough for a table name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", run_id)[-60:]


def staging_prefix(target: str) -> str:
    return f"{STAGING}{target_tag(target)}_"


def staging_table(target: str, run_id: str) -> str:
    return staging_prefix(target) + run_tag(run_id)


def run_table(target: str, run_id: str, role: str) -> str:
    """Another table of a run (its changed keys, a sample, the unchanged rows it keeps): named as its
    staging table is, so the cleanup of a crashed run's leftovers drops it too."""
    return f"{staging_table(target, run_id)}_{role}"


# An Exchange's staging table carries the target's UUID: once the exchange has run, the table under
# that name is the previous target (UUIDs stay with the data), which a later run keeps as a backup.
_REPLACES = "_replaces_"


def exchange_staging_table(target: str, run_id: str, target_uuid: str) -> str:
    return f"{staging_table(target, run_id)}{_REPLACES}{_uuid_tag(target_uuid)}"


def exchanged_run(target: str, name: str, table_uuid: str) -> str | None:
    """When ``name``, an Exchange's staging table, now holds the table its exchange replaced (its
    UUID is the one the name records), the run's tag; otherwise None."""
    head, sep, tag = name.rpartition(_REPLACES)
    prefix = staging_prefix(target)
    if not sep or not head.startswith(prefix) or tag != _uuid_tag(table_uuid):
        return None
    return head[len(prefix) :]


def _uuid_tag(uuid: str) -> str:
    return uuid.replace("-", "")[:16]


def backup_prefix(target: str) -> str:
    return f"{BACKUP}{target_tag(target)}_"


def backup_table(target: str, run_id: str, taken_at: datetime) -> str:
    """Backups sort by name in the order they were taken."""
    return f"{backup_prefix(target)}{taken_at.astimezone(UTC):{_TIME}}_{run_tag(run_id)}"


def evidence_prefix(target: str) -> str:
    return f"{EVIDENCE}{target_tag(target)}_"


def evidence_table(target: str, run_id: str, kept_at: datetime) -> str:
    """The staging table of a failed run, kept for the user to query; the name says since when."""
    return f"{evidence_prefix(target)}{kept_at.astimezone(UTC):{_TIME}}_{run_tag(run_id)}"


def evidence_time(name: str) -> datetime | None:
    parts = name[len(EVIDENCE) :].split("_") if name.startswith(EVIDENCE) else []
    stamp = parts[1] if len(parts) > 1 else ""
    try:
        return datetime.strptime(stamp, _TIME).replace(tzinfo=UTC)
    except ValueError:
        return None
