"""engine.marketdata: CSV files to book update arrays, exact decimal conversion."""
from __future__ import annotations

import numpy as np
import pytest

from core_ext.book import ACTION_SET, ACTION_SNAPSHOT, SIDE_BUY, SIDE_SELL, UPDATE_DTYPE, L2Book
from engine.errors import DataError
from engine.marketdata import load_l2_csv, load_quotes_csv, quote_updates, to_units
from tests.conftest import shared_file

QUOTES_HEADER = "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
BINANCE_HEADER = "symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu\n"
TARDIS_HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_to_units_is_exact():
    from decimal import Decimal
    assert to_units("9681.92", Decimal("0.01"), "x") == 968192
    assert to_units("0.003", Decimal("0.001"), "x") == 3
    assert to_units("6421.5", Decimal("0.5"), "x") == 12843
    assert to_units("-1.50", Decimal("0.5"), "x") == -3
    with pytest.raises(DataError, match=r"where: 9681.925 is not a whole multiple of 0.01"):
        to_units("9681.925", Decimal("0.01"), "where")
    for bad in ("abc", "NaN", "inf", ""):
        with pytest.raises(DataError, match="where"):
            to_units(bad, Decimal("0.01"), "where")


def test_quotes_file_both_modes(tmp_path):
    path = write(tmp_path, "q.csv", QUOTES_HEADER
                 + "x,BTC,1000,1001,0.5,100.02,100.00,0.25\n"
                 + "x,BTC,2000,2001,0.5,100.02,100.01,0.25\n"
                 + "x,BTC,3000,3001,0.7,100.02,100.01,0.25\n")
    snap = load_quotes_csv(path, "0.01", "0.01")
    assert snap.dtype == UPDATE_DTYPE
    assert snap.tolist() == [
        (1_000_000, 10000, 25, SIDE_BUY, ACTION_SNAPSHOT), (1_000_000, 10002, 50, SIDE_SELL, ACTION_SET),
        (2_000_000, 10001, 25, SIDE_BUY, ACTION_SNAPSHOT), (2_000_000, 10002, 50, SIDE_SELL, ACTION_SET),
        (3_000_000, 10001, 25, SIDE_BUY, ACTION_SNAPSHOT), (3_000_000, 10002, 70, SIDE_SELL, ACTION_SET)]
    repl, index = load_quotes_csv(path, 0.01, "0.01", mode="replace", with_quote_index=True)
    assert repl.tolist() == [
        (1_000_000, 10000, 25, SIDE_BUY, ACTION_SET), (1_000_000, 10002, 50, SIDE_SELL, ACTION_SET),
        (2_000_000, 10000, 0, SIDE_BUY, ACTION_SET), (2_000_000, 10001, 25, SIDE_BUY, ACTION_SET),
        (3_000_000, 10002, 70, SIDE_SELL, ACTION_SET)]
    assert index.tolist() == [0, 0, 1, 1, 2]
    a, b = L2Book("a"), L2Book("b")
    a.apply(snap)
    b.apply(repl)
    assert a.levels(SIDE_BUY) == b.levels(SIDE_BUY) == [(10001, 25)]
    assert a.levels(SIDE_SELL) == b.levels(SIDE_SELL) == [(10002, 70)]


def test_replace_mode_deletes_before_sets_so_no_transient_cross():
    # the market jumps up through the old ask: 99/100 -> 101/102
    rows = quote_updates([1, 2], [99, 101], [1, 1], [100, 102], [1, 1], mode="replace")
    book = L2Book("j")
    for _ts, price, size, side, _a in rows.tolist():
        book.update(side, price, size)
        assert not book.crossed
    assert (book.best_bid, book.best_ask) == (101, 102)


