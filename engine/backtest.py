"""`engine backtest`: replay historical market data through the engine's own strategy,
risk, order-manager, simulated-execution and portfolio code, in event time.

What runs. `build_sim_stack` assembles the trading core with `engine.assembly.build_core`
-- the core the paper and venue stages run: risk kernel and `RiskPolicy`, `OrderManager`
(every order through the kernel), `Portfolio`, `KillSwitch` (kept in memory here), the
configured strategy in its `StrategyHost` / `StrategyContext` -- over a `SimExecution`
built from ``[simulation]`` (fill, latency and commission models, seed). Only the
market-data source differs: a compiled replay (`core_ext.replay.Replay`) walks the
events of the data files (engine.tickdata) with a simulated clock set from their
timestamps.

Per event the replay follows the order documented in engine.sim_execution (advance,
apply, execution hooks, strategy, advance); it stays in C unless a Python component
has something to do: the strategy is called once per top-of-book change (on_quote,
then on_book if it overrides it) or trade print (on_trade), only for the callbacks
the strategy overrides; the execution only when a request or report is due or it has
live orders; the portfolio's marks (bid/ask/last of its position record) and the
kernel's reference price (the mid) are written from C. The rest runs on a timer of
event time (every ``sample_interval_s``, default 1 s): the order manager's status
timeouts, the strategy's on_timer (every ``timer_interval_ns`` of the strategy),
RiskPolicy.on_timer (VaR; while nothing is exposed only its price sample is taken:
VaR of a zero exposure is 0), the risk policy's continuous checks while a position or
an order is open (they also run on every fill), and one equity sample. So a loss
limit or drawdown is detected at the next fill or timer tick, not at the exact quote.
Unlike the paper runtime (whose ITCH feed reports top-of-book changes only), a change
below the top also reaches the execution's on_book (queue positions) and the
strategy's on_book when it overrides it.

`replay_python` is the same run driven event by event from Python the way the paper
runtime handles a feed message (engine.runtime: SimExecution.advance_to / on_book /
on_trade around TradingCore.on_book / on_trade, which mark the portfolio, set the
reference price, check the limits and call StrategyHost.book_changed / trade). It is
the oracle of the tests (same fills, same equity curve: the data in the tests breach
no limit between two timer ticks, where the two would differ in when they notice)
and the baseline of bench/bench_backtest.py.

Without a config, `default_config` builds one for the data: one instrument per
symbol with the tick and lot sizes derived from the data, the sample moving-average
crossover strategy (``qty`` worth about 1 % of the capital), default limits.

Outputs (`write_outputs`): ``metrics.json`` (engine.analytics.compute_metrics of the
equity curve and the round-trip P&Ls, the sampling interval and annualisation factor,
the result digest of fills + equity curve, event counts and the data's time span),
``fills.csv``, ``equity.csv`` (``timestamp_ns,equity``), ``report.html`` (self-contained:
metrics table, equity SVG) -- all four byte-identical from run to run -- and
``timing.json`` (wall-clock load and replay time, events per second: the only output
that differs between two runs).

Trades (round trips) for profit factor and win rate: per symbol, a trade opens when
the position leaves 0 and closes when it returns to 0 or flips; its P&L is the
realised P&L of its fills (average cost, as the portfolio books it) minus their
commissions (a flipping fill's commission goes to the trade it closes). A trade
still open at the end is not counted.
"""
from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from core_ext.matching import MatchingBook

from core_ext.book import BOOK_DEPTH_CHANGED, BOOK_TOP_CHANGED, BOOK_UNCHANGED, L2Book
from core_ext.replay import (
    REPLAY_BOOK_SNAPSHOT,
    REPLAY_FLAG_END,
    REPLAY_L3_ADD,
    REPLAY_L3_CANCEL,
    REPLAY_TRADE,
    Replay,
    ReplayClock,
)
from engine.assembly import TradingCore, build_core
from engine.config import NOTIONAL_LIMIT_MAX, Config, Stage, load_config, parse_config
from engine.errors import ConfigError, DataError, EngineError
from engine.fill_model import BookFillModel, CommissionModel, LatencyModel
from engine.instruments import Instrument
from engine.orders import TERMINAL_RETENTION_NS, Fill, Side
from engine.portfolio import Position
from engine.sim_execution import SimExecution
from engine.strategy import Quote, Strategy, StrategyStopped, Trade, overrides
from engine.tickdata import TickData, _rescale, detect_format, load_tick_data, trades_only

log = logging.getLogger("engine.backtest")

__all__ = [
    "DEFAULT_SAMPLE_INTERVAL_S", "SimStack", "BacktestResult", "build_sim_stack", "default_config",
    "sim_execution_from_config",
    "load_inputs", "prepare_backtest", "BacktestSession", "run_backtest", "replay_python",
    "merge_events", "metrics_document", "round_trip_pnls", "write_outputs",
    "backtest_main", "convert_main", "OUTPUT_FILES",
]

DEFAULT_SAMPLE_INTERVAL_S = 1.0
DEFAULT_DRAIN_NS = 10_000_000_000       # after the data: deliver what the execution still owes, up to 10 s
DEFAULT_STRATEGY = "engine.strategies.ma_crossover:MovingAverageCrossover"
OUTPUT_FILES = ("metrics.json", "fills.csv", "equity.csv", "report.html")   # byte-identical per run
TIMING_FILE = "timing.json"
FORGET_TERMINAL_NS = TERMINAL_RETENTION_NS  # ended orders older than this (event time) are dropped
RESULT_VERSION = 1


# =========================================================================== the stack

