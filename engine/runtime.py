"""`engine run --stage S`: the trading core against a venue, on uvloop.

A stage selects two things only (DESIGN.md):

| stage  | market data                   | execution                                   |
|--------|-------------------------------|---------------------------------------------|
| paper  | the venue's ITCH feed         | simulated (engine.sim_execution)            |
| shadow | the venue's ITCH feed         | venue (FIX) for real, simulated alongside   |
| small  | the venue's ITCH feed         | venue (FIX); capital_limit via gross limit  |
| live   | the venue's ITCH feed         | venue (FIX)                                 |

(`backtest` replays a file instead: `engine backtest`.) Everything else is the
`engine.assembly` trading core. The runtime adds the event loop, the feed handler, the
admin endpoint with metrics, the journal, pre-flight checks, the promotion gate and a
graceful stop (cancel open orders; keep or flatten positions per config).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import orjson

from core_ext import book as l2
from engine import admin as admin_mod
from engine import recovery as recovery_mod
from engine.assembly import TradingCore, build_core
from engine.config import Config, Stage, load_config
from engine.errors import EngineError
from engine.evidence import EvidenceStore, StageRun
from engine.journal import Journal, JournalError
from engine.metrics import EngineMetrics, MetricsCollector, risk_kernel_source
from engine.orders import TERMINAL_RETENTION_NS
from engine.promotion import PromotionGate, criteria_from_config
from engine.shadow_execution import ShadowExecution
from engine.sim_execution import SimExecution
from engine.venue_execution import FixExecution, OuchExecution
from gateway.itch_feed import ItchFeedHandler

log = logging.getLogger("engine.runtime")

TIMER_INTERVAL_S = 0.05
REAL_STAGES = (Stage.SHADOW, Stage.SMALL, Stage.LIVE)


@dataclass
class RunOptions:
    config_path: str | None = None
    stage: str | None = None
    admin_port: int | None = None
    duration_s: float | None = None      # stop by itself after this long (demo, tests)
    force: bool = False                  # run a stage not reached by promotion (recorded)
    skip_preflight: bool = False         # only for paper: real stages always run it
    cpu: int | None = None               # pin the process to this CPU
    feed_wait_s: float = 5.0             # how long to wait for the first market data
    check_only: bool = False             # pre-flight: start the parts, trade nothing, record nothing
    gc_policy: str = "freeze"            # engine.tuning.apply_gc_policy: default | freeze | disabled
    lock_memory: bool = False            # mlockall: no page faults on the hot path (co-location)
    busy_poll: bool = False              # the loop never sleeps in epoll (gateway.loops.busy_poll)


def price4_per_tick(tick_size: Decimal) -> int:
    """ITCH prices carry 4 implied decimals; one instrument tick is this many of them."""
    per = Decimal(tick_size) * 10_000
    if per != per.to_integral_value() or per < 1:
        raise EngineError(f"tick size {tick_size} is not a whole number of ITCH price units (0.0001)")
    return int(per)


def config_digest(config: Config) -> str:
    """Digest of what makes a run comparable across stages (strategy, instruments, risk)."""
    parts = [config.strategy.spec, repr(sorted(config.strategy.params.items()))]
    parts += [f"{i.symbol}:{i.tick_size}:{i.lot_size}" for i in config.instruments]
    parts.append(repr(config.risk))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class Runtime:
    config: Config
    stage: Stage
    options: RunOptions
    core: TradingCore | None = None
    books: dict[str, l2.L2Book] = field(default_factory=dict)
    feed: ItchFeedHandler | None = None
    sim: SimExecution | None = None
    fix: FixExecution | None = None
    ouch: OuchExecution | None = None
    shadow: ShadowExecution | None = None
    journal: Journal | None = None
    recovery: recovery_mod.Recovery | None = None
    admin: admin_mod.AdminServer | None = None
    collector: MetricsCollector | None = None
    gate: PromotionGate | None = None
    evidence: EvidenceStore | None = None
    started_ns: int = 0
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    system_errors: int = 0
    preflight_report: list = field(default_factory=list)
    _timer_task: asyncio.Task | None = None
    gc_collector: object | None = None   # tuning.PeriodicCollector with gc_policy "disabled"
    busy_poller: asyncio.Task | None = None   # gateway.loops.busy_poll with --busy-poll
    compiled: object | None = None        # engine.compiled_path.CompiledPath (a Cython strategy)
    _sync_before_send: bool = False       # [storage] journal_sync = "before_send" in a real stage
    _next_forget_ns: int = 0              # next time ended orders are dropped from the order manager
    _stopped: bool = False                # stop() ran (it is idempotent)
    logging_handle: object | None = None  # engine.logs JSON logging (queue handler, own thread)
    store: object | None = None           # engine.store.Store: orders, fills (writer thread)
    alerting: object | None = None        # engine.alerts.Alerting on the metrics collector
    reconciliation_mismatches: int = 0    # of the last reconciliation
    _rtt_task: asyncio.Task | None = None
    _tick_rec: object | None = None       # LatencyRecorder: feed packet in -> order handed to the client
    _feed_t0: int = 0                     # perf_counter_ns when the feed event being handled began (else 0)
    _ack_rec: object | None = None        # LatencyRecorder: order submitted -> venue acknowledgement
    _md_rec: object | None = None         # LatencyRecorder: venue ITCH timestamp -> receipt
    _rtt_rec: object | None = None        # LatencyRecorder: TestRequest -> Heartbeat round trip
    _md_seen: int = 0                     # feed latency samples already passed on
    _slippage: dict = field(default_factory=dict)   # symbol -> recent fill slippage, bps
    # counters for /metrics, kept as the events come (a scan of every order and fill per
    # collection grew with the session and stalled the loop for milliseconds)
    _orders_sent: Counter = field(default_factory=Counter)     # symbol -> orders that went out
    _venue_rejects: int = 0                                     # orders rejected other than by risk
    _fills: Counter = field(default_factory=Counter)           # symbol -> fills
    _filled_lots: Counter = field(default_factory=Counter)     # symbol -> lots filled
    _filled_orders: set = field(default_factory=set)           # orders with at least one fill
    capture: object | None = None         # engine.capture.MarketDataCapture: quotes to Parquet
    _stale: bool = True   # until the feed has delivered; the kernel starts fail-closed

    # --------------------------------------------------------------- build
    @property
    def storage(self) -> Path:
        return Path(self.config.storage.directory)

    def _clock(self) -> int:
        return time.time_ns()

    async def start(self) -> None:
        """Start every part; a failure part-way stops what was started (threads, sockets,
        log handlers) before the error propagates."""
        try:
            await self._start()
        except BaseException:
            try:
                await self.stop("start failed")
            except Exception:  # noqa: BLE001 - the start error is the one to report
                log.exception("cleanup after a failed start")
            raise

    async def _start(self) -> None:
        cfg = self.config
        self.storage.mkdir(parents=True, exist_ok=True)
        self.evidence = EvidenceStore(self.storage / "evidence.db")
        self.gate = PromotionGate(self.evidence, criteria_from_config(cfg.promotion))
        if not self.options.check_only and not self.gate.may_run(
                str(self.stage), force=self.options.force, reason="engine run --force"):
            raise EngineError(f"stage {self.stage} was not reached by promotion (current: "
                              f"{self.gate.current_stage()}); promote first, or pass --force (recorded)")
        if self.stage in REAL_STAGES and cfg.venue is None:
            raise EngineError(f"stage {self.stage} needs a [venue] section in the config")
        if cfg.strategy.compiled and (self.stage not in REAL_STAGES or cfg.venue.protocol != "fix"):
            raise EngineError(f"compiled strategy {cfg.strategy.spec} writes FIX: it runs in the stages "
                              f"small and live with [venue] protocol = \"fix\" (engine.compiled_path), "
                              f"not in stage {self.stage}"
                              + ("" if self.stage not in REAL_STAGES else f" over {cfg.venue.protocol}"))
        self.journal = Journal(self.storage / "journal", fsync_interval_ms=cfg.storage.journal_fsync_ms)
        self.journal.bind_loop(asyncio.get_running_loop())   # the writer wakes after each event
        self._sync_before_send = self.stage in REAL_STAGES and cfg.storage.journal_sync == "before_send"
        self._start_records(cfg)
        # crash recovery, step 1: the journal's view, before anything connects
        self.recovery = recovery_mod.Recovery.from_journal(self.journal.directory, cfg,
                                                           has_venue=self.stage in REAL_STAGES
                                                           and cfg.venue.protocol == "fix",
                                                           statement_source=cfg.venue.statement if cfg.venue else None)
        self.books = {s: l2.L2Book(s) for s in cfg.instruments_by_symbol}
        self._symbol_ids = {s: i for i, s in enumerate(cfg.instruments_by_symbol)}
        client = self._execution_client()
        self.core = build_core(cfg, self.books, client, clock=self._clock, stage=self.stage,
                               state_dir=self.storage, journal=self._journal)
        self.recovery.restore(self.core, self.journal)     # step 2: before the venue session logs on
        om = self.core.om
        om.add_listener(on_order=self._stamp_order)          # latency stamps: at once
        om.add_listener(on_order=self._record_order, on_fill=self._record_fill, after_event=True)
        self._wire_kill_switch_demotion()
        for symbol in self.books:          # fail closed until the feed has delivered
            self.core.on_book_stale(symbol, True)
        await self._start_feed()
        if self.fix is not None:
            try:
                await self.fix.client.start(wait_logged_on=5.0)
            except (TimeoutError, OSError) as exc:
                why = self.fix.client.session.last_disconnect_reason
                raise EngineError(f"venue {cfg.venue.host}:{cfg.venue.port} did not accept our logon "
                                  f"within 5 s ({why or repr(exc)})") from None
        if self.ouch is not None:
            await self.ouch.client.start()
            try:
                await self.ouch.client.wait_logged_in(5.0)
            except TimeoutError:
                raise EngineError(f"venue {cfg.venue.host}:{cfg.venue.port} did not accept our OUCH login "
                                  f"within 5 s ({self.ouch.client.rejected or 'no answer'})") from None
        await self.recovery.reconcile(self)    # step 3: raises (trading blocked) if the venue disagrees
        if cfg.strategy.compiled:
            from engine.compiled_path import CompiledPath
            self.compiled = CompiledPath(self)  # feed packets -> core_ext.t2t -> the FIX session
        await self._start_admin()
        self._timer_task = asyncio.get_running_loop().create_task(self._timers())
        self.started_ns = self._clock()

    def _start_records(self, cfg: Config) -> None:
        """JSON logs (system, orders, fills, risk), the SQLite store and the Parquet capture:
        all written by background threads, never on the event loop."""
        from engine.capture import MarketDataCapture
        from engine.logs import LogConfig, setup_logging
        from engine.store import Store
        secrets = []
        for secret in (cfg.venue.password if cfg.venue else None, cfg.monitoring.token):
            if secret is not None:
                try:
                    secrets.append(secret.reveal())
                except EngineError:
                    pass
        self.logging_handle = setup_logging(LogConfig(directory=self.storage / "logs"), secrets=secrets)
        self.store = Store(self.storage / "engine.db")
        self.capture = MarketDataCapture(self.storage / "capture", "quotes", list(cfg.instruments_by_symbol))

    def _stamp_order(self, order) -> None:
        """The latency recorders, when the order manager emits (right after a send, on
        an ack), not when the after-event listeners run."""
        if order.state == "PendingNew":
            if self._feed_t0 and self._tick_rec is not None:     # the first order of a feed event
                self._tick_rec.record_since(self._feed_t0)
                self._feed_t0 = 0
        elif order.state == "New" and order.cum_qty == 0 and self._ack_rec is not None:
            live = self.core.om.order(order.cl_ord_id)      # created when submitted
            if live is not None:
                self._ack_rec.record(max(0, time.time_ns() - live.created_ns))

    def _record_order(self, order) -> None:
        """Counters, the order log and the store row of an order update (an after-event
        listener: during a feed event it runs on the loop's next turn)."""
        from engine.logs import log_order, log_risk
        from engine.store import OrderRow
        if order.state == "PendingNew":
            self._orders_sent[order.symbol] += 1
        elif order.state == "Rejected" and not order.reject_reason.startswith("RISK_"):
            self._venue_rejects += 1
        log_order(str(order.state), cl_ord_id=order.cl_ord_id, symbol=order.symbol, side=int(order.side),
                  qty=order.qty, price=order.price, cum_qty=order.cum_qty, reason=order.reject_reason or None)
        if order.state == "Rejected":
            log_risk("reject", cl_ord_id=order.cl_ord_id, symbol=order.symbol, reason=order.reject_reason)
        self.store.upsert_order(OrderRow(
            cl_ord_id=order.cl_ord_id, symbol=order.symbol, side=int(order.side), qty=order.qty, price=order.price,
            ord_type=0 if order.price is not None else 1, tif=int(order.tif), state=str(order.state),
            filled_qty=order.cum_qty, stage=str(self.stage), created_ns=order.updated_ns,
            updated_ns=order.updated_ns, reason=order.reject_reason or None))

    def _record_fill(self, fill) -> None:
        from engine.logs import log_fill
        from engine.store import FillRow
        self._fills[fill.symbol] += 1
        self._filled_lots[fill.symbol] += fill.qty
        self._filled_orders.add(fill.cl_ord_id)
        book = self.books.get(fill.symbol)
        if book is not None and book.best_bid is not None and book.best_ask is not None:
            # realised slippage against the mid when the fill arrived, bps (positive = worse)
            mid = (book.best_bid + book.best_ask) / 2
            bps = (fill.price - mid) / mid * 1e4 * (1 if int(fill.side) == 0 else -1)
            recent = self._slippage.setdefault(fill.symbol, [])
            recent.append(bps)
            del recent[:-200]
        log_fill(exec_id=fill.exec_id, cl_ord_id=fill.cl_ord_id, symbol=fill.symbol, side=int(fill.side),
                 qty=fill.qty, price=fill.price, ts_ns=fill.ts_ns)
        self.store.insert_fill(FillRow(exec_id=fill.exec_id or f"{fill.cl_ord_id}-{fill.ts_ns}",
                                       cl_ord_id=fill.cl_ord_id, symbol=fill.symbol, side=int(fill.side),
                                       qty=fill.qty, price=fill.price, ts_ns=fill.ts_ns, stage=str(self.stage),
                                       fee=float(fill.commission or 0.0),
                                       liquidity={"M": "maker", "T": "taker"}.get(fill.liquidity)))

    def _journal(self, event: str, payload: dict) -> None:
        # appended before the order leaves the process (the order manager calls this first)
        # and written to the file after the event; with journal_sync = "before_send" in a
        # real stage it is on disk first, so the venue never holds an order the journal
        # does not know, even after a power cut
        self.journal.append(event, payload)
        # (a compiled-path order is journaled after it was sent: waiting for the disk
        # then would only hold the event loop)
        if event in recovery_mod.SEND_KINDS and self._sync_before_send and not payload.get("compiled") \
                and not self.journal.sync(timeout=2.0):
            raise JournalError(f"journal did not reach the disk within 2 s: {event} not sent")

    def _execution_client(self):
        cfg, st = self.config, self.stage
        if st in (Stage.PAPER, Stage.SHADOW):
            # the fill, commission and latency models of [simulation]: the same as the backtest's
            from engine.backtest import sim_execution_from_config
            self.sim = sim_execution_from_config(cfg, self.books, self._clock)
        if st in REAL_STAGES:
            v = cfg.venue
            password = v.password.reveal() if v.password is not None else None
            if v.protocol == "ouch":
                if password is None:
                    raise EngineError("venue.protocol ouch needs a password (password_env or password_file)")
                self.ouch = OuchExecution.connect(v.host, v.port, v.username or v.sender_comp_id, password,
                                                  cfg.instruments)
                if st == Stage.SHADOW:
                    self.shadow = ShadowExecution(self.ouch, self.sim)
                    return self.shadow
                return self.ouch
            # the session persists in storage; it is resumed (not reset) when an order may still be
            # working, so that the venue resends the reports we missed while down
            self.fix = FixExecution.connect(v.host, v.port, v.sender_comp_id, v.target_comp_id,
                                            cfg.instruments, heartbeat_interval=v.heartbeat_s,
                                            username=v.username, password=password,
                                            reset_seq_num=not self.recovery.resume_fix_session,
                                            store=recovery_mod.session_store(self.storage, v.sender_comp_id,
                                                                             v.target_comp_id))
        if st == Stage.SHADOW:
            self.shadow = ShadowExecution(self.fix, self.sim)
            return self.shadow
        return self.fix if self.fix is not None else self.sim

    def _wire_kill_switch_demotion(self) -> None:
        ks, gate, stage = self.core.killswitch, self.gate, str(self.stage)
        original = ks.trip

        def trip(reason: str, **kwargs):
            record = original(reason, **kwargs)
            try:
                gate.on_kill_switch_trip(stage, reason)
            except Exception:  # noqa: BLE001 - the trip itself must stand
                log.exception("could not record the demotion")
            return record
        ks.trip = trip  # type: ignore[method-assign]

    async def _start_feed(self) -> None:
        v = self.config.venue
        host, port, session = ((v.feed_host, v.feed_request_port, v.feed_session) if v is not None
                               else ("127.0.0.1", 9880, "VENUE1"))
        bind = (v.feed_bind_host, v.feed_bind_port) if v is not None else ("127.0.0.1", 0)
        self.feed = ItchFeedHandler(self.books.values(), host=bind[0], port=bind[1],
                                    request_addr=(host, port), session=session, on_result=self._on_feed,
                                    create_books=False, subscribe=True)
        for symbol, inst in self.config.instruments_by_symbol.items():
            self.feed.applier.set_price_divisor(symbol, price4_per_tick(inst.tick_size))
        await self.feed.start()

    async def _start_admin(self) -> None:
        mon = self.config.monitoring
        token = None
        if mon.token is not None:
            try:
                token = mon.token.reveal()
            except EngineError as exc:   # paper: no token means acting endpoints refuse (fail closed)
                log.warning("admin token unavailable (%s): POST /kill etc. are refused", exc)
        metrics = EngineMetrics()
        metrics.set_info(stage=str(self.stage), version="0.1.0")
        self.collector = MetricsCollector(metrics, disk_path=str(self.storage))
        self.collector.add_source("risk", risk_kernel_source(self.core.kernel))
        self.collector.add_source("engine", self._metric_values)
        # the hot path only appends ns samples to these rings; the collector turns them into
        # histograms on its timer
        self._tick_rec = self.collector.recorder("tick_to_order")
        self._ack_rec = self.collector.recorder("order_to_ack")
        self._md_rec = self.collector.recorder("market_data_latency")
        self._rtt_rec = self.collector.recorder("venue_round_trip")
        if self.fix is not None:
            self._rtt_task = asyncio.get_running_loop().create_task(self._venue_rtt())
        self._start_alerting(metrics)
        port = self.options.admin_port if self.options.admin_port is not None else mon.admin_port
        self.admin = admin_mod.AdminServer(host=mon.admin_host, port=port, token=token, metrics=metrics,
                                           status=self.status, health=self.health)
        self.admin.on_kill(self._admin_kill)
        self.admin.on_kill_reset(self._admin_kill_reset)
        self.admin.on_flatten(self._admin_flatten)
        self.admin.on_reconcile(self._admin_reconcile)
        await self.admin.start()     # a port in use is an EngineError naming it (exit 2)
        self.collector.start()
        print(f"engine: stage {self.stage} admin on http://{mon.admin_host}:{self.admin.port} "
              f"(/metrics /healthz /status)", flush=True)

    def _start_alerting(self, metrics) -> None:
        """The Prometheus alert rules evaluated in process (for a deployment without
        Prometheus); events go to a PagerDuty Events v2 webhook when a routing key is set."""
        from engine import alerts
        try:
            rules = alerts.load_rules()
        except (alerts.AlertRuleError, OSError) as exc:
            log.warning("in-process alerting off: %s", exc)
            return
        notifier = None
        if os.environ.get(alerts.ROUTING_KEY_ENV):
            notifier = alerts.PagerDutyNotifier.from_env()
        self.alerting = alerts.Alerting(rules, notifier, metrics=metrics)
        self.collector.add_listener(self.alerting)

    # ---------------------------------------------------------------- events
    def _on_feed(self, result) -> None:
        # tick-to-order is taken when the first order of this event has been handed to the
        # execution client (_stamp_order hears of it right after the send), not after
        # the logs and store rows the order's listeners then write
        self._feed_t0 = time.perf_counter_ns()
        om = self.core.om
        # the logs, store rows and counters of what this event does run on the loop's
        # next turn: a packet right behind this one is not kept waiting for them
        om.defer_listeners = True
        try:
            self._handle_feed(result)
        finally:
            self._feed_t0 = 0
            om.defer_listeners = False
            om.schedule_flush()

    def _handle_feed(self, result) -> None:
        core, now = self.core, self._clock()
        if self.sim is not None:
            self.sim.advance_to(now)
        symbols = self.feed.instrument_symbols(result.top_changed)
        for symbol in symbols:
            if self.sim is not None:
                self.sim.on_book(symbol, now)
            core.on_book(symbol, l2.BOOK_TOP_CHANGED, now)
            if self.capture is not None:
                b = self.books[symbol]
                if b.best_bid is not None and b.best_ask is not None:
                    self.capture.record(now, now, self._symbol_ids[symbol], b.best_bid, b.best_bid_size,
                                        b.best_ask, b.best_ask_size)
        if len(result.trades):
            for t in result.trades:
                symbol = self.feed.instrument_symbols([int(t["instrument"])])[0]
                side = int(t["side"])
                if self.sim is not None:
                    self.sim.on_trade(symbol, int(t["price"]), int(t["shares"]), side, now)
                core.on_trade(symbol, int(t["price"]), int(t["shares"]), side, now)
        for idx in result.halts_changed:
            symbol = self.feed.instrument_symbols([idx])[0]
            inst = self.config.instruments_by_symbol[symbol]
            core.kernel.set_halted(self.feed.applier.is_halted(idx), inst.inst_id)
        if self.sim is not None:
            self.sim.advance_to(now)

    async def _venue_rtt(self, every_s: float = 5.0) -> None:
        """Venue round trip (FIX TestRequest -> Heartbeat) every few seconds, for monitoring."""
        while not self.stop_event.is_set():
            rtt = await self.fix.client.heartbeat_roundtrip(timeout_s=2.0)
            if rtt is not None:
                self._rtt_rec.record(int(rtt * 1e9))
            await asyncio.sleep(every_s)

    def _drain_feed_latency(self) -> None:
        """New venue-timestamp-to-receipt samples of the feed handler into the recorder."""
        feed, rec = self.feed, self._md_rec
        n = feed._lat_n
        new = min(n - self._md_seen, len(feed._lat))
        for k in range(n - new, n):
            rec.record(int(feed._lat[k % len(feed._lat)]))
        self._md_seen = n

    def _sync_stale(self) -> None:
        """The feed's gap/silence state reaches the risk kernel (orders rejected while stale)."""
        stale = bool(self.feed.stale or self.feed.needs_resync or self.feed.silent)
        if stale != self._stale:
            self._stale = stale
            for symbol in self.books:
                self.core.on_book_stale(symbol, stale)

    async def _timers(self) -> None:
        while not self.stop_event.is_set():
            await asyncio.sleep(TIMER_INTERVAL_S)
            try:
                now = self._clock()
                self._sync_stale()
                if self.sim is not None:
                    self.sim.advance_to(now)
                self.core.on_timer(now)
                if now >= self._next_forget_ns:       # memory bound over a long session
                    self._next_forget_ns = now + 10_000_000_000
                    self.core.om.forget_terminal(now - TERMINAL_RETENTION_NS)
                if self._md_rec is not None:
                    self._drain_feed_latency()
                if self.gc_collector is not None:
                    self.gc_collector.maybe_collect()
                if self.options.duration_s is not None and \
                        now - self.started_ns >= self.options.duration_s * 1e9:
                    self.stop_event.set()
            except Exception:  # noqa: BLE001 - a timer bug is a system error, not a crash
                self.system_errors += 1
                log.exception("runtime timer failed")

    # ------------------------------------------------------------- admin
    def status(self) -> dict:
        st = self.core.status() if self.core else {}
        st["uptime_s"] = (self._clock() - self.started_ns) / 1e9 if self.started_ns else 0
        if self.feed is not None:
            st["feed"] = {"stale": self.feed.stale, "needs_resync": self.feed.needs_resync,
                          "gaps": self.feed.counters.gaps, "age_s": self.feed.feed_age_s()}
        if self.fix is not None:
            s = self.fix.client.session
            st["venue"] = {"logged_on": s.logged_on, "next_out": s.next_sender_seq, "next_in": s.next_target_seq}
        if self.shadow is not None:
            st["shadow"] = self.shadow.summary()
        st["system_errors"] = self.system_errors
        return st

    def health(self):
        if self.core is None:
            return False, "starting"
        if self.core.killswitch.tripped:
            return False, f"kill switch tripped: {self.core.killswitch.reason}"
        if self.fix is not None and not self.fix.client.logged_on:
            return False, "venue session not logged on"
        if self.ouch is not None and not self.ouch.client.logged_in:
            return False, "venue OUCH session not logged in"
        return True, "ok"

    def _metric_values(self) -> dict:
        """Read on the collector's timer (never from the hot path)."""
        core, feed = self.core, self.feed
        snap = core.portfolio.snapshot()
        peak = max(core.policy.peak_equity, snap.equity) if hasattr(core.policy, "peak_equity") else snap.equity
        day_start = getattr(core.policy, "day_start_equity", snap.equity) or snap.equity
        gross = snap.gross_exposure or 0.0
        values: dict = {
            "engine_kill_switch_tripped": 1.0 if core.killswitch.tripped else 0.0,
            "engine_daily_pnl": snap.equity - day_start,
            "engine_daily_pnl_limit": -float(self.config.risk.daily_loss_limit),
            "engine_drawdown_ratio": (peak - snap.equity) / peak if peak > 0 else 0.0,
            "engine_drawdown_limit_ratio": self.config.risk.max_drawdown_pct / 100.0,
            "engine_gross_exposure": gross,
            "engine_position_lots": {s: float(core.portfolio.position(s)) for s in self.books},
            "engine_position_limit_lots": {s: float(r.kernel_limits()["max_position"])
                                           for s, r in self.config.risk.instruments.items()},
            "engine_concentration_ratio": {s: (core.portfolio.exposure(s) / gross if gross else 0.0)
                                           for s in self.books},
            "engine_concentration_limit_ratio": {s: self.config.risk.max_concentration_bps / 10_000
                                                 for s in self.books},
        }
        if core.policy.last_var is not None:
            values["engine_value_at_risk"] = float(getattr(core.policy.last_var, "var", 0.0) or 0.0)
        values["engine_orders_sent_total"] = {s: float(self._orders_sent[s]) for s in self.books}
        values["engine_order_rejects_total"] = float(self._venue_rejects)
        values["engine_fills_total"] = {s: float(self._fills[s]) for s in self.books}
        values["engine_filled_lots_total"] = {s: float(self._filled_lots[s]) for s in self.books}
        values["engine_orders_filled_total"] = float(len(self._filled_orders))
        values["engine_reconciliation_mismatches"] = float(self.reconciliation_mismatches)
        values["engine_slippage_bps"] = {s: sum(v) / len(v) for s, v in self._slippage.items() if v}
        values["engine_expected_slippage_bps"] = {s: float(self.config.simulation.slippage_bps)
                                                  for s in self._slippage}
        if self.shadow is not None and self.shadow.summary()["mean_error_bps"] is not None:
            sym = next(iter(self.books))
            values["engine_slippage_model_error_bps"] = {sym: float(self.shadow.summary()["mean_error_bps"])}
        if feed is not None:
            values["engine_feed_gaps_total"] = float(feed.counters.gaps)
            values["engine_quote_staleness_seconds"] = {
                s: float(feed.quote_age_s(s) if feed.quote_age_s(s) is not None else feed.feed_age_s())
                for s in self.books}
        return values

    async def _admin_kill(self, flatten: bool = False, reason: str = ""):
        reason = reason or "operator kill via admin endpoint"
        record = self.core.killswitch.trip(reason, flatten=flatten)
        confirmation = await self.core.killswitch.confirm(timeout_s=self.config.killswitch.cancel_timeout_ms / 1e3)
        return {"tripped": True, "reason": record.reason, "confirmed": len(confirmation.confirmed),
                "unconfirmed": len(confirmation.unconfirmed)}

    def _admin_kill_reset(self, reason: str = ""):
        if not self.core.killswitch.tripped:
            raise admin_mod.AdminActionError("the kill switch is not tripped")
        self.core.killswitch.reset(operator="admin", note=reason)
        return {"tripped": False}

    def _admin_flatten(self, reason: str = ""):
        orders = self.core.killswitch.flatten()
        return {"flatten_orders": len(orders) if orders else 0}

    async def _admin_reconcile(self, statement: str | None = None):
        """Compare positions and fills with the venue's statement (or the broker statement
        `statement`, a file or URL) now; a mismatch blocks trading (fail closed) until a
        clean reconciliation lifts the block."""
        from engine.portfolio import apply_reconciliation
        configured = self.recovery.statement_source
        if statement:
            self.recovery.statement_source = statement
        elif not configured:
            raise admin_mod.AdminActionError(
                f"no venue statement configured ([venue] statement or ${recovery_mod.STATEMENT_ENV}); "
                f"or pass one: engine reconcile --statement FILE")
        try:
            mismatches = await self.recovery.compare_with_venue()
        finally:
            self.recovery.statement_source = configured
        clean = apply_reconciliation(mismatches, self.core.om)
        from engine.logs import log_risk
        for m in mismatches:
            log_risk("reconciliation_mismatch", kind=m.kind, symbol=m.symbol, key=m.key, ours=m.ours,
                     theirs=m.theirs)
        self.reconciliation_mismatches = len(mismatches)
        return {"clean": clean, "mismatches": [f"{m.kind} {m.symbol} {m.key}: engine {m.ours}, venue {m.theirs}"
                                               for m in mismatches],
                "blocked": sorted(self.core.om.block_reasons)}

    # ------------------------------------------------------------------ run
    async def wait_for_market_data(self) -> bool:
        deadline = time.monotonic() + self.options.feed_wait_s
        while time.monotonic() < deadline:
            recovered = not (self.feed.stale or self.feed.gap_active or self.feed.needs_resync)
            if recovered and all(b.best_bid is not None and b.best_ask is not None for b in self.books.values()):
                self._sync_stale()
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self, reason: str = "stop") -> None:
        if self._stopped:
            return
        self._stopped = True
        core = self.core
        if core is not None:
            try:
                core.om.settle()            # nothing sent and unrecorded stays behind
            except Exception:  # noqa: BLE001 - the stop goes on: cancels, files closed
                log.exception("stop: recording the orders sent last failed")
            # the stop policy: cancel every open order; keep positions, or close them when
            # [orders] flatten_on_stop says so
            core.stop(reason)
            if core.om.open_orders():
                core.om.cancel_all()
                await self._settle(2.0)
            if self.config.orders.flatten_on_stop and any(core.portfolio.position(s) for s in self.books):
                ids = core.killswitch.flatten()
                log.warning("stop: flattening %d position(s)", len(ids))
                await self._settle(2.0)
        if self._timer_task is not None:
            self.stop_event.set()
            self._timer_task.cancel()
        if self._rtt_task is not None:
            self._rtt_task.cancel()
        if self.collector is not None:
            await self.collector.stop()
        if self.admin is not None:
            await self.admin.stop()
        if self.fix is not None:
            await self.fix.client.stop()
        if self.ouch is not None:
            await self.ouch.client.stop()
        if self.feed is not None:
            await self.feed.stop()
        if core is not None:
            core.om.flush_deferred()        # the last order updates reach the logs and the store
        if self.journal is not None:
            self.journal.close()
        if self.capture is not None:
            self.capture.close()
        if self.store is not None:
            self.store.close()
        if self.logging_handle is not None:
            self.logging_handle.stop()

    async def _settle(self, timeout_s: float) -> None:
        """Wait (driving the simulator, if any) until no order is open, up to timeout_s."""
        deadline = time.monotonic() + timeout_s
        while self.core.om.open_orders() and time.monotonic() < deadline:
            if self.sim is not None:
                self.sim.advance_to(self._clock() + 10**9)
            await asyncio.sleep(0.02)

    def record_evidence(self, risk_controls: tuple = ()) -> int | None:
        core = self.core
        if core is None or self.evidence is None:
            return None
        ts, eq = core.portfolio.equity_curve()
        fills = core.portfolio.fills
        from engine.analytics import compute_metrics, digest
        metrics = {}
        if len(ts) >= 3:
            metrics = compute_metrics(ts, eq, None, 0.0, sampling_interval=1.0)
        paired = ()
        if self.shadow is not None:
            from engine.evidence import PairedFill
            paired = tuple(PairedFill(p.cl_ord_id, p.side, p.real.qty, p.sim.avg, p.real.avg,
                                      symbol=p.symbol) for p in self.shadow.paired())
        run = StageRun(stage=str(self.stage), started_ns=self.started_ns, ended_ns=self._clock(),
                       config_digest=config_digest(self.config), result_digest=digest(fills, (ts, eq)),
                       metrics=metrics, system_errors=self.system_errors,
                       kill_switch_trips=1 if core.killswitch.tripped else 0, n_fills=len(fills),
                       equity_ts_ns=ts, equity=eq, paired_fills=paired, risk_controls=tuple(risk_controls),
                       forced=self.options.force and not
                       self.gate.reached(str(self.stage)), strategy=self.config.strategy.spec)
        return self.evidence.record_run(run)


