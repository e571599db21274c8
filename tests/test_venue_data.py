"""`engine venue --data FILE`: a quotes file replayed as the venue's resting liquidity."""
from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from decimal import Decimal

import pytest

from gateway.replay_source import QuoteReplaySource, ReplayFileError, load_quotes
from gateway.venue import Venue, VenueOptions
from tests.conftest import REPO_ROOT, shared_file


def file_quotes(path, n):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [(Decimal(r["bid_price"]), Decimal(r["ask_price"])) for r in rows]


def test_quotes_load_exactly_and_loop():
    path = shared_file("quotes.csv")
    q = load_quotes(path)
    assert q.symbol == "BTCUSDT" and q.tick_size == Decimal("0.01") and q.lot_size == Decimal("0.001")
    first = file_quotes(path, 1)[0]
    assert (q.bids[0][0], q.asks[0][0]) == (int(first[0] / q.tick_size), int(first[1] / q.tick_size))
    src = QuoteReplaySource(q)
    total = 0
    while src.loops == 0:
        total += len(src.next_ops(4000))
    assert src.loops == 1 and total >= 4 * len(q.bids) - 2


def test_venue_book_follows_the_file(tmp_path):
    path = shared_file("quotes.csv")

    async def main():
        venue = Venue(VenueOptions(fix_port=0, data_path=str(path), symbols=("BTCUSDT",),
                                   tick_sizes=(("BTCUSDT", Decimal("0.01")),), warmup_events=40,
                                   replay_events_per_tick=0))
        await venue.start()
        try:
            return venue.exchange.books["BTCUSDT"].top()
        finally:
            await venue.stop()
    bid, _, ask, _ = asyncio.run(main())
    want_bid, want_ask = file_quotes(path, 10)[9]     # 40 operations = the first 10 quotes
    assert (bid, ask) == (int(want_bid * 100), int(want_ask * 100))


def test_bad_data_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
                   "x,ABC,1,1,1,10.5,NaN,1\n")
    with pytest.raises(ReplayFileError, match="line 2"):
        load_quotes(bad)
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "venue", "--data", str(bad), "--fix-port", "0"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "line 2" in proc.stderr and "Traceback" not in proc.stderr


def test_book_events_of_other_formats_become_resting_liquidity():
    """L2 deltas (Binance) and order-by-order L3 (Bitfinex) through engine.tickdata: the
    venue's matching book holds the recorded best bid and ask after the replayed events."""
    from core_ext import matching as mb
    from engine.tickdata import load_tick_data
    from gateway.replay_source import BookEventSource
    from tests.reference.book_ref import RefBook

    for name, limit in (("btcusdt-depth-snap.csv", None), ("btcusdt-depth-update.csv", None),
                        ("L3_feed.json", 20_000)):
        data = load_tick_data(shared_file(name))
        src = BookEventSource(data.events)
        book = mb.MatchingBook(data.symbol)
        stop = min(len(src.events) - 1, limit or len(src.events))
        while src._i < stop and src.loops == 0:
            book.apply_ops(src.next_ops(1))
        ref, live = RefBook(data.symbol), {}
        for e in src.events[:src._i]:
            kind, side, price, qty = int(e["kind"]), int(e["side"]), int(e["price"]), int(e["qty"])
            if kind == 1:
                ref = RefBook(data.symbol)
            if kind in (0, 1) and side in (0, 1):
                ref.update(side, price, qty)
            elif kind == 3:
                live[int(e["order_id"])] = (side, price, qty)
                ref.update(side, price, ref.size_at(side, price) + qty)
            elif kind in (4, 5) and int(e["order_id"]) in live:
                s0, p0, q0 = live.pop(int(e["order_id"]))
                ref.update(s0, p0, ref.size_at(s0, p0) - q0)
                if kind == 5:
                    live[int(e["order_id"])] = (s0, price, qty)
                    ref.update(s0, price, ref.size_at(s0, price) + qty)
        assert (book.best_bid, book.best_ask) == (ref.best_bid, ref.best_ask), name
