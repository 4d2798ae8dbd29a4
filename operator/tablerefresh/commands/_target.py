"""What the commands that work on one TableRefresh's table share: the manifest and the source query
it names, the connection, and turning a refusal into its exit code with a message that says why."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.contract import MANIFEST_ENV, SOURCE_QUERY_ENV
from tablerefresh.dataplane.infra import sql_guard
from tablerefresh.dataplane.infra.connection import connect, env_secrets, require_embedded_database
from tablerefresh.dataplane.infra.errors import ExitCode, InvalidInput, RefreshError, one_line, scrub
from tablerefresh.spec import ManifestError, TableRefresh, TableRefreshSpec, load_manifest, parse_manifest
from tablerefresh.text import printable


def read_manifest(path: str | None) -> TableRefresh:
    """From the file, or from the environment the CronJob's Job template gives."""
    if path:
        return load_manifest(path)
    text = os.environ.get(MANIFEST_ENV)
    if not text:
        raise ManifestError(f"no manifest: give -f FILE or set ${MANIFEST_ENV}")
    try:
        return parse_manifest(json.loads(text), origin=f"${MANIFEST_ENV}")
    except json.JSONDecodeError as exc:
        raise ManifestError(f"${MANIFEST_ENV} is not JSON: {exc}") from exc


def source_query(spec: TableRefreshSpec) -> str:
    """The run's source query: the manifest's, or the one the Job was given in its environment."""
    if spec.source.query is not None:
        return spec.source.query
    # configMapKeyRef: the CronJob maps the key into this variable, so the Job needs no API access.
    query = os.environ.get(SOURCE_QUERY_ENV, "").strip()
    ref = spec.source.config_map_key_ref
    if not query:
        where = f"ConfigMap {ref.name} key {ref.key}" if ref else "the manifest"
        raise InvalidInput(f"source.configMapKeyRef: no query in ${SOURCE_QUERY_ENV} (expected from {where})")
    return query


def add_target_arguments(parser: argparse.ArgumentParser, *, min_slice_rows: bool = False) -> None:
    parser.add_argument(
        "-f", "--file", help="the TableRefresh manifest (YAML); default: $TABLEREFRESH_MANIFEST (JSON), as in a Job"
    )
    add_override_arguments(parser, min_slice_rows=min_slice_rows)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_override_arguments(parser: argparse.ArgumentParser, *, min_slice_rows: bool = True) -> None:
    """``--clickhouse``, and ``--min-slice-rows`` for the commands that check the threshold (refresh, plan)."""
    parser.add_argument(
        "--clickhouse",
        metavar="URL",
        help="override spec.clickhouse.url (chdb:///abs/path or chdb://rel/path: embedded)",
    )
    if min_slice_rows:
        parser.add_argument(
            "--min-slice-rows",
            type=int,
            metavar="N",
            help="override spec.thresholds.minSliceRows (a production manifest on a small data set)",
        )


def with_overrides(manifest: TableRefresh, args: argparse.Namespace) -> TableRefresh:
    """The manifest with what the command line overrides; the URL is applied when connecting."""
    if getattr(args, "min_slice_rows", None) is None:
        return manifest
    if args.min_slice_rows < 0:
        raise ManifestError(f"--min-slice-rows must not be negative: {args.min_slice_rows}")
    spec = manifest.spec
    thresholds = spec.thresholds.model_copy(update={"min_slice_rows": args.min_slice_rows})
    return manifest.model_copy(update={"spec": spec.model_copy(update={"thresholds": thresholds})})


def open_target(args: argparse.Namespace) -> tuple[TableRefresh, Callable[[], Client]]:
    manifest = with_overrides(read_manifest(args.file), args)
    spec = manifest.spec
    url = args.clickhouse or spec.clickhouse.url
    require_embedded_database(url)

    def factory() -> Client:
        return connect(url, database=spec.clickhouse.database, settings=spec.clickhouse.settings)

    return manifest, factory


def check_predicate_first(connect: Callable[[], Client], spec: TableRefreshSpec, params: dict[str, Any]) -> None:
    """Before a command locks or changes anything: the slice predicate must be one expression, as the
    server's parser reads it (``InvalidInput``, exit code 2, otherwise)."""
    client = connect()
    try:
        sql_guard.check_predicate(client, spec.slice.predicate, params)
    finally:
        client.close()


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command; a refusal prints why and exits with its code, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ManifestError as exc:
            _error(str(exc))
            return int(ExitCode.INVALID)
        except RefreshError as exc:
            _error(str(exc))
            return int(exc.exit_code)
        except ClickHouseError as exc:
            _error(f"ClickHouse: {one_line(exc)}")
            return int(ExitCode.FAILED)

    return run


def shown(text: str) -> str:
    """Error text as a command shows it: printable, without the credentials' values."""
    return scrub(printable(text), *env_secrets())


def _error(text: str) -> None:
    print(f"error: {shown(text)}", file=sys.stderr)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
