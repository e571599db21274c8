"""One code path for every stage: the trading core, assembled the same way everywhere.

`build_core` wires the risk kernel, the order manager, the portfolio, the risk policy,
the kill switch and the strategy host around a set of books and an execution client.
A stage chooses only the books' source (historical replay, the venue's ITCH feed) and
the execution client (simulated, venue, or shadow = both); everything else here is
identical in backtest, paper, shadow, small and live (DESIGN.md, "Rules that hold
everywhere").

Events flow in through three calls, in this order per market event:
    core.on_book(symbol, change, ts_ns)       after the book was updated
    core.on_trade(symbol, price, qty, side, ts_ns)
    core.on_timer(now_ns)                     on the runtime's timer
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core_ext import book as l2
from core_ext import risk as rk
from engine.config import Config, Stage
from engine.instruments import Instrument
from engine.killswitch import KillSwitch
from engine.orders import ClOrdIdGenerator, ExecutionClient, OrderManager
from engine.portfolio import Portfolio
from engine.risk_policy import RiskPolicy, build_kernel
from engine.strategy import StrategyContext, StrategyHost

log = logging.getLogger("engine.core")
_BOOK_UNCHANGED, _BOOK_TOP_CHANGED = l2.BOOK_UNCHANGED, l2.BOOK_TOP_CHANGED


@dataclass
class Alerts:
    """Alerts raised by any part of the core; read by monitoring on a timer."""
    raised: list[tuple[int, str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    clock: Callable[[], int] = lambda: 0
    limit: int = 10_000

    def __call__(self, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.raised) < self.limit:
            self.raised.append((self.clock(), kind, detail))
        log.warning("alert %s: %s", kind, detail)


@dataclass
class TradingCore:
    config: Config
    stage: Stage
    instruments: Mapping[str, Instrument]
    books: Mapping[str, l2.L2Book]
    kernel: rk.RiskKernel
    client: ExecutionClient
    om: OrderManager
    portfolio: Portfolio
    policy: RiskPolicy
    killswitch: KillSwitch
    host: StrategyHost
    alerts: Alerts
    clock: Callable[[], int]
    strategy_errors: list[str] = field(default_factory=list)

    # -------------------------------------------------------------- events
    def on_book(self, symbol: str, change: int, ts_ns: int) -> None:
        if change == _BOOK_UNCHANGED:
            return
        if change == _BOOK_TOP_CHANGED:
            book = self.books[symbol]
            self.policy.on_quote(symbol, book.best_bid, book.best_ask, ts_ns)
        self.host.book_changed(symbol, change, ts_ns)

    def on_trade(self, symbol: str, price: int, qty: int, aggressor_side: int | None, ts_ns: int) -> None:
        self.policy.on_trade(symbol, price, ts_ns)
        self.host.trade(symbol, price, qty, aggressor_side, ts_ns)

    def on_book_stale(self, symbol: str, stale: bool) -> None:
        self.policy.on_book_stale(symbol, stale)

    def on_timer(self, now_ns: int) -> None:
        self.om.check_timeouts(now_ns)
        self.policy.on_timer(now_ns)
        self.portfolio.sample(now_ns)
        self.host.timer(now_ns)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.killswitch.tripped:
            log.error("kill switch is latched (%s): the strategy is not started; reset it first",
                      self.killswitch.reason)
            return
        self.policy.start_day()
        self.host.start()

    def stop(self, reason: str = "stop") -> None:
        self.host.stop(reason)

    def status(self) -> dict:
        """A JSON-able summary for /status and reports."""
        snap = self.portfolio.snapshot()
        return {
            "stage": str(self.stage),
            "strategy": self.config.strategy.spec,
            "strategy_running": self.host.running,
            "kill_switch": {"tripped": self.killswitch.tripped, "reason": self.killswitch.reason},
            "blocked": sorted(self.om.block_reasons),
            "positions": {s: self.portfolio.position(s) for s in self.instruments},
            "open_orders": len(self.om.open_orders()),
            "equity": snap.equity,
            "realized_pnl": float(self.portfolio.realized_pnl()),
            "risk_counters": {rk.REJECT_REASONS[c]: int(n) for c, n in enumerate(self.kernel.counters())
                              if n and c in rk.REJECT_REASONS},
            "alerts": dict(self.alerts.counts),
        }


def build_core(config: Config, books: Mapping[str, l2.L2Book], client: ExecutionClient, *,
               clock: Callable[[], int], stage: Stage | str | None = None,
               state_dir: str | Path | None = None, journal=None, owner: str = "strategy") -> TradingCore:
    """Assemble the trading core for `stage` (default: the config's)."""
    st = Stage(stage) if stage is not None else config.stage
    instruments = config.instruments_by_symbol
    missing = [s for s in instruments if s not in books]
    if missing:
        raise ValueError(f"no book for configured instrument(s) {', '.join(missing)}")
    alerts = Alerts(clock=clock)
    kernel = build_kernel(config, st)
    ids = ClOrdIdGenerator(session_start_ns=clock())
    om = OrderManager(kernel, client, instruments, clock=clock, ids=ids,
                      status_timeout_ns=config.orders.status_timeout_ns,
                      max_status_queries=config.orders.max_status_queries, alert=alerts, journal=journal)
    client.set_report_handler(om.on_execution_report)
    portfolio = Portfolio(instruments, initial_capital=config.capital)
    state_file = None
    if state_dir is not None:
        state_file = Path(state_dir) / "killswitch.json"
    elif config.killswitch.state_file:
        state_file = config.killswitch.state_file
    killswitch = KillSwitch(state_file, kernel, order_manager=om, clock=clock, alert=alerts,
                            flatten_on_trip=config.killswitch.flatten_on_trip)
    policy = RiskPolicy(config, kernel, portfolio, killswitch=killswitch, alert=alerts, clock=clock)
    strategy = config.strategy.create()
    ctx = StrategyContext(om, portfolio, books, instruments, clock=clock, owner=owner)
    core_errors: list[str] = []

    def strategy_failed(where: str, exc: BaseException) -> None:
        core_errors.append(f"{where}: {exc!r}")
        alerts("strategy_error", f"{where}: {exc!r}")

    host = StrategyHost(strategy, ctx, on_error=strategy_failed)
    killswitch.attach(stop_strategy=host.stop)
    # listeners in the order the order manager documents: portfolio, risk policy, strategy
    om.add_listener(on_fill=portfolio.on_fill)
    om.add_listener(on_fill=policy.on_fill)
    # the strategy's, only for the callbacks it has (an order listener makes the order
    # manager build a snapshot on every order event)
    host.listen_to(om)
    return TradingCore(config=config, stage=st, instruments=instruments, books=books, kernel=kernel,
                       client=client, om=om, portfolio=portfolio, policy=policy, killswitch=killswitch,
                       host=host, alerts=alerts, clock=clock, strategy_errors=core_errors)
