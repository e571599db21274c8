"""The compiled records and submit path (core_ext.records, core_ext.orderpath) behave
as the Python dataclasses and the Python submit they replaced; the ITCH apply result's
recycled objects and inline storage keep every result intact."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from core_ext.records import OrderRecord
from hypothesis import given
from hypothesis import strategies as st

from core_ext import itch
from engine.orders import (
    Order,
    OrderSnapshot,
    OrdStatus,
    Side,
    Tif,
    format_cl_ord_id,
    parse_cl_ord_id,
)
from engine.strategy import Quote, Strategy, StrategyContext, StrategyHost, Trade
from tests.engine_helpers import XYZ_PRICE, make_config, make_om

S = OrdStatus


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


# ----------------------------------------------------------------------------- client order ids

@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_cl_ord_id_text_is_base36_and_parses_back(n):
    text = format_cl_ord_id(n)
    assert text == _base36(n) and len(text) <= 13
    assert parse_cl_ord_id(text) == n


@pytest.mark.parametrize("bad", [0, -1, 2**64, "12", 1.0, None])
def test_cl_ord_id_out_of_range_or_not_an_integer_is_refused(bad):
    with pytest.raises(ValueError, match="out of range"):
        format_cl_ord_id(bad)


def test_cl_ord_id_takes_numpy_integers():
    assert format_cl_ord_id(np.uint64(2**64 - 1)) == _base36(2**64 - 1)
    assert format_cl_ord_id(np.int64(35)) == "Z"


# ----------------------------------------------------------------------------- read-only records

def test_quote_and_trade_are_read_only_values():
    q = Quote("XYZ", 100, 5, 102, 7, 9)
    assert (q.symbol, q.bid, q.bid_size, q.ask, q.ask_size, q.ts_ns) == ("XYZ", 100, 5, 102, 7, 9)
    assert q.mid_x2 == 202 and q.spread == 2
    assert Quote("XYZ", None, 0, 102, 7, 9).mid_x2 is None
    assert q == Quote("XYZ", 100, 5, 102, 7, 9) and hash(q) == hash(Quote("XYZ", 100, 5, 102, 7, 9))
    assert q != Quote("XYZ", 100, 5, 103, 7, 9)
    assert q != ("XYZ", 100, 5, 102, 7, 9)          # a value of its type only
    with pytest.raises(AttributeError):
        q.bid = 1
    with pytest.raises(AttributeError):
        q.other = 1
    assert pickle.loads(pickle.dumps(q)) == q
    assert repr(q) == "Quote(symbol='XYZ', bid=100, bid_size=5, ask=102, ask_size=7, ts_ns=9)"
    t = Trade("XYZ", 100, 3, Side.SELL, 5)
    assert t == Trade("XYZ", 100, 3, Side.SELL, 5) and t.aggressor_side is Side.SELL
    with pytest.raises(AttributeError):
        t.qty = 4


def test_order_snapshot_is_read_only_and_knows_terminal_states():
    snap = OrderSnapshot(1, "XYZ", Side.BUY, 10, 100, Tif.DAY, S.FILLED, 10, 0, 100.0, "", 0, 0, "", 5)
    assert snap.owner == "" and snap.is_terminal
    assert not OrderSnapshot(1, "XYZ", Side.BUY, 10, 100, Tif.DAY, S.NEW, 0, 10, None, "", 0, 0, "", 5,
                             "s").is_terminal
    with pytest.raises(AttributeError):
        snap.state = S.NEW
    assert snap == OrderSnapshot(1, "XYZ", Side.BUY, 10, 100, Tif.DAY, S.FILLED, 10, 0, 100.0, "", 0, 0, "", 5)
    assert pickle.loads(pickle.dumps(snap)) == snap


# ----------------------------------------------------------------------------- the order record

def test_order_fields_defaults_and_identity():
    o = Order(7, "XYZ", 0, Side.SELL, 10, None, Tif.IOC, S.PENDING_NEW, 1, 2)
    assert (o.tag, o.owner, o.cum_qty, o.fill_notional, o.venue_order_id, o.reject_reason) == ("", "", 0, 0, "", "")
    assert (o.orig_cl_ord_id, o.replaced_by, o.reserved, o.kernel_open, o.restore_state, o.cancel_id) == \
        (0, 0, 0, False, None, 0)
    assert (o.cancel_after_replace, o.pending_since_ns, o.last_status_ns, o.status_queries,
            o.unresolved_alerted) == (False, 0, 0, 0, False)
    assert o.leaves_qty == 10 and o.avg_px is None and not o.is_terminal
    for name in OrderRecord.FIELDS:                 # every field assignable ...
        setattr(o, name, getattr(o, name))
    with pytest.raises(AttributeError):             # ... and nothing else (a typo fails loudly)
        o.cum_qtty = 3
    o.cum_qty, o.fill_notional = 4, 400
    assert o.leaves_qty == 6 and o.avg_px == 100.0
    o.state = S.CANCELED
    assert o.leaves_qty == 0 and o.is_terminal
    twin = Order(7, "XYZ", 0, Side.SELL, 10, None, Tif.IOC, S.CANCELED, 1, 2)
    assert o != twin and o == o                     # identity, as the eq=False dataclass
    assert "cl_ord_id=7" in repr(o) and "unresolved_alerted=False" in repr(o)
    snap = o.snapshot()
    assert (snap.cl_ord_id, snap.leaves_qty, snap.cum_qty, snap.avg_px, snap.state) == (7, 0, 4, 100.0, S.CANCELED)


def test_submitted_order_has_the_constructor_defaults():
    """The compiled submit builds the order in C (records.new_order_record): every field
    equals what the Python constructor gives the same order."""
    om, kernel, client, clock = make_om()
    cl = om.submit("XYZ", "buy", 5, XYZ_PRICE, "GTC", "tagged", owner="me")
    o = om.order(cl)
    assert type(o) is Order and client.sent[-1] == ("new", cl, 5, XYZ_PRICE)
    expected = Order(cl, "XYZ", o.inst_id, Side.BUY, 5, XYZ_PRICE, Tif.GTC, S.PENDING_NEW, clock.now, clock.now,
                     "tagged", "me", pending_since_ns=clock.now, reserved=5, kernel_open=True)
    for name in OrderRecord.FIELDS:
        assert getattr(o, name) == getattr(expected, name), name


def test_submit_argument_errors_name_the_argument():
    om, *_ = make_om()
    with pytest.raises(ValueError, match="side"):
        om.submit("XYZ", "up", 1, XYZ_PRICE)
    with pytest.raises(ValueError, match="tif"):
        om.submit("XYZ", "buy", 1, XYZ_PRICE, "NEVER")
    with pytest.raises(TypeError, match="qty"):
        om.submit("XYZ", "buy", 1.5, XYZ_PRICE)
    with pytest.raises(TypeError, match="price"):
        om.submit("XYZ", "buy", 1, float(XYZ_PRICE))
    with pytest.raises(TypeError, match="qty"):
        om.submit("XYZ", "buy", True, XYZ_PRICE)
    assert om.open_orders() == []


def test_submit_with_a_python_kernel_takes_the_same_decisions():
    """The compiled submit calls RiskKernel.check_order directly; any other kernel (the
    reference in tests/reference) through its Python check: same outcome either way."""
    from tests.reference.risk_ref import RiskReference
    om_c, kernel, _, clock = make_om()
    om_p, kernel_p, _, clock_p = make_om()
    ref = RiskReference(max_instruments=kernel.max_instruments, dup_window=kernel.dup_window)
    cfg = make_config()
    for inst in cfg.instruments:
        ref.add_instrument(inst.inst_id, inst.kernel_multiplier)
        ref.set_instrument_limits(inst.inst_id, **cfg.risk.instruments[inst.symbol].kernel_limits())
        ref.set_reference_price(inst.inst_id, kernel_p.reference_price(inst.inst_id)[0], clock_p.now)
    ref.set_account_limits(**cfg.risk.account_limits(cfg.stage))
    om_p.kernel = ref
    outcomes = []
    for om in (om_c, om_p):
        got = []
        for qty in (1, 10**6, 3, 10**9):
            o = om.order(om.submit("XYZ", "sell", qty, XYZ_PRICE))
            got.append((o.state, o.reject_reason, o.reserved))
        outcomes.append(got)
    assert outcomes[0] == outcomes[1]
    assert {s for s, _, _ in outcomes[0]} == {S.PENDING_NEW, S.REJECTED}


# ----------------------------------------------------------------------------- strategy host dispatch

class _QuotesOnly(Strategy):
    def __init__(self):
        super().__init__()
        self.quotes = []

    def on_quote(self, quote):
        self.quotes.append(quote)


class _Everything(_QuotesOnly):
    def __init__(self):
        super().__init__()
        self.orders = []

    def on_order(self, order):
        self.orders.append(order)

    def on_fill(self, fill):
        pass


def test_host_asks_for_order_events_only_for_the_callbacks_the_strategy_has():
    from engine.portfolio import Portfolio
    from tests.engine_helpers import book_with
    om, *_ = make_om()
    books = {"XYZ": book_with("XYZ", [(XYZ_PRICE - 1, 5)], [(XYZ_PRICE + 1, 5)]),
             "BTC": book_with("BTC", [(100, 1)], [(101, 1)])}
    ctx = StrategyContext(om, Portfolio(om.instruments), books, om.instruments)
    host = StrategyHost(_QuotesOnly(), ctx)
    host.listen_to(om)
    assert host.order_event not in om._order_listeners and host.fill_event not in om._fill_listeners
    host.strategy = _Everything()               # a replacement (as the backtest does) re-registers
    assert host.order_event in om._order_listeners and host.fill_event in om._fill_listeners
    host.start()
    host.book_changed("XYZ", 2, 123)
    assert host.strategy.quotes == [Quote("XYZ", XYZ_PRICE - 1, 5, XYZ_PRICE + 1, 5, 123)]
    cl = ctx.submit_order("XYZ", "buy", 1, XYZ_PRICE)
    assert [o.cl_ord_id for o in host.strategy.orders] == [cl]
    host.strategy = _QuotesOnly()
    assert host.order_event not in om._order_listeners


# ----------------------------------------------------------------------------- ITCH results

def test_apply_results_stay_intact_across_recycling_and_large_packets():
    """Results come from a free list with small lists stored inline, larger ones on the
    heap: each result keeps its own lists after later packets, whichever it used."""
    b = itch.MoldPacketBuilder("S", 1, max_packet=60_000)
    app = itch.ItchBookApplier()
    ts = 1
    b.add_order(1, 0, ts, 1, "B", 1_000_000, "AAPL", 1_500_000)
    kept = [app.apply_packet(b.flush()[0])]
    expect = [((0,), [])]
    for k in range(1, 60):
        n_exec = k % 12                         # 0..11 executions: inline and heap storage
        for j in range(n_exec):
            b.order_executed(1, 0, ts + k, 1, 1, k * 100 + j)
        if k % 2:                               # a better ask: the top changes
            b.add_order(1, 0, ts + k, 10_000 + k, "S", 10, "AAPL", 1_600_000 - k)
        b.add_order(1, 0, ts + k, 20_000 + k, "B", 10, "AAPL", 1_000_000 - k)   # deep: no top change
        kept.append(app.apply_packet(b.flush()[0]))
        expect.append(((0,) if n_exec or k % 2 else (), [k * 100 + j for j in range(n_exec)]))
        app.apply_packet(itch.encode_packet("S", 10**6, []))   # a heartbeat: recycled objects churn
    for res, (tops, matches) in zip(kept, expect, strict=True):
        assert res.top_changed == tops
        assert [int(m) for m in res.trades["match"]] == matches


def test_listeners_hear_of_a_new_order_after_it_left_and_of_a_failed_send_in_order():
    om, kernel, client, clock = make_om()
    trail = []
    send = client.send_new

    def recording_send(order):
        trail.append(("sent", order.cl_ord_id))
        send(order)
    client.send_new = recording_send
    om.add_listener(on_order=lambda snap: trail.append((str(snap.state), snap.cl_ord_id)))
    cl = om.submit("XYZ", "buy", 1, XYZ_PRICE)
    assert trail == [("sent", cl), ("PendingNew", cl)]
    trail.clear()
    client.fail_next = True
    cl2 = om.submit("XYZ", "buy", 1, XYZ_PRICE)
    assert [t for t in trail if t[0] != "sent"] == [("PendingNew", cl2), ("Rejected", cl2)]
    assert om.order(cl2).reject_reason.startswith("SEND_FAILED")


def test_long_lived_records_are_not_tracked_by_the_cyclic_gc_and_are_still_freed():
    """Orders (built in C or in Python, of any subclass), the FIX store's messages and
    the FIX client's per-order records are kept for the session: the cyclic collector
    never scans them (core_ext.records), and reference counting still frees them."""
    import gc
    import weakref

    from gateway.fix_client import _Sent
    from gateway.fix_store import MemoryStore, StoredMessage
    om, kernel, client, clock = make_om()
    before = len(gc.get_objects(0))
    ids = [om.submit("XYZ", "buy", 1, XYZ_PRICE, "DAY") for _ in range(200)]
    orders = [om.order(cl) for cl in ids]
    assert len({o.cl_ord_id for o in orders}) == 200 and any(o.state == S.PENDING_NEW for o in orders)
    assert not any(gc.is_tracked(o) for o in orders)
    assert not gc.is_tracked(Order(1, "XYZ", 1, Side.BUY, 1, XYZ_PRICE, Tif.DAY, S.NEW, 0, 0))
    # 200 orders and their snapshots, journal rows and reports left no scannable objects
    assert len(gc.get_objects(0)) - before < 200
    store = MemoryStore()
    store.store(StoredMessage(1, b"D", b"11=A\x01", b"20240101-00:00:00.000"))
    (kept,) = store.get_range(1, 1)
    assert not gc.is_tracked(kept) and kept.body == b"11=A\x01"
    assert not gc.is_tracked(_Sent("XYZ", 0, 1, 100, 2, 0))

    class Probe(Order):          # a subclass with a __dict__: weak-referenceable for this test
        pass
    probe = Probe(2, "XYZ", 1, Side.BUY, 1, XYZ_PRICE, Tif.DAY, S.NEW, 0, 0)
    ref = weakref.ref(probe)
    assert not gc.is_tracked(probe)
    del probe
    assert ref() is None         # freed by reference counting, no collection needed
