"""Order manager: state machine, pre-trade risk, execution reports, timeouts, ids."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext import risk as rk
from engine.orders import (
    LIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    ClOrdIdGenerator,
    ExecKind,
    OrdStatus,
    Side,
    Tif,
    format_cl_ord_id,
    parse_cl_ord_id,
)
from tests.engine_helpers import BTC_PRICE, XYZ_PRICE, FakeClient, make_om

S = OrdStatus
XYZ, BTC = 0, 1


def kernel_matches(om, kernel):
    """The kernel's open-order accounting equals the sum of the orders' reservations."""
    for inst in (XYZ, BTC):
        for side in (0, 1):
            want = sum(o.reserved for o in om.orders()
                       if o.kernel_open and o.inst_id == inst and int(o.side) == side)
            assert kernel.open_qty(inst, side) == want
        assert kernel.open_orders(inst) == sum(1 for o in om.orders() if o.kernel_open and o.inst_id == inst)
    assert kernel.anomalies == 0
    for o in om.orders():
        assert o.kernel_open == (o.state in LIVE_STATES), (o.cl_ord_id, o.state)


# ----------------------------------------------------------------------------- table

def test_transition_table_shape():
    assert TERMINAL_STATES == {S.FILLED, S.CANCELED, S.REPLACED, S.REJECTED, S.EXPIRED}
    assert set(TRANSITIONS) == set(OrdStatus)
    for src, targets in TRANSITIONS.items():
        assert targets <= set(OrdStatus)
        if src in TERMINAL_STATES:
            assert not targets
    # every state is reachable from PendingNew
    seen, todo = {S.PENDING_NEW}, [S.PENDING_NEW]
    while todo:
        for t in TRANSITIONS[todo.pop()]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    assert seen == set(OrdStatus)


# ----------------------------------------------------------------------------- happy path

def test_new_ack_partial_fill_fill():
    om, kernel, client, clock = make_om()
    states = []
    fills = []
    om.add_listener(on_order=lambda o: states.append(o.state), on_fill=fills.append)
    cl = om.submit("XYZ", "buy", 100, XYZ_PRICE)
    assert client.sent == [("new", cl, 100, XYZ_PRICE)]
    assert om.order(cl).state is S.PENDING_NEW
    assert kernel.open_qty(XYZ, 0) == 100 and kernel.open_orders(XYZ) == 1
    client.ack(cl, venue_order_id="V1")
    assert om.order(cl).state is S.NEW and om.order(cl).venue_order_id == "V1"
    client.fill(cl, 40, XYZ_PRICE - 1)
    o = om.order(cl)
    assert (o.state, o.cum_qty, o.leaves_qty) == (S.PARTIALLY_FILLED, 40, 60)
    assert kernel.position(XYZ) == 40 and kernel.open_qty(XYZ, 0) == 60
    client.fill(cl, 60, XYZ_PRICE, cum_qty=100)
    o = om.order(cl)
    assert (o.state, o.cum_qty, o.leaves_qty) == (S.FILLED, 100, 0)
    assert o.avg_px == pytest.approx((40 * (XYZ_PRICE - 1) + 60 * XYZ_PRICE) / 100)
    assert kernel.position(XYZ) == 100 and kernel.open_orders(XYZ) == 0
    assert states == [S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED, S.FILLED]
    assert [f.qty for f in fills] == [40, 60] and fills[-1].leaves_qty == 0
    assert not om.alerts
    kernel_matches(om, kernel)


def test_after_event_listeners_wait_for_the_flush_and_hear_everything_in_order():
    """During an event that defers them, after-event listeners (the runtime's logs and
    store rows) hear nothing; immediate ones (the strategy's on_order) hear at once. The
    flush, or any later emit, tells them everything in the order it happened."""
    om, kernel, client, _ = make_om()
    immediate, after = [], []
    om.add_listener(on_order=lambda o: immediate.append((o.cl_ord_id, o.state)))
    om.add_listener(on_order=lambda o: after.append((o.cl_ord_id, o.state)), after_event=True)
    om.defer_listeners = True
    a = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    b = om.submit("XYZ", "buy", 5000, XYZ_PRICE)          # risk reject: emitted too
    om.defer_listeners = False
    assert client.sent == [("new", a, 10, XYZ_PRICE)]      # the order left; nothing waited for them
    assert immediate == [(a, S.PENDING_NEW), (b, S.REJECTED)]
    assert after == [] and om.has_deferred
    client.ack(a, venue_order_id="V1")                     # a later emit flushes what waited first
    assert after == [(a, S.PENDING_NEW), (b, S.REJECTED), (a, S.NEW)]
    assert not om.has_deferred and om.flush_deferred() == 0
    # the snapshot is the state at the emit, not at the flush
    om.defer_listeners = True
    c = om.submit("XYZ", "buy", 7, XYZ_PRICE)
    om.defer_listeners = False
    client.ack(c, venue_order_id="V2")
    assert after[-2:] == [(c, S.PENDING_NEW), (c, S.NEW)]


def test_schedule_flush_runs_on_the_next_loop_turn_and_a_failing_listener_loses_nothing_else(caplog):
    import asyncio
    om, _, _, _ = make_om()
    heard = []

    def listener(o):
        if o.qty == 13:
            raise RuntimeError("listener bug")
        heard.append(o.qty)
    om.add_listener(on_order=listener, after_event=True)

    async def main():
        om.defer_listeners = True
        om.submit("XYZ", "buy", 13, XYZ_PRICE)
        om.submit("XYZ", "buy", 11, XYZ_PRICE)
        om.defer_listeners = False
        om.schedule_flush()
        om.schedule_flush()                     # once per turn, however often asked
        before = list(heard)
        await asyncio.sleep(0)
        return before
    with caplog.at_level("ERROR", logger="engine.orders"):
        before = asyncio.run(main())
    assert before == []
    # the failing call is logged; the order after it is still heard of
    assert heard == [11]
    assert "an order listener failed" in caplog.text and "listener bug" in caplog.text
    om.defer_listeners = True
    om.submit("XYZ", "buy", 12, XYZ_PRICE)
    om.defer_listeners = False
    om.schedule_flush()                         # without a running loop: at once
    assert heard == [11, 12] and not om.has_deferred


def _sent_but_unrecorded(om, kernel, clock, cl: int, qty: int = 10):
    """What the compiled path leaves between its write and its registration: the
    kernel has reserved the order (in C), the order manager does not know it yet; a
    settle hook records it."""
    assert kernel.check(XYZ, 0, qty, XYZ_PRICE, cl, clock.now) == rk.RISK_OK
    recorded = []

    def hook():
        if not recorded:
            recorded.append(om.record_sent(cl, "XYZ", 0, qty, XYZ_PRICE, 0, clock.now))
    om.add_settle_hook(hook)
    om.unsettled = True
    return recorded


def test_a_report_for_an_order_sent_but_not_yet_recorded_settles_it_first():
    om, kernel, client, clock = make_om()
    cl = (1 << 62) + 1
    recorded = _sent_but_unrecorded(om, kernel, clock, cl)
    client.ack(cl, venue_order_id="V9")
    assert recorded and not om.unsettled
    assert om.order(cl).state is S.NEW and not om.alerts          # never an "unknown order"
    kernel_matches(om, kernel)


@pytest.mark.parametrize("access", ["cancel_all", "open_orders", "order", "orders", "cancel", "check_timeouts"])
def test_every_way_to_the_orders_settles_what_was_sent_first(access):
    """The kill switch cancels through cancel_all: an order sent a moment ago is among
    the cancelled, not left working at the venue."""
    om, kernel, client, clock = make_om()
    cl = (1 << 62) + 2
    _sent_but_unrecorded(om, kernel, clock, cl)
    result = {"cancel_all": lambda: om.cancel_all(), "open_orders": lambda: [o.cl_ord_id for o in om.open_orders()],
              "order": lambda: om.order(cl), "orders": lambda: [o.cl_ord_id for o in om.orders()],
              "cancel": lambda: om.cancel(cl), "check_timeouts": lambda: om.check_timeouts()}[access]()
    assert not om.unsettled and om.order(cl) is not None
    if access in ("cancel_all", "open_orders", "orders"):
        assert cl in result
    if access in ("cancel_all", "cancel"):
        assert ("cancel", cl) == client.sent[-1][:2]


def test_an_order_already_sent_is_recorded_even_when_the_journal_refuses_it():
    def journal(event, data):
        if event == "submit":
            raise OSError("disk full")
    om, kernel, client, clock = make_om(journal=journal)
    cl = (1 << 62) + 3
    assert kernel.check(XYZ, 0, 10, XYZ_PRICE, cl, clock.now) == rk.RISK_OK
    order = om.record_sent(cl, "XYZ", 0, 10, XYZ_PRICE, 0, clock.now)
    assert om.order(cl) is order and order.state is S.PENDING_NEW
    assert order.reserved == 10 and order.kernel_open        # the kernel's view and the manager's agree
    assert om.alerts["journal_failed"] == 1
    client.canceled(cl)
    assert om.order(cl).state is S.CANCELED and kernel.open_qty(XYZ, 0) == 0


def test_a_fill_is_heard_after_the_order_updates_that_waited():
    om, kernel, client, clock = make_om()
    heard = []
    om.add_listener(on_order=lambda o: heard.append(("order", o.state)), after_event=True)
    om.add_listener(on_fill=lambda f: heard.append(("fill", f.qty)))
    om.defer_listeners = True
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    om.defer_listeners = False
    client.fill(cl, 10, XYZ_PRICE, cum_qty=10)
    assert heard == [("order", S.PENDING_NEW), ("fill", 10), ("order", S.FILLED)]


def test_risk_reject_is_logged_counted_and_never_sent(caplog):
    om, kernel, client, _ = make_om()
    with caplog.at_level("INFO", logger="engine.orders"):
        cl = om.submit("XYZ", Side.SELL, 5000, XYZ_PRICE)   # > max_order_qty 1000
    o = om.order(cl)
    assert o.state is S.REJECTED and o.reject_reason == "RISK_REJECT_MAX_ORDER_QTY"
    assert client.sent == []
    assert om.reject_counts["RISK_REJECT_MAX_ORDER_QTY"] == 1
    assert "RISK_REJECT_MAX_ORDER_QTY" in caplog.text
    assert kernel.open_orders(XYZ) == 0
    # price band (5 %): 106.00 is outside
    cl = om.submit("XYZ", "buy", 1, 10_600)
    assert om.order(cl).reject_reason == "RISK_REJECT_PRICE_BAND"
    # a market order is priced at the reference by the kernel and passes
    cl = om.submit("XYZ", "buy", 1, None, "IOC")
    assert om.order(cl).state is S.PENDING_NEW and client.sent[-1][3] is None


def test_unknown_symbol_and_malformed_calls():
    om, _, client, _ = make_om()
    cl = om.submit("NOPE", "buy", 1, 100)
    assert om.order(cl).reject_reason == "UNKNOWN_INSTRUMENT" and client.sent == []
    with pytest.raises(ValueError, match="side"):
        om.submit("XYZ", "long", 1, 100)
    with pytest.raises(ValueError, match="tif"):
        om.submit("XYZ", "buy", 1, 100, "FOREVER")
    with pytest.raises(TypeError, match="qty"):
        om.submit("XYZ", "buy", 1.5, 100)
    with pytest.raises(TypeError, match="price"):
        om.submit("XYZ", "buy", 1, 100.0)
    cl = om.submit("XYZ", "buy", 0, XYZ_PRICE)
    assert om.order(cl).reject_reason == "RISK_REJECT_INVALID_ORDER"
    cl = om.submit("XYZ", "buy", 2**70, XYZ_PRICE)
    assert om.order(cl).reject_reason == "INVALID_ORDER"


def test_blocked_refuses_new_orders_but_lets_cancels_through():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.ack(cl)
    om.block("reconciliation", "position mismatch")
    assert om.blocked and "reconciliation" in om.block_reasons
    cl2 = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    assert om.order(cl2).reject_reason == "TRADING_BLOCKED"
    assert om.replace(cl, price=XYZ_PRICE - 1) is not None
    assert om.order(cl).state is S.NEW      # the replacement was refused, not the order
    assert om.cancel(cl) and client.kinds()[-1] == "cancel"
    om.unblock("reconciliation")
    assert not om.blocked
    kernel_matches(om, kernel)


# ----------------------------------------------------------------------------- reports

def test_duplicate_exec_id_is_ignored_and_counted():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 100, XYZ_PRICE)
    client.ack(cl)
    r = client.fill(cl, 30, XYZ_PRICE)
    om.on_execution_report(r)           # the same report again
    om.on_execution_report(r)
    assert om.stats["duplicate_exec_ids"] == 2
    assert om.order(cl).cum_qty == 30 and kernel.position(XYZ) == 30
    kernel_matches(om, kernel)


def test_fill_after_cancel_request_counts():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "sell", 100, XYZ_PRICE)
    client.ack(cl)
    assert om.cancel(cl)
    cancel_id = client.sent[-1][2]
    assert om.order(cl).state is S.PENDING_CANCEL
    client.fill(cl, 30, XYZ_PRICE)                       # fill raced the cancel
    o = om.order(cl)
    assert o.state is S.PENDING_CANCEL and o.cum_qty == 30
    assert kernel.position(XYZ) == -30 and kernel.open_qty(XYZ, 1) == 70
    client.canceled(cancel_id, orig_cl_ord_id=cl)        # answer to the cancel request id
    assert om.order(cl).state is S.CANCELED
    assert kernel.open_qty(XYZ, 1) == 0 and kernel.position(XYZ) == -30
    assert not om.alerts
    kernel_matches(om, kernel)


def test_fill_completing_during_cancel_then_late_cancel_reject():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 50, XYZ_PRICE)
    client.ack(cl)
    om.cancel(cl)
    cancel_id = client.sent[-1][2]
    client.fill(cl, 50, XYZ_PRICE)
    assert om.order(cl).state is S.FILLED
    client.report(ExecKind.CANCEL_REJECT, cancel_id, orig_cl_ord_id=cl, reason="too late to cancel")
    assert om.order(cl).state is S.FILLED
    assert om.stats["late_cancel_rejects"] == 1 and not om.alerts
    kernel_matches(om, kernel)


def test_cancel_reject_restores_state():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 50, XYZ_PRICE)
    client.ack(cl)
    client.fill(cl, 10, XYZ_PRICE)
    om.cancel(cl)
    client.report(ExecKind.CANCEL_REJECT, client.sent[-1][2], orig_cl_ord_id=cl, reason="busy")
    assert om.order(cl).state is S.PARTIALLY_FILLED
    kernel_matches(om, kernel)


def test_illegal_transition_is_not_applied_and_alerts():
    alerts = []
    om, kernel, client, _ = make_om(alert=lambda kind, msg: alerts.append(kind))
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.ack(cl)
    client.report(ExecKind.REJECTED, cl, reason="late reject")     # New -> Rejected: illegal
    assert om.order(cl).state is S.NEW
    assert om.stats["illegal_transitions"] == 1 and alerts == ["illegal_transition"]
    assert om.illegal[-1][:3] == (cl, S.NEW, S.REJECTED)
    client.canceled(cl)
    client.ack(cl)                                                   # ack after Canceled: illegal
    assert om.order(cl).state is S.CANCELED and om.stats["illegal_transitions"] == 2
    client.canceled(cl)                                              # duplicate: just counted
    assert om.stats["duplicate_reports"] == 1 and om.stats["illegal_transitions"] == 2
    kernel_matches(om, kernel)


def test_fill_on_terminal_order_is_booked_and_alerted():
    om, kernel, client, _ = make_om()
    other = om.submit("XYZ", "buy", 20, XYZ_PRICE)      # another open buy: its reservation must survive
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.ack(cl)
    client.canceled(cl)
    client.fill(cl, 10, XYZ_PRICE)
    assert om.order(cl).state is S.CANCELED and om.order(cl).cum_qty == 10
    assert om.alerts["illegal_transition"] == 1
    assert kernel.position(XYZ) == 10
    assert kernel.open_qty(XYZ, 0) == 20 and om.order(other).reserved == 20
    kernel_matches(om, kernel)


def test_overfill_alerts_and_keeps_kernel_exact():
    om, kernel, client, _ = make_om()
    keep = om.submit("XYZ", "sell", 7, XYZ_PRICE)
    cl = om.submit("XYZ", "sell", 10, XYZ_PRICE)
    client.fill(cl, 15, XYZ_PRICE)
    assert om.order(cl).state is S.FILLED and om.alerts["overfill"] == 1
    assert kernel.position(XYZ) == -15 and kernel.open_qty(XYZ, 1) == 7
    assert om.order(keep).reserved == 7
    kernel_matches(om, kernel)


def test_unknown_order_reports_alert_and_unknown_fill_blocks():
    om, _, client, _ = make_om()
    client.ack(12345)
    assert om.alerts["unknown_order"] == 1 and not om.blocked
    client.fill(12345, 5, XYZ_PRICE, symbol="XYZ")
    assert om.blocked and "unknown_fill" in om.block_reasons
    cl = om.submit("XYZ", "buy", 1, XYZ_PRICE)
    assert om.order(cl).reject_reason == "TRADING_BLOCKED"


def test_bad_fill_values_are_ignored_with_alert():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.fill(cl, 0, XYZ_PRICE)
    client.fill(cl, 5, -1)
    assert om.order(cl).cum_qty == 0 and om.alerts["bad_report"] == 2
    kernel_matches(om, kernel)


def test_venue_reject_releases_reservation():
    om, kernel, client, _ = make_om()
    cl = om.submit("BTC", "buy", 1000, BTC_PRICE)
    assert kernel.open_qty(BTC, 0) == 1000
    client.report(ExecKind.REJECTED, cl, reason="halted")
    o = om.order(cl)
    assert o.state is S.REJECTED and o.reject_reason == "VENUE: halted"
    assert om.reject_counts["VENUE_REJECT"] == 1
    kernel_matches(om, kernel)


def test_cancel_before_ack_then_reject():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    assert om.cancel(cl) and om.order(cl).state is S.PENDING_CANCEL
    client.ack(cl)                                  # ack of the new arrives: still pending cancel
    assert om.order(cl).state is S.PENDING_CANCEL and om.order(cl).restore_state is S.NEW
    client.canceled(client.sent[-1][2], orig_cl_ord_id=cl)
    assert om.order(cl).state is S.CANCELED
    cl2 = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    om.cancel(cl2)
    client.report(ExecKind.REJECTED, cl2, reason="bad")   # the new order itself was refused
    assert om.order(cl2).state is S.REJECTED
    kernel_matches(om, kernel)


def test_send_failure_rejects_and_releases():
    alerts = []
    om, kernel, client, _ = make_om(alert=lambda k, m: alerts.append(k))
    client.fail_next = True
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    o = om.order(cl)
    assert o.state is S.REJECTED and o.reject_reason.startswith("SEND_FAILED")
    assert alerts == ["send_failed"]
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.ack(cl)
    client.fail_next = True
    assert om.cancel(cl) is False and om.order(cl).state is S.NEW
    kernel_matches(om, kernel)


# ----------------------------------------------------------------------------- replace

def test_replace_confirmed():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 100, XYZ_PRICE)
    client.ack(cl)
    client.fill(cl, 20, XYZ_PRICE)
    new = om.replace(cl, qty=150, price=XYZ_PRICE - 5)
    assert client.sent[-1] == ("replace", cl, new, 150, XYZ_PRICE - 5)
    assert om.order(cl).state is S.PENDING_REPLACE and om.order(new).state is S.PENDING_NEW
    # both reserved while the replace is in flight (conservative)
    assert kernel.open_qty(XYZ, 0) == 80 + 130
    client.fill(cl, 5, XYZ_PRICE)                 # a fill on the original while pending
    assert om.order(cl).state is S.PENDING_REPLACE and om.order(cl).cum_qty == 25
    client.report(ExecKind.REPLACED, new, orig_cl_ord_id=cl)
    o, r = om.order(cl), om.order(new)
    assert o.state is S.REPLACED and o.replaced_by == new
    assert r.state is S.PARTIALLY_FILLED and r.cum_qty == 25 and r.leaves_qty == 125
    assert r.orig_cl_ord_id == cl and r.price == XYZ_PRICE - 5
    assert kernel.position(XYZ) == 25
    client.fill(new, 125, XYZ_PRICE - 5)
    assert om.order(new).state is S.FILLED
    assert kernel.open_orders(XYZ) == 0 and kernel.open_qty(XYZ, 0) == 0
    kernel_matches(om, kernel)


def test_replace_refused_by_venue_and_by_risk():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "sell", 100, XYZ_PRICE)
    client.ack(cl)
    new = om.replace(cl, price=XYZ_PRICE + 1)
    client.report(ExecKind.REPLACE_REJECT, new, orig_cl_ord_id=cl, reason="unknown order")
    assert om.order(cl).state is S.NEW and om.order(new).state is S.REJECTED
    assert om.order(cl).replaced_by == 0
    kernel_matches(om, kernel)
    n = len(client.sent)
    bad = om.replace(cl, qty=5000)                 # beyond max_order_qty: the kernel refuses
    assert om.order(bad).reject_reason == "RISK_REJECT_MAX_ORDER_QTY"
    assert om.order(cl).state is S.NEW and len(client.sent) == n
    assert om.replace(cl) is None                  # nothing changes
    assert om.replace(999) is None
    kernel_matches(om, kernel)


def test_cancel_while_replace_in_flight_cancels_the_survivor():
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.ack(cl)
    new = om.replace(cl, price=XYZ_PRICE - 1)
    assert om.cancel(cl) and om.cancel(new)
    assert client.kinds() == ["new", "replace"]
    client.report(ExecKind.REPLACED, new, orig_cl_ord_id=cl)
    assert client.sent[-1][0] == "cancel" and client.sent[-1][1] == new
    client.canceled(client.sent[-1][2], orig_cl_ord_id=new)
    assert om.order(new).state is S.CANCELED and not om.open_orders()
    kernel_matches(om, kernel)


# ----------------------------------------------------------------------------- mass cancel

@pytest.mark.parametrize("mass", [True, False])
def test_cancel_all(mass):
    om, kernel, client, _ = make_om(client=FakeClient(supports_mass_cancel=mass))
    ids = [om.submit("XYZ", "buy", 10, XYZ_PRICE - i) for i in range(3)]
    ids.append(om.submit("BTC", "sell", 5, BTC_PRICE))
    for cl in ids:
        client.ack(cl)
    covered = om.cancel_all()
    assert sorted(covered) == sorted(ids)
    kinds = client.kinds()[len(ids):]
    assert kinds == (["mass_cancel"] if mass else ["cancel"] * 4)
    assert all(om.order(cl).state is S.PENDING_CANCEL for cl in ids)
    for cl in ids:
        client.canceled(cl)
    assert not om.open_orders()
    kernel_matches(om, kernel)


def test_cancel_all_one_symbol():
    om, _, client, _ = make_om()
    a = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    b = om.submit("BTC", "buy", 10, BTC_PRICE)
    assert om.cancel_all("BTC") == [b]
    assert om.order(a).state is S.PENDING_NEW


# ----------------------------------------------------------------------------- timeouts

def test_unanswered_orders_are_queried_not_assumed():
    alerts = []
    om, kernel, client, clock = make_om(status_timeout_ns=1_000, max_status_queries=2,
                                        alert=lambda k, m: alerts.append(k))
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    assert om.check_timeouts() == []
    clock.advance(1_000)
    assert om.check_timeouts() == [cl] and client.sent[-1] == ("status", cl)
    assert om.check_timeouts() == []               # not again before another timeout
    clock.advance(1_000)
    assert om.check_timeouts() == [cl]
    clock.advance(1_000)
    assert om.check_timeouts() == [] and alerts == ["order_unresolved"]
    assert om.order(cl).state is S.PENDING_NEW     # never assumed
    client.report(ExecKind.ORDER_STATUS, cl, ord_status=S.NEW, cum_qty=0)
    assert om.order(cl).state is S.NEW
    kernel_matches(om, kernel)


def test_status_answers_resolve_pending_states():
    om, kernel, client, clock = make_om(status_timeout_ns=1_000)
    lost = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.report(ExecKind.ORDER_STATUS, lost, ord_status=S.REJECTED, reason="unknown order")
    assert om.order(lost).state is S.REJECTED
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.ack(cl)
    om.cancel(cl)
    n = len(client.sent)
    client.report(ExecKind.ORDER_STATUS, cl, ord_status=S.NEW, cum_qty=0)   # cancel was lost
    assert client.sent[n][0] == "cancel" and om.stats["cancels_resent"] == 1
    client.report(ExecKind.ORDER_STATUS, cl, ord_status=S.CANCELED, cum_qty=0)
    assert om.order(cl).state is S.CANCELED
    kernel_matches(om, kernel)


def test_status_answer_with_missed_fill_books_it():
    om, kernel, client, _ = make_om()
    fills = []
    om.add_listener(on_fill=fills.append)
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.ack(cl)
    client.fill(cl, 4, XYZ_PRICE)
    client.report(ExecKind.ORDER_STATUS, cl, ord_status=S.FILLED, cum_qty=10,
                  avg_px=(4 * XYZ_PRICE + 6 * (XYZ_PRICE - 2)) / 10)
    o = om.order(cl)
    assert o.state is S.FILLED and o.cum_qty == 10
    assert fills[-1].inferred and fills[-1].qty == 6 and fills[-1].price == XYZ_PRICE - 2
    assert om.alerts["missed_fill"] == 1 and kernel.position(XYZ) == 10
    kernel_matches(om, kernel)


def test_adopt_registers_with_kernel_and_ids_stay_above():
    om, kernel, client, _ = make_om()
    big = (om.ids.prefix + 5) << 32 | 7
    o = om.adopt(big, "XYZ", "sell", 30, XYZ_PRICE, cum_qty=10)
    assert o.state is S.PARTIALLY_FILLED and kernel.open_qty(XYZ, 1) == 20
    assert om.ids.next() > big
    client.canceled(big)
    kernel_matches(om, kernel)


# ----------------------------------------------------------------------------- ids

def test_client_order_ids_unique_monotonic_restart_safe():
    g = ClOrdIdGenerator(session_start_ns=1_700_000_000_123_456_789)
    ids = [g.next() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    # a restart in the same second (or with a clock behind) stays above, given the floor
    g2 = ClOrdIdGenerator(session_start_ns=1_699_999_999_000_000_000, floor=ids[-1])
    assert g2.next() > ids[-1]
    # a later start is above without a floor
    g3 = ClOrdIdGenerator(session_start_ns=1_700_000_001_000_000_000)
    assert g3.next() > ids[-1]
    for cl in ids[:5] + [1, 2**64 - 1]:
        text = format_cl_ord_id(cl)
        assert len(text) <= 13 and text.isalnum() and parse_cl_ord_id(text) == cl
    for bad in ("", "x-1", "0"):
        with pytest.raises(ValueError):
            parse_cl_ord_id(bad)
    with pytest.raises(ValueError):
        format_cl_ord_id(0)


def test_side_and_tif_parse():
    assert Side.parse("BUY") is Side.BUY and Side.parse("s") is Side.SELL and Side.parse(1) is Side.SELL
    assert Tif.parse("ioc") is Tif.IOC and Tif.parse(1) is Tif.GTC
    assert Tif.DAY == rk.SIDE_BUY == 0          # values shared with core_ext
    for bad in (True, 2, "x", None):
        with pytest.raises(ValueError):
            Side.parse(bad)


# ----------------------------------------------------------------------------- property test

_events = st.lists(st.tuples(
    st.sampled_from(["submit", "cancel", "replace", "ack", "fill", "canceled", "rejected", "expired",
                     "cancel_reject", "replaced", "replace_reject", "status", "dup", "pending_cancel",
                     "cancel_all"]),
    st.integers(0, 50), st.integers(1, 60), st.integers(-3, 3)), min_size=1, max_size=40)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events, st.booleans())
def test_state_machine_never_reaches_an_illegal_state(events, mass):
    om, kernel, client, clock = make_om(client=FakeClient(supports_mass_cancel=mass),
                                        status_timeout_ns=10)
    last_state: dict[int, OrdStatus] = {}
    position = {XYZ: 0, BTC: 0}

    def on_order(snap):
        prev = last_state.get(snap.cl_ord_id)
        if prev is not None and prev is not snap.state:
            assert snap.state in TRANSITIONS[prev], (prev, snap.state)
        if prev is None:
            assert snap.state in (S.PENDING_NEW, S.REJECTED)
        last_state[snap.cl_ord_id] = snap.state

    def on_fill(f):
        position[f.inst_id] += f.qty if f.side is Side.BUY else -f.qty

    om.add_listener(on_order=on_order, on_fill=on_fill)
    reports = []
    for kind, pick, qty, dpx in events:
        clock.advance(7)
        ids = sorted(last_state)
        cl = ids[pick % len(ids)] if ids else 0
        o = om.order(cl)
        if kind == "submit":
            sym = "XYZ" if pick % 2 else "BTC"
            px = (XYZ_PRICE if sym == "XYZ" else BTC_PRICE) + dpx
            om.submit(sym, pick % 2, qty, px, "DAY")
        elif kind == "cancel":
            om.cancel(cl)
        elif kind == "cancel_all":
            om.cancel_all()
        elif kind == "replace" and o is not None:
            om.replace(cl, qty=qty, price=(o.price or XYZ_PRICE) + dpx)
        elif kind == "dup" and reports:
            om.on_execution_report(reports[pick % len(reports)])
        elif o is not None:
            px = o.price or XYZ_PRICE
            if kind == "ack":
                reports.append(client.ack(cl))
            elif kind == "fill":
                reports.append(client.fill(cl, qty, px))
            elif kind == "canceled":
                reports.append(client.canceled(o.cancel_id or cl, orig_cl_ord_id=cl))
            elif kind == "rejected":
                reports.append(client.report(ExecKind.REJECTED, cl))
            elif kind == "expired":
                reports.append(client.report(ExecKind.EXPIRED, cl))
            elif kind == "cancel_reject":
                reports.append(client.report(ExecKind.CANCEL_REJECT, o.cancel_id or cl, orig_cl_ord_id=cl))
            elif kind == "pending_cancel":
                reports.append(client.report(ExecKind.PENDING_CANCEL, cl))
            elif kind in ("replaced", "replace_reject") and o.orig_cl_ord_id:
                k = ExecKind.REPLACED if kind == "replaced" else ExecKind.REPLACE_REJECT
                reports.append(client.report(k, cl, orig_cl_ord_id=o.orig_cl_ord_id))
            elif kind == "status":
                om.check_timeouts()
                st_ = [S.NEW, S.CANCELED, S.REJECTED, S.PARTIALLY_FILLED][pick % 4]
                reports.append(client.report(ExecKind.ORDER_STATUS, cl, ord_status=st_, cum_qty=o.cum_qty))
        # invariants after every step
        for order in om.orders():
            assert order.state in OrdStatus
            assert order.cum_qty >= 0 and order.leaves_qty >= 0
            assert last_state[order.cl_ord_id] is order.state
        kernel_matches(om, kernel)
        assert kernel.position(XYZ) == position[XYZ] and kernel.position(BTC) == position[BTC]


def test_status_answer_under_the_replacements_id_counts_the_chain_fills_once():
    """The venue answers a status query for an order whose replace is in flight under the
    replacement's id, with the chain's cumulative quantity: the replace is applied first,
    so the fills already booked on the original are not booked again as missed fills."""
    om, kernel, client, _ = make_om()
    cl = om.submit("XYZ", "buy", 100, XYZ_PRICE)
    client.ack(cl)
    client.fill(cl, 3, XYZ_PRICE)
    new = om.replace(cl, qty=100, price=XYZ_PRICE - 5)
    client.report(ExecKind.ORDER_STATUS, new, ord_status=S.PARTIALLY_FILLED, cum_qty=3, leaves_qty=97,
                  avg_px=float(XYZ_PRICE))
    o, r = om.order(cl), om.order(new)
    assert o.state is S.REPLACED and r.state is S.PARTIALLY_FILLED
    assert r.cum_qty == 3 and kernel.position(XYZ) == 3       # not 6
    assert not [a for a in om.alerts if "missed_fill" in str(a)]
    # a fill the venue made on the chain that we did not see is still booked, once
    client.report(ExecKind.ORDER_STATUS, new, ord_status=S.PARTIALLY_FILLED, cum_qty=5, leaves_qty=95,
                  avg_px=float(XYZ_PRICE))
    assert om.order(new).cum_qty == 5 and kernel.position(XYZ) == 5
    kernel_matches(om, kernel)
