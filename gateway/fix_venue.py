"""FIX 4.4 order entry in front of the exchange core: the acceptor's `venue` application.

One `FixOrderEntry` per session; each session (counterparty CompID) is its own account
of the `gateway.exchange.Exchange`. Inbound:

  D  NewOrderSingle            -> ExecutionReport New, then Trade (partial/fill), Canceled
                                  (IOC/FOK/market remainder), or Rejected
  F  OrderCancelRequest        -> ExecutionReport Canceled, or OrderCancelReject (9)
  G  OrderCancelReplaceRequest -> ExecutionReport Replaced (then Trade if it crosses), or 9
  q  OrderMassCancelRequest    -> OrderMassCancelReport (r), then one Canceled per order
  H  OrderStatusRequest        -> ExecutionReport with ExecType I (order status)
  any other application type   -> BusinessMessageReject 380=3

Wire prices are decimals; inside they are int64 ticks of the symbol's tick size (see
gateway.instruments); a price that is not a whole number of ticks, an unknown symbol,
a quantity that is not a positive whole number, an unsupported OrdType/TimeInForce/Side
-> ExecutionReport Rejected (150=8, 39=8) with a Text (58) naming what was wrong.

ExecutionReports carry LeavesQty/CumQty/AvgPx and a unique ExecID; the common ones go
through the compiled typed encoder (`FixEncoder.execution_report`) and
`FixSession.commit_encoded`. AvgPx is exact: when it is not a whole number of ticks,
the report's prices get four more decimal places.

Reports are never lost: one produced while the session is not logged on (a passive
fill, cancel-on-disconnect, a delayed ack that comes due after a drop) is stored under
the next MsgSeqNum and reaches the counterparty by ResendRequest after its next Logon.
A resent (PossDupFlag=Y) or PossResend=Y order whose ClOrdID the account already used
is ignored (it was processed the first time).

Faults (gateway.exchange.Faults) consulted here: ack_delay_ms (every report waits that
long, order kept), drop_after_orders and drop_connections() (the TCP connection is
aborted without Logout, like a network failure).

Cancel-on-disconnect (`cancel_on_disconnect`): "off"; "disconnect" = when the session
ends without a Logout exchange; "always" = also after a Logout. After `cod_window_s`
(0 = at once) unless the account logs on again first, every open order of the account
is canceled and the Canceled reports are queued into the session's outbound store.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core_ext.matching import NO_PRICE

from core_ext.fix import format_utc_timestamp
from gateway import exchange as ex
from gateway.fix_session import BusinessReject, FixSession, SessionConfig, encode_body
from gateway.fix_store import MemoryStore
from gateway.fix_transport import FixAcceptor
from gateway.instruments import PriceError, scaled_to_text

log = logging.getLogger("gateway.fix_venue")

BUSINESS_REJECT_UNSUPPORTED_MESSAGE_TYPE = 3
BUSINESS_REJECT_CONDITIONALLY_REQUIRED_FIELD_MISSING = 5
COD_MODES = ("off", "disconnect", "always")
AVG_PX_EXTRA_DECIMALS = 4

SIDE_FROM_FIX = {b"1": ex.SIDE_BUY, b"2": ex.SIDE_SELL}
ORDTYPE_FROM_FIX = {b"1": ex.ORDTYPE_MARKET, b"2": ex.ORDTYPE_LIMIT}
TIF_FROM_FIX = {None: ex.TIF_DAY, b"0": ex.TIF_DAY, b"1": ex.TIF_GTC, b"3": ex.TIF_IOC, b"4": ex.TIF_FOK}
SIDE_TO_FIX = {ex.SIDE_BUY: b"1", ex.SIDE_SELL: b"2"}
ORDTYPE_TO_FIX = {ex.ORDTYPE_MARKET: b"1", ex.ORDTYPE_LIMIT: b"2"}
TIF_TO_FIX = {ex.TIF_DAY: b"0", ex.TIF_GTC: b"1", ex.TIF_IOC: b"3", ex.TIF_FOK: b"4"}
TYPED_EXEC_TYPES = frozenset((ex.EXEC_NEW, ex.EXEC_TRADE, ex.EXEC_CANCELED, ex.EXEC_REPLACED))


def _text(value: bytes | None) -> str:
    return value.decode("latin-1") if value is not None else ""


def parse_qty(raw: bytes | None) -> int | None:
    """A FIX Qty as a whole number of lots ("100", "100.0"), else None."""
    if raw is None:
        return None
    int_part, dot, frac = raw.partition(b".")
    if not int_part.isdigit() or (dot and frac.strip(b"0") != b"") or (dot and frac and not frac.isdigit()) \
            or len(int_part) > 15:
        return None
    return int(int_part)


def parse_order_id(raw: bytes | None) -> int | None:
    if raw is None or not raw.isdigit() or len(raw) > 20:
        return None
    return int(raw)


class FixOrderEntry:
    """The FIX application of one session (one account) of the venue."""

    def __init__(self, exchange: ex.Exchange, account: str, cancel_on_disconnect: str = "off",
                 cod_window_s: float = 0.0) -> None:
        if cancel_on_disconnect not in COD_MODES:
            raise ValueError(f"cancel_on_disconnect {cancel_on_disconnect!r}: choose one of {', '.join(COD_MODES)}")
        if cod_window_s < 0:
            raise ValueError(f"cod_window_s {cod_window_s}: must be >= 0")
        self.exchange = exchange
        self.faults = exchange.faults
        self.account = account
        self.cancel_on_disconnect = cancel_on_disconnect
        self.cod_window_s = cod_window_s
        self.session: FixSession | None = None
        self._outbox: deque[tuple[float, ex.Report]] = deque()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._cod_handle: asyncio.TimerHandle | None = None
        self.reports_sent = 0
        self.reports_queued_offline = 0
        self.requests = 0
        exchange.set_report_sink(account, self.deliver)
        self.faults.add_drop_hook(self._drop_hook)

    def bind(self, session: FixSession) -> None:
        self.session = session

    # ------------------------------------------------------------ session events
    def on_logon(self, session: FixSession) -> None:
        self.session = session
        if self._cod_handle is not None:
            self._cod_handle.cancel()
            self._cod_handle = None

    def on_logout(self, session: FixSession) -> None:
        reason = session.last_disconnect_reason
        if self.cancel_on_disconnect == "off" or reason == "acceptor stopping":
            return
        if self.cancel_on_disconnect == "disconnect" and reason == "logout":
            return
        if self.cod_window_s > 0:
            loop = asyncio.get_running_loop()
            self._cod_handle = loop.call_later(self.cod_window_s, self._cancel_on_disconnect, reason)
        else:
            self._cancel_on_disconnect(reason)

    def _cancel_on_disconnect(self, reason: str) -> None:
        self._cod_handle = None
        if self.session is not None and self.session.logged_on:
            return
        n = self.exchange.cancel_all(self.account, "canceled on disconnect")
        log.info("venue: %s: cancel-on-disconnect (%s): %d orders canceled", self.account, reason, n)

    def _drop_hook(self, account: str | None) -> int:
        if account is not None and account != self.account:
            return 0
        return self.drop("fault injection: drop connection")

    def drop(self, reason: str) -> int:
        """Abort the TCP connection without Logout (a network failure); 1 if there was one."""
        session = self.session
        if session is None or session.transport is None:
            return 0
        transport = session.transport
        log.warning("venue: %s: dropping the connection (%s)", self.account, reason)
        session.detach(reason)
        abort = getattr(transport, "abort", None)
        if abort is not None:
            abort()
        else:
            transport.close()
        return 1

    # ------------------------------------------------------------------ inbound
    def on_app_message(self, session: FixSession, msg) -> None:
        self.session = session
        msg_type = msg.msg_type
        if msg_type == b"D":
            self._new_order(msg)
        elif msg_type == b"F":
            self._cancel(msg)
        elif msg_type == b"G":
            self._replace(msg)
        elif msg_type == b"q":
            self._mass_cancel(msg)
        elif msg_type == b"H":
            self._status(msg)
        else:
            raise BusinessReject(BUSINESS_REJECT_UNSUPPORTED_MESSAGE_TYPE, "Unsupported Message Type")
        self.requests += 1
        if self.faults.order_received():
            self.drop("fault injection: drop_after_orders reached")

    def _required(self, msg, tag: int, name: str) -> bytes:
        value = msg.get(tag)
        if not value:
            raise BusinessReject(BUSINESS_REJECT_CONDITIONALLY_REQUIRED_FIELD_MISSING,
                                 f"Required tag missing: {name} ({tag})", tag)
        return value

    @staticmethod
    def _resent(msg) -> bool:
        return msg.get(43) == b"Y" or msg.get(97) == b"Y"

    def _new_order(self, msg) -> None:
        xc = self.exchange
        cl_ord_id = _text(self._required(msg, 11, "ClOrdID"))
        if self._resent(msg) and xc.knows(self.account, cl_ord_id):
            log.info("venue: %s: resent order %s already processed; ignored", self.account, cl_ord_id)
            return
        symbol = _text(msg.get(55))
        side_raw = msg.get(54)
        side = SIDE_FROM_FIX.get(side_raw, -1)
        qty_raw = msg.get(38)
        qty = parse_qty(qty_raw)
        type_raw = msg.get(40)
        ord_type = ORDTYPE_FROM_FIX.get(type_raw, -1)
        tif_raw = msg.get(59)
        tif = TIF_FROM_FIX.get(tif_raw, -1)
        inst = xc.instrument(symbol)
        price = None
        problem = None
        reason = ex.ORD_REJ_OTHER
        if not symbol:
            problem = "Symbol (55) missing"
        elif inst is None:
            problem, reason = f"unknown symbol {symbol!r}", ex.ORD_REJ_UNKNOWN_SYMBOL
        elif side < 0:
            problem = f"Side (54) {_text(side_raw)!r} not supported: 1 buy, 2 sell"
        elif ord_type < 0:
            problem = f"OrdType (40) {_text(type_raw)!r} not supported: 1 market, 2 limit"
        elif tif < 0:
            problem = f"TimeInForce (59) {_text(tif_raw)!r} not supported: 0 day, 1 GTC, 3 IOC, 4 FOK"
        elif qty is None or qty <= 0:
            problem = f"OrderQty (38) {_text(qty_raw)!r} must be a positive whole number of lots"
        elif ord_type == ex.ORDTYPE_LIMIT:
            px_raw = msg.get(44)
            if not px_raw:
                problem = "Price (44) missing on a limit order"
            else:
                try:
                    price = inst.ticks(px_raw)
                except PriceError as exc:
                    problem = str(exc)
                else:
                    if price <= 0:
                        problem = f"Price (44) {_text(px_raw)} must be positive"
        if problem is not None:
            xc.reject_order(self.account, cl_ord_id, symbol, side, qty or 0, price, problem, reason,
                            max(ord_type, 0), max(tif, 0), raw_side=_text(side_raw) or None)
            return
        xc.new_order(self.account, cl_ord_id, symbol, side, qty, price, ord_type, tif)

    def _cancel(self, msg) -> None:
        xc = self.exchange
        cl_ord_id = _text(self._required(msg, 11, "ClOrdID"))
        if self._resent(msg) and xc.knows(self.account, cl_ord_id):
            return
        orig = _text(msg.get(41)) or None
        order_id = parse_order_id(msg.get(37))
        xc.cancel_order(self.account, cl_ord_id, orig, order_id)

    def _replace(self, msg) -> None:
        xc = self.exchange
        cl_ord_id = _text(self._required(msg, 11, "ClOrdID"))
        if self._resent(msg) and xc.knows(self.account, cl_ord_id):
            return
        orig = _text(msg.get(41)) or None
        order_id = parse_order_id(msg.get(37))
        order = xc.find_order(self.account, orig, order_id)
        if order is None:
            xc.replace_order(self.account, cl_ord_id, orig, order_id)   # -> unknown order reject
            return
        problem = None
        qty_raw = msg.get(38)
        qty = parse_qty(qty_raw) if qty_raw is not None else None
        if qty_raw is not None and (qty is None or qty <= 0):
            problem = f"OrderQty (38) {_text(qty_raw)!r} must be a positive whole number of lots"
        type_raw = msg.get(40)
        if problem is None and type_raw is not None and type_raw != b"2":
            problem = f"OrdType (40) {_text(type_raw)!r}: only limit orders (2) can be replaced"
        price = None
        px_raw = msg.get(44)
        if problem is None and px_raw is not None:
            inst = xc.instrument(order.symbol)
            try:
                price = inst.ticks(px_raw)
            except PriceError as exc:
                problem = str(exc)
        symbol = _text(msg.get(55))
        if problem is None and symbol and symbol != order.symbol:
            problem = f"Symbol (55) {symbol!r} is not the order's symbol {order.symbol!r}"
        if problem is not None:
            xc.cancel_reject(self.account, cl_ord_id, orig or "NONE", order, ex.RESPONSE_TO_REPLACE,
                             ex.CXL_REJ_OTHER, problem)
            return
        xc.replace_order(self.account, cl_ord_id, orig, order_id, qty, price)

    def _mass_cancel(self, msg) -> None:
        xc = self.exchange
        cl_ord_id = _text(self._required(msg, 11, "ClOrdID"))
        if self._resent(msg) and xc.knows(self.account, cl_ord_id):
            return
        request_type = _text(msg.get(530)) or ex.MASS_CANCEL_ALL
        xc.mass_cancel(self.account, cl_ord_id, request_type, _text(msg.get(55)) or None)

    def _status(self, msg) -> None:
        cl_ord_id = _text(msg.get(11)) or None
        side = SIDE_FROM_FIX.get(msg.get(54), -1)
        self.exchange.order_status(self.account, cl_ord_id, parse_order_id(msg.get(37)),
                                   _text(msg.get(790)) or None, _text(msg.get(55)), side)

    # ----------------------------------------------------------------- outbound
    def deliver(self, report: ex.Report) -> None:
        """The exchange's sink for this account: send now, or after the ack delay."""
        delay_ms = self.faults.ack_delay_ms
        if delay_ms <= 0 and not self._outbox:
            self._send(report)
            return
        loop = asyncio.get_running_loop()
        self._outbox.append((loop.time() + delay_ms / 1000.0, report))
        if self._flush_handle is None:
            self._flush_handle = loop.call_at(self._outbox[0][0], self._flush)

    def flush_all(self) -> None:
        """Send (or store, when offline) every delayed report now (shutdown)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush(everything=True)

    def _flush(self, everything: bool = False) -> None:
        self._flush_handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._outbox and (everything or self._outbox[0][0] <= now + 0.0005):
            _, report = self._outbox.popleft()
            try:
                self._send(report)
            except Exception:
                log.exception("venue: %s: could not send %r", self.account, report)
        if self._outbox:
            self._flush_handle = loop.call_at(self._outbox[0][0], self._flush)

    def _send(self, report: ex.Report) -> None:
        session = self.session
        if session is None:
            log.warning("venue: %s: no session; report dropped: %r", self.account, report)
            return
        if not session.logged_on:
            self.reports_queued_offline += 1
        self.reports_sent += 1
        if type(report) is ex.ExecReport:
            if (report.exec_type in TYPED_EXEC_TYPES and report.order_id and report.side >= 0
                    and report.status_req_id is None):
                self._send_exec_typed(session, report)
            else:
                session.send_app(b"8", encode_body(self._exec_fields(report)), offline_ok=True)
        elif type(report) is ex.CancelReject:
            self._send_cancel_reject(session, report)
        else:
            session.send_app(b"r", encode_body(self._mass_cancel_fields(report)), offline_ok=True)

    def _price_scale(self, report: ex.ExecReport) -> tuple[int, int, int, int]:
        """(avg_px, scale, decimals, mult): prices are written as ticks * scale."""
        inst = self.exchange.instruments[report.symbol]
        if not report.cum_qty:
            return 0, 1, inst.decimals, inst.mult
        avg, rem = divmod(report.notional, report.cum_qty)
        if not rem:
            return avg, 1, inst.decimals, inst.mult
        scale = 10 ** AVG_PX_EXTRA_DECIMALS
        return (report.notional * scale + report.cum_qty // 2) // report.cum_qty, scale, \
            inst.decimals + AVG_PX_EXTRA_DECIMALS, inst.mult

    def _send_exec_typed(self, session: FixSession, r: ex.ExecReport) -> None:
        avg, scale, decimals, mult = self._price_scale(r)
        data = session.encoder.execution_report(
            session.next_sender_seq, str(r.order_id), str(r.exec_id), r.exec_type, r.ord_status, r.symbol,
            r.side, r.leaves_qty, r.cum_qty, avg_px=avg, cl_ord_id=r.cl_ord_id, order_qty=r.order_qty,
            price=NO_PRICE if r.price is None else r.price * scale, last_qty=r.last_qty,
            last_px=NO_PRICE if r.last_px is None else r.last_px * scale, decimals=decimals,
            orig_cl_ord_id=r.orig_cl_ord_id, text=r.text, ord_type=r.ord_type, tif=r.tif,
            transact_time_ns=r.ts_ns, sending_time_ns=int(session.clock() * 1e9), price_mult=mult)
        session.commit_encoded(b"8", data, offline_ok=True)

    def _exec_fields(self, r: ex.ExecReport) -> list[tuple[int, bytes | str | int]]:
        inst = self.exchange.instruments.get(r.symbol)
        avg, scale, decimals, mult = self._price_scale(r) if inst is not None else (0, 1, 0, 1)

        def px(ticks: int) -> str:
            return scaled_to_text(ticks * scale * mult, decimals)
        fields: list[tuple[int, bytes | str | int]] = [(6, scaled_to_text(avg * mult, decimals))]
        if r.cl_ord_id:
            fields.append((11, r.cl_ord_id))
        fields.append((14, r.cum_qty))
        fields.append((17, str(r.exec_id)))
        if r.last_qty and r.last_px is not None:
            fields += [(31, px(r.last_px)), (32, r.last_qty)]
        fields.append((37, str(r.order_id) if r.order_id else "NONE"))
        fields.append((38, r.order_qty))
        fields.append((39, r.ord_status))
        fields.append((40, ORDTYPE_TO_FIX.get(r.ord_type, b"2")))
        if r.orig_cl_ord_id:
            fields.append((41, r.orig_cl_ord_id))
        if r.price is not None and inst is not None:
            fields.append((44, px(r.price)))
        side = SIDE_TO_FIX.get(r.side)
        if side is None:
            raw = (r.raw_side or "").encode("latin-1")
            side = raw if len(raw) == 1 and raw.isalnum() else b"1"
        fields.append((54, side))
        if r.symbol:
            fields.append((55, r.symbol))
        if r.text:
            fields.append((58, r.text.replace("\x01", " ")))
        fields.append((59, TIF_TO_FIX.get(r.tif, b"0")))
        fields.append((60, _utc_fix(r.ts_ns)))
        if r.ord_rej_reason is not None:
            fields.append((103, r.ord_rej_reason))
        fields.append((150, r.exec_type))
        fields.append((151, r.leaves_qty))
        if r.status_req_id:
            fields.append((790, r.status_req_id))
        return fields

    def _send_cancel_reject(self, session: FixSession, r: ex.CancelReject) -> None:
        data = session.encoder.order_cancel_reject(
            session.next_sender_seq, str(r.order_id) if r.order_id else "NONE", r.cl_ord_id or "NONE",
            r.orig_cl_ord_id or "NONE", r.ord_status, r.response_to, r.reason, r.text.replace("\x01", " "),
            sending_time_ns=int(session.clock() * 1e9))
        session.commit_encoded(b"9", data, offline_ok=True)

    @staticmethod
    def _mass_cancel_fields(r: ex.MassCancelReport) -> list[tuple[int, bytes | str | int]]:
        fields: list[tuple[int, bytes | str | int]] = [(11, r.cl_ord_id or "NONE"), (37, f"MC{r.report_id}")]
        if r.symbol:
            fields.append((55, r.symbol))
        if r.text:
            fields.append((58, r.text))
        fields.append((530, r.request_type or "7"))
        fields.append((531, r.response))
        if r.reject_reason is not None:
            fields.append((532, r.reject_reason))
        fields.append((533, r.affected))
        return fields


def _utc_fix(ts_ns: int) -> bytes:
    return format_utc_timestamp(ts_ns)


# --------------------------------------------------------------------------- building

@dataclass(frozen=True)
class FixVenueConfig:
    """The FIX side of the venue: our CompID, the accounts' CompIDs, session policy."""

    sender_comp_id: str = "VENUE"
    accounts: tuple[str, ...] = ("ENGINE",)
    validate: bool = True
    reset_on_logon: bool = False
    heartbeat_interval: int = 30
    username: str | None = None          # None with a password: each account's CompID
    password: str | None = None          # never logged (SessionConfig hides it)
    cancel_on_disconnect: str = "off"
    cod_window_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("give at least one counterparty CompID (account)")
        if len(set(self.accounts)) != len(self.accounts):
            raise ValueError(f"counterparty CompIDs given twice: {', '.join(self.accounts)}")
        if self.cancel_on_disconnect not in COD_MODES:
            raise ValueError(f"cancel_on_disconnect {self.cancel_on_disconnect!r}: choose one of "
                             f"{', '.join(COD_MODES)}")

    def __repr__(self) -> str:   # the password never reaches a log line
        return (f"FixVenueConfig({self.sender_comp_id} for {', '.join(self.accounts)}, "
                f"cod={self.cancel_on_disconnect}, password={'set' if self.password else 'none'})")


