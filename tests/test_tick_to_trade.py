"""core_ext.t2t (the compiled tick-to-trade path) and the tick-to-trade benchmark rigs.

* the FIX bytes out parse (simplefix) to the NewOrderSingle the strategy asked for;
* the Python engine path, the compiled path and the pure-Python reference path send
  the same orders for the same packets (byte for byte between the first two);
* the compiled path keeps no Python object per event in the steady state;
* risk refusals, halts, stale books and a full order log fail closed.
"""
from __future__ import annotations

import gc
import sys
import tracemalloc

import numpy as np
import pytest
import simplefix

from bench import bench_tick_to_trade as bt
from core_ext import fix as fx
from core_ext import itch
from core_ext import risk as rk
from core_ext import t2t as ct
from engine.orders import format_cl_ord_id
from engine.risk_policy import build_kernel

CLOCK = bt.CLOCK0
FIRST_ID = (1_700_000_000 << 32) | 1


def _pairs(data: bytes) -> list[dict[int, bytes]]:
    """Every FIX message in `data`, as {tag: value} (simplefix does the parsing)."""
    p = simplefix.FixParser()
    p.append_buffer(data)
    out = []
    while (m := p.get_message()) is not None:
        out.append({int(t): v for t, v in m.pairs})
    return out


def _t2t(tmp_path, strategy=None, **kw):
    cfg = bt.bench_config(tmp_path / "cfg")
    kernel = build_kernel(cfg)
    strategy = strategy or ct.QuoteAtTouch(qty=1)
    t = ct.TickToTrade(bt.t2t_instruments(cfg), kernel, fx.FixEncoder(bt.SENDER, bt.TARGET), strategy,
                       kw.pop("next_cl_ord_id", FIRST_ID), **kw)
    return t, kernel, strategy


@pytest.fixture
def packets():
    return bt.make_packets(400)


# ----------------------------------------------------------------------------- wire output

def test_fix_bytes_parse_to_the_expected_new_order_single(tmp_path, packets):
    setup, events = packets
    t, kernel, strategy = _t2t(tmp_path)
    first = t.process(setup[0], CLOCK)          # the book appears: the first top change
    assert first is not None
    (m,) = _pairs(first)
    assert m[8] == b"FIX.4.4" and m[35] == b"D"
    assert m[49] == bt.SENDER.encode() and m[56] == bt.TARGET.encode()
    assert m[34] == b"1"
    assert m[11] == format_cl_ord_id(FIRST_ID).encode()
    assert m[55] == b"AAPL" and m[38] == b"1" and m[40] == b"2" and m[59] == b"0"
    assert m[54] == b"1" and m[44] == b"150.00"             # a buy at the best bid (150.00)
    assert m[52] == m[60] == fx.format_utc_timestamp(CLOCK)
    assert t.top(0) == (15000, 100, 15002, 100)              # ticks of 0.01, lots
    second = t.process(events[0], CLOCK)                      # bid size 100 -> 200
    (m2,) = _pairs(second)
    assert m2[54] == b"2" and m2[44] == b"150.02" and m2[34] == b"2"     # then a sell at the ask
    assert m2[11] == format_cl_ord_id(FIRST_ID + 1).encode()
    log = t.drain_orders()
    assert log.dtype == ct.ORDER_DTYPE and len(log) == 2 and t.pending_orders == 0
    assert log["outcome"].tolist() == [ct.OUTCOME_SENT] * 2
    assert log["seq_num"].tolist() == [1, 2] and log["side"].tolist() == [0, 1]
    assert log["price"].tolist() == [15000, 15002] and log["cl_ord_id"].tolist() == [FIRST_ID, FIRST_ID + 1]
    assert kernel.open_orders(0) == 2 and kernel.counter(rk.RISK_OK) == 2
    assert t.orders_sent == 2 and t.events == 2 and strategy.sent == 2 and strategy.refused == 0


