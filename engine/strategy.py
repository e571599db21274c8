"""The strategy API: what a strategy sees and what it may do, identical in every stage.

Units at this API are the engine's integers: prices in int **ticks**, quantities in
int **lots**, time in int ns (so there is no rounding anywhere between a strategy's
decision and the risk kernel). A strategy converts decimals once, at `on_start`, with
``self.ctx.instrument(symbol)`` (``price_to_ticks``, ``qty_to_lots``, ...). P&L and
exposures are money (float), see `engine.portfolio`.

A strategy subclasses `Strategy` and overrides the callbacks it needs:

====================  =======================================================
``on_start()``        once, before any market data
``on_quote(q)``       the top of a book changed (`Quote`)
``on_book(symbol)``   any change of a book's depth (after on_quote when the top moved)
``on_trade(t)``       a trade print (`Trade`)
``on_order(o)``       any state change of one of its orders (`OrderSnapshot`)
``on_fill(f)``        a fill of one of its orders (`engine.orders.Fill`), after the
                      portfolio has booked it
``on_timer(now_ns)``  the runtime's timer (every ``timer_interval_ns``)
``on_stop()``         once, at the end or when the kill switch stops the strategy
====================  =======================================================

Actions (all through the `StrategyContext` the runtime binds; the strategy never
holds the order manager, the risk kernel or the execution client):
``submit_order(symbol, side, qty, price=None, tif="DAY") -> cl_ord_id``,
``cancel_order(id) -> bool``, ``replace_order(id, qty=None, price=None) -> new id | None``,
``cancel_all(symbol=None) -> int``. Every new order and every replace goes through
the order manager, which runs the risk kernel's check before anything reaches the
execution client; a refused order comes back at once in state Rejected (see
``on_order`` / ``self.ctx.order(id).reject_reason``). After the strategy is stopped
(end of run, kill switch) every action is refused.

Read access: ``position(symbol)``, ``positions()``, ``pnl()``, ``book(symbol)`` (a
read-only `BookView`), ``quote(symbol)``, ``open_orders(symbol=None)``,
``order(id)``, ``now_ns()``.

Parameters: the config's ``[strategy.params]`` table is passed to the constructor
as a dict; ``validate_params(params, instruments)`` (a classmethod) is called when the
config is loaded and raises ValueError naming the bad parameter.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from core_ext.records import Quote, Trade

from core_ext.book import BOOK_TOP_CHANGED, BOOK_UNCHANGED, L2Book
from engine.instruments import Instrument
from engine.orders import Fill, OrderManager, OrderSnapshot, Side, Tif
from engine.portfolio import PnlSnapshot, Portfolio

log = logging.getLogger("engine.strategy")

__all__ = ["Strategy", "StrategyContext", "StrategyHost", "StrategyStopped", "Quote", "Trade",
           "BookView", "param_symbol", "param_int", "param_float", "param_bool", "param_lots",
           "check_known"]


class StrategyStopped(RuntimeError):
    """An action was attempted after the strategy was stopped."""


# Quote (symbol, bid, bid_size, ask, ask_size, ts_ns; bid/ask in ticks, None when the
# side is empty; sizes in lots; .mid_x2, .spread) and Trade (symbol, price, qty,
# aggressor_side, ts_ns) are compiled read-only records (core_ext.records): one is
# built per market event, and as frozen dataclasses they cost 0.7 us each.


class BookView:
    """Read-only view of an L2 book (ticks, lots)."""
    __slots__ = ("_book",)

    def __init__(self, book: L2Book) -> None:
        self._book = book

    symbol = property(lambda self: self._book.symbol)
    best_bid = property(lambda self: self._book.best_bid)
    best_ask = property(lambda self: self._book.best_ask)
    best_bid_size = property(lambda self: self._book.best_bid_size)
    best_ask_size = property(lambda self: self._book.best_ask_size)
    spread = property(lambda self: self._book.spread)
    mid_x2 = property(lambda self: self._book.mid_x2)
    crossed = property(lambda self: self._book.crossed)
    stale = property(lambda self: self._book.stale)
    last_update_ns = property(lambda self: self._book.last_update_ns)

    def size_at(self, side: int, price: int) -> int:
        return self._book.size_at(int(side), price)

    def depth(self, side: int, n: int):
        """(prices, sizes) of the best n levels of a side, best first (NumPy int64 copies)."""
        return self._book.depth(int(side), n)

    def levels(self, side: int) -> list[tuple[int, int]]:
        return self._book.levels(int(side))

    def imbalance(self, n: int = 1) -> float | None:
        return self._book.imbalance(n)


class StrategyContext:
    """What the runtime gives a strategy: actions through the order manager, reads of
    the portfolio and the books. One per strategy; `active` turns False at stop."""

    def __init__(self, order_manager: OrderManager, portfolio: Portfolio,
                 books: Mapping[str, L2Book], instruments: Mapping[str, Instrument], *,
                 clock: Callable[[], int] = time.time_ns, owner: str = "strategy") -> None:
        if not owner:
            raise ValueError("owner must be a non-empty id (orders with owner '' belong to the engine)")
        self._om = order_manager
        self._portfolio = portfolio
        self._books = books
        self._views = {s: BookView(b) for s, b in books.items()}
        self._instruments = dict(instruments)
        self._clock = clock
        self.owner = owner
        self.active = True

    # --- actions ----------------------------------------------------------------
    def submit_order(self, symbol: str, side: Side | str | int, qty: int, price: int | None = None,
                     tif: Tif | str = "DAY", tag: str = "") -> int:
        if not self.active:
            self._need_active("submit_order")
        return self._om.submit(symbol, side, qty, price, tif, tag, owner=self.owner)

    def cancel_order(self, cl_ord_id: int) -> bool:
        self._need_active("cancel_order")
        if not self.owns(cl_ord_id):
            return False
        return self._om.cancel(cl_ord_id)

    def replace_order(self, cl_ord_id: int, qty: int | None = None, price: int | None = None) -> int | None:
        self._need_active("replace_order")
        if not self.owns(cl_ord_id):
            return None
        return self._om.replace(cl_ord_id, qty, price)

    def cancel_all(self, symbol: str | None = None) -> int:
        """Cancel this strategy's open orders (of `symbol`, or all): returns how many."""
        self._need_active("cancel_all")
        n = 0
        for o in self._om.open_orders(symbol):
            if o.owner == self.owner and self._om.cancel(o.cl_ord_id):
                n += 1
        return n

    # --- reads ------------------------------------------------------------------
    def now_ns(self) -> int:
        return self._clock()

    def instrument(self, symbol: str) -> Instrument:
        return self._instruments[symbol]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._instruments)

    def position(self, symbol: str) -> int:
        return self._portfolio.position(symbol)

    def positions(self) -> dict[str, int]:
        return self._portfolio.positions()

    def pnl(self) -> PnlSnapshot:
        return self._portfolio.snapshot()

    def avg_price(self, symbol: str) -> float | None:
        return self._portfolio.avg_price(symbol)

    def book(self, symbol: str) -> BookView:
        return self._views[symbol]

    def quote(self, symbol: str) -> Quote:
        b = self._books[symbol]
        return Quote(symbol, b.best_bid, b.best_bid_size or 0, b.best_ask, b.best_ask_size or 0,
                     b.last_update_ns)

    def order(self, cl_ord_id: int) -> OrderSnapshot | None:
        o = self._om.order(cl_ord_id)
        return o.snapshot() if o is not None and o.owner == self.owner else None

    def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        return [o.snapshot() for o in self._om.open_orders(symbol) if o.owner == self.owner]

    def owns(self, cl_ord_id: int) -> bool:
        o = self._om.order(cl_ord_id)
        return o is not None and o.owner == self.owner

    def _need_active(self, what: str) -> None:
        if not self.active:
            raise StrategyStopped(f"{what}: the strategy is stopped")


