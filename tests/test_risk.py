"""Tests of the pre-trade risk kernel (core_ext/risk.pyx).

Every scenario test runs on both the compiled kernel and the pure-Python reference
(tests/reference/risk_ref.py), and a hypothesis differential test drives both through
random sequences and compares every code and the state after every step.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext import risk
from tests.reference import risk_ref

INT64_MAX = 2**63 - 1
NO_PRICE = risk.NO_PRICE
BUY, SELL = risk.SIDE_BUY, risk.SIDE_SELL
R = risk_ref  # the codes, by name, from the reference (checked equal to the kernel's below)

IMPLS = {"kernel": risk.RiskKernel, "reference": risk_ref.RiskReference}

# Default configuration of the scenario tests.
INST, INST2 = 1, 2          # two registered instruments
MULT, MULT2 = 10, 1
REF, REF2 = 10_000, 500     # reference prices (ticks)
NOW = 1_000                 # "now" for the checks (ns); references are stamped at 0
INST_LIMITS = dict(
    max_order_qty=100,
    max_order_notional=100 * REF * MULT,  # qty 100 at REF is exactly at the limit
    price_band_bps=100,                   # +-1 % around the reference
    max_position=500,
    max_open_orders=5,
    max_ref_age_ns=1_000_000,
)
ACCOUNT_LIMITS = dict(
    max_gross_exposure=10**12,
    max_concentration_bps=10_000,
    concentration_floor=0,
    max_orders_per_window=1_000,
    window_ns=1_000_000_000,
)


@pytest.fixture(params=sorted(IMPLS))
def impl(request):
    return IMPLS[request.param]


def make(impl, *, inst_limits=None, account=None, dup_window=64, max_instruments=8):
    k = impl(max_instruments=max_instruments, dup_window=dup_window)
    k.add_instrument(INST, MULT)
    k.add_instrument(INST2, MULT2)
    k.set_instrument_limits(INST, **{**INST_LIMITS, **(inst_limits or {})})
    k.set_instrument_limits(INST2, **{**INST_LIMITS, **(inst_limits or {})})
    k.set_account_limits(**{**ACCOUNT_LIMITS, **(account or {})})
    k.set_reference_price(INST, REF, 0)
    k.set_reference_price(INST2, REF2, 0)
    return k


_ids = itertools.count(1)


def nid():
    return next(_ids)


def chk(k, side=BUY, qty=1, price=REF, *, inst=INST, cl=None, now=NOW):
    return k.check(inst, side, qty, price, nid() if cl is None else cl, now)


# ----------------------------------------------------------------------------- API


def test_codes_match_reference_and_order():
    assert risk.REJECT_REASONS == risk_ref.REJECT_REASONS
    assert risk.RISK_CODE_COUNT == len(risk.REJECT_REASONS) == 19
    assert risk.RISK_OK == 0
    for code, name in risk.REJECT_REASONS.items():
        assert getattr(risk, name) == code
    # the precedence the issue prescribes, as increasing codes
    order = ["KILL_SWITCH", "HALTED", "REDUCE_ONLY", "UNKNOWN_INSTRUMENT", "NO_LIMITS",
             "NO_REFERENCE", "STALE_REFERENCE", "BOOK_STALE", "MAX_ORDER_QTY",
             "MAX_ORDER_NOTIONAL", "PRICE_BAND", "MAX_POSITION", "MAX_GROSS_EXPOSURE",
             "CONCENTRATION", "MAX_OPEN_ORDERS", "THROTTLE", "DUPLICATE_ID"]
    codes = [getattr(risk, "RISK_REJECT_" + n) for n in order]
    assert codes == sorted(codes) and len(set(codes)) == len(codes)


def test_kernel_constructor_bounds():
    with pytest.raises(ValueError, match="max_instruments"):
        risk.RiskKernel(max_instruments=0)
    with pytest.raises(ValueError, match="dup_window"):
        risk.RiskKernel(dup_window=0)


def test_pass_reserves(impl):
    k = make(impl)
    assert chk(k, BUY, 7) == R.RISK_OK
    assert chk(k, SELL, 3, REF) == R.RISK_OK
    assert k.open_orders(INST) == 2
    assert k.open_qty(INST, BUY) == 7 and k.open_qty(INST, SELL) == 3
    assert k.position(INST) == 0
    assert k.exposure(INST) == 10 * REF * MULT
    assert k.gross_exposure() == 10 * REF * MULT


# ------------------------------------------------------- one test per code + boundary


def test_kill_switch(impl):
    k = make(impl)
    assert chk(k) == R.RISK_OK
    k.trip_kill_switch()
    assert k.kill_switch_tripped
    assert chk(k) == R.RISK_REJECT_KILL_SWITCH
    assert chk(k, inst=99) == R.RISK_REJECT_KILL_SWITCH  # before anything else
    k.reset_kill_switch()
    assert chk(k) == R.RISK_OK


def test_halted_account_and_instrument(impl):
    k = make(impl)
    k.set_halted(True)
    assert chk(k) == R.RISK_REJECT_HALTED
    assert chk(k, inst=INST2, price=REF2) == R.RISK_REJECT_HALTED
    k.set_halted(False)
    assert chk(k) == R.RISK_OK
    k.set_halted(True, INST)
    assert chk(k) == R.RISK_REJECT_HALTED
    assert chk(k, inst=INST2, price=REF2) == R.RISK_OK
    k.set_halted(False, INST)
    assert chk(k) == R.RISK_OK


@pytest.mark.parametrize("side,qty,price,cl", [
    (2, 1, REF, 5), (-1, 1, REF, 5), (BUY, 0, REF, 5), (BUY, -3, REF, 5),
    (BUY, 1, 0, 5), (SELL, 1, -REF, 5), (BUY, 1, REF, 0),
])
def test_invalid_order(impl, side, qty, price, cl):
    k = make(impl)
    assert k.check(INST, side, qty, price, cl, NOW) == R.RISK_REJECT_INVALID_ORDER
    assert k.open_orders(INST) == 0


def test_invalid_order_boundary_passes(impl):
    k = make(impl, inst_limits={"price_band_bps": 10**9})
    assert chk(k, BUY, 1, 1) == R.RISK_OK        # qty 1, price 1 tick
    assert chk(k, SELL, 1, NO_PRICE) == R.RISK_OK  # market order
    assert k.check(INST, BUY, 1, REF, 1 << 63, NOW) == R.RISK_OK  # big uint64 id


def test_reduce_only_long(impl):
    k = make(impl)
    k.set_position(INST, 10)
    k.set_reduce_only(True)
    assert chk(k, BUY, 1) == R.RISK_REJECT_REDUCE_ONLY       # grows the long
    assert chk(k, SELL, 11) == R.RISK_REJECT_REDUCE_ONLY     # flip: rejected
    assert chk(k, SELL, 10) == R.RISK_OK                     # boundary: to flat
    assert chk(k, SELL, 1) == R.RISK_REJECT_REDUCE_ONLY      # open sells already cover it
    k.on_cancel(INST, SELL, 10)
    assert chk(k, SELL, 4) == R.RISK_OK
    assert chk(k, SELL, 7) == R.RISK_REJECT_REDUCE_ONLY      # 4 open + 7 > 10: would flip
    assert chk(k, SELL, 6) == R.RISK_OK                      # 4 + 6 == 10
    k.set_reduce_only(False)
    assert chk(k, BUY, 1) == R.RISK_OK


def test_reduce_only_short_and_flat(impl):
    k = make(impl)
    k.set_reduce_only(True)
    assert chk(k, BUY, 1) == R.RISK_REJECT_REDUCE_ONLY   # flat: nothing shrinks
    assert chk(k, SELL, 1) == R.RISK_REJECT_REDUCE_ONLY
    k.set_position(INST, -5)
    assert chk(k, SELL, 1) == R.RISK_REJECT_REDUCE_ONLY
    assert chk(k, BUY, 6) == R.RISK_REJECT_REDUCE_ONLY   # flip
    assert chk(k, BUY, 5) == R.RISK_OK


def test_reduce_only_per_instrument(impl):
    k = make(impl)
    k.set_reduce_only(True, INST)
    assert chk(k, BUY, 1) == R.RISK_REJECT_REDUCE_ONLY
    assert chk(k, BUY, 1, REF2, inst=INST2) == R.RISK_OK
    k.set_reduce_only(False, INST)
    assert chk(k, BUY, 1) == R.RISK_OK


@pytest.mark.parametrize("inst", [-1, 3, 7, 8, 10**6])
def test_unknown_instrument(impl, inst):
    k = make(impl)
    assert chk(k, inst=inst) == R.RISK_REJECT_UNKNOWN_INSTRUMENT
    assert not k.is_known(inst)


def test_unknown_instrument_boundary_passes(impl):
    k = make(impl)  # max_instruments=8: id 7 is the last valid id
    k.add_instrument(7)
    k.set_instrument_limits(7, **INST_LIMITS)
    k.set_reference_price(7, REF, 0)
    assert chk(k, inst=7) == R.RISK_OK
    with pytest.raises(ValueError):
        k.add_instrument(8)


def test_no_limits(impl):
    k = impl(max_instruments=8, dup_window=8)
    k.add_instrument(INST, MULT)
    k.set_reference_price(INST, REF, 0)
    assert chk(k) == R.RISK_REJECT_NO_LIMITS          # neither
    k.set_instrument_limits(INST, **INST_LIMITS)
    assert chk(k) == R.RISK_REJECT_NO_LIMITS          # no account limits
    k2 = impl(max_instruments=8, dup_window=8)
    k2.add_instrument(INST, MULT)
    k2.set_reference_price(INST, REF, 0)
    k2.set_account_limits(**ACCOUNT_LIMITS)
    assert chk(k2) == R.RISK_REJECT_NO_LIMITS         # no instrument limits
    k.set_account_limits(**ACCOUNT_LIMITS)
    assert chk(k) == R.RISK_OK


def test_no_reference(impl):
    k = make(impl)
    k.add_instrument(3)
    k.set_instrument_limits(3, **INST_LIMITS)
    assert chk(k, inst=3) == R.RISK_REJECT_NO_REFERENCE     # never set
    k.set_reference_price(3, REF, NOW)
    assert chk(k, inst=3) == R.RISK_OK
    k.set_reference_price(3, NO_PRICE, NOW)                  # cleared
    assert chk(k, inst=3) == R.RISK_REJECT_NO_REFERENCE
    assert chk(k, inst=3, price=NO_PRICE) == R.RISK_REJECT_NO_REFERENCE


def test_stale_reference_boundary(impl):
    k = make(impl, inst_limits={"max_ref_age_ns": 500})
    k.set_reference_price(INST, REF, 1_000)
    assert chk(k, now=1_500) == R.RISK_OK                       # age == max
    assert chk(k, now=1_501) == R.RISK_REJECT_STALE_REFERENCE   # max + 1
    assert chk(k, now=500) == R.RISK_OK                         # 500 ns in the future
    assert chk(k, now=499) == R.RISK_REJECT_STALE_REFERENCE     # beyond the skew allowance
    k.set_reference_price(INST, REF, 1_501)                     # refreshed
    assert chk(k, now=1_501) == R.RISK_OK


def test_stale_reference_extreme_times(impl):
    k = make(impl)
    k.set_reference_price(INST, REF, -(2**63))
    assert chk(k, now=INT64_MAX) == R.RISK_REJECT_STALE_REFERENCE  # no overflow


def test_book_stale(impl):
    k = make(impl)
    k.set_book_stale(INST, True)
    assert chk(k) == R.RISK_REJECT_BOOK_STALE
    assert chk(k, inst=INST2, price=REF2) == R.RISK_OK
    k.set_book_stale(INST, False)
    assert chk(k) == R.RISK_OK


def test_max_order_qty_boundary(impl):
    k = make(impl, inst_limits={"max_order_notional": risk.RISK_NOTIONAL_LIMIT_MAX})
    assert chk(k, BUY, 100) == R.RISK_OK
    assert chk(k, BUY, 101) == R.RISK_REJECT_MAX_ORDER_QTY
    assert chk(k, SELL, 101, NO_PRICE) == R.RISK_REJECT_MAX_ORDER_QTY


def test_max_order_notional_boundary(impl):
    limit = 50 * REF * MULT
    k = make(impl, inst_limits={"max_order_notional": limit})
    assert chk(k, BUY, 50, REF) == R.RISK_OK                       # == limit
    assert chk(k, BUY, 50, REF + 1) == R.RISK_REJECT_MAX_ORDER_NOTIONAL  # limit + 50*MULT
    assert chk(k, BUY, 51, NO_PRICE) == R.RISK_REJECT_MAX_ORDER_NOTIONAL  # market: at ref
    assert chk(k, SELL, 50, NO_PRICE) == R.RISK_OK
    k2 = make(impl, inst_limits={"max_order_notional": 7 * REF2 * MULT2 - 1})
    assert chk(k2, BUY, 7, REF2, inst=INST2) == R.RISK_REJECT_MAX_ORDER_NOTIONAL  # limit + 1


def test_max_order_notional_saturates(impl):
    big = {"max_order_qty": INT64_MAX, "max_order_notional": risk.RISK_NOTIONAL_LIMIT_MAX,
           "price_band_bps": 10**12, "max_position": INT64_MAX}
    k = make(impl, inst_limits=big,
             account={"max_gross_exposure": risk.RISK_NOTIONAL_LIMIT_MAX})
    # qty * price * mult overflows int64: rejected, never wrapped into a small number
    assert chk(k, BUY, 2**40, 2**30) == R.RISK_REJECT_MAX_ORDER_NOTIONAL
    assert chk(k, BUY, INT64_MAX, INT64_MAX) == R.RISK_REJECT_MAX_ORDER_NOTIONAL
    # just below int64 with mult 1 on INST2: (2**31 - 1) * 2**32 < INT64_MAX passes
    assert chk(k, BUY, 2**31 - 1, 2**32, inst=INST2) == R.RISK_OK


def test_price_band_boundary(impl):
    k = make(impl)  # 100 bps around 10_000: [9_900, 10_100]
    assert chk(k, BUY, 1, 10_100) == R.RISK_OK
    assert chk(k, BUY, 1, 10_101) == R.RISK_REJECT_PRICE_BAND
    assert chk(k, SELL, 1, 9_900) == R.RISK_OK
    assert chk(k, SELL, 1, 9_899) == R.RISK_REJECT_PRICE_BAND
    assert chk(k, BUY, 1, NO_PRICE) == R.RISK_OK       # market orders use the reference
    k0 = make(impl, inst_limits={"price_band_bps": 0})
    assert chk(k0, BUY, 1, REF) == R.RISK_OK
    assert chk(k0, BUY, 1, REF + 1) == R.RISK_REJECT_PRICE_BAND


def test_max_position_buy_boundary(impl):
    k = make(impl, inst_limits={"max_position": 100, "max_order_qty": 1000,
                                "max_order_notional": risk.RISK_NOTIONAL_LIMIT_MAX})
    k.set_position(INST, 40)
    assert chk(k, BUY, 30) == R.RISK_OK                  # 40 + 0 + 30 = 70
    assert chk(k, BUY, 31) == R.RISK_REJECT_MAX_POSITION  # 40 + 30 + 31 = 101
    assert chk(k, BUY, 30) == R.RISK_OK                  # 40 + 30 + 30 = 100 == max
    assert chk(k, BUY, 1) == R.RISK_REJECT_MAX_POSITION
    assert chk(k, SELL, 140) == R.RISK_OK                # sells reduce the long side


def test_max_position_sell_boundary(impl):
    k = make(impl, inst_limits={"max_position": 100, "max_order_qty": 1000,
                                "max_order_notional": risk.RISK_NOTIONAL_LIMIT_MAX})
    k.set_position(INST, 40)
    assert chk(k, SELL, 140) == R.RISK_OK                 # 40 - 140 = -100: at the max
    assert chk(k, SELL, 1) == R.RISK_REJECT_MAX_POSITION  # 140 + 1 - 40 = 101
    k.on_cancel(INST, SELL, 140)
    assert chk(k, SELL, 141) == R.RISK_REJECT_MAX_POSITION
    k.set_position(INST, -100)
    assert chk(k, SELL, 1) == R.RISK_REJECT_MAX_POSITION
    assert chk(k, BUY, 200) == R.RISK_OK                  # -100 + 200 = +100
    assert chk(k, BUY, 1) == R.RISK_REJECT_MAX_POSITION


def test_max_gross_exposure_boundary(impl):
    # INST2 holds 10 lots at 500 * 1 = 5_000; an INST order of 3 lots adds 300_000
    limit = 5_000 + 3 * REF * MULT
    k = make(impl, account={"max_gross_exposure": limit})
    k.set_position(INST2, -10)
    assert k.gross_exposure() == 5_000
    assert chk(k, BUY, 3, REF) == R.RISK_OK                    # == limit
    assert k.gross_exposure() == limit
    k.on_cancel(INST, BUY, 3)
    assert chk(k, BUY, 3, REF + 1) == R.RISK_REJECT_MAX_GROSS_EXPOSURE  # limit + 30
    assert chk(k, BUY, 1, REF2, inst=INST2) == R.RISK_OK       # 5_000 + 500 < limit


def test_gross_exposure_counts_open_orders_and_marks_at_reference(impl):
    k = make(impl)
    assert chk(k, BUY, 10, REF + 100) == R.RISK_OK
    # the open order is marked at the reference, not at its limit price
    assert k.exposure(INST) == 10 * REF * MULT
    k.set_reference_price(INST, REF * 2, 0)
    assert k.exposure(INST) == 10 * 2 * REF * MULT
    k.on_fill(INST, BUY, 4, REF, 6)
    assert k.exposure(INST) == 10 * 2 * REF * MULT       # 4 position + 6 open
    assert k.position(INST) == 4 and k.open_qty(INST, BUY) == 6


def test_gross_exposure_unknown_value_fails_closed(impl):
    k = make(impl)
    k.add_instrument(3)
    k.set_position(3, 5)            # a position but no reference price: value unknown
    assert k.exposure(3) == INT64_MAX
    assert chk(k, BUY, 1, REF2, inst=INST2) == R.RISK_REJECT_MAX_GROSS_EXPOSURE
    k.set_reference_price(3, 7, 0)
    assert k.exposure(3) == 35
    assert chk(k, BUY, 1, REF2, inst=INST2) == R.RISK_OK


def test_concentration_boundary(impl):
    # 50 % cap, applied above a floor of 1_000_000 tick-lots
    k = make(impl, account={"max_concentration_bps": 5_000, "concentration_floor": 1_000_000})
    # first order: 1 lot = 100_000 < floor -> no concentration rule though 100 %
    assert chk(k, BUY, 1) == R.RISK_OK
    k.on_cancel(INST, BUY, 1)
    # exactly at the floor: not applied
    assert chk(k, BUY, 10) == R.RISK_OK                # gross after == 1_000_000 == floor
    k.on_cancel(INST, BUY, 10)
    assert chk(k, BUY, 11) == R.RISK_REJECT_CONCENTRATION  # 1_100_000 > floor, 100 % > 50 %
    # INST2 holds 2_000 lots * 500 = 1_000_000
    k.set_position(INST2, 2_000)
    assert chk(k, BUY, 10) == R.RISK_OK                # 1_000_000 / 2_000_000 == 50 %
    assert chk(k, BUY, 1) == R.RISK_REJECT_CONCENTRATION   # 1_100_000 / 2_100_000 > 50 %
    # an order in the other instrument is judged on its own share
    # INST2 after 1 more lot (a sell adds exposure too): 1_000_500 / 2_000_500 > 50 %
    assert chk(k, SELL, 1, REF2, inst=INST2) == R.RISK_REJECT_CONCENTRATION


def test_concentration_rule_exact(impl):
    k = make(impl, account={"max_concentration_bps": 5_000, "concentration_floor": 0})
    k.set_position(INST2, -2_000)                       # 1_000_000 (a short counts alike)
    k.set_position(INST, 10)                            # 1_000_000
    assert chk(k, BUY, 1, REF2, inst=INST2) == R.RISK_REJECT_CONCENTRATION  # 1_000_500 / 2_000_500
    assert chk(k, SELL, 1, REF, inst=INST) == R.RISK_REJECT_CONCENTRATION   # open sells add exposure
    k.set_position(INST, 11)
    assert chk(k, BUY, 1, REF2, inst=INST2) == R.RISK_OK  # 1_000_500 / 2_100_500 < 50 %
    k100 = make(impl, account={"max_concentration_bps": 10_000, "concentration_floor": 0})
    assert chk(k100, BUY, 1) == R.RISK_OK               # 100 % allowed when the cap is 100 %


def test_max_open_orders_boundary(impl):
    k = make(impl, inst_limits={"max_open_orders": 3})
    assert [chk(k) for _ in range(3)] == [R.RISK_OK] * 3
    assert chk(k) == R.RISK_REJECT_MAX_OPEN_ORDERS
    assert chk(k, inst=INST2, price=REF2) == R.RISK_OK   # per instrument
    k.on_cancel(INST, BUY, 1)
    assert chk(k) == R.RISK_OK
    k.on_fill(INST, BUY, 1, REF, 0)                       # leaves 0: closes one
    assert chk(k) == R.RISK_OK
    k.on_fill(INST, BUY, 1, REF, 5)                       # partial fill: still open
    assert chk(k) == R.RISK_REJECT_MAX_OPEN_ORDERS
    k.on_reject(INST, BUY, 1)
    assert chk(k) == R.RISK_OK


def test_throttle_boundary_and_slide(impl):
    k = make(impl, inst_limits={"max_open_orders": 100},
             account={"max_orders_per_window": 3, "window_ns": 100})
    assert [chk(k, now=t) for t in (1_000, 1_010, 1_020)] == [R.RISK_OK] * 3
    assert chk(k, now=1_099) == R.RISK_REJECT_THROTTLE    # 3 in (999, 1099]
    assert chk(k, now=1_100) == R.RISK_OK                  # 1_000 left the window
    assert chk(k, now=1_100) == R.RISK_REJECT_THROTTLE    # 1_010, 1_020, 1_100
    assert chk(k, now=1_109) == R.RISK_REJECT_THROTTLE
    assert chk(k, now=1_110) == R.RISK_OK
    assert k.throttle_times() == [1_020, 1_100, 1_110]
    # rejected checks do not enter the window
    assert chk(k, now=1_200) == R.RISK_OK
    assert k.throttle_times() == [1_100, 1_110, 1_200]


def test_throttle_zero_rejects_everything(impl):
    k = make(impl, account={"max_orders_per_window": 0})
    assert chk(k) == R.RISK_REJECT_THROTTLE


def test_throttle_limit_change_keeps_recent(impl):
    k = make(impl, inst_limits={"max_open_orders": 100},
             account={"max_orders_per_window": 4, "window_ns": 1_000})
    for t in (10, 20, 30, 40):
        assert chk(k, now=NOW + t) == R.RISK_OK
    k.set_account_limits(**{**ACCOUNT_LIMITS, "max_orders_per_window": 2, "window_ns": 1_000})
    assert k.throttle_times() == [NOW + 30, NOW + 40]
    assert chk(k, now=NOW + 50) == R.RISK_REJECT_THROTTLE
    k.set_account_limits(**{**ACCOUNT_LIMITS, "max_orders_per_window": 3, "window_ns": 1_000})
    assert k.throttle_times() == [NOW + 30, NOW + 40]
    assert chk(k, now=NOW + 50) == R.RISK_OK
    assert chk(k, now=NOW + 60) == R.RISK_REJECT_THROTTLE


def test_duplicate_id_and_eviction(impl):
    k = make(impl, dup_window=4, inst_limits={"max_open_orders": 100})
    assert chk(k, cl=1) == R.RISK_OK
    assert chk(k, cl=1) == R.RISK_REJECT_DUPLICATE_ID
    assert chk(k, cl=1, inst=INST2, price=REF2) == R.RISK_REJECT_DUPLICATE_ID
    # a rejected order's id is not recorded
    assert chk(k, 5, cl=2) == R.RISK_REJECT_INVALID_ORDER
    assert chk(k, cl=2) == R.RISK_OK
    for cl in (3, 4):
        assert chk(k, cl=cl) == R.RISK_OK
    assert k.recent_ids() == [1, 2, 3, 4]
    assert chk(k, cl=5, inst=INST2, price=REF2) == R.RISK_OK   # evicts 1, the oldest
    assert k.recent_ids() == [2, 3, 4, 5]
    assert chk(k, cl=1, inst=INST2, price=REF2) == R.RISK_OK   # 1 forgotten: passes again
    assert chk(k, cl=3, inst=INST2, price=REF2) == R.RISK_REJECT_DUPLICATE_ID


def test_duplicate_set_many_ids():
    # the C hash set against a Python set over many ids, with eviction and collisions
    k = make(risk.RiskKernel, inst_limits={"max_open_orders": 10**9, "max_position": 10**9},
             account={"max_orders_per_window": 1}, dup_window=1_000)
    rng = np.random.default_rng(7)
    ids = rng.integers(1, 3_000, size=20_000, dtype=np.uint64)
    window: list[int] = []
    now = NOW
    for cl in ids.tolist():
        now += 1_000_000_000
        k.set_reference_price(INST, REF, now)
        code = k.check(INST, BUY, 1, REF, cl, now)
        expect = R.RISK_REJECT_DUPLICATE_ID if cl in window else R.RISK_OK
        assert code == expect
        if code == R.RISK_OK:
            window.append(cl)
            if len(window) > 1_000:
                window.pop(0)
    assert k.recent_ids() == window


# ----------------------------------------------------------------------------- precedence


def test_precedence_full_chain(impl):
    """Break every rule at once, then repair them one at a time in precedence order:
    each check must report exactly the highest-precedence rule still broken."""
    k = impl(max_instruments=8, dup_window=8)
    k.add_instrument(INST, MULT)
    k.add_instrument(INST2, MULT2)
    k.set_instrument_limits(INST2, **INST_LIMITS)
    k.set_reference_price(INST2, REF2, NOW)
    account = dict(max_gross_exposure=1_100_499, max_concentration_bps=5_000,
                   concentration_floor=600, max_orders_per_window=1, window_ns=1_000)
    k.set_account_limits(**account)
    # one accepted order on INST2 at NOW fills the throttle (1 per 1_000 ns) ...
    assert k.check(INST2, SELL, 1, REF2, 76, NOW) == R.RISK_OK
    # ... an adopted order on INST fills its open-order slot and records id 77
    k.on_order_accepted(77, INST, SELL, 1, REF)
    k.set_book_stale(INST, True)
    k.set_position(INST, 7)
    k.trip_kill_switch()
    k.set_halted(True)
    k.set_reduce_only(True)
    o = dict(inst=99, side=BUY, qty=0, price=REF + 5_000, cl=77, now=NOW + 500)
    inst_limits = dict(max_order_qty=5, max_order_notional=5 * REF * MULT, price_band_bps=100,
                       max_position=10, max_open_orders=1, max_ref_age_ns=1_000)
    fixes = [
        (R.RISK_REJECT_KILL_SWITCH, k.reset_kill_switch),
        (R.RISK_REJECT_HALTED, lambda: k.set_halted(False)),
        (R.RISK_REJECT_INVALID_ORDER, lambda: o.update(qty=50)),
        (R.RISK_REJECT_REDUCE_ONLY, lambda: k.set_reduce_only(False)),
        (R.RISK_REJECT_UNKNOWN_INSTRUMENT, lambda: o.update(inst=INST)),
        (R.RISK_REJECT_NO_LIMITS, lambda: k.set_instrument_limits(INST, **inst_limits)),
        (R.RISK_REJECT_NO_REFERENCE, lambda: k.set_reference_price(INST, REF, 0)),  # age 1_500
        (R.RISK_REJECT_STALE_REFERENCE, lambda: k.set_reference_price(INST, REF, NOW + 500)),
        (R.RISK_REJECT_BOOK_STALE, lambda: k.set_book_stale(INST, False)),
        (R.RISK_REJECT_MAX_ORDER_QTY, lambda: o.update(qty=4)),   # 4 * 15_000 * 10 > 500_000
        (R.RISK_REJECT_MAX_ORDER_NOTIONAL, lambda: o.update(price=REF + 500)),  # 5 % off
        (R.RISK_REJECT_PRICE_BAND, lambda: o.update(price=REF)),
        (R.RISK_REJECT_MAX_POSITION, lambda: k.set_position(INST, 6)),  # 6 + 0 + 4 == max
        # gross after = (6 + 1 open sell) * 100_000 + 500 (INST2) + 400_000 = 1_100_500
        (R.RISK_REJECT_MAX_GROSS_EXPOSURE,
         lambda: k.set_account_limits(**{**account, "max_gross_exposure": 1_100_500})),
        (R.RISK_REJECT_CONCENTRATION,
         lambda: k.set_account_limits(**{**account, "max_gross_exposure": 1_100_500,
                                         "max_concentration_bps": 10_000})),
        (R.RISK_REJECT_MAX_OPEN_ORDERS, lambda: k.on_cancel(INST, SELL, 1)),
        (R.RISK_REJECT_THROTTLE, lambda: o.update(now=NOW + 1_000)),
        (R.RISK_REJECT_DUPLICATE_ID, lambda: o.update(cl=78)),
    ]
    assert [code for code, _ in fixes] == list(range(1, R.RISK_CODE_COUNT))

    def run():
        return k.check(o["inst"], o["side"], o["qty"], o["price"], o["cl"], o["now"])

    for expected, fix in fixes:
        code = run()
        assert code == expected, (R.REJECT_REASONS[expected], R.REJECT_REASONS[code])
        fix()
    assert run() == R.RISK_OK


def _target(k, o):
    """The order's instrument, or INST when the order names an unknown one."""
    return o["inst"] if k.is_known(o["inst"]) else INST


