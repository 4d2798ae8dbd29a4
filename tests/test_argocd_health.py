"""The Argo CD health check for TableRefresh, run by a real Lua interpreter (Debian's lua5.4).

Argo CD runs manifests/argocd/health.lua with the object as the global `obj` and reads the table it
returns ({status = ..., message = ...}). The harness here does the same: the sample objects are turned
into Lua table literals by to_lua() (plain Lua has no JSON reader), and the script's result is printed.

manifests/argocd/argocd-cm-patch.yaml carries the same script; after editing health.lua, regenerate it with
    .venv/bin/python tests/test_argocd_health.py
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ARGOCD = ROOT / "manifests" / "argocd"
SCRIPT = ARGOCD / "health.lua"
PATCH = ARGOCD / "argocd-cm-patch.yaml"
KEY = "resource.customizations.health.tablerefresh.dev_TableRefresh"
EXAMPLE = ROOT / "manifests" / "examples" / "configmap-source.yaml"
K8S = "1.36.0"

PATCH_HEADER = """\
# Patch for Argo CD's argocd-cm ConfigMap: the health check of tablerefresh.dev/TableRefresh.
# The script is health.lua beside this file, verbatim (tests/test_argocd_health.py checks they are
# identical); edit health.lua, then regenerate this file with `.venv/bin/python tests/test_argocd_health.py`.
# Apply as a merge patch, which keeps argocd-cm's other keys:
#   kubectl patch configmap argocd-cm -n argocd --type merge --patch-file manifests/argocd/argocd-cm-patch.yaml
# or list it under `patches:` in the kustomization that installs Argo CD.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""

# Reads the object (a Lua chunk returning a table) and the script from the files named in arg, runs the
# script as Argo CD does, and prints the status and the message on two lines.
HARNESS = """\
obj = assert(loadfile(arg[1]))()
local hs = assert(loadfile(arg[2]))()
assert(type(hs) == "table", "the health script must return a table")
io.write(tostring(hs.status), "\\n", tostring(hs.message), "\\n")
"""

_LUA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_KEYWORDS = frozenset(
    [
        *("and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if"),
        *("in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"),
    ]
)


