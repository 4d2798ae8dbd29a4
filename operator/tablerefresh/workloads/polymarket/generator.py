"""Deterministic synthetic Polymarket fills and resolutions, generated inside ClickHouse.

Every value is a pure function of ``(seed, now, fills)``: randomness is ``cityHash64`` of the seed,
a tag and the indexes of the thing being drawn, so the same arguments give the same tables on any
ClickHouse, in any thread order. Rows never pass through Python, and they come out in the fills
table's sort order so the MergeTree writer does not sort: 20M fills cost about 50 CPU-seconds.

Shape, bottom up:

* conditions (markets) created over the last ~200 days; most resolve after an exponential
  lifetime, the rest are still open. Payouts ``[1,0]``, ``[0,1]`` and a few ``[1,1]``. Some
  conditions carry superseded, soft-deleted, empty-payout or tied resolution rows, and some
  unresolved ones carry deleted or empty rows (still unresolved under the rules).
* positions ``(wallet, condition, outcome)``: wallets drawn from a power law (a few whales, a long
  tail of small traders), conditions by popularity. A position is a hold, a partial exit, a full
  exit or a short (tokens split via the CTF, then sold on the CLOB). Its events (transactions) are
  spread over an active span after it opens, so many open positions have not traded for days.
* fills: each event has 1-3 fills. Some events are self-fills (a taker row plus its maker twin),
  some fills have an exact duplicate (or, rarely, a copy with usdc_delta rounded to 6 decimals),
  some events are tiny (< 0.01 tokens) or nearly free (< 0.01 USDC), some come from ``negrisk`` or
  ``ctf`` instead of the CLOB, and a few positions belong to the zero address.

The first conditions are pinned so that even a few thousand fills contain every case the tests
need: resolutions of each payout inside the last 24 hours, one superseded, one tied, open markets
with deleted or empty resolution rows, and one market settled long ago.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.exceptions import DatabaseError

from tablerefresh.workloads.polymarket.schema import (
    FILLS_TABLE,
    RESOLUTIONS_TABLE,
    check_identifier,
    create_schema,
)

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

# Staging tables live next to the sources only while generate() runs.
_CONDITIONS = "_pmgen_conditions"
_POSITIONS = "_pmgen_positions"

# Rows per fills INSERT: one sorted block, one part (~1 GiB in memory while it is written); also
# what the progress callback reports.
_CHUNK_ROWS = 4_000_000


def _h(tag: str, *args: str) -> str:
    """SQL for a 64-bit hash of the seed, a tag naming the draw, and index expressions."""
    parts = ", ".join(f"toUInt64({a})" for a in args)
    return f"cityHash64({{seed:UInt64}}, '{tag}', {parts})"


def _u(tag: str, *args: str) -> str:
    """SQL for a uniform draw in [0, 1): the top 53 bits of the hash, so 1.0 never occurs."""
    return f"(bitShiftRight({_h(tag, *args)}, 11) / 9007199254740992.)"


def _hex(tag: str, nbytes: int, *args: str) -> str:
    """SQL for ``'0x'`` + ``2 * nbytes`` lowercase hex digits drawn from the hash of ``args``."""
    words = [f"reinterpretAsFixedString({_h(f'{tag}{w}', *args)})" for w in range((nbytes + 7) // 8)]
    return f"concat('0x', lower(hex(substring(concat({', '.join(words)}), 1, {nbytes}))))"


def _sql_array(values: tuple[Any, ...]) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


# Pinned conditions 0..8 (the most popular ones, see positions): created N days before now;
# resolved N hours before now (-1: unresolved); payout (for open markets: where prices drift).
_PIN_CREATED_DAYS = (90, 60, 40, 30, 120, 50, 100, 150, 45)
_PIN_RESOLVED_HOURS = (-1, 2, 5, 9, -1, 20, -1, 1680, 14)
_PIN_PAYOUT = ("[1,0]", "[1,0]", "[0,1]", "[1,1]", "[0,1]", "[0,1]", "[1,0]", "[1,0]", "[0,1]")
# Extra resolution rows: an earlier valid row with the other payout (superseded), a soft-deleted
# row, an empty-payout row, a valid row with the other payout at the same instant (tied).
_PIN_SUPERSEDED = (0, 0, 0, 0, 0, 1, 0, 0, 0)
_PIN_DELETED = (0, 0, 0, 0, 1, 0, 1, 0, 0)
_PIN_EMPTY = (0, 0, 0, 0, 1, 0, 0, 0, 0)
_PIN_TIED = (0, 0, 0, 0, 0, 0, 0, 0, 1)
_PINNED = len(_PIN_CREATED_DAYS)


def _pinned(values: tuple[Any, ...], otherwise: str) -> str:
    return f"if(c < {_PINNED}, {_sql_array(values)}[c + 1], {otherwise})"


_CONDITIONS_DDL = f"""
CREATE TABLE {{db}}.{_CONDITIONS}
(
    c UInt64, condition_id String, created UInt32, horizon UInt32, resolved UInt8,
    resolution UInt32, end_ts UInt32, payout String, p0 Float64,
    superseded UInt8, deleted UInt8, empty UInt8, tied UInt8
)
ENGINE = MergeTree ORDER BY c
"""

_PIN_HORIZON = tuple(30 * 86400 if h < 0 else -h * 3600 for h in _PIN_RESOLVED_HOURS)

_CREATED_AGO = _pinned(tuple(d * 86400 for d in _PIN_CREATED_DAYS), f"3600 + toUInt32(200 * 86400 * {_u('cc', 'c')})")
_RESOLVED = _pinned(
    tuple(int(h >= 0) for h in _PIN_RESOLVED_HOURS), f"{_u('cn', 'c')} >= 0.12 AND horizon <= now_ts - 60"
)
_PAYOUT = _pinned(_PIN_PAYOUT, f"multiIf({_u('cw', 'c')} < 0.46, '[1,0]', {_u('cw', 'c')} < 0.92, '[0,1]', '[1,1]')")

_CONDITIONS_SQL = f"""
INSERT INTO {{db}}.{_CONDITIONS}
SELECT
    c, condition_id, created, horizon, resolved,
    if(resolved, horizon, 0) AS resolution,
    if(resolved, horizon - 60, now_ts) AS end_ts,
    payout, p0,
    resolved AND {_pinned(_PIN_SUPERSEDED, _u("rs", "c") + " < 0.10")} AS superseded,
    {_pinned(_PIN_DELETED, _u("rd", "c") + " < 0.07")} AS deleted,
    {_pinned(_PIN_EMPTY, _u("re", "c") + " < 0.05")} AS empty,
    resolved AND {_pinned(_PIN_TIED, _u("rt", "c") + " < 0.01")} AS tied
