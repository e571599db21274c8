"""Portfolio P&L (against a brute-force recomputation), marks, exposure, equity curve,
and reconciliation with a venue statement."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import DataError
from engine.fill_model import CommissionModel
from engine.orders import Fill, OrdStatus, Side, format_cl_ord_id
from engine.portfolio import Portfolio, apply_reconciliation, load_statement, reconcile
from tests.engine_helpers import XYZ_PRICE, make_config, make_om

CFG = make_config()
INSTS = CFG.instruments_by_symbol
MONEY_XYZ = float(INSTS["XYZ"].money_per_tick_lot)     # 0.01
MONEY_BTC = float(INSTS["BTC"].money_per_tick_lot)     # 0.00001


def fill(symbol, side, qty, price, *, exec_id="", cl=1, commission=None, liquidity="T"):
    inst = INSTS[symbol]
    return Fill(cl, exec_id, symbol, inst.inst_id, Side.parse(side), qty, price, 0, 0, commission, liquidity)


def brute_force(fills, mark):
    """Average-cost P&L recomputed from scratch: walk the fills keeping the lot-level
    average; realised = sum over reducing fills of closed * (price - avg)."""
    pos, avg, realized = 0, Fraction(0), Fraction(0)
    cash = 0
    for side, qty, px in fills:
        s = qty if side == "buy" else -qty
        cash -= s * px
        if pos == 0 or (pos > 0) == (s > 0):
            avg = (avg * abs(pos) + px * abs(s)) / (abs(pos) + abs(s))
            pos += s
            continue
        closed = min(abs(s), abs(pos))
        realized += closed * (px - avg) * (1 if pos > 0 else -1)
        left = abs(s) - closed
        pos += closed if s > 0 else -closed
        if left:
            pos = left if s > 0 else -left
            avg = Fraction(px)
        elif pos == 0:
            avg = Fraction(0)
    unrealized = pos * (Fraction(mark) - avg) if pos else Fraction(0)
    return pos, realized, unrealized, cash


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 500),
                          st.integers(9_000, 11_000)), min_size=1, max_size=60),
       st.integers(9_000, 11_000))
def test_pnl_matches_brute_force(fills, mark):
    pf = Portfolio(INSTS)
    for side, qty, px in fills:
        pf.on_fill(fill("XYZ", side, qty, px))
    pf.on_quote("XYZ", mark, mark)   # mid == mark
    pos, realized, unrealized, cash = brute_force(fills, mark)
    p = pf.position_record("XYZ")
    assert p.qty == pos
    assert p.realized == realized
    assert p.unrealized("mid") == unrealized
    # realised + unrealised == cash flow + position at the mark, whatever the cost method
    assert realized + unrealized == cash + pos * mark
    assert pf.realized_pnl("XYZ") == pytest.approx(float(realized) * MONEY_XYZ)
    assert pf.unrealized_pnl() == pytest.approx(float(unrealized) * MONEY_XYZ)
    if pos:
        assert pf.avg_price("XYZ") == pytest.approx(float(p.cost / pos))


def test_average_price_flip_and_commissions():
    pf = Portfolio(INSTS, commission_model=CommissionModel(taker_bps=10.0), initial_capital=1000)
    pf.on_fill(fill("XYZ", "buy", 100, 10_000))
    pf.on_fill(fill("XYZ", "buy", 100, 10_200))
    assert pf.position("XYZ") == 200 and pf.avg_price("XYZ") == 10_100
    pf.on_fill(fill("XYZ", "sell", 250, 10_300, commission=1.5))   # closes 200, opens -50
    p = pf.position_record("XYZ")
    assert p.qty == -50 and p.avg_price == 10_300
    assert pf.realized_pnl("XYZ") == pytest.approx(200 * 200 * MONEY_XYZ)        # 400.00
    # commission: model for the first two (10 bps of notional), reported for the third
    expected_fees = (100 * 100.0 + 100 * 102.0) * 10 / 1e4 + 1.5
    assert pf.commissions() == pytest.approx(expected_fees)
    pf.on_quote("XYZ", 10_290, 10_310)
    assert pf.unrealized_pnl() == pytest.approx(0.0)
    assert pf.equity() == pytest.approx(1000 + 400 - expected_fees)
    snap = pf.snapshot()
    assert snap.total == pytest.approx(400 - expected_fees) and snap.unmarked == ()
    assert pf.exposure("XYZ") == pytest.approx(50 * 10_300 * MONEY_XYZ)
    assert pf.net_exposure() == pytest.approx(-50 * 103.0)


def test_mark_modes_and_unmarked_positions():
    for mode, want in (("mid", 10_005), ("last", 10_020), ("bid_ask", 10_000)):
        pf = Portfolio(INSTS, mark=mode)
        pf.on_fill(fill("XYZ", "buy", 10, 9_900))
        assert pf.unmarked() == ("XYZ",) and pf.unrealized_pnl() == 0.0
        pf.on_quote("XYZ", 10_000, 10_010)
        pf.on_trade("XYZ", 10_020)
        assert pf.mark_price("XYZ") == want
        assert pf.unrealized_pnl() == pytest.approx(10 * (want - 9_900) * MONEY_XYZ)
    pf = Portfolio(INSTS, mark="bid_ask")
    pf.on_fill(fill("BTC", "sell", 1000, 2_000_000))
    pf.on_quote("BTC", 1_999_000, 2_001_000)
    assert pf.mark_price("BTC") == 2_001_000        # a short is valued at the ask
    with pytest.raises(ValueError):
        Portfolio(INSTS, mark="vwap")
    with pytest.raises(KeyError):
        pf.position("NOPE")


def test_equity_curve_sampling():
    pf = Portfolio(INSTS, initial_capital=100)
    pf.sample(1)
    pf.on_fill(fill("BTC", "buy", 1000, 2_000_000))     # 1 BTC at 20000
    pf.on_quote("BTC", 2_010_000, 2_010_000)
    pf.sample(2)
    ts, eq = pf.equity_curve()
    assert ts.tolist() == [1, 2]
    assert eq.tolist() == pytest.approx([100.0, 100.0 + 100.0])   # +100.00 on 1 BTC
    assert pf.gross_exposure() == pytest.approx(20_100.0)


def test_set_position_start_of_day():
    pf = Portfolio(INSTS)
    pf.set_position("XYZ", 300, 9_950)
    pf.on_fill(fill("XYZ", "sell", 100, 10_050))
    assert pf.realized_pnl() == pytest.approx(100 * 100 * MONEY_XYZ)
    with pytest.raises(ValueError):
        pf.set_position("XYZ", 5)


# ----------------------------------------------------------------------------- reconciliation

def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _engine_state():
    om, kernel, client, clock = make_om()
    pf = Portfolio(INSTS)
    om.add_listener(on_fill=pf.on_fill)
    a = om.submit("XYZ", "buy", 100, XYZ_PRICE)
    client.ack(a)
    client.fill(a, 100, XYZ_PRICE, exec_id="X1")
    b = om.submit("BTC", "sell", 250, 2_000_000)
    client.ack(b)
    client.fill(b, 250, 2_000_000, exec_id="X2")
    c = om.submit("XYZ", "buy", 10, XYZ_PRICE - 10)
    client.ack(c)
    return om, pf, a, b, c


def test_reconcile_clean_statement_unblocks(tmp_path):
    om, pf, a, b, c = _engine_state()
    pos = _write(tmp_path, "pos.csv", "account,symbol,position\nT1,XYZ,100\nT1,BTC,-0.250\nOTHER,XYZ,5\n")
    fills = _write(tmp_path, "fills.csv",
                   "account,symbol,exec_id,cl_ord_id,side,qty,price\n"
                   f"T1,XYZ,X1,{format_cl_ord_id(a)},buy,100,100.00\n"
                   f"T1,BTC,X2,{format_cl_ord_id(b)},sell,0.250,20000\n")
    orders = _write(tmp_path, "orders.csv", "account,symbol,cl_ord_id,side,leaves_qty,price\n"
                                            f"T1,XYZ,{format_cl_ord_id(c)},buy,10,99.90\n")
    stmt = load_statement(pos, INSTS, fills_csv=fills, open_orders_csv=orders)
    om.block("reconciliation", "from a previous run")
    mism = reconcile(stmt, pf, "T1", om)
    assert mism == []
    assert apply_reconciliation(mism, om) and not om.blocked


def test_reconcile_reports_each_mismatch_and_blocks(tmp_path):
    om, pf, a, b, c = _engine_state()
    pos = _write(tmp_path, "pos.csv", "account,symbol,position\nT1,XYZ,90\n")        # BTC missing too
    fills = _write(tmp_path, "fills.csv",
                   "account,symbol,exec_id,cl_ord_id,side,qty,price\n"
                   f"T1,XYZ,X1,{format_cl_ord_id(a)},buy,90,100.00\n"                  # qty differs
                   f"T1,XYZ,X9,{format_cl_ord_id(a)},buy,5,100.00\n")                 # not ours
    orders = _write(tmp_path, "orders.csv", "account,symbol,cl_ord_id,side,leaves_qty,price\n"
                                            "T1,XYZ,ZZZZ,sell,1,101.00\n")
    stmt = load_statement(pos, INSTS, fills_csv=fills, open_orders_csv=orders)
    mism = reconcile(stmt, pf, "T1", om, source="pos.csv")
    kinds = sorted(m.kind for m in mism)
    assert kinds == sorted(["position", "position", "fill_differs", "fill_missing_here",
                            "fill_missing_at_venue", "order_missing_at_venue", "order_missing_here"])
    xyz = next(m for m in mism if m.kind == "position" and m.symbol == "XYZ")
    assert (xyz.ours, xyz.theirs, xyz.where) == ("100", "90", "pos.csv:2")
    assert "fill_differs" in str(next(m for m in mism if m.kind == "fill_differs"))
    assert not apply_reconciliation(mism, om)
    assert om.blocked and "reconciliation" in om.block_reasons
    cl = om.submit("XYZ", "buy", 1, XYZ_PRICE)
    assert om.order(cl).state is OrdStatus.REJECTED and om.order(cl).reject_reason == "TRADING_BLOCKED"


def test_reconcile_matches_inferred_fill_by_content(tmp_path):
    om, pf, a, b, c = _engine_state()
    pf.fills[0] = Fill(a, "status:1", "XYZ", 0, Side.BUY, 100, XYZ_PRICE, 0, 0, None, "", True)
    pos = _write(tmp_path, "pos.csv", "account,symbol,position\nT1,XYZ,100\nT1,BTC,-0.25\n")
    fills = _write(tmp_path, "fills.csv",
                   "account,symbol,exec_id,cl_ord_id,side,qty,price\n"
                   f"T1,XYZ,X1,{format_cl_ord_id(a)},buy,100,100\n"
                   f"T1,BTC,X2,{format_cl_ord_id(b)},sell,0.25,20000.00\n")
    assert reconcile(load_statement(pos, INSTS, fills_csv=fills), pf, "T1") == []


@pytest.mark.parametrize("text, where", [
    ("account,symbol\nT1,XYZ\n", "header lacks column(s) position"),
    ("account,symbol,position\nT1,NOPE,1\n", "pos.csv:2 symbol: unknown symbol 'NOPE'"),
    ("account,symbol,position\nT1,XYZ,1.5\n", "pos.csv:2 position"),
    ("account,symbol,position\nT1,BTC,0.0005\n", "not a whole multiple of 0.001"),
    ("account,symbol,position\nT1,XYZ,abc\n", "pos.csv:2 position"),
    ("account,symbol,position\nT1,XYZ,nan\n", "not a finite number"),
    ("account,symbol,position\nT1,XYZ,1\nT1,XYZ,2\n", "pos.csv:3: second line"),
])
def test_statement_errors_name_file_line_and_column(tmp_path, text, where):
    with pytest.raises(DataError, match="pos.csv") as exc:
        load_statement(_write(tmp_path, "pos.csv", text), INSTS)
    assert where in str(exc.value)


def test_statement_fill_errors(tmp_path):
    pos = _write(tmp_path, "pos.csv", "account,symbol,position\n")
    bad = _write(tmp_path, "fills.csv", "account,symbol,exec_id,cl_ord_id,side,qty,price\n"
                                        "T1,XYZ,X1,AB,hold,1,100\n")
    with pytest.raises(DataError, match="fills.csv:2 side"):
        load_statement(pos, INSTS, fills_csv=bad)
    bad.write_text("account,symbol,exec_id,cl_ord_id,side,qty,price\nT1,XYZ,X1,AB,buy,1,100.001\n")
    with pytest.raises(DataError, match="fills.csv:2 price"):
        load_statement(pos, INSTS, fills_csv=bad)
    bad.write_text("account,symbol,exec_id,cl_ord_id,side,qty,price\nT1,XYZ,X1,a-b,buy,1,100\n")
    with pytest.raises(DataError, match="cl_ord_id"):
        load_statement(pos, INSTS, fills_csv=bad)
    with pytest.raises(DataError, match="cannot read"):
        load_statement(tmp_path / "missing.csv", INSTS)
