"""Crash recovery: rebuild from the journal, reconcile with the venue, then trade.

DESIGN.md: "every order event is journaled before it is acted on; a restart rebuilds
state from the journal and reconciles with the venue before trading again (and refuses
to trade while they disagree)". This module is that restart, in three steps that the
runtime calls in order:

1. `Recovery.from_journal(directory, config)` (before anything is connected) replays the
   journal (`engine.journal.read_journal`: every complete record, a torn last record is
   ignored) through `JournalState`, a small copy of the order manager's state machine:
   every order ever submitted with its cum qty and whether it may still be working at
   the venue, every fill (also fills inferred from order-status answers, exactly as the
   order manager books them), every ExecID seen, and the largest client order id used.
   ``resume_fix_session`` says whether the FIX session must be resumed (some order may
   still be working, so the venue may hold reports we have not seen) or may be reset.

2. `Recovery.restore(core, journal)` (after `build_core`, before the venue session logs
   on) sets the portfolio's positions (quantity and average cost, from the journaled
   fills: the portfolio's fill list and P&L stay this session's, so a run's evidence is
   its own) and the risk kernel's,
   keeps new client order ids above every journaled one, journals local rejects from now
   on (`KIND_ORDER_REJECTED`, so the next replay knows those orders never left), and -
   when some order may still be working - puts itself between the execution client and
   the order manager: reports that arrive during recovery (the ones the venue resends
   after our Logon, then the answers to our status requests) are de-duplicated against
   the journal's ExecIDs, journaled, and applied to the replayed state.

3. ``await Recovery.reconcile(runtime)`` (after Logon, before the strategy starts):

   * an OrderStatusRequest for every order that may still be working (for a replace in
     flight, for the original and the replacement), answers awaited with a time-out;
     the answers settle what happened while we were down (the replace went through or
     not, an order never reached the venue, fills we missed are booked);
   * the orders still working are adopted by the order manager (`OrderManager.adopt`)
     with their cum qty, the order manager gets its reports back, and - the strategy
     cannot manage orders it did not place - they are canceled (``cancel_open_orders``;
     a mass cancel when the client has one) and the cancels confirmed; a report for an
     order the journal never knew, met on the way, is a disagreement;
   * the positions and the fills are compared with the venue's broker statement
     (`STATEMENT_ENV`: the venue's ``GET /statement`` URL or a statement file, in the
     format `gateway.exchange` writes) with `engine.portfolio.reconcile`; without a
     statement source the positions are not compared (said so, not a block: the config
     has no key for it yet);
   * every disagreement (an order the venue does not know or knows differently, a status
     request not answered, a report for an order the journal does not know, an order
     that would not cancel, a position or fill that differs, a statement that cannot be
     read) is a `Mismatch`; any mismatch blocks trading (`apply_reconciliation`) and
     raises `RecoveryError` listing them line by line: the strategy does not start.

With simulated execution (paper) there is no venue to ask: the simulator's orders died
with the process, so the replay's working orders are closed (journaled as
`KIND_RECOVERED`) and the journal alone gives the positions.

Durability contract this relies on (the runtime provides it): a request is journaled and
the journal synced to disk before it is handed to the execution client, so every order
the venue can know is in the journal; the FIX session's outbound sequence number is
stored before a message is written to the socket (`SessionStore`), so a restarted engine
logs on with the number the venue expects and the venue resends what we missed.
"""
from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import DataError, EngineError
from engine.instruments import Instrument
from engine.journal import Journal, read_journal
from engine.orders import (
    ExecKind,
    ExecutionReport,
    Fill,
    OrdStatus,
    Side,
    Tif,
    format_cl_ord_id,
    missed_fill_price,
    parse_cl_ord_id,
)
from engine.portfolio import (
    Mismatch,
    Portfolio,
    Statement,
    StatementFill,
    apply_reconciliation,
    reconcile,
)
from gateway.fix_store import SqliteStore

log = logging.getLogger("engine.recovery")

__all__ = ["STATEMENT_ENV", "KIND_ORDER_REJECTED", "KIND_RECOVERED", "SEND_KINDS", "RecoveryError",
           "ReplayOrder", "JournalState", "replay_journal", "report_to_dict", "report_from_dict",
           "parse_venue_statement", "load_venue_statement", "SessionStore", "session_store",
           "RecoveryReport", "Recovery"]

#: Where the venue's broker statement comes from: an http(s) URL (the venue simulator's
#: control endpoint ``http://HOST:PORT/statement``) or a path to a statement CSV.
STATEMENT_ENV = "ENGINE_VENUE_STATEMENT"
#: Journal record written for every order that ends Rejected in this process (a local
#: risk reject or a send failure never reaches the venue; the replay must know).
KIND_ORDER_REJECTED = "order_rejected"
#: Journal record written at the end of a recovery (what was found and decided).
KIND_RECOVERED = "recovered"
#: Order-manager journal events that precede a request to the venue.
SEND_KINDS = frozenset({"submit", "cancel", "replace", "mass_cancel"})
FIX_STORE_FILE = "fix-session.db"

