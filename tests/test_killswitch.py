"""Kill switch: latch and persistence, cancels (mass or one by one) and their
confirmation, flatten."""
from __future__ import annotations

import asyncio
import json

import pytest

from core_ext import risk as rk
from core_ext.book import L2Book
from engine.killswitch import KillSwitch, read_state
from engine.orders import OrderManager, OrdStatus, Side
from engine.risk_policy import build_kernel
from engine.sim_execution import SimExecution
from tests.engine_helpers import XYZ_PRICE, Clock, FakeClient, book_with, make_config, make_om

S = OrdStatus
XYZ = 0


def test_trip_latches_persists_and_survives_a_restart(tmp_path):
    state = tmp_path / "ks" / "state.json"
    om, kernel, client, clock = make_om()
    stopped = []
    alerts = []
    ks = KillSwitch(state, kernel, order_manager=om, stop_strategy=stopped.append, clock=clock,
                    alert=lambda k, m: alerts.append(k))
    assert not ks.tripped and not state.exists()
    rec = ks.trip("daily loss")
    assert ks.tripped and kernel.kill_switch_tripped and stopped == ["kill switch: daily loss"]
    assert rec.reason == "daily loss" and "kill_switch" in alerts
    data = read_state(state)
    assert data["tripped"] and data["reason"] == "daily loss" and data["tripped_at_ns"] == clock.now
    assert data["history"][-1]["event"] == "trip"
    # every order is refused by the kernel now, whoever sends it
    cl = om.submit("XYZ", "buy", 1, XYZ_PRICE)
    assert om.order(cl).reject_reason == "RISK_REJECT_KILL_SWITCH"
    # restart: a new kernel, a new kill switch over the same file -> tripped at once
    kernel2 = build_kernel(make_config())
    ks2 = KillSwitch(state, kernel2, clock=clock)
    assert ks2.tripped and ks2.reason == "daily loss" and kernel2.kill_switch_tripped
    ks2.trip("second reason")                    # reasons are recorded; the first stays the latch's
    assert ks2.reason == "daily loss"
    assert [h["reason"] for h in read_state(state)["history"] if h["event"] == "trip"] == [
        "daily loss", "second reason"]
    ks2.reset(operator="alice", note="checked")
    assert not ks2.tripped and not kernel2.kill_switch_tripped
    assert read_state(state)["tripped"] is False
    assert read_state(state)["history"][-1]["event"] == "reset"
    kernel3 = build_kernel(make_config())
    assert not KillSwitch(state, kernel3).tripped and not kernel3.kill_switch_tripped


@pytest.mark.parametrize("content", ["{not json", json.dumps({"reason": "x"}), "[]"])
def test_unreadable_state_file_fails_closed(tmp_path, content):
    state = tmp_path / "state.json"
    state.write_text(content)
    kernel = build_kernel(make_config())
    ks = KillSwitch(state, kernel)
    assert ks.tripped and "unreadable" in ks.reason and kernel.kill_switch_tripped
    ks.reset("bob")
    assert read_state(state) ["tripped"] is False


@pytest.mark.parametrize("mass", [True, False])
def test_trip_cancels_every_open_order_and_confirms(mass):
    om, kernel, client, clock = make_om(client=FakeClient(supports_mass_cancel=mass),
                                        status_timeout_ns=10_000_000)
    ids = [om.submit("XYZ", "buy", 10, XYZ_PRICE - i) for i in range(4)]
    for cl in ids[:3]:
        client.ack(cl)                           # the 4th is still PendingNew
    ks = KillSwitch(None, kernel, order_manager=om, clock=clock)
    rec = ks.trip("operator")
    assert sorted(rec.cancel_requested) == sorted(ids) and rec.used_mass_cancel is mass
    assert client.kinds().count("mass_cancel" if mass else "cancel") == (1 if mass else 4)
    assert sorted(ks.pending()) == sorted(ids)

    answered = iter(ids[:3])

    def venue():                                   # the venue confirms three, one per pump
        clock.advance(1_000_000)
        cl = next(answered, None)
        if cl is not None:
            client.canceled(cl)
    res = ks.confirm_sync(50_000_000, venue)
    assert sorted(res.confirmed) == sorted(ids[:3]) and res.unconfirmed == (ids[3],)
    assert not res.ok
    # the unconfirmed order was chased with status requests while waiting
    assert ("status", ids[3]) in client.sent


