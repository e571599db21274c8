"""ITCH 5.0 / MoldUDP64 codec and book applier (core_ext.itch) against the reference.

Golden bytes are written by hand from the ITCH 5.0 layouts (see core_ext/itch.pxd),
not produced by either codec. The apply tests compare ItchBookApplier (C hash table
of orders + core_ext.book.L2Book) with tests/reference/itch_ref.RefBookApplier (a
dict of orders + dict-of-levels books) on synthetic flows and on the real Bitfinex
order-by-order feed re-expressed as ITCH.
"""
from __future__ import annotations

import json
import random
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext import itch
from core_ext.book import L2Book
from tests.conftest import shared_file
from tests.reference import itch_ref as ref

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
# enumerated character fields: (type, index in the message tuple) -> allowed
SETS = {("A", 5): "BS", ("F", 5): "BS", ("P", 5): "BS", ("C", 7): "YN", ("H", 5): "HPQT",
        ("S", 4): "OSQMEC"}


# ---------------------------------------------------------------------------
# Field strategies / generators from the reference tables
# ---------------------------------------------------------------------------

def _field_specs(t):
    fmt, kinds = ref.SPEC[t]
    return list(zip(kinds, ref._codes(fmt), strict=True))


def _alpha(width):
    return st.text(alphabet=PRINTABLE, max_size=width).map(lambda s: s.rstrip(" "))


def message_fields(t):
    parts = [st.just(t), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**48 - 1)]
    for i, (kind, code) in enumerate(_field_specs(t), start=4):
        if kind == "u":
            parts.append(st.integers(0, 2**32 - 1 if code == "I" else 2**64 - 1))
        elif kind in "sa":
            parts.append(_alpha(int(code[:-1])))
        elif kind == "c":
            parts.append(st.sampled_from(SETS.get((t, i), PRINTABLE)))
        else:
            n = int(code[:-1])
            parts.append(st.binary(min_size=n, max_size=n))
    return st.tuples(*parts)


any_message = st.sampled_from(sorted(ref.LENGTHS)).flatmap(message_fields)


def random_message(rng: random.Random, t: str) -> tuple:
    out = [t, rng.randrange(65536), rng.randrange(65536), rng.randrange(2**48)]
    for i, (kind, code) in enumerate(_field_specs(t), start=4):
        if kind == "u":
            out.append(rng.randrange(2**32 if code == "I" else 2**64))
        elif kind in "sa":
            out.append("".join(rng.choice(PRINTABLE) for _ in range(rng.randrange(int(code[:-1]) + 1)))
                       .rstrip(" "))
        elif kind == "c":
            out.append(rng.choice(SETS.get((t, i), PRINTABLE)))
        else:
            out.append(bytes(rng.randrange(256) for _ in range(int(code[:-1]))))
    return tuple(out)


SYMBOLS = ref.SYMBOLS
random_flow = ref.synthetic_flow


def encode_all(msgs):
    return [ref.encode_message(m) for m in msgs]


def as_dict(res) -> dict:
    return {"session": res.session, "seq": res.seq, "next_seq": res.next_seq, "count": res.count,
            "applied": res.applied, "top_changed": res.top_changed,
            "trades": [tuple(r) for r in res.trades.tolist()], "halts_changed": res.halts_changed,
            "anomalies": res.anomalies}


def books_equal(app, rapp) -> None:
    assert app.symbols == [b.symbol for b in rapp.books]
    for book, rbook in zip(app.books, rapp.books, strict=True):
        for side in (0, 1):
            assert book.levels(side) == rbook.sorted_levels(side), (book.symbol, side)
    for i, h in enumerate(rapp.halted):
        assert app.is_halted(i) == h


def outcome(fn, data):
    try:
        return fn(data)
    except itch.ItchDecodeError as exc:
        return type(exc).__name__
    except ref.RefError as exc:
        return type(exc).__name__


# ---------------------------------------------------------------------------
# Layouts and golden bytes
# ---------------------------------------------------------------------------

TS = b"\x1f\x1a\xce\xd9\xf0\x00"   # 34_200_000_000_000 ns = 09:30:00
GOLDEN_ADD = (b"A" + b"\x00\x05" + b"\x00\x00" + TS + b"\x00" * 7 + b"\x01" + b"B"
              + b"\x00\x00\x00\x64" + b"AAPL    " + b"\x00\x16\xed\x24")
