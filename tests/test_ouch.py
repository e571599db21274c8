"""OUCH 4.2 + SoupBinTCP 3.00 codec (core_ext.ouch) against the pure-Python reference.

Golden bytes below are written by hand from the tables in
/work/shared/protocols/OUCH-SOUPBINTCP.md, not produced by either codec.
"""
from __future__ import annotations

import random
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext import ouch
from tests.reference import ouch_ref as ref

# ---------------------------------------------------------------------------
# Field strategies generated from the reference tables
# ---------------------------------------------------------------------------

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))

PACK_IN = {"O": ouch.pack_enter_order, "U": ouch.pack_replace_order,
           "X": ouch.pack_cancel_order, "M": ouch.pack_modify_order}
PACK_OUT = {"S": ouch.pack_system_event, "A": ouch.pack_accepted, "U": ouch.pack_replaced,
            "C": ouch.pack_canceled, "E": ouch.pack_executed, "J": ouch.pack_rejected}


def _field_strategies(table, t):
    fmt, kinds = table[t]
    parts = ref._split(fmt)[1:]
    out = []
    for (kind, allowed), code in zip(kinds, parts, strict=True):
        if kind == "a":
            width = int(code[:-1])
            out.append(st.text(alphabet=PRINTABLE, max_size=width).map(lambda s: s.rstrip(" ")))
        elif kind == "c":
            out.append(st.sampled_from(sorted(allowed)))
        else:
            bits = {"I": 32, "Q": 64}[code]
            out.append(st.integers(0, (1 << bits) - 1))
    return st.tuples(*out)


def random_fields(rng: random.Random, table, t) -> tuple:
    """Valid field values for message type t, drawn from rng (no hypothesis)."""
    fmt, kinds = table[t]
    out = []
    for (kind, allowed), code in zip(kinds, ref._split(fmt)[1:], strict=True):
        if kind == "a":
            width = int(code[:-1])
            out.append("".join(rng.choice(PRINTABLE) for _ in range(rng.randrange(width + 1)))
                       .rstrip(" "))
        elif kind == "c":
            out.append(rng.choice(sorted(allowed)))
        else:
            out.append(rng.randrange(1 << {"I": 32, "Q": 64}[code]))
    return tuple(out)


def message_strategy(direction):
    table = ref.INBOUND if direction == "in" else ref.OUTBOUND
    return st.one_of(*[
        _field_strategies(table, t).map(lambda f, t=t: (t,) + f) for t in sorted(table)
    ])


def pack(direction, fields, framed=False):
    table = PACK_IN if direction == "in" else PACK_OUT
    buf = bytearray(128)
    end = table[fields[0]](buf, 0, *fields[1:], framed=framed)
    return bytes(buf[:end])


def decode(direction, msg):
    return ouch.decode_inbound(msg) if direction == "in" else ouch.decode_outbound(msg)


def ref_decode(direction, msg):
    return ref.decode_inbound(msg) if direction == "in" else ref.decode_outbound(msg)


def outcome(fn, data):
    """The decoded value, or the error class name (compiled errors must be codec errors)."""
    try:
        return fn(data)
    except ouch.OuchDecodeError as exc:
        return type(exc).__name__
    except ref.RefError as exc:
        return type(exc).__name__


# ---------------------------------------------------------------------------
# Golden messages
# ---------------------------------------------------------------------------

GOLDEN_ENTER = (b"O" + b"ORD0000000001 " + b"B" + b"\x00\x00\x00\x64" + b"AAPL    "
                + b"\x00\x16\xed\x24" + b"\x00\x00\x00\x00" + b"ABCD" + b"Y" + b"A" + b"N"
                + b"\x00\x00\x00\x00" + b"N" + b"R")
