"""engine.analytics: metrics against an independent implementation (empyrical-reloaded),
hand-checked conventions, property tests, input errors, and the result digest."""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from bisect import bisect_right

import empyrical
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine import analytics as an
from engine.errors import DataError
from engine.orders import Fill, Side
from tests.conftest import REPO_ROOT, shared_file

REL = 1e-9
NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def random_curve(seed: int, n: int = 3000, max_gap_s: float = 20.0, vol: float = 0.001):
    """Irregularly spaced equity curve (timestamps ns, equity)."""
    rng = np.random.default_rng(seed)
    gaps = rng.integers(1, int(max_gap_s * NS), n)
    gaps[rng.random(n) < 0.05] = 0                      # some duplicate timestamps
    ts = T0 + np.cumsum(gaps).astype(np.int64)
    eq = 250_000.0 * np.cumprod(1.0 + rng.normal(0.00005, vol, n))
    return ts, eq


def reference_resample(ts, eq, dt_ns):
    """Pure-Python previous-tick sampling on t0 + k*dt."""
    ts_l = [int(t) for t in ts]
    out = []
    k = 0
    while ts_l[0] + k * dt_ns <= ts_l[-1]:
        i = bisect_right(ts_l, ts_l[0] + k * dt_ns) - 1
        out.append(float(eq[i]))
        k += 1
    return np.array(out)


def rel_close(a, b, rel=REL):
    return a == pytest.approx(b, rel=rel, abs=0.0)


# --------------------------------------------------------------------------- vs empyrical

@pytest.mark.parametrize("seed,interval", [(1, 60.0), (2, 15.0), (3, 300.0), (4, 1.0)])
def test_metrics_agree_with_empyrical(seed, interval):
    ts, eq = random_curve(seed)
    m = an.compute_metrics(ts, eq, None, 0.0, interval)
    returns = an.simple_returns(reference_resample(ts, eq, int(interval * NS)))
    assert m["n_returns"] == len(returns) > 10
    ann = m["annualisation_factor"]
    assert rel_close(ann, an.SECONDS_PER_YEAR / interval)
    assert rel_close(m["sharpe"], empyrical.sharpe_ratio(returns, annualization=ann))
    assert rel_close(m["sortino"], empyrical.sortino_ratio(returns, annualization=ann))
    assert rel_close(m["downside_deviation"] * math.sqrt(ann),
                     empyrical.downside_risk(returns, annualization=ann))
    # max drawdown is measured on the curve as given (every point)
    raw_returns = an.simple_returns(eq)
    assert rel_close(m["max_drawdown"], -empyrical.max_drawdown(raw_returns))
    assert rel_close(m["total_return"], empyrical.cum_returns_final(raw_returns))


def test_unsampled_metrics_agree_with_empyrical():
    ts, eq = random_curve(11, n=800)
    m = an.compute_metrics(ts, eq, sampling_interval=None, annualisation_factor=252)
    r = an.simple_returns(eq)
    assert m["sampling_interval_s"] is None and m["n_returns"] == len(r) == 799
    assert rel_close(m["sharpe"], empyrical.sharpe_ratio(r, annualization=252))
    assert rel_close(m["sortino"], empyrical.sortino_ratio(r, annualization=252))
    assert rel_close(m["annualised_volatility"], empyrical.annual_volatility(r, annualization=252))


