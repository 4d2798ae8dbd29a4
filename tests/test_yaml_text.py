"""YAML written for people (issue 21, point 10): long strings as block scalars, not escaped lines.

The demo's manifest (``tests/test_demo_again.py`` checks the file it writes) and ``tablerefresh
render`` write them so; what they write loads back to the same document.
"""

from __future__ import annotations

import pytest
import yaml

from tablerefresh.cli import main
from tablerefresh.controller.policy.cronjob import render_cronjob
from tablerefresh.spec import load_manifest
from tablerefresh.text import yaml_text
from tablerefresh.workloads import polymarket

UID = "11111111-2222-3333-4444-555555555555"


def test_a_query_of_several_lines_is_a_block_scalar_and_loads_back_the_same() -> None:
    document = {"spec": {"source": {"query": polymarket.source_query()}, "window": "24h", "short": "x"}}
    text = yaml_text(document)
    assert "    query: |\n      -- Rules 1-9" in text
    assert "\\n" not in text and "\\ " not in text
    assert yaml.safe_load(text) == document
    assert "  window: 24h\n" in text  # short strings stay plain
    # Where a block cannot hold the text exactly (a line ending in spaces), a quoted scalar does.
    awkward = {"q": "SELECT 1  \nFROM t"}
    assert yaml.safe_load(yaml_text(awkward)) == awkward


def test_render_writes_the_manifest_env_as_a_block_scalar(capsys: pytest.CaptureFixture[str]) -> None:
    path = polymarket.manifest_path()
    assert main(["render", "-f", str(path), "--owner-uid", UID]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == render_cronjob(load_manifest(path), owner_uid=UID)
    lines = out.splitlines()
    at = lines.index("            - name: TABLEREFRESH_MANIFEST")
    assert lines[at + 1].strip() == "value: |-"
    assert lines[at + 2].strip().startswith('{"apiVersion":"tablerefresh.dev/v1alpha1"')
