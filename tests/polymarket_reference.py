"""Rules 1-9 of the Polymarket FIFO ROI reference, in plain Python, written from the rules.

Deliberately independent of the manifest's SQL: no SQL, no shared helpers, row at a time and as
literal as possible, so that agreement between the two is evidence both follow the rules.

Two choices the rules leave open, made the same way as the SQL (and stated in it):
* rule 1 keeps, of the rows sharing a fill_id, the least by all columns in table order after the
  fill_id, with event_time first; copies are normally identical so this rarely matters;
* of several valid resolution rows at the same latest resolved_at, the greatest payout string wins.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class Fill:
    fill_id: str
    tx_hash: str
    event_time: datetime
    wallet: str
    condition_id: str
    outcome_index: int
    tokens_delta: float
    usdc_delta: float
    source: str
    is_self_fill: int
    is_maker: int


@dataclass(frozen=True)
class Resolution:
    condition_id: str
    payout_numerators: str
    resolved_at: datetime
    is_deleted: int


@dataclass(frozen=True)
class Row:
    """A row of pm_trade_fifo_roi_v3_mat_unified, fields in table order."""

    tx_hash: str
    wallet: str
    condition_id: str
    outcome_index: int
    entry_time: datetime
    resolved_at: datetime | None
    tokens: float
    cost_usd: float
    tokens_sold_early: float
    tokens_held: float
    exit_value: float
    pnl_usd: float
    roi: float
    pct_sold_early: float
    is_maker: int
    is_closed: int
    is_short: int

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.wallet, self.condition_id, self.outcome_index, self.tx_hash)


FILL_COLUMNS = tuple(Fill.__dataclass_fields__)
RESOLUTION_COLUMNS = tuple(Resolution.__dataclass_fields__)
ROW_COLUMNS = tuple(Row.__dataclass_fields__)
FLOAT_COLUMNS = frozenset(name for name, field in Row.__dataclass_fields__.items() if field.type == "float")


@dataclass(frozen=True)
class Resolved:
    resolved_at: datetime
    payout_numerators: str


def effective_resolutions(resolutions: Iterable[Resolution]) -> dict[str, Resolved]:
    """A condition is resolved by its latest row with is_deleted = 0 and a non-empty payout."""
    best: dict[str, Resolved] = {}
    for r in resolutions:
        if r.is_deleted != 0 or r.payout_numerators == "":
            continue
        candidate = Resolved(r.resolved_at, r.payout_numerators)
        current = best.get(r.condition_id)
        if current is None or (candidate.resolved_at, candidate.payout_numerators) > (
            current.resolved_at,
            current.payout_numerators,
        ):
            best[r.condition_id] = candidate
    return best


def payout_rate(payout_numerators: str, outcome_index: int) -> float:
    """Rule 5: 0.5 for [1,1]; 1 if this outcome's numerator is 1 and the other's 0; else 0."""
    try:
        numerators = [float(n) for n in json.loads(payout_numerators)]
    except (ValueError, TypeError):
        numerators = []
    if numerators == [1.0, 1.0]:
        return 0.5

    def numerator(i: int) -> float:
        return numerators[i] if i < len(numerators) else 0.0

    other = 1 - outcome_index
    return 1.0 if numerator(outcome_index) == 1 and numerator(other) == 0 else 0.0


def rule1_fills(fills: Iterable[Fill]) -> list[Fill]:
    """One row per fill_id, then CLOB only, no zero address, no maker side of a self-fill."""
    kept: dict[str, Fill] = {}

    def order(f: Fill) -> tuple[object, ...]:
        return (
            f.event_time,
            f.tx_hash,
            f.wallet,
            f.condition_id,
            f.outcome_index,
            f.tokens_delta,
            f.usdc_delta,
            f.source,
            f.is_self_fill,
            f.is_maker,
        )

    for f in fills:
        if f.fill_id not in kept or order(f) < order(kept[f.fill_id]):
            kept[f.fill_id] = f
    return [
        f
        for f in kept.values()
        if f.source == "clob" and f.wallet != ZERO_ADDRESS and not (f.is_self_fill == 1 and f.is_maker == 1)
    ]


@dataclass
class _Entry:
    tx_hash: str
    tokens: float
    cost_usd: float
    entry_time: datetime
    is_maker: int


def compute_rows(fills: Iterable[Fill], resolutions: Iterable[Resolution]) -> list[Row]:
    """Every target row the rules give, for every condition."""
    resolved = effective_resolutions(resolutions)
    by_position: dict[tuple[str, str, int], list[Fill]] = defaultdict(list)
    for f in rule1_fills(fills):
        by_position[(f.wallet, f.condition_id, f.outcome_index)].append(f)

    rows: list[Row] = []
    for (wallet, condition_id, outcome_index), position_fills in by_position.items():
        resolution = resolved.get(condition_id)
        rate = payout_rate(resolution.payout_numerators, outcome_index) if resolution else 0.0
        resolved_at = resolution.resolved_at if resolution else None

        # Rule 2: long entries per tx.
        buys_by_tx: dict[str, list[Fill]] = defaultdict(list)
        for f in position_fills:
            if f.tokens_delta > 0:
                buys_by_tx[f.tx_hash].append(f)
        entries = []
        for tx_hash, buys in buys_by_tx.items():
            entry = _Entry(
                tx_hash=tx_hash,
                tokens=math.fsum(b.tokens_delta for b in buys),
                cost_usd=math.fsum(abs(b.usdc_delta) for b in buys),
                entry_time=min(b.event_time for b in buys),
                is_maker=max(b.is_maker for b in buys),
            )
            if entry.tokens >= 0.01 and entry.cost_usd >= 0.01:
                entries.append(entry)

        # Rule 3: the position's sells.
        sells = [f for f in position_fills if f.tokens_delta < 0]
        total_sold = math.fsum(-s.tokens_delta for s in sells)
        proceeds = math.fsum(s.usdc_delta for s in sells)

        # Rule 4: FIFO over entries by (entry_time, tx_hash).
        entries.sort(key=lambda e: (e.entry_time, e.tx_hash))
        prior = 0.0
        for e in entries:
            sold_early = min(e.tokens, max(0.0, total_sold - prior))
            held = e.tokens - sold_early
            pct = sold_early / e.tokens
            sell_value = proceeds * sold_early / total_sold if total_sold > 0 else 0.0
            if resolution is not None:  # rule 6
                exit_value = sell_value + held * rate
                pnl = exit_value - e.cost_usd
                closed = 1
            else:  # rule 7
                exit_value = sell_value
                pnl = sell_value - e.cost_usd * pct
                closed = 1 if held < 0.01 else 0
            rows.append(
                Row(
                    tx_hash=e.tx_hash,
                    wallet=wallet,
                    condition_id=condition_id,
                    outcome_index=outcome_index,
                    entry_time=e.entry_time,
                    resolved_at=resolved_at,
                    tokens=e.tokens,
                    cost_usd=e.cost_usd,
                    tokens_sold_early=sold_early,
                    tokens_held=held,
                    exit_value=exit_value,
                    pnl_usd=pnl,
                    roi=pnl / e.cost_usd,  # rule 8
                    pct_sold_early=pct,
                    is_maker=e.is_maker,
                    is_closed=closed,
                    is_short=0,
                )
            )
            prior += e.tokens

        # Rule 9: the short row.
        net_tokens = math.fsum(f.tokens_delta for f in position_fills)
        cash_flow = math.fsum(f.usdc_delta for f in position_fills)
        if net_tokens < -0.01 and cash_flow > 0.01:
            tokens = -net_tokens
            if resolution is not None:
                exit_value, pnl, closed = -tokens * rate, cash_flow - tokens * rate, 1
            else:
                exit_value, pnl, closed = 0.0, 0.0, 0
            rows.append(
                Row(
                    tx_hash=f"short_{wallet}_{condition_id}_{outcome_index}",
                    wallet=wallet,
                    condition_id=condition_id,
                    outcome_index=outcome_index,
                    entry_time=min(f.event_time for f in position_fills),
                    resolved_at=resolved_at,
                    tokens=tokens,
                    cost_usd=0.0,
                    tokens_sold_early=0.0,
                    tokens_held=tokens,
                    exit_value=exit_value,
                    pnl_usd=pnl,
                    roi=0.0,
                    pct_sold_early=0.0,
                    is_maker=0,
                    is_closed=closed,
                    is_short=1,
                )
            )
    return rows


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def slice_rows(fills: Iterable[Fill], resolutions: Iterable[Resolution], window_start: datetime) -> list[Row]:
    """The rows one refresh rebuilds: unresolved, or resolved in window_start's month or later."""
    first_month = month_start(window_start)
    return [
        row for row in compute_rows(fills, resolutions) if row.resolved_at is None or row.resolved_at >= first_month
    ]