# Each violation alone turns the passing base order into its code; they are built to
# coexist, so any two together must give the higher-precedence code.
VIOLATIONS = {
    R.RISK_REJECT_KILL_SWITCH: lambda k, o, lim, acct: k.trip_kill_switch(),
    R.RISK_REJECT_HALTED: lambda k, o, lim, acct: k.set_halted(True),
    R.RISK_REJECT_INVALID_ORDER: lambda k, o, lim, acct: o.update(side=2),
    R.RISK_REJECT_REDUCE_ONLY: lambda k, o, lim, acct: k.set_reduce_only(True),
    R.RISK_REJECT_UNKNOWN_INSTRUMENT: lambda k, o, lim, acct: o.update(inst=5),
    R.RISK_REJECT_NO_LIMITS: lambda k, o, lim, acct: o.update(inst=4),      # no limits
    R.RISK_REJECT_NO_REFERENCE: lambda k, o, lim, acct: o.update(inst=6),   # no reference
    R.RISK_REJECT_STALE_REFERENCE: lambda k, o, lim, acct: o.update(now=NOW + 2_000_000),
    R.RISK_REJECT_BOOK_STALE: lambda k, o, lim, acct: k.set_book_stale(_target(k, o), True),
    R.RISK_REJECT_MAX_ORDER_QTY: lambda k, o, lim, acct: o.update(qty=101),
    R.RISK_REJECT_MAX_ORDER_NOTIONAL: lambda k, o, lim, acct: lim.update(max_order_notional=1_000),
    R.RISK_REJECT_PRICE_BAND: lambda k, o, lim, acct: o.update(price=REF - 200),
    R.RISK_REJECT_MAX_POSITION: lambda k, o, lim, acct: k.set_position(_target(k, o), 500),
    R.RISK_REJECT_MAX_GROSS_EXPOSURE: lambda k, o, lim, acct: acct.update(max_gross_exposure=0),
    R.RISK_REJECT_CONCENTRATION: lambda k, o, lim, acct: acct.update(max_concentration_bps=5_000),
    R.RISK_REJECT_MAX_OPEN_ORDERS: lambda k, o, lim, acct: lim.update(max_open_orders=0),
    R.RISK_REJECT_THROTTLE: lambda k, o, lim, acct: acct.update(max_orders_per_window=0),
    R.RISK_REJECT_DUPLICATE_ID: lambda k, o, lim, acct: k.on_order_accepted(
        o["cl"], INST2, SELL, 1, REF2),
}
INST_CHOOSERS = {R.RISK_REJECT_UNKNOWN_INSTRUMENT, R.RISK_REJECT_NO_LIMITS,
                 R.RISK_REJECT_NO_REFERENCE}


