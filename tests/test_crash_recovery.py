"""Crash recovery, end to end: `engine run` SIGKILLed at random points, restarted, checked.

The venue simulator runs in this process (its own event loop in a thread, so the test
can look inside: every order-entry message it received, its statement); the engine
runs as a real subprocess (`python -m engine.cli run --stage small --force`, real FIX
execution, pre-flight) with an aggressive strategy (tests/crash_strategy.py) against a
venue that delays every report by a few milliseconds, so that requests are in flight
at the kill. After the last restart the engine is stopped gracefully and:

* its final positions equal the venue's broker statement for our account;
* every ClOrdID reached the venue once: no order, cancel or replace was sent twice
  (not after a restart either);
* no fill was lost or invented: the journal's fills reconcile one to one with the
  statement's (`engine.portfolio.reconcile`).

A second end-to-end test shows the fail-closed side: a statement that disagrees stops
`engine run` before the strategy starts, with the disagreements listed. Unit tests
check the journal replay against the order manager itself (random request/report
sequences), the in-flight replace cases, the statement parser and the session store.
"""
from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from importlib import resources
from pathlib import Path

import orjson
import pytest

from engine import recovery as rc
from engine.config import load_config
from engine.errors import DataError
from engine.journal import Journal, read_journal
from engine.orders import ExecKind, ExecutionReport, OrderManager, OrdStatus, Side, format_cl_ord_id
from engine.portfolio import Portfolio, reconcile
from gateway.fix_store import StoredMessage
from gateway.venue import Venue, VenueOptions
from tests.engine_helpers import XYZ_PRICE, FakeClient, make_om

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "ENGINE"
TOKEN = "crash-test-token"
# CI runs 2 seeds x 4 kills (8 kill points, ~20 s); more for a soak, e.g.
# CRASH_RECOVERY_SEEDS=1,2,3,4,5,6,7,8 CRASH_RECOVERY_KILLS=8
SEEDS = [int(x) for x in os.environ.get("CRASH_RECOVERY_SEEDS", "11,29").split(",")]
KILLS_PER_RUN = int(os.environ.get("CRASH_RECOVERY_KILLS", "4"))
START_TIMEOUT_S = 30.0


# =========================================================================== harness

class VenueThread:
    """The venue simulator on its own event loop in a thread, with a spy on every
    application message the engine's session delivers to it."""

    def __init__(self, tmp_path: Path, ack_delay_ms: float = 12.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="venue", daemon=True)
        self.thread.start()
        self.inbound: list[tuple[bytes, str, bool]] = []      # (MsgType, ClOrdID, PossDup/PossResend)
        options = VenueOptions(fix_port=0, itch_request_port=0, control_port=0, warmup_events=3000,
                               replay_events_per_tick=10, replay_tick_ms=5.0,
                               fault_ack_delay_ms=ack_delay_ms, statement_path=str(tmp_path / "venue-statement.csv"))
        self.venue = Venue(options)
        self.call(self.venue.start())
        app = self.venue.fix.apps[ACCOUNT]
        delegate = app.on_app_message

        def spy(session, msg):
            cl = msg.get(11)
            self.inbound.append((msg.msg_type, cl.decode() if cl else "",
                                 msg.get(43) == b"Y" or msg.get(97) == b"Y"))
            return delegate(session, msg)
        app.on_app_message = spy

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn):
        async def run():
            return fn()
        return self.call(run())

    def statement_csv(self) -> str:
        return self.on_loop(self.venue.exchange.statement_csv)

    def open_orders(self) -> int:
        return self.on_loop(lambda: len(self.venue.exchange.accounts[ACCOUNT].live)
                            if ACCOUNT in self.venue.exchange.accounts else 0)

    @property
    def statement_url(self) -> str:
        return f"http://127.0.0.1:{self.venue.control_port}/statement"

    def stop(self) -> None:
        try:
            self.call(self.venue.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def write_config(tmp_path: Path, venue: VenueThread, seed: int) -> Path:
    text = (resources.files("engine") / "sample_run_config.toml").read_text()
    text = text.replace('stage = "paper"', 'stage = "small"')
    text = text.replace("port = 9878", f"port = {venue.venue.fix_port}")
    text = text.replace("feed_request_port = 9880", f"feed_request_port = {venue.venue.itch_request_port}")
    text = text.replace('directory = "var/engine"', f'directory = "{tmp_path / "store"}"')
    text = text.replace('state_file = "var/engine/killswitch.json"',
                        f'state_file = "{tmp_path / "store" / "killswitch.json"}"')
    text = text.replace("max_orders_per_window = 50", "max_orders_per_window = 400")
    text = text.replace('strategy = "engine.strategies.ma_crossover:MovingAverageCrossover"',
                        'strategy = "tests.crash_strategy:CrashStrategy"')
    params = (f'[strategy.params]\nsymbol = "AAPL"\nqty = "5"\nmax_inventory = "80"\nlevels = 2\n'
              f'level_gap_ticks = 2\ntake_every_ms = 100\ncancel_every_ms = 250\nmax_actions_per_s = 40\n'
              f'seed = {seed}\n\n')
    text, n = re.subn(r"\[strategy\.params\].*?\n\n", params, text, flags=re.S)
    assert n == 1
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path


class Engine:
    """`engine run` as a subprocess; its output goes to a file we can poll."""

    def __init__(self, config: Path, log: Path, statement: str) -> None:
        env = dict(os.environ, ENGINE_ADMIN_TOKEN=TOKEN, **{rc.STATEMENT_ENV: statement})
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.log = log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--stage", "small", "--force",
             "--admin-port", "0"], cwd=REPO, env=env, stdout=self._fh, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"engine never printed {needle!r} (exit {self.proc.returncode}):\n{self.output()[-4000:]}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"engine did not exit within {timeout} s:\n{self.output()[-4000:]}")
        finally:
            self._fh.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._fh.close()


