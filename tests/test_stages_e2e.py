"""End to end against the venue simulator over loopback: every pre-trade limit rejects a
violating order before it reaches the venue (checked at the venue: it never saw it), and a
daily-loss breach trips the kill switch and leaves no open order of ours at the venue."""
from __future__ import annotations

import asyncio
import time

import pytest

from engine.orders import OrdStatus, Side
from tests.test_runtime import start_runtime, start_venue


def engine_orders_at(venue) -> list:
    """Orders resting at the venue that are not the venue's own (anonymous) liquidity."""
    return [o for s in venue.exchange.books for o in venue.exchange.books[s].open_orders() if o["owner"] != 0]


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


def _daily_loss_breach(core) -> None:
    # a loss beyond the configured daily limit: the day started richer than we are now
    core.policy.start_day(core.portfolio.equity() + float(core.config.risk.daily_loss_limit) + 1)
    core.policy.on_timer(time.time_ns())


def _drawdown_breach(core) -> None:
    # equity has fallen further from its peak than max_drawdown_pct allows
    equity = core.portfolio.equity()
    core.policy.start_day(equity)
    core.policy.peak_equity = equity / (1 - (core.config.risk.max_drawdown_pct + 1) / 100)
    core.policy.check()


@pytest.mark.parametrize("breach, word", [(_daily_loss_breach, "loss"), (_drawdown_breach, "drawdown")],
                         ids=["daily-loss", "drawdown"])
def test_a_loss_limit_breach_trips_the_kill_switch_and_leaves_no_open_orders(tmp_path, breach, word):
    async def main():
        venue = await start_venue()
        rt = await start_runtime(tmp_path, venue, "small")
        try:
            core = rt.core
            book = rt.books["AAPL"]
            resting = core.om.submit("AAPL", Side.BUY, 1, book.best_bid - 40, "DAY", owner="strategy")
            await asyncio.sleep(0.3)
            assert core.om.order(resting).state == OrdStatus.NEW
            breach(core)
            await asyncio.sleep(0.8)
            ours = engine_orders_at(venue)
            return core.killswitch.tripped, core.killswitch.reason, core.om.order(resting).state, ours
        finally:
            await rt.stop()
            await venue.stop()
    tripped, reason, state, ours = asyncio.run(main())
    assert tripped and word in reason.lower(), reason
    assert state == OrdStatus.CANCELED
    assert ours == [], f"the venue still holds an order of ours after the {word} trip"


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


def test_small_stage_over_ouch(tmp_path, monkeypatch):
    """The same engine over OUCH 4.2 / SoupBinTCP instead of FIX: pre-flight passes (the
    kill-switch drill cancels over OUCH), an order fills, a resting order cancels."""
    import os

    from engine import preflight
    from engine.config import load_config
    from engine.runtime import RunOptions, Runtime
    from tests.test_runtime import write_config

    monkeypatch.setenv("OUCH_TEST_PASSWORD", "ouchpw")

    async def main():
        venue = await start_venue(ouch_port=0, ouch_user="OUCH1", ouch_password_env="OUCH_TEST_PASSWORD")
        path = write_config(tmp_path, venue.ouch_port, venue.itch_request_port, "small")
        text = path.read_text().replace('protocol = "fix"', 'protocol = "ouch"').replace(
            'target_comp_id = "VENUE"', 'target_comp_id = "VENUE"\nusername = "OUCH1"\npassword_env = "OUCH_TEST_PASSWORD"')
        path.write_text(text)
        os.environ["ENGINE_ADMIN_TOKEN"] = "t"
        config = load_config(path, stage="small")
        rt = Runtime(config, config.stage, RunOptions(config_path=str(path), stage="small", admin_port=0,
                                                       check_only=True))
        await rt.start()
        try:
            await rt.wait_for_market_data()
            results = await preflight.run_checks(rt)
            book = rt.books["AAPL"]
            filled = rt.core.om.submit("AAPL", Side.BUY, 4, book.best_ask + 5, "IOC", owner="strategy")
            resting = rt.core.om.submit("AAPL", Side.BUY, 2, book.best_bid - 30, "DAY", owner="strategy")
            await asyncio.sleep(0.5)
            rt.core.om.cancel(resting)
            await asyncio.sleep(0.5)
            om = rt.core.om
            return results, om.order(filled).state, om.order(resting).state, rt.core.portfolio.position("AAPL")
        finally:
            await rt.stop()
            await venue.stop()
    results, filled, resting, position = asyncio.run(main())
    failed = [(r.name, r.detail) for r in results if not r.ok]
    assert not failed, failed
    assert filled == OrdStatus.FILLED and resting == OrdStatus.CANCELED and position == 4


