"""`engine demo`: the deployment pipeline on embedded defaults, end to end.

1. Starts the venue simulator in-process on loopback (FIX order entry, ITCH feed,
   control endpoint, broker statement) with a seeded synthetic market.
2. backtest: the sample moving-average strategy replays a seeded synthetic quote file
   twice (the second run proves the result digest reproducible).
3. The promotion gate evaluates backtest -> paper on that evidence. Every later
   transition is evaluated the same way. A refused promotion prints which criterion
   failed and by how much; the demo then continues with a forced run, and the evidence
   store records it as forced (a forced run never counts as evidence).
4. paper: the same strategy against the venue's live feed with simulated execution;
   the quotes it saw are captured, and a backtest over exactly that period is recorded
   beside it (the paper-vs-backtest comparison).
5. shadow: real orders over FIX and simulated fills side by side; the paired fills
   measure the slippage model error.
6. small: real orders under the small stage's capital limit, every pre-trade control
   exercised by a deliberately bad order, then a kill-switch drill through the admin
   endpoint: the venue must hold no open order of ours afterwards. The trip records a
   demotion (rollback to paper), as in production.
7. Prints the stage report and writes the HTML report with its plots.

Stage durations are compressed for the demo (seconds instead of days) and the demo
says so; the promotion criteria's minimum durations are lowered to match.
"""
from __future__ import annotations

import asyncio
import csv
import os
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np

from core_ext import matching as mb
from core_ext import risk as rk
from engine.admin import admin_request
from engine.backtest import run_backtest
from engine.config import load_config
from engine.evidence import EvidenceStore, RiskControlCheck, StageRun
from engine.orders import Side
from engine.preflight import format_table, run_checks
from engine.promotion import PromotionGate, criteria_from_config, format_decision
from engine.report import format_stage_table, write_report
from engine.runtime import RunOptions, Runtime, config_digest
from engine.tickdata import load_tick_data
from gateway import synthetic
from gateway.exchange import flow_to_ops
from gateway.venue import Venue, VenueOptions

DEMO_TOKEN_ENV = "ENGINE_ADMIN_TOKEN"
TICK = 0.01


def say(text: str = "") -> None:
    print(text, flush=True)


def write_synthetic_quotes(path: Path, symbol: str, seed: int, events: int, start_us: int) -> int:
    """A quotes file (the Tardis format of ../shared/data/quotes.csv) from the seeded
    synthetic order flow replayed through the matching book: one row per top change."""
    flow = synthetic.generate(events, seed)
    ops = flow_to_ops(flow)
    book = mb.MatchingBook(symbol)
    tops = np.zeros(len(ops), dtype=mb.TOP_DTYPE)
    book.apply_ops(ops, None, tops)
    book.drain_events()
    ts_us = start_us + flow["ts_ns"] // 1000
    rows = 0
    prev = None
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["exchange", "symbol", "timestamp", "local_timestamp", "ask_amount", "ask_price",
                    "bid_price", "bid_amount"])
        for i in range(len(tops)):
            t = tops[i]
            if t["bid_qty"] <= 0 or t["ask_qty"] <= 0 or t["bid_price"] >= t["ask_price"]:
                continue
            key = (int(t["bid_price"]), int(t["bid_qty"]), int(t["ask_price"]), int(t["ask_qty"]))
            if key == prev:
                continue
            prev = key
            w.writerow(["venue-sim", symbol, int(ts_us[i]), int(ts_us[i]), key[3], f"{key[2] * TICK:.2f}",
                        f"{key[0] * TICK:.2f}", key[1]])
            rows += 1
    return rows


