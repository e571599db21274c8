"""The venue simulator's exchange core: matching, order entry, accounts, statements.

Protocol-agnostic and socket-free: the FIX order-entry application
(gateway.fix_venue) and, later, an OUCH port drive it through a few calls and turn
its reports into their wire messages; a market-data publisher subscribes to it.

* One `core_ext.matching.MatchingBook` per symbol (price-time priority). Prices are
  int64 ticks of the symbol's `Instrument`, quantities int64 lots.
* Order entry, keyed by (account, client order id): `new_order`, `cancel_order`,
  `replace_order`, `mass_cancel`, `order_status`, and `cancel_all` (what
  cancel-on-disconnect calls). The exchange assigns order ids (uint64, from
  ORDER_ID_BASE up, never colliding with the market-data flow's ids) and ExecIDs.
* Every outcome is a report object (`ExecReport`, `CancelReject`,
  `MassCancelReport`) handed to the sink registered for the account
  (`set_report_sink`). Fills by another account's order or by the market-data flow
  reach the resting order's account the same way. Report values use the FIX
  letters (ExecType/OrdStatus) as the lingua franca; other protocols map them.
* Accounts: positions, bought/sold lots, cash (in ticks x lots per symbol) and the
  list of fills, per account; `statement_csv()` / `write_statement(path)`.
* Resting liquidity from market data: a `MarketSource` per symbol (by default a
  `SyntheticSource`, the seeded flow of gateway.synthetic) whose L3 operations are
  applied by `replay_tick(n)` (n events per symbol; a timer in gateway.venue sets
  the pace) under owner 0 (OWNER_ANONYMOUS, never self-matches). A `--data FILE`
  replay is another `MarketSource`.
* Listeners for a market-data publisher (see `MarketListener`): on_book_update,
  on_trade, on_halt.
* Fault injection: one `Faults` object, consulted here (reject orders, halted
  symbols) and by the order-entry transports (ack delay, dropped connections).

Broker statement (CSV, one header row, then FILL rows in execution order, then one
POSITION row per account and symbol, accounts and symbols sorted):

  record     FILL or POSITION
  account    the account (for FIX: the counterparty's CompID)
  symbol     instrument symbol
  time_utc   FILL: execution time; POSITION: time the statement was made
             (ISO 8601, UTC, microseconds, e.g. 2024-05-01T13:30:00.123456Z)
  exec_id    FILL: the ExecID of the ExecutionReport that reported the fill
  order_id   FILL: the exchange OrderID
  cl_ord_id  FILL: the order's client order id at the time of the fill
  side       FILL: BUY or SELL
  qty        FILL: lots executed; POSITION: net position in lots (+ long, - short)
  price      FILL: execution price (decimal, the symbol's tick precision)
  liquidity  FILL: M (maker: the order was resting) or T (taker)
  bought     POSITION: lots bought in total
  sold       POSITION: lots sold in total
  net_cash   POSITION: sum(sold qty x price) - sum(bought qty x price) (decimal)
Empty cells are fields that do not apply to the row's record type.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from core_ext import matching as mb
from gateway import synthetic
from gateway.errors import GatewayError
from gateway.instruments import Instrument

log = logging.getLogger("gateway.exchange")

SIDE_BUY = mb.SIDE_BUY
SIDE_SELL = mb.SIDE_SELL
ORDTYPE_LIMIT = mb.ORDTYPE_LIMIT
ORDTYPE_MARKET = mb.ORDTYPE_MARKET
TIF_DAY, TIF_GTC, TIF_IOC, TIF_FOK = mb.TIF_DAY, mb.TIF_GTC, mb.TIF_IOC, mb.TIF_FOK
OWNER_ANONYMOUS = mb.OWNER_ANONYMOUS

#: Exchange order ids of participants' orders start here (market-data ids stay below).
ORDER_ID_BASE = 1 << 48
DEFAULT_MAX_ORDER_QTY = 1_000_000

# ExecType (150) and OrdStatus (39) values, FIX 4.4 letters.
EXEC_NEW = "0"
EXEC_CANCELED = "4"
EXEC_REPLACED = "5"
EXEC_REJECTED = "8"
EXEC_TRADE = "F"
EXEC_ORDER_STATUS = "I"
STATUS_NEW = "0"
STATUS_PARTIALLY_FILLED = "1"
STATUS_FILLED = "2"
STATUS_CANCELED = "4"
STATUS_REJECTED = "8"
TERMINAL_STATUSES = frozenset((STATUS_FILLED, STATUS_CANCELED, STATUS_REJECTED))

# OrdRejReason (103).
ORD_REJ_BROKER_OPTION = 0
ORD_REJ_UNKNOWN_SYMBOL = 1
ORD_REJ_EXCHANGE_CLOSED = 2
ORD_REJ_EXCEEDS_LIMIT = 3
ORD_REJ_DUPLICATE = 6
ORD_REJ_OTHER = 99

# CxlRejReason (102) and CxlRejResponseTo (434).
CXL_REJ_TOO_LATE = 0
CXL_REJ_UNKNOWN_ORDER = 1
CXL_REJ_BROKER_OPTION = 2
CXL_REJ_DUPLICATE_CL_ORD_ID = 6
CXL_REJ_OTHER = 99
RESPONSE_TO_CANCEL = "1"
RESPONSE_TO_REPLACE = "2"

# MassCancelRequestType (530) / MassCancelResponse (531) / MassCancelRejectReason (532).
MASS_CANCEL_SYMBOL = "1"
MASS_CANCEL_ALL = "7"
MASS_CANCEL_REJECTED = "0"
MASS_REJ_NOT_SUPPORTED = 0
MASS_REJ_UNKNOWN_SECURITY = 1


class ExchangeError(GatewayError, ValueError):
    """A call into the exchange with a value outside what it accepts (programming or
    configuration error; business rejects are reports, never exceptions)."""


# ----------------------------------------------------------------------------- faults

class Faults:
    """Fault injection, switchable at start and at run time (Python API and the HTTP
    control endpoint of gateway.control).

    reject_rate        share of new orders rejected, 0..1 (1 = all), drawn from a
                       random.Random seeded with reject_seed (reproducible)
    ack_delay_ms       delay of every outbound order-entry report (the transports
                       consult it), ms >= 0
    halted             symbols halted: new orders and replaces are rejected, cancels
                       are accepted, the market-data flow of the symbol pauses
    drop_after_orders  drop the order-entry connection (abruptly, no Logout) after
                       this many more order-entry messages; 0 = off
    drop_connections() run-time action: drop the order-entry connection(s) now
    feed_*             the market-data feed's faults (gateway.itch_feed.FeedFaults, set as
                       `feed` by the venue when it publishes): feed_drop_rate and
                       feed_reorder_rate (0..1, seeded), feed_drop_next (drop the next n
                       packets), feed_stopped (publish nothing), feed_drop_retransmissions
    """

    KEYS = ("reject_rate", "reject_seed", "ack_delay_ms", "halt", "resume", "halted",
            "drop_after_orders", "drop_connection", "feed_drop_rate", "feed_reorder_rate", "feed_drop_next",
            "feed_stopped", "feed_drop_retransmissions")
    FEED_KEYS = {"feed_drop_rate": "drop_rate", "feed_reorder_rate": "reorder_rate", "feed_drop_next": "drop_next",
                 "feed_stopped": "stopped", "feed_drop_retransmissions": "drop_retransmissions"}

    def __init__(self, reject_rate: float = 0.0, reject_seed: int = 0, ack_delay_ms: float = 0.0,
                 halted: Iterable[str] = (), drop_after_orders: int = 0) -> None:
        self._halt_hooks: list[Callable[[str, bool], None]] = []
        self._drop_hooks: list[Callable[[str | None], int]] = []
        self.known_symbols: frozenset[str] | None = None
        self.reject_rate = 0.0
        self.reject_seed = 0
        self._rng = random.Random(0)
        self.ack_delay_ms = 0.0
        self.drop_after_orders = 0
        self.halted: frozenset[str] = frozenset()
        self.rejected = 0            # orders rejected by injection
        self.dropped = 0             # connections dropped by injection
        self.feed = None             # gateway.itch_feed.FeedFaults of the venue's publisher, if any
        self.set_reject_rate(reject_rate, reject_seed)
        self.set_ack_delay_ms(ack_delay_ms)
        self.set_drop_after_orders(drop_after_orders)
        for symbol in halted:
            self.set_halted(symbol, True)

    # -- setters (each validates and names what was wrong) ----------------------
    def set_reject_rate(self, rate: float, seed: int | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ExchangeError(f"reject_rate {rate!r}: give a number in 0..1")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ExchangeError(f"reject_seed {seed!r}: give an integer")
            self.reject_seed = seed
        self.reject_rate = float(rate)
        self._rng = random.Random(self.reject_seed)

    def set_ack_delay_ms(self, ms: float) -> None:
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0.0 <= ms <= 60_000.0:
            raise ExchangeError(f"ack_delay_ms {ms!r}: give a number of milliseconds in 0..60000")
        self.ack_delay_ms = float(ms)

    def set_drop_after_orders(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ExchangeError(f"drop_after_orders {n!r}: give an integer >= 0 (0 = off)")
        self.drop_after_orders = n

    def set_halted(self, symbol: str, halted: bool) -> None:
        if not isinstance(symbol, str) or not symbol:
            raise ExchangeError(f"halt: symbol {symbol!r} must be a non-empty string")
        if self.known_symbols is not None and symbol not in self.known_symbols:
            raise ExchangeError(f"halt: unknown symbol {symbol!r}; known: {', '.join(sorted(self.known_symbols))}")
        was = symbol in self.halted
        self.halted = self.halted | {symbol} if halted else self.halted - {symbol}
        if was != halted:
            for hook in list(self._halt_hooks):
                hook(symbol, halted)

    # -- what the exchange and the transports consult ----------------------------
    def should_reject(self) -> bool:
        """Consumes one draw of the seeded RNG when a rate is set."""
        if self.reject_rate <= 0.0:
            return False
        if self.reject_rate >= 1.0 or self._rng.random() < self.reject_rate:
            self.rejected += 1
            return True
        return False

    def order_received(self) -> bool:
        """A transport calls this per inbound order-entry message: True = drop now."""
        if self.drop_after_orders <= 0:
            return False
        self.drop_after_orders -= 1
        if self.drop_after_orders == 0:
            self.dropped += 1
            return True
        return False

    def drop_connections(self, account: str | None = None) -> int:
        """Drop the order-entry connection of `account` (all when None) now; returns
        how many connections were dropped."""
        n = sum(hook(account) for hook in list(self._drop_hooks))
        self.dropped += n
        return n

    def add_halt_hook(self, hook: Callable[[str, bool], None]) -> None:
        self._halt_hooks.append(hook)

    def add_drop_hook(self, hook: Callable[[str | None], int]) -> None:
        """`hook(account or None)` drops the matching connections and returns how many."""
        self._drop_hooks.append(hook)

    # -- the HTTP control endpoint's view ----------------------------------------
    def snapshot(self) -> dict:
        return {"reject_rate": self.reject_rate, "reject_seed": self.reject_seed,
                "ack_delay_ms": self.ack_delay_ms, "halted": sorted(self.halted),
                "drop_after_orders": self.drop_after_orders, "rejected": self.rejected,
                "dropped": self.dropped,
                **({k: getattr(self.feed, a) for k, a in self.FEED_KEYS.items()} if self.feed is not None else {})}

    def _check_feed(self, changes: Mapping) -> dict:
        """Validated feed fault changes (attribute -> value)."""
        out = {}
        for key, attr in self.FEED_KEYS.items():
            if key not in changes:
                continue
            if self.feed is None:
                raise ExchangeError(f"{key}: this venue publishes no market-data feed")
            v = changes[key]
            if attr in ("drop_rate", "reorder_rate"):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                    raise ExchangeError(f"{key} {v!r}: a probability in 0..1")
                v = float(v)
            elif attr == "drop_next":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ExchangeError(f"{key} {v!r}: a whole number of packets >= 0")
            elif not isinstance(v, bool):
                raise ExchangeError(f"{key} {v!r}: true or false")
            out[attr] = v
        return out

    def apply(self, changes: Mapping) -> dict:
        """Apply a JSON object of changes; every key is checked before any is applied.

        Keys: reject_rate (0..1), reject_seed (int), ack_delay_ms (>= 0), halt (symbol or
        list), resume (symbol or list), halted (the full list), drop_after_orders (int),
        drop_connection (true for all, or an account). Returns the new snapshot plus
        "dropped_now" when a drop was asked for.
        """
        if not isinstance(changes, Mapping):
            raise ExchangeError("the faults body must be a JSON object")
        unknown = [k for k in changes if k not in self.KEYS]
        if unknown:
            raise ExchangeError(f"unknown fault key(s) {', '.join(map(str, unknown))}; "
                                f"allowed: {', '.join(self.KEYS)}")

        def symbols(key: str) -> list[str]:
            value = changes[key]
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
                raise ExchangeError(f"{key}: give a symbol or a list of symbols")
            if self.known_symbols is not None:
                bad = [s for s in items if s not in self.known_symbols]
                if bad:
                    raise ExchangeError(f"{key}: unknown symbol(s) {', '.join(bad)}")
            return items

        # validate everything first on a scratch copy
        scratch = Faults(self.reject_rate, self.reject_seed, self.ack_delay_ms, (), self.drop_after_orders)
        if "reject_rate" in changes or "reject_seed" in changes:
            scratch.set_reject_rate(changes.get("reject_rate", self.reject_rate), changes.get("reject_seed"))
        if "ack_delay_ms" in changes:
            scratch.set_ack_delay_ms(changes["ack_delay_ms"])
        if "drop_after_orders" in changes:
            scratch.set_drop_after_orders(changes["drop_after_orders"])
        halt = symbols("halt") if "halt" in changes else []
        resume = symbols("resume") if "resume" in changes else []
        full = symbols("halted") if "halted" in changes else None
        drop = changes.get("drop_connection", False)
        if not (drop is True or drop is False or drop is None or (isinstance(drop, str) and drop)):
            raise ExchangeError("drop_connection: give true (all connections) or an account name")
        feed_changes = self._check_feed(changes)
        # apply
        if "reject_rate" in changes or "reject_seed" in changes:
            self.set_reject_rate(scratch.reject_rate, scratch.reject_seed)
        if "ack_delay_ms" in changes:
            self.set_ack_delay_ms(scratch.ack_delay_ms)
        if "drop_after_orders" in changes:
            self.set_drop_after_orders(scratch.drop_after_orders)
        if full is not None:
            for s in sorted(self.halted - set(full)):
                self.set_halted(s, False)
            for s in full:
                self.set_halted(s, True)
        for s in halt:
            self.set_halted(s, True)
        for s in resume:
            self.set_halted(s, False)
        for attr, v in feed_changes.items():
            setattr(self.feed, attr, v)
        out = self.snapshot()
        if drop:
            out["dropped_now"] = self.drop_connections(None if drop is True else drop)
        return out


# ---------------------------------------------------------------------------- reports

@dataclass(slots=True)
class ExecReport:
    """One execution report (FIX 35=8) for `account`. Prices in ticks of `symbol`."""

    account: str
    symbol: str
    order_id: int              # exchange order id; 0 when the order was rejected (no id)
    cl_ord_id: str
    exec_id: int
    exec_type: str             # EXEC_*
    ord_status: str            # STATUS_*
    side: int                  # SIDE_BUY / SIDE_SELL, or -1 when a reject could not read it
    ord_type: int
    tif: int
    order_qty: int
    price: int | None          # limit price, None for market orders
    leaves_qty: int
    cum_qty: int
    notional: int              # sum of fill qty x price (ticks x lots): AvgPx = notional / cum_qty
    last_qty: int = 0
    last_px: int | None = None
    orig_cl_ord_id: str | None = None
    text: str | None = None
    ord_rej_reason: int | None = None
    ts_ns: int = 0
    raw_side: str | None = None     # the side as received, for rejects of unreadable sides
    status_req_id: str | None = None


@dataclass(slots=True)
class CancelReject:
    """OrderCancelReject (FIX 35=9) for a cancel or replace that was refused."""

    account: str
    cl_ord_id: str
    orig_cl_ord_id: str
    order_id: int              # 0 when unknown
    ord_status: str            # current status of the order (STATUS_REJECTED when unknown)
    response_to: str           # RESPONSE_TO_CANCEL / RESPONSE_TO_REPLACE
    reason: int                # CXL_REJ_*
    text: str
    ts_ns: int = 0


@dataclass(slots=True)
class MassCancelReport:
    """OrderMassCancelReport (FIX 35=r)."""

    account: str
    cl_ord_id: str
    request_type: str          # MASS_CANCEL_SYMBOL / MASS_CANCEL_ALL (as requested)
    response: str              # MASS_CANCEL_REJECTED or the request type when accepted
    affected: int              # orders canceled
    symbol: str | None = None
    reject_reason: int | None = None
    text: str | None = None
    report_id: int = 0
    ts_ns: int = 0


Report = ExecReport | CancelReject | MassCancelReport


@dataclass(slots=True)
class Fill:
    ts_ns: int
    account: str
    symbol: str
    exec_id: int
    order_id: int
    cl_ord_id: str
    side: int
    qty: int
    price: int                 # ticks
    liquidity: str             # "M" maker / "T" taker


class Order:
    """A participant's order as the exchange tracks it (live or terminal)."""

    __slots__ = ("order_id", "account", "symbol", "side", "ord_type", "tif", "order_qty", "price",
                 "cl_ord_id", "orig_cl_ord_id", "cum_qty", "leaves_qty", "notional", "status",
                 "created_ns")

    def __init__(self, order_id: int, account: str, symbol: str, side: int, ord_type: int, tif: int,
                 qty: int, price: int | None, cl_ord_id: str, ts_ns: int) -> None:
        self.order_id = order_id
        self.account = account
        self.symbol = symbol
        self.side = side
        self.ord_type = ord_type
        self.tif = tif
        self.order_qty = qty
        self.price = price
        self.cl_ord_id = cl_ord_id
        self.orig_cl_ord_id: str | None = None
        self.cum_qty = 0
        self.leaves_qty = qty
        self.notional = 0
        self.status = STATUS_NEW
        self.created_ns = ts_ns

    def __repr__(self) -> str:
        return (f"Order({self.order_id}, {self.account}/{self.cl_ord_id}, {self.symbol}, side={self.side}, "
                f"qty={self.order_qty}, px={self.price}, cum={self.cum_qty}, leaves={self.leaves_qty}, "
                f"status={self.status})")


