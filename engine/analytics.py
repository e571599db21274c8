"""Performance analytics of a stage run: returns, Sharpe, Sortino, drawdown, trade
statistics, slippage statistics, rolling versions, and the result digest.

The kernels are numba (``@njit(cache=True)``); the Python functions around them check
their input (a clear :class:`~engine.errors.DataError` naming the bad argument, never
garbage out) and assemble the results.

Conventions (every metric of :func:`compute_metrics`)
------------------------------------------------------
Equity curve
    ``equity_ts_ns`` (int64 ns, non-decreasing) and ``equity`` (float64, finite, > 0):
    the account value (cash + marked positions) at each timestamp.
Returns
    Simple returns ``r_k = E_k / E_{k-1} - 1`` of the equity *resampled* on a regular
    grid ``t_0, t_0 + dt, ..., t_0 + K*dt`` (``dt`` = ``sampling_interval`` seconds,
    ``K = floor((t_last - t_0) / dt)``) where ``E_k`` is the last equity observed at or
    before grid time ``t_0 + k*dt`` (previous-tick sampling). The trailing partial
    interval after ``t_0 + K*dt`` is not a return (it still counts in ``total_return``
    and in the drawdown). ``sampling_interval=None``: the returns are those between
    consecutive points of the curve as given.
Annualisation factor ``A``
    Return periods per year. Default (``None``): ``SECONDS_PER_YEAR / sampling_interval``
    with ``SECONDS_PER_YEAR = 365 * 86400`` (a market that trades around the clock; for an
    exchange session pass ``252 * session_seconds / sampling_interval``); with
    ``sampling_interval=None`` the default is 1 (not annualised).
Sharpe
    ``mean(r) / std(r, ddof=1) * sqrt(A)``; risk-free rate 0. Fewer than 2 returns: NaN.
    ``std == 0``: +inf / -inf by the sign of the mean, NaN when the mean is 0 too.
Sortino
    ``mean(r) / DD * sqrt(A)`` with the downside deviation
    ``DD = sqrt(sum(min(r_k, 0)^2) / N)`` over *all* N returns (target return 0; the
    Sortino-Price definition, as empyrical). Fewer than 2 returns: NaN. ``DD == 0``: +inf
    when the mean is positive, NaN when it is 0.
Max drawdown
    ``max_t (1 - E_t / max_{s<=t} E_s)``, a fraction in [0, 1), on the curve *as given*
    (every point, not the resampled one, so sampling cannot hide a dip).
    ``max_drawdown_duration_s``: from the peak that precedes the deepest trough to the
    first later point at or above that peak, or to the end of the curve when it never
    recovers (``max_drawdown_recovered`` says which). ``longest_drawdown_s``: the longest
    such underwater period of any drawdown. 0 when the curve never falls.
Trades
    ``trade_pnls``: realised P&L per closed trade (round trip), money.
    ``profit_factor = gross_profit / gross_loss`` (``gross_loss`` as a positive number);
    no losing trade and some profit: +inf; no profit and no loss: NaN.
    ``win_rate = n_wins / n_trades`` (a zero-P&L trade is not a win); no trades: NaN.
Turnover
    ``traded_notional / time-weighted mean equity`` over the run (not annualised).
Total return
    ``E_last / E_first - 1`` on the curve as given.
Non-finite values
    The dict holds Python floats, so inf and NaN stay what they are for the promotion
    gate. :func:`metrics_to_json` turns them into ``null`` with a flag in ``"nonfinite"``
    (``{"profit_factor": "inf"}``); :func:`metrics_from_json` restores them.

Slippage (:func:`slippage_bps`, :func:`slippage_stats`)
    Per paired fill ``side_sign * (real - sim) / sim * 1e4`` bps, ``side_sign`` +1 for a
    buy, -1 for a sell: positive means the real fill was worse than the simulated one.
    Statistics: mean, std (ddof=1), mean absolute (the "slippage model error" of the
    shadow stage), min, max, percentiles with linear interpolation (numpy's default).
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numba import njit

from engine.errors import DataError

__all__ = [
    "SECONDS_PER_YEAR", "ANALYTICS_VERSION", "METRIC_KEYS", "PERCENTILES",
    "compute_metrics", "resample_equity", "simple_returns", "sharpe_ratio", "sortino_ratio",
    "downside_deviation", "max_drawdown", "drawdown_series", "rolling_sharpe",
    "rolling_max_drawdown", "trade_statistics", "slippage_bps", "slippage_stats",
    "metrics_to_json", "metrics_from_json", "digest",
]

SECONDS_PER_YEAR = 365 * 86400
ANALYTICS_VERSION = 1
PERCENTILES = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)

# keys every compute_metrics result has (the promotion gate and the report rely on them)
METRIC_KEYS = (
    "sharpe", "sortino", "max_drawdown", "max_drawdown_duration_s", "max_drawdown_recovered",
    "max_drawdown_peak_ns", "max_drawdown_trough_ns", "longest_drawdown_s",
    "profit_factor", "total_return", "win_rate", "n_trades", "n_wins", "n_losses",
    "gross_profit", "gross_loss", "mean_trade_pnl", "turnover", "traded_notional",
    "n_returns", "mean_return", "return_std", "downside_deviation",
    "annualised_return", "annualised_volatility", "sampling_interval_s",
    "annualisation_factor", "start_ns", "end_ns", "duration_s", "start_equity",
    "end_equity", "analytics_version",
)


# --------------------------------------------------------------------------- kernels

@njit(cache=True)
def _resample_last(ts, eq, dt):
    """Equity at t0 + k*dt (k = 0..K) by previous-tick sampling. ts sorted, len >= 1."""
    n = ts.shape[0]
    t0 = ts[0]
    k_max = (ts[n - 1] - t0) // dt
    out = np.empty(k_max + 1, np.float64)
    j = 0
    for k in range(k_max + 1):
        t = t0 + k * dt
        while j + 1 < n and ts[j + 1] <= t:
            j += 1
        out[k] = eq[j]
    return out


@njit(cache=True)
def _simple_returns(values):
    n = values.shape[0]
    if n < 2:
        return np.empty(0, np.float64)
    out = np.empty(n - 1, np.float64)
    for i in range(n - 1):
        out[i] = values[i + 1] / values[i] - 1.0
    return out


@njit(cache=True)
def _mean(x):
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        s += x[i]
    return s / n


@njit(cache=True)
def _std_ddof1(x, mean):
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        d = x[i] - mean
        s += d * d
    return math.sqrt(s / (n - 1))


@njit(cache=True)
def _downside_dev(x):
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        if x[i] < 0.0:
            s += x[i] * x[i]
    return math.sqrt(s / n)


@njit(cache=True)
def _ratio(num, den):
    """num / den with den >= 0; den == 0 gives +-inf by the sign of num, NaN for 0/0."""
    if den > 0.0:
        return num / den
    if num > 0.0:
        return np.inf
    if num < 0.0:
        return -np.inf
    return np.nan


@njit(cache=True)
def _sharpe(r, ann):
    if r.shape[0] < 2:
        return np.nan
    m = _mean(r)
    return _ratio(m, _std_ddof1(r, m)) * math.sqrt(ann)


@njit(cache=True)
def _sortino(r, ann):
    if r.shape[0] < 2:
        return np.nan
    m = _mean(r)
    return _ratio(m, _downside_dev(r)) * math.sqrt(ann)


@njit(cache=True)
def _drawdown(ts, eq):
    """(max dd, peak idx, trough idx, recovery idx or -1, longest underwater ns)."""
    n = eq.shape[0]
    peak = eq[0]
    peak_i = 0
    mdd = 0.0
    mdd_peak = 0
    mdd_trough = 0
    under = False
    longest = 0
    for i in range(1, n):
        e = eq[i]
        if e >= peak:
            if under:
                d = ts[i] - ts[peak_i]
                if d > longest:
                    longest = d
                under = False
            peak = e
            peak_i = i
        else:
            under = True
            dd = 1.0 - e / peak
            if dd > mdd:
                mdd = dd
                mdd_peak = peak_i
                mdd_trough = i
    if under:
        d = ts[n - 1] - ts[peak_i]
        if d > longest:
            longest = d
    recovery = -1
    if mdd > 0.0:
        target = eq[mdd_peak]
        for i in range(mdd_trough + 1, n):
            if eq[i] >= target:
                recovery = i
                break
    return mdd, mdd_peak, mdd_trough, recovery, longest


@njit(cache=True)
def _drawdown_series(eq):
    n = eq.shape[0]
    out = np.empty(n, np.float64)
    peak = -np.inf
    for i in range(n):
        if eq[i] > peak:
            peak = eq[i]
        out[i] = 1.0 - eq[i] / peak
    return out


@njit(cache=True)
def _rolling_sharpe(r, window, ann):
    n = r.shape[0]
    out = np.full(n, np.nan)
    for i in range(window - 1, n):
        out[i] = _sharpe(r[i - window + 1:i + 1], ann)
    return out


@njit(cache=True)
def _max_dd_only(eq):
    peak = eq[0]
    mdd = 0.0
    for i in range(1, eq.shape[0]):
        e = eq[i]
        if e > peak:
            peak = e
        else:
            dd = 1.0 - e / peak
            if dd > mdd:
                mdd = dd
    return mdd


@njit(cache=True)
def _rolling_max_dd(eq, window):
    n = eq.shape[0]
    out = np.full(n, np.nan)
    for i in range(window, n):
        out[i] = _max_dd_only(eq[i - window:i + 1])
    return out


@njit(cache=True)
def _trade_sums(p):
    gp = 0.0
    gl = 0.0
    wins = 0
    losses = 0
    for i in range(p.shape[0]):
        v = p[i]
        if v > 0.0:
            gp += v
            wins += 1
        elif v < 0.0:
            gl -= v
            losses += 1
    return gp, gl, wins, losses


@njit(cache=True)
def _time_weighted_mean(ts, eq):
    n = eq.shape[0]
    span = ts[n - 1] - ts[0]
    if span <= 0:
        return _mean(eq)
    s = 0.0
    for i in range(n - 1):
        s += eq[i] * float(ts[i + 1] - ts[i])
    return s / float(span)


@njit(cache=True)
def _slippage(sim, real, sign):
    n = sim.shape[0]
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = sign[i] * (real[i] - sim[i]) / sim[i] * 1e4
    return out


@njit(cache=True)
def _percentiles_sorted(xs, qs):
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    n = xs.shape[0]
    out = np.empty(qs.shape[0], np.float64)
    for j in range(qs.shape[0]):
        pos = qs[j] / 100.0 * (n - 1)
        lo = int(math.floor(pos))
        if lo >= n - 1:
            out[j] = xs[n - 1]
        else:
            frac = pos - lo
            a = xs[lo]
            b = xs[lo + 1]
            out[j] = a + (b - a) * frac
    return out


# --------------------------------------------------------------------------- input checks

def _as_float_array(values: Any, name: str, *, positive: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: not a sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{name}[{i}] = {float(arr[i])!r}: values must be finite")
    if positive and arr.size and (arr <= 0.0).any():
        i = int(np.argmax(arr <= 0.0))
        raise DataError(f"{name}[{i}] = {float(arr[i])!r}: values must be > 0")
    return np.ascontiguousarray(arr)


def _as_ts_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name}: expected integer nanoseconds, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size > 1:
        dec = np.diff(arr) < 0
        if dec.any():
            i = int(np.argmax(dec)) + 1
            raise DataError(f"{name}[{i}] = {int(arr[i])} < {name}[{i - 1}] = {int(arr[i - 1])}: "
                            f"timestamps must be non-decreasing")
    return arr


def _equity_curve(equity_ts_ns: Any, equity: Any) -> tuple[np.ndarray, np.ndarray]:
    ts = _as_ts_array(equity_ts_ns, "equity_ts_ns")
    eq = _as_float_array(equity, "equity", positive=True)
    if ts.shape[0] != eq.shape[0]:
        raise DataError(f"equity_ts_ns has {ts.shape[0]} points, equity {eq.shape[0]}: "
                        f"they must be the same length")
    if eq.shape[0] == 0:
        raise DataError("equity: the curve is empty (need at least one point)")
    return ts, eq


def _interval_ns(sampling_interval: float | None) -> int | None:
    if sampling_interval is None:
        return None
    try:
        s = float(sampling_interval)
    except (TypeError, ValueError):
        raise DataError(f"sampling_interval {sampling_interval!r}: not a number of seconds") from None
    if not math.isfinite(s) or s <= 0.0:
        raise DataError(f"sampling_interval {sampling_interval!r}: must be a finite number of seconds > 0")
    dt = int(round(s * 1e9))
    if dt < 1:
        raise DataError(f"sampling_interval {sampling_interval!r}: below 1 ns")
    return dt


def _annualisation(annualisation_factor: float | None, sampling_interval: float | None) -> float:
    if annualisation_factor is None:
        return 1.0 if sampling_interval is None else SECONDS_PER_YEAR / float(sampling_interval)
    try:
        a = float(annualisation_factor)
    except (TypeError, ValueError):
        raise DataError(f"annualisation_factor {annualisation_factor!r}: not a number") from None
    if not math.isfinite(a) or a <= 0.0:
        raise DataError(f"annualisation_factor {annualisation_factor!r}: must be finite and > 0")
    return a


def _window(window: Any) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise DataError(f"window {window!r}: must be an integer >= 2")
    return int(window)


# --------------------------------------------------------------------------- public API

def resample_equity(equity_ts_ns: Any, equity: Any, sampling_interval: float | None) -> np.ndarray:
    """The equity on the regular grid of the module conventions (previous-tick sampling);
    ``sampling_interval=None`` returns the curve's values as given."""
    ts, eq = _equity_curve(equity_ts_ns, equity)
    dt = _interval_ns(sampling_interval)
    if dt is None:
        return eq.copy()
    return _resample_last(ts, eq, dt)


