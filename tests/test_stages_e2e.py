"""End to end against the venue simulator over loopback: every pre-trade limit rejects a
violating order before it reaches the venue (checked at the venue: it never saw it), and a
daily-loss breach trips the kill switch and leaves no open order of ours at the venue."""
from __future__ import annotations

import asyncio
import time

from engine.orders import OrdStatus, Side
from tests.test_runtime import start_runtime, start_venue


def test_every_limit_rejects_before_the_venue_sees_the_order(tmp_path):
    async def main():
        venue = await start_venue()
        rt = await start_runtime(tmp_path, venue, "small")
        try:
            core = rt.core
            book = rt.books["AAPL"]
            limits = core.config.risk.instruments["AAPL"].kernel_limits()
            mid = (book.best_bid + book.best_ask) // 2
            before = venue.exchange.orders_received
            violations = {
                "RISK_REJECT_MAX_ORDER_QTY": dict(qty=limits["max_order_qty"] + 1, price=mid),
                "RISK_REJECT_MAX_ORDER_NOTIONAL": dict(qty=limits["max_order_qty"], price=mid * 3),
                "RISK_REJECT_PRICE_BAND": dict(qty=1, price=mid * 2),
            }
            rejected = {}
            for expected, order in violations.items():
                oid = core.om.submit("AAPL", Side.BUY, order["qty"], order["price"], "DAY", owner="strategy")
                o = core.om.order(oid)
                rejected[expected] = (o.state, o.reject_reason)
            # max open orders: fill the allowance with passive orders, the next one is refused
            passive = book.best_bid - 50
            accepted = []
            for _ in range(limits["max_open_orders"]):
                accepted.append(core.om.submit("AAPL", Side.BUY, 1, passive, "DAY", owner="strategy"))
            extra = core.om.submit("AAPL", Side.BUY, 1, passive, "DAY", owner="strategy")
            rejected["RISK_REJECT_MAX_OPEN_ORDERS"] = (core.om.order(extra).state, core.om.order(extra).reject_reason)
            await asyncio.sleep(0.5)
            venue_saw = venue.exchange.orders_received - before
            core.om.cancel_all()
            await asyncio.sleep(0.5)
        finally:
            await rt.stop()
            await venue.stop()
        return rejected, venue_saw, len(accepted)
    rejected, venue_saw, n_accepted = asyncio.run(main())
    for expected, (state, reason) in rejected.items():
        assert state == OrdStatus.REJECTED and expected in reason, (expected, state, reason)
    # the venue received exactly the accepted passive orders, none of the violating ones
    assert venue_saw == n_accepted


def test_daily_loss_breach_trips_the_kill_switch_and_leaves_no_open_orders(tmp_path):
    async def main():
        venue = await start_venue()
        rt = await start_runtime(tmp_path, venue, "small")
        try:
            core = rt.core
            book = rt.books["AAPL"]
            resting = core.om.submit("AAPL", Side.BUY, 1, book.best_bid - 40, "DAY", owner="strategy")
            await asyncio.sleep(0.3)
            assert core.om.order(resting).state == OrdStatus.NEW
            # a loss beyond the configured daily limit: the day started richer than we are now
            core.policy.start_day(core.portfolio.equity() + float(core.config.risk.daily_loss_limit) + 1)
            core.policy.on_timer(time.time_ns())
            await asyncio.sleep(0.8)
            ours = [o for s in venue.exchange.books for o in venue.exchange.books[s].open_orders()
                    if o["owner"] != 0]
            return core.killswitch.tripped, core.killswitch.reason, core.om.order(resting).state, ours
        finally:
            await rt.stop()
            await venue.stop()
    tripped, reason, state, ours = asyncio.run(main())
    assert tripped and "loss" in reason.lower(), reason
    assert state == OrdStatus.CANCELED
    assert ours == [], "the venue still holds an order of ours after the daily-loss trip"


def test_reconciliation_catches_a_position_changed_behind_the_engines_back(tmp_path, monkeypatch):
    """`engine reconcile` (POST /reconcile) against the venue's statement: clean at first;
    after a fill the engine never heard of, the mismatch is reported line by line and
    trading is blocked (fail closed)."""
    from engine.admin import admin_request
    from tests.test_runtime import TOKEN

    async def main():
        venue = await start_venue(control_port=0)
        monkeypatch.setenv("ENGINE_VENUE_STATEMENT", f"http://127.0.0.1:{venue.control_port}/statement")
        rt = await start_runtime(tmp_path, venue, "small")
        loop = asyncio.get_running_loop()

        def reconcile():
            return admin_request(rt.admin.host, rt.admin.port, "POST", "/reconcile", token=TOKEN)
        try:
            book = rt.books["AAPL"]
            oid = rt.core.om.submit("AAPL", Side.BUY, 5, book.best_ask + 5, "IOC", owner="strategy")
            await asyncio.sleep(0.5)
            assert rt.core.om.order(oid).state == OrdStatus.FILLED
            clean = await loop.run_in_executor(None, reconcile)
            # behind the engine's back: the venue books a fill on our account we never sent
            venue.exchange.new_order("ENGINE", "MANUAL1", "AAPL", int(Side.SELL), 3, book.best_bid - 5)
            await asyncio.sleep(0.3)
            dirty = await loop.run_in_executor(None, reconcile)
            blocked = rt.core.om.submit("AAPL", Side.BUY, 1, book.best_bid - 20, "DAY", owner="strategy")
            return clean, dirty, rt.core.om.order(blocked)
        finally:
            await rt.stop()
            await venue.stop()
    clean, dirty, blocked = asyncio.run(main())
    assert clean.status == 200 and clean.json()["result"]["clean"] is True, clean.body
    result = dirty.json()["result"]
    assert result["clean"] is False and "reconciliation" in result["blocked"]
    assert any(m.startswith("position AAPL") for m in result["mismatches"]), result["mismatches"]
    assert blocked.state == OrdStatus.REJECTED and "TRADING_BLOCKED" in blocked.reject_reason
