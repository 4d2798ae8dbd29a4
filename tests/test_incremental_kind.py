"""Full or incremental, and since when: the choice from the runs table, and the spec's rules. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tablerefresh.dataplane.run.incremental import FULL, INCREMENTAL, choose, definition_hash
from tablerefresh.dataplane.run.runs import RESTORE, History, Outcome, PastRun
from tablerefresh.spec import IncrementalSpec, ManifestError, parse_manifest
from tests import refresh_fixtures as fx

NOW = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)
SPEC = IncrementalSpec.model_validate(
    {"key": ["id"], "changedKeysQuery": fx.CHANGED_IDS, "lateness": "2h", "fullEvery": "7d"}
)


def last(**changes: Any) -> PastRun:
    run: dict[str, Any] = {
        "run_id": "run-1",
        "strategy": "ReplacePartitions",
        "outcome": Outcome.SUCCEEDED,
        "kind": INCREMENTAL,
        "run_time": NOW - timedelta(hours=6),
        "definition": "d1",
    }
    return PastRun(**{**run, **changes})


def history(last_full: timedelta | None = timedelta(days=1), **changes: Any) -> History:
    return History(last(**changes), None if last_full is None else NOW - last_full)


def test_after_a_successful_run_of_the_same_definition_a_run_is_incremental() -> None:
    kind = choose(SPEC, history(), "d1", NOW)
    assert kind.kind == INCREMENTAL and kind.continues
    # Since the last run's time, less the lateness: a change up to 2h before it, written after it, is caught.
    assert kind.since == NOW - timedelta(hours=8)


@pytest.mark.parametrize(
    ("past", "why"),
    [
        (History(), "no earlier run"),
        (history(strategy=RESTORE, outcome=Outcome.FAILED), "restored"),
        (history(outcome=Outcome.FAILED_AFTER_SWAP), "FailedAfterSwap"),
        (history(definition="d0"), "changed"),
        (history(run_time=NOW + timedelta(minutes=1)), "later run time"),
        (history(last_full=timedelta(days=7)), "fullEvery"),
        (history(last_full=None), "no full run"),
    ],
)
def test_a_run_is_full_when_the_target_may_not_be_what_the_last_run_left(past: History, why: str) -> None:
    kind = choose(SPEC, past, "d1", NOW)
    assert kind.kind == FULL and kind.since is None
    assert why in kind.reason


def test_a_forced_full_run_still_compares_its_sample_a_first_one_cannot() -> None:
    forced = choose(SPEC, history(), "d1", NOW, force_full=True)
    assert forced.kind == FULL and forced.continues
    assert not choose(SPEC, History(), "d1", NOW).continues
    assert not choose(SPEC, history(definition="d0"), "d1", NOW).continues


def test_without_an_incremental_section_every_run_is_full() -> None:
    assert choose(None, history(), "d1", NOW).kind == FULL


def test_the_definition_covers_what_decides_the_rows_and_nothing_else() -> None:
    spec = fx.incremental_spec("db")
    columns = [("id", "UInt64"), ("value", "Float64")]
    base = definition_hash(spec, fx.INCREMENTAL_SOURCE, columns)
    assert definition_hash(spec, fx.INCREMENTAL_SOURCE + " ", columns) == base
    assert definition_hash(spec, fx.INCREMENTAL_SOURCE + " LIMIT 1", columns) != base
    assert definition_hash(spec, fx.INCREMENTAL_SOURCE, [*columns, ("x", "UInt8")]) != base
    assert definition_hash(spec.model_copy(update={"window": "48h"}), fx.INCREMENTAL_SOURCE, columns) != base
    tuned = spec.model_copy(update={"schedule": "0 * * * *", "thresholds": spec.thresholds.model_copy()})
    assert definition_hash(tuned, fx.INCREMENTAL_SOURCE, columns) == base


def manifest(**spec: Any) -> dict[str, Any]:
    body = fx.incremental_spec("db").model_dump(by_alias=True, exclude_none=True, mode="json")
    return {
        "apiVersion": "tablerefresh.dev/v1alpha1",
        "kind": "TableRefresh",
        "metadata": {"name": "x"},
        "spec": {**body, **spec},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": "Exchange"}, "incremental needs strategy ReplacePartitions"),
        ({"uniqueKey": ["region", "id"]}, "must be a prefix of uniqueKey"),
    ],
)
def test_the_spec_refuses_an_incremental_section_that_cannot_work(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(manifest(**change))


def test_full_every_must_be_positive() -> None:
    document = manifest()
    document["spec"]["incremental"]["fullEvery"] = "0h"
    with pytest.raises(ManifestError, match="fullEvery"):
        parse_manifest(document)