GOLDEN_EXEC = (b"E" + b"\x00\x05" + b"\x00\x00" + TS + b"\x00" * 7 + b"\x01"
               + b"\x00\x00\x00\x1e" + b"\x00\x00\x00\x00\x3a\xde\x68\xb1")
GOLDEN_SYSTEM = b"S" + b"\x00\x00" + b"\x00\x00" + TS + b"O"
GOLDEN_PACKET = (b"SESSION001" + b"\x00" * 7 + b"\x01" + b"\x00\x02"
                 + b"\x00\x24" + GOLDEN_ADD + b"\x00\x1f" + GOLDEN_EXEC)
GOLDEN_HEARTBEAT = b"SESSION001" + b"\x00" * 7 + b"\x03" + b"\x00\x00"


def test_lengths_are_the_official_ones():
    expected = {"S": 12, "R": 39, "H": 25, "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19,
                "U": 35, "P": 44}
    for t, n in expected.items():
        assert itch.LENGTHS[t] == n == ref.LENGTHS[t]
    assert itch.LENGTHS == ref.LENGTHS
    assert len(GOLDEN_ADD) == 36 and len(GOLDEN_EXEC) == 31 and len(GOLDEN_SYSTEM) == 12


def test_golden_messages():
    ts = 34_200 * 10**9
    assert itch.encode_add_order(5, 0, ts, 1, "B", 100, "AAPL", 1_502_500) == GOLDEN_ADD
    assert itch.decode_message(GOLDEN_ADD) == ("A", 5, 0, ts, 1, "B", 100, "AAPL", 1_502_500)
    assert itch.encode_order_executed(5, 0, ts, 1, 30, 987654321) == GOLDEN_EXEC
    assert itch.decode_message(GOLDEN_EXEC) == ("E", 5, 0, ts, 1, 30, 987654321)
    assert itch.encode_system_event(0, 0, ts, "O") == GOLDEN_SYSTEM
    assert itch.decode_message(GOLDEN_SYSTEM) == ("S", 0, 0, ts, "O")
    assert itch.encode_packet("SESSION001", 1, [GOLDEN_ADD, GOLDEN_EXEC]) == GOLDEN_PACKET
    assert itch.decode_packet(GOLDEN_PACKET) == (
        "SESSION001", 1, 2, [itch.decode_message(GOLDEN_ADD), itch.decode_message(GOLDEN_EXEC)])
    b = itch.MoldPacketBuilder("SESSION001", 1)
    b.add_order(5, 0, ts, 1, 0, 100, "AAPL", 1_502_500)   # 0 = SIDE_BUY
    b.order_executed(5, 0, ts, 1, 30, 987654321)
    assert b.flush() == [GOLDEN_PACKET]
    assert b.heartbeat() == GOLDEN_HEARTBEAT
    assert b.end_of_session() == GOLDEN_HEARTBEAT[:-2] + b"\xff\xff"


def test_golden_packet_applied():
    app = itch.ItchBookApplier()
    res = app.apply_packet(GOLDEN_PACKET)
    assert (res.session, res.seq, res.next_seq, res.count) == ("SESSION001", 1, 3, 2)
    book = app.book("AAPL")
    assert book.levels(0) == [(1_502_500, 70)] and book.levels(1) == []
    assert res.top_changed == (0,)
    tr = res.trades
    assert tr.dtype == itch.TRADE_DTYPE and len(tr) == 1
    assert (int(tr["price"][0]), int(tr["shares"][0]), int(tr["ts"][0]), int(tr["match"][0]),
            int(tr["locate"][0]), int(tr["side"][0]), tr["kind"][0], int(tr["seq"][0])) == \
        (1_502_500, 30, 34_200 * 10**9, 987654321, 5, 0, b"E", 2)
    hb = app.apply_packet(GOLDEN_HEARTBEAT)
    assert hb.is_heartbeat and hb.seq == hb.next_seq == 3 and hb.count == 0
    assert hb.top_changed == () and len(hb.trades) == 0


# ---------------------------------------------------------------------------
# Round trips against the reference
# ---------------------------------------------------------------------------

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_message)
def test_roundtrip_every_type(fields):
    msg = itch.encode_message(fields)
    assert msg == ref.encode_message(fields)
    assert len(msg) == itch.LENGTHS[fields[0]]
    assert itch.decode_message(msg) == fields == ref.decode_message(msg)
    buf = bytearray(100)
    end = itch.pack_message(buf, 7, fields[0], *fields[1:])
    assert bytes(buf[7:end]) == msg