def _violate(impl, codes):
    k = impl(max_instruments=8, dup_window=8)
    for i in (INST, INST2, 4, 6):
        k.add_instrument(i, MULT)
    o = dict(inst=INST, side=BUY, qty=1, price=REF, cl=500, now=NOW)
    lim, acct = dict(INST_LIMITS), dict(ACCOUNT_LIMITS)
    k.set_reference_price(4, REF, 0)
    k.set_reference_price(INST2, REF2, 0)
    k.set_instrument_limits(INST2, **INST_LIMITS)
    k.set_instrument_limits(6, **INST_LIMITS)
    # instrument choosers first: the others apply to the chosen instrument
    for code in sorted(codes, key=lambda c: c not in INST_CHOOSERS):
        VIOLATIONS[code](k, o, lim, acct)
    k.set_instrument_limits(INST, **lim)
    k.set_account_limits(**acct)
    k.set_reference_price(INST, REF, 0)
    return k.check(o["inst"], o["side"], o["qty"], o["price"], o["cl"], o["now"])


def test_precedence_single_violations(impl):
    assert _violate(impl, []) == R.RISK_OK
    for code in VIOLATIONS:
        assert _violate(impl, [code]) == code, R.REJECT_REASONS[code]


def test_precedence_every_pair(impl):
    checked = 0
    for a, b in itertools.combinations(sorted(VIOLATIONS), 2):
        if a in INST_CHOOSERS and b in INST_CHOOSERS:
            continue  # both pick the order's instrument; covered by the full chain
        got = _violate(impl, [a, b])
        assert got == a, (R.REJECT_REASONS[a], R.REJECT_REASONS[b], R.REJECT_REASONS[got])
        checked += 1
    assert checked == 153 - 3