def to_lua(value: Any) -> str:
    """A Lua expression for a JSON-like value: objects and arrays become tables (arrays 1-based)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no Lua literal for {value}")
        return repr(value)
    if isinstance(value, str):
        return _lua_str(value)
    if isinstance(value, list | tuple):
        return "{" + ", ".join(to_lua(item) for item in value) + "}"
    if isinstance(value, dict):
        fields = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {key!r}")
            name = key if _LUA_NAME.match(key) and key not in _LUA_KEYWORDS else f"[{_lua_str(key)}]"
            fields.append(f"{name} = {to_lua(item)}")
        return "{" + ", ".join(fields) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _lua_str(text: str) -> str:
    """A double-quoted Lua string: quote and backslash escaped, control characters as decimal escapes.

    Anything else (UTF-8 included) goes in as it is: Lua strings are bytes, and the file is UTF-8.
    """
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\{ord(c):03d}" if ord(c) < 32 or ord(c) == 127 else c for c in text
    )
    return f'"{escaped}"'


def lua() -> str:
    found = shutil.which("lua5.4")
    if found is None:
        reason = "lua5.4 is not installed (Debian package lua5.4; scripts/system-deps installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    return found


def lua_eval(chunk: str, tmp_path: Path) -> str:
    """Run a Lua chunk that prints; return what it printed."""
    program = tmp_path / "chunk.lua"
    program.write_text(chunk, encoding="utf-8")
    result = subprocess.run([lua(), str(program)], capture_output=True, encoding="utf-8", timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def health(obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    """Run health.lua on obj, as Argo CD does; return (status, message)."""
    (tmp_path / "obj.lua").write_text("return " + to_lua(obj) + "\n", encoding="utf-8")
    (tmp_path / "harness.lua").write_text(HARNESS)
    result = subprocess.run(
        [lua(), str(tmp_path / "harness.lua"), str(tmp_path / "obj.lua"), str(SCRIPT)],
        capture_output=True,
        encoding="utf-8",
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.split("\n", 1)
    return status, message.removesuffix("\n")


# Sample objects: the example TableRefresh as the API server would hand it over, with a status.


def base() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "TableRefresh"]
    obj: dict[str, Any] = copy.deepcopy(docs[0])
    obj["metadata"].update(generation=3, uid="00000000-0000-0000-0000-000000000000")
    return obj


def condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 3,
    }


def with_status(
    obj: dict[str, Any], ready: dict[str, str] | None = None, *, observed: int | None = 3, checked: bool = True
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if observed is not None:
        status["observedGeneration"] = observed
    if checked:
        status["health"] = {"checkedAt": "2025-01-01T00:05:00Z", "staleHours": 1.5, "sliceRows": 1200}
    if ready is not None:
        status["conditions"] = [
            condition("Fresh", "True", "Fresh", "Newest row 1.5 h old"),
            condition("Ready", ready["status"], ready["reason"], ready.get("message", "")),
        ]
    obj = copy.deepcopy(obj)
    obj["status"] = status
    return obj


READY = {"status": "True", "reason": "AllChecksPassed", "message": "Fresh, duplicate-free and complete"}
NOT_READY = {"status": "False", "reason": "DataStale", "message": "Newest row is 12.0 h old (max 8 h)"}
UNKNOWN = {"status": "Unknown", "reason": "ClickHouseUnreachable", "message": "Connection refused"}


def suspended(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["spec"]["suspend"] = True
    return obj


# The four states


def test_healthy_when_observed_checked_and_ready(tmp_path: Path) -> None:
    assert health(with_status(base(), READY), tmp_path) == ("Healthy", READY["message"])


def test_degraded_on_ready_false_with_the_condition_message(tmp_path: Path) -> None:
    assert health(with_status(base(), NOT_READY), tmp_path) == ("Degraded", NOT_READY["message"])


def test_suspended_when_spec_suspend(tmp_path: Path) -> None:
    assert health(with_status(suspended(base()), READY), tmp_path) == (
        "Suspended",
        "TableRefresh is suspended (spec.suspend)",
    )


def test_progressing_while_the_generation_is_not_observed(tmp_path: Path) -> None:
    assert health(with_status(base(), READY, observed=2), tmp_path) == (
        "Progressing",
        "Waiting for the operator to observe generation 3 (observed 2)",
    )


def test_progressing_while_no_health_check_has_run(tmp_path: Path) -> None:
    assert health(with_status(base(), READY, checked=False), tmp_path) == (
        "Progressing",
        "Waiting for the first health check",
    )
    # A health block without checkedAt is no check either.
    obj = with_status(base(), READY)
    del obj["status"]["health"]["checkedAt"]
    assert health(obj, tmp_path)[0] == "Progressing"


# Edge cases and precedence


def test_no_status_at_all_is_progressing(tmp_path: Path) -> None:
    assert health(base(), tmp_path) == ("Progressing", "Waiting for the operator to reconcile the TableRefresh")


def test_empty_status_is_progressing(tmp_path: Path) -> None:
    assert health(with_status(base(), observed=None, checked=False), tmp_path)[0] == "Progressing"


def test_ready_unknown_is_progressing_never_healthy(tmp_path: Path) -> None:
    assert health(with_status(base(), UNKNOWN), tmp_path) == ("Progressing", "Ready is Unknown: Connection refused")


def test_checked_but_no_ready_condition_is_progressing(tmp_path: Path) -> None:
    assert health(with_status(base()), tmp_path) == ("Progressing", "Waiting for the Ready condition")


def test_ready_false_shows_even_before_the_first_check(tmp_path: Path) -> None:
    """A missing Secret sets Ready=False before any check: Degraded, not an endless Progressing."""
    missing = {"status": "False", "reason": "SecretNotFound", "message": 'Secret "clickhouse-credentials" not found'}
    assert health(with_status(base(), missing, checked=False), tmp_path) == ("Degraded", missing["message"])


def test_a_failed_run_stays_degraded_while_the_next_job_runs(tmp_path: Path) -> None:
    """argo-cd #24429: a CronJob shows Healthy again once the next Job starts. Ready stays False after a
    failed run until one succeeds, so the TableRefresh stays Degraded, with the run's error."""
    error = "Job trades-29000001 was aborted in 3.0s: audit no-negative-tokens: 12 failing row(s), at most 0 allowed"
    failed = {"status": "False", "reason": "AuditFailed", "message": error}
    obj = with_status(base(), failed)
    obj["status"]["conditions"].append(condition("LastRunSucceeded", "False", "AuditFailed", error))
    obj["status"]["active"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "trades-29000002"}]
    assert health(obj, tmp_path) == ("Degraded", f"{error} (Job trades-29000002 is running)")
    del obj["status"]["active"]
    assert health(obj, tmp_path) == ("Degraded", error)