GOLDEN_CANCEL = b"X" + b"ORD0000000001 " + b"\x00\x00\x00\x00"
GOLDEN_EXECUTED = (b"E" + b"\x00\x00\x1f\x1a\xce\xd9\xf0\x00" + b"ORD0000000001 "
                   + b"\x00\x00\x00\x64" + b"\x00\x16\xed\x24" + b"A"
                   + b"\x00\x00\x00\x00\x3a\xde\x68\xb1")
GOLDEN_REJECTED = b"J" + b"\x00\x00\x1f\x1a\xce\xd9\xf0\x00" + b"ORD0000000001 " + b"H"
GOLDEN_LOGIN = (b"\x00\x2f" + b"L" + b"USER01" + b"SECRET    " + b"          "
                + b" " * 19 + b"1")
GOLDEN_LOGIN_ACCEPTED = b"\x00\x1f" + b"A" + b"  SESSION1" + b" " * 17 + b"123"


def test_golden_lengths_match_spec():
    assert len(GOLDEN_ENTER) == 49 == ouch.LENGTHS_INBOUND["O"]
    assert len(GOLDEN_CANCEL) == 19 == ouch.LENGTHS_INBOUND["X"]
    assert len(GOLDEN_EXECUTED) == 40 == ouch.LENGTHS_OUTBOUND["E"]
    assert len(GOLDEN_REJECTED) == 24 == ouch.LENGTHS_OUTBOUND["J"]
    assert ouch.LENGTHS_INBOUND == {"O": 49, "U": 47, "X": 19, "M": 20}
    assert ouch.LENGTHS_OUTBOUND == {"S": 10, "A": 66, "U": 80, "C": 28, "E": 40, "J": 24}


def test_golden_enter_order():
    buf = bytearray(64)
    end = ouch.pack_enter_order(buf, 0, "ORD0000000001", "B", 100, "AAPL", 1_502_500, tif=0,
                                firm="ABCD", display="Y", capacity="A", iso="N", min_qty=0,
                                cross_type="N", customer_type="R")
    assert bytes(buf[:end]) == b"\x00\x32U" + GOLDEN_ENTER
    assert ouch.decode_inbound(GOLDEN_ENTER) == (
        "O", "ORD0000000001", "B", 100, "AAPL", 1_502_500, 0, "ABCD", "Y", "A", "N", 0, "N", "R")
    assert ouch.price4_to_str(1_502_500) == "150.2500"


def test_golden_cancel_and_executed_and_rejected():
    buf = bytearray(64)
    end = ouch.pack_cancel_order(buf, 0, "ORD0000000001", 0, framed=False)
    assert bytes(buf[:end]) == GOLDEN_CANCEL
    assert ouch.decode_inbound(GOLDEN_CANCEL) == ("X", "ORD0000000001", 0)
    ts = 34_200 * 10**9  # 09:30:00 in ns since midnight
    end = ouch.pack_executed(buf, 0, ts, "ORD0000000001", 100, 1_502_500, "A", 987654321)
    assert bytes(buf[:end]) == b"\x00\x29S" + GOLDEN_EXECUTED
    assert ouch.decode_outbound(GOLDEN_EXECUTED) == (
        "E", ts, "ORD0000000001", 100, 1_502_500, "A", 987654321)
    end = ouch.pack_rejected(buf, 0, ts, "ORD0000000001", "H", framed=False)
    assert bytes(buf[:end]) == GOLDEN_REJECTED
    assert ouch.decode_outbound(GOLDEN_REJECTED) == ("J", ts, "ORD0000000001", "H")