def test_quote_errors_name_file_line_and_column(tmp_path):
    path = write(tmp_path, "bad.csv", QUOTES_HEADER + "x,BTC,1000,1001,0.5,100.02,100.005,0.25\n")
    with pytest.raises(DataError, match=r"bad.csv:2 bid_price: 100.005 is not a whole multiple of 0.01"):
        load_quotes_csv(path, "0.01", "0.01")
    path = write(tmp_path, "neg.csv", QUOTES_HEADER + "x,BTC,1000,1001,-0.5,100.02,100.00,0.25\n")
    with pytest.raises(DataError, match=r"neg.csv:2 ask_amount: size -0.5 is negative"):
        load_quotes_csv(path, "0.01", "0.01")
    path = write(tmp_path, "hdr.csv", "timestamp,bid,ask\n1,2,3\n")
    with pytest.raises(DataError, match="header lacks column"):
        load_quotes_csv(path, "0.01", "0.01")
    with pytest.raises(DataError, match="tick_size must be a positive decimal"):
        load_quotes_csv(path, "0", "0.01")
    with pytest.raises(DataError, match="quote mode must be"):
        quote_updates([1], [1], [1], [2], [1], mode="bogus")


def test_binance_and_tardis_l2_formats(tmp_path):
    binance = write(tmp_path, "b.csv", BINANCE_HEADER
                    + "BTC,1,0,0,b,snap,10.0,1.0,-1\n"
                    + "BTC,1,0,0,a,snap,10.1,2.0,-1\n"
                    + "BTC,2,0,0,a,set,10.1,0.000,-1\n"
                    + "BTC,3,0,0,b,snap,9.9,1.0,-1\n")
    rows = load_l2_csv(binance, "0.1", "0.5")
    assert rows.tolist() == [(1_000_000, 100, 2, SIDE_BUY, ACTION_SNAPSHOT),
                             (1_000_000, 101, 4, SIDE_SELL, ACTION_SET),
                             (2_000_000, 101, 0, SIDE_SELL, ACTION_SET),
                             (3_000_000, 99, 2, SIDE_BUY, ACTION_SNAPSHOT)]   # a new snapshot run
    tardis = write(tmp_path, "t.csv", TARDIS_HEADER
                   + "d,P,5,6,true,ask,6421.5,18640\n"
                   + "d,P,7,8,false,bid,6420,100\n")
    rows = load_l2_csv(tardis, "0.5", "10")
    assert rows.tolist() == [(5_000, 12843, 1864, SIDE_SELL, ACTION_SNAPSHOT),
                             (7_000, 12840, 10, SIDE_BUY, ACTION_SET)]


def test_l2_errors(tmp_path):
    with pytest.raises(DataError, match="not a known L2 format"):
        load_l2_csv(write(tmp_path, "u.csv", "a,b\n1,2\n"), "1", "1")
    bad_side = write(tmp_path, "s.csv", TARDIS_HEADER + "d,P,5,6,true,buy,1,1\n")
    with pytest.raises(DataError, match=r"s.csv:2 side: 'buy' is not one of bid, ask"):
        load_l2_csv(bad_side, "1", "1")
    bad_flag = write(tmp_path, "f.csv", TARDIS_HEADER + "d,P,5,6,yes,bid,1,1\n")
    with pytest.raises(DataError, match=r"f.csv:2 is_snapshot: 'yes'"):
        load_l2_csv(bad_flag, "1", "1")
    bad_ts = write(tmp_path, "t.csv", TARDIS_HEADER + "d,P,5.5,6,true,bid,1,1\n")
    with pytest.raises(DataError, match=r"t.csv:2 timestamp: '5.5' is not an integer"):
        load_l2_csv(bad_ts, "1", "1")
    empty = write(tmp_path, "e.csv", TARDIS_HEADER)
    assert load_l2_csv(empty, "1", "1").shape == (0,)


def test_real_files_load():
    q = load_quotes_csv(shared_file("quotes.csv"), "0.01", "0.001")
    assert q.shape == (19998,) and (q["size"] > 0).all()
    assert np.all(np.diff(q["ts_ns"][::2]) >= -10**9)    # µs -> ns, roughly ordered
    u = load_l2_csv(shared_file("btcusdt-depth-update.csv"), "0.01", "0.001")
    assert u.shape == (100,) and int((u["size"] == 0).sum()) == 21
    assert (u["ts_ns"] == 1667347199939 * 1_000_000).all()
    with pytest.raises(DataError, match="is not a whole multiple of 1"):
        load_l2_csv(shared_file("deribit_incremental_book_L2_BTC-PERPETUAL.csv"), "1", "10")
