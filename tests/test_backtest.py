"""engine backtest: the compiled replay (core_ext.replay), the data formats
(engine.tickdata), the run (engine.backtest) and its outputs, on the real data files."""
from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from core_ext.book import L2Book
from core_ext.replay import (
    REPLAY_BOOK_SET,
    REPLAY_DTYPE,
    REPLAY_FLAG_END,
    REPLAY_TRADE,
    RecordMaker,
    Replay,
    ReplayClock,
    ReplayError,
)
from engine import backtest as bt
from engine.analytics import compute_metrics, digest, metrics_from_json
from engine.assembly import TradingCore
from engine.config import load_config
from engine.errors import DataError
from engine.orders import Fill, Side
from engine.strategies.ma_crossover import MovingAverageCrossover
from engine.strategy import Quote, Strategy, StrategyContext, StrategyHost, Trade
from engine.tickdata import (
    decimal_gcd,
    detect_format,
    load_tick_data,
    parse_iso_ns,
    write_parquet,
)
from tests.conftest import REPO_ROOT, shared_file

QUOTES = "quotes.csv"
TRADES = "trades.csv"


@pytest.fixture(scope="module")
def quotes_inputs():
    return bt.load_inputs(None, shared_file(QUOTES))


def _run_main(*args, **kw):
    out, err = io.StringIO(), io.StringIO()
    rc = bt.backtest_main(*args, stdout=out, stderr=err, **kw)
    return rc, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- runs on every format

def test_quotes_run_writes_every_output(tmp_path):
    rc, out, err = _run_main(None, shared_file(QUOTES), tmp_path / "out", False)
    assert rc == 0, err
    assert err == ""
    for name in bt.OUTPUT_FILES + (bt.TIMING_FILE,):
        assert (tmp_path / "out" / name).is_file(), name
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("sharpe", "sortino", "max_drawdown", "profit_factor", "total_return", "win_rate",
                "n_trades", "turnover", "digest", "sampling_interval_s", "annualisation_factor",
                "events", "data_duration_s"):
        assert key in m, key
    assert m["events"] == 9999 and m["n_fills"] > 0 and m["n_trades"] > 0
    assert m["instruments"] == [{"symbol": "BTCUSDT", "tick_size": "0.01", "lot_size": "0.001"}]
    assert 0.0 <= m["max_drawdown"] < 1.0
    t = json.loads((tmp_path / "out" / "timing.json").read_text())
    assert t["events"] == 9999 and t["events_per_second"] > 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in html and "<svg" in html and m["digest"] in html
    assert "events/s" in out and "digest" in out


def test_trades_only_file_gets_a_synthetic_book_and_trades():
    cfg, datas = bt.load_inputs(None, shared_file(TRADES))
    assert datas[0].book == "synthetic-l1" and datas[0].format == "tardis-trades"
    r = bt.run_backtest(cfg, datas)
    assert r.events == 9999 and len(r.fills) > 0
    ev = datas[0].events
    trade_rows = np.flatnonzero(ev["kind"] == REPLAY_TRADE)
    assert trade_rows.size == 9999
    # a buy print at p shows ask p, bid p - 1 tick
    first = trade_rows[0]
    assert ev["side"][first] == 0
    p = int(ev["price"][first])
    book_rows = ev[first + 1:trade_rows[1]]
    assert {(int(r["side"]), int(r["price"])) for r in book_rows} == {(0, p - 1), (1, p)}


@pytest.mark.parametrize("name, fmt, tick, lot, events", [
    ("btcusdt-depth-snap.csv", "binance-l2", "0.1", "0.001", 1),
    ("btcusdt-depth-update.csv", "binance-l2", "0.1", "0.001", 1),
    ("deribit_incremental_book_L2_BTC-PERPETUAL.csv", "tardis-l2", "0.5", "10", 1),
    ("usdjpy-ticks.csv", "truefx", "0.001", "1", 1000),
])
def test_l2_and_fx_files_run_without_config(tmp_path, name, fmt, tick, lot, events):
    rc, _, err = _run_main(None, shared_file(name), tmp_path, False)
    assert rc == 0, err
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["data"][0]["format"] == fmt
    assert m["instruments"][0]["tick_size"] == tick and m["instruments"][0]["lot_size"] == lot
    assert m["events"] == events