STATUS_WAIT_S = 5.0        # for the answers to the status requests
CANCEL_WAIT_S = 5.0        # for the cancels of the orders left working
STATEMENT_TIMEOUT_S = 5.0  # GET /statement
MAX_LINES = 40             # disagreements listed in the error (all of them are journaled)

# replayed order states
PENDING_NEW = "pending_new"   # sent (or about to be), no answer journaled
LIVE = "live"                 # acknowledged and not ended
DONE = "done"                 # ended (filled, canceled, rejected, replaced, expired, never sent)


class RecoveryError(EngineError):
    """The engine and the venue disagree (or could not be compared): trading stays
    blocked. ``mismatches`` lists them."""

    def __init__(self, message: str, mismatches: Iterable[Mismatch] = ()) -> None:
        super().__init__(message)
        self.mismatches = list(mismatches)


# =========================================================================== replay

@dataclass(slots=True, eq=False)
class ReplayOrder:
    """One order as the journal tells it."""
    cl_ord_id: int
    symbol: str
    side: Side
    qty: int
    price: int | None
    tif: Tif
    owner: str = ""
    state: str = PENDING_NEW
    outcome: str = ""              # how it ended (an OrdStatus value, or "not sent" ...)
    cum_qty: int = 0
    notional: int = 0              # sum of fill qty * price, tick-lots
    venue_order_id: str = ""
    orig_cl_ord_id: int = 0        # a replacement: the order it replaces
    replace_pending: int = 0       # an original: its replacement while the replace is unanswered
    chained: bool = False          # a replacement: the original's fills were carried over

    @property
    def open(self) -> bool:
        return self.state != DONE

    @property
    def leaves_qty(self) -> int:
        return max(self.qty - self.cum_qty, 0) if self.open else 0


def report_to_dict(r: ExecutionReport) -> dict:
    """The journal payload of a report; the same fields as the order manager writes."""
    return {"kind": r.kind.value, "cl_ord_id": r.cl_ord_id, "exec_id": r.exec_id,
            "orig_cl_ord_id": r.orig_cl_ord_id, "venue_order_id": r.venue_order_id,
            "symbol": r.symbol, "side": r.side, "last_qty": r.last_qty, "last_px": r.last_px,
            "cum_qty": r.cum_qty, "leaves_qty": r.leaves_qty, "avg_px": r.avg_px,
            "ord_status": r.ord_status.value if r.ord_status else None, "reason": r.reason,
            "ts_ns": r.ts_ns, "commission": r.commission, "liquidity": r.liquidity}


def report_from_dict(d: Mapping[str, Any]) -> ExecutionReport:
    st = d.get("ord_status")
    return ExecutionReport(
        kind=ExecKind(d["kind"]), cl_ord_id=int(d.get("cl_ord_id") or 0), exec_id=d.get("exec_id") or "",
        orig_cl_ord_id=int(d.get("orig_cl_ord_id") or 0), venue_order_id=d.get("venue_order_id") or "",
        symbol=d.get("symbol") or "", side=d.get("side"), last_qty=int(d.get("last_qty") or 0),
        last_px=int(d.get("last_px") or 0), cum_qty=d.get("cum_qty"), leaves_qty=d.get("leaves_qty"),
        avg_px=d.get("avg_px"), ord_status=OrdStatus(st) if st else None, reason=d.get("reason") or "",
        ts_ns=int(d.get("ts_ns") or 0), commission=d.get("commission"), liquidity=d.get("liquidity") or "")


