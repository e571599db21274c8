"""Tick-to-trade: market-data packet in -> order out, per event, with baselines.

Four entries (`run(quick)`), each one event per sample, timed with
time.perf_counter_ns around the event (never averaged over a batch), warm-up
excluded, GC off while sampling (as bench.harness.measure_each does), percentiles by
bench.harness.percentiles. (measure_each itself is not used: it would time the
release of the order too, which must stay outside the timed region.) Before the
in-process samples the process's memory is prefaulted (engine.tuning.prefault_memory,
as a deployment with locked memory has it; the entry's note says whether it worked).

* ``tick_to_trade_inprocess`` -- ITCH (MoldUDP64) packet bytes -> FIX NewOrderSingle
  bytes, no sockets, through the real engine: ``ItchBookApplier.apply_packet`` ->
  ``TradingCore.on_book`` (built by ``engine.assembly.build_core``: risk policy marks,
  StrategyHost, the Python strategy `TouchQuoter`, ``OrderManager.submit``, the
  ``RiskKernel.check``) -> an in-process ExecutionClient whose ``send_new`` encodes
  with ``core_ext.fix.FixEncoder.new_order_single`` (those bytes are the output).
  Baseline: the same path with the Python references -- ``tests/reference/itch_ref``
  (RefBookApplier) over ``book_ref.RefBook`` books, ``risk_ref.RiskReference`` in
  place of the kernel, and simplefix encoding -- through the same engine core.
* ``tick_to_trade_cython`` -- the same packets through ``core_ext.t2t.TickToTrade``
  with the compiled strategy ``QuoteAtTouch`` (same decisions as TouchQuoter):
  applier, strategy, ``RiskKernel.check_order`` and the encoder all called from C.
  Baseline: the in-process engine path above (ratio = how much the compiled path
  takes out).
* ``tick_to_trade_loopback`` -- `engine run` itself (a child process: stage small over
  FIX, ``--cpu N --busy-poll``, TouchQuoter, ``[storage] journal_sync = "interval"``)
  against the venue simulator (``gateway.venue.Venue``) in this process, over loopback
  UDP (ITCH/MoldUDP64) and TCP (FIX). A top-of-book change is injected into the
  venue's exchange (an order joining the best bid, then its cancel); the clock starts
  when the publisher sends the packet and stops when the venue's FIX connection
  receives the bytes of the engine's NewOrderSingle (wire to wire: the venue's own
  parsing is not the engine's latency; the exchange must then receive the order, or
  the sample fails). Both readings are taken in this process; the start is taken
  right before the publisher's sendto (the venue building its packet is not timed). The venue and the
  engine's event loop each have a CPU of their own when there are two (the engine's
  helper threads share the venue's); both busy-poll. Baseline: ``--loop asyncio``.
* ``tick_to_trade_loopback_cython`` -- the same with the compiled strategy
  ``core_ext.t2t:QuoteAtTouch`` (engine.compiled_path: the feed handler hands packets
  to ``TickToTrade``, whose bytes go straight into the FIX session) on uvloop;
  baseline: ``tick_to_trade_loopback``. What is left is the sockets, the event loop,
  the session's Python and the runtime's own housekeeping.
* ``loopback_floor`` -- the same trip with nothing in it (``bench.loopback_floor``): a
  relay child process receives each datagram and writes one NewOrderSingle-sized
  message back over TCP, same loop, pinning and busy polling. The machine's own cost
  of the loopback rows; they minus it is what the engine adds. Baseline: the relay on
  the asyncio loop.

Each packet holds one message that changes the top of book (an order joining the
best bid or ask, then its delete); the strategy sends one order per top change.
Orders are released after each sample, outside the timed region (a Canceled report
to the order manager / ``kernel.on_cancel``; in the loopback the venue cancels the
engine's order, an unsolicited Canceled report), so no limit bites. Machine load is noted in each entry.

    python -m bench.bench_tick_to_trade [--quick]
    pytest bench/bench_tick_to_trade.py --benchmark-only
"""
from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import simplefix

from bench.harness import Result, machine_load, percentiles, report
from core_ext import book as l2
from core_ext import fix as fx
from core_ext import itch
from core_ext import t2t as ct
from engine.assembly import TradingCore, build_core
from engine.compiled_path import instrument_rows
from engine.config import Config, parse_config
from engine.instruments import Instrument
from engine.orders import ExecKind, ExecutionReport, Order, Side, Tif, format_cl_ord_id
from engine.strategy import Quote, Strategy, check_known, param_int, param_lots, param_symbol
from gateway.instruments import tick_parts, ticks_to_text