def test_no_order_without_a_top_change(tmp_path, packets):
    setup, _ = packets
    t, _, _ = _t2t(tmp_path)
    t.process(setup[0], CLOCK)
    b = itch.MoldPacketBuilder(bt.SESSION, 10_000)
    b.add_order(bt.LOCATE, 0, 1, 9_999_999, "B", 100, bt.SYMBOL, 1_490_000)   # deep in the book
    assert t.process(b.flush()[0], CLOCK) is None
    assert t.events == 1 and t.packets == 2


def test_cl_ord_id_text_counts_up_across_base36_carries(tmp_path, packets):
    setup, events = packets
    start = 36 ** 5 - 3            # ...ZZX, ZZY, ZZZ, then 100000: a carry into a new digit
    t, kernel, _ = _t2t(tmp_path, next_cl_ord_id=start)
    ids = []
    for p in [setup[0], *events[:6]]:
        out = t.process(p, CLOCK)
        ids.extend(m[11].decode() for m in _pairs(out))
    assert ids == [format_cl_ord_id(start + i) for i in range(7)]
    t.next_cl_ord_id = 35          # a jump: recomputed, then counted up again ("Z" -> "10")
    out = t.process(events[6], CLOCK) + t.process(events[7], CLOCK)
    assert [m[11] for m in _pairs(out)] == [b"Z", b"10"]


def test_both_sides_sends_two_messages_in_one_buffer(tmp_path, packets):
    setup, _ = packets
    t, kernel, s = _t2t(tmp_path, strategy=ct.QuoteAtTouch(qty=3, offset_ticks=2, both_sides=True))
    msgs = _pairs(t.process(setup[0], CLOCK))
    assert [(m[54], m[44], m[38], m[34]) for m in msgs] == [(b"1", b"149.98", b"3", b"1"),
                                                           (b"2", b"150.04", b"3", b"2")]
    assert s.requested == 2 and kernel.open_orders(0) == 2


# ----------------------------------------------------------------------------- the same orders, three ways

def _fields(data: bytes) -> list[tuple]:
    return [(m[11], m[54], m[44], m[38], m[55], m[40], m[59]) for m in _pairs(data)]


def test_python_cython_and_reference_paths_send_the_same_orders(tmp_path, packets):
    setup, events = packets
    clock = lambda: CLOCK  # noqa: E731 - one fixed clock for every path
    eng = bt.EnginePipeline(str(tmp_path / "e"), clock=clock)
    ref = bt.EnginePipeline(str(tmp_path / "r"), clock=clock, reference=True)
    first = eng.core.om.ids.prefix << 32 | 1
    assert ref.core.om.ids.prefix << 32 | 1 == first
    cy = bt.CythonPipeline(str(tmp_path / "c"), next_cl_ord_id=first)
    outs = {"engine": [], "ref": [], "cython": []}
    for p in [*setup, *events]:
        outs["engine"].append(eng.process(p))
        outs["ref"].append(ref.process(p))
        outs["cython"].append(cy.t2t.process(p, CLOCK))
        eng.release()
        ref.release()
        cy.release(batch=1)
    assert all(o is not None for o in outs["engine"])
    assert len(outs["engine"]) == len(events) + len(setup)
    # compiled path == engine path, byte for byte (same clock, ids, sequence numbers)
    assert outs["cython"] == outs["engine"]
    # the reference path (simplefix, RefBookApplier over book_ref, RiskReference): same orders
    assert [_fields(o) for o in outs["ref"]] == [_fields(o) for o in outs["engine"]]
    assert eng.strategy.requested == ref.strategy.requested == cy.strategy.requested == len(outs["engine"])
    # and every order was released: nothing left open anywhere
    assert eng.core.kernel.open_orders(0) == 0 and cy.kernel.open_orders(0) == 0
    assert ref.core.kernel.open_orders(0) == 0


# ----------------------------------------------------------------------------- allocation

def _steady(t, kernel, events, n):
    for i in range(n):
        t.process(events[i % len(events)], CLOCK)
        if t.pending_orders >= 64:
            for r in t.drain_orders().tolist():
                kernel.on_cancel(r[2], r[9], r[3])


