"""What the controller and the refresh Job agree on, defined once for both planes.

The controller renders a CronJob whose pods run ``tablerefresh refresh`` with no arguments but the
environment below; the refresh ends with a JSON summary whose ``outcome`` and ``reason`` the
controller copies into ``status.lastRun`` and ``LastRunSucceeded``. Neither side imports the other
(the data plane never imports the controller), so both import this module.
"""

from __future__ import annotations

# The environment of a refresh Job: what the refresh command reads when it gets no -f.
MANIFEST_ENV = "TABLEREFRESH_MANIFEST"  # the TableRefresh, as compact JSON
RUN_ID_ENV = "TABLEREFRESH_RUN_ID"  # the Job's name, from its pod's label
SOURCE_QUERY_ENV = "TABLEREFRESH_SOURCE_QUERY"  # spec.source.configMapKeyRef's query
USER_ENV = "CLICKHOUSE_USER"  # the credentials, from the Secret the TableRefresh names
PASSWORD_ENV = "CLICKHOUSE_PASSWORD"


class Outcome:
    """A run's outcome, as its summary and its row in the runs table say."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"  # another run held the lock; nothing was changed
    FAILED_AFTER_SWAP = "FailedAfterSwap"  # the target holds the swapped data; a step after the swap failed
    INTERRUPTED = "Interrupted"  # SIGINT or SIGTERM; reason InterruptedAfterSwap once the swap had run


class Reason:
    """The reasons of a run's summary that the controller tells apart (the rest it copies as they are)."""

    FAILED = "RefreshFailed"  # no more specific reason
    LOCK_HELD = "LockHeld"
    LOCK_LOST = "LockLost"
    VERIFICATION_FAILED = "VerificationFailed"
    AUDIT_FAILED = "AuditFailed"
    MUTATION_PENDING = "MutationPending"


# The reasons of a run that stopped itself before touching the target: the controller says Aborted.
ABORT_REASONS = frozenset(
    {Reason.VERIFICATION_FAILED, Reason.AUDIT_FAILED, Reason.MUTATION_PENDING, Reason.LOCK_HELD, Reason.LOCK_LOST}
)

# A reason's form: metav1.Condition's, since a run's reason becomes LastRunSucceeded's.
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
