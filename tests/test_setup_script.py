"""``scripts/setup`` ends by saying how to reach the kubectl plugin (issue 21, point 5): kubectl runs
``kubectl-tablerefresh`` only when it is on PATH, and pip puts it in ``.venv/bin``.

The script runs on a copy of it beside a stand-in ``.venv`` (a pip that installs nothing, the plugin a
script), so the test needs no network; the lines it prints are then followed as a user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import repo_root

PLUGIN = "#!/bin/sh\necho plugin ran: \"$@\"\n"


def stand_in(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(repo_root() / "scripts" / "setup", root / "scripts" / "setup")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    nothing = "#!/bin/sh\nexit 0\n"
    for name, text in (("python", nothing), ("pip", nothing), ("kubectl-tablerefresh", PLUGIN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return root


def run_setup(root: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp")},
    )


def test_setup_says_how_to_put_the_plugin_on_path_and_that_works(tmp_path: Path) -> None:
    root = stand_in(tmp_path)
    done = run_setup(root, "/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    bin_dir = root.resolve() / ".venv" / "bin"
    lines = done.stderr.splitlines()
    assert lines[-3].startswith("for 'kubectl tablerefresh', put .venv/bin on your PATH")
    export = lines[-2].strip()
    assert export == f'export PATH="{bin_dir}:$PATH"'
    assert lines[-1] == f"or run the plugin by its full path: {bin_dir}/kubectl-tablerefresh status"

    # The printed line, as the user pastes it: the plugin is then found, and kubectl (if here) runs it.
    found = subprocess.run(
        ["bash", "-c", f"{export} && command -v kubectl-tablerefresh && kubectl-tablerefresh status"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert found.stdout.splitlines() == [f"{bin_dir}/kubectl-tablerefresh", "plugin ran: status"]
    if shutil.which("kubectl"):
        ran = subprocess.run(
            ["bash", "-c", f"{export} && kubectl tablerefresh status"], capture_output=True, text=True, timeout=60
        )
        assert ran.stdout.strip() == "plugin ran: status", ran.stderr

    # Once it is on PATH, setup says so instead.
    again = run_setup(root, f"{bin_dir}:/usr/bin:/bin")
    assert again.stderr.splitlines()[-1] == "kubectl tablerefresh is ready (.venv/bin is on your PATH)"