def simple_returns(values: Any) -> np.ndarray:
    """``values[i+1] / values[i] - 1`` (length n-1; empty for fewer than 2 values)."""
    return _simple_returns(_as_float_array(values, "values", positive=True))


def sharpe_ratio(returns: Any, annualisation_factor: float = 1.0) -> float:
    """Sharpe of simple returns: mean / std(ddof=1) * sqrt(A), risk-free 0."""
    return float(_sharpe(_as_float_array(returns, "returns"), _annualisation(annualisation_factor, None)))


def sortino_ratio(returns: Any, annualisation_factor: float = 1.0) -> float:
    """Sortino of simple returns: mean / downside deviation * sqrt(A), target 0."""
    return float(_sortino(_as_float_array(returns, "returns"), _annualisation(annualisation_factor, None)))


def downside_deviation(returns: Any) -> float:
    """sqrt(sum(min(r, 0)^2) / N) over all N returns (not annualised); NaN when empty."""
    r = _as_float_array(returns, "returns")
    return float(_downside_dev(r)) if r.size else math.nan


def max_drawdown(equity: Any) -> float:
    """Largest fall from a running peak as a fraction of that peak, in [0, 1)."""
    eq = _as_float_array(equity, "equity", positive=True)
    if eq.size == 0:
        raise DataError("equity: the curve is empty (need at least one point)")
    return float(_max_dd_only(eq))


