"""The venue simulator's network side: which acceptors run, on which ports.

`Venue(options)` builds and `start()`s everything; `serve(options)` runs it until
cancelled (what `engine venue` does). The FIX acceptor's application is either

* `venue` (default): FIX 4.4 order entry (gateway.fix_venue) in front of the exchange
  core (gateway.exchange): one account per counterparty CompID, resting liquidity from
  a seeded synthetic market per symbol, replayed at `replay_events_per_tick` events
  every `replay_tick_ms`; a broker statement written on a timer and at shutdown; an
  HTTP control endpoint (gateway.control) for faults at run time; or
* `echo`: the reflector of QuickFIX's acceptance tests (gateway.fix_apps).

Extension points for the other order-entry and market-data ports: `Venue.exchange`
is the core they share (`Exchange.add_listener` for an ITCH publisher,
`Exchange.set_report_sink` + the order-entry calls for an OUCH port), and
`Venue.services` is the list of extra things with `async start()` / `async stop()`
started after the FIX acceptor and stopped before it. `market_sources(options)`
is where a `--data FILE` replay would replace the synthetic flow.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from gateway import exchange as ex
from gateway.control import ControlServer
from gateway.fix_apps import EchoApplication
from gateway.fix_session import FixSession, SessionConfig
from gateway.fix_store import MemoryStore, SqliteStore
from gateway.fix_transport import FixAcceptor
from gateway.fix_venue import COD_MODES, FixVenue, FixVenueConfig
from gateway.instruments import DEFAULT_TICK_SIZE, Instrument
from gateway.itch_feed import ItchPublisher
from gateway.loops import run
from gateway.ouch_session import OuchVenue, OuchVenueConfig

log = logging.getLogger("gateway.venue")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_FIX_PORT = 9878
DEFAULT_VENUE_COMP_ID = "VENUE"
DEFAULT_ENGINE_COMP_ID = "ENGINE"
DEFAULT_SYMBOLS = ("AAPL", "MSFT")
DEFAULT_ITCH_REQUEST_PORT = 9880   # engine side: venue.feed_request_port in the config
DEFAULT_ITCH_SESSION = "VENUE1"
DEFAULT_OUCH_USER = "OUCH1"
FIX_APPS = ("venue", "echo")


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class VenueOptions:
    host: str = DEFAULT_HOST
    fix_port: int = DEFAULT_FIX_PORT
    fix_app: str = "venue"
    sender_comp_id: str = DEFAULT_VENUE_COMP_ID
    target_comp_ids: tuple[str, ...] = (DEFAULT_ENGINE_COMP_ID,)   # one account each (venue app)
    validate: bool = True
    reset_on_logon: bool | None = None  # None: echo resets (acceptance tests), venue keeps numbers
    store_path: str | None = None       # SQLite file for sequence numbers; None keeps them in memory
    # the exchange (venue app)
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    tick_sizes: tuple[tuple[str, Decimal], ...] = ()   # per symbol; others DEFAULT_TICK_SIZE
    default_tick_size: Decimal = DEFAULT_TICK_SIZE
    seed: int = 7
    warmup_events: int = 2_000           # market-data events applied per symbol at start
    replay_events_per_tick: int = 20     # then this many per symbol every replay_tick_ms
    replay_tick_ms: float = 10.0
    max_order_qty: int = ex.DEFAULT_MAX_ORDER_QTY
    statement_path: str | None = None
    statement_interval_s: float = 5.0
    control_host: str = DEFAULT_HOST
    control_port: int | None = None      # None: no control endpoint; 0: pick a free port
    cancel_on_disconnect: str = "off"    # off | disconnect | always
    cod_window_ms: float = 0.0
    username: str | None = None          # with password_env: Username (553) required (default: CompID)
    password_env: str | None = None      # name of the environment variable holding the password
    heartbeat_interval: int = 30
    # faults at start
    fault_reject_rate: float = 0.0
    fault_reject_seed: int = 0
    fault_ack_delay_ms: float = 0.0
    fault_halt: tuple[str, ...] = ()
    fault_drop_after_orders: int = 0
    fault_feed_drop_rate: float = 0.0      # ITCH feed: share of packets dropped (seeded)
    fault_feed_reorder_rate: float = 0.0   # ITCH feed: share of packets held back one packet
    fault_feed_stopped: bool = False       # ITCH feed: publish nothing (sequencing goes on)
    data_path: str | None = None          # replay this quotes file instead of the synthetic market
    data_events: Any = field(default=None, compare=False)   # or these book events (BookEventSource),
                                                              # loaded by the caller from any format
    # market data (venue app): ITCH 5.0 over MoldUDP64 on UDP
    itch_request_port: int | None = None   # None: no feed (the CLI default is DEFAULT_ITCH_REQUEST_PORT)
    itch_session: str = DEFAULT_ITCH_SESSION
    itch_targets: tuple[tuple[str, int], ...] = ()               # static subscribers
    # OUCH 4.2 over SoupBinTCP order entry (venue app)
    ouch_port: int | None = None           # None: no OUCH port
    ouch_user: str = DEFAULT_OUCH_USER     # an exchange account of its own
    ouch_password_env: str | None = None   # variable holding the OUCH password (required with a port)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)   # room for other ports' options

    def __post_init__(self) -> None:
        if not 0 <= self.fix_port <= 65535:
            raise ValueError(f"--fix-port {self.fix_port}: allowed 0..65535")
        if self.control_port is not None and not 0 <= self.control_port <= 65535:
            raise ValueError(f"--control-port {self.control_port}: allowed 0..65535")
        if self.fix_app not in FIX_APPS:
            raise ValueError(f"--fix-app {self.fix_app!r}: choose one of {', '.join(FIX_APPS)}")
        if not self.target_comp_ids:
            raise ValueError("--target-comp-id: give at least one counterparty CompID")
        if self.fix_app == "echo" and len(self.target_comp_ids) != 1:
            raise ValueError("--fix-app echo serves exactly one --target-comp-id")
        if len(set(self.target_comp_ids)) != len(self.target_comp_ids):
            raise ValueError("--target-comp-id: a CompID is given twice")
        if self.sender_comp_id in self.target_comp_ids:
            raise ValueError(f"--target-comp-id {self.sender_comp_id}: same as --sender-comp-id")
        if not self.symbols:
            raise ValueError("--symbols: give at least one symbol, e.g. AAPL,MSFT")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("--symbols: a symbol is given twice")
        for sym in self.symbols:
            Instrument(sym)   # validates the name
        for sym, size in self.tick_sizes:
            if sym not in self.symbols:
                raise ValueError(f"--tick-size {sym}={size}: {sym} is not one of --symbols")
            Instrument(sym, size)
        Instrument("X", self.default_tick_size)
        if not 0 <= self.warmup_events <= 10_000_000:
            raise ValueError(f"--warmup-events {self.warmup_events}: allowed 0..10000000")
        if not 0 <= self.replay_events_per_tick <= 1_000_000:
            raise ValueError(f"--replay-events-per-tick {self.replay_events_per_tick}: allowed 0..1000000")
        if not 1.0 <= self.replay_tick_ms <= 60_000:
            raise ValueError(f"--replay-tick-ms {self.replay_tick_ms}: allowed 1..60000")
        if self.max_order_qty < 1:
            raise ValueError(f"--max-order-qty {self.max_order_qty}: must be >= 1")
        if not 0.1 <= self.statement_interval_s <= 86_400:
            raise ValueError(f"--statement-interval {self.statement_interval_s}: allowed 0.1..86400 s")
        if self.cancel_on_disconnect not in COD_MODES:
            raise ValueError(f"--cancel-on-disconnect {self.cancel_on_disconnect!r}: choose one of "
                             f"{', '.join(COD_MODES)}")
        if not 0 <= self.cod_window_ms <= 3_600_000:
            raise ValueError(f"--cod-window-ms {self.cod_window_ms}: allowed 0..3600000")
        if not 0 <= self.heartbeat_interval <= 3600:
            raise ValueError(f"--heartbeat {self.heartbeat_interval}: allowed 0..3600 s")
        if self.username is not None and self.password_env is None:
            raise ValueError("--username needs --password-env (the variable that holds the password)")
        for sym in self.fault_halt:
            if sym not in self.symbols:
                raise ValueError(f"--fault-halt {sym}: not one of --symbols ({', '.join(self.symbols)})")
        for name, rate in (("--fault-feed-drop-rate", self.fault_feed_drop_rate),
                           ("--fault-feed-reorder-rate", self.fault_feed_reorder_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} {rate}: a probability in 0..1")
        if self.itch_request_port is not None and not 0 <= self.itch_request_port <= 65535:
            raise ValueError(f"--itch-request-port {self.itch_request_port}: allowed 0..65535")
        if not 1 <= len(self.itch_session) <= 10 or not self.itch_session.isprintable():
            raise ValueError(f"--itch-session {self.itch_session!r}: 1..10 printable characters")
        if self.ouch_port is not None:
            if not 0 <= self.ouch_port <= 65535:
                raise ValueError(f"--ouch-port {self.ouch_port}: allowed 0..65535")
            if self.ouch_user in self.target_comp_ids:
                raise ValueError(f"--ouch-user {self.ouch_user}: already a FIX account (--target-comp-id)")
            if self.ouch_password_env is None:
                raise ValueError("--ouch-port needs --ouch-password-env (the variable holding the password)")
        try:
            ex.Faults(self.fault_reject_rate, self.fault_reject_seed, self.fault_ack_delay_ms, (),
                      self.fault_drop_after_orders)
        except ex.ExchangeError as exc:
            raise ValueError(f"fault option: {exc}") from exc

    @property
    def target_comp_id(self) -> str:
        return self.target_comp_ids[0]

    @property
    def effective_reset_on_logon(self) -> bool:
        if self.reset_on_logon is not None:
            return self.reset_on_logon
        return self.fix_app == "echo"

    def password(self) -> str | None:
        """The password from the environment variable named by password_env (never logged)."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if not value:
            raise ValueError(f"--password-env {self.password_env}: the environment variable is not set or empty")
        return value

    def instruments(self) -> list[Instrument]:
        sizes = dict(self.tick_sizes)
        return [Instrument(s, sizes.get(s, self.default_tick_size)) for s in self.symbols]


