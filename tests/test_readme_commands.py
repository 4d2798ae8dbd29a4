"""README.md's commands, as written, in order, and the shape of the documentation.

The commands are read from README.md itself, so README and code cannot drift apart unnoticed: "Try it"
and "Running a refresh by hand" run on the embedded engine, "On Kubernetes" against the test control
plane, and no other section may show a command in a ```sh block that no test runs. `scripts/test` is
left out: it is what runs this test. README stays short (at most 300 lines, the rest in docs/), and
every relative link in README.md, docs/*.md, bench/README.md and ARCHITECTURE.md leads to a file, and to a heading of
it, that exists.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import repo_root, require

SECTIONS = ("## Try it", "## Running a refresh by hand")
KUBERNETES = "## On Kubernetes"
RUNS_THE_TESTS = "scripts/test"
MAX_README_LINES = 300


def sh_commands(text: str) -> list[str]:
    """The shell lines of the text's ```sh blocks, without their trailing comments."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def readme_commands(text: str, heading: str) -> list[str]:
    """The shell lines of the section's ```sh blocks, without their trailing comments."""
    section = text[text.index(heading) :]
    section = section[: section.find("\n## ", len(heading))]
    return sh_commands(section)


def readme() -> str:
    return (repo_root() / "README.md").read_text()


def test_the_readme_sections_have_commands() -> None:
    text = readme()
    assert readme_commands(text, "## Try it")[0].startswith("scripts/setup && .venv/bin/tablerefresh demo")
    assert len(readme_commands(text, "## Running a refresh by hand")) >= 3
    assert readme_commands(text, KUBERNETES)[0].startswith("kubectl apply")


def test_every_command_readme_shows_is_run_by_a_test() -> None:
    text = readme()
    run = {c for heading in (*SECTIONS, KUBERNETES) for c in readme_commands(text, heading)}
    assert RUNS_THE_TESTS in run
    assert [c for c in sh_commands(text) if c not in run] == []


@pytest.mark.slow
def test_every_command_of_try_it_and_running_by_hand_exits_0() -> None:
    require("chdb", "the embedded ClickHouse engine")
    text = readme()
    commands = [c for heading in SECTIONS for c in readme_commands(text, heading) if c != RUNS_THE_TESTS]
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=repo_root(), capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def unserved_kinds(controlplane: Any) -> set[str]:
    """Of the kinds `manifests/base` holds, those the cluster does not serve.

    The test control plane serves only the built-in kinds the operator touches (see
    tests/controlplane/README.md): not the operator's own Deployment and Service, which
    tests/test_manifests.py validates against Kubernetes' schema instead.
    """
    served = set(controlplane.kubectl("api-resources", "-o", "name").stdout.split())
    return {kind for kind, name in (("Deployment", "deployments.apps"), ("Service", "services")) if name not in served}


def only_unserved_kinds_failed(stderr: str, unserved: set[str]) -> bool:
    """Whether kubectl's only errors were kinds the cluster does not serve."""
    # kubectl's warnings are not errors (one says the CRD, which a test applied server-side, gets
    # its last-applied annotation now).
    noise = ("ensure CRDs are installed", "Warning: ")
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith(noise[1]) and noise[0] not in line]
    kinds = [re.search(r'^resource mapping not found .* no matches for kind "(\w+)"', line) for line in errors]
    return bool(errors) and all(kind is not None and kind.group(1) in unserved for kind in kinds)


def test_the_kubernetes_quick_start_runs_as_written(controlplane: Any) -> None:
    """Each kubectl line of "On Kubernetes", in order, by the test cluster's kubectl.

    Two things differ from a real cluster, and the test says which. The test control plane does not
    serve Deployments and Services, so `kubectl apply -k manifests/base` may fail on those two kinds
    only, every other object created. It runs no operator for the reference TableRefresh and has no
    ClickHouse at its URL: before `kubectl wait --for=condition=Ready`, the test writes the Ready
    condition the operator writes once a health check has found the table healthy, so that the wait
    is run as written and returns.
    """
    commands = readme_commands(readme(), KUBERNETES)
    assert all(c.startswith("kubectl ") for c in commands), commands
    if controlplane.kubectl("get", "namespace", "polymarket", check=False).returncode == 0:
        pytest.skip("namespace polymarket exists already: the quick start creates it")
    unserved = unserved_kinds(controlplane)
    try:
        for command in commands:
            args = shlex.split(command)[1:]
            if args[0] == "wait" and "--for=condition=Ready" in args:
                namespace = args[args.index("-n") + 1]
                name = next(a for a in args if a.startswith("tr/")).removeprefix("tr/")
                ready = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "all conditions are met",
                         "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
                patch = json.dumps({"status": {"conditions": [ready]}})
                controlplane.kubectl("patch", "tr", name, "-n", namespace, "--subresource=status", "--type=merge",
                                     "-p", patch)  # fmt: skip
            done = controlplane.kubectl(*args, check=False, timeout=120)
            said = f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            if done.returncode != 0 and only_unserved_kinds_failed(done.stderr, unserved):
                assert "customresourcedefinition.apiextensions.k8s.io/tablerefreshes.tablerefresh.dev" in done.stdout
                continue
            assert done.returncode == 0, said
            if args[:2] == ["get", "tr"]:
                assert "pm-trade-fifo-roi-unified" in done.stdout and "daily-volume" in done.stdout, said
    finally:
        # Leave the cluster to the other tests as it was, but for the CRD, which they use.
        root = repo_root()
        for file in ("manifests/examples/configmap-source.yaml", "examples/polymarket/tablerefresh.yaml",
                     "manifests/examples/clickhouse-credentials.yaml"):  # fmt: skip
            controlplane.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(root / file), check=False)
        built = controlplane.kubectl("kustomize", str(root / "manifests" / "base"), check=False).stdout
        kept = "\n---\n".join(d for d in built.split("\n---\n") if "kind: CustomResourceDefinition" not in d)
        controlplane.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", input=kept, check=False)
        controlplane.kubectl("delete", "namespace", "polymarket", "--ignore-not-found", "--wait=false", check=False)


def test_readme_is_at_most_300_lines() -> None:
    lines = readme().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines: move the detail to docs/"


def documents() -> list[Path]:
    root = repo_root()
    docs = sorted((root / "docs").glob("*.md"))
    return [root / "README.md", *docs, root / "bench" / "README.md", root / "ARCHITECTURE.md"]


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
        out.add(slug.replace(" ", "-"))
    return out


def test_every_relative_link_leads_to_a_file_that_exists() -> None:
    broken = []
    for doc in documents():
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.relative_to(repo_root())}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                broken.append(f"{doc.relative_to(repo_root())}: {target} (no such heading)")
    assert broken == []
