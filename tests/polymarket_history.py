"""Random histories of the reference workload, small enough for the engine to refresh in a blink.

A history starts with some wallets trading in some conditions, then moves on in steps of 6 hours.
Each step brings what a real day brings, at random: new wallets, new fills in old positions, fills
that arrive late but inside ``lateness`` (they happened before the last run, and are written after
it), resolutions (some late, some superseded, tied, soft-deleted or with an empty payout), self-fills,
copies of fills (rule 1: exact, or with USDC rounded to 6 decimals), fills from other sources, tiny
fills, shorts, and the zero address. Histories may cross a month boundary, which moves the slice.

Nothing arrives later than ``lateness``: that is the one change an incremental run may miss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from tests.polymarket_reference import ZERO_ADDRESS, Fill, Resolution

STEP = timedelta(hours=6)
PAYOUTS = ("[1,0]", "[0,1]", "[1,1]")


@dataclass
class History:
    seed: int
    lateness: timedelta
    rng: random.Random = field(init=False)
    start: datetime = field(init=False)
    wallets: list[str] = field(default_factory=list)
    open_conditions: list[str] = field(default_factory=list)
    resolved: dict[str, datetime] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)  # everything written so far
    _serial: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Some histories start within a day of a month's end, so their steps cross into the next one.
        month = datetime(2026, self.rng.randint(1, 12), 1, tzinfo=UTC)
        if self.rng.random() < 0.4:
            next_month = (month + timedelta(days=32)).replace(day=1)
            self.start = next_month - timedelta(hours=self.rng.randint(1, 20))
        else:
            self.start = month + timedelta(days=self.rng.randint(2, 26), hours=self.rng.randint(0, 23))

    def run_time(self, step: int) -> datetime:
        return self.start + step * STEP

    # -- building blocks -------------------------------------------------------------------------

    def _hex(self, nbytes: int) -> str:
        return "0x" + "".join(f"{self.rng.randrange(256):02x}" for _ in range(nbytes))

    def _new_wallet(self) -> str:
        wallet = ZERO_ADDRESS if self.rng.random() < 0.03 else self._hex(20)
        self.wallets.append(wallet)
        return wallet

    def _new_condition(self) -> str:
        condition = self._hex(32)
        self.open_conditions.append(condition)
        return condition

    def _fill(
        self, wallet: str, condition: str, outcome: int, at: datetime, tokens: float, price: float, tx: str
    ) -> list[Fill]:
        """One fill of ``tokens`` (> 0 bought, < 0 sold), with what rule 1 must see through."""
        self._serial += 1
        fill_id = f"f{self.seed}-{self._serial}"
        roll = self.rng.random()
        source = "ctf" if roll < 0.05 else "negrisk" if roll < 0.09 else "clob"
        if self.rng.random() < 0.04:  # tiny: under 0.01 tokens or under 0.01 USDC
            tokens = tokens / abs(tokens) * self.rng.uniform(0.001, 0.009)
        usdc = -tokens * price
        taker = Fill(fill_id, tx, at.replace(tzinfo=None), wallet, condition, outcome, tokens, usdc, source, 0, 0)
        kind = self.rng.random()
        if kind < 0.06:  # a self-fill: the taker row, and the maker twin on the other side
            taker = replace(taker, is_self_fill=1)
            twin = replace(taker, fill_id=fill_id + "m", is_maker=1, tokens_delta=-tokens, usdc_delta=-usdc)
            return [taker, twin]
        if kind < 0.12:
            taker = replace(taker, is_maker=1)
        if kind > 0.95:  # a copy from an overlapping backfill, exact or rounded to USDC's 6 decimals
            return [taker, taker if self.rng.random() < 0.5 else replace(taker, usdc_delta=round(usdc, 6))]
        return [taker]

    def _trade(self, wallet: str, condition: str, outcome: int, at: datetime) -> list[Fill]:
        """A transaction: a buy, a sell or a short, of 1 or 2 fills, sometimes in the same second as
        another (FIFO order then falls back to the tx hash)."""
        tx = self._hex(32)
        price = self.rng.uniform(0.02, 0.98)
        size = self.rng.choice((0.5, 3.0, 20.0, 150.0)) * self.rng.uniform(0.5, 1.5)
        sign = 1.0 if self.rng.random() < 0.65 else -1.0
        out: list[Fill] = []
        for _ in range(self.rng.choice((1, 1, 2))):
            out += self._fill(wallet, condition, outcome, at, sign * size, price, tx)
        return out

    def _moment(self, lo: datetime, hi: datetime) -> datetime:
        seconds = int((hi - lo).total_seconds())
        return lo + timedelta(seconds=self.rng.randint(0, max(0, seconds)))

    def _position(self) -> tuple[str, str, int]:
        """An existing position if any, mostly; the conditions still open are the ones traded."""
        known = [(f.wallet, f.condition_id, f.outcome_index) for f in self.fills if f.condition_id not in self.resolved]
        if known and self.rng.random() < 0.7:
            return self.rng.choice(known)
        wallet = self.rng.choice(self.wallets) if self.wallets and self.rng.random() < 0.6 else self._new_wallet()
        if not self.open_conditions or self.rng.random() < 0.15:
            self._new_condition()
        return wallet, self.rng.choice(self.open_conditions), self.rng.randint(0, 1)

    def _resolve(self, condition: str, at: datetime) -> list[Resolution]:
        payout = self.rng.choice(PAYOUTS)
        rows = [Resolution(condition, payout, at.replace(tzinfo=None), 0)]
        extra = self.rng.random()
        if extra < 0.15:  # a soft-deleted row
            rows.append(Resolution(condition, self.rng.choice(PAYOUTS), at.replace(tzinfo=None), 1))
        elif extra < 0.25:  # an empty payout
            rows.append(Resolution(condition, "", at.replace(tzinfo=None), 0))
        elif extra < 0.35:  # a tie: another valid payout at the same instant (the greater string wins)
            rows.append(Resolution(condition, self.rng.choice(PAYOUTS), at.replace(tzinfo=None), 0))
        self.resolved[condition] = at
        if condition in self.open_conditions:
            self.open_conditions.remove(condition)
        return rows

    # -- what a step brings ----------------------------------------------------------------------

    def initial(self) -> tuple[list[Fill], list[Resolution]]:
        """Before the first run: some weeks of trading, and a few conditions already resolved."""
        for _ in range(self.rng.randint(4, 10)):
            self._new_condition()
        for _ in range(self.rng.randint(6, 15)):
            self._new_wallet()
        begin = self.start - timedelta(days=40)
        fills: list[Fill] = []
        for _ in range(self.rng.randint(80, 200)):
            new = self._trade(*self._position(), self._moment(begin, self.start - timedelta(hours=1)))
            fills += new
            self.fills += new
        resolutions: list[Resolution] = []
        for condition in list(self.open_conditions)[: self.rng.randint(1, 2)]:
            resolutions += self._resolve(condition, self._moment(begin + timedelta(days=20), self.start))
        return fills, resolutions

    def step(self, step: int) -> tuple[list[Fill], list[Resolution]]:
        """What is written between run ``step - 1`` and run ``step``."""
        last_run, run_time = self.run_time(step - 1), self.run_time(step)
        fills: list[Fill] = []
        resolutions: list[Resolution] = []
        quiet = self.rng.random() < 0.1  # some steps bring nothing at all
        for _ in range(0 if quiet else self.rng.randint(3, 20)):
            late = self.rng.random() < 0.25  # happened before the last run, written only now
            lo = last_run - self.lateness if late else last_run + timedelta(seconds=1)
            at = self._moment(lo, last_run if late else run_time)
            new = self._trade(*self._position(), at)
            fills += new
            self.fills += new
        if self.fills and not quiet and self.rng.random() < 0.3:  # an old fill copied again, exactly
            fills.append(self.rng.choice(self.fills))
        for condition in list(self.open_conditions):
            if not quiet and self.rng.random() < 0.2:
                late = self.rng.random() < 0.3
                lo = last_run - self.lateness if late else last_run + timedelta(seconds=1)
                resolutions += self._resolve(condition, self._moment(lo, last_run if late else run_time))
        if self.resolved and not quiet and self.rng.random() < 0.1:  # a later, superseding resolution
            condition = self.rng.choice(sorted(self.resolved))
            resolutions += self._resolve(condition, self._moment(last_run + timedelta(seconds=1), run_time))
        return fills, resolutions
