"""Invalid TableRefresh manifests, each a different mistake, with the field the rejection must name.

The same cases run against the API server in test_controller_kube.py; here the model, which the
CRD is generated from, must reject them too (where the check is one the model can make).
"""

from __future__ import annotations

import copy

import pytest

from tablerefresh.spec import ManifestError, parse_manifest
from tests.invalid_manifests import CASES, VALID, Invalid


def test_at_least_twelve_distinct_mistakes() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 12
    assert sum(c.model_rejects for c in CASES) >= 12


def test_the_valid_manifest_is_valid() -> None:
    parse_manifest(copy.deepcopy(VALID))


@pytest.mark.parametrize("case", [c for c in CASES if c.model_rejects], ids=lambda c: c.id)
def test_the_model_rejects_it_naming_the_field(case: Invalid) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(case.manifest())
    named = case.field.split("[")[0]  # pydantic writes list indexes as .1, the API server as [1]
    assert named in str(info.value)
