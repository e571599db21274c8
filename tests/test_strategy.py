"""Strategy API (context, host) and the sample strategies, on the fake client and on
the simulated execution with real quotes."""
from __future__ import annotations

import pytest

from core_ext.book import BOOK_DEPTH_CHANGED, BOOK_TOP_CHANGED, BOOK_UNCHANGED, L2Book
from engine.fill_model import BookFillModel, CommissionModel
from engine.marketdata import load_quotes_csv
from engine.orders import OrderManager, OrdStatus, Side
from engine.portfolio import Portfolio
from engine.risk_policy import build_kernel
from engine.sim_execution import SimExecution
from engine.strategies import MarketMaker, MovingAverageCrossover
from engine.strategy import Quote, Strategy, StrategyContext, StrategyHost, StrategyStopped
from tests.conftest import shared_file
from tests.engine_helpers import XYZ_PRICE, Clock, book_with, make_config, make_om

S = OrdStatus


class Recorder(Strategy):
    def __init__(self, params=None):
        super().__init__(params)
        self.calls = []

    def on_start(self):
        self.calls.append("start")

    def on_quote(self, quote):
        self.calls.append(("quote", quote.bid, quote.ask))

    def on_book(self, symbol):
        self.calls.append(("book", symbol))

    def on_trade(self, trade):
        self.calls.append(("trade", trade.price, trade.aggressor_side))

    def on_order(self, order):
        self.calls.append(("order", order.state))

    def on_fill(self, fill):
        self.calls.append(("fill", fill.qty, self.position(fill.symbol)))

    def on_timer(self, now_ns):
        self.calls.append(("timer", now_ns))

    def on_stop(self):
        self.calls.append("stop")


def setup(strategy=None, om_kw=None):
    cfg = make_config()
    om, kernel, client, clock = make_om(cfg, **(om_kw or {}))
    insts = cfg.instruments_by_symbol
    books = {"XYZ": book_with("XYZ", [(9_999, 10)], [(10_001, 10)]), "BTC": L2Book("BTC")}
    pf = Portfolio(insts)
    ctx = StrategyContext(om, pf, books, insts, clock=clock)
    strat = strategy or Recorder()
    errors = []
    host = StrategyHost(strat, ctx, on_error=lambda where, exc: errors.append((where, exc)))
    om.add_listener(on_fill=pf.on_fill)
    om.add_listener(on_order=host.order_event, on_fill=host.fill_event)
    return host, strat, om, kernel, client, clock, books, pf, errors


def test_callbacks_are_dispatched():
    host, strat, om, kernel, client, clock, books, pf, _ = setup()
    host.book_changed("XYZ", BOOK_TOP_CHANGED, 5)     # before start: ignored
    host.start()
    host.book_changed("XYZ", BOOK_TOP_CHANGED, 5)
    host.book_changed("XYZ", BOOK_DEPTH_CHANGED, 6)
    host.book_changed("XYZ", BOOK_UNCHANGED, 7)
    host.trade("XYZ", 10_000, 3, 1, 8)
    host.timer(9)
    cl = strat.submit_order("XYZ", "buy", 5, XYZ_PRICE)
    client.ack(cl)
    client.fill(cl, 5, XYZ_PRICE)
    host.stop()
    host.stop()
    assert strat.calls == ["start", ("quote", 9_999, 10_001), ("book", "XYZ"), ("book", "XYZ"),
                           ("trade", 10_000, Side.SELL), ("timer", 9),
                           ("order", S.PENDING_NEW), ("order", S.NEW),
                           ("fill", 5, 5),                         # the portfolio booked it first
                           ("order", S.FILLED), "stop"]


def test_actions_go_through_the_risk_kernel():
    host, strat, om, kernel, client, clock, books, pf, _ = setup()
    host.start()
    cl = strat.submit_order("XYZ", "buy", 5_000, XYZ_PRICE)       # > max_order_qty
    assert strat.ctx.order(cl).state is S.REJECTED
    assert strat.ctx.order(cl).reject_reason == "RISK_REJECT_MAX_ORDER_QTY"
    assert client.sent == []
    kernel.trip_kill_switch()
    cl = strat.submit_order("XYZ", "buy", 1, XYZ_PRICE)
    assert strat.ctx.order(cl).reject_reason == "RISK_REJECT_KILL_SWITCH"
    kernel.reset_kill_switch()
    cl = strat.submit_order("XYZ", "sell", 1, XYZ_PRICE)
    client.ack(cl)
    new = strat.replace_order(cl, qty=5_000)
    assert strat.ctx.order(new).reject_reason == "RISK_REJECT_MAX_ORDER_QTY"
    assert strat.ctx.order(cl).state is S.NEW
    # the strategy cannot see or touch orders that are not its own
    foreign = om.submit("XYZ", "buy", 1, XYZ_PRICE)
    assert strat.ctx.order(foreign) is None and strat.cancel_order(foreign) is False
    assert strat.cancel_all() == 1 and om.order(foreign).state is S.PENDING_NEW
    # the context exposes no order manager, kernel or client attribute
    assert not any(hasattr(strat.ctx, name) for name in ("kernel", "order_manager", "client", "om"))