def test_compiled_path_keeps_no_python_object_per_event(tmp_path):
    setup, events = bt.make_packets(2_000)
    t, kernel, _ = _t2t(tmp_path)
    for p in setup:
        t.process(p, CLOCK)
    gc.collect()
    gc.disable()
    try:
        # warm-up: caches, scratch buffers, the log, one-off interpreter state (~70 blocks
        # the first 10,000 events, then nothing)
        _steady(t, kernel, events, 10_000)
        blocks0 = sys.getallocatedblocks()
        _steady(t, kernel, events, 10_000)
        blocks1 = sys.getallocatedblocks()
        tracemalloc.start()
        snap0 = tracemalloc.take_snapshot()
        _steady(t, kernel, events, 10_000)
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        gc.enable()
    assert t.orders_sent >= 30_000
    # 10,000 packets, 10,000 orders: flat block count (a leak of one object per event
    # would show 10,000)
    assert abs(blocks1 - blocks0) < 20, blocks1 - blocks0
    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = snap1.filter_traces(keep).compare_to(snap0.filter_traces(keep), "lineno")
    grown = sum(s.size_diff for s in diff if s.size_diff > 0)
    assert grown < 4_096, diff[:5]


def test_the_python_engine_path_does_allocate_per_order(tmp_path):
    """The contrast (and proof that the measurement above can see growth): the order
    manager keeps every order until forget_terminal()."""
    setup, events = bt.make_packets(3_000)
    eng = bt.EnginePipeline(str(tmp_path / "e"))
    for p in setup:
        eng.process(p)
    gc.collect()
    blocks0 = sys.getallocatedblocks()
    for p in events[:2_000]:
        eng.process(p)
        eng.release()
    assert sys.getallocatedblocks() - blocks0 > 2_000


# ----------------------------------------------------------------------------- fail closed

def test_risk_refusal_is_logged_not_sent(tmp_path, packets):
    setup, events = packets
    t, kernel, s = _t2t(tmp_path)
    kernel.trip_kill_switch()
    assert t.process(setup[0], CLOCK) is None
    (rec,) = t.drain_orders()
    assert rec["outcome"] == rk.RISK_REJECT_KILL_SWITCH and rec["seq_num"] == -1
    assert t.orders_refused == 1 and t.orders_sent == 0 and s.refused == 1
    assert t.next_seq_num == 1 and t.next_cl_ord_id == FIRST_ID + 1     # id used, no sequence number
    kernel.reset_kill_switch()
    (m,) = _pairs(t.process(events[0], CLOCK))
    assert m[34] == b"1" and m[11] == format_cl_ord_id(FIRST_ID + 1).encode()


def test_halt_message_reaches_the_kernel(tmp_path, packets):
    setup, events = packets
    t, kernel, _ = _t2t(tmp_path)
    t.process(setup[0], CLOCK)
    b = itch.MoldPacketBuilder(bt.SESSION, 5_000)
    b.trading_action(bt.LOCATE, 0, 1, bt.SYMBOL, "H")
    b.add_order(bt.LOCATE, 0, 2, 8_888_888, "B", 100, bt.SYMBOL, 1_500_000)   # top change too
    assert t.process(b.flush()[0], CLOCK) is None
    assert t.drain_orders()[-1]["outcome"] == rk.RISK_REJECT_HALTED
    b.trading_action(bt.LOCATE, 0, 3, bt.SYMBOL, "T")
    b.order_delete(bt.LOCATE, 0, 4, 8_888_888)
    assert t.process(b.flush()[0], CLOCK) is not None


def test_stale_book_reaches_the_kernel(tmp_path, packets):
    setup, events = packets
    t, kernel, _ = _t2t(tmp_path)
    t.process(setup[0], CLOCK)
    t.book("AAPL").stale = True                 # what the feed handler does on a gap
    assert t.process(events[0], CLOCK) is None
    assert t.drain_orders()[-1]["outcome"] == rk.RISK_REJECT_BOOK_STALE
    t.book("AAPL").stale = False
    assert t.process(events[1], CLOCK) is not None


