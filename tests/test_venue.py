"""The venue simulator end to end: exchange core, FIX order entry, the engine-side FIX
client, faults, statements, persistence, and interoperability with QuickFIX.

Socket tests use real loopback sockets on port 0 and run on both asyncio and uvloop
(tests/conftest_loops.py); an unhandled exception on the loop fails the test.
"""
from __future__ import annotations

import asyncio
import csv
import gc
import io
import logging
import os
import queue
import random
import re
import socket
import subprocess
import sys
import time
from decimal import Decimal

import orjson
import pytest

from core_ext import fix as fixcodec
from core_ext import matching as mb
from gateway import exchange as ex
from gateway.errors import NotLoggedOn
from gateway.fix_client import (
    ClientError,
    ExecutionReportEvent,
    FixOrderClient,
    MassCancelReportEvent,
    OrderCancelRejectEvent,
)
from gateway.fix_store import SqliteStore
from gateway.instruments import Instrument, PriceError
from gateway.venue import Venue, VenueOptions
from tests.conftest import REPO_ROOT, SHARED_FIX_AT

pytest_plugins = ("tests.conftest_loops",)     # event_loop_kind, loop_runner (asyncio and uvloop)

SYMS = ["AAPL", "MSFT"]
BUY, SELL = mb.SIDE_BUY, mb.SIDE_SELL


def options(**kw) -> VenueOptions:
    base = dict(fix_port=0, target_comp_ids=("A", "B"), replay_events_per_tick=0, warmup_events=2_000, seed=7)
    base.update(kw)
    return VenueOptions(**base)


async def start_client(venue: Venue, comp: str, **kw) -> tuple[FixOrderClient, list]:
    events: list = []
    client = FixOrderClient("127.0.0.1", venue.fix_port, comp, "VENUE", SYMS, on_event=events.append,
                            backoff_initial_s=0.05, **kw)
    await client.start(wait_logged_on=5.0)
    return client, events


