"""An aggressive strategy for the crash-recovery tests (tests/test_crash_recovery.py).

It keeps orders working and in flight all the time, through every kind of request:
`levels` bids and asks (the first joined to the touch, the others `level_gap_ticks`
further out each) replaced whenever the touch moves, a crossing
IOC order every `take_every_ms` (on the side that brings the inventory back, or a
random one), and now and then a cancel of a working quote (resubmitted at the next
quote). Requests are paced by a token bucket (`max_actions_per_s`) so that the risk
kernel's order-rate limit is rarely what stops it. Not a trading idea: a load.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from engine.orders import PENDING_STATES, OrderSnapshot, OrdStatus, Side
from engine.strategy import Quote, Strategy, check_known, param_int, param_lots, param_symbol

PARAMS = ("symbol", "qty", "max_inventory", "levels", "level_gap_ticks", "take_every_ms", "cancel_every_ms",
          "max_actions_per_s", "seed")


class CrashStrategy(Strategy):

    @classmethod
    def validate_params(cls, params: Mapping[str, Any], instruments) -> None:
        check_known(params, PARAMS)
        inst = instruments.get(param_symbol(params, instruments))
        param_lots(params, "qty", inst)
        param_lots(params, "max_inventory", inst)
        param_int(params, "levels", 2, 1, 5)
        param_int(params, "level_gap_ticks", 2, 1, 1000)
        param_int(params, "take_every_ms", 150, 10, 60_000)
        param_int(params, "cancel_every_ms", 400, 10, 60_000)
        param_int(params, "max_actions_per_s", 30, 1, 10_000)
        param_int(params, "seed", 1, 0, 2**31)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        p = self.params
        self.symbol = param_symbol(p, None)
        self.levels = param_int(p, "levels", 2, 1, 5)
        self.gap = param_int(p, "level_gap_ticks", 2, 1, 1000)
        self.take_every_ns = param_int(p, "take_every_ms", 150, 10, 60_000) * 1_000_000
        self.cancel_every_ns = param_int(p, "cancel_every_ms", 400, 10, 60_000) * 1_000_000
        self.rate = param_int(p, "max_actions_per_s", 30, 1, 10_000)
        self.rng = random.Random(param_int(p, "seed", 1, 0, 2**31))
        self.working: dict[tuple[Side, int], int | None] = {
            (side, level): None for side in (Side.BUY, Side.SELL) for level in range(self.levels)}
        self.qty = 0
        self.max_inventory = 0
        self.tokens = 0.0
        self.last_refill = 0
        self.last_take = 0
        self.last_cancel = 0

    def on_start(self) -> None:
        inst = self.ctx.instrument(self.symbol)
        self.qty = param_lots(self.params, "qty", inst)
        self.max_inventory = param_lots(self.params, "max_inventory", inst)
        self.last_refill = self.last_take = self.last_cancel = self.ctx.now_ns()

    # --- pacing -------------------------------------------------------------------
    def _token(self) -> bool:
        now = self.ctx.now_ns()
        self.tokens = min(float(self.rate) / 4, self.tokens + (now - self.last_refill) * self.rate / 1e9)
        self.last_refill = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    # --- callbacks ----------------------------------------------------------------
    def on_quote(self, quote: Quote) -> None:
        if quote.symbol == self.symbol:
            self._quote(quote)

    def on_timer(self, now_ns: int) -> None:
        q = self.ctx.quote(self.symbol)
        if q.bid is None or q.ask is None or q.bid >= q.ask:
            return
        if now_ns - self.last_take >= self.take_every_ns and self._token():
            self.last_take = now_ns
            inv = self.ctx.position(self.symbol)
            if inv > self.max_inventory // 2:
                side = Side.SELL
            elif inv < -self.max_inventory // 2:
                side = Side.BUY
            else:
                side = self.rng.choice((Side.BUY, Side.SELL))
            price = q.ask if side is Side.BUY else q.bid
            self.submit_order(self.symbol, side, self.rng.randint(1, self.qty), price, "IOC")
        if now_ns - self.last_cancel >= self.cancel_every_ns:
            self.last_cancel = now_ns
            cl = self.working[self.rng.choice(list(self.working))]
            order = self.ctx.order(cl) if cl is not None else None
            if order is not None and order.state in (OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED) and self._token():
                self.cancel_order(cl)
        self._quote(q)

    def on_order(self, order: OrderSnapshot) -> None:
        for key, cl in self.working.items():
            if cl != order.cl_ord_id:
                continue
            if order.state is OrdStatus.REJECTED and order.orig_cl_ord_id:
                self.working[key] = order.orig_cl_ord_id       # replace refused: the original stays
            elif order.is_terminal and order.state is not OrdStatus.REPLACED:
                self.working[key] = None

    def on_stop(self) -> None:
        self.cancel_all()

    # --- quoting ------------------------------------------------------------------
    def _quote(self, q: Quote) -> None:
        if q.bid is None or q.ask is None or q.bid >= q.ask:
            return
        inv = self.ctx.position(self.symbol)
        for (side, level) in self.working:
            price = q.bid - level * self.gap if side is Side.BUY else q.ask + level * self.gap
            if price <= 0:
                continue
            room = self.max_inventory - inv if side is Side.BUY else self.max_inventory + inv
            key = (side, level)
            cl = self.working[key]
            order = self.ctx.order(cl) if cl is not None else None
            if order is not None and order.is_terminal:
                order = self.working[key] = None
            if order is None:
                if room >= self.qty * (level + 1) and self._token():
                    new = self.submit_order(self.symbol, side, self.qty, price)
                    placed = self.ctx.order(new)
                    self.working[key] = None if placed is None or placed.is_terminal else new
                continue
            if order.state in PENDING_STATES or order.price == price or not self._token():
                continue
            new = self.replace_order(order.cl_ord_id, qty=order.cum_qty + self.qty, price=price)
            rep = self.ctx.order(new) if new is not None else None
            if rep is not None and rep.state is not OrdStatus.REJECTED:
                self.working[key] = new
