"""Where a run's source query comes from: the manifest, or the environment the Job was given."""

from __future__ import annotations

import os

from tablerefresh.contract import SOURCE_QUERY_ENV as SOURCE_QUERY_ENV
from tablerefresh.dataplane.errors import InvalidInput
from tablerefresh.spec import TableRefreshSpec


def source_query(spec: TableRefreshSpec) -> str:
    if spec.source.query is not None:
        return spec.source.query
    # configMapKeyRef: the CronJob maps the key into this variable, so the Job needs no API access.
    query = os.environ.get(SOURCE_QUERY_ENV, "").strip()
    ref = spec.source.config_map_key_ref
    if not query:
        where = f"ConfigMap {ref.name} key {ref.key}" if ref else "the manifest"
        raise InvalidInput(f"source.configMapKeyRef: no query in ${SOURCE_QUERY_ENV} (expected from {where})")
    return query