async def until(pred, timeout: float = 4.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def ers(events, cl: str | None = None, exec_type: str | None = None) -> list[ExecutionReportEvent]:
    return [e for e in events if isinstance(e, ExecutionReportEvent)
            and (cl is None or e.cl_ord_id == cl) and (exec_type is None or e.exec_type == exec_type)]


async def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


class Recorder(ex.MarketListener):
    def __init__(self) -> None:
        self.books: list[str] = []
        self.trades: list[tuple] = []
        self.halts: list[tuple[str, bool]] = []

    def on_book_update(self, symbol):
        self.books.append(symbol)

    def on_trade(self, symbol, price, qty, aggressor_side, ts_ns):
        self.trades.append((symbol, price, qty, aggressor_side))

    def on_halt(self, symbol, halted):
        self.halts.append((symbol, halted))


# ============================================================== exchange core (no sockets)

def make_exchange(**kw) -> tuple[ex.Exchange, list]:
    reports: list = []
    xc = ex.Exchange([Instrument("AAPL"), Instrument("MSFT", Decimal("0.05"))], seed=3,
                     exec_id_start=1000, **kw)
    xc.set_report_sink("A", reports.append)
    xc.set_report_sink("B", reports.append)
    return xc, reports


def test_exchange_lifecycle_reports_and_positions():
    xc, reps = make_exchange(sources={})
    rec = Recorder()
    xc.add_listener(rec)
    xc.new_order("B", "s1", "AAPL", SELL, 30, 10_010)
    xc.new_order("B", "s2", "AAPL", SELL, 50, 10_012)
    reps.clear()
    order = xc.new_order("A", "b1", "AAPL", BUY, 100, 10_012)
    kinds = [(r.account, r.exec_type, r.ord_status, r.last_qty, r.last_px, r.leaves_qty, r.cum_qty) for r in reps]
    assert kinds == [
        ("A", "0", "0", 0, None, 100, 0),
        ("B", "F", "2", 30, 10_010, 0, 30),      # maker report first
        ("A", "F", "1", 30, 10_010, 70, 30),
        ("B", "F", "2", 50, 10_012, 0, 50),
        ("A", "F", "1", 50, 10_012, 20, 80),
    ]
    assert order.notional == 30 * 10_010 + 50 * 10_012 and order.leaves_qty == 20
    assert len({r.exec_id for r in reps}) == len(reps)
    assert rec.trades == [("AAPL", 10_010, 30, BUY), ("AAPL", 10_012, 50, BUY)]
    assert "AAPL" in rec.books
    assert xc.accounts["A"].position == {"AAPL": 80} and xc.accounts["B"].position == {"AAPL": -80}
    assert xc.accounts["A"].cash["AAPL"] == -(30 * 10_010 + 50 * 10_012)
    assert xc.book("AAPL").best_bid == 10_012


def test_exchange_cancel_replace_status_mass_cancel_and_rejects():
    xc, reps = make_exchange(sources={})
    xc.new_order("A", "o1", "AAPL", BUY, 10, 9_990)
    xc.new_order("A", "o2", "MSFT", SELL, 10, 400)
    reps.clear()
    assert xc.replace_order("A", "o1b", "o1", qty=15, price=9_991)
    r = reps[-1]
    assert (r.exec_type, r.cl_ord_id, r.orig_cl_ord_id, r.order_qty, r.price, r.leaves_qty) == \
        ("5", "o1b", "o1", 15, 9_991, 15)
    reps.clear()
    xc.order_status("A", "o1")          # by the old ClOrdID: same order
    assert reps[-1].exec_type == "I" and reps[-1].ord_status == "0" and reps[-1].cl_ord_id == "o1b"
    assert xc.cancel_order("A", "o1c", "o1b")
    assert (reps[-1].exec_type, reps[-1].ord_status, reps[-1].orig_cl_ord_id) == ("4", "4", "o1b")
    reps.clear()
    assert not xc.cancel_order("A", "o1d", "o1b")                     # too late
    assert isinstance(reps[-1], ex.CancelReject) and reps[-1].reason == ex.CXL_REJ_TOO_LATE
    assert not xc.cancel_order("A", "o1e", "nope")                    # unknown
    assert reps[-1].reason == ex.CXL_REJ_UNKNOWN_ORDER and reps[-1].ord_status == "8"
    assert not xc.replace_order("A", "o2b", "o2", qty=0)
    assert reps[-1].response_to == ex.RESPONSE_TO_REPLACE
    reps.clear()
    assert xc.new_order("A", "o2", "AAPL", BUY, 1, 9_000) is None      # duplicate ClOrdID
    assert reps[-1].ord_rej_reason == ex.ORD_REJ_DUPLICATE
    assert xc.new_order("A", "x1", "ZZZ", BUY, 1, 9_000) is None
    assert reps[-1].text == "unknown symbol 'ZZZ'" and reps[-1].ord_rej_reason == ex.ORD_REJ_UNKNOWN_SYMBOL
    assert xc.new_order("A", "x2", "AAPL", BUY, 0, 9_000) is None
    assert "positive whole number" in reps[-1].text
    assert xc.new_order("A", "x3", "AAPL", BUY, 10**9, 9_000) is None
    assert reps[-1].ord_rej_reason == ex.ORD_REJ_EXCEEDS_LIMIT
    reps.clear()
    xc.new_order("A", "o3", "MSFT", SELL, 5, 401)
    reps.clear()
    rep = xc.mass_cancel("A", "m1", ex.MASS_CANCEL_SYMBOL, "MSFT")
    assert rep.affected == 2 and reps[0] is rep
    assert [r.exec_type for r in reps[1:]] == ["4", "4"]
    assert not xc.accounts["A"].live
    assert xc.mass_cancel("A", "m2", "3").response == ex.MASS_CANCEL_REJECTED


def test_exchange_tif_market_fok_self_match_halt_and_listeners():
    xc, reps = make_exchange(sources={})
    rec = Recorder()
    xc.add_listener(rec)
    xc.new_order("B", "s1", "AAPL", SELL, 10, 10_000)
    reps.clear()
    xc.new_order("A", "f1", "AAPL", BUY, 20, 10_000, tif=ex.TIF_FOK)       # not fillable
    assert [(r.exec_type, r.ord_status) for r in reps] == [("0", "0"), ("4", "4")]
    reps.clear()
    xc.new_order("A", "i1", "AAPL", BUY, 25, 10_000, tif=ex.TIF_IOC)       # 10 fill, 15 canceled
    a_reps = [r for r in reps if r.account == "A"]
    assert [(r.exec_type, r.ord_status, r.cum_qty, r.leaves_qty) for r in a_reps] == \
        [("0", "0", 0, 25), ("F", "1", 10, 15), ("4", "4", 10, 0)]
    reps.clear()
    xc.new_order("A", "mk", "AAPL", BUY, 5, ord_type=ex.ORDTYPE_MARKET)    # empty book: canceled
    assert reps[-1].exec_type == "4" and "no more liquidity" in reps[-1].text
    xc.new_order("A", "r1", "AAPL", SELL, 5, 10_100)
    reps.clear()
    xc.new_order("A", "r2", "AAPL", BUY, 5, 10_100)                       # own order: SMP cancels incoming
    assert reps[-1].exec_type == "4" and "self-match" in reps[-1].text
    xc.set_halt("AAPL", True)
    assert rec.halts == [("AAPL", True)]
    reps.clear()
    assert xc.new_order("A", "h1", "AAPL", BUY, 1, 9_000) is None
    assert reps[-1].text == "AAPL is halted" and reps[-1].ord_rej_reason == ex.ORD_REJ_EXCHANGE_CLOSED
    assert not xc.replace_order("A", "r1b", "r1", price=10_200)
    assert xc.cancel_order("A", "r1c", "r1")          # cancels are allowed while halted
    xc.set_halt("AAPL", False)
    assert rec.halts == [("AAPL", True), ("AAPL", False)]
    with pytest.raises(ex.ExchangeError, match="unknown symbol"):
        xc.set_halt("ZZZ", True)


def test_faults_reject_rate_is_seeded_and_apply_validates_everything_first():
    xc, reps = make_exchange(sources={})
    xc.faults.apply({"reject_rate": 0.5, "reject_seed": 42})
    for i in range(40):
        xc.new_order("A", f"c{i}", "AAPL", BUY, 1, 9_000 + i)
    rng = random.Random(42)
    expected = sum(rng.random() < 0.5 for _ in range(40))
    rejected = [r for r in reps if r.exec_type == "8"]
    assert len(rejected) == expected and 5 < expected < 35
    assert all(r.text == "rejected by fault injection" for r in rejected)
    before = xc.faults.snapshot()
    for bad, msg in (({"reject_rate": 2}, "reject_rate"), ({"ack_delay_ms": -1}, "ack_delay_ms"),
                     ({"halt": "ZZZ"}, "unknown symbol"), ({"bogus": 1}, "unknown fault key"),
                     ({"ack_delay_ms": 5, "drop_after_orders": -2}, "drop_after_orders"), ([1], "JSON object")):
        with pytest.raises(ex.ExchangeError, match=msg):
            xc.faults.apply(bad)
    assert xc.faults.snapshot() == before          # nothing half-applied


def test_synthetic_source_is_deterministic_and_bounded():
    a = ex.SyntheticSource(5, chunk_events=1_000)
    b = ex.SyntheticSource(5, chunk_events=1_000)
    ops_a = [a.next_ops(700).copy() for _ in range(20)]
    ops_b = [b.next_ops(700).copy() for _ in range(20)]
    assert all((x == y).all() for x, y in zip(ops_a, ops_b, strict=True))
    xc = ex.Exchange(["AAPL"], sources={"AAPL": ex.SyntheticSource(5, chunk_events=1_000)})
    sizes = []
    for _ in range(30):
        xc.replay_tick(1_000)
        sizes.append(len(xc.book("AAPL")))
        bid, _, ask, _ = xc.book("AAPL").top()
        assert bid is not None and ask is not None and bid < ask
    assert max(sizes[10:]) < 3 * max(sizes[:10]) + 100       # stale orders expire
    assert xc.replay_events == 30_000


def test_instrument_prices():
    aapl, msft, yen = Instrument("AAPL"), Instrument("MSFT", Decimal("0.05")), Instrument("JPY", "1")
    assert aapl.ticks(b"101.25") == 10_125 and aapl.ticks("101.2500") == 10_125 and aapl.ticks(b"7") == 700
    assert msft.ticks(b"10.05") == 201 and msft.price_text(201) == "10.05" and msft.decimals == 2
    assert yen.ticks(b"150") == 150 and yen.price_text(150) == "150"
    for bad, msg in ((b"101.255", "more decimal places"), (b"abc", "not a decimal"), (b"", "not a decimal"),
                     (b"1e5", "not a decimal"), (b"1.2.3", "not a decimal")):
        with pytest.raises(PriceError, match=msg):
            aapl.ticks(bad)
    with pytest.raises(PriceError, match="multiple of the tick size 0.05"):
        msft.ticks(b"10.03")
    with pytest.raises(ValueError, match="positive"):
        Instrument("X", Decimal("0"))


def test_statement_columns_and_file(tmp_path):
    xc, _ = make_exchange(sources={})
    xc.new_order("B", "s1", "MSFT", SELL, 7, 300)     # 15.00 at a 0.05 tick
    xc.new_order("A", "b1", "MSFT", BUY, 10, 301)
    path = tmp_path / "statement.csv"
    xc.write_statement(str(path))
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert tuple(rows[0].keys()) == ex.Exchange.STATEMENT_COLUMNS
    fills = [r for r in rows if r["record"] == "FILL"]
    assert {(r["account"], r["side"], r["qty"], r["price"], r["liquidity"]) for r in fills} == \
        {("B", "SELL", "7", "15.00", "M"), ("A", "BUY", "7", "15.00", "T")}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r["time_utc"]) for r in rows)
    pos = {(r["account"], r["symbol"]): r for r in rows if r["record"] == "POSITION"}
    assert pos[("A", "MSFT")]["qty"] == "7" and pos[("A", "MSFT")]["net_cash"] == "-105.00"
    assert pos[("B", "MSFT")]["qty"] == "-7" and pos[("B", "MSFT")]["sold"] == "7"
    assert pos[("A", "AAPL")]["qty"] == "0"