SYMBOL = "AAPL"
LOCATE = 1
TICK = "0.01"
PRICE4_PER_TICK = 100          # ITCH price4 units per $0.01 tick
SENDER, TARGET = "T2T", "VENUE"
SESSION = "T2TBENCH"
CLOCK0 = 1_700_000_000_000_000_000   # a fixed clock for the deterministic tests
LOOPBACK_OFFSET_TICKS = 20     # loopback orders rest behind the touch: no top change of their own
NO_PRICE = -(2**63)            # core_ext.common NO_PRICE
BOOK_TOP_CHANGED = l2.BOOK_TOP_CHANGED
ORDTYPE_LIMIT, ORDTYPE_MARKET = 0, 1   # core_ext.common OrderType


# ----------------------------------------------------------------------------- strategy

class TouchQuoter(Strategy):
    """Quote at the touch (the Python twin of core_ext.t2t.QuoteAtTouch): on each top
    change of a two-sided, uncrossed book, one limit order of `qty`, alternately a buy
    at bid - offset_ticks and a sell at ask + offset_ticks."""

    PARAMS = ("symbol", "qty", "offset_ticks")

    @classmethod
    def validate_params(cls, params: Mapping[str, Any], instruments: Mapping[str, Instrument]) -> None:
        check_known(params, cls.PARAMS)
        symbol = param_symbol(params, instruments)
        param_lots(params, "qty", instruments.get(symbol))
        param_int(params, "offset_ticks", 0, 0, 1_000_000)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.symbol = self.params["symbol"]
        self.offset = int(self.params.get("offset_ticks", 0))
        self.qty = 0
        self.requested = 0
        self.last_id = 0

    def on_start(self) -> None:
        self.qty = param_lots(self.params, "qty", self.ctx.instrument(self.symbol))

    def on_quote(self, q: Quote) -> None:
        if q.symbol != self.symbol or q.bid is None or q.ask is None or q.bid >= q.ask:
            return
        if self.requested & 1:
            side, price = Side.SELL, q.ask + self.offset
        else:
            side, price = Side.BUY, q.bid - self.offset
            if price <= 0:
                return
        self.requested += 1
        self.last_id = self.ctx.submit_order(self.symbol, side, self.qty, price, Tif.DAY)


# ----------------------------------------------------------------------------- config

def bench_config(storage: str | os.PathLike, offset_ticks: int = 0) -> Config:
    """The engine configuration of the benchmark: one instrument, TouchQuoter, limits
    wide enough that an order per event never hits the throttle or a position limit."""
    return parse_config(config_text(storage, offset_ticks), source="<bench_tick_to_trade>")


def config_text(storage: str | os.PathLike, offset_ticks: int = 0, *, stage: str = "paper",
                compiled: bool = False, venue: str = "") -> str:
    """TOML of bench_config; `compiled`: the Cython twin QuoteAtTouch instead of
    TouchQuoter; `venue`: a [venue] section (the loopback runs `engine run` on it)."""
    storage = Path(storage)
    if compiled:
        strategy = f"""[strategy]
strategy = "core_ext.t2t:QuoteAtTouch"

[strategy.params]
qty = 1
offset_ticks = {int(offset_ticks)}
"""
    else:
        strategy = f"""[strategy]
strategy = "bench.bench_tick_to_trade:TouchQuoter"

[strategy.params]
symbol = "{SYMBOL}"
qty = "1"
offset_ticks = {int(offset_ticks)}
"""
    return f"""
stage = "{stage}"
account = "T2T"
capital = "1000000"

[[instruments]]
symbol = "{SYMBOL}"
tick_size = "{TICK}"
lot_size = "1"

{strategy}
[risk]
max_gross_exposure = "100000000"
max_concentration_bps = 10000
max_orders_per_window = 100000
window_ms = 1
daily_loss_limit = "100000"
var_limit = "10000000"

[risk.capital_limit]
small = "1000000"

[risk.instruments.{SYMBOL}]
max_order_qty = "1000"
max_order_notional = "10000000"
price_band_bps = 500
max_position = "100000"
max_open_orders = 10000
max_ref_age_ms = 600000

[storage]
directory = "{storage.as_posix()}"
journal_sync = "interval"

[killswitch]
state_file = "{(storage / 'killswitch.json').as_posix()}"
{venue}"""


# TickToTrade's instrument rows from an engine config: what `engine run` builds
t2t_instruments = instrument_rows


# ----------------------------------------------------------------------------- packets

def _flush_one(b: itch.MoldPacketBuilder) -> bytes:
    pk = b.flush()
    assert len(pk) == 1
    return pk[0]


