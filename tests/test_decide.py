"""``decide``, pure: measurements in, what the run replaces, the facts its checks judge and its
statements out. (That a plan's statements are what a run executes: ``test_plan.py``.)"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from tablerefresh.dataplane.infra.catalog import Column, TableInfo
from tablerefresh.dataplane.run.decide import Frame, Measured, Rebuilt, Surplus, decide
from tablerefresh.dataplane.run.incremental import FULL, INCREMENTAL, RunKind
from tablerefresh.dataplane.run.scope import run_params, run_scope
from tablerefresh.dataplane.run.statements import run_tables
from tablerefresh.dataplane.run.swap import PartitionCounts
from tests import refresh_fixtures as fx

WHEN = datetime(2026, 6, 15, 12, tzinfo=UTC)
TARGET = TableInfo(
    "db",
    "positions",
    "MergeTree",
    "MergeTree",
    "if(resolved_at IS NULL, 0, toYYYYMM(resolved_at))",
    "id",
    "00000000-0000-0000-0000-00000000abcd",
    (Column("id", "UInt64"), Column("resolved_at", "Nullable(DateTime)"), Column("value", "Float64")),
)


def frame(kind: RunKind, **overrides: object) -> Frame:
    spec = fx.incremental_spec("db", **overrides) if kind.incremental else fx.spec("db", **overrides)
    scope = run_scope(spec, "r1")
    scope.kind = kind
    tables = run_tables(TARGET, "r1", spec.strategy, scope.keys_name)
    return Frame(
        spec, "r1", WHEN, scope, run_params(spec, WHEN, scope), tables, "SELECT 1\n", ["id", "resolved_at", "value"]
    )


def rebuilt(**partitions: tuple[int, int]) -> Rebuilt:
    counts = {p.lstrip("p"): PartitionCounts(*c) for p, c in partitions.items()}
    return Rebuilt(counts, sum(c.rows for c in counts.values()), sum(c.slice_rows for c in counts.values()), 0)


def test_a_full_run_replaces_the_slices_partitions_and_copies_the_rows_it_keeps() -> None:
    before = {"0": PartitionCounts(100, 100), "202606": PartitionCounts(50, 20), "202605": PartitionCounts(30, 0)}

    decision = decide(frame(RunKind(FULL, "")), Measured(rebuilt(p0=(110, 110), p202606=(25, 25)), before), WHEN)

    assert [(c.partition, c.old_rows, c.new_rows, c.kept) for c in decision.changes] == [
        ("0", 100, 110, 0),
        ("202606", 50, 55, 30),
    ]
    assert (decision.facts.old_slice_rows, decision.facts.new_slice_rows) == (120, 135)
    assert [s.text.split(" ")[0] for s in decision.statements] == ["CREATE", "INSERT", "INSERT", "ALTER", "DROP"]
    assert "_partition_id IN ('202606')" in decision.carry[0].text
    assert not decision.needs_surplus and decision.link == ()


def test_an_incremental_run_links_masks_and_attaches_the_rows_it_keeps() -> None:
    before = {"0": PartitionCounts(100, 100, replaced_rows=10), "202606": PartitionCounts(50, 20, replaced_rows=0)}

    decision = decide(frame(RunKind(INCREMENTAL, "")), Measured(rebuilt(p0=(12, 12)), before, changed_keys=12), WHEN)

    assert [(c.partition, c.new_rows, c.kept) for c in decision.changes] == [("0", 102, 90)]
    assert decision.touched == ("0", "202606")
    create_keys, fill_keys = decision.keys
    assert create_keys.text.startswith("CREATE TABLE") and fill_keys.text.startswith("INSERT INTO")
    assert [s.text.split(" ")[0] for s in decision.link] == ["CREATE", "ALTER", "DELETE"]
    assert decision.carry[0].text.startswith("ALTER TABLE `db`.`_tablerefresh_staging_")
    assert "ATTACH PARTITION ID '0' FROM" in decision.carry[0].text and decision.carry[0].text.endswith("_r1_kept`")
    # dropped last made first: the kept rows' table, staging, the keys
    assert [s.text.split("`")[3].rsplit("_", 1)[-1] for s in decision.drop] == ["kept", "r1", "changed"]


def test_no_changed_key_decides_nothing_to_swap() -> None:
    before = {"0": PartitionCounts(100, 80, replaced_rows=0)}

    decision = decide(frame(RunKind(INCREMENTAL, "")), Measured(rebuilt(), before, changed_keys=0), WHEN)

    assert decision.nothing_changed and decision.changes == () and decision.swap == ()
    assert (decision.facts.old_slice_rows, decision.facts.new_slice_rows) == (80, 80)
    assert len(decision.statements) == 3  # the key table created, filled, and dropped; nothing else


def test_a_shrink_past_the_threshold_asks_for_the_targets_second_copies_of_a_key() -> None:
    before = {"0": PartitionCounts(100, 100)}
    measured = Measured(rebuilt(p0=(50, 50)), before)

    at_most_a_fifth = frame(RunKind(FULL, ""), thresholds={"maxSliceDropFraction": 0.2})
    first = decide(at_most_a_fifth, measured, WHEN)
    again = decide(at_most_a_fifth, replace(measured, surplus=Surplus({"0": 50}, 50)), WHEN)

    assert first.needs_surplus and first.facts.old_slice_rows == 100
    assert not again.needs_surplus and again.facts.old_slice_rows == 50
    assert again.changes[0].old_surplus == 50 and again.changes[0].drop_fraction == 0.0


def test_a_backup_is_named_by_the_time_it_is_given() -> None:
    decision = decide(
        frame(RunKind(FULL, ""), backup={"keep": 1}),
        Measured(rebuilt(p0=(10, 10)), {"0": PartitionCounts(10, 10)}),
        WHEN,
    )

    create, comment, replace_partition = decision.backup
    assert "_20260615T120000000000_r1`" in create.text and '"takenAt": "2026-06-15T12:00:00+00:00"' in comment.text
    assert "REPLACE PARTITION ID '0'" in replace_partition.text
