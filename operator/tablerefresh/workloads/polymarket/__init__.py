"""Polymarket FIFO ROI positions: the reference workload (demo, benchmark, tests).

The operator stays generic; this package only ships the tables (``schema/``), the TableRefresh
manifest whose source query implements the reference rules (``tablerefresh.yaml``), the same
refreshed incrementally (``tablerefresh-incremental.yaml``), and a synthetic data generator that
writes the source tables inside ClickHouse (``generator``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from tablerefresh.spec import TableRefresh, load_manifest
from tablerefresh.workloads.polymarket.generator import GeneratedStats, generate
from tablerefresh.workloads.polymarket.schema import (
    FILLS_TABLE,
    RESOLUTIONS_TABLE,
    SCHEMA_TABLES,
    TARGET_COLUMNS,
    TARGET_TABLE,
    create_schema,
    schema_sql,
)

__all__ = [
    "FILLS_TABLE",
    "RESOLUTIONS_TABLE",
    "SCHEMA_TABLES",
    "TARGET_COLUMNS",
    "TARGET_TABLE",
    "GeneratedStats",
    "create_schema",
    "generate",
    "incremental_manifest",
    "incremental_manifest_path",
    "manifest",
    "manifest_path",
    "schema_sql",
    "source_query",
]


def manifest_path() -> Path:
    """The TableRefresh manifest on disk (``examples/polymarket/tablerefresh.yaml``)."""
    return Path(str(resources.files(__name__).joinpath("tablerefresh.yaml")))


@cache
def manifest() -> TableRefresh:
    """The validated TableRefresh for ``pm_trade_fifo_roi_v3_mat_unified``."""
    return load_manifest(manifest_path())


def incremental_manifest_path() -> Path:
    """The same TableRefresh, refreshed incrementally (``examples/polymarket/tablerefresh-incremental.yaml``)."""
    return Path(str(resources.files(__name__).joinpath("tablerefresh-incremental.yaml")))


@cache
def incremental_manifest() -> TableRefresh:
    return load_manifest(incremental_manifest_path())


# The source's batch parameters (spec.source.batches) for running it whole, in one statement.
ONE_BATCH = {"batch": 0, "batches": 1}


def source_query() -> str:
    """The manifest's source SELECT; binds ``{window_start:DateTime}`` server-side, and
    ``{batch:UInt32}``/``{batches:UInt32}`` (``ONE_BATCH`` runs it whole)."""
    query = manifest().spec.source.query
    if query is None:  # the shipped manifest is inline; this guards an edit to a configMapKeyRef
        raise ValueError(f"{manifest_path()}: spec.source.query is not inline")
    return query