# ========================================================== FIX order entry over sockets

def test_order_lifecycle_partial_fills_and_statement(loop_runner, tmp_path):
    statement = tmp_path / "st.csv"

    async def main():
        venue = Venue(options(statement_path=str(statement)))
        await venue.start()
        a, a_ev = await start_client(venue, "A")
        b, b_ev = await start_client(venue, "B")
        book = venue.exchange.book("AAPL")
        bid, _, ask, ask_size = book.top()
        qty = ask_size + 30
        cl = a.new_order("AAPL", BUY, qty, ask)
        await until(lambda: any(e.leaves_qty == 30 for e in ers(a_ev, cl)), what="A partially filled")
        reports = ers(a_ev, cl)
        assert (reports[0].exec_type, reports[0].ord_status, reports[0].leaves_qty, reports[0].cum_qty) == \
            ("0", "0", qty, 0)
        fills = [e for e in reports if e.exec_type == "F"]
        assert sum(e.last_qty for e in fills) == ask_size and all(e.last_px == ask for e in fills)
        assert all(e.ord_status == "1" and e.leaves_qty + e.cum_qty == qty for e in fills)
        assert fills[-1].avg_px == Decimal(ask) / 100
        # B crosses: A's resting remainder fills as maker, partially then completely
        b1 = b.new_order("AAPL", SELL, 10, ask)
        await until(lambda: any(e.ord_status == "2" for e in ers(b_ev, b1)), what="B filled")
        await until(lambda: any(e.leaves_qty == 20 for e in ers(a_ev, cl, "F")), what="A maker fill")
        b2 = b.new_order("AAPL", SELL, 50, ask, tif=ex.TIF_IOC)
        await until(lambda: any(e.ord_status == "2" for e in ers(a_ev, cl)), what="A filled")
        await until(lambda: any(e.exec_type == "4" for e in ers(b_ev, b2)), what="B IOC remainder canceled")
        last = ers(a_ev, cl)[-1]
        assert (last.exec_type, last.ord_status, last.cum_qty, last.leaves_qty) == ("F", "2", qty, 0)
        b2_reports = ers(b_ev, b2)
        assert [e.exec_type for e in b2_reports] == ["0", "F", "4"]
        assert (b2_reports[-1].cum_qty, b2_reports[-1].leaves_qty, b2_reports[-1].ord_status) == (20, 0, "4")
        all_ids = [e.exec_id for e in ers(a_ev) + ers(b_ev)]
        assert len(all_ids) == len(set(all_ids))
        assert venue.exchange.accounts["A"].position["AAPL"] == qty
        assert venue.exchange.accounts["B"].position["AAPL"] == -30
        await a.stop()
        await b.stop()
        await venue.stop()       # writes the statement at shutdown
        return qty, ask

    qty, ask = loop_runner(main)
    rows = list(csv.DictReader(io.StringIO(statement.read_text())))
    a_fills = [r for r in rows if r["record"] == "FILL" and r["account"] == "A"]
    assert sum(int(r["qty"]) for r in a_fills) == qty
    assert {r["price"] for r in a_fills} == {f"{ask // 100}.{ask % 100:02d}"}
    assert [r["liquidity"] for r in a_fills].count("M") == 2
    pos = {(r["account"], r["symbol"]): r for r in rows if r["record"] == "POSITION"}
    assert pos[("A", "AAPL")]["qty"] == str(qty) and pos[("B", "AAPL")]["qty"] == "-30"


