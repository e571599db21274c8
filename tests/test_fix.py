"""FIX 4.4 codec: encoder, streaming parser, dictionary validation.

Oracles: simplefix (an independent FIX implementation) both ways; the QuickFIX
acceptance-test definitions in ../shared/fix-at (every scripted message, the exact
BodyLengths QuickFIX expects, and the Reject reason/RefTagID/Text it sends for each
invalid message); a pure-Python framer written from the README's rules.
"""
from __future__ import annotations

import importlib.util
import random
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import simplefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext import fix, fix44_dict
from tests.conftest import REPO_ROOT, SHARED_FIX_AT

SOH = b"\x01"
T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000
T0_SEC = T0.strftime("%Y%m%d-%H:%M:%S").encode()
T0_MS = T0_SEC + b".000"

GARBLED_REASONS = {
    fix.FIX_GARBLED_BAD_BEGIN_STRING, fix.FIX_GARBLED_BAD_BODY_LENGTH, fix.FIX_GARBLED_BAD_CHECKSUM,
    fix.FIX_GARBLED_BAD_MSG_TYPE, fix.FIX_GARBLED_BAD_TAG, fix.FIX_GARBLED_MISSING_SOH,
    fix.FIX_GARBLED_BAD_DATA_LENGTH, fix.FIX_GARBLED_TOO_LARGE, fix.FIX_GARBLED_TRUNCATED,
}
REJECT_REASONS = set(fix.SESSION_REJECT_TEXT)
OWNED = {8, 9, 10, 35, 34, 43, 49, 52, 56, 122}
DATA_TAGS = set(fix44_dict.DATA_FIELDS) | set(fix44_dict.DATA_FIELDS.values())


# ---------------------------------------------------------------------------
# Reference framing (pure Python, from the README / FIX44-SESSION.md rules)
# ---------------------------------------------------------------------------

def _b(v) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def frame(fields, begin: bytes = b"FIX.4.4") -> bytes:
    """8=begin|9=len|<fields>|10=ccc| with BodyLength and CheckSum computed here."""
    body = b"".join(_b(t) + b"=" + _b(v) + SOH for t, v in fields)
    head = b"8=" + begin + SOH + b"9=" + str(len(body)).encode() + SOH
    msg = head + body
    return msg + b"10=%03d" % (sum(msg) % 256) + SOH


def split(raw: bytes) -> list[tuple[int, bytes]]:
    """Naive field split (no data fields)."""
    return [(int(f.split(b"=", 1)[0]), f.split(b"=", 1)[1]) for f in raw.split(SOH)[:-1]]


def results_summary(results):
    out = []
    for r in results:
        if isinstance(r, fix.FixMessage):
            out.append(("M", r.raw, tuple(r.fields())))
        else:
            assert isinstance(r, fix.FixGarbled)
            out.append(("G", r.reason, r.raw))
    return out


def parse_all(data: bytes, chunk: int | None = None, **kw):
    """Everything the parser returns for `data` fed in `chunk`-byte pieces, then flushed."""
    p = fix.FixParser(**kw)
    if chunk is None:
        out = p.parse(data)
    else:
        out = []
        for i in range(0, len(data), chunk):
            out.extend(p.parse(data[i:i + chunk]))
    out.extend(p.flush())
    assert p.pending == 0
    return out


def hb(seq=2, extra=(), sender="TW44", target="ISLD"):
    """A Heartbeat from the test client, as in the AT scripts."""
    fields = [(35, "0"), (34, seq), (49, sender), (52, T0_SEC), (56, target)]
    return frame(fields + list(extra))


def nos(extra=(), seq=2, body=None):
    """A NewOrderSingle from the test client, as in the AT scripts."""
    head = [(35, "D"), (34, seq), (49, "TW44"), (52, T0_SEC), (56, "ISLD")]
    if body is None:
        body = [(11, "ID"), (21, "3"), (40, "1"), (54, "1"), (55, "INTC"), (60, T0_SEC)]
    return frame(head + list(extra) + list(body))


# ---------------------------------------------------------------------------
# Acceptance-test definitions
# ---------------------------------------------------------------------------

AT_DIR = SHARED_FIX_AT / "definitions" / "server" / "fix44"
LINE_RE = re.compile(rb"^([IE])(?:\d+,)?(8=.*)$")
TIME_RE = re.compile(rb"<TIME([+-]\d+)?>")


def _at_dir() -> Path:
    if not AT_DIR.is_dir():
        pytest.fail(f"acceptance-test definitions {AT_DIR} are missing: tests need ../shared/fix-at")
    return AT_DIR


def _time_token(m: re.Match) -> bytes:
    shift = int(m.group(1) or 0)
    return (T0 + timedelta(seconds=shift)).strftime("%Y%m%d-%H:%M:%S").encode()


def at_lines(path: Path):
    """(kind, raw line without the I/E prefix, line number) for each message line."""
    out = []
    for no, line in enumerate(path.read_bytes().split(b"\n"), 1):
        line = line.rstrip(b"\r")
        m = LINE_RE.match(line)
        if m:
            out.append((m.group(1).decode(), m.group(2), no))
    return out


def at_message(kind: str, line: bytes) -> tuple[bytes, bool]:
    """The wire bytes of a scripted line, per the README; (bytes, carries_own_9_or_10).

    I lines: <TIME> tokens replaced; BodyLength and CheckSum filled in unless the line
    carries its own (then sent as written). E lines: what our acceptor sends for it:
    SendingTime/OrigSendingTime with milliseconds (the README: BodyLength is compared
    exactly and assumes ms), TransactTime as sent, 9 and 10 recomputed."""
    line = TIME_RE.sub(_time_token, line)
    own = re.search(rb"(^|\x01)(9|10)=", line) is not None
    if kind == "I" and own:
        return line, True
    fields = split(line)
    if kind == "I":
        return frame(fields[1:], begin=fields[0][1]), False
    norm = []
    for t, v in fields:
        if t in (9, 10):
            continue
        if t in (52, 122):
            v = T0_MS
        elif t in (60, 42):
            v = T0_SEC
        norm.append((t, v))
    return frame(norm[1:], begin=norm[0][1]), own


def at_files():
    return sorted(_at_dir().glob("*.def"))


def test_at_definitions_present():
    files = at_files()
    assert len(files) >= 40, files


