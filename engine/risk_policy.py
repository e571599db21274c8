"""Risk policy around the compiled pre-trade kernel.

* `build_kernel(config, stage)` builds the account's `core_ext.risk.RiskKernel` from
  the config: every instrument registered with its kernel multiplier (so a kernel
  notional is money / money_unit on every instrument, see engine.instruments), its
  limits converted to lots / tick-lots / ns, and the account limits with the
  stage's ``capital_limit`` folded into ``max_gross_exposure`` (how `small` is
  enforced).
* `RiskPolicy` watches what the kernel cannot see at order time:

  - marks (``on_quote``): set the kernel's reference price (the mid, integer ticks,
    rounded down) and then run the continuous checks;
  - continuous checks, on every fill and every mark: the position limit
    (|position| > max_position) and concentration (instrument exposure share of gross
    exposure > max_concentration_bps, when gross > concentration_floor) put the
    instrument in reduce-only (``reduce_only_on_limit_breach``) and alert, and lift it
    once back within the limit; the daily loss (equity - equity at `start_day` <
    -daily_loss_limit) and the drawdown from peak equity (> max_drawdown_pct) trip the
    kill switch;
  - intraday VaR on the timer (``on_timer``): every ``var_interval_ms`` the marks are
    sampled; from the last ``var_window`` sample-to-sample returns and the current
    signed exposures, VaR at ``var_confidence`` is computed (historical: the loss
    quantile of the re-priced portfolio over the sampled returns; parametric: z *
    sqrt(w' Sigma w), zero mean). VaR > var_limit switches the whole account to
    reduce-only; the next computation at or under the limit lifts it. With fewer than
    ``var_min_samples`` returns, VaR is not computed (reported as None).

Money figures are floats (from the portfolio). Not thread-safe; runs on the strategy
loop.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from core_ext import risk as rk
from engine.config import Config, Stage
from engine.orders import Fill
from engine.portfolio import Portfolio

if TYPE_CHECKING:
    from engine.killswitch import KillSwitch

log = logging.getLogger("engine.risk_policy")

__all__ = ["build_kernel", "RiskPolicy", "VarResult", "Breach", "historical_var", "parametric_var",
           "scenario_pnl"]


def build_kernel(config: Config, stage: Stage | str | None = None, *,
                 dup_window: int = 65_536) -> rk.RiskKernel:
    """A RiskKernel loaded with every instrument and limit of `config` for `stage`
    (default: the config's stage)."""
    st = Stage(stage) if stage is not None else config.stage
    kernel = rk.RiskKernel(max_instruments=max(len(config.instruments), 1), dup_window=dup_window)
    for inst in config.instruments:
        kernel.add_instrument(inst.inst_id, inst.kernel_multiplier)
        kernel.set_instrument_limits(inst.inst_id, **config.risk.instruments[inst.symbol].kernel_limits())
    kernel.set_account_limits(**config.risk.account_limits(st))
    return kernel


# --------------------------------------------------------------------------- VaR

def scenario_pnl(returns: np.ndarray, exposures: np.ndarray) -> np.ndarray:
    """P&L of each return scenario: returns (n_scenarios, n_inst) @ signed money exposures."""
    return np.asarray(returns, dtype=np.float64) @ np.asarray(exposures, dtype=np.float64)


def historical_var(returns: np.ndarray, exposures: np.ndarray, confidence: float) -> float:
    """Historical-simulation VaR (money, >= 0): minus the (1 - confidence) quantile of
    the scenario P&L (linear interpolation)."""
    pnl = scenario_pnl(returns, exposures)
    if pnl.size == 0:
        return 0.0
    q = float(np.quantile(pnl, 1.0 - confidence))
    return max(-q, 0.0)


def parametric_var(returns: np.ndarray, exposures: np.ndarray, confidence: float) -> float:
    """Variance-covariance VaR (money, >= 0): z(confidence) * sqrt(w' Sigma w), with
    Sigma the sample covariance of the returns and a zero mean."""
    r = np.asarray(returns, dtype=np.float64)
    w = np.asarray(exposures, dtype=np.float64)
    if r.shape[0] < 2:
        return 0.0
    cov = np.atleast_2d(np.cov(r, rowvar=False))
    var = float(w @ cov @ w)
    return NormalDist().inv_cdf(confidence) * math.sqrt(max(var, 0.0))


@dataclass(frozen=True, slots=True)
class VarResult:
    ts_ns: int
    method: str
    confidence: float
    value: float          # money
    limit: float          # money
    samples: int          # returns used
    breached: bool


@dataclass(frozen=True, slots=True)
class Breach:
    ts_ns: int
    kind: str             # position | concentration | var | daily_loss | drawdown (+ "_cleared")
    symbol: str           # "" for account-level
    detail: str


# --------------------------------------------------------------------------- policy

class RiskPolicy:
    """See the module docstring. ``killswitch`` may be attached later (`attach`);
    without one, a loss/drawdown breach trips the kernel's kill switch directly."""

    def __init__(self, config: Config, kernel: rk.RiskKernel, portfolio: Portfolio, *,
                 killswitch: KillSwitch | None = None,
                 alert: Callable[[str, str], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self.risk = config.risk
        self.kernel = kernel
        self.portfolio = portfolio
        self.killswitch = killswitch
        self._alert = alert
        self.clock = clock
        self._symbols = [i.symbol for i in config.instruments]
        self._inst = {i.symbol: i for i in config.instruments}
        self._inst_ids = {i.symbol: i.inst_id for i in config.instruments}
        self._limits = {s: config.risk.instruments[s] for s in self._symbols}
        self._reduce_reasons: dict[str, set[str]] = {s: set() for s in self._symbols}
        self._var_reduce_only = False
        self._prices: deque[np.ndarray] = deque(maxlen=config.risk.var_window + 1)
        self._last_var_ns: int | None = None
        self.last_var: VarResult | None = None
        self.breaches: list[Breach] = []
        self.day_start_equity = portfolio.equity()
        self.peak_equity = self.day_start_equity
        self.checks = 0

    def attach(self, killswitch: KillSwitch) -> None:
        self.killswitch = killswitch

    # ------------------------------------------------------------------ inputs
    def start_day(self, equity: float | None = None) -> None:
        """Reset the daily-loss base (and the drawdown peak to at least it)."""
        self.day_start_equity = self.portfolio.equity() if equity is None else equity
        self.peak_equity = max(self.peak_equity, self.day_start_equity)

    def on_quote(self, symbol: str, bid: int | None, ask: int | None, ts_ns: int) -> None:
        """A new top of book: mark the portfolio, set the kernel reference price (mid,
        only when both sides exist and are not crossed), run the continuous checks."""
        position = self.portfolio.on_quote(symbol, bid, ask)
        if bid is not None and ask is not None and 0 < bid <= ask:
            self.kernel.set_reference_price(self._inst_ids[symbol], (bid + ask) // 2, ts_ns)
        # A new mark moves equity, exposure and concentration only through a position in
        # this symbol: while it is flat the checks would see exactly what they saw last
        # time, so they are skipped (the hot path of a flat strategy quoting every tick).
        if position != 0:
            self.check(symbol)

    def on_trade(self, symbol: str, price: int, ts_ns: int) -> None:
        self.portfolio.on_trade(symbol, price)
        self.check(symbol)

    def on_book_stale(self, symbol: str, stale: bool) -> None:
        """The feed lost (or recovered) the book: orders for it are rejected meanwhile."""
        self.kernel.set_book_stale(self._inst[symbol].inst_id, stale)

    def on_fill(self, fill: Fill) -> None:
        """OrderManager fill listener (register after the portfolio)."""
        self.check(fill.symbol)

    def on_timer(self, now_ns: int | None = None) -> VarResult | None:
        """Sample the marks and, every var_interval_ms, compute VaR."""
        now = self.clock() if now_ns is None else now_ns
        if self._last_var_ns is not None and now - self._last_var_ns < self.risk.var_interval_ms * 1_000_000:
            return None
        self._last_var_ns = now
        self._sample_prices()
        return self.compute_var(now)

    # ------------------------------------------------------------------ checks
    def check(self, symbol: str | None = None) -> None:
        """Position and concentration limits (of `symbol`, or all) and loss limits."""
        self.checks += 1
        now = self.clock()
        for s in (self._symbols if symbol is None else (symbol,)):
            self._check_position(s, now)
        self._check_concentration(now)
        self._check_losses(now)

    def _check_position(self, symbol: str, now: int) -> None:
        pos = abs(self.portfolio.position(symbol))
        limit = self._limits[symbol].max_position_lots
        if pos > limit:
            self._reduce(symbol, "position", now, f"|position| {pos} lots > max_position {limit}")
        else:
            self._unreduce(symbol, "position", now)

    def _check_concentration(self, now: int) -> None:
        bps = self.risk.max_concentration_bps
        exposures = {s: self.portfolio.exposure(s) for s in self._symbols}
        gross = sum(exposures.values())
        floor = float(self.risk.concentration_floor)
        for s, e in exposures.items():
            if gross > floor and gross > 0 and e * 10_000 > bps * gross:
                self._reduce(s, "concentration", now,
                             f"{e / gross * 100:.1f} % of gross exposure {gross:.2f} > {bps / 100:.2f} %")
            else:
                self._unreduce(s, "concentration", now)

    def _check_losses(self, now: int) -> None:
        equity = self.portfolio.equity()
        if equity > self.peak_equity:
            self.peak_equity = equity
        if self._tripped():
            return
        day_pnl = equity - self.day_start_equity
        limit = float(self.risk.daily_loss_limit)
        if day_pnl < -limit:
            self._trip(now, "daily_loss", f"daily loss {-day_pnl:.2f} > limit {limit:.2f}")
            return
        if self.peak_equity > 0:
            dd = (self.peak_equity - equity) / self.peak_equity * 100.0
            if dd > self.risk.max_drawdown_pct:
                self._trip(now, "drawdown", f"drawdown {dd:.2f} % from peak {self.peak_equity:.2f} > "
                                            f"{self.risk.max_drawdown_pct:g} %")

    # ------------------------------------------------------------------ VaR
    def _sample_prices(self) -> None:
        row = np.empty(len(self._symbols), dtype=np.float64)
        prev = self._prices[-1] if self._prices else None
        for j, s in enumerate(self._symbols):
            m = self.portfolio.mark_price(s)
            row[j] = m if m is not None else (prev[j] if prev is not None else np.nan)
        self._prices.append(row)

    def returns(self) -> np.ndarray:
        """(n, n_inst) simple returns between consecutive samples (0 where unknown)."""
        if len(self._prices) < 2:
            return np.zeros((0, len(self._symbols)))
        p = np.vstack(self._prices)
        prev, cur = p[:-1], p[1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cur / prev - 1.0
        r[~np.isfinite(r)] = 0.0
        return r

    def exposures(self) -> np.ndarray:
        """Signed money exposure per instrument at the current marks."""
        return np.array([self.portfolio.signed_exposure(s) for s in self._symbols], dtype=np.float64)

    def compute_var(self, now_ns: int | None = None) -> VarResult | None:
        now = self.clock() if now_ns is None else now_ns
        r = self.returns()
        if r.shape[0] < self.risk.var_min_samples:
            return None
        w = self.exposures()
        conf = self.risk.var_confidence
        value = (historical_var(r, w, conf) if self.risk.var_method == "historical"
                 else parametric_var(r, w, conf))
        limit = float(self.risk.var_limit)
        breached = value > limit
        self.last_var = VarResult(now, self.risk.var_method, conf, value, limit, r.shape[0], breached)
        if breached and not self._var_reduce_only:
            self._var_reduce_only = True
            self.kernel.set_reduce_only(True)
            self._record(now, "var", "", f"VaR {value:.2f} > limit {limit:.2f}: account reduce-only")
        elif not breached and self._var_reduce_only:
            self._var_reduce_only = False
            self.kernel.set_reduce_only(False)
            self._record(now, "var_cleared", "", f"VaR {value:.2f} <= limit {limit:.2f}", alert=False)
        return self.last_var

    # ------------------------------------------------------------------ state
    @property
    def var_reduce_only(self) -> bool:
        return self._var_reduce_only

    def reduce_only_reasons(self, symbol: str) -> frozenset[str]:
        return frozenset(self._reduce_reasons[symbol])

    # ------------------------------------------------------------------ internals
    def _reduce(self, symbol: str, why: str, now: int, detail: str) -> None:
        reasons = self._reduce_reasons[symbol]
        if why in reasons:
            return
        reasons.add(why)
        if self.risk.reduce_only_on_limit_breach:
            self.kernel.set_reduce_only(True, self._inst[symbol].inst_id)
        self._record(now, why, symbol, detail)

    def _unreduce(self, symbol: str, why: str, now: int) -> None:
        reasons = self._reduce_reasons[symbol]
        if why not in reasons:
            return
        reasons.discard(why)
        if not reasons and self.risk.reduce_only_on_limit_breach:
            self.kernel.set_reduce_only(False, self._inst[symbol].inst_id)
        self._record(now, f"{why}_cleared", symbol, "back within the limit", alert=False)

    def _tripped(self) -> bool:
        if self.killswitch is not None:
            return self.killswitch.tripped
        return bool(self.kernel.kill_switch_tripped)

    def _trip(self, now: int, kind: str, detail: str) -> None:
        self._record(now, kind, "", detail)
        if self.killswitch is not None:
            self.killswitch.trip(f"{kind}: {detail}")
        else:
            self.kernel.trip_kill_switch()

    def _record(self, now: int, kind: str, symbol: str, detail: str, alert: bool = True) -> None:
        self.breaches.append(Breach(now, kind, symbol, detail))
        if alert:
            log.warning("risk breach %s %s: %s", kind, symbol, detail)
            if self._alert is not None:
                try:
                    self._alert(f"risk_{kind}", f"{symbol + ': ' if symbol else ''}{detail}")
                except Exception:  # noqa: BLE001
                    log.exception("alert handler failed")

