"""OUCH 4.2 over SoupBinTCP 3.00 on real loopback TCP: the venue (SoupServer + the
exchange core) and the engine's client.

Every socket test runs on asyncio and on uvloop; an unhandled exception in either loop
fails the test. The venue side is the real exchange core (gateway.exchange).
"""
from __future__ import annotations

import asyncio
import logging
import time

import pytest

from core_ext import ouch
from gateway.errors import NotLoggedOn
from gateway.exchange import Exchange
from gateway.instruments import Instrument
from gateway.ouch_session import (
    Accepted,
    Canceled,
    Disconnected,
    EndOfSession,
    Executed,
    LoggedIn,
    LoginRejected,
    OuchClient,
    OuchVenue,
    OuchVenueConfig,
    Rejected,
    Replaced,
    SystemEvent,
    price4_scale,
)

USERS = (("ENG", "pw1"), ("OTH", "pw2"))
FAST = dict(heartbeat_interval_s=1.0, dead_after_s=15.0)


# ----------------------------------------------------------------------------- loops

@pytest.fixture(autouse=True)
def no_logged_errors(caplog):
    """The sessions catch and log unexpected exceptions (one bad connection must not stop
    the venue); in the tests any such log record is a failure."""
    yield
    bad = [r for r in caplog.get_records("call")
           if r.levelno >= logging.ERROR and r.name.startswith("gateway")]
    assert not bad, [r.getMessage() for r in bad]