@pytest.mark.parametrize("path", at_files(), ids=lambda p: p.stem)
def test_at_every_message_parses_whole_and_byte_by_byte(path):
    lines = at_lines(path)
    assert lines, path
    stream = b""
    expected = []
    for kind, line, no in lines:
        raw, own = at_message(kind, line)
        res = fix.FixParser().parse(raw)
        assert len(res) == 1, (no, res)
        r = res[0]
        if kind == "I" and own:
            # 2d / 3b: deliberately wrong BodyLength or CheckSum, sent as written.
            assert isinstance(r, fix.FixGarbled), (no, r)
            assert r.reason in (fix.FIX_GARBLED_BAD_CHECKSUM, fix.FIX_GARBLED_BAD_BODY_LENGTH,
                                fix.FIX_GARBLED_BAD_TAG), (no, r)
            assert raw.startswith(r.raw)
            expected.append(("G", r.reason, r.raw))
        else:
            assert isinstance(r, fix.FixMessage), (path.name, no, r)
            assert r.raw == raw
            assert [t for t, _ in r.fields()] == [t for t, _ in split(raw)]
            assert r.fields() == split(raw)
            expected.append(("M", raw, tuple(r.fields())))
        stream += raw
    # The whole script as one stream, whole and one byte at a time: same results.
    whole = results_summary(parse_all(stream))
    assert whole == expected
    assert results_summary(parse_all(stream, chunk=1)) == expected


@pytest.mark.parametrize("path", at_files(), ids=lambda p: p.stem)
def test_at_expected_body_lengths_match_quickfix(path):
    """Every E line that carries its own BodyLength: our framing of the same message
    (ms SendingTime) gives exactly QuickFIX's BodyLength."""
    for kind, line, no in at_lines(path):
        if kind != "E":
            continue
        fields = split(TIME_RE.sub(_time_token, line))
        given_len = dict(fields).get(9)
        raw, _ = at_message(kind, line)
        msg = fix.parse_message(raw)
        if given_len is not None:
            assert msg.get(9) == given_len, (path.name, no)


def _session_level(i_msg, reject) -> bool:
    """Rejects the session layer (not the dictionary) produces."""
    reason = reject.get_int(373)
    return reason in (9, 10) or i_msg.msg_type == b"4" or reject.get_int(371) == 122


@pytest.mark.parametrize("path", at_files(), ids=lambda p: p.stem)
def test_at_validation_matches_quickfix_rejects(path):
    """For each scripted I message: if QuickFIX answers with a dictionary Reject, our
    validate() gives the same 373/371/58; otherwise validate() passes it. Every E
    message (what the acceptor sends) validates too."""
    lines = at_lines(path)
    checked = 0
    for idx, (kind, line, no) in enumerate(lines):
        raw, own = at_message(kind, line)
        if kind == "E":
            assert fix.validate(fix.parse_message(raw)) is None, (path.name, no)
            continue
        if own:
            continue
        msg = fix.parse_message(raw)
        nxt = lines[idx + 1] if idx + 1 < len(lines) else None
        reject = None
        if nxt and nxt[0] == "E":
            e = fix.parse_message(at_message("E", nxt[1])[0])
            if e.msg_type == b"3":
                reject = e
        got = fix.validate(msg)
        if reject is not None and not _session_level(msg, reject):
            want = (reject.get_int(373), reject.get_int(371), reject.get(58).decode())
            assert got == want, (path.name, no)
            checked += 1
        else:
            assert got is None, (path.name, no, got)
    if path.stem.startswith(("14", "2q", "ReverseRoute")):
        assert checked > 0


@pytest.mark.parametrize("path", at_files(), ids=lambda p: p.stem)
def test_at_encoder_reproduces_expected_messages(path):
    """Every E line, re-encoded with FixEncoder (same header/body fields, SendingTime
    fixed), is byte-identical to the expected message: header order, 43/122 placement,
    BodyLength and CheckSum as QuickFIX writes them."""
    header_tags = set(fix44_dict.HEADER)
    for kind, line, no in at_lines(path):
        if kind != "E":
            continue
        want, _ = at_message(kind, line)
        fields = split(want)
        d = dict(fields)
        enc = fix.FixEncoder(d[49], d[56], begin_string=d[8])
        extra = [(t, v) for t, v in fields if t in header_tags and t not in OWNED]
        body = [(t, v) for t, v in fields if t not in header_tags and t != 10]
        got = enc.encode(d[35], body, int(d[34]), poss_dup=d.get(43) == b"Y",
                         orig_sending_time=d.get(122), header=extra or None, sending_time_ns=T0_NS)
        assert got == want, (path.name, no, got, want)


def test_at_garbled_lines_with_corrected_length_report_the_specific_fault():
    path = _at_dir()
    lines = {p.stem: at_lines(p) for p in (path / "2d_GarbledMessage.def", path / "3b_InvalidChecksum.def")}
    # 3b: 10=256 sent as written has no BodyLength -> BAD_BODY_LENGTH; with BodyLength
    # filled in, the checksum itself is the fault.
    bad_ck = [line for k, line, _ in lines["3b_InvalidChecksum"] if k == "I" and b"10=256" in line]
    assert len(bad_ck) == 2
    for line in bad_ck:
        raw = TIME_RE.sub(_time_token, line)
        g = fix.FixParser().parse(raw)[0]
        assert g.reason == fix.FIX_GARBLED_BAD_BODY_LENGTH
        fields = split(raw)
        body = b"".join(b"%d=%s\x01" % f for f in fields[1:-1])
        with_len = b"8=FIX.4.4\x019=%d\x01" % len(body) + body + b"10=256\x01"
        g = fix.FixParser().parse(with_len)[0]
        assert g.reason == fix.FIX_GARBLED_BAD_CHECKSUM
        with pytest.raises(fix.FixBadChecksum):
            fix.parse_message(with_len)
    # 2d: BodyLength right, CheckSum 0 wrong; with a right CheckSum the garbled tag
    # ("4garbled9", "49garbled") is the fault.
    garbled = [line for k, line, _ in lines["2d_GarbledMessage"] if k == "I" and b"garbled" in line]
    assert len(garbled) == 2
    for line in garbled:
        raw = TIME_RE.sub(_time_token, line)
        assert fix.FixParser().parse(raw)[0].reason == fix.FIX_GARBLED_BAD_CHECKSUM
        head = raw[:raw.rindex(b"10=")]
        fixed = head + b"10=%03d\x01" % (sum(head) % 256)
        g = fix.FixParser().parse(fixed)[0]
        assert isinstance(g, fix.FixGarbled) and g.reason == fix.FIX_GARBLED_BAD_TAG, g
        with pytest.raises(fix.FixBadTag):
            fix.parse_message(fixed)


# ---------------------------------------------------------------------------
# simplefix as the oracle, both directions
# ---------------------------------------------------------------------------