def sim_execution_from_config(config: Config, books: dict[str, L2Book],
                              clock: Callable[[], int]) -> SimExecution:
    """A SimExecution with the fill, commission and latency models and the seed of
    ``[simulation]`` (what the config documents for backtest and paper)."""
    sim_cfg = config.simulation
    return SimExecution(
        books, config.instruments_by_symbol,
        fill_model=BookFillModel(slippage_bps=sim_cfg.slippage_bps, walk_depth=sim_cfg.walk_depth,
                                 queue_position=sim_cfg.queue_position),
        commission=CommissionModel(maker_bps=sim_cfg.maker_fee_bps, taker_bps=sim_cfg.taker_fee_bps,
                                   per_fill=sim_cfg.fee_per_fill),
        latency=LatencyModel(sim_cfg.order_latency_ns, sim_cfg.report_latency_ns,
                             sim_cfg.latency_jitter_ns),
        seed=sim_cfg.seed, clock=clock)


@dataclass
class SimStack:
    """The trading core of engine.assembly (the one every stage runs) over simulated
    execution, plus the strategy instance it runs."""
    core: TradingCore
    sim: SimExecution
    strategy: Strategy

    config = property(lambda self: self.core.config)
    stage = property(lambda self: self.core.stage)
    clock = property(lambda self: self.core.clock)
    instruments = property(lambda self: dict(self.core.instruments))
    books = property(lambda self: self.core.books)
    kernel = property(lambda self: self.core.kernel)
    om = property(lambda self: self.core.om)
    portfolio = property(lambda self: self.core.portfolio)
    policy = property(lambda self: self.core.policy)
    killswitch = property(lambda self: self.core.killswitch)
    host = property(lambda self: self.core.host)

    @property
    def alerts(self) -> dict[str, int]:
        return dict(self.core.alerts.counts)

    def strategy_failed(self, name: str, exc: BaseException) -> None:
        """A strategy callback raised outside StrategyHost._call (in the compiled
        replay): what StrategyHost does then -- count, log, stop the strategy, and
        call the handler the core registered."""
        host = self.host
        host.errors += 1
        log.error("strategy %s failed; stopping the strategy", name, exc_info=exc)
        host.stop(f"error in {name}: {exc!r}")
        handler = getattr(host, "_on_error", None)
        if handler is not None:
            handler(name, exc)


def build_sim_stack(config: Config, clock: Callable[[], int], *, strategy: Strategy | None = None,
                    books: dict[str, L2Book] | None = None) -> SimStack:
    """The backtest's trading stack: `engine.assembly.build_core` (the core paper and
    the venue stages run) for stage backtest, over `sim_execution_from_config`, with
    the kill switch kept in memory (a backtest neither reads nor latches the state
    file of the live engine). ``strategy``: an instance to run instead of the one the
    core creates from ``[strategy]``. The client order ids take the clock's time as
    their session prefix: build it with the clock at the first event, and every run
    over the same data numbers its orders the same."""
    cfg = replace(config, killswitch=replace(config.killswitch, state_file=None))
    books = books if books is not None else {s: L2Book(s) for s in cfg.instruments_by_symbol}
    sim = sim_execution_from_config(cfg, books, clock)
    core = build_core(cfg, books, sim, clock=clock, stage=Stage.BACKTEST)
    if strategy is not None:
        core.host.strategy = strategy     # binds it, and re-registers its listeners
    return SimStack(core, sim, core.host.strategy)


# =========================================================================== inputs

def _dec_str(d: Decimal) -> str:
    return format(d.normalize(), "f")


def _money(x: Decimal, unit: Decimal) -> Decimal:
    """x rounded up to a whole multiple of the money unit."""
    return (x / unit).to_integral_value(rounding=ROUND_CEILING) * unit


def _ref_price(data: TickData) -> Decimal:
    ev = data.events
    px = ev["price"][(ev["kind"] != REPLAY_L3_CANCEL) & (ev["qty"] > 0)][:2000]
    if px.size == 0:
        return Decimal(1)
    return Decimal(int(np.median(px))) * data.tick_size


def default_config(datas: Sequence[TickData], *, capital: Decimal = Decimal(100_000)) -> Config:
    """A config for `datas` when none is given (see the module doc): one instrument per
    symbol (tick and lot from the data), the moving-average crossover on the first
    symbol, default limits. Validated like a file (parse_config)."""
    by_symbol: dict[str, TickData] = {}
    for d in datas:
        by_symbol.setdefault(d.symbol, d)
    lines = ['stage = "backtest"', 'account = "BACKTEST"']
    inst_lines: list[str] = []
    risk_lines: list[str] = []
    qty_first = None
    units = []
    sized = []
    for sym, d in by_symbol.items():
        tick, lot = d.tick_size, d.lot_size
        unit = tick * lot
        units.append(unit)
        ref = _ref_price(d)
        # the kernel counts notionals in int64 tick-lots: with very fine units (Bitfinex
        # L3: 1e-8 x 1e-8) that caps an order at a few hundred money; size to fit
        kernel_max = NOTIONAL_LIMIT_MAX * unit
        target = min(Decimal(1000), kernel_max / 50)
        qty_lots = max(1, int((target / (ref * lot)).to_integral_value()))
        qty_notional = qty_lots * lot * ref
        sized.append((sym, d, tick, lot, unit, ref, qty_lots, qty_notional))
        capital = max(capital, _money(qty_notional * 100, Decimal(1)))
    for sym, _d, tick, lot, unit, _ref, qty_lots, qty_notional in sized:
        inst_lines += ["[[instruments]]", f'symbol = "{sym}"', f'tick_size = "{_dec_str(tick)}"',
                       f'lot_size = "{_dec_str(lot)}"', ""]
        risk_lines += [f'[risk.instruments."{sym}"]',
                       f'max_order_qty = "{_dec_str(qty_lots * 10 * lot)}"',
                       f'max_order_notional = "{_dec_str(_money(min(qty_notional * 20, NOTIONAL_LIMIT_MAX * unit * 4 / 10), unit))}"',
                       "price_band_bps = 500",
                       f'max_position = "{_dec_str(qty_lots * 10 * lot)}"',
                       "max_open_orders = 20", "max_ref_age_ms = 60000", ""]
        if qty_first is None:
            qty_first = (sym, qty_lots * lot)
    # a money unit dividing every instrument's tick-lot (engine.instruments.money_unit)
    from engine.instruments import money_unit
    mu = money_unit(units)
    lines.append(f'capital = "{_dec_str(capital)}"')
    lines.append("")
    lines += inst_lines
    sym0, qty0 = qty_first
    lines += ["[strategy]", f'strategy = "{DEFAULT_STRATEGY}"', "[strategy.params]",
              f'symbol = "{sym0}"', f'qty = "{_dec_str(qty0)}"', "fast = 10", "slow = 30",
              "sample_interval_ms = 1000", ""]
    lines += ["[risk]",
              f'max_gross_exposure = "{_dec_str(_money(min(capital * 5, NOTIONAL_LIMIT_MAX * mu * 9 / 10), mu))}"',
              "max_concentration_bps = 10000",
              'concentration_floor = "0"',
              "max_orders_per_window = 1000", "window_ms = 1000",
              f'daily_loss_limit = "{_dec_str(capital / 20)}"',
              "max_drawdown_pct = 10",
              'var_method = "historical"', "var_confidence = 0.99",
              f'var_limit = "{_dec_str(capital / 5)}"',
              "var_window = 500", "var_interval_ms = 1000", "var_min_samples = 30",
              "reduce_only_on_limit_breach = true", ""]
    lines += risk_lines
    lines += ["[simulation]", "seed = 7", "slippage_bps = 0.5", "walk_depth = true",
              "queue_position = true", "order_latency_ns = 50000", "report_latency_ns = 50000",
              "latency_jitter_ns = 10000", "maker_fee_bps = -0.5", "taker_fee_bps = 2.0",
              "fee_per_fill = 0.0", 'mark = "mid"', ""]
    text = "\n".join(lines)
    try:
        return parse_config(text, source="<derived from the data>")
    except ConfigError as exc:
        raise DataError(f"cannot build a default config for the data: {exc}") from None