def test_cancel_replace_status_mass_cancel_and_rejects(loop_runner):
    async def main():
        venue = Venue(options())
        await venue.start()
        a, ev = await start_client(venue, "A")
        bid = venue.exchange.book("AAPL").best_bid
        o1 = a.new_order("AAPL", BUY, 10, bid - 20)
        o2 = a.new_order("MSFT", SELL, 5, 20_000)
        await until(lambda: ers(ev, o1, "0") and ers(ev, o2, "0"), what="acks")
        r1 = a.replace(o1, qty=25, price=bid - 19)
        await until(lambda: ers(ev, r1), what="replaced")
        rep = ers(ev, r1)[0]
        assert (rep.exec_type, rep.orig_cl_ord_id, rep.order_qty, rep.price, rep.leaves_qty, rep.ord_status) == \
            ("5", o1, 25, bid - 19, 25, "0")
        a.order_status(r1)
        await until(lambda: ers(ev, r1, "I"), what="status")
        assert ers(ev, r1, "I")[0].leaves_qty == 25
        c1 = a.cancel(r1)
        await until(lambda: ers(ev, c1), what="canceled")
        assert (ers(ev, c1)[0].exec_type, ers(ev, c1)[0].ord_status, ers(ev, c1)[0].orig_cl_ord_id) == ("4", "4", r1)
        c2 = a.cancel(r1)                       # again: too late
        await until(lambda: any(isinstance(e, OrderCancelRejectEvent) for e in ev), what="cancel reject")
        rej = [e for e in ev if isinstance(e, OrderCancelRejectEvent)][0]
        assert (rej.cl_ord_id, rej.orig_cl_ord_id, rej.ord_status, rej.response_to, rej.reason) == \
            (c2, r1, "4", "1", ex.CXL_REJ_TOO_LATE)
        bad = a.new_order("ZZZ", BUY, 1, 100)
        await until(lambda: ers(ev, bad), what="reject")
        assert (ers(ev, bad)[0].exec_type, ers(ev, bad)[0].ord_status, ers(ev, bad)[0].text) == \
            ("8", "8", "unknown symbol 'ZZZ'")
        # hand-made bad requests the typed encoder would refuse
        session = a.session
        for cl, fields, want in (
                ("p1", [(38, 10), (40, 2), (44, "100.003"), (54, 1), (55, "AAPL")], "more decimal places"),
                ("q1", [(38, 0), (40, 2), (44, "100.00"), (54, 1), (55, "AAPL")], "OrderQty (38) '0'"),
                ("q2", [(38, "1.5"), (40, 2), (44, "100.00"), (54, 1), (55, "AAPL")], "whole number"),
                ("t1", [(38, 1), (40, 3), (44, "100.00"), (54, 1), (55, "AAPL")], "OrdType (40) '3'"),
                ("n1", [(38, 1), (40, 2), (54, 1), (55, "AAPL")], "Price (44) missing"),
                ("s1", [(38, 1), (40, 2), (44, "100.00"), (54, 1)], "Symbol (55) missing")):
            body = b"".join(b"%d=%s\x01" % (t, str(v).encode()) for t, v in [(11, cl)] + fields + [
                (60, fixcodec.format_utc_timestamp(time.time_ns()).decode())])
            session.send_app(b"D", body)
            await until(lambda cl=cl: ers(ev, cl), what=f"reject of {cl}")
            r = ers(ev, cl)[0]
            assert r.exec_type == "8" and r.ord_status == "8" and want in r.text, (cl, r.text)
        with pytest.raises(ClientError, match="not sent by this client"):
            a.order_status("other-1")
        a.order_status("other-1", symbol="AAPL", side=BUY)     # e.g. an order from before a restart
        await until(lambda: ers(ev, "other-1"), what="status of an unknown order")
        unknown = ers(ev, "other-1")[0]
        assert (unknown.exec_type, unknown.ord_status, unknown.order_id, unknown.text) == \
            ("I", "8", "NONE", "unknown order 'other-1'")
        m = a.mass_cancel()
        await until(lambda: len(ers(ev, o2, "4")) == 1, what="mass cancel")
        mrep = [e for e in ev if isinstance(e, MassCancelReportEvent)][0]
        assert (mrep.cl_ord_id, mrep.response, mrep.affected) == (m, "7", 1)
        assert not venue.exchange.accounts["A"].live
        await a.stop()
        await venue.stop()

    loop_runner(main)


def test_avg_px_is_exact_and_prices_follow_the_tick_size(loop_runner):
    async def main():
        venue = Venue(options(warmup_events=0, tick_sizes=(("MSFT", Decimal("0.05")),)))   # empty books
        await venue.start()
        a, a_ev = await start_client(venue, "A")
        b, _ = await start_client(venue, "B")
        b.new_order("AAPL", SELL, 1, 10_010)
        b.new_order("AAPL", SELL, 2, 10_011)
        cl = a.new_order("AAPL", BUY, 3, 10_011)
        await until(lambda: any(e.ord_status == "2" for e in ers(a_ev, cl)), what="filled")
        done = ers(a_ev, cl)[-1]
        assert done.avg_px == Decimal("100.106667")        # (100.10 + 2 x 100.11) / 3, 4 more places
        assert done.last_px == 10_011 and done.price == 10_011
        a.instruments["MSFT"] = Instrument("MSFT", Decimal("0.05"))
        b.instruments["MSFT"] = Instrument("MSFT", Decimal("0.05"))
        b.new_order("MSFT", SELL, 4, 301)                   # 15.05
        m = a.new_order("MSFT", BUY, 4, 302)                # 15.10: trades at 15.05
        await until(lambda: any(e.ord_status == "2" for e in ers(a_ev, m)), what="MSFT filled")
        fill = ers(a_ev, m)[-1]
        assert (fill.last_px, fill.price, fill.avg_px) == (301, 302, Decimal("15.05"))
        await a.stop()
        await b.stop()
        await venue.stop()

    loop_runner(main)