def _body_tags(msg_type: str) -> list[int]:
    _name, _cat, tags, _req, _groups = fix44_dict.MESSAGES[msg_type]
    return [t for t in tags if t not in OWNED and t not in DATA_TAGS]


MSG_TYPES = sorted(fix44_dict.MESSAGES)
values = st.binary(min_size=1, max_size=24).map(lambda b: b.replace(SOH, b"x"))


@st.composite
def random_message(draw):
    msg_type = draw(st.sampled_from(MSG_TYPES))
    tags = _body_tags(msg_type)
    body = draw(st.lists(st.tuples(st.sampled_from(tags), values), max_size=12)) if tags else []
    seq = draw(st.integers(min_value=1, max_value=10**9))
    poss_dup = draw(st.booleans())
    return msg_type, body, seq, poss_dup


def _simplefix_parse(raw: bytes):
    p = simplefix.FixParser()
    p.append_buffer(raw)
    m = p.get_message()
    assert m is not None
    return [(int(t), v) for t, v in m.pairs]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_message())
def test_our_encoding_parses_identically_in_simplefix(m):
    msg_type, body, seq, poss_dup = m
    enc = fix.FixEncoder("SENDER", "TARGET")
    raw = enc.encode(msg_type, body, seq, poss_dup=poss_dup,
                     orig_sending_time=T0_MS if poss_dup else None, sending_time_ns=T0_NS)
    theirs = _simplefix_parse(raw)
    ours = fix.parse_message(raw).fields()
    assert theirs == ours
    header = [(35, msg_type.encode()), (34, str(seq).encode())]
    if poss_dup:
        header.append((43, b"Y"))
    header += [(49, b"SENDER"), (52, T0_MS), (56, b"TARGET")]
    if poss_dup:
        header.append((122, T0_MS))
    assert ours[2:-1] == header + body
    assert ours[0] == (8, b"FIX.4.4")
    assert int(ours[1][1]) == len(raw) - raw.index(b"\x0135=") - 1 - 7
    assert raw == frame(header + body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_message(), st.integers(min_value=1, max_value=64))
def test_simplefix_encoding_parses_identically_in_ours(m, chunk):
    msg_type, body, seq, poss_dup = m
    sm = simplefix.FixMessage()
    sm.append_pair(8, "FIX.4.4", header=True)
    sm.append_pair(35, msg_type, header=True)
    sm.append_pair(49, "SENDER", header=True)
    sm.append_pair(56, "TARGET", header=True)
    sm.append_pair(34, seq, header=True)
    sm.append_pair(52, T0_MS, header=True)
    if poss_dup:
        sm.append_pair(43, "Y", header=True)
    for t, v in body:
        sm.append_pair(t, v)
    raw = sm.encode()
    expect = _simplefix_parse(raw)
    msgs = parse_all(raw + raw, chunk=chunk)
    assert len(msgs) == 2
    for msg in msgs:
        assert isinstance(msg, fix.FixMessage)
        assert msg.fields() == expect
        assert msg.msg_type == msg_type.encode()
        assert msg.seq_num == seq
        assert msg.poss_dup == poss_dup
        first = {}
        for t, v in body:
            first.setdefault(t, v)
        for t, v in first.items():
            assert msg.get(t) == v


def test_data_fields_with_soh_round_trip_both_ways():
    data = b"raw\x01data=with\x01SOH"
    sm = simplefix.FixMessage()
    sm.append_pair(8, "FIX.4.4", header=True)
    sm.append_pair(35, "B", header=True)
    sm.append_pair(49, "S", header=True)
    sm.append_pair(56, "T", header=True)
    sm.append_pair(34, 1, header=True)
    sm.append_pair(52, T0_MS, header=True)
    sm.append_pair(148, "headline")
    sm.append_data(95, 96, data)
    sm.append_data(354, 355, b"\x01")
    raw = sm.encode()
    msg = fix.parse_message(raw)
    assert msg.get(96) == data
    assert msg.get(355) == b"\x01"
    assert msg.fields() == _simplefix_parse(raw)
    # and ours -> simplefix
    enc = fix.FixEncoder("S", "T")
    ours = enc.encode("B", [(148, "headline"), (95, len(data)), (96, data)], 1, sending_time_ns=T0_NS)
    assert _simplefix_parse(ours) == fix.parse_message(ours).fields()
    assert fix.parse_message(ours).get(96) == data
    # a data field whose declared length runs past its SOH is garbled, specifically
    bad = frame([(35, "B"), (34, 1), (49, "S"), (52, T0_SEC), (56, "T"), (95, 40), (96, "short")])
    with pytest.raises(fix.FixBadDataLength):
        fix.parse_message(bad)


# ---------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------

def test_new_order_single_fields_prices_and_checksum():
    enc = fix.FixEncoder("ME", "VENUE")
    raw = enc.new_order_single(7, "C1", "INTC", 0, 300,
                               -12345, decimals=2, account="ACC", transact_time_ns=T0_NS + 5_000_000,
                               sending_time_ns=T0_NS + 1_500_000)
    msg = fix.parse_message(raw)
    assert raw == frame(split(raw)[2:-1])
    assert msg.fields()[2:-1] == [
        (35, b"D"), (34, b"7"), (49, b"ME"), (52, T0_SEC + b".001"), (56, b"VENUE"),
        (1, b"ACC"), (11, b"C1"), (38, b"300"), (40, b"2"), (44, b"-123.45"), (54, b"1"),
        (55, b"INTC"), (59, b"0"), (60, T0_SEC + b".005")]
    assert fix.validate(msg) is None
    assert _simplefix_parse(raw) == msg.fields()


@pytest.mark.parametrize("ticks,decimals,mult,text", [
    (12345, 2, 1, b"123.45"), (5, 2, 1, b"0.05"), (-5, 3, 1, b"-0.005"), (100, 0, 1, b"100"),
    (0, 4, 1, b"0.0000"), (7, 2, 25, b"1.75"), (2**62, 0, 1, str(2**62).encode()),
    (-(2**63) + 1, 18, 1, b"-9.223372036854775807"),
])
def test_price_formatting(ticks, decimals, mult, text):
    enc = fix.FixEncoder("A", "B")
    raw = enc.new_order_single(1, "C", "S", 1, 1, ticks, decimals=decimals, price_mult=mult,
                               sending_time_ns=T0_NS)
    assert fix.parse_message(raw).get(44) == text