def test_golden_soup_login():
    buf = bytearray(64)
    end = ouch.pack_login_request(buf, 0, "USER01", "SECRET", "", 1)
    assert bytes(buf[:end]) == GOLDEN_LOGIN
    assert ouch.decode_login_request(GOLDEN_LOGIN[3:]) == ("USER01", "SECRET", "", 1)
    end = ouch.pack_login_accepted(buf, 0, "SESSION1", 123)
    assert bytes(buf[:end]) == GOLDEN_LOGIN_ACCEPTED
    assert ouch.decode_login_accepted(GOLDEN_LOGIN_ACCEPTED[3:]) == ("SESSION1", 123)
    # tolerant parse: left-justified everything and NUL padding
    payload = b"USER01" + b"SECRET\x00\x00\x00\x00" + b"SESSION1  " + b"42" + b"\x00" * 18
    assert ouch.decode_login_request(payload) == ("USER01", "SECRET", "SESSION1", 42)
    end = ouch.pack_login_rejected(buf, 0, "A")
    assert bytes(buf[:end]) == b"\x00\x02JA"
    assert ouch.decode_login_rejected(b"S") == "S"


def test_golden_soup_control_packets():
    buf = bytearray(64)
    for fn, expected in [(ouch.pack_server_heartbeat, b"\x00\x01H"),
                         (ouch.pack_client_heartbeat, b"\x00\x01R"),
                         (ouch.pack_logout_request, b"\x00\x01O"),
                         (ouch.pack_end_of_session, b"\x00\x01Z")]:
        assert bytes(buf[:fn(buf, 0)]) == expected
    assert bytes(buf[:ouch.pack_debug(buf, 0, "hi")]) == b"\x00\x03+hi"
    assert bytes(buf[:ouch.pack_sequenced(buf, 0, b"xyz")]) == b"\x00\x04Sxyz"
    assert bytes(buf[:ouch.pack_unsequenced(buf, 0, b"")]) == b"\x00\x01U"


# ---------------------------------------------------------------------------
# Round trips against the reference (every message type)
# ---------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_strategy("in"))
def test_roundtrip_inbound(fields):
    msg = pack("in", fields)
    assert msg == ref.encode("in", fields)
    assert len(msg) == ouch.LENGTHS_INBOUND[fields[0]]
    assert ouch.decode_inbound(msg) == fields == ref.decode_inbound(msg)
    framed = pack("in", fields, framed=True)
    assert framed == struct.pack(">Hc", len(msg) + 1, b"U") + msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_strategy("out"))
def test_roundtrip_outbound(fields):
    msg = pack("out", fields)
    assert msg == ref.encode("out", fields)
    assert len(msg) == ouch.LENGTHS_OUTBOUND[fields[0]]
    assert ouch.decode_outbound(msg) == fields == ref.decode_outbound(msg)
    framed = pack("out", fields, framed=True)
    assert framed == struct.pack(">Hc", len(msg) + 1, b"S") + msg
    # through a memoryview slice of a larger buffer: no dependence on bytes past the end
    big = bytearray(framed + b"\xff" * 32)
    assert ouch.decode_outbound(memoryview(big)[3:len(framed)]) == fields


@pytest.mark.parametrize("t", sorted(ref.INBOUND))
def test_every_inbound_type_roundtrips(t):
    rng = random.Random(t)
    for _ in range(50):
        fields = (t,) + random_fields(rng, ref.INBOUND, t)
        msg = pack("in", fields)
        assert ouch.decode_inbound(msg) == fields == ref.decode_inbound(msg)


@pytest.mark.parametrize("t", sorted(ref.OUTBOUND))
def test_every_outbound_type_roundtrips(t):
    rng = random.Random(t)
    for _ in range(50):
        fields = (t,) + random_fields(rng, ref.OUTBOUND, t)
        msg = pack("out", fields)
        assert ouch.decode_outbound(msg) == fields == ref.decode_outbound(msg)


def test_writer_appends_and_reuses_buffer():
    w = ouch.OuchWriter(capacity=128)
    w.login_request("USER01", "SECRET", "", 1)
    for i in range(50):  # forces growth
        w.enter_order(f"T{i}", "B", 10 + i, "AAPL", 1_000_000 + i)
    w.cancel_order("T3", 0)
    w.client_heartbeat()
    data = w.take()
    assert w.pending == 0 and w.packets == 53
    framer = ouch.SoupFramer(role="server")
    packets = framer.feed(data)
    assert [p[0] for p in packets] == ["L"] + ["U"] * 51 + ["R"]
    assert ouch.decode_inbound(packets[1][1])[:4] == ("O", "T0", "B", 10)
    assert ouch.decode_inbound(packets[51][1]) == ("X", "T3", 0)
    w.server_heartbeat()
    assert bytes(w.view()) == b"\x00\x01H"


