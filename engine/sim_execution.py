"""Simulated execution: an `ExecutionClient` that fills against the current L2 books
with a pluggable fill model (engine.fill_model), latency and commissions. Used by the
backtest and paper stages (and the simulated half of shadow); the order manager
cannot tell it from a venue: it receives the same `ExecutionReport`s.

Time. Nothing happens by itself: the runtime drives the simulator with its clock.
Per market-data event at time ``ts``:

    sim.advance_to(ts)             # requests that arrived by ts act on the book as it was
    <apply the update to the L2 book>
    sim.on_book(symbol, ts)        # passive fills / queue updates from the new book
    sim.on_trade(symbol, px, qty, aggressor_side, ts)   # for trade prints
                                   # (both deliver the reports already due at ts)
    <dispatch to the strategy>; sim.advance_to(ts)  # zero-latency requests act at once

A request sent at ``t`` arrives at ``t + latency.order_delay``; the reports it causes
are delivered at arrival + ``latency.report_delay`` by `advance_to` (never from inside
a ``send_*`` call, so the order manager is never re-entered). Events due at the same
time are processed in the order they were scheduled; with a fixed seed every run is
identical.

Our orders do not enter the historical book: a resting order only has a queue
position (see fill_model); the liquidity our aggressive orders take is remembered per
level until the book next changes, so two orders cannot both take the same size.
"""
from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from core_ext.book import L2Book
from engine.fill_model import BookFillModel, CommissionModel, FillModel, LatencyModel
from engine.instruments import Instrument
from engine.orders import ExecKind, ExecutionReport, Order, OrdStatus, Tif

__all__ = ["SimExecution", "SimOrder"]

SIDE_BUY, SIDE_SELL = 0, 1


@dataclass(slots=True)
class SimOrder:
    """The simulator's own copy of a working order (the venue's view)."""
    cl_ord_id: int
    venue_order_id: str
    symbol: str
    side: int
    qty: int
    price: int | None
    tif: int
    cum_qty: int = 0
    fill_notional: int = 0
    queue_ahead: int = 0
    status: OrdStatus = OrdStatus.NEW
    resting: bool = False
    seq: int = 0            # arrival order, for passing trade volume along

    @property
    def leaves(self) -> int:
        return self.qty - self.cum_qty


