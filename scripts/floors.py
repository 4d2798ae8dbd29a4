"""Print a pip constraints file pinning every dependency of pyproject.toml to its floor.

``name>=X`` becomes ``name==X``: installing with these constraints gives the lowest versions the
project says it supports, which scripts/test-floors then tests. So each floor in pyproject.toml is a
released version (``kubernetes>=37.0.0``, not ``>=37``, which ``==37`` would not find). A requirement
without a ``>=`` floor is left free (and named on stderr).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    found = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        found.extend(extra)
    return found


def floors(requirements: list[str]) -> tuple[dict[str, str], list[str]]:
    pinned: dict[str, str] = {}
    free: list[str] = []
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        if match is None:
            free.append(requirement)
            continue
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        pinned[name] = max(pinned.get(name, match.group(3)), match.group(3), key=_version_key)
    return pinned, free


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    pinned, free = floors(requirements(root / "pyproject.toml"))
    for requirement in free:
        print(f"floors: no >= floor, left free: {requirement}", file=sys.stderr)
    for name, version in sorted(pinned.items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
