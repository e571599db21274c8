"""A seeded synthetic market: order-by-order flow around a random-walk fair price.

Used when no data file is given: by `engine demo`, by the venue simulator's resting
liquidity, and by tests. The same seed always gives the same flow (numba's RNG is
seeded inside the compiled function, so the sequence does not depend on NumPy's
global state).

Each event row: kind (0 add limit, 1 cancel, 2 marketable order), order id, side
(0 buy, 1 sell; for a cancel, the side of the order cancelled), price in ticks (0 for market orders), quantity in lots, and a
timestamp in ns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

EVENT_ADD = 0
EVENT_CANCEL = 1
EVENT_MARKET = 2

EVENT_DTYPE = np.dtype([
    ("ts_ns", "<i8"),
    ("kind", "u1"),
    ("side", "u1"),
    ("order_id", "<u8"),
    ("price", "<i8"),
    ("qty", "<i8"),
])


@dataclass(frozen=True)
class SyntheticParams:
    start_price_ticks: int = 10_000      # e.g. $100.00 at a 0.01 tick
    volatility_ticks: float = 0.35       # std-dev of the fair-price step per event
    mean_spread_ticks: float = 2.0
    depth_decay: float = 0.35            # geometric distance of new orders from the touch
    cancel_ratio: float = 0.42           # share of events that cancel a live order
    market_ratio: float = 0.06           # share of events that are marketable orders
    mean_qty_lots: int = 100
    event_interval_ns: int = 50_000      # mean time between events (20k events/s)
    first_order_id: int = 1

    def __post_init__(self) -> None:
        if self.start_price_ticks <= 100:
            raise ValueError("start_price_ticks must be > 100")
        if not 0 <= self.cancel_ratio + self.market_ratio < 1:
            raise ValueError("cancel_ratio + market_ratio must be in [0, 1)")
        if self.mean_qty_lots < 1:
            raise ValueError("mean_qty_lots must be >= 1")


@numba.njit(cache=True)
def _generate(n, seed, start_price, vol, spread, decay, cancel_ratio, market_ratio, mean_qty,
              interval_ns, first_id, out_ts, out_kind, out_side, out_id, out_price, out_qty):
    np.random.seed(seed)
    live_ids = np.empty(n, np.uint64)
    live_sides = np.empty(n, np.uint8)
    live_count = 0
    fair = float(start_price)
    ts = 0
    next_id = first_id
    for i in range(n):
        ts += 1 + int(np.random.exponential(interval_ns))
        fair += np.random.normal(0.0, vol)
        if fair < 100.0:
            fair = 100.0
        u = np.random.random()
        side = 0 if np.random.random() < 0.5 else 1
        qty = 1 + int(np.random.exponential(mean_qty))
        out_ts[i] = ts
        out_side[i] = side
        out_qty[i] = qty
        if u < cancel_ratio and live_count > 0:
            j = np.random.randint(0, live_count)
            out_kind[i] = 1
            out_id[i] = live_ids[j]
            out_side[i] = live_sides[j]
            out_price[i] = 0
            live_count -= 1
            live_ids[j] = live_ids[live_count]
            live_sides[j] = live_sides[live_count]
        elif u < cancel_ratio + market_ratio:
            out_kind[i] = 2
            out_id[i] = next_id
            next_id += 1
            out_price[i] = 0
        else:
            half = spread / 2.0
            distance = np.random.geometric(decay) - 1
            if side == 0:
                price = int(np.floor(fair - half)) - distance
            else:
                price = int(np.ceil(fair + half)) + distance
            if price < 1:
                price = 1
            out_kind[i] = 0
            out_id[i] = next_id
            out_price[i] = price
            live_ids[live_count] = next_id
            live_sides[live_count] = side
            live_count += 1
            next_id += 1
    return next_id


def generate(n_events: int, seed: int, params: SyntheticParams | None = None) -> np.ndarray:
    """`n_events` rows of EVENT_DTYPE; identical for identical (n_events, seed, params)."""
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    p = params or SyntheticParams()
    out = np.zeros(n_events, dtype=EVENT_DTYPE)
    ts = np.empty(n_events, np.int64)
    kind = np.empty(n_events, np.uint8)
    side = np.empty(n_events, np.uint8)
    ids = np.empty(n_events, np.uint64)
    price = np.empty(n_events, np.int64)
    qty = np.empty(n_events, np.int64)
    _generate(n_events, seed, p.start_price_ticks, p.volatility_ticks, p.mean_spread_ticks, p.depth_decay,
              p.cancel_ratio, p.market_ratio, p.mean_qty_lots, p.event_interval_ns, p.first_order_id,
              ts, kind, side, ids, price, qty)
    out["ts_ns"], out["kind"], out["side"] = ts, kind, side
    out["order_id"], out["price"], out["qty"] = ids, price, qty
    return out
