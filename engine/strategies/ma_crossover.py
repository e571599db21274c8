"""Moving-average crossover on the mid price of one instrument.

The mid is sampled at most once per ``sample_interval_ms`` (0: every quote change).
Once ``slow`` samples exist, the target position is ``+qty`` while the fast average
is above the slow one and ``-qty`` (or 0 with ``allow_short = false``) while it is
below; the position changes when the averages cross. The strategy moves to its target
with one marketable limit order at a time (IOC at the touch plus
``price_offset_ticks``), and waits for that order to end before sending another.

Parameters (``[strategy.params]``):

==================== ======================================== =========
symbol               configured instrument                    required
qty                  decimal quantity (multiple of the lot)   required
fast                 fast window, samples, 1..10000           10
slow                 slow window, samples, fast+1..100000     30
sample_interval_ms   0..3600000                               1000
price_offset_ticks   0..10000 (how far through the touch)     0
allow_short          true / false                             true
==================== ======================================== =========
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from engine.instruments import Instrument
from engine.orders import OrderSnapshot, Side
from engine.strategy import (
    Quote,
    Strategy,
    check_known,
    param_bool,
    param_int,
    param_lots,
    param_symbol,
)

PARAMS = ("symbol", "qty", "fast", "slow", "sample_interval_ms", "price_offset_ticks", "allow_short")


class MovingAverageCrossover(Strategy):
    timer_interval_ns = 1_000_000_000

    @classmethod
    def validate_params(cls, params: Mapping[str, Any], instruments: Mapping[str, Instrument]) -> None:
        check_known(params, PARAMS)
        symbol = param_symbol(params, instruments)
        param_lots(params, "qty", instruments.get(symbol))
        fast = param_int(params, "fast", 10, 1, 10_000)
        param_int(params, "slow", 30, fast + 1, 100_000)
        param_int(params, "sample_interval_ms", 1000, 0, 3_600_000)
        param_int(params, "price_offset_ticks", 0, 0, 10_000)
        param_bool(params, "allow_short", True)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        p = self.params
        check_known(p, PARAMS)
        self.symbol = param_symbol(p, None)
        self.fast = param_int(p, "fast", 10, 1, 10_000)
        self.slow = param_int(p, "slow", 30, self.fast + 1, 100_000)
        self.interval_ns = param_int(p, "sample_interval_ms", 1000, 0, 3_600_000) * 1_000_000
        self.offset = param_int(p, "price_offset_ticks", 0, 0, 10_000)
        self.allow_short = param_bool(p, "allow_short", True)
        self.qty_lots = 0
        self._samples: deque[int] = deque(maxlen=self.slow)   # mid_x2 values
        self._fast_sum = 0
        self._slow_sum = 0
        self._last_sample_ns: int | None = None
        self._working: int | None = None
        self.signal = 0          # +1 fast above slow, -1 below, 0 not enough data / equal
        self.orders_sent = 0

    def on_start(self) -> None:
        self.qty_lots = param_lots(self.params, "qty", self.ctx.instrument(self.symbol))

    def on_quote(self, quote: Quote) -> None:
        if quote.symbol != self.symbol or quote.mid_x2 is None:
            return
        if self._last_sample_ns is not None and quote.ts_ns - self._last_sample_ns < self.interval_ns:
            return
        self._last_sample_ns = quote.ts_ns
        self._add_sample(quote.mid_x2)
        self._trade(quote)

    def _add_sample(self, mid_x2: int) -> None:
        s = self._samples
        if len(s) == self.slow:
            self._slow_sum -= s[0]
        if len(s) >= self.fast:
            self._fast_sum -= s[-self.fast]
        s.append(mid_x2)
        self._slow_sum += mid_x2
        self._fast_sum += mid_x2
        if len(s) < self.slow:
            self.signal = 0
            return
        # fast_sum / fast vs slow_sum / slow, compared exactly in integers
        diff = self._fast_sum * self.slow - self._slow_sum * self.fast
        self.signal = (diff > 0) - (diff < 0)

    def target_position(self) -> int | None:
        if self.signal > 0:
            return self.qty_lots
        if self.signal < 0:
            return -self.qty_lots if self.allow_short else 0
        return None

    def _trade(self, quote: Quote) -> None:
        target = self.target_position()
        if target is None or self._working is not None:
            return
        delta = target - self.ctx.position(self.symbol)
        if delta == 0:
            return
        if delta > 0:
            if quote.ask is None:
                return
            side, price = Side.BUY, quote.ask + self.offset
        else:
            if quote.bid is None:
                return
            side, price = Side.SELL, max(quote.bid - self.offset, 1)
        self._working = self.submit_order(self.symbol, side, abs(delta), price, tif="IOC")
        self.orders_sent += 1
        order = self.ctx.order(self._working)
        if order is not None and order.is_terminal:   # refused at once (risk, block)
            self._working = None

    def on_order(self, order: OrderSnapshot) -> None:
        if order.cl_ord_id == self._working and order.is_terminal:
            self._working = None

    def on_stop(self) -> None:
        self.cancel_all()