def test_market_order_has_no_price_and_tif_mapping():
    enc = fix.FixEncoder("A", "B")
    for tif, ch in ((0, b"0"), (1, b"1"), (2, b"3"), (3, b"4")):
        m = fix.parse_message(enc.new_order_single(1, "C", "S", 1, 5, ord_type=1, tif=tif,
                                                   sending_time_ns=T0_NS))
        assert m.get(40) == b"1" and m.get(44) is None and m.get(59) == ch and m.get(54) == b"2"
        assert fix.validate(m) is None


def test_execution_report_fields():
    enc = fix.FixEncoder("VENUE", "ME")
    raw = enc.execution_report(9, "O1", "E1", "F", "1", "INTC", 0, leaves_qty=40, cum_qty=60,
                               avg_px=10050, cl_ord_id="C1", order_qty=100, price=10100,
                               last_qty=60, last_px=10050, decimals=2, text="partial",
                               ord_type=0, tif=1, sending_time_ns=T0_NS)
    msg = fix.parse_message(raw)
    assert msg.fields()[7:-1] == [
        (6, b"100.50"), (11, b"C1"), (14, b"60"), (17, b"E1"), (31, b"100.50"), (32, b"60"),
        (37, b"O1"), (38, b"100"), (39, b"1"), (40, b"2"), (44, b"101.00"), (54, b"1"),
        (55, b"INTC"), (58, b"partial"), (59, b"1"), (60, T0_MS), (150, b"F"), (151, b"40")]
    assert fix.validate(msg) is None
    assert _simplefix_parse(raw) == msg.fields()


def test_every_typed_message_is_valid_and_round_trips():
    enc = fix.FixEncoder("ME", "VENUE")
    t = {"sending_time_ns": T0_NS}
    msgs = {
        "D": enc.new_order_single(1, "C1", "INTC", 0, 10, 100, **t),
        "8": enc.execution_report(2, "O", "E", "0", "0", "INTC", 1, 10, 0, **t),
        "F": enc.order_cancel_request(3, "C2", "C1", "INTC", 0, qty=10, order_id="O", **t),
        "G": enc.order_cancel_replace_request(4, "C3", "C1", "INTC", 0, 20, 101, order_id="O", **t),
        "q": enc.order_mass_cancel_request(5, "C4", "1", symbol="INTC", side=1, **t),
        "H": enc.order_status_request(6, "C1", "INTC", 0, order_id="O", **t),
        "9": enc.order_cancel_reject(7, "O", "C2", "C1", "8", "1", cxl_rej_reason=1, text="x", **t),
        "A": enc.logon(8, 30, reset_seq_num=True, username="u", password="p",
                       next_expected_msg_seq_num=4, **t),
        "0": enc.heartbeat(9, test_req_id="TEST", **t),
        "1": enc.test_request(10, "TEST", **t),
        "2": enc.resend_request(11, 3, 0, **t),
        "3": enc.reject(12, 5, text="Invalid MsgType", ref_msg_type="*", session_reject_reason=11, **t),
        "4": enc.sequence_reset(13, 20, gap_fill=True, poss_dup=True, orig_sending_time=T0_MS, **t),
        "5": enc.logout(14, text="bye", **t),
    }
    for mt, raw in msgs.items():
        msg = fix.parse_message(raw)
        assert msg.msg_type == mt.encode()
        assert fix.validate(msg) is None, (mt, fix.validate(msg), raw)
        assert _simplefix_parse(raw) == msg.fields()
        assert raw == frame(msg.fields()[2:-1])


def test_resend_from_store_with_raw_body():
    enc = fix.FixEncoder("ISLD", "TW44")
    first = fix.parse_message(enc.new_order_single(2, "ID", "INTC", 0, 100, 5, sending_time_ns=T0_NS))
    stored_52 = first.get(52)
    resent = fix.parse_message(enc.encode_raw_body("D", first.body(), 2, poss_dup=True,
                                                   orig_sending_time=stored_52,
                                                   sending_time_ns=T0_NS + 60_000_000_000))
    assert resent.get(43) == b"Y" and resent.get(122) == stored_52 and resent.poss_dup
    assert resent.body() == first.body()
    assert enc.last_body == first.body()
    enc.execution_report(4, "O", "E", "0", "0", "INTC", 0, 1, 0, poss_dup=True,
                         orig_sending_time=stored_52, sending_time_ns=T0_NS)
    assert enc.last_body.startswith(b"6=0\x0114=0\x01") and enc.last_body.endswith(b"151=1\x01")
    enc.heartbeat(5, header=[(128, "X")], sending_time_ns=T0_NS)
    assert enc.last_body == b""
    assert [t for t, _ in resent.fields()][:9] == [8, 9, 35, 34, 43, 49, 52, 56, 122]
    assert fix.validate(resent) is None
    with pytest.raises(fix.FixInvalidField):
        enc.encode_raw_body("D", b"11=x", 3)           # no trailing SOH
    with pytest.raises(fix.FixInvalidField):
        enc.encode("D", [], 3, poss_dup=True)           # 43=Y needs 122


def test_sending_time_cache_and_ms():
    enc = fix.FixEncoder("A", "B")
    for ns, want in ((T0_NS, T0_MS), (T0_NS + 999_999_999, T0_SEC + b".999"),
                     (T0_NS + 1_000_000_000, b"20240102-03:04:06.000"),
                     (T0_NS + 7_000_000, T0_SEC + b".007"),
                     (0, b"19700101-00:00:00.000"),
                     (951782400 * 10**9 + 86399 * 10**9, b"20000229-23:59:59.000"),
                     (951868800 * 10**9, b"20000301-00:00:00.000")):
        assert fix.parse_message(enc.heartbeat(1, sending_time_ns=ns)).get(52) == want
        assert enc.last_sending_time == want
        assert fix.format_utc_timestamp(ns) == want
        assert fix.parse_utc_timestamp(want) == ns - ns % 1_000_000
    now = time.time_ns()
    got = fix.parse_utc_timestamp(fix.parse_message(enc.heartbeat(1)).get(52))
    assert abs(got - now) < 5 * 10**9


def test_header_fields_static_and_per_message_are_sorted():
    enc = fix.FixEncoder("S", "T", header_fields=[(142, "LOC"), (50, "SUB"), (57, "TSUB")])
    raw = enc.heartbeat(3, header=[(128, "JCD"), (97, "Y")], sending_time_ns=T0_NS)
    assert [t for t, _ in fix.parse_message(raw).fields()] == \
        [8, 9, 35, 34, 49, 50, 52, 56, 57, 97, 128, 142, 10]
    raw = enc.heartbeat(3, sending_time_ns=T0_NS)
    assert [t for t, _ in fix.parse_message(raw).fields()] == [8, 9, 35, 34, 49, 50, 52, 56, 57, 142, 10]