class Strategy:
    """Base class of strategies. See the module docstring."""

    #: how often the runtime calls on_timer (ns); the runtime may round it.
    timer_interval_ns: int = 1_000_000_000

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = dict(params or {})
        self.ctx: StrategyContext | None = None

    @classmethod
    def validate_params(cls, params: Mapping[str, Any], instruments: Mapping[str, Instrument]) -> None:
        """Raise ValueError naming the parameter if `params` is not acceptable."""

    def bind(self, ctx: StrategyContext) -> None:
        self.ctx = ctx

    # --- callbacks (override) ---------------------------------------------------
    def on_start(self) -> None: ...

    def on_quote(self, quote: Quote) -> None: ...

    def on_book(self, symbol: str) -> None: ...

    def on_trade(self, trade: Trade) -> None: ...

    def on_order(self, order: OrderSnapshot) -> None: ...

    def on_fill(self, fill: Fill) -> None: ...

    def on_timer(self, now_ns: int) -> None: ...

    def on_stop(self) -> None: ...

    # --- actions (delegate to the context) --------------------------------------
    def submit_order(self, symbol: str, side: Side | str | int, qty: int, price: int | None = None,
                     tif: Tif | str = "DAY") -> int:
        return self._ctx().submit_order(symbol, side, qty, price, tif)

    def cancel_order(self, cl_ord_id: int) -> bool:
        return self._ctx().cancel_order(cl_ord_id)

    def replace_order(self, cl_ord_id: int, qty: int | None = None, price: int | None = None) -> int | None:
        return self._ctx().replace_order(cl_ord_id, qty, price)

    def cancel_all(self, symbol: str | None = None) -> int:
        return self._ctx().cancel_all(symbol)

    # --- reads ------------------------------------------------------------------
    def position(self, symbol: str) -> int:
        return self._ctx().position(symbol)

    def pnl(self) -> PnlSnapshot:
        return self._ctx().pnl()

    def book(self, symbol: str) -> BookView:
        return self._ctx().book(symbol)

    def _ctx(self) -> StrategyContext:
        if self.ctx is None:
            raise StrategyStopped("the strategy is not bound to a context (runtime not started)")
        return self.ctx


