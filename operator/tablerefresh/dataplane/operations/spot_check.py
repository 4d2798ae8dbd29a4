"""``tablerefresh verify``: rebuild a sample of keys in full and compare them with the target.

What incremental runs can miss is a change that arrives later than ``lateness``. This looks for it
on demand, between full runs: it draws keys from the target's slice and from everything the
changed-keys query has ever yielded (``since`` at the beginning of time, so keys the target lacks
altogether can be drawn too), rebuilds their rows from the source into a staging table, exactly as
an incremental run with those keys as the changed ones would, and compares (``run/sample.py``, the
sampling a full run does too). It holds the target's lock, so no run changes the target meanwhile,
and changes nothing but its own staging tables, which it drops (or the next run does, if it dies).
"""

from __future__ import annotations

from collections.abc import Callable

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane.infra import catalog, names, sql, sql_guard
from tablerefresh.dataplane.infra.errors import InvalidInput
from tablerefresh.dataplane.infra.lock import target_lock
from tablerefresh.dataplane.run import keyset, sample
from tablerefresh.dataplane.run.incremental import INCREMENTAL, RunKind
from tablerefresh.dataplane.run.inputs import check_inputs, source_text
from tablerefresh.dataplane.run.options import RunOptions
from tablerefresh.dataplane.run.sample import SampleReport
from tablerefresh.dataplane.run.scope import Scope, run_params, run_scope, run_time_of
from tablerefresh.spec import TableRefreshSpec


def verify_sample(
    connect: Callable[[], Client], spec: TableRefreshSpec, source_query: str, options: RunOptions, size: int
) -> SampleReport:
    incremental = spec.incremental
    if incremental is None:
        raise InvalidInput("verify samples keys of spec.incremental.key: the spec has no incremental section")
    run_time, run_id = run_time_of(options.run_time), options.run_id
    source_query = source_text(source_query)
    scope = run_scope(spec, run_id)
    params = run_params(spec, run_time, scope)
    client = connect()
    try:
        sql_guard.check_predicate(client, spec.slice.predicate, params)
        inputs = check_inputs(client, spec, source_query, scope, params)
        target, key = inputs.target, tuple(incremental.key)
        sample_name = names.run_table(target.name, run_id, "sample")
        # The sample takes the changed keys' place: the source reads only its rows, as in an incremental run.
        sampled = Scope(scope.in_slice, key, sample_name, RunKind(INCREMENTAL, "a sample of keys"))
        params = {**params, **sampled.params(), keyset.SINCE_PARAM: keyset.BEGINNING}
        columns = sql.column_list(list(key))
        populations = [
            f"SELECT {columns} FROM {target.qualified} WHERE {scope.in_slice}",
            keyset.distinct_keys(key, incremental.changed_keys_query),
        ]
        drawing = sample.drawing(target, sample_name, key, populations, size, int(run_time.timestamp()), params)
        made: list[str] = []
        lock = target_lock(connect, target.database, target.name, options.owner, ttl_seconds=options.lock_ttl_seconds)
        with lock:
            try:
                drawn = sample.draw(client, drawing, made.append)
                staging = catalog.create_like(client, target, names.staging_table(target.name, run_id))
                made.append(staging)
                source_columns = sql.column_list(inputs.source_columns)
                client.command(
                    f"INSERT INTO {staging} ({source_columns}) {sampled.source_rows(source_query, source_columns)}",
                    parameters=params,
                    settings={"insert_deduplicate": 0},
                )
                return sample.compare(
                    client, target, spec.unique_key, key, drawing.table, drawn, staging, scope.in_slice, params
                )
            finally:
                for made_table in reversed(made):
                    sql.drop_table(made_table).execute(client)
    finally:
        client.close()