FROM
(
    SELECT
        number AS c,
        toUInt32(toUnixTimestamp({{now:DateTime}})) AS now_ts,
        {_hex("cid", 32, "c")} AS condition_id,
        toUInt32(now_ts - {_CREATED_AGO}) AS created,
        -- When it resolves, if it does; for an open market, where its price converges.
        toUInt32(if(c < {_PINNED}, toInt64(now_ts) + {_sql_array(_PIN_HORIZON)}[c + 1],
                    toInt64(created) + 21600 + toUInt32(-log(1 - {_u("cl", "c")}) * 50 * 86400))) AS horizon,
        {_RESOLVED} AS resolved,
        {_PAYOUT} AS payout,
        0.05 + 0.9 * {_u("cp", "c")} AS p0
    FROM numbers({{n_conditions:UInt64}})
)
"""

# One row per resolution event: kind 0 the effective one, 1 an earlier valid row with the other
# payout (superseded), 2 a soft-deleted row, 3 a row with an empty payout, 4 a valid row at the
# same instant as the effective one (ties resolve to the greater payout string).
_RESOLUTIONS_SQL = f"""
INSERT INTO {{db}}.{RESOLUTIONS_TABLE} (condition_id, payout_numerators, resolved_at, is_deleted)
SELECT
    condition_id,
    multiIf(kind = 0, payout, kind = 3, '', other),
    toDateTime(multiIf(
        kind IN (0, 4), resolution,
        kind = 1, greatest(created + 60, resolution - 3600 - toUInt32(4 * 86400 * {_u("rs2", "c")})),
        resolved, least(now_ts, resolution + 60 + toUInt32(2 * 86400 * {_u("ra", "c", "kind")})),
        created + toUInt32((now_ts - created) * {_u("ra", "c", "kind")}))),
    toUInt8(kind = 2)