# ----------------------------------------------------------------------------- state updates


def test_fill_cancel_reject_state(impl):
    k = make(impl)
    assert chk(k, BUY, 10) == R.RISK_OK
    assert chk(k, SELL, 4) == R.RISK_OK
    k.on_fill(INST, BUY, 3, REF, 7)
    assert (k.position(INST), k.open_qty(INST, BUY), k.open_orders(INST)) == (3, 7, 2)
    k.on_fill(INST, BUY, 7, REF - 1, 0)
    assert (k.position(INST), k.open_qty(INST, BUY), k.open_orders(INST)) == (10, 0, 1)
    k.on_fill(INST, SELL, 1, REF, 3)
    k.on_cancel(INST, SELL, 3)
    assert (k.position(INST), k.open_qty(INST, SELL), k.open_orders(INST)) == (9, 0, 0)
    assert chk(k, SELL, 2) == R.RISK_OK
    k.on_reject(INST, SELL, 2)
    assert (k.open_qty(INST, SELL), k.open_orders(INST)) == (0, 0)
    assert k.exposure(INST) == 9 * REF * MULT
    assert k.gross_exposure() == 9 * REF * MULT
    assert k.anomalies == 0


def test_clamping_counts_anomalies(impl):
    k = make(impl)
    k.on_cancel(INST, BUY, 5)                 # nothing open
    assert k.anomalies == 2                   # qty and count
    assert (k.open_qty(INST, BUY), k.open_orders(INST)) == (0, 0)
    k.on_fill(INST, SELL, 2, REF, 0)          # a fill the kernel never saw
    assert k.position(INST) == -2 and k.anomalies == 4


