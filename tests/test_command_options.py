"""What the commands offer, and what they say it does (issue 21, point 9).

- ``--min-slice-rows`` only where the threshold is checked (``refresh``, ``plan``);
- every command that works on a table takes ``--json`` (``refresh``'s summary is JSON anyway);
- each ``kubectl tablerefresh`` help page opens with a line saying what the command does;
- ``spec.backup.keep`` governs every backup of the target, dedupe's and restore's included.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tablerefresh.cli import main
from tablerefresh.dataplane.operations import backups
from tablerefresh.dataplane.run.runs import Outcome
from tablerefresh.plugin.main import main as plugin_main
from tests import crash_helper
from tests import refresh_fixtures as fx
from tests.commands import cli, write_manifest

TABLE_COMMANDS = ("refresh", "plan", "verify", "history", "backups", "restore", "dedupe", "mutations")
THRESHOLD_COMMANDS = {"refresh", "plan"}


def help_page(run: Callable[[list[str]], int], command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        run([command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", TABLE_COMMANDS)
def test_min_slice_rows_only_where_it_means_something_and_json_everywhere(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    page = help_page(main, command, capsys)
    assert ("--min-slice-rows" in page) == (command in THRESHOLD_COMMANDS)
    assert "--json" in page
    if command not in THRESHOLD_COMMANDS:
        with pytest.raises(SystemExit) as refused:
            main([command, "-f", "x.yaml", *(["--run", "r"] if command == "restore" else []), "--min-slice-rows", "1"])
        assert refused.value.code == 2
        assert "unrecognized arguments: --min-slice-rows" in capsys.readouterr().err


def test_refresh_json_prints_the_summary(
    loaded: str, chdb_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path, chdb_url, loaded)
    code = main(["refresh", "-f", str(manifest), "--json", "--min-slice-rows", "1"])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and summary["outcome"] == "Succeeded" and summary["kind"] == "Full"


@pytest.mark.parametrize("command", ["status", "run-now", "suspend", "resume", "history"])
def test_each_plugin_help_page_opens_with_what_the_command_does(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    page = help_page(plugin_main, command, capsys)
    usage, _, rest = page.partition("\n\n")
    assert usage.startswith(f"usage: kubectl tablerefresh {command}")
    description = rest.splitlines()[0]
    assert description and not description.startswith(("positional", "options"))


@pytest.mark.parametrize("keep", [0, 1])
def test_backup_keep_counts_the_backups_of_dedupe_and_restore_too(
    keep: int,
    ch: Client,
    connect: Callable[[], Client],
    loaded: str,
    chdb_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    the_spec = fx.spec(loaded, backup={"keep": keep})
    manifest = write_manifest(tmp_path, chdb_url, loaded, backup={"keep": keep})
    assert fx.run(connect, the_spec).outcome == Outcome.SUCCEEDED
    code, deduped = cli(capsys, "dedupe", "-f", str(manifest), "--json")
    assert code == 0, deduped
    # dedupe takes a backup whatever keep says: it is its undo
    assert deduped["runId"] in [b.run_id for b in backups.list_backups(ch, loaded, "positions")]
    crash_helper.change(ch, loaded)

    record = fx.run(connect, the_spec)

    assert record.outcome == Outcome.SUCCEEDED, record.error
    kept = [b.run_id for b in backups.list_backups(ch, loaded, "positions")]
    assert kept == ([] if keep == 0 else [record.run_id])
    code, text = cli(capsys, "backups", "-f", str(manifest))
    assert code == 0 and (("no backups of" in text) == (keep == 0))