FROM
(
    SELECT
        *,
        toUInt32(toUnixTimestamp({{now:DateTime}})) AS now_ts,
        if(payout = '[1,0]', '[0,1]', '[1,0]') AS other,
        arrayJoin(arrayFilter(k -> [resolved, superseded, deleted, empty, tied][k + 1], [0, 1, 2, 3, 4]))
            AS kind
    FROM {{db}}.{_CONDITIONS}
)
"""


# Event i of position p. Types: 0 buy, 1 sell, 2 CTF split (tokens of both outcomes for USDC,
# outside the CLOB). Fills per event (k): 1-3. Extras (x): 0 none, 1 self-fill (each fill also
# gets its maker twin), 2 fill 0 duplicated exactly, 3 fill 0 duplicated with usdc_delta
# rounded. The same expressions size a position (stage 2) and expand it (stage 3).
def _ev_type(i: str) -> str:
    return f"multiIf({i} < has_split, 2, {i} < has_split + nb, 0, 1)"


def _ev_k(i: str) -> str:
    return f"if({_ev_type(i)} = 2, 1, 1 + ({_u('k1', 'p', i)} < 0.25) + ({_u('k2', 'p', i)} < 0.08))"


def _ev_x(i: str) -> str:
    x = _u("x", "p", i)
    return f"if({_ev_type(i)} = 2, 0, multiIf({x} < 0.012, 1, {x} < 0.027, 2, {x} < 0.030, 3, 0))"


def _ev_rows(i: str) -> str:
    return f"({_ev_k(i)} + multiIf({_ev_x(i)} = 1, {_ev_k(i)}, {_ev_x(i)} >= 2, 1, 0))"


def _is_tiny(i: str) -> str:
    return f"({_u('tiny', 'p', i)} < 0.03)"


def _is_cheap(i: str) -> str:
    return f"(NOT {_is_tiny(i)} AND {_u('cheap', 'p', i)} < 0.015)"


def _buy_amount(i: str) -> str:
    """Tokens bought by buy event ``i``: mostly sized by the position's scale; some tiny
    (< 0.01 tokens), some nearly free (see the price); in a short, a small buy next to the split."""
    return f"""multiIf(
        {_is_tiny(i)}, 0.0005 + 0.009 * {_u("ta", "p", i)},
        {_is_cheap(i)}, 1 + 8 * {_u("ta", "p", i)},
        kind = 3, split_amount * 0.3 * {_u("ba", "p", i)},
        scale * (0.2 + 1.6 * {_u("ba", "p", i)}))"""


_POSITIONS_DDL = f"""
CREATE TABLE {{db}}.{_POSITIONS}
(
    p UInt64, wallet_ix UInt64, zero UInt8, c UInt64, outcome UInt8, kind UInt8,
    scale Float64, split_amount Float64, has_split UInt8, nb UInt8, ns UInt8, ne UInt8,
    t_open UInt32, span UInt32, created UInt32, horizon UInt32, p0 Float64, target Float64,
    rows UInt32, row_offset UInt64
)
ENGINE = MergeTree ORDER BY row_offset
"""

# Positions are kinds 0 hold, 1 partial exit, 2 full exit, 3 short. Exits sell back each buy
# (all of it, or a part); a short splits USDC into tokens through the CTF and sells them on the
# CLOB, sometimes next to a small CLOB buy. Only what sizes a position is stored here.
#
# Draws that land on the same (condition, wallet, outcome) keep the first one. Positions are
# taken in draw order until they hold `fills` rows, then numbered in the fills table's sort order
# (condition_id, wallet, outcome_index): the fills come out already sorted, which spares the
# MergeTree writer its sort, and only the last position in that order loses rows to the exact
# count. The sort keys are the leading 8 bytes of the hex strings, read big-endian.
_POSITIONS_SQL = f"""
INSERT INTO {{db}}.{_POSITIONS}
SELECT
    p, wallet_ix, zero, c, outcome, kind,
    pow(10, 3.2 * {_u("ps", "p")} - 0.5) * if(whale, 25, 1) AS scale,
    scale * (0.5 + {_u("sx", "p")}) AS split_amount,
    has_split, nb, ns, ne,
    -- Opens late in the market's life more often than early; trades for days, then rests.
    toUInt32(created + (cond.end_ts - created) * pow({_u("pt", "p")}, 0.6)) AS t_open,
    toUInt32(least(toFloat64(cond.end_ts - t_open), 3600 - log(1 - {_u("pa", "p")}) * 6 * 86400)) AS span,
    cond.created AS created,
    cond.horizon AS horizon,
    cond.p0 AS p0,
    multiIf(cond.payout = '[1,0]', 1., cond.payout = '[0,1]', 0., 0.5) AS target,
    rows,
    row_offset
