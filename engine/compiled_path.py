"""A compiled (Cython) strategy in `engine run`: the tick-to-trade path in C.

With ``[strategy] strategy = "package.module:Class"`` naming a ``core_ext.t2t.CStrategy``
subclass (docs/CYTHON_STRATEGY.md), the runtime hands every feed packet to
``core_ext.t2t.TickToTrade`` instead of the Python path: the feed handler's own applier
updates the books, and for each top-of-book change the risk kernel's reference price
is set, the strategy's ``cdef on_top`` runs, each order request is checked by
``RiskKernel.check_order`` and encoded -- all C calls -- and the FIX bytes go straight
into the venue session (stored for resend, written). Everything else is the engine as
usual: the venue's reports reach the order manager through the FIX client, the risk
policy and the portfolio see every top change (``TradingCore.on_book``), the kill
switch trips the kernel (which then refuses every order in C) and cancels through the
order manager, and monitoring, logs and the store see every order.

What differs from a Python strategy, by design:

* **Journal after the send.** The order manager learns of each order after its bytes
  were written (``OrderManager.record_sent``, see the next point), and journals it
  then -- not before, as for a Python strategy, and never fsynced first
  (that would cost a disk flush per order, hundreds of microseconds). A crash between
  the write and the journal can leave an order at the venue that the journal does not
  know: the restart's reconciliation with the venue (order status, statement) finds
  it and blocks trading until it is resolved.
* **Bookkeeping after the event.** The order manager, the journal and the FIX client
  learn of a packet's orders on the event loop's next turn -- or the moment anything
  reads or changes the orders (a report, a cancel, the kill switch, a status query:
  ``OrderManager.settle``), whichever comes first -- and the runtime's order log
  lines, store rows and metrics after that (or before any later emit, never after an
  order's own reports). In a burst of packets, each packet's orders leave before the
  previous packet's bookkeeping. The risk kernel has reserved each order in C before
  it was encoded: limits hold in between.
* **FIX venues, real stages.** The strategy writes FIX bytes: it runs in ``small`` and
  ``live`` with ``[venue] protocol = "fix"``; other stages refuse to start it.
* **Client order ids** of the compiled path are numbered from 2**31 within the
  session's prefix; the order manager's own (cancels, the kill switch's drills) stay
  below it.
* **Gating.** While the order manager is blocked (a reconciliation mismatch, an
  unknown fill), the strategy is stopped, or the session is not logged on, packets
  only update the books: the strategy is not called.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from core_ext import risk as rk
from core_ext import t2t as ct
from engine.config import Config
from engine.errors import EngineError
from engine.strategy import CompiledStrategy
from gateway.instruments import tick_parts

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger("engine.compiled")

#: the compiled path's client order ids start here within the session prefix
FIRST_SEQ = 1 << 31


def instrument_rows(config: Config, symbols: Iterable[str] | None = None) -> list[tuple[str, int, int, int, int]]:
    """TickToTrade's instrument rows, (symbol, inst_id, price4_per_tick, decimals,
    price_mult), for `symbols` in that order (default: the config's instruments)."""
    from engine.runtime import price4_per_tick
    instruments = config.instruments_by_symbol
    rows = []
    for symbol in (symbols if symbols is not None else instruments):
        inst = instruments[symbol]
        mult, decimals = tick_parts(inst.tick_size)
        rows.append((symbol, inst.inst_id, price4_per_tick(inst.tick_size), decimals, mult))
    return rows


class CompiledPath:
    """Wires a CompiledStrategy into a started Runtime (its feed and FIX session)."""

    def __init__(self, rt: Runtime) -> None:
        strategy = rt.core.host.strategy
        if not isinstance(strategy, CompiledStrategy):
            raise EngineError("the compiled path needs a compiled strategy")
        venue = rt.config.venue
        if rt.fix is None or venue is None or venue.protocol != "fix":
            raise EngineError(f"compiled strategy {rt.config.strategy.spec} writes FIX: it runs in the stages "
                              f"small and live with [venue] protocol = \"fix\" (stage {rt.stage} has "
                              f"{'no venue session' if rt.fix is None else venue.protocol})")
        self.rt = rt
        self.core = rt.core
        self.om = rt.core.om
        self.feed = rt.feed
        self.fix = rt.fix
        self.session = rt.fix.client.session
        self.symbols = list(self.feed.applier.symbols)
        rows = instrument_rows(rt.config, self.symbols)
        ids = self.om.ids
        ids.max_seq = FIRST_SEQ - 1            # the order manager's own ids stay below ours
        self.t2t = ct.TickToTrade(rows, self.core.kernel, self.session.encoder, strategy.cstrategy,
                                  (ids.prefix << 32) | FIRST_SEQ, applier=self.feed.applier)
        self.owner = rt.core.host.ctx.owner
        self.errors = 0
        self.feed._apply = self.apply          # the feed handler's gap logic stays in front
        self.om.add_settle_hook(self._settle)

    def apply(self, packet):
        """One feed packet (the feed handler's apply hook) -> its ItchApplyResult."""
        t0 = time.perf_counter_ns()
        t, feed = self.t2t, self.feed
        if t.applier is not feed.applier:     # the feed rebuilt its books from sequence 1
            t.use_applier(feed.applier)
        session = self.session
        if self.om.blocked or not self.core.host.running or not session.logged_on:
            return feed.applier.apply_packet(packet)           # books only: nothing may trade
        first_seq = t.next_seq_num = session.next_sender_seq
        packets = t.packets
        try:
            out = t.process(packet)
        except Exception as exc:  # noqa: BLE001 - a strategy bug stops the strategy, not the engine
            if t.packets == packets:
                raise                       # the packet itself did not apply: the feed handler's error
            self.errors += 1
            log.error("compiled strategy failed; stopping it", exc_info=exc)
            # what this packet encoded never reached the session: not sent. Recorded
            # before the strategy is stopped, so nothing its stop reads can settle
            # these rows as sent.
            if t.pending_orders:
                self.register(unsent_from_seq=first_seq)
            self.core.host._failed("on_top", exc)
            return t.last_result
        if out is not None:
            # the packet's orders in one write; the session keeps them for resends after
            count = t.next_seq_num - first_seq
            try:
                session.commit_encoded(b"D", out, count=count)
            except Exception as exc:  # noqa: BLE001 - the packet applied: the feed must go on
                self._commit_failed(exc, first_seq, count)
                return t.last_result
            if self.rt._tick_rec is not None:       # tick-to-order: packet in -> bytes written
                self.rt._tick_rec.record_since(t0)
        if t.pending_orders:
            self.om.settle_soon()
        return t.last_result

    def _commit_failed(self, exc: Exception, first_seq: int, count: int) -> None:
        """The FIX session refused or failed the packet's orders. Nothing written (the
        sequence number did not move: refused before the write): they are recorded as
        not sent, their reservations released, and the strategy stopped -- its bytes
        were not what the session expects. Written, then failed (keeping them for
        resends): they are at the venue and registered as sent."""
        self.errors += 1
        written = self.session.next_sender_seq != first_seq
        log.error("compiled path: the FIX session failed %d order(s) %s", count,
                  "after writing them" if written else "before writing them", exc_info=exc)
        if written:
            self.om.settle_soon()
            return
        self.register(unsent_from_seq=first_seq)
        self.core.host._failed("commit", exc)

    def _settle(self) -> None:
        if self.t2t.pending_orders:
            self.register()

    def register(self, unsent_from_seq: int | None = None) -> int:
        """The order log -> the order manager (and the FIX client's memory of what it
        sent), after the bytes left. Returns how many orders. ``unsent_from_seq``: the
        orders encoded with this MsgSeqNum or later never reached the session (the
        strategy failed mid-packet): their reservation goes back to the kernel and they
        are recorded as rejected."""
        rows = self.t2t.drain_orders().tolist()
        om, rt = self.om, self.rt
        # the runtime's logs, store rows and monitoring hear of these orders on the loop's
        # next turn (OrderManager.defer_listeners): the order manager knows them now. The
        # runtime's tick-to-order stamp is not for them (apply took it at the write).
        deferring, om.defer_listeners = om.defer_listeners, True
        feed_t0, rt._feed_t0 = rt._feed_t0, 0
        try:
            self._register_rows(rows, unsent_from_seq)
        finally:
            om.defer_listeners = deferring
            rt._feed_t0 = feed_t0
        om.schedule_flush()
        return len(rows)

    def _register_rows(self, rows: list, unsent_from_seq: int | None) -> None:
        om, symbols, kernel = self.om, self.symbols, self.core.kernel
        for cl, ts_ns, inst_id, qty, price, seq, _pseq, idx, outcome, side, tif in rows:
            if side not in (0, 1) or tif > 3:      # refused by the kernel in C: nothing to track
                log.error("compiled strategy asked for an order with side %s tif %s (refused, outcome %s)",
                          side, tif, outcome)
                continue
            refused = ""
            if outcome != ct.OUTCOME_SENT:
                refused = ("ENCODE_FAILED" if outcome == ct.OUTCOME_ENCODE_FAILED
                           else rk.REJECT_REASONS.get(outcome, f"RISK_{outcome}"))
            elif unsent_from_seq is not None and seq >= unsent_from_seq:
                kernel.on_cancel(inst_id, side, qty)
                refused = "NOT_SENT: the strategy failed before the packet's orders were written"
            try:
                order = om.record_sent(cl, symbols[idx], side, qty, None if price == rk.NO_PRICE else price,
                                       tif, ts_ns, refused=refused, owner=self.owner)
                if not refused:
                    self.fix.record_sent(order)
            except Exception:  # noqa: BLE001 - one row's failure must not lose the others
                log.exception("compiled path: recording order %s failed", cl)
