"""asyncio protocols that put `FixSession` on TCP: an acceptor and an initiator.

Thin classes over the compiled parser (STYLE.md rule 10): bytes in, framed messages to
the session; TCP_NODELAY on connect; `connection_lost` always ends in a defined state.
They run on uvloop in production and are tested on plain asyncio too.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable

from core_ext import fix as fixcodec
from gateway.fix_session import FixSession

log = logging.getLogger("gateway.fix")

TIMER_INTERVAL_S = 0.1


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FixConnection(asyncio.Protocol):
    """One TCP connection. An acceptor's connection binds to a session at Logon."""

    def __init__(self, acceptor: FixAcceptor | None = None, session: FixSession | None = None):
        self.acceptor = acceptor
        self.session = session
        self.parser = fixcodec.FixParser()
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self.connected_at = 0.0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        set_nodelay(transport)
        if self.session is not None:
            self.session.attach(transport)  # initiator: sends Logon
        elif self.acceptor is not None:
            self.connected_at = asyncio.get_running_loop().time()
            self.acceptor.pending.add(self)   # dropped unless it logs on in time

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
            for item in self.parser:
                if self.transport is None or self.transport.is_closing():
                    return
                if isinstance(item, fixcodec.FixGarbled):
                    if self.session is None:
                        self._drop(f"garbled first message: {item.text}")
                        return
                    self.session.on_garbled(item.text)
                    continue
                if self.session is None:
                    if not self._bind(item):
                        return
                self.session.on_message(item)
        except Exception:
            # A bug must not take the process down with it: log, drop this connection only.
            log.exception("FIX connection %s: unhandled error; closing this connection", self.peer)
            if self.session is not None:
                self.session.disconnect("internal error")
            elif self.transport is not None:
                self.transport.close()

    def _drop(self, reason: str) -> None:
        log.warning("FIX connection %s refused: %s", self.peer, reason)
        if self.transport is not None:
            self.transport.close()

    def _bind(self, msg) -> bool:
        """Acceptor: the first message must be a Logon for a configured, free session."""
        if msg.msg_type != b"A":
            self._drop(f"first message is MsgType {msg.msg_type!r}, not Logon")
            return False
        assert self.acceptor is not None
        session = self.acceptor.lookup(msg.get(49), msg.get(56))
        if session is None:
            self._drop(f"unknown CompIDs {msg.get(49)!r}->{msg.get(56)!r}")
            return False
        if session.connected:
            self._drop(f"session {msg.get(49)!r} already logged on (duplicate identity)")
            return False
        self.session = session
        self.acceptor.pending.discard(self)
        session.attach(self.transport)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None and self.session.transport is self.transport:
            self.session.detach("connection lost" if exc is None else f"connection lost: {exc}")
        self.transport = None
        if self.acceptor is not None:
            self.acceptor.pending.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)


class FixAcceptor:
    """A FIX acceptor serving a fixed set of sessions on one TCP port.

    A connection that has not logged on within `logon_timeout_s` (e.g. one that only
    sends bytes without "8=FIX") is closed."""

    def __init__(self, sessions: Iterable[FixSession], logon_timeout_s: float = 10.0):
        self.sessions = {(s.target, s.sender): s for s in sessions}
        self.server: asyncio.AbstractServer | None = None
        self._timer: asyncio.Task | None = None
        self.logon_timeout_s = logon_timeout_s
        self.pending: set[FixConnection] = set()   # connections not bound to a session yet

    def lookup(self, their_comp_id: bytes | None, our_comp_id: bytes | None) -> FixSession | None:
        return self.sessions.get((their_comp_id, our_comp_id))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: FixConnection(acceptor=self), host, port)
        self._timer = loop.create_task(self._run_timers())
        return self.server.sockets[0].getsockname()[1]

    async def _run_timers(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TIMER_INTERVAL_S)
            if self.pending:
                now = loop.time()
                for conn in [c for c in self.pending if now - c.connected_at >= self.logon_timeout_s]:
                    self.pending.discard(conn)
                    conn._drop(f"no Logon within {self.logon_timeout_s:g} s")
            for session in self.sessions.values():
                try:
                    session.on_timer()
                    session.store.flush()
                except Exception:
                    log.exception("FIX session timer failed")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for session in self.sessions.values():
            if session.logged_on:
                session.send_logout()
            session.disconnect("acceptor stopping")
            session.store.close()
        for conn in list(self.pending):
            conn._drop("acceptor stopping")
        self.pending.clear()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class FixInitiator:
    """Connects a session to an acceptor, logs on, and reconnects with backoff."""

    def __init__(self, session: FixSession, host: str, port: int,
                 backoff_initial_s: float = 0.25, backoff_max_s: float = 10.0):
        self.session = session
        self.host = host
        self.port = port
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._task: asyncio.Task | None = None
        self._conn: FixConnection | None = None
        self._stopping = False
        self.connects = 0
        self.logged_on = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = self.backoff_initial_s
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                _, conn = await loop.create_connection(
                    lambda: FixConnection(session=self.session), self.host, self.port)
            except OSError as exc:
                log.warning("FIX initiator: connect to %s:%d failed: %s; retry in %.2fs",
                            self.host, self.port, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            self.connects += 1
            self._conn = conn
            timer = loop.create_task(self._timers())
            try:
                await conn.closed
            finally:
                timer.cancel()
                self._conn = None
                if self.logged_on.is_set():
                    backoff = self.backoff_initial_s   # it worked: start the backoff afresh
                self.logged_on.clear()
            if not self._stopping:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)

    async def _timers(self) -> None:
        while True:
            if self.session.logged_on:
                self.logged_on.set()
            await asyncio.sleep(TIMER_INTERVAL_S)
            self.session.on_timer()
            self.session.store.flush()
            if self.session.logged_on:
                self.logged_on.set()

    def notify_logged_on(self) -> None:
        """Set `logged_on` at once (an application calls this from on_logon instead of
        waiting for the next timer tick)."""
        if self.session.logged_on:
            self.logged_on.set()

    async def wait_logged_on(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.logged_on.wait(), timeout)

    async def stop(self) -> None:
        """Log out (waiting up to the session's logout_timeout_s for the reply, so both
        sides agree on the sequence numbers), disconnect, stop reconnecting."""
        self._stopping = True
        conn = self._conn
        if self.session.logged_on:
            self.session.send_logout()
            if conn is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(conn.closed), self.session.config.logout_timeout_s)
                except TimeoutError:
                    pass
        self.session.disconnect("initiator stopping")
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.session.store.close()
