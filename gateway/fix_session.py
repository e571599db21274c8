"""FIX 4.4 session layer: the state machine, independent of sockets and event loops.

`FixSession` follows the FIX 4.4 session rules as QuickFIX implements them (which is
what the acceptance tests in ../shared/fix-at assert byte for byte; notes in
../shared/protocols/FIX44-SESSION.md). It is driven by three calls:

- `on_message(msg)` with each framed, parsed message from `core_ext.fix.FixParser`,
- `on_garbled(reason)` for input the parser had to discard,
- `on_timer(now)` a few times a second (heartbeats, test requests, time-outs),

and it writes through the transport it is attached to. The asyncio protocols in
`gateway.fix_transport` own the sockets and call these.

Outbound messages are stored (and sequence numbers advanced) before they are written,
so a ResendRequest can always be answered from the store.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from core_ext import fix as fixcodec
from gateway.errors import NotLoggedOn, SessionConfigError
from gateway.fix_store import MemoryStore, StoredMessage

log = logging.getLogger("gateway.fix")

SOH = b"\x01"

# Header tags that a reply echoes to the other routing direction (reverse route).
REVERSE_ROUTE = {115: 128, 116: 129, 144: 145, 128: 115, 129: 116, 145: 144}
# Administrative message types: never resent, gap-filled instead.
ADMIN_TYPES = frozenset({b"0", b"1", b"2", b"3", b"4", b"5", b"A"})

# SessionRejectReason (373) -> QuickFIX's text (compared literally by the acceptance tests);
# one table, owned by the codec that validates.
REJECT_TEXTS = fixcodec.SESSION_REJECT_TEXT
REJECT_REQUIRED_TAG_MISSING = 1
REJECT_VALUE_INCORRECT = 5
REJECT_COMPID_PROBLEM = 9
REJECT_SENDING_TIME = 10


@dataclass(frozen=True)
class SessionConfig:
    sender_comp_id: str
    target_comp_id: str
    begin_string: str = "FIX.4.4"
    heartbeat_interval: int = 30        # seconds; an acceptor adopts the counterparty's value
    reset_on_logon: bool = False        # a Logon resets both sequence numbers to 1
    reset_seq_num_flag: bool = False    # initiator: send 141=Y on Logon
    validate: bool = True               # check inbound messages against the FIX 4.4 dictionary
    check_latency: bool = True          # SendingTime accuracy check
    max_latency_s: float = 120.0
    logout_timeout_s: float = 2.0
    logon_timeout_s: float = 10.0
    username: str | None = None         # 553; an acceptor with these set requires them
    password: str | None = None         # 554; never logged
    test_request_id: str = "TEST"

    def __post_init__(self) -> None:
        if not self.sender_comp_id or not self.target_comp_id:
            raise SessionConfigError("sender_comp_id and target_comp_id must be non-empty")
        if self.begin_string != "FIX.4.4":
            raise SessionConfigError(f"begin_string {self.begin_string!r}: only FIX.4.4 is supported")
        if not 0 <= self.heartbeat_interval <= 3600:
            raise SessionConfigError(f"heartbeat_interval {self.heartbeat_interval}: allowed 0..3600 s")
        if self.max_latency_s <= 0:
            raise SessionConfigError(f"max_latency_s {self.max_latency_s}: must be > 0")

    def __repr__(self) -> str:  # the password never reaches a log line
        return (f"SessionConfig({self.sender_comp_id}->{self.target_comp_id}, hb={self.heartbeat_interval}, "
                f"reset_on_logon={self.reset_on_logon}, validate={self.validate})")


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class Application(Protocol):
    """What a session tells the layer above it."""

    def on_logon(self, session: FixSession) -> None: ...
    def on_logout(self, session: FixSession) -> None: ...
    def on_app_message(self, session: FixSession, msg) -> None: ...


class NullApplication:
    def on_logon(self, session):
        pass

    def on_logout(self, session):
        pass

    def on_app_message(self, session, msg):
        pass


class BusinessReject(Exception):
    """Raised by an application to answer a message with BusinessMessageReject (35=j)."""

    def __init__(self, reason: int, text: str, ref_tag: int | None = None):
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.ref_tag = ref_tag


def utc_timestamp(now: float, millis: bool = True) -> bytes:
    """FIX UTCTimestamp, YYYYMMDD-HH:MM:SS.sss."""
    secs = int(now)
    base = time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(secs)).encode()
    if not millis:
        return base
    return base + b".%03d" % int((now - secs) * 1000)


def parse_utc_timestamp(value: bytes) -> float | None:
    """Seconds since the epoch, or None when `value` is not a FIX UTCTimestamp
    (YYYYMMDD-HH:MM:SS with optional .sss, .ssssss or .sssssssss; the compiled parser)."""
    try:
        return fixcodec.parse_utc_timestamp(value) / 1e9
    except (ValueError, TypeError):
        return None


def encode_body(fields: Iterable[tuple[int, bytes | str | int]]) -> bytes:
    parts = []
    for tag, value in fields:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value).encode()
        elif isinstance(value, str):
            value = value.encode()
        parts.append(b"%d=%s\x01" % (tag, value))
    return b"".join(parts)


class FixSession:
    """One FIX 4.4 session (one pair of CompIDs), acceptor or initiator."""

    def __init__(self, config: SessionConfig, store: MemoryStore | None = None,
                 application: Application | None = None, initiator: bool = False,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.store = store if store is not None else MemoryStore()
        self.app = application or NullApplication()
        self.initiator = initiator
        self.clock = clock
        self.monotonic = monotonic
        self.encoder = fixcodec.FixEncoder(config.sender_comp_id, config.target_comp_id)
        self.sender = config.sender_comp_id.encode()
        self.target = config.target_comp_id.encode()
        # the last header field the encoder writes (56=<target>): the body follows it
        self._header_end = b"\x0156=" + self.target + b"\x01"
        self.transport: Transport | None = None
        self.heartbeat_interval = config.heartbeat_interval
        self._reset_connection_state()
        # counters for monitoring (read on a timer, never pushed)
        self.messages_in = 0
        self.messages_out = 0
        self.garbled_in = 0
        self.rejects_sent = 0
        self.resends_served = 0
        self.last_disconnect_reason = ""
        # called with the TestReqID of a Heartbeat that answers our TestRequest (pre-flight RTT)
        self.on_heartbeat: Callable[[bytes], None] | None = None

    # ------------------------------------------------------------------ state
    def _reset_connection_state(self) -> None:
        self.received_logon = False
        self.sent_logon = False
        self.sent_logout = False
        self.sent_reset = False
        self.received_reset = False
        self.logout_sent_at = 0.0
        self.logon_sent_at = 0.0
        now = self.monotonic()
        self.last_received = now
        self.last_sent = now
        self.test_requests_outstanding = 0
        self.resend_range: tuple[int, int] | None = None
        self.queue: dict[int, object] = {}

    @property
    def logged_on(self) -> bool:
        return self.received_logon and self.sent_logon and self.transport is not None

    @property
    def connected(self) -> bool:
        return self.transport is not None

    @property
    def next_sender_seq(self) -> int:
        return self.store.next_sender_seq

    @property
    def next_target_seq(self) -> int:
        return self.store.next_target_seq

    def _incr_target(self) -> None:
        self.store.set_next_target(self.store.next_target_seq + 1)

    # -------------------------------------------------------------- transport
    def attach(self, transport: Transport) -> None:
        """A connection is up: the session may now send."""
        self._reset_connection_state()
        self.transport = transport
        if self.initiator:
            self.send_logon()

    def detach(self, reason: str = "connection lost") -> None:
        """The connection is gone (by either side); always ends in a defined state."""
        was_logged_on = self.logged_on
        self.transport = None
        self.last_disconnect_reason = reason
        self.store.flush()
        self._reset_connection_state()
        if was_logged_on:
            self.app.on_logout(self)

    def disconnect(self, reason: str) -> None:
        log.info("session %s->%s: disconnect: %s", self.config.sender_comp_id,
                 self.config.target_comp_id, reason)
        transport = self.transport
        self.detach(reason)
        if transport is not None:
            transport.close()

    # ---------------------------------------------------------------- sending
    def _write(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.transport.write(data)
        self.last_sent = self.monotonic()
        self.messages_out += 1

    def _send(self, msg_type: bytes, body: bytes, header: Iterable[tuple[int, bytes]] = (),
              persist: bool = True, write: bool = True) -> int:
        """Encode, store, advance the sender sequence number, write. Returns MsgSeqNum.
        write=False only stores it (delivered by the counterparty's ResendRequest)."""
        seq = self.store.next_sender_seq
        data = self.encoder.encode_raw_body(msg_type, body, seq, header=list(header) or None,
                                            sending_time_ns=self._now_ns())
        if persist:
            self.store.store(StoredMessage(seq, msg_type, body, self.encoder.last_sending_time))
        self.store.set_next_sender(seq + 1)
        if write:
            self._write(data)
        return seq

    def _send_at(self, seq: int, msg_type: bytes, body: bytes, poss_dup: bool,
                 orig_sending_time: bytes | None) -> None:
        """Send with an explicit MsgSeqNum (resends and gap fills): no store, no increment."""
        data = self.encoder.encode_raw_body(msg_type, body, seq, poss_dup=poss_dup,
                                            orig_sending_time=orig_sending_time,
                                            sending_time_ns=self._now_ns())
        self._write(data)

    def _now_ns(self) -> int:
        return int(self.clock() * 1e9)

    def send_app(self, msg_type: bytes | str, body: bytes, offline_ok: bool = False) -> int:
        """Send an application message (body already encoded). Raises NotLoggedOn, unless
        offline_ok: then a session that is not logged on stores the message under the next
        MsgSeqNum without writing it, and the counterparty gets it by ResendRequest after
        its next Logon (how a venue queues reports, e.g. cancel-on-disconnect)."""
        online = self.logged_on
        if not online and not offline_ok:
            raise NotLoggedOn(f"session {self.config.sender_comp_id}->{self.config.target_comp_id} "
                              "is not logged on")
        if isinstance(msg_type, str):
            msg_type = msg_type.encode()
        return self._send(msg_type, body, write=online)

    def commit_encoded(self, msg_type: bytes, data: bytes, offline_ok: bool = False, count: int = 1) -> int:
        """Sequence, write and store whole messages that the caller encoded with this
        session's typed encoder (`self.encoder.new_order_single(...)` etc.) using
        MsgSeqNum == `self.next_sender_seq` (and the next ones, for `count` > 1
        concatenated messages of one `msg_type`) and no extra header fields. The fast
        path for application messages: one encode, no re-encoding of the body, one
        write. Same NotLoggedOn / offline_ok rules as send_app. Returns the first
        MsgSeqNum.

        Order of work, for the latency of the bytes: the message is checked, the next
        sender MsgSeqNum is advanced (a store into the memory-mapped sequence file, well
        under a microsecond: a restart never reuses the number), the bytes are written,
        and only then is the message kept for resends. A process killed between the
        write and that last step leaves a message the counterparty has and the store
        lacks; a ResendRequest for it is answered with a SequenceReset-GapFill, as for
        any message not kept. Everything is checked before the number moves: each of
        the `count` messages must be whole (8=FIX ... 10=nnn), carry this session's
        header and its own MsgSeqNum (next_sender_seq + i)."""
        online = self.logged_on
        if not online and not offline_ok:
            raise NotLoggedOn(f"session {self.config.sender_comp_id}->{self.config.target_comp_id} "
                              "is not logged on")
        store = self.store
        seq = store.next_sender_seq
        bodies = self._encoded_bodies(data, seq, count)
        store.set_next_sender(seq + count)
        if online:
            self._write(data)
            self.messages_out += count - 1
        sending_time = self.encoder.last_sending_time
        for i, (begin, end) in enumerate(bodies):
            store.store(StoredMessage(seq + i, msg_type, data[begin:end], sending_time))
        return seq

    def _encoded_bodies(self, data: bytes, seq: int, count: int) -> list[tuple[int, int]]:
        """(start, end) of each message's body in `data` (after 56=<target>, up to the
        checksum field), or ValueError naming what is wrong."""
        if count < 1 or data.count(b"\x0110=") != count or data[-7:-4] != b"10=" or data[-1:] != b"\x01":
            raise ValueError(f"commit_encoded: not {count} whole message(s)")
        header_end, skip = self._header_end, len(self._header_end)
        bodies = []
        start = 0
        for i in range(count):
            end = data.find(b"\x0110=", start) + 8          # the end of this message's checksum field
            body_start = data.find(header_end, start, end)
            if not data.startswith(b"8=FIX", start) or body_start < 0 or end > len(data):
                raise ValueError(f"commit_encoded: message {i + 1} of {count} is not one of this "
                                 f"session's encoder ({self.config.sender_comp_id}->{self.config.target_comp_id})")
            if data.find(b"\x0134=%d\x01" % (seq + i), start, body_start) < 0:
                raise ValueError(f"commit_encoded: message {i + 1} of {count} does not carry MsgSeqNum {seq + i}")
            bodies.append((body_start + skip, end - 7))
            start = end
        return bodies

    def send_logon(self) -> None:
        fields: list[tuple[int, bytes | str | int]] = [(98, 0), (108, self.heartbeat_interval)]
        if self.config.reset_seq_num_flag:
            self.store.reset()
            self.sent_reset = True
            fields.append((141, b"Y"))
        if self.config.username:
            fields.append((553, self.config.username))
        if self.config.password:
            fields.append((554, self.config.password))
        fields.sort(key=lambda f: f[0])
        self._send(b"A", encode_body(fields))
        self.sent_logon = True
        self.logon_sent_at = self.monotonic()

    def send_logout(self, text: str | None = None) -> None:
        body = encode_body([(58, text)]) if text else b""
        self._send(b"5", body)
        self.sent_logout = True
        self.logout_sent_at = self.monotonic()

    def send_heartbeat(self, test_req_id: bytes | None = None) -> None:
        self._send(b"0", encode_body([(112, test_req_id)]) if test_req_id is not None else b"")

    def send_test_request(self, test_req_id: str) -> None:
        self._send(b"1", encode_body([(112, test_req_id)]))

    def send_resend_request(self, begin: int, end: int = 0) -> None:
        self._send(b"2", encode_body([(7, begin), (16, end)]))
        self.resend_range = (begin, end)

    def _send_gap_fill(self, begin: int, new_seq: int) -> None:
        # QuickFIX sets OrigSendingTime to the gap fill's own SendingTime.
        self._send_at(begin, b"4", encode_body([(36, new_seq), (123, b"Y")]), poss_dup=True,
                      orig_sending_time=utc_timestamp(self.clock()))

    def _reverse_route(self, msg) -> list[tuple[int, bytes]]:
        route = []
        for tag, value in msg.fields():
            target = REVERSE_ROUTE.get(tag)
            if target is not None and value:
                route.append((target, value))
        route.sort(key=lambda f: f[0])
        return route

    def send_reject(self, msg, reason: int, ref_tag: int | bytes | None = None,
                    text: str | None = None) -> None:
        """Session-level Reject (35=3) of `msg`, as QuickFIX words and orders it."""
        seq = msg.get(34)
        msg_type = msg.msg_type
        fields: list[tuple[int, bytes | str | int]] = []
        if seq:
            fields.append((45, seq))
        reason_text = text if text is not None else REJECT_TEXTS.get(reason)
        if reason_text:
            fields.append((58, reason_text))
        if ref_tag is not None:
            fields.append((371, ref_tag if isinstance(ref_tag, bytes) else str(ref_tag).encode()))
        if msg_type:
            fields.append((372, msg_type))
        fields.append((373, reason))
        if (msg_type not in (b"A", b"4") and seq is not None and seq.isdigit()
                and int(seq) == self.next_target_seq):
            self._incr_target()
        self.rejects_sent += 1
        log.warning("session %s: reject seq=%s type=%s reason=%d (%s) tag=%s", self.config.target_comp_id,
                    seq, msg_type, reason, reason_text, ref_tag)
        self._send(b"3", encode_body(fields), header=self._reverse_route(msg))

    def send_business_reject(self, msg, reason: int, text: str, ref_tag: int | None = None) -> None:
        fields: list[tuple[int, bytes | str | int]] = []
        seq = msg.get(34)
        if seq:
            fields.append((45, seq))
        fields.append((58, text))
        if ref_tag is not None:
            fields.append((371, ref_tag))
        fields.append((372, msg.msg_type))
        fields.append((380, reason))
        if seq is not None and seq.isdigit() and int(seq) == self.next_target_seq:
            self._incr_target()
        self._send(b"j", encode_body(fields), header=self._reverse_route(msg))

    # -------------------------------------------------------------- receiving
    def on_garbled(self, reason: str) -> None:
        """The parser discarded input: ignore it (no Reject, no sequence increment)."""
        self.garbled_in += 1
        log.warning("session %s: garbled message discarded: %s", self.config.target_comp_id, reason)
        if not self.received_logon:
            self.disconnect(f"garbled message before logon: {reason}")

    def on_message(self, msg, queued: bool = False) -> None:
        """One framed message from the counterparty."""
        if self.transport is None:
            return
        self.messages_in += 1
        msg_type = msg.msg_type
        try:
            if msg.get(8) != self.config.begin_string.encode():
                if not self.received_logon:
                    self.disconnect(f"BeginString {msg.get(8)!r} before logon")
                elif msg_type == b"5":
                    self._next_logout(msg)
                else:
                    self.send_logout("Incorrect BeginString")
                    self._incr_target()
                return
            if not self.received_logon and msg_type != b"A":
                self.disconnect(f"first message is MsgType {msg_type!r}, not Logon")
                return
            if msg.get(49) is None or msg.get(56) is None:
                missing = 49 if msg.get(49) is None else 56
                if msg_type == b"A":
                    self.disconnect("Logon without SenderCompID/TargetCompID")
                else:
                    self.send_reject(msg, REJECT_REQUIRED_TAG_MISSING, missing)
                return
            if self.config.validate:
                error = fixcodec.validate(msg)
                if error is not None:
                    reason, ref_tag, text = error
                    if msg_type == b"A":
                        self.disconnect(f"invalid Logon: {text} (tag {ref_tag})")
                    else:
                        self.send_reject(msg, reason, ref_tag, text)
                    return
            if msg_type == b"A":
                self._next_logon(msg)
            elif msg_type == b"0":
                if self._verify(msg):
                    self._incr_target()
                    test_req_id = msg.get(112)
                    if test_req_id is not None and self.on_heartbeat is not None:
                        self.on_heartbeat(test_req_id)
            elif msg_type == b"1":
                if self._verify(msg):
                    self.send_heartbeat(msg.get(112))
                    self._incr_target()
            elif msg_type == b"2":
                self._next_resend_request(msg)
            elif msg_type == b"3":
                if self._verify(msg, check_too_high=False):
                    self._incr_target()
            elif msg_type == b"4":
                self._next_sequence_reset(msg)
            elif msg_type == b"5":
                self._next_logout(msg)
            else:
                if self._verify(msg):
                    try:
                        self.app.on_app_message(self, msg)
                    except BusinessReject as exc:
                        self.send_business_reject(msg, exc.reason, exc.text, exc.ref_tag)
                        return
                    self._incr_target()
        finally:
            if not queued and self.transport is not None:
                self._process_queue()

    def _verify(self, msg, check_too_high: bool = True, check_too_low: bool = True) -> bool:
        """QuickFIX's Session::verify: logon state, SendingTime, CompIDs, sequence number."""
        msg_type = msg.msg_type
        if not self._valid_logon_state(msg_type):
            self.disconnect(f"logon state not valid for MsgType {msg_type!r}")
            return False
        sending_time = msg.get(52)
        if sending_time is None:
            self.send_reject(msg, REJECT_REQUIRED_TAG_MISSING, 52)
            return False
        if not self._good_time(sending_time):
            if msg_type == b"A":
                self.disconnect(f"Logon SendingTime {sending_time!r} outside {self.config.max_latency_s}s")
                return False
            self.send_reject(msg, REJECT_SENDING_TIME)
            self.send_logout()
            return False
        if msg.get(49) != self.target or msg.get(56) != self.sender:
            self.send_reject(msg, REJECT_COMPID_PROBLEM)
            self.send_logout()
            return False
        if check_too_high or check_too_low:
            seq_raw = msg.get(34)
            if seq_raw is None or not seq_raw.isdigit():
                self.send_logout("MsgSeqNum missing or not a number")
                self.disconnect("MsgSeqNum missing")
                return False
            seq = int(seq_raw)
            if check_too_high and seq > self.next_target_seq:
                self._target_too_high(msg, seq)
                return False
            if check_too_low and seq < self.next_target_seq:
                self._target_too_low(msg, seq)
                return False
            if self.resend_range is not None and seq >= self.resend_range[1]:
                # QF: the request is satisfied once the message before the one that
                # revealed the gap has arrived; a later gap gets its own ResendRequest
                # (e.g. an unqueued too-high ResendRequest of the counterparty).
                self.resend_range = None
        self.last_received = self.monotonic()
        self.test_requests_outstanding = 0
        return True

    def _valid_logon_state(self, msg_type: bytes) -> bool:
        if (msg_type == b"A" and self.sent_reset) or self.received_reset:
            return True
        if (msg_type == b"A" and not self.received_logon) or (msg_type != b"A" and self.received_logon):
            return True
        if msg_type == b"5" and self.sent_logon:
            return True
        if msg_type != b"5" and self.sent_logout:
            return True
        return msg_type in (b"4", b"3")

    def _good_time(self, sending_time: bytes) -> bool:
        if not self.config.check_latency:
            return True
        ts = parse_utc_timestamp(sending_time)
        return ts is not None and abs(self.clock() - ts) <= self.config.max_latency_s

    def _target_too_high(self, msg, seq: int) -> None:
        log.info("session %s: MsgSeqNum too high, expecting %d but received %d",
                 self.config.target_comp_id, self.next_target_seq, seq)
        self.queue[seq] = msg
        if self.resend_range is not None and seq >= self.resend_range[0]:
            return  # a ResendRequest for this range is already outstanding
        begin = self.next_target_seq
        self.send_resend_request(begin, 0)
        self.resend_range = (begin, seq - 1)   # QF records the gap's end although 16=0 is sent

    def _target_too_low(self, msg, seq: int) -> None:
        if msg.get(43) != b"Y":
            text = f"MsgSeqNum too low, expecting {self.next_target_seq} but received {seq}"
            self.send_logout(text)
            self.disconnect(text)
            return
        # PossDup of something already received: check it, then ignore it.
        if msg.msg_type != b"4":
            orig = msg.get(122)
            if orig is None:
                self.send_reject(msg, REJECT_REQUIRED_TAG_MISSING, 122)
                return
            orig_ts, sent_ts = parse_utc_timestamp(orig), parse_utc_timestamp(msg.get(52) or b"")
            if orig_ts is None or sent_ts is None or orig_ts > sent_ts:
                self.send_reject(msg, REJECT_SENDING_TIME)
                self.send_logout()

    def _process_queue(self) -> None:
        while self.transport is not None:
            msg = self.queue.pop(self.next_target_seq, None)
            if msg is None:
                # drop anything the counterparty has since superseded
                for stale in [s for s in self.queue if s < self.next_target_seq]:
                    del self.queue[stale]
                return
            if msg.msg_type in (b"A", b"2"):
                self._incr_target()
            else:
                self.on_message(msg, queued=True)

    def _next_logon(self, msg) -> None:
        reset = msg.get(141) == b"Y"
        self.received_reset = reset
        if reset and not self.sent_reset:
            self.store.reset()
        if self.initiator and not self.sent_logon and not reset:
            self.disconnect("received Logon before sending one")
            return
        if not self.initiator and self.config.reset_on_logon:
            self.store.reset()
        if not self.initiator and self.config.username is not None:
            if (msg.get(553) or b"").decode("latin-1") != self.config.username or \
                    (msg.get(554) or b"").decode("latin-1") != (self.config.password or ""):
                self.disconnect("Logon refused: bad username or password")
                return
        if not self._verify(msg, check_too_high=False, check_too_low=True):
            return
        self.received_logon = True
        if not self.initiator or (self.received_reset and not self.sent_reset):
            hb = msg.get(108)
            if hb is not None and hb.isdigit():
                self.heartbeat_interval = int(hb)
            fields: list[tuple[int, bytes | str | int]] = [(98, 0), (108, self.heartbeat_interval)]
            if self.received_reset:
                fields.append((141, b"Y"))
            self._send(b"A", encode_body(fields))
            self.sent_logon = True
        self.sent_reset = False
        self.received_reset = False
        seq = int(msg.get(34))
        if seq > self.next_target_seq and not reset:
            self._target_too_high(msg, seq)
        else:
            self._incr_target()
        log.info("session %s->%s logged on (hb=%ds, next in %d, next out %d)", self.config.sender_comp_id,
                 self.config.target_comp_id, self.heartbeat_interval, self.next_target_seq,
                 self.next_sender_seq)
        self.app.on_logon(self)

    def _next_logout(self, msg) -> None:
        if not self._verify(msg, check_too_high=False, check_too_low=False):
            return
        if not self.sent_logout:
            self.send_logout()
        self._incr_target()
        self.disconnect("logout")

    def _next_sequence_reset(self, msg) -> None:
        gap_fill = msg.get(123) == b"Y"
        if not self._verify(msg, check_too_high=gap_fill, check_too_low=gap_fill):
            return
        new_seq = msg.get(36)
        if new_seq is None or not new_seq.isdigit():
            self.send_reject(msg, REJECT_REQUIRED_TAG_MISSING, 36)
            return
        target = int(new_seq)
        if target > self.next_target_seq:
            self.store.set_next_target(target)
        elif target < self.next_target_seq:
            self.send_reject(msg, REJECT_VALUE_INCORRECT, text=REJECT_TEXTS[REJECT_VALUE_INCORRECT])

    def _next_resend_request(self, msg) -> None:
        if not self._verify(msg, check_too_high=False, check_too_low=False):
            return
        begin = int(msg.get(7) or b"0")
        end = int(msg.get(16) or b"0")
        next_out = self.next_sender_seq
        if end == 0 or end >= next_out:
            end = next_out - 1
        self.resends_served += 1
        gap_begin = 0
        current = begin
        last_seq = begin - 1
        for stored in self.store.get_range(begin, end):
            seq = stored.seq_num
            if current != seq and not gap_begin:
                gap_begin = current
            if stored.msg_type in ADMIN_TYPES:
                if not gap_begin:
                    gap_begin = seq
            else:
                if gap_begin:
                    self._send_gap_fill(gap_begin, seq)
                self._send_at(seq, stored.msg_type, stored.body, poss_dup=True,
                              orig_sending_time=stored.sending_time)
                gap_begin = 0
            current = seq + 1
            last_seq = seq
        if gap_begin:
            self._send_gap_fill(gap_begin, last_seq + 1)
        if end > last_seq:
            new_seq = min(end + 1, next_out)
            self._send_gap_fill(begin if last_seq < begin else last_seq + 1, new_seq)
        seq_raw = msg.get(34)
        if seq_raw is not None and seq_raw.isdigit():
            seq = int(seq_raw)
            if seq == self.next_target_seq:
                self._incr_target()
            elif seq > self.next_target_seq:
                # Serviced already; queue it so that it is counted once the gap before it
                # closes (and ask for that gap unless a request is outstanding). Without
                # this the sequence stays one behind until the next message reveals it.
                self._target_too_high(msg, seq)

    # ----------------------------------------------------------------- timers
    def on_timer(self, now: float | None = None) -> None:
        """Heartbeats, test requests and time-outs; call a few times a second."""
        if self.transport is None:
            return
        now = self.monotonic() if now is None else now
        if not self.received_logon:
            if self.sent_logon and now - self.logon_sent_at >= self.config.logon_timeout_s:
                self.disconnect("timed out waiting for Logon response")
            return
        if self.sent_logout and now - self.logout_sent_at >= self.config.logout_timeout_s:
            self.disconnect("timed out waiting for Logout response")
            return
        hb = self.heartbeat_interval
        if hb == 0:
            return
        since_received = now - self.last_received
        since_sent = now - self.last_sent
        if since_sent < hb and since_received < hb:
            return
        if since_received >= 2.4 * hb:
            self.disconnect("timed out waiting for heartbeat")
        elif since_received >= 1.2 * (self.test_requests_outstanding + 1) * hb:
            self.send_test_request(self.config.test_request_id)
            self.test_requests_outstanding += 1
        elif since_sent >= hb and self.test_requests_outstanding == 0:
            self.send_heartbeat()
