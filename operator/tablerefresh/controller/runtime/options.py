"""What ``tablerefresh operator``'s command line sets: everything start-up needs, with its defaults."""

from __future__ import annotations

from dataclasses import dataclass

from tablerefresh.controller.policy.admission import DEFAULT_POLICY, OperatorPolicy
from tablerefresh.controller.runtime.scope import Scope


@dataclass(frozen=True)
class Options:
    scope: Scope
    liveness: str | None = None
    peering: str | None = None  # None: standalone, one replica (the Deployment uses Recreate)
    metrics_port: int = 8080
    resync_seconds: float = 60.0
    concurrency: int = 8
    health_concurrency: int = 8
    health_timeout: float = 30.0
    policy: OperatorPolicy = DEFAULT_POLICY