@pytest.mark.parametrize("call", [
    lambda e: e.new_order_single(1, "C", "S", 5, 1, 1),              # bad side
    lambda e: e.new_order_single(1, "C", "S", 0, 0, 1),              # qty 0
    lambda e: e.new_order_single(1, "C", "S", 0, 1),                 # limit without price
    lambda e: e.new_order_single(1, "C\x01", "S", 0, 1, 1),          # SOH in a value
    lambda e: e.new_order_single(1, "", "S", 0, 1, 1),               # empty value
    lambda e: e.new_order_single(1, "C", "S", 0, 1, 1, tif=9),
    lambda e: e.new_order_single(1, "C", "S", 0, 1, 1, decimals=19),
    lambda e: e.new_order_single(1, "C", "S", 0, 1, 2**62, price_mult=4),  # overflow
    lambda e: e.execution_report(1, "O", "E", "FF", "0", "S", 0, 0, 0),    # exec_type 2 chars
    lambda e: e.encode("D", [(35, "D")], 1),                          # owned tag
    lambda e: e.encode("D", [(0, "x")], 1),
    lambda e: e.encode("D", [("11", "x")], 1),
    lambda e: e.encode("D", [(58, None)], 1),
    lambda e: e.encode("", [], 1),
    lambda e: e.encode("D", [], -1),
    lambda e: e.heartbeat(1, header=[(34, "2")]),
    lambda e: e.heartbeat(1, sending_time_ns=-5),
    lambda e: e.encode("D", [(44, 1.5)], 1),                         # float refused
    lambda e: e.encode("D", [(44, Decimal("NaN"))], 1),
])
def test_encoder_rejects_bad_input_with_specific_error(call):
    with pytest.raises(fix.FixInvalidField):
        call(fix.FixEncoder("A", "B"))


def test_generic_values():
    enc = fix.FixEncoder("A", "B")
    raw = enc.encode("B", [(148, "é"), (44, Decimal("1E-7")), (38, 10**12), (114, True),
                           (115, False)], 1, sending_time_ns=T0_NS)
    m = fix.parse_message(raw)
    assert m.fields()[7:-1] == [(148, "é".encode()), (44, b"0.0000001"), (38, b"1000000000000"),
                                (114, b"Y"), (115, b"N")]
    with pytest.raises(TypeError):
        fix.FixEncoder.__new__(fix.FixEncoder).heartbeat(1)


def test_encoder_size_bound_and_buffer_reuse():
    enc = fix.FixEncoder("A", "B", max_message_size=200)
    with pytest.raises(fix.FixEncodeTooLarge):
        enc.encode("B", [(148, "x" * 300)], 1)
    small = enc.heartbeat(2, sending_time_ns=T0_NS)                  # still usable afterwards
    assert fix.parse_message(small).seq_num == 2
    big = fix.FixEncoder("A", "B")
    raw = big.encode("B", [(148, "y" * 20000)], 1, sending_time_ns=T0_NS)
    assert fix.parse_message(raw).get(148) == b"y" * 20000
    assert big.heartbeat(2, sending_time_ns=T0_NS) == frame(
        [(35, 0), (34, 2), (49, "A"), (52, T0_MS), (56, "B")])


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------

def golden_messages() -> list[bytes]:
    enc = fix.FixEncoder("ISLD", "TW44")
    out = [enc.logon(1, 30, sending_time_ns=T0_NS),
           enc.new_order_single(2, "ID", "INTC", 0, 100, 12345, decimals=2, sending_time_ns=T0_NS),
           enc.execution_report(3, "O", "E", "0", "0", "INTC", 0, 100, 0, sending_time_ns=T0_NS),
           enc.encode("B", [(148, "h"), (95, 5), (96, b"a\x01b=c")], 4, sending_time_ns=T0_NS),
           hb(5), nos(seq=6)]
    for kind, line, _ in at_lines(_at_dir() / "14i_RepeatingGroupCountNotEqual.def"):
        out.append(at_message(kind, line)[0])
    return out


def test_golden_whole_vs_byte_by_byte_vs_chunks():
    stream = b"".join(golden_messages())
    whole = results_summary(parse_all(stream))
    assert len(whole) == len(golden_messages()) and all(r[0] == "M" for r in whole)
    for chunk in (1, 2, 3, 7, 64, 1000):
        assert results_summary(parse_all(stream, chunk=chunk)) == whole


GARBAGE = [
    b"garbage without a frame",
    b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01",              # bad checksum
    b"8=FIX.4.4\x019=500\x0135=0\x0110=000\x01",            # BodyLength too long
    b"8=FIX.4.4\x019=3\x0135=0\x0110=000\x01",              # BodyLength too short
    b"8=FIX.4.4\x019=x\x01",                                # BodyLength not numeric
    b"8=FIX.4.4\x0135=0\x01",                               # BodyLength missing
    b"8=FIXYZ\x01",                                        # bad BeginString
    b"8=FIX.4.4.4\x01",
    b"8=FIX.4.4\x019=99999999\x01",                         # too many digits
    b"8=FIX.4.4\x019=70000\x01",                            # above max_message_size
    b"\x01\x01\x01=\x01",
    b"8=FIX" + b"8=FIX",
]


@pytest.mark.parametrize("junk", GARBAGE)
def test_garbled_input_between_good_messages_loses_none(junk):
    good = golden_messages()
    stream = good[0] + junk + good[1] + junk + junk + good[2]
    for chunk in (None, 1, 5):
        res = parse_all(stream, chunk=chunk)
        msgs = [r.raw for r in res if isinstance(r, fix.FixMessage)]
        assert msgs == good[:3], (junk, chunk)
        assert all(r.reason in GARBLED_REASONS for r in res if isinstance(r, fix.FixGarbled))
    assert results_summary(parse_all(stream, chunk=1)) == results_summary(parse_all(stream))


