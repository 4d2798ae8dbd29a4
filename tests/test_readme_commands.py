"""README.md's commands, as written, in order: "Try it" and "Running a refresh by hand".

The commands are read from README.md itself, so README and code cannot drift apart unnoticed.
`scripts/test` is left out: it is what runs this test.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import repo_root, require

SECTIONS = ("## Try it", "## Running a refresh by hand")
RUNS_THE_TESTS = "scripts/test"


def readme_commands(text: str, heading: str) -> list[str]:
    """The shell lines of the section's ```sh blocks, without their trailing comments."""
    section = text[text.index(heading) :]
    section = section[: section.find("\n## ", len(heading))]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_the_readme_sections_have_commands() -> None:
    text = (repo_root() / "README.md").read_text()
    assert readme_commands(text, "## Try it")[0].startswith("scripts/setup && .venv/bin/tablerefresh demo")
    assert len(readme_commands(text, "## Running a refresh by hand")) >= 3


@pytest.mark.slow
def test_every_command_of_try_it_and_running_by_hand_exits_0() -> None:
    require("chdb", "the embedded ClickHouse engine")
    text = (repo_root() / "README.md").read_text()
    commands = [c for heading in SECTIONS for c in readme_commands(text, heading) if c != RUNS_THE_TESTS]
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=repo_root(), capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
