"""SoupBinTCP 3.00 sessions carrying OUCH 4.2: the venue's server and the engine's client.

Wire formats: /work/shared/protocols/OUCH-SOUPBINTCP.md; the codec is core_ext.ouch
(SoupFramer de-frames, pack_* / decode_* encode and decode). These classes are the
session layer over it (STYLE.md rule 10: thin asyncio protocols, TCP_NODELAY,
`connection_lost` always ends in a defined state).

Session rules (both sides)
--------------------------
* A connection starts with the client's Login Request (username alpha 6, password
  alpha 10, requested session alpha 10 (blank = current), requested sequence number:
  n = the next sequenced message the client wants, 0 = only new messages). The server
  answers Login Accepted (session, sequence number of the next 'S' packet it will send)
  or Login Rejected ('A' not authorized: unknown user or wrong password; 'S' session not
  available: another session was asked for, the session ended, or the user is already
  logged in on another connection). Anything but a Login Request first, or no login
  within `login_timeout_s`, closes the connection.
* Sequenced data: every venue-to-client OUCH message goes into the user's stream,
  numbered from 1 for the session, and is kept; it is sent at once when the user is
  logged in and replayed from the requested number at the next login otherwise. The
  client counts the 'S' packets it receives, so on reconnect it asks for exactly the
  next one: nothing lost, nothing duplicated.
* Heartbeats: a side that has sent nothing for `heartbeat_interval_s` (1 s) sends one
  (server 'H', client 'R'); a side that has received nothing for `dead_after_s` (15 s)
  closes the connection.
* Logout Request 'O' (client) ends the connection gracefully; End of Session 'Z'
  (server) says no more data will come in this session: the client does not reconnect.
* Garbage on the socket (a framing error, a packet type the role does not accept, an
  OUCH message that does not decode): the connection logs the reason and is closed;
  other connections and the process are not affected.

Venue side (`OuchVenue` = `SoupServer` + `OuchOrderEntry` over gateway.exchange)
------------------------------------------------------------------------------
Each SoupBinTCP username is an exchange account; order tokens are the exchange's
client order ids. Inbound:

  O Enter Order    -> exchange.new_order: Accepted 'A', then Executed 'E' / Canceled 'C'
                      (IOC remainder) as they happen, or Rejected 'J'
  U Replace Order  -> exchange.replace_order: Replaced 'U' (new token), or 'J' for the
                      replacement token; shares = the new open quantity (0 cancels)
  X Cancel Order   -> shares 0: exchange.cancel_order -> Canceled 'C' (decrement = the
                      open shares); 0 < shares < open: reduced in place (replace_order
                      keeping priority) -> Canceled 'C' with the decrement
  M Modify Order   -> not supported: logged, counted, ignored

An unknown token in U / X, a token already used in O / U, and a cancel or replace that
comes too late (order already closed) are ignored, as Nasdaq does. Sides: B buy;
S, T (short), E (short exempt) sell. Prices: price4 = ticks * price4_per_tick of the
instrument (not on the tick grid -> 'J' reason 'X'); 0x7FFFFFFF = market order. Time in
force: 0 = IOC (FOK when Minimum Quantity = Shares), anything else DAY (timed orders are
not simulated). Reject reasons: 'S' unknown symbol, 'H' halted, 'Z' shares above the
maximum, 'X' invalid price, 'O' other. Cancel reasons: 'U' user (cancel, reduce, mass
cancel), 'I' IOC/FOK/market remainder, 'Q' self-match prevention, 'T' expired, 'Z'
system (cancel-on-disconnect and anything else). Executed: liquidity 'A' (added: the
order was resting) or 'R' (removed), match number = the exchange ExecID. Each
account's stream starts with System Event 'S'; `end_session()` sends System Event 'E'
then End of Session 'Z'. Exchange faults consulted: ack_delay_ms, drop_after_orders,
drop_connections().

Engine side (`OuchClient`)
--------------------------
Connects, logs in asking for `next_seq`, keeps the connection alive, reconnects with
backoff (not after End of Session or a Login Rejected 'A'), tracks the sequence number,
and turns every sequenced message into a small typed event (`Accepted`, `Replaced`,
`Canceled`, `Executed`, `Rejected`, `SystemEvent`) for `on_event`, next to session
events (`LoggedIn`, `LoginRejected`, `EndOfSession`, `Disconnected`). Prices in events
are the wire's price4 plus `price` in ticks (of the instrument given to the client, else
the default $0.01 tick; None for a market order, or for an execution whose token the
client never saw); `enter_order` / `replace_order` take ticks. The client keeps
`next_seq` in memory only: a process that restarts and wants no replay of what it has
already journaled passes its own `next_seq`.

Venue users and FIX accounts share the exchange's account namespace (one report sink per
account): give OUCH users names no FIX session uses.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from core_ext.matching import ORDTYPE_LIMIT, ORDTYPE_MARKET, TIF_DAY, TIF_FOK, TIF_IOC

from core_ext import matching, ouch
from gateway.errors import GatewayError, NotLoggedOn
from gateway.fix_transport import set_nodelay
from gateway.instruments import Instrument

log = logging.getLogger("gateway.ouch")

HEARTBEAT_INTERVAL_S = 1.0
DEAD_AFTER_S = 15.0
LOGIN_TIMEOUT_S = 15.0
DEFAULT_SESSION = "OUCH1"
SIDE_BUY, SIDE_SELL = matching.SIDE_BUY, matching.SIDE_SELL
MARKET_PRICE = ouch.MARKET_PRICE
TIF_OUCH_IOC = ouch.TIF_IOC
TIF_OUCH_DAY = ouch.TIF_SYSTEM_HOURS

_HDR = struct.Struct(">HB")
_S = ord("S")
_SIDE_IN = {"B": SIDE_BUY, "S": SIDE_SELL, "T": SIDE_SELL, "E": SIDE_SELL}


def _soup(ptype: str, payload: bytes = b"") -> bytes:
    """One framed SoupBinTCP packet."""
    return _HDR.pack(len(payload) + 1, ord(ptype)) + payload


def _sequenced(payload: bytes) -> bytes:
    return _HDR.pack(len(payload) + 1, _S) + payload


def ns_since_midnight() -> int:
    return time.time_ns() % 86_400_000_000_000


def price4_scale(instrument: Instrument | None) -> int:
    """price4 units per tick (100 for a $0.01 tick); 1 when the instrument is unknown."""
    if instrument is None:
        return 1
    if instrument.decimals > 4:
        raise ValueError(f"{instrument.symbol}: tick {instrument.tick_size} is finer than price4")
    return instrument.mult * 10 ** (4 - instrument.decimals)


class SoupSessionError(GatewayError):
    """A SoupBinTCP session used outside its state (e.g. sending before login)."""


# ===========================================================================
# Server
# ===========================================================================

class SoupApplication(Protocol):
    """What sits behind a SoupServer (OuchOrderEntry for the venue)."""

    def on_login(self, server: SoupServer, username: str) -> None: ...

    def on_unsequenced(self, server: SoupServer, username: str, payload: bytes) -> None:
        """One Unsequenced Data payload; an ouch.OuchError closes the connection."""

    def on_disconnect(self, server: SoupServer, username: str, reason: str, logout: bool) -> None: ...


class SoupUser:
    """One username: its password, its stream of sequenced messages, its connection."""

    __slots__ = ("username", "password", "messages", "conn", "logins")

    def __init__(self, username: str, password: str):
        self.username = username
        self.password = password
        self.messages: list[bytes] = []      # payload of sequenced message n at index n - 1
        self.conn: _ServerConnection | None = None
        self.logins = 0

    @property
    def next_seq(self) -> int:
        return len(self.messages) + 1


class ServerCounters:
    __slots__ = ("connections", "logins", "login_rejects", "logouts", "garbage", "dead",
                 "login_timeouts", "heartbeats_sent", "sequenced", "replayed", "unsequenced",
                 "app_errors")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: SoupServer):
        self.server = server
        self.framer = ouch.SoupFramer(role="server")
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.user: SoupUser | None = None
        self.logged_out = False
        self.reason = "connection lost"
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.opened = self.last_recv = self.last_send = loop.time()

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        set_nodelay(transport)
        self.server._conns.add(self)
        self.server.counters.connections += 1

    def data_received(self, data: bytes) -> None:
        self.last_recv = self.loop.time()
        try:
            packets = self.framer.feed(data)
        except ouch.OuchDecodeError as exc:
            for ptype, payload in exc.packets:
                if self.transport is None or self.transport.is_closing():
                    return
                self._dispatch(ptype, payload)
            self.server.counters.garbage += 1
            self.drop(f"garbage on the socket: {exc}")
            return
        for ptype, payload in packets:
            if self.transport is None or self.transport.is_closing():
                return
            self._dispatch(ptype, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server._conns.discard(self)
        user = self.user
        self.transport = None
        if user is not None and user.conn is self:
            user.conn = None
            reason = "logout" if self.logged_out else (
                self.reason if exc is None else f"{self.reason}: {exc}")
            log.info("OUCH %s: disconnected (%s)", user.username, reason)
            try:
                server.application.on_disconnect(server, user.username, reason, self.logged_out)
            except Exception:
                server.counters.app_errors += 1
                log.exception("OUCH %s: on_disconnect failed", user.username)

    # -- helpers ------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)
            self.last_send = self.loop.time()

    def drop(self, reason: str, abort: bool = False) -> None:
        """Close this connection (logged with the reason); the others are not affected."""
        t = self.transport
        if t is None or t.is_closing():
            return
        who = self.user.username if self.user is not None else self.peer
        log.warning("OUCH connection %s closed: %s", who, reason)
        self.reason = reason
        if abort:
            t.abort()
        else:
            t.close()

    # -- packets ------------------------------------------------------------------
    def _dispatch(self, ptype: str, payload: bytes) -> None:
        server = self.server
        if self.user is None:
            if ptype != "L":
                server.counters.garbage += 1
                self.drop(f"first packet is {ptype!r}, not a Login Request")
                return
            self._login(payload)
            return
        if ptype == "U":
            server.counters.unsequenced += 1
            try:
                server.application.on_unsequenced(server, self.user.username, payload)
            except ouch.OuchError as exc:
                server.counters.garbage += 1
                self.drop(f"bad OUCH message: {exc}")
            except Exception:
                server.counters.app_errors += 1
                log.exception("OUCH %s: application error; closing this connection",
                              self.user.username)
                self.drop("internal error")
        elif ptype == "O":
            self.logged_out = True
            server.counters.logouts += 1
            self.reason = "logout"
            if self.transport is not None:
                self.transport.close()
        elif ptype == "L":
            server.counters.garbage += 1
            self.drop("second Login Request on a logged-in connection")
        # 'R' heartbeat and '+' debug: nothing to do (last_recv is updated)

    def _login(self, payload: bytes) -> None:
        server = self.server
        try:
            username, password, session, seq = ouch.decode_login_request(payload)
        except ouch.OuchError as exc:
            server.counters.garbage += 1
            self.drop(f"bad Login Request: {exc}")
            return
        user = server.users.get(username)
        reject = None
        if user is None or not hmac.compare_digest(password.encode(), user.password.encode()):
            reject = ("A", f"user {username!r}: not authorized")
        elif server.ended:
            reject = ("S", "the session has ended")
        elif session and session != server.session:
            reject = ("S", f"session {session!r} not available (current {server.session!r})")
        elif user.conn is not None:
            reject = ("S", f"user {username!r} is already logged in")
        if reject is not None:
            server.counters.login_rejects += 1
            log.warning("OUCH login from %s rejected (%s): %s", self.peer, reject[0], reject[1])
            self.write(_soup("J", reject[0].encode()))
            self.reason = "login rejected"
            if self.transport is not None:
                self.transport.close()
            return
        assert user is not None
        nxt = user.next_seq
        start = nxt if seq == 0 or seq > nxt else seq
        if seq > nxt:
            log.warning("OUCH %s: asked for sequence %d, the stream ends at %d", username, seq,
                        nxt - 1)
        self.user = user
        user.conn = self
        user.logins += 1
        server.counters.logins += 1
        buf = bytearray(64)
        end = ouch.pack_login_accepted(buf, 0, server.session, start)
        replay = user.messages[start - 1:]
        if replay:
            server.counters.replayed += len(replay)
            self.write(bytes(buf[:end]) + b"".join(_sequenced(m) for m in replay))
        else:
            self.write(bytes(buf[:end]))
        log.info("OUCH %s: logged in from %s at sequence %d (%d replayed)", username, self.peer,
                 start, len(replay))
        try:
            server.application.on_login(server, username)
        except Exception:
            server.counters.app_errors += 1
            log.exception("OUCH %s: on_login failed", username)

    def tick(self, now: float) -> None:
        s = self.server
        if self.user is None:
            if now - self.opened >= s.login_timeout_s:
                s.counters.login_timeouts += 1
                self.drop(f"no Login Request within {s.login_timeout_s:g} s")
            return
        if now - self.last_recv >= s.dead_after_s:
            s.counters.dead += 1
            self.drop(f"client silent for {s.dead_after_s:g} s")
            return
        if now - self.last_send >= s.heartbeat_interval_s:
            s.counters.heartbeats_sent += 1
            self.write(_soup("H"))


class SoupServer:
    """A SoupBinTCP 3.00 server: users, their sequenced streams, heartbeats, logins."""

    def __init__(self, users: Mapping[str, str], application: SoupApplication, *,
                 session: str = DEFAULT_SESSION, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 dead_after_s: float = DEAD_AFTER_S, login_timeout_s: float = LOGIN_TIMEOUT_S):
        for name, password in users.items():
            if not name or len(name) > 6 or not name.isascii() or " " in name:
                raise ValueError(f"SoupBinTCP username {name!r}: 1..6 ASCII characters, no spaces")
            if len(password) > 10 or not password.isascii():
                raise ValueError(f"password of {name!r}: at most 10 ASCII characters")
        if not session or len(session) > 10 or not session.isascii():
            raise ValueError(f"SoupBinTCP session {session!r}: 1..10 ASCII characters")
        if heartbeat_interval_s <= 0 or dead_after_s <= heartbeat_interval_s or login_timeout_s <= 0:
            raise ValueError("need 0 < heartbeat_interval_s < dead_after_s and login_timeout_s > 0")
        self.users = {name: SoupUser(name, pw) for name, pw in users.items()}
        self.application = application
        self.session = session
        self.heartbeat_interval_s = heartbeat_interval_s
        self.dead_after_s = dead_after_s
        self.login_timeout_s = login_timeout_s
        self.counters = ServerCounters()
        self.ended = False
        self._conns: set[_ServerConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._server = await loop.create_server(lambda: _ServerConnection(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._timer = loop.call_later(self._tick_s(), self._tick)
        return self.port

    def _tick_s(self) -> float:
        return min(0.1, self.heartbeat_interval_s / 4)

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        for conn in list(self._conns):
            try:
                conn.tick(now)
            except Exception:
                log.exception("OUCH server timer failed for %s", conn.peer)
        self._timer = loop.call_later(self._tick_s(), self._tick)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self._conns):
            conn.drop("server stopping")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)

    def send_sequenced(self, username: str, payload: bytes) -> int:
        """Append one message to the user's stream (sent now when logged in); its number."""
        user = self.users[username]
        user.messages.append(payload)
        self.counters.sequenced += 1
        conn = user.conn
        if conn is not None:
            conn.write(_sequenced(payload))
        return len(user.messages)

    def logged_in(self, username: str) -> bool:
        user = self.users.get(username)
        return user is not None and user.conn is not None

    def drop(self, username: str | None = None, reason: str = "dropped", abort: bool = True) -> int:
        """Close the connection of `username` (all when None); returns how many."""
        n = 0
        for user in self.users.values():
            if (username is None or user.username == username) and user.conn is not None:
                user.conn.drop(reason, abort=abort)
                n += 1
        return n

    def end_session(self) -> None:
        """End of Session 'Z' to every logged-in user; later logins are rejected ('S')."""
        self.ended = True
        for user in self.users.values():
            conn = user.conn
            if conn is not None:
                conn.write(_soup("Z"))
                conn.reason = "end of session"
                if conn.transport is not None:
                    conn.transport.close()