@dataclass
class Account:
    name: str
    owner: int                                            # owner id in the matching books
    position: dict[str, int] = field(default_factory=dict)   # symbol -> lots (+ long)
    bought: dict[str, int] = field(default_factory=dict)
    sold: dict[str, int] = field(default_factory=dict)
    cash: dict[str, int] = field(default_factory=dict)       # symbol -> ticks x lots (+ received)
    fills: list[Fill] = field(default_factory=list)
    orders: dict[str, Order] = field(default_factory=dict)   # every ClOrdID ever used -> order
    live: dict[int, Order] = field(default_factory=dict)     # open orders by order id


# ---------------------------------------------------------------------------- listeners

class MarketListener:
    """What a market-data publisher implements (override what you need; all no-ops).

    Called on the event loop thread, synchronously, after the book changed; keep them
    quick (queue work, do not block). Read the book itself with `exchange.book(symbol)`
    (MatchingBook: top(), depth(side, n), open_orders()).
    """

    def on_book_update(self, symbol: str) -> None:
        """The book of `symbol` changed (once per operation or replay batch, not per event)."""

    def on_trade(self, symbol: str, price: int, qty: int, aggressor_side: int, ts_ns: int) -> None:
        """One execution: price in ticks, qty in lots, aggressor_side SIDE_BUY/SIDE_SELL."""

    def on_halt(self, symbol: str, halted: bool) -> None:
        """Trading in `symbol` was halted (True) or resumed (False)."""