@pytest.mark.parametrize("t", sorted(ref.LENGTHS))
def test_each_type_roundtrips(t):
    rng = random.Random(t)
    for _ in range(40):
        fields = random_message(rng, t)
        msg = itch.encode_message(fields)
        assert msg == ref.encode_message(fields)
        assert itch.decode_message(msg) == fields == ref.decode_message(msg)
        assert len(itch.FIELDS[t]) == len(fields) - 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_message, max_size=30), st.integers(0, 2**64 - 1), _alpha(10))
def test_packet_roundtrip(msgs, seq, session):
    encoded = [itch.encode_message(m) for m in msgs]
    pkt = itch.encode_packet(session, seq, encoded)
    assert pkt == ref.encode_packet(session, seq, encoded)
    expected = (session, seq, len(msgs), list(msgs))
    assert itch.decode_packet(pkt) == expected == ref.decode_packet(pkt)


def test_builder_splits_and_numbers_packets():
    rng = random.Random(3)
    msgs = random_flow(rng, 500)
    b = itch.MoldPacketBuilder("S1", next_seq=100, max_packet=300)
    for m in msgs:
        b.add(m)
    assert b.pending > 0
    packets = b.flush()
    assert b.pending == 0 and b.next_seq == 100 + len(msgs)
    seq = 100
    out = []
    for p in packets:
        assert len(p) <= 300
        session, first, count, decoded = itch.decode_packet(p)
        assert session == "S1" and first == seq and count == len(decoded) > 0
        seq += count
        out += decoded
    assert out == msgs
    assert itch.decode_packet(b.heartbeat())[1:3] == (100 + len(msgs), 0)
    assert itch.decode_packet(b.end_of_session())[1:3] == (100 + len(msgs), 0xFFFF)
    with pytest.raises(itch.ItchEncodeError):
        b.add_raw(b"Z" * 12)
    with pytest.raises(ValueError):
        itch.MoldPacketBuilder("S1", max_packet=40)


def test_encode_errors():
    with pytest.raises(itch.ItchEncodeError):
        itch.encode_add_order(1, 0, 1, 1, "X", 1, "AAPL", 1)           # side
    with pytest.raises(itch.ItchEncodeError):
        itch.encode_add_order(1, 0, 2**48, 1, "B", 1, "AAPL", 1)       # timestamp > 48 bits
    with pytest.raises(itch.ItchEncodeError):
        itch.encode_add_order(70000, 0, 1, 1, "B", 1, "AAPL", 1)       # locate > u16
    with pytest.raises(itch.ItchEncodeError):
        itch.encode_add_order(1, 0, 1, 1, "B", -5, "AAPL", 1)          # negative shares
    with pytest.raises(itch.ItchEncodeError):
        itch.encode_add_order(1, 0, 1, 1, "B", 1, "TOOLONGSYM", 1)     # stock > 8
    with pytest.raises(itch.ItchEncodeError):
        itch.encode_trading_action(1, 0, 1, "AAPL", "Z")               # trading state
    with pytest.raises(itch.ItchEncodeError):
        itch.encode_message(("Z", 1, 0, 1))                             # unknown type
    with pytest.raises(itch.ItchBufferTooSmallError):
        itch.pack_message(bytearray(18), 0, "D", 1, 0, 1, 5)
    with pytest.raises(TypeError):
        itch.encode_order_delete(1, 0, 1)                               # missing field
    assert itch.encode_add_order(1, 0, 1, 1, 1, 1, "AAPL", 1)[19:20] == b"S"   # SIDE_SELL


# ---------------------------------------------------------------------------
# Decode-and-apply against the reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_apply_matches_reference_synthetic(seed):
    rng = random.Random(seed)
    msgs = random_flow(rng, 4000)
    packets = ref.packets_of(encode_all(msgs), per_packet=rng.choice([1, 7, 20, 64]))
    app, rapp = itch.ItchBookApplier(order_capacity=16), ref.RefBookApplier()
    for i, p in enumerate(packets):
        assert as_dict(app.apply_packet(p)) == rapp.apply_packet(p)
        if i % 25 == 0:
            books_equal(app, rapp)
    books_equal(app, rapp)
    assert app.order_count == len(rapp.orders)
    for r_, o in rapp.orders.items():
        locate, side, price, shares, idx = o
        assert app.order(r_) == (locate, side, price, shares, idx)
    assert app.messages == len(msgs) and app.packets == len(packets)