def drawdown_series(equity: Any) -> np.ndarray:
    """Underwater curve: ``1 - E_t / max_{s<=t} E_s`` at every point (>= 0)."""
    return _drawdown_series(_as_float_array(equity, "equity", positive=True))


def rolling_sharpe(returns: Any, window: int, annualisation_factor: float = 1.0) -> np.ndarray:
    """Sharpe over the last ``window`` returns at each index (same length as ``returns``;
    NaN before the first full window)."""
    return _rolling_sharpe(_as_float_array(returns, "returns"), _window(window),
                           _annualisation(annualisation_factor, None))


def rolling_max_drawdown(equity: Any, window: int) -> np.ndarray:
    """Max drawdown over the last ``window`` returns, i.e. of ``equity[i-window..i]``, at each
    index (same length as ``equity``; NaN for i < window)."""
    return _rolling_max_dd(_as_float_array(equity, "equity", positive=True), _window(window))


def trade_statistics(trade_pnls: Any) -> dict[str, Any]:
    """n_trades, n_wins, n_losses, gross_profit, gross_loss (>= 0), profit_factor, win_rate,
    mean_trade_pnl (module conventions for the empty and no-loss cases)."""
    p = _as_float_array(np.zeros(0) if trade_pnls is None else trade_pnls, "trade_pnls")
    gp, gl, wins, losses = _trade_sums(p)
    n = int(p.shape[0])
    if gl > 0.0:
        pf = gp / gl
    elif gp > 0.0:
        pf = math.inf
    else:
        pf = math.nan
    return {
        "n_trades": n, "n_wins": int(wins), "n_losses": int(losses),
        "gross_profit": float(gp), "gross_loss": float(gl), "profit_factor": float(pf),
        "win_rate": wins / n if n else math.nan,
        "mean_trade_pnl": float(_mean(p)) if n else math.nan,
    }


