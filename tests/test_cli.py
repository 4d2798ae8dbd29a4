"""The command line: every command is listed, and its own help shows its own options."""

from __future__ import annotations

import pytest

from tablerefresh.cli import COMMANDS, main


def test_every_command_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("refresh", "--summary-file"),
        ("restore", "--run"),
        ("dedupe", "--slice-only"),
        ("demo", "--fills"),
        ("mutations", "--kill-older-than"),
        ("render", "-f"),
        ("serve", "--data-dir"),
    ],
)
def test_a_command_help_shows_its_options(capsys: pytest.CaptureFixture[str], command: str, option: str) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert option in capsys.readouterr().out


def test_a_missing_required_option_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["restore", "-f", "x.yaml"])
    assert done.value.code == 2
    assert "--run" in capsys.readouterr().err