# ----------------------------------------------------------------------- market sources

class MarketSource(Protocol):
    """Resting liquidity from market data: L3 operations (L3_OP_DTYPE rows, owner 0)."""

    def next_ops(self, n: int) -> np.ndarray:
        """Up to `n` operations; an empty array when the source is exhausted."""
        ...


def flow_to_ops(flow: np.ndarray) -> np.ndarray:
    """gateway.synthetic events -> L3 operations of the anonymous owner."""
    ops = np.zeros(len(flow), dtype=mb.L3_OP_DTYPE)
    ops["order_id"] = flow["order_id"]
    ops["side"] = flow["side"]
    ops["qty"] = flow["qty"]
    add = flow["kind"] == synthetic.EVENT_ADD
    cancel = flow["kind"] == synthetic.EVENT_CANCEL
    market = flow["kind"] == synthetic.EVENT_MARKET
    ops["op"][add | market] = mb.L3_OP_ADD
    ops["op"][cancel] = mb.L3_OP_CANCEL
    ops["price"][add] = flow["price"][add]
    ops["ord_type"][add] = mb.ORDTYPE_LIMIT
    ops["tif"][add] = mb.TIF_DAY
    ops["ord_type"][market] = mb.ORDTYPE_MARKET
    ops["tif"][market] = mb.TIF_IOC
    return ops


