"""Strategy RefreshableView, pure: the view's DDL, what a change of spec runs, and the runs a
``system.view_refreshes`` row says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tablerefresh.dataplane.infra.errors import InvalidInput
from tablerefresh.dataplane.view import definition
from tablerefresh.dataplane.view.definition import ViewDefinition, ViewNotOwned, changes, read_comment, view_name
from tablerefresh.dataplane.view.refreshes import unseen, view_state
from tablerefresh.view_schedule import refresh_every

QUERY = "SELECT wallet, sum(amount) AS total FROM db.fills GROUP BY wallet -- all of it"


def view(schedule: str = "0 */6 * * *", query: str = QUERY, target: str = "totals", **more: object) -> ViewDefinition:
    return ViewDefinition("db", target, query, refresh_every(schedule), "ns/daily-totals", **more)  # type: ignore[arg-type]


def test_the_view_is_created_refreshing_into_the_target_with_its_owner() -> None:
    statement = definition.create(view("5 * * * *", randomize_for_seconds=1800, depends_on=("_tablerefresh_view_a",)))
    assert statement.text == (
        "CREATE MATERIALIZED VIEW `db`.`_tablerefresh_view_daily_totals`\n"
        "REFRESH EVERY 1 HOUR OFFSET 5 MINUTE RANDOMIZE FOR 30 MINUTE DEPENDS ON `db`.`_tablerefresh_view_a`\n"
        "TO `db`.`totals`\n"
        f"AS\n{QUERY}\n"  # on lines of its own: the trailing comment ends with its line
        f"COMMENT 'tablerefresh owner=ns/daily-totals target=totals query={view().query_digest()} "
        "refresh=EVERY 1 HOUR OFFSET 5 MINUTE "
        "RANDOMIZE FOR 30 MINUTE DEPENDS ON `db`.`_tablerefresh_view_a`'"
    )
    assert statement.parameters is None


def test_a_new_view_is_created() -> None:
    assert [s.text.split("\n")[0] for s in changes(view(), None)] == [
        "CREATE MATERIALIZED VIEW `db`.`_tablerefresh_view_daily_totals`"
    ]


def test_the_same_view_needs_nothing() -> None:
    desired = view()
    assert changes(desired, read_comment(desired.comment())) == []


def test_a_schedule_change_modifies_the_refresh_and_no_more() -> None:
    before, after = view("0 */6 * * *"), view("30 * * * *")
    texts = [s.text for s in changes(after, read_comment(before.comment()))]
    assert texts[0] == "ALTER TABLE `db`.`_tablerefresh_view_daily_totals` MODIFY REFRESH EVERY 1 HOUR OFFSET 30 MINUTE"
    assert texts[1].startswith(
        "ALTER TABLE `db`.`_tablerefresh_view_daily_totals` MODIFY COMMENT 'tablerefresh owner=ns/daily-totals"
    )
    assert len(texts) == 2


def test_a_query_change_modifies_the_query() -> None:
    query = "SELECT wallet, count() AS total FROM db.fills GROUP BY wallet -- counted"
    before, after = view(), view(query=query)
    statement, comment = changes(after, read_comment(before.comment()))
    assert statement.text == f"ALTER TABLE `db`.`_tablerefresh_view_daily_totals` MODIFY QUERY\n{query}\n"
    assert "MODIFY COMMENT" in comment.text and after.query_digest() in comment.text


def test_a_target_change_replaces_the_view_in_one_statement() -> None:
    before, after = view(), view(target="totals_v2")
    (statement,) = changes(after, read_comment(before.comment()))
    assert statement.text.startswith("CREATE OR REPLACE MATERIALIZED VIEW `db`.`_tablerefresh_view_daily_totals`\n")
    assert "TO `db`.`totals_v2`" in statement.text


def test_a_view_of_another_owner_is_refused_never_replaced() -> None:
    theirs = ViewDefinition("db", "totals", QUERY, refresh_every("@hourly"), "other/daily-totals")
    with pytest.raises(ViewNotOwned, match="belongs to other/daily-totals, not ns/daily-totals"):
        changes(view(), read_comment(theirs.comment()))


@pytest.mark.parametrize(
    "comment", ["", "made by hand", "tablerefresh owner=x target=t query=short refresh=EVERY 1 DAY"]
)
def test_a_comment_not_ours_reads_as_none(comment: str) -> None:
    assert read_comment(comment) is None


def test_a_query_with_parameters_is_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot use query parameters"):
        view(query="SELECT 1 AS x WHERE {run_time:DateTime} > 0")


def test_the_view_is_named_after_the_tablerefresh_or_its_hash_when_long() -> None:
    long = "t" * 128
    assert view_name("pm-trades.v2") == "_tablerefresh_view_pm_trades_v2"
    assert view_name(long).startswith("_tablerefresh_view_") and len(view_name(long)) < 128
    assert view_name(long) != view_name("t" * 127 + "u")


@pytest.mark.parametrize(
    ("verb", "text"), [("REFRESH", "SYSTEM REFRESH VIEW `db`.`v`"), ("STOP", "SYSTEM STOP VIEW `db`.`v`")]
)
def test_system_statements(verb: str, text: str) -> None:
    assert definition.system(verb, "db", "v").text == text
    with pytest.raises(ValueError):
        definition.system("DROP", "db", "v")


def test_drop() -> None:
    assert definition.drop("db", "v").text == "DROP VIEW IF EXISTS `db`.`v` SYNC"


# system.view_refreshes


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 1, 2, hour, minute, second)


def test_a_successful_refresh_is_the_last_run() -> None:
    row = {
        "status": "Scheduled",
        "last_success_time": at(6),
        "last_success_duration_ms": 2500,
        "last_refresh_time": at(6, 0, 2),
        "next_refresh_time": at(12),
        "exception": "",
        "written_rows": 42,
    }
    state = view_state(row)
    assert state.next_run_time == at(12).replace(tzinfo=UTC) and not state.stopped
    assert state.last is not None
    assert (state.last.outcome, state.last.started_at, state.last.duration_seconds, state.last.written_rows) == (
        "Succeeded",
        at(6).replace(tzinfo=UTC),
        2.5,
        42,
    )
    assert state.last.finished_at == datetime(2026, 1, 2, 6, 0, 2, 500000, tzinfo=UTC)


def test_a_failed_refresh_carries_the_servers_error_and_keeps_the_last_success() -> None:
    row = {
        "status": "Scheduled",
        "last_success_time": at(0),
        "last_success_duration_ms": 100,
        "last_refresh_time": at(6, 0, 1),
        "next_refresh_time": at(6, 0, 31),  # a retry
        "exception": "Code: 60. DB::Exception: Unknown table db.gone\x1b[31m\nstack",
        "written_rows": 0,
    }
    state = view_state(row)
    assert state.last is not None and state.last.outcome == "Failed"
    assert (
        state.last.message == "Code: 60. DB::Exception: Unknown table db.gone [31m"
    )  # one line, no control characters
    assert state.last.started_at is None and state.last_success_time == at(0).replace(tzinfo=UTC)


def test_a_view_never_refreshed_has_no_last_run_and_a_stopped_one_says_so() -> None:
    state = view_state({"status": "Disabled", "last_success_time": None, "last_refresh_time": None, "exception": ""})
    assert state.last is None and state.stopped and state.next_run_time is None


def test_each_attempt_is_recorded_once() -> None:
    state = view_state(
        {"status": "Scheduled", "last_success_time": at(6), "last_success_duration_ms": 0, "exception": ""}
    )
    assert state.last is not None
    first = unseen(state, set())
    assert first is not None and first.run_id == "view-20260102T060000"
    assert unseen(state, {first.run_id}) is None