def parse_tick_sizes(values: list[str]) -> tuple[Decimal, tuple[tuple[str, Decimal], ...]]:
    """`--tick-size 0.01` (every symbol) and/or `--tick-size AAPL=0.05` (one symbol)."""
    default = DEFAULT_TICK_SIZE
    per: list[tuple[str, Decimal]] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            sym, eq, size = part.rpartition("=")
            try:
                dec = Decimal(size)
            except InvalidOperation as exc:
                raise ValueError(f"--tick-size {part!r}: {size!r} is not a decimal number") from exc
            if eq:
                per.append((sym.strip(), dec))
            else:
                default = dec
    return default, tuple(per)


def build_fix_session(options: VenueOptions) -> FixSession:
    """The echo reflector's single session."""
    config = SessionConfig(sender_comp_id=options.sender_comp_id, target_comp_id=options.target_comp_id,
                           reset_on_logon=options.effective_reset_on_logon, validate=options.validate)
    return FixSession(config, store=_store(options, options.target_comp_id), application=EchoApplication())


def _store(options: VenueOptions, account: str) -> MemoryStore:
    if options.store_path:
        return SqliteStore(options.store_path, f"{options.sender_comp_id}-{account}")
    return MemoryStore()


def market_sources(options: VenueOptions) -> dict[str, ex.MarketSource] | None:
    """Market data per symbol; None = the exchange's default seeded synthetic flow."""
    if options.data_events is not None:
        from gateway.replay_source import BookEventSource
        return {options.symbols[0]: BookEventSource(options.data_events)}
    if options.data_path is None:
        return None
    from gateway.replay_source import QuoteReplaySource, load_quotes
    quotes = load_quotes(options.data_path, dict(options.tick_sizes).get(options.symbols[0]))
    if quotes.symbol not in options.symbols:
        raise ValueError(f"--data {options.data_path}: its symbol {quotes.symbol} is not one of --symbols")
    return {quotes.symbol: QuoteReplaySource(quotes)}


