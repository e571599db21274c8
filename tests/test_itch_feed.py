"""ITCH 5.0 / MoldUDP64 feed over real loopback UDP: publisher (venue) -> handler (engine).

Every socket test runs on asyncio and on uvloop; an unhandled exception in either loop
fails the test. The venue side is the real exchange core (gateway.exchange) except in
the test of the event-array hook, which drives a bare MatchingBook.
"""
from __future__ import annotations

import asyncio
import logging
import random
import socket
import time

import pytest
from core_ext.matching import TIF_DAY, TIF_IOC, MatchingBook

from core_ext import itch
from gateway.exchange import Exchange
from gateway.instruments import Instrument
from gateway.itch_feed import (
    FeedFaults,
    ItchFeedHandler,
    ItchPublisher,
    encode_request,
    price4_per_tick,
    session_bytes,
    split_messages,
)

SYMBOLS = ("AAPL", "MSFT")


# ----------------------------------------------------------------------------- loops

@pytest.fixture(autouse=True)
def no_logged_errors(caplog):
    """The protocols catch and log unexpected exceptions (so a bug cannot stop the feed);
    in the tests any such log record is a failure."""
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

def make_exchange(seed: int = 5) -> Exchange:
    xc = Exchange([Instrument(s) for s in SYMBOLS], seed=seed)
    xc.warm_up(1500)
    return xc


async def feed_pair(xc, *, handler_kw=None, publisher_kw=None, results=None):
    """A publisher attached to `xc` and a handler subscribed to it, both started."""
    pub = ItchPublisher(**(publisher_kw or {}))
    pub.attach(xc)
    kw = dict(reorder_wait_s=0.01, retrans_timeout_s=0.1, dead_after_s=None)
    kw.update(handler_kw or {})
    h = ItchFeedHandler(on_result=results.append if results is not None else None, **kw)
    hport = await h.start()
    pub.add_target("127.0.0.1", hport)
    rport = await pub.start()
    h.request_addr = ("127.0.0.1", rport)
    return pub, h


async def traffic(xc, steps: int, seed: int = 1, account: str = "ACC") -> None:
    """Market-data replay plus orders from one account (some crossing, some resting,
    replaces and cancels), one loop iteration per step."""
    rng = random.Random(seed)
    live: list[str] = []
    for i in range(steps):
        xc.replay_tick(8)
        sym = SYMBOLS[i % 2]
        if i % 3 == 0 and not xc.is_halted(sym):
            book = xc.book(sym)
            side = rng.randint(0, 1)
            ref = (book.best_ask if side == 0 else book.best_bid) or 10_000
            px = ref + rng.randint(-4, 4) * (1 if side == 0 else -1)
            tok = f"o{seed}-{i}"
            if xc.new_order(account, tok, sym, side, rng.randint(1, 6) * 50, max(px, 1)) is not None:
                live.append(tok)
        elif i % 7 == 0 and live:
            tok = live.pop(rng.randrange(len(live)))
            order = xc.find_order(account, tok)
            if order is not None and order.leaves_qty > 0 and order.status in ("0", "1"):
                if rng.random() < 0.5:
                    xc.cancel_order(account, f"c{seed}-{i}", tok)
                else:
                    new = f"r{seed}-{i}"
                    if xc.replace_order(account, new, tok, qty=order.order_qty + 50,
                                        price=order.price + rng.randint(-2, 2)):
                        live.append(new)
        await asyncio.sleep(0)


def assert_books_equal(xc, h) -> None:
    for sym, inst in xc.instruments.items():
        scale = price4_per_tick(inst)
        book = h.book(sym)
        assert book is not None, f"handler has no book for {sym}"
        for side in (0, 1):
            venue = [(int(p) * scale, int(q)) for p, q, _ in xc.book(sym).depth(side, 1_000_000)]
            assert book.levels(side) == venue, f"{sym} side {side} differs"


async def settled(pub, h, timeout: float = 3.0) -> None:
    await wait_until(lambda: h.expected == pub.next_seq and not h.gap_active, timeout,
                     f"handler at {pub.next_seq} (is at {h.expected})")


# ----------------------------------------------------------------------------- tests

def test_books_equal_venue_and_trades_reach_callback(loop):
    async def main():
        xc = make_exchange()
        results: list = []
        pub, h = await feed_pair(xc, results=results)
        volume0 = xc.volume
        await traffic(xc, 300)
        await settled(pub, h)
        assert_books_equal(xc, h)
        # every execution since start reached the handler (E for visible orders, P otherwise)
        traded = sum(int(r.trades["shares"].sum()) for r in results if r.n_trades)
        assert traded == xc.volume - volume0 > 0
        assert any(r.top_changed for r in results)
        assert h.counters.gaps == 0 and h.counters.garbage == 0 and not h.stale
        assert not any(b.stale for b in h.books)
        assert h.counters.messages == pub.counters.messages
        lat = h.latency_percentiles()
        assert lat is not None and lat["n"] > 0
        assert h.quote_age_s("AAPL") is not None
        await pub.stop()
        await wait_until(lambda: h.ended, what="end of session")
        assert results[-1].is_end_of_session
        await h.stop()
    run(loop, main())


