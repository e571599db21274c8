"""Pre-flight checks: real checks against the running parts, printed as a table.

Each check exercises the thing it names, so an absent or broken part fails it:
a silent feed, a venue that refuses logon, limits that are not loaded, a kill switch
whose cancel never arrives, an admin endpoint that does not answer, a read-only
storage directory, a debug build. `engine run` refuses a real-execution stage unless
every check passes; `engine preflight` exits 1 when any fails.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from core_ext import buildinfo
from core_ext import risk as rk
from engine.orders import OrdStatus, Side

MAX_QUOTE_AGE_S = 5.0
MAX_HEARTBEAT_RTT_MS = 250.0
DRILL_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    ms: float = 0.0
    applicable: bool = True     # False: not part of this stage (said so in the table)


def format_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':{width}}  result  {'ms':>7}  detail", "-" * (width + 40)]
    for r in results:
        verdict = "PASS" if r.ok and r.applicable else ("n/a " if r.ok else "FAIL")
        lines.append(f"{r.name:{width}}  {verdict:6}  {r.ms:7.1f}  {r.detail}")
    failed = [r.name for r in results if not r.ok]
    lines.append(f"pre-flight: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
    return "\n".join(lines)


async def _timed(name: str, coro) -> CheckResult:
    t0 = time.perf_counter()
    try:
        ok, detail, *rest = await coro
    except Exception as exc:  # noqa: BLE001 - a check that raises has failed, with the reason
        ok, detail, rest = False, f"error: {exc!r}", []
    applicable = rest[0] if rest else True
    return CheckResult(name, ok, detail, (time.perf_counter() - t0) * 1e3, applicable)


async def check_market_data(rt) -> tuple:
    feed = rt.feed
    if feed is None or feed.counters.packets == 0:
        return False, "no ITCH packet received from the venue feed"
    if feed.stale or feed.needs_resync:
        return False, f"feed stale (gaps {feed.counters.gaps}, needs resync {feed.needs_resync})"
    if feed.feed_age_s() > MAX_QUOTE_AGE_S:
        return False, f"feed silent for {feed.feed_age_s():.1f} s"
    empty = [s for s, b in rt.books.items() if b.best_bid is None or b.best_ask is None]
    if empty:
        return False, f"no two-sided book for {', '.join(empty)}"
    return True, f"{feed.counters.packets} packets, {len(rt.books)} books two-sided, age {feed.feed_age_s():.2f} s"


async def check_venue(rt) -> tuple:
    if rt.ouch is not None:
        c = rt.ouch.client
        if not c.logged_in:
            return False, f"OUCH not logged in ({c.rejected or 'no login'})"
        return True, ("OUCH/SoupBinTCP logged in; server heartbeats every 1 s (SoupBinTCP has no "
                      "request/answer round trip to time)")
    if rt.fix is None:
        return True, "simulated execution: no venue session in this stage", False
    session = rt.fix.client.session
    if not session.logged_on:
        return False, f"not logged on ({session.last_disconnect_reason or 'no logon'})"
    rtt = await rt.fix.client.heartbeat_roundtrip(timeout_s=2.0)
    if rtt is None:
        return False, "TestRequest not answered within 2 s"
    ok = rtt * 1e3 <= MAX_HEARTBEAT_RTT_MS
    return ok, f"logged on; TestRequest/Heartbeat round trip {rtt * 1e3:.2f} ms (limit {MAX_HEARTBEAT_RTT_MS} ms)"


async def check_sequence_numbers(rt) -> tuple:
    if rt.ouch is not None:
        return True, f"SoupBinTCP next sequenced message {rt.ouch.client.next_seq}"
    if rt.fix is None:
        return True, "simulated execution: no session sequence numbers", False
    s = rt.fix.client.session
    if s.resend_range is not None or s.queue:
        return False, f"gap outstanding: resend {s.resend_range}, {len(s.queue)} queued"
    s.store.flush()
    if (s.store.next_sender_seq, s.store.next_target_seq) != (s.next_sender_seq, s.next_target_seq):
        return False, "store and session disagree"
    return True, f"next out {s.next_sender_seq}, next in {s.next_target_seq}, no gap"


async def check_risk_limits(rt) -> tuple:
    core = rt.core
    now = time.time_ns()
    problems = []
    for symbol, inst in core.instruments.items():
        book = rt.books[symbol]
        ref = core.kernel.reference_price(inst.inst_id)
        price = book.best_bid or ref
        if price is None:
            return False, f"{symbol}: no reference price"
        inst_risk = core.config.risk.instruments.get(symbol)
        if inst_risk is None:
            return False, f"{symbol}: no risk limits configured"
        max_qty = inst_risk.kernel_limits()["max_order_qty"]
        good = core.kernel.would_pass(inst.inst_id, int(Side.BUY), 1, price, 2**63, now)
        if good in (rk.RISK_REJECT_NO_LIMITS, rk.RISK_REJECT_UNKNOWN_INSTRUMENT):
            return False, f"{symbol}: limits not loaded ({rk.REJECT_REASONS[good]})"
        fat_finger = core.kernel.would_pass(inst.inst_id, int(Side.BUY), 1, price * 2, 2**63 - 1, now)
        if fat_finger == rk.RISK_OK:
            problems.append(f"{symbol}: an order at twice the market passed")
        if max_qty < 2**62:
            oversize = core.kernel.would_pass(inst.inst_id, int(Side.BUY), max_qty + 1, price, 2**63 - 2, now)
            if oversize == rk.RISK_OK:
                problems.append(f"{symbol}: {max_qty + 1} lots passed (max {max_qty})")
    if problems:
        return False, "; ".join(problems)
    return True, f"limits loaded for {len(core.instruments)} instruments; test orders rejected (price band, size)"


async def check_reconciliation(rt) -> tuple:
    om = rt.core.om
    if om.blocked:
        return False, f"trading blocked: {', '.join(sorted(om.block_reasons))}"
    return True, "no mismatch recorded; trading not blocked"


async def check_kill_switch(rt) -> tuple:
    """Armed (not latched) and its cancel path works: a passive drill order is placed and
    must be confirmed canceled by the venue (or simulator) within the time-out."""
    core = rt.core
    if core.killswitch.tripped:
        return False, f"latched: {core.killswitch.reason} (engine kill --reset)"
    symbol, inst = next(iter(core.instruments.items()))
    book = rt.books[symbol]
    if book.best_bid is None:
        return False, f"{symbol}: no bid to place the drill order under"
    band = core.config.risk.instruments[symbol].price_band_bps
    price = max(1, book.best_bid - max(1, book.best_bid * min(band, 100) // 20_000))
    oid = core.om.submit(symbol, Side.BUY, 1, price, "DAY", tag="preflight-drill", owner="preflight")
    order = core.om.order(oid)
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while order.state in (OrdStatus.PENDING_NEW,) and time.monotonic() < deadline:
        rt.sim.advance_to(time.time_ns()) if rt.sim is not None else None
        await asyncio.sleep(0.01)
    if order.state == OrdStatus.REJECTED:
        return False, f"drill order rejected: {order.reject_reason}"
    if order.state != OrdStatus.NEW:
        return False, f"drill order not acknowledged within {DRILL_TIMEOUT_S} s (state {order.state})"
    core.om.cancel_all(symbol, use_mass_cancel=False)
    while not order.is_terminal and time.monotonic() < deadline:
        rt.sim.advance_to(time.time_ns()) if rt.sim is not None else None
        await asyncio.sleep(0.01)
    if order.state != OrdStatus.CANCELED:
        return False, f"drill order not confirmed canceled within {DRILL_TIMEOUT_S} s (state {order.state})"
    return True, "armed; drill order placed and confirmed canceled"


async def check_monitoring(rt) -> tuple:
    from engine.admin import admin_request
    host, port = rt.admin.host, rt.admin.port
    loop = asyncio.get_running_loop()
    health = await loop.run_in_executor(None, lambda: admin_request(host, port, "GET", "/healthz"))
    metrics = await loop.run_in_executor(None, lambda: admin_request(host, port, "GET", "/metrics"))
    if metrics.status != 200 or b"engine_" not in metrics.body:
        return False, f"/metrics answered {metrics.status}"
    if health.status not in (200, 503):
        return False, f"/healthz answered {health.status}"
    return True, f"http://{host}:{port} /metrics and /healthz answer"


async def check_storage(rt) -> tuple:
    probe = rt.storage / f".preflight-{os.getpid()}"
    with open(probe, "wb") as f:
        f.write(b"ok")
        f.flush()
        os.fsync(f.fileno())
    probe.unlink()
    seq = rt.journal.append("preflight", {"ts_ns": time.time_ns()})
    if not rt.journal.sync(timeout=2.0):
        return False, "journal did not sync within 2 s"
    return True, f"{rt.storage} writable; journal synced to record {seq}"


async def check_release_build(rt) -> tuple:
    if buildinfo.DEBUG_BUILD:
        return False, "core_ext was built with ENGINE_DEBUG=1 (-O0, linetrace): rebuild with `make build`"
    return True, f"release build (Cython {buildinfo.CYTHON_VERSION})"


CHECKS = (
    ("market data flowing and fresh", check_market_data),
    ("venue logon and heartbeat", check_venue),
    ("sequence numbers consistent", check_sequence_numbers),
    ("risk limits loaded, bad order rejected", check_risk_limits),
    ("reconciliation clean", check_reconciliation),
    ("kill switch armed and cancels", check_kill_switch),
    ("monitoring endpoint answering", check_monitoring),
    ("storage writable", check_storage),
    ("release build of the extensions", check_release_build),
)


async def run_checks(rt) -> list[CheckResult]:
    return [await _timed(name, fn(rt)) for name, fn in CHECKS]