def test_context_owner_must_be_named():
    host, strat, om, kernel, client, clock, books, pf, _ = setup()
    with pytest.raises(ValueError, match="owner"):
        StrategyContext(om, pf, books, {}, owner="")


def test_read_access():
    host, strat, om, kernel, client, clock, books, pf, _ = setup()
    host.start()
    ctx = strat.ctx
    assert ctx.quote("XYZ") == Quote("XYZ", 9_999, 10, 10_001, 10, books["XYZ"].last_update_ns)
    assert ctx.book("XYZ").best_bid == 9_999 and ctx.book("XYZ").spread == 2
    assert not hasattr(ctx.book("XYZ"), "update")
    cl = strat.submit_order("XYZ", "buy", 10, XYZ_PRICE)
    client.fill(cl, 10, 10_000)
    assert ctx.position("XYZ") == 10 and ctx.positions() == {"XYZ": 10}
    assert ctx.avg_price("XYZ") == 10_000 and ctx.pnl().realized == 0.0
    assert ctx.now_ns() == clock.now and ctx.symbols == ("XYZ", "BTC")
    assert ctx.instrument("BTC").lot_size == make_config().instrument("BTC").lot_size


def test_stopped_strategy_cannot_act_and_errors_stop_it():
    class Faulty(Recorder):
        def on_quote(self, quote):
            raise RuntimeError("boom")

    host, strat, om, kernel, client, clock, books, pf, errors = setup(Faulty())
    host.start()
    host.book_changed("XYZ", BOOK_TOP_CHANGED, 1)
    assert host.stopped and host.errors == 1 and errors[0][0] == "on_quote"
    assert "stop" in strat.calls and ("book", "XYZ") not in strat.calls
    with pytest.raises(StrategyStopped):
        strat.submit_order("XYZ", "buy", 1, XYZ_PRICE)
    host.book_changed("XYZ", BOOK_TOP_CHANGED, 2)
    assert strat.calls.count("stop") == 1
    with pytest.raises(StrategyStopped):
        Strategy().submit_order("XYZ", "buy", 1, 1)      # never bound


def test_params_validation():
    insts = make_config().instruments_by_symbol
    MovingAverageCrossover.validate_params({"symbol": "XYZ", "qty": "10"}, insts)
    for params, key in (({"qty": "1"}, "symbol"), ({"symbol": "NOPE", "qty": "1"}, "symbol"),
                        ({"symbol": "XYZ", "qty": "1.5"}, "qty"),
                        ({"symbol": "XYZ", "qty": "10", "fast": 5, "slow": 5}, "slow"),
                        ({"symbol": "XYZ", "qty": "10", "fsat": 5}, "fsat"),
                        ({"symbol": "XYZ", "qty": "0"}, "qty")):
        with pytest.raises(ValueError, match=f"^{key}"):
            MovingAverageCrossover.validate_params(params, insts)
    MarketMaker.validate_params({"symbol": "BTC", "qty": "0.01", "max_inventory": "0.1"}, insts)
    with pytest.raises(ValueError, match="^max_inventory"):
        MarketMaker.validate_params({"symbol": "BTC", "qty": "0.01", "max_inventory": "0.005"}, insts)
    with pytest.raises(ValueError, match="^half_spread_ticks"):
        MarketMaker.validate_params({"symbol": "BTC", "qty": "0.01", "half_spread_ticks": 0}, insts)


# ----------------------------------------------------------------------------- sample strategies

def _quote(host, books, bid, ask, ts):
    b = books["XYZ"]
    b.load_snapshot([[bid, 100]], [[ask, 100]])
    host.book_changed("XYZ", BOOK_TOP_CHANGED, ts)


def test_ma_crossover_follows_the_trend():
    params = {"symbol": "XYZ", "qty": "10", "fast": 2, "slow": 4, "sample_interval_ms": 0}
    host, strat, om, kernel, client, clock, books, pf, _ = setup(MovingAverageCrossover(params))
    host.start()
    assert strat.qty_lots == 10
    for i, mid in enumerate([100, 100, 100, 100]):
        _quote(host, books, XYZ_PRICE + mid - 1, XYZ_PRICE + mid + 1, i)
    assert strat.signal == 0 and client.sent == []
    _quote(host, books, XYZ_PRICE + 109, XYZ_PRICE + 111, 5)     # up: fast > slow
    assert strat.signal == 1
    assert client.sent[-1][:3] == ("new", client.sent[-1][1], 10)
    buy = client.sent[-1][1]
    assert om.order(buy).side is Side.BUY and om.order(buy).tif.name == "IOC"
    _quote(host, books, XYZ_PRICE + 119, XYZ_PRICE + 121, 6)
    assert len(client.sent) == 1                                  # waits for the working order
    client.fill(buy, 10, XYZ_PRICE + 111)
    for i, mid in enumerate([80, 60, 40]):                        # down: target -10
        _quote(host, books, XYZ_PRICE + mid - 1, XYZ_PRICE + mid + 1, 7 + i)
    sell = client.sent[-1][1]
    assert strat.signal == -1 and om.order(sell).side is Side.SELL and om.order(sell).qty == 20
    client.fill(sell, 20, XYZ_PRICE + 59)
    assert pf.position("XYZ") == -10