class SyntheticSource:
    """The seeded synthetic flow of gateway.synthetic, endless, in chunks.

    Each chunk is `chunk_events` events from seed `seed + chunk number`, starting at
    the fair price where the previous chunk ended (median of its last limit prices)
    with order ids continuing. Orders a chunk leaves resting are canceled at the start
    of the chunk after next (they live one to two chunks), so the book stays bounded.
    Same seed, same flow.
    """

    def __init__(self, seed: int, params: synthetic.SyntheticParams | None = None,
                 chunk_events: int = 50_000) -> None:
        if chunk_events < 100:
            raise ExchangeError(f"chunk_events {chunk_events}: must be >= 100")
        self.seed = seed
        self.params = params or synthetic.SyntheticParams()
        self.chunk_events = chunk_events
        self._chunk_no = 0
        self._next_id = self.params.first_order_id
        self._start_price = self.params.start_price_ticks
        self._ops = np.zeros(0, dtype=mb.L3_OP_DTYPE)
        self._pos = 0
        # ids left resting by the previous chunk and by the one before it
        self._leftovers: list[np.ndarray] = []
        self.events_out = 0

    def _load_chunk(self) -> None:
        from dataclasses import replace
        params = replace(self.params, start_price_ticks=max(101, int(self._start_price)),
                         first_order_id=self._next_id)
        flow = synthetic.generate(self.chunk_events, self.seed + self._chunk_no, params)
        ops = flow_to_ops(flow)
        added = flow["order_id"][flow["kind"] == synthetic.EVENT_ADD]
        canceled = flow["order_id"][flow["kind"] == synthetic.EVENT_CANCEL]
        self._leftovers.append(np.setdiff1d(added, canceled, assume_unique=False))
        expire = self._leftovers.pop(0) if len(self._leftovers) > 2 else np.zeros(0, np.uint64)
        if len(expire):
            cancels = np.zeros(len(expire), dtype=mb.L3_OP_DTYPE)
            cancels["order_id"] = expire
            cancels["op"] = mb.L3_OP_CANCEL
            ops = np.concatenate([cancels, ops])
        prices = flow["price"][flow["kind"] == synthetic.EVENT_ADD]
        if len(prices):
            self._start_price = int(np.median(prices[-50:]))
        self._next_id = int(flow["order_id"].max()) + 1 if len(flow) else self._next_id
        self._chunk_no += 1
        self._ops = ops
        self._pos = 0

    def next_ops(self, n: int) -> np.ndarray:
        if n <= 0:
            return self._ops[:0]
        parts = []
        want = n
        while want > 0:
            if self._pos >= len(self._ops):
                self._load_chunk()
            part = self._ops[self._pos:self._pos + want]
            self._pos += len(part)
            want -= len(part)
            parts.append(part)
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.events_out += len(out)
        return out


# ---------------------------------------------------------------------------- exchange

ReportSink = Callable[[Report], None]


def _utc(ts_ns: int) -> str:
    secs, ns = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns // 1000:06d}Z"