class SimExecution:
    """See the module docstring. ``books``: symbol -> L2Book kept current by the
    runtime (the same objects the strategy reads)."""

    supports_mass_cancel = True

    def __init__(self, books: Mapping[str, L2Book], instruments: Mapping[str, Instrument], *,
                 fill_model: FillModel | None = None, commission: CommissionModel | None = None,
                 latency: LatencyModel | None = None, seed: int = 0,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.books = books
        self.instruments = dict(instruments)
        self.fill_model: FillModel = fill_model or BookFillModel()
        self.commission = commission or CommissionModel()
        self.latency = latency or LatencyModel()
        self.clock = clock
        self._rng = random.Random(seed)
        self._handler: Callable[[ExecutionReport], None] | None = None
        self._queue: list[tuple[int, int, str, object]] = []
        self._seq = 0
        self._exec_seq = 0
        self._venue_seq = 0
        self._now = 0
        self._last_report_due = 0
        self._last_request_due = 0
        self._orders: dict[int, SimOrder] = {}          # live orders by current cl_ord_id
        self._done: dict[int, SimOrder] = {}            # ended orders (status requests)
        self._consumed: dict[str, dict[tuple[int, int], int]] = {}
        self.counters = {"new": 0, "cancel": 0, "replace": 0, "mass_cancel": 0, "status": 0,
                         "fills": 0, "rejects": 0}

    # ------------------------------------------------------------------ ExecutionClient
    def set_report_handler(self, handler: Callable[[ExecutionReport], None]) -> None:
        self._handler = handler

    def send_new(self, order: Order) -> None:
        self._schedule_request("new", (order.cl_ord_id, order.symbol, int(order.side), order.qty,
                                       order.price, int(order.tif)))

    def send_cancel(self, order: Order, cancel_id: int) -> None:
        self._schedule_request("cancel", (order.cl_ord_id, cancel_id))

    def send_replace(self, order: Order, replacement: Order) -> None:
        self._schedule_request("replace", (order.cl_ord_id, replacement.cl_ord_id, replacement.qty,
                                           replacement.price))

    def send_mass_cancel(self, symbol: str | None, request_id: int) -> None:
        self._schedule_request("mass_cancel", (symbol, request_id))

    def send_status_request(self, order: Order) -> None:
        self._schedule_request("status", (order.cl_ord_id,))

    # ------------------------------------------------------------------ driving
    def advance_to(self, now_ns: int) -> int:
        """Process every request arrival and deliver every report due at or before
        `now_ns`, in time order. Returns the number of events handled."""
        n = 0
        while self._queue and self._queue[0][0] <= now_ns:
            due, _, kind, payload = heapq.heappop(self._queue)
            self._now = max(self._now, due)
            n += 1
            if kind == "report":
                if self._handler is not None:
                    self._handler(payload)  # type: ignore[arg-type]
            else:
                getattr(self, f"_arrive_{kind}")(*payload)  # type: ignore[misc]
        self._now = max(self._now, now_ns)
        return n

    def flush(self) -> int:
        """advance_to(clock())."""
        return self.advance_to(self.clock())

    def next_event_ns(self) -> int | None:
        """Time of the next scheduled event (None when idle)."""
        return self._queue[0][0] if self._queue else None

    def on_book(self, symbol: str, ts_ns: int) -> None:
        """The runtime changed `symbol`'s book: refresh queue positions and fill resting
        orders the book moved through."""
        self.advance_to(ts_ns)
        self._consumed.pop(symbol, None)
        book = self.books.get(symbol)
        if book is None:
            return
        fm = self.fill_model
        for so in self._resting(symbol):
            so.queue_ahead = fm.on_level_change(so.side, so.price, so.queue_ahead, book)
            q = fm.passive_fill_on_book(so.side, so.price, so.leaves, so.queue_ahead, book)
            if q > 0:
                self._fill(so, q, so.price, "M")
        self.advance_to(ts_ns)   # deliver what is due now (zero report latency)

    def on_trade(self, symbol: str, price: int, qty: int, aggressor_side: int, ts_ns: int) -> None:
        """A trade print: fills resting orders per the queue model (earlier arrivals first)."""
        self.advance_to(ts_ns)
        left = qty
        fm = self.fill_model
        for so in self._resting(symbol):
            if left <= 0:
                break
            fill, so.queue_ahead, left_after = fm.passive_fill_on_trade(
                so.side, so.price, so.leaves, so.queue_ahead, price, left, aggressor_side)
            if fill > 0:
                self._fill(so, fill, so.price, "M")
            left = left_after
        self.advance_to(ts_ns)

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        return [o for o in self._orders.values() if symbol is None or o.symbol == symbol]

    # ------------------------------------------------------------------ arrivals
    def _arrive_new(self, cl_ord_id: int, symbol: str, side: int, qty: int, price: int | None,
                    tif: int) -> None:
        self.counters["new"] += 1
        book = self.books.get(symbol)
        reason = ""
        if symbol not in self.instruments or book is None:
            reason = f"unknown symbol {symbol}"
        elif qty <= 0 or (price is not None and price <= 0):
            reason = "invalid quantity or price"
        elif cl_ord_id in self._orders or cl_ord_id in self._done:
            reason = "duplicate ClOrdID"
        if reason:
            self.counters["rejects"] += 1
            self._report(ExecKind.REJECTED, cl_ord_id, symbol=symbol, side=side, reason=reason,
                         cum_qty=0, leaves_qty=0)
            return
        self._venue_seq += 1
        self._seq += 1
        so = SimOrder(cl_ord_id, f"V{self._venue_seq}", symbol, side, qty, price, tif, seq=self._seq)
        self._orders[cl_ord_id] = so
        self._report(ExecKind.NEW, cl_ord_id, so=so)
        consumed = self._consumed.setdefault(symbol, {})
        if tif == Tif.FOK:
            trial = dict(consumed)
            fills = self.fill_model.aggressive_fills(side, qty, price, book, trial)
            if sum(q for _, q in fills) < qty:
                self._end(so, OrdStatus.CANCELED, ExecKind.CANCELED, "FOK not fillable")
                return
            consumed.clear()
            consumed.update(trial)
        else:
            fills = self.fill_model.aggressive_fills(side, qty, price, book, consumed)
        for px, q in fills:
            self._fill(so, q, px, "T")
        if so.status in (OrdStatus.FILLED,):
            return
        if price is None or tif in (Tif.IOC, Tif.FOK):
            self._end(so, OrdStatus.CANCELED, ExecKind.CANCELED,
                      "IOC remainder" if price is not None else "market order remainder")
            return
        self._rest(so, book)

    def _arrive_cancel(self, cl_ord_id: int, cancel_id: int) -> None:
        self.counters["cancel"] += 1
        so = self._orders.get(cl_ord_id)
        if so is None:
            done = self._done.get(cl_ord_id)
            self._report(ExecKind.CANCEL_REJECT, cancel_id, orig=cl_ord_id,
                         reason="too late to cancel" if done else "unknown order",
                         ord_status=done.status if done else None)
            return
        self._end(so, OrdStatus.CANCELED, ExecKind.CANCELED, "canceled", report_id=cancel_id,
                  orig=cl_ord_id)

    def _arrive_replace(self, cl_ord_id: int, new_id: int, qty: int, price: int | None) -> None:
        self.counters["replace"] += 1
        so = self._orders.get(cl_ord_id)
        if so is None or price is None or qty <= so.cum_qty or new_id in self._orders:
            self._report(ExecKind.REPLACE_REJECT, new_id, orig=cl_ord_id,
                         reason="unknown order" if so is None else "invalid replace")
            return
        book = self.books[so.symbol]
        keeps_priority = price == so.price and qty <= so.qty
        del self._orders[cl_ord_id]
        old = SimOrder(so.cl_ord_id, so.venue_order_id, so.symbol, so.side, so.qty, so.price, so.tif,
                       so.cum_qty, so.fill_notional, status=OrdStatus.REPLACED)
        self._done[cl_ord_id] = old
        so.cl_ord_id, so.qty, so.price = new_id, qty, price
        self._orders[new_id] = so
        self._report(ExecKind.REPLACED, new_id, orig=cl_ord_id, so=so)
        if keeps_priority:
            return
        so.resting = False
        consumed = self._consumed.setdefault(so.symbol, {})
        for px, q in self.fill_model.aggressive_fills(so.side, so.leaves, price, book, consumed):
            self._fill(so, q, px, "T")
        if so.status is not OrdStatus.FILLED:
            self._seq += 1
            so.seq = self._seq
            self._rest(so, book)

    def _arrive_mass_cancel(self, symbol: str | None, request_id: int) -> None:
        self.counters["mass_cancel"] += 1
        for so in sorted(self.open_orders(symbol), key=lambda o: o.seq):
            self._end(so, OrdStatus.CANCELED, ExecKind.CANCELED, "mass cancel")

    def _arrive_status(self, cl_ord_id: int) -> None:
        self.counters["status"] += 1
        so = self._orders.get(cl_ord_id) or self._done.get(cl_ord_id)
        if so is None:
            self._report(ExecKind.ORDER_STATUS, cl_ord_id, ord_status=OrdStatus.REJECTED,
                         reason="unknown order", cum_qty=0, leaves_qty=0)
            return
        self._report(ExecKind.ORDER_STATUS, cl_ord_id, so=so, ord_status=so.status,
                     avg_px=so.fill_notional / so.cum_qty if so.cum_qty else None)

    # ------------------------------------------------------------------ internals
    def _schedule_request(self, kind: str, payload: tuple) -> None:
        now = max(self.clock(), self._now)
        # requests, too, arrive in the order they were sent
        due = max(now + self.latency.order_delay(self._rng), self._last_request_due)
        self._last_request_due = due
        self._push(due, kind, payload)

    def _push(self, due: int, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, kind, payload))

    def _report(self, kind: ExecKind, cl_ord_id: int, *, so: SimOrder | None = None, orig: int = 0,
                reason: str = "", last_qty: int = 0, last_px: int = 0, commission: float | None = None,
                liquidity: str = "", ord_status: OrdStatus | None = None, avg_px: float | None = None,
                symbol: str = "", side: int | None = None, cum_qty: int | None = None,
                leaves_qty: int | None = None) -> None:
        self._exec_seq += 1
        if so is not None:
            symbol, side = so.symbol, so.side
            cum_qty = so.cum_qty if cum_qty is None else cum_qty
            leaves_qty = (so.leaves if so.status in (OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED)
                          else 0) if leaves_qty is None else leaves_qty
        report = ExecutionReport(kind, cl_ord_id, exec_id=f"S{self._exec_seq}", orig_cl_ord_id=orig,
                                 venue_order_id=so.venue_order_id if so else "", symbol=symbol,
                                 side=side, last_qty=last_qty, last_px=last_px, cum_qty=cum_qty,
                                 leaves_qty=leaves_qty, avg_px=avg_px, ord_status=ord_status,
                                 reason=reason, ts_ns=self._now, commission=commission,
                                 liquidity=liquidity)
        # reports travel one ordered stream (TCP): jitter never reorders them
        due = max(self._now + self.latency.report_delay(self._rng), self._last_report_due)
        self._last_report_due = due
        self._push(due, "report", report)

    def _fill(self, so: SimOrder, qty: int, price: int, liquidity: str) -> None:
        qty = min(qty, so.leaves)
        if qty <= 0:
            return
        so.cum_qty += qty
        so.fill_notional += qty * price
        self.counters["fills"] += 1
        inst = self.instruments[so.symbol]
        notional = float(inst.notional(qty, price))
        fee = self.commission.commission(notional, qty, liquidity)
        if so.leaves == 0:
            so.status = OrdStatus.FILLED
            self._orders.pop(so.cl_ord_id, None)
            self._done[so.cl_ord_id] = so
            so.resting = False
        else:
            so.status = OrdStatus.PARTIALLY_FILLED
        self._report(ExecKind.TRADE, so.cl_ord_id, so=so, last_qty=qty, last_px=price,
                     commission=fee, liquidity=liquidity)

    def _rest(self, so: SimOrder, book: L2Book) -> None:
        so.resting = True
        so.queue_ahead = self.fill_model.queue_ahead_on_rest(so.side, so.price, book)

    def _end(self, so: SimOrder, status: OrdStatus, kind: ExecKind, reason: str, *,
             report_id: int | None = None, orig: int = 0) -> None:
        so.status = status
        so.resting = False
        self._orders.pop(so.cl_ord_id, None)
        self._done[so.cl_ord_id] = so
        self._report(kind, so.cl_ord_id if report_id is None else report_id, so=so, orig=orig,
                     reason=reason, leaves_qty=0)

    def _resting(self, symbol: str) -> list[SimOrder]:
        return sorted((o for o in self._orders.values() if o.symbol == symbol and o.resting),
                      key=lambda o: o.seq)