def test_every_quote_is_exactly_the_top_of_book_after_its_event():
    d = load_tick_data(shared_file(QUOTES))
    seen = []

    class Host:
        running = True
    book = L2Book("BTCUSDT")
    r = Replay([book])
    r.set_strategy(Host(), on_quote=lambda q: seen.append((q.bid, q.bid_size, q.ask, q.ask_size)),
                   quote_type=Quote)
    r.run(d.events)
    rows = list(csv.DictReader(open(shared_file(QUOTES))))
    want = [(int(Decimal(x["bid_price"]) / Decimal("0.01")), int(Decimal(x["bid_amount"]) / Decimal("0.001")),
             int(Decimal(x["ask_price"]) / Decimal("0.01")), int(Decimal(x["ask_amount"]) / Decimal("0.001")))
            for x in rows]
    assert seen == want                       # one quote callback per quote, the quote exactly
    assert book.count(0) == 1 and book.count(1) == 1   # no stale level left behind


def test_quote_with_an_empty_side(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text("exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
                 "x,ABC,1000,1000,2,10.5,10.4,3\n"
                 "x,ABC,2000,2000,2,10.6,,\n"
                 "x,ABC,3000,3000,1,10.6,10.3,1\n")
    d = load_tick_data(p)
    assert (d.symbol, d.tick_size, d.lot_size) == ("ABC", Decimal("0.1"), Decimal("1"))
    book = L2Book("ABC")
    tops = []

    class Host:
        running = True
    r = Replay([book])
    r.set_strategy(Host(), on_quote=lambda q: tops.append((q.bid, q.ask, q.ts_ns)), quote_type=Quote)
    r.run(d.events)
    assert tops == [(104, 105, 1_000_000), (None, 106, 2_000_000), (103, 106, 3_000_000)]
    assert book.count(0) == 1 and book.count(1) == 1


def test_l2_snapshot_is_applied_exactly():
    d = load_tick_data(shared_file("deribit_incremental_book_L2_BTC-PERPETUAL.csv"))
    book = L2Book("X")
    replay = Replay([book])
    replay.run(d.events)
    rows = list(csv.DictReader(open(shared_file("deribit_incremental_book_L2_BTC-PERPETUAL.csv"))))
    asks = sorted(Decimal(r["price"]) for r in rows if r["side"] == "ask" and Decimal(r["amount"]) > 0)
    assert book.best_ask == int(asks[0] / Decimal("0.5"))
    assert book.count(1) == len(asks) and book.best_bid is None


def test_l3_feed_run_mirrors_the_matching_book():
    cfg, datas = bt.load_inputs(None, shared_file("L3_feed.json"))
    d = datas[0]
    assert d.format == "bitfinex-l3" and d.symbol == "tBTCUSD" and d.line_label == "frame"
    r = bt.run_backtest(cfg, datas)
    assert r.events == d.n_events > 90_000
    assert r.counters["l3_rejects"] == 0 and r.counters["top_changes"] > 1000
    # the L2 book the strategy and the fill model read equals the feed's top: check the
    # final top against an independent aggregation of the L3 rows
    live: dict[int, tuple[int, int, int]] = {}
    for row in d.events.tolist():
        _, price, qty, oid, _, kind, side, _, _ = row
        if kind == 3:
            live[oid] = (side, price, qty)
        elif kind == 4:
            live.pop(oid, None)
        elif kind == 5:
            live[oid] = (live[oid][0], price, qty)
    bids = [p for s, p, _ in live.values() if s == 0]
    asks = [p for s, p, _ in live.values() if s == 1]
    book = r.stack.books["tBTCUSD"]
    assert book.best_bid == max(bids) and book.best_ask == min(asks)


# --------------------------------------------------------------------------- the same engine path

def _py_and_compiled(cfg, datas, **kw):
    a = bt.run_backtest(cfg, datas, **kw)
    b = bt.run_backtest(cfg, datas, guards=False, **kw)
    c = bt.replay_python(cfg, datas, **kw)
    return a, b, c


@pytest.mark.parametrize("name", [QUOTES, TRADES, "usdjpy-ticks.csv"])
def test_compiled_replay_equals_the_python_per_event_path(name):
    """The compiled loop (with and without its skip guards) and the Python per-event
    driver through StrategyHost.book_changed & co give the same fills and equity."""
    cfg, datas = bt.load_inputs(None, shared_file(name))
    a, b, c = _py_and_compiled(cfg, datas)
    assert len(a.fills) > 0
    assert a.digest == b.digest == c.digest
    assert a.fills == c.fills
    assert np.array_equal(a.equity, c.equity) and np.array_equal(a.equity_ts_ns, c.equity_ts_ns)


def test_compiled_equals_python_with_the_sample_config_market_maker():
    """A quoting strategy (resting orders, replaces, passive fills via the execution's
    on_book) through the packaged sample config."""
    cfg, datas = bt.load_inputs(REPO_ROOT / "engine" / "sample_config.toml", shared_file(QUOTES))
    assert type(cfg.strategy.create()).__name__ == "MarketMaker"
    rows = datas[0].events
    cut = int(np.flatnonzero(rows["flags"] & REPLAY_FLAG_END)[2999]) + 1
    short = [replace(datas[0], events=rows[:cut], lines=datas[0].lines[:cut])]
    a, b, c = _py_and_compiled(cfg, short)
    assert len(a.fills) > 5 and any(f.liquidity == "M" for f in a.fills)
    assert a.digest == b.digest == c.digest


def test_l3_slice_compiled_equals_python(tmp_path):
    frames = json.loads(shared_file("L3_feed.json").read_text())[:6000]
    p = tmp_path / "l3.json"
    p.write_text(json.dumps(frames))
    cfg, datas = bt.load_inputs(None, p)
    a, b, c = _py_and_compiled(cfg, datas)
    assert a.events == c.events == datas[0].n_events
    assert a.digest == b.digest == c.digest


def test_same_strategy_type_as_the_paper_path(quotes_inputs):
    """The backtest runs the configured Strategy subclass itself, inside the engine's
    StrategyHost / StrategyContext / OrderManager / SimExecution: no backtest-only
    strategy code exists."""
    cfg, datas = quotes_inputs
    r = bt.run_backtest(cfg, datas)
    s = r.stack
    assert type(s.strategy) is cfg.strategy.cls is MovingAverageCrossover
    assert isinstance(s.host, StrategyHost) and s.host.strategy is s.strategy
    assert isinstance(s.strategy.ctx, StrategyContext) and s.strategy.ctx._om is s.om
    assert s.om.client is s.sim and s.om.kernel is s.kernel
    assert isinstance(s.core, TradingCore) and s.core.client is s.sim   # engine.assembly's core
    assert s.strategy.orders_sent == s.om.stats["submitted"] > 0
    # no Strategy subclass, no strategy logic, in the backtest modules
    import engine.tickdata as td
    for mod in (bt, td):
        assert not [c for _, c in inspect.getmembers(mod, inspect.isclass)
                    if issubclass(c, Strategy) and c is not Strategy]
    # a strategy instance handed in is the one that runs (the paper path takes instances too)
    mine = MovingAverageCrossover(dict(cfg.strategy.params))
    r2 = bt.run_backtest(cfg, datas, strategy=mine)
    assert r2.stack.strategy is mine and r2.digest == r.digest


# --------------------------------------------------------------------------- reproducibility and metrics

def test_two_runs_give_byte_identical_outputs(tmp_path):
    for k in (1, 2):
        rc, _, err = _run_main(None, shared_file(TRADES), tmp_path / f"run{k}", False)
        assert rc == 0, err
    for name in bt.OUTPUT_FILES:
        a = (tmp_path / "run1" / name).read_bytes()
        b = (tmp_path / "run2" / name).read_bytes()
        assert a == b, name
    m = json.loads((tmp_path / "run1" / "metrics.json").read_text())
    assert len(m["digest"]) == 64


def _fills_from_csv(path: Path, instruments) -> list[Fill]:
    out = []
    for row in csv.DictReader(open(path)):
        sym = row["symbol"]
        out.append(Fill(int(row["cl_ord_id"]), row["exec_id"], sym, instruments[sym].inst_id,
                        Side.BUY if row["side"] == "buy" else Side.SELL, int(row["qty_lots"]),
                        int(row["price_ticks"]), int(row["ts_ns"]), int(row["leaves_qty"]),
                        float(row["commission"]) if row["commission"] else None, row["liquidity"]))
    return out


def test_metrics_recomputed_from_the_output_files_match(tmp_path):
    rc, _, err = _run_main(None, shared_file(TRADES), tmp_path, False)
    assert rc == 0, err
    m = metrics_from_json(json.loads((tmp_path / "metrics.json").read_text()))
    rows = list(csv.DictReader(open(tmp_path / "equity.csv")))
    ts = np.array([int(r["timestamp_ns"]) for r in rows], dtype=np.int64)
    eq = np.array([float(r["equity"]) for r in rows])
    cfg, _ = bt.load_inputs(None, shared_file(TRADES))
    insts = cfg.instruments_by_symbol
    fills = _fills_from_csv(tmp_path / "fills.csv", insts)
    assert len(fills) == m["n_fills"] > 0
    pnls = bt.round_trip_pnls(fills, insts)
    notional = float(sum(Decimal(r["qty"]) * Decimal(r["price"])
                         for r in csv.DictReader(open(tmp_path / "fills.csv"))))
    again = compute_metrics(ts, eq, pnls, notional, sampling_interval=m["sampling_interval_s"],
                            annualisation_factor=m["annualisation_factor"])
    for key in ("sharpe", "sortino", "max_drawdown", "total_return", "profit_factor", "win_rate",
                "n_trades", "turnover", "annualisation_factor", "sampling_interval_s"):
        a, b = again[key], m[key]
        assert a == pytest.approx(b, rel=1e-12, abs=0) or (a != a and b != b), key
    assert digest(fills, (ts, eq)) == m["digest"]


def test_round_trips_follow_the_position():
    insts = load_config(REPO_ROOT / "engine" / "sample_config.toml").instruments_by_symbol
    i = insts["BTCUSDT"]

    def f(side, qty, px, fee=0.0):
        return Fill(1, "x", "BTCUSDT", i.inst_id, side, qty, px, 0, 0, fee)
    fills = [f(Side.BUY, 2, 100, 0.1), f(Side.SELL, 1, 110), f(Side.SELL, 3, 120, 0.2),   # close + flip
             f(Side.BUY, 2, 100)]                                                         # close short
    pnls = bt.round_trip_pnls(fills, insts)
    unit = float(i.money_per_tick_lot)
    assert pnls.tolist() == pytest.approx([(10 + 20) * unit - 0.3, (120 - 100) * 2 * unit])


# --------------------------------------------------------------------------- bad input

def test_bad_value_exits_2_naming_file_line_and_field(tmp_path):
    lines = shared_file(QUOTES).read_text().splitlines()[:30]
    parts = lines[7].split(",")
    parts[5] = "9x81"
    lines[7] = ",".join(parts)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    rc, out, err = _run_main(None, bad, tmp_path / "o", False)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1
    assert str(bad) in err and "line 8" in err and "ask_price" in err and "'9x81'" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("mutate, expect", [
    (lambda ls: ls.__setitem__(12, ls[12].replace(",15823296038", ",15823296000", 1)), "line 13 timestamp"),
    (lambda ls: ls.__setitem__(0, "a,b,c"), "line 1: unknown data format"),
    (lambda ls: ls.__setitem__(4, ",".join(ls[4].split(",")[:-1] + ["-1"])), "line 5 bid_amount"),
    (lambda ls: ls.__setitem__(3, ls[3].replace("9681.44", "9681.445")), "line 4 bid_price: 9681.445 is not a whole multiple of 0.01"),
])
def test_bad_rows_are_named(tmp_path, mutate, expect):
    lines = shared_file(QUOTES).read_text().splitlines()[:30]
    mutate(lines)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    cfg = REPO_ROOT / "engine" / "sample_config.toml"
    rc, _, err = _run_main(cfg, bad, None, False)
    assert rc == 2 and expect in err, err


def test_bad_config_and_missing_file_exit_2(tmp_path):
    rc, _, err = _run_main(None, tmp_path / "nope.csv", None, False)
    assert rc == 2 and "no such file" in err
    cfg = tmp_path / "c.toml"
    cfg.write_text("stage = 'backtest'\n")
    rc, _, err = _run_main(cfg, shared_file(QUOTES), None, False)
    assert rc == 2 and str(cfg) in err


def test_bad_parquet_row_is_named(tmp_path):
    d = load_tick_data(shared_file("usdjpy-ticks.csv"))
    ev = d.events.copy()
    ev["side"][17] = 7
    path = write_parquet(replace(d, events=ev), tmp_path / "t.parquet")
    rc, _, err = _run_main(None, path, None, False)
    assert rc == 2 and "row 17 side" in err, err


# --------------------------------------------------------------------------- Parquet

def test_parquet_round_trip_replays_identically(tmp_path):
    d = load_tick_data(shared_file(QUOTES))
    path = write_parquet(d, tmp_path / "q.parquet")
    assert detect_format(path) == "engine-parquet"
    back = load_tick_data(path)
    assert np.array_equal(back.events, d.events)
    assert (back.symbol, back.tick_size, back.lot_size, back.book) == (d.symbol, d.tick_size,
                                                                       d.lot_size, d.book)
    cfg, _ = bt.load_inputs(None, shared_file(QUOTES))
    assert bt.run_backtest(cfg, back).digest == bt.run_backtest(cfg, d).digest
    # converter command, and a config with a finer tick rescales exactly
    out = io.StringIO()
    assert bt.convert_main(shared_file(TRADES), tmp_path / "t.parquet", stdout=out) == 0
    assert "9,999 events" in out.getvalue()
    finer = replace(d, tick_size=Decimal("0.01"))
    fine = load_tick_data(write_parquet(finer, tmp_path / "f.parquet"), tick_size="0.001")
    assert np.array_equal(fine.events["price"], d.events["price"] * 10)
    with pytest.raises(DataError, match="not a whole multiple of 1"):
        load_tick_data(tmp_path / "f.parquet", tick_size="1")


def test_parquet_without_metadata_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), p)
    with pytest.raises(DataError, match="not an engine tick file"):
        load_tick_data(p)