def test_apply_matches_reference_real_l3_feed():
    frames = json.loads(shared_file("L3_feed.json").read_text())
    msgs = ref.bitfinex_l3_to_itch(frames[:40_000])
    assert len(msgs) > 30_000
    packets = ref.packets_of(encode_all(msgs), per_packet=20)
    app, rapp = itch.ItchBookApplier(), ref.RefBookApplier()
    n_top = 0
    for p in packets:
        res = app.apply_packet(p)
        exp = rapp.apply_packet(p)
        assert as_dict(res) == exp
        n_top += len(res.top_changed)
        book, rbook = app.books[0], rapp.books[0]
        assert (book.best_bid, book.best_ask) == (rbook.best(0)[0] if rbook.best(0) else None,
                                                  rbook.best(1)[0] if rbook.best(1) else None)
    books_equal(app, rapp)
    assert n_top > 100
    assert app.book("BTCUSD").count(0) > 0 and app.book("BTCUSD").count(1) > 0


def test_given_books_and_untracked_symbols():
    aapl = L2Book("AAPL")
    app = itch.ItchBookApplier([aapl], create_books=False)
    rapp = ref.RefBookApplier(["AAPL"], create_books=False)
    msgs = random_flow(random.Random(11), 2000)
    for p in ref.packets_of(encode_all(msgs)):
        assert as_dict(app.apply_packet(p)) == rapp.apply_packet(p)
    assert app.symbols == ["AAPL"] and app.book("AAPL") is aapl
    assert aapl.levels(0) == rapp.books[0].sorted_levels(0)
    assert app.instrument_of_locate(1) == 0 and app.instrument_of_locate(2) == -1
    assert app.instrument_of_locate(999) is None


def test_gap_is_visible_in_sequence_numbers():
    msgs = encode_all(random_flow(random.Random(5), 200))
    packets = ref.packets_of(msgs, first_seq=1, per_packet=20)
    app = itch.ItchBookApplier(strict=False)
    expected = 1
    gaps = []
    for i, p in enumerate(packets):
        if i == 3:
            continue                 # lost on the wire
        res = app.apply_packet(p)
        if res.seq != expected:
            gaps.append((expected, res.seq))
        expected = res.next_seq
    first_lost = 1 + 3 * 20
    assert gaps == [(first_lost, first_lost + 20)]
    hb = app.apply_packet(ref.encode_packet("TEST000001", expected, []))
    assert hb.is_heartbeat and hb.seq == expected == hb.next_seq
    end = app.apply_packet(ref.encode_packet("TEST000001", expected, [], count=0xFFFF))
    assert end.is_end_of_session and end.count == 0 and end.next_seq == expected


def test_sequence_numbers_are_u64():
    msgs = [itch.encode_add_order(1, 0, 1, 7, "B", 5, "AAPL", 100), itch.encode_order_delete(1, 0, 2, 7)]
    pkt = itch.encode_packet("S", 2**64 - 1, msgs)
    res = itch.ItchBookApplier().apply_packet(pkt)
    assert res.seq == 2**64 - 1 and res.next_seq == 1 == ref.RefBookApplier().apply_packet(pkt)["next_seq"]


def test_halts():
    b = itch.MoldPacketBuilder("S", 1)
    b.stock_directory(7, 0, 1, "MSFT")
    b.trading_action(7, 0, 2, "MSFT", "H")
    p1 = b.flush()[0]
    b.trading_action(7, 0, 3, "MSFT", "P")        # still not trading: no change
    b.add_order(7, 0, 4, 1, "B", 100, "MSFT", 500)
    p2 = b.flush()[0]
    b.trading_action(7, 0, 5, "MSFT", "T")
    b.trading_action(8, 0, 6, "GOOG", "H")         # unseen locate: registered from H
    p3 = b.flush()[0]
    app = itch.ItchBookApplier()
    r1 = app.apply_packet(p1)
    assert r1.halts_changed == (0,) and app.is_halted(0)
    r2 = app.apply_packet(p2)
    assert r2.halts_changed == () and app.is_halted(0) and r2.top_changed == (0,)
    r3 = app.apply_packet(p3)
    assert r3.halts_changed == (0, 1) and not app.is_halted(0) and app.is_halted(1)
    assert app.symbols == ["MSFT", "GOOG"]


