"""The order manager: every order of the engine, its state machine, the pre-trade
risk check and the execution-client interface.

Units: prices are int ticks (``None`` for a market order), quantities int lots, time
int ns, client order ids uint64 ints (see `ClOrdIdGenerator`; `format_cl_ord_id`
gives the 13-character base-36 wire form that fits a FIX ClOrdID and an OUCH token).

Flow of a new order (`OrderManager.submit`)::

    strategy -> submit -> [trading blocked?] -> RiskKernel.check (reserves) -> client.send_new
                                   |                   |
                                   +--> Rejected <-----+  (reason logged and counted)

Every order passes ``core_ext.risk.RiskKernel.check`` before it reaches the
execution client; a replace passes it too (for the replacement's open quantity),
so neither can bypass the kernel. The kernel's open-order accounting is kept exact:
each order holds a ``reserved`` quantity (what the kernel counts open for it); fills
consume it and whatever is left is released when the order ends (cancel, expiry,
reject, replace, fill).

Execution reports (`ExecutionReport`, produced by the FIX/OUCH clients and by the
simulated execution) drive the state machine whose legal transitions are all in
`TRANSITIONS`. Rules:

* a duplicate ExecID is ignored and counted (``stats["duplicate_exec_ids"]``);
* a fill counts whatever the state: a fill after a cancel request keeps the order
  PendingCancel (or makes it Filled); a fill on an order already terminal is booked
  (positions must reflect what traded) but the state does not move, and an alert is
  raised;
* an illegal transition is never applied: it is logged, counted
  (``stats["illegal_transitions"]``) and raised as an alert;
* a report for an unknown order is an alert; an unknown FILL also blocks trading
  (fail closed) until an operator or a clean reconciliation unblocks it;
* an order with no answer (PendingNew/PendingCancel/PendingReplace) after
  ``status_timeout_ns`` is queried with ``client.send_status_request`` (up to
  ``max_status_queries`` times, then an alert), never assumed.

Threading: not thread-safe; one thread (the strategy loop) owns the manager. Reports
must be delivered on that thread (the asyncio runtime does so naturally).
"""
from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Protocol, runtime_checkable

from core_ext.orderpath import OrderPath
from core_ext.records import OrderRecord, OrderSnapshotRecord, format_cl_ord_id_fast

from core_ext import orderpath
from core_ext import risk as rk
from engine.instruments import Instrument

log = logging.getLogger("engine.orders")

__all__ = [
    "Side", "Tif", "OrdStatus", "ExecKind", "TRANSITIONS", "TERMINAL_STATES", "LIVE_STATES",
    "PENDING_STATES", "ExecutionReport", "Order", "OrderSnapshot", "Fill", "ExecutionClient",
    "ClOrdIdGenerator", "format_cl_ord_id", "parse_cl_ord_id", "OrderManager",
    "REASON_BLOCKED", "REASON_UNKNOWN_INSTRUMENT", "REASON_INVALID", "REASON_SEND_FAILED",
    "UNKNOWN_FILL_BLOCK",
]

INT64_MAX = 2**63 - 1
_RISK_OK = rk.RISK_OK
#: how long an ended order stays in the order manager (a late fill of a canceled order
#: must still find it); the backtest (event time) and the runtime forget older ones
TERMINAL_RETENTION_NS = 3_600_000_000_000

# Local (non-kernel) reject reasons. Kernel rejects use rk.REJECT_REASONS names.
REASON_BLOCKED = "TRADING_BLOCKED"            # a block flag is set (reconciliation, kill switch...)
REASON_UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
REASON_INVALID = "INVALID_ORDER"              # values outside int64, replace below filled qty...
REASON_SEND_FAILED = "SEND_FAILED"            # the execution client raised
UNKNOWN_FILL_BLOCK = "unknown_fill"           # block reason set by a fill for an unknown order


class Side(IntEnum):
    """Order side; the values are core_ext's SIDE_BUY / SIDE_SELL."""
    BUY = 0
    SELL = 1

    @classmethod
    def parse(cls, value: object) -> Side:
        """Side from a Side, 0/1, or "buy"/"sell"/"b"/"s" (any case)."""
        if isinstance(value, Side):
            return value
        if isinstance(value, str):
            v = value.strip().lower()
            if v in ("buy", "b"):
                return cls.BUY
            if v in ("sell", "s"):
                return cls.SELL
        elif isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return cls(value)
        raise ValueError(f"side must be 'buy' or 'sell' (or 0/1), got {value!r}")

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class Tif(IntEnum):
    """Time in force; the values are core_ext's TIF_*."""
    DAY = 0
    GTC = 1
    IOC = 2
    FOK = 3

    @classmethod
    def parse(cls, value: object) -> Tif:
        if isinstance(value, Tif):
            return value
        if isinstance(value, str) and value.strip().upper() in cls.__members__:
            return cls[value.strip().upper()]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3:
            return cls(value)
        raise ValueError(f"tif must be one of DAY, GTC, IOC, FOK, got {value!r}")


class OrdStatus(StrEnum):
    PENDING_NEW = "PendingNew"
    NEW = "New"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    PENDING_CANCEL = "PendingCancel"
    CANCELED = "Canceled"
    PENDING_REPLACE = "PendingReplace"
    REPLACED = "Replaced"
    REJECTED = "Rejected"
    EXPIRED = "Expired"


S = OrdStatus
# THE table of legal transitions (from -> set of to). A self-loop is legal only
# where listed (a partial fill that leaves the state as it was). Nothing leaves a
# terminal state.
TRANSITIONS: dict[OrdStatus, frozenset[OrdStatus]] = {
    S.PENDING_NEW: frozenset({S.NEW, S.PARTIALLY_FILLED, S.FILLED, S.REJECTED, S.CANCELED,
                              S.EXPIRED, S.PENDING_CANCEL}),
    S.NEW: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.PENDING_REPLACE,
                      S.CANCELED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL,
                                   S.PENDING_REPLACE, S.CANCELED, S.EXPIRED}),
    S.PENDING_CANCEL: frozenset({S.PENDING_CANCEL, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED,
                                 S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED}),
    S.PENDING_REPLACE: frozenset({S.PENDING_REPLACE, S.FILLED, S.REPLACED, S.CANCELED, S.EXPIRED,
                                  S.NEW, S.PARTIALLY_FILLED}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REPLACED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}
TERMINAL_STATES = frozenset(s for s, to in TRANSITIONS.items() if not to)
LIVE_STATES = frozenset(TRANSITIONS) - TERMINAL_STATES
PENDING_STATES = frozenset({S.PENDING_NEW, S.PENDING_CANCEL, S.PENDING_REPLACE})