def test_fill_by_synthetic_liquidity(loop_runner):
    async def main():
        venue = Venue(options(replay_events_per_tick=200, replay_tick_ms=5, seed=11))
        await venue.start()
        a, ev = await start_client(venue, "A")
        bid, _, ask, _ = venue.exchange.book("AAPL").top()
        price = bid + 1 if ask - bid > 1 else bid      # the best bid, alone if possible
        cl = a.new_order("AAPL", BUY, 5, price)
        await until(lambda: ers(ev, cl, "F"), timeout=8, what="a fill from the synthetic flow")
        fill = ers(ev, cl, "F")[0]
        assert fill.last_px <= price and fill.cum_qty >= 1
        f = venue.exchange.accounts["A"].fills[0]
        assert str(f.exec_id) == fill.exec_id and f.qty == fill.last_qty
        assert venue.exchange.accounts["B"].fills == []          # the other side was the synthetic flow
        await a.stop()
        await venue.stop()

    loop_runner(main)


def test_gap_fill_after_forced_disconnect_with_reports_in_flight(loop_runner):
    """The venue aborts the connection after 5 orders while their (delayed) acks are still
    pending and 15 more orders are in flight; after the reconnect, ResendRequest / gap
    fill in both directions deliver every order exactly once and every ack."""

    async def main():
        venue = Venue(options(fault_ack_delay_ms=30, fault_drop_after_orders=5))
        await venue.start()
        a, ev = await start_client(venue, "A")
        bid = venue.exchange.book("AAPL").best_bid
        sent = [a.new_order("AAPL", BUY, 1, bid - 100 - i) for i in range(20)]
        await until(lambda: {e.cl_ord_id for e in ers(ev, exec_type="0")} == set(sent), timeout=8,
                    what="an ack for every order")
        news = ers(ev, exec_type="0")
        assert len(news) == 20                                  # none lost, none twice
        assert venue.faults.dropped == 1 and a.initiator.connects >= 2
        assert any(e.poss_dup for e in news)                     # some came by resend
        assert len(venue.exchange.accounts["A"].live) == 20      # each order entered once
        vs = venue.fix.sessions["A"]
        assert vs.resends_served >= 1 and a.session.resends_served >= 1
        await until(lambda: vs.next_target_seq == a.session.next_sender_seq
                    and vs.next_sender_seq == a.session.next_target_seq and not a.session.queue
                    and not vs.queue, what="sequence numbers agree, nothing left queued")
        await a.stop()
        await venue.stop()

    loop_runner(main, timeout=15)


def test_cancel_on_disconnect_reports_delivered_on_next_logon(loop_runner):
    async def main():
        venue = Venue(options(cancel_on_disconnect="disconnect"))
        await venue.start()
        a, ev = await start_client(venue, "A")
        bid = venue.exchange.book("AAPL").best_bid
        cls = [a.new_order("AAPL", BUY, 1, bid - 50 - i) for i in range(3)]
        await until(lambda: len(ers(ev, exec_type="0")) == 3, what="acks")
        assert venue.faults.drop_connections("A") == 1
        assert not venue.exchange.accounts["A"].live             # canceled at once
        await until(lambda: len(ers(ev, exec_type="4")) == 3, timeout=6, what="canceled reports after reconnect")
        canceled = ers(ev, exec_type="4")
        assert {e.cl_ord_id for e in canceled} == set(cls)
        assert all(e.poss_dup and e.text == "canceled on disconnect" for e in canceled)
        # a Logout is not a disconnect: orders stay
        cl = a.new_order("AAPL", BUY, 1, bid - 60)
        await until(lambda: ers(ev, cl), what="ack")
        await a.stop()
        with pytest.raises(NotLoggedOn):
            a.new_order("AAPL", BUY, 1, bid - 61)
        assert len(venue.exchange.accounts["A"].live) == 1
        await venue.stop()

    loop_runner(main)


def test_restart_resumes_persisted_sequence_numbers(loop_runner, tmp_path):
    venue_db, client_db = str(tmp_path / "venue.db"), str(tmp_path / "client.db")

    async def phase(n_orders: int):
        venue = Venue(options(store_path=venue_db))
        await venue.start()
        a, ev = await start_client(venue, "A", store=SqliteStore(client_db, "A-VENUE"))
        before = (a.session.next_sender_seq, a.session.next_target_seq)
        bid = venue.exchange.book("AAPL").best_bid
        cls = [a.new_order("AAPL", BUY, 1, bid - 30 - i) for i in range(n_orders)]
        await until(lambda: len(ers(ev, exec_type="0")) == n_orders, what="acks")
        vs = venue.fix.sessions["A"]
        resends = (vs.resends_served, a.session.resends_served)
        await a.stop()
        await venue.stop()
        after = (a.session.next_sender_seq, a.session.next_target_seq, vs.next_sender_seq, vs.next_target_seq)
        return before, after, resends, cls

    before1, after1, resends1, _ = loop_runner(lambda: phase(3))
    assert before1 == (2, 2)                 # fresh: Logon was 1 each way
    c_out, c_in, v_out, v_in = after1
    assert (c_out, c_in) == (v_in, v_out) and c_out == 2 + 3 + 1    # 3 orders + Logout
    before2, after2, resends2, _ = loop_runner(lambda: phase(2))
    assert before2 == (c_out + 1, c_in + 1)  # resumed after the new Logon, not reset to 1
    assert resends1 == (0, 0) and resends2 == (0, 0)   # no gap to fill: both sides agreed
    assert after2[0] == after2[3] and after2[1] == after2[2]