# --------------------------------------------------------------------------- the compiled loop itself

def _rows(spec):
    out = np.zeros(len(spec), dtype=REPLAY_DTYPE)
    for k, (ts, kind, side, price, qty, end) in enumerate(spec):
        out[k] = (ts, price, qty, 0, 0, kind, side, REPLAY_FLAG_END if end else 0, 0)
    return out


def test_replay_validates_before_applying():
    book = L2Book("X")
    r = Replay([book])
    good = (1, REPLAY_BOOK_SET, 0, 100, 5, True)
    for spec, msg in [
        ([good, (0, REPLAY_BOOK_SET, 1, 101, 5, True)], "row 1: ts_ns 0 goes back"),
        ([good, (2, 9, 0, 1, 1, True)], "row 1: kind 9"),
        ([good, (2, REPLAY_BOOK_SET, 1, 101, 5, False)], "no END"),
        ([good, (2, REPLAY_TRADE, 0, 101, 0, True)], "row 1: qty 0 of a trade"),
        ([good, (2, 3, 0, 101, 1, True)], "no matching book"),
        ([(1, REPLAY_BOOK_SET, 0, 100, 5, False), (2, REPLAY_BOOK_SET, 1, 101, 5, True)],
         "share ts_ns"),
    ]:
        with pytest.raises(ReplayError, match=msg):
            r.run(_rows(spec))
        assert len(book) == 0 and r.events == 0
    with pytest.raises(ReplayError, match="dtype"):
        r.run(np.zeros(3, dtype=np.int64))