def _side_signs(sides: Any, n: int) -> np.ndarray:
    """+1 for a buy (0, "buy", "b"), -1 for a sell (1, "sell", "s")."""
    items = sides.tolist() if isinstance(sides, np.ndarray) else list(sides)
    if len(items) != n:
        raise DataError(f"sides: expected {n} sides, got {len(items)}")
    out = np.empty(n, np.float64)
    for i, s in enumerate(items):
        key = s.strip().lower() if isinstance(s, str) else s
        if key in ("buy", "b") or (isinstance(key, int) and not isinstance(key, bool) and key == 0):
            out[i] = 1.0
        elif key in ("sell", "s") or (isinstance(key, int) and not isinstance(key, bool) and key == 1):
            out[i] = -1.0
        else:
            raise DataError(f"sides[{i}] = {s!r}: must be 0/'buy' or 1/'sell'")
    return out


def slippage_bps(sim_prices: Any, real_prices: Any, sides: Any) -> np.ndarray:
    """Per paired fill: side_sign * (real - sim) / sim * 1e4 (positive: real fill worse)."""
    sim = _as_float_array(sim_prices, "sim_prices", positive=True)
    real = _as_float_array(real_prices, "real_prices", positive=True)
    if sim.shape != real.shape:
        raise DataError(f"sim_prices has {sim.shape[0]} prices, real_prices {real.shape[0]}")
    return _slippage(sim, real, _side_signs(sides, sim.shape[0]))


