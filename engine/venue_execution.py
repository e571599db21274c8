"""Venue execution over FIX: `engine.orders.ExecutionClient` on `gateway.fix_client`.

The order manager speaks integer client order ids and `ExecutionReport`s; the FIX client
speaks wire ClOrdIDs and the gateway's event objects. This adapter is the one place that
translates between them, so the order manager cannot tell a venue from the simulator.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from engine.instruments import Instrument
from engine.orders import (
    ExecKind,
    ExecutionReport,
    Order,
    OrdStatus,
    format_cl_ord_id,
    parse_cl_ord_id,
)
from gateway import fix_client as fc
from gateway.instruments import Instrument as WireInstrument

log = logging.getLogger("engine.venue")

EXEC_TYPE_KIND = {
    "0": ExecKind.NEW, "F": ExecKind.TRADE, "4": ExecKind.CANCELED, "5": ExecKind.REPLACED,
    "8": ExecKind.REJECTED, "C": ExecKind.EXPIRED, "6": ExecKind.PENDING_CANCEL,
    "E": ExecKind.PENDING_REPLACE, "I": ExecKind.ORDER_STATUS,
}
ORD_STATUS = {
    "0": OrdStatus.NEW, "1": OrdStatus.PARTIALLY_FILLED, "2": OrdStatus.FILLED, "4": OrdStatus.CANCELED,
    "5": OrdStatus.REPLACED, "6": OrdStatus.PENDING_CANCEL, "8": OrdStatus.REJECTED, "A": OrdStatus.PENDING_NEW,
    "C": OrdStatus.EXPIRED, "E": OrdStatus.PENDING_REPLACE,
}


def _cl(text: str | None) -> int:
    if not text:
        return 0
    try:
        return parse_cl_ord_id(text)
    except ValueError:
        return 0  # not one of ours (e.g. a venue-initiated report); the manager alerts on it


class FixExecution:
    """ExecutionClient over one FIX order-entry session."""

    supports_mass_cancel = True

    def __init__(self, client: fc.FixOrderClient) -> None:
        self.client = client
        self._handler: Callable[[ExecutionReport], None] | None = None
        self.session_events: list[fc.SessionStatus] = []
        self.unknown_reports = 0
        client.on_event = self._on_event

    @classmethod
    def connect(cls, host: str, port: int, sender_comp_id: str, target_comp_id: str,
                instruments: Iterable[Instrument], **kwargs) -> FixExecution:
        wire = [WireInstrument(i.symbol, i.tick_size) for i in instruments]
        return cls(fc.FixOrderClient(host, port, sender_comp_id, target_comp_id, wire, **kwargs))

    # ------------------------------------------------------------- requests
    def set_report_handler(self, handler: Callable[[ExecutionReport], None]) -> None:
        self._handler = handler

    def send_new(self, order: Order) -> None:
        self.client.new_order(order.symbol, int(order.side), order.qty, order.price, int(order.tif),
                              cl_ord_id=format_cl_ord_id(order.cl_ord_id))

    def record_sent(self, order: Order) -> None:
        """`order` went out through this session without send_new (the compiled path)."""
        self.client.record_sent(format_cl_ord_id(order.cl_ord_id), order.symbol, int(order.side), order.qty,
                                order.price, int(order.tif))

    def send_cancel(self, order: Order, cancel_id: int) -> None:
        # symbol and side let the client cancel an order it did not send (adopted after a restart)
        self.client.cancel(format_cl_ord_id(order.cl_ord_id), cl_ord_id=format_cl_ord_id(cancel_id),
                           order_id=order.venue_order_id or None, symbol=order.symbol, side=int(order.side))

    def send_replace(self, order: Order, replacement: Order) -> None:
        self.client.replace(format_cl_ord_id(order.cl_ord_id), qty=replacement.qty, price=replacement.price,
                            cl_ord_id=format_cl_ord_id(replacement.cl_ord_id),
                            order_id=order.venue_order_id or None)

    def send_mass_cancel(self, symbol: str | None, request_id: int) -> None:
        self.client.mass_cancel(symbol, cl_ord_id=format_cl_ord_id(request_id))

    def send_status_request(self, order: Order) -> None:
        self.client.order_status(format_cl_ord_id(order.cl_ord_id), order_id=order.venue_order_id or None,
                                 symbol=order.symbol, side=int(order.side))

    # --------------------------------------------------------------- events
    def _on_event(self, event) -> None:
        report = self.translate(event)
        if report is None:
            return
        if self._handler is None:
            log.error("execution report before a handler was set: %s", report)
            return
        self._handler(report)

    def translate(self, event) -> ExecutionReport | None:
        if isinstance(event, fc.SessionStatus):
            self.session_events.append(event)
            return None
        if isinstance(event, fc.ExecutionReportEvent):
            kind = EXEC_TYPE_KIND.get(event.exec_type)
            if kind is None:
                self.unknown_reports += 1
                log.warning("ExecutionReport with unknown ExecType %r ignored", event.exec_type)
                return None
            avg = float(event.avg_px) if event.avg_px else None
            return ExecutionReport(
                kind=kind, cl_ord_id=_cl(event.cl_ord_id), exec_id=event.exec_id,
                orig_cl_ord_id=_cl(event.orig_cl_ord_id), venue_order_id=event.order_id, symbol=event.symbol,
                side=event.side if event.side >= 0 else None, last_qty=event.last_qty,
                last_px=event.last_px or 0, cum_qty=event.cum_qty, leaves_qty=event.leaves_qty,
                avg_px=self._avg_ticks(event.symbol, avg), ord_status=ORD_STATUS.get(event.ord_status),
                reason=event.text or "", ts_ns=event.recv_ns)
        if isinstance(event, fc.OrderCancelRejectEvent):
            kind = ExecKind.REPLACE_REJECT if event.response_to == "2" else ExecKind.CANCEL_REJECT
            return ExecutionReport(kind=kind, cl_ord_id=_cl(event.cl_ord_id),
                                   orig_cl_ord_id=_cl(event.orig_cl_ord_id), venue_order_id=event.order_id,
                                   ord_status=ORD_STATUS.get(event.ord_status), reason=event.text or "",
                                   ts_ns=event.recv_ns)
        if isinstance(event, fc.MassCancelReportEvent):
            # The individual Canceled reports that follow carry the state changes.
            log.info("mass cancel %s: response %s, %d affected", event.cl_ord_id, event.response, event.affected)
            return None
        return None

    def _avg_ticks(self, symbol: str, avg_price: float | None) -> float | None:
        if avg_price is None:
            return None
        try:
            tick = float(self.client.instrument(symbol).tick_size)
        except (KeyError, ValueError):
            return None
        return avg_price / tick


class OuchExecution:
    """ExecutionClient over OUCH 4.2 / SoupBinTCP (`gateway.ouch_session.OuchClient`).

    The order token is the wire form of the client order id. OUCH has no cancel-request
    id and no order status request: a cancel's answer (Canceled, by token) is matched to
    the cancel request we sent for that token, and a status request is refused (the
    order manager then alerts instead of assuming).
    """

    supports_mass_cancel = False

    def __init__(self, client) -> None:
        self.client = client
        self._handler: Callable[[ExecutionReport], None] | None = None
        self._cancel_ids: dict[int, int] = {}          # order id -> cancel request id in flight
        self._symbols: dict[int, str] = {}
        client.on_event = self._on_event

    @classmethod
    def connect(cls, host: str, port: int, username: str, password: str,
                instruments: Iterable[Instrument]) -> OuchExecution:
        from gateway.ouch_session import OuchClient
        wire = [WireInstrument(i.symbol, i.tick_size) for i in instruments]
        return cls(OuchClient(host, port, username, password, instruments=wire))

    def set_report_handler(self, handler: Callable[[ExecutionReport], None]) -> None:
        self._handler = handler

    def send_new(self, order: Order) -> None:
        from engine.orders import Tif
        from gateway.ouch_session import TIF_OUCH_DAY, TIF_OUCH_IOC
        tif = TIF_OUCH_IOC if order.tif in (Tif.IOC, Tif.FOK) else TIF_OUCH_DAY
        min_qty = order.qty if order.tif == Tif.FOK else 0
        self.client.enter_order(format_cl_ord_id(order.cl_ord_id), int(order.side), order.qty, order.symbol,
                                order.price, tif, min_qty)
        self._symbols[order.cl_ord_id] = order.symbol

    def send_cancel(self, order: Order, cancel_id: int) -> None:
        self.client.cancel_order(format_cl_ord_id(order.cl_ord_id), 0)
        self._cancel_ids[order.cl_ord_id] = cancel_id

    def send_replace(self, order: Order, replacement: Order) -> None:
        leaves = max(replacement.qty - order.cum_qty, 0)   # OUCH replaces the open quantity
        self.client.replace_order(format_cl_ord_id(order.cl_ord_id), format_cl_ord_id(replacement.cl_ord_id),
                                  leaves, replacement.price, symbol=order.symbol)
        self._symbols[replacement.cl_ord_id] = order.symbol

    def send_mass_cancel(self, symbol: str | None, request_id: int) -> None:
        raise fc.ClientError("OUCH 4.2 has no mass cancel; the order manager cancels one by one")

    def send_status_request(self, order: Order) -> None:
        raise fc.ClientError("OUCH 4.2 has no order status request")

    def _on_event(self, event) -> None:
        report = self.translate(event)
        if report is not None and self._handler is not None:
            self._handler(report)

    def translate(self, event) -> ExecutionReport | None:
        from gateway import ouch_session as os_
        if isinstance(event, os_.Accepted):
            return ExecutionReport(ExecKind.NEW, _cl(event.token), venue_order_id=str(event.order_ref),
                                   symbol=event.symbol, side=event.side, ts_ns=event.timestamp)
        if isinstance(event, os_.Executed):
            return ExecutionReport(ExecKind.TRADE, _cl(event.token), exec_id=f"{event.token}-{event.match}",
                                   last_qty=event.shares, last_px=event.price or 0, ts_ns=event.timestamp,
                                   liquidity={"A": "M", "R": "T"}.get(event.liquidity, ""))
        if isinstance(event, os_.Canceled):
            order_id = _cl(event.token)
            cancel_id = self._cancel_ids.pop(order_id, 0)
            if cancel_id:
                return ExecutionReport(ExecKind.CANCELED, cancel_id, orig_cl_ord_id=order_id,
                                       reason=f"canceled ({event.reason})", ts_ns=event.timestamp)
            return ExecutionReport(ExecKind.CANCELED, order_id, reason=f"canceled by the venue ({event.reason})",
                                   ts_ns=event.timestamp)
        if isinstance(event, os_.Replaced):
            return ExecutionReport(ExecKind.REPLACED, _cl(event.token), orig_cl_ord_id=_cl(event.previous_token),
                                   venue_order_id=str(event.order_ref), symbol=event.symbol, side=event.side,
                                   leaves_qty=event.shares, ts_ns=event.timestamp)
        if isinstance(event, os_.Rejected):
            return ExecutionReport(ExecKind.REJECTED, _cl(event.token), reason=f"venue reject ({event.reason})",
                                   ts_ns=event.timestamp)
        return None
