"""A ``chdb://`` URL that names no embedded database (issue 21, point 2).

Every command that works on a table refuses it before opening anything, with "no embedded database
at …" and exit code 2, and creates nothing: opening a path would create an engine there. Only
``demo`` and ``serve`` make a database where there is none. ``chdb:/srv/x`` (one slash) is no chdb
URL at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tablerefresh.cli import main
from tests.commands import write_manifest

COMMANDS = [
    ["refresh"],
    ["plan"],
    ["history"],
    ["verify"],
    ["backups"],
    ["restore", "--run", "x"],
    ["dedupe"],
    ["mutations"],
    ["mutations", "--kill-older-than", "1m"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_a_path_with_no_database_is_refused_and_nothing_is_created(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, f"chdb://{tmp_path}/in-manifest/chdb", "polymarket")
    for url, missing in (
        (f"chdb://{tmp_path}/nope/chdb", tmp_path / "nope"),
        ("chdb://relative/missing", tmp_path / "relative"),  # relative to the working directory
        (None, tmp_path / "in-manifest"),  # the manifest's own URL
    ):
        extra = ["--clickhouse", url] if url else []
        code = main([command[0], "-f", str(manifest), *extra, *command[1:]])
        out, err = capsys.readouterr()
        assert code == 2, (url, out, err)
        assert f"error: no embedded database at {missing}" in err
        assert not missing.exists()
        if command[0] == "refresh":  # the Job's summary says the same
            summary = json.loads(out.strip().splitlines()[-1])
            assert summary["reason"] == "InvalidSpec" and summary["error"].startswith("no embedded database at")


@pytest.mark.parametrize("command", [["refresh"], ["history"]])
def test_one_slash_is_not_a_chdb_url(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, "chdb:///unused", "polymarket")
    code = main([command[0], "-f", str(manifest), "--clickhouse", f"chdb:{tmp_path}/x"])
    assert code == 2
    assert f"chdb:{tmp_path}/x is not a chdb URL" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