def test_replay_dispatch_and_timer():
    book = L2Book("X")
    clock = ReplayClock()
    seen = []

    class Host:
        running = True
    r = Replay([book], clock=clock)
    r.set_strategy(Host(), on_quote=lambda q: seen.append(("q", q, clock())),
                   on_trade=lambda t: seen.append(("t", t)), on_book=lambda s: seen.append(("b", s)),
                   quote_type=Quote, trade_type=Trade, side_values=(Side.BUY, Side.SELL))
    ticks = []
    r.set_timer(10, lambda now: ticks.append((now, clock())))
    r.run(_rows([(5, REPLAY_BOOK_SET, 0, 100, 5, False), (5, REPLAY_BOOK_SET, 1, 102, 7, True),
                 (7, REPLAY_BOOK_SET, 0, 99, 1, True),           # depth only: on_book, no quote
                 (31, REPLAY_TRADE, 1, 100, 3, True),             # trade; timers 10..30 coalesced
                 (32, REPLAY_BOOK_SET, 0, 100, 0, True)]))        # top change
    assert seen[0] == ("q", Quote("X", 100, 5, 102, 7, 5), 5) and seen[1] == ("b", "X")
    assert seen[2] == ("b", "X")
    assert seen[3] == ("t", Trade("X", 100, 3, Side.SELL, 31))
    assert seen[4][0] == "q" and seen[4][1] == Quote("X", 99, 1, 102, 7, 32) and seen[5] == ("b", "X")
    assert len(seen) == 6
    assert ticks == [(30, 30)]                     # one tick at the last boundary <= 31
    assert r.events == 4 and r.top_changes == 2 and r.quote_calls == 2 and r.trade_calls == 1