def test_on_order_accepted_registers_unchecked_order(impl):
    k = make(impl, inst_limits={"max_open_orders": 1})
    k.on_order_accepted(42, INST, SELL, 5, REF)
    assert (k.open_qty(INST, SELL), k.open_orders(INST)) == (5, 1)
    assert chk(k, BUY, 1, cl=43) == R.RISK_REJECT_MAX_OPEN_ORDERS
    k.on_cancel(INST, SELL, 5)
    assert chk(k, BUY, 1, cl=42) == R.RISK_REJECT_DUPLICATE_ID


@pytest.mark.parametrize("call", [
    lambda k: k.on_fill(9, BUY, 1, REF, 0),
    lambda k: k.on_fill(INST, 2, 1, REF, 0),
    lambda k: k.on_fill(INST, BUY, 0, REF, 0),
    lambda k: k.on_fill(INST, BUY, 1, 0, 0),
    lambda k: k.on_fill(INST, BUY, 1, REF, -1),
    lambda k: k.on_cancel(3, BUY, 1),
    lambda k: k.on_cancel(INST, BUY, -1),
    lambda k: k.on_reject(INST, 7, 1),
    lambda k: k.on_order_accepted(0, INST, BUY, 1, REF),
    lambda k: k.on_order_accepted(1, INST, BUY, 1, -5),
    lambda k: k.set_reference_price(INST, 0, 0),
    lambda k: k.set_reference_price(5, REF, 0),
    lambda k: k.set_book_stale(5, True),
    lambda k: k.set_halted(True, 5),
    lambda k: k.position(5),
    lambda k: k.add_instrument(INST),
    lambda k: k.add_instrument(4, 0),
    lambda k: k.set_instrument_limits(INST, **{**INST_LIMITS, "max_order_qty": -1}),
    lambda k: k.set_instrument_limits(INST, **{**INST_LIMITS, "max_order_notional": INT64_MAX}),
    lambda k: k.set_account_limits(**{**ACCOUNT_LIMITS, "max_concentration_bps": 10_001}),
    lambda k: k.set_account_limits(**{**ACCOUNT_LIMITS, "window_ns": 0}),
])
def test_bad_updates_raise_value_error_and_change_nothing(impl, call):
    k = make(impl)
    assert chk(k, BUY, 3) == R.RISK_OK
    before = (k.position(INST), k.open_orders(INST), k.open_qty(INST, BUY), k.gross_exposure())
    with pytest.raises(ValueError):
        call(k)
    after = (k.position(INST), k.open_orders(INST), k.open_qty(INST, BUY), k.gross_exposure())
    assert before == after