def _peek_symbol(path: Path) -> str | None:
    """The symbol a data file names, without reading it all (None: not written)."""
    fmt = detect_format(path)
    if fmt == "engine-parquet":
        import pyarrow.parquet as pq
        try:
            meta = (pq.read_schema(path).metadata or {}).get(b"engine.ticks")
            return json.loads(meta)["symbol"] if meta else None
        except Exception:  # noqa: BLE001 - the full read reports the problem
            return None
    if fmt == "bitfinex-l3":
        return None
    import csv
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            r = csv.reader(fh)
            header = [h.strip() for h in next(r, [])]
            row = next(r, None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if row and "symbol" in header and len(row) > header.index("symbol"):
        return row[header.index("symbol")].strip() or None
    return None


def _instrument_for(config: Config, path: Path, symbol: str | None) -> Instrument:
    insts = config.instruments_by_symbol
    if symbol is not None:
        if symbol not in insts:
            raise ConfigError(f"{config.source}: instruments: symbol {symbol!r} is not configured "
                              f"(have {', '.join(insts)})")
        return insts[symbol]
    peeked = _peek_symbol(path)
    if peeked in insts:
        return insts[peeked]
    if len(insts) == 1:
        return next(iter(insts.values()))
    strat_sym = config.strategy.params.get("symbol")
    if isinstance(strat_sym, str) and strat_sym in insts:
        return insts[strat_sym]
    raise ConfigError(f"{config.source}: instruments: the data's symbol {peeked or '(not named)'} is "
                      f"not configured (have {', '.join(insts)}); pass the symbol to use")


def load_inputs(config_path: str | PathLike | None, data_paths: str | PathLike | Sequence,
                *, symbol: str | None = None) -> tuple[Config, list[TickData]]:
    """The config (loaded, or derived from the data) and the data files converted with
    its instruments' tick and lot sizes (each file renamed to its instrument's symbol)."""
    paths = [Path(data_paths)] if isinstance(data_paths, (str, PathLike)) else [Path(p) for p in data_paths]
    if not paths:
        raise DataError("no data file given")
    if config_path is None:
        datas = [load_tick_data(p, symbol=symbol) for p in paths]
        datas = _real_books_only(_common_units(datas))
        return default_config(datas), datas
    config = load_config(config_path)
    datas = []
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        inst = _instrument_for(config, p, symbol)
        filt = symbol if symbol is not None else None
        d = load_tick_data(p, tick_size=inst.tick_size, lot_size=inst.lot_size, symbol=filt)
        if d.symbol != inst.symbol:
            from engine.tickdata import with_symbol
            d = with_symbol(d, inst.symbol)
        datas.append(d)
    return config, _real_books_only(datas)


def _real_books_only(datas: list[TickData]) -> list[TickData]:
    """A trades file's synthetic L1 book is dropped when another file gives the same
    symbol a real book (quotes, L2, L3): the two would fight over the top of book."""
    real = {d.symbol for d in datas if d.book in ("quotes", "l2", "l3")}
    return [trades_only(d) if d.book == "synthetic-l1" and d.symbol in real else d for d in datas]


def _common_units(datas: list[TickData]) -> list[TickData]:
    """Files of one symbol with different derived units: re-express them in the gcd."""
    from engine.tickdata import decimal_gcd
    out = []
    groups: dict[str, list[TickData]] = {}
    for d in datas:
        groups.setdefault(d.symbol, []).append(d)
    units = {s: (decimal_gcd([d.tick_size for d in g]), decimal_gcd([d.lot_size for d in g]))
             for s, g in groups.items()}
    for d in datas:
        tick, lot = units[d.symbol]
        if tick == d.tick_size and lot == d.lot_size:
            out.append(d)
            continue
        ev = d.events.copy()
        ev["price"] = _rescale(ev["price"], d.tick_size, tick, d.source, "price")
        ev["qty"] = _rescale(ev["qty"], d.lot_size, lot, d.source, "qty")
        from dataclasses import replace
        out.append(replace(d, events=ev, tick_size=tick, lot_size=lot))
    return out


def merge_events(config: Config, datas: Sequence[TickData]) -> tuple[np.ndarray, list[bool]]:
    """All files' events in time order (rows of equal time keep file order), ``inst``
    set to the config's instrument ids, prices and sizes re-expressed in the
    instrument's tick and lot (exactly, or a DataError naming the row); and per
    instrument whether it has L3 rows."""
    insts = config.instruments_by_symbol
    parts = []
    l3 = [False] * len(config.instruments)
    for d in datas:
        if d.symbol not in insts:
            raise ConfigError(f"{config.source}: instruments: {d.symbol!r} is not configured")
        inst = insts[d.symbol]
        ev = d.events.copy()
        if d.tick_size != inst.tick_size:
            ev["price"] = _rescale(ev["price"], d.tick_size, inst.tick_size, d.source, "price")
        if d.lot_size != inst.lot_size:
            ev["qty"] = _rescale(ev["qty"], d.lot_size, inst.lot_size, d.source, "qty")
        iid = inst.inst_id
        ev["inst"] = iid
        if np.any((ev["kind"] >= REPLAY_L3_ADD) & (ev["kind"] != REPLAY_TRADE)):
            l3[iid] = True
        parts.append(ev)
    events = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if len(parts) > 1:
        events = events[np.argsort(events["ts_ns"], kind="stable")]
    return events, l3


# =========================================================================== running

@dataclass
class BacktestResult:
    config: Config
    datas: list[TickData]
    stack: SimStack
    events: int
    rows: int
    first_ts_ns: int
    last_ts_ns: int
    fills: list[Fill]
    equity_ts_ns: np.ndarray
    equity: np.ndarray
    trade_pnls: np.ndarray
    traded_notional: float
    metrics: dict[str, Any]
    digest: str
    sample_interval_s: float
    counters: dict[str, int]
    load_seconds: float = 0.0
    replay_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.replay_seconds if self.replay_seconds > 0 else math.inf


class _Timers:
    """What runs on the event-time timer (see the module doc)."""

    def __init__(self, stack: SimStack, sample_ns: int, first_ts: int, full_var: bool = False) -> None:
        self.stack = stack
        self.sample_ns = sample_ns
        self.next_forget = first_ts + 60_000_000_000
        self.curve_ts: list[int] = []
        self.curve_eq: list[float] = []
        self._eq: float | None = None
        self._eq_fills = -1
        p = stack.policy
        # the flat-portfolio shortcut needs these two RiskPolicy internals; without them
        # (a changed RiskPolicy) every tick goes through on_timer
        self.full_var = full_var or not (hasattr(p, "_last_var_ns") and hasattr(p, "_sample_prices"))
        strat = stack.strategy
        self.strategy_ns = int(strat.timer_interval_ns) if overrides(strat, "on_timer") else 0
        if self.strategy_ns < 0:
            raise ConfigError(f"strategy timer_interval_ns {self.strategy_ns}: must be >= 0")
        self.interval_ns = min(x for x in (sample_ns, self.strategy_ns) if x > 0)
        self.next_sample = first_ts + sample_ns
        self.next_strategy = first_ts + self.strategy_ns if self.strategy_ns else None

    def __call__(self, now: int) -> None:
        s = self.stack
        if now >= self.next_forget:
            # a long run keeps only the last hour of ended orders (what a live engine does)
            s.om.forget_terminal(now - FORGET_TERMINAL_NS)
            self.next_forget = now + 60_000_000_000
        s.om.check_timeouts(now)
        if self.next_strategy is not None and now >= self.next_strategy:
            self.next_strategy = now + self.strategy_ns
            s.host.timer(now)
        exposed = bool(s.portfolio.positions()) or bool(s.om.open_orders())
        self._var_timer(now, exposed)
        if exposed:
            s.policy.check()
        if now >= self.next_sample:
            self.next_sample = now - (now % self.sample_ns) + self.sample_ns
            self.sample(now, exposed)

    def sample(self, now: int, exposed: bool = True) -> None:
        """One point of the equity curve. Portfolio.equity() is recomputed unless
        nothing is exposed and no fill came since the last computation (then the
        equity -- capital + realised - commissions -- cannot have moved)."""
        pf = self.stack.portfolio
        n_fills = len(pf.fills)
        if exposed or n_fills != self._eq_fills or self._eq is None:
            self._eq = pf.equity()
            self._eq_fills = n_fills
        self.curve_ts.append(now)
        self.curve_eq.append(self._eq)

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.curve_ts, dtype=np.int64), np.asarray(self.curve_eq, dtype=np.float64)

    def _var_timer(self, now: int, exposed: bool) -> None:
        """RiskPolicy.on_timer, except that while nothing is exposed (no position, no
        open order: every exposure is 0, so VaR is 0 and cannot breach) and the account
        is not in VaR reduce-only, only its price sample is taken: the VaR computation
        (O(var_window) per call) is what dominates a long backtest otherwise."""
        p = self.stack.policy
        if exposed or self.full_var or p.var_reduce_only:
            p.on_timer(now)
            return
        last = p._last_var_ns
        if last is not None and now - last < p.risk.var_interval_ms * 1_000_000:
            return
        p._last_var_ns = now
        p._sample_prices()


