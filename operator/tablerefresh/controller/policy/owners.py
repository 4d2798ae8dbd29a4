"""Who owns what, read off an object's metadata. Pure.

A TableRefresh controls its CronJob, which controls its Jobs: each link is the child's one
``ownerReferences`` entry with ``controller: true``. :func:`owner_of` is the one place that reads
those links; every question about ownership (which record a CronJob or Job event is for, whether an
existing CronJob is ours to overwrite, which Jobs count for run-now and for ``status.lastRun``) is
answered from what it returns. Names are never proof on their own (anyone who may create a
TableRefresh may pick a name), so the answers that lead to a write compare uids.

:func:`being_deleted` is the one test for an object on its way out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tablerefresh import spec as api

CRONJOB_KIND = "CronJob"


@dataclass(frozen=True)
class Owner:
    """An object's controller (its ``controller: true`` owner reference), in the object's namespace."""

    namespace: str
    kind: str
    name: str
    uid: str

    @property
    def is_tablerefresh(self) -> bool:
        """A CronJob's owner: the TableRefresh itself."""
        return self.kind == api.KIND

    @property
    def is_cronjob(self) -> bool:
        """A Job's owner: the CronJob, the link to its TableRefresh."""
        return self.kind == CRONJOB_KIND

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


def owner_of(obj: Mapping[str, Any] | None) -> Owner | None:
    """The object's controller, or None when nothing controls it (the API allows one at most)."""
    meta = (obj or {}).get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            namespace = str(meta.get("namespace") or "")
            return Owner(namespace, str(ref.get("kind")), str(ref.get("name")), str(ref.get("uid")))
    return None


def controlled_by(obj: Mapping[str, Any], owner_uid: str | None) -> bool:
    """Whether the object whose uid is ``owner_uid`` is ``obj``'s controller (a uid, never a name)."""
    found = owner_of(obj)
    return found is not None and owner_uid is not None and found.uid == owner_uid


def foreign_owner(cronjob: Mapping[str, Any] | None, tr_name: str, tr_uid: str) -> str | None:
    """Why an existing CronJob of that name is not ours to act on, or None if it is ours.

    Ours only when its controller is this TableRefresh, by uid: a CronJob someone else made (or one
    an earlier object of the same name owned, until garbage collection takes it) is never
    overwritten or run.
    """
    if cronjob is None:
        return None
    name = (cronjob.get("metadata") or {}).get("name")
    owner = owner_of(cronjob)
    if owner is None:
        return f"CronJob {name} already exists and is not controlled by this TableRefresh"
    if owner.is_tablerefresh and owner.uid == tr_uid:
        return None
    if owner.is_tablerefresh and owner.name == tr_name:
        return f"CronJob {name} belongs to an earlier TableRefresh {tr_name} (uid {owner.uid})"
    return f"CronJob {name} is controlled by {owner.kind} {owner.name}"


def being_deleted(obj: Mapping[str, Any]) -> bool:
    """On its way out: the API server has set its deletionTimestamp (finalizers may still hold it)."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))