def run(loop, coro, timeout: float = 8.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def wait_until(cond, timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# ----------------------------------------------------------------------------- helpers

def make_exchange() -> Exchange:
    # no market-data flow: the only orders are the test's, so every outcome is exact
    return Exchange([Instrument("AAPL"), Instrument("MSFT")], sources={})


async def start_venue(xc, **cfg) -> OuchVenue:
    venue = OuchVenue(xc, OuchVenueConfig(users=USERS, **cfg))
    await venue.start()
    return venue


class Events(list):
    def of(self, kind):
        return [e for e in self if isinstance(e, kind)]

    def seqs(self):
        return [e.seq for e in self if hasattr(e, "seq")]


async def client(venue, user="ENG", password="pw1", **kw) -> tuple[OuchClient, Events]:
    events = Events()
    c = OuchClient("127.0.0.1", venue.port, user, password, on_event=events.append, **kw)
    await c.start()
    return c, events


async def logged_in(venue, user="ENG", password="pw1", **kw):
    c, events = await client(venue, user, password, **kw)
    await c.wait_logged_in()
    return c, events


async def raw_connect(port):
    return await asyncio.open_connection("127.0.0.1", port)


def login_bytes(user, password, session="", seq=1) -> bytes:
    buf = bytearray(64)
    end = ouch.pack_login_request(buf, 0, user, password, session, seq)
    return bytes(buf[:end])


async def read_packets(reader, n, timeout=2.0):
    framer = ouch.SoupFramer(role="client")
    out = []
    while len(out) < n:
        data = await asyncio.wait_for(reader.read(4096), timeout)
        if not data:
            break
        out.extend(framer.feed(data))
    return out


# ----------------------------------------------------------------------------- login

def test_login_good_and_bad_password(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc)
        good, ev = await logged_in(venue)
        assert good.logged_in and good.session == "OUCH1"
        assert ev.of(LoggedIn) == [LoggedIn("OUCH1", 1)]
        await wait_until(lambda: ev.of(SystemEvent), what="start of day")
        assert ev.of(SystemEvent)[0].code == "S" and ev.of(SystemEvent)[0].seq == 1
        bad, bev = await client(venue, "OTH", "wrong")
        await wait_until(lambda: bev.of(LoginRejected), what="reject")
        await asyncio.sleep(0.15)                # not authorized: no reconnect attempts
        assert bev.of(LoginRejected) == [LoginRejected("A")]
        assert bad.counters.connects == 1 and not bad.logged_in
        with pytest.raises(NotLoggedOn):
            bad.enter_order("T1", 0, 100, "AAPL", 10_000)
        unknown, uev = await client(venue, "NOBODY", "pw1")
        await wait_until(lambda: uev.of(LoginRejected), what="unknown user reject")
        assert uev.of(LoginRejected)[0].reason == "A"
        assert venue.server.counters.login_rejects == 2
        # same user twice, and another session: 'S' (session not available)
        reader, writer = await raw_connect(venue.port)
        writer.write(login_bytes("ENG", "pw1"))
        (ptype, payload), = await read_packets(reader, 1)
        assert (ptype, payload) == ("J", b"S")
        writer.close()
        reader, writer = await raw_connect(venue.port)
        writer.write(login_bytes("OTH", "pw2", session="OTHERDAY"))
        (ptype, payload), = await read_packets(reader, 1)
        assert (ptype, payload) == ("J", b"S")
        writer.close()
        for c in (good, bad, unknown):
            await c.stop()
        await venue.stop()
    run(loop, main())


def test_first_packet_must_be_login_and_login_timeout(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc, login_timeout_s=0.2)
        reader, writer = await raw_connect(venue.port)
        writer.write(b"\x00\x01R")               # a heartbeat before any login
        assert await asyncio.wait_for(reader.read(100), 2) == b""
        writer.close()
        reader, writer = await raw_connect(venue.port)   # connects, says nothing
        assert await asyncio.wait_for(reader.read(100), 2) == b""
        writer.close()
        assert venue.server.counters.login_timeouts == 1
        assert venue.server.counters.garbage == 1
        await venue.stop()
    run(loop, main())


# ----------------------------------------------------------------------------- orders

def test_order_lifecycle(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc)
        eng, ev = await logged_in(venue, instruments=[Instrument("AAPL"), Instrument("MSFT")])
        oth, oev = await logged_in(venue, "OTH", "pw2")
        # enter -> accepted
        eng.enter_order("B1", 0, 300, "AAPL", 10_000)
        await wait_until(lambda: ev.of(Accepted), what="accepted")
        a = ev.of(Accepted)[0]
        assert (a.token, a.side, a.shares, a.symbol, a.price4, a.price, a.live) == \
            ("B1", 0, 300, "AAPL", 1_000_000, 10_000, True)
        assert a.order_ref == xc.find_order("ENG", "B1").order_id
        # another account sells 100 into it -> both executed (maker A / taker R)
        oth.enter_order("S1", 1, 100, "AAPL", 9_990)
        await wait_until(lambda: ev.of(Executed) and len(oev.of(Executed)) == 1, what="fills")
        e = ev.of(Executed)[0]
        assert (e.token, e.shares, e.price4, e.price, e.liquidity) == ("B1", 100, 1_000_000,
                                                                        10_000, "A")
        assert oev.of(Executed)[0].liquidity == "R" and oev.of(Executed)[0].token == "S1"
        # replace: 200 open -> 150 open at a new price, new token
        eng.replace_order("B1", "B1R", 150, 10_001)
        await wait_until(lambda: ev.of(Replaced), what="replaced")
        r = ev.of(Replaced)[0]
        assert (r.token, r.previous_token, r.shares, r.price, r.order_ref) == \
            ("B1R", "B1", 150, 10_001, a.order_ref)
        assert xc.book("AAPL").best_bid == 10_001 and xc.book("AAPL").best_bid_size == 150
        # partial cancel to 50 open, then cancel the rest
        eng.cancel_order("B1R", 50)
        await wait_until(lambda: ev.of(Canceled), what="partial cancel")
        assert ev.of(Canceled)[0].shares == 100 and ev.of(Canceled)[0].reason == "U"
        assert xc.book("AAPL").best_bid_size == 50
        eng.cancel_order("B1R")
        await wait_until(lambda: len(ev.of(Canceled)) == 2, what="cancel")
        assert ev.of(Canceled)[1].shares == 50 and xc.book("AAPL").best_bid is None
        # IOC with nothing to trade -> accepted then canceled 'I'
        eng.enter_order("I1", 0, 10, "AAPL", 10_000, tif=0)
        await wait_until(lambda: len(ev.of(Canceled)) == 3, what="IOC remainder")
        assert ev.of(Canceled)[2].reason == "I" and ev.of(Canceled)[2].token == "I1"
        # rejects: unknown symbol, price off the tick grid, halted symbol
        eng.enter_order("J1", 0, 10, "NOPE", 10_000)
        eng.send_raw(_enter_raw("J2", 1_000_050))          # $100.0050: not a $0.01 tick
        xc.set_halt("MSFT", True)
        eng.enter_order("J3", 0, 10, "MSFT", 10_000)
        await wait_until(lambda: len(ev.of(Rejected)) == 3, what="rejects")
        assert [(j.token, j.reason) for j in ev.of(Rejected)] == [("J1", "S"), ("J2", "X"),
                                                                  ("J3", "H")]
        # sequence numbers are contiguous from 1, nothing duplicated
        assert ev.seqs() == list(range(1, len(ev.seqs()) + 1))
        assert eng.next_seq == len(ev.seqs()) + 1
        # cancel of an unknown token and a duplicate token: ignored (as Nasdaq does)
        ignored = venue.app.ignored
        eng.cancel_order("NOPE")
        eng.enter_order("I1", 0, 10, "AAPL", 9_000)
        await wait_until(lambda: venue.app.ignored == ignored + 2, what="ignored")
        for c in (eng, oth):
            await c.stop()
        await venue.stop()
    run(loop, main())


def _enter_raw(token: str, price4: int) -> bytes:
    buf = bytearray(64)
    end = ouch.pack_enter_order(buf, 0, token, "B", 10, "AAPL", price4)
    return bytes(buf[:end])


def test_reconnect_replays_from_the_requested_sequence(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc)
        eng, ev = await logged_in(venue, backoff_initial_s=0.2)
        oth, oev = await logged_in(venue, "OTH", "pw2")
        for i in range(5):
            eng.enter_order(f"B{i}", 0, 100, "AAPL", 10_000 - i)
        await wait_until(lambda: len(ev.of(Accepted)) == 5, what="accepted")
        before = eng.next_seq
        eng.disconnect("test: network failure")
        await wait_until(lambda: not venue.server.logged_in("ENG"), what="server saw the drop")
        # while ENG is away its orders trade: the Executed messages are stored for it
        oth.enter_order("S1", 1, 250, "AAPL", 9_990)
        await wait_until(lambda: len(oev.of(Executed)) == 3, what="fills")
        assert not any(isinstance(e, Executed) for e in ev)
        await wait_until(lambda: len(ev.of(LoggedIn)) == 2, what="reconnected")
        assert ev.of(LoggedIn)[1].next_seq == before
        await wait_until(lambda: len(ev.of(Executed)) == 3, what="replayed fills")
        assert [(e.token, e.shares) for e in ev.of(Executed)] == [("B0", 100), ("B1", 100),
                                                                  ("B2", 50)]
        assert ev.seqs() == list(range(1, len(ev.seqs()) + 1))   # no loss, no duplicate
        assert ev.of(Disconnected)
        assert venue.server.users["ENG"].logins == 2
        # a new client asking for sequence 1 gets the same stream; 0 gets only new ones
        await eng.stop()
        await wait_until(lambda: not venue.server.logged_in("ENG"), what="logout")
        again, aev = await logged_in(venue, next_seq=1)
        await wait_until(lambda: len(aev.seqs()) == len(ev.seqs()), what="full replay")
        assert [(type(e), e.seq) for e in aev if hasattr(e, "seq")] == \
            [(type(e), e.seq) for e in ev if hasattr(e, "seq")]
        await again.stop()
        await wait_until(lambda: not venue.server.logged_in("ENG"), what="logout")
        fresh, fev = await logged_in(venue, next_seq=0)
        assert fev.of(LoggedIn)[0].next_seq == len(ev.seqs()) + 1
        await asyncio.sleep(0.05)
        assert not fev.seqs()
        for c in (fresh, oth):
            await c.stop()
        await venue.stop()
    run(loop, main())


def test_fault_drop_connection_reconnects_without_loss(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc)
        eng, ev = await logged_in(venue)
        eng.enter_order("B0", 0, 100, "AAPL", 10_000)
        await wait_until(lambda: ev.of(Accepted), what="accepted")
        assert xc.faults.drop_connections("ENG") == 1
        await wait_until(lambda: len(ev.of(LoggedIn)) == 2, what="reconnected")
        eng.enter_order("B1", 0, 100, "AAPL", 10_000)
        await wait_until(lambda: len(ev.of(Accepted)) == 2, what="accepted again")
        assert ev.seqs() == list(range(1, len(ev.seqs()) + 1))
        await eng.stop()
        await venue.stop()
    run(loop, main())


def test_cancel_on_disconnect(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc, cancel_on_disconnect=True)
        eng, ev = await logged_in(venue, backoff_initial_s=0.2)
        eng.enter_order("B0", 0, 100, "AAPL", 10_000)
        await wait_until(lambda: ev.of(Accepted), what="accepted")
        eng.disconnect("test: network failure")
        await wait_until(lambda: xc.book("AAPL").best_bid is None, what="canceled on disconnect")
        await wait_until(lambda: ev.of(Canceled), what="Canceled replayed after reconnect")
        c = ev.of(Canceled)[0]
        assert (c.token, c.shares, c.reason) == ("B0", 100, "Z")
        assert ev.seqs() == list(range(1, len(ev.seqs()) + 1))
        await eng.stop()                          # a Logout does not cancel anything
        await venue.stop()
    run(loop, main())


# ----------------------------------------------------------------------------- liveness

def test_heartbeats_both_ways_and_dead_client(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc, heartbeat_interval_s=0.05, dead_after_s=0.3)
        eng, ev = await logged_in(venue, heartbeat_interval_s=0.05, dead_after_s=0.3)
        await asyncio.sleep(0.5)                 # idle: heartbeats keep both sides alive
        assert venue.server.counters.heartbeats_sent >= 3
        assert eng.counters.heartbeats_sent >= 3
        assert eng.logged_in and not ev.of(Disconnected)
        assert venue.server.counters.dead == 0 and eng.counters.dead == 0
        # a client that logs in and then never speaks again is declared dead
        reader, writer = await raw_connect(venue.port)
        writer.write(login_bytes("OTH", "pw2"))
        packets = []
        framer = ouch.SoupFramer(role="client")
        while True:
            data = await asyncio.wait_for(reader.read(4096), 2)
            if not data:
                break
            packets.extend(framer.feed(data))
        assert packets[0][0] == "A" and ("H", b"") in packets
        assert venue.server.counters.dead == 1
        writer.close()
        await eng.stop()
        await venue.stop()
    run(loop, main())


def test_client_declares_a_silent_server_dead(loop):
    async def main():
        accepted = bytearray(64)
        end = ouch.pack_login_accepted(accepted, 0, "MUTE", 1)
        conns = []

        async def mute_server(reader, writer):      # accepts the login, then says nothing
            conns.append(writer)
            await reader.read(100)
            writer.write(bytes(accepted[:end]))
        server = await asyncio.start_server(mute_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        events = Events()
        c = OuchClient("127.0.0.1", port, "ENG", "pw1", on_event=events.append,
                       heartbeat_interval_s=0.05, dead_after_s=0.25, reconnect=False)
        await c.start()
        await wait_until(lambda: events.of(Disconnected), what="dead server")
        assert events.of(LoggedIn) and c.counters.dead == 1 and not c.logged_in
        await c.stop()
        for w in conns:
            w.close()
        server.close()
        await server.wait_closed()
    run(loop, main())


# ----------------------------------------------------------------------------- garbage

def test_garbage_drops_that_connection_only(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc)
        eng, ev = await logged_in(venue)
        # garbage from a connection that never logged in
        reader, writer = await raw_connect(venue.port)
        writer.write(b"\xff\xfe\x00garbage-garbage")
        assert await asyncio.wait_for(reader.read(100), 2) == b""
        writer.close()
        # a logged-in connection that sends an OUCH message that does not decode
        reader, writer = await raw_connect(venue.port)
        writer.write(login_bytes("OTH", "pw2"))
        assert (await read_packets(reader, 1))[0][0] == "A"
        writer.write(b"\x00\x04UQ??")
        data = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), 2)
            if not chunk:
                break
            data += chunk
        writer.close()
        # and one that sends a packet type a client may not send
        reader, writer = await raw_connect(venue.port)
        writer.write(login_bytes("OTH", "pw2"))
        assert (await read_packets(reader, 1))[0][0] == "A"
        writer.write(b"\x00\x01H")
        while await asyncio.wait_for(reader.read(4096), 2):
            pass
        writer.close()
        assert venue.server.counters.garbage == 3
        # the good client never noticed
        eng.enter_order("B1", 0, 100, "AAPL", 10_000)
        await wait_until(lambda: ev.of(Accepted), what="accepted")
        assert eng.logged_in and not ev.of(Disconnected)
        await eng.stop()
        await venue.stop()
    run(loop, main())


def test_end_of_session(loop):
    async def main():
        xc = make_exchange()
        venue = await start_venue(xc)
        eng, ev = await logged_in(venue)
        venue.end_session()
        await wait_until(lambda: ev.of(EndOfSession), what="end of session")
        assert [e.code for e in ev.of(SystemEvent)] == ["S", "E"]
        await asyncio.sleep(0.1)
        assert eng.ended and not eng.logged_in and eng.counters.connects == 1   # no reconnect
        late, lev = await client(venue)
        await wait_until(lambda: lev.of(LoginRejected), what="late login rejected")
        assert lev.of(LoginRejected)[0].reason == "S"
        await late.stop()
        await eng.stop()
        await venue.stop()
    run(loop, main())


def test_ack_delay_keeps_order_and_sequence(loop):
    async def main():
        xc = make_exchange()
        xc.faults.set_ack_delay_ms(30)
        venue = await start_venue(xc)
        eng, ev = await logged_in(venue)
        for i in range(3):
            eng.enter_order(f"B{i}", 0, 10, "AAPL", 9_000 + i)
        await wait_until(lambda: len(ev.of(Accepted)) == 3, what="delayed acks")
        assert [a.token for a in ev.of(Accepted)] == ["B0", "B1", "B2"]
        assert ev.seqs() == list(range(1, len(ev.seqs()) + 1))
        await eng.stop()
        await venue.stop()
    run(loop, main())


# ----------------------------------------------------------------------------- no sockets

def test_config_and_scale():
    assert price4_scale(Instrument("X")) == 100
    assert price4_scale(None) == 1
    with pytest.raises(ValueError):
        OuchVenueConfig(users=())
    with pytest.raises(ValueError):
        OuchVenueConfig(users=(("A", "x"), ("A", "y")))
    assert "secret" not in repr(OuchVenueConfig())