def test_degraded_message_falls_back_to_the_reason(tmp_path: Path) -> None:
    assert health(with_status(base(), {"status": "False", "reason": "RefreshFailed"}), tmp_path) == (
        "Degraded",
        "RefreshFailed",
    )


def test_suspended_wins_over_degraded_and_over_no_check(tmp_path: Path) -> None:
    assert health(with_status(suspended(base()), NOT_READY), tmp_path)[0] == "Suspended"
    assert health(with_status(suspended(base()), checked=False), tmp_path)[0] == "Suspended"


def test_an_unobserved_suspend_is_still_progressing(tmp_path: Path) -> None:
    """Until the operator has seen spec.suspend, the CronJob still runs: not Suspended yet."""
    assert health(with_status(suspended(base()), READY, observed=2), tmp_path)[0] == "Progressing"


def test_suspend_false_is_not_suspended(tmp_path: Path) -> None:
    obj = with_status(base(), READY)
    obj["spec"]["suspend"] = False
    assert health(obj, tmp_path)[0] == "Healthy"


def test_an_observed_generation_ahead_is_not_progressing(tmp_path: Path) -> None:
    assert health(with_status(base(), READY, observed=4), tmp_path)[0] == "Healthy"


def test_no_metadata_generation_relies_on_the_status(tmp_path: Path) -> None:
    obj = with_status(base(), READY)
    del obj["metadata"]["generation"]
    assert health(obj, tmp_path)[0] == "Healthy"


def test_only_ready_decides_among_the_conditions(tmp_path: Path) -> None:
    obj = with_status(base(), READY)
    obj["status"]["conditions"].insert(0, condition("Fresh", "False", "DataStale", "old"))
    assert health(obj, tmp_path)[0] == "Healthy"


# The harness and the two copies of the script


def test_to_lua_round_trips_through_a_real_lua(tmp_path: Path) -> None:
    text = 'quote " backslash \\ newline \n tab \t é ☃ \x7f'
    value = {
        "s": text,
        "i": 3,
        "f": 1.5,
        "t": True,
        "n": False,
        "list": ["a", {"b": 2}],
        "weird-key": 1,
        "end": "keyword key",
    }
    chunk = (
        "local v = " + to_lua(value) + "\n"
        "io.write(v.s, '|', v.i, '|', v.f, '|', tostring(v.t), '|', tostring(v.n), '|', v.list[1], '|',"
        " v.list[2].b, '|', v['weird-key'], '|', v['end'], '|', #v.list)\n"
    )
    assert lua_eval(chunk, tmp_path) == "|".join([text, "3", "1.5", "true", "false", "a", "2", "1", "keyword key", "2"])


def test_the_script_is_plain_lua_5_1() -> None:
    """Argo CD runs gopher-lua (Lua 5.1): none of 5.2+'s syntax."""
    code = "\n".join(line.split("--", 1)[0] for line in SCRIPT.read_text().splitlines())
    for newer in ("goto", "::", "//", "<const>", "<close>", "&", "|", ">>", "<<"):
        assert newer not in code, newer


def test_the_argocd_cm_patch_holds_the_script_verbatim() -> None:
    patch = yaml.safe_load(PATCH.read_text())
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm" and patch["metadata"]["namespace"] == "argocd"
    assert list(patch["data"]) == [KEY]
    assert patch["data"][KEY] == SCRIPT.read_text()
    assert PATCH.read_text() == render_patch(), "run: .venv/bin/python tests/test_argocd_health.py"
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(patch, K8S, strict=True)


def render_patch() -> str:
    lines = SCRIPT.read_text().splitlines()
    body = "".join(("    " + line if line else "") + "\n" for line in lines)
    return PATCH_HEADER + f"  {KEY}: |\n" + body


if __name__ == "__main__":
    PATCH.write_text(render_patch())
    print(f"wrote {PATCH.relative_to(ROOT)}", file=sys.stderr)