FROM
(
    -- The windows sort only these narrow columns; the rest is drawn afterwards.
    SELECT
        *,
        sum(rows) OVER (ORDER BY condition_key, wallet_key, outcome ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
            AS row_offset
    FROM
    (
        SELECT *, sum(rows) OVER (ORDER BY p ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS drawn_before
        FROM
        (
            SELECT
                *,
                wallet_ix < greatest(1, intDiv({{n_wallets:UInt64}}, 1000)) AS whale,
                toUInt8(multiIf({_u("pk", "p")} < 0.33, 0, {_u("pk", "p")} < 0.58, 1, {_u("pk", "p")} < 0.88, 2, 3))
                    AS kind,
                toUInt8(kind = 3) AS has_split,
                toUInt8(if(kind = 3, {_u("psb", "p")} < 0.3,
                           1 + least(15, floor(-log(1 - {_u("pnb", "p")}) * if(whale, 3., 1.))))) AS nb,
                toUInt8(multiIf(kind = 0, 0, kind = 3, 1 + ({_u("pns", "p")} < 0.4), nb)) AS ns,
                toUInt8(has_split + nb + ns) AS ne,
                toUInt32(arraySum(arrayMap(i -> {_ev_rows("i")}, range(ne)))) AS rows
            FROM
            (
                SELECT
                    min(number) AS p,
                    argMin(wallet_ix, number) AS wallet_ix,
                    zero,
                    c,
                    outcome,
                    condition_key,
                    wallet_key
                FROM
                (
                    SELECT
                        number,
                        -- A power law: a few whales hold a large share of the positions.
                        toUInt64(floor({{n_wallets:UInt64}} * pow({_u("pw", "number")}, 2.5))) AS wallet_ix,
                        toUInt8({_u("pz", "number")} < 0.003) AS zero,
                        toUInt64(floor({{n_conditions:UInt64}} * pow({_u("pc", "number")}, 2))) AS c,
                        toUInt8({_u("po", "number")} < 0.5) AS outcome,
                        byteSwap({_h("cid0", "c")}) AS condition_key,
                        if(zero, 0, byteSwap({_h("w0", "wallet_ix")})) AS wallet_key
                    FROM numbers({{n_positions:UInt64}})
                )
                GROUP BY condition_key, wallet_key, outcome, c, zero
            )
        )
    )
    WHERE drawn_before < {{fills:UInt64}}
) AS pos
INNER JOIN {{db}}.{_CONDITIONS} AS cond ON cond.c = pos.c
"""

# One row per fill side. Row r of an event: for a self-fill event, rows [0, k) are the taker
# fills and [k, 2k) their maker twins; for a duplicating event, row k copies fill 0.
_FILLS_SQL = f"""
INSERT INTO {{db}}.{FILLS_TABLE}
SELECT
    concat(tx_hash, '_', toString(f), '_', if(is_maker, 'm', 't')) AS fill_id,
    tx_hash,
    toDateTime(t) AS event_time,
    wallet,
    condition_id,
    outcome AS outcome_index,
    side * share AS tokens_delta,
    -- The inexact copy comes from a backfill that kept USDC's 6 decimals only.
    if(x = 3 AND copy, round(-side * share * price, 6), -side * share * price) AS usdc_delta,
    source,
    toUInt8(x = 1) AS is_self_fill,
    is_maker
FROM
(
    SELECT
        *,
        r,
        x = 1 AND r >= k AS twin,
        x >= 2 AND r = k AS copy,
        toUInt64(multiIf(x = 1, r % k, copy, 0, r)) AS f,
        toUInt8(if(x = 1, twin, {_u("mk", "p", "i", "f")} < 0.4)) AS is_maker,
        if(typ = 1, -1., 1.) * if(twin, -1., 1.) AS side,
        amount * (0.5 + {_u("fw", "p", "i", "f")}) / weights AS share
    FROM
    (
        SELECT
            *,
            i,  -- ARRAY JOIN aliases are not part of *
            nrows,
            ev_end,
            {_ev_type("i")} AS typ,
            {_ev_k("i")} AS k,
            {_ev_x("i")} AS x,
            -- Exits sell back buy i - nb (all of it, or a part); a short sells most of what
            -- the split and its buy brought in.
            multiIf(
                typ = 2, split_amount,
                typ = 0, {_buy_amount("i")},
                kind = 3, (split_amount + if(nb = 1, {_buy_amount("1")}, 0.)) * (0.6 + 0.4 * {_u("sf", "p")}) / ns,
                {_buy_amount("i - nb")} * if(kind = 2, 1., 0.1 + 0.8 * {_u("sf", "p", "i")})) AS amount,
            -- Events in order over the active span; a few share the previous event's second, so
            -- FIFO order falls back to tx_hash.
            toUInt32(i > 0 AND {_u("tie", "p", "i")} < 0.03) AS back,
            toUInt32(t_open + floor(span * (i - back + {_u("et", "p", "i - back")}) / ne)) AS t,
            -- Outcome 0's price drifts from p0 towards the payout as the market ages.
            p0 + (target - p0) * pow(least(1., (t - created) / (horizon - created)), 2) AS trend,
            multiIf(
                typ = 2, 0.5,
                typ = 0 AND {_is_cheap("i")}, 0.0005 + 0.0004 * {_u("cpx", "p", "i")},
                greatest(0.001, least(0.999,
                    if(outcome = 0, trend, 1 - trend) + 0.08 * ({_u("pn", "p", "i")} - 0.5)))) AS price,
            {_u("src", "p", "i")} AS source_draw,
            multiIf(typ = 2, 'ctf', source_draw < 0.035, 'negrisk', source_draw < 0.06, 'ctf', 'clob') AS source,
            (0.5 + {_u("fw", "p", "i", "0")}) + (k > 1) * (0.5 + {_u("fw", "p", "i", "1")})
                + (k > 2) * (0.5 + {_u("fw", "p", "i", "2")}) AS weights,
            {_hex("tx", 32, "p", "i")} AS tx_hash
        FROM
        (
            SELECT
                *,
                if(zero, '{ZERO_ADDRESS}', {_hex("w", 20, "wallet_ix")}) AS wallet,
                {_hex("cid", 32, "c")} AS condition_id,
                arrayMap(i -> toUInt32({_ev_rows("i")}), range(ne)) AS ev_rows
            FROM {{db}}.{_POSITIONS}
            WHERE row_offset >= {{lo:UInt64}} AND row_offset < {{hi:UInt64}}
        )
        ARRAY JOIN range(ne) AS i, ev_rows AS nrows, arrayCumSum(ev_rows) AS ev_end
    )
    ARRAY JOIN range(nrows) AS r
    WHERE row_offset + ev_end - nrows + r < {{fills:UInt64}}
)
-- Already the table's order (see positions); a merge of sorted numeric runs, not a string sort.
ORDER BY row_offset, i, r
"""


@dataclass(frozen=True)
class GeneratedStats:
    """What generate() wrote, for the demo and benchmark to print."""

    seed: int
    now: datetime
    fills: int
    resolutions: int
    conditions: int
    resolved_conditions: int
    positions: int
    wallets: int
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.fills:,} fills ({self.positions:,} positions of {self.wallets:,} wallets), "
            f"{self.resolutions:,} resolution rows for {self.conditions:,} conditions "
            f"({self.resolved_conditions:,} resolved) in {self.seconds:.1f}s"
        )


def _utc_naive(moment: datetime) -> datetime:
    """DateTime parameters are bound as naive UTC wall time, whole seconds."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0)


def _best_effort(client: Client, sql: str) -> None:
    """SYSTEM statements only save time; a server that refuses them (grants) still gets its data."""
    try:
        client.command(sql)
    except DatabaseError as exc:
        log.warning("%s failed, continuing: %s", sql, exc)


def generate(
    client: Client,
    database: str,
    *,
    fills: int,
    seed: int,
    now: datetime,
    progress: Progress | None = None,
    optimize: bool = False,
) -> GeneratedStats:
    """Replace the contents of the two source tables in ``database`` with synthetic data.

    Exactly ``fills`` rows go into ``pm_canonical_fills_v4``; ``now`` (UTC) ends the simulated
    history: no fill or resolution is later. Tables are created if missing. ``progress`` gets a
    line per step. Background merges of the fills wait until the data is in; ``optimize=True``
    then merges the table into one part before returning (settled data for a benchmark).
    """
    if fills < 1:
        raise ValueError("fills must be positive")
    if not 0 <= seed < 2**64:
        raise ValueError("seed must fit in 64 bits")
    db = check_identifier(database)
    started = time.monotonic()

    def say(message: str) -> None:
        log.info("%s", message)
        if progress is not None:
            progress(message)

    create_schema(client, db)
    params: dict[str, Any] = {
        "seed": seed,
        "now": _utc_naive(now),
        "fills": fills,
        "n_conditions": max(4 * _PINNED, fills // 100),
        "n_wallets": max(40, fills // 25),
    }

    def run(sql: str, settings: dict[str, Any] | None = None, **extra: Any) -> None:
        client.command(sql.replace("{db}", db), parameters={**params, **extra}, settings=settings)

    for table in (FILLS_TABLE, RESOLUTIONS_TABLE):
        client.command(f"TRUNCATE TABLE {db}.{table}")
    for table in (_CONDITIONS, _POSITIONS):
        client.command(f"DROP TABLE IF EXISTS {db}.{table}")
    # Merging the fills while they are written would rewrite them again and again.
    _best_effort(client, f"SYSTEM STOP MERGES {db}.{FILLS_TABLE}")
    try:
        run(_CONDITIONS_DDL)
        run(_CONDITIONS_SQL)
        run(_RESOLUTIONS_SQL)
        say(f"generated {params['n_conditions']:,} conditions and their resolutions")

        run(_POSITIONS_DDL)
        # About 3.6 rows per position; draw extra positions and cut at exactly `fills` rows.
        positions = fills // 3 + 16
        while True:
            run(_POSITIONS_SQL, n_positions=positions)
            total = int(client.query(f"SELECT sum(rows) FROM {db}.{_POSITIONS}").result_rows[0][0])
            if total >= fills:
                break
            # A small draw can fall short when a few whales dominate it; redraw larger.
            client.command(f"TRUNCATE TABLE {db}.{_POSITIONS}")
            positions *= 2
        say(f"drew {positions:,} positions")

        # A chunk is one sorted block, written as one part: few parts, few merges, no sort.
        insert_settings = {"min_insert_block_size_rows": _CHUNK_ROWS, "min_insert_block_size_bytes": 0}
        for lo in range(0, fills, _CHUNK_ROWS):
            hi = min(fills, lo + _CHUNK_ROWS)
            run(_FILLS_SQL, insert_settings, lo=lo, hi=hi)
            say(f"fills: {hi:,} / {fills:,} rows ({time.monotonic() - started:.1f}s)")

        counts = client.query(
            f"""
            SELECT
                (SELECT count() FROM {db}.{FILLS_TABLE}),
                (SELECT count() FROM {db}.{RESOLUTIONS_TABLE}),
                (SELECT count() FROM {db}.{_CONDITIONS}),
                (SELECT countIf(resolved) FROM {db}.{_CONDITIONS}),
                (SELECT count() FROM {db}.{_POSITIONS}),
                (SELECT uniqExactIf(wallet_ix, NOT zero) + max(zero) FROM {db}.{_POSITIONS})
            """,
            parameters=params,
        ).result_rows[0]
    finally:
        _best_effort(client, f"SYSTEM START MERGES {db}.{FILLS_TABLE}")
        for table in (_CONDITIONS, _POSITIONS):
            client.command(f"DROP TABLE IF EXISTS {db}.{table}")
    if optimize:
        say("merging the fills into one part")
        client.command(f"OPTIMIZE TABLE {db}.{FILLS_TABLE} FINAL")
    stats = GeneratedStats(
        seed=seed,
        now=params["now"],
        fills=int(counts[0]),
        resolutions=int(counts[1]),
        conditions=int(counts[2]),
        resolved_conditions=int(counts[3]),
        positions=int(counts[4]),
        wallets=int(counts[5]),
        seconds=time.monotonic() - started,
    )
    say(f"generated {stats.summary()}")
    return stats