def test_record_maker_builds_equal_frozen_records():
    @dataclasses.dataclass(frozen=True, slots=True)
    class FrozenQuote:
        symbol: str
        bid: int | None
        bid_size: int
        ask: int | None
        ask_size: int
        ts_ns: int
    fields = ("symbol", "bid", "bid_size", "ask", "ask_size", "ts_ns")
    m = RecordMaker(FrozenQuote, fields)
    assert m.fast
    q = m("BTC", 1, 2, None, 0, 5)
    assert q == FrozenQuote("BTC", 1, 2, None, 0, 5) and hash(q) == hash(FrozenQuote("BTC", 1, 2, None, 0, 5))
    with pytest.raises(AttributeError):               # FrozenInstanceError: still frozen
        q.bid = 3

    # the engine's Quote is a compiled record (core_ext.records): simply called
    c = RecordMaker(Quote, fields)
    assert not c.fast
    q = c("BTC", 1, 2, None, 0, 5)
    assert q == Quote("BTC", 1, 2, None, 0, 5) and hash(q) == hash(Quote("BTC", 1, 2, None, 0, 5))
    with pytest.raises(AttributeError):
        q.bid = 3

    class Plain:                                   # not a slots dataclass: called normally
        def __init__(self, a, b):
            self.a, self.b = a, b
    p = RecordMaker(Plain, ("a", "b"))
    assert not p.fast and vars(p(1, 2)) == {"a": 1, "b": 2}


