"""`engine run` / `engine preflight` against the venue simulator on loopback.

The venue runs in-process on ports chosen by the OS; the engine's config points at them.
Pre-flight checks must pass against a healthy venue and fail, naming the check, when the
feed is silent, the venue refuses logon, limits are missing, or cancels never arrive.
"""
from __future__ import annotations

import asyncio
import os
from importlib import resources
from pathlib import Path

import orjson
import pytest

from core_ext import risk as rk
from engine import preflight
from engine.admin import admin_request
from engine.config import load_config
from engine.runtime import RunOptions, Runtime
from gateway.venue import Venue, VenueOptions

TOKEN = "test-admin-token"


def write_config(tmp_path: Path, fix_port: int, feed_port: int, stage: str = "paper") -> Path:
    text = (resources.files("engine") / "sample_run_config.toml").read_text()
    text = text.replace('stage = "paper"', f'stage = "{stage}"')
    text = text.replace("port = 9878", f"port = {fix_port}")
    text = text.replace("feed_request_port = 9880", f"feed_request_port = {feed_port}")
    text = text.replace('directory = "var/engine"', f'directory = "{tmp_path / "store"}"')
    text = text.replace('state_file = "var/engine/killswitch.json"',
                        f'state_file = "{tmp_path / "store" / "killswitch.json"}"')
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path


async def start_venue(**overrides) -> Venue:
    options = VenueOptions(fix_port=0, itch_request_port=0, warmup_events=3000, replay_events_per_tick=10,
                           replay_tick_ms=5.0, **overrides)
    venue = Venue(options)
    await venue.start()
    return venue


async def start_runtime(tmp_path: Path, venue: Venue | None, stage: str, **opts) -> Runtime:
    fix_port = venue.fix_port if venue else 1
    feed_port = venue.itch_request_port if venue else 9
    path = write_config(tmp_path, fix_port, feed_port, stage)
    os.environ["ENGINE_ADMIN_TOKEN"] = TOKEN
    config = load_config(path, stage=stage)
    options = RunOptions(config_path=str(path), stage=stage, admin_port=0, check_only=True,
                         feed_wait_s=opts.pop("feed_wait_s", 5.0), **opts)
    rt = Runtime(config, config.stage, options)
    await rt.start()
    await rt.wait_for_market_data()
    return rt


def by_name(results) -> dict[str, preflight.CheckResult]:
    return {r.name: r for r in results}


def test_preflight_passes_against_a_healthy_venue_in_small(tmp_path):
    async def main():
        venue = await start_venue()
        rt = await start_runtime(tmp_path, venue, "small")
        try:
            results = await preflight.run_checks(rt)
            assert rt._rtt_rec.total >= 1, "the venue round trip was not measured for monitoring"
        finally:
            await rt.stop()
            await venue.stop()
        return results
    results = asyncio.run(main())
    failed = [(r.name, r.detail) for r in results if not r.ok]
    assert not failed, failed
    checks = by_name(results)
    assert checks["venue logon and heartbeat"].applicable
    assert "round trip" in checks["venue logon and heartbeat"].detail
    assert "confirmed canceled" in checks["kill switch armed and cancels"].detail


def test_preflight_fails_when_the_feed_is_silent(tmp_path):
    async def main():
        rt = await start_runtime(tmp_path, None, "paper", feed_wait_s=0.5)   # nothing publishes
        try:
            return await preflight.run_checks(rt)
        finally:
            await rt.stop()
    checks = by_name(asyncio.run(main()))
    assert not checks["market data flowing and fresh"].ok
    assert "no ITCH packet" in checks["market data flowing and fresh"].detail
    assert not checks["kill switch armed and cancels"].ok   # no book to place a drill under


def test_preflight_fails_when_the_venue_refuses_logon(tmp_path, monkeypatch):
    monkeypatch.setenv("VENUE_TEST_PASSWORD", "right-password")

    async def main():
        venue = await start_venue(username="ENGINE", password_env="VENUE_TEST_PASSWORD")
        try:
            with pytest.raises(Exception, match="did not accept our logon"):
                await start_runtime(tmp_path, venue, "small")
        finally:
            await venue.stop()
    asyncio.run(main())