class Venue:
    """Everything `engine venue` runs, startable in-process (tests, the demo)."""

    publisher: ItchPublisher | None = None
    ouch: OuchVenue | None = None
    itch_request_port: int | None = None
    ouch_port: int | None = None

    def __init__(self, options: VenueOptions) -> None:
        self.options = options
        self.exchange: ex.Exchange | None = None
        self.faults: ex.Faults | None = None
        self.fix: FixVenue | None = None
        self.acceptor: FixAcceptor | None = None
        self.control: ControlServer | None = None
        self.services: list[Service] = []
        self.fix_port: int | None = None
        self.control_port: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._started_at = time.time()
        self.statements_written = 0

    async def start(self) -> int:
        o = self.options
        if o.fix_app == "echo":
            self.acceptor = FixAcceptor([build_fix_session(o)])
            self.fix_port = await self.acceptor.start(o.host, o.fix_port)
            return self.fix_port
        password = o.password()
        self.faults = ex.Faults(o.fault_reject_rate, o.fault_reject_seed, o.fault_ack_delay_ms, (),
                                o.fault_drop_after_orders)
        self.exchange = ex.Exchange(o.instruments(), self.faults, market_sources(o), seed=o.seed,
                                    max_order_qty=o.max_order_qty)
        for sym in o.fault_halt:
            self.faults.set_halted(sym, True)
        if o.warmup_events:
            self.exchange.warm_up(o.warmup_events)
        config = FixVenueConfig(sender_comp_id=o.sender_comp_id, accounts=o.target_comp_ids, validate=o.validate,
                                reset_on_logon=o.effective_reset_on_logon, heartbeat_interval=o.heartbeat_interval,
                                username=o.username, password=password,
                                cancel_on_disconnect=o.cancel_on_disconnect, cod_window_s=o.cod_window_ms / 1000)
        self.fix = FixVenue(self.exchange, config, store_factory=lambda _s, acct: _store(o, acct))
        self.acceptor = self.fix.acceptor
        self.fix_port = await self.fix.start(o.host, o.fix_port)
        loop = asyncio.get_running_loop()
        if o.replay_events_per_tick:
            self._tasks.append(loop.create_task(self._replay()))
        if o.statement_path:
            self._tasks.append(loop.create_task(self._statements()))
        if o.itch_request_port is not None:
            self.publisher = ItchPublisher(targets=o.itch_targets, host=o.host, request_port=o.itch_request_port,
                                           session=o.itch_session)
            self.publisher.attach(self.exchange)   # resting orders are published at start
            self.faults.feed = self.publisher.faults   # switchable with the others (control endpoint)
            self.faults.apply({"feed_drop_rate": o.fault_feed_drop_rate,
                               "feed_reorder_rate": o.fault_feed_reorder_rate, "feed_stopped": o.fault_feed_stopped})
            self.itch_request_port = await self.publisher.start()
        if o.ouch_port is not None:
            password = os.environ.get(o.ouch_password_env or "")
            if not password:
                raise ValueError(f"--ouch-password-env {o.ouch_password_env}: the variable is not set or empty")
            self.ouch = OuchVenue(self.exchange, OuchVenueConfig(
                users=((o.ouch_user, password),), cancel_on_disconnect=o.cancel_on_disconnect != "off"))
            self.ouch_port = await self.ouch.start(o.host, o.ouch_port)
        if o.control_port is not None:
            self.control = ControlServer(self.faults, self.exchange.statement_csv, self.status)
            self.control_port = await self.control.start(o.control_host, o.control_port)
        for service in self.services:
            await service.start()
        return self.fix_port

    async def _replay(self) -> None:
        assert self.exchange is not None
        n = self.options.replay_events_per_tick
        interval = self.options.replay_tick_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            try:
                self.exchange.replay_tick(n)
            except Exception:
                log.exception("venue: market-data replay failed; replay stopped")
                return

    async def _statements(self) -> None:
        assert self.exchange is not None and self.options.statement_path
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.statement_interval_s)
            text = self.exchange.statement_csv()          # snapshot on the loop thread
            try:
                await loop.run_in_executor(None, ex.write_csv_atomic, self.options.statement_path, text)
                self.statements_written += 1
            except OSError as exc:
                log.error("venue: cannot write the statement %s: %s", self.options.statement_path, exc)

    def status(self) -> dict[str, Any]:
        xc = self.exchange
        out: dict[str, Any] = {"uptime_s": round(time.time() - self._started_at, 3), "fix_port": self.fix_port}
        if xc is not None:
            out.update(orders_received=xc.orders_received, orders_rejected=xc.orders_rejected, trades=xc.trades,
                       volume=xc.volume, replay_events=xc.replay_events,
                       books={s: dict(zip(("bid", "bid_size", "ask", "ask_size"), b.top(), strict=True))
                              for s, b in xc.books.items()},
                       halted=sorted(xc.faults.halted))
        if self.fix is not None:
            out["sessions"] = {acct: {"logged_on": s.logged_on, "next_sender_seq": s.next_sender_seq,
                                      "next_target_seq": s.next_target_seq, "messages_in": s.messages_in,
                                      "messages_out": s.messages_out}
                               for acct, s in self.fix.sessions.items()}
        return out

    def banner(self) -> list[str]:
        o = self.options
        lines = [f"venue: FIX acceptor ({o.fix_app}) listening on {o.host}:{self.fix_port} "
                 f"as {o.sender_comp_id} for {','.join(o.target_comp_ids)}"]
        if self.exchange is not None:
            lines.append(f"venue: symbols {', '.join(f'{i.symbol} (tick {i.tick_size})' for i in o.instruments())}; "
                         f"seed {o.seed}; replay {o.replay_events_per_tick} events per {o.replay_tick_ms:g} ms")
        if self.itch_request_port is not None:
            lines.append(f"venue: ITCH 5.0/MoldUDP64 feed session {o.itch_session}: subscribe and retransmit "
                         f"on udp {o.host}:{self.itch_request_port}")
        if self.ouch_port is not None:
            lines.append(f"venue: OUCH 4.2/SoupBinTCP order entry on {o.host}:{self.ouch_port} for {o.ouch_user}")
        if self.control_port is not None:
            lines.append(f"venue: control endpoint http://{o.control_host}:{self.control_port}/faults")
        if o.statement_path:
            lines.append(f"venue: statement -> {o.statement_path} every {o.statement_interval_s:g} s and at shutdown")
        return lines

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("venue: service stop failed")
        if self.control is not None:
            await self.control.stop()
        if self.ouch is not None:
            self.ouch.end_session()
            await self.ouch.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        if self.fix is not None:
            await self.fix.stop()
        elif self.acceptor is not None:
            await self.acceptor.stop()
        if self.exchange is not None and self.options.statement_path:
            try:
                self.exchange.write_statement(self.options.statement_path)
                self.statements_written += 1
            except OSError as exc:
                log.error("venue: cannot write the statement %s: %s", self.options.statement_path, exc)


async def serve(options: VenueOptions, ready: asyncio.Future | None = None) -> None:
    """Run the venue until cancelled or until SIGTERM/SIGINT (then stop cleanly: Logout,
    the last statement)."""
    venue = Venue(options)
    port = await venue.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass   # not the main thread, or a platform without signal handlers
    try:
        # Parseable lines, flushed: tests and scripts started with --fix-port 0 read the
        # port from the first one.
        for line in venue.banner():
            print(line, flush=True)
        if ready is not None and not ready.done():
            ready.set_result(port)
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await venue.stop()


def main_serve(options: VenueOptions, loop: str = "uvloop") -> int:
    try:
        run(serve(options), loop=loop)
    except KeyboardInterrupt:
        print("venue: stopped", file=sys.stderr)
    except (ValueError, OSError) as exc:   # a symbol or tick the protocols cannot carry, a port in use
        print(f"engine venue: error: {exc}", file=sys.stderr)
        return 2
    return 0