class _Progress:
    """A progress bar on stderr: tqdm when installed, else a '\\r' line."""

    def __init__(self, total: int, label: str) -> None:
        self.total = max(total, 1)
        self.label = label
        self._bar = None
        self._last = 0.0
        try:
            from tqdm import tqdm  # type: ignore[import-not-found]
            self._bar = tqdm(total=total, unit="ev", unit_scale=True, desc=label, file=sys.stderr,
                             leave=False)
        except ImportError:
            pass
        self._done = 0

    def __call__(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._done)
            self._done = done
            return
        now = time.monotonic()
        if now - self._last < 0.2 and done < self.total:
            return
        self._last = now
        pct = 100.0 * done / self.total
        sys.stderr.write(f"\r{self.label}: {pct:5.1f}% {done:,}/{self.total:,} events")
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


def _make_replay(stack: SimStack, l3: list[bool], clock: ReplayClock, *, guards: bool = True) -> Replay:
    cfg = stack.config
    symbols = [i.symbol for i in cfg.instruments]
    books = [stack.books[s] for s in symbols]
    l3_books = [MatchingBook(s, emit_order_events=False) if l3[k] else None
                for k, s in enumerate(symbols)]
    marks = [stack.portfolio.position_record(s) for s in symbols]
    replay = Replay(books, symbols, clock=clock, l3_books=l3_books, kernel=stack.kernel,
                    kernel_ids=[i.inst_id for i in cfg.instruments], marks=marks)
    strat = stack.strategy
    replay.set_strategy(
        stack.host,
        on_quote=strat.on_quote if overrides(strat, "on_quote") else None,
        on_book=strat.on_book if overrides(strat, "on_book") else None,
        on_trade=strat.on_trade if overrides(strat, "on_trade") else None,
        on_error=stack.strategy_failed, stopped_exc=StrategyStopped,
        quote_type=Quote, trade_type=Trade, side_values=(Side.BUY, Side.SELL))
    sim = stack.sim
    # The execution's own heap and order table let the loop skip calls that would do
    # nothing (read only; guards=False calls every hook on every event: same result).
    heap = getattr(sim, "_queue", None)
    live = getattr(sim, "_orders", None)
    consumed = getattr(sim, "_consumed", None)
    known = isinstance(heap, list) and isinstance(live, dict) and isinstance(consumed, dict)
    replay.set_execution(sim.advance_to, due_heap=heap if known else None,
                         live=live if known else None, book_live=consumed if known else None,
                         on_book=sim.on_book, on_trade=sim.on_trade)
    replay.guards = guards and known
    return replay


