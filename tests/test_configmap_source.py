"""A long source query kept out of the TableRefresh (issue 21, point 12): ``spec.source.configMapKeyRef``,
as ``manifests/examples/configmap-source.yaml`` shows (the README's quick start applies it).

The CronJob maps the ConfigMap's key into the Job's ``TABLEREFRESH_SOURCE_QUERY``, so ``kubectl
describe tr`` shows a reference instead of the query, and the Job runs the same refresh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from tablerefresh.cli import main
from tablerefresh.commands._target import SOURCE_QUERY_ENV
from tablerefresh.controller.policy.cronjob import render_cronjob
from tablerefresh.spec import load_manifest, parse_manifest
from tablerefresh.text import yaml_text
from tablerefresh.workloads import polymarket
from tests import refresh_fixtures as fx
from tests.commands import write_manifest
from tests.conftest import repo_root

EXAMPLE = repo_root() / "manifests" / "examples" / "configmap-source.yaml"
UID = "11111111-2222-3333-4444-555555555555"


def documents() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d}


def test_the_example_keeps_the_query_in_a_configmap_and_the_job_reads_it_from_there() -> None:
    docs = documents()
    config_map, tr = docs["ConfigMap"], docs["TableRefresh"]
    ref = tr["spec"]["source"]["configMapKeyRef"]
    assert "query" not in tr["spec"]["source"]
    assert "{window_start:DateTime}" in config_map["data"][ref["key"]]
    assert config_map["metadata"]["name"] == ref["name"]

    container = render_cronjob(parse_manifest(tr, origin=str(EXAMPLE)), owner_uid=UID)["spec"]["jobTemplate"]["spec"][
        "template"
    ]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env[SOURCE_QUERY_ENV]["valueFrom"] == {"configMapKeyRef": ref}
    assert "SELECT" not in env["TABLEREFRESH_MANIFEST"]["value"]  # the query is not in the Job's manifest either

    # What `kubectl describe tr` shows of the spec: a few dozen lines, against hundreds inline.
    inline = load_manifest(polymarket.manifest_path())
    inline_lines = len(yaml_text(inline.model_dump(mode="json", by_alias=True)["spec"]).splitlines())
    assert len(yaml_text(tr["spec"]).splitlines()) < 60 < 200 < inline_lines


def test_a_refresh_reads_its_query_from_the_variable_the_configmap_fills(
    ch: Client,
    loaded: str,
    chdb_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest = write_manifest(tmp_path, chdb_url, loaded)
    document = yaml.safe_load(manifest.read_text())
    document["spec"]["source"] = {"configMapKeyRef": {"name": "positions-query", "key": "query.sql"}}
    manifest.write_text(yaml.safe_dump(document))
    monkeypatch.setenv(SOURCE_QUERY_ENV, fx.SOURCE)  # as the CronJob maps the key into the Job's env
    code = main(["refresh", "-f", str(manifest)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["outcome"] == "Succeeded", summary
    assert summary["sliceRowsAfter"] == fx.checksum(ch, "positions")[0] > 0