def test_side_accepts_common_enums():
    buf = bytearray(64)
    end = ouch.pack_modify_order(buf, 0, "T", 1, 5, framed=False)  # SIDE_SELL
    assert ouch.decode_inbound(bytes(buf[:end])) == ("M", "T", "S", 5)
    end = ouch.pack_modify_order(buf, 0, "T", 0, 5, framed=False)  # SIDE_BUY
    assert ouch.decode_inbound(bytes(buf[:end]))[2] == "B"


# ---------------------------------------------------------------------------
# Errors: one class per failure kind
# ---------------------------------------------------------------------------

def test_decode_errors_are_specific():
    with pytest.raises(ouch.OuchTruncatedError):
        ouch.decode_inbound(b"")
    with pytest.raises(ouch.OuchTruncatedError) as exc:
        ouch.decode_inbound(GOLDEN_ENTER[:-1])
    assert exc.value.msg_type == "O"
    with pytest.raises(ouch.OuchBadLengthError):
        ouch.decode_inbound(GOLDEN_ENTER + b" ")
    with pytest.raises(ouch.OuchUnknownMessageError) as exc:
        ouch.decode_inbound(b"Z" + GOLDEN_ENTER[1:])
    assert exc.value.msg_type == "Z" and exc.value.offset == 0
    bad_side = GOLDEN_ENTER[:15] + b"Q" + GOLDEN_ENTER[16:]
    with pytest.raises(ouch.OuchFieldError) as exc:
        ouch.decode_inbound(bad_side)
    assert exc.value.offset == 15 and "side" in str(exc.value)
    bad_token = GOLDEN_ENTER[:3] + b"\x00" + GOLDEN_ENTER[4:]
    with pytest.raises(ouch.OuchFieldError) as exc:
        ouch.decode_inbound(bad_token)
    assert exc.value.offset == 1
    with pytest.raises(ouch.OuchUnknownMessageError):   # 'O' is not an outbound message
        ouch.decode_outbound(GOLDEN_ENTER)
    for cls in (ouch.OuchTruncatedError, ouch.OuchFieldError, ouch.SoupPacketLengthError,
                ouch.SoupStreamBrokenError):
        assert issubclass(cls, ouch.OuchDecodeError) and issubclass(cls, ValueError)


def test_encode_errors_are_specific():
    buf = bytearray(64)
    with pytest.raises(ouch.OuchEncodeError):
        ouch.pack_enter_order(buf, 0, "T", "X", 1, "AAPL", 1)       # side not B/S/T/E
    with pytest.raises(ouch.OuchEncodeError):
        ouch.pack_enter_order(buf, 0, "T" * 15, "B", 1, "AAPL", 1)  # token too long
    with pytest.raises(ouch.OuchEncodeError):
        ouch.pack_enter_order(buf, 0, "T", "B", -1, "AAPL", 1)      # negative shares
    with pytest.raises(ouch.OuchEncodeError):
        ouch.pack_enter_order(buf, 0, "T", "B", 1, "AAPLé", 1)      # non-ASCII stock
    with pytest.raises(ouch.OuchEncodeError):
        ouch.pack_enter_order(buf, 0, "T", "B", 1, "AAPL", 1, capacity="Z")
    with pytest.raises(ouch.OuchBufferTooSmallError):
        ouch.pack_enter_order(bytearray(40), 0, "T", "B", 1, "AAPL", 1)
    with pytest.raises(ouch.OuchBufferTooSmallError):
        ouch.pack_cancel_order(buf, 60, "T")
    with pytest.raises(ouch.OuchEncodeError):
        ouch.pack_canceled(buf, 0, 1, "T", 1, "?")                   # cancel reason
    with pytest.raises(ouch.OuchEncodeError):
        ouch.pack_login_rejected(buf, 0, "X")
    with pytest.raises(TypeError):
        ouch.pack_cancel_order(buf, 0, 12345)
    assert issubclass(ouch.OuchBufferTooSmallError, ouch.OuchEncodeError)


def test_soup_field_errors():
    with pytest.raises(ouch.SoupFieldError):
        ouch.decode_login_request(b"USER01SECRET    " + b" " * 10 + b"12a".rjust(20))
    with pytest.raises(ouch.SoupFieldError):
        ouch.decode_login_accepted(b"SESSION1  " + b"99999999999999999999")  # > 2**64-1
    with pytest.raises(ouch.SoupPacketLengthError):
        ouch.decode_login_accepted(b"short")
    with pytest.raises(ouch.SoupFieldError):
        ouch.decode_login_rejected(b"Q")


# ---------------------------------------------------------------------------
# SoupFramer: streaming
# ---------------------------------------------------------------------------

def _sample_stream(rng: random.Random, n: int) -> tuple[bytes, list]:
    w = ouch.OuchWriter()
    w.login_accepted("SESSION1", 1)
    for i in range(n):
        k = rng.randrange(6)
        if k == 0:
            w.accepted(i, f"T{i}", "B", 100, "AAPL", 1_000_000, 0, "FIRM", "Y", i, "A", "N", 0,
                       "N", "L")
        elif k == 1:
            w.executed(i, f"T{i}", 10, 1_000_000, "A", i)
        elif k == 2:
            w.canceled(i, f"T{i}", 10, "U")
        elif k == 3:
            w.server_heartbeat()
        elif k == 4:
            w.debug(bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
        else:
            w.sequenced(bytes(rng.randrange(256) for _ in range(rng.randrange(200))))
    w.end_of_session()
    data = w.take()
    packets, err, rest = ref.soup_split(data, role="client")
    assert err is None and rest == b""
    return data, packets


def _feed_chunks(framer, data, cuts, out=None):
    out = [] if out is None else out
    prev = 0
    for c in list(cuts) + [len(data)]:
        out += framer.feed(data[prev:c])
        prev = c
    return out


def test_framer_whole_and_byte_at_a_time_agree():
    rng = random.Random(7)
    data, expected = _sample_stream(rng, 300)
    assert ouch.SoupFramer(role="client").feed(data) == expected
    f = ouch.SoupFramer(role="client")
    assert _feed_chunks(f, data, range(1, len(data))) == expected
    assert f.buffered == 0 and f.packets == len(expected) and f.bytes_fed == len(data)
    f = ouch.SoupFramer(role="client")
    assert _feed_chunks(f, memoryview(bytearray(data)), sorted(rng.sample(range(len(data)), 200))) \
        == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.integers(0, 5000), max_size=30))
def test_framer_any_chunking(seed, cuts):
    data, expected = _sample_stream(random.Random(seed), 20)
    cuts = sorted({c for c in cuts if c < len(data)})
    assert _feed_chunks(ouch.SoupFramer(role="client"), data, cuts) == expected