def _finish(stack: SimStack, timers: _Timers, clock, last_ts: int, drain_ns: int) -> None:
    """End of data: stop the strategy (its on_stop may cancel), let the execution
    deliver what it owes (up to drain_ns of event time), check, sample."""
    _set_clock(clock, last_ts)
    stack.host.stop("end of data")
    sim = stack.sim
    sim.advance_to(last_ts)
    deadline = last_ts + drain_ns
    while True:
        due = sim.next_event_ns()
        if due is None or due > deadline:
            break
        _set_clock(clock, max(due, _now(clock)))
        sim.advance_to(due)
    stack.om.check_timeouts(_now(clock))
    stack.policy.check()
    timers.sample(_now(clock))


def _set_clock(clock, ts: int) -> None:
    if isinstance(clock, ReplayClock):
        clock.now_ns = ts
    else:
        clock.now = ts


def _now(clock) -> int:
    return clock()


class BacktestSession:
    """A prepared run: the stack, the compiled replay wired to it, and the merged
    events. `run_backtest` is ``prepare_backtest(...).run()``; a benchmark drives
    ``replay.run(events, start, stop)`` over slices itself and then calls `finish`."""

    def __init__(self, config: Config, datas: Sequence[TickData], *, sample_interval_s: float,
                 strategy: Strategy | None, guards: bool, drain_ns: int) -> None:
        self.config = config
        self.datas = list(datas)
        self.sample_interval_s = sample_interval_s
        self.drain_ns = drain_ns
        sample_ns = _sample_ns(sample_interval_s)
        self.events, l3 = merge_events(config, self.datas)
        if self.events.size == 0:
            raise DataError(f"{self.datas[0].source}: no events")
        self.first_ts = int(self.events["ts_ns"][0])
        self.last_ts = int(self.events["ts_ns"][-1])
        self.clock = ReplayClock(self.first_ts)
        self.stack = build_sim_stack(config, self.clock, strategy=strategy)
        self.replay = _make_replay(self.stack, l3, self.clock, guards=guards)
        self.timers = _Timers(self.stack, sample_ns, self.first_ts)
        self.replay.set_timer(self.timers.interval_ns, self.timers,
                              first_ns=self.first_ts + self.timers.interval_ns)
        self.n_events = int(np.count_nonzero(self.events["flags"] & REPLAY_FLAG_END))
        self.replay_seconds = 0.0
        self.started = False

    def start(self) -> None:
        """on_start of the strategy and the first equity sample (once)."""
        if not self.started:
            self.started = True
            self.stack.core.start()
            self.timers.sample(self.first_ts)

    def run(self, progress: bool = False) -> None:
        """Replay every event (timed into ``replay_seconds``)."""
        self.start()
        bar = _Progress(self.n_events, "backtest") if progress else None
        if bar is not None:
            self.replay.set_progress(max(1, self.n_events // 200), bar)
        t0 = time.perf_counter()
        try:
            self.replay.run(self.events)
        finally:
            if bar is not None:
                bar.close()
        self.replay_seconds += time.perf_counter() - t0

    def finish(self, load_seconds: float = 0.0) -> BacktestResult:
        """End of data (see _finish) and the result with its metrics."""
        _finish(self.stack, self.timers, self.clock, self.last_ts, self.drain_ns)
        r = self.replay
        return _result(self.stack, self.timers, self.datas, r.counters(), int(r.events), int(r.rows),
                       self.first_ts, self.last_ts, self.sample_interval_s, load_seconds,
                       self.replay_seconds)


def prepare_backtest(config: Config, datas: TickData | Sequence[TickData], *,
                     sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
                     strategy: Strategy | None = None, guards: bool = True,
                     drain_ns: int = DEFAULT_DRAIN_NS) -> BacktestSession:
    """A `BacktestSession` for `config` over `datas` (nothing run yet)."""
    datas = [datas] if isinstance(datas, TickData) else list(datas)
    return BacktestSession(config, datas, sample_interval_s=sample_interval_s, strategy=strategy,
                           guards=guards, drain_ns=drain_ns)


def run_backtest(config: Config, datas: TickData | Sequence[TickData], *,
                 sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S, progress: bool = False,
                 strategy: Strategy | None = None, guards: bool = True,
                 drain_ns: int = DEFAULT_DRAIN_NS, load_seconds: float = 0.0) -> BacktestResult:
    """Run the backtest of `config` over `datas` with the compiled replay (see the
    module doc) and compute the metrics. ``strategy``: an instance instead of the
    configured one. ``guards=False`` calls every execution hook on every event (a
    check that skipping them changes nothing)."""
    session = prepare_backtest(config, datas, sample_interval_s=sample_interval_s,
                               strategy=strategy, guards=guards, drain_ns=drain_ns)
    session.run(progress)
    return session.finish(load_seconds)


def _sample_ns(sample_interval_s: float) -> int:
    if not (isinstance(sample_interval_s, (int, float)) and math.isfinite(sample_interval_s)
            and 0.001 <= sample_interval_s <= 86_400):
        raise ConfigError(f"sample interval {sample_interval_s!r} s: allowed 0.001..86400")
    return int(round(sample_interval_s * 1e9))


class _PyClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def replay_python(config: Config, datas: TickData | Sequence[TickData], *,
                  sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
                  strategy: Strategy | None = None,
                  drain_ns: int = DEFAULT_DRAIN_NS, chunk_events: int = 0,
                  chunk_times: list[int] | None = None) -> BacktestResult:
    """The same run driven event by event from Python through the engine's per-event
    API (see the module doc): the oracle of the tests and the benchmark's baseline.
    With ``chunk_events`` > 0, ``time.perf_counter_ns()`` is appended to
    ``chunk_times`` at the start and after every ``chunk_events`` events."""
    datas = [datas] if isinstance(datas, TickData) else list(datas)
    sample_ns = _sample_ns(sample_interval_s)
    events, l3 = merge_events(config, datas)
    first_ts, last_ts = int(events["ts_ns"][0]), int(events["ts_ns"][-1])
    clock = _PyClock(first_ts)
    stack = build_sim_stack(config, clock, strategy=strategy)
    timers = _Timers(stack, sample_ns, first_ts)
    symbols = [i.symbol for i in config.instruments]
    books = [stack.books[s] for s in symbols]
    l3_live: list[dict[int, tuple[int, int, int]]] = [{} for _ in symbols]
    sim, core = stack.sim, stack.core
    tops = [(None, 0, None, 0)] * len(symbols)
    iv = timers.interval_ns
    next_timer = first_ts + iv
    core.start()
    timers.sample(first_ts)
    t0 = time.perf_counter()
    rows = events.tolist()      # (ts, price, qty, order_id, inst, kind, side, flags, reserved)
    n = len(rows)
    i = 0
    n_events = 0
    timing = chunk_events > 0 and chunk_times is not None
    next_chunk = chunk_events
    if timing:
        chunk_times.append(time.perf_counter_ns())
    while i < n:
        ts, inst = rows[i][0], rows[i][4]
        if ts >= next_timer:
            b = ts - ts % iv
            next_timer = b + iv
            clock.now = b
            sim.advance_to(b)
            timers(b)
        clock.now = ts
        sim.advance_to(ts)
        book, sym = books[inst], symbols[inst]
        change = BOOK_UNCHANGED
        trades = []
        while True:
            _, price, qty, oid, _, kind, side, flags, _ = rows[i]
            i += 1
            if kind == REPLAY_TRADE:
                trades.append((price, qty, side))
            elif kind <= REPLAY_BOOK_SNAPSHOT:
                if kind == REPLAY_BOOK_SNAPSHOT:
                    book.clear()
                    book.update(side, price, qty)
                    change = max(change, BOOK_DEPTH_CHANGED)
                else:
                    change = max(change, book.update(side, price, qty))
            else:
                change = max(change, _l3_python(book, l3_live[inst], kind, oid, side, price, qty))
            if flags & REPLAY_FLAG_END:
                break
        n_events += 1
        # what the paper runtime does with one feed message (engine.runtime._on_feed)
        if change != BOOK_UNCHANGED:
            sim.on_book(sym, ts)
        top = (book.best_bid, book.best_bid_size or 0, book.best_ask, book.best_ask_size or 0)
        if top != tops[inst]:
            tops[inst] = top
            change = BOOK_TOP_CHANGED
        core.on_book(sym, change, ts)
        for price, qty, side in trades:
            sim.on_trade(sym, price, qty, side, ts)
            core.on_trade(sym, price, qty, side if side in (0, 1) else None, ts)
        sim.advance_to(ts)
        if timing and n_events >= next_chunk:
            next_chunk += chunk_events
            chunk_times.append(time.perf_counter_ns())
    replay_s = time.perf_counter() - t0
    _finish(stack, timers, clock, last_ts, drain_ns)
    return _result(stack, timers, datas, {"events": n_events, "rows": n}, n_events, n, first_ts, last_ts,
                   sample_interval_s, 0.0, replay_s)


def _l3_python(book: L2Book, live: dict, kind: int, oid: int, side: int, price: int, qty: int) -> int:
    """L3 row -> L2 level deltas, the way the replay mirrors its matching book."""
    if kind == REPLAY_L3_ADD:
        if oid in live:
            return BOOK_UNCHANGED
        live[oid] = (side, price, qty)
        return book.add_delta(side, price, qty)
    old = live.get(oid)
    if old is None:
        return BOOK_UNCHANGED
    s, p, q = old
    if kind == REPLAY_L3_CANCEL:
        del live[oid]
        return book.add_delta(s, p, -q)
    live[oid] = (s, price, qty)
    return max(book.add_delta(s, p, -q), book.add_delta(s, price, qty))


# =========================================================================== results

def round_trip_pnls(fills: Sequence[Fill], instruments: dict[str, Instrument]) -> np.ndarray:
    """Money P&L of every closed round trip (see the module doc), in closing order."""
    out: list[float] = []
    state: dict[str, tuple[Position, Fraction, float]] = {}
    for f in fills:
        inst = instruments[f.symbol]
        pos, realized, fees = state.get(f.symbol) or (
            Position(f.symbol, inst.inst_id, float(inst.money_per_tick_lot)), Fraction(0), 0.0)
        before = pos.qty
        signed = f.qty if f.side == Side.BUY else -f.qty
        realized += pos.apply(signed, f.price)
        fees += f.commission or 0.0
        after = pos.qty
        if before != 0 and (after == 0 or (after > 0) != (before > 0)):
            out.append(float(realized) * pos.money_per_tick_lot - fees)
            realized, fees = Fraction(0), 0.0
        state[f.symbol] = (pos, realized, fees)
    return np.asarray(out, dtype=np.float64)


def _result(stack: SimStack, timers: _Timers, datas, counters, n_events, n_rows, first_ts, last_ts,
            sample_interval_s, load_s, replay_s) -> BacktestResult:
    from engine.analytics import compute_metrics, digest
    pf = stack.portfolio
    fills = list(pf.fills)
    ts, eq = timers.curve()
    pnls = round_trip_pnls(fills, stack.instruments)
    notional = float(sum(abs(stack.instruments[f.symbol].notional(f.qty, f.price)) for f in fills))
    try:
        metrics = compute_metrics(ts, eq, pnls, notional, sampling_interval=sample_interval_s,
                                  annualisation_factor=None)
    except DataError as exc:
        raise DataError(f"metrics of the run: {exc}") from None
    dg = digest(fills, (ts, eq))
    return BacktestResult(stack.config, list(datas), stack, n_events, n_rows, first_ts, last_ts, fills,
                          ts, eq, pnls, notional, metrics, dg, sample_interval_s, dict(counters),
                          load_s, replay_s)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def metrics_document(result: BacktestResult) -> dict[str, Any]:
    """The content of metrics.json (deterministic: no wall-clock figure)."""
    from engine.analytics import metrics_to_json
    s = result.stack
    cfg = result.config
    doc = metrics_to_json(result.metrics)
    om = s.om
    doc.update({
        "result_version": RESULT_VERSION,
        "digest": result.digest,
        "events": result.events,
        "rows": result.rows,
        "data_start_ns": result.first_ts_ns,
        "data_end_ns": result.last_ts_ns,
        "data_duration_s": (result.last_ts_ns - result.first_ts_ns) / 1e9,
        "n_fills": len(result.fills),
        "n_orders": int(om.stats["submitted"]),
        "rejects": dict(sorted(om.reject_counts.items())),
        "open_orders_at_end": len(om.open_orders()),
        "final_positions": {sym: _dec_str(s.instruments[sym].lots_to_qty(q))
                            for sym, q in sorted(s.portfolio.positions().items())},
        "strategy": cfg.strategy.spec,
        "strategy_params": {k: v for k, v in sorted(dict(cfg.strategy.params).items())},
        "strategy_errors": s.host.errors,
        "kill_switch_tripped": s.killswitch.tripped,
        "kill_switch_reason": s.killswitch.reason,
        "risk_breaches": [f"{b.kind} {b.symbol} {b.detail}".strip() for b in s.policy.breaches],
        "alerts": dict(sorted(s.alerts.items())),
        "stage": "backtest",
        "account": cfg.account,
        "capital": _dec_str(cfg.capital),
        "instruments": [{"symbol": i.symbol, "tick_size": _dec_str(i.tick_size),
                         "lot_size": _dec_str(i.lot_size)} for i in cfg.instruments],
        "data": [{"file": d.source.name, "format": d.format, "book": d.book, "symbol": d.symbol,
                  "events": d.n_events, "sha256": _file_sha256(d.source)} for d in result.datas],
    })
    return _jsonable(doc)


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Decimal):
        return _dec_str(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fills_csv(result: BacktestResult) -> str:
    insts = result.stack.instruments
    out = ["ts_ns,cl_ord_id,exec_id,symbol,side,qty,price,qty_lots,price_ticks,commission,"
           "liquidity,leaves_qty"]
    for f in result.fills:
        i = insts[f.symbol]
        out.append(",".join([str(f.ts_ns), str(f.cl_ord_id), f.exec_id, f.symbol,
                             "buy" if f.side == Side.BUY else "sell",
                             _dec_str(i.lots_to_qty(f.qty)), _dec_str(i.ticks_to_price(f.price)),
                             str(f.qty), str(f.price),
                             "" if f.commission is None else repr(float(f.commission)),
                             f.liquidity, str(f.leaves_qty)]))
    return "\n".join(out) + "\n"


def _equity_csv(result: BacktestResult) -> str:
    out = ["timestamp_ns,equity"]
    out += [f"{int(t)},{float(e)!r}" for t, e in zip(result.equity_ts_ns, result.equity, strict=True)]
    return "\n".join(out) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.6g}"
    return str(v)


_HTML_ROWS = (
    ("total_return", "Total return"), ("sharpe", "Sharpe"), ("sortino", "Sortino"),
    ("max_drawdown", "Max drawdown (fraction)"), ("profit_factor", "Profit factor"),
    ("win_rate", "Win rate"), ("n_trades", "Round trips"), ("n_fills", "Fills"),
    ("n_orders", "Orders"), ("turnover", "Turnover"), ("traded_notional", "Traded notional"),
    ("start_equity", "Start equity"), ("end_equity", "End equity"),
    ("sampling_interval_s", "Sampling interval (s)"), ("annualisation_factor", "Annualisation factor"),
    ("events", "Events"), ("data_duration_s", "Data span (s)"), ("strategy_errors", "Strategy errors"),
    ("kill_switch_tripped", "Kill switch tripped"), ("digest", "Result digest"),
)


def _svg_curve(ts: np.ndarray, eq: np.ndarray, width: int = 760, height: int = 220) -> str:
    if eq.size < 2:
        return "<p>Not enough equity samples to draw a curve.</p>"
    step = max(1, eq.size // 1000)
    x = ts[::step].astype(np.float64)
    y = eq[::step]
    if x[-1] != float(ts[-1]):
        x = np.append(x, float(ts[-1]))
        y = np.append(y, eq[-1])
    x0, x1 = x.min(), x.max()
    y0, y1 = float(y.min()), float(y.max())
    sx = (width - 20) / (x1 - x0) if x1 > x0 else 0.0
    sy = (height - 20) / (y1 - y0) if y1 > y0 else 0.0
    pts = " ".join(f"{10 + (a - x0) * sx:.1f},{height - 10 - (b - y0) * sy:.1f}" for a, b in zip(x, y, strict=True))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><rect width="100%" height="100%" fill="#fafafa"/>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{pts}"/>'
            f'<text x="12" y="16" font-size="11">{html.escape(_fmt(y1))}</text>'
            f'<text x="12" y="{height - 12}" font-size="11">{html.escape(_fmt(y0))}</text></svg>')


def _report_html(result: BacktestResult, doc: dict[str, Any]) -> str:
    """A minimal self-contained page: the metrics table and the equity curve (no
    timestamps of the run, so two runs give the same bytes)."""
    from engine.analytics import metrics_from_json
    m = metrics_from_json(doc)
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(_fmt(m.get(key)))}</td></tr>"
                   for key, label in _HTML_ROWS)
    data = ", ".join(f"{d['file']} ({d['format']}, {d['events']:,} events)" for d in doc["data"])
    title = f"Backtest: {doc['strategy']} on {', '.join(i['symbol'] for i in doc['instruments'])}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:3px 10px;text-align:left}th{background:#f3f3f3;"
        "font-weight:normal}td{font-family:monospace}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Data: {html.escape(data)}.</p>",
        "<h2>Metrics</h2>", f"<table>{rows}</table>",
        "<h2>Equity</h2>", _svg_curve(result.equity_ts_ns, result.equity),
        "<p>Files beside this report: metrics.json, fills.csv, equity.csv, timing.json.</p>",
        "</body></html>", ""])