def test_position_overflow_raises(impl):
    k = make(impl)
    k.set_position(INST, INT64_MAX - 1)
    with pytest.raises(OverflowError):
        k.on_fill(INST, BUY, 2, REF, 0)
    assert k.position(INST) == INT64_MAX - 1
    k.on_fill(INST, BUY, 1, REF, 0)
    assert k.position(INST) == INT64_MAX
    assert k.exposure(INST) == INT64_MAX          # saturated
    with pytest.raises(OverflowError):
        k.check(INST, BUY, 2**64, REF, 1, NOW)    # not an int64


def test_open_quantity_must_stay_representable(impl):
    # a short of 2**61 lets buys of 2**62 + 2**62 + 1 lots stay under max_position,
    # but the open buy quantity would leave int64: rejected as MAX_POSITION
    big = {"max_order_qty": INT64_MAX, "max_order_notional": risk.RISK_NOTIONAL_LIMIT_MAX,
           "price_band_bps": 0, "max_position": INT64_MAX, "max_open_orders": 10}
    k = make(impl, inst_limits=big, account={"max_gross_exposure": risk.RISK_NOTIONAL_LIMIT_MAX})
    k.set_reference_price(INST2, 1, 0)
    k.set_position(INST2, -(2**61))
    k.on_order_accepted(900, INST2, BUY, 2**62, 1)
    assert chk(k, BUY, 2**62 + 1, 1, inst=INST2) == R.RISK_REJECT_MAX_POSITION
    assert chk(k, BUY, 2**62 - 1, 1, inst=INST2) == R.RISK_REJECT_MAX_GROSS_EXPOSURE
    with pytest.raises(OverflowError):
        k.on_order_accepted(901, INST2, BUY, 2**62, 1)
    assert k.open_qty(INST2, BUY) == 2**62