def test_confirm_with_the_simulator_and_flatten():
    cfg = make_config()
    insts = cfg.instruments_by_symbol
    clock = Clock()
    books = {"XYZ": book_with("XYZ", [(9_999, 500)], [(10_001, 500)]), "BTC": L2Book("BTC")}
    sim = SimExecution(books, insts, clock=clock)
    kernel = build_kernel(cfg)
    kernel.set_reference_price(XYZ, 10_000, clock.now)
    om = OrderManager(kernel, sim, insts, clock=clock)
    om.submit("XYZ", "buy", 120, None, "IOC")          # becomes a position of 120
    rest = [om.submit("XYZ", "buy", 10, 9_990), om.submit("XYZ", "sell", 10, 10_020)]
    sim.advance_to(clock.now)
    assert kernel.position(XYZ) == 120 and len(om.open_orders()) == 2
    om.block("reconciliation")                          # flatten goes through blocks, not the kernel
    ks = KillSwitch(None, kernel, order_manager=om, clock=clock)
    ks.trip("drawdown", flatten=True)
    assert kernel.kill_switch_tripped and sim.counters["mass_cancel"] == 0   # not arrived yet

    def pump():
        clock.advance(1_000)
        sim.advance_to(clock.now)
    res = ks.confirm_sync(1_000_000, pump)
    assert res.ok and sorted(res.confirmed) == sorted(rest)
    assert len(res.flatten_orders) == 1
    flat = om.order(res.flatten_orders[0])
    assert flat.side is Side.SELL and flat.qty == 120 and flat.price is None and flat.tag == "flatten"
    pump()
    assert om.order(flat.cl_ord_id).state is S.FILLED and kernel.position(XYZ) == 0
    assert kernel.kill_switch_tripped and not kernel.reduce_only      # latch restored
    cl = om.submit("XYZ", "buy", 1, XYZ_PRICE, ignore_blocks=True)
    assert om.order(cl).reject_reason == "RISK_REJECT_KILL_SWITCH"
    assert kernel.anomalies == 0


def test_flatten_refused_by_the_kernel_is_alerted():
    om, kernel, client, clock = make_om()
    kernel.set_position(XYZ, 50)
    kernel.set_book_stale(XYZ, True)                  # the kernel will refuse the flatten order
    alerts = []
    ks = KillSwitch(None, kernel, order_manager=om, clock=clock, alert=lambda k, m: alerts.append((k, m)))
    ks.trip("test")
    ids = ks.flatten()
    assert len(ids) == 1 and om.order(ids[0]).reject_reason == "RISK_REJECT_BOOK_STALE"
    assert any(k == "kill_switch_flatten" and "BOOK_STALE" in m for k, m in alerts)
    assert kernel.kill_switch_tripped


def test_async_confirm():
    om, kernel, client, clock = make_om()
    cl = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    client.ack(cl)
    ks = KillSwitch(None, kernel, order_manager=om, clock=clock)
    ks.trip("async")

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, client.canceled, cl)
        return await ks.confirm(timeout_s=2.0, poll_s=0.005)
    res = asyncio.run(main())
    assert res.ok and res.confirmed == (cl,)

    cl2 = om.submit("XYZ", "buy", 10, XYZ_PRICE)       # refused: tripped
    assert om.order(cl2).state is S.REJECTED
    kernel.reset_kill_switch()
    cl3 = om.submit("XYZ", "buy", 10, XYZ_PRICE)
    ks.trip("again")
    res = asyncio.run(ks.confirm(timeout_s=0.05))
    assert res.unconfirmed == (cl3,)
    assert rk.RISK_REJECT_KILL_SWITCH == kernel.would_pass(XYZ, 0, 1, XYZ_PRICE, 99, clock.now)
