"""A statement whose answer did not arrive: find out on a new connection what the server did.

A connection that drops, an answer cut midway, or a client that stops waiting (its timeout) leaves
the run without the server's answer. The server may never have received the statement, may have
run it, or may still be running it: ClickHouse does not cancel a write when its HTTP client goes
away. clickhouse-connect replays only read-only statements by itself, so after a write whose answer
is lost nothing is known, and the run must neither assume that it ran nor that it did not.

For the swap, the run looks. Before it sends the swap, it notes the highest block number of each
partition's active parts (``system.parts``, metadata only). ``REPLACE PARTITION`` gives the parts it
brings in new block numbers above every block of their partition, and merges keep a part's block
range within those of the parts they merge, so on a new connection, once the swap statement is no
longer running (it carries a query id), each partition is exactly one of: swapped (only new parts,
or no part where the swap drops it), untouched (only parts it had), or mixed. Before it concludes
"untouched", it drops the staging table, which a swap arriving late would need, and looks again.
An insert by someone else into a swapped partition in between shows as new parts beside old ones:
the run then says "mixed", never "untouched".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from tablerefresh.dataplane.infra import sql
from tablerefresh.dataplane.infra.connection import reconnect
from tablerefresh.dataplane.infra.errors import one_line
from tablerefresh.dataplane.run.swap import PartitionChange

log = logging.getLogger(__name__)

# How long the run waits for a swap statement still running on the server before calling its
# outcome unknown: a REPLACE PARTITION takes milliseconds once it has the table's lock.
STATEMENT_WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.2


def wait_for_statement(client: Client, query_id: str, seconds: float = STATEMENT_WAIT_SECONDS) -> bool:
    """Wait until the statement ``query_id`` no longer runs on the server; False if it still does."""
    deadline = time.monotonic() + seconds
    while True:
        running = client.query(
            "SELECT count() FROM system.processes WHERE query_id = {q:String}", parameters={"q": query_id}
        ).result_rows[0][0]
        if not running:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_SECONDS)


def top_blocks(client: Client, database: str, table: str, partitions: Sequence[str]) -> dict[str, int]:
    """The highest block number of each partition's active parts; a partition with none is absent."""
    rows = client.query(
        "SELECT partition_id, max(max_block_number) FROM system.parts "
        "WHERE database = {db:String} AND table = {t:String} AND active AND partition_id IN {p:Array(String)} "
        "GROUP BY partition_id",
        parameters={"db": database, "t": table, "p": list(partitions)},
    ).result_rows
    return {str(p): int(top) for p, top in rows}


class Landed(Enum):
    ALL = "all"  # every partition holds what the swap puts there
    NONE = "none"  # every partition holds the parts it had: the target is untouched
    SOME = "some"  # some partitions swapped, or a partition holds old and new parts
    UNKNOWN = "unknown"  # the run could not find out


@dataclass
class SwapFinding:
    landed: Landed
    detail: str
    client: Client | None = None  # the new connection, for the rest of the run
    staging_dropped: bool = False
    swapped: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    mixed: list[str] = field(default_factory=list)


def classify(
    changes: Sequence[PartitionChange], before: dict[str, int], parts: Sequence[tuple[str, int, int]]
) -> tuple[list[str], list[str], list[str]]:
    """(swapped, untouched, mixed) partitions, from ``before`` (:func:`top_blocks` before the swap)
    and the active parts now: (partition, min block, max block) each."""
    by_partition: dict[str, list[tuple[int, int]]] = {}
    for partition, low, high in parts:
        by_partition.setdefault(partition, []).append((low, high))
    swapped, untouched, mixed = [], [], []
    for change in changes:
        top = before.get(change.partition)
        now = by_partition.get(change.partition, [])
        old = [p for p in now if top is not None and p[1] <= top]
        new = [p for p in now if top is None or p[0] > top]
        straddling = len(now) - len(old) - len(new)  # a merge of old and new parts
        # A partition the swap drops is swapped when it holds no part.
        is_swapped = bool(new) and not old and not straddling if change.new_rows else not now
        is_untouched = not new and not straddling and bool(old) == (top is not None)
        if is_swapped:
            swapped.append(change.partition)
        elif is_untouched:
            untouched.append(change.partition)
        else:
            mixed.append(change.partition)
    return swapped, untouched, mixed


def _look(
    client: Client, database: str, table: str, changes: Sequence[PartitionChange], before: dict[str, int]
) -> tuple[list[str], list[str], list[str]]:
    rows = client.query(
        "SELECT partition_id, min_block_number, max_block_number FROM system.parts "
        "WHERE database = {db:String} AND table = {t:String} AND active AND partition_id IN {p:Array(String)}",
        parameters={"db": database, "t": table, "p": [c.partition for c in changes]},
    ).result_rows
    return classify(changes, before, [(str(p), int(low), int(high)) for p, low, high in rows])