class ExecKind(StrEnum):
    """What an execution report says (FIX ExecType / OUCH message, normalised)."""
    NEW = "New"                        # order accepted by the venue (FIX 150=0, OUCH Accepted)
    TRADE = "Trade"                    # a fill of last_qty at last_px (150=F, OUCH Executed)
    CANCELED = "Canceled"              # order left the book, solicited or not (150=4)
    REPLACED = "Replaced"              # cl_ord_id = replacement, orig_cl_ord_id = replaced (150=5)
    REJECTED = "Rejected"              # new order rejected (150=8)
    EXPIRED = "Expired"                # end of its time in force (150=C)
    PENDING_CANCEL = "PendingCancel"   # venue acknowledges a cancel in progress (150=6)
    PENDING_REPLACE = "PendingReplace"  # venue acknowledges a replace in progress (150=E)
    CANCEL_REJECT = "CancelReject"     # cancel request refused (35=9, 434=1)
    REPLACE_REJECT = "ReplaceReject"   # replace request refused (35=9, 434=2); cl_ord_id = replacement
    ORDER_STATUS = "OrderStatus"       # answer to a status request (150=I): ord_status, cum_qty, avg_px


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """One execution report, as every execution client (FIX, OUCH, simulated) delivers
    it to `OrderManager.on_execution_report`.

    ``cl_ord_id`` is the id the venue echoes: for a response to a cancel request that
    is the cancel request's id (``orig_cl_ord_id`` = the order); for REPLACED and
    REPLACE_REJECT it is the replacement's id (``orig_cl_ord_id`` = the replaced
    order); otherwise the order's own id. Prices in ticks, quantities in lots.
    """
    kind: ExecKind
    cl_ord_id: int
    exec_id: str = ""                 # unique per venue execution event; "" when the venue has none
    orig_cl_ord_id: int = 0           # see above; 0 when not applicable
    venue_order_id: str = ""
    symbol: str = ""
    side: int | None = None           # Side value when the venue reports it
    last_qty: int = 0                 # TRADE: lots filled by this execution
    last_px: int = 0                  # TRADE: fill price in ticks
    cum_qty: int | None = None        # venue's cumulative filled lots, when known
    leaves_qty: int | None = None     # venue's open lots, when known
    avg_px: float | None = None       # venue's average fill price in ticks (ORDER_STATUS)
    ord_status: OrdStatus | None = None  # ORDER_STATUS: the venue's status of the order
    reason: str = ""                  # reject / cancel reason text
    ts_ns: int = 0                    # venue transact time
    commission: float | None = None   # TRADE: money, when the venue reports it
    liquidity: str = ""               # TRADE: "M" maker (passive), "T" taker, "" unknown


@dataclass(frozen=True, slots=True)
class Fill:
    """A fill as the portfolio, the risk policy and the strategy see it."""
    cl_ord_id: int
    exec_id: str
    symbol: str
    inst_id: int
    side: Side
    qty: int                  # lots
    price: int                # ticks
    ts_ns: int
    leaves_qty: int           # order's open lots after this fill (0 when done)
    commission: float | None  # money; None: not reported (the portfolio applies its model)
    liquidity: str = ""       # "M", "T" or ""
    inferred: bool = False    # synthesised from an order-status answer (a missed fill)


class OrderSnapshot(OrderSnapshotRecord):
    """Read-only copy of an order, handed to strategies and listeners.

    Fields: cl_ord_id, symbol, side (Side), qty, price (ticks or None), tif (Tif),
    state (OrdStatus), cum_qty, leaves_qty, avg_px, reject_reason, orig_cl_ord_id,
    replaced_by, tag, updated_ns, owner. Compiled (core_ext.records): it is built for
    every order event, and a frozen dataclass cost 2 us to build."""
    __slots__ = ()

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Order(OrderRecord):
    """An order owned by the OrderManager (mutable; clients must only read it).

    The fields (core_ext.records.OrderRecord; every one assignable, no others):
      cl_ord_id, symbol, inst_id, side (Side), tif (Tif), state (OrdStatus)
      qty                 total order quantity, lots (after a replace: the new total)
      price               ticks; None = market order
      created_ns, updated_ns
      tag                 free text from the strategy (not sent)
      owner               who submitted it (a strategy context's owner id; "" = engine)
      cum_qty             lots filled (a replacement starts with the replaced order's)
      fill_notional       sum of qty * price of the fills, tick-lots
      venue_order_id, reject_reason
      orig_cl_ord_id      replacement: the order it replaces
      replaced_by         replaced (or being replaced): the replacement's id
      reserved            lots the risk kernel counts open for this order
      kernel_open         the kernel counts this order among its open orders
      restore_state       state to go back to when a cancel/replace is refused
      cancel_id           id of the cancel request in flight
      cancel_after_replace  cancel requested while a replace was in flight
      pending_since_ns    when the order entered its current pending state
      last_status_ns      when it was last queried
      status_queries      queries sent for the current pending state
      unresolved_alerted
    Positional: the first ten; the rest by keyword, defaults 0 / "" / False / None."""
    __slots__ = ()

    @property
    def leaves_qty(self) -> int:
        if self.state in TERMINAL_STATES:
            return 0
        return max(self.qty - self.cum_qty, 0)

    @property
    def avg_px(self) -> float | None:
        return self.fill_notional / self.cum_qty if self.cum_qty else None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def snapshot(self) -> OrderSnapshot:
        state, qty, cum = self.state, self.qty, self.cum_qty
        leaves = 0 if state in TERMINAL_STATES or qty <= cum else qty - cum
        return OrderSnapshot(self.cl_ord_id, self.symbol, self.side, qty, self.price, self.tif,
                             state, cum, leaves, self.fill_notional / cum if cum else None,
                             self.reject_reason, self.orig_cl_ord_id, self.replaced_by, self.tag,
                             self.updated_ns, self.owner)


@runtime_checkable
class ExecutionClient(Protocol):
    """Where orders go: the FIX and OUCH clients and `engine.sim_execution.SimExecution`.

    The client answers with `ExecutionReport`s passed to the handler given to
    `set_report_handler` (the runtime passes ``OrderManager.on_execution_report``),
    on the manager's thread. A ``send_*`` that cannot send raises; the manager then
    treats the request as not sent.
    """
    supports_mass_cancel: bool

    def set_report_handler(self, handler: Callable[[ExecutionReport], None]) -> None: ...

    def send_new(self, order: Order) -> None: ...

    def send_cancel(self, order: Order, cancel_id: int) -> None: ...

    def send_replace(self, order: Order, replacement: Order) -> None: ...

    def send_mass_cancel(self, symbol: str | None, request_id: int) -> None: ...

    def send_status_request(self, order: Order) -> None: ...


# --------------------------------------------------------------------------- ids

def format_cl_ord_id(cl_ord_id: int) -> str:
    """Wire form of a client order id: base 36, upper case, at most 13 characters
    (fits a FIX ClOrdID and a 14-character OUCH order token). Formatted in C: this
    runs once per order on the tick-to-trade path."""
    if type(cl_ord_id) is not int or not 0 < cl_ord_id < 18446744073709551616:
        try:
            value = operator.index(cl_ord_id)     # numpy integers too
        except TypeError:
            value = 0
        if 0 < value < 2**64:
            return format_cl_ord_id_fast(value)
        raise ValueError(f"client order id {cl_ord_id!r} out of range (1..2**64-1)")
    return format_cl_ord_id_fast(cl_ord_id)


def parse_cl_ord_id(text: str) -> int:
    """Inverse of format_cl_ord_id; ValueError for anything else."""
    try:
        value = int(text.strip(), 36)
    except (ValueError, AttributeError):
        raise ValueError(f"not a client order id: {text!r}") from None
    if not 0 < value < 2**64:
        raise ValueError(f"not a client order id: {text!r}")
    return value


