"""Shared helpers of the engine-core tests: a small config, a manual clock, a fake
execution client that records requests and lets a test play the venue."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from core_ext.book import L2Book
from engine.config import Config, parse_config
from engine.orders import ClOrdIdGenerator, ExecKind, ExecutionReport, Order, OrderManager
from engine.risk_policy import build_kernel

# XYZ: an equity-like instrument (tick 0.01, lot 1); BTC: a crypto-like one.
CONFIG_TOML = """
stage = "backtest"
account = "T1"
capital = "100000"

[[instruments]]
symbol = "XYZ"
tick_size = "0.01"
lot_size = "1"

[[instruments]]
symbol = "BTC"
tick_size = "0.01"
lot_size = "0.001"

[strategy]
strategy = "engine.strategies.ma_crossover:MovingAverageCrossover"
[strategy.params]
symbol = "XYZ"
qty = "10"
fast = 3
slow = 6
sample_interval_ms = 0

[risk]
max_gross_exposure = "1000000"
max_concentration_bps = 10000
max_orders_per_window = 100000
window_ms = 1000
daily_loss_limit = "5000"
max_drawdown_pct = 10
var_limit = "50000"
var_window = 100
var_min_samples = 10
var_interval_ms = 1000

[risk.capital_limit]
small = "20000"

[risk.instruments.XYZ]
max_order_qty = "1000"
max_order_notional = "200000"
price_band_bps = 500
max_position = "2000"
max_open_orders = 50
max_ref_age_ms = 60000

[risk.instruments.BTC]
max_order_qty = "5"
max_order_notional = "100000"
price_band_bps = 500
max_position = "10"
max_open_orders = 50
max_ref_age_ms = 60000
"""

XYZ_PRICE = 10_000      # 100.00
BTC_PRICE = 2_000_000   # 20000.00


def make_config(text: str = CONFIG_TOML, **kw) -> Config:
    return parse_config(text, source="test.toml", **kw)


class Clock:
    """A manual ns clock."""

    def __init__(self, start: int = 1_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int) -> int:
        self.now += ns
        return self.now


@dataclass
class FakeClient:
    """Records every request; the test answers with `report(...)`."""
    supports_mass_cancel: bool = False
    fail_next: bool = False
    handler: object = None
    sent: list = field(default_factory=list)
    _exec: object = field(default_factory=lambda: itertools.count(1))

    def set_report_handler(self, handler) -> None:
        self.handler = handler

    def _record(self, *item) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("link down")
        self.sent.append(item)

    def send_new(self, order: Order) -> None:
        self._record("new", order.cl_ord_id, order.qty, order.price)

    def send_cancel(self, order: Order, cancel_id: int) -> None:
        self._record("cancel", order.cl_ord_id, cancel_id)

    def send_replace(self, order: Order, replacement: Order) -> None:
        self._record("replace", order.cl_ord_id, replacement.cl_ord_id, replacement.qty, replacement.price)

    def send_mass_cancel(self, symbol, request_id: int) -> None:
        self._record("mass_cancel", symbol, request_id)

    def send_status_request(self, order: Order) -> None:
        self._record("status", order.cl_ord_id)

    def kinds(self) -> list[str]:
        return [s[0] for s in self.sent]

    # --- playing the venue ------------------------------------------------------
    def report(self, kind: ExecKind, cl_ord_id: int, **kw) -> ExecutionReport:
        kw.setdefault("exec_id", f"E{next(self._exec)}")
        r = ExecutionReport(kind, cl_ord_id, **kw)
        self.handler(r)
        return r

    def ack(self, cl: int, **kw):
        return self.report(ExecKind.NEW, cl, **kw)

    def fill(self, cl: int, qty: int, px: int, **kw):
        return self.report(ExecKind.TRADE, cl, last_qty=qty, last_px=px, **kw)

    def canceled(self, cl: int, **kw):
        return self.report(ExecKind.CANCELED, cl, **kw)


def make_om(config: Config | None = None, client=None, clock: Clock | None = None, **kw):
    """(order manager, kernel, client, clock) with reference prices set for XYZ and BTC."""
    config = config or make_config()
    clock = clock or Clock()
    client = client if client is not None else FakeClient()
    kernel = build_kernel(config)
    insts = config.instruments_by_symbol
    kernel.set_reference_price(insts["XYZ"].inst_id, XYZ_PRICE, clock.now)
    kernel.set_reference_price(insts["BTC"].inst_id, BTC_PRICE, clock.now)
    om = OrderManager(kernel, client, insts, clock=clock,
                      ids=ClOrdIdGenerator(1_700_000_000_000_000_000), **kw)
    return om, kernel, client, clock


def book_with(symbol: str, bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> L2Book:
    b = L2Book(symbol)
    for p, q in bids:
        b.update(0, p, q)
    for p, q in asks:
        b.update(1, p, q)
    return b