def test_strategy_error_stops_the_strategy_and_the_run_completes(quotes_inputs):
    cfg, datas = quotes_inputs

    class Boom(MovingAverageCrossover):
        def on_quote(self, quote):
            if quote.ts_ns > datas[0].events["ts_ns"][5000]:
                raise RuntimeError("boom")
            super().on_quote(quote)
    params = dict(cfg.strategy.params)
    a = bt.run_backtest(cfg, datas, strategy=Boom(params))
    c = bt.replay_python(cfg, datas, strategy=Boom(params))
    assert a.stack.host.errors == 1 and "boom" in a.stack.host.stop_reason
    assert a.counters["strategy_errors"] == 1 and a.events == 9999
    assert a.digest == c.digest


def test_timer_callbacks_reach_the_strategy(quotes_inputs):
    cfg, datas = quotes_inputs

    class Ticker(Strategy):
        timer_interval_ns = 5_000_000_000

        def __init__(self, params=None):
            super().__init__(params)
            self.ticks = []

        def on_timer(self, now_ns):
            self.ticks.append(now_ns)
    s = Ticker()
    bt.run_backtest(cfg, datas, strategy=s)
    assert len(s.ticks) >= 40
    assert all(b - a >= 5_000_000_000 for a, b in zip(s.ticks, s.ticks[1:], strict=False))


