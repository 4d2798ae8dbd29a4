"""Connection URLs and failures: pure functions, no server needed."""

from __future__ import annotations

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tablerefresh.dataplane.connection import describe_failure, redact


def test_redact_hides_the_password_only() -> None:
    assert redact("clickhouse://ana:s3cret@db:8123/x") == "clickhouse://ana:***@db:8123/x"
    assert redact("https://db:8443") == "https://db:8443"


def test_refused_credentials_are_told_apart_from_an_unreachable_server() -> None:
    auth = DatabaseError("Code: 516. DB::Exception: ana: Authentication failed", code=516, name="AUTHENTICATION_FAILED")
    down = OperationalError("Error HTTPConnectionPool(host='db', port=8123): Connection refused")
    url = "clickhouse://ana:s3cret@db:8123"
    assert describe_failure(auth, url).startswith("ClickHouse refused the credentials at clickhouse://ana:***@db:8123")
    assert describe_failure(down, url).startswith("cannot reach ClickHouse at clickhouse://ana:***@db:8123")
    assert "s3cret" not in describe_failure(auth, url) + describe_failure(down, url)
