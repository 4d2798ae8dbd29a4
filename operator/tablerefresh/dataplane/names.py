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


def target_tag(target: str) -> str:
    return hashlib.sha256(target.encode()).hexdigest()[:12]


def run_tag(run_id: str) -> str:
    """A run id reduced to identifier characters, short enough for a table name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", run_id)[-60:]


def staging_prefix(target: str) -> str:
    return f"{STAGING}{target_tag(target)}_"


def staging_table(target: str, run_id: str) -> str:
    return staging_prefix(target) + run_tag(run_id)


def backup_prefix(target: str) -> str:
    return f"{BACKUP}{target_tag(target)}_"


def backup_table(target: str, run_id: str, taken_at: datetime) -> str:
    """Backups sort by name in the order they were taken."""
    return f"{backup_prefix(target)}{taken_at.astimezone(UTC):%Y%m%dT%H%M%S%f}_{run_tag(run_id)}"