def make_packets(n_events: int, levels: int = 10) -> tuple[list[bytes], list[bytes]]:
    """(setup packets, event packets). Setup: `levels` price levels a side around
    150.00 / 150.02 (price4). Event k: an order joining the best bid (pairs 0, 2, ...)
    or the best ask (pairs 1, 3, ...) -- k even -- or the delete of that order -- k odd.
    Every event packet changes the top of book (its size)."""
    b = itch.MoldPacketBuilder(SESSION, 1)
    ts = 34_200_000_000_000
    bid4, ask4 = 1_500_000, 1_500_200
    setup = []
    b.system_event(0, 0, ts, "Q")
    ref = 1
    for i in range(levels):
        b.add_order(LOCATE, 0, ts, ref, "B", 100 * (i + 1), SYMBOL, bid4 - i * PRICE4_PER_TICK)
        b.add_order(LOCATE, 0, ts, ref + 1, "S", 100 * (i + 1), SYMBOL, ask4 + i * PRICE4_PER_TICK)
        ref += 2
    setup.append(_flush_one(b))
    events = []
    for k in range(n_events):
        ts += 1_000
        pair = k // 2
        r = 1_000_000 + pair
        if k % 2 == 0:
            if pair % 2 == 0:
                b.add_order(LOCATE, 0, ts, r, "B", 100, SYMBOL, bid4)
            else:
                b.add_order(LOCATE, 0, ts, r, "S", 100, SYMBOL, ask4)
        else:
            b.order_delete(LOCATE, 0, ts, r)
        events.append(_flush_one(b))
    return setup, events


# ----------------------------------------------------------------------------- in-process clients

class InProcessFix:
    """ExecutionClient that encodes each NewOrderSingle with the compiled FixEncoder
    and keeps the bytes (what a session would write to the venue)."""

    supports_mass_cancel = False

    def __init__(self, instruments: Mapping[str, Instrument], clock: Callable[[], int],
                 encoder: fx.FixEncoder | None = None) -> None:
        self.encoder = encoder or fx.FixEncoder(SENDER, TARGET)
        self.clock = clock
        self.seq = 1
        self.out: list[bytes] = []
        self._wire = {s: tick_parts(i.tick_size) for s, i in instruments.items()}
        self._handler = None

    def set_report_handler(self, handler) -> None:
        self._handler = handler

    def send_new(self, order: Order) -> None:
        mult, decimals = self._wire[order.symbol]
        now = self.clock()
        price = order.price
        seq = self.seq
        self.seq = seq + 1
        # side and tif are IntEnums: the encoder's C int parameters take them as they are
        self.out.append(self.encoder.new_order_single(
            seq, format_cl_ord_id(order.cl_ord_id), order.symbol, order.side, order.qty,
            NO_PRICE if price is None else price, decimals,
            ORDTYPE_MARKET if price is None else ORDTYPE_LIMIT, order.tif, None, now, now, mult))

    def send_cancel(self, order: Order, cancel_id: int) -> None:
        raise NotImplementedError("the in-process benchmark releases orders with Canceled reports")

    send_replace = send_mass_cancel = send_status_request = send_cancel


class SimpleFixClient(InProcessFix):
    """The baseline's ExecutionClient: the same NewOrderSingle encoded with simplefix."""

    def send_new(self, order: Order) -> None:
        mult, decimals = self._wire[order.symbol]
        now = self.clock()
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, "D", header=True)
        m.append_pair(34, self.seq, header=True)
        m.append_pair(49, SENDER, header=True)
        m.append_utc_timestamp(52, now / 1e9, precision=3, header=True)
        m.append_pair(56, TARGET, header=True)
        m.append_pair(11, format_cl_ord_id(order.cl_ord_id))
        m.append_pair(38, order.qty)
        m.append_pair(40, "1" if order.price is None else "2")
        if order.price is not None:
            m.append_pair(44, ticks_to_text(order.price, mult, decimals))
        m.append_pair(54, "1" if order.side == Side.BUY else "2")
        m.append_pair(55, order.symbol)
        m.append_pair(59, "0123"[int(order.tif)])
        m.append_utc_timestamp(60, now / 1e9, precision=3)
        self.seq += 1
        self.out.append(m.encode())


# ----------------------------------------------------------------------------- pipelines

class EnginePipeline:
    """The engine's Python path: ItchBookApplier -> TradingCore.on_book (strategy,
    order manager, risk kernel) -> InProcessFix. `process(packet)` -> bytes or None."""

    def __init__(self, storage: str, clock: Callable[[], int] = time.time_ns, offset_ticks: int = 0,
                 reference: bool = False) -> None:
        self.config = bench_config(storage, offset_ticks)
        self.clock = clock
        inst = self.config.instruments_by_symbol
        if reference:
            from tests.reference import book_ref
            self.books = {s: book_ref.RefBook(s) for s in inst}
            self.client = SimpleFixClient(inst, clock)
        else:
            self.books = {s: l2.L2Book(s) for s in inst}
            self.client = InProcessFix(inst, clock)
        self.core: TradingCore = build_core(self.config, self.books, self.client, clock=clock,
                                            state_dir=storage)
        if reference:
            _use_reference_kernel(self.core, self.config)
            self.applier = _RefApplier(self.books, {s: PRICE4_PER_TICK for s in inst})
            self._apply = self._apply_ref
        else:
            self.applier = itch.ItchBookApplier(list(self.books.values()), strict=False, create_books=False)
            for s in inst:
                self.applier.set_price_divisor(s, PRICE4_PER_TICK)
            apply_packet = self.applier.apply_packet
            self._apply = lambda packet: apply_packet(packet).top_changed
        self.symbols = list(inst)
        self.inst_id = {s: i.inst_id for s, i in inst.items()}
        self.core.start()

    def _apply_ref(self, packet: bytes):
        return self.applier.apply_packet(packet)["top_changed"]

    def process(self, packet: bytes) -> bytes | None:
        # what Runtime._on_feed does with the feed handler's result, minus its metrics
        tops = self._apply(packet)
        if tops:
            core, now, symbols = self.core, self.clock(), self.symbols
            for idx in tops:
                core.on_book(symbols[idx], BOOK_TOP_CHANGED, now)
        out = self.client.out
        if not out:
            return None
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def release(self) -> None:
        """Cancel (by report) every open order: the kernel gets its reservation back."""
        om = self.core.om
        for o in om.open_orders():
            om.on_execution_report(ExecutionReport(kind=ExecKind.CANCELED, cl_ord_id=o.cl_ord_id,
                                                   leaves_qty=0, cum_qty=0, symbol=o.symbol))

    def housekeeping(self) -> None:
        self.core.om.forget_terminal(self.clock() + 1)

    @property
    def strategy(self) -> TouchQuoter:
        return self.core.host.strategy