def test_matching_events_hook_with_a_bare_book(loop):
    """The coarse hook: drain_events() arrays of a MatchingBook -> ITCH (A E X D U)."""
    async def main():
        book = MatchingBook("XYZ")
        pub = ItchPublisher([Instrument("XYZ")])
        h = ItchFeedHandler(reorder_wait_s=0.01, dead_after_s=None)
        pub.add_target("127.0.0.1", await h.start())
        h.request_addr = ("127.0.0.1", await pub.start())
        rng = random.Random(3)
        live: list[int] = []
        oid = 1
        kinds = set()
        for _ in range(1500):
            r = rng.random()
            if r < 0.5 or not live:
                book.submit(oid, rng.randint(1, 4), rng.randint(0, 1), rng.randint(1, 9) * 10,
                            10_000 + rng.randint(-15, 15), tif=TIF_DAY)
                live.append(oid)
                oid += 1
            elif r < 0.65:
                book.cancel(live.pop(rng.randrange(len(live))))
            elif r < 0.85:
                i = rng.randrange(len(live))
                new = oid if rng.random() < 0.5 else 0
                oid += 1
                info = book.order(live[i])
                if info is not None and info.qty > 10 and rng.random() < 0.3:
                    qty, px = info.qty - 10, info.price      # reduce in place: keeps priority
                else:
                    qty, px = rng.randint(1, 9) * 10, 10_000 + rng.randint(-15, 15)
                if book.replace(live[i], new, qty, px) == 0 and new:
                    live[i] = new
            else:
                book.submit(oid, 99, rng.randint(0, 1), rng.randint(1, 30) * 10, None,
                            ord_type=1, tif=TIF_IOC)
                oid += 1
            execs, events = book.drain_events()
            pub.on_matching_events("XYZ", execs, events)
            await asyncio.sleep(0)
        await settled(pub, h)
        for side in (0, 1):
            venue = [(int(p) * 100, int(q)) for p, q, _ in book.depth(side, 100_000)]
            assert h.book("XYZ").levels(side) == venue
        for pkt in pub._ring_pkt:
            kinds.update(chr(m[0]) for m in split_messages(pkt)[1])
        assert {"A", "E", "X", "D", "U"} <= kinds
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_gap_marks_stale_then_retransmission_recovers(loop):
    async def main():
        xc = make_exchange()
        pub, h = await feed_pair(xc, handler_kw=dict(retrans_timeout_s=0.05, retrans_retries=20))
        await traffic(xc, 40, seed=2)
        await settled(pub, h)
        assert not h.stale
        # lose three packets and every retransmission for now: the gap stays open
        pub.faults.drop_next = 3
        pub.faults.drop_retransmissions = True
        await traffic(xc, 40, seed=3)
        await wait_until(lambda: h.gap_active, what="gap detected")
        await asyncio.sleep(0.06)
        assert h.stale and all(b.stale for b in h.books)
        assert h.counters.retrans_requests >= 1 and h.counters.gaps == 1
        frozen = h.expected
        assert h.expected < pub.next_seq
        # the service answers again: recovered, books equal, not stale
        pub.faults.drop_retransmissions = False
        await settled(pub, h)
        assert h.expected > frozen
        assert not h.stale and not any(b.stale for b in h.books)
        assert h.counters.recovered == 1 and h.counters.unrecovered == 0
        assert h.counters.retrans_messages > 0 and pub.counters.retrans_messages > 0
        assert pub.faults.dropped == 3
        assert_books_equal(xc, h)
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_random_drops_recovered_in_order(loop):
    async def main():
        xc = make_exchange(seed=9)
        pub, h = await feed_pair(xc)
        pub.faults.reseed(11)
        pub.faults.drop_rate = 0.15
        await traffic(xc, 300, seed=4)
        pub.faults.drop_rate = 0.0
        xc.replay_tick(1)        # a packet after the last possible drop shows any tail gap
        await settled(pub, h)
        assert pub.faults.dropped > 0
        assert h.counters.gaps >= 1 and h.counters.recovered == h.counters.gaps
        assert h.counters.unrecovered == 0 and not h.stale
        assert_books_equal(xc, h)
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_unrecoverable_gap_stays_stale_until_resync(loop):
    async def main():
        xc = make_exchange()
        pub, h = await feed_pair(xc, handler_kw=dict(retrans_timeout_s=0.03, retrans_retries=1))
        await traffic(xc, 30, seed=5)
        await settled(pub, h)
        pub.faults.drop_retransmissions = True
        pub.faults.drop_next = 2
        await traffic(xc, 30, seed=6)
        await wait_until(lambda: h.counters.unrecovered == 1, what="give up")
        await settled(pub, h)
        assert h.needs_resync and h.stale and all(b.stale for b in h.books)
        assert h.counters.skipped_messages > 0
        await traffic(xc, 10, seed=7)     # still applied, still stale
        await settled(pub, h)
        assert h.stale
        # re-sync: replay from sequence 1 through the retransmission service
        pub.faults.drop_retransmissions = False
        h.resync()
        await settled(pub, h)
        assert not h.needs_resync and not h.stale and not any(b.stale for b in h.books)
        assert h.counters.resyncs == 1
        assert_books_equal(xc, h)
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_reordered_packets_heal_without_retransmission(loop):
    async def main():
        xc = make_exchange()
        pub, h = await feed_pair(xc, handler_kw=dict(reorder_wait_s=0.5))
        pub.faults.reorder_rate = 1.0     # every other packet overtakes its predecessor
        await traffic(xc, 120, seed=8)
        pub.faults.reorder_rate = 0.0
        xc.replay_tick(1)
        await settled(pub, h)
        assert pub.faults.reordered > 0
        assert h.counters.gaps >= 1
        assert h.counters.reorder_recovered == h.counters.gaps
        assert h.counters.retrans_requests == 0
        assert not h.stale
        assert_books_equal(xc, h)
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_heartbeats_reveal_a_lost_last_packet(loop):
    async def main():
        xc = Exchange([Instrument("AAPL")], sources={})
        pub, h = await feed_pair(xc, publisher_kw=dict(heartbeat_interval_s=0.05))
        xc.new_order("ACC", "a1", "AAPL", 0, 100, 10_000)
        await settled(pub, h)
        pub.faults.drop_next = 1          # the only packet of the next order is lost
        xc.new_order("ACC", "a2", "AAPL", 0, 100, 10_001)
        # no more data: only the heartbeat carrying the next sequence number shows the loss
        await wait_until(lambda: h.counters.heartbeats >= 2, what="heartbeats")
        await settled(pub, h)
        assert h.counters.gaps == 1 and h.counters.recovered == 1
        assert h.book("AAPL").best_bid == 10_001 * 100
        assert pub.counters.heartbeats >= 2
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_stop_publishing_staleness_grows_then_recovers(loop):
    async def main():
        xc = make_exchange()
        pub, h = await feed_pair(xc, handler_kw=dict(dead_after_s=0.15),
                                 publisher_kw=dict(heartbeat_interval_s=0.05))
        await traffic(xc, 30, seed=9)
        await settled(pub, h)
        age0 = h.quote_age_s("AAPL")
        assert age0 is not None and not h.stale
        pub.faults.stopped = True
        await traffic(xc, 20, seed=10)    # sequenced but not sent
        await asyncio.sleep(0.3)
        assert h.feed_age_s() >= 0.25     # not even heartbeats
        assert h.quote_age_s("AAPL") >= age0 + 0.25
        assert h.silent and h.stale and all(b.stale for b in h.books)
        assert h.counters.dead == 1 and pub.faults.suppressed > 0
        pub.faults.stopped = False        # the next heartbeat shows the gap; recovered
        await settled(pub, h)
        assert not h.silent and not h.stale
        assert_books_equal(xc, h)
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_halt_reaches_handler(loop):
    async def main():
        xc = make_exchange()
        results: list = []
        pub, h = await feed_pair(xc, results=results)
        await settled(pub, h)
        assert not h.is_halted("MSFT")
        xc.set_halt("MSFT", True)
        await settled(pub, h)
        idx = h.applier.index_of("MSFT")
        assert h.is_halted("MSFT") and not h.is_halted("AAPL")
        assert any(idx in r.halts_changed for r in results)
        n = len(results)
        xc.set_halt("MSFT", False)
        await settled(pub, h)
        assert not h.is_halted("MSFT")
        assert any(idx in r.halts_changed for r in results[n:])
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_garbage_datagrams_counted_and_ignored(loop):
    async def main():
        xc = make_exchange()
        pub, h = await feed_pair(xc)
        await traffic(xc, 20, seed=11)
        await settled(pub, h)
        expected = h.expected
        sess = session_bytes(pub.session)
        rng = random.Random(1)
        bad = [
            b"",
            b"short",
            bytes(rng.getrandbits(8) for _ in range(64)),                 # other session
            sess + expected.to_bytes(8, "big") + (1).to_bytes(2, "big") + b"\x00\x05hello",
            sess + expected.to_bytes(8, "big") + (1).to_bytes(2, "big"),  # count 1, no block
            sess + expected.to_bytes(8, "big") + (0).to_bytes(2, "big") + b"tail",
            sess + (expected + 5).to_bytes(8, "big") + (2).to_bytes(2, "big") + b"\x00\x01Z",
        ]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for d in bad:
                sock.sendto(d, ("127.0.0.1", h.port))
        finally:
            sock.close()
        await wait_until(lambda: h.counters.garbage >= len(bad) - 1, what="garbage counted")
        await asyncio.sleep(0.02)
        # the empty datagram may or may not be delivered by the kernel / loop
        assert h.counters.garbage in (len(bad) - 1, len(bad))
        assert h.counters.wrong_session == 1
        assert h.expected == expected and not h.gap_active and not h.stale
        await traffic(xc, 20, seed=12)
        await settled(pub, h)
        assert_books_equal(xc, h)
        assert not h.stale
        # a heartbeat of our session going back in sequence: a restarted publisher
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.sendto(sess + (1).to_bytes(8, "big") + b"\x00\x00", ("127.0.0.1", h.port))
        finally:
            sock.close()
        await wait_until(lambda: h.counters.backwards == 1, what="backwards detected")
        assert h.needs_resync and h.stale and all(b.stale for b in h.books)
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_retransmission_service_answers_from_its_ring(loop):
    async def main():
        xc = make_exchange()
        pub, h = await feed_pair(xc, publisher_kw=dict(ring_packets=4))
        await traffic(xc, 60, seed=13)
        await settled(pub, h)
        got: list[bytes] = []

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.append(data)
        transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
        try:
            last = pub._ring_seq[-1]
            transport.sendto(encode_request(pub.session, last, 3), ("127.0.0.1", pub.request_port))
            await wait_until(lambda: got, what="retransmission")
            seq, msgs = split_messages(got[0])
            assert seq == last and 1 <= len(msgs) <= 3
            orig_seq, orig = split_messages(pub._ring_pkt[-1])
            assert msgs == orig[:len(msgs)] and orig_seq == seq
            # too old for the ring, wrong session, malformed: no answer
            served = pub.counters.requests_unserved
            transport.sendto(encode_request(pub.session, 1, 5), ("127.0.0.1", pub.request_port))
            transport.sendto(encode_request("OTHER", last, 1), ("127.0.0.1", pub.request_port))
            transport.sendto(b"junk", ("127.0.0.1", pub.request_port))
            await wait_until(lambda: pub.counters.bad_requests == 2, what="bad requests")
            await wait_until(lambda: pub.counters.requests_unserved == served + 1, what="unserved")
            assert len(got) == 1
        finally:
            transport.close()
        await pub.stop()
        await h.stop()
    run(loop, main())


