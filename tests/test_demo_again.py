"""``tablerefresh demo`` run again (issue 21, point 4), and the manifest it writes (point 10).

The demo drops and recreates its database: it does so only in a directory that holds nothing but an
earlier demo, says what it replaces, and refuses any other directory, saying what it found and
leaving it as it was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tablerefresh.demo import MANIFEST_HEADER
from tablerefresh.workloads import polymarket
from tests.conftest import repo_root, require


def demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tablerefresh", "demo", "--fills", "2000", "--data-dir", str(data_dir)],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def engine_sql(path: Path, *statements: str) -> str:
    """Statements on the embedded engine at ``path``, in a process of its own (one engine path per
    process: the tests' own engine is open in this one); the last one's rows, as text."""
    script = (
        "import sys, clickhouse_connect\n"
        "c = clickhouse_connect.get_client(dsn='chdb://' + sys.argv[1])\n"
        "out = None\n"
        "for s in sys.argv[2:]:\n"
        "    out = c.query(s).result_rows\n"
        "print(out)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), *statements], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_second_demo_replaces_the_first_and_says_what_it_replaced(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine")
    data_dir = tmp_path / "demo"
    first = demo(data_dir)
    assert first.returncode == 0, first.stderr
    assert "replacing" not in first.stdout

    again = demo(data_dir)

    assert again.returncode == 0, again.stderr
    [line] = [x for x in again.stdout.splitlines() if x.startswith("replacing the earlier demo in")]
    assert "its manifest tablerefresh.yaml and its database polymarket" in line
    assert "pm_canonical_fills_v4 2,000 rows" in line and "2 recorded run(s)" in line
    # What it wrote is the demo's own again, the source query a block scalar a person can edit.
    text = (data_dir / "tablerefresh.yaml").read_text()
    assert text.startswith(MANIFEST_HEADER)
    assert "\n    query: |\n      -- Rules 1-9" in text and "\\n" not in text
    assert yaml.safe_load(text)["spec"]["source"]["query"] == polymarket.source_query()


def test_a_directory_with_anything_but_an_earlier_demo_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    require("chdb", "the embedded ClickHouse engine")
    files = tmp_path / "files"
    files.mkdir()
    (files / "positions.csv").write_text("1,2\n")
    done = demo(files)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --data-dir")
    assert "holds positions.csv, which no earlier demo wrote" in done.stderr
    assert sorted(p.name for p in files.iterdir()) == ["positions.csv"]

    # An earlier demo's directory where someone has since kept a table of their own.
    data_dir = tmp_path / "demo"
    assert demo(data_dir).returncode == 0
    engine = data_dir / "chdb"
    engine_sql(
        engine,
        "CREATE TABLE polymarket.mine (x UInt8) ENGINE = MergeTree ORDER BY x",
        "INSERT INTO polymarket.mine VALUES (1)",
    )
    done = demo(data_dir)
    assert done.returncode == 2
    assert "holds polymarket.mine, besides an earlier demo's database" in done.stderr
    assert engine_sql(engine, "SELECT count() FROM polymarket.mine") == "[(1,)]"
    assert engine_sql(engine, "SELECT count() FROM polymarket._tablerefresh_runs") == "[(2,)]"

    # The engine's own directory given as the data directory: not a demo's.
    done = demo(engine)
    assert done.returncode == 2 and "which no earlier demo wrote" in done.stderr