def slippage_stats(sim_prices: Any, real_prices: Any, sides: Any) -> dict[str, Any]:
    """n, mean_bps, std_bps (ddof=1), mean_abs_bps, min_bps, max_bps and p{q}_bps for q in
    PERCENTILES (e.g. ``p50_bps``); NaN where undefined (no fills; std with one fill)."""
    d = slippage_bps(sim_prices, real_prices, sides)
    n = int(d.shape[0])
    out: dict[str, Any] = {"n": n}
    if n == 0:
        out.update(mean_bps=math.nan, std_bps=math.nan, mean_abs_bps=math.nan,
                   min_bps=math.nan, max_bps=math.nan)
        out.update({_pkey(q): math.nan for q in PERCENTILES})
        return out
    m = float(_mean(d))
    xs = np.sort(d)
    out.update(mean_bps=m, std_bps=float(_std_ddof1(d, m)) if n > 1 else math.nan,
               mean_abs_bps=float(_mean(np.abs(d))), min_bps=float(xs[0]), max_bps=float(xs[-1]))
    ps = _percentiles_sorted(xs, np.asarray(PERCENTILES, np.float64))
    out.update({_pkey(q): float(v) for q, v in zip(PERCENTILES, ps, strict=True)})
    return out


def _pkey(q: float) -> str:
    return f"p{q:g}_bps"