def test_garbled_reasons_are_specific():
    cases = {
        b"8=FIXYZ\x01": fix.FixBadBeginString,
        b"8=FIX.4\x019=5\x01": fix.FixBadBeginString,
        b"8=FIX.4.4\x0135=0\x01": fix.FixBadBodyLength,
        b"8=FIX.4.4\x019=-5\x01": fix.FixBadBodyLength,
        b"8=FIX.4.4\x019=3\x0135=0\x0110=000\x01": fix.FixBadBodyLength,
        b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01": fix.FixBadChecksum,
        b"8=FIX.4.4\x019=5\x0135=0\x0110=1234\x01": fix.FixBadChecksum,
        b"8=FIX.4.4\x019=5\x0135=0\x0110=ab\x01": fix.FixBadChecksum,
        b"8=FIX.4.4\x019=99999\x01": fix.FixMessageTooLarge,
        b"8=FIX.4.4\x019=5\x0135=0": fix.FixTruncated,
        b"": fix.FixTruncated,
    }
    for raw, exc in cases.items():
        with pytest.raises(exc) as info:
            fix.parse_message(raw)
        assert isinstance(info.value, fix.FixParseError) and isinstance(info.value, ValueError)
        assert info.value.reason == exc.reason
    # Checksum right, content wrong: build with the reference framer.
    body_cases = {
        b"34=1\x0135=0\x01": fix.FixBadMsgType,                 # MsgType not third
        b"35=\x0134=1\x01": fix.FixBadMsgType,                  # empty MsgType
        b"35=0\x01x4=1\x01": fix.FixBadTag,
        b"35=0\x0134\x01": fix.FixBadTag,                        # no '='
        b"35=0\x01=1\x01": fix.FixBadTag,
        b"35=0\x011234567890=1\x01": fix.FixBadTag,
        b"35=0\x0195=9\x0196=abc\x01": fix.FixBadDataLength,
    }
    for body, exc in body_cases.items():
        head = b"8=FIX.4.4\x019=%d\x01" % len(body) + body
        raw = head + b"10=%03d\x01" % (sum(head) % 256)
        with pytest.raises(exc):
            fix.parse_message(raw)
        g = fix.FixParser().parse(raw)[0]
        assert isinstance(g, fix.FixGarbled) and g.reason == exc.reason and g.raw == raw
        assert type(g.error) is exc and g.text
    p = fix.FixParser(raise_errors=True)
    p.feed(b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01" + hb())
    with pytest.raises(fix.FixBadChecksum):
        p.next()
    assert isinstance(p.next(), fix.FixMessage)      # the parser resumed after the error
    assert p.next() is None


def test_tolerant_checksum_and_begin_strings():
    head = b"8=FIX.4.4\x019=5\x0135=0\x01"
    cs = sum(head) % 256
    assert fix.parse_message(head + b"10=%d\x01" % cs).get(10) == str(cs).encode()
    for begin in (b"FIX.4.2", b"FIXT.1.1", b"FIX.3.9"):
        assert fix.parse_message(frame([(35, "0")], begin=begin)).begin_string == begin


def test_parser_bounded_memory_and_flush():
    p = fix.FixParser(max_message_size=1000)
    for _ in range(200):
        assert p.parse(b"x" * 10_000 + b"8=FI") == []
        assert p.pending == 4                        # only a possible "8=FI" prefix is kept
    assert p.junk_bytes >= 200 * 10_000
    assert isinstance(p.parse(b"X.4.4\x019=5000\x01")[0], fix.FixGarbled)   # above the bound
    p.feed(hb()[:30])
    assert p.next() is None and p.pending == 30
    (g,) = p.flush()
    assert isinstance(g, fix.FixGarbled) and g.reason == fix.FIX_GARBLED_TRUNCATED
    assert g.raw == hb()[:30]
    assert p.pending == 0 and p.flush() == []
    # A BodyLength claiming more than arrived holds the next message until the end of
    # the stream; flush() then recovers it.
    p.feed(b"8=FIX.4.4\x019=900\x0135=0\x01" + hb(7))
    assert p.next() is None
    res = p.flush()
    assert [type(r) for r in res] == [fix.FixGarbled, fix.FixMessage] and res[1].seq_num == 7
    p = fix.FixParser(raise_errors=True)
    p.feed(b"8=FIX.4.4\x019=900\x0135=0\x01" + hb(8))
    with pytest.raises(fix.FixTruncated):
        p.flush()
    assert [m.seq_num for m in p.flush()] == [8]
    assert [type(r) for r in p.parse(hb())] == [fix.FixMessage]
    assert list(fix.FixParser().__iter__()) == []
    big = fix.FixParser(max_message_size=1000)
    assert len(big.parse(hb() * 20_000)) == 20_000          # a 1.3 MB feed...
    assert [m.seq_num for m in big.parse(hb(9))] == [9]     # ...then the buffer shrinks back
    it = fix.FixParser()
    it.feed(hb() + hb(3))
    assert [m.seq_num for m in it] == [2, 3]


def test_message_accessors():
    raw = nos(extra=[(43, "Y"), (122, T0_SEC)], body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC),
                                                    (386, 2), (336, "A"), (336, "B"), (38, "12x")])
    m = fix.parse_message(raw)
    assert m.msg_type == b"D" and m.seq_num == 2 and m.poss_dup and m.begin_string == b"FIX.4.4"
    assert m.get(336) == b"A" and m.get_all(336) == [b"A", b"B"] and m.get(999) is None
    assert m.get(999, b"d") == b"d" and m.get_int(386) == 2 and m.get_int(999) is None
    with pytest.raises(fix.FixBadValue):
        m.get_int(38)
    assert 386 in m and 999 not in m and len(m) == len(split(raw))
    assert m.tags() == [t for t, _ in split(raw)]
    assert m.body() == b"11=ID\x0140=1\x0154=1\x0160=" + T0_SEC + b"\x01386=2\x01336=A\x01336=B\x0138=12x\x01"
    assert repr(m).startswith("FixMessage(")
    with pytest.raises(TypeError):
        fix.FixMessage()
    big = fix.parse_message(frame([(35, "B")] + [(58 if i % 2 else 148, f"v{i}") for i in range(300)]))
    assert len(big) == 304 and big.get_all(148)[-1] == b"v298"


# ---------------------------------------------------------------------------
# Validation: one case per SessionRejectReason, plus precedence
# ---------------------------------------------------------------------------

def _v(raw, **kw):
    m = fix.parse_message(raw)
    return fix.FixValidator(**kw).validate(m) if kw else fix.validate(m)


TXT = fix.SESSION_REJECT_TEXT