class JournalState:
    """Orders, fills and ExecIDs rebuilt from journal records (`apply_record`) and from
    reports received during recovery (`apply_report`). Mirrors the order manager's
    bookkeeping (fills count whatever the state; a replacement carries the original's
    fills once the venue confirms the replace; a status answer with a larger cum qty
    books the difference as an inferred fill, at the price the order manager computes).
    Differences the replay notices are kept in ``notes`` (kind, cl_ord_id, ours, venue's)."""

    def __init__(self, instruments: Mapping[str, Instrument]) -> None:
        self.instruments = dict(instruments)
        self.orders: dict[int, ReplayOrder] = {}
        self.requests: dict[int, int] = {}          # cancel request id -> order id
        self.fills: list[Fill] = []
        self.exec_ids: set[str] = set()
        self.unknown: list[ExecutionReport] = []    # reports for orders the journal does not know
        self.notes: list[tuple[str, int, str, str]] = []   # (kind, cl_ord_id, ours, venue's)
        self.max_id = 0
        self.records = 0
        self.duplicates = 0
        self.inferred = 0
        self.last_ts_ns = 0

    # ------------------------------------------------------------------ reading
    def open_orders(self) -> list[ReplayOrder]:
        return [o for o in self.orders.values() if o.open]

    def positions(self) -> dict[str, int]:
        """Non-zero positions (lots) from the fills."""
        out: dict[str, int] = {}
        for f in self.fills:
            out[f.symbol] = out.get(f.symbol, 0) + (f.qty if f.side is Side.BUY else -f.qty)
        return {s: q for s, q in out.items() if q}

    def resolve(self, report: ExecutionReport) -> ReplayOrder | None:
        order = self.orders.get(report.cl_ord_id)
        if order is None:
            target = self.requests.get(report.cl_ord_id)
            order = self.orders.get(target) if target else None
        if order is None and report.orig_cl_ord_id:
            order = self.orders.get(report.orig_cl_ord_id)
        return order

    # ------------------------------------------------------------------ records
    def apply_record(self, kind: str, payload: Any, ts_ns: int = 0) -> list[Fill]:
        """One journal record; returns the fills it booked."""
        self.records += 1
        self.last_ts_ns = max(self.last_ts_ns, ts_ns)
        if not isinstance(payload, dict):
            return []
        if kind == "submit":
            cl = int(payload["cl_ord_id"])
            self._seen_id(cl)
            symbol = payload["symbol"]
            if cl not in self.orders:
                self.orders[cl] = ReplayOrder(cl, symbol, Side.parse(payload["side"]), int(payload["qty"]),
                                              payload.get("price"), Tif.parse(payload.get("tif", 0)),
                                              owner=payload.get("owner") or "")
                if symbol not in self.instruments:     # the order manager rejects it locally
                    self._end(self.orders[cl], "not sent (unknown instrument)")
        elif kind == "replace":
            cl, new = int(payload["cl_ord_id"]), int(payload["new_cl_ord_id"])
            self._seen_id(new)
            orig = self.orders.get(cl)
            if orig is not None and new not in self.orders:
                rep = ReplayOrder(new, orig.symbol, orig.side, int(payload["qty"]), payload.get("price"), orig.tif,
                                  owner=orig.owner, orig_cl_ord_id=cl)
                self.orders[new] = rep
                if orig.open:
                    orig.replace_pending = new
                else:
                    self._end(rep, "not sent (original ended)")
        elif kind == "cancel":
            cancel_id = int(payload["cancel_id"])
            self._seen_id(cancel_id)
            self.requests[cancel_id] = int(payload["cl_ord_id"])
        elif kind == "mass_cancel":
            self._seen_id(int(payload.get("request_id") or 0))
        elif kind == "report":
            return self.apply_report(report_from_dict(payload), ts_ns)
        elif kind == KIND_ORDER_REJECTED:
            order = self.orders.get(int(payload["cl_ord_id"]))
            if order is not None and order.open:
                self._end(order, OrdStatus.REJECTED.value)
                self._drop_replace(order)
        elif kind == KIND_RECOVERED:
            for cl in payload.get("closed") or ():
                self.close(int(cl), "closed at recovery")
        return []

    def close(self, cl_ord_id: int, outcome: str) -> None:
        """End an order that cannot be working any more (its execution is gone)."""
        order = self.orders.get(cl_ord_id)
        if order is not None and order.open:
            self._end(order, outcome)
            self._drop_replace(order)

    def apply_report(self, r: ExecutionReport, ts_ns: int = 0) -> list[Fill]:
        """One execution report (journaled, or received during recovery); returns the
        fills it booked. A report whose ExecID was seen is ignored."""
        if r.exec_id:
            if r.exec_id in self.exec_ids:
                self.duplicates += 1
                return []
            self.exec_ids.add(r.exec_id)
        kind = r.kind
        if kind is ExecKind.REPLACED or kind is ExecKind.REPLACE_REJECT:
            rep = self.orders.get(r.cl_ord_id)
            orig = self.orders.get(r.orig_cl_ord_id) if r.orig_cl_ord_id else None
            if orig is None and rep is not None and rep.orig_cl_ord_id:
                orig = self.orders.get(rep.orig_cl_ord_id)
            if rep is None or orig is None:
                self.unknown.append(r)
                return []
            if kind is ExecKind.REPLACED:
                self._replaced(orig, rep, r.venue_order_id)
            else:
                if rep.state == PENDING_NEW:
                    self._end(rep, OrdStatus.REJECTED.value)
                if orig.replace_pending == rep.cl_ord_id:
                    orig.replace_pending = 0
            return []
        order = self.resolve(r)
        if order is None:
            self.unknown.append(r)
            return []
        if r.venue_order_id and not order.venue_order_id:
            order.venue_order_id = r.venue_order_id
        if kind is ExecKind.TRADE:
            if r.last_qty > 0 and r.last_px > 0:
                return [self._book(order, r.last_qty, r.last_px, r.exec_id, r.ts_ns or ts_ns, r.commission,
                                   r.liquidity, inferred=False)]
            return []
        if kind is ExecKind.NEW:
            if order.state == PENDING_NEW:
                order.state = LIVE
        elif kind in (ExecKind.CANCELED, ExecKind.EXPIRED, ExecKind.REJECTED):
            if order.open:
                self._end(order, {ExecKind.CANCELED: OrdStatus.CANCELED, ExecKind.EXPIRED: OrdStatus.EXPIRED,
                                  ExecKind.REJECTED: OrdStatus.REJECTED}[kind].value)
                self._drop_replace(order)
        elif kind is ExecKind.ORDER_STATUS:
            return self._status(order, r, ts_ns)
        return []   # PendingCancel/PendingReplace/CancelReject: the order's state is unchanged

    # ------------------------------------------------------------------ internals
    def _seen_id(self, cl: int) -> None:
        if cl > self.max_id:
            self.max_id = cl

    def _end(self, order: ReplayOrder, outcome: str) -> None:
        order.state = DONE
        order.outcome = outcome

    def _drop_replace(self, order: ReplayOrder) -> None:
        """A replacement ended: its original has no replace in flight any more. (An
        original that ends leaves its replacement open until the venue answers for it,
        as the order manager does: a status request settles it at recovery.)"""
        if order.orig_cl_ord_id:
            orig = self.orders.get(order.orig_cl_ord_id)
            if orig is not None and orig.replace_pending == order.cl_ord_id:
                orig.replace_pending = 0

    def _replaced(self, orig: ReplayOrder, rep: ReplayOrder, venue_order_id: str = "") -> None:
        if orig.open:
            self._end(orig, OrdStatus.REPLACED.value)
        orig.replace_pending = 0
        if rep.chained:
            return
        rep.chained = True
        rep.cum_qty += orig.cum_qty
        rep.notional += orig.notional
        rep.venue_order_id = venue_order_id or rep.venue_order_id or orig.venue_order_id
        if rep.state == PENDING_NEW:
            rep.state = LIVE
        if rep.open and rep.cum_qty >= rep.qty:
            self._end(rep, OrdStatus.FILLED.value)

    def _book(self, order: ReplayOrder, qty: int, px: int, exec_id: str, ts_ns: int,
              commission: float | None, liquidity: str, *, inferred: bool) -> Fill:
        order.cum_qty += qty
        order.notional += qty * px
        if order.open and order.cum_qty >= order.qty:
            self._end(order, OrdStatus.FILLED.value)
            self._drop_replace(order)
        elif order.state == PENDING_NEW:
            order.state = LIVE           # the venue has it
        inst = self.instruments.get(order.symbol)
        fill = Fill(order.cl_ord_id, exec_id, order.symbol, inst.inst_id if inst else -1, order.side, qty, px,
                    ts_ns, order.leaves_qty, commission, liquidity, inferred)
        self.fills.append(fill)
        return fill

    def _status(self, order: ReplayOrder, r: ExecutionReport, ts_ns: int) -> list[Fill]:
        venue = r.ord_status
        if venue is OrdStatus.REJECTED:            # the venue does not hold this order
            if order.state == PENDING_NEW:
                self._end(order, "not at the venue")
                self._drop_replace(order)
            elif order.open:
                self.notes.append(("order_missing_at_venue", order.cl_ord_id,
                                   f"{order.state} cum {order.cum_qty}", "unknown order"))
                self._end(order, "unknown at the venue")
                self._drop_replace(order)
            return []
        if order.orig_cl_ord_id and not order.chained:
            orig = self.orders.get(order.orig_cl_ord_id)
            if orig is not None and orig.replace_pending == order.cl_ord_id:
                self._replaced(orig, order)          # the venue knows the replacement: it went through
        fills = []
        if r.cum_qty is not None and r.cum_qty > order.cum_qty:
            # the order manager's rule for a missed fill (engine.orders.OrderManager._on_status)
            missing = r.cum_qty - order.cum_qty
            px = missed_fill_price(missing, r.cum_qty, r.avg_px, r.last_px, order.notional, order.price)
            if px > 0:
                self.inferred += 1
                fills.append(self._book(order, missing, px, f"status:{order.cl_ord_id}:{r.cum_qty}",
                                        r.ts_ns or ts_ns, None, "", inferred=True))
        elif r.cum_qty is not None and r.cum_qty < order.cum_qty:
            self.notes.append(("order_differs", order.cl_ord_id, f"cum {order.cum_qty}", f"cum {r.cum_qty}"))
        if venue in (OrdStatus.CANCELED, OrdStatus.EXPIRED, OrdStatus.FILLED):
            if order.open:
                self._end(order, venue.value)
                self._drop_replace(order)
        elif venue in (OrdStatus.NEW, OrdStatus.PARTIALLY_FILLED) and order.state == PENDING_NEW:
            order.state = LIVE
        return fills