def test_gross_exposure_beyond_int64_is_exact(impl):
    k = make(impl)
    for i in range(3, 8):
        k.add_instrument(i)
        k.set_reference_price(i, REF, 0)
        k.set_position(i, INT64_MAX // REF)
    per = (INT64_MAX // REF) * REF
    assert k.gross_exposure() == 5 * per
    assert chk(k, inst=INST2, price=REF2) == R.RISK_REJECT_MAX_GROSS_EXPOSURE


# ----------------------------------------------------------------------------- counters


def test_counters(impl):
    k = make(impl, inst_limits={"max_order_qty": 5})
    assert chk(k) == R.RISK_OK
    assert chk(k, qty=6) == R.RISK_REJECT_MAX_ORDER_QTY
    assert chk(k, qty=7) == R.RISK_REJECT_MAX_ORDER_QTY
    assert chk(k, inst=6) == R.RISK_REJECT_UNKNOWN_INSTRUMENT
    assert k.would_pass(INST, BUY, 9, REF, nid(), NOW) == R.RISK_REJECT_MAX_ORDER_QTY  # no count
    c = k.counters()
    assert len(c) == R.RISK_CODE_COUNT
    assert c[R.RISK_OK] == 1 and c[R.RISK_REJECT_MAX_ORDER_QTY] == 2
    assert c[R.RISK_REJECT_UNKNOWN_INSTRUMENT] == 1 and sum(c) == 4
    assert k.counter(R.RISK_REJECT_MAX_ORDER_QTY) == 2
    assert k.counter(R.RISK_OK) == 1


def test_counters_view_is_live_and_read_only():
    k = make(risk.RiskKernel)
    view = k.counters_view()
    copy = k.counters()
    assert view.dtype == np.uint64 and view.shape == (risk.RISK_CODE_COUNT,)
    assert chk(k) == R.RISK_OK
    assert chk(k, inst=5) == R.RISK_REJECT_UNKNOWN_INSTRUMENT
    assert view[R.RISK_OK] == 1 and view[R.RISK_REJECT_UNKNOWN_INSTRUMENT] == 1
    assert copy.sum() == 0
    with pytest.raises(ValueError):
        view[0] = 5
    with pytest.raises(ValueError):
        k.counter(risk.RISK_CODE_COUNT)
    del k
    assert view.sum() == 2  # the view keeps the memory alive


# ----------------------------------------------------------------------------- batch


def test_check_many_equals_sequential_checks():
    rng = np.random.default_rng(3)
    n = 2_000
    orders = np.zeros(n, dtype=risk.ORDER_DTYPE)
    orders["inst_id"] = rng.choice([INST, INST2, 3, -1], size=n, p=[0.6, 0.3, 0.05, 0.05])
    orders["side"] = rng.choice([BUY, SELL, 2], size=n, p=[0.49, 0.49, 0.02])
    orders["qty"] = rng.integers(-1, 120, size=n)
    ref = np.where(orders["inst_id"] == INST2, REF2, REF)
    orders["price"] = ref + rng.integers(-150, 150, size=n)
    orders["price"][rng.random(n) < 0.1] = NO_PRICE
    orders["cl_ord_id"] = rng.integers(0, 1_500, size=n)
    orders["now_ns"] = NOW + np.arange(n) * 3
    cfg = dict(inst_limits={"max_open_orders": 10**6, "max_position": 10**6},
               account={"max_orders_per_window": 5, "window_ns": 40})
    a, b = make(risk.RiskKernel, **cfg), make(risk.RiskKernel, **cfg)
    got = a.check_many(orders)
    want = [b.check(int(o["inst_id"]), int(o["side"]), int(o["qty"]), int(o["price"]),
                    int(o["cl_ord_id"]), int(o["now_ns"])) for o in orders]
    assert got.dtype == np.uint8
    assert got.tolist() == want
    assert len(set(want)) > 5
    assert a.counters().tolist() == b.counters().tolist()
    assert a.gross_exposure() == b.gross_exposure()
    with pytest.raises(TypeError):
        a.check_many(np.zeros(3, dtype=np.int64))


# ----------------------------------------------------------------------------- differential

DIFF_INSTS = [0, 1, 2, 3, 9]    # 0..2 registered, 3 unregistered, 9 out of range (max 8)
ids = st.integers(0, 14)
insts = st.sampled_from(DIFF_INSTS)
sides = st.sampled_from([0, 1, 0, 1, 2])
qtys = st.integers(-1, 14)
prices = st.one_of(st.integers(90, 110), st.just(NO_PRICE), st.just(0))

# Mostly workable limits with small numbers, so that passes and every rule's edges
# are reached (tight values appear often enough to trip each rule).
inst_limits_st = st.fixed_dictionaries(dict(
    max_order_qty=st.integers(0, 12),
    max_order_notional=st.integers(0, 4_000),
    price_band_bps=st.sampled_from([0, 100, 300, 500, 1_000, 100_000]),
    max_position=st.integers(0, 40),
    max_open_orders=st.integers(0, 6),
    max_ref_age_ns=st.integers(0, 80),
))
account_st = st.fixed_dictionaries(dict(
    max_gross_exposure=st.integers(0, 20_000),
    max_concentration_bps=st.sampled_from([0, 3_000, 5_000, 8_000, 10_000, 10_000]),
    concentration_floor=st.integers(0, 4_000),
    max_orders_per_window=st.integers(0, 6),
    window_ns=st.integers(1, 40),
))

# Setup limits: workable, so that long runs of passes build up positions, open
# orders, throttle and duplicate state; the ops below may replace them with tight ones.
setup_limits_st = st.fixed_dictionaries(dict(
    max_order_qty=st.integers(4, 12),
    max_order_notional=st.integers(1_000, 4_000),
    price_band_bps=st.sampled_from([300, 500, 1_000, 100_000]),
    max_position=st.integers(10, 40),
    max_open_orders=st.integers(2, 6),
    max_ref_age_ns=st.integers(20, 80),
))
setup_account_st = st.fixed_dictionaries(dict(
    max_gross_exposure=st.integers(5_000, 20_000),
    max_concentration_bps=st.sampled_from([5_000, 8_000, 10_000, 10_000]),
    concentration_floor=st.integers(0, 4_000),
    max_orders_per_window=st.integers(2, 6),
    window_ns=st.integers(5, 40),
))

OP_STRATEGIES = [  # (weight, strategy)
    (40, st.tuples(st.just("check"), st.sampled_from([1, 2]), st.sampled_from([0, 1]),
                   st.integers(1, 6), st.one_of(st.integers(95, 105), st.just(NO_PRICE)),
                   st.integers(1, 14))),
    (8, st.tuples(st.just("check"), insts, sides, qtys, prices, ids)),
    (12, st.tuples(st.just("advance"), st.integers(-3, 25))),
    (8, st.tuples(st.just("fill"), st.sampled_from([1, 2]), st.sampled_from([0, 1]),
                  st.integers(1, 8), st.integers(90, 110), st.integers(0, 3))),
    (2, st.tuples(st.just("fill"), insts, sides, st.integers(0, 8), st.integers(0, 110),
                  st.integers(-1, 5))),
    (6, st.tuples(st.just("cancel"), st.sampled_from([1, 2]), st.sampled_from([0, 1]),
                  st.integers(0, 8))),
    (2, st.tuples(st.just("cancel"), insts, sides, st.integers(-1, 8))),
    (2, st.tuples(st.just("reject"), insts, sides, st.integers(0, 8))),
    (2, st.tuples(st.just("accepted"), ids, insts, sides, qtys, prices)),
    (8, st.tuples(st.just("ref"), st.sampled_from([1, 2]), st.integers(95, 105),
                  st.integers(-10, 0))),
    (2, st.tuples(st.just("ref"), insts, st.one_of(st.integers(95, 105), st.just(NO_PRICE)),
                  st.integers(-100, 100))),
    (2, st.tuples(st.just("book_stale"), insts, st.booleans())),
    (2, st.tuples(st.just("inst_limits"), insts, inst_limits_st)),
    (1, st.tuples(st.just("inst_limits"), insts, setup_limits_st)),
    (2, st.tuples(st.just("account"), account_st)),
    (1, st.tuples(st.just("account"), setup_account_st)),
    (1, st.tuples(st.just("kill"), st.sampled_from([True, False, False]))),
    (1, st.tuples(st.just("halt"), st.booleans(), st.sampled_from([None, 0, 1, 2, 3]))),
    (1, st.tuples(st.just("reduce_only"), st.booleans(), st.sampled_from([None, 0, 1, 2, 3]))),
    (1, st.tuples(st.just("set_position"), insts, st.integers(-20, 20))),
]
_op_index = st.sampled_from([i for i, (w, _) in enumerate(OP_STRATEGIES) for _ in range(w)])
op_st = _op_index.flatmap(lambda i: OP_STRATEGIES[i][1])
ops_st = st.lists(op_st, min_size=20, max_size=150)


def _apply(k, op, now):
    kind = op[0]
    if kind == "check":
        _, inst, side, qty, price, cl = op
        return k.check(inst, side, qty, price, cl, now)
    if kind == "fill":
        return k.on_fill(*op[1:])
    if kind == "cancel":
        return k.on_cancel(*op[1:])
    if kind == "reject":
        return k.on_reject(*op[1:])
    if kind == "accepted":
        return k.on_order_accepted(*op[1:])
    if kind == "ref":
        _, inst, price, age = op
        return k.set_reference_price(inst, price, now + age)
    if kind == "book_stale":
        return k.set_book_stale(op[1], op[2])
    if kind == "inst_limits":
        return k.set_instrument_limits(op[1], **op[2])
    if kind == "account":
        return k.set_account_limits(**op[1])
    if kind == "kill":
        return k.trip_kill_switch() if op[1] else k.reset_kill_switch()
    if kind == "halt":
        return k.set_halted(op[1], op[2])
    if kind == "reduce_only":
        return k.set_reduce_only(op[1], op[2])
    if kind == "set_position":
        return k.set_position(op[1], op[2])
    raise AssertionError(kind)


def _state(k):
    per = []
    for i in (0, 1, 2):
        per.append((k.position(i), k.open_orders(i), k.open_qty(i, 0), k.open_qty(i, 1),
                    k.exposure(i), k.reference_price(i)))
    return (per, k.gross_exposure(), list(map(int, k.counters())), k.anomalies,
            k.throttle_times(), k.recent_ids(), k.kill_switch_tripped, k.halted, k.reduce_only)


def _outcome(k, op, now):
    try:
        return ("ok", _apply(k, op, now))
    except (ValueError, OverflowError, TypeError) as exc:
        return ("raised", type(exc).__name__)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup_limits=st.lists(setup_limits_st, min_size=3, max_size=3), account=setup_account_st,
       ops=ops_st)
def test_differential_against_reference(setup_limits, account, ops):
    kernel = risk.RiskKernel(max_instruments=8, dup_window=3)
    ref = risk_ref.RiskReference(max_instruments=8, dup_window=3)
    for k in (kernel, ref):
        for i, mult in zip((0, 1, 2), (1, 2, 3), strict=True):
            k.add_instrument(i, mult)
        for i in (1, 2):  # instrument 0 starts with no limits and no reference
            k.set_instrument_limits(i, **setup_limits[i])
            k.set_reference_price(i, 100, 0)
        k.set_account_limits(**account)
    now = 0
    for step, op in enumerate(ops):
        if op[0] == "advance":
            now += op[1]
            continue
        a, b = _outcome(kernel, op, now), _outcome(ref, op, now)
        assert a == b, (step, op, a, b)
        assert _state(kernel) == _state(ref), (step, op)


@pytest.mark.slow
@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup_limits=st.lists(setup_limits_st, min_size=3, max_size=3), account=setup_account_st,
       ops=ops_st)
