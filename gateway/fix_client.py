"""The engine's FIX 4.4 order-entry client: orders out, typed events in.

`FixOrderClient` runs a `FixSession` (initiator) over a `FixInitiator` (reconnects
with backoff; sequence numbers persist in the session's store, so a reconnect or a
restart with an `SqliteStore` resumes where it stopped and gaps are resolved by
ResendRequest / gap fill). It sends:

  new_order(symbol, side, qty, price=None, tif=TIF_DAY, cl_ord_id=None) -> cl_ord_id   (D,
            through the compiled typed encoder)
  cancel(orig_cl_ord_id, cl_ord_id=None) -> cl_ord_id                                  (F)
  replace(orig_cl_ord_id, qty=None, price=None, cl_ord_id=None) -> cl_ord_id          (G)
  mass_cancel(symbol=None, cl_ord_id=None) -> cl_ord_id                               (q)
  order_status(cl_ord_id) -> None                                                     (H)

Prices are int64 ticks of the symbol (`instruments`, tick size 0.01 unless given);
quantities lots. Sending while the session is not logged on raises
`gateway.errors.NotLoggedOn` (an order is never queued behind the caller's back).

Inbound ExecutionReports (8), OrderCancelRejects (9) and OrderMassCancelReports (r)
become the small frozen event objects below, delivered to `on_event` (called on the
event loop thread) or, without a callback, put on the `events` asyncio.Queue. Logon and
logout are delivered as `SessionStatus`. A report whose ExecID was already delivered
(a duplicate resend) is not delivered again.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from core_ext.matching import NO_PRICE, ORDTYPE_LIMIT, ORDTYPE_MARKET, SIDE_BUY, SIDE_SELL, TIF_DAY
from core_ext.records import untrack_acyclic

from gateway.errors import GatewayError, NotLoggedOn
from gateway.fix_session import BusinessReject, FixSession, SessionConfig
from gateway.fix_store import MemoryStore
from gateway.fix_transport import FixInitiator
from gateway.instruments import Instrument, PriceError

log = logging.getLogger("gateway.fix_client")

__all__ = ["FixOrderClient", "ExecutionReportEvent", "OrderCancelRejectEvent", "MassCancelReportEvent",
           "SessionStatus", "ClientError", "NotLoggedOn"]

SIDE_TO_FIX = {SIDE_BUY: "1", SIDE_SELL: "2"}
SIDE_FROM_FIX = {b"1": SIDE_BUY, b"2": SIDE_SELL}
TIF_FROM_FIX = {b"0": 0, b"1": 1, b"3": 2, b"4": 3}
ORDTYPE_FROM_FIX = {b"1": ORDTYPE_MARKET, b"2": ORDTYPE_LIMIT}


class ClientError(GatewayError, ValueError):
    """A request the client refuses before sending (unknown order, bad argument)."""


@dataclass(frozen=True, slots=True)
class ExecutionReportEvent:
    """One ExecutionReport. Prices in ticks (None when absent or not a whole number of
    ticks); avg_px as the exact decimal from the wire."""

    cl_ord_id: str
    orig_cl_ord_id: str | None
    order_id: str
    exec_id: str
    exec_type: str             # 150: 0 new, F trade, 4 canceled, 5 replaced, 8 rejected, I status
    ord_status: str            # 39: 0 new, 1 partial, 2 filled, 4 canceled, 8 rejected
    symbol: str
    side: int                  # SIDE_BUY / SIDE_SELL, -1 if unknown
    order_qty: int | None
    price: int | None          # ticks
    last_qty: int
    last_px: int | None        # ticks
    cum_qty: int
    leaves_qty: int
    avg_px: Decimal
    text: str | None
    ord_rej_reason: int | None
    transact_time: str | None  # 60, as sent
    poss_dup: bool             # delivered by a resend
    recv_ns: int               # time.monotonic_ns() when parsed


@dataclass(frozen=True, slots=True)
class OrderCancelRejectEvent:
    cl_ord_id: str
    orig_cl_ord_id: str
    order_id: str
    ord_status: str
    response_to: str           # 434: 1 cancel, 2 replace
    reason: int | None         # 102
    text: str | None
    poss_dup: bool
    recv_ns: int


@dataclass(frozen=True, slots=True)
class MassCancelReportEvent:
    cl_ord_id: str
    request_type: str          # 530
    response: str              # 531: 0 rejected, else the request type
    affected: int              # 533
    reject_reason: int | None  # 532
    text: str | None
    poss_dup: bool
    recv_ns: int


@dataclass(frozen=True, slots=True)
class SessionStatus:
    logged_on: bool
    reason: str
    recv_ns: int


Event = ExecutionReportEvent | OrderCancelRejectEvent | MassCancelReportEvent | SessionStatus


@dataclass(slots=True)
class _Sent:
    symbol: str
    side: int
    qty: int
    price: int | None
    ord_type: int
    tif: int

    def __post_init__(self) -> None:
        untrack_acyclic(self)      # one per order, kept: never scanned by the cyclic GC


def _s(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _int(value: bytes | None, default: int | None = 0) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        try:
            d = Decimal(value.decode("latin-1"))
        except InvalidOperation:
            return default
        return int(d) if d == d.to_integral_value() else default


class FixOrderClient:
    """Order entry over one FIX 4.4 initiator session."""

    def __init__(self, host: str, port: int, sender_comp_id: str, target_comp_id: str,
                 instruments: Iterable[Instrument | str] = (), on_event: Callable[[Event], None] | None = None,
                 store: MemoryStore | None = None, heartbeat_interval: int = 30,
                 reset_seq_num: bool = False, username: str | None = None, password: str | None = None,
                 account: str | None = None, cl_ord_id_prefix: str | None = None,
                 backoff_initial_s: float = 0.25, backoff_max_s: float = 10.0, validate: bool = True) -> None:
        self.config = SessionConfig(sender_comp_id=sender_comp_id, target_comp_id=target_comp_id,
                                    heartbeat_interval=heartbeat_interval, reset_seq_num_flag=reset_seq_num,
                                    username=username, password=password, validate=validate)
        self.session = FixSession(self.config, store=store, application=self, initiator=True)
        self.initiator = FixInitiator(self.session, host, port, backoff_initial_s, backoff_max_s)
        self.instruments: dict[str, Instrument] = {}
        for inst in instruments:
            if isinstance(inst, str):
                inst = Instrument(inst)
            self.instruments[inst.symbol] = inst
        self.on_event = on_event
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.account = account
        self._prefix = cl_ord_id_prefix if cl_ord_id_prefix is not None else f"{int(time.time() * 1000):x}-"
        self._ids = itertools.count(1)
        self._sent: dict[str, _Sent] = {}
        self._rtt_waiting: dict[bytes, asyncio.Future] = {}   # TestReqID -> heartbeat_roundtrip's future
        self._rtt_seq = 0
        self._seen_exec_ids: set[bytes] = set()
        self._encoder = self.session.encoder
        self.duplicates_dropped = 0

    # ---------------------------------------------------------------- lifecycle
    async def start(self, wait_logged_on: float | None = 5.0) -> None:
        await self.initiator.start()
        if wait_logged_on:
            await self.initiator.wait_logged_on(wait_logged_on)

    async def stop(self) -> None:
        await self.initiator.stop()

    @property
    def logged_on(self) -> bool:
        return self.session.logged_on

    async def wait_logged_on(self, timeout: float = 5.0) -> None:
        await self.initiator.wait_logged_on(timeout)

    def instrument(self, symbol: str) -> Instrument:
        inst = self.instruments.get(symbol)
        if inst is None:
            inst = self.instruments[symbol] = Instrument(symbol)
        return inst

    def next_cl_ord_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def _check_logged_on(self) -> None:
        if not self.session.logged_on:
            raise NotLoggedOn(f"FIX session {self.config.sender_comp_id}->{self.config.target_comp_id} "
                              "is not logged on")

    def _now_ns(self) -> int:
        return int(self.session.clock() * 1e9)

    # ----------------------------------------------------------------- requests
    def new_order(self, symbol: str, side: int, qty: int, price: int | None = None, tif: int = TIF_DAY,
                  cl_ord_id: str | None = None, ord_type: int | None = None) -> str:
        """Send a NewOrderSingle; a market order when price is None (unless ord_type says
        otherwise). Returns the ClOrdID."""
        self._check_logged_on()
        if side not in (SIDE_BUY, SIDE_SELL):
            raise ClientError(f"side {side!r}: SIDE_BUY (0) or SIDE_SELL (1)")
        if ord_type is None:
            ord_type = ORDTYPE_MARKET if price is None else ORDTYPE_LIMIT
        inst = self.instrument(symbol)
        cl = cl_ord_id or self.next_cl_ord_id()
        session = self.session
        now = self._now_ns()
        data = self._encoder.new_order_single(
            session.next_sender_seq, cl, symbol, side, qty, NO_PRICE if price is None else price,
            inst.decimals, ord_type, tif, self.account, now, now, inst.mult)
        session.commit_encoded(b"D", data)
        self._sent[cl] = _Sent(symbol, side, qty, price, ord_type, tif)
        return cl

    def record_sent(self, cl_ord_id: str, symbol: str, side: int, qty: int, price: int | None,
                    tif: int = TIF_DAY) -> None:
        """A NewOrderSingle this session sent that was encoded elsewhere (the compiled
        tick-to-trade path): remembered like new_order's, for its cancel and replace."""
        self._sent[cl_ord_id] = _Sent(symbol, side, qty, price,
                                      ORDTYPE_MARKET if price is None else ORDTYPE_LIMIT, tif)

    def _original(self, orig_cl_ord_id: str, symbol: str | None = None, side: int | None = None,
                  qty: int | None = None) -> _Sent:
        sent = self._sent.get(orig_cl_ord_id)
        if sent is not None:
            return sent
        if symbol is None or side is None:
            raise ClientError(f"unknown ClOrdID {orig_cl_ord_id!r}: not sent by this client; give symbol and side "
                              "(e.g. for an order from before a restart)")
        if side not in (SIDE_BUY, SIDE_SELL):
            raise ClientError(f"side {side!r}: SIDE_BUY (0) or SIDE_SELL (1)")
        return _Sent(symbol, side, qty if qty is not None else -1, None, ORDTYPE_LIMIT, TIF_DAY)

    def cancel(self, orig_cl_ord_id: str, cl_ord_id: str | None = None, order_id: str | None = None,
               symbol: str | None = None, side: int | None = None) -> str:
        """Send an OrderCancelRequest for the order last known as `orig_cl_ord_id`
        (symbol and side are needed only for an order this client did not send)."""
        self._check_logged_on()
        sent = self._original(orig_cl_ord_id, symbol, side)
        cl = cl_ord_id or self.next_cl_ord_id()
        data = self._encoder.order_cancel_request(
            self.session.next_sender_seq, cl, orig_cl_ord_id, sent.symbol, sent.side, sent.qty,
            order_id=order_id, sending_time_ns=self._now_ns())
        self.session.commit_encoded(b"F", data)
        self._sent[cl] = sent
        return cl

    def replace(self, orig_cl_ord_id: str, qty: int | None = None, price: int | None = None,
                cl_ord_id: str | None = None, order_id: str | None = None) -> str:
        """Send an OrderCancelReplaceRequest: new total qty and/or limit price (ticks)."""
        self._check_logged_on()
        sent = self._original(orig_cl_ord_id)
        if sent.ord_type != ORDTYPE_LIMIT:
            raise ClientError("only limit orders can be replaced")
        new = _Sent(sent.symbol, sent.side, sent.qty if qty is None else qty,
                    sent.price if price is None else price, ORDTYPE_LIMIT, sent.tif)
        inst = self.instrument(sent.symbol)
        cl = cl_ord_id or self.next_cl_ord_id()
        now = self._now_ns()
        data = self._encoder.order_cancel_replace_request(
            self.session.next_sender_seq, cl, orig_cl_ord_id, sent.symbol, sent.side, new.qty, new.price,
            inst.decimals, ORDTYPE_LIMIT, sent.tif, order_id=order_id, account=self.account,
            transact_time_ns=now, sending_time_ns=now, price_mult=inst.mult)
        self.session.commit_encoded(b"G", data)
        self._sent[cl] = new
        return cl

    def mass_cancel(self, symbol: str | None = None, cl_ord_id: str | None = None) -> str:
        """Send an OrderMassCancelRequest: all open orders, or those of one symbol."""
        self._check_logged_on()
        cl = cl_ord_id or self.next_cl_ord_id()
        data = self._encoder.order_mass_cancel_request(
            self.session.next_sender_seq, cl, "1" if symbol else "7", symbol=symbol,
            sending_time_ns=self._now_ns())
        self.session.commit_encoded(b"q", data)
        return cl

    def order_status(self, cl_ord_id: str, order_id: str | None = None, symbol: str | None = None,
                     side: int | None = None) -> None:
        """Send an OrderStatusRequest; the answer is an ExecutionReport with exec_type I
        (symbol and side are needed only for an order this client did not send)."""
        self._check_logged_on()
        sent = self._original(cl_ord_id, symbol, side)
        data = self._encoder.order_status_request(
            self.session.next_sender_seq, cl_ord_id, sent.symbol, sent.side, order_id=order_id,
            sending_time_ns=self._now_ns())
        self.session.commit_encoded(b"H", data)

    async def heartbeat_roundtrip(self, timeout_s: float = 2.0) -> float | None:
        """Send a TestRequest and time the Heartbeat that answers it (seconds), or None
        when no answer came within `timeout_s` or the session is not logged on."""
        if not self.session.logged_on:
            return None
        loop = asyncio.get_running_loop()
        self._rtt_seq += 1
        test_req_id = f"RTT{time.monotonic_ns()}-{self._rtt_seq}".encode()
        answered: asyncio.Future = loop.create_future()
        # one hook answers every outstanding request by its TestReqID: the monitoring's
        # periodic round trip and a pre-flight check may overlap
        self._rtt_waiting[test_req_id] = answered
        self.session.on_heartbeat = self._on_heartbeat
        try:
            started = time.perf_counter()
            self.session.send_test_request(test_req_id.decode())
            try:
                return await asyncio.wait_for(answered, timeout_s) - started
            except TimeoutError:
                return None
        finally:
            self._rtt_waiting.pop(test_req_id, None)

    def _on_heartbeat(self, test_req_id: bytes) -> None:
        waiter = self._rtt_waiting.get(test_req_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    # ------------------------------------------------------- session application
    def on_logon(self, session: FixSession) -> None:
        self.initiator.notify_logged_on()
        self._deliver(SessionStatus(True, "logon", time.monotonic_ns()))

    def on_logout(self, session: FixSession) -> None:
        self._deliver(SessionStatus(False, session.last_disconnect_reason, time.monotonic_ns()))

    def on_app_message(self, session: FixSession, msg) -> None:
        msg_type = msg.msg_type
        if msg_type == b"8":
            event = self._exec_report(msg)
        elif msg_type == b"9":
            event = OrderCancelRejectEvent(
                _s(msg.get(11)) or "", _s(msg.get(41)) or "", _s(msg.get(37)) or "", _s(msg.get(39)) or "",
                _s(msg.get(434)) or "", _int(msg.get(102), None), _s(msg.get(58)), msg.get(43) == b"Y",
                time.monotonic_ns())
        elif msg_type == b"r":
            event = MassCancelReportEvent(
                _s(msg.get(11)) or "", _s(msg.get(530)) or "", _s(msg.get(531)) or "",
                _int(msg.get(533)) or 0, _int(msg.get(532), None), _s(msg.get(58)), msg.get(43) == b"Y",
                time.monotonic_ns())
        else:
            raise BusinessReject(3, "Unsupported Message Type")
        if event is not None:
            self._deliver(event)

    def _ticks(self, symbol: str, raw: bytes | None) -> int | None:
        if raw is None:
            return None
        try:
            return self.instrument(symbol).ticks(raw)
        except (PriceError, ValueError):
            return None

    def _exec_report(self, msg) -> ExecutionReportEvent | None:
        exec_id = msg.get(17) or b""
        if exec_id in self._seen_exec_ids:
            self.duplicates_dropped += 1
            return None
        self._seen_exec_ids.add(exec_id)
        symbol = _s(msg.get(55)) or ""
        avg_raw = msg.get(6)
        try:
            avg = Decimal(avg_raw.decode("latin-1")) if avg_raw else Decimal(0)
        except InvalidOperation:
            avg = Decimal(0)
        last_qty = _int(msg.get(32)) or 0
        return ExecutionReportEvent(
            _s(msg.get(11)) or "", _s(msg.get(41)), _s(msg.get(37)) or "", exec_id.decode("latin-1"),
            _s(msg.get(150)) or "", _s(msg.get(39)) or "", symbol, SIDE_FROM_FIX.get(msg.get(54), -1),
            _int(msg.get(38), None), self._ticks(symbol, msg.get(44)), last_qty,
            self._ticks(symbol, msg.get(31)) if last_qty else None, _int(msg.get(14)) or 0,
            _int(msg.get(151)) or 0, avg, _s(msg.get(58)), _int(msg.get(103), None), _s(msg.get(60)),
            msg.get(43) == b"Y", time.monotonic_ns())

    def _deliver(self, event: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("FIX client: on_event callback failed for %r", event)
        else:
            self.events.put_nowait(event)