def replay_journal(directory: str | os.PathLike[str], instruments: Mapping[str, Instrument]) -> JournalState:
    """The journal's view of orders and fills (an empty state for a missing directory)."""
    state = JournalState(instruments)
    if Path(directory).is_dir():
        for rec in read_journal(directory):
            state.apply_record(rec.kind, rec.payload, rec.ts_ns)
    return state


# =========================================================================== statements

def parse_venue_statement(text: str, instruments: Mapping[str, Instrument], *,
                          source: str = "statement") -> tuple[Statement, list[Mismatch]]:
    """The venue's broker statement (CSV as `gateway.exchange.Exchange.statement_csv`
    writes it) -> (`Statement` with positions and fills, problems that are mismatches by
    themselves: a position in a symbol we do not configure). Rows of symbols we do not
    configure are otherwise skipped; a malformed row raises `DataError` naming it."""
    reader = csv.DictReader(io.StringIO(text))
    need = ("record", "account", "symbol", "exec_id", "cl_ord_id", "side", "qty", "price")
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{source}: not a venue statement (header lacks {', '.join(missing)})")
    positions: dict[tuple[str, str], int] = {}
    lines: dict[tuple[str, str], int] = {}
    fills: list[StatementFill] = []
    extra: list[Mismatch] = []
    for row in reader:
        line = reader.line_num
        at = f"{source}:{line}"
        record, account, symbol = row["record"], row["account"], row["symbol"]
        inst = instruments.get(symbol)
        try:
            if record == "POSITION":
                qty = int(row["qty"])
                if inst is None:
                    if qty:
                        extra.append(Mismatch("position", account, symbol, "", "not configured", str(qty), at))
                    continue
                positions[(account, symbol)] = qty
                lines[(account, symbol)] = line
            elif record == "FILL":
                if inst is None:
                    continue
                try:
                    cl = parse_cl_ord_id(row["cl_ord_id"])
                except ValueError:
                    cl = 0        # not one of our ids: it cannot match a fill of ours
                fills.append(StatementFill(account, symbol, row["exec_id"], cl, Side.parse(row["side"]),
                                           int(row["qty"]), inst.price_to_ticks(row["price"]), line))
            else:
                raise ValueError(f"record {record!r} is not FILL or POSITION")
        except (ValueError, TypeError) as exc:
            raise DataError(f"{at}: {exc}") from None
    return Statement(positions, tuple(fills), None, lines), extra