def test_differential_against_reference_long(setup_limits, account, ops):
    test_differential_against_reference.hypothesis.inner_test(setup_limits, account, ops)


def test_differential_reaches_passes_and_every_code():
    """The random sequences of the differential test do exercise the rules: run a
    fixed-seed sample and require every code to appear on both implementations."""
    import random

    rnd = random.Random(11)
    seen = set()
    for trial in range(300):  # noqa: B007 - trial is reported on failure
        kernel = risk.RiskKernel(max_instruments=8, dup_window=3)
        ref = risk_ref.RiskReference(max_instruments=8, dup_window=3)
        lim = dict(max_order_qty=rnd.randint(3, 12), max_order_notional=rnd.randint(500, 3_000),
                   price_band_bps=rnd.choice([100, 500, 1_000]), max_position=rnd.randint(5, 30),
                   max_open_orders=rnd.randint(1, 5), max_ref_age_ns=rnd.randint(10, 60))
        acct = dict(max_gross_exposure=rnd.randint(1_000, 12_000),
                    max_concentration_bps=rnd.choice([3_000, 5_000, 8_000, 10_000]),
                    concentration_floor=rnd.randint(0, 2_000),
                    max_orders_per_window=rnd.randint(1, 4), window_ns=rnd.randint(5, 40))
        for k in (kernel, ref):
            for i, mult in zip((0, 1, 2), (1, 2, 3), strict=True):
                k.add_instrument(i, mult)
            for i in (1, 2):
                k.set_instrument_limits(i, **lim)
                k.set_reference_price(i, 100, 0)
            k.set_account_limits(**acct)
        now = 0
        for _ in range(40):
            now += rnd.randint(0, 6)
            r = rnd.random()
            if r < 0.03:
                op = ("kill", rnd.random() < 0.5)
            elif r < 0.06:
                op = ("halt", rnd.random() < 0.5, rnd.choice([None, 1, 2]))
            elif r < 0.10:
                op = ("reduce_only", rnd.random() < 0.5, rnd.choice([None, 1]))
            elif r < 0.13:
                op = ("book_stale", rnd.choice([1, 2]), rnd.random() < 0.5)
            elif r < 0.25:
                op = ("ref", rnd.choice([1, 2]),
                      rnd.choice([rnd.randint(95, 105)] * 9 + [NO_PRICE]), rnd.randint(-5, 0))
            elif r < 0.35:
                op = ("fill", rnd.choice([1, 2]), rnd.randint(0, 1), rnd.randint(1, 4), 100,
                      rnd.randint(0, 2))
            elif r < 0.42:
                op = ("cancel", rnd.choice([1, 2]), rnd.randint(0, 1), rnd.randint(0, 4))
            elif r < 0.45:
                op = ("set_position", rnd.choice([0, 1, 2]), rnd.randint(-20, 20))
            else:
                op = ("check", rnd.choice([0, 1, 1, 2, 2, 3]), rnd.choice([0, 1, 0, 1, 2]),
                      rnd.randint(0, 14), rnd.choice([rnd.randint(90, 110), NO_PRICE]),
                      rnd.randint(0, 12))
            a, b = _outcome(kernel, op, now), _outcome(ref, op, now)
            assert a == b, (trial, op, a, b)
            if op[0] == "check":
                seen.add(a[1])
            assert _state(kernel) == _state(ref)
    missing = {R.REJECT_REASONS[c] for c in range(R.RISK_CODE_COUNT)} - {
        R.REJECT_REASONS[c] for c in seen}
    assert not missing