def test_strict_state_errors_stop_the_packet():
    ts = 1
    base = [itch.encode_add_order(1, 0, ts, 1, "B", 100, "AAPL", 500),
            itch.encode_add_order(1, 0, ts, 2, "S", 100, "AAPL", 600)]
    cases = [
        (itch.encode_order_delete(1, 0, ts, 99), itch.ItchUnknownOrderError),
        (itch.encode_add_order(1, 0, ts, 1, "B", 5, "AAPL", 500), itch.ItchDuplicateOrderError),
        (itch.encode_order_replace(1, 0, ts, 1, 2, 5, 500), itch.ItchDuplicateOrderError),
        (itch.encode_order_executed(1, 0, ts, 2, 101, 1), itch.ItchExcessSharesError),
        (itch.encode_order_cancel(1, 0, ts, 77, 1), itch.ItchUnknownOrderError),
    ]
    tail = itch.encode_order_delete(1, 0, ts, 1)
    for bad, cls in cases:
        pkt = itch.encode_packet("S", 10, base + [bad, tail])
        app, rapp = itch.ItchBookApplier(), ref.RefBookApplier()
        with pytest.raises(cls) as exc:
            app.apply_packet(pkt)
        with pytest.raises(ref.RefError) as rexc:
            rapp.apply_packet(pkt)
        e = exc.value
        assert type(rexc.value).__name__ == cls.__name__
        assert (e.applied, e.seq, e.offset) == (2, 12, 20 + 2 * 38 + 2) == \
            (rexc.value.applied, rexc.value.seq, rexc.value.offset)
        assert as_dict(e.result) == rexc.value.result
        assert e.result.next_seq == 12
        assert app.book("AAPL").levels(0) == [(500, 100)]   # the prefix stays, the tail is not applied
        # non-strict: counted, the rest applied
        app = itch.ItchBookApplier(strict=False)
        rapp = ref.RefBookApplier(strict=False)
        res = app.apply_packet(pkt)
        assert as_dict(res) == rapp.apply_packet(pkt) and res.anomalies == 1
        assert app.anomalies == 1
        books_equal(app, rapp)


def test_non_strict_flow_with_bad_messages_matches_reference():
    msgs = random_flow(random.Random(21), 3000, bad=0.05)
    app, rapp = itch.ItchBookApplier(strict=False), ref.RefBookApplier(strict=False)
    total = 0
    for p in ref.packets_of(encode_all(msgs), per_packet=13):
        res = app.apply_packet(p)
        assert as_dict(res) == rapp.apply_packet(p)
        total += res.anomalies
    assert total > 50 and app.anomalies == total
    books_equal(app, rapp)


FRAMING_CASES = [
    (b"SESSION001" + b"\x00" * 7, itch.ItchTruncatedError, 0),                       # short header
    (GOLDEN_PACKET[:20 + 1], itch.ItchTruncatedError, 20),                            # half a length
    (GOLDEN_PACKET[:20 + 2 + 10], itch.ItchTruncatedError, 20),                       # message cut
    (GOLDEN_PACKET[:18] + b"\x00\x03" + GOLDEN_PACKET[20:], itch.ItchTruncatedError, 20 + 38 + 33),
    (GOLDEN_PACKET[:18] + b"\x00\x01" + GOLDEN_PACKET[20:], itch.ItchPacketLengthError, 20 + 38),
    (GOLDEN_PACKET + b"\x00", itch.ItchPacketLengthError, len(GOLDEN_PACKET)),
    (GOLDEN_HEARTBEAT + b"x", itch.ItchPacketLengthError, 20),
    (GOLDEN_PACKET[:20] + b"\x00\x00" + GOLDEN_PACKET[22:], itch.ItchBadLengthError, 20),
    (GOLDEN_PACKET[:20] + b"\x00\x23" + GOLDEN_PACKET[22:], itch.ItchBadLengthError, 22),
    (GOLDEN_PACKET[:22] + b"z" + GOLDEN_PACKET[23:], itch.ItchUnknownMessageError, 22),
    (GOLDEN_PACKET[:22 + 19] + b"Q" + GOLDEN_PACKET[22 + 20:], itch.ItchFieldError, 22 + 19),
    (GOLDEN_PACKET[:22 + 24] + b"\x00" + GOLDEN_PACKET[22 + 25:], itch.ItchFieldError, 22 + 24),
]