def compute_metrics(equity_ts_ns: Any, equity: Any, trade_pnls: Any = None,
                    traded_notional: float = 0.0, sampling_interval: float | None = 60.0,
                    annualisation_factor: float | None = None) -> dict[str, Any]:
    """Every metric of a run (keys: METRIC_KEYS), by the conventions of the module docstring.

    ``equity_ts_ns``/``equity``: the equity curve; ``trade_pnls``: realised P&L per closed
    trade (None: no trades); ``traded_notional``: money traded over the run (sum of
    |qty * price|); ``sampling_interval``: seconds between resampled points (None: use the
    points as given); ``annualisation_factor``: return periods per year (None: derived from
    ``sampling_interval``). Values are Python int/float/bool; inf/NaN kept as floats.
    """
    ts, eq = _equity_curve(equity_ts_ns, equity)
    dt = _interval_ns(sampling_interval)
    ann = _annualisation(annualisation_factor, None if dt is None else float(sampling_interval))
    try:
        notional = float(traded_notional)
    except (TypeError, ValueError):
        raise DataError(f"traded_notional {traded_notional!r}: not a number") from None
    if not math.isfinite(notional) or notional < 0.0:
        raise DataError(f"traded_notional {traded_notional!r}: must be finite and >= 0")

    values = eq if dt is None else _resample_last(ts, eq, dt)
    r = _simple_returns(values)
    n_r = int(r.shape[0])
    mean_r = float(_mean(r)) if n_r else math.nan
    std_r = float(_std_ddof1(r, mean_r)) if n_r > 1 else math.nan
    dd_r = float(_downside_dev(r)) if n_r else math.nan

    mdd, peak_i, trough_i, rec_i, longest = _drawdown(ts, eq)
    end_i = rec_i if rec_i >= 0 else eq.shape[0] - 1
    mdd_dur = (int(ts[end_i]) - int(ts[peak_i])) / 1e9 if mdd > 0.0 else 0.0

    m: dict[str, Any] = {
        "sharpe": float(_sharpe(r, ann)),
        "sortino": float(_sortino(r, ann)),
        "max_drawdown": float(mdd),
        "max_drawdown_duration_s": mdd_dur,
        "max_drawdown_recovered": bool(mdd == 0.0 or rec_i >= 0),
        "max_drawdown_peak_ns": int(ts[peak_i]),
        "max_drawdown_trough_ns": int(ts[trough_i]),
        "longest_drawdown_s": int(longest) / 1e9,
        "total_return": float(eq[-1] / eq[0] - 1.0),
        "turnover": notional / float(_time_weighted_mean(ts, eq)),
        "traded_notional": notional,
        "n_returns": n_r,
        "mean_return": mean_r,
        "return_std": std_r,
        "downside_deviation": dd_r,
        "annualised_return": mean_r * ann,
        "annualised_volatility": std_r * math.sqrt(ann),
        "sampling_interval_s": None if dt is None else dt / 1e9,
        "annualisation_factor": ann,
        "start_ns": int(ts[0]),
        "end_ns": int(ts[-1]),
        "duration_s": (int(ts[-1]) - int(ts[0])) / 1e9,
        "start_equity": float(eq[0]),
        "end_equity": float(eq[-1]),
        "analytics_version": ANALYTICS_VERSION,
    }
    m.update(trade_statistics(trade_pnls))
    return m


# --------------------------------------------------------------------------- serialisation