def test_preflight_fails_when_limits_are_not_loaded_or_kill_switch_cannot_cancel(tmp_path):
    async def main():
        venue = await start_venue()
        rt = await start_runtime(tmp_path, venue, "small")
        try:
            loaded = await preflight.check_risk_limits(rt)
            real_kernel = rt.core.kernel
            empty = rk.RiskKernel(max_instruments=4)       # instruments known, no limits loaded
            for inst in rt.core.instruments.values():
                empty.add_instrument(inst.inst_id)
                empty.set_reference_price(inst.inst_id, 10_000, 0)
            rt.core.kernel = empty
            unloaded = await preflight.check_risk_limits(rt)
            rt.core.kernel = real_kernel
            # a venue path that never delivers cancels: the drill must fail, not pass
            rt.fix.send_cancel = lambda order, cancel_id: None
            no_cancel = await preflight.check_kill_switch(rt)
        finally:
            await rt.stop()
            await venue.stop()
        return loaded, unloaded, no_cancel
    loaded, unloaded, no_cancel = asyncio.run(main())
    assert loaded[0], loaded
    assert not unloaded[0] and "limits not loaded" in unloaded[1]
    assert not no_cancel[0] and "not confirmed canceled" in no_cancel[1]


def test_latched_kill_switch_fails_preflight_and_admin_kill_needs_the_token(tmp_path):
    async def main():
        venue = await start_venue()
        rt = await start_runtime(tmp_path, venue, "small")
        loop = asyncio.get_running_loop()
        try:
            host, port = rt.admin.host, rt.admin.port
            refused = await loop.run_in_executor(None, lambda: admin_request(host, port, "POST", "/kill"))
            wrong = await loop.run_in_executor(
                None, lambda: admin_request(host, port, "POST", "/kill", token="nope"))
            rt.core.om.submit("AAPL", 0, 5, rt.books["AAPL"].best_bid - 20, "DAY", owner="strategy")
            await asyncio.sleep(0.3)
            killed = await loop.run_in_executor(
                None, lambda: admin_request(host, port, "POST", "/kill", token=TOKEN,
                                            body={"reason": "test drill"}))
            await asyncio.sleep(0.3)
            latched = await preflight.check_kill_switch(rt)
            venue_open = [o for o in venue.exchange.books["AAPL"].open_orders() if o["owner"] != 0]
        finally:
            await rt.stop()
            await venue.stop()
        return refused, wrong, killed, latched, venue_open
    refused, wrong, killed, latched, venue_open = asyncio.run(main())
    assert refused.status == 401 and wrong.status == 403
    assert killed.status == 200, killed.body
    assert orjson.loads(killed.body)["result"]["unconfirmed"] == 0
    assert not latched[0] and "latched" in latched[1]
    assert venue_open == [], "the venue still holds an order of ours after the kill"
    state = orjson.loads((tmp_path / "store" / "killswitch.json").read_bytes())
    assert state["tripped"] is True   # latched across restarts until reset


def test_fix_execution_cancels_an_order_it_did_not_send():
    """An order adopted after a restart: the cancel and the status request carry symbol and side."""
    from engine.orders import Order, OrdStatus, Side, Tif
    from engine.venue_execution import FixExecution

    calls = []

    class FakeClient:
        on_event = None

        def cancel(self, orig, cl_ord_id=None, order_id=None, symbol=None, side=None):
            calls.append(("cancel", orig, symbol, side))

        def order_status(self, cl_ord_id, order_id=None, symbol=None, side=None):
            calls.append(("status", cl_ord_id, symbol, side))

    ex = FixExecution(FakeClient())
    order = Order(cl_ord_id=12345, symbol="MSFT", inst_id=1, side=Side.SELL, qty=3, price=100, tif=Tif.DAY,
                  state=OrdStatus.NEW, created_ns=0, updated_ns=0)
    ex.send_cancel(order, 12346)
    ex.send_status_request(order)
    assert calls == [("cancel", "9IX", "MSFT", 1), ("status", "9IX", "MSFT", 1)]


def test_runtime_records_logs_store_capture_and_metrics(tmp_path):
    """A paper run leaves JSON order/fill logs, SQLite rows, Parquet quotes and Prometheus
    metrics behind (all written off the event loop)."""
    import sqlite3

    from engine.capture import read_capture

    async def main():
        venue = await start_venue()
        rt = await start_runtime(tmp_path, venue, "paper")
        try:
            book = rt.books["AAPL"]
            oid = rt.core.om.submit("AAPL", 0, 3, book.best_ask + 5, "IOC", owner="strategy")
            rt.core.om.submit("AAPL", 0, 10**9, book.best_ask, "DAY", owner="strategy")   # risk-rejected
            for _ in range(40):
                rt.sim.advance_to(time.time_ns() + 10**9)
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.2)                  # one metrics collection
            loop = asyncio.get_running_loop()
            metrics = await loop.run_in_executor(
                None, lambda: admin_request(rt.admin.host, rt.admin.port, "GET", "/metrics"))
            state = rt.core.om.order(oid).state
        finally:
            await rt.stop()
            await venue.stop()
        return metrics, state
    import time
    metrics, state = asyncio.run(main())
    store = tmp_path / "store"
    assert state == "Filled"
    text = metrics.body.decode()
    assert 'engine_fills_total{symbol="AAPL"} 1.0' in text and "engine_kill_switch_tripped 0.0" in text
    # counted as the events came: the risk-rejected order never went out
    assert 'engine_orders_sent_total{symbol="AAPL"} 1.0' in text and 'engine_orders_filled_total 1.0' in text
    assert 'engine_filled_lots_total{symbol="AAPL"} 3.0' in text and "engine_order_rejects_total 0.0" in text
    assert "engine_risk_rejects_total" in text and "engine_quote_staleness_seconds" in text
    import re
    md = re.search(r"^engine_market_data_latency_seconds_count (\S+)", text, re.M)
    assert md and float(md.group(1)) >= 1, "the market-data latency histogram got no sample"
    assert 'engine_slippage_bps{symbol="AAPL"}' in text
    acks = re.search(r"^engine_order_to_ack_seconds_count (\S+)", text, re.M)
    assert acks and float(acks.group(1)) >= 1, "the order-to-ack histogram got no sample"
    db = sqlite3.connect(store / "engine.db")
    assert db.execute("SELECT count(*) FROM fills").fetchone()[0] == 1
    assert sorted(r[0] for r in db.execute("SELECT state FROM orders")) == ["Filled", "Rejected"]
    assert '"fill"' in (store / "logs" / "fills.log").read_text()
    assert (store / "logs" / "orders.log").read_text().count("\n") >= 2
    quotes = read_capture(store / "capture", "quotes")
    assert len(quotes) > 0


