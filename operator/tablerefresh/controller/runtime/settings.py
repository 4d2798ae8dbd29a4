"""kopf's settings for the operator: where it keeps its bookkeeping, what it posts, how it watches."""

from __future__ import annotations

import logging

import kopf

from tablerefresh.controller.runtime.diffbase import DigestDiffBaseStorage
from tablerefresh.spec import GROUP


def operator_settings(*, standalone: bool, workers: int = 16) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf's handler progress and the digest of the last handled spec live in status, declared in
    # the CRD, so the controller never annotates a TableRefresh (a GitOps tool would see it as drift).
    # A digest, not a copy of the spec: kubectl describe shows the spec once (see DigestDiffBaseStorage).
    settings.persistence.progress_storage = kopf.StatusProgressStorage(
        field="status.kopf.progress", touch_field="status.kopf.dummy"
    )
    settings.persistence.diffbase_storage = DigestDiffBaseStorage()
    # No handler needs a finalizer (no on.delete, no daemons or timers), so kopf adds none; the
    # name is ours in case a future handler does, never kopf's default.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # The status writer posts the controller's Events on transitions; kopf's per-handler ones only on trouble.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = standalone
    settings.execution.max_workers = workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings
