"""Pure-Python reference codec for OUCH 4.2 + SoupBinTCP 3.00 (struct based, simple).

Written straight from /work/shared/protocols/OUCH-SOUPBINTCP.md, independently of
core_ext/ouch.pyx, and used differentially against it: the same tuples, the same
bytes, and the same error *kind* (the exception classes here carry the same names
as the compiled ones; tests compare ``type(e).__name__``). Also the benchmark
baseline. Not for production use.
"""
from __future__ import annotations

import struct


class RefError(ValueError):
    pass


class OuchTruncatedError(RefError):
    pass


class OuchUnknownMessageError(RefError):
    pass


class OuchBadLengthError(RefError):
    pass


class OuchFieldError(RefError):
    pass


class SoupPacketLengthError(RefError):
    pass


class SoupUnknownPacketError(RefError):
    pass


class SoupFieldError(RefError):
    pass


ALPHA = {chr(c) for c in range(0x20, 0x7F)}
SIDE = set("BSTE")
DISPLAY = set("AILMNOPQRTWY")
CAPACITY = set("AOPR")
YN = set("YN")
CROSS = set("NOCHIRS")
CUSTOMER = set("RN ")
EVENT = set("SE")
STATE = set("LD")
CANCEL = set("UITSDQZ")
REJECT = set("THZSDCLMRXNOabcdefghijklmn")

# Per message: struct format, and per field after the type byte: (kind, set)
#   kind "a" = alpha (str, stripped), "c" = 1 char from set, "u" = unsigned int
_A = ("a", None)
_U = ("u", None)


def _c(s):
    return ("c", s)


INBOUND = {
    "O": (">c14scI8sII4scccIcc",
          [_A, _c(SIDE), _U, _A, _U, _U, _A, _c(DISPLAY), _c(CAPACITY), _c(YN), _U, _c(CROSS),
           _c(CUSTOMER)]),
    "U": (">c14s14sIIIccI", [_A, _A, _U, _U, _U, _c(DISPLAY), _c(YN), _U]),
    "X": (">c14sI", [_A, _U]),
    "M": (">c14scI", [_A, _c(SIDE), _U]),
}
_ACC = [_U, _A, _c(SIDE), _U, _A, _U, _U, _A, _c(DISPLAY), _U, _c(CAPACITY), _c(YN), _U,
        _c(CROSS), _c(STATE)]
OUTBOUND = {
    "S": (">cQc", [_U, _c(EVENT)]),
    "A": (">cQ14scI8sII4scQccIccc", _ACC + [_c(ALPHA)]),
    "U": (">cQ14scI8sII4scQccIcc14sc", _ACC + [_A, _c(ALPHA)]),
    "C": (">cQ14sIc", [_U, _A, _U, _c(CANCEL)]),
    "E": (">cQ14sIIcQ", [_U, _A, _U, _U, _c(ALPHA), _U]),
    "J": (">cQ14sc", [_U, _A, _c(REJECT)]),
}


def _split(fmt: str) -> list[str]:
    parts, num = [], ""
    for ch in fmt[1:]:
        if ch.isdigit():
            num += ch
        else:
            parts.append(num + ch)
            num = ""
    return parts


def _plan(table):
    plans = {}
    for t, (fmt, kinds) in table.items():
        offs, pos = [], 0
        for code in _split(fmt):
            offs.append(pos)
            pos += struct.calcsize(">" + code)
        plans[t] = (struct.Struct(fmt), list(zip(kinds, offs[1:], strict=True)))
    return plans


_PLAN_IN = _plan(INBOUND)
_PLAN_OUT = _plan(OUTBOUND)


def _decode(plans, msg) -> tuple:
    msg = bytes(msg)
    if not msg:
        raise OuchTruncatedError("empty")
    t = chr(msg[0])
    if t not in plans:
        raise OuchUnknownMessageError(t)
    st, kinds = plans[t]
    if len(msg) < st.size:
        raise OuchTruncatedError(t)
    if len(msg) > st.size:
        raise OuchBadLengthError(t)
    values = st.unpack(msg)
    out = [t]
    for value, ((kind, allowed), off) in zip(values[1:], kinds, strict=True):
        if kind == "u":
            out.append(value)
        elif kind == "a":
            if any(b < 0x20 or b > 0x7E for b in value):
                raise OuchFieldError(f"{t} offset {off}")
            out.append(value.decode("ascii").rstrip(" "))
        else:
            ch = value.decode("latin-1")
            if ch not in allowed:
                raise OuchFieldError(f"{t} offset {off}")
            out.append(ch)
    return tuple(out)


def decode_inbound(msg) -> tuple:
    return _decode(_PLAN_IN, msg)


def decode_outbound(msg) -> tuple:
    return _decode(_PLAN_OUT, msg)


def encode(table_name: str, fields: tuple) -> bytes:
    """A bare message from a decoded tuple (type first). table_name 'in' or 'out'."""
    table = INBOUND if table_name == "in" else OUTBOUND
    t = fields[0]
    fmt, kinds = table[t]
    parts = _split(fmt)
    values = [t.encode()]
    for value, (kind, _), code in zip(fields[1:], kinds, parts[1:], strict=True):
        if kind == "u":
            values.append(value)
        elif kind == "a":
            width = int(code[:-1])
            values.append(value.encode("ascii").ljust(width, b" "))
        else:
            values.append(value.encode("ascii"))
    return struct.pack(fmt, *values)


# ---- SoupBinTCP -------------------------------------------------------------------

SOUP_FIXED = {"A": 31, "J": 2, "H": 1, "Z": 1, "L": 47, "R": 1, "O": 1}
SOUP_VAR = {"+", "S", "U"}
SOUP_ROLE_TYPES = {"any": set("+AJSHZLURO"), "client": set("+AJSHZ"), "server": set("+LURO")}


def soup_frame(ptype: str, payload: bytes = b"") -> bytes:
    return struct.pack(">Hc", len(payload) + 1, ptype.encode()) + payload


def soup_split(stream: bytes, max_packet: int = 65535, role: str = "any"):
    """Split a whole stream: (packets, error_class_name or None, leftover bytes)."""
    packets, pos = [], 0
    accepted = SOUP_ROLE_TYPES[role]
    while len(stream) - pos >= 2:
        (length,) = struct.unpack_from(">H", stream, pos)
        if length == 0 or length > max_packet:
            return packets, "SoupPacketLengthError", stream[pos:]
        if len(stream) - pos >= 3:
            t = chr(stream[pos + 2])
            if t not in accepted:
                return packets, "SoupUnknownPacketError", stream[pos:]
            if t in SOUP_FIXED and SOUP_FIXED[t] != length:
                return packets, "SoupPacketLengthError", stream[pos:]
        if len(stream) - pos < 2 + length:
            break
        packets.append((chr(stream[pos + 2]), bytes(stream[pos + 3:pos + 2 + length])))
        pos += 2 + length
    return packets, None, stream[pos:]


def _soup_text(raw: bytes) -> str:
    for b in raw:
        if b != 0 and not (0x20 <= b <= 0x7E):
            raise SoupFieldError("text")
    return raw.replace(b"\x00", b" ").decode("ascii").strip(" ")


def _soup_seq(raw: bytes) -> int:
    s = raw.strip(b" \x00")
    if not s:
        return 0
    if not all(0x30 <= b <= 0x39 for b in s):
        raise SoupFieldError("sequence")
    v = int(s)
    if v >= 1 << 64:
        raise SoupFieldError("sequence too big")
    return v


def decode_login_request(payload: bytes):
    if len(payload) != 46:
        raise SoupPacketLengthError("L")
    u, p, s, q = struct.unpack(">6s10s10s20s", payload)
    return (_soup_text(u), _soup_text(p), _soup_text(s), _soup_seq(q))


def decode_login_accepted(payload: bytes):
    if len(payload) != 30:
        raise SoupPacketLengthError("A")
    s, q = struct.unpack(">10s20s", payload)
    return (_soup_text(s), _soup_seq(q))


def encode_login_request(username, password, session="", sequence=0) -> bytes:
    body = (username.encode().ljust(6) + password.encode().ljust(10) + session.encode().rjust(10)
            + str(sequence).encode().rjust(20))
    return soup_frame("L", body)


def encode_login_accepted(session, sequence) -> bytes:
    return soup_frame("A", session.encode().rjust(10) + str(sequence).encode().rjust(20))