class FixVenue:
    """A FIX acceptor whose sessions are the exchange's accounts."""

    def __init__(self, exchange: ex.Exchange, config: FixVenueConfig,
                 store_factory: Callable[[str, str], MemoryStore] | None = None) -> None:
        self.exchange = exchange
        self.config = config
        self.apps: dict[str, FixOrderEntry] = {}
        self.sessions: dict[str, FixSession] = {}
        for account in config.accounts:
            username = None
            if config.password:
                username = config.username or account
            scfg = SessionConfig(sender_comp_id=config.sender_comp_id, target_comp_id=account,
                                 reset_on_logon=config.reset_on_logon, validate=config.validate,
                                 heartbeat_interval=config.heartbeat_interval, username=username,
                                 password=config.password)
            store = store_factory(config.sender_comp_id, account) if store_factory else MemoryStore()
            app = FixOrderEntry(exchange, account, config.cancel_on_disconnect, config.cod_window_s)
            session = FixSession(scfg, store=store, application=app)
            app.bind(session)
            self.apps[account] = app
            self.sessions[account] = session
        self.acceptor = FixAcceptor(self.sessions.values())
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.port = await self.acceptor.start(host, port)
        return self.port

    async def stop(self) -> None:
        for app in self.apps.values():
            app.flush_all()      # anything still delayed goes out or into the store
            if app._cod_handle is not None:
                app._cod_handle.cancel()
        await self.acceptor.stop()


def venue_accounts(values: Iterable[str]) -> tuple[str, ...]:
    """`--target-comp-id` values (repeated and/or comma-separated) -> account CompIDs."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return tuple(out)
