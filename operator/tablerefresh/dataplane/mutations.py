"""Pending mutations on a target, and killing the stuck ones.

A killed mutation is not rolled back: parts it already rewrote keep its changes.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from tablerefresh.dataplane import catalog
from tablerefresh.dataplane.catalog import Mutation

NOT_ROLLED_BACK = "killed mutations are not rolled back: parts already rewritten keep their changes"


def pending(client: Client, database: str, table: str) -> list[Mutation]:
    return catalog.pending_mutations(client, database, table)


def kill_older_than(client: Client, database: str, table: str, seconds: float) -> list[Mutation]:
    """Kill every mutation pending longer than ``seconds``; returns those killed."""
    stuck = [m for m in pending(client, database, table) if m.age_seconds > seconds]
    for mutation in stuck:
        client.command(
            "KILL MUTATION WHERE database = {db:String} AND table = {t:String} AND mutation_id = {m:String} SYNC",
            parameters={"db": database, "t": table, "m": mutation.mutation_id},
        )
    return stuck
