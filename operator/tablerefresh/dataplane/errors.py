"""Why a run stopped, each with the exit code the refresh job ends with.

Distinct codes let the controller (and a human reading ``kubectl get jobs``) tell a refused run
from a failed one without parsing text.
"""

from __future__ import annotations

from enum import IntEnum

from tablerefresh.contract import Reason


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # unexpected: the run's record and log say what happened
    INVALID = 2  # bad input: manifest, identifiers, unknown table, source columns
    LOCKED = 3  # another run holds the target's lock: nothing was changed
    VERIFY_FAILED = 4  # the staged data failed a check: the target is untouched
    PREFLIGHT = 5  # the target is not in a state to refresh (a stuck mutation)
    UNREACHABLE = 6  # ClickHouse could not be reached, or refused the credentials
    AFTER_SWAP = 7  # the swap ran (or may have): the target changed, and a step at or after the swap failed
    AUDIT_FAILED = 8  # one of the user's audits found bad rows in the staged data: the target is untouched
    # Stopped by a signal, as 128 + its number (the shell's and Kubernetes' convention): the summary
    # says whether the target is unchanged or the swap had run.
    INTERRUPTED = 130  # SIGINT: Ctrl-C
    TERMINATED = 143  # SIGTERM: the pod deleted, activeDeadlineSeconds, a node drained


class RefreshError(Exception):
    """A run that stopped for a reason it can name. ``reason`` is CamelCase, for status and Events."""

    exit_code = ExitCode.FAILED
    reason = Reason.FAILED


class InvalidInput(RefreshError):
    exit_code = ExitCode.INVALID
    reason = "InvalidSpec"


class LockHeld(RefreshError):
    exit_code = ExitCode.LOCKED
    reason = Reason.LOCK_HELD


class VerificationFailed(RefreshError):
    exit_code = ExitCode.VERIFY_FAILED
    reason = Reason.VERIFICATION_FAILED


class PreflightRefused(RefreshError):
    exit_code = ExitCode.PREFLIGHT
    reason = Reason.MUTATION_PENDING


class Unreachable(RefreshError):
    exit_code = ExitCode.UNREACHABLE
    reason = "ClickHouseUnreachable"


class LockLost(RefreshError):
    """Our lock expired and another run took it: we must not swap."""

    exit_code = ExitCode.LOCKED
    reason = Reason.LOCK_LOST


class FailedAfterSwap(RefreshError):
    """The target was changed (or may have been) and the run could not finish: never "untouched"."""

    exit_code = ExitCode.AFTER_SWAP
    reason = "FailedAfterSwap"


class UnknownDatabase(InvalidInput):
    reason = "UnknownDatabase"


class UnknownTable(InvalidInput):
    reason = "UnknownTable"


class CredentialsRefused(Unreachable):
    reason = "CredentialsRefused"


class TimedOut(Unreachable):
    reason = "ClickHouseTimeout"


class AuditFailed(VerificationFailed):
    exit_code = ExitCode.AUDIT_FAILED
    reason = Reason.AUDIT_FAILED


class Interrupted(RefreshError):
    """SIGINT or SIGTERM stopped the run: exit code 128 + the signal's number (130, 143)."""

    reason = "Interrupted"

    def __init__(self, message: str, signum: int, *, after_swap: bool = False) -> None:
        super().__init__(message)
        self.exit_code = ExitCode(128 + signum)
        if after_swap:
            self.reason = AFTER_SWAP_INTERRUPTION


# An interruption's reason once the swap had run (or may have): the target holds new data.
AFTER_SWAP_INTERRUPTION = "InterruptedAfterSwap"
