"""Whether a run is full or incremental, and since when an incremental run looks for changes. Pure.

An incremental run replaces, in the slice, only the rows of the keys that changed; it is right only
if the target's other slice rows are what a full run would rebuild. That holds after a successful
run of the same definition, as long as every change since then is among the changed keys. So:

- the watermark is the run time of the newest run that changed the target, and only a run that
  succeeded moves it (the runs table is the record: a crashed run writes nothing, a refused or
  failed one writes its failure, so the next run looks back to the same successful run);
- ``since`` is that time minus ``lateness``: a change recorded up to ``lateness`` before the last
  run's time, but arriving after it read the source, is still caught;
- a run is full when there is no such run, when the last change to the target was not a
  successful refresh of this definition (a restore, a run that failed after its swap), when the
  definition changed (source, predicate, window, keys, target columns: :func:`definition_hash`),
  when ``fullEvery`` has passed since the last full run, or when asked (``--full``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tablerefresh.dataplane.run.runs import RESTORE, History, Outcome
from tablerefresh.spec import IncrementalSpec, TableRefreshSpec, parse_duration

FULL = "Full"
INCREMENTAL = "Incremental"


@dataclass(frozen=True)
class RunKind:
    kind: str  # FULL or INCREMENTAL
    reason: str
    since: datetime | None = None  # an incremental run's: changes since this moment
    # The target holds what successful runs of this definition left, so what a full run rebuilds
    # can be compared with it (``verifySample``); after a restore or a new definition it cannot.
    continues: bool = False

    @property
    def incremental(self) -> bool:
        return self.kind == INCREMENTAL


def definition_hash(spec: TableRefreshSpec, source_query: str, target_columns: Sequence[tuple[str, str]]) -> str:
    """What decides a key's rows. Thresholds, schedule, lateness and the like do not."""
    incremental = spec.incremental
    parts = {
        "strategy": spec.strategy.value,
        "target": spec.target.table,
        "columns": [list(c) for c in target_columns],
        "source": source_query.strip(),
        "predicate": spec.slice.predicate.strip(),
        "window": spec.window,
        "uniqueKey": spec.unique_key,
        "key": incremental.key if incremental else None,
        "changedKeys": incremental.changed_keys_query.strip() if incremental else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def choose(
    incremental: IncrementalSpec | None,
    past: History,
    definition: str,
    run_time: datetime,
    *,
    force_full: bool = False,
) -> RunKind:
    kind = _choose(incremental, past, definition, run_time)
    if force_full and incremental is not None:
        # The reason is what the user asked for, whatever else would have made the run full.
        return RunKind(FULL, FORCED, continues=kind.continues)
    return kind


# The reason of a full run asked for on the command line (``tablerefresh refresh --full``).
FORCED = "--full"


def _choose(incremental: IncrementalSpec | None, past: History, definition: str, run_time: datetime) -> RunKind:
    if incremental is None:
        return RunKind(FULL, "the spec has no incremental section")
    last = past.last_change
    if last is not None and last.strategy == RESTORE:
        return RunKind(FULL, f"a backup was restored since the last run (restore {last.run_id})")
    if last is None or last.run_time is None:
        return RunKind(FULL, "no earlier run changed the target")
    if last.outcome != Outcome.SUCCEEDED:
        return RunKind(FULL, f"the last run to change the target ({last.run_id}) ended {last.outcome}")
    if last.definition != definition:
        return RunKind(FULL, "the source, predicate, window, keys or target columns changed since the last run")
    if run_time < last.run_time:
        return RunKind(FULL, f"the last run ({last.run_id}) has a later run time than this one (clock skew?)")
    if past.last_full is None:
        return RunKind(FULL, "no full run of this definition yet", continues=True)
    every = parse_duration(incremental.full_every)
    if run_time - past.last_full >= every:
        return RunKind(FULL, f"the last full run is {incremental.full_every} or more old (fullEvery)", continues=True)
    since = last.run_time - parse_duration(incremental.lateness)
    reason = f"changes since {since:%Y-%m-%dT%H:%M:%SZ} (last run {last.run_id})"
    return RunKind(INCREMENTAL, reason, since, continues=True)