class ClOrdIdGenerator:
    """Unique, monotonic, restart-safe client order ids.

    id = (session prefix << 32) | sequence, with the prefix = the session start time in
    whole seconds since the epoch (fits until 2106) and the sequence counting from 1.
    A restart gets a later prefix, hence larger ids than every id of the previous
    session, provided it starts at least one second later by the wall clock; pass
    ``floor`` (the largest id found in the journal) to make that hold regardless of
    the clock: the prefix is then at least floor's prefix + 1.
    """
    SEQ_BITS = 32

    def __init__(self, session_start_ns: int | None = None, floor: int = 0) -> None:
        start_s = (time.time_ns() if session_start_ns is None else session_start_ns) // 1_000_000_000
        prefix = max(int(start_s), (floor >> self.SEQ_BITS) + 1 if floor else 1)
        if prefix >= 2**32:
            raise ValueError("client order id prefix out of range")
        self.prefix = prefix
        self._seq = 0
        self.last = 0

    #: the largest sequence handed out; the runtime lowers it to 2**31 - 1 when a compiled
    #: strategy numbers its orders from 2**31 in the same session (engine.compiled_path)
    max_seq = 2**32 - 1

    def next(self) -> int:
        seq = self._seq + 1
        if seq > self.max_seq:
            raise OverflowError("client order id sequence exhausted for this session")
        self._seq = seq
        self.last = last = (self.prefix << 32) | seq
        return last

    def ensure_above(self, cl_ord_id: int) -> None:
        """Make every later id larger than `cl_ord_id` (an adopted or replayed order)."""
        if cl_ord_id >= (self.prefix << self.SEQ_BITS) | (self._seq + 1):
            if cl_ord_id >> self.SEQ_BITS == self.prefix:
                self._seq = cl_ord_id & (2**self.SEQ_BITS - 1)
            else:
                self.prefix = (cl_ord_id >> self.SEQ_BITS) + 1
                self._seq = 0


# --------------------------------------------------------------------------- manager

OrderListener = Callable[[OrderSnapshot], None]
FillListener = Callable[[Fill], None]
AlertHandler = Callable[[str, str], None]
Journal = Callable[[str, dict], None]