def test_garbage_and_malformed_fix_do_not_hurt_other_sessions(loop_runner, caplog):
    caplog.set_level(logging.INFO)

    async def main():
        venue = Venue(options())
        await venue.start()
        venue.acceptor.logon_timeout_s = 0.3
        b, b_ev = await start_client(venue, "B")
        port = venue.fix_port
        # 1. garbage that is not FIX at all: closed when no Logon came in time, nothing written
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4)
        assert await asyncio.wait_for(r1.read(), 3) == b""
        w1.close()
        # 2. a garbled first message: dropped at once
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"8=FIX.4.4\x019=ZZ\x0135=A\x0110=000\x01")
        assert await asyncio.wait_for(r2.read(), 3) == b""
        w2.close()
        # 3. a logged-on session that sends a bad checksum and an invalid tag
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)
        enc = fixcodec.FixEncoder("A", "VENUE")
        parser = fixcodec.FixParser()

        async def next_msg():
            while True:
                msg = parser.next()
                if msg is not None:
                    return msg
                data = await asyncio.wait_for(r3.read(4096), 3)
                assert data, "venue closed the connection"
                parser.feed(data)

        w3.write(enc.logon(1, 30, reset_seq_num=True))
        assert (await next_msg()).msg_type == b"A"
        good = enc.new_order_single(2, "G1", "AAPL", BUY, 1, 9_000, 2)
        w3.write(good[:-4] + (b"000\x01" if good[-4:-1] != b"000" else b"001\x01"))  # bad checksum: ignored
        w3.write(enc.encode("D", [(11, "G2"), (38, 1), (40, 2), (44, "90.00"), (54, 1), (55, "AAPL"),
                                  (60, fixcodec.format_utc_timestamp(time.time_ns())), (9999, "x")], 2))
        rej = await next_msg()
        assert rej.msg_type == b"3" and rej.get(45) == b"2" and rej.get(373) == b"0"
        w3.write(enc.new_order_single(3, "G3", "AAPL", BUY, 1, 9_000, 2))
        ack = await next_msg()
        assert ack.msg_type == b"8" and ack.get(11) == b"G3" and ack.get(150) == b"0"
        assert venue.fix.sessions["A"].garbled_in == 1 and venue.fix.sessions["A"].logged_on
        # the other session trades on, unaffected
        cl = b.new_order("AAPL", SELL, 1, 20_000)
        await until(lambda: ers(b_ev, cl, "0"), what="B ack")
        w3.close()
        await b.stop()
        await venue.stop()

    loop_runner(main)
    text = caplog.text
    assert "no Logon within 0.3 s" in text and "garbled first message" in text
    assert "garbled message discarded" in text


def test_faults_at_run_time_over_http(loop_runner):
    async def main():
        venue = Venue(options(fault_reject_rate=1.0, control_port=0))
        await venue.start()
        rec = Recorder()
        venue.exchange.add_listener(rec)
        port = venue.control_port
        a, ev = await start_client(venue, "A")
        bid = venue.exchange.book("AAPL").best_bid
        c1 = a.new_order("AAPL", BUY, 1, bid - 10)
        await until(lambda: ers(ev, c1), what="reject")
        assert ers(ev, c1)[0].exec_type == "8" and ers(ev, c1)[0].text == "rejected by fault injection"
        status, body = await http(port, "POST", "/faults", orjson.dumps({"reject_rate": 0, "ack_delay_ms": 400}))
        assert status == 200 and orjson.loads(body)["ack_delay_ms"] == 400
        c2 = a.new_order("AAPL", BUY, 1, bid - 10)
        await asyncio.sleep(0.06)
        assert not ers(ev, c2)                          # still held back
        await until(lambda: ers(ev, c2), what="delayed ack")
        status, body = await http(port, "POST", "/faults", orjson.dumps({"ack_delay_ms": 0, "halt": "AAPL"}))
        assert status == 200 and orjson.loads(body)["halted"] == ["AAPL"]
        assert rec.halts == [("AAPL", True)]
        c3 = a.new_order("AAPL", BUY, 1, bid - 10)
        await until(lambda: ers(ev, c3), what="halt reject")
        assert ers(ev, c3)[0].text == "AAPL is halted"
        c4 = a.cancel(c2)                               # cancels still work
        await until(lambda: ers(ev, c4, "4"), what="cancel while halted")
        status, _ = await http(port, "POST", "/faults", orjson.dumps({"resume": ["AAPL"]}))
        assert status == 200 and rec.halts[-1] == ("AAPL", False)
        status, body = await http(port, "GET", "/faults")
        assert status == 200 and orjson.loads(body)["halted"] == []
        for payload, code, msg in ((b"{nope", 400, b"not JSON"), (b'{"reject_rate": 7}', 400, b"reject_rate"),
                                   (b'{"halt": "ZZZ"}', 400, b"unknown symbol")):
            status, body = await http(port, "POST", "/faults", payload)
            assert status == code and msg in body
        assert (await http(port, "GET", "/nope"))[0] == 404
        assert (await http(port, "DELETE", "/faults"))[0] == 405
        status, body = await http(port, "GET", "/statement")
        assert status == 200 and body.startswith(b"record,account,symbol")
        status, body = await http(port, "GET", "/status")
        assert status == 200 and orjson.loads(body)["sessions"]["A"]["logged_on"] is True
        status, body = await http(port, "POST", "/faults", orjson.dumps({"drop_connection": "A"}))
        assert status == 200 and orjson.loads(body)["dropped_now"] == 1
        await until(lambda: a.initiator.connects >= 2 and a.logged_on, what="reconnect")
        await a.stop()
        await venue.stop()

    loop_runner(main)