def engine_instruments(config: Path):
    return load_config(config, environ={"ENGINE_ADMIN_TOKEN": TOKEN}).instruments_by_symbol


def statement_positions(text: str, instruments) -> dict[str, int]:
    statement, _ = rc.parse_venue_statement(text, instruments)
    return {sym: q for (acct, sym), q in statement.positions.items() if acct == ACCOUNT}


def order_messages(inbound) -> list[tuple[bytes, str, bool]]:
    return [m for m in inbound if m[0] in (b"D", b"F", b"G", b"q")]


# =========================================================================== end to end

@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_at_random_points_restart_recover_and_agree_with_the_venue(tmp_path, seed):
    rng = random.Random(seed)
    venue = VenueThread(tmp_path)
    kills, logs = [], []
    try:
        config = write_config(tmp_path, venue, seed)
        instruments = engine_instruments(config)
        journal_dir = tmp_path / "store" / "journal"
        for k in range(KILLS_PER_RUN):
            eng = Engine(config, tmp_path / f"run{k}.log", venue.statement_url)
            if k == 1:
                # one kill at any point of the start: replay, logon, recovery itself, pre-flight
                time.sleep(rng.uniform(0.5, 3.0))
                out = eng.output()
            else:
                eng.wait_for("engine: running stage")
                out = eng.output()
                assert "the engine and the venue agree" in out, out
                time.sleep(rng.uniform(0.3, 1.5))
            eng.kill()
            logs.append(eng.output())
            state = rc.replay_journal(journal_dir, instruments)
            kills.append({"working_in_journal": len(state.open_orders()), "working_at_venue": venue.open_orders(),
                          "pending": sum(1 for o in state.open_orders() if o.state == rc.PENDING_NEW
                                         or o.replace_pending)})
            if k and "recovery: the engine and the venue agree" in out:
                # this start recovered from the previous kill: it resumed the FIX session
                # exactly when some order may have been working
                resumed = "FIX session resumed" in out
                assert resumed == (kills[k - 1]["working_in_journal"] > 0), out
        eng = Engine(config, tmp_path / "final.log", venue.statement_url)
        eng.wait_for("engine: running stage")
        time.sleep(1.0)
        eng.proc.send_signal(signal.SIGTERM)
        code = eng.wait_exit()
        out = eng.output()
        logs.append(out)
        assert code == 0, out[-4000:]
        time.sleep(0.2)
        statement_text = venue.statement_csv()
        working_at_venue = venue.open_orders()
        inbound = list(venue.inbound)
    finally:
        venue.stop()

    print(f"kills: {kills}")
    for log in logs:
        # every order found still working after a crash was canceled before trading
        for adopted, canceled in re.findall(r"recovery: (\d+) orders still working at the venue adopted; "
                                            r"(\d+) canceled", log):
            assert adopted == canceled, log
        assert "disagreement" not in log, log
    final = orjson.loads([ln for ln in out.splitlines() if ln.startswith('{"stage"')][-1])
    venue_positions = statement_positions(statement_text, instruments)
    # the engine's final positions are the venue's
    assert {s: q for s, q in final["positions"].items()} == {s: venue_positions.get(s, 0) for s in instruments}
    assert working_at_venue == 0, "a graceful stop leaves no order working"
    # every ClOrdID reached the venue once: nothing was sent twice, before or after a restart
    ids = Counter(cl for _, cl, _ in order_messages(inbound))
    twice = {cl: n for cl, n in ids.items() if n > 1}
    assert not twice, f"ClOrdIDs the venue received more than once: {twice}"
    assert sum(1 for m in inbound if m[0] == b"D") > 50, "the strategy hardly traded: the test proves nothing"
    # no fill lost or invented: the journal's fills are the statement's, one to one
    state = rc.replay_journal(journal_dir, instruments)
    portfolio = Portfolio(instruments)
    for fill in state.fills:
        portfolio.on_fill(fill)
    statement, extra = rc.parse_venue_statement(statement_text, instruments)
    assert not extra
    assert reconcile(statement, portfolio, ACCOUNT) == []
    assert len([f for f in statement.fills if f.account == ACCOUNT]) > 20
    assert state.positions() == {s: q for s, q in venue_positions.items() if q}
    # the kills did catch orders working
    assert sum(1 for k in kills if k["working_in_journal"]) >= len(kills) // 2, kills