def write_outputs(result: BacktestResult, out_dir: str | PathLike) -> dict[str, Path]:
    """Write metrics.json, fills.csv, equity.csv, report.html (byte-identical per run)
    and timing.json into out_dir (created)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(f"--out {out}: cannot create the directory ({exc.strerror})") from None
    doc = metrics_document(result)
    files = {
        "metrics.json": json.dumps(doc, sort_keys=True, indent=2, allow_nan=False) + "\n",
        "fills.csv": _fills_csv(result),
        "equity.csv": _equity_csv(result),
        "report.html": _report_html(result, doc),
        TIMING_FILE: json.dumps({
            "events": result.events, "rows": result.rows,
            "load_seconds": round(result.load_seconds, 6),
            "replay_seconds": round(result.replay_seconds, 6),
            "events_per_second": (round(result.events_per_second, 1)
                                  if math.isfinite(result.events_per_second) else None),
            "callbacks": result.counters}, sort_keys=True, indent=2) + "\n",
    }
    paths = {}
    for name, text in files.items():
        p = out / name
        try:
            p.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise EngineError(f"--out {out}: cannot write {name} ({exc.strerror})") from None
        paths[name] = p
    return paths


# =========================================================================== commands

def _summary(result: BacktestResult) -> str:
    m = result.metrics
    pct = m["total_return"] * 100
    return (f"backtest: {result.events:,} events in {result.replay_seconds:.3f} s "
            f"({result.events_per_second:,.0f} events/s); {len(result.fills)} fills, "
            f"{m['n_trades']} round trips; total return {pct:+.4f} %, sharpe {_fmt(m['sharpe'])}, "
            f"max drawdown {m['max_drawdown'] * 100:.3f} %; digest {result.digest[:16]}")


def backtest_main(config_path: str | PathLike | None, data_path: str | PathLike | Sequence,
                  out_dir: str | PathLike | None, progress: bool | None = None, *,
                  symbol: str | None = None, sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
                  stdout=None, stderr=None) -> int:
    """``engine backtest``: run, print a summary, write the outputs to ``out_dir``
    (when given). ``progress`` None: a progress bar when stderr is a terminal.
    Returns 0, or 2 with one line on stderr for a bad config, data file or option."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if progress is None:
        progress = bool(getattr(stderr, "isatty", lambda: False)())
    try:
        t0 = time.perf_counter()
        config, datas = load_inputs(config_path, data_path, symbol=symbol)
        load_s = time.perf_counter() - t0
        result = run_backtest(config, datas, sample_interval_s=sample_interval_s, progress=progress,
                              load_seconds=load_s)
        print(_summary(result), file=stdout)
        if out_dir is not None:
            paths = write_outputs(result, out_dir)
            print(f"backtest: wrote {', '.join(paths)} to {out_dir}", file=stdout)
    except EngineError as exc:
        print(f"engine backtest: error: {exc}", file=stderr)
        return 2
    return 0


def convert_main(data_path: str | PathLike, out_path: str | PathLike,
                 config_path: str | PathLike | None = None, *, symbol: str | None = None,
                 stdout=None, stderr=None) -> int:
    """``engine convert``: a supported data file -> the engine Parquet tick format
    (units from the config's instrument, or derived from the data). Returns 0 or 2."""
    from engine.tickdata import write_parquet
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        if config_path is None:
            data = load_tick_data(data_path, symbol=symbol)
        else:
            config = load_config(config_path)
            inst = _instrument_for(config, Path(data_path), symbol)
            data = load_tick_data(data_path, tick_size=inst.tick_size, lot_size=inst.lot_size,
                                  symbol=symbol)
            if data.symbol != inst.symbol:
                from engine.tickdata import with_symbol
                data = with_symbol(data, inst.symbol)
        path = write_parquet(data, out_path)
        print(f"convert: {data.source.name} ({data.format}) -> {path}: {data.n_events:,} events, "
              f"{len(data.events):,} rows, {data.symbol} tick {_dec_str(data.tick_size)} "
              f"lot {_dec_str(data.lot_size)}", file=stdout)
    except EngineError as exc:
        print(f"engine convert: error: {exc}", file=stderr)
        return 2
    return 0