@pytest.mark.parametrize("raw,want", [
    (hb(extra=[(999, "HI")]), (0, 999)),
    (hb(extra=[(0, "HI")]), (0, 0)),
    (hb(extra=[(-1, "HI")]), (0, -1)),
    (hb(extra=[(5000, "HI")]), (0, 5000)),
    (frame([(35, 0), (34, 2), (49, "TW44"), (52, T0_SEC)]), (1, 56)),
    (frame([(35, 0), (34, 2), (56, "ISLD"), (52, T0_SEC)]), (1, 49)),
    (frame([(35, 0), (49, "TW44"), (52, T0_SEC), (56, "ISLD")]), (1, 34)),
    (frame([(35, 0), (34, 2), (49, "TW44"), (56, "ISLD")]), (1, 52)),
    (nos(body=[(40, "1"), (60, T0_SEC), (54, "1"), (21, "3")]), (1, 11)),
    (hb(extra=[(55, "MSFT")]), (2, 55)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (336, "X")]), (2, 336)),
    (frame([(35, 0), (34, 2), (49, "TW44"), (52, T0_SEC), (56, "")]), (4, 56)),
    (nos(extra=[(115, "")]), (4, 115)),
    (nos(body=[(11, "ID"), (21, "4"), (40, "1"), (54, "1"), (60, T0_SEC)]), (5, 21)),
    (nos(body=[(11, "ID"), (40, "w"), (54, "1"), (60, T0_SEC)]), (5, 40)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (167, "BOO")]), (5, 167)),
    (nos(body=[(11, "ID"), (18, "1 Z9"), (40, "1"), (54, "1"), (60, T0_SEC)]), (5, 18)),
    (nos(body=[(11, "ID"), (38, "+200.00"), (40, "1"), (54, "1"), (60, T0_SEC)]), (6, 38)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (126, "20040415")]), (6, 126)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "12"), (60, T0_SEC)]), (6, 54)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, "20241301-00:00:00")]), (6, 60)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (44, "1.2.3")]), (6, 44)),
    (nos(extra=[(43, "X")]), (6, 43)),
    (frame([(35, 0), (34, "two"), (49, "TW44"), (52, T0_SEC), (56, "ISLD")]), (6, 34)),
    (frame([(35, "*"), (34, 2), (49, "TW44"), (52, T0_SEC), (56, "ISLD")]), (11, None)),
    (nos(body=[(11, "ID"), (40, "1"), (40, "1"), (54, "1"), (60, T0_SEC)]), (13, 40)),
    (nos(extra=[(49, "TW44")]), (13, 49)),
    (frame([(35, "D"), (11, "id"), (21, 3), (40, 1), (54, 1), (55, "MSFT"), (60, T0_SEC), (34, 2),
            (49, "TW44"), (52, T0_SEC), (56, "ISLD")]), (14, 34)),
    (nos(body=[(11, "ID"), (93, 2), (89, "ab"), (40, "1"), (54, "1"), (60, T0_SEC)]), (14, 40)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (386, 1), (625, "X")]), (15, 625)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (386, 1), (336, "A"), (336, "B")]), (16, 386)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (386, 3), (336, "A"), (625, "S"),
               (336, "B")]), (16, 386)),
    (nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (386, 1), (336, "A"), (336, "B"),
               (38, 5)]), (16, 386)),
])
def test_validation_reason_per_failure_kind(raw, want):
    reason, ref = want
    assert _v(raw) == (reason, ref, TXT[reason])


def test_validation_passes_valid_messages_and_groups():
    assert _v(hb()) is None
    assert _v(nos()) is None
    ok = nos(body=[(11, "ID"), (18, "1 2 G"), (40, "1"), (54, "1"), (60, T0_SEC + b".123"),
                   (386, 2), (336, "A"), (625, "S"), (336, "B"), (38, "002000.00"), (44, "-.5"),
                   (126, T0_SEC + b".123456789"), (432, "20240102"), (453, 1), (448, "P"), (447, "D"),
                   (452, 1), (802, 1), (523, "S"), (803, 1)])
    assert _v(ok) is None
    # NumInGroup 0 is legal (AT 21)
    assert _v(nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (386, 0)])) is None
    # nested group count mismatch inside an instance
    bad = nos(body=[(11, "ID"), (40, "1"), (54, "1"), (60, T0_SEC), (453, 1), (448, "P"),
                    (802, 2), (523, "S")])
    assert _v(bad) == (16, 802, TXT[16])
    # header group (NoHops) stays in the header
    assert _v(nos(extra=[(627, 1), (628, "H"), (629, T0_SEC)])) is None


def test_validation_required_group_member():
    # NewOrderList (E): ListOrdGrp instances need ClOrdID, ListSeqNo, Side, ...
    name, _cat, _tags, required, _groups = fix44_dict.MESSAGES["E"]
    assert name == "NewOrderList"
    body = [(66, "L"), (68, 1), (73, 1), (11, "C"), (67, 1), (55, "S"), (40, "1"), (394, 1)]
    raw = frame([(35, "E"), (34, 2), (49, "TW44"), (52, T0_SEC), (56, "ISLD")] + body)
    assert _v(raw) == (1, 54, TXT[1])
    body.insert(6, (54, "1"))
    raw = frame([(35, "E"), (34, 2), (49, "TW44"), (52, T0_SEC), (56, "ISLD")] + body)
    assert _v(raw) is None


def test_validation_precedence_follows_quickfix():
    # required body field before a bad enum
    assert _v(nos(body=[(21, "4"), (40, "1"), (54, "1"), (60, T0_SEC)]))[:2] == (1, 11)
    # header before body: empty routing tag beats a bad OrdType (AT ReverseRouteWithEmptyRoutingTags)
    assert _v(nos(extra=[(145, "")], body=[(11, "ID"), (40, "w"), (54, "1"), (60, T0_SEC)]))[:2] == (4, 145)
    # in the body, the lower tag first, whatever the wire order
    assert _v(nos(body=[(11, "ID"), (167, "BOO"), (40, "w"), (54, "1"), (60, T0_SEC)]))[:2] == (5, 40)
    # per field: empty before undefined
    assert _v(hb(extra=[(999, "")]))[:2] == (4, 999)
    # out of order before invalid MsgType
    assert _v(frame([(35, "*"), (112, "x"), (34, 2), (49, "TW44"), (52, T0_SEC), (56, "ISLD")]))[:2] == (14, 34)


def test_validator_options():
    assert _v(frame([(35, 0), (34, 2), (49, "TW44"), (52, T0_SEC), (56, "")]),
              check_fields_have_values=False) is None
    assert _v(hb(extra=[(5000, "HI")]), check_user_defined_fields=False) is None
    assert _v(hb(extra=[(999, "HI")]), check_user_defined_fields=False)[:2] == (0, 999)
    assert _v(hb(extra=[(5000, "A"), (5000, "B")]), check_user_defined_fields=False)[:2] == (13, 5000)
    raw = frame([(35, "D"), (11, "id"), (40, 1), (54, 1), (60, T0_SEC), (34, 2), (49, "TW44"),
                 (52, T0_SEC), (56, "ISLD")])
    assert _v(raw, check_fields_out_of_order=False) is None