def test_market_maker_quotes_both_sides_with_inventory_skew():
    params = {"symbol": "XYZ", "qty": "10", "max_inventory": "15", "half_spread_ticks": 3,
              "skew_ticks_per_lot": 0.5, "requote_ticks": 2}
    mm = MarketMaker(params)
    host, strat, om, kernel, client, clock, books, pf, _ = setup(mm)
    host.start()
    assert mm.targets(9_999, 10_001, 0) == {Side.BUY: (9_997, 10), Side.SELL: (10_003, 10)}
    # long 10: both quotes move down 5 ticks, the bid shrinks to the inventory room (15 - 10);
    # the ask (ceil(100.00 + 0.03 - 0.05) = 99.98) is kept above the best bid, so it rests
    assert mm.targets(9_999, 10_001, 10) == {Side.BUY: (9_992, 5), Side.SELL: (10_000, 10)}
    # short at the limit: no ask at all
    assert mm.targets(9_999, 10_001, -15)[Side.SELL][1] == 0
    _quote(host, books, 9_999, 10_001, 1)
    sent = {om.order(s[1]).side: s for s in client.sent}
    assert sent[Side.BUY][3] == 9_997 and sent[Side.SELL][3] == 10_003
    for s in client.sent:
        client.ack(s[1])
    bid_id = sent[Side.BUY][1]
    client.fill(bid_id, 10, 9_997)               # now long 10: requote on the fill
    assert pf.position("XYZ") == 10
    # the bid was filled: a new, smaller (inventory room 5) and lower bid; the ask moved down
    new_bids = [s for s in client.sent if s[0] == "new" and om.order(s[1]).side is Side.BUY]
    assert len(new_bids) == 2 and new_bids[-1][2:] == (5, 9_992)
    replace = [s for s in client.sent if s[0] == "replace"]
    assert len(replace) == 1 and replace[0][1] == sent[Side.SELL][1] and replace[0][3:] == (10, 10_000)
    host.stop()
    # every open order has a cancel on its way (the replaced ask: once the replace resolves)
    ask = om.order(sent[Side.SELL][1])
    assert ask.state is S.PENDING_REPLACE and ask.cancel_after_replace
    assert om.order(new_bids[-1][1]).state is S.PENDING_CANCEL


@pytest.mark.parametrize("strategy", [
    MovingAverageCrossover({"symbol": "BTC", "qty": "0.01", "fast": 5, "slow": 20,
                            "sample_interval_ms": 500}),
    MarketMaker({"symbol": "BTC", "qty": "0.005", "max_inventory": "0.05", "half_spread_ticks": 1,
                 "skew_ticks_per_lot": 0.1, "requote_ticks": 3}),
], ids=["ma_crossover", "market_maker"])
def test_sample_strategies_run_on_real_quotes(strategy):
    cfg = make_config()
    insts = cfg.instruments_by_symbol
    rows = load_quotes_csv(shared_file("quotes.csv"), "0.01", "0.001")
    clock = Clock(int(rows["ts_ns"][0]))
    books = {"BTC": L2Book("BTC"), "XYZ": L2Book("XYZ")}
    sim = SimExecution(books, insts, fill_model=BookFillModel(slippage_bps=0.5),
                       commission=CommissionModel(maker_bps=-0.5, taker_bps=2.0), clock=clock)
    kernel = build_kernel(cfg)
    om = OrderManager(kernel, sim, insts, clock=clock)
    pf = Portfolio(insts, initial_capital=100_000)
    host = StrategyHost(strategy, StrategyContext(om, pf, books, insts, clock=clock))
    om.add_listener(on_fill=pf.on_fill)
    om.add_listener(on_order=host.order_event, on_fill=host.fill_event)
    host.start()
    book = books["BTC"]
    for i in range(0, len(rows), 2):
        ts = int(rows["ts_ns"][i])
        clock.now = ts
        sim.advance_to(ts)
        change = book.apply(rows[i:i + 2])
        sim.on_book("BTC", ts)
        kernel.set_reference_price(1, (book.best_bid + book.best_ask) // 2, ts)
        pf.on_quote("BTC", book.best_bid, book.best_ask)
        host.book_changed("BTC", change, ts)
        sim.advance_to(ts)
    host.stop()
    clock.now += 1
    sim.advance_to(clock.now)
    assert host.errors == 0 and not om.alerts and kernel.anomalies == 0
    assert om.stats["fills"] > 0
    assert not om.open_orders() and kernel.open_orders(1) == 0
    assert kernel.position(1) == pf.position("BTC")
    assert abs(pf.position("BTC")) <= 50                 # within the strategies' own limits