def test_full_order_log_refuses_orders(tmp_path, packets):
    setup, events = packets
    t, kernel, _ = _t2t(tmp_path, log_capacity=2)
    assert t.process(setup[0], CLOCK) is not None
    assert t.process(events[0], CLOCK) is not None
    assert t.process(events[1], CLOCK) is None            # nobody could journal it: not sent
    assert t.log_full == 1 and kernel.open_orders(0) == 2
    assert len(t.drain_orders()) == 2
    assert t.process(events[2], CLOCK) is not None


def test_bad_packets_raise_the_itch_errors_and_change_nothing(tmp_path, packets):
    setup, _ = packets
    t, _, _ = _t2t(tmp_path)
    t.process(setup[0], CLOCK)
    with pytest.raises(itch.ItchTruncatedError):
        t.process(setup[0][:30], CLOCK)
    assert t.top(0) == (15000, 100, 15002, 100) and t.pending_orders == 1


def test_constructor_names_what_is_wrong(tmp_path):
    cfg = bt.bench_config(tmp_path)
    k = build_kernel(cfg)
    enc = fx.FixEncoder("A", "B")
    s = ct.QuoteAtTouch()
    with pytest.raises(ValueError, match="inst_id 7 is not registered"):
        ct.TickToTrade([("AAPL", 7, 100, 2, 1)], k, enc, s, 1)
    with pytest.raises(ValueError, match="given twice"):
        ct.TickToTrade([("AAPL", 0, 100, 2, 1)] * 2, k, enc, s, 1)
    with pytest.raises(ValueError, match="1..8 printable"):
        ct.TickToTrade([("TOOLONGSYM", 0, 100, 2, 1)], k, enc, s, 1)
    with pytest.raises(ValueError, match="next_cl_ord_id"):
        ct.TickToTrade([("AAPL", 0, 100, 2, 1)], k, enc, s, 0)
    with pytest.raises(ValueError, match="expected"):
        ct.TickToTrade([("AAPL", 0, 100)], k, enc, s, 1)
    with pytest.raises(ValueError, match="qty"):
        ct.QuoteAtTouch(qty=0)
    with pytest.raises(TypeError):
        ct.TickToTrade([("AAPL", 0, 100, 2, 1)], None, enc, s, 1)


def test_base_strategy_sends_nothing(tmp_path, packets):
    setup, events = packets
    t, kernel, _ = _t2t(tmp_path, strategy=ct.CStrategy())
    assert all(t.process(p, CLOCK) is None for p in [*setup, *events[:10]])
    assert t.events == 11 and t.pending_orders == 0 and kernel.counter(rk.RISK_OK) == 0


# ----------------------------------------------------------------------------- benchmark rigs

def test_benchmark_samples_are_per_event(tmp_path):
    setup, events = bt.make_packets(300)
    cy = bt.CythonPipeline(str(tmp_path))
    x = bt._sample(cy.process, cy.release, setup, events, warmup=100)
    assert x.shape == (200,) and (x > 0).all()
    e = bt._entry(bt.percentiles("a", x), bt.percentiles("b", x * 2), "n")
    assert set(e) >= {"name", "unit", "p50", "p99", "p999", "max", "n", "baseline", "ratio"}
    assert e["ratio"] == pytest.approx(2.0) and e["unit"] == "ns"


@pytest.mark.slow
@pytest.mark.parametrize("compiled", [False, True], ids=["engine", "compiled"])
def test_loopback_rig_delivers_every_order_to_the_venue(compiled):
    """Venue + engine over real loopback sockets: each injected top change reaches the
    venue as an order from the engine (counted by the hooked exchange), with no feed gap."""
    x = bt._loopback_samples("asyncio", 20, 5, compiled=compiled)
    assert x.shape == (20,) and (x > 0).all() and np.isfinite(x).all()