def load_run_config(options: RunOptions) -> Config:
    """The --config file, or the built-in run configuration (engine/sample_run_config.toml)."""
    from importlib import resources
    path = options.config_path or str(resources.files("engine") / "sample_run_config.toml")
    return load_config(path, stage=options.stage)


async def run(options: RunOptions) -> int:
    config = load_run_config(options)
    stage = config.stage
    if stage == Stage.BACKTEST:
        raise EngineError("stage backtest replays a file: use `engine backtest --data FILE`")
    from engine import tuning
    if options.cpu is not None:
        tuning.pin_cpu(options.cpu)
    rt = Runtime(config, stage, options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, rt.stop_event.set)
    try:
        await rt.start()
        if not await rt.wait_for_market_data():
            raise EngineError(f"no market data from the venue feed at {config.venue.feed_host if config.venue else '127.0.0.1'}"
                              f":{config.venue.feed_request_port if config.venue else 9880} within "
                              f"{options.feed_wait_s} s (is `engine venue` running?)")
        if stage in REAL_STAGES or not options.skip_preflight:
            from engine.preflight import format_table, run_checks
            results = await run_checks(rt)
            rt.preflight_report = results
            print(format_table(results), flush=True)
            if not all(r.ok for r in results):
                if stage in REAL_STAGES:
                    raise EngineError("pre-flight failed: refusing to start a real-execution stage")
                log.warning("pre-flight failed in paper: continuing (simulated execution)")
        if options.cpu is not None:
            tuning.move_other_threads()
        if options.lock_memory:
            tuning.lock_memory()
        # after start-up: long-lived objects leave the collector's generations (no GC pause per event)
        log.info("gc %s; %s", tuning.apply_gc_policy(options.gc_policy), tuning.describe())
        if options.gc_policy == "disabled":
            rt.gc_collector = tuning.PeriodicCollector(1.0)
        rt.core.start()
        if options.busy_poll:
            from gateway.loops import busy_poll
            rt.busy_poller = loop.create_task(busy_poll(), name="busy-poll")
            log.info("busy polling: the event loop no longer sleeps (a whole CPU)")
        print(f"engine: running stage {stage} with {config.strategy.spec}", flush=True)
        await rt.stop_event.wait()
    finally:
        if rt.busy_poller is not None:
            rt.busy_poller.cancel()
        await rt.stop("engine stopping")
    run_id = rt.record_evidence()
    status = rt.status()
    # the whole run's latency percentiles (ns) per recorder: tick_to_order is the engine's
    # own share of tick-to-trade, feed packet handed to the books -> order bytes written
    latency = {name: summary for name, summary in rt.collector.run_summary().items() if summary["n"]} \
        if rt.collector is not None else {}
    print(orjson.dumps({"stage": str(stage), "run_id": run_id, "positions": status.get("positions"),
                        "risk_counters": status.get("risk_counters"), "equity": status.get("equity"),
                        "latency": latency}).decode(),
          flush=True)
    return 0
