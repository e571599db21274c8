"""Fill, latency and commission models of the simulated execution (backtest, paper,
and the simulated half of shadow).

All prices int ticks, quantities int lots, time int ns. The models are pure and
deterministic: the only randomness (latency jitter) comes from the `random.Random`
the caller seeds.

`BookFillModel` (the default) fills against the current L2 book:

* aggressive (marketable) orders walk the opposite side level by level up to the
  limit price (``walk_depth=True``; a market order has no limit), each level giving at
  most its displayed size minus what our earlier orders already took from it since
  the book last changed; with ``walk_depth=False`` the whole quantity fills at the
  touch (infinite size at the best price). Each fill price is then worsened by
  ``slippage_bps`` (rounded to whole ticks against us) but never beyond the limit;
* passive (resting) orders keep a queue position: ``queue_ahead`` = the displayed
  size at our price when the order rests (0 if it makes a new level). A trade at our
  price by an aggressor on the other side first consumes ``queue_ahead``, the rest
  fills us; a trade through our price (a sell below our bid, a buy above our ask)
  fills us completely, as does the opposite side of the book moving strictly through
  our price; when the level shrinks without trades (cancels) ``queue_ahead`` is cut
  to the level's new size. With ``queue_position=False`` a passive order fills as
  soon as a trade prints at its price or the opposite side touches it.
  Passive fills are at our limit price, no slippage.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from core_ext.book import L2Book

__all__ = ["CommissionModel", "LatencyModel", "FillModel", "BookFillModel", "slip_price"]

SIDE_BUY, SIDE_SELL = 0, 1


@dataclass(frozen=True, slots=True)
class CommissionModel:
    """Commission of one fill, in money: ``notional * bps / 1e4 + per_fill + per_lot * lots``
    with ``maker_bps`` for passive fills ("M") and ``taker_bps`` otherwise. Negative
    maker_bps is a rebate."""
    maker_bps: float = 0.0
    taker_bps: float = 0.0
    per_fill: float = 0.0
    per_lot: float = 0.0

    def __post_init__(self) -> None:
        for name in ("maker_bps", "taker_bps", "per_fill", "per_lot"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"CommissionModel.{name} must be finite, got {value!r}")
        if self.taker_bps < 0 or self.per_fill < 0 or self.per_lot < 0:
            raise ValueError("CommissionModel: taker_bps, per_fill and per_lot must be >= 0")

    def commission(self, notional: float, lots: int, liquidity: str) -> float:
        bps = self.maker_bps if liquidity == "M" else self.taker_bps
        return abs(notional) * bps / 1e4 + self.per_fill + self.per_lot * lots


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """One-way delays: ``order_ns`` engine -> venue (a request acts on the book as of
    its arrival), ``report_ns`` venue -> engine; each plus a uniform jitter in
    [0, jitter_ns] drawn from the caller's seeded RNG."""
    order_ns: int = 0
    report_ns: int = 0
    jitter_ns: int = 0

    def __post_init__(self) -> None:
        for name in ("order_ns", "report_ns", "jitter_ns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"LatencyModel.{name} must be an int >= 0, got {value!r}")

    def order_delay(self, rng: random.Random) -> int:
        return self.order_ns + (rng.randint(0, self.jitter_ns) if self.jitter_ns else 0)

    def report_delay(self, rng: random.Random) -> int:
        return self.report_ns + (rng.randint(0, self.jitter_ns) if self.jitter_ns else 0)


def slip_price(side: int, price: int, bps: float, limit: int | None) -> int:
    """`price` worsened by `bps` (whole ticks, rounded against us), capped at `limit`."""
    if bps <= 0:
        return price
    if side == SIDE_BUY:
        p = math.ceil(price * (1.0 + bps / 1e4) - 1e-9)
        return min(p, limit) if limit is not None else p
    p = math.floor(price * (1.0 - bps / 1e4) + 1e-9)
    p = max(p, 1)
    return max(p, limit) if limit is not None else p


class FillModel(Protocol):
    """What SimExecution asks a fill model. `consumed` maps (side, price) of the book
    to lots our own orders already took there since the book last changed."""

    def aggressive_fills(self, side: int, qty: int, limit: int | None, book: L2Book,
                         consumed: dict[tuple[int, int], int]) -> list[tuple[int, int]]:
        """(price, lots) fills of an incoming order; updates `consumed`."""
        ...

    def queue_ahead_on_rest(self, side: int, price: int, book: L2Book) -> int: ...

    def on_level_change(self, side: int, price: int, queue_ahead: int, book: L2Book) -> int:
        """New queue_ahead after the book changed."""
        ...

    def passive_fill_on_book(self, side: int, price: int, leaves: int, queue_ahead: int,
                             book: L2Book) -> int:
        """Lots of a resting order filled because the book moved through it."""
        ...

    def passive_fill_on_trade(self, side: int, price: int, leaves: int, queue_ahead: int,
                              trade_price: int, trade_qty: int,
                              aggressor_side: int) -> tuple[int, int, int]:
        """(lots filled, new queue_ahead, trade lots left for orders behind us)."""
        ...


@dataclass(frozen=True, slots=True)
class BookFillModel:
    """The default fill model (see the module docstring)."""
    slippage_bps: float = 0.0
    walk_depth: bool = True
    queue_position: bool = True
    max_levels: int = 1000

    def __post_init__(self) -> None:
        if not math.isfinite(self.slippage_bps) or self.slippage_bps < 0:
            raise ValueError(f"slippage_bps must be finite and >= 0, got {self.slippage_bps!r}")
        if self.max_levels < 1:
            raise ValueError("max_levels must be >= 1")

    def aggressive_fills(self, side: int, qty: int, limit: int | None, book: L2Book,
                         consumed: dict[tuple[int, int], int]) -> list[tuple[int, int]]:
        opp = SIDE_SELL if side == SIDE_BUY else SIDE_BUY
        fills: list[tuple[int, int]] = []
        if not self.walk_depth:
            best = book.best_ask if side == SIDE_BUY else book.best_bid
            if best is None or not _marketable(side, best, limit):
                return fills
            return [(slip_price(side, best, self.slippage_bps, limit), qty)]
        prices, sizes = book.depth(opp, self.max_levels)
        left = qty
        for i in range(len(prices)):
            p = int(prices[i])
            if not _marketable(side, p, limit):
                break
            key = (opp, p)
            avail = int(sizes[i]) - consumed.get(key, 0)
            if avail <= 0:
                continue
            take = min(avail, left)
            consumed[key] = consumed.get(key, 0) + take
            fills.append((slip_price(side, p, self.slippage_bps, limit), take))
            left -= take
            if left == 0:
                break
        return fills

    def queue_ahead_on_rest(self, side: int, price: int, book: L2Book) -> int:
        return book.size_at(side, price) if self.queue_position else 0

    def on_level_change(self, side: int, price: int, queue_ahead: int, book: L2Book) -> int:
        if not self.queue_position:
            return 0
        return min(queue_ahead, book.size_at(side, price))

    def passive_fill_on_book(self, side: int, price: int, leaves: int, queue_ahead: int,
                             book: L2Book) -> int:
        if side == SIDE_BUY:
            opp = book.best_ask
            if opp is None:
                return 0
            through = opp < price if self.queue_position else opp <= price
        else:
            opp = book.best_bid
            if opp is None:
                return 0
            through = opp > price if self.queue_position else opp >= price
        return leaves if through else 0

    def passive_fill_on_trade(self, side: int, price: int, leaves: int, queue_ahead: int,
                              trade_price: int, trade_qty: int,
                              aggressor_side: int) -> tuple[int, int, int]:
        if aggressor_side == side or trade_qty <= 0:
            return 0, queue_ahead, trade_qty
        through = trade_price < price if side == SIDE_BUY else trade_price > price
        if through:
            return leaves, 0, trade_qty
        if trade_price != price:
            return 0, queue_ahead, trade_qty
        if not self.queue_position:
            fill = min(leaves, trade_qty)
            return fill, 0, trade_qty - fill
        eat = min(queue_ahead, trade_qty)
        left = trade_qty - eat
        fill = min(leaves, left)
        return fill, queue_ahead - eat, left - fill


def _marketable(side: int, price: int, limit: int | None) -> bool:
    if limit is None:
        return True
    return price <= limit if side == SIDE_BUY else price >= limit
