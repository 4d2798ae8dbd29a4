"""Dependency floors and the image's lock (issue 13).

Each floor in pyproject.toml is a released version that scripts/test-floors installs exactly (CI runs
the suite on them); image.lock pins everything the image installs, within pyproject's ranges, and the
Dockerfile installs under it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import floors  # noqa: E402  (scripts/floors.py)

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCK = ROOT / "image.lock"


def lock() -> dict[str, str]:
    pinned: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned with ==: {line}"
            pinned[canonicalize_name(name)] = version.strip()
    return pinned


def test_every_floor_is_a_full_version_that_pip_can_pin() -> None:
    for requirement in floors.requirements(ROOT / "pyproject.toml"):
        if requirement.startswith("types-"):
            continue  # stubs: any version
        match = re.search(r">=\s*([0-9][^,;\s]*)", requirement)
        assert match, f"no >= floor: {requirement}"
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", match.group(1)), f"floor is not a released version: {requirement}"


def test_the_floors_constraints_pin_each_floor() -> None:
    pinned, free = floors.floors(["kubernetes>=37.0.0", "chdb>=4.1.7", "chdb>=4.0.0", "types-PyYAML"])
    assert pinned == {"kubernetes": "37.0.0", "chdb": "4.1.7"}  # the higher of two floors of one package
    assert free == ["types-PyYAML"]


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pinned = lock()
    for text in PROJECT["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"image.lock has no {name}: run scripts/lock-image"
        assert requirement.specifier.contains(pinned[name]), f"image.lock {name}=={pinned[name]} outside {requirement}"
    build = Requirement(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"][0])
    assert build.specifier.contains(pinned["setuptools"]), "the build backend is pinned too"
    assert "chdb" not in pinned and "pytest" not in pinned  # the embedded engine and the tests stay out


def test_the_dockerfile_installs_under_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md image.lock ./" in dockerfile
    assert "ENV PIP_CONSTRAINT=/src/image.lock" in dockerfile
    assert dockerfile.index("PIP_CONSTRAINT") < dockerfile.index("pip install")
    assert "!image.lock" in (ROOT / ".dockerignore").read_text().splitlines()