def test_data_in_other_units_is_rescaled_to_the_instrument(quotes_inputs):
    cfg, datas = quotes_inputs
    fine = load_tick_data(shared_file(QUOTES), tick_size="0.001", lot_size="0.0001")
    assert np.array_equal(fine.events["price"], datas[0].events["price"] * 10)
    assert bt.run_backtest(cfg, fine).digest == bt.run_backtest(cfg, datas).digest
    coarse = replace(datas[0], tick_size=Decimal("0.001"))       # 0.001 ticks are not 0.01 ticks
    with pytest.raises(DataError, match="row 0 price"):
        bt.run_backtest(cfg, coarse)


def test_a_drawdown_trips_the_kill_switch_and_stops_the_strategy(tmp_path):
    """The risk policy is live in the backtest: a tiny drawdown limit trips the
    (in-memory) kill switch, which stops the strategy; no state file is written."""
    cfg, datas = bt.load_inputs(None, shared_file(TRADES))
    tight = replace(cfg, risk=replace(cfg.risk, max_drawdown_pct=0.0001))
    r = bt.run_backtest(tight, datas)
    assert r.stack.killswitch.tripped and "drawdown" in r.stack.killswitch.reason
    assert not r.stack.host.running and r.stack.killswitch.state_file is None
    full = bt.run_backtest(cfg, datas)
    assert 0 < len(r.fills) < len(full.fills)
    m = bt.metrics_document(r)
    assert m["kill_switch_tripped"] is True and any("drawdown" in b for b in m["risk_breaches"])


def test_quotes_and_trades_merge_in_time(quotes_inputs):
    cfg, datas = bt.load_inputs(None, [shared_file(QUOTES), shared_file(TRADES)])
    assert [d.format for d in datas] == ["tardis-quotes", "tardis-trades"]
    assert datas[1].book == "none" and np.all(datas[1].events["kind"] == REPLAY_TRADE)   # quotes give the book
    assert len(cfg.instruments) == 1
    a = bt.run_backtest(cfg, datas)
    c = bt.replay_python(cfg, datas)
    assert a.events == 9999 + 9999 and a.digest == c.digest


# --------------------------------------------------------------------------- helpers and progress

def test_unit_derivation_and_iso_times():
    assert decimal_gcd([Decimal("9682"), Decimal("9681.92"), Decimal("9681.83")]) == Decimal("0.01")
    assert decimal_gcd([Decimal("6421.5"), Decimal("6422")]) == Decimal("0.5")
    assert decimal_gcd([Decimal(0)]) is None
    assert parse_iso_ns("2013-01-01 22:00:00.295000+00:00") == 1357077600295000000
    assert parse_iso_ns("1970-01-01T00:00:01.000000001Z") == 1_000_000_001
    assert parse_iso_ns("1970-01-01T01:00:00+01:00") == 0
    with pytest.raises(ValueError):
        parse_iso_ns("2013-13-01 00:00:00")


def test_progress_only_on_request(tmp_path):
    rc, _, err = _run_main(None, shared_file("usdjpy-ticks.csv"), None, None)   # not a terminal
    assert rc == 0 and err == ""
    rc, _, _ = _run_main(None, shared_file("usdjpy-ticks.csv"), None, True)
    assert rc == 0
    # the bar writes to the real stderr; exercise the fallback writer directly
    p = bt._Progress(100, "t")
    p(100)
    p.close()