def _read_statement(source: str) -> str:
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=STATEMENT_TIMEOUT_S) as resp:   # noqa: S310 - configured URL
                return resp.read().decode("utf-8")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(f"statement {source}: {exc}") from None
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"statement {source}: {exc.strerror or exc}") from None


async def load_venue_statement(source: str, instruments: Mapping[str, Instrument]
                               ) -> tuple[Statement, list[Mismatch]]:
    """Fetch (URL) or read (file) and parse the venue's statement, off the loop thread."""
    text = await asyncio.get_running_loop().run_in_executor(None, _read_statement, source)
    return parse_venue_statement(text, instruments, source="statement")


# =========================================================================== FIX session store

class SessionStore(SqliteStore):
    """The engine's FIX session store: SQLite (WAL) plus a memory-mapped sequence file.

    Both sequence numbers are written through to the memory-mapped file on every change
    (a store into the page cache, no system call: it survives a crash of the process at
    once), so a restarted engine logs on with the MsgSeqNum the venue expects (one that
    is too low is fatal in FIX). The outbound messages and the numbers go to SQLite on
    the session timer (every 50 ms), committed by the store's own thread -- a commit per
    order on the event loop used to cost the order 0.1-1 ms, and a WAL checkpoint more. A message lost with a crash inside that window is answered
    with a gap fill if the venue asks for it: an order is never resent after a restart
    (recovery asks the venue for its status instead). The inbound number can lag what
    the journal holds (the venue then resends reports already journaled, which recovery
    drops by ExecID) or lead it (a crash inside the journal writer's window: the report
    it skips is recovered from the status answer for its order)."""

    def __init__(self, path: str | os.PathLike[str], session_key: str) -> None:
        super().__init__(str(path), session_key, flush_interval=0.05,
                         seq_file=f"{path}.{session_key}.seq", background=True)


def session_store(storage: str | os.PathLike[str], sender_comp_id: str, target_comp_id: str) -> SessionStore:
    return SessionStore(Path(storage) / FIX_STORE_FILE, f"{sender_comp_id}-{target_comp_id}")


# =========================================================================== the runtime's recovery

