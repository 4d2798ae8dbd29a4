"""``tablerefresh verify``: rebuild a sample of keys in full and compare them with the target.

What incremental runs can miss is a change that arrives later than ``lateness``. This looks for it
on demand, between full runs: it draws keys from the target's slice and from everything the
changed-keys query has ever yielded (``since`` at the beginning of time, so keys the target lacks
altogether can be drawn too), rebuilds their rows from the source into a staging table, exactly as
an incremental run with those keys as the changed ones would, and compares (``sample.py``). It
holds the target's lock, so no run changes the target meanwhile, and changes nothing but its own
staging tables, which it drops (or the next run does, if it dies).
"""

from __future__ import annotations

from tablerefresh.dataplane import catalog, keyset, names, sample, sql
from tablerefresh.dataplane.errors import InvalidInput
from tablerefresh.dataplane.incremental import INCREMENTAL, RunKind
from tablerefresh.dataplane.lock import TableLock
from tablerefresh.dataplane.refresh import Refresh
from tablerefresh.dataplane.sample import SampleReport
from tablerefresh.dataplane.scope import Scope


def verify_sample(refresh: Refresh, size: int) -> SampleReport:
    incremental = refresh.spec.incremental
    if incremental is None:
        raise InvalidInput("verify samples keys of spec.incremental.key: the spec has no incremental section")
    target = refresh.check_inputs()
    client, run_id = refresh.client, refresh.options.run_id
    key = tuple(incremental.key)
    sample_name = names.run_table(target.name, run_id, "sample")
    # The sample takes the changed keys' place: the source reads only its rows, as in an incremental run.
    scope = Scope(refresh.in_slice, key, sample_name, RunKind(INCREMENTAL, "a sample of keys"))
    params = {**refresh.params, **scope.params(), keyset.SINCE_PARAM: keyset.BEGINNING}
    lock = TableLock(
        refresh.connect,
        target.database,
        target.name,
        refresh.options.owner,
        ttl_seconds=refresh.options.lock_ttl_seconds,
        heartbeat_seconds=refresh.options.heartbeat_seconds,
    )
    made: list[str] = []
    with lock:
        try:
            table = keyset.create(client, target, sample_name, key)
            made.append(table)
            columns = sql.column_list(list(key))
            populations = [
                f"SELECT {columns} FROM {target.qualified} WHERE {refresh.in_slice}",
                keyset.distinct_keys(key, incremental.changed_keys_query),
            ]
            salt = int(refresh.run_time.timestamp())
            drawn = sample.draw(client, table, key, populations, size, salt, params)
            staging = catalog.create_like(client, target, names.staging_table(target.name, run_id))
            made.append(staging)
            source_columns = sql.column_list(refresh.source_columns)
            client.command(
                f"INSERT INTO {staging} ({source_columns}) {scope.source_rows(refresh.source_query, source_columns)}",
                parameters=params,
                settings={"insert_deduplicate": 0},
            )
            return sample.compare(
                client, target, refresh.spec.unique_key, key, table, drawn, staging, refresh.in_slice, params
            )
        finally:
            for made_table in reversed(made):
                client.command(f"DROP TABLE IF EXISTS {made_table} SYNC")