class Exchange:
    """Matching books, order entry, accounts and market-data replay (see module doc)."""

    def __init__(self, instruments: Iterable[Instrument | str], faults: Faults | None = None,
                 sources: Mapping[str, MarketSource] | None = None, seed: int = 7,
                 synthetic_params: synthetic.SyntheticParams | None = None,
                 self_match_policy: int = mb.SMP_CANCEL_INCOMING,
                 max_order_qty: int = DEFAULT_MAX_ORDER_QTY,
                 clock_ns: Callable[[], int] = time.time_ns, exec_id_start: int | None = None) -> None:
        self.instruments: dict[str, Instrument] = {}
        for inst in instruments:
            if isinstance(inst, str):
                inst = Instrument(inst)
            if inst.symbol in self.instruments:
                raise ExchangeError(f"symbol {inst.symbol} given twice")
            self.instruments[inst.symbol] = inst
        if not self.instruments:
            raise ExchangeError("an exchange needs at least one symbol")
        if max_order_qty < 1:
            raise ExchangeError(f"max_order_qty {max_order_qty}: must be >= 1")
        self.faults = faults if faults is not None else Faults()
        self.faults.known_symbols = frozenset(self.instruments)
        self.faults.add_halt_hook(self._on_halt_change)
        self.max_order_qty = max_order_qty
        self.clock_ns = clock_ns
        self.books: dict[str, mb.MatchingBook] = {
            s: mb.MatchingBook(s, self_match_policy=self_match_policy) for s in self.instruments}
        if sources is None:
            sources = {s: SyntheticSource(seed + i, synthetic_params) for i, s in enumerate(self.instruments)}
        unknown = [s for s in sources if s not in self.instruments]
        if unknown:
            raise ExchangeError(f"market source for unknown symbol(s) {', '.join(unknown)}")
        self.sources: dict[str, MarketSource] = dict(sources)
        self.accounts: dict[str, Account] = {}
        self._owners: dict[int, Account] = {}
        self._sinks: dict[str, ReportSink] = {}
        self._listeners: list[MarketListener] = []
        self._orders: dict[int, Order] = {}          # live participant orders by order id
        self._next_order_id = ORDER_ID_BASE
        # ExecIDs: a counter from the start time in microseconds, so ids stay unique
        # across restarts as long as the clock moves forward (one exec < one microsecond
        # never happens in this process).
        self._next_exec_id = exec_id_start if exec_id_start is not None else time.time_ns() // 1000
        self._next_report_id = 1
        self._request: tuple[Order, str, str | None, int] | None = None
        # counters (read on timers)
        self.orders_received = 0
        self.orders_rejected = 0
        self.trades = 0
        self.volume = 0
        self.replay_events = 0

    # ------------------------------------------------------------------ setup
    def add_account(self, name: str) -> Account:
        if not isinstance(name, str) or not name:
            raise ExchangeError(f"account name {name!r} must be a non-empty string")
        acct = self.accounts.get(name)
        if acct is None:
            acct = Account(name, owner=len(self.accounts) + 1)
            self.accounts[name] = acct
            self._owners[acct.owner] = acct
        return acct

    def set_report_sink(self, account: str, sink: ReportSink | None) -> None:
        """Reports for `account` go to `sink` (None: dropped)."""
        self.add_account(account)
        if sink is None:
            self._sinks.pop(account, None)
        else:
            self._sinks[account] = sink

    def add_listener(self, listener: MarketListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: MarketListener) -> None:
        self._listeners.remove(listener)

    def book(self, symbol: str) -> mb.MatchingBook:
        return self.books[symbol]

    def instrument(self, symbol: str) -> Instrument | None:
        return self.instruments.get(symbol)

    def is_halted(self, symbol: str) -> bool:
        return symbol in self.faults.halted

    def set_halt(self, symbol: str, halted: bool = True) -> None:
        self.faults.set_halted(symbol, halted)

    # ------------------------------------------------------------ internals
    def _exec_id(self) -> int:
        self._next_exec_id += 1
        return self._next_exec_id

    def _emit(self, report: Report) -> None:
        sink = self._sinks.get(report.account)
        if sink is not None:
            sink(report)

    def _report(self, order: Order, exec_type: str, last_qty: int = 0, last_px: int | None = None,
                text: str | None = None, cl_ord_id: str | None = None, orig_cl_ord_id: str | None = None,
                ts_ns: int = 0) -> ExecReport:
        return ExecReport(order.account, order.symbol, order.order_id,
                          cl_ord_id if cl_ord_id is not None else order.cl_ord_id,
                          self._exec_id(), exec_type, order.status, order.side, order.ord_type, order.tif,
                          order.order_qty, order.price, order.leaves_qty, order.cum_qty, order.notional,
                          last_qty, last_px, orig_cl_ord_id, text, None, ts_ns or self.clock_ns())

    def _on_halt_change(self, symbol: str, halted: bool) -> None:
        log.info("exchange: %s %s", symbol, "halted" if halted else "resumed")
        for listener in self._listeners:
            listener.on_halt(symbol, halted)

    def _book_updated(self, symbol: str) -> None:
        for listener in self._listeners:
            listener.on_book_update(symbol)

    def _fill(self, order: Order, qty: int, price: int, liquidity: str, ts_ns: int) -> None:
        order.cum_qty += qty
        order.leaves_qty -= qty
        order.notional += qty * price
        if order.leaves_qty <= 0:
            order.leaves_qty = 0
            order.status = STATUS_FILLED
            self._orders.pop(order.order_id, None)
            acct = self.accounts[order.account]
            acct.live.pop(order.order_id, None)
        else:
            order.status = STATUS_PARTIALLY_FILLED
        acct = self.accounts[order.account]
        sym = order.symbol
        if order.side == SIDE_BUY:
            acct.position[sym] = acct.position.get(sym, 0) + qty
            acct.bought[sym] = acct.bought.get(sym, 0) + qty
            acct.cash[sym] = acct.cash.get(sym, 0) - qty * price
        else:
            acct.position[sym] = acct.position.get(sym, 0) - qty
            acct.sold[sym] = acct.sold.get(sym, 0) + qty
            acct.cash[sym] = acct.cash.get(sym, 0) + qty * price
        report = self._report(order, EXEC_TRADE, qty, price, ts_ns=ts_ns)
        acct.fills.append(Fill(ts_ns, order.account, sym, report.exec_id, order.order_id, order.cl_ord_id,
                               order.side, qty, price, liquidity))
        self._emit(report)

    def _close(self, order: Order, text: str | None, ts_ns: int, cl_ord_id: str | None = None,
               orig_cl_ord_id: str | None = None) -> None:
        order.leaves_qty = 0
        order.status = STATUS_CANCELED
        self._orders.pop(order.order_id, None)
        self.accounts[order.account].live.pop(order.order_id, None)
        self._emit(self._report(order, EXEC_CANCELED, text=text, cl_ord_id=cl_ord_id,
                                orig_cl_ord_id=orig_cl_ord_id, ts_ns=ts_ns))

    def _process(self, symbol: str, book: mb.MatchingBook) -> None:
        """Drain the book's events and turn those of participants into reports."""
        execs, oevs = book.drain_events()
        nx, no = len(execs), len(oevs)
        if not nx and not no:
            return
        ts = self.clock_ns()
        if nx:
            self.trades += nx
            self.volume += int(execs["qty"].sum())
        xl = execs.tolist() if nx else []
        ol = oevs.tolist() if no else []
        i = j = 0
        listeners = self._listeners
        while i < nx or j < no:
            if j >= no or (i < nx and xl[i][0] < ol[j][0]):
                (_, maker_id, taker_id, maker_owner, taker_owner, price, qty, _, _, _, aggressor, _) = xl[i]
                i += 1
                for listener in listeners:
                    listener.on_trade(symbol, price, qty, aggressor, ts)
                if maker_owner != OWNER_ANONYMOUS:
                    order = self._orders.get(maker_id)
                    if order is not None:
                        self._fill(order, qty, price, "M", ts)
                if taker_owner != OWNER_ANONYMOUS:
                    order = self._orders.get(taker_id)
                    if order is not None:
                        self._fill(order, qty, price, "T", ts)
                continue
            (_, order_id, _, owner, price, qty, kind, reason, _, _, _) = ol[j]
            j += 1
            if owner == OWNER_ANONYMOUS:
                continue
            order = self._orders.get(order_id)
            if order is None:
                continue
            if kind == mb.ORDEV_ACCEPTED:
                self._emit(self._report(order, EXEC_NEW, ts_ns=ts))
            elif kind == mb.ORDEV_CANCELED:
                if reason == mb.CANCEL_USER and self._request is not None and self._request[0] is order:
                    _, new_id, orig_id, _ = self._request
                    order.orig_cl_ord_id = orig_id
                    order.cl_ord_id = new_id
                    self._close(order, None, ts, new_id, orig_id)
                elif reason == mb.CANCEL_SELF_MATCH:
                    self._close(order, "canceled by self-match prevention", ts)
                elif reason == mb.CANCEL_EXPIRED:
                    self._close(order, "expired at the end of the session", ts)
                elif reason == mb.CANCEL_IOC_REMAINDER:
                    text = ("market order: no more liquidity, remainder canceled"
                            if order.ord_type == ORDTYPE_MARKET else
                            "IOC/FOK: remainder canceled")
                    self._close(order, text, ts)
                else:
                    self._close(order, "canceled", ts)
            elif kind == mb.ORDEV_REPLACED:
                if self._request is not None and self._request[0] is order:
                    _, new_id, orig_id, new_qty = self._request
                    order.orig_cl_ord_id = orig_id
                    order.cl_ord_id = new_id
                    order.order_qty = new_qty
                    order.price = price
                    order.leaves_qty = qty
                    order.status = STATUS_PARTIALLY_FILLED if order.cum_qty else STATUS_NEW
                    self.accounts[order.account].orders[new_id] = order
                    self._emit(self._report(order, EXEC_REPLACED, orig_cl_ord_id=orig_id, ts_ns=ts))
            elif kind == mb.ORDEV_REJECTED:
                if reason == mb.MATCH_REJECT_FOK_NOT_FILLABLE:
                    self._emit(self._report(order, EXEC_NEW, ts_ns=ts))
                    self._close(order, "FOK: the order could not be filled completely", ts)
                else:
                    log.error("exchange: matching book rejected %r: %s", order,
                              mb.STATUS_NAMES.get(reason, reason))
                    self._close(order, f"internal reject {mb.STATUS_NAMES.get(reason, reason)}", ts)

    # ---------------------------------------------------------- order entry
    def knows(self, account: str, cl_ord_id: str) -> bool:
        """True when `account` already used `cl_ord_id` (for PossDup/PossResend dedupe)."""
        acct = self.accounts.get(account)
        return acct is not None and cl_ord_id in acct.orders

    def find_order(self, account: str, cl_ord_id: str | None = None, order_id: int | None = None) -> Order | None:
        acct = self.accounts.get(account)
        if acct is None:
            return None
        if cl_ord_id:
            order = acct.orders.get(cl_ord_id)
            if order is not None:
                return order
        if order_id is not None:
            order = self._orders.get(order_id)
            if order is not None and order.account == account:
                return order
            for order in acct.orders.values():   # terminal orders: rare, linear is fine
                if order.order_id == order_id:
                    return order
        return None

    def reject_order(self, account: str, cl_ord_id: str, symbol: str, side: int, qty: int, price: int | None,
                     text: str, reason: int = ORD_REJ_OTHER, ord_type: int = ORDTYPE_LIMIT, tif: int = TIF_DAY,
                     raw_side: str | None = None) -> ExecReport:
        """An ExecReport Rejected for an order the exchange never accepted (also used by
        the protocols for requests they cannot read)."""
        self.add_account(account)
        self.orders_rejected += 1
        qty = qty if isinstance(qty, int) and not isinstance(qty, bool) and qty > 0 else 0
        price = price if isinstance(price, int) and not isinstance(price, bool) else None
        report = ExecReport(account, symbol, 0, cl_ord_id, self._exec_id(), EXEC_REJECTED, STATUS_REJECTED,
                            side, ord_type, tif, qty, price, 0, 0, 0, text=text, ord_rej_reason=reason,
                            ts_ns=self.clock_ns(), raw_side=raw_side)
        log.info("exchange: reject %s/%s %s: %s", account, cl_ord_id, symbol, text)
        self._emit(report)
        return report

    def new_order(self, account: str, cl_ord_id: str, symbol: str, side: int, qty: int, price: int | None = None,
                  ord_type: int = ORDTYPE_LIMIT, tif: int = TIF_DAY) -> Order | None:
        """Enter an order; reports follow through the account's sink. Returns the order,
        or None when it was rejected."""
        acct = self.add_account(account)
        self.orders_received += 1
        inst = self.instruments.get(symbol)
        if inst is None:
            self.reject_order(account, cl_ord_id, symbol, side, qty, price, f"unknown symbol {symbol!r}",
                              ORD_REJ_UNKNOWN_SYMBOL, ord_type, tif)
            return None
        if not cl_ord_id:
            self.reject_order(account, cl_ord_id, symbol, side, qty, price, "empty ClOrdID", ORD_REJ_OTHER,
                              ord_type, tif)
            return None
        if cl_ord_id in acct.orders:
            self.reject_order(account, cl_ord_id, symbol, side, qty, price,
                              f"duplicate ClOrdID {cl_ord_id!r}", ORD_REJ_DUPLICATE, ord_type, tif)
            return None
        problem = None
        if side not in (SIDE_BUY, SIDE_SELL):
            problem = f"side {side} is not buy or sell"
        elif ord_type not in (ORDTYPE_LIMIT, ORDTYPE_MARKET):
            problem = f"order type {ord_type} is not limit or market"
        elif tif not in (TIF_DAY, TIF_GTC, TIF_IOC, TIF_FOK):
            problem = f"time in force {tif} is not DAY, GTC, IOC or FOK"
        elif isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            problem = f"quantity {qty!r} must be a positive whole number of lots"
        elif qty > self.max_order_qty:
            self.reject_order(account, cl_ord_id, symbol, side, qty, price,
                              f"quantity {qty} above the maximum order size {self.max_order_qty}",
                              ORD_REJ_EXCEEDS_LIMIT, ord_type, tif)
            return None
        elif ord_type == ORDTYPE_LIMIT and (price is None or isinstance(price, bool)
                                            or not isinstance(price, int) or price <= 0):
            problem = f"limit price {price!r} must be a positive number of ticks"
        if problem is not None:
            self.reject_order(account, cl_ord_id, symbol, side, qty, price, problem, ORD_REJ_OTHER, ord_type, tif)
            return None
        if symbol in self.faults.halted:
            self.reject_order(account, cl_ord_id, symbol, side, qty, price, f"{symbol} is halted",
                              ORD_REJ_EXCHANGE_CLOSED, ord_type, tif)
            return None
        if self.faults.should_reject():
            self.reject_order(account, cl_ord_id, symbol, side, qty, price, "rejected by fault injection",
                              ORD_REJ_BROKER_OPTION, ord_type, tif)
            return None
        if ord_type == ORDTYPE_MARKET:
            price = None
        self._next_order_id += 1
        oid = self._next_order_id
        order = Order(oid, account, symbol, side, ord_type, tif, qty, price, cl_ord_id, self.clock_ns())
        acct.orders[cl_ord_id] = order
        acct.live[oid] = order
        self._orders[oid] = order
        book = self.books[symbol]
        book.submit(oid, acct.owner, side, qty, price, ord_type, tif)
        self._process(symbol, book)
        self._book_updated(symbol)
        return order

    def cancel_reject(self, account: str, cl_ord_id: str, orig_cl_ord_id: str, order: Order | None,
                       response_to: str, reason: int, text: str) -> None:
        """A CancelReject report (also used by the protocols for requests they cannot read)."""
        self.add_account(account)
        log.info("exchange: %s reject %s/%s (orig %s): %s", "cancel" if response_to == RESPONSE_TO_CANCEL
                 else "replace", account, cl_ord_id, orig_cl_ord_id, text)
        self._emit(CancelReject(account, cl_ord_id, orig_cl_ord_id, order.order_id if order else 0,
                                order.status if order else STATUS_REJECTED, response_to, reason, text,
                                self.clock_ns()))

    def _target(self, account: str, cl_ord_id: str, orig_cl_ord_id: str | None, order_id: int | None,
                response_to: str) -> Order | None:
        """The order a cancel/replace is about, or None after sending a CancelReject."""
        acct = self.add_account(account)
        orig = orig_cl_ord_id or ""
        if not cl_ord_id:
            self.cancel_reject(account, cl_ord_id or "NONE", orig, None, response_to, CXL_REJ_OTHER,
                                "empty ClOrdID")
            return None
        order = self.find_order(account, orig_cl_ord_id, order_id)
        if order is None:
            self.cancel_reject(account, cl_ord_id, orig, None, response_to, CXL_REJ_UNKNOWN_ORDER,
                                f"unknown order {orig_cl_ord_id or order_id!r}")
            return None
        if cl_ord_id in acct.orders:
            self.cancel_reject(account, cl_ord_id, orig, order, response_to, CXL_REJ_DUPLICATE_CL_ORD_ID,
                                f"duplicate ClOrdID {cl_ord_id!r}")
            return None
        if order.status in TERMINAL_STATUSES or order.order_id not in self._orders:
            self.cancel_reject(account, cl_ord_id, orig, order, response_to, CXL_REJ_TOO_LATE,
                                "too late: the order is " + {STATUS_FILLED: "filled", STATUS_CANCELED: "canceled",
                                                            STATUS_REJECTED: "rejected"}.get(order.status, "closed"))
            return None
        return order

    def cancel_order(self, account: str, cl_ord_id: str, orig_cl_ord_id: str | None = None,
                     order_id: int | None = None) -> bool:
        """Cancel an open order (by its current or an earlier ClOrdID, or its order id)."""
        order = self._target(account, cl_ord_id, orig_cl_ord_id, order_id, RESPONSE_TO_CANCEL)
        if order is None:
            return False
        acct = self.accounts[account]
        acct.orders[cl_ord_id] = order
        book = self.books[order.symbol]
        self._request = (order, cl_ord_id, orig_cl_ord_id or order.cl_ord_id, order.order_qty)
        try:
            status = book.cancel(order.order_id)
            self._process(order.symbol, book)
        finally:
            self._request = None
        if status != mb.MATCH_OK:  # not resting (cannot happen for a live order): report honestly
            self._close(order, None, self.clock_ns(), cl_ord_id, orig_cl_ord_id or order.cl_ord_id)
        self._book_updated(order.symbol)
        return True

    def replace_order(self, account: str, cl_ord_id: str, orig_cl_ord_id: str | None = None,
                      order_id: int | None = None, qty: int | None = None, price: int | None = None) -> bool:
        """Change an open limit order's total quantity and/or price.

        `qty` is the new total order quantity (FIX OrderQty: filled lots included); it
        must exceed what is already filled. Keeps time priority when the price is the
        same and the quantity does not grow; otherwise re-queues and may trade at once.
        """
        order = self._target(account, cl_ord_id, orig_cl_ord_id, order_id, RESPONSE_TO_REPLACE)
        if order is None:
            return False
        orig = orig_cl_ord_id or order.cl_ord_id
        new_qty = order.order_qty if qty is None else qty
        new_price = order.price if price is None else price
        problem = None
        if order.symbol in self.faults.halted:
            problem = (CXL_REJ_BROKER_OPTION, f"{order.symbol} is halted")
        elif order.ord_type != ORDTYPE_LIMIT or new_price is None:
            problem = (CXL_REJ_BROKER_OPTION, "only limit orders can be replaced")
        elif isinstance(new_qty, bool) or not isinstance(new_qty, int) or new_qty <= 0:
            problem = (CXL_REJ_OTHER, f"quantity {new_qty!r} must be a positive whole number of lots")
        elif new_qty > self.max_order_qty:
            problem = (CXL_REJ_OTHER, f"quantity {new_qty} above the maximum order size {self.max_order_qty}")
        elif new_qty <= order.cum_qty:
            problem = (CXL_REJ_OTHER, f"quantity {new_qty} not above the filled quantity {order.cum_qty}")
        elif isinstance(new_price, bool) or not isinstance(new_price, int) or new_price <= 0:
            problem = (CXL_REJ_OTHER, f"limit price {new_price!r} must be a positive number of ticks")
        if problem is not None:
            self.cancel_reject(account, cl_ord_id, orig, order, RESPONSE_TO_REPLACE, problem[0], problem[1])
            return False
        acct = self.accounts[account]
        acct.orders[cl_ord_id] = order
        book = self.books[order.symbol]
        self._request = (order, cl_ord_id, orig, new_qty)
        try:
            status = book.replace(order.order_id, 0, new_qty - order.cum_qty, new_price)
            self._process(order.symbol, book)
        finally:
            self._request = None
        if status != mb.MATCH_OK:
            self.cancel_reject(account, cl_ord_id, orig, order, RESPONSE_TO_REPLACE, CXL_REJ_TOO_LATE,
                                "too late: the order is no longer open")
            return False
        self._book_updated(order.symbol)
        return True

    def mass_cancel(self, account: str, cl_ord_id: str, request_type: str = MASS_CANCEL_ALL,
                    symbol: str | None = None) -> MassCancelReport:
        """Cancel every open order of the account (type 7) or of one symbol (type 1).
        The MassCancelReport comes first, then one Canceled report per order."""
        acct = self.add_account(account)
        self._next_report_id += 1
        ts = self.clock_ns()
        if request_type not in (MASS_CANCEL_ALL, MASS_CANCEL_SYMBOL):
            report = MassCancelReport(account, cl_ord_id, request_type, MASS_CANCEL_REJECTED, 0, symbol,
                                      MASS_REJ_NOT_SUPPORTED,
                                      f"MassCancelRequestType {request_type!r} not supported (1 or 7)",
                                      self._next_report_id, ts)
            self._emit(report)
            return report
        if request_type == MASS_CANCEL_SYMBOL and (not symbol or symbol not in self.instruments):
            report = MassCancelReport(account, cl_ord_id, request_type, MASS_CANCEL_REJECTED, 0, symbol,
                                      MASS_REJ_UNKNOWN_SECURITY, f"unknown symbol {symbol!r}",
                                      self._next_report_id, ts)
            self._emit(report)
            return report
        targets = [o for o in acct.live.values()
                   if request_type == MASS_CANCEL_ALL or o.symbol == symbol]
        report = MassCancelReport(account, cl_ord_id, request_type, request_type, len(targets),
                                  symbol if request_type == MASS_CANCEL_SYMBOL else None, None, None,
                                  self._next_report_id, ts)
        self._emit(report)
        self._cancel_orders(targets, "mass cancel")
        return report

    def cancel_all(self, account: str, text: str = "canceled on disconnect") -> int:
        """Cancel every open order of `account` (cancel-on-disconnect); returns how many."""
        acct = self.accounts.get(account)
        if acct is None:
            return 0
        targets = list(acct.live.values())
        self._cancel_orders(targets, text)
        if targets:
            log.info("exchange: %s: %d open orders canceled (%s)", account, len(targets), text)
        return len(targets)

    def _cancel_orders(self, orders: list[Order], text: str) -> None:
        touched = set()
        for order in orders:
            book = self.books[order.symbol]
            if book.cancel(order.order_id) == mb.MATCH_OK:
                book.drain_events()   # the CANCELED event: reported below with our text
            self._close(order, text, self.clock_ns())
            touched.add(order.symbol)
        for symbol in sorted(touched):
            self._book_updated(symbol)

    def order_status(self, account: str, cl_ord_id: str | None = None, order_id: int | None = None,
                     status_req_id: str | None = None, symbol: str = "", side: int = -1) -> ExecReport:
        """An ExecReport with ExecType I (order status) for a known order, else one with
        OrdStatus Rejected and Text "unknown order"."""
        self.add_account(account)
        order = self.find_order(account, cl_ord_id, order_id)
        if order is None:
            report = ExecReport(account, symbol, 0, cl_ord_id or "NONE", self._exec_id(), EXEC_ORDER_STATUS,
                                STATUS_REJECTED, side, ORDTYPE_LIMIT, TIF_DAY, 0, None, 0, 0, 0,
                                text=f"unknown order {cl_ord_id or order_id!r}", ts_ns=self.clock_ns(),
                                status_req_id=status_req_id)
        else:
            report = self._report(order, EXEC_ORDER_STATUS)
            report.status_req_id = status_req_id
        self._emit(report)
        return report

    # ------------------------------------------------------- market data
    def replay_tick(self, n: int) -> int:
        """Apply up to `n` market-data operations per symbol that is not halted; returns
        how many were applied in total."""
        total = 0
        if n <= 0:
            return 0
        for symbol, source in self.sources.items():
            if symbol in self.faults.halted:
                continue
            ops = source.next_ops(n)
            if not len(ops):
                continue
            book = self.books[symbol]
            book.emit_order_events = False
            try:
                book.apply_ops(ops)
            finally:
                book.emit_order_events = True
            total += len(ops)
            self._process(symbol, book)
            self._book_updated(symbol)
        self.replay_events += total
        return total

    def warm_up(self, n: int) -> int:
        """Apply `n` operations per symbol at once (a book to trade against at start)."""
        done = 0
        while done < n:
            step = min(10_000, n - done)
            if self.replay_tick(step) == 0:
                break
            done += step
        return done

    # ---------------------------------------------------------- statements
    def statement_rows(self) -> list[list[str]]:
        now = _utc(self.clock_ns())
        rows: list[list[str]] = []
        fills = sorted((f for a in self.accounts.values() for f in a.fills), key=lambda f: (f.ts_ns, f.exec_id))
        for f in fills:
            inst = self.instruments[f.symbol]
            rows.append(["FILL", f.account, f.symbol, _utc(f.ts_ns), str(f.exec_id), str(f.order_id), f.cl_ord_id,
                         "BUY" if f.side == SIDE_BUY else "SELL", str(f.qty), inst.price_text(f.price),
                         f.liquidity, "", "", ""])
        for name in sorted(self.accounts):
            acct = self.accounts[name]
            for symbol in sorted(self.instruments):
                inst = self.instruments[symbol]
                rows.append(["POSITION", name, symbol, now, "", "", "", "", str(acct.position.get(symbol, 0)), "",
                             "", str(acct.bought.get(symbol, 0)), str(acct.sold.get(symbol, 0)),
                             inst.price_text(acct.cash.get(symbol, 0))])
        return rows

    STATEMENT_COLUMNS = ("record", "account", "symbol", "time_utc", "exec_id", "order_id", "cl_ord_id", "side",
                         "qty", "price", "liquidity", "bought", "sold", "net_cash")

    def statement_csv(self) -> str:
        return rows_to_csv(self.statement_rows())

    def write_statement(self, path: str) -> None:
        """Write the statement atomically (a temporary file renamed over `path`)."""
        write_csv_atomic(path, self.statement_csv())


def rows_to_csv(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(Exchange.STATEMENT_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".statement-", suffix=".csv", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