@dataclass
class RecoveryReport:
    """What one recovery found and did."""
    records: int = 0
    orders: int = 0
    open_at_start: int = 0
    fills: int = 0
    positions: dict[str, int] = field(default_factory=dict)
    resumed_fix_session: bool = False
    status_requests: int = 0
    status_answers: int = 0
    reports_during_recovery: int = 0
    duplicates_dropped: int = 0
    fills_during_recovery: int = 0
    inferred_fills: int = 0
    adopted: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    canceled: list[int] = field(default_factory=list)
    statement: str = ""            # where it came from, or why there was none
    mismatches: list[Mismatch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.mismatches

    def lines(self) -> list[str]:
        pos = ", ".join(f"{s} {q}" for s, q in sorted(self.positions.items())) or "flat"
        if self.records:
            out = [f"recovery: journal {self.records} records: {self.orders} orders ({self.open_at_start} possibly "
                   f"working), {self.fills} fills; positions {pos}"]
        else:
            out = ["recovery: empty journal (first start): nothing to rebuild"]
        if self.resumed_fix_session:
            out.append(f"recovery: FIX session resumed; {self.reports_during_recovery} reports received during "
                       f"recovery ({self.duplicates_dropped} already journaled, {self.fills_during_recovery} fills, "
                       f"{self.inferred_fills} inferred from status); {self.status_answers}/{self.status_requests} "
                       f"status requests answered")
        if self.adopted:
            out.append(f"recovery: {len(self.adopted)} orders still working at the venue adopted; "
                       f"{len(self.canceled)} canceled")
        if self.closed:
            out.append(f"recovery: {len(self.closed)} orders of the simulated execution closed (the simulator "
                       f"does not survive a restart)")
        out.append(f"recovery: statement: {self.statement}")
        if self.mismatches:
            out.append(f"recovery: {len(self.mismatches)} disagreement(s) with the venue; trading blocked")
        else:
            out.append(f"recovery: the engine and the venue agree ({self.seconds:.2f} s)")
        return out


class Recovery:
    """One engine start's recovery (see the module docstring for the three steps)."""

    def __init__(self, state: JournalState, *, account: str, has_venue: bool,
                 statement_source: str | None = None, cancel_open_orders: bool = True,
                 status_wait_s: float = STATUS_WAIT_S, cancel_wait_s: float = CANCEL_WAIT_S,
                 printer: Callable[[str], None] | None = None) -> None:
        self.state = state
        self.account = account
        self.has_venue = has_venue
        self.statement_source = statement_source
        self.cancel_open_orders = cancel_open_orders
        self.status_wait_s = status_wait_s
        self.cancel_wait_s = cancel_wait_s
        self.print = printer or (lambda line: print(line, flush=True))
        self.report = RecoveryReport(records=state.records, orders=len(state.orders),
                                     open_at_start=len(state.open_orders()), fills=len(state.fills),
                                     positions=state.positions())
        self.core = None
        self.journal: Journal | None = None
        self._t0 = time.monotonic()
        self._intercepting = False
        self._answered: set[int] = set()
        self._recovery_fills = 0                    # of core.portfolio.fills, those booked from the replay
        self._notes_before = len(state.notes)       # differences of earlier sessions were handled then
        self._unknown_before = len(state.unknown)

    @classmethod
    def from_journal(cls, directory: str | os.PathLike[str], config, *, has_venue: bool,
                     statement_source: str | None = None, **kwargs) -> Recovery:
        """Replay the journal of `config` (before anything connects). `statement_source`
        defaults to the environment variable `STATEMENT_ENV`."""
        state = replay_journal(directory, config.instruments_by_symbol)
        account = config.venue.sender_comp_id if config.venue is not None else config.account
        if statement_source is None:
            statement_source = os.environ.get(STATEMENT_ENV) or None
        return cls(state, account=account, has_venue=has_venue, statement_source=statement_source, **kwargs)

    @property
    def resume_fix_session(self) -> bool:
        """True when some order may still be working at the venue: the session must be
        resumed (no sequence reset) so that the venue resends the reports we missed."""
        return self.has_venue and bool(self.state.open_orders())

    # ------------------------------------------------------------------ step 2
    def restore(self, core, journal: Journal) -> None:
        """Book the journal into the core (before the venue session logs on)."""
        self.core, self.journal = core, journal
        om, portfolio = core.om, core.portfolio
        om.add_listener(on_order=self._journal_reject)
        history = self._history()
        for symbol in portfolio.instruments:
            pos = history.position_record(symbol)
            portfolio.set_position(symbol, pos.qty, pos.avg_price)
        self._sync_kernel_positions()
        if self.state.max_id:
            om.ids.ensure_above(self.state.max_id)
        if not self.has_venue:
            # simulated execution: its orders died with the process
            closed = [o.cl_ord_id for o in self.state.open_orders()]
            if closed:
                for cl in closed:
                    self.state.close(cl, "closed at recovery")
                self.report.closed = closed
                journal.append(KIND_RECOVERED, {"closed": closed, "reason": "simulated execution restarted"})
        elif self.resume_fix_session:
            core.client.set_report_handler(self._on_report)
            self._intercepting = True

    def _history(self) -> Portfolio:
        """A portfolio of every fill the replay knows (the journal's and those received
        during recovery)."""
        history = Portfolio(self.core.instruments)
        for fill in self.state.fills:
            if fill.symbol in history.instruments:
                history.on_fill(fill)
        return history

    def _journal_reject(self, snap) -> None:
        if snap.state is OrdStatus.REJECTED and self.journal is not None:
            self.journal.append(KIND_ORDER_REJECTED, {"cl_ord_id": snap.cl_ord_id, "reason": snap.reject_reason})

    def _sync_kernel_positions(self) -> None:
        core = self.core
        for symbol, inst in core.instruments.items():
            core.kernel.set_position(inst.inst_id, core.portfolio.position(symbol))

    def _on_report(self, r: ExecutionReport) -> None:
        """The execution client's handler while recovering."""
        self.report.reports_during_recovery += 1
        if r.exec_id and r.exec_id in self.state.exec_ids:
            self.report.duplicates_dropped += 1
            return
        self.journal.append("report", report_to_dict(r))
        n_unknown = len(self.state.unknown)
        fills = self.state.apply_report(r, time.time_ns())
        for fill in fills:
            if fill.symbol in self.core.portfolio.instruments:
                self.core.portfolio.on_fill(fill)     # traded while we were down: this session's
                self._recovery_fills += 1
            self.report.fills_during_recovery += 1
        if r.kind is ExecKind.ORDER_STATUS:
            self.report.status_answers += 1
            order = self.state.resolve(r) if len(self.state.unknown) == n_unknown else None
            if order is not None:
                self._answered.add(order.cl_ord_id)
                if order.orig_cl_ord_id:
                    self._answered.add(order.orig_cl_ord_id)

    # ------------------------------------------------------------------ step 3
    async def reconcile(self, rt) -> RecoveryReport:
        """Status of every possibly working order, adopt and cancel what still works,
        compare with the statement. Raises `RecoveryError` (trading blocked) on any
        disagreement; prints what it found either way."""
        core, rep = self.core, self.report
        mismatches: list[Mismatch] = []
        rep.resumed_fix_session = self._intercepting
        if self._intercepting:
            try:
                mismatches += await self._query_status(rt)
            finally:
                core.client.set_report_handler(core.om.on_execution_report)
                self._intercepting = False
            rep.inferred_fills = self.state.inferred
            mismatches += self._state_mismatches()
            self._sync_kernel_positions()
            mismatches += await self._adopt_and_cancel()
        if self.has_venue:
            mismatches += await self._compare_statement()
        else:
            rep.statement = "not needed (simulated execution: the journal is the only record)"
        rep.mismatches = mismatches
        rep.fills = len(self.state.fills) + len(core.portfolio.fills) - self._recovery_fills
        rep.positions = core.portfolio.positions()
        rep.seconds = time.monotonic() - self._t0
        self.journal.append(KIND_RECOVERED, {
            "clean": rep.clean, "positions": rep.positions, "adopted": rep.adopted, "canceled": rep.canceled,
            "closed": rep.closed, "mismatches": [str(m) for m in mismatches], "statement": rep.statement})
        for line in rep.lines():
            self.print(line)
        if mismatches:
            apply_reconciliation(mismatches, core.om)
            shown = [f"  {m}" for m in mismatches[:MAX_LINES]]
            if len(mismatches) > MAX_LINES:
                shown.append(f"  (+{len(mismatches) - MAX_LINES} more: all in the journal's last "
                             f"'{KIND_RECOVERED}' record)")
            raise RecoveryError(f"recovery: the engine and the venue disagree ({len(mismatches)}); refusing "
                                f"to trade until they agree:\n" + "\n".join(shown), mismatches)
        apply_reconciliation([], core.om)
        return rep

    async def _query_status(self, rt) -> list[Mismatch]:
        fix = getattr(rt, "fix", None)
        queried: list[ReplayOrder] = []
        out: list[Mismatch] = []
        for o in self.state.open_orders():
            if fix is None:
                break
            try:
                fix.client.order_status(format_cl_ord_id(o.cl_ord_id), order_id=o.venue_order_id or None,
                                        symbol=o.symbol, side=int(o.side))
            except Exception as exc:  # noqa: BLE001 - a request that cannot go is a disagreement
                out.append(self._mismatch("no_status_answer", o, "working?", f"status request not sent: {exc}"))
                continue
            queried.append(o)
        self.report.status_requests = len(queried)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.status_wait_s
        while self.report.status_answers < len(queried) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for o in queried:
            if o.cl_ord_id not in self._answered and o.open:
                out.append(self._mismatch("no_status_answer", o, f"{o.state} cum {o.cum_qty}",
                                          f"no answer within {self.status_wait_s:g} s"))
        return out

    def _state_mismatches(self) -> list[Mismatch]:
        out = []
        for kind, cl, ours, theirs in self.state.notes[self._notes_before:]:
            o = self.state.orders.get(cl)
            out.append(Mismatch(kind, self.account, o.symbol if o else "", format_cl_ord_id(cl), ours, theirs))
        for r in self.state.unknown[self._unknown_before:]:
            what = (f"fill {r.exec_id} of {r.last_qty} @ {r.last_px}" if r.kind is ExecKind.TRADE
                    else f"{r.kind.value} report")
            out.append(Mismatch("order_missing_here", self.account, r.symbol,
                                format_cl_ord_id(r.cl_ord_id) if r.cl_ord_id else "?", "not in the journal", what))
        return out

    async def _adopt_and_cancel(self) -> list[Mismatch]:
        core, rep, out = self.core, self.report, []
        om = core.om
        for o in self.state.open_orders():
            if o.state != LIVE or o.leaves_qty <= 0:
                continue          # unresolved (reported above) or nothing open
            try:
                order = om.adopt(o.cl_ord_id, o.symbol, o.side, o.qty, o.price, o.tif, cum_qty=o.cum_qty,
                                 venue_order_id=o.venue_order_id)
            except (ValueError, KeyError) as exc:
                out.append(self._mismatch("order_differs", o, "working", f"cannot adopt: {exc}"))
                continue
            order.fill_notional = o.notional     # adopt() takes the cum qty; the average price too
            rep.adopted.append(o.cl_ord_id)
        if not rep.adopted or not self.cancel_open_orders:
            return out

        def watch(r: ExecutionReport) -> None:
            # a mass cancel also reaches orders the journal never knew: each is a disagreement
            if not any(cl and om.order(cl) is not None for cl in (r.cl_ord_id, r.orig_cl_ord_id)):
                out.append(Mismatch("order_missing_here", self.account, r.symbol,
                                    format_cl_ord_id(r.cl_ord_id) if r.cl_ord_id else "?", "not in the journal",
                                    f"{r.kind.value} report (the order was working at the venue)"))
            om.on_execution_report(r)

        core.client.set_report_handler(watch)
        try:
            om.cancel_all()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.cancel_wait_s
            adopted = [om.order(cl) for cl in rep.adopted]
            while any(not a.is_terminal for a in adopted) and loop.time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            core.client.set_report_handler(om.on_execution_report)
        for a in adopted:
            if a.is_terminal:
                rep.canceled.append(a.cl_ord_id)
            else:
                out.append(Mismatch("order_not_canceled", self.account, a.symbol, format_cl_ord_id(a.cl_ord_id),
                                    f"{a.state} leaves {a.leaves_qty}",
                                    f"not confirmed canceled within {self.cancel_wait_s:g} s"))
        return out

    async def compare_with_venue(self) -> list[Mismatch]:
        """Positions and fills (all sessions in the journal, plus this one's) against the
        venue's statement now: what `engine reconcile` runs on a running engine."""
        return await self._compare_statement()

    async def _compare_statement(self) -> list[Mismatch]:
        core, rep = self.core, self.report
        source = self.statement_source
        if not source:
            rep.statement = (f"none configured (set {STATEMENT_ENV} to the venue's statement URL or file): "
                             f"positions not checked against the venue")
            log.warning("recovery: %s", rep.statement)
            return []
        try:
            statement, extra = await load_venue_statement(source, core.instruments)
        except DataError as exc:
            rep.statement = f"{source}: unavailable"
            return [Mismatch("statement", self.account, "", "", "positions and fills", f"unavailable: {exc}")]
        rep.statement = (f"{source}: {sum(1 for f in statement.fills or () if f.account == self.account)} fills, "
                         f"positions compared")
        # every fill: the journal's, those of the recovery, those the order manager booked since
        history = self._history()
        for fill in core.portfolio.fills[self._recovery_fills:]:
            history.on_fill(fill)
        out = extra + reconcile(statement, history, self.account, source="statement")
        if history.positions() != core.portfolio.positions():    # cannot happen; never trade on it if it does
            out.append(Mismatch("position", self.account, "", "", f"rebuilt {core.portfolio.positions()}",
                                f"from all fills {history.positions()} (internal error)"))
        return out

    def _mismatch(self, kind: str, o: ReplayOrder, ours: str, theirs: str) -> Mismatch:
        return Mismatch(kind, self.account, o.symbol, format_cl_ord_id(o.cl_ord_id), ours, theirs)
