"""The reference workload's two manifests stay one TableRefresh, refreshed two ways."""

from __future__ import annotations

from tablerefresh.workloads import polymarket


def test_the_incremental_manifest_is_the_full_one_plus_its_incremental_section() -> None:
    full, incremental = polymarket.manifest(), polymarket.incremental_manifest()
    assert incremental.metadata == full.metadata  # the same object: apply one or the other
    assert incremental.spec.incremental is not None and full.spec.incremental is None
    same = {"incremental", "source"}
    assert incremental.spec.model_dump(exclude=same) == full.spec.model_dump(exclude=same)


def test_the_incremental_source_is_the_full_one_reading_only_the_changed_positions() -> None:
    full = polymarket.manifest().spec.source.query
    incremental = polymarket.incremental_manifest().spec.source.query
    assert full is not None and incremental is not None
    added = [line for line in incremental.splitlines() if line not in full.splitlines()]
    assert [line.strip() for line in added] == [
        "-- An incremental run reads only the changed positions' fills; a full run reads them all.",
        "-- The test on the condition alone comes first: it is cheap, and drops most fills before",
        "-- the test on the whole position, which hashes three columns per fill.",
        "AND ({full_run:UInt8} OR condition_id IN (SELECT condition_id FROM {changed_keys:Identifier}))",
        "AND ({full_run:UInt8} OR (wallet, condition_id, outcome_index) IN {changed_keys:Identifier})",
    ]
    assert [line for line in incremental.splitlines() if line not in added] == full.splitlines()