@pytest.mark.parametrize("pkt,cls,offset", FRAMING_CASES)
def test_framing_errors_are_specific_and_apply_nothing(pkt, cls, offset):
    app = itch.ItchBookApplier()
    with pytest.raises(cls) as exc:
        app.apply_packet(pkt)
    assert exc.value.offset == offset
    assert app.books == [] and app.order_count == 0 and app.messages == 0
    with pytest.raises(cls):
        itch.decode_packet(pkt)
    with pytest.raises(ref.RefError) as rexc:
        ref.decode_packet(pkt)
    assert type(rexc.value).__name__ == cls.__name__ and rexc.value.offset == offset
    assert issubclass(cls, itch.ItchDecodeError) and issubclass(cls, ValueError)


def test_field_errors_name_the_field():
    bad_state = bytearray(itch.encode_trading_action(1, 0, 1, "AAPL", "H"))
    bad_state[19] = ord("X")
    with pytest.raises(itch.ItchFieldError, match="trading state") as exc:
        itch.decode_message(bytes(bad_state))
    assert exc.value.offset == 19 and exc.value.msg_type == "H"
    bad_event = itch.encode_system_event(0, 0, 1, "O")[:-1] + b"Z"
    with pytest.raises(itch.ItchFieldError, match="event code"):
        itch.decode_message(bad_event)
    bad_printable = bytearray(itch.encode_order_executed_with_price(1, 0, 1, 1, 1, 1, "Y", 5))
    bad_printable[31] = ord("?")
    with pytest.raises(itch.ItchFieldError, match="printable"):
        itch.decode_message(bytes(bad_printable))
    with pytest.raises(itch.ItchTruncatedError):
        itch.decode_message(b"")


# ---------------------------------------------------------------------------
# Fuzz: arbitrary and mutated packets, compiled vs reference
# ---------------------------------------------------------------------------

def _mutate_packet(rng: random.Random, pkt: bytes, others) -> bytes:
    b = bytearray(pkt)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        elif op == 3 and len(b) >= 20:
            b[18:20] = struct.pack(">H", rng.choice([0, 1, 2, 0xFFFF, rng.randrange(65536)]))
        elif op == 4 and len(b) > 22:
            # corrupt one block's length field or type byte
            i = rng.randrange(20, len(b) - 2)
            if rng.random() < 0.5:
                b[i:i + 2] = struct.pack(">H", rng.choice([0, 1, 11, 19, 36, 44, 50, 65535]))
            else:
                b[i] = rng.choice(b"SRHAFECXDUPYLVWKJhQBINOz\x00")
        elif op == 5 and len(b) > 22:
            i = rng.randrange(20, len(b))
            b[i] = rng.choice(b" \x00\x7f\x80BSHPQTYN")
        elif op == 6:
            other = rng.choice(others)
            cut = rng.randrange(min(len(b), len(other)) + 1)
            b = b[:cut] + bytearray(other[cut:])
        elif op == 7:
            b = bytearray(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        elif len(b) > 30:
            # shuffle the message order of a real packet
            try:
                session, seq, count, msgs = ref.split_packet(bytes(b))
                ms = [m for _, m in msgs]
                rng.shuffle(ms)
                b = bytearray(ref.encode_packet(session, seq, ms))
            except ref.RefError:
                pass
    return bytes(b)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120))
def test_fuzz_random_bytes(data):
    got = outcome(lambda d: as_dict(itch.ItchBookApplier(order_capacity=8).apply_packet(d)), data)
    assert got == outcome(lambda d: ref.RefBookApplier().apply_packet(d), data)
    assert outcome(itch.decode_packet, data) == outcome(ref.decode_packet, data)
    assert outcome(itch.decode_message, data) == outcome(ref.decode_message, data)


_SEED_PACKETS = ref.packets_of(encode_all(random_flow(random.Random(8), 600)), per_packet=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SEED_PACKETS), st.integers(0, 2**32))
def test_fuzz_mutated_packets(pkt, seed):
    data = _mutate_packet(random.Random(seed), pkt, _SEED_PACKETS)
    assert outcome(itch.decode_packet, data) == outcome(ref.decode_packet, data)
    app = itch.ItchBookApplier(order_capacity=8, strict=seed % 2 == 0)
    rapp = ref.RefBookApplier(strict=seed % 2 == 0)
    got = outcome(lambda d: as_dict(app.apply_packet(d)), data)
    assert got == outcome(rapp.apply_packet, data)