# ===========================================================================
# Venue application: OUCH over the exchange core
# ===========================================================================

# Values of gateway.exchange (not imported here: the engine-side client must not pull in
# the venue simulator and its dependencies).
_ORD_REJ_UNKNOWN_SYMBOL, _ORD_REJ_EXCHANGE_CLOSED, _ORD_REJ_EXCEEDS_LIMIT = 1, 2, 3
_ORD_REJ_OTHER = 99
_EXEC_NEW, _EXEC_CANCELED, _EXEC_REPLACED, _EXEC_REJECTED, _EXEC_TRADE = "0", "4", "5", "8", "F"
_CLOSED_STATUSES = ("2", "4", "8")                 # filled, canceled, rejected
_CXL_REJ_TOO_LATE = 0
_RESPONSE_TO_REPLACE = "2"
_REJ_REASON = {_ORD_REJ_UNKNOWN_SYMBOL: "S", _ORD_REJ_EXCHANGE_CLOSED: "H",
               _ORD_REJ_EXCEEDS_LIMIT: "Z"}        # exchange reject reason -> OUCH


def _cancel_reason(text: str | None) -> str:
    if not text or text == "mass cancel":
        return "U"
    t = text.lower()
    if "ioc" in t or "fok" in t or "market order" in t:
        return "I"
    if "self-match" in t:
        return "Q"
    if "expired" in t:
        return "T"
    return "Z"