def test_metrics_on_real_quotes_agree_with_empyrical():
    """A curve made from real prices: long 1 BTC at the first mid plus cash, marked to mid."""
    ts, mids = [], []
    with open(shared_file("quotes.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            ts.append(int(row["timestamp"]) * 1000)
            mids.append((float(row["bid_price"]) + float(row["ask_price"])) / 2.0)
    ts_a = np.array(ts, dtype=np.int64)
    order = np.argsort(ts_a, kind="stable")
    ts_a, mid = ts_a[order], np.array(mids)[order]
    equity = 20_000.0 + (mid - mid[0])
    m = an.compute_metrics(ts_a, equity, None, float(mid[0]), 1.0)
    r = an.simple_returns(an.resample_equity(ts_a, equity, 1.0))
    assert m["n_returns"] == len(r) > 100
    ann = m["annualisation_factor"]
    assert rel_close(m["sharpe"], empyrical.sharpe_ratio(r, annualization=ann))
    assert rel_close(m["sortino"], empyrical.sortino_ratio(r, annualization=ann))
    assert rel_close(m["max_drawdown"], -empyrical.max_drawdown(an.simple_returns(equity)))
    assert 0.0 < m["max_drawdown"] < 0.05


def test_rolling_agree_with_empyrical():
    ts, eq = random_curve(5, n=600)
    r = an.simple_returns(eq)
    w = 50
    ours = an.rolling_sharpe(r, w, 252.0)
    ref = empyrical.roll_sharpe_ratio(r, w, annualization=252)
    assert ours.shape == r.shape and np.isnan(ours[: w - 1]).all()
    np.testing.assert_allclose(ours[w - 1:], ref, rtol=REL, atol=0)
    dd = an.rolling_max_drawdown(eq, w)
    ref_dd = -empyrical.roll_max_drawdown(r, w)
    assert dd.shape == eq.shape and np.isnan(dd[:w]).all()
    np.testing.assert_allclose(dd[w:], ref_dd, rtol=REL, atol=1e-15)


def test_resample_matches_reference():
    ts, eq = random_curve(7, n=500)
    for interval in (0.5, 7.0, 61.0):
        np.testing.assert_array_equal(an.resample_equity(ts, eq, interval),
                                      reference_resample(ts, eq, int(round(interval * NS))))
    np.testing.assert_array_equal(an.resample_equity(ts, eq, None), eq)


# --------------------------------------------------------------------------- conventions by hand

def test_drawdown_and_duration_by_hand():
    ts = T0 + np.array([0, 10, 20, 30, 40, 50, 60, 70], dtype=np.int64) * NS
    eq = np.array([100, 110, 99, 88, 104, 110, 120, 114.0])
    m = an.compute_metrics(ts, eq, sampling_interval=None)
    assert m["max_drawdown"] == pytest.approx(0.2)               # 110 -> 88
    assert m["max_drawdown_peak_ns"] == ts[1] and m["max_drawdown_trough_ns"] == ts[3]
    assert m["max_drawdown_duration_s"] == 40.0                  # peak at 10 s, back at 110 at 50 s
    assert m["max_drawdown_recovered"] is True
    assert m["longest_drawdown_s"] == 40.0
    np.testing.assert_allclose(an.drawdown_series(eq), [0, 0, 0.1, 0.2, 6 / 110, 0, 0, 0.05])
    # an unrecovered drawdown lasts to the end of the curve
    m2 = an.compute_metrics(ts[:4], eq[:4], sampling_interval=None)
    assert m2["max_drawdown_duration_s"] == 20.0 and m2["max_drawdown_recovered"] is False
    m3 = an.compute_metrics(ts, np.linspace(100, 120, 8), sampling_interval=None)
    assert m3["max_drawdown"] == 0.0 and m3["max_drawdown_duration_s"] == 0.0


def test_trade_statistics_and_profit_factor_conventions():
    ts = T0 + np.arange(3, dtype=np.int64) * NS
    eq = np.array([100.0, 101.0, 102.0])
    m = an.compute_metrics(ts, eq, [10.0, -4.0, 0.0, 6.0, -1.0], 0.0, None)
    assert m["profit_factor"] == pytest.approx(16.0 / 5.0)
    assert m["win_rate"] == pytest.approx(2 / 5)                 # a zero trade is not a win
    assert (m["n_trades"], m["n_wins"], m["n_losses"]) == (5, 2, 2)
    assert m["gross_profit"] == 16.0 and m["gross_loss"] == 5.0
    no_loss = an.compute_metrics(ts, eq, [1.0, 2.0], 0.0, None)
    assert no_loss["profit_factor"] == math.inf
    nothing = an.compute_metrics(ts, eq, None, 0.0, None)
    assert nothing["n_trades"] == 0 and math.isnan(nothing["profit_factor"]) and math.isnan(nothing["win_rate"])


def test_nonfinite_metrics_serialise_as_null_with_flag():
    ts = T0 + np.arange(3, dtype=np.int64) * NS
    m = an.compute_metrics(ts, [100.0, 101.0, 102.0], [1.0, 2.0], 0.0, None)
    j = an.metrics_to_json(m)
    assert j["profit_factor"] is None and j["nonfinite"]["profit_factor"] == "inf"
    assert j["sharpe"] is not None and "sharpe" not in j["nonfinite"]
    import json
    back = an.metrics_from_json(json.loads(json.dumps(j, allow_nan=False)))
    assert back["profit_factor"] == math.inf
    assert {k: v for k, v in back.items() if k != "profit_factor"} == \
        {k: v for k, v in m.items() if k != "profit_factor"}


def test_sharpe_degenerate_cases():
    assert math.isnan(an.sharpe_ratio([0.01]))
    assert an.sharpe_ratio([0.01, 0.01, 0.01]) == math.inf
    assert an.sharpe_ratio([-0.01, -0.01]) == -math.inf
    assert math.isnan(an.sharpe_ratio([0.0, 0.0]))
    assert an.sortino_ratio([0.01, 0.02]) == math.inf           # no downside
    assert math.isnan(an.sortino_ratio([0.0, 0.0]))


def test_turnover_is_notional_over_time_weighted_equity():
    ts = T0 + np.array([0, 10, 40], dtype=np.int64) * NS
    eq = np.array([100.0, 200.0, 50.0])
    m = an.compute_metrics(ts, eq, None, 1500.0, None)
    # time-weighted mean: (100*10 + 200*30) / 40 = 175
    assert m["turnover"] == pytest.approx(1500.0 / 175.0)
    assert m["total_return"] == pytest.approx(-0.5)
    assert m["duration_s"] == 40.0


def test_metric_keys_present():
    ts, eq = random_curve(9, n=200)
    m = an.compute_metrics(ts, eq, [1.0, -1.0], 10.0, 30.0)
    assert set(an.METRIC_KEYS) <= set(m)
    for k in ("sharpe", "sortino", "max_drawdown", "max_drawdown_duration_s", "profit_factor",
              "total_return", "win_rate", "n_trades", "turnover", "sampling_interval_s",
              "annualisation_factor"):
        assert k in m


def test_slippage_sign_and_statistics():
    sim = np.array([100.0, 100.0, 200.0, 200.0])
    real = np.array([100.01, 99.99, 199.98, 200.02])
    sides = [0, 0, 1, "sell"]
    d = an.slippage_bps(sim, real, sides)
    np.testing.assert_allclose(d, [1.0, -1.0, 1.0, -1.0], rtol=1e-9)   # buy higher / sell lower = worse
    rng = np.random.default_rng(2)
    sim = rng.uniform(90, 110, 301)
    real = sim * (1 + rng.normal(0, 3e-4, 301))
    sides = rng.integers(0, 2, 301)
    s = an.slippage_stats(sim, real, sides)
    d = an.slippage_bps(sim, real, sides)
    assert s["n"] == 301
    assert rel_close(s["mean_bps"], d.mean()) and rel_close(s["std_bps"], d.std(ddof=1))
    assert rel_close(s["mean_abs_bps"], np.abs(d).mean())
    for q in an.PERCENTILES:
        assert s[f"p{q:g}_bps"] == pytest.approx(np.percentile(d, q), rel=1e-12, abs=1e-12)
    assert s["min_bps"] == d.min() and s["max_bps"] == d.max()
    empty = an.slippage_stats([], [], [])
    assert empty["n"] == 0 and math.isnan(empty["mean_abs_bps"])


@pytest.mark.parametrize("call,match", [
    (lambda: an.compute_metrics([1, 2], [1.0, float("nan")]), r"equity\[1\] = nan: values must be finite"),
    (lambda: an.compute_metrics([1, 2], [1.0, -3.0]), r"equity\[1\] = -3.0: values must be > 0"),
    (lambda: an.compute_metrics([5, 2], [1.0, 2.0]), r"equity_ts_ns\[1\] = 2 < equity_ts_ns\[0\] = 5"),
    (lambda: an.compute_metrics([1, 2, 3], [1.0, 2.0]), r"equity_ts_ns has 3 points, equity 2"),
    (lambda: an.compute_metrics([], []), r"the curve is empty"),
    (lambda: an.compute_metrics([1.5, 2.5], [1.0, 2.0]), r"equity_ts_ns: expected integer nanoseconds"),
    (lambda: an.compute_metrics([1, 2], [1.0, 2.0], sampling_interval=0), r"sampling_interval 0"),
    (lambda: an.compute_metrics([1, 2], [1.0, 2.0], annualisation_factor=-1), r"annualisation_factor -1"),
    (lambda: an.compute_metrics([1, 2], [1.0, 2.0], [1.0, math.inf]), r"trade_pnls\[1\] = inf"),
    (lambda: an.compute_metrics([1, 2], [1.0, 2.0], None, -5.0), r"traded_notional -5.0"),
    (lambda: an.slippage_bps([1.0], [1.0], [2]), r"sides\[0\] = 2"),
    (lambda: an.rolling_sharpe([0.1, 0.2], 1), r"window 1"),
])
def test_bad_input_is_a_clear_data_error(call, match):
    with pytest.raises(DataError, match=match):
        call()


# --------------------------------------------------------------------------- properties

returns_st = st.lists(st.floats(-0.2, 0.2, allow_nan=False, allow_subnormal=False), min_size=3, max_size=200)


@settings(max_examples=60, deadline=None)
@given(returns_st, st.floats(0.01, 1000.0))
def test_sharpe_and_sortino_scale_invariant(rs, k):
    r = np.array(rs)
    if np.std(r) < 1e-9 or not (r < -1e-9).any():
        return
    assert an.sharpe_ratio(r * k, 252) == pytest.approx(an.sharpe_ratio(r, 252), rel=1e-9, abs=1e-12)
    assert an.sortino_ratio(r * k, 252) == pytest.approx(an.sortino_ratio(r, 252), rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(returns_st, st.floats(1e-3, 1e6))
@example(rs=[0.0, 0.125, -2.220446049250313e-16], capital=1.5)   # a downside of rounding residue (CI)
def test_drawdown_bounded_and_capital_invariant(rs, capital):
    eq = 100.0 * np.cumprod(1.0 + np.array(rs))
    ts = T0 + np.arange(len(eq), dtype=np.int64) * NS
    m = an.compute_metrics(ts, eq, sampling_interval=None)
    assert 0.0 <= m["max_drawdown"] < 1.0
    dd = an.drawdown_series(eq)
    assert (dd >= 0.0).all() and (dd < 1.0).all()
    assert dd.max() == pytest.approx(m["max_drawdown"], rel=1e-12, abs=1e-15)
    assert 0.0 <= m["max_drawdown_duration_s"] <= m["longest_drawdown_s"] <= m["duration_s"]
    scaled = an.compute_metrics(ts, eq * capital, sampling_interval=None)
    keys = ["max_drawdown", "total_return"]
    if m["return_std"] > 1e-9:                  # a zero-variance Sharpe is +-inf or a rounding artefact
        keys.append("sharpe")
    if m["downside_deviation"] > 1e-9:          # likewise a Sortino whose downside is rounding residue
        keys.append("sortino")
    for key in keys:
        a, b = m[key], scaled[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 0.05, allow_nan=False), min_size=2, max_size=100))
def test_rising_curve_has_no_drawdown(rs):
    eq = 50.0 * np.cumprod(1.0 + np.array(rs))
    assert an.max_drawdown(eq) == 0.0


# --------------------------------------------------------------------------- digest

def sample_fills():
    return [Fill(cl_ord_id=1000 + i, exec_id=f"E{i}", symbol="AAPL", inst_id=1,
                 side=Side.BUY if i % 2 == 0 else Side.SELL, qty=10 + i, price=1_500_000 + 25 * i,
                 ts_ns=T0 + i * NS, leaves_qty=0, commission=0.01 * i if i else None)
            for i in range(50)]


def sample_equity():
    ts, eq = random_curve(21, n=300)
    return ts, eq


def test_digest_is_stable_and_pinned():
    fills, eq = sample_fills(), sample_equity()
    d1 = an.digest(fills, eq)
    d2 = an.digest(sample_fills(), sample_equity())
    assert d1 == d2 and len(d1) == 64
    # the canonical encoding is pinned: a change of encoding must be deliberate
    pinned = an.digest([{"px": 1.5, "qty": 3, "side": "buy"}], ([1, 2], [100.0, 101.5]))
    assert pinned == "f8888743822727d9791b405659d7df2cacd3124b25fab3e50f0cb4d77c36aeaf"


def test_digest_stable_across_processes():
    code = ("from tests.test_analytics import sample_fills, sample_equity;"
            "from engine.analytics import digest; print(digest(sample_fills(), sample_equity()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert out.stdout.strip() == an.digest(sample_fills(), sample_equity())


def test_digest_sensitive_to_one_changed_fill():
    import dataclasses
    fills, eq = sample_fills(), sample_equity()
    base = an.digest(fills, eq)
    seen = {base}
    for field, value in (("price", fills[17].price + 1), ("qty", fills[17].qty + 1),
                         ("side", fills[17].side.opposite), ("ts_ns", fills[17].ts_ns + 1), ("exec_id", "E17x"),
                         ("commission", 0.1700000001)):
        changed = list(fills)
        changed[17] = dataclasses.replace(fills[17], **{field: value})
        d = an.digest(changed, eq)
        assert d not in seen, field
        seen.add(d)
    assert an.digest(fills[:-1], eq) not in seen                  # one fill fewer
    assert an.digest(fills[1:] + fills[:1], eq) not in seen       # order matters
    ts, values = eq
    v2 = values.copy()
    v2[123] = np.nextafter(v2[123], np.inf)                       # one ulp of one equity point
    assert an.digest(fills, (ts, v2)) != base
    assert an.digest(fills, None) != base


def test_digest_of_structured_array_and_normalisation():
    dt = np.dtype([("id", "<u8"), ("px", "<i8"), ("qty", "<i8"), ("fee", "<f8")])
    a = np.zeros(20, dtype=dt)
    a["id"] = np.arange(20, dtype=np.uint64) + np.uint64(2**63)
    a["px"] = 10_000 + np.arange(20)
    a["qty"] = 5
    eq = ([0, 1], [1.0, 1.0])
    base = an.digest(a, eq)
    assert an.digest(a.copy(), eq) == base
    b = a.copy()
    b["px"][3] += 1
    assert an.digest(b, eq) != base
    c = a.copy()
    c["fee"][0] = -0.0                                            # -0.0 == 0.0
    assert an.digest(c, eq) == base
    with pytest.raises(TypeError, match="cannot encode a value of type object"):
        an.digest([object()], None)
