"""A Cython strategy in `engine run` (engine.compiled_path): configured by its class,
run on core_ext.t2t against the venue simulator over loopback, its orders known to the
order manager, the journal, the venue -- and stopped by the kill switch."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from core_ext import t2t as ct
from engine.compiled_path import FIRST_SEQ
from engine.config import load_config
from engine.errors import ConfigError, EngineError
from engine.journal import JournalReader
from engine.orders import OrdStatus
from engine.runtime import RunOptions, Runtime
from engine.strategy import CompiledStrategy
from tests.test_runtime import TOKEN, start_venue, write_config
from tests.test_stages_e2e import engine_orders_at

COMPILED = '''[strategy]
strategy = "core_ext.t2t:QuoteAtTouch"

[strategy.params]
qty = 1
offset_ticks = 30
both_sides = true
'''


@pytest.fixture(autouse=True)
def admin_token(monkeypatch):
    monkeypatch.setenv("ENGINE_ADMIN_TOKEN", TOKEN)


def compiled_config(tmp_path, fix_port: int, feed_port: int, stage: str, params: str | None = None):
    path = write_config(tmp_path, fix_port, feed_port, stage)
    text = path.read_text()
    start = text.index("[strategy]")
    end = text.index("[venue]")
    block = COMPILED if params is None else COMPILED.split("[strategy.params]")[0] + "[strategy.params]\n" + params
    path.write_text(text[:start] + block + "\n" + text[end:])
    return path


def test_a_cython_strategy_is_configured_by_its_class(tmp_path):
    cfg = load_config(compiled_config(tmp_path, 9878, 9880, "small"))
    assert cfg.strategy.compiled
    s = cfg.strategy.create()
    assert isinstance(s, CompiledStrategy) and isinstance(s.cstrategy, ct.QuoteAtTouch)
    assert s.cstrategy.qty == 1 and s.cstrategy.offset_ticks == 30


@pytest.mark.parametrize("params, message", [
    ("qty = 0\n", "qty"),
    ("qty = 1\nspeed = 3\n", "speed"),
])
def test_bad_cython_strategy_params_are_a_config_error(tmp_path, params, message):
    with pytest.raises(ConfigError, match=rf"strategy\.params: core_ext\.t2t:QuoteAtTouch: .*{message}"):
        load_config(compiled_config(tmp_path, 9878, 9880, "small", params))


def test_a_cython_strategy_refuses_the_stages_without_a_fix_session(tmp_path):
    async def main():
        path = compiled_config(tmp_path, 1, 9, "paper")
        config = load_config(path, stage="paper")
        rt = Runtime(config, config.stage, RunOptions(config_path=str(path), stage="paper", admin_port=0,
                                                      check_only=True))
        with pytest.raises(EngineError, match="writes FIX: it runs in the stages small and live"):
            await rt.start()
    asyncio.run(main())


@contextlib.asynccontextmanager
async def small_stage_running(tmp_path):
    """(venue, config, Runtime): the venue simulator and the compiled strategy's engine
    in stage small, started and with market data; both stopped afterwards."""
    venue = await start_venue()
    path = compiled_config(tmp_path, venue.fix_port, venue.itch_request_port, "small")
    config = load_config(path, stage="small")
    rt = Runtime(config, config.stage, RunOptions(config_path=str(path), stage="small", admin_port=0,
                                                  force=True))
    try:
        await rt.start()
        assert await rt.wait_for_market_data()
        yield venue, config, rt
    finally:
        await rt.stop()
        await venue.stop()


async def run_until_the_strategy_stops(rt, config, never: str):
    """Start the strategy, wait until it has stopped itself (10 s at most: `never` says
    what did not happen), let the engine settle; then (the compiled path's orders, the
    kernel's open quantity per (instrument, side))."""
    rt.core.start()
    deadline = asyncio.get_running_loop().time() + 10
    while rt.core.host.running:
        assert asyncio.get_running_loop().time() < deadline, never
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    ours = [o for o in rt.core.om.orders() if o.cl_ord_id & 0xFFFFFFFF >= FIRST_SEQ]
    kernel = {(i.inst_id, side): rt.core.kernel.open_qty(i.inst_id, side)
              for i in config.instruments for side in (0, 1)}
    return ours, kernel


def test_engine_runs_a_cython_strategy_against_the_venue(tmp_path):
    """Small stage against the venue simulator: the compiled strategy's orders reach the
    venue, the order manager tracks them (acks applied, kernel reservations exact), the
    journal has them, and the kill switch stops the strategy and cancels them all."""
    async def main():
        async with small_stage_running(tmp_path) as (venue, config, rt):
            om = rt.core.om
            received_before = venue.exchange.orders_received
            rt.core.start()
            deadline = asyncio.get_running_loop().time() + 10
            while len([o for o in om.open_orders() if o.state == OrdStatus.NEW]) < 3:
                assert asyncio.get_running_loop().time() < deadline, "no acknowledged compiled orders"
                await asyncio.sleep(0.05)
            sent = om.stats["sent"]
            at_venue = venue.exchange.orders_received - received_before
            ours = [o for o in om.orders() if o.cl_ord_id & 0xFFFFFFFF >= FIRST_SEQ]
            # the kernel's open quantity is exactly what the order manager holds reserved
            reserved = {(i.inst_id, side): 0 for i in config.instruments for side in (0, 1)}
            for o in om.open_orders():
                reserved[(o.inst_id, int(o.side))] += o.reserved
            kernel = {key: rt.core.kernel.open_qty(*key) for key in reserved}
            rt.core.killswitch.trip("test: kill switch")
            await asyncio.sleep(1.0)
            after_kill = venue.exchange.orders_received
            await asyncio.sleep(0.5)
            return (sent, at_venue, ours, reserved, kernel, engine_orders_at(venue),
                    after_kill, venue.exchange.orders_received, rt.compiled.t2t.orders_sent, om)
    (sent, at_venue, ours, reserved, kernel, resting, after_kill, later, t2t_sent,
     om) = asyncio.run(main())
    assert sent >= 3 and at_venue >= t2t_sent >= 3
    assert reserved == kernel and sum(kernel.values()) >= 3
    assert ours and all(o.owner == "strategy" for o in ours)
    assert resting == [], "the kill switch left compiled orders at the venue"
    assert later == after_kill, "the compiled strategy kept sending after the kill switch"
    records = [r for r in JournalReader(tmp_path / "store" / "journal") if r.kind == "submit"]
    journaled = {r.payload["cl_ord_id"] for r in records if r.payload.get("compiled")}
    assert {o.cl_ord_id for o in ours} <= journaled
    assert all(o.state in (OrdStatus.CANCELED, OrdStatus.REJECTED, OrdStatus.FILLED) for o in ours)


def test_a_packet_that_does_not_apply_is_the_feed_handlers_error_not_the_strategys(tmp_path):
    """CompiledPath.apply: a packet the applier refuses propagates to the feed handler
    (its gap and framing logic); the strategy is not stopped for it."""
    from types import SimpleNamespace

    from core_ext import fix as fx
    from core_ext import itch
    from engine.compiled_path import CompiledPath, instrument_rows
    from engine.risk_policy import build_kernel
    config = load_config(compiled_config(tmp_path, 9878, 9880, "small"))
    kernel = build_kernel(config)
    t2t = ct.TickToTrade(instrument_rows(config), kernel, fx.FixEncoder("A", "B"), ct.QuoteAtTouch(qty=1),
                         FIRST_SEQ)
    failures = []
    cp = CompiledPath.__new__(CompiledPath)     # the runtime's parts, reduced to what apply reads
    cp.t2t, cp.feed, cp.errors = t2t, SimpleNamespace(applier=t2t.applier), 0
    cp.session = SimpleNamespace(logged_on=True, next_sender_seq=1)
    cp.om = SimpleNamespace(blocked=False)
    cp.core = SimpleNamespace(host=SimpleNamespace(running=True, _failed=lambda *a: failures.append(a)))
    with pytest.raises(itch.ItchDecodeError):
        cp.apply(b"not a MoldUDP64 packet")
    assert failures == [] and cp.errors == 0 and t2t.packets == 0


@pytest.fixture(scope="module")
def failing_cstrategy(tmp_path_factory):
    """tests/cstrategies/fail_after_encoding.pyx, compiled for this test (pyximport)."""
    import numpy
    import pyximport

    from tests.conftest import REPO_ROOT
    importers = pyximport.install(build_dir=str(tmp_path_factory.mktemp("pyxbuild")), language_level=3,
                                  setup_args={"include_dirs": [numpy.get_include(), str(REPO_ROOT)]})
    try:
        import tests.cstrategies.fail_after_encoding as module
        yield module
    finally:
        pyximport.uninstall(*importers)


def test_orders_a_failing_strategy_encoded_are_released_not_sent(tmp_path, failing_cstrategy):
    """The strategy raises after its order was checked and encoded: the bytes never reach
    the session, the venue never sees the order, the kernel's reservation is released,
    the order manager and the journal record it as not sent, and the strategy stops."""
    from engine.orders import format_cl_ord_id

    async def main():
        venue = await start_venue()
        path = compiled_config(tmp_path, venue.fix_port, venue.itch_request_port, "small", "offset_ticks = 30\n")
        path.write_text(path.read_text().replace("core_ext.t2t:QuoteAtTouch",
                                                 "tests.cstrategies.fail_after_encoding:FailAfterEncoding"))
        config = load_config(path, stage="small")
        rt = Runtime(config, config.stage, RunOptions(config_path=str(path), stage="small", admin_port=0,
                                                      force=True))
        at_venue: list[tuple[str, str]] = []
        enter = venue.exchange.new_order

        def spy(account, cl_ord_id, *args, **kwargs):
            at_venue.append((account, cl_ord_id))
            return enter(account, cl_ord_id, *args, **kwargs)
        venue.exchange.new_order = spy
        venue_session = venue.fix.sessions[config.venue.sender_comp_id]
        resend_requests: list[tuple] = []
        ask_resend = venue_session.send_resend_request
        venue_session.send_resend_request = lambda *a: (resend_requests.append(a), ask_resend(*a))
        try:
            await rt.start()
            assert await rt.wait_for_market_data()
            ours, kernel = await run_until_the_strategy_stops(rt, config, "the failing strategy never ran")
            rt.fix.client.session.send_test_request("after-failure")    # a message after the unsent one
            await asyncio.sleep(0.3)
            return (ours, kernel, at_venue, rt.compiled.errors, rt.core.host.stop_reason,
                    rt.core.host.strategy.cstrategy.failures, rt.fix.client.session.next_sender_seq,
                    venue_session.next_target_seq, list(resend_requests), config.venue.sender_comp_id)
        finally:
            await rt.stop()
            venue.exchange.new_order = enter
            await venue.stop()
    ours, kernel, at_venue, errors, reason, failures, ours_next, venue_expects, resends, account = asyncio.run(main())
    assert failures == 1 and errors == 1 and "raised after its order was encoded" in reason
    (order,) = ours
    assert order.state == OrdStatus.REJECTED and order.reject_reason.startswith("NOT_SENT")
    assert all(v == 0 for v in kernel.values()), kernel                  # the reservation went back
    sent_ids = {cl for acct, cl in at_venue if acct == account}
    assert format_cl_ord_id(order.cl_ord_id) not in sent_ids
    # the encoded message's MsgSeqNum went to the next message instead: the venue saw no gap
    assert venue_expects == ours_next and resends == []
    records = [r for r in JournalReader(tmp_path / "store" / "journal") if r.kind == "submit"]
    assert order.cl_ord_id in {r.payload["cl_ord_id"] for r in records if r.payload.get("compiled")}


def test_orders_the_fix_session_refuses_are_released_and_the_feed_goes_on(tmp_path):
    """The FIX session refuses a packet's orders before writing them (a malformed batch):
    they are recorded as not sent with their reservations released, the strategy stops,
    the venue never sees them, and the feed handler keeps applying packets."""
    async def main():
        async with small_stage_running(tmp_path) as (venue, config, rt):
            session = rt.fix.client.session
            commit = session.commit_encoded

            def refuse(msg_type, data, offline_ok=False, count=1):
                session.commit_encoded = commit          # once
                raise ValueError("commit_encoded: test refusal")
            session.commit_encoded = refuse
            packets_before = rt.feed.counters.packets
            ours, kernel = await run_until_the_strategy_stops(rt, config, "the strategy never sent")
            venue_expects = venue.fix.sessions[config.venue.sender_comp_id].next_target_seq
            return (ours, kernel, engine_orders_at(venue), (session.next_sender_seq, venue_expects),
                    rt.feed.counters.packets - packets_before, rt.compiled.errors, rt.core.host.stop_reason)
    ours, kernel, at_venue, (ours_next, venue_expects), packets, errors, reason = asyncio.run(main())
    assert ours and all(o.state == OrdStatus.REJECTED and o.reject_reason.startswith("NOT_SENT") for o in ours)
    assert all(v == 0 for v in kernel.values()), kernel
    assert at_venue == [] and errors == 1 and "test refusal" in reason
    assert packets > 0                      # the feed went on after the refused packet
    assert ours_next == venue_expects       # the refused orders used no MsgSeqNum: no gap at the venue