class _Entered:
    """What an Enter Order said, echoed in Accepted / Replaced."""

    __slots__ = ("tif", "firm", "display", "capacity", "iso", "min_qty", "cross", "raw_side")

    def __init__(self, tif: int, firm: str, display: str, capacity: str, iso: str, min_qty: int,
                 cross: str, raw_side: str):
        self.tif = tif
        self.firm = firm
        self.display = display
        self.capacity = capacity
        self.iso = iso
        self.min_qty = min_qty
        self.cross = cross
        self.raw_side = raw_side


class _AccountState:
    """Per account: tokens of live orders, echo fields, reports waiting for the ack delay."""

    __slots__ = ("tokens", "entered", "reject_reason", "reduce", "outbox", "flush_handle",
                 "cxl_no")

    def __init__(self) -> None:
        self.tokens: dict[int, str] = {}         # exchange order id -> current token
        self.entered: dict[str, _Entered] = {}   # token -> the Enter Order's echo fields
        self.reject_reason: dict[str, str] = {}  # token -> OUCH reject reason chosen here
        self.reduce: dict[int, int] = {}         # order id -> open shares before a reduce
        self.outbox: deque[tuple[float, bytes]] = deque()
        self.flush_handle: asyncio.TimerHandle | None = None
        self.cxl_no = 0