def test_feed_faults_switched_at_run_time_reach_the_engine(tmp_path):
    """The venue's control endpoint drops feed packets (the engine recovers the gap by
    retransmission) and stops the feed (the engine's books go stale and the risk kernel
    rejects new orders until the feed is back)."""
    import urllib.request

    import orjson

    def post_faults(port, body):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/faults", data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return orjson.loads(resp.read())

    async def main():
        venue = await start_venue(control_port=0)
        rt = await start_runtime(tmp_path, venue, "paper")
        rt.feed.dead_after_s = 1.0
        loop = asyncio.get_running_loop()
        try:
            gaps_before = rt.feed.counters.gaps
            snap = await loop.run_in_executor(None, post_faults, venue.control_port, {"feed_drop_next": 3})
            await asyncio.sleep(1.0)
            recovered = rt.feed.counters.recovered, rt.feed.counters.gaps - gaps_before, rt.feed.stale
            await loop.run_in_executor(None, post_faults, venue.control_port, {"feed_stopped": True})
            await asyncio.sleep(2.0)
            book = rt.books["AAPL"]
            stale_order = rt.core.om.submit("AAPL", Side.BUY, 1, book.best_bid - 10, "DAY", owner="strategy")
            stale_state = rt.core.om.order(stale_order)
            await loop.run_in_executor(None, post_faults, venue.control_port, {"feed_stopped": False})
            await asyncio.sleep(1.0)
            fresh_order = rt.core.om.submit("AAPL", Side.BUY, 1, book.best_bid - 10, "DAY", owner="strategy")
            fresh_state = rt.core.om.order(fresh_order).state
            return snap, recovered, stale_state, fresh_state
        finally:
            await rt.stop()
            await venue.stop()
    snap, (recovered, gaps, stale_after_gap), stale, fresh = asyncio.run(main())
    assert snap["feed_drop_next"] == 3
    assert gaps >= 1 and recovered >= 1 and not stale_after_gap
    assert stale.state == OrdStatus.REJECTED and "STALE" in stale.reject_reason, stale.reject_reason
    assert fresh != OrdStatus.REJECTED