def test_framer_errors():
    good = b"\x00\x01H" + b"\x00\x04Sabc"
    cases = [
        (b"\x00\x00X", ouch.SoupPacketLengthError),                 # length 0
        (b"\x00\x02Qx", ouch.SoupUnknownPacketError),               # unknown type
        (b"\x00\x02Hx", ouch.SoupPacketLengthError),                # heartbeat with payload
        (b"\x00\x03Jxx", ouch.SoupPacketLengthError),               # login rejected is 2
        (b"\x00\x05Uabcd", ouch.SoupUnknownPacketError),            # client packet to a client
    ]
    for bad, cls in cases:
        for chunked in (False, True):
            f = ouch.SoupFramer(role="client")
            got = []
            stream = good + bad + good
            with pytest.raises(cls) as exc:
                if chunked:
                    for i in range(len(stream)):
                        got += f.feed(stream[i:i + 1])
                else:
                    f.feed(stream)
            got += exc.value.packets
            assert got == [("H", b""), ("S", b"abc")]
            assert exc.value.offset == len(good)
            assert f.broken
            with pytest.raises(ouch.SoupStreamBrokenError):
                f.feed(b"\x00\x01H")
            f.reset()
            assert f.feed(b"\x00\x01H") == [("H", b"")]
    f = ouch.SoupFramer(max_packet=10)
    with pytest.raises(ouch.SoupPacketLengthError):
        f.feed(b"\x00\x0bS" + b"x" * 10)
    assert ouch.SoupFramer(max_packet=10).feed(b"\x00\x0aS" + b"x" * 9) == [("S", b"x" * 9)]


def test_framer_role_server_accepts_client_packets():
    w = ouch.OuchWriter()
    w.login_request("U", "P", "", 0)
    w.enter_order("T1", "S", 1, "MSFT", 5)
    w.logout_request()
    f = ouch.SoupFramer(role="server")
    assert [t for t, _ in f.feed(w.take())] == ["L", "U", "O"]
    with pytest.raises(ouch.SoupUnknownPacketError):
        f.feed(b"\x00\x01H")


# ---------------------------------------------------------------------------
# Price helpers
# ---------------------------------------------------------------------------

def test_price_helpers():
    assert ouch.price4_from_str("12.34") == 123_400
    assert ouch.price4_from_str("0.0001") == 1
    assert ouch.price4_from_str("7") == 70_000
    assert ouch.price4_from_str("12.340000") == 123_400
    for bad in ("-1", "1.23456", "abc", "", ".", "1e3", "١٢"):
        with pytest.raises(ouch.OuchEncodeError):
            ouch.price4_from_str(bad)
    assert ouch.price4_to_str(123_400) == "12.3400"
    assert ouch.price4_to_ticks(123_400, 100) == 1234
    assert ouch.ticks_to_price4(1234, 100) == 123_400
    with pytest.raises(ouch.OuchFieldError):
        ouch.price4_to_ticks(123_401, 100)
    no_price = -(2**63)
    assert ouch.price4_to_ticks(ouch.MARKET_PRICE) == no_price
    assert ouch.ticks_to_price4(no_price) == ouch.MARKET_PRICE
    with pytest.raises(ouch.OuchEncodeError):
        ouch.ticks_to_price4(2**40)


# ---------------------------------------------------------------------------
# Fuzz: arbitrary and mutated bytes, compiled vs reference
# ---------------------------------------------------------------------------

def _seed_messages(rng):
    seeds = []
    for direction, table in (("in", ref.INBOUND), ("out", ref.OUTBOUND)):
        for t in table:
            for _ in range(3):
                seeds.append(pack(direction, (t,) + random_fields(rng, table, t)))
    return seeds


def _mutate(rng: random.Random, data: bytes, seeds) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 3 and b:
            b[0] = rng.choice(b"OUXMSACEJZ+ \x00\xff")
        elif op == 4 and b:
            i = rng.randrange(len(b))
            b[i] = rng.choice(b" \x00\x7f\x80BSTEYNLD")
        elif op == 5:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            b = b[:cut] + bytearray(other[cut:])
        elif op == 6 and b:
            i = rng.randrange(len(b))
            del b[i]
        else:
            b = bytearray(rng.randrange(256) for _ in range(rng.randrange(0, 90)))
    return bytes(b)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=100))
def test_fuzz_random_bytes_match_reference(data):
    for direction in ("in", "out"):
        got = outcome(lambda d, direction=direction: decode(direction, d), data)
        assert got == outcome(lambda d, direction=direction: ref_decode(direction, d), data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_strategy("out"), st.integers(0, 2**32))