def test_several_accounts_with_password(loop_runner, monkeypatch, caplog):
    monkeypatch.setenv("VENUE_TEST_PW", "s3cret-pw")
    caplog.set_level(logging.DEBUG)

    async def main():
        venue = Venue(options(target_comp_ids=("A", "B", "C"), password_env="VENUE_TEST_PW"))
        await venue.start()
        bad = FixOrderClient("127.0.0.1", venue.fix_port, "C", "VENUE", SYMS, username="C", password="wrong",
                             backoff_initial_s=5)
        await bad.start(wait_logged_on=None)
        await until(lambda: bad.initiator.connects >= 1 and not bad.session.connected, what="refused")
        assert not venue.fix.sessions["C"].logged_on
        await bad.stop()
        a, ev = await start_client(venue, "A", username="A", password="s3cret-pw")
        b, _ = await start_client(venue, "B", username="B", password="s3cret-pw")
        assert venue.fix.sessions["A"].logged_on and venue.fix.sessions["B"].logged_on
        cl = a.new_order("MSFT", BUY, 2, 5_000)
        await until(lambda: ers(ev, cl), what="ack")
        assert set(venue.exchange.accounts) >= {"A", "B", "C"}
        await a.stop()
        await b.stop()
        await venue.stop()

    loop_runner(main)
    assert "bad username or password" in caplog.text
    assert "s3cret-pw" not in caplog.text


# ============================================================ interoperability: QuickFIX

# quickfix-py is a test dependency: a missing package fails this module loudly (never a skip)
import quickfix  # noqa: E402
import quickfix44  # noqa: E402


class QfApp(quickfix.Application):
    """A QuickFIX application that records what it receives (QuickFIX threads -> a Queue)."""

    def __init__(self, answer_orders: bool = False):
        super().__init__()
        self.q: queue.Queue = queue.Queue()
        self.sid = None
        self.answer_orders = answer_orders
        self.exec_seq = 0

    def onCreate(self, sid):
        self.sid = sid

    def onLogon(self, sid):
        self.q.put(("logon", None))

    def onLogout(self, sid):
        self.q.put(("logout", None))

    def toAdmin(self, msg, sid):
        pass

    def fromAdmin(self, msg, sid):
        pass

    def toApp(self, msg, sid):
        pass

    def fromApp(self, msg, sid):
        raw = msg.toString()
        self.q.put(("app", raw))
        if self.answer_orders and "\x0135=D\x01" in raw:
            self.exec_seq += 1
            fields = dict(p.split("=", 1) for p in raw.split("\x01") if "=" in p)
            er = quickfix44.ExecutionReport()
            for f in (quickfix.OrderID(f"QF{self.exec_seq}"), quickfix.ExecID(f"QFX{self.exec_seq}"),
                      quickfix.ExecType(quickfix.ExecType_NEW), quickfix.OrdStatus(quickfix.OrdStatus_NEW),
                      quickfix.Side(fields["54"]), quickfix.LeavesQty(float(fields["38"])),
                      quickfix.CumQty(0), quickfix.AvgPx(0), quickfix.ClOrdID(fields["11"]),
                      quickfix.Symbol(fields["55"]), quickfix.OrderQty(float(fields["38"])),
                      quickfix.Price(float(fields["44"]))):
                er.setField(f)
            quickfix.Session.sendToTarget(er, sid)


def qf_settings(tmp_path, role: str, port: int, sender: str, target: str) -> quickfix.SessionSettings:
    text = f"""[DEFAULT]
ConnectionType={role}
ReconnectInterval=1
StartTime=00:00:00
EndTime=00:00:00
HeartBtInt=30
UseDataDictionary=Y
DataDictionary={SHARED_FIX_AT / 'FIX44.xml'}
FileStorePath={tmp_path / 'qfstore'}
ResetOnLogon=Y
LogoutTimeout=2
{'SocketConnectHost=127.0.0.1' if role == 'initiator' else ''}
{'SocketConnectPort' if role == 'initiator' else 'SocketAcceptPort'}={port}
[SESSION]
BeginString=FIX.4.4
SenderCompID={sender}
TargetCompID={target}
"""
    path = tmp_path / f"qf-{role}.cfg"
    path.write_text(text)
    return quickfix.SessionSettings(str(path))


async def qf_get(app: QfApp, kind: str, timeout: float = 5.0, contains: str = ""):
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"QuickFIX: no {kind} {contains!r}")
        try:
            got_kind, raw = await loop.run_in_executor(None, app.q.get, True, min(left, 0.5))
        except queue.Empty:
            continue
        if got_kind == kind and contains in (raw or ""):
            return raw


def release_quickfix(held: list) -> None:
    """Destroy QuickFIX engines here, on the main thread, after stop(): left to the cyclic
    GC, a SWIG-wrapped engine can be destroyed later on whatever thread runs the collector
    (an executor thread of the next test), which crashed the process now and then."""
    while held:
        held.pop()
    gc.collect()


# QuickFIX's Python binding has crashed the process now and then when stop() ran on an
# executor thread: stop() (forced: no logout wait) runs on the main thread after the event
# loop is done, and the engines are destroyed there too.
def test_quickfix_initiator_trades_on_our_venue(loop_runner, tmp_path):
    held: list = []

    async def main():
        venue = Venue(options(target_comp_ids=("QF",)))
        await venue.start()
        app = QfApp()
        settings = qf_settings(tmp_path, "initiator", venue.fix_port, "QF", "VENUE")
        initiator = quickfix.SocketInitiator(app, quickfix.MemoryStoreFactory(), settings)
        held.extend((app, settings, initiator))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, initiator.start)
        try:
            await qf_get(app, "logon")
            ask = venue.exchange.book("AAPL").best_ask
            ask_size = venue.exchange.book("AAPL").best_ask_size
            nos = quickfix44.NewOrderSingle()
            for f in (quickfix.ClOrdID("QF-1"), quickfix.Side(quickfix.Side_BUY), quickfix.TransactTime(),
                      quickfix.OrdType(quickfix.OrdType_LIMIT), quickfix.Symbol("AAPL"),
                      quickfix.OrderQty(ask_size + 5), quickfix.Price(ask / 100)):
                nos.setField(f)
            quickfix.Session.sendToTarget(nos, app.sid)
            new = await qf_get(app, "app", contains="\x01150=0\x01")
            assert "\x0111=QF-1\x01" in new and "\x0139=0\x01" in new
            fill = await qf_get(app, "app", contains="\x01150=F\x01")
            assert f"\x0131={ask // 100}.{ask % 100:02d}\x01" in fill
            assert venue.exchange.accounts["QF"].position["AAPL"] > 0
        finally:
            await venue.stop()

    try:
        loop_runner(main, timeout=20)
    finally:
        if len(held) == 3:
            held[2].stop(True)
        release_quickfix(held)


