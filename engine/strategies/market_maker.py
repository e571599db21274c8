"""A simple market maker: one bid and one ask around the mid, skewed by inventory.

Quotes (ticks): with mid m and inventory i lots,
``bid = floor(m - half_spread_ticks - skew)``, ``ask = ceil(m + half_spread_ticks - skew)``,
``skew = skew_ticks_per_lot * i`` (a long position lowers both quotes, so the ask gets
hit sooner and the bid later). Quotes never cross the book (bid < best ask, ask >
best bid), so they rest. The bid size is ``min(qty, max_inventory - i)`` and the ask
size ``min(qty, max_inventory + i)``: no quote on a side that would pass the inventory
limit. A resting quote is moved (cancel/replace) once its target price differs by at
least ``requote_ticks``; a side with a request in flight is left alone until it is
answered. Every quote goes through the order manager and the risk kernel like any
order.

Parameters (``[strategy.params]``):

====================  ========================================  =======
symbol                configured instrument                     required
qty                   quote size, decimal quantity              required
max_inventory         decimal quantity >= qty                   10 * qty
half_spread_ticks     1..100000                                 2
skew_ticks_per_lot    0..1e6 (float)                            0.0
requote_ticks         1..100000                                 1
====================  ========================================  =======
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from engine.instruments import Instrument
from engine.orders import PENDING_STATES, OrderSnapshot, OrdStatus, Side
from engine.strategy import (
    Quote,
    Strategy,
    check_known,
    param_float,
    param_int,
    param_lots,
    param_symbol,
)

PARAMS = ("symbol", "qty", "max_inventory", "half_spread_ticks", "skew_ticks_per_lot",
          "requote_ticks")


class MarketMaker(Strategy):

    @classmethod
    def validate_params(cls, params: Mapping[str, Any], instruments: Mapping[str, Instrument]) -> None:
        check_known(params, PARAMS)
        symbol = param_symbol(params, instruments)
        inst = instruments.get(symbol)
        qty = param_lots(params, "qty", inst)
        if "max_inventory" in params:
            max_inv = param_lots(params, "max_inventory", inst)
            if qty is not None and max_inv is not None and max_inv < qty:
                raise ValueError(f"max_inventory: {params['max_inventory']} must be >= qty {params['qty']}")
        param_int(params, "half_spread_ticks", 2, 1, 100_000)
        param_float(params, "skew_ticks_per_lot", 0.0, 0.0, 1e6)
        param_int(params, "requote_ticks", 1, 1, 100_000)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        p = self.params
        check_known(p, PARAMS)
        self.symbol = param_symbol(p, None)
        self.half_spread = param_int(p, "half_spread_ticks", 2, 1, 100_000)
        self.skew_per_lot = param_float(p, "skew_ticks_per_lot", 0.0, 0.0, 1e6)
        self.requote = param_int(p, "requote_ticks", 1, 1, 100_000)
        self.qty_lots = 0
        self.max_inventory = 0
        self.working: dict[Side, int | None] = {Side.BUY: None, Side.SELL: None}
        self.quotes_sent = 0
        self.replaces_sent = 0

    def on_start(self) -> None:
        inst = self.ctx.instrument(self.symbol)
        self.qty_lots = param_lots(self.params, "qty", inst)
        self.max_inventory = (param_lots(self.params, "max_inventory", inst)
                              if "max_inventory" in self.params else 10 * self.qty_lots)

    def targets(self, bid: int, ask: int, inventory: int) -> dict[Side, tuple[int, int]]:
        """side -> (price ticks, qty lots) of the wanted quotes (qty 0: no quote)."""
        mid = (bid + ask) / 2
        skew = self.skew_per_lot * inventory
        bid_px = math.floor(mid - self.half_spread - skew + 1e-9)
        ask_px = math.ceil(mid + self.half_spread - skew - 1e-9)
        bid_px = max(min(bid_px, ask - 1), 1)
        ask_px = max(ask_px, bid + 1)
        return {Side.BUY: (bid_px, max(min(self.qty_lots, self.max_inventory - inventory), 0)),
                Side.SELL: (ask_px, max(min(self.qty_lots, self.max_inventory + inventory), 0))}

    def on_quote(self, quote: Quote) -> None:
        if quote.symbol == self.symbol:
            self._requote(quote)

    def on_fill(self, fill) -> None:
        self._requote(self.ctx.quote(self.symbol))

    def _requote(self, quote: Quote) -> None:
        if quote.bid is None or quote.ask is None or quote.bid >= quote.ask:
            return
        inventory = self.ctx.position(self.symbol)
        for side, (price, qty) in self.targets(quote.bid, quote.ask, inventory).items():
            cl = self.working[side]
            order = self.ctx.order(cl) if cl is not None else None
            if order is not None and order.is_terminal:
                order, self.working[side] = None, None
            if order is None:
                if qty > 0:
                    self.working[side] = self.submit_order(self.symbol, side, qty, price)
                    self.quotes_sent += 1
                    placed = self.ctx.order(self.working[side])
                    if placed is not None and placed.is_terminal:
                        self.working[side] = None
                continue
            if order.state in PENDING_STATES:
                continue
            if qty == 0:
                self.cancel_order(order.cl_ord_id)
            elif abs(order.price - price) >= self.requote:
                new_id = self.replace_order(order.cl_ord_id, qty=order.cum_qty + qty, price=price)
                if new_id is not None:
                    self.replaces_sent += 1
                    rep = self.ctx.order(new_id)
                    if rep is not None and rep.state is not OrdStatus.REJECTED:
                        self.working[side] = new_id

    def on_order(self, order: OrderSnapshot) -> None:
        for side, cl in self.working.items():
            if cl != order.cl_ord_id:
                continue
            if order.state is OrdStatus.REJECTED and order.orig_cl_ord_id:
                self.working[side] = order.orig_cl_ord_id   # replace refused: the original stays
            elif order.is_terminal and order.state is not OrdStatus.REPLACED:
                self.working[side] = None

    def on_stop(self) -> None:
        self.cancel_all()