@pytest.mark.slow
def test_fuzz_seeded_mutation_loop_itch():
    """>= 30,000 mutated packets through apply_packet and decode_packet, in lockstep with
    the reference (a strict and a non-strict pair whose state carries across inputs)."""
    rng = random.Random(4242)
    flow = random_flow(rng, 6000, bad=0.01)
    seeds = ref.packets_of(encode_all(flow), per_packet=8)
    # and real order flow: the first frames of the Bitfinex L3 feed as ITCH
    frames = json.loads(shared_file("L3_feed.json").read_text())[:3000]
    seeds += ref.packets_of(encode_all(ref.bitfinex_l3_to_itch(frames, locate=9)), per_packet=8)
    pairs = [(itch.ItchBookApplier(order_capacity=64), ref.RefBookApplier()),
             (itch.ItchBookApplier(order_capacity=64, strict=False), ref.RefBookApplier(strict=False))]
    kinds: dict[str, int] = {}
    tail = b"\xa5" * 24
    n = 30_000
    t0 = time.perf_counter()
    for i in range(n):
        base = seeds[i % len(seeds)]
        data = base if i % 10 == 0 else _mutate_packet(rng, base, seeds)
        app, rapp = pairs[i % 2]
        # from a slice of a larger buffer: bytes past the end must not matter
        view = memoryview(bytearray(data) + tail)[:len(data)]
        got = outcome(lambda d, app=app: as_dict(app.apply_packet(d)), view)
        exp = outcome(rapp.apply_packet, data)
        assert got == exp, (i, data)
        if i % 7 == 0:
            assert outcome(itch.decode_packet, view) == outcome(ref.decode_packet, data)
        k = got if isinstance(got, str) else "ok"
        kinds[k] = kinds.get(k, 0) + 1
        if i % 3000 == 0:
            books_equal(app, rapp)
    elapsed = time.perf_counter() - t0
    for app, rapp in pairs:
        books_equal(app, rapp)
        assert app.order_count == len(rapp.orders)
    print("fuzz outcome kinds:", dict(sorted(kinds.items(), key=str)))
    assert elapsed < 60
    for k in ("ok", "ItchTruncatedError", "ItchPacketLengthError", "ItchBadLengthError",
              "ItchUnknownMessageError", "ItchFieldError", "ItchUnknownOrderError"):
        assert kinds.get(k, 0) > 20, kinds


def test_stub_covers_the_public_names():
    import ast
    from pathlib import Path
    tree = ast.parse((Path(itch.__file__).parent / "itch.pyi").read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    public = {n for n in dir(itch) if not n.startswith("_")
              and type(getattr(itch, n)).__name__ != "module"}
    assert public <= names, sorted(public - names)


def test_price_divisor_keeps_books_in_instrument_ticks():
    """A $0.01-tick instrument: wire price4 1012300 ($101.23) is book tick 10123."""
    book = L2Book("AAPL")
    app = itch.ItchBookApplier(books=[book], strict=False)
    app.set_price_divisor("AAPL", 100)
    assert app.price_divisor("AAPL") == 100
    b = itch.MoldPacketBuilder("S", 1)
    b.stock_directory(3, 0, 1, "AAPL")
    b.add_order(3, 0, 2, 1, "B", 100, "AAPL", 1012300)
    b.add_order(3, 0, 3, 2, "S", 50, "AAPL", 1012500)
    b.order_executed(3, 0, 4, 2, 20, 99)
    r = app.apply_packet(b.flush()[0])
    assert (book.best_bid, book.best_ask, book.best_ask_size) == (10123, 10125, 30)
    assert r.anomalies == 0 and list(r.trades["price"]) == [10125]
    b.add_order(3, 0, 5, 3, "B", 10, "AAPL", 1012350)   # half a tick: counted, rounded down
    r = app.apply_packet(b.flush()[0])
    assert r.anomalies == 1 and book.size_at(0, 10123) == 110
    with pytest.raises(ValueError, match="price4_per_tick"):
        app.set_price_divisor("AAPL", 0)
    with pytest.raises(KeyError, match="MSFT"):
        app.set_price_divisor("MSFT", 100)
