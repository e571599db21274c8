"""ITCH 5.0 over MoldUDP64 on UDP: the venue's publisher and the engine's feed handler.

Publisher (venue side), `ItchPublisher`
---------------------------------------
Sends MoldUDP64 packets from one UDP socket to a list of targets (unicast; 127.0.0.1
by default). At `start()`: System Event 'O' (start of messages) and 'S' (start of
system hours), one Stock Directory 'R' and one Trading Action 'H' (state 'T') per
symbol, System Event 'Q' (start of market hours). Then order-by-order messages derived
from the venue's matching books (the hooks below), a Trading Action 'H' per halt
change, a MoldUDP64 heartbeat (message count 0, carrying the next sequence number)
after `heartbeat_interval_s` without sending, and at `stop()` System Events 'M', 'E',
'C' and the MoldUDP64 End of Session packet (count 0xFFFF).

Messages added during one event-loop callback are coalesced into packets and sent by
one `flush()` scheduled with `call_soon` (or call `flush()` yourself).

Hooks the exchange core calls (prices in the venue's int64 ticks, quantities in lots,
sides SIDE_BUY / SIDE_SELL, `order_id` the venue's order id, unique per symbol):

* `on_matching_events(symbol, execs, order_events)`: the coarse hook. Pass the two
  arrays of `MatchingBook.drain_events()` (EXEC_DTYPE, ORDER_EVENT_DTYPE) after every
  operation on that symbol's book; they are merged by `seq` and turned into ITCH:
  RESTED -> 'A'; execution of a resting order -> 'E'; CANCELED of a resting order ->
  'X' (part) or 'D' (all); REPLACED -> 'U' (or 'X' for an in-place decrease, or 'D'
  then the executions then 'A' when the replaced order traded on its way in).
  Events about orders that never rested (IOC remainders, rejects) publish nothing.
* the fine-grained equivalents: `order_added`, `order_executed`, `order_canceled`,
  `order_deleted`, `order_replaced`, `trade` ('P', a non-displayed execution).
* `on_halt(symbol, halted)` / `trading_action(symbol, halted, reason)`: 'H' with
  state 'H' (halted) or 'T' (trading).
* `add_symbol(symbol)`: a new instrument ('R' + 'H' 'T'); returns its stock locate.

With gateway.exchange.Exchange none of these need calling by hand:
`publisher.attach(exchange)` (before `start()`) registers the instruments and halts
and subscribes the publisher through the exchange's existing MarketListener interface
(`on_book_update`, `on_trade`, `on_halt`); each book update is published as the
difference between the book's resting orders and what was published before (see
`attach`). Use either `attach` or `on_matching_events` for a book, never both.

ITCH order reference numbers are the venue's order ids while those are free; an id
already live for another symbol, and the new order of a replace that keeps its id,
get a fresh reference from 2**62 upwards. Prices on the wire are price4 (4 implied
decimals): `price4 = ticks * price4_per_tick(symbol)`, 100 for a $0.01 tick.

Retransmission service: a UDP request socket (`request_port`) answers a MoldUDP64
request packet (session alpha 10, sequence u64, count u16) with data packets holding
the requested messages, from a ring of the last `ring_packets` packets sent (dropped
packets included: the ring holds what was sequenced, not what arrived). At most
`max_retrans_count` messages per request; the requester asks again for the rest. A
request for messages older than the ring, or from another session, gets no answer.

Subscription (an extension, so ports can be chosen at run time): a request packet with
message count 0 (session blank or ours) adds its sender to the targets (at most
`max_targets`) and gets a heartbeat at once; the handler's `subscribe=True` sends it at
start and every second until data arrives. A plain MoldUDP64 server ignores it.

Fault injection: `publisher.faults` (a `FeedFaults`) switches at run time: random
drops (seeded), drop the next n packets, reorder (hold a packet, send it after the
next), stop publishing (nothing leaves, sequencing continues), drop retransmissions.

Handler (engine side), `ItchFeedHandler`
----------------------------------------
Receives packets on a UDP socket and applies them with one compiled call per packet
(`ItchBookApplier.apply_packet`) to L2Books. In-order packets are applied at once and
passed to the user's `on_result(ItchApplyResult)` (instruments whose top changed,
trades, halts). Recovery policy:

1. A packet whose sequence number is past the next expected one, or a heartbeat / end
   of session announcing a later number, opens a gap: later packets are buffered
   (up to `max_buffered`) and EVERY book is marked stale (`L2Book.stale = True`; the
   missing messages may touch any instrument).
2. After `reorder_wait_s` (a reordered packet usually arrives by then) the handler
   requests the hole [expected, first buffered) from the publisher's request port, at
   most `max_request` messages at a time, and re-requests after `retrans_timeout_s`
   without progress, `retrans_retries` times.
3. When every hole is filled and the buffer applied, the gap is recovered: books are
   no longer stale (unless 4 or 5 holds) and `counters.recovered` counts it.
4. When the retries run out (or the buffer overflows) the hole is skipped:
   `counters.unrecovered` counts it, the missing messages count in
   `counters.skipped_messages`, the buffered packets are applied (non-strict: orders
   the handler never saw count as anomalies) and `needs_resync` latches, keeping
   every book stale until `resync()` (a replay from sequence 1 through the
   retransmission service, possible while the publisher's ring still holds the
   session) succeeds. A packet with order-table anomalies latches it too.
5. No packet at all (not even a heartbeat) for `dead_after_s`: the feed is dead and
   the books are stale until packets arrive again.
6. A heartbeat whose number is below the next expected one (the publisher restarted
   under the same session name) latches `needs_resync` too (`counters.backwards`).

The session name is learnt from the first well-formed packet unless `session` is
given (give it in production: a stray packet cannot then choose it). A well-formed
packet of our session with a far-future sequence number cannot be told from real
data: it opens a gap that times out (rule 4); the feed is trusted loopback / LAN.

Clocks. The publisher stamps each message with nanoseconds since midnight UTC from
`time.time_ns()` (CLOCK_REALTIME). Feed latency = receipt time (`time.time_ns()` when
the datagram callback runs, same reduction mod 24 h) minus the timestamp of the first
message of the packet. This is meaningful when both ends read the same clock (one host,
the loopback case) or clocks synchronised by PTP; with NTP across hosts expect errors
of the order of the sync accuracy (negative values are kept, not clamped, and counted
in `counters.negative_latency`). Retransmitted packets are not latency samples. Ages
(quote staleness, feed silence) use `time.monotonic_ns()`.

The hot path only bumps counters and stores samples; `snapshot()`, the latency
percentiles and the staleness queries are for a monitoring timer.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from core_ext import itch, matching
from core_ext.book import L2Book
from gateway.instruments import Instrument

log = logging.getLogger("gateway.itch")

NS_PER_DAY = 86_400_000_000_000
MOLD_HEADER = 20
MOLD_HEARTBEAT = 0
MOLD_END_OF_SESSION = 0xFFFF
MOLD_MAX_COUNT = 0xFFFE
DEFAULT_SESSION = "VENUE1"
FRESH_REF_BASE = 1 << 62          # first ITCH reference handed out when an order id is taken
TICK_S = 0.05                     # housekeeping timer period (heartbeats, held packets, silence)
SIDE_BUY, SIDE_SELL = matching.SIDE_BUY, matching.SIDE_SELL
ORDEV_RESTED, ORDEV_CANCELED, ORDEV_REPLACED = (matching.ORDEV_RESTED, matching.ORDEV_CANCELED,
                                                matching.ORDEV_REPLACED)
REPLACE_PRIORITY_KEPT, REPLACE_PRIORITY_LOST = (matching.REPLACE_PRIORITY_KEPT,
                                                matching.REPLACE_PRIORITY_LOST)


_REQUEST = struct.Struct(">10sQH")
_BLANK_SESSION = b" " * 10
_EMPTY_SNAP = (np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64),
               np.zeros(0, np.uint64), np.zeros(0, np.uint8))   # ids, qty, price, priority, side
_LEN = {ord(k): v for k, v in itch.LENGTHS.items()}


def ns_since_midnight(now_ns: int | None = None) -> int:
    """Nanoseconds since midnight UTC (the ITCH timestamp) of `now_ns` (default: now)."""
    return (time.time_ns() if now_ns is None else now_ns) % NS_PER_DAY


def session_bytes(session: str) -> bytes:
    """A MoldUDP64 session name as its 10 wire bytes (left-justified, space padded)."""
    raw = session.encode("ascii")
    if len(raw) > 10 or not raw.isascii() or not all(0x20 <= b <= 0x7E for b in raw):
        raise ValueError(f"MoldUDP64 session {session!r}: 1..10 printable ASCII characters")
    return raw.ljust(10, b" ")


def encode_request(session: str | bytes, seq: int, count: int) -> bytes:
    """A MoldUDP64 retransmission request packet."""
    s = session if isinstance(session, bytes) else session_bytes(session)
    return _REQUEST.pack(s, seq, count)


def price4_per_tick(instrument: Instrument | str) -> int:
    """price4 units (1/10000 $) per tick of an instrument: 100 for a $0.01 tick."""
    if isinstance(instrument, str):
        instrument = Instrument(instrument)
    if instrument.decimals > 4:
        raise ValueError(f"{instrument.symbol}: tick size {instrument.tick_size} is finer than "
                         "the ITCH / OUCH price4 grid ($0.0001)")
    return instrument.mult * 10 ** (4 - instrument.decimals)


def split_messages(packet: bytes) -> tuple[int, list[bytes]]:
    """(first sequence number, bare messages) of a checked MoldUDP64 data packet."""
    seq = int.from_bytes(packet[10:18], "big")
    count = int.from_bytes(packet[18:20], "big")
    out = []
    off = MOLD_HEADER
    if count in (MOLD_HEARTBEAT, MOLD_END_OF_SESSION):
        return seq, out
    for _ in range(count):
        n = int.from_bytes(packet[off:off + 2], "big")
        out.append(packet[off + 2:off + 2 + n])
        off += 2 + n
    return seq, out


def _printable(raw: bytes) -> bool:
    return all(0x20 <= b <= 0x7E for b in raw)


def _plausible(packet: bytes, count: int) -> bool:
    """Cheap structural check of a data packet (block lengths = the fixed ITCH lengths,
    nothing left over); the full check happens when the packet is applied."""
    off = MOLD_HEADER
    n = len(packet)
    for _ in range(count):
        if off + 3 > n:
            return False
        mlen = (packet[off] << 8) | packet[off + 1]
        if mlen == 0 or _LEN.get(packet[off + 2]) != mlen:
            return False
        off += 2 + mlen
    return off == n


def _set_buffer(transport: asyncio.BaseTransport, option: int, size: int) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    except OSError:  # pragma: no cover - capped by the kernel, not fatal
        pass


# ---------------------------------------------------------------------------
# Publisher
# ---------------------------------------------------------------------------

class FeedFaults:
    """Fault injection for an ItchPublisher, switchable at run time.

    Applies to the feed packets (data and heartbeats); retransmission answers are only
    affected by `drop_retransmissions`. Counters tell what was done."""

    def __init__(self, seed: int = 0):
        self.drop_rate = 0.0            # probability of dropping each feed packet (seeded)
        self.drop_next = 0              # drop the next n feed packets, whatever the rate
        self.reorder_rate = 0.0         # probability of holding a packet until the next one
        self.stopped = False            # send nothing at all (sequencing and the ring go on)
        self.drop_retransmissions = False  # answer no retransmission request
        self.dropped = 0
        self.reordered = 0
        self.suppressed = 0             # packets not sent while stopped
        self.retrans_dropped = 0
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def clear(self) -> None:
        """Back to a clean feed (counters kept)."""
        self.drop_rate = 0.0
        self.drop_next = 0
        self.reorder_rate = 0.0
        self.stopped = False
        self.drop_retransmissions = False

    def _drop(self) -> bool:
        if self.drop_next > 0:
            self.drop_next -= 1
            self.dropped += 1
            return True
        if self.drop_rate > 0.0 and self._rng.random() < self.drop_rate:
            self.dropped += 1
            return True
        return False

    def _hold(self) -> bool:
        if self.reorder_rate > 0.0 and self._rng.random() < self.reorder_rate:
            self.reordered += 1
            return True
        return False


class PublisherCounters:
    __slots__ = ("packets", "messages", "heartbeats", "bytes", "requests", "retrans_packets",
                 "retrans_messages", "requests_unserved", "bad_requests", "unknown_orders",
                 "duplicate_orders", "encode_errors", "subscribes")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _SendProtocol(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        log.debug("ITCH feed socket: %s", exc)


class _RequestProtocol(asyncio.DatagramProtocol):
    def __init__(self, publisher: ItchPublisher):
        self.publisher = publisher

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.publisher._on_request(data, addr)
        except Exception:
            log.exception("ITCH retransmission: request from %s failed", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("ITCH request socket: %s", exc)


class ItchPublisher:
    """The venue's ITCH 5.0 / MoldUDP64 publisher (see the module docstring)."""

    def __init__(self, instruments: Iterable[Instrument | str] = (), *,
                 targets: Iterable[tuple[str, int]] = (), host: str = "127.0.0.1",
                 request_port: int = 0, session: str = DEFAULT_SESSION,
                 heartbeat_interval_s: float = 1.0, max_packet: int = 1400,
                 ring_packets: int = 65536, max_retrans_count: int = 2048,
                 faults: FeedFaults | None = None, auto_flush: bool = True,
                 allow_subscribe: bool = True, max_targets: int = 16):
        if heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s must be > 0")
        if ring_packets < 1:
            raise ValueError("ring_packets must be >= 1")
        if not 1 <= max_retrans_count <= MOLD_MAX_COUNT:
            raise ValueError(f"max_retrans_count must be in 1..{MOLD_MAX_COUNT}")
        self.session = session
        self._session_b = session_bytes(session)
        self.host = host
        self.request_port = request_port
        self.targets: list[tuple[str, int]] = list(targets)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_packet = max_packet
        self.ring_packets = ring_packets
        self.max_retrans_count = max_retrans_count
        self.faults = faults if faults is not None else FeedFaults()
        self.auto_flush = auto_flush
        self.allow_subscribe = allow_subscribe
        self.max_targets = max_targets
        self.counters = PublisherCounters()
        self.builder = itch.MoldPacketBuilder(session, 1, max_packet)
        self._locate: dict[str, int] = {}          # symbol -> stock locate (1..)
        self._p4: dict[str, int] = {}              # symbol -> price4 per tick
        self._halted: dict[str, bool] = {}
        self._live: dict[tuple[int, int], list] = {}   # (locate, order_id) -> [ref, side, price4, shares]
        self._refs: set[int] = set()               # live ITCH references
        self._next_fresh_ref = FRESH_REF_BASE
        self._next_match = 1
        self._ring_seq: list[int] = []             # first sequence number of each stored packet
        self._ring_pkt: list[bytes] = []
        self._held: bytes | None = None            # reorder fault: packet waiting for the next
        self.exchange: Any = None                  # the attached exchange core, if any
        self._snap: dict[str, tuple] = {}          # symbol -> published resting orders (by id)
        self._pending_trades: dict[str, dict] = {}  # symbol -> {(maker side, price): lots}
        self._feed: asyncio.DatagramTransport | None = None
        self._req: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_send = 0.0
        self.started = False
        self.stopped = False
        for inst in instruments:
            self.add_symbol(inst)

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> int:
        """Open the sockets, publish the start-of-day messages; returns the request port."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._feed, _ = await loop.create_datagram_endpoint(_SendProtocol, local_addr=(self.host, 0))
        _set_buffer(self._feed, socket.SO_SNDBUF, 4 << 20)
        self._req, _ = await loop.create_datagram_endpoint(
            lambda: _RequestProtocol(self), local_addr=(self.host, self.request_port))
        self.request_port = self._req.get_extra_info("sockname")[1]
        # Anything queued before start() goes after the start-of-day messages.
        early = [m for pkt in self.builder.flush() for m in split_messages(pkt)[1]]
        self.builder = itch.MoldPacketBuilder(self.session, 1, self.max_packet)
        ts = ns_since_midnight()
        b = self.builder
        b.system_event(0, 0, ts, "O")
        b.system_event(0, 0, ts, "S")
        for symbol, locate in self._locate.items():
            b.stock_directory(locate, 0, ts, symbol)
            b.trading_action(locate, 0, ts, symbol, "H" if self._halted[symbol] else "T")
        for m in early:
            b.add_raw(m)
        b.system_event(0, 0, ts, "Q")
        self.started = True
        if self.exchange is not None:
            for symbol in list(self._locate):
                self.on_book_update(symbol)
        self.flush()
        self._last_send = loop.time()
        self._timer = loop.call_later(TICK_S, self._tick)
        log.info("ITCH publisher %s: %d symbols, targets %s, retransmission on %s:%d",
                 self.session, len(self._locate), self.targets, self.host, self.request_port)
        return self.request_port

    async def stop(self) -> None:
        """End of day: System Events M, E, C, the End of Session packet; close the sockets."""
        if self.stopped:
            return
        self.stopped = True
        self.detach()
        if self.started and self._feed is not None:
            ts = ns_since_midnight()
            for code in "MEC":
                self.builder.system_event(0, 0, ts, code)
            self.flush()
            self._release_held()
            self._send(self.builder.end_of_session(), heartbeat=True)
        if self._timer is not None:
            self._timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for t in (self._feed, self._req):
            if t is not None:
                t.close()
        await asyncio.sleep(0)

    def add_target(self, host: str, port: int) -> None:
        if (host, port) not in self.targets:
            self.targets.append((host, port))

    def remove_target(self, host: str, port: int) -> None:
        if (host, port) in self.targets:
            self.targets.remove((host, port))

    @property
    def next_seq(self) -> int:
        """Sequence number the next message will get."""
        return self.builder.next_seq

    @property
    def symbols(self) -> list[str]:
        return list(self._locate)

    def locate(self, symbol: str) -> int:
        return self._locate[symbol]

    # -- sending ----------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self.auto_flush and self.started and self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self.flush)

    def flush(self) -> int:
        """Close the packet being built and send every finished packet; returns how many."""
        self._flush_handle = None
        if not self.started or self._feed is None:
            return 0               # start() sends what was queued
        packets = self.builder.flush()
        if not packets:
            return 0
        c = self.counters
        faults = self.faults
        for p in packets:
            self._store(p)
            c.packets += 1
            c.messages += (p[18] << 8) | p[19]
            c.bytes += len(p)
            if faults.stopped:
                faults.suppressed += 1
                continue
            if faults._drop():
                continue
            if self._held is None and faults._hold():
                self._held = p
                continue
            self._sendto_all(p)
            self._release_held()
        self._last_send = self._loop.time() if self._loop is not None else 0.0
        return len(packets)

    def _store(self, packet: bytes) -> None:
        self._ring_seq.append(int.from_bytes(packet[10:18], "big"))
        self._ring_pkt.append(packet)
        if len(self._ring_pkt) >= 2 * self.ring_packets:
            del self._ring_seq[:self.ring_packets]
            del self._ring_pkt[:self.ring_packets]

    def _sendto_all(self, packet: bytes) -> None:
        feed = self._feed
        if feed is None or feed.is_closing():
            return
        for target in self.targets:
            feed.sendto(packet, target)

    def _release_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._sendto_all(held)

    def _send(self, packet: bytes, heartbeat: bool = False) -> None:
        faults = self.faults
        if faults.stopped:
            faults.suppressed += 1
            return
        if faults._drop():
            return
        self._sendto_all(packet)
        if heartbeat:
            self.counters.heartbeats += 1

    def _tick(self) -> None:
        loop = self._loop
        if loop is None or self.stopped:
            return
        try:
            now = loop.time()
            if self._held is not None:
                self._release_held()
            if self.builder.pending:
                self.flush()
            if now - self._last_send >= self.heartbeat_interval_s:
                self._send(self.builder.heartbeat(), heartbeat=True)
                self._last_send = now
        except Exception:
            log.exception("ITCH publisher timer failed")
        self._timer = loop.call_later(TICK_S, self._tick)

    # -- retransmission ---------------------------------------------------------

    def _on_request(self, data: bytes, addr: Any) -> None:
        c = self.counters
        if len(data) != MOLD_HEADER:
            c.bad_requests += 1
            return
        session, seq, count = _REQUEST.unpack(data)
        if count == 0 and session in (self._session_b, _BLANK_SESSION):
            self._subscribe(addr)
            return
        if session != self._session_b:
            c.bad_requests += 1
            return
        c.requests += 1
        if seq < 1:
            return
        packets = self.retransmission(seq, count)
        if not packets:
            c.requests_unserved += 1
            return
        if self.faults.drop_retransmissions:
            self.faults.retrans_dropped += len(packets)
            return
        req = self._req
        if req is None or req.is_closing():
            return
        for p in packets:
            req.sendto(p, addr)
            c.retrans_packets += 1
            c.retrans_messages += (p[18] << 8) | p[19]

    def _subscribe(self, addr: Any) -> None:
        """Extension: a request with message count 0 subscribes its sender to the feed
        (a plain MoldUDP64 server would ignore it). A heartbeat follows at once so the
        subscriber learns the next sequence number (and recovers what it missed)."""
        if not self.allow_subscribe:
            self.counters.bad_requests += 1
            return
        target = (addr[0], addr[1])
        if target not in self.targets:
            if len(self.targets) >= self.max_targets:
                log.warning("ITCH publisher: subscription from %s refused (%d targets)", target,
                            len(self.targets))
                self.counters.bad_requests += 1
                return
            self.targets.append(target)
            self.counters.subscribes += 1
            log.info("ITCH publisher: %s subscribed", target)
        feed = self._feed
        if feed is not None and not feed.is_closing() and self.started and not self.faults.stopped:
            feed.sendto(self.builder.heartbeat(), target)

    def retransmission(self, seq: int, count: int) -> list[bytes]:
        """Data packets holding messages seq .. seq+count-1 (at most max_retrans_count,
        stopping at the newest sent); [] when seq is not in the ring."""
        ring_seq = self._ring_seq
        if not ring_seq or seq < ring_seq[0] or seq >= self.builder.next_seq - self.builder.pending:
            return []
        count = min(count, self.max_retrans_count)
        i = bisect.bisect_right(ring_seq, seq) - 1
        out = itch.MoldPacketBuilder(self.session, seq, self.max_packet)
        want_end = seq + count
        while i < len(ring_seq) and out.next_seq < want_end:
            first, msgs = split_messages(self._ring_pkt[i])
            for k, m in enumerate(msgs):
                s = first + k
                if s < seq:
                    continue
                if s >= want_end:
                    break
                out.add_raw(m)
            i += 1
        return out.flush()

    # -- instruments and halts ----------------------------------------------------

    def add_symbol(self, instrument: Instrument | str, price4_ticks: int | None = None) -> int:
        """Register a symbol (Stock Directory + Trading Action 'T'); returns its locate."""
        symbol = instrument if isinstance(instrument, str) else instrument.symbol
        if symbol in self._locate:
            return self._locate[symbol]
        if len(symbol) > 8:
            raise ValueError(f"symbol {symbol!r}: ITCH stock symbols have at most 8 characters")
        locate = len(self._locate) + 1
        if locate > 0xFFFF:
            raise ValueError("more than 65535 symbols")
        self._locate[symbol] = locate
        self._p4[symbol] = price4_ticks if price4_ticks is not None else price4_per_tick(instrument)
        self._halted[symbol] = False
        if self.started:
            ts = ns_since_midnight()
            self.builder.stock_directory(locate, 0, ts, symbol)
            self.builder.trading_action(locate, 0, ts, symbol, "T")
            self._schedule_flush()
        return locate

    def trading_action(self, symbol: str, halted: bool, reason: str = "") -> None:
        """Publish a Trading Action: state 'H' (halted) or 'T' (trading)."""
        locate = self._locate[symbol]
        self._halted[symbol] = bool(halted)
        if not self.started:
            return                 # start() publishes the state with the directory
        self.builder.trading_action(locate, 0, ns_since_midnight(), symbol, "H" if halted else "T",
                                    " ", reason[:4])
        self._schedule_flush()

    def on_halt(self, symbol: str, halted: bool) -> None:
        """Exchange listener: a symbol was halted or resumed."""
        if symbol not in self._locate:
            self.add_symbol(symbol)
        self.trading_action(symbol, halted)

    def system_event(self, code: str) -> None:
        self.builder.system_event(0, 0, ns_since_midnight(), code)
        self._schedule_flush()

    def is_halted(self, symbol: str) -> bool:
        return self._halted[symbol]

    # -- the exchange core (gateway.exchange.Exchange) ------------------------------

    def attach(self, exchange: Any) -> None:
        """Publish an exchange core's books: registers every instrument (with its tick
        size) and the current halts, and subscribes as a MarketListener
        (`exchange.add_listener(self)`). Each `on_book_update(symbol)` then diffs the
        symbol's resting orders (`MatchingBook.open_orders()`) against what was
        published and sends the difference order by order; the executions reported
        through `on_trade` since the previous diff decide which decreases are 'E'
        (oldest order first at the trade's price and maker side) and which are 'X'/'D';
        executed volume no visible order accounts for (an order added and hit within
        one replay batch) is sent as 'P'. Call before start(): the books' resting
        orders at start() are published right after the directory."""
        self.exchange = exchange
        for inst in exchange.instruments.values():
            self.add_symbol(inst)
        for symbol in exchange.faults.halted:
            if symbol in self._locate:
                self._halted[symbol] = True
        for symbol in self._locate:
            self._snap.setdefault(symbol, _EMPTY_SNAP)
        exchange.add_listener(self)
        if self.started:
            for symbol in list(self._locate):
                self.on_book_update(symbol)

    def detach(self) -> None:
        if self.exchange is not None:
            try:
                self.exchange.remove_listener(self)
            except ValueError:
                pass
            self.exchange = None

    def on_trade(self, symbol: str, price: int, qty: int, aggressor_side: int, ts_ns: int) -> None:
        """Exchange listener: one execution (collected until the next on_book_update)."""
        pending = self._pending_trades.get(symbol)
        if pending is None:
            self._pending_trades[symbol] = pending = {}
        key = (1 - aggressor_side, price)          # (maker side, price)
        pending[key] = pending.get(key, 0) + qty

    def on_book_update(self, symbol: str) -> None:
        """Exchange listener: the book of `symbol` changed; publish the difference."""
        if not self.started or self.exchange is None or self.stopped:
            return
        try:
            self._diff(symbol)
        except Exception:
            self.counters.encode_errors += 1
            log.exception("ITCH publisher: cannot publish the book of %s", symbol)

    def _diff(self, symbol: str) -> None:
        # Plain per-field arrays (structured-array comparisons are slow in NumPy).
        cur = self.exchange.book(symbol).open_orders()      # OPEN_ORDER_DTYPE
        order = np.argsort(cur["order_id"], kind="stable")
        ids = cur["order_id"][order]
        qty = cur["qty"][order]
        price = cur["price"][order]
        prio = cur["priority"][order]
        side = cur["side"][order]
        p_ids, p_qty, p_price, p_prio, p_side = self._snap.get(symbol, _EMPTY_SNAP)
        trades = self._pending_trades.pop(symbol, None) or {}
        n, pn = len(ids), len(p_ids)
        if (not trades and n == pn and np.array_equal(ids, p_ids) and np.array_equal(qty, p_qty)
                and np.array_equal(prio, p_prio) and np.array_equal(price, p_price)):
            return
        self._snap[symbol] = (ids, qty, price, prio, side)
        if pn:
            pos = np.searchsorted(p_ids, ids)
            np.minimum(pos, pn - 1, out=pos)
            matched = p_ids[pos] == ids
        else:
            pos = np.zeros(n, dtype=np.intp)
            matched = np.zeros(n, dtype=bool)
        m_cur = np.flatnonzero(matched)
        m_prev = pos[m_cur]
        cq, pq = qty[m_cur], p_qty[m_prev]
        same_px = price[m_cur] == p_price[m_prev]
        same_prio = prio[m_cur] == p_prio[m_prev]
        changed = (cq != pq) | ~same_px | ~same_prio
        shrunk = changed & same_px & same_prio & (cq < pq)
        kept = np.zeros(pn, dtype=bool)
        kept[m_prev] = True
        gone = np.flatnonzero(~kept)
        ts = ns_since_midnight()
        # decreases, oldest first: executions up to the traded volume, then cancels
        if len(gone) or shrunk.any():
            rows = np.concatenate((gone, m_prev[shrunk]))
            left = [0] * len(gone) + cq[shrunk].tolist()
            dec = sorted(zip(p_prio[rows].tolist(), p_ids[rows].tolist(), p_side[rows].tolist(),
                             p_price[rows].tolist(), p_qty[rows].tolist(), left, strict=True))
            for _, oid, sd, px, old, lft in dec:
                d = old - lft
                e = min(d, trades.get((sd, px), 0))
                if e:
                    trades[(sd, px)] -= e
                    self.order_executed(symbol, oid, e, None, None, ts)
                if lft == 0:
                    self.order_deleted(symbol, oid, ts)
                elif d > e:
                    self.order_canceled(symbol, oid, d - e, ts)
        # price changed, queue position lost or size grown: a replace ('U', fresh reference)
        moved = m_cur[changed & ~shrunk]
        if len(moved):
            for oid, q, px in zip(ids[moved].tolist(), qty[moved].tolist(), price[moved].tolist(),
                                  strict=True):
                self.order_replaced(symbol, oid, oid, q, px, ts)
        new = np.flatnonzero(~matched)
        if len(new):
            if len(new) > 1:
                new = new[np.argsort(prio[new], kind="stable")]
            for oid, sd, q, px in zip(ids[new].tolist(), side[new].tolist(), qty[new].tolist(),
                                      price[new].tolist(), strict=True):
                self.order_added(symbol, oid, sd, q, px, ts)
        for (sd, px), q in trades.items():
            if q > 0:
                self.trade(symbol, sd, q, px, None, ts)

    # -- order-by-order hooks -----------------------------------------------------

    def _new_ref(self, order_id: int) -> int:
        if order_id not in self._refs and 0 < order_id < FRESH_REF_BASE:
            ref = order_id
        else:
            ref = self._next_fresh_ref
            self._next_fresh_ref += 1
        self._refs.add(ref)
        return ref

    def _match_no(self, match: int | None) -> int:
        if match is None or match <= 0:
            match = self._next_match
            self._next_match += 1
        return match

    def order_added(self, symbol: str, order_id: int, side: int, qty: int, price: int,
                    ts: int | None = None) -> None:
        """An order now rests on the book (visible): 'A'."""
        locate = self._locate.get(symbol) or self.add_symbol(symbol)
        key = (locate, order_id)
        if key in self._live:
            self.counters.duplicate_orders += 1
            log.warning("ITCH: order %s %d added twice; ignored", symbol, order_id)
            return
        p4 = price * self._p4[symbol]
        ref = self._new_ref(order_id)
        try:
            self.builder.add_order(locate, 0, ns_since_midnight() if ts is None else ts, ref,
                                   "B" if side == SIDE_BUY else "S", qty, symbol, p4)
        except (itch.ItchEncodeError, TypeError) as exc:
            self._refs.discard(ref)
            self.counters.encode_errors += 1
            log.warning("ITCH: cannot publish order %s %d: %s", symbol, order_id, exc)
            return
        self._live[key] = [ref, side, p4, qty]
        self._schedule_flush()

    def order_executed(self, symbol: str, order_id: int, qty: int, match: int | None = None,
                       price: int | None = None, ts: int | None = None) -> None:
        """A resting order traded qty lots: 'E' (at its price) or 'C' (at `price`)."""
        locate = self._locate.get(symbol)
        o = self._live.get((locate, order_id)) if locate else None
        if o is None:
            self.counters.unknown_orders += 1
            return
        qty = min(qty, o[3])
        t = ns_since_midnight() if ts is None else ts
        m = self._match_no(match)
        p4 = None if price is None else price * self._p4[symbol]
        if p4 is None or p4 == o[2]:
            self.builder.order_executed(locate, 0, t, o[0], qty, m)
        else:
            self.builder.order_executed_with_price(locate, 0, t, o[0], qty, m, "Y", p4)
        self._reduce(locate, order_id, o, qty)
        self._schedule_flush()

    def order_canceled(self, symbol: str, order_id: int, qty: int, ts: int | None = None) -> None:
        """qty lots of a resting order were canceled: 'X', or 'D' when nothing is left."""
        locate = self._locate.get(symbol)
        o = self._live.get((locate, order_id)) if locate else None
        if o is None:
            return   # an order that never rested (IOC remainder, market order): nothing to publish
        t = ns_since_midnight() if ts is None else ts
        if qty >= o[3]:
            self.builder.order_delete(locate, 0, t, o[0])
            self._reduce(locate, order_id, o, o[3])
        else:
            self.builder.order_cancel(locate, 0, t, o[0], qty)
            self._reduce(locate, order_id, o, qty)
        self._schedule_flush()

    def order_deleted(self, symbol: str, order_id: int, ts: int | None = None) -> None:
        """A resting order left the book: 'D'."""
        locate = self._locate.get(symbol)
        o = self._live.get((locate, order_id)) if locate else None
        if o is None:
            return
        self.builder.order_delete(locate, 0, ns_since_midnight() if ts is None else ts, o[0])
        self._reduce(locate, order_id, o, o[3])
        self._schedule_flush()

    def order_replaced(self, symbol: str, order_id: int, new_order_id: int, qty: int, price: int,
                       ts: int | None = None) -> None:
        """A resting order was replaced by one resting at (qty, price): 'U'."""
        locate = self._locate.get(symbol)
        o = self._live.get((locate, order_id)) if locate else None
        if o is None:
            self.counters.unknown_orders += 1
            return
        t = ns_since_midnight() if ts is None else ts
        p4 = price * self._p4[symbol]
        del self._live[(locate, order_id)]
        self._refs.discard(o[0])
        if new_order_id == order_id:
            ref = self._next_fresh_ref
            self._next_fresh_ref += 1
            self._refs.add(ref)
        else:
            ref = self._new_ref(new_order_id)
        self.builder.order_replace(locate, 0, t, o[0], ref, qty, p4)
        self._live[(locate, new_order_id)] = [ref, o[1], p4, qty]
        self._schedule_flush()

    def trade(self, symbol: str, side: int, qty: int, price: int, match: int | None = None,
              ts: int | None = None) -> None:
        """A trade against a non-displayed order: 'P' (no book effect)."""
        locate = self._locate.get(symbol) or self.add_symbol(symbol)
        self.builder.trade(locate, 0, ns_since_midnight() if ts is None else ts, 0,
                           "B" if side == SIDE_BUY else "S", qty, symbol,
                           price * self._p4[symbol], self._match_no(match))
        self._schedule_flush()

    def _reduce(self, locate: int, order_id: int, o: list, qty: int) -> None:
        o[3] -= qty
        if o[3] <= 0:
            del self._live[(locate, order_id)]
            self._refs.discard(o[0])

    def live_order(self, symbol: str, order_id: int) -> tuple[int, int, int, int] | None:
        """(ITCH ref, side, price4, shares) of a published resting order, or None."""
        o = self._live.get((self._locate.get(symbol), order_id))
        return None if o is None else tuple(o)

    def on_matching_events(self, symbol: str, execs: np.ndarray, order_events: np.ndarray) -> None:
        """The coarse hook: the arrays of one MatchingBook.drain_events() for `symbol`."""
        if symbol not in self._locate:
            self.add_symbol(symbol)
        events: list[tuple] = []
        if len(execs):
            events.extend((row[0], 0, row) for row in execs.tolist())
        if len(order_events):
            events.extend((row[0], 1, row) for row in order_events.tolist())
        if not events:
            return
        if len(execs) and len(order_events):
            events.sort(key=lambda e: e[0])
        ts = ns_since_midnight()
        i = 0
        n = len(events)
        while i < n:
            _, kind, row = events[i]
            i += 1
            if kind == 0:
                # seq, maker, taker, maker_owner, taker_owner, price, qty, ...
                self.order_executed(symbol, row[1], row[6], None, row[5], ts)
                continue
            # seq, order_id, new_order_id, owner, price, qty, kind, reason, side, ord_type, tif
            ev = row[6]
            if ev == ORDEV_RESTED:
                self.order_added(symbol, row[1], row[8], row[5], row[4], ts)
            elif ev == ORDEV_CANCELED:
                self.order_canceled(symbol, row[1], row[5], ts)
            elif ev == ORDEV_REPLACED:
                if self._replaced_event(symbol, row, events[i] if i < n else None, ts):
                    i += 1         # its RESTED was published as part of the 'U'
        self._schedule_flush()

    def _replaced_event(self, symbol: str, row: tuple, nxt: tuple | None, ts: int) -> bool:
        """Publish one REPLACED event; True when it consumed the next event (its RESTED)."""
        order_id, new_id, price, qty, reason = row[1], row[2], row[4], row[5], row[7]
        locate = self._locate[symbol]
        o = self._live.get((locate, order_id))
        if o is None:
            self.counters.unknown_orders += 1
            return False
        new_id = new_id or order_id
        if reason == REPLACE_PRIORITY_KEPT:
            if new_id == order_id:
                if qty < o[3]:
                    self.order_canceled(symbol, order_id, o[3] - qty, ts)
            else:
                self.order_replaced(symbol, order_id, new_id, qty, price, ts)
            return False
        # Priority lost: a 'U' when the order rests again untouched (the next event is
        # its RESTED with the full qty); otherwise it left the book, traded on its way
        # in, and its RESTED (if any) publishes the 'A'.
        if nxt is not None and nxt[1] == 1:
            r = nxt[2]
            if r[6] == ORDEV_RESTED and r[1] == new_id and r[5] == qty:
                self.order_replaced(symbol, order_id, new_id, qty, price, ts)
                return True
        self.order_deleted(symbol, order_id, ts)
        return False


# ---------------------------------------------------------------------------
# Handler
# ---------------------------------------------------------------------------

_LIVE, _BUFFERED, _RETRANS = 0, 1, 2     # where an applied packet came from


class FeedCounters:
    """Monotonic counters of one ItchFeedHandler (read by a monitoring timer)."""

    __slots__ = ("datagrams", "packets", "messages", "heartbeats", "garbage", "wrong_session",
                 "duplicates", "gaps", "recovered", "reorder_recovered", "unrecovered",
                 "retrans_requests", "retrans_packets", "retrans_messages", "skipped_messages",
                 "buffered", "buffered_max", "anomalies", "callback_errors", "negative_latency",
                 "resyncs", "end_of_session", "dead", "backwards")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _HandlerProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: ItchFeedHandler):
        self.on_datagram = handler._on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.on_datagram(data, addr)
        except Exception:
            # A bug must not stop the feed: log it; the sequence logic stays consistent
            # because the expected number only moves after a successful apply.
            log.exception("ITCH handler: datagram from %s failed", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("ITCH handler socket: %s", exc)


class ItchFeedHandler:
    """The engine's ITCH 5.0 / MoldUDP64 feed handler (see the module docstring)."""

    def __init__(self, books: Iterable[L2Book] = (), *, host: str = "127.0.0.1", port: int = 0,
                 request_addr: tuple[str, int] | None = None, session: str | None = None,
                 on_result: Callable[[itch.ItchApplyResult], Any] | None = None,
                 create_books: bool = True, start_seq: int = 1,
                 reorder_wait_s: float = 0.005, retrans_timeout_s: float = 0.25,
                 retrans_retries: int = 3, max_request: int = 1024, max_buffered: int = 20_000,
                 dead_after_s: float | None = 3.0, latency_samples: int = 65536,
                 subscribe: bool = False):
        if retrans_timeout_s <= 0 or reorder_wait_s < 0:
            raise ValueError("retrans_timeout_s must be > 0 and reorder_wait_s >= 0")
        if not 1 <= max_request <= MOLD_MAX_COUNT:
            raise ValueError(f"max_request must be in 1..{MOLD_MAX_COUNT}")
        self.host = host
        self.port = port
        self.request_addr = request_addr
        self._session_b: bytes | None = session_bytes(session) if session else None
        self.on_result = on_result
        self.create_books = create_books
        self.applier = itch.ItchBookApplier(books=list(books), strict=False,
                                            create_books=create_books)
        self._apply = self.applier.apply_packet
        self.expected = start_seq            # sequence number of the next message to apply
        self._known_end = start_seq          # highest "next sequence number" announced so far
        self.reorder_wait_s = reorder_wait_s
        self.retrans_timeout_s = retrans_timeout_s
        self.retrans_retries = retrans_retries
        self.max_request = max_request
        self.max_buffered = max_buffered
        self.dead_after_s = dead_after_s
        self.subscribe = subscribe
        self._last_subscribe = 0
        self.counters = FeedCounters()
        self._pending: dict[int, bytes] = {}  # seq -> buffered data packet (after a hole)
        self.gap_active = False
        self.needs_resync = False
        self.silent = False
        self.stale = False
        self.ended = False
        self._end_packet: bytes | None = None
        self._gap_t0 = 0
        self._requested = False              # a request was sent in the current gap
        self._req_from = 0
        self._req_to = 0
        self._attempts = 0
        self._req_timer: asyncio.TimerHandle | None = None
        self._tick_timer: asyncio.TimerHandle | None = None
        self.last_recovery_ns = 0
        self._last_rx_mono = time.monotonic_ns()
        self._last_top: list[int] = []       # per instrument: monotonic ns of the last top change
        self._lat = np.zeros(max(1, latency_samples), dtype=np.int64)
        self._lat_n = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> int:
        """Bind the UDP socket; returns the port."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _HandlerProtocol(self), local_addr=(self.host, self.port))
        _set_buffer(self._transport, socket.SO_RCVBUF, 8 << 20)
        self.port = self._transport.get_extra_info("sockname")[1]
        self._last_rx_mono = time.monotonic_ns()
        self._tick_timer = loop.call_later(TICK_S, self._tick)
        if self.subscribe and self.request_addr is not None:
            self.subscribe_now()
        return self.port

    def subscribe_now(self) -> None:
        """Ask the publisher (at request_addr) to send the feed here: a MoldUDP64 request
        with message count 0 (an extension of ItchPublisher; see its _subscribe). Repeated
        every second by the timer while `subscribe` is set and nothing has arrived."""
        if self.request_addr is None or self._transport is None:
            raise ValueError("subscribe_now() needs request_addr and a started handler")
        self._last_subscribe = time.monotonic_ns()
        self._transport.sendto(encode_request(self._session_b or _BLANK_SESSION, self.expected, 0),
                               self.request_addr)

    async def stop(self) -> None:
        for h in (self._req_timer, self._tick_timer):
            if h is not None:
                h.cancel()
        self._req_timer = self._tick_timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await asyncio.sleep(0)

    # -- queries (monitoring, strategy) -------------------------------------------

    @property
    def books(self) -> list[L2Book]:
        return self.applier.books

    def book(self, symbol: str) -> L2Book | None:
        return self.applier.book(symbol)

    @property
    def symbols(self) -> list[str]:
        return self.applier.symbols

    def is_halted(self, symbol: str) -> bool:
        idx = self.applier.index_of(symbol)
        return False if idx is None else self.applier.is_halted(idx)

    def quote_age_s(self, symbol: str) -> float | None:
        """Seconds since `symbol`'s top of book last changed (None: never)."""
        idx = self.applier.index_of(symbol)
        if idx is None or idx >= len(self._last_top) or self._last_top[idx] == 0:
            return None
        return (time.monotonic_ns() - self._last_top[idx]) / 1e9

    def feed_age_s(self) -> float:
        """Seconds since the last datagram (heartbeats included)."""
        return (time.monotonic_ns() - self._last_rx_mono) / 1e9

    def latency_ns(self) -> np.ndarray:
        """The stored feed-latency samples (ns), oldest first."""
        n = self._lat_n
        cap = len(self._lat)
        if n <= cap:
            return self._lat[:n].copy()
        i = n % cap
        return np.concatenate((self._lat[i:], self._lat[:i]))

    def latency_percentiles(self) -> dict[str, float] | None:
        s = self.latency_ns()
        if not len(s):
            return None
        p50, p99, p999 = np.percentile(s, [50, 99, 99.9])
        return {"p50": float(p50), "p99": float(p99), "p999": float(p999), "max": float(s.max()),
                "n": int(len(s))}

    def snapshot(self) -> dict[str, Any]:
        """Everything a monitoring timer exports."""
        out: dict[str, Any] = self.counters.snapshot()
        out.update(expected=self.expected, known_end=self._known_end, stale=self.stale,
                   gap_active=self.gap_active, needs_resync=self.needs_resync, silent=self.silent,
                   ended=self.ended, feed_age_s=self.feed_age_s(),
                   last_recovery_ns=self.last_recovery_ns, latency=self.latency_percentiles())
        return out

    # -- the hot path ---------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        recv_ns = time.time_ns()
        c = self.counters
        c.datagrams += 1
        if len(data) < MOLD_HEADER:
            c.garbage += 1
            return
        if self._session_b is not None:
            if data[:10] != self._session_b:
                c.garbage += 1
                c.wrong_session += 1
                return
        elif not _printable(data[:10]):
            c.garbage += 1
            return
        self._last_rx_mono = mono = time.monotonic_ns()
        if self.silent:
            self.silent = False
            self._refresh_stale()
        seq = int.from_bytes(data[10:18], "big")
        count = (data[18] << 8) | data[19]
        expected = self.expected
        if count == MOLD_HEARTBEAT or count == MOLD_END_OF_SESSION:
            if len(data) != MOLD_HEADER:
                c.garbage += 1
                return
            if self._session_b is None:
                self._session_b = data[:10]
            if count == MOLD_HEARTBEAT:
                c.heartbeats += 1
            else:
                self._end_packet = data
            if seq > self._known_end:
                self._known_end = seq
            if seq > expected:
                self._open_gap()
            elif seq < expected:
                # the sequence went backwards: the publisher restarted under the same
                # session name. Nothing here can be trusted until an operator re-syncs.
                c.backwards += 1
                if not self.needs_resync:
                    log.warning("ITCH handler: sequence went back to %d (expected %d); books "
                                "stale until resync()", seq, expected)
                    self.needs_resync = True
                    self._refresh_stale()
            elif count == MOLD_END_OF_SESSION and not self.ended and not self.gap_active:
                self._end(data)
            return
        source = _RETRANS if addr == self.request_addr else _LIVE
        if seq == expected:
            try:
                result = self._apply(data)
            except itch.ItchError as exc:
                c.garbage += 1
                log.debug("ITCH handler: bad packet from %s: %s", addr, exc)
                return
            if self._session_b is None:
                self._session_b = data[:10]
            self._applied(result, data, recv_ns, mono, source)
            if self._pending or self.gap_active:
                self._drain()
            return
        if seq > expected:
            if not _plausible(data, count):
                c.garbage += 1
                return
            if self._session_b is None:
                self._session_b = data[:10]
            if seq in self._pending:
                c.duplicates += 1
                return
            self._pending[seq] = data
            c.buffered += 1
            if len(self._pending) > c.buffered_max:
                c.buffered_max = len(self._pending)
            if seq + count > self._known_end:
                self._known_end = seq + count
            self._open_gap()
            if len(self._pending) > self.max_buffered:
                log.warning("ITCH handler: %d packets buffered behind a hole at %d; skipping it",
                            len(self._pending), self.expected)
                self._give_up()
            return
        # seq < expected: a duplicate, or one that overlaps what we have
        if seq + count <= expected:
            c.duplicates += 1
            return
        trimmed = self._trim(data, expected - seq)
        if trimmed is None:
            c.garbage += 1
            return
        try:
            result = self._apply(trimmed)
        except itch.ItchError:
            c.garbage += 1
            return
        self._applied(result, trimmed, recv_ns, mono, source if source == _RETRANS else _BUFFERED)
        if self._pending or self.gap_active:
            self._drain()

    def _applied(self, result: itch.ItchApplyResult, data: bytes, recv_ns: int, mono: int,
                 source: int) -> None:
        c = self.counters
        self.expected = result.next_seq
        if self.expected > self._known_end:
            self._known_end = self.expected
        c.packets += 1
        c.messages += result.count
        if source == _RETRANS:
            c.retrans_packets += 1
            c.retrans_messages += result.count
        elif source == _LIVE:
            lat = recv_ns % NS_PER_DAY - int.from_bytes(data[27:33], "big")
            if lat < -NS_PER_DAY // 2:
                lat += NS_PER_DAY          # the packet was stamped before midnight
            elif lat < 0:
                c.negative_latency += 1
            lat_buf = self._lat
            lat_buf[self._lat_n % len(lat_buf)] = lat
            self._lat_n += 1
        tops = result.top_changed
        if tops:
            last = self._last_top
            for i in tops:
                if i >= len(last):
                    last.extend([0] * (i + 1 - len(last)))
                last[i] = mono
        if result.anomalies:
            c.anomalies += result.anomalies
            if not self.needs_resync:
                log.warning("ITCH handler: %d messages disagreed with the order table at %d; "
                            "books stale until resync()", result.anomalies, result.seq)
                self.needs_resync = True
                self._refresh_stale()
        if self.stale:
            for b in self.applier.books:
                b.stale = True
        cb = self.on_result
        if cb is not None:
            try:
                cb(result)
            except Exception:
                c.callback_errors += 1
                log.exception("ITCH handler: on_result callback failed")

    # -- gaps and recovery ------------------------------------------------------------

    def _trim(self, packet: bytes, skip: int) -> bytes | None:
        """The packet without its first `skip` messages (cold path)."""
        count = (packet[18] << 8) | packet[19]
        if not _plausible(packet, count):
            return None
        seq, msgs = split_messages(packet)
        try:
            return itch.encode_packet(packet[:10].decode("latin-1"), seq + skip, msgs[skip:])
        except itch.ItchError:
            return None

    def _open_gap(self) -> None:
        if self.gap_active or self.expected >= self._known_end:
            return
        self.gap_active = True
        self.counters.gaps += 1
        self._gap_t0 = time.monotonic_ns()
        self._requested = False
        self._attempts = 0
        self._refresh_stale()
        self._arm(self.reorder_wait_s, self._request)

    def _arm(self, delay: float, fn: Callable[[], None]) -> None:
        """One recovery timer at a time: arming replaces the pending one."""
        self._cancel_timer()
        loop = self._loop
        if loop is None:
            return
        self._req_timer = loop.call_later(delay, self._fire, fn)

    def _fire(self, fn: Callable[[], None]) -> None:
        self._req_timer = None
        fn()

    def _cancel_timer(self) -> None:
        if self._req_timer is not None:
            self._req_timer.cancel()
            self._req_timer = None

    def _hole_end(self) -> int:
        return min(self._pending) if self._pending else self._known_end

    def _request(self) -> None:
        """Ask for the current hole (or give up when there is nobody to ask)."""
        if not self.gap_active:
            return
        if self.expected >= self._known_end and not self._pending:
            self._closed()
            return
        if self.request_addr is None or self._transport is None or self._session_b is None:
            self._arm(self.retrans_timeout_s, self._give_up)
            return
        n = min(self._hole_end() - self.expected, self.max_request)
        if n <= 0:
            self._drain()
            return
        self._req_from = self.expected
        self._req_to = self.expected + n
        self._requested = True
        self.counters.retrans_requests += 1
        self._transport.sendto(encode_request(self._session_b, self.expected, n), self.request_addr)
        self._arm(self.retrans_timeout_s, self._timeout)

    def _timeout(self) -> None:
        if not self.gap_active:
            return
        if self.expected > self._req_from:
            self._attempts = 0                 # progress: ask for what is left
        else:
            self._attempts += 1
            if self._attempts > self.retrans_retries:
                self._give_up()
                return
        self._request()

    def _give_up(self) -> None:
        """Skip the current hole: books stay stale until resync()."""
        self._cancel_timer()
        if not self.gap_active and self.expected >= self._known_end:
            return
        hole_end = self._hole_end()
        c = self.counters
        c.unrecovered += 1
        c.skipped_messages += max(0, hole_end - self.expected)
        log.warning("ITCH handler: messages %d..%d not recovered; books stale until resync()",
                    self.expected, hole_end - 1)
        self.needs_resync = True
        self.expected = max(self.expected, hole_end)
        self._attempts = 0
        self._drain()
        if self.gap_active:                      # another hole behind this one
            self._requested = False
            self._arm(self.reorder_wait_s, self._request)

    def _drain(self) -> None:
        """Apply buffered packets that have become in order; close the gap when done."""
        pend = self._pending
        c = self.counters
        mono = time.monotonic_ns()
        while pend:
            data = pend.pop(self.expected, None)
            if data is None:
                first = min(pend)
                if first > self.expected:
                    break
                data = pend.pop(first)
                count = (data[18] << 8) | data[19]
                if first + count <= self.expected:
                    c.duplicates += 1
                    continue
                data = self._trim(data, self.expected - first)
                if data is None:
                    c.garbage += 1
                    continue
            try:
                result = self._apply(data)
            except itch.ItchError:
                c.garbage += 1
                continue
            self._applied(result, data, 0, mono, _BUFFERED)
        if self.expected >= self._known_end and not pend:
            self._closed()
        elif self.gap_active and self._requested and self.expected >= self._req_to:
            self._attempts = 0
            self._request()                      # next chunk of a long hole, or the next hole

    def _closed(self) -> None:
        if not self.gap_active:
            return
        self.gap_active = False
        self._cancel_timer()
        self.last_recovery_ns = time.monotonic_ns() - self._gap_t0
        c = self.counters
        c.recovered += 1
        if not self._requested:
            c.reorder_recovered += 1
        self._refresh_stale()
        if self._end_packet is not None and not self.ended:
            end_seq = int.from_bytes(self._end_packet[10:18], "big")
            if end_seq == self.expected:
                self._end(self._end_packet)

    def _end(self, packet: bytes) -> None:
        self.ended = True
        self.counters.end_of_session += 1
        try:
            result = self._apply(packet)
        except itch.ItchError:
            return
        cb = self.on_result
        if cb is not None:
            try:
                cb(result)
            except Exception:
                self.counters.callback_errors += 1
                log.exception("ITCH handler: on_result callback failed")

    def _refresh_stale(self) -> None:
        stale = self.gap_active or self.needs_resync or self.silent
        if stale != self.stale:
            self.stale = stale
            for b in self.applier.books:
                b.stale = stale

    def _tick(self) -> None:
        loop = self._loop
        if loop is None or self._transport is None:
            return
        if (self.dead_after_s is not None and not self.silent and not self.ended
                and time.monotonic_ns() - self._last_rx_mono > self.dead_after_s * 1e9):
            self.silent = True
            self.counters.dead += 1
            log.warning("ITCH handler: no packet for %.1f s; books stale", self.dead_after_s)
            self._refresh_stale()
        if (self.subscribe and self.counters.datagrams == 0 and self.request_addr is not None
                and time.monotonic_ns() - self._last_subscribe > 1_000_000_000):
            self.subscribe_now()
        self._tick_timer = loop.call_later(TICK_S, self._tick)

    def resync(self) -> None:
        """Rebuild every book by a replay from sequence 1 through the retransmission
        service (clears needs_resync when it completes; books stay stale meanwhile)."""
        books = self.applier.books
        for b in books:
            b.clear()
        self.applier = itch.ItchBookApplier(books=books, strict=False,
                                            create_books=self.create_books)
        self._apply = self.applier.apply_packet
        self.counters.resyncs += 1
        self.needs_resync = False
        self.ended = False
        self.expected = 1
        if self._known_end <= 1:
            self._refresh_stale()
            return
        self.gap_active = False
        self._open_gap()
        self._request()

    def instrument_symbols(self, indices: Iterable[int]) -> list[str]:
        """Symbols of instrument indices (as in ItchApplyResult.top_changed)."""
        syms = self.applier.symbols
        return [syms[i] for i in indices]


def books_by_symbol(handler: ItchFeedHandler) -> Mapping[str, L2Book]:
    return {b.symbol: b for b in handler.books}