def test_dictionary_tables():
    d = fix.message_def("D")
    assert d.name == "NewOrderSingle" and d.required_tags == (11, 40, 54, 60)
    assert d.allows(386) and not d.allows(336) and fix.message_def(b"*") is None
    assert fix.DICTIONARY_BEGIN_STRING == "FIX.4.4"
    assert fix44_dict.DATA_FIELDS[96] == 95 and fix44_dict.DATA_FIELDS[89] == 93
    assert fix44_dict.HEADER_REQUIRED == (8, 9, 34, 35, 49, 52, 56)


def test_generated_dictionary_is_up_to_date(tmp_path):
    xml = SHARED_FIX_AT / "FIX44.xml"
    if not xml.is_file():
        pytest.fail(f"{xml} is missing: the generator check needs ../shared/fix-at")
    spec = importlib.util.spec_from_file_location("gen_fix_dictionary",
                                                  REPO_ROOT / "tools" / "gen_fix_dictionary.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    out = tmp_path / "fix44_dict.py"
    assert gen.main([str(xml), "-o", str(out)]) == 0
    committed = REPO_ROOT / "core_ext" / "fix44_dict.py"
    assert out.read_text() == committed.read_text(), "regenerate: python tools/gen_fix_dictionary.py"
    assert committed.read_text().splitlines()[0].startswith("# GENERATED")


# ---------------------------------------------------------------------------
# Fuzz: no crash, no hang, only specific errors
# ---------------------------------------------------------------------------

FUZZ_SEEDS = None


def fuzz_seeds() -> list[bytes]:
    """Good messages only: the golden ones and every well-formed AT message."""
    global FUZZ_SEEDS
    if FUZZ_SEEDS is None:
        seeds = golden_messages()
        for path in at_files():
            for kind, line, _ in at_lines(path):
                raw, own = at_message(kind, line)
                if not own or kind == "E":
                    seeds.append(raw)
        assert all(isinstance(fix.parse_message(s), fix.FixMessage) for s in seeds)
        FUZZ_SEEDS = seeds
    return FUZZ_SEEDS


def mutate(rng: random.Random, msg: bytes) -> bytes:
    b = bytearray(msg)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        pos = rng.randrange(len(b) + 1) if b else 0
        if op == 0 and b:                                   # flip a byte
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 1:                                       # insert a byte (often a delimiter)
            b.insert(pos, rng.choice((1, 61, 56, 48, rng.randrange(256))))
        elif op == 2 and b:                                 # delete a run
            del b[pos:pos + rng.randint(1, 8)]
        elif op == 3:                                       # truncate
            del b[pos:]
        elif op == 4:                                       # change a digit (lengths, checksums, tags)
            digits = [i for i, c in enumerate(b) if 48 <= c <= 57]
            if digits:
                b[rng.choice(digits)] = rng.randrange(48, 58)
        elif op == 5:                                       # duplicate a slice
            j = rng.randrange(len(b) + 1)
            b[pos:pos] = b[min(pos, j):max(pos, j)][:64]
        elif op == 6:                                       # splice another message in
            other = rng.choice(fuzz_seeds())
            k = rng.randrange(len(other) + 1)
            b[pos:pos] = other[:k] if rng.random() < 0.5 else other[k:]
        elif op == 7:                                       # SOH <-> '='
            for i, c in enumerate(b):
                if c in (1, 61) and rng.random() < 0.05:
                    b[i] = 62 - c
        elif op == 8:                                       # huge or negative BodyLength
            s = bytes(b).replace(b"\x019=", b"\x019=" + rng.choice((b"9999", b"-", b"0", b"")), 1)
            b = bytearray(s)
        else:                                               # random garbage block
            b[pos:pos] = rng.randbytes(rng.randint(1, 16))
    return bytes(b)


def check_results(results, validator=fix.validate):
    for r in results:
        if isinstance(r, fix.FixMessage):
            v = validator(r)
            assert v is None or (v[0] in REJECT_REASONS and isinstance(v[2], str))
            r.fields(), r.body(), r.seq_num, r.msg_type          # accessors never raise
        else:
            assert isinstance(r, fix.FixGarbled) and r.reason in GARBLED_REASONS, r
            assert isinstance(r.error, fix.FixParseError) and type(r.error) is not fix.FixParseError


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data):
    res = parse_all(data)
    check_results(res)
    assert results_summary(parse_all(data, chunk=3)) == results_summary(res)
    try:
        fix.parse_message(data)
    except fix.FixParseError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=17))
def test_fuzz_mutated_messages_hypothesis(seed, chunk):
    rng = random.Random(seed)
    good = rng.choice(fuzz_seeds())
    data = mutate(rng, rng.choice(fuzz_seeds())) + good + b"x" * 600
    res = parse_all(data, max_message_size=512)
    check_results(res)
    assert results_summary(parse_all(data, chunk=chunk, max_message_size=512)) == results_summary(res)
    raws = [r.raw for r in res if isinstance(r, fix.FixMessage)]
    assert good in raws or any(good in raw for raw in raws)


@pytest.mark.slow
def test_fuzz_seeded_mutation_loop():
    """50,000 mutated messages (seeded): every result is a message or a specific
    garbled record, validation never raises, and the good message after each mutated
    one is recovered. Byte-at-a-time equivalence on every 25th input."""
    rng = random.Random(20240102)
    seeds = fuzz_seeds()
    validator = fix.FixValidator()
    n_inputs = 50_000
    n_garbled = n_messages = swallowed = 0
    t0 = time.perf_counter()
    p = fix.FixParser(max_message_size=512)
    for i in range(n_inputs):
        good = seeds[i % len(seeds)]
        data = mutate(rng, rng.choice(seeds)) + good + b"x" * 600
        res = p.parse(data)
        check_results(res, validator.validate)
        raws = [r.raw for r in res if isinstance(r, fix.FixMessage)]
        if good not in raws:
            assert any(good in raw for raw in raws), (i, data)
            swallowed += 1
        n_messages += len(raws)
        n_garbled += len(res) - len(raws)
        if i % 25 == 0:
            assert results_summary(parse_all(data, chunk=1, max_message_size=512)) == results_summary(res)
        assert p.pending <= 4
    elapsed = time.perf_counter() - t0
    assert n_garbled > n_inputs // 2 and n_messages >= n_inputs
    assert swallowed < n_inputs // 1000
    assert elapsed < 60, elapsed