def _on_next_turn(fn: Callable[[], object]) -> bool:
    """Run `fn` on the running event loop's next turn (True); without one, now (False)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        fn()
        return False
    loop.call_soon(fn)
    return True


class OrderManager(OrderPath):
    """Orders, their states, and the path from a strategy's request to the venue.

    Parameters: ``kernel`` (the account's RiskKernel, built by
    `engine.risk_policy.build_kernel`), ``client`` (an `ExecutionClient`),
    ``instruments`` (symbol -> Instrument), ``clock`` (ns; the backtest passes its
    simulated clock), ``ids`` (a ClOrdIdGenerator), ``status_timeout_ns``,
    ``max_status_queries``, ``alert`` (called as alert(kind, message) on every alert),
    ``journal`` (called as journal(event, data) before a request is sent or a report
    applied; the storage writer), ``exec_id_window`` (how many recent ExecIDs are
    remembered for duplicate detection).
    """

    def __init__(self, kernel: rk.RiskKernel, client: ExecutionClient,
                 instruments: Mapping[str, Instrument], *,
                 clock: Callable[[], int] = time.time_ns, ids: ClOrdIdGenerator | None = None,
                 status_timeout_ns: int = 2_000_000_000, max_status_queries: int = 3,
                 alert: AlertHandler | None = None, journal: Journal | None = None,
                 exec_id_window: int = 1_000_000) -> None:
        if status_timeout_ns <= 0:
            raise ValueError("status_timeout_ns must be > 0")
        if max_status_queries < 1:
            raise ValueError("max_status_queries must be >= 1")
        self.kernel = kernel
        self._client = client
        self.instruments = dict(instruments)
        self.clock = clock
        self.ids = ids or ClOrdIdGenerator()
        self.status_timeout_ns = status_timeout_ns
        self.max_status_queries = max_status_queries
        self._alert_handler = alert
        self._journal = journal
        self._orders: dict[int, Order] = {}
        self._live: dict[int, Order] = {}            # index of orders that may be open (see open_orders)
        self._requests: dict[int, int] = {}       # cancel / mass-cancel request id -> order id
        self._exec_ids: set[str] = set()
        self._exec_id_fifo: deque[str] = deque()
        self._exec_id_window = exec_id_window
        self._order_listeners: list[OrderListener] = []
        # listeners registered with after_event=True (the runtime's logs, store rows and
        # monitoring): while `defer_listeners` is set -- by the runtime during a feed
        # event, by the compiled path while it registers what it sent -- their snapshots
        # wait in _deferred_emits until flush_deferred (the next loop turn, or any later
        # emit, whichever comes first), so the next packet of a burst is not kept behind
        # them. Every other listener (the strategy's on_order, recovery's journaling of
        # rejects) is called at once, as before.
        self._after_event_listeners: list[OrderListener] = []
        self._deferred_emits: list = []
        self._flush_scheduled = False
        self.defer_listeners = False
        # orders already sent that this manager has not recorded yet (the compiled path
        # registers a packet's orders on the loop's next turn): every method that reads
        # or changes the orders first runs the settle hooks while `unsettled` is set
        self._settle_hooks: list[Callable[[], object]] = []
        self.unsettled = False
        self._fill_listeners: list[FillListener] = []
        self._block_reasons: dict[str, str] = {}
        self.reject_counts: Counter[str] = Counter()   # reject reason -> count (risk, local, venue)
        self.alerts: Counter[str] = Counter()          # alert kind -> count
        self.stats: Counter[str] = Counter()           # submitted, sent, fills, duplicate_exec_ids, ...
        self.illegal: list[tuple[int, OrdStatus, OrdStatus, str]] = []  # (id, from, to, cause), last 1000
        client.set_report_handler(self.on_execution_report)

    # ------------------------------------------------------------------ wiring
    @property
    def client(self) -> ExecutionClient:
        return self._client

    def add_listener(self, on_order: OrderListener | None = None,
                     on_fill: FillListener | None = None, *, after_event: bool = False) -> None:
        """Listeners run in registration order: register the portfolio first, then
        the risk policy, then the strategy host. ``after_event``: an order listener that
        may hear of orders after the event that made them (see `defer_listeners`), in
        the order they happened, never after a later emit."""
        if on_order is not None:
            if after_event:
                if not self._after_event_listeners:
                    self._order_listeners.append(self._dispatch_after_event)
                self._after_event_listeners.append(on_order)
            else:
                self._order_listeners.append(on_order)
        if on_fill is not None:
            self._fill_listeners.append(on_fill)

    def _dispatch_after_event(self, snap) -> None:
        if self.defer_listeners:
            self._deferred_emits.append(snap)
            return
        if self._deferred_emits:
            self.flush_deferred()           # what happened first is heard first
        self._tell_after_event(snap)

    def _tell_after_event(self, snap) -> None:
        for cb in self._after_event_listeners:
            try:
                cb(snap)
            except Exception:  # noqa: BLE001 - monitoring must not break order handling
                log.exception("an order listener failed on order %s (%s)", snap.cl_ord_id, snap.state)

    @property
    def has_deferred(self) -> bool:
        """Whether snapshots wait for the after-event listeners."""
        return bool(self._deferred_emits)

    def flush_deferred(self) -> int:
        """Tell the after-event listeners what waited, oldest first; returns how many.
        A listener that raises is logged and the others still hear of every update:
        one bad row must not cost the log lines and store rows after it."""
        self._flush_scheduled = False
        pending = self._deferred_emits
        if not pending:
            return 0
        self._deferred_emits = []
        for snap in pending:
            self._tell_after_event(snap)
        return len(pending)

    def schedule_flush(self) -> None:
        """flush_deferred on the event loop's next turn (at once without a running loop)."""
        if self._flush_scheduled or not self._deferred_emits:
            return
        self._flush_scheduled = _on_next_turn(self.flush_deferred)

    def add_settle_hook(self, hook: Callable[[], object]) -> None:
        """`hook()` records orders sent but not recorded yet (record_sent); it runs
        before any method reads or changes the orders once someone set `unsettled`."""
        self._settle_hooks.append(hook)

    def settle_soon(self) -> None:
        """Orders were sent that the settle hooks have not recorded yet: settle on the
        event loop's next turn, after the packets already waiting (a burst's next order
        leaves first), or as soon as anything reads or changes the orders, whichever
        comes first -- a report, a cancel, the kill switch never meet an order this
        manager does not know. At once without a running loop."""
        if self.unsettled:
            return                          # a settle is due already; it takes these too
        self.unsettled = True
        _on_next_turn(self.settle)

    def settle(self) -> None:
        """Record what was sent but not recorded yet (see add_settle_hook)."""
        if self.unsettled:
            self.unsettled = False
            for hook in self._settle_hooks:
                hook()

    # ------------------------------------------------------------------ blocking
    def block(self, reason: str, detail: str = "") -> None:
        """Refuse new orders (and replaces) while any reason is set. Cancels still go."""
        if reason not in self._block_reasons:
            log.warning("trading blocked: %s %s", reason, detail)
        self._block_reasons[reason] = detail

    def unblock(self, reason: str) -> None:
        if self._block_reasons.pop(reason, None) is not None:
            log.warning("trading unblocked: %s", reason)

    @property
    def blocked(self) -> bool:
        return bool(self._block_reasons)

    @property
    def block_reasons(self) -> dict[str, str]:
        return dict(self._block_reasons)

    # ------------------------------------------------------------------ reading
    def order(self, cl_ord_id: int) -> Order | None:
        if self.unsettled:
            self.settle()
        return self._orders.get(cl_ord_id)

    def orders(self) -> list[Order]:
        if self.unsettled:
            self.settle()
        return list(self._orders.values())

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders not in a terminal state (including pending ones), oldest first.

        Reads the index of live orders (every order enters it when created; terminal
        ones are dropped here, lazily), so the cost follows the open orders, not every
        order of the session."""
        if self.unsettled:
            self.settle()
        live = self._live
        done = [k for k, o in live.items() if o.state in TERMINAL_STATES]
        for k in done:
            del live[k]
        if symbol is None:
            return list(live.values())
        return [o for o in live.values() if o.symbol == symbol]

    def forget_terminal(self, older_than_ns: int) -> int:
        """Drop terminal orders last updated before `older_than_ns` (memory bound).

        Orders are kept in creation order, so the scan stops at the first order created
        at or after the cutoff: the cost follows the old orders, not the session's."""
        if self.unsettled:
            self.settle()
        gone = []
        for k, o in self._orders.items():
            if o.created_ns >= older_than_ns:
                break
            if o.state in TERMINAL_STATES and o.updated_ns < older_than_ns:
                gone.append(k)
        for k in gone:
            del self._orders[k]
            self._live.pop(k, None)
        return len(gone)

    # ------------------------------------------------------------------ requests
    # submit(symbol, side, qty, price=None, tif="DAY", tag="", *, owner="",
    # ignore_blocks=False) -> client order id: compiled, in core_ext/orderpath.pyx
    # (the tick-to-trade path of every strategy). Never raises for a business reason:
    # a blocked, unknown-instrument or risk-rejected order comes back Rejected with
    # its reject_reason; TypeError/ValueError for a malformed call. Its unusual
    # branches call back here: _pre_trade, _local_reject, _emit_order, _send_failed.

    def record_sent(self, cl_ord_id: int, symbol: str, side: int, qty: int, price: int | None, tif: int,
                    ts_ns: int, *, refused: str = "", owner: str = "") -> Order:
        """An order the compiled path (core_ext.t2t.TickToTrade) has already checked with
        the risk kernel and sent (``refused``: '' ) or refused (the reason): registered
        after the fact, as submit would have left it -- PendingNew with its quantity
        reserved in the kernel (the C check reserved it), or Rejected -- and journaled.
        The venue's reports then apply to it like to any order."""
        side, tif = Side(side), Tif(tif)
        inst = self.instruments.get(symbol)
        if inst is None:
            raise ValueError(f"record_sent: unknown symbol {symbol!r}")
        if cl_ord_id in self._orders:
            raise ValueError(f"record_sent: order {cl_ord_id} already known")
        order = Order(cl_ord_id, symbol, inst.inst_id, side, qty, price, tif, S.PENDING_NEW, ts_ns, ts_ns,
                      "", owner)
        order.pending_since_ns = ts_ns
        self._orders[cl_ord_id] = order
        self._live[cl_ord_id] = order
        self.stats["submitted"] += 1
        if not refused:
            order.reserved = qty
            order.kernel_open = True
        try:
            self._write("submit", {"cl_ord_id": cl_ord_id, "symbol": symbol, "side": int(side), "qty": qty,
                                   "price": price, "tif": int(tif), "tag": "", "owner": owner, "ts_ns": ts_ns,
                                   "compiled": True})
        except Exception as exc:  # noqa: BLE001 - the order is at the venue whatever the journal says
            self._raise_alert("journal_failed", f"order {cl_ord_id} was sent but not journaled: {exc!r}")
        if refused:
            self._local_reject(order, refused)
            return order
        self.stats["sent"] += 1
        if self._order_listeners:
            self._emit_order(order)
        return order

    def cancel(self, cl_ord_id: int) -> bool:
        """Request a cancel. True if a cancel is (now or already) on its way, False if
        the order is unknown or already terminal. Allowed while trading is blocked."""
        if self.unsettled:
            self.settle()
        order = self._orders.get(cl_ord_id)
        if order is None or order.state in TERMINAL_STATES:
            return False
        if order.state is S.PENDING_CANCEL:
            return True
        if order.state is S.PENDING_REPLACE:
            order.cancel_after_replace = True
            return True
        if order.state is S.PENDING_NEW and order.orig_cl_ord_id:
            orig = self._orders.get(order.orig_cl_ord_id)
            if orig is not None and orig.state is S.PENDING_REPLACE:
                orig.cancel_after_replace = True  # cancel whichever survives the replace
                return True
        now = self.clock()
        cancel_id = self.ids.next()
        self._write("cancel", {"cl_ord_id": order.cl_ord_id, "cancel_id": cancel_id, "ts_ns": now})
        prev = order.state
        if not self._move(order, S.PENDING_CANCEL, "cancel request"):
            return False
        order.restore_state = prev
        order.cancel_id = cancel_id
        self._requests[cancel_id] = order.cl_ord_id
        self._enter_pending(order, now)
        self.stats["cancels_sent"] += 1
        try:
            self._client.send_cancel(order, cancel_id)
        except Exception as exc:  # noqa: BLE001 - any client failure: the request did not go
            self._requests.pop(cancel_id, None)
            order.cancel_id = 0
            self._force_state(order, prev)
            self._raise_alert("send_failed", f"cancel of {order.cl_ord_id} not sent: {exc!r}")
            return False
        return True

    def replace(self, cl_ord_id: int, qty: int | None = None, price: int | None = None) -> int | None:
        """Cancel/replace: new total quantity and/or new limit price. Returns the
        replacement's client order id (the replacement is Rejected with a reason if the
        risk kernel or a block refuses it; the original is then untouched), or None if
        the order cannot be replaced now (unknown, terminal, pending, market order, or
        nothing changes)."""
        if self.unsettled:
            self.settle()
        order = self._orders.get(cl_ord_id)
        if order is None or order.state not in (S.NEW, S.PARTIALLY_FILLED) or order.price is None:
            return None
        new_qty = order.qty if qty is None else qty
        new_price = order.price if price is None else price
        _need_int(new_qty, "qty")
        _need_int(new_price, "price")
        if new_qty == order.qty and new_price == order.price:
            return None
        now = self.clock()
        new_id = self.ids.next()
        rep = Order(new_id, order.symbol, order.inst_id, order.side, new_qty, new_price, order.tif,
                    S.PENDING_NEW, now, now, tag=order.tag, owner=order.owner,
                    orig_cl_ord_id=order.cl_ord_id, pending_since_ns=now)
        self._orders[new_id] = rep
        self._live[new_id] = rep
        self.stats["replaces"] += 1
        self._write("replace", {"cl_ord_id": order.cl_ord_id, "new_cl_ord_id": new_id,
                                "qty": new_qty, "price": new_price, "ts_ns": now})
        if new_qty <= order.cum_qty:
            self._local_reject(rep, REASON_INVALID, f"new qty {new_qty} <= filled {order.cum_qty}")
            return new_id
        reason = self._pre_trade(rep, new_qty - order.cum_qty, now)
        if reason:
            self._local_reject(rep, reason)
            return new_id
        prev = order.state
        self._move(order, S.PENDING_REPLACE, "replace request")
        order.restore_state = prev
        order.replaced_by = new_id
        self._enter_pending(order, now)
        self._emit_order(rep)
        try:
            self._client.send_replace(order, rep)
        except Exception as exc:  # noqa: BLE001
            self._kernel_close(rep)
            rep.reject_reason = f"{REASON_SEND_FAILED}: {exc!r}"
            self._force_state(rep, S.REJECTED)
            order.replaced_by = 0
            self._force_state(order, prev)
            self.reject_counts[REASON_SEND_FAILED] += 1
            self._raise_alert("send_failed", f"replace of {order.cl_ord_id} not sent: {exc!r}")
        return new_id

    def cancel_all(self, symbol: str | None = None, *, use_mass_cancel: bool = True) -> list[int]:
        """Cancel every open order (of `symbol`, or all). With a client that supports
        it, one mass-cancel request; otherwise one cancel per order. Returns the ids of
        the orders a cancel now covers (confirm with `open_orders`)."""
        targets = self.open_orders(symbol)        # (settles first)
        if not targets:
            return []
        if use_mass_cancel and getattr(self._client, "supports_mass_cancel", False):
            now = self.clock()
            req = self.ids.next()
            self._write("mass_cancel", {"symbol": symbol, "request_id": req, "ts_ns": now})
            moved = []
            for o in targets:
                if o.state is S.PENDING_NEW and o.orig_cl_ord_id:
                    continue  # a replacement in flight: covered through its original
                if o.state is S.PENDING_REPLACE:
                    o.cancel_after_replace = True
                elif o.state is not S.PENDING_CANCEL:
                    prev = o.state
                    if self._move(o, S.PENDING_CANCEL, "mass cancel"):
                        o.restore_state = prev
                        o.cancel_id = req
                        self._enter_pending(o, now)
                        moved.append((o, prev))
            self._requests[req] = 0
            self.stats["mass_cancels_sent"] += 1
            try:
                self._client.send_mass_cancel(symbol, req)
            except Exception as exc:  # noqa: BLE001
                self._raise_alert("send_failed", f"mass cancel not sent ({exc!r}); cancelling one by one")
                for o, prev in moved:
                    o.cancel_id = 0
                    self._force_state(o, prev)
                return [o.cl_ord_id for o in targets if self.cancel(o.cl_ord_id)]
            return [o.cl_ord_id for o in targets]
        return [o.cl_ord_id for o in targets if self.cancel(o.cl_ord_id)]

    def adopt(self, cl_ord_id: int, symbol: str, side: Side | str | int, qty: int,
              price: int | None, tif: Tif | str | int = "DAY", *, cum_qty: int = 0,
              venue_order_id: str = "", state: OrdStatus | None = None) -> Order:
        """Register a live order that did not go through `submit` in this process
        (journal replay after a restart, an order found at reconciliation): counted
        open in the kernel (``on_order_accepted``), later ids stay above it."""
        if self.unsettled:
            self.settle()
        side, tif = Side.parse(side), Tif.parse(tif)
        inst = self.instruments.get(symbol)
        if inst is None:
            raise ValueError(f"adopt: unknown symbol {symbol!r}")
        if cl_ord_id in self._orders:
            raise ValueError(f"adopt: order {cl_ord_id} already known")
        now = self.clock()
        st = state or (S.PARTIALLY_FILLED if cum_qty else S.NEW)
        if st not in (S.NEW, S.PARTIALLY_FILLED):
            raise ValueError(f"adopt: state must be New or PartiallyFilled, got {st}")
        order = Order(cl_ord_id, symbol, inst.inst_id, side, qty, price, tif, st, now, now,
                      cum_qty=cum_qty, venue_order_id=venue_order_id)
        leaves = qty - cum_qty
        if leaves <= 0:
            raise ValueError("adopt: no open quantity")
        self.kernel.on_order_accepted(cl_ord_id, inst.inst_id, int(side), leaves,
                                      rk.NO_PRICE if price is None else price)
        order.reserved, order.kernel_open = leaves, True
        self._orders[cl_ord_id] = order
        self._live[cl_ord_id] = order
        self.ids.ensure_above(cl_ord_id)
        self._emit_order(order)
        return order

    # ------------------------------------------------------------------ timer
    def check_timeouts(self, now_ns: int | None = None) -> list[int]:
        """Query the venue about orders pending longer than status_timeout_ns (again
        every status_timeout_ns, at most max_status_queries times; then one alert per
        order). Returns the ids queried now."""
        if self.unsettled:
            self.settle()
        now = self.clock() if now_ns is None else now_ns
        queried = []
        # the live index, not every order of the session: a pending order is never
        # terminal, and this runs on every timer tick
        for o in self.open_orders():
            if o.state not in PENDING_STATES or now - o.pending_since_ns < self.status_timeout_ns:
                continue
            if o.state is S.PENDING_NEW and o.orig_cl_ord_id:
                continue  # a replacement: its original (PendingReplace) is the one queried
            if o.last_status_ns and now - o.last_status_ns < self.status_timeout_ns:
                continue
            if o.status_queries >= self.max_status_queries:
                if not o.unresolved_alerted:
                    o.unresolved_alerted = True
                    self._raise_alert("order_unresolved",
                                      f"order {o.cl_ord_id} {o.state} for "
                                      f"{(now - o.pending_since_ns) / 1e9:.1f} s after "
                                      f"{o.status_queries} status queries")
                continue
            o.status_queries += 1
            o.last_status_ns = now
            self.stats["status_requests"] += 1
            try:
                self._client.send_status_request(o)
                queried.append(o.cl_ord_id)
            except Exception as exc:  # noqa: BLE001
                self._raise_alert("send_failed", f"status request for {o.cl_ord_id}: {exc!r}")
        return queried

    # ------------------------------------------------------------------ reports
    def on_execution_report(self, report: ExecutionReport) -> None:
        """Apply one execution report (see the module docstring for the rules)."""
        if self.unsettled:
            self.settle()                 # a report never meets an order not yet recorded
        self.stats["reports"] += 1
        if report.exec_id:
            if report.exec_id in self._exec_ids:
                self.stats["duplicate_exec_ids"] += 1
                log.info("duplicate ExecID %s ignored", report.exec_id)
                return
            self._remember_exec_id(report.exec_id)
        self._write("report", _report_dict(report))
        kind = report.kind
        if kind is ExecKind.REPLACED or kind is ExecKind.REPLACE_REJECT:
            self._on_replace_outcome(report)
            return
        order = self._resolve(report)
        if order is None:
            self._unknown(report)
            return
        if report.venue_order_id and not order.venue_order_id:
            order.venue_order_id = report.venue_order_id
        if kind is ExecKind.TRADE:
            self._on_trade(order, report)
        elif kind is ExecKind.NEW:
            self._on_new(order, report)
        elif kind is ExecKind.CANCELED:
            self._on_closed(order, S.CANCELED, report)
        elif kind is ExecKind.EXPIRED:
            self._on_closed(order, S.EXPIRED, report)
        elif kind is ExecKind.REJECTED:
            self._on_rejected(order, report)
        elif kind is ExecKind.CANCEL_REJECT:
            self._on_cancel_reject(order, report)
        elif kind is ExecKind.PENDING_CANCEL or kind is ExecKind.PENDING_REPLACE:
            target = S.PENDING_CANCEL if kind is ExecKind.PENDING_CANCEL else S.PENDING_REPLACE
            if order.state is not target:
                prev = order.state
                if self._move(order, target, f"venue {kind.value}"):
                    order.restore_state = prev
                    self._enter_pending(order, self.clock())
        elif kind is ExecKind.ORDER_STATUS:
            self._on_status(order, report)
        else:  # pragma: no cover - exhaustive over ExecKind
            self._raise_alert("bad_report", f"unhandled report kind {kind!r}")

    # ------------------------------------------------------------------ report handlers
    def _on_new(self, order: Order, report: ExecutionReport) -> None:
        if order.state is S.PENDING_NEW:
            self._move(order, S.NEW, "venue ack")
        elif order.state in (S.PENDING_CANCEL, S.PENDING_REPLACE) and order.restore_state is S.PENDING_NEW:
            order.restore_state = S.NEW
        elif order.state in (S.NEW, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.PENDING_REPLACE, S.FILLED):
            self.stats["stale_acks"] += 1   # the ack overtaken by a fill or already seen
        else:
            self._illegal(order, S.NEW, "venue ack")

    def _on_trade(self, order: Order, report: ExecutionReport) -> None:
        q, px = report.last_qty, report.last_px
        if not isinstance(q, int) or not isinstance(px, int) or q <= 0 or px <= 0:
            self._raise_alert("bad_report", f"fill for {order.cl_ord_id} with qty={q!r} px={px!r} ignored")
            return
        self._book_fill(order, q, px, report.exec_id, report.ts_ns or self.clock(), report.commission,
                        report.liquidity, inferred=False, venue_cum=report.cum_qty)

    def _book_fill(self, order: Order, q: int, px: int, exec_id: str, ts_ns: int,
                   commission: float | None, liquidity: str, *, inferred: bool,
                   venue_cum: int | None) -> None:
        was_terminal = order.state in TERMINAL_STATES
        order.cum_qty += q
        order.fill_notional += q * px
        order.updated_ns = ts_ns
        self.stats["fills"] += 1
        if order.cum_qty > order.qty:
            self._raise_alert("overfill", f"order {order.cl_ord_id}: filled {order.cum_qty} of {order.qty}")
        if venue_cum is not None and venue_cum != order.cum_qty:
            self._raise_alert("cum_qty_mismatch", f"order {order.cl_ord_id}: venue cum {venue_cum}, "
                                                  f"ours {order.cum_qty}")
        done = order.cum_qty >= order.qty
        if was_terminal:
            self._illegal(order, S.FILLED if done else S.PARTIALLY_FILLED,
                          f"fill {exec_id} on a {order.state} order (fill booked, state kept)")
            self._kernel_fill(order, q, px, closes=False)
        else:
            if done:
                target = S.FILLED
            elif order.state in (S.PENDING_CANCEL, S.PENDING_REPLACE):
                target = order.state
            else:
                target = S.PARTIALLY_FILLED
            if order.state is S.PENDING_CANCEL and order.restore_state in (S.NEW, S.PENDING_NEW):
                order.restore_state = S.PARTIALLY_FILLED
            if order.state is S.PENDING_REPLACE and order.restore_state is S.NEW:
                order.restore_state = S.PARTIALLY_FILLED
            self._kernel_fill(order, q, px, closes=done)
            if not self._move(order, target, f"fill {exec_id}", emit=False):
                pass  # cannot happen: fills are legal from every live state
            if done:
                self._done_pending(order)
        fill = Fill(order.cl_ord_id, exec_id, order.symbol, order.inst_id, order.side, q, px, ts_ns,
                    order.leaves_qty, commission, liquidity, inferred)
        if self._deferred_emits:
            self.flush_deferred()     # the order's earlier updates are heard before its fill
        for cb in self._fill_listeners:
            cb(fill)
        self._emit_order(order)

    def _on_closed(self, order: Order, target: OrdStatus, report: ExecutionReport) -> None:
        if order.state is target:
            self.stats["duplicate_reports"] += 1
            return
        if self._move(order, target, f"venue {target.value}", reason=report.reason):
            self._kernel_close(order)
            self._done_pending(order)

    def _on_rejected(self, order: Order, report: ExecutionReport) -> None:
        if order.state is S.REJECTED:
            self.stats["duplicate_reports"] += 1
            return
        if order.state not in (S.PENDING_NEW, S.PENDING_CANCEL) or (
                order.state is S.PENDING_CANCEL and order.restore_state is not S.PENDING_NEW):
            self._illegal(order, S.REJECTED, "venue reject")
            return
        reason = f"VENUE: {report.reason}" if report.reason else "VENUE_REJECT"
        if self._move(order, S.REJECTED, "venue reject", reason=reason):
            self.reject_counts["VENUE_REJECT"] += 1
            log.info("order %s rejected by the venue: %s", order.cl_ord_id, report.reason)
            self._kernel_close(order)
            self._done_pending(order)

    def _on_cancel_reject(self, order: Order, report: ExecutionReport) -> None:
        if order.state is not S.PENDING_CANCEL:
            self.stats["late_cancel_rejects"] += 1  # the order ended first; nothing to undo
            order.cancel_id = 0
            return
        back = order.restore_state or (S.PARTIALLY_FILLED if order.cum_qty else S.NEW)
        if back is S.NEW and order.cum_qty:
            back = S.PARTIALLY_FILLED
        self._requests.pop(order.cancel_id, None)
        order.cancel_id = 0
        self.stats["cancel_rejects"] += 1
        log.info("cancel of %s refused: %s", order.cl_ord_id, report.reason)
        if self._move(order, back, "cancel refused", reason=""):
            self._leave_pending(order)

    def _on_replace_outcome(self, report: ExecutionReport) -> None:
        rep = self._orders.get(report.cl_ord_id)
        orig = self._orders.get(report.orig_cl_ord_id) if report.orig_cl_ord_id else None
        if orig is None and rep is not None and rep.orig_cl_ord_id:
            orig = self._orders.get(rep.orig_cl_ord_id)
        if rep is None or orig is None or rep.orig_cl_ord_id != orig.cl_ord_id:
            self._unknown(report)
            return
        if report.kind is ExecKind.REPLACED:
            if orig.state is S.REPLACED:
                self.stats["duplicate_reports"] += 1
                return
            if orig.state is S.PENDING_REPLACE:
                # close the original; its open quantity moves to the replacement
                if self._move(orig, S.REPLACED, "venue replaced"):
                    self._kernel_close(orig)
                    self._done_pending(orig)
            else:
                self._illegal(orig, S.REPLACED, "venue replaced")
            if rep.state in TERMINAL_STATES:
                self._illegal(rep, S.NEW, "venue replaced")
                return
            rep.cum_qty += orig.cum_qty   # the chain's fills (plus any reported on rep first)
            rep.fill_notional += orig.fill_notional
            rep.venue_order_id = report.venue_order_id or orig.venue_order_id
            if rep.cum_qty >= rep.qty:
                self._move(rep, S.FILLED, "replaced, already filled")
                self._kernel_close(rep)
            elif rep.state is S.PENDING_NEW:
                self._move(rep, S.PARTIALLY_FILLED if rep.cum_qty else S.NEW, "venue replaced")
            self._leave_pending(rep)
            if orig.cancel_after_replace and rep.state not in TERMINAL_STATES:
                self.cancel(rep.cl_ord_id)
        else:  # REPLACE_REJECT
            if rep.state is not S.PENDING_NEW:
                self.stats["duplicate_reports"] += 1
                return
            reason = f"VENUE: {report.reason}" if report.reason else "REPLACE_REJECTED"
            if self._move(rep, S.REJECTED, "replace refused", reason=reason):
                self.reject_counts["REPLACE_REJECT"] += 1
                self._kernel_close(rep)
            orig.replaced_by = 0
            if orig.state is S.PENDING_REPLACE:
                back = S.PARTIALLY_FILLED if orig.cum_qty else S.NEW
                if self._move(orig, back, "replace refused"):
                    self._leave_pending(orig)
            if orig.cancel_after_replace and orig.state not in TERMINAL_STATES:
                orig.cancel_after_replace = False
                self.cancel(orig.cl_ord_id)

    def _on_status(self, order: Order, report: ExecutionReport) -> None:
        venue = report.ord_status
        self.stats["status_answers"] += 1
        if (order.state is S.PENDING_NEW and order.orig_cl_ord_id
                and venue in (S.NEW, S.PARTIALLY_FILLED, S.FILLED)):
            orig = self._orders.get(order.orig_cl_ord_id)
            if orig is not None and orig.state is S.PENDING_REPLACE:
                # The venue answers under the replacement's id: the replace went through.
                # Apply it first, so the chain's cumulative quantity is compared with the
                # chain's fills (the original's are not booked again as missed fills).
                self._on_replace_outcome(ExecutionReport(
                    ExecKind.REPLACED, order.cl_ord_id, orig_cl_ord_id=orig.cl_ord_id,
                    venue_order_id=report.venue_order_id, ts_ns=report.ts_ns))
        # missed fills first: the venue filled more than we know
        if report.cum_qty is not None and report.cum_qty > order.cum_qty:
            missing = report.cum_qty - order.cum_qty
            px = missed_fill_price(missing, report.cum_qty, report.avg_px, report.last_px,
                                   order.fill_notional, order.price)
            self._raise_alert("missed_fill", f"order {order.cl_ord_id}: venue cum {report.cum_qty} > "
                                             f"ours; booking {missing} @ {px} from the status answer")
            if px > 0:
                self._book_fill(order, missing, px, f"status:{order.cl_ord_id}:{report.cum_qty}",
                                report.ts_ns or self.clock(), None, "", inferred=True, venue_cum=None)
        if venue is None:
            return
        if venue in (S.CANCELED, S.EXPIRED):
            self._on_closed(order, venue, report)
        elif venue is S.REJECTED:
            if order.state is S.PENDING_NEW or (order.state is S.PENDING_CANCEL
                                                and order.restore_state is S.PENDING_NEW):
                self._on_rejected(order, report)
            elif order.state not in TERMINAL_STATES:
                self._on_closed(order, S.CANCELED, report)  # the venue no longer holds it
        elif venue in (S.NEW, S.PARTIALLY_FILLED):
            if order.state is S.PENDING_NEW:
                self._move(order, S.PARTIALLY_FILLED if order.cum_qty else S.NEW, "status answer")
            elif order.state is S.PENDING_CANCEL:
                # the venue still has it: the cancel was lost -> ask again
                order.status_queries = 0
                order.pending_since_ns = self.clock()
                if order.restore_state is S.PENDING_NEW:
                    order.restore_state = S.NEW
                cancel_id = self.ids.next()
                self._requests.pop(order.cancel_id, None)
                order.cancel_id = cancel_id
                self._requests[cancel_id] = order.cl_ord_id
                try:
                    self._client.send_cancel(order, cancel_id)
                    self.stats["cancels_resent"] += 1
                except Exception as exc:  # noqa: BLE001
                    self._raise_alert("send_failed", f"cancel resend for {order.cl_ord_id}: {exc!r}")
            elif order.state is S.PENDING_REPLACE:
                order.status_queries = 0
                order.pending_since_ns = self.clock()
            elif order.state in TERMINAL_STATES:
                self._raise_alert("status_mismatch", f"order {order.cl_ord_id} is {order.state} here, "
                                                     f"{venue} at the venue")
        elif venue is S.FILLED and order.state not in TERMINAL_STATES and order.cum_qty < order.qty:
            self._raise_alert("status_mismatch", f"order {order.cl_ord_id} filled at the venue but "
                                                 f"cum {order.cum_qty} < {order.qty} here")

    # ------------------------------------------------------------------ internals
    def _pre_trade(self, order: Order, qty: int, now: int, ignore_blocks: bool = False) -> str:
        """'' when the order may go (the kernel has reserved it), else the reject reason."""
        if self._block_reasons and not ignore_blocks:
            return REASON_BLOCKED
        if order.inst_id < 0:
            return REASON_UNKNOWN_INSTRUMENT
        price = rk.NO_PRICE if order.price is None else order.price
        if not (-INT64_MAX <= qty <= INT64_MAX and (order.price is None or -INT64_MAX <= price <= INT64_MAX)):
            return REASON_INVALID
        code = self.kernel.check(order.inst_id, int(order.side), qty, price, order.cl_ord_id, now)
        if code != rk.RISK_OK:
            return rk.REJECT_REASONS.get(code, f"RISK_{code}")
        order.reserved = qty
        order.kernel_open = True
        return ""

    def _local_reject(self, order: Order, reason: str, detail: str = "") -> None:
        order.reject_reason = reason if not detail else f"{reason}: {detail}"
        order.state = S.REJECTED  # PendingNew -> Rejected (legal), never sent
        order.updated_ns = self.clock()
        self.reject_counts[reason] += 1
        self.stats["rejected_pre_trade"] += 1
        log.info("order %s %s %s %s@%s rejected: %s", order.cl_ord_id, order.symbol,
                 order.side.name, order.qty, order.price, order.reject_reason)
        self._emit_order(order)

    def _send_failed(self, order: Order, exc: BaseException, what: str) -> None:
        """The client could not send `order`: it is not at the venue."""
        self._kernel_close(order)
        order.reject_reason = f"{REASON_SEND_FAILED}: {exc!r}"
        self._force_state(order, S.REJECTED)
        self.reject_counts[REASON_SEND_FAILED] += 1
        self._raise_alert("send_failed", f"{what} order {order.cl_ord_id} not sent: {exc!r}")

    def _resolve(self, report: ExecutionReport) -> Order | None:
        order = self._orders.get(report.cl_ord_id)
        if order is not None:
            return order
        target = self._requests.get(report.cl_ord_id)
        if target:
            return self._orders.get(target)
        if report.orig_cl_ord_id:
            return self._orders.get(report.orig_cl_ord_id)
        return None

    def _unknown(self, report: ExecutionReport) -> None:
        self.stats["unknown_reports"] += 1
        self._raise_alert("unknown_order", f"{report.kind.value} report for unknown order "
                                           f"{report.cl_ord_id} (orig {report.orig_cl_ord_id})")
        if report.kind is ExecKind.TRADE:
            self.block(UNKNOWN_FILL_BLOCK, f"fill {report.exec_id} of {report.last_qty} {report.symbol} for "
                                       f"unknown order {report.cl_ord_id}: reconcile before trading")

    def _move(self, order: Order, target: OrdStatus, cause: str, *, reason: str | None = None,
              emit: bool = True) -> bool:
        """Apply a transition if TRANSITIONS allows it; otherwise log, count, alert."""
        current = order.state
        if target is current and target not in TRANSITIONS[current]:
            self.stats["duplicate_reports"] += 1
            return False
        if target not in TRANSITIONS[current]:
            self._illegal(order, target, cause)
            return False
        order.state = target
        order.updated_ns = self.clock()
        if reason is not None:
            order.reject_reason = reason
        if emit:
            self._emit_order(order)
        return True

    def _force_state(self, order: Order, target: OrdStatus) -> None:
        """Undo of a local step whose request never left (send failed): not a venue
        transition, so not checked against TRANSITIONS."""
        order.state = target
        order.updated_ns = self.clock()
        if target in TERMINAL_STATES:
            self._done_pending(order)
        self._emit_order(order)

    def _illegal(self, order: Order, target: OrdStatus, cause: str) -> None:
        self.stats["illegal_transitions"] += 1
        self.illegal.append((order.cl_ord_id, order.state, target, cause))
        if len(self.illegal) > 1000:
            del self.illegal[:-1000]
        self._raise_alert("illegal_transition",
                          f"order {order.cl_ord_id}: {order.state} -> {target} ({cause}) not applied")

    def _raise_alert(self, kind: str, message: str) -> None:
        self.alerts[kind] += 1
        log.error("ALERT %s: %s", kind, message)
        if self._alert_handler is not None:
            try:
                self._alert_handler(kind, message)
            except Exception:  # noqa: BLE001 - an alert sink must not break order handling
                log.exception("alert handler failed")

    def _emit_order(self, order: Order) -> None:
        if self._order_listeners:
            snap = order.snapshot()
            for cb in self._order_listeners:
                cb(snap)

    def _enter_pending(self, order: Order, now: int) -> None:
        order.pending_since_ns = now
        order.status_queries = 0
        order.last_status_ns = 0
        order.unresolved_alerted = False

    def _leave_pending(self, order: Order) -> None:
        order.restore_state = None
        order.status_queries = 0
        order.last_status_ns = 0

    def _done_pending(self, order: Order) -> None:
        if order.cancel_id:
            if self._requests.get(order.cancel_id) == order.cl_ord_id:
                del self._requests[order.cancel_id]
        self._leave_pending(order)

    def _remember_exec_id(self, exec_id: str) -> None:
        self._exec_ids.add(exec_id)
        self._exec_id_fifo.append(exec_id)
        if len(self._exec_id_fifo) > self._exec_id_window:
            self._exec_ids.discard(self._exec_id_fifo.popleft())

    def _write(self, event: str, data: dict) -> None:
        if self._journal is not None:
            self._journal(event, data)

    # --- exact kernel accounting ------------------------------------------------
    def _kernel_fill(self, order: Order, q: int, px: int, *, closes: bool) -> None:
        """Tell the kernel about a fill of `q` lots, keeping its open quantity equal to
        the sum of the live orders' `reserved`."""
        k, inst, side = self.kernel, order.inst_id, int(order.side)
        try:
            take = min(q, order.reserved) if order.kernel_open else 0
            excess = q - take
            if excess:
                # more than the kernel holds open for this order (a fill on an ended order,
                # an overfill): book the position without eating other orders' reservations
                k.on_order_accepted(order.cl_ord_id, inst, side, excess, px)
                k.on_fill(inst, side, excess, px, 0)
            if not order.kernel_open:
                return
            remaining = order.reserved - take
            if closes:
                if take and remaining == 0:
                    k.on_fill(inst, side, take, px, 0)
                else:
                    if take:
                        k.on_fill(inst, side, take, px, 1)
                    k.on_cancel(inst, side, remaining)
                order.reserved, order.kernel_open = 0, False
            elif take:
                k.on_fill(inst, side, take, px, 1)
                order.reserved = remaining
        except (ValueError, OverflowError) as exc:
            self._raise_alert("kernel_update", f"fill of {order.cl_ord_id}: {exc}")

    def _kernel_close(self, order: Order) -> None:
        if not order.kernel_open:
            return
        try:
            self.kernel.on_cancel(order.inst_id, int(order.side), order.reserved)
        except (ValueError, OverflowError) as exc:
            self._raise_alert("kernel_update", f"close of {order.cl_ord_id}: {exc}")
        order.reserved, order.kernel_open = 0, False