def test_subscription_and_late_join(loop):
    """The handler subscribes through the request port after the session started: it
    learns the next sequence number from the heartbeat and replays the day so far."""
    async def main():
        xc = make_exchange()
        pub = ItchPublisher()
        pub.attach(xc)
        rport = await pub.start()
        await traffic(xc, 40, seed=14)           # nobody listens yet
        missed = pub.next_seq - 1
        h = ItchFeedHandler(request_addr=("127.0.0.1", rport), subscribe=True,
                            reorder_wait_s=0.01, dead_after_s=None)
        await h.start()
        await settled(pub, h)
        assert pub.counters.subscribes == 1 and len(pub.targets) == 1
        assert h.counters.gaps == 1 and h.counters.recovered == 1
        assert h.counters.retrans_messages >= missed > 0
        await traffic(xc, 40, seed=15)
        await settled(pub, h)
        assert_books_equal(xc, h)
        assert not h.stale
        await pub.stop()
        await h.stop()
    run(loop, main())


# ------------------------------------------------------------------ no sockets

def test_publisher_refs_and_prices():
    assert price4_per_tick(Instrument("X")) == 100
    assert price4_per_tick(Instrument("X", tick_size="0.0001")) == 1
    with pytest.raises(ValueError):
        price4_per_tick(Instrument("X", tick_size="0.00001"))
    with pytest.raises(ValueError):
        session_bytes("ELEVENCHARS")
    assert encode_request("S", 7, 3) == b"S" + b" " * 9 + (7).to_bytes(8, "big") + b"\x00\x03"


def test_faults_are_seeded():
    a, b = FeedFaults(seed=4), FeedFaults(seed=4)
    a.drop_rate = b.drop_rate = 0.3
    assert [a._drop() for _ in range(200)] == [b._drop() for _ in range(200)]
    assert a.dropped == b.dropped > 0
    a.clear()
    assert not a._drop() and a.drop_rate == 0.0


def test_split_messages_roundtrip():
    msgs = [itch.encode_order_delete(1, 0, 5, 9), itch.encode_order_cancel(1, 0, 6, 9, 10)]
    pkt = itch.encode_packet("S1", 42, msgs)
    assert split_messages(pkt) == (42, msgs)