@pytest.mark.slow
def test_a_statement_that_disagrees_blocks_trading_and_engine_run_says_why(tmp_path):
    venue = VenueThread(tmp_path)
    try:
        config = write_config(tmp_path, venue, seed=5)
        eng = Engine(config, tmp_path / "run0.log", venue.statement_url)
        eng.wait_for("engine: running stage")
        time.sleep(1.0)
        eng.kill()
        time.sleep(0.3)     # what the engine wrote before it died reaches the venue
        # nothing of ours may trade any more (the statement below stays true): the venue
        # cancels what the crash left working, and its reports wait for our next logon
        assert venue.on_loop(lambda: venue.venue.exchange.cancel_all(ACCOUNT, "test")) >= 0
        # a statement where AAPL is 7 lots longer and our first fill never happened
        lines = venue.statement_csv().splitlines()
        ours = [i for i, ln in enumerate(lines) if ln.startswith(f"FILL,{ACCOUNT},")]
        assert ours, "no fill before the kill"
        dropped = lines.pop(ours[0]).split(",")
        pos = next(i for i, ln in enumerate(lines) if ln.startswith(f"POSITION,{ACCOUNT},AAPL,"))
        cells = lines[pos].split(",")
        cells[8] = str(int(cells[8]) + 7)
        lines[pos] = ",".join(cells)
        bad = tmp_path / "bad-statement.csv"
        bad.write_text("\n".join(lines) + "\n")
        orders_before = sum(1 for m in venue.inbound if m[0] == b"D")
        eng = Engine(config, tmp_path / "run1.log", str(bad))
        code = eng.wait_exit()
        out = eng.output()
        orders_after = sum(1 for m in venue.inbound if m[0] == b"D")
    finally:
        venue.stop()
    assert code == 2, out
    assert "engine: running stage" not in out          # the strategy never started
    assert "pre-flight" not in out                      # nor did anything that trades
    assert orders_after == orders_before, "no new order may reach the venue while they disagree"
    assert "engine run: error: recovery: the engine and the venue disagree" in out
    assert re.search(r"position ENGINE AAPL: ours -?\d+, venue -?\d+ \(statement:\d+\)", out), out
    assert f"fill_missing_at_venue ENGINE AAPL {dropped[4]}" in out, out
    # the journal remembers what was found
    last = [r for r in read_journal(tmp_path / "store" / "journal") if r.kind == rc.KIND_RECOVERED][-1]
    assert last.payload["clean"] is False and len(last.payload["mismatches"]) == 2