def missed_fill_price(missing: int, venue_cum: int, avg_px: float | None, last_px: int,
                      known_notional: int, limit_price: int | None) -> int:
    """Price (ticks) of `missing` lots the venue filled that we never heard of (a status
    answer's cumulative quantity is above ours): what the venue's average price leaves
    after the fills we know (`known_notional`, tick-lots), else its last price, else the
    order's limit; 0 when none is known. The order manager and journal replay share it."""
    px = last_px
    if avg_px is not None:
        px = max(1, round((avg_px * venue_cum - known_notional) / missing))
    if px <= 0:
        px = limit_price or 0
    return px


def _need_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (lots / ticks), got {type(value).__name__} {value!r}")


def _report_dict(r: ExecutionReport) -> dict:
    return {"kind": r.kind.value, "cl_ord_id": r.cl_ord_id, "exec_id": r.exec_id,
            "orig_cl_ord_id": r.orig_cl_ord_id, "venue_order_id": r.venue_order_id,
            "symbol": r.symbol, "side": r.side, "last_qty": r.last_qty, "last_px": r.last_px,
            "cum_qty": r.cum_qty, "leaves_qty": r.leaves_qty, "avg_px": r.avg_px,
            "ord_status": r.ord_status.value if r.ord_status else None, "reason": r.reason,
            "ts_ns": r.ts_ns, "commission": r.commission, "liquidity": r.liquidity}


orderpath.configure(Order, Side, Tif, S.PENDING_NEW, _need_int)
