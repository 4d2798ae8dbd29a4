"""What a refresh Job shows of an error (issue 24): printable text, without the credentials' values.

The Job gets CLICKHOUSE_USER and CLICKHOUSE_PASSWORD from a Secret its TableRefresh's author may not
read, and its summary goes to status, its log to whoever may read its Pod. Here a source query names
the credentials' values, so the server's error quotes them, as it quotes a user name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.cli import main
from tests.commands import write_manifest

USER = "zz_tenant_token_0123456789"
PASSWORD = "pw_hunter2_abcdef"


def test_the_jobs_summary_stderr_and_log_carry_no_credential(
    ch: Client,
    loaded: str,
    chdb_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CLICKHOUSE_USER", USER)
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", PASSWORD)
    query = f"SELECT id, resolved_at, value, updated_at, {USER} + {PASSWORD} AS x, '\x1b[2J' AS y FROM src"
    manifest = write_manifest(tmp_path, chdb_url, loaded, source={"query": query})
    summary_file = tmp_path / "termination-log"

    code = main(["refresh", "-f", str(manifest), "--summary-file", str(summary_file)])
    logging.getLogger("tablerefresh").info("connected as %s", USER)  # as a log line of the run could

    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert code == 2 and summary["reason"] == "InvalidSpec", summary
    assert summary["error"].startswith("the source query does not compile"), summary["error"]
    assert "***" in summary["error"]
    for shown in (out.out, out.err, summary_file.read_text(), caplog.text):
        assert USER not in shown and PASSWORD not in shown
    assert "\x1b" not in summary["error"] and "\x1b" not in out.err