class CythonPipeline:
    """core_ext.t2t.TickToTrade with QuoteAtTouch, sharing the engine's kernel setup."""

    def __init__(self, storage: str, offset_ticks: int = 0, next_cl_ord_id: int | None = None) -> None:
        from engine.risk_policy import build_kernel
        self.config = bench_config(storage, offset_ticks)
        self.kernel = build_kernel(self.config)
        self.strategy = ct.QuoteAtTouch(qty=1, offset_ticks=offset_ticks)
        if next_cl_ord_id is None:
            next_cl_ord_id = ((time.time_ns() // 1_000_000_000) << 32) | 1
        self.t2t = ct.TickToTrade(t2t_instruments(self.config), self.kernel, fx.FixEncoder(SENDER, TARGET),
                                  self.strategy, next_cl_ord_id)
        self.process = self.t2t.process

    def release(self, batch: int = 64) -> None:
        """Once `batch` orders are logged, drain the log and cancel them
        (kernel.on_cancel): a few open orders at a time, far below every limit."""
        t = self.t2t
        if t.pending_orders < batch:
            return
        k = self.kernel
        for r in t.drain_orders().tolist():
            if r[8] == ct.OUTCOME_SENT:        # outcome
                k.on_cancel(r[2], r[9], r[3])    # inst_id, side, qty


def _use_reference_kernel(core: TradingCore, config: Config) -> None:
    """Put a risk_ref.RiskReference, loaded exactly as build_kernel loads the kernel,
    wherever the core holds its kernel."""
    from tests.reference.risk_ref import RiskReference
    ref = RiskReference(max_instruments=max(len(config.instruments), 1), dup_window=65_536)
    for inst in config.instruments:
        ref.add_instrument(inst.inst_id, inst.kernel_multiplier)
        ref.set_instrument_limits(inst.inst_id, **config.risk.instruments[inst.symbol].kernel_limits())
    ref.set_account_limits(**config.risk.account_limits(core.stage))
    core.kernel = core.om.kernel = core.policy.kernel = core.killswitch.kernel = ref


def _ref_applier_class():
    from tests.reference import book_ref, itch_ref

    class _Book:
        """itch_ref's book interface (delta -> top changed?) over a book_ref.RefBook, in
        the instrument's ticks (price4 // divisor, as ItchBookApplier.set_price_divisor)."""
        __slots__ = ("book", "symbol", "div")

        def __init__(self, book: book_ref.RefBook, div: int) -> None:
            self.book, self.symbol, self.div = book, book.symbol, div

        def delta(self, side: int, price: int, d: int) -> bool:
            return self.book.add_delta(side, price // self.div, d) == book_ref.TOP_CHANGED

    class RefApplier(itch_ref.RefBookApplier):
        def __init__(self, books, divisors) -> None:
            self._given, self._div = books, divisors
            super().__init__(symbols=list(books), strict=False, create_books=False)

        def _add(self, symbol):
            self.index[symbol] = len(self.books)
            self.books.append(_Book(self._given[symbol], self._div[symbol]))
            self.halted.append(False)
            return len(self.books) - 1

    return RefApplier


def _RefApplier(books, divisors):   # noqa: N802 - a class factory (tests/ is imported lazily)
    return _ref_applier_class()(books, divisors)


# ----------------------------------------------------------------------------- in-process sampling

PREFAULTED: list[bool] = []


def _prefault() -> None:
    """Fault in every page mapped now (engine.tuning.prefault_memory), as a deployment
    with locked memory has it (deploy/TUNING.md): the ITCH order table is a 5 MB
    calloc whose pages would otherwise be first touched inside samples (1-5 us each)."""
    from engine.tuning import TuningError, prefault_memory
    try:
        prefault_memory()
        PREFAULTED.append(True)
    except TuningError:
        PREFAULTED.append(False)


def _sample(process: Callable[[bytes], object], release: Callable[[], None], setup: list[bytes],
            events: list[bytes], warmup: int, housekeeping: Callable[[], None] | None = None,
            every: int = 4096) -> np.ndarray:
    """One packet per sample: perf_counter_ns around process(packet) only."""
    clock = time.perf_counter_ns
    for p in setup:
        process(p)
        release()
    n = len(events) - warmup
    assert n > 0
    sent = 0
    for p in events[:warmup]:
        sent += process(p) is not None
        release()
    out = np.zeros(n, dtype=np.float64)
    out.fill(1.0)                    # touch every page now, not inside a sample
    _prefault()
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i, p in enumerate(events[warmup:]):
            t0 = clock()
            data = process(p)
            t1 = clock()
            out[i] = t1 - t0
            if data is None:
                raise AssertionError(f"event {warmup + i} produced no order")
            release()
            if housekeeping is not None and i % every == every - 1:
                housekeeping()
    finally:
        if gc_was:
            gc.enable()
    if sent != warmup:
        raise AssertionError(f"{warmup - sent} warm-up events produced no order")
    return out


def _measure_inprocess(quick: bool) -> tuple[Result, Result, Result]:
    n_py = 3_000 if quick else 30_000
    n_ref = 2_000 if quick else 20_000
    n_c = 30_000 if quick else 300_000
    warm_py, warm_c = (500, 5_000) if quick else (2_000, 20_000)
    setup, events = make_packets(max(n_py + warm_py, n_ref + warm_py, n_c + warm_c))
    with tempfile.TemporaryDirectory(prefix="t2t-bench-") as tmp:
        eng = EnginePipeline(os.path.join(tmp, "engine"))
        py = _sample(eng.process, eng.release, setup, events[:n_py + warm_py], warm_py, eng.housekeeping)
        ref = EnginePipeline(os.path.join(tmp, "ref"), reference=True)
        base = _sample(ref.process, ref.release, setup, events[:n_ref + warm_py], warm_py, ref.housekeeping)
        cy = CythonPipeline(os.path.join(tmp, "cython"))
        c = _sample(cy.process, cy.release, setup, events[:n_c + warm_c], warm_c)
    return (percentiles("tick_to_trade_cython", c), percentiles("tick_to_trade_inprocess", py),
            percentiles("tick_to_trade_inprocess[python refs]", base))


# ----------------------------------------------------------------------------- loopback
#
# Two processes, as a co-located deployment has them: the engine is `engine run` itself
# (a child process: stage small over FIX with --force, --cpu N --busy-poll, the
# strategy and limits of this benchmark, [storage] journal_sync = "interval"); the venue
# simulator -- the measuring instrument -- runs in this process. Each is pinned to a CPU
# of its own when the machine has two, and both busy-poll. This process times every
# sample itself, from the ITCH publisher's send to its FIX connection receiving the
# engine's NewOrderSingle, so both clock readings come from one process. The engine's
# event loop is the variable (--loop uvloop, or asyncio for the baseline).

ENGINE_COMP_ID = "T2T"
INJECTOR = "INJ"
QUIET_S = 0.002        # between samples: the engine handles the ack and the cancel, journals
REPO_ROOT = Path(__file__).resolve().parent.parent


class VenueSide:
    """The child process's venue: injects a top-of-book change, publishes it, waits for
    the engine's order, then cancels that order (an unsolicited Canceled to the engine
    releases its risk reservation) and lets the engine settle."""

    async def start(self) -> None:
        from gateway.venue import Venue, VenueOptions
        self.loop = asyncio.get_running_loop()
        self.venue = Venue(VenueOptions(fix_port=0, itch_request_port=0, target_comp_ids=(ENGINE_COMP_ID,),
                                        symbols=(SYMBOL,), replay_events_per_tick=0, warmup_events=2_000,
                                        seed=11))
        await self.venue.start()
        self.xc = self.venue.exchange
        self.fut: asyncio.Future | None = None
        self.received = 0
        self.last_engine_order = ""
        self._new_order = self.xc.new_order
        self.xc.new_order = self._hooked_new_order     # the venue's FIX order entry calls this
        # the stopwatch stops when the venue's FIX connection receives the bytes of the
        # engine's NewOrderSingle (wire to wire: the venue's parsing is not the engine's)
        from gateway.fix_transport import FixConnection
        self._data_received = FixConnection.data_received
        side = self

        def data_received(conn, data: bytes) -> None:
            if side.wire_t1 == 0 and b"\x0135=D\x01" in data:
                side.wire_t1 = time.perf_counter_ns()
            side._data_received(conn, data)
        FixConnection.data_received = data_received
        self.wire_t1 = 0
        # the stopwatch starts when the publisher hands the packet to the kernel: right
        # before its sendto, after the venue has built the packet (its own work)
        publisher = self.venue.publisher
        self._sendto_all = publisher._sendto_all

        def sendto_all(packet: bytes) -> None:
            if side.send_t0 == 0:
                side.send_t0 = time.perf_counter_ns()
            side._sendto_all(packet)
        publisher._sendto_all = sendto_all
        self.send_t0 = 0
        self.inj_live: str | None = None
        self.n = 0
        from gateway.loops import busy_poll
        self._poller = self.loop.create_task(busy_poll())   # the instrument never sleeps either

    def _hooked_new_order(self, account, cl_ord_id, *args, **kwargs):
        if account == ENGINE_COMP_ID:
            t1 = time.perf_counter_ns()
            self.received += 1
            self.last_engine_order = cl_ord_id
            fut = self.fut
            if fut is not None and not fut.done():
                fut.set_result(t1)
        return self._new_order(account, cl_ord_id, *args, **kwargs)

    def _inject(self) -> None:
        """Change the venue's top of book: an order joining the best bid, or its cancel."""
        self.n += 1
        if self.inj_live is None:
            bid = self.xc.book(SYMBOL).best_bid
            cl = f"I{self.n}"
            if self._new_order(INJECTOR, cl, SYMBOL, 0, 100, bid) is None:
                raise RuntimeError("loopback: the venue refused the injected order")
            self.inj_live = cl
        else:
            if not self.xc.cancel_order(INJECTOR, f"X{self.n}", orig_cl_ord_id=self.inj_live):
                raise RuntimeError("loopback: the venue could not cancel the injected order")
            self.inj_live = None

    async def step(self) -> int:
        self._inject()
        self.fut = fut = self.loop.create_future()
        self.wire_t1 = 0
        self.send_t0 = 0
        sent = self.venue.publisher.flush()
        t0 = self.send_t0
        if sent != 1 or t0 == 0:
            raise RuntimeError(f"loopback: the injection published {sent} packets, expected 1 (sent: {t0 != 0})")
        t_exchange = await asyncio.wait_for(fut, 5.0)
        self.fut = None
        t1 = self.wire_t1
        if not t0 < t1 <= t_exchange:
            raise RuntimeError("loopback: the order reached the exchange without passing the FIX connection")
        # outside the timed region: cancel the engine's order at the venue (the cancel's
        # ClOrdID is a small number, never one of the engine's ids)
        if not self.xc.cancel_order(ENGINE_COMP_ID, format_cl_ord_id(self.n),
                                    orig_cl_ord_id=self.last_engine_order):
            raise RuntimeError(f"loopback: the venue could not cancel the engine's order {self.last_engine_order}")
        await asyncio.sleep(QUIET_S)
        return t1 - t0

    SAMPLE_SHAPE: tuple[int, ...] = ()     # what one step returns: one latency
    ORDERS_PER_STEP = 1

    async def run(self, n: int, warmup: int) -> np.ndarray:
        self.received = 0          # the engine may have sent orders while it synchronised its book
        for _ in range(warmup):
            await self.step()
        out = np.empty((n, *self.SAMPLE_SHAPE), dtype=np.float64)
        gc.collect()
        gc.disable()
        try:
            for i in range(n):
                out[i] = await self.step()
        finally:
            gc.enable()
        expected = (n + warmup) * self.ORDERS_PER_STEP
        if self.received != expected:
            raise RuntimeError(f"loopback: {self.received} orders reached the venue, expected {expected}")
        return out

    async def stop(self) -> None:
        from gateway.fix_transport import FixConnection
        self._poller.cancel()
        FixConnection.data_received = self._data_received
        del self.venue.publisher._sendto_all       # the class's method again
        self.xc.new_order = self._new_order
        await self.venue.stop()


def _cpus() -> tuple[int | None, int | None]:
    """(venue cpu, engine cpu): two distinct CPUs of this process's set, else (None, None)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


async def _start_engine(tmp: str, side: VenueSide, loop_name: str, compiled: bool, engine_cpu: int | None,
                        extra_env: dict | None = None) -> tuple[asyncio.subprocess.Process, asyncio.Task, list[str]]:
    """`engine run` against side's venue; returns once it says it is running."""
    venue = f"""
[venue]
protocol = "fix"
host = "127.0.0.1"
port = {side.venue.fix_port}
sender_comp_id = "{ENGINE_COMP_ID}"
target_comp_id = "VENUE"
feed_host = "127.0.0.1"
feed_request_port = {side.venue.itch_request_port}
feed_session = "{side.venue.options.itch_session}"
"""
    path = Path(tmp) / "engine.toml"
    path.write_text(config_text(Path(tmp) / "engine", LOOPBACK_OFFSET_TICKS, stage="small",
                                compiled=compiled, venue=venue))
    cmd = [sys.executable, "-m", "engine.cli", "run", "--config", str(path), "--stage", "small", "--force",
           "--admin-port", "0", "--loop", loop_name, "--busy-poll"]
    if engine_cpu is not None:
        cmd += ["--cpu", str(engine_cpu)]
    extra = dict(extra_env or {})
    env = dict(os.environ, **{k: v for k, v in extra.items() if k != "PYTHONPATH"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra.get("PYTHONPATH"), str(REPO_ROOT),
                                                      os.environ.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=str(REPO_ROOT), env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []
    running = asyncio.get_running_loop().create_future()

    async def read(stream) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.startswith("engine: running stage") and not running.done():
                running.set_result(True)
        if not running.done():
            running.set_result(False)
    reader = asyncio.gather(read(proc.stdout), read(proc.stderr))
    try:
        ok = await asyncio.wait_for(running, 60)
    except TimeoutError:
        ok = False
    if not ok:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await reader
        raise RuntimeError("loopback: `engine run` did not start:\n" + "\n".join(lines[-30:]))
    return proc, reader, lines


def engine_latency(lines: list[str]) -> dict:
    """The ``latency`` object of the JSON line `engine run` prints when it stops (its
    recorders' whole-run percentiles, ns), or {} if there is none."""
    for line in reversed(lines):
        if line.startswith("{") and '"latency"' in line:
            try:
                return orjson.loads(line).get("latency") or {}
            except orjson.JSONDecodeError:
                continue
    return {}


def _loopback_samples(loop_name: str, n: int, warmup: int, compiled: bool = False,
                      notes: list[str] | None = None, engine_side: dict | None = None,
                      side_class: type[VenueSide] | None = None, env: dict | None = None) -> np.ndarray:
    """n samples (ns) of the loopback with `engine run --loop loop_name`; `engine_side`
    receives the engine's own tick_to_order percentiles (`engine_latency`);
    `side_class`: another venue side (bench.loopback_burst); `env`: extra environment
    for `engine run`."""
    import signal

    from gateway.loops import run as run_on
    venue_cpu, engine_cpu = _cpus()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None

    async def main() -> np.ndarray:
        side = (side_class or VenueSide)()
        await side.start()
        try:
            with tempfile.TemporaryDirectory(prefix="t2t-loop-") as tmp:
                proc, reader, lines = await _start_engine(tmp, side, loop_name, compiled, engine_cpu, env)
                if venue_cpu is not None:      # after the engine started: it inherits our CPU set
                    os.sched_setaffinity(0, {venue_cpu})
                try:
                    samples = await side.run(n, warmup)
                finally:
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                    try:
                        code = await asyncio.wait_for(proc.wait(), 30)
                    except TimeoutError:
                        proc.kill()
                        code = await proc.wait()
                    await reader
                if code != 0:
                    raise RuntimeError(f"loopback: `engine run` exited {code}:\n" + "\n".join(lines[-30:]))
                if engine_side is not None:
                    engine_side.update(engine_latency(lines).get("tick_to_order") or {})
                return samples
        finally:
            await side.stop()
    try:
        samples = run_on(main(), loop="uvloop")
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    if notes is not None:
        notes.append(f"venue (this process) on cpu {venue_cpu}, `engine run --cpu {engine_cpu} --busy-poll`"
                     if engine_cpu is not None else "not pinned (one CPU)")
    return samples


def _measure_loopback(quick: bool) -> tuple[Result, Result, Result, str, dict, dict]:
    """(uvloop, asyncio, compiled strategy, pinning note, and the engine's own
    tick_to_order percentiles in the uvloop and compiled runs)."""
    n, warmup = (1_000, 200) if quick else (10_000, 1_000)
    notes: list[str] = []
    inside_py: dict = {}
    inside_c: dict = {}
    base = percentiles("tick_to_trade_loopback[asyncio]", _loopback_samples("asyncio", n, warmup))
    ours = percentiles("tick_to_trade_loopback",
                       _loopback_samples("uvloop", n, warmup, notes=notes, engine_side=inside_py))
    compiled = percentiles("tick_to_trade_loopback_cython",
                           _loopback_samples("uvloop", n, warmup, compiled=True, engine_side=inside_c))
    return ours, base, compiled, notes[0] if notes else "", inside_py, inside_c


def _measure_floor(quick: bool) -> tuple[Result, Result]:
    """(uvloop, asyncio) samples of bench.loopback_floor: the same trip with a relay
    that does no work in place of the engine."""
    from bench.loopback_floor import floor_samples
    n, warmup = (1_000, 200) if quick else (10_000, 1_000)
    base = percentiles("loopback_floor[asyncio]", floor_samples("asyncio", n, warmup))
    ours = percentiles("loopback_floor", floor_samples("uvloop", n, warmup))
    return ours, base


# ----------------------------------------------------------------------------- entries

def _entry(ours: Result, base: Result, note: str) -> dict:
    e = ours.as_dict()
    e["baseline"] = base.as_dict()
    e["ratio"] = base.p50 / ours.p50
    e["load"] = machine_load()
    e["note"] = note
    return e


def _measure(quick: bool) -> tuple[list[tuple[Result, Result]], list[dict]]:
    cy, py, ref = _measure_inprocess(quick)
    loop, loop_base, loop_c, pinning, inside_py, inside_c = _measure_loopback(quick)
    floor, floor_base = _measure_floor(quick)
    pre = "memory prefaulted" if PREFAULTED and all(PREFAULTED) else "memory NOT prefaulted"
    entries = [
        _entry(py, ref, "ITCH bytes -> FIX bytes through the engine core (ItchBookApplier, TradingCore, "
                        "OrderManager, RiskKernel, FixEncoder); baseline: the same core over the "
                        "Python references (itch_ref, book_ref, risk_ref, simplefix)"),
        _entry(cy, py, "core_ext.t2t.TickToTrade + QuoteAtTouch (all C calls); baseline: the engine's "
                       "Python path (tick_to_trade_inprocess)"),
        _entry(loop, loop_base, "venue publishes (UDP) -> `engine run` (stage small, Python strategy, journal "
                                "interval) -> FIX (TCP) -> the venue's FIX connection has the order (wire to "
                                f"wire, timed at the venue); {pinning}; baseline: engine run --loop asyncio"),
        _entry(loop_c, loop, "the same with a compiled strategy (core_ext.t2t:QuoteAtTouch on "
                             "engine.compiled_path) on uvloop; baseline: tick_to_trade_loopback"),
        _entry(floor, floor_base, "the machine's floor under the loopback rows: the same sockets, pinning and "
                                  "busy polling with a relay that does no work in place of the engine "
                                  "(bench.loopback_floor: UDP datagram in -> one NewOrderSingle-sized TCP "
                                  "write out); baseline: the relay on asyncio"),
    ]
    for e in entries[:2]:
        e["note"] += f"; {pre}"
    # the engine's own share of each loopback sample: its tick_to_order recorder (feed
    # packet handed to the books -> order bytes written), whole run, warm-up included
    entries[2]["engine_tick_to_order"] = inside_py
    entries[3]["engine_tick_to_order"] = inside_c
    rows = [(py, ref), (cy, py), (loop, loop_base), (loop_c, loop), (floor, floor_base)]
    return rows, entries


def run(quick: bool = False) -> list[dict]:
    """Entries for `engine bench`: tick_to_trade_inprocess, tick_to_trade_cython,
    tick_to_trade_loopback, tick_to_trade_loopback_cython and loopback_floor (ns per
    event; baselines measured in the same run)."""
    return _measure(quick)[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    t0 = time.perf_counter()
    rows, entries = _measure(quick)
    print(report(rows))
    for e in entries:
        print(f"{e['name']:28} p50 {e['p50']:>10,.0f} ns  p99 {e['p99']:>10,.0f}  p99.9 {e['p999']:>10,.0f}  "
              f"max {e['max']:>11,.0f}  n {e['n']:>7}   baseline p50 {e['baseline']['p50']:>10,.0f} "
              f"({e['baseline']['name']})  ratio {e['ratio']:.1f}x")
        inside = e.get("engine_tick_to_order")
        if inside:
            print(f"{'  of which inside the engine':28} p50 {inside['p50_ns']:>10,} ns  p99 {inside['p99_ns']:>10,}  "
                  f"p99.9 {inside['p999_ns']:>10,}  max {inside['max_ns']:>11,}  n {inside['n']:>7}   "
                  f"(engine run's tick_to_order recorder)")
    print(f"({time.perf_counter() - t0:.1f} s{' quick' if quick else ''}; {machine_load()})")
    return 0


# ----------------------------------------------------------------------------- pytest-benchmark view

PYTEST_BATCH = 100


def _pytest_inprocess(benchmark, make) -> None:
    """One benchmark call = PYTEST_BATCH packets (with the release after each; the GC
    stays on, as pytest-benchmark runs it)."""
    with tempfile.TemporaryDirectory(prefix="t2t-pb-") as tmp:
        pipe = make(tmp)
        rounds = 200 if isinstance(pipe, CythonPipeline) else 50
        setup, events = make_packets((rounds + 5) * PYTEST_BATCH)
        for p in setup:
            pipe.process(p)
        it = iter(events)

        tidy = getattr(pipe, "housekeeping", None)

        def batch():
            for _ in range(PYTEST_BATCH):
                pipe.process(next(it))
                pipe.release()
            if tidy is not None:
                tidy()          # forget terminal orders, as _sample does every 4096 events
        benchmark.pedantic(batch, rounds=rounds, warmup_rounds=5)


def test_bench_t2t_cython(benchmark):
    _pytest_inprocess(benchmark, lambda tmp: CythonPipeline(tmp))


def test_bench_t2t_inprocess(benchmark):
    _pytest_inprocess(benchmark, lambda tmp: EnginePipeline(tmp))


def test_bench_t2t_inprocess_python_refs(benchmark):
    _pytest_inprocess(benchmark, lambda tmp: EnginePipeline(tmp, reference=True))


if __name__ == "__main__":
    sys.exit(main())