def demo_config(path: Path, storage: Path, fix_port: int, feed_port: int, stage_seconds: float) -> Path:
    text = (resources.files("engine") / "sample_run_config.toml").read_text()
    text = text.replace("port = 9878", f"port = {fix_port}")
    text = text.replace("feed_request_port = 9880", f"feed_request_port = {feed_port}")
    text = text.replace('directory = "var/engine"', f'directory = "{storage}"')
    text = text.replace('state_file = "var/engine/killswitch.json"', f'state_file = "{storage / "killswitch.json"}"')
    text = text.replace("min_duration_s = 30", f"min_duration_s = {max(1, int(stage_seconds) - 1)}")
    path.write_text(text)
    return path


class QuoteCapture:
    """Records the top of book the runtime saw, for the backtest over the same period."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.rows: dict[str, list] = {s: [] for s in rt.books}
        self.forward = rt.feed.on_result
        rt.feed.on_result = self

    def __call__(self, result) -> None:
        self.forward(result)
        now_us = time.time_ns() // 1000
        for symbol in self.rt.feed.instrument_symbols(result.top_changed):
            b = self.rt.books[symbol]
            if b.best_bid is not None and b.best_ask is not None and b.best_bid < b.best_ask:
                self.rows[symbol].append((now_us, b.best_ask_size, b.best_ask, b.best_bid, b.best_bid_size))

    def write(self, path: Path, symbol: str) -> int:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["exchange", "symbol", "timestamp", "local_timestamp", "ask_amount", "ask_price",
                        "bid_price", "bid_amount"])
            for ts, asz, ask, bid, bsz in self.rows[symbol]:
                w.writerow(["venue-sim", symbol, ts, ts, asz, f"{ask * TICK:.2f}", f"{bid * TICK:.2f}", bsz])
        return len(self.rows[symbol])


def backtest_run(config, data_path: Path, *, forced: bool, notes: str, period=None) -> tuple[StageRun, object]:
    data = load_tick_data(data_path, symbol=config.strategy.params["symbol"])
    started = time.time_ns()
    res = run_backtest(config.with_stage("backtest"), [data])
    run = StageRun(stage="backtest", started_ns=started, ended_ns=time.time_ns(),
                   config_digest=config_digest(config), result_digest=res.digest, metrics=res.metrics,
                   period_start_ns=period[0] if period else res.first_ts_ns,
                   period_end_ns=period[1] if period else res.last_ts_ns, n_fills=len(res.fills),
                   equity_ts_ns=res.equity_ts_ns, equity=res.equity, trade_pnls=res.trade_pnls, forced=forced,
                   strategy=config.strategy.spec, notes=notes)
    return run, res


def gate_step(gate: PromotionGate, to_stage: str) -> bool:
    decision = gate.promote(to_stage)
    say(format_decision(decision))
    if not decision.promoted:
        say(f"  -> promotion to {to_stage} REFUSED by the gate; the demo continues with a forced "
            f"{to_stage} run, recorded as forced (it will not count as evidence).")
    return decision.promoted


async def run_venue_stage(config_path: Path, stage: str, seconds: float, forced: bool, *,
                          during=None) -> tuple[Runtime, list]:
    config = load_config(config_path, stage=stage)
    rt = Runtime(config, config.stage, RunOptions(config_path=str(config_path), stage=stage, admin_port=0,
                                                  duration_s=seconds, force=forced))
    await rt.start()
    capture = QuoteCapture(rt)
    rt.quote_capture = capture
    if not await rt.wait_for_market_data():
        raise RuntimeError("no market data from the venue simulator")
    checks = await run_checks(rt)
    say(format_table(checks))
    if not all(c.ok for c in checks):
        await rt.stop("pre-flight failed")
        raise RuntimeError(f"pre-flight failed in {stage}")
    rt.started_ns = time.time_ns()
    rt.core.start()
    extra = []
    if during is not None:
        extra = await during(rt)
    await rt.stop_event.wait()
    await rt.stop(f"{stage} stage done")
    return rt, extra


async def small_stage_drills(rt: Runtime, venue: Venue) -> list[RiskControlCheck]:
    """Exercise every pre-trade control with a deliberately bad order, then the kill switch."""
    await asyncio.sleep(max(1.0, (rt.options.duration_s or 4) / 2))
    core = rt.core
    symbol = core.config.strategy.params["symbol"]
    inst = core.instruments[symbol]
    book = rt.books[symbol]
    limits = core.config.risk.instruments[symbol].kernel_limits()
    now = time.time_ns()
    mid = (book.best_bid + book.best_ask) // 2
    drills = {
        "max_order_qty": (limits["max_order_qty"] + 1, mid),
        "max_order_notional": (limits["max_order_qty"], mid * 50),
        "price_band": (1, mid * 2),
    }
    checks = []
    for name, (qty, price) in drills.items():
        code = core.kernel.would_pass(inst.inst_id, int(Side.BUY), qty, price, 2**62 + len(checks), now)
        checks.append(RiskControlCheck(name, True, code != rk.RISK_OK, rk.REJECT_REASONS.get(code, "?")))
    # position and gross exposure: evaluated against a position placed near the limit for the
    # check only (single-threaded: nothing trades in between), then restored
    kernel, pos = core.kernel, core.kernel.position(inst.inst_id)
    for name, position, qty in (("max_position", limits["max_position"], 1),
                                ("max_gross_exposure", 10**9 // max(mid, 1), 1)):
        kernel.set_position(inst.inst_id, min(position, limits["max_position"]))
        code = kernel.would_pass(inst.inst_id, int(Side.BUY), qty, mid, 2**62 + 10 + len(checks), now)
        if name == "max_gross_exposure" and code == rk.RISK_REJECT_MAX_POSITION:
            code = kernel.would_pass(inst.inst_id, int(Side.SELL), qty, mid, 2**62 + 20, now)
        kernel.set_position(inst.inst_id, pos)
        checks.append(RiskControlCheck(name, True, code != rk.RISK_OK, rk.REJECT_REASONS.get(code, "?")))
    # throttle: real checks until the window is full; each passing check is released at once
    # (as if the order had not been sent) so that only the rate limit can refuse
    passed = []
    code = rk.RISK_OK
    for i in range(core.config.risk.max_orders_per_window + 1):
        code = kernel.check(inst.inst_id, int(Side.BUY), 1, book.best_bid, 2**62 + 100 + i, time.time_ns())
        if code != rk.RISK_OK:
            break
        kernel.on_reject(inst.inst_id, int(Side.BUY), 1)
        passed.append(i)
    checks.append(RiskControlCheck("throttle", True, code == rk.RISK_REJECT_THROTTLE,
                                   f"{len(passed)} passed, then {rk.REJECT_REASONS.get(code, '?')}"))
    # daily loss: the day started richer than the account is now -> the policy trips the kill switch
    core.policy.start_day(core.portfolio.equity() + float(core.config.risk.daily_loss_limit) + 1)
    core.policy.check()
    checks.append(RiskControlCheck("daily_loss", True, core.killswitch.tripped,
                                   f"kill switch: {core.killswitch.reason or 'not tripped'}"))
    loop = asyncio.get_running_loop()
    token = os.environ[DEMO_TOKEN_ENV]
    refused = await loop.run_in_executor(None, lambda: admin_request(
        rt.admin.host, rt.admin.port, "POST", "/kill", body={"reason": "no token"}))
    resp = await loop.run_in_executor(None, lambda: admin_request(
        rt.admin.host, rt.admin.port, "POST", "/kill", token=token, body={"reason": "demo kill-switch drill"}))
    await asyncio.sleep(0.5)
    ours = [o for s in venue.exchange.books for o in venue.exchange.books[s].open_orders() if o["owner"] != 0]
    ok = refused.status == 401 and resp.status == 200 and not ours
    checks.append(RiskControlCheck("kill_switch", True, ok,
                                   f"POST /kill without token -> {refused.status}, with token -> {resp.status}; "
                                   f"open orders at the venue after: {len(ours)}"))
    say(f"  kill-switch drill: POST /kill answered {resp.status}; the venue holds {len(ours)} open order(s) "
        f"of ours afterwards")
    return checks


async def pipeline(seed: int, stage_seconds: float, out_dir: Path) -> int:
    os.environ.setdefault(DEMO_TOKEN_ENV, f"demo-{os.getpid()}-{time.time_ns()}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    storage = out_dir / "store"
    storage.mkdir(parents=True)
    say(f"engine demo: deployment pipeline on embedded defaults (seed {seed}); stage durations compressed "
        f"to {stage_seconds:g} s for the demo (production minimums are days)")
    venue = Venue(VenueOptions(fix_port=0, itch_request_port=0, control_port=0, seed=seed,
                               statement_path=str(out_dir / "venue-statement.csv")))
    await venue.start()
    for line in venue.banner():
        say("  " + line)
    try:
        cfg_path = demo_config(out_dir / "engine.toml", storage, venue.fix_port, venue.itch_request_port,
                               stage_seconds)
        config = load_config(cfg_path, stage="backtest")
        evidence = EvidenceStore(storage / "evidence.db")
        gate = PromotionGate(evidence, criteria_from_config(config.promotion))

        say("\n== backtest ==")
        data = out_dir / "synthetic-quotes.csv"
        rows = write_synthetic_quotes(data, config.strategy.params["symbol"], seed, 400_000,
                                      start_us=1_700_000_000_000_000)
        for i in (1, 2):
            run, res = backtest_run(config, data, forced=False, notes=f"demo backtest #{i}")
            evidence.record_run(run)
            m = res.metrics
            say(f"  run {i}: {rows:,} quotes, {len(res.fills)} fills, return {m['total_return']:+.4%}, "
                f"Sharpe {m['sharpe']:.2f}, max drawdown {m['max_drawdown']:.2%}, digest {res.digest[:16]}")
        forced = not gate_step(gate, "paper")

        say("\n== paper ==")
        rt, _ = await run_venue_stage(cfg_path, "paper", stage_seconds, forced)
        paper_id = rt.record_evidence()
        captured = out_dir / "paper-quotes.csv"
        n = rt.quote_capture.write(captured, config.strategy.params["symbol"])
        period = (rt.started_ns, time.time_ns())
        run, res = backtest_run(config, captured, forced=False, notes="backtest over the paper period",
                                period=period)
        evidence.record_run(run)
        say(f"  paper run {paper_id}: {len(rt.core.portfolio.fills)} fills; backtest over the same "
            f"{n:,} captured quotes: {len(res.fills)} fills")
        forced = not gate_step(gate, "shadow")

        say("\n== shadow ==")
        rt, _ = await run_venue_stage(cfg_path, "shadow", stage_seconds, forced)
        rt.record_evidence()
        say(f"  shadow: {rt.shadow.summary()}")
        forced = not gate_step(gate, "small")

        say("\n== small (capital limit enforced, kill-switch drill) ==")
        rt, drills = await run_venue_stage(cfg_path, "small", stage_seconds, forced,
                                           during=lambda r: small_stage_drills(r, venue))
        run_id = rt.record_evidence(risk_controls=drills)
        for d in drills:
            say(f"  control {d.name}: exercised, {'passed' if d.passed else 'FAILED'} ({d.detail})")
        state = gate.state()
        pending = "a paper re-run, then paper -> small" if state.rollback else "none"
        say(f"  stage reached after the drill: {state.current} (rollback pending: {pending}); "
            f"a kill-switch trip in small demotes, as in production")

        say("\n== stage report ==")
        say(format_stage_table(evidence.runs()))
        files = write_report(evidence.evidence(with_series=True), out_dir / "report",
                             criteria_from_config(config.promotion), title="engine demo: stage report")
        say(f"\nHTML report: {files.html}")
        say(f"evidence store: {storage / 'evidence.db'}; venue statement: {out_dir / 'venue-statement.csv'}")
        return 0 if all(d.passed for d in drills) and run_id is not None else 1
    finally:
        await venue.stop()
