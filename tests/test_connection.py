"""Connection URLs and failures: pure functions, no server needed."""

from __future__ import annotations

from pathlib import Path

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from pytest import MonkeyPatch

from tablerefresh.dataplane.infra.connection import chdb_url, redact
from tablerefresh.dataplane.infra.errors import connect_failure


def test_redact_hides_the_password_only() -> None:
    assert redact("clickhouse://ana:s3cret@db:8123/x") == "clickhouse://ana:***@db:8123/x"
    assert redact("https://db:8443") == "https://db:8443"


def test_refused_credentials_are_told_apart_from_an_unreachable_server() -> None:
    auth = DatabaseError("Code: 516. DB::Exception: ana: Authentication failed", code=516, name="AUTHENTICATION_FAILED")
    down = OperationalError("Error HTTPConnectionPool(host='db', port=8123): Connection refused")
    where = redact("clickhouse://ana:s3cret@db:8123")
    assert str(connect_failure(auth, where, "x")).startswith(
        "ClickHouse refused the credentials at clickhouse://ana:***@db"
    )
    assert str(connect_failure(down, where, "x")).startswith("cannot reach ClickHouse at clickhouse://ana:***@db:8123")
    assert "s3cret" not in str(connect_failure(auth, where, "x")) + str(connect_failure(down, where, "x"))


def test_a_relative_chdb_path_is_taken_from_the_working_directory(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert chdb_url("chdb://.tablerefresh/demo/chdb") == f"chdb://{tmp_path}/.tablerefresh/demo/chdb"
    assert chdb_url("chdb:///abs/db") == "chdb:///abs/db"