def test_engine_run_with_the_admin_port_in_use_is_a_clear_error(tmp_path):
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, 1, 9, "paper")
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--admin-port",
                               str(port), "--duration", "1", "--force"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "ENGINE_ADMIN_TOKEN": TOKEN})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_feed_socket_binds_the_configured_local_address(tmp_path):
    """[venue] feed_bind_host / feed_bind_port: the feed's UDP socket is bound there, and
    the venue's packets reach it (the subscription names it)."""
    import socket as so
    probe = so.socket(so.AF_INET, so.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    async def main():
        venue = await start_venue()
        path = write_config(tmp_path, venue.fix_port, venue.itch_request_port, "paper")
        text = path.read_text().replace('feed_session = "VENUE1"',
                                        f'feed_session = "VENUE1"\nfeed_bind_host = "127.0.0.1"\n'
                                        f'feed_bind_port = {port}')
        path.write_text(text)
        config = load_config(path, stage="paper")
        rt = Runtime(config, config.stage, RunOptions(config_path=str(path), stage="paper", admin_port=0,
                                                      check_only=True))
        try:
            await rt.start()
            got_data = await rt.wait_for_market_data()
            return got_data, rt.feed._transport.get_extra_info("sockname")
        finally:
            await rt.stop()
            await venue.stop()
    os.environ["ENGINE_ADMIN_TOKEN"] = TOKEN
    got_data, sockname = asyncio.run(main())
    assert sockname == ("127.0.0.1", port)
    assert got_data


@pytest.mark.parametrize("mode", ["before_send", "interval"])
def test_journal_sync_decides_whether_an_order_waits_for_the_disk(tmp_path, mode):
    """[storage] journal_sync in a real stage: "before_send" fsyncs the order's journal
    record before the order leaves; "interval" writes it first and fsyncs later."""
    from engine.orders import Side

    async def main():
        venue = await start_venue()
        path = write_config(tmp_path, venue.fix_port, venue.itch_request_port, "small")
        store = f'directory = "{tmp_path / "store"}"'
        path.write_text(path.read_text().replace(store, f'{store}\njournal_sync = "{mode}"\n'
                                                        f'journal_fsync_ms = 5000'))
        config = load_config(path, stage="small")
        assert config.storage.journal_sync == mode
        rt = Runtime(config, config.stage, RunOptions(config_path=str(path), stage="small", admin_port=0,
                                                      check_only=True))
        try:
            await rt.start()
            await rt.wait_for_market_data()
            book = rt.books["AAPL"]
            rt.core.om.submit("AAPL", Side.BUY, 1, book.best_bid - 40, "DAY", owner="strategy")
            return rt.journal.durable_seq, rt.journal.last_seq
        finally:
            await rt.stop()
            await venue.stop()
    os.environ["ENGINE_ADMIN_TOKEN"] = TOKEN
    durable, last = asyncio.run(main())
    if mode == "before_send":
        assert durable >= last
    else:
        assert durable < last


def test_journal_sync_must_be_a_known_mode(tmp_path):
    from engine.errors import ConfigError
    path = write_config(tmp_path, 9878, 9880, "small")
    store = f'directory = "{tmp_path / "store"}"'
    path.write_text(path.read_text().replace(store, f'{store}\njournal_sync = "never"'))
    os.environ["ENGINE_ADMIN_TOKEN"] = TOKEN
    with pytest.raises(ConfigError, match="storage.journal_sync"):
        load_config(path)