def test_paper_restart_rebuilds_positions_and_closes_the_simulators_orders(tmp_path, capsys, monkeypatch):
    """Paper: the simulator dies with the process, so its working orders are closed and
    the positions come from the journal alone (no venue to ask)."""
    from engine.runtime import RunOptions, Runtime
    from tests.test_runtime import start_venue
    from tests.test_runtime import write_config as write_runtime_config

    async def main():
        venue = await start_venue()
        path = write_runtime_config(tmp_path, venue.fix_port, venue.itch_request_port, "paper")
        config = load_config(path, stage="paper")

        async def runtime():
            rt = Runtime(config, config.stage, RunOptions(config_path=str(path), stage="paper", admin_port=0,
                                                          check_only=True))
            await rt.start()
            assert await rt.wait_for_market_data()
            return rt
        try:
            rt = await runtime()
            book = rt.books["AAPL"]
            taken = rt.core.om.submit("AAPL", Side.BUY, 7, book.best_ask + 5, "IOC", owner="t")
            resting = rt.core.om.submit("AAPL", Side.SELL, 3, book.best_ask + 50, "DAY", owner="t")
            for _ in range(100):
                if rt.core.om.order(taken).is_terminal and not rt.core.om.order(resting).state.startswith("Pending"):
                    break
                rt.sim.advance_to(time.time_ns())
                await asyncio.sleep(0.01)
            before = (rt.core.portfolio.positions(), rt.core.portfolio.avg_price("AAPL"),
                      rt.core.om.order(resting).state)
            # the "crash": no cancel, nothing flushed but what the journal's writer did by itself
            rt._timer_task.cancel()
            await rt.collector.stop()
            await rt.admin.stop()
            await rt.feed.stop()
            rt.journal.close()
            # the dead process's background writers go with it (recovery reads only the journal)
            rt.capture.close()
            rt.store.close()
            rt.logging_handle.stop()
            rt2 = await runtime()
            after = (rt2.core.portfolio.positions(), rt2.core.portfolio.avg_price("AAPL"),
                     rt2.recovery.report.closed, rt2.core.om.open_orders(), rt2.core.om.ids.next() > resting,
                     rt2.core.portfolio.fills, rt2.core.kernel.position(rt2.core.instruments["AAPL"].inst_id))
            await rt2.stop()
        finally:
            await venue.stop()
        return before, after, resting

    monkeypatch.setenv("ENGINE_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv(rc.STATEMENT_ENV, raising=False)
    before, after, resting = asyncio.run(main())
    assert before[0] == {"AAPL": 7} and before[1] > 0 and before[2] == OrdStatus.NEW
    # the same position at the same average cost; the fill list is the new session's (empty)
    assert after == (before[0], before[1], [resting], [], True, [], 7)
    assert "orders of the simulated execution closed" in capsys.readouterr().out


# =========================================================================== journal replay vs the order manager

def _om_with_journal(tmp_path: Path, **kw):
    journal = Journal(tmp_path / "journal")
    om, kernel, client, clock = make_om(journal=lambda kind, payload: journal.append(kind, payload), **kw)
    portfolio = Portfolio(om.instruments)
    om.add_listener(on_fill=portfolio.on_fill)
    om.add_listener(on_order=lambda snap: snap.state is OrdStatus.REJECTED
                    and journal.append(rc.KIND_ORDER_REJECTED, {"cl_ord_id": snap.cl_ord_id}))
    return om, client, clock, journal, portfolio


def _drive(om: OrderManager, client: FakeClient, clock, rng: random.Random, steps: int) -> None:
    """Random requests, and the venue's answers to them (acks, fills, cancels, replaces,
    rejects, status answers that reveal a missed fill), in any order."""
    requests: list[tuple] = []          # what the client sent and the venue has not answered
    venue_cum: dict[int, int] = {}
    for _ in range(steps):
        clock.advance(1_000_000)
        live = om.open_orders()
        r = rng.random()
        if r < 0.25 or not live:
            qty = rng.choice([5, 10, 20, 5000])              # 5000: a local (risk) reject
            px = XYZ_PRICE + rng.randint(-20, 20)
            before = len(client.sent)
            om.submit("XYZ", rng.choice([Side.BUY, Side.SELL]), qty, px, owner="t")
            requests += client.sent[before:]
            continue
        o = rng.choice(live)
        if r < 0.32:
            before = len(client.sent)
            om.cancel(o.cl_ord_id)
            requests += client.sent[before:]
        elif r < 0.42:
            before = len(client.sent)
            om.replace(o.cl_ord_id, qty=o.cum_qty + rng.choice([5, 10, 15]), price=(o.price or XYZ_PRICE) + 1)
            requests += client.sent[before:]
        elif r < 0.55 and o.state is not OrdStatus.PENDING_NEW and o.leaves_qty:
            # a fill the engine never saw, revealed by a status answer
            cum = o.cum_qty + rng.randint(1, o.leaves_qty)
            venue_cum[o.cl_ord_id] = cum
            client.report(ExecKind.ORDER_STATUS, o.cl_ord_id, cum_qty=cum, avg_px=float(o.price),
                          ord_status=OrdStatus.FILLED if cum >= o.qty else OrdStatus.PARTIALLY_FILLED)
        elif requests:
            req = requests.pop(rng.randrange(len(requests)))
            kind = req[0]
            if kind == "new":
                cl = req[1]
                order = om.order(cl)
                choice = rng.random()
                if choice < 0.1:
                    client.report(ExecKind.REJECTED, cl, reason="venue says no")
                else:
                    client.ack(cl)
                    if choice < 0.6 and order.leaves_qty:
                        client.fill(cl, rng.randint(1, order.leaves_qty), order.price)
            elif kind == "cancel":
                _, cl, cancel_id = req
                order = om.order(cl)
                if rng.random() < 0.8 and order is not None and not order.is_terminal:
                    client.report(ExecKind.CANCELED, cancel_id, orig_cl_ord_id=cl)
                else:
                    client.report(ExecKind.CANCEL_REJECT, cancel_id, orig_cl_ord_id=cl, exec_id="")
            elif kind == "replace":
                _, orig, new, qty, px = req
                if rng.random() < 0.75 and not om.order(orig).is_terminal:
                    client.report(ExecKind.REPLACED, new, orig_cl_ord_id=orig)
                else:
                    client.report(ExecKind.REPLACE_REJECT, new, orig_cl_ord_id=orig, exec_id="")
        else:
            if o.leaves_qty and o.state is not OrdStatus.PENDING_NEW:
                client.fill(o.cl_ord_id, rng.randint(1, o.leaves_qty), o.price)


def _om_view(om: OrderManager) -> dict[int, int]:
    return {o.cl_ord_id: o.cum_qty for o in om.orders() if not o.is_terminal}


def _replay_view(state: rc.JournalState) -> dict[int, int]:
    return {o.cl_ord_id: o.cum_qty for o in state.open_orders()}


@pytest.mark.parametrize("seed", range(12))
def test_replay_rebuilds_what_the_order_manager_had(tmp_path, seed):
    om, client, clock, journal, portfolio = _om_with_journal(tmp_path)
    _drive(om, client, clock, random.Random(seed), 400)
    journal.close()
    state = rc.replay_journal(tmp_path / "journal", om.instruments)
    assert state.positions() == portfolio.positions()
    assert [(f.exec_id, f.qty, f.price, f.side) for f in state.fills] == \
           [(f.exec_id, f.qty, f.price, f.side) for f in portfolio.fills]
    assert _replay_view(state) == _om_view(om)
    assert state.max_id == om.ids.last
    assert om.stats["fills"] > 20 and om.reject_counts, "the sequence exercised too little"


def test_local_rejects_are_journaled_so_the_replay_does_not_ask_the_venue_about_them(tmp_path):
    om, client, clock, journal, _ = _om_with_journal(tmp_path)
    cl = om.submit("XYZ", Side.BUY, 5000, XYZ_PRICE)          # above max_order_qty: never sent
    assert om.order(cl).state is OrdStatus.REJECTED and client.sent == []
    journal.close()
    state = rc.replay_journal(tmp_path / "journal", om.instruments)
    assert state.open_orders() == [] and state.orders[cl].outcome == "Rejected"


# =========================================================================== what recovery learns from the venue

def _state_with_replace_in_flight():
    from tests.engine_helpers import make_config
    state = rc.JournalState(make_config().instruments_by_symbol)
    a, b = 101, 102
    state.apply_record("submit", {"cl_ord_id": a, "symbol": "XYZ", "side": 0, "qty": 10, "price": 100, "tif": 0})
    state.apply_record("report", rc.report_to_dict(ExecutionReport(ExecKind.NEW, a, exec_id="e1")))
    state.apply_record("report", rc.report_to_dict(ExecutionReport(ExecKind.TRADE, a, exec_id="e2",
                                                                      last_qty=3, last_px=100, cum_qty=3)))
    state.apply_record("replace", {"cl_ord_id": a, "new_cl_ord_id": b, "qty": 12, "price": 101})
    return state, a, b


def test_a_replace_in_flight_that_went_through_is_settled_by_the_status_answers():
    state, a, b = _state_with_replace_in_flight()
    assert {o.cl_ord_id for o in state.open_orders()} == {a, b}
    # the answer for A comes back under B's id (the venue order now carries it): replaced,
    # and 2 more lots traded while we were down
    state.apply_report(ExecutionReport(ExecKind.ORDER_STATUS, b, exec_id="s1", cum_qty=5, avg_px=100.4,
                                          ord_status=OrdStatus.PARTIALLY_FILLED))
    state.apply_report(ExecutionReport(ExecKind.ORDER_STATUS, b, exec_id="s2", cum_qty=5, avg_px=100.4,
                                          ord_status=OrdStatus.PARTIALLY_FILLED))
    assert state.orders[a].outcome == "Replaced"
    assert [(o.cl_ord_id, o.cum_qty, o.state) for o in state.open_orders()] == [(b, 5, rc.LIVE)]
    assert state.fills[-1].exec_id == f"status:{b}:5" and state.fills[-1].qty == 2
    assert state.fills[-1].price == 101          # (100.4 * 5 - 3 * 100) / 2
    assert state.positions() == {"XYZ": 5} and not state.notes


def test_a_replace_in_flight_that_never_arrived_leaves_the_original_working():
    state, a, b = _state_with_replace_in_flight()
    state.apply_report(ExecutionReport(ExecKind.ORDER_STATUS, a, exec_id="s1", cum_qty=3, avg_px=100.0,
                                          ord_status=OrdStatus.PARTIALLY_FILLED))
    state.apply_report(ExecutionReport(ExecKind.ORDER_STATUS, b, exec_id="s2", cum_qty=0,
                                          ord_status=OrdStatus.REJECTED, reason="unknown order"))
    assert [(o.cl_ord_id, o.cum_qty, o.replace_pending) for o in state.open_orders()] == [(a, 3, 0)]
    assert state.orders[b].outcome == "not at the venue" and not state.notes


def test_status_answers_tell_an_order_that_never_left_from_one_the_venue_lost():
    state, a, _ = _state_with_replace_in_flight()
    state.apply_record("submit", {"cl_ord_id": 200, "symbol": "XYZ", "side": 1, "qty": 5, "price": 99, "tif": 0})
    state.apply_report(ExecutionReport(ExecKind.ORDER_STATUS, 200, exec_id="s1", cum_qty=0,
                                          ord_status=OrdStatus.REJECTED))
    assert not state.orders[200].open and not state.notes        # never reached the venue: fine
    state.apply_report(ExecutionReport(ExecKind.ORDER_STATUS, a, exec_id="s2", cum_qty=0,
                                          ord_status=OrdStatus.REJECTED))
    assert state.notes == [("order_missing_at_venue", a, "live cum 3", "unknown order")]
    state2, a2, _ = _state_with_replace_in_flight()
    state2.apply_report(ExecutionReport(ExecKind.ORDER_STATUS, a2, exec_id="s3", cum_qty=1,
                                           ord_status=OrdStatus.PARTIALLY_FILLED))
    assert state2.notes == [("order_differs", a2, "cum 3", "cum 1")]


def test_reports_already_journaled_are_dropped_by_exec_id():
    state, a, _ = _state_with_replace_in_flight()
    fills = state.apply_report(ExecutionReport(ExecKind.TRADE, a, exec_id="e2", last_qty=3, last_px=100))
    assert fills == [] and state.duplicates == 1 and state.positions() == {"XYZ": 3}


def test_report_payload_is_the_order_managers(tmp_path):
    seen = []
    om, _, client, _ = make_om(journal=lambda kind, payload: seen.append((kind, payload)))
    cl = om.submit("XYZ", Side.BUY, 5, XYZ_PRICE)
    r = client.fill(cl, 2, XYZ_PRICE, cum_qty=2, leaves_qty=3, liquidity="M")
    assert ("report", rc.report_to_dict(r)) in seen
    assert rc.report_from_dict(rc.report_to_dict(r)) == r


# =========================================================================== statement, session store

VENUE_STATEMENT = """record,account,symbol,time_utc,exec_id,order_id,cl_ord_id,side,qty,price,liquidity,bought,sold,net_cash
FILL,ENGINE,AAPL,2024-05-01T13:30:00.000001Z,17,281474976710657,{cl},BUY,5,100.03,M,,,
FILL,OTHER,AAPL,2024-05-01T13:30:00.000002Z,18,281474976710658,x-1,SELL,5,100.03,T,,,
FILL,ENGINE,ZZZZ,2024-05-01T13:30:00.000003Z,19,281474976710659,{cl},SELL,1,1.00,T,,,
POSITION,ENGINE,AAPL,2024-05-01T13:31:00.000000Z,,,,,5,,,5,0,-500.15
POSITION,ENGINE,MSFT,2024-05-01T13:31:00.000000Z,,,,,0,,,0,0,0.00
POSITION,ENGINE,ZZZZ,2024-05-01T13:31:00.000000Z,,,,,-1,,,0,1,1.00
POSITION,OTHER,AAPL,2024-05-01T13:31:00.000000Z,,,,,-5,,,0,5,500.15
"""


def test_venue_statement_is_read_into_positions_and_fills(tmp_path):
    config = load_config(resources.files("engine") / "sample_run_config.toml",
                         environ={"ENGINE_ADMIN_TOKEN": TOKEN})
    instruments = config.instruments_by_symbol
    cl = 123456789
    statement, extra = rc.parse_venue_statement(VENUE_STATEMENT.format(cl=format_cl_ord_id(cl)), instruments)
    assert statement.positions == {("ENGINE", "AAPL"): 5, ("ENGINE", "MSFT"): 0, ("OTHER", "AAPL"): -5}
    [mine, other] = statement.fills
    assert (mine.account, mine.exec_id, mine.cl_ord_id, mine.side, mine.qty, mine.price) == \
           ("ENGINE", "17", cl, Side.BUY, 5, 10003)
    assert other.cl_ord_id == 0
    assert [str(m) for m in extra] == ["position ENGINE ZZZZ: ours not configured, venue -1 (statement:7)"]
    with pytest.raises(DataError, match="statement:2"):
        rc.parse_venue_statement(VENUE_STATEMENT.format(cl=format_cl_ord_id(cl)).replace("100.03,M", "100.035,M"),
                                 instruments)


def test_session_store_has_the_next_outbound_number_before_the_message_leaves(tmp_path):
    """The outbound number is written through (memory-mapped file) with every message: a
    process killed right after finds it; the messages reach SQLite on the session timer
    (flush), and the number never goes back even if SQLite holds an older one."""
    store = rc.session_store(tmp_path, "ENGINE", "VENUE")
    for seq in (1, 2, 3):
        store.store(StoredMessage(seq, b"D", b"11=X\x01", b"20240501-13:30:00.000"))
        store.set_next_sender(seq + 1)
        store.set_next_target(seq + 10)
        # what a process killed right now would find
        again = rc.session_store(tmp_path, "ENGINE", "VENUE")
        assert (again.next_sender_seq, again.next_target_seq) == (seq + 1, seq + 10)
        again._db.close()
    assert store.flush_interval > 0
    store.flush(wait=True)                          # the session timer's write (its thread)
    again = rc.session_store(tmp_path, "ENGINE", "VENUE")
    assert [m.seq_num for m in again.get_range(1, 9)] == [1, 2, 3] and again.next_sender_seq == 4
    again.close()
    store.close()


def test_a_statement_that_cannot_be_read_is_a_disagreement(tmp_path):
    from types import SimpleNamespace
    config = load_config(resources.files("engine") / "sample_run_config.toml",
                         environ={"ENGINE_ADMIN_TOKEN": TOKEN})
    core = SimpleNamespace(instruments=config.instruments_by_symbol,
                           portfolio=Portfolio(config.instruments_by_symbol))
    for source in ("http://127.0.0.1:9/statement", str(tmp_path / "missing.csv")):
        recovery = rc.Recovery(rc.JournalState(core.instruments), account=ACCOUNT, has_venue=True,
                               statement_source=source)
        recovery.core = core
        [m] = asyncio.run(recovery._compare_statement())
        assert m.kind == "statement" and "unavailable" in m.theirs and source in m.theirs
    recovery = rc.Recovery(rc.JournalState(core.instruments), account=ACCOUNT, has_venue=True)
    recovery.core, recovery.statement_source = core, None
    assert asyncio.run(recovery._compare_statement()) == []
    assert "positions not checked" in recovery.report.statement
