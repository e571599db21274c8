"""Risk policy: the kernel built from the config, continuous limits, loss limits, VaR."""
from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_ext import risk as rk
from engine.config import Stage
from engine.orders import Fill, Side
from engine.portfolio import Portfolio
from engine.risk_policy import (
    RiskPolicy,
    build_kernel,
    historical_var,
    parametric_var,
    scenario_pnl,
)
from tests.engine_helpers import make_config

CFG = make_config()
INSTS = CFG.instruments_by_symbol
XYZ, BTC = 0, 1
NOW = 1_000


def fill(symbol, side, qty, price):
    return Fill(1, "", symbol, INSTS[symbol].inst_id, Side.parse(side), qty, price, 0, 0, 0.0)


# ----------------------------------------------------------------------------- build_kernel

def test_kernel_limits_are_converted_from_decimals():
    k = build_kernel(CFG)
    k.set_reference_price(XYZ, 10_000, NOW)
    k.set_reference_price(BTC, 2_000_000, NOW)
    # XYZ: max_order_qty 1000 (lot 1) -> 1000 lots
    assert k.would_pass(XYZ, 0, 1000, 10_000, 1, NOW) == rk.RISK_OK
    assert k.would_pass(XYZ, 0, 1001, 10_000, 1, NOW) == rk.RISK_REJECT_MAX_ORDER_QTY
    # BTC: max_order_qty 5 (lot 0.001) -> 5000 lots; notional 100000 money -> 4.999 BTC at 20000 passes
    assert k.would_pass(BTC, 0, 5000, 2_000_000, 1, NOW) == rk.RISK_OK
    assert k.would_pass(BTC, 0, 5000, 2_000_100, 1, NOW) == rk.RISK_REJECT_MAX_ORDER_NOTIONAL
    # kernel notionals are money / money unit on both instruments (the unit is 0.00001)
    assert CFG.money_unit == Decimal("0.00001")
    assert INSTS["XYZ"].kernel_multiplier == 1000 and INSTS["BTC"].kernel_multiplier == 1
    k.on_order_accepted(77, XYZ, 0, 100, 10_000)                  # 100 x 100.00 = 10000 money
    k.on_order_accepted(78, BTC, 0, 500, 2_000_000)               # 0.5 BTC x 20000 = 10000 money
    assert k.exposure(XYZ) == k.exposure(BTC) == 1_000_000_000


def test_small_stage_enforces_capital_limit_through_gross_exposure():
    k = build_kernel(CFG, Stage.SMALL)                              # capital_limit.small = 20000
    k.set_reference_price(XYZ, 10_000, NOW)
    assert k.would_pass(XYZ, 0, 200, 10_000, 1, NOW) == rk.RISK_OK          # 20000 money
    assert k.would_pass(XYZ, 0, 201, 10_000, 1, NOW) == rk.RISK_REJECT_MAX_GROSS_EXPOSURE
    k2 = build_kernel(CFG, "backtest")                              # no capital limit: 1,000,000
    k2.set_reference_price(XYZ, 10_000, NOW)
    assert k2.would_pass(XYZ, 0, 201, 10_000, 1, NOW) == rk.RISK_OK


# ----------------------------------------------------------------------------- VaR functions

@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.05, 0.05), st.floats(-0.05, 0.05)), min_size=2, max_size=200),
       st.floats(-1e5, 1e5), st.floats(-1e5, 1e5), st.sampled_from([0.9, 0.95, 0.99]))
def test_historical_var_against_brute_force(rets, w1, w2, conf):
    r = np.array(rets)
    w = np.array([w1, w2])
    pnl = sorted(a * w1 + b * w2 for a, b in rets)
    # linear-interpolated quantile, by hand
    pos = (len(pnl) - 1) * (1 - conf)
    lo, hi = math.floor(pos), math.ceil(pos)
    q = pnl[lo] + (pnl[hi] - pnl[lo]) * (pos - lo)
    assert historical_var(r, w, conf) == pytest.approx(max(-q, 0.0), rel=1e-9, abs=1e-6)
    assert np.allclose(scenario_pnl(r, w), [a * w1 + b * w2 for a, b in rets])


def test_parametric_var_matches_formula():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, size=(500, 2))
    w = np.array([10_000.0, -5_000.0])
    cov = np.cov(r, rowvar=False)
    want = NormalDist().inv_cdf(0.99) * math.sqrt(w @ cov @ w)
    assert parametric_var(r, w, 0.99) == pytest.approx(want)
    # a single instrument: z * sigma * |w|
    r1 = r[:, :1]
    assert parametric_var(r1, np.array([2.0]), 0.95) == pytest.approx(
        1.6448536 * 2.0 * r1[:, 0].std(ddof=1), rel=1e-6)
    assert parametric_var(r[:1], w, 0.99) == 0.0
    # normal returns: historical and parametric agree roughly
    assert historical_var(r, w, 0.99) == pytest.approx(want, rel=0.25)