_CALLBACKS = ("on_quote", "on_book", "on_trade", "on_order", "on_fill", "on_timer")


def overrides(strategy: object, name: str) -> bool:
    """Does `strategy` define callback `name` other than as Strategy's no-op?"""
    impl = getattr(type(strategy), name, None)
    return impl is not None and impl is not getattr(Strategy, name)


class CompiledStrategy(Strategy):
    """How the engine holds a strategy written in Cython (a core_ext.t2t.CStrategy
    subclass, docs/CYTHON_STRATEGY.md): ``cstrategy`` is the compiled instance, built
    from the configured parameters as keyword arguments. It has no Python callbacks:
    the runtime runs ``cstrategy`` inside core_ext.t2t.TickToTrade on every feed packet
    (engine.compiled_path), and registers the orders it sent with the order manager."""

    def __init__(self, cstrategy_cls: type, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.cstrategy = cstrategy_cls(**self.params)


class StrategyHost:
    """Runs one strategy: dispatches events to its callbacks and contains its errors.

    The runtime calls `start`, then `book_changed` / `trade` / `timer` as market data
    and time go by, and `stop` at the end. Register `order_event` and `fill_event` as
    order-manager listeners (after the portfolio and the risk policy). An exception in
    a callback is logged and counted (``errors``), the strategy is stopped (fail
    closed: no more callbacks, every action refused) and ``on_error(message, exc)`` is
    called so the runtime can trip the kill switch or alert.
    """

    def __init__(self, strategy: Strategy, ctx: StrategyContext, *,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.ctx = ctx
        self._on_error = on_error
        self.errors = 0
        self.running = False
        self.stopped = False
        self.stop_reason = ""
        self._books = ctx._books
        self._om_listening = False
        self.strategy = strategy

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @strategy.setter
    def strategy(self, strategy: Strategy) -> None:
        """Bind `strategy` (before start; the backtest swaps in an instance of its own).
        Callbacks it leaves as the base class's no-ops are not called at all (a call
        costs about 0.3 us on every event), and the order manager is asked for order
        snapshots and fills only if it has on_order / on_fill (see listen_to)."""
        self._strategy = strategy
        strategy.bind(self.ctx)
        self._has = {name: overrides(strategy, name) for name in _CALLBACKS}
        self._on_quote = strategy.on_quote if self._has["on_quote"] else None
        if self._om_listening:
            self._sync_listeners()

    @property
    def wants_order_events(self) -> bool:
        return self._has["on_order"]

    @property
    def wants_fill_events(self) -> bool:
        return self._has["on_fill"]

    def listen_to(self, order_manager: OrderManager) -> None:
        """Register order_event / fill_event with `order_manager`, for the callbacks the
        strategy has (and again whenever the strategy is replaced). Call it after the
        portfolio and the risk policy registered theirs."""
        self._om = order_manager
        self._om_listening = True
        self._sync_listeners()

    def _sync_listeners(self) -> None:
        om = self._om
        for wanted, listeners, callback in ((self.wants_order_events, om._order_listeners, self.order_event),
                                            (self.wants_fill_events, om._fill_listeners, self.fill_event)):
            present = callback in listeners
            if wanted and not present:
                listeners.append(callback)
            elif present and not wanted:
                listeners.remove(callback)

    def start(self) -> None:
        if self.running or self.stopped:
            return
        self.running = True
        self._call("on_start")

    def stop(self, reason: str = "stop") -> None:
        """Call on_stop once and refuse every later action. Idempotent."""
        if self.stopped:
            return
        was_running = self.running
        self.running = False
        self.stopped = True
        self.stop_reason = reason
        if was_running:
            try:
                self.strategy.on_stop()
            except Exception as exc:  # noqa: BLE001
                self.errors += 1
                log.exception("strategy on_stop failed")
                if self._on_error is not None:
                    self._on_error("on_stop", exc)
        self.ctx.active = False

    # --- events from the runtime --------------------------------------------------
    def book_changed(self, symbol: str, change: int, ts_ns: int) -> None:
        """`change` is the L2Book update code (BOOK_UNCHANGED / BOOK_DEPTH_CHANGED /
        BOOK_TOP_CHANGED, or the max over a batch)."""
        if not self.running or change == BOOK_UNCHANGED:
            return
        on_quote = self._on_quote
        if change >= BOOK_TOP_CHANGED and on_quote is not None:
            # the tick-to-trade path of a Python strategy: the callback is called
            # directly (bound once), not through _call
            b = self._books[symbol]
            q = Quote(symbol, b.best_bid, b.best_bid_size or 0, b.best_ask, b.best_ask_size or 0,
                      ts_ns or b.last_update_ns)
            try:
                on_quote(q)
            except StrategyStopped:
                return
            except Exception as exc:  # noqa: BLE001 - a strategy bug must not take the engine down
                self._failed("on_quote", exc)
                return
        if self._has["on_book"]:
            self._call("on_book", symbol)

    def trade(self, symbol: str, price: int, qty: int, aggressor_side: int | None, ts_ns: int) -> None:
        if self.running and self._has["on_trade"]:
            side = Side(aggressor_side) if aggressor_side in (0, 1) else None
            self._call("on_trade", Trade(symbol, price, qty, side, ts_ns))

    def timer(self, now_ns: int) -> None:
        if self.running and self._has["on_timer"]:
            self._call("on_timer", now_ns)

    def order_event(self, order: OrderSnapshot) -> None:
        if self.running and order.owner == self.ctx.owner:
            self._call("on_order", order)

    def fill_event(self, fill: Fill) -> None:
        if self.running and self.ctx.owns(fill.cl_ord_id):
            self._call("on_fill", fill)

    def _call(self, name: str, *args: Any) -> bool:
        try:
            getattr(self.strategy, name)(*args)
            return True
        except StrategyStopped:
            return False
        except Exception as exc:  # noqa: BLE001 - a strategy bug must not take the engine down
            self._failed(name, exc)
            return False

    def _failed(self, name: str, exc: BaseException) -> None:
        """Callback `name` raised: count, log, stop the strategy (fail closed), report."""
        self.errors += 1
        log.error("strategy %s failed; stopping the strategy", name, exc_info=exc)
        self.stop(f"error in {name}: {exc!r}")
        if self._on_error is not None:
            self._on_error(name, exc)


# --------------------------------------------------------------------------- params helpers
# For validate_params and constructors: each raises ValueError naming the parameter
# and the allowed range.

def param_symbol(params: Mapping[str, Any], instruments: Mapping[str, Instrument] | None,
                 name: str = "symbol") -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: required, a symbol of the [[instruments]] table")
    if instruments is not None and value not in instruments:
        raise ValueError(f"{name}: {value!r} is not a configured instrument "
                         f"(have {', '.join(sorted(instruments)) or 'none'})")
    return value


def param_int(params: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int) -> int:
    value = params.get(name, default)
    if value is None:
        raise ValueError(f"{name}: required, an integer in {lo}..{hi}")
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name}: {value!r} is not an integer in {lo}..{hi}")
    return value


def param_float(params: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{name}: {value!r} is not a number in {lo}..{hi}")
    return float(value)


def param_bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not true or false")
    return value


def param_lots(params: Mapping[str, Any], name: str, instrument: Instrument | None,
               default: Any = None) -> int | None:
    """A decimal quantity -> lots (> 0); None when there is no instrument to convert
    with (validation without instruments)."""
    value = params.get(name, default)
    if value is None:
        raise ValueError(f"{name}: required, a decimal quantity > 0")
    if instrument is None:
        return None
    try:
        lots = instrument.qty_to_lots(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if lots <= 0:
        raise ValueError(f"{name}: {value!r} must be > 0")
    return lots


def check_known(params: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown parameter (allowed: {', '.join(allowed)})")