def metrics_to_json(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy: every non-finite float becomes None and is listed in
    ``"nonfinite"`` as "inf", "-inf" or "nan"; numpy scalars become Python scalars."""
    out: dict[str, Any] = {}
    flags: dict[str, str] = {}
    for k, v in metrics.items():
        if k == "nonfinite":
            continue
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            flags[k] = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
            v = None
        out[k] = v
    out["nonfinite"] = flags
    return out


def metrics_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`metrics_to_json` (restores inf / -inf / NaN from the flags)."""
    out = {k: v for k, v in data.items() if k != "nonfinite"}
    for k, flag in (data.get("nonfinite") or {}).items():
        out[k] = float(flag)
    return out


# --------------------------------------------------------------------------- digest

_DIGEST_MAGIC = b"engine.analytics.digest/v1\x00"


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def _canon_float(x: float) -> bytes:
    if x != x:
        return b"\x00\x00\x00\x00\x00\x00\xf8\x7f"   # one NaN
    if x == 0.0:
        x = 0.0                                      # -0.0 == 0.0
    return struct.pack("<d", x)


def _canon_array(arr: np.ndarray, out: bytearray) -> None:
    """Numeric array: kind tag, shape, values as little-endian int64/uint64/float64."""
    a = np.asarray(arr)
    if a.dtype.names:
        out += b"R" + _u64(len(a.dtype.names)) + _u64(a.shape[0] if a.ndim else 1)
        for name in a.dtype.names:
            _canon(name, out)
            _canon_array(a[name], out)
        return
    if a.dtype.kind == "b":
        body = a.astype(np.uint8).tobytes()
        tag = b"b"
    elif a.dtype.kind == "i":
        body = a.astype("<i8").tobytes()
        tag = b"i"
    elif a.dtype.kind == "u":
        body = a.astype("<u8").tobytes()
        tag = b"u"
    elif a.dtype.kind == "f":
        f = a.astype("<f8")          # a copy: normalise -0.0 and NaN without touching the input
        f[f == 0.0] = 0.0
        f[np.isnan(f)] = np.nan
        body = f.tobytes()
        tag = b"f"
    elif a.dtype.kind in "SUO":
        out += b"L" + _u64(a.size)
        for item in a.ravel().tolist():
            _canon(item, out)
        return
    else:
        raise TypeError(f"digest: cannot encode an array of dtype {a.dtype}")
    out += b"A" + tag + _u64(a.ndim)
    for d in a.shape:
        out += _u64(d)
    out += _u64(len(body)) + body


def _canon(v: Any, out: bytearray) -> None:
    """Type-tagged, length-prefixed canonical bytes of a value."""
    if v is None:
        out += b"N"
    elif isinstance(v, (bool, np.bool_)):
        out += b"T" if v else b"F"
    elif isinstance(v, enum.Enum) and not isinstance(v, (int, str)):
        _canon(v.value, out)
    elif isinstance(v, (int, np.integer)):
        s = str(int(v)).encode()
        out += b"I" + _u64(len(s)) + s
    elif isinstance(v, (float, np.floating)):
        out += b"D" + _canon_float(float(v))
    elif isinstance(v, str):
        b = v.encode("utf-8")
        out += b"S" + _u64(len(b)) + b
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        out += b"B" + _u64(len(b)) + b
    elif isinstance(v, np.ndarray):
        _canon_array(v, out)
    elif isinstance(v, np.void) and v.dtype.names:
        _canon_mapping({n: v[n] for n in v.dtype.names}, out)
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        _canon_mapping({f.name: getattr(v, f.name) for f in dataclasses.fields(v)}, out)
    elif isinstance(v, tuple) and hasattr(v, "_asdict"):
        _canon_mapping(v._asdict(), out)
    elif isinstance(v, Mapping):
        _canon_mapping(v, out)
    elif isinstance(v, (list, tuple)):
        out += b"L" + _u64(len(v))
        for item in v:
            _canon(item, out)
    else:
        raise TypeError(f"digest: cannot encode a value of type {type(v).__name__}")


def _canon_mapping(m: Mapping[Any, Any], out: bytearray) -> None:
    items = []
    for k, val in m.items():
        kb = bytearray()
        _canon(k, kb)
        items.append((bytes(kb), val))
    items.sort(key=lambda kv: kv[0])
    out += b"M" + _u64(len(items))
    for kb, val in items:
        out += kb
        _canon(val, out)


def digest(fills: Any, equity: Any) -> str:
    """SHA-256 (hex) of a canonical byte encoding of the fills and the equity curve.

    ``fills``: a NumPy structured array (encoded column by column), or an iterable of
    records -- dataclasses (e.g. ``engine.orders.Fill``), namedtuples, mappings, tuples --
    each encoded field by field with type tags and length prefixes (mapping keys sorted,
    ints exact, floats as IEEE-754 float64 with -0.0 and NaN normalised, enums by value).
    ``equity``: ``(timestamps_ns, values)`` or None. Two runs that produce the same fills
    and the same curve in the same representation give the same digest; any changed
    field of any fill changes it.
    """
    out = bytearray(_DIGEST_MAGIC)
    if fills is None:
        out += b"N"
    elif isinstance(fills, np.ndarray):
        _canon_array(fills, out)
    elif isinstance(fills, Iterable) and not isinstance(fills, (str, bytes, Mapping)):
        seq = list(fills)
        out += b"Q" + _u64(len(seq))
        for f in seq:
            _canon(f, out)
    else:
        raise TypeError(f"digest: fills must be a structured array or an iterable of records, "
                        f"got {type(fills).__name__}")
    if equity is None:
        out += b"N"
    else:
        try:
            ts, values = equity
        except (TypeError, ValueError):
            raise TypeError("digest: equity must be (timestamps_ns, values) or None") from None
        ts_a = np.asarray(ts)
        if ts_a.size and not np.issubdtype(ts_a.dtype, np.integer):
            raise TypeError(f"digest: equity timestamps must be integers, got {ts_a.dtype}")
        out += b"E"
        _canon_array(ts_a.astype(np.int64), out)
        _canon_array(np.asarray(values, dtype=np.float64), out)
    return hashlib.sha256(out).hexdigest()
