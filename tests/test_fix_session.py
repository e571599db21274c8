"""FixSession.commit_encoded: the bytes leave before the message is kept for resends,
the sequence number is advanced before they leave, a batch is one write, and a message
the store lacks (the process died between the write and the store) is gap-filled when
the counterparty asks for it again."""
from __future__ import annotations

import time

import pytest

from core_ext import fix as fixcodec
from gateway.fix_session import FixSession, SessionConfig
from gateway.fix_store import MemoryStore

SENDER, TARGET = "ENGINE", "VENUE"


class Wire:
    """A transport that keeps what was written (and tells the store's log)."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.events.append("write")
        self.writes.append(data)

    def close(self) -> None:
        pass


class LoggingStore(MemoryStore):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    def store(self, message) -> None:
        self.events.append(f"store {message.seq_num}")
        super().store(message)

    def set_next_sender(self, seq: int) -> None:
        self.events.append(f"next_sender {seq}")
        super().set_next_sender(seq)


def logged_on_session() -> tuple[FixSession, Wire, list[str]]:
    events: list[str] = []
    session = FixSession(SessionConfig(SENDER, TARGET), store=LoggingStore(events))
    wire = Wire(events)
    session.transport = wire
    session.received_logon = session.sent_logon = True     # as after a Logon exchange
    return session, wire, events


def new_order(session: FixSession, seq: int, cl: str) -> bytes:
    now = time.time_ns()
    # side buy, 100 @ 150.00 (ticks of 0.01), limit, day
    return session.encoder.new_order_single(seq, cl, "AAPL", 0, 100, 15_000, 2, 0, 0, None, now, now, 1)


def parsed(data: bytes):
    parser = fixcodec.FixParser()
    parser.feed(data)
    return list(parser)


def test_commit_encoded_advances_the_sequence_then_writes_then_keeps_the_message():
    session, wire, events = logged_on_session()
    data = new_order(session, 1, "A1")
    assert session.commit_encoded(b"D", data) == 1
    assert events == ["next_sender 2", "write", "store 1"]
    assert wire.writes == [data]
    stored = session.store.get_range(1, 1)[0]
    assert stored.msg_type == b"D" and b"\x0111=A1\x01" in b"\x01" + stored.body
    assert data.endswith(stored.body + data[-7:])          # the body is the message's, checksum excluded


def test_a_batch_is_one_write_and_each_message_is_kept_under_its_own_number():
    session, wire, events = logged_on_session()
    first, second = new_order(session, 1, "B1"), new_order(session, 2, "B2")
    assert session.commit_encoded(b"D", first + second, count=2) == 1
    assert wire.writes == [first + second]
    assert events == ["next_sender 3", "write", "store 1", "store 2"]
    one, two = session.store.get_range(1, 2)
    assert (one.seq_num, two.seq_num) == (1, 2)
    assert first.endswith(one.body + first[-7:]) and second.endswith(two.body + second[-7:])
    assert session.next_sender_seq == 3


@pytest.mark.parametrize("count, data, says", [
    (2, "one message", "not 2 whole"),
    (1, "two messages", "not 1 whole"),             # would reuse the second's number
    (1, "no checksum", "not 1 whole"),
    (0, "one message", "not 0 whole"),
    (1, "wrong MsgSeqNum", "does not carry MsgSeqNum 1"),
    (2, "second from another session", "message 2 of 2 is not one of this session"),
    (2, "second with the first's number", "message 2 of 2 does not carry MsgSeqNum 2"),
])
def test_a_batch_that_is_not_what_it_claims_is_refused_before_anything_leaves(count, data, says):
    session, wire, events = logged_on_session()
    one = new_order(session, 1, "C1")
    other = FixSession(SessionConfig(SENDER, "ELSEWHERE"))
    payload = {"one message": one, "two messages": one + new_order(session, 2, "C2"),
               "no checksum": one[:-7], "wrong MsgSeqNum": new_order(session, 7, "C7"),
               "second from another session": one + new_order(other, 2, "C2"),
               "second with the first's number": one + new_order(session, 1, "C2")}[data]
    with pytest.raises(ValueError, match=says):
        session.commit_encoded(b"D", payload, count=count)
    assert wire.writes == [] and events == [] and session.next_sender_seq == 1


def test_a_message_written_but_never_kept_is_gap_filled_on_resend():
    session, wire, events = logged_on_session()
    session.commit_encoded(b"D", new_order(session, 1, "D1"))
    session.commit_encoded(b"D", new_order(session, 2, "D2"))
    del session.store._messages[1]       # the process died between its write and its store
    wire.writes.clear()
    venue = fixcodec.FixEncoder(TARGET, SENDER)
    request = venue.encode_raw_body(b"2", b"7=1\x0116=0\x01", 1, sending_time_ns=time.time_ns())
    for msg in parsed(request):
        session.on_message(msg)
    answers = [parsed(w)[0] for w in wire.writes]
    kinds = [(m.get(35), m.get(34), m.get(123), m.get(36), m.get(43)) for m in answers]
    # 1: SequenceReset-GapFill to 2; 2: the order again; both PossDup (a resend)
    assert kinds == [(b"4", b"1", b"Y", b"2", b"Y"), (b"D", b"2", None, None, b"Y")], kinds
    assert answers[1].get(11) == b"D2"