# ----------------------------------------------------------------------------- the policy

class FakeKillSwitch:
    def __init__(self):
        self.tripped = False
        self.reasons = []

    def trip(self, reason):
        self.tripped = True
        self.reasons.append(reason)


def make_policy(cfg=CFG, capital=100_000.0):
    k = build_kernel(cfg)
    pf = Portfolio(INSTS, initial_capital=capital)
    ks = FakeKillSwitch()
    alerts = []
    clock = [NOW]
    policy = RiskPolicy(cfg, k, pf, killswitch=ks, alert=lambda kind, m: alerts.append(kind),
                        clock=lambda: clock[0])
    return policy, k, pf, ks, alerts, clock


def test_reference_price_from_quotes():
    policy, k, pf, *_ = make_policy()
    policy.on_quote("XYZ", 9_999, 10_002, 5)
    assert k.reference_price(XYZ) == (10_000, 5)
    policy.on_quote("XYZ", None, 10_002, 6)          # one-sided: reference kept
    assert k.reference_price(XYZ) == (10_000, 5)
    policy.on_quote("XYZ", 10_003, 10_002, 7)        # crossed: kept
    assert k.reference_price(XYZ) == (10_000, 5)
    policy.on_book_stale("XYZ", True)
    assert k.would_pass(XYZ, 0, 1, 10_000, 9, 5) == rk.RISK_REJECT_BOOK_STALE


def test_position_limit_watched_on_every_fill():
    policy, k, pf, ks, alerts, _ = make_policy()
    policy.on_quote("BTC", 1_999_900, 2_000_100, NOW)
    pf.on_fill(fill("BTC", "buy", 9_000, 2_000_000))
    policy.on_fill(fill("BTC", "buy", 9_000, 2_000_000))
    assert not policy.reduce_only_reasons("BTC")
    pf.on_fill(fill("BTC", "buy", 2_000, 2_000_000))       # 11 BTC > max_position 10
    policy.on_fill(fill("BTC", "buy", 2_000, 2_000_000))
    assert policy.reduce_only_reasons("BTC") == {"position"} and alerts == ["risk_position"]
    k.set_position(BTC, 11_000)
    assert k.would_pass(BTC, 0, 1, 2_000_000, 5, NOW) == rk.RISK_REJECT_REDUCE_ONLY
    assert k.would_pass(BTC, 1, 1, 2_000_000, 5, NOW) == rk.RISK_OK
    pf.on_fill(fill("BTC", "sell", 2_000, 2_000_000))
    policy.on_fill(fill("BTC", "sell", 2_000, 2_000_000))
    assert not policy.reduce_only_reasons("BTC")
    k.set_position(BTC, 9_000)
    assert k.would_pass(BTC, 0, 1, 2_000_000, 5, NOW) == rk.RISK_OK
    assert [b.kind for b in policy.breaches] == ["position", "position_cleared"]


def test_concentration_watched_on_marks():
    risk = dataclasses.replace(CFG.risk, max_concentration_bps=6000,
                               concentration_floor=CFG.risk.concentration_floor)
    cfg = dataclasses.replace(CFG, risk=risk)
    k = build_kernel(cfg)
    pf = Portfolio(INSTS)
    policy = RiskPolicy(cfg, k, pf, clock=lambda: NOW)
    pf.on_fill(fill("XYZ", "buy", 100, 10_000))            # 10000 money
    pf.on_fill(fill("BTC", "buy", 500, 2_000_000))          # 10000 money
    policy.on_quote("XYZ", 10_000, 10_000, NOW)
    policy.on_quote("BTC", 2_000_000, 2_000_000, NOW)
    assert not policy.reduce_only_reasons("BTC")
    policy.on_quote("BTC", 4_000_000, 4_000_000, NOW)      # BTC doubles: 2/3 of gross > 60 %
    assert policy.reduce_only_reasons("BTC") == {"concentration"}
    assert not policy.reduce_only_reasons("XYZ")
    policy.on_quote("BTC", 2_000_000, 2_000_000, NOW)
    assert not policy.reduce_only_reasons("BTC")


