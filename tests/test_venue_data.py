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