def test_fuzz_mutated_messages_match_reference(fields, seed):
    rng = random.Random(seed)
    data = _mutate(rng, pack("out", fields), [pack("out", fields)])
    for direction in ("in", "out"):
        assert outcome(lambda d, direction=direction: decode(direction, d), data) == \
            outcome(lambda d, direction=direction: ref_decode(direction, d), data)


@pytest.mark.slow
def test_fuzz_seeded_mutation_loop_ouch():
    rng = random.Random(20240601)
    seeds = _seed_messages(rng)
    n = 30_000
    kinds = {}
    tail = bytearray(b"\xa5" * 16)
    t0 = time.perf_counter()
    for _ in range(n):
        data = _mutate(rng, rng.choice(seeds), seeds)
        # decode from a slice of a larger buffer with junk after it: no read past the end
        big = bytearray(data) + tail
        view = memoryview(big)[:len(data)]
        for direction in ("in", "out"):
            got = outcome(lambda d, direction=direction: decode(direction, d), view)
            assert got == outcome(lambda d, direction=direction: ref_decode(direction, d), data), (direction, data)
            kinds[got if isinstance(got, str) else "ok"] = kinds.get(
                got if isinstance(got, str) else "ok", 0) + 1
    elapsed = time.perf_counter() - t0
    assert elapsed < 60
    # the loop exercised every failure kind and some successes
    for k in ("ok", "OuchTruncatedError", "OuchUnknownMessageError", "OuchBadLengthError",
              "OuchFieldError"):
        assert kinds.get(k, 0) > 50, kinds


def _mutate_stream(rng, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(0, 3)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2 and b:
            i = rng.randrange(len(b))
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        elif op == 3 and len(b) > 2:
            i = rng.randrange(len(b) - 1)
            b[i:i + 2] = struct.pack(">H", rng.choice([0, 1, 2, 31, 47, 65535, rng.randrange(65536)]))
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
    return bytes(b)


@pytest.mark.slow
def test_fuzz_seeded_soup_streams():
    rng = random.Random(99)
    bases = [_sample_stream(random.Random(s), rng.randrange(1, 6))[0] for s in range(200)]
    n = 30_000
    kinds = {}
    t0 = time.perf_counter()
    for i in range(n):
        data = _mutate_stream(rng, rng.choice(bases))
        role = ("client", "any", "server")[i % 3]
        max_packet = 65535 if i % 4 else 64
        exp_packets, exp_err, _ = ref.soup_split(data, max_packet, role)
        f = ouch.SoupFramer(max_packet=max_packet, role=role)
        got, err = [], None
        try:
            if i % 2:
                cut = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, 4)))
                _feed_chunks(f, data, cut, got)
            else:
                got = f.feed(data)
        except ouch.OuchDecodeError as exc:
            got += exc.packets
            err = type(exc).__name__
        assert (got, err) == (exp_packets, exp_err), data
        kinds[err] = kinds.get(err, 0) + 1
        # and the payloads decode like the reference
        for t, payload in got:
            if t == "S":
                assert outcome(ouch.decode_outbound, payload) == outcome(ref.decode_outbound, payload)
            elif t == "A":
                assert outcome(ouch.decode_login_accepted, payload) == \
                    outcome(ref.decode_login_accepted, payload)
    assert time.perf_counter() - t0 < 60
    for k in (None, "SoupPacketLengthError", "SoupUnknownPacketError"):
        assert kinds.get(k, 0) > 100, kinds


def test_stub_covers_the_public_names():
    import ast
    from pathlib import Path
    tree = ast.parse((Path(ouch.__file__).parent / "ouch.pyi").read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    public = {n for n in dir(ouch) if not n.startswith("_")
              and type(getattr(ouch, n)).__name__ != "module"}
    assert public <= names, sorted(public - names)