class OuchOrderEntry:
    """The OUCH 4.2 application behind a SoupServer, driving a gateway.exchange.Exchange."""

    def __init__(self, exchange: Any, users: Iterable[str], cancel_on_disconnect: bool = False):
        self.exchange = exchange
        self.faults = exchange.faults
        self.cancel_on_disconnect = cancel_on_disconnect
        self.server: SoupServer | None = None
        self.accounts: dict[str, _AccountState] = {}
        self.ignored = 0           # messages ignored (unknown/duplicate token, too late, 'M')
        self.requests = 0
        self._buf = bytearray(128)
        for user in users:
            self.accounts[user] = _AccountState()
            exchange.set_report_sink(user, lambda report, u=user: self.deliver(u, report))
        self.faults.add_drop_hook(self._drop_hook)

    # -- session events -------------------------------------------------------------
    def bind(self, server: SoupServer) -> None:
        self.server = server
        ts = ns_since_midnight()
        for user in self.accounts:
            if not server.users[user].messages:
                end = ouch.pack_system_event(self._buf, 0, ts, "S", framed=False)
                server.send_sequenced(user, bytes(self._buf[:end]))

    def on_login(self, server: SoupServer, username: str) -> None:
        pass

    def on_disconnect(self, server: SoupServer, username: str, reason: str, logout: bool) -> None:
        if self.cancel_on_disconnect and not logout and not server.ended:
            n = self.exchange.cancel_all(username, "canceled on disconnect")
            log.info("OUCH %s: cancel-on-disconnect: %d orders canceled", username, n)

    def _drop_hook(self, account: str | None) -> int:
        if self.server is None:
            return 0
        if account is not None and account not in self.accounts:
            return 0
        return self.server.drop(account, "fault injection: drop connection")

    # -- inbound --------------------------------------------------------------------
    def on_unsequenced(self, server: SoupServer, username: str, payload: bytes) -> None:
        msg = ouch.decode_inbound(payload)      # OuchError -> the connection is closed
        self.requests += 1
        kind = msg[0]
        if kind == "O":
            self._enter(username, msg)
        elif kind == "U":
            self._replace(username, msg)
        elif kind == "X":
            self._cancel(username, msg)
        else:
            self.ignored += 1
            log.info("OUCH %s: Modify Order not supported; ignored", username)
        if self.faults.order_received():
            server.drop(username, "fault injection: drop_after_orders reached")

    def _enter(self, account: str, msg: tuple) -> None:
        (_, token, side_c, shares, stock, price4, tif, firm, display, capacity, iso, min_qty,
         cross, _customer) = msg
        xc = self.exchange
        st = self.accounts[account]
        if xc.knows(account, token):
            self.ignored += 1
            log.info("OUCH %s: duplicate token %r ignored", account, token)
            return
        side = _SIDE_IN[side_c]
        st.entered[token] = _Entered(tif, firm, display, capacity, iso, min_qty, cross, side_c)
        inst = xc.instrument(stock)
        ord_type = ORDTYPE_LIMIT
        price: int | None = None
        problem = None
        if inst is None:
            problem = ("S", f"unknown symbol {stock!r}", _ORD_REJ_UNKNOWN_SYMBOL)
        elif price4 == MARKET_PRICE:
            ord_type = ORDTYPE_MARKET
        else:
            scale = price4_scale(inst)
            if price4 <= 0 or price4 % scale:
                problem = ("X", f"price {ouch.price4_to_str(price4)} is not a positive multiple of "
                                f"the tick {inst.tick_size}", _ORD_REJ_OTHER)
            else:
                price = price4 // scale
        if tif == TIF_OUCH_IOC:
            xtif = TIF_FOK if min_qty and min_qty >= shares else TIF_IOC
        else:
            xtif = TIF_DAY
        if problem is not None:
            st.reject_reason[token] = problem[0]
            xc.reject_order(account, token, stock, side, shares, price, problem[1], problem[2],
                            ord_type, xtif)
            return
        xc.new_order(account, token, stock, side, shares, price, ord_type, xtif)

    def _find_open(self, account: str, token: str) -> Any:
        order = self.exchange.find_order(account, token)
        if order is None or order.leaves_qty <= 0 or order.status in _CLOSED_STATUSES:
            return None
        return order

    def _cxl_id(self, st: _AccountState, token: str) -> str:
        # Longer than any 14-character token, so it never collides with one.
        st.cxl_no += 1
        return f"~{st.cxl_no}~{token}~cancel"

    def _replace(self, account: str, msg: tuple) -> None:
        _, existing, replacement, shares, price4, _tif, display, iso, min_qty = msg
        xc = self.exchange
        st = self.accounts[account]
        order = self._find_open(account, existing)
        if order is None or xc.knows(account, replacement):
            self.ignored += 1
            log.info("OUCH %s: replace of %r by %r ignored (unknown or closed order, or token "
                     "already used)", account, existing, replacement)
            return
        if shares == 0:
            self._cancel(account, ("X", existing, 0))
            return
        old = st.entered.get(existing)
        if old is not None:
            st.entered[replacement] = _Entered(old.tif, old.firm, display, old.capacity, iso,
                                               min_qty, old.cross, old.raw_side)
        inst = xc.instrument(order.symbol)
        scale = price4_scale(inst)
        if price4 == MARKET_PRICE or price4 <= 0 or price4 % scale:
            self._reject_now(account, replacement, "X")
            return
        xc.replace_order(account, replacement, existing, None, order.cum_qty + shares,
                         price4 // scale)

    def _cancel(self, account: str, msg: tuple) -> None:
        _, token, shares = msg
        st = self.accounts[account]
        order = self._find_open(account, token)
        if order is None:
            self.ignored += 1
            log.info("OUCH %s: cancel of %r ignored (unknown or closed order)", account, token)
            return
        leaves = order.leaves_qty
        if shares == 0:
            self.exchange.cancel_order(account, self._cxl_id(st, token), token)
        elif shares < leaves:
            st.reduce[order.order_id] = leaves
            ok = False
            try:
                ok = self.exchange.replace_order(account, self._cxl_id(st, token), token, None,
                                                 order.cum_qty + shares, order.price)
            finally:
                if not ok:
                    st.reduce.pop(order.order_id, None)
        else:
            self.ignored += 1

    def _reject_now(self, account: str, token: str, reason: str) -> None:
        end = ouch.pack_rejected(self._buf, 0, ns_since_midnight(), token, reason, framed=False)
        self._queue(account, bytes(self._buf[:end]))

    # -- outbound -------------------------------------------------------------------
    def deliver(self, account: str, report: Any) -> None:
        """The exchange's report sink for `account`: encode now, send now or after the delay."""
        try:
            payload = self._encode(account, report)
        except Exception:
            log.exception("OUCH %s: cannot encode %r", account, report)
            return
        if payload is not None:
            self._queue(account, payload)

    def _queue(self, account: str, payload: bytes) -> None:
        server = self.server
        if server is None:
            return
        st = self.accounts[account]
        delay_ms = self.faults.ack_delay_ms
        if delay_ms <= 0 and not st.outbox:
            server.send_sequenced(account, payload)
            return
        loop = asyncio.get_running_loop()
        st.outbox.append((loop.time() + delay_ms / 1000.0, payload))
        if st.flush_handle is None:
            st.flush_handle = loop.call_at(st.outbox[0][0], self._flush, account)

    def _flush(self, account: str, everything: bool = False) -> None:
        st = self.accounts[account]
        st.flush_handle = None
        server = self.server
        if server is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        while st.outbox and (everything or st.outbox[0][0] <= now + 0.0005):
            server.send_sequenced(account, st.outbox.popleft()[1])
        if st.outbox:
            st.flush_handle = loop.call_at(st.outbox[0][0], self._flush, account)

    def flush_all(self) -> None:
        for account, st in self.accounts.items():
            if st.flush_handle is not None:
                st.flush_handle.cancel()
            self._flush(account, everything=True)

    def _encode(self, account: str, r: Any) -> bytes | None:
        st = self.accounts[account]
        buf = self._buf
        ts = r.ts_ns % 86_400_000_000_000 if r.ts_ns else ns_since_midnight()
        kind = type(r).__name__
        if kind == "CancelReject":
            st.entered.pop(r.cl_ord_id, None)
            if (r.response_to == _RESPONSE_TO_REPLACE and r.reason != _CXL_REJ_TOO_LATE
                    and not r.cl_ord_id.startswith("~")):
                # a replace refused (not "too late"; not one of our reduce-in-place requests)
                reason = "H" if "halted" in (r.text or "") else "O"
                end = ouch.pack_rejected(buf, 0, ts, r.cl_ord_id, reason, framed=False)
                return bytes(buf[:end])
            self.ignored += 1
            log.info("OUCH %s: %s", account, r.text)
            return None
        if kind != "ExecReport":
            return None
        et = r.exec_type
        if et == _EXEC_REJECTED:
            reason = st.reject_reason.pop(r.cl_ord_id, None) or _REJ_REASON.get(r.ord_rej_reason, "O")
            st.entered.pop(r.cl_ord_id, None)
            end = ouch.pack_rejected(buf, 0, ts, r.cl_ord_id, reason, framed=False)
            return bytes(buf[:end])
        if et == _EXEC_NEW:                                 # -> Accepted
            st.tokens[r.order_id] = r.cl_ord_id
            return self._accepted(st, r, ts, None)
        token = st.tokens.get(r.order_id)
        if token is None:
            return None
        if et == _EXEC_TRADE:                               # -> Executed
            liquidity = "R"
            fills = self.exchange.accounts[account].fills
            if fills and fills[-1].exec_id == r.exec_id:
                liquidity = "A" if fills[-1].liquidity == "M" else "R"
            scale = price4_scale(self.exchange.instrument(r.symbol))
            end = ouch.pack_executed(buf, 0, ts, token, r.last_qty, r.last_px * scale, liquidity,
                                     r.exec_id, framed=False)
            if r.leaves_qty == 0:
                self._forget(st, r.order_id, token)
            return bytes(buf[:end])
        if et == _EXEC_CANCELED:
            dec = max(0, r.order_qty - r.cum_qty)
            reason = _cancel_reason(r.text)
            end = ouch.pack_canceled(buf, 0, ts, token, dec, reason, framed=False)
            self._forget(st, r.order_id, token)
            return bytes(buf[:end])
        if et == _EXEC_REPLACED:
            before = st.reduce.pop(r.order_id, None)
            if before is not None:                          # a partial cancel
                end = ouch.pack_canceled(buf, 0, ts, token, max(0, before - r.leaves_qty), "U",
                                         framed=False)
                return bytes(buf[:end])
            st.tokens[r.order_id] = r.cl_ord_id
            return self._accepted(st, r, ts, token)
        return None

    def _forget(self, st: _AccountState, order_id: int, token: str) -> None:
        st.tokens.pop(order_id, None)
        st.entered.pop(token, None)

    def _accepted(self, st: _AccountState, r: Any, ts: int, previous: str | None) -> bytes:
        e = st.entered.get(r.cl_ord_id)
        if e is None:
            e = _Entered(TIF_OUCH_IOC if r.tif in (TIF_IOC, TIF_FOK) else TIF_OUCH_DAY, "", "Y", "A",
                         "N", 0, "N", "B" if r.side == SIDE_BUY else "S")
        scale = price4_scale(self.exchange.instrument(r.symbol))
        price4 = MARKET_PRICE if r.price is None else r.price * scale
        state = "L" if r.leaves_qty > 0 else "D"
        buf = self._buf
        if previous is None:
            end = ouch.pack_accepted(buf, 0, ts, r.cl_ord_id, e.raw_side, r.leaves_qty, r.symbol,
                                     price4, e.tif, e.firm, e.display, r.order_id, e.capacity,
                                     e.iso, e.min_qty, e.cross, state, framed=False)
        else:
            end = ouch.pack_replaced(buf, 0, ts, r.cl_ord_id, e.raw_side, r.leaves_qty, r.symbol,
                                     price4, e.tif, e.firm, e.display, r.order_id, e.capacity,
                                     e.iso, e.min_qty, e.cross, state, previous, framed=False)
            st.entered.pop(previous, None)
        return bytes(buf[:end])


@dataclass(frozen=True)
class OuchVenueConfig:
    """The OUCH side of the venue: SoupBinTCP users (= exchange accounts) and policy."""

    users: tuple[tuple[str, str], ...] = (("ENGINE", "secret"),)   # (username, password)
    session: str = DEFAULT_SESSION
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    dead_after_s: float = DEAD_AFTER_S
    login_timeout_s: float = LOGIN_TIMEOUT_S
    cancel_on_disconnect: bool = False

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("give at least one OUCH user")
        names = [u for u, _ in self.users]
        if len(set(names)) != len(names):
            raise ValueError(f"OUCH users given twice: {', '.join(names)}")

    def __repr__(self) -> str:   # passwords never reach a log line
        return (f"OuchVenueConfig(users={', '.join(u for u, _ in self.users)}, "
                f"session={self.session!r}, cod={self.cancel_on_disconnect})")


class OuchVenue:
    """A SoupBinTCP server whose users are the exchange's accounts, speaking OUCH 4.2."""

    def __init__(self, exchange: Any, config: OuchVenueConfig | None = None):
        self.config = config or OuchVenueConfig()
        self.exchange = exchange
        self.app = OuchOrderEntry(exchange, [u for u, _ in self.config.users],
                                  self.config.cancel_on_disconnect)
        self.server = SoupServer(dict(self.config.users), self.app, session=self.config.session,
                                 heartbeat_interval_s=self.config.heartbeat_interval_s,
                                 dead_after_s=self.config.dead_after_s,
                                 login_timeout_s=self.config.login_timeout_s)
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.port = await self.server.start(host, port)
        self.app.bind(self.server)
        return self.port

    def end_session(self) -> None:
        """System Event 'E' to every user, then End of Session 'Z'."""
        self.app.flush_all()
        buf = bytearray(16)
        end = ouch.pack_system_event(buf, 0, ns_since_midnight(), "E", framed=False)
        for user in self.server.users:
            self.server.send_sequenced(user, bytes(buf[:end]))
        self.server.end_session()

    async def stop(self) -> None:
        self.app.flush_all()
        await self.server.stop()


# ===========================================================================
# Client (engine side)
# ===========================================================================

@dataclass(frozen=True, slots=True)
class Accepted:
    seq: int
    timestamp: int          # ns since midnight (venue clock)
    token: str
    side: int               # SIDE_BUY / SIDE_SELL
    shares: int
    symbol: str
    price4: int             # MARKET_PRICE for a market order
    price: int | None       # ticks (None: market order or unknown instrument)
    tif: int
    order_ref: int
    live: bool              # order state L (True) / D (False)


@dataclass(frozen=True, slots=True)
class Replaced:
    seq: int
    timestamp: int
    token: str              # the replacement token
    previous_token: str
    side: int
    shares: int             # open shares of the replacement
    symbol: str
    price4: int
    price: int | None
    tif: int
    order_ref: int
    live: bool


@dataclass(frozen=True, slots=True)
class Canceled:
    seq: int
    timestamp: int
    token: str
    shares: int             # decrement (incremental, not cumulative)
    reason: str             # U I T S D Q Z


@dataclass(frozen=True, slots=True)
class Executed:
    seq: int
    timestamp: int
    token: str
    shares: int
    price4: int
    price: int | None       # ticks, when the token's symbol and instrument are known
    liquidity: str          # A added (maker) / R removed (taker)
    match: int


@dataclass(frozen=True, slots=True)
class Rejected:
    seq: int
    timestamp: int
    token: str
    reason: str


@dataclass(frozen=True, slots=True)
class SystemEvent:
    seq: int
    timestamp: int
    code: str               # S start of day, E end of day


@dataclass(frozen=True, slots=True)
class LoggedIn:
    session: str
    next_seq: int


@dataclass(frozen=True, slots=True)
class LoginRejected:
    reason: str             # A not authorized, S session not available


@dataclass(frozen=True, slots=True)
class EndOfSession:
    pass


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str


OuchEvent = (Accepted | Replaced | Canceled | Executed | Rejected | SystemEvent | LoggedIn
             | LoginRejected | EndOfSession | Disconnected)


class ClientCounters:
    __slots__ = ("connects", "logins", "login_rejects", "sequenced", "heartbeats_sent",
                 "garbage", "dead", "sent", "event_errors")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _ClientConnection(asyncio.Protocol):
    def __init__(self, client: OuchClient):
        self.client = client
        self.framer = ouch.SoupFramer(role="client")
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.last_recv = self.last_send = self.loop.time()
        self.closed = self.loop.create_future()
        self.reason = "connection lost"
        self.logged_in = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport)
        c = self.client
        buf = bytearray(64)
        end = ouch.pack_login_request(buf, 0, c.username, c.password, c.session_requested,
                                      c.next_seq)
        self.write(bytes(buf[:end]))

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)
            self.last_send = self.loop.time()

    def data_received(self, data: bytes) -> None:
        self.last_recv = self.loop.time()
        try:
            packets = self.framer.feed(data)
        except ouch.OuchDecodeError as exc:
            for ptype, payload in exc.packets:
                self.client._packet(self, ptype, payload)
            self.client.counters.garbage += 1
            self.drop(f"garbage from the server: {exc}")
            return
        for ptype, payload in packets:
            if self.transport is None:
                return
            self.client._packet(self, ptype, payload)

    def drop(self, reason: str) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            log.warning("OUCH client %s: closing the connection: %s", self.client.username, reason)
            self.reason = reason
            t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.client._lost(self, self.reason if exc is None else f"{self.reason}: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)


class OuchClient:
    """The engine's OUCH 4.2 / SoupBinTCP client (see the module docstring)."""

    def __init__(self, host: str, port: int, username: str, password: str, *,
                 session: str = "", next_seq: int = 1,
                 on_event: Callable[[OuchEvent], Any] | None = None,
                 instruments: Mapping[str, Instrument] | Iterable[Instrument] = (),
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 dead_after_s: float = DEAD_AFTER_S, reconnect: bool = True,
                 backoff_initial_s: float = 0.05, backoff_max_s: float = 5.0,
                 firm: str = ""):
        if heartbeat_interval_s <= 0 or dead_after_s <= heartbeat_interval_s:
            raise ValueError("need 0 < heartbeat_interval_s < dead_after_s")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.session_requested = session
        self.session: str | None = None
        self.next_seq = next_seq           # number of the next sequenced message expected
        self.on_event = on_event
        if isinstance(instruments, Mapping):
            self.instruments = dict(instruments)
        else:
            self.instruments = {i.symbol: i for i in instruments}
        self.heartbeat_interval_s = heartbeat_interval_s
        self.dead_after_s = dead_after_s
        self.reconnect = reconnect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.firm = firm
        self.counters = ClientCounters()
        self.logged_in = False
        self.ended = False
        self.rejected: str | None = None
        self._conn: _ClientConnection | None = None
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._logged_in_event = asyncio.Event()
        self._symbol_of: dict[str, str] = {}    # token -> symbol (orders entered here or accepted)
        self._buf = bytearray(128)

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and log in in the background (reconnecting per the policy)."""
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.backoff_initial_s
        while not self._stopping:
            try:
                _, conn = await loop.create_connection(lambda: _ClientConnection(self),
                                                       self.host, self.port)
            except OSError as exc:
                log.warning("OUCH client %s: connect to %s:%d failed: %s; retry in %.2fs",
                            self.username, self.host, self.port, exc, backoff)
            else:
                self.counters.connects += 1
                self._conn = conn
                self._arm_timer()
                await conn.closed
                if conn.logged_in:
                    backoff = self.backoff_initial_s
            if self._stopping or self.ended or self.rejected == "A" or not self.reconnect:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def _arm_timer(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(min(0.1, self.heartbeat_interval_s / 4), self._tick)

    def _tick(self) -> None:
        self._timer = None
        conn = self._conn
        if conn is None or conn.transport is None:
            return
        now = conn.loop.time()
        if now - conn.last_recv >= self.dead_after_s:
            self.counters.dead += 1
            conn.drop(f"server silent for {self.dead_after_s:g} s")
            return
        if self.logged_in and now - conn.last_send >= self.heartbeat_interval_s:
            self.counters.heartbeats_sent += 1
            conn.write(_soup("R"))
        self._arm_timer()

    async def wait_logged_in(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._logged_in_event.wait(), timeout)

    async def stop(self, logout: bool = True) -> None:
        """Logout (when logged in) and close; no reconnect."""
        self._stopping = True
        conn = self._conn
        if conn is not None and conn.transport is not None:
            if logout and self.logged_in:
                conn.write(_soup("O"))
                try:
                    await asyncio.wait_for(asyncio.shield(conn.closed), 1.0)
                except TimeoutError:
                    pass
            if conn.transport is not None:
                conn.reason = "client stopping"
                conn.transport.close()
                await conn.closed
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def disconnect(self, reason: str = "disconnect") -> None:
        """Drop the current connection without Logout (the run loop reconnects)."""
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.reason = reason
            conn.transport.abort()

    # -- inbound ----------------------------------------------------------------------
    def _emit(self, event: OuchEvent) -> None:
        cb = self.on_event
        if cb is not None:
            try:
                cb(event)
            except Exception:
                self.counters.event_errors += 1
                log.exception("OUCH client %s: on_event failed for %r", self.username, event)

    def _lost(self, conn: _ClientConnection, reason: str) -> None:
        if conn is not self._conn:
            return
        was = self.logged_in
        self.logged_in = False
        self._logged_in_event.clear()
        if was or not self.rejected:
            self._emit(Disconnected(reason))

    def _packet(self, conn: _ClientConnection, ptype: str, payload: bytes) -> None:
        if ptype == "S":
            if not self.logged_in:
                self.counters.garbage += 1
                conn.drop("sequenced data before Login Accepted")
                return
            seq = self.next_seq
            self.next_seq = seq + 1
            self.counters.sequenced += 1
            try:
                event = self._decode(seq, payload)
            except ouch.OuchError as exc:
                self.counters.garbage += 1
                log.warning("OUCH client %s: sequenced message %d does not decode: %s",
                            self.username, seq, exc)
                return
            self._emit(event)
        elif ptype == "A":
            try:
                session, seq = ouch.decode_login_accepted(payload)
            except ouch.OuchError as exc:
                self.counters.garbage += 1
                conn.drop(f"bad Login Accepted: {exc}")
                return
            if seq != self.next_seq:
                log.warning("OUCH client %s: asked for sequence %d, the server starts at %d",
                            self.username, self.next_seq, seq)
            self.session = session
            self.next_seq = seq
            self.logged_in = True
            self.rejected = None
            conn.logged_in = True
            self.counters.logins += 1
            self._logged_in_event.set()
            self._emit(LoggedIn(session, seq))
        elif ptype == "J":
            reason = payload.decode("latin-1", "replace") if payload else "?"
            self.rejected = reason
            self.counters.login_rejects += 1
            log.warning("OUCH client %s: login rejected (%s)", self.username, reason)
            self._emit(LoginRejected(reason))
        elif ptype == "Z":
            self.ended = True
            self._emit(EndOfSession())
        # 'H' server heartbeat, '+' debug: nothing to do

    def _ticks(self, symbol: str | None, price4: int) -> int | None:
        if symbol is None or price4 == MARKET_PRICE:
            return None
        inst = self.instruments.get(symbol)
        scale = price4_scale(inst) if inst is not None else price4_scale(Instrument(symbol))
        return price4 // scale if price4 % scale == 0 else None

    def _decode(self, seq: int, payload: bytes) -> OuchEvent:
        m = ouch.decode_outbound(payload)
        t = m[0]
        if t == "E":
            _, ts, token, shares, price4, liq, match = m
            return Executed(seq, ts, token, shares, price4, self._ticks(self._symbol_of.get(token),
                                                                        price4), liq, match)
        if t == "A" or t == "U":
            (_, ts, token, side, shares, stock, price4, tif, _firm, _display, ref, _cap, _iso,
             _minq, _cross, state) = m[:16]
            self._symbol_of[token] = stock
            if t == "A":
                return Accepted(seq, ts, token, _SIDE_IN.get(side, SIDE_SELL), shares, stock, price4,
                                self._ticks(stock, price4), tif, ref, state == "L")
            previous = m[16]
            self._symbol_of.pop(previous, None)
            return Replaced(seq, ts, token, previous, _SIDE_IN.get(side, SIDE_SELL), shares, stock,
                            price4, self._ticks(stock, price4), tif, ref, state == "L")
        if t == "C":
            _, ts, token, dec, reason = m
            return Canceled(seq, ts, token, dec, reason)
        if t == "J":
            _, ts, token, reason = m
            self._symbol_of.pop(token, None)
            return Rejected(seq, ts, token, reason)
        _, ts, code = m
        return SystemEvent(seq, ts, code)

    # -- outbound ---------------------------------------------------------------------
    def _send(self, end: int) -> None:
        conn = self._conn
        if not self.logged_in or conn is None or conn.transport is None:
            raise NotLoggedOn(f"OUCH client {self.username}: not logged in")
        conn.write(bytes(self._buf[:end]))
        self.counters.sent += 1

    def _price4(self, symbol: str, price: int | None) -> int:
        if price is None:
            return MARKET_PRICE
        inst = self.instruments.get(symbol) or Instrument(symbol)
        return ouch.ticks_to_price4(price, price4_scale(inst))

    def enter_order(self, token: str, side: int, shares: int, symbol: str, price: int | None,
                    tif: int = TIF_OUCH_DAY, min_qty: int = 0) -> None:
        """Enter Order: price in ticks (None = market); tif 0 = IOC (min_qty = shares: FOK)."""
        if not self.logged_in:
            raise NotLoggedOn(f"OUCH client {self.username}: not logged in")
        end = ouch.pack_enter_order(self._buf, 0, token, side, shares, symbol,
                                    self._price4(symbol, price), tif, self.firm, "Y", "A", "N",
                                    min_qty)
        self._symbol_of[token] = symbol
        self._send(end)

    def replace_order(self, existing_token: str, replacement_token: str, shares: int,
                      price: int, symbol: str | None = None) -> None:
        """Replace Order: shares = the new open quantity, price in ticks."""
        symbol = symbol or self._symbol_of.get(existing_token)
        if symbol is None:
            raise SoupSessionError(f"replace of {existing_token!r}: its symbol is not known; "
                                   "pass symbol=")
        end = ouch.pack_replace_order(self._buf, 0, existing_token, replacement_token, shares,
                                      self._price4(symbol, price))
        self._send(end)
        self._symbol_of[replacement_token] = symbol

    def cancel_order(self, token: str, shares: int = 0) -> None:
        """Cancel Order: shares = the new intended open quantity (0 cancels everything)."""
        end = ouch.pack_cancel_order(self._buf, 0, token, shares)
        self._send(end)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests: garbage on the socket)."""
        conn = self._conn
        if conn is None or conn.transport is None:
            raise NotLoggedOn("not connected")
        conn.write(data)