def test_our_client_against_a_quickfix_acceptor(loop_runner, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    held: list = []

    async def main():
        app = QfApp(answer_orders=True)
        settings = qf_settings(tmp_path, "acceptor", port, "QFVENUE", "ME")
        acceptor = quickfix.SocketAcceptor(app, quickfix.MemoryStoreFactory(), settings)
        held.extend((app, settings, acceptor))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, acceptor.start)
        events: list = []
        client = FixOrderClient("127.0.0.1", port, "ME", "QFVENUE", SYMS, on_event=events.append,
                                reset_seq_num=True, backoff_initial_s=0.1)
        await client.start(wait_logged_on=5.0)
        await qf_get(app, "logon")
        cl = client.new_order("AAPL", BUY, 7, 12_345)
        order = await qf_get(app, "app", contains="\x0135=D\x01")
        assert f"\x0111={cl}\x01" in order and "\x0144=123.45\x01" in order and "\x0138=7\x01" in order
        await until(lambda: ers(events, cl), what="QuickFIX's ExecutionReport")
        er = ers(events, cl)[0]
        assert (er.exec_type, er.ord_status, er.order_id, er.leaves_qty, er.price) == ("0", "0", "QF1", 7, 12_345)
        await client.stop()
        await qf_get(app, "logout")
        assert client.session.last_disconnect_reason in ("logout", "initiator stopping")

    try:
        loop_runner(main, timeout=20)
    finally:
        if len(held) == 3:
            held[2].stop(True)
        release_quickfix(held)


# ====================================================================== the command line

def test_engine_venue_help_documents_every_option():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "venue", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for opt in ("--fix-port", "--fix-app", "--sender-comp-id", "--target-comp-id", "--symbols", "--seed",
                "--statement", "--control-port", "--fault-reject-rate", "--fault-ack-delay-ms", "--fault-halt",
                "--fault-drop-after-orders", "--cancel-on-disconnect", "--password-env", "--tick-size",
                "--replay-events-per-tick", "127.0.0.1"):
        assert opt in out.stdout, opt
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "venue", "--fault-reject-rate", "2"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "reject_rate 2.0" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "venue", "--password-env", "NO_SUCH_VAR_XYZ"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "NO_SUCH_VAR_XYZ"})
    assert bad.returncode == 2 and "NO_SUCH_VAR_XYZ" in bad.stderr


def test_engine_venue_process_serves_orders_faults_and_statement(tmp_path):
    statement = tmp_path / "st.csv"
    cmd = [sys.executable, "-m", "engine.cli", "venue", "--fix-port", "0", "--control-port", "0",
           "--symbols", "AAPL,MSFT", "--target-comp-id", "A", "--target-comp-id", "B,C", "--seed", "3",
           "--statement", str(statement), "--statement-interval", "0.2", "--cancel-on-disconnect",
           "--fault-halt", "MSFT", "--replay-events-per-tick", "5"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        fix_port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) as VENUE for A,B,C", lines[0]).group(1))
        control_port = int(re.search(r"http://127\.0\.0\.1:(\d+)/faults", "".join(lines)).group(1))

        async def main():
            status, body = await http(control_port, "GET", "/faults")
            assert status == 200 and orjson.loads(body)["halted"] == ["MSFT"]
            events: list = []
            client = FixOrderClient("127.0.0.1", fix_port, "C", "VENUE", SYMS, on_event=events.append)
            await client.start()
            cl = client.new_order("MSFT", BUY, 1, 100)
            cl2 = client.new_order("AAPL", SELL, 3, 1)          # marketable: trades with the book
            await until(lambda: ers(events, cl) and ers(events, cl2, "F"), what="reports")
            assert ers(events, cl)[0].text == "MSFT is halted"
            await client.stop()
        run_on_default_loop(main)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "FILL,C,AAPL" not in (statement.read_text() if statement.exists() else ""):
            time.sleep(0.05)
        assert "FILL,C,AAPL" in statement.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    rows = list(csv.DictReader(io.StringIO(statement.read_text())))
    assert any(r["record"] == "POSITION" and r["account"] == "C" and r["symbol"] == "AAPL" and r["qty"] == "-3"
               for r in rows)


def run_on_default_loop(coro_fn):
    from tests.conftest_loops import run_on
    return run_on("uvloop", coro_fn, timeout=15)


def test_overlapping_heartbeat_round_trips_are_each_answered(loop_runner):
    """Monitoring's periodic TestRequest and a pre-flight check can overlap: each
    heartbeat_roundtrip gets the Heartbeat that answers its own TestReqID."""
    async def main():
        venue = Venue(options())
        await venue.start()
        client, _ = await start_client(venue, "A")
        try:
            return await asyncio.gather(*(client.heartbeat_roundtrip(timeout_s=2.0) for _ in range(3)))
        finally:
            await client.stop()
            await venue.stop()
    rtts = loop_runner(main)
    assert all(r is not None and 0 < r < 2.0 for r in rtts), rtts