def test_daily_loss_trips_kill_switch():
    policy, k, pf, ks, alerts, _ = make_policy()
    pf.on_fill(fill("XYZ", "buy", 1000, 10_000))            # 100000 money long
    policy.on_quote("XYZ", 9_960, 9_960, NOW)               # -400: fine
    assert not ks.tripped
    policy.on_quote("XYZ", 9_940, 9_940, NOW)               # -600
    policy.start_day()                                       # new day: base = current equity
    policy.on_quote("XYZ", 9_900, 9_900, NOW)               # -400 today (-1000 overall)
    assert not ks.tripped
    policy.on_quote("XYZ", 9_400, 9_400, NOW)               # -5400 today > 5000
    assert ks.tripped and ks.reasons[0].startswith("daily_loss")
    policy.on_quote("XYZ", 9_000, 9_000, NOW)               # already tripped: no second trip
    assert len(ks.reasons) == 1


def test_drawdown_trips_kill_switch_without_a_killswitch_object():
    risk = dataclasses.replace(CFG.risk, daily_loss_limit=CFG.risk.daily_loss_limit * 100)
    cfg = dataclasses.replace(CFG, risk=risk)
    k = build_kernel(cfg)
    pf = Portfolio(INSTS, initial_capital=10_000)
    policy = RiskPolicy(cfg, k, pf, clock=lambda: NOW)
    pf.on_fill(fill("XYZ", "buy", 1000, 10_000))
    policy.on_quote("XYZ", 10_500, 10_500, NOW)              # equity 15000: the peak
    policy.on_quote("XYZ", 10_400, 10_400, NOW)              # dd 6.7 % < 10 %
    assert not k.kill_switch_tripped
    policy.on_quote("XYZ", 10_340, 10_340, NOW)              # equity 13400: dd 10.7 %
    assert k.kill_switch_tripped and policy.breaches[-1].kind == "drawdown"


def test_var_breach_switches_to_reduce_only_and_back():
    cfg = dataclasses.replace(CFG, risk=dataclasses.replace(CFG.risk, var_limit=Decimal("1000")))
    policy, k, pf, ks, alerts, clock = make_policy(cfg)
    interval = CFG.risk.var_interval_ms * 1_000_000
    rng = np.random.default_rng(7)
    price = 10_000.0
    pf.on_fill(fill("XYZ", "buy", 1000, 10_000))             # 100000 money
    assert policy.on_timer(clock[0]) is None                  # first sample: no returns yet
    results = []
    for _ in range(40):
        price *= 1 + rng.normal(0, 0.05)                      # wild: 5 % per interval
        p = int(price)
        policy.on_quote("XYZ", p, p, clock[0])
        clock[0] += interval
        results.append(policy.on_timer(clock[0]))
        assert policy.on_timer(clock[0] + 1) is None          # not before the next interval
    assert results[8] is None and results[9] is not None     # var_min_samples = 10
    v = policy.last_var
    assert v.method == "historical" and v.samples == 40 and v.value > 1000 and v.breached
    assert policy.var_reduce_only and k.reduce_only and "risk_var" in alerts
    k.set_position(XYZ, 1000)
    k.set_reference_price(XYZ, p, clock[0])
    assert k.would_pass(XYZ, 0, 1, p, 3, clock[0]) == rk.RISK_REJECT_REDUCE_ONLY
    # flat: VaR 0 -> reduce-only lifted at the next computation
    pf.on_fill(fill("XYZ", "sell", 1000, p))
    clock[0] += interval
    policy.on_timer(clock[0])
    assert policy.last_var.value == 0.0 and not policy.var_reduce_only and not k.reduce_only
    assert [b.kind for b in policy.breaches if b.kind.startswith("var")] == ["var", "var_cleared"]


def test_parametric_var_in_the_policy():
    cfg = dataclasses.replace(CFG, risk=dataclasses.replace(CFG.risk, var_method="parametric",
                                                            var_limit=Decimal("100")))
    policy, k, pf, ks, alerts, clock = make_policy(cfg)
    interval = CFG.risk.var_interval_ms * 1_000_000
    pf.on_fill(fill("BTC", "sell", 1000, 2_000_000))          # short 1 BTC (20000 money)
    rng = np.random.default_rng(3)
    prices = (2_000_000 * np.cumprod(1 + rng.normal(0, 0.002, 30))).astype(int)
    for p in prices:
        policy.on_quote("BTC", int(p), int(p), clock[0])
        policy.on_timer(clock[0])
        clock[0] += interval
    v = policy.last_var
    r = policy.returns()
    w = policy.exposures()
    assert w[1] < 0 and w[0] == 0
    assert v.method == "parametric" and v.value == pytest.approx(parametric_var(r, w, 0.99))
    assert v.breached == (v.value > 100) and policy.var_reduce_only == v.breached