def find_out_swap(
    connect: Callable[[], Client],
    database: str,
    table: str,
    changes: Sequence[PartitionChange],
    before: dict[str, int],
    query_id: str,
    drop_staging: Callable[[Client], None],
) -> SwapFinding:
    """What a swap whose answer did not arrive did to ``database.table``, seen on a new connection.

    ``before``: :func:`top_blocks` just before the swap was sent; ``query_id``: the swap's.
    ``drop_staging`` drops the staging table the swap reads, before the run calls the target
    untouched, so that no swap still on its way can land after the run said so."""
    try:
        client = reconnect(connect)
    except Exception as exc:
        return SwapFinding(Landed.UNKNOWN, f"could not reconnect: {one_line(exc)}")
    finding = SwapFinding(Landed.UNKNOWN, "", client)
    try:
        if not wait_for_statement(client, query_id):
            finding.detail = f"the swap statement still runs on the server after {STATEMENT_WAIT_SECONDS:.0f}s"
            return finding
        swapped, untouched, mixed = _look(client, database, table, changes, before)
        if not swapped and not mixed:
            # Untouched, unless a swap still on its way lands: without staging it cannot.
            drop_staging(client)
            finding.staging_dropped = True
            swapped, untouched, mixed = _look(client, database, table, changes, before)
    except ClickHouseError as exc:
        finding.detail = f"could not look at the target's parts: {one_line(exc)}"
        return finding
    finding.swapped, finding.untouched, finding.mixed = swapped, untouched, mixed
    if not untouched and not mixed:
        finding.landed, finding.detail = Landed.ALL, "every partition holds the new parts"
    elif not swapped and not mixed:
        finding.landed, finding.detail = Landed.NONE, "every partition holds the parts it had"
    else:
        finding.landed = Landed.SOME
        finding.detail = "; ".join(
            f"{what}: {', '.join(names)}"
            for what, names in (("swapped", swapped), ("not swapped", untouched), ("old and new parts", mixed))
            if names
        )
    return finding


@dataclass
class ExchangeFinding:
    """Whether an ``EXCHANGE TABLES`` whose answer did not arrive ran: ``exchanged`` is None when
    unknown. ``previous`` names the table that now holds what the target held before."""

    exchanged: bool | None
    detail: str
    client: Client | None = None
    previous: str = ""
    staging: str = ""  # where the staging table is now, when the exchange did not run


def find_out_exchange(
    connect: Callable[[], Client],
    database: str,
    target: str,
    target_uuid: str,
    staging: str,
    fence: str,
    query_id: str,
) -> ExchangeFinding:
    """UUIDs stay with the data: the target's name holds its own UUID until the exchange runs, the
    staging name holds it after. Before it calls the exchange not run, the run renames staging to
    ``fence``, so that an exchange still on its way cannot land after it said so; should one have
    landed just before, ``fence`` holds the previous table, which the run then keeps."""
    try:
        client = reconnect(connect)
    except Exception as exc:
        return ExchangeFinding(None, f"could not reconnect: {one_line(exc)}")
    finding = ExchangeFinding(None, "", client)

    def uuids() -> dict[str, str]:
        rows = client.query(
            "SELECT name, toString(uuid) FROM system.tables WHERE database = {db:String} AND name IN {n:Array(String)}",
            parameters={"db": database, "n": [target, staging, fence]},
        ).result_rows
        return {str(name): str(uuid) for name, uuid in rows}

    try:
        if not wait_for_statement(client, query_id):
            finding.detail = f"the exchange still runs on the server after {STATEMENT_WAIT_SECONDS:.0f}s"
            return finding
        now = uuids()
        if now.get(target) == target_uuid and staging in now:
            client.command(f"RENAME TABLE {sql.table(database, staging)} TO {sql.table(database, fence)}")
            now = uuids()
            if now.get(target) == target_uuid:
                finding.exchanged, finding.staging = False, fence
                finding.detail = f"{target} is still the table it was"
            elif now.get(fence) == target_uuid:
                finding.exchanged, finding.previous = True, fence
                finding.detail = f"the exchange ran: the previous table is {fence}"
        elif now.get(staging) == target_uuid and now.get(target, target_uuid) != target_uuid:
            finding.exchanged, finding.previous = True, staging
            finding.detail = f"the exchange ran: the previous table is {staging}"
        if finding.exchanged is None:
            finding.detail = f"neither name holds what it should: {now}"
    except ClickHouseError as exc:
        finding.detail = f"could not look at the tables: {one_line(exc)}"
    return finding