def test_engine_reconcile_with_a_statement_file_given_by_the_user(tmp_path):
    """`engine reconcile --statement FILE` through the CLI: the file (in the venue's
    statement format) disagrees with the engine's position, so trading is blocked."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT
    from tests.test_runtime import TOKEN

    async def main():
        venue = await start_venue()
        rt = await start_runtime(tmp_path, venue, "small")
        loop = asyncio.get_running_loop()
        try:
            book = rt.books["AAPL"]
            rt.core.om.submit("AAPL", Side.BUY, 2, book.best_ask + 5, "IOC", owner="strategy")
            await asyncio.sleep(0.5)
            statement = tmp_path / "broker.csv"
            statement.write_text(venue.exchange.statement_csv().replace(",AAPL,", ",AAPL,", 1))
            good = tmp_path / "good.csv"
            good.write_text(venue.exchange.statement_csv())
            bad = tmp_path / "bad.csv"
            bad.write_text("\n".join(
                line if not line.startswith("POSITION,ENGINE,AAPL,") else
                ",".join(v if i != 8 else "7" for i, v in enumerate(line.split(",")))
                for line in venue.exchange.statement_csv().splitlines()) + "\n")
            env = {**__import__("os").environ, "ENGINE_ADMIN_TOKEN": TOKEN}
            cmd = [sys.executable, "-m", "engine.cli", "reconcile", "--port", str(rt.admin.port)]
            ok = await loop.run_in_executor(None, lambda: subprocess.run(
                cmd + ["--statement", str(good)], cwd=REPO_ROOT, capture_output=True, text=True, env=env,
                timeout=60))
            mismatch = await loop.run_in_executor(None, lambda: subprocess.run(
                cmd + ["--statement", str(bad)], cwd=REPO_ROOT, capture_output=True, text=True, env=env,
                timeout=60))
            return ok, mismatch, sorted(rt.core.om.block_reasons)
        finally:
            await rt.stop()
            await venue.stop()
    ok, mismatch, blocked = asyncio.run(main())
    assert ok.returncode == 0 and '"clean": true' in ok.stdout, ok.stdout + ok.stderr
    assert mismatch.returncode == 0 and '"clean": false' in mismatch.stdout
    assert "position AAPL" in mismatch.stdout and "reconciliation" in blocked


def test_both_sample_strategies_run_in_every_venue_stage(tmp_path, monkeypatch):
    """The same strategy objects, unchanged, in paper, shadow and small against the venue:
    each stage sends orders and the strategies raise nothing."""
    from engine.config import load_config
    from engine.runtime import RunOptions, Runtime
    from tests.test_runtime import write_config

    strategies = {
        "ma": ('strategy = "engine.strategies.ma_crossover:MovingAverageCrossover"', ""),
        "mm": ('strategy = "engine.strategies.market_maker:MarketMaker"',
               'symbol = "AAPL"\nqty = "5"\nmax_inventory = "50"\nhalf_spread_ticks = 1\nrequote_ticks = 1\n'),
    }

    monkeypatch.setenv("ENGINE_ADMIN_TOKEN", "t")

    async def run_stage(venue, stage, name):
        base = tmp_path / f"{name}-{stage}"
        base.mkdir()
        path = write_config(base, venue.fix_port, venue.itch_request_port, stage)
        text = path.read_text()
        spec, params = strategies[name]
        text = text.replace('strategy = "engine.strategies.ma_crossover:MovingAverageCrossover"', spec)
        if params:
            start = text.index("[strategy.params]")
            end = text.index("[venue]")
            text = text[:start] + "[strategy.params]\n" + params + "\n" + text[end:]
        else:
            text = text.replace("fast = 5", "fast = 2").replace("slow = 20", "slow = 3").replace(
                "sample_interval_ms = 100", "sample_interval_ms = 0")
        path.write_text(text)
        config = load_config(path, stage=stage)
        rt = Runtime(config, config.stage, RunOptions(config_path=str(path), stage=stage, admin_port=0,
                                                       duration_s=2.5, force=True))
        await rt.start()
        try:
            await rt.wait_for_market_data()
            rt.started_ns = time.time_ns()
            rt.core.start()
            await rt.stop_event.wait()
            return rt.core.om.stats["sent"], list(rt.core.strategy_errors), rt.core.host.errors
        finally:
            await rt.stop()

    async def main():
        venue = await start_venue()
        out = {}
        try:
            for name in strategies:
                for stage in ("paper", "shadow", "small"):
                    out[(name, stage)] = await run_stage(venue, stage, name)
        finally:
            await venue.stop()
        return out
    results = asyncio.run(main())
    for key, (sent, errors, host_errors) in results.items():
        assert not errors and host_errors == 0, (key, errors)
        assert sent > 0, f"{key}: the strategy sent no order"


def test_stop_policy_cancels_orders_and_flattens_when_configured(tmp_path):
    """SIGTERM/SIGINT policy: open orders are canceled; with [orders] flatten_on_stop the
    positions are closed too (at the venue, over FIX)."""
    async def main(flatten: bool, sub: str):
        venue = await start_venue()
        base = tmp_path / sub
        base.mkdir()
        rt = await start_runtime(base, venue, "small")
        object.__setattr__(rt.config.orders, "flatten_on_stop", flatten)
        try:
            book = rt.books["AAPL"]
            rt.core.om.submit("AAPL", Side.BUY, 4, book.best_ask + 5, "IOC", owner="strategy")
            resting = rt.core.om.submit("AAPL", Side.BUY, 1, book.best_bid - 30, "DAY", owner="strategy")
            await asyncio.sleep(0.5)
            await rt.stop("SIGTERM")
            acct = venue.exchange.accounts["ENGINE"]
            ours = [o for o in venue.exchange.books["AAPL"].open_orders() if o["owner"] != 0]
            return acct.position.get("AAPL", 0), rt.core.om.order(resting).state, ours
        finally:
            await venue.stop()
    kept, state, ours = asyncio.run(main(False, "keep"))
    assert kept == 4 and state == OrdStatus.CANCELED and ours == []
    flat, state, ours = asyncio.run(main(True, "flatten"))
    assert flat == 0 and state == OrdStatus.CANCELED and ours == []
