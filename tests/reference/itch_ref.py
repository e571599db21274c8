"""Pure-Python reference for ITCH 5.0 over MoldUDP64 (struct based, simple).

Independent of core_ext/itch.pyx and used differentially against it: the same
message tuples, the same bytes, the same error *kind* (exception classes here carry
the compiled classes' names; tests compare ``type(e).__name__``), and a
dict-of-levels book applier with the same semantics as ``ItchBookApplier``.
Also the benchmark baseline. Not for production use.
"""
from __future__ import annotations

import random
import struct


class RefError(ValueError):
    def __init__(self, msg="", msg_type=None, offset=None, seq=None):
        super().__init__(msg)
        self.msg_type = msg_type
        self.offset = offset
        self.seq = seq
        self.applied = 0
        self.result = None


class ItchTruncatedError(RefError):
    pass


class ItchPacketLengthError(RefError):
    pass


class ItchBadLengthError(RefError):
    pass


class ItchUnknownMessageError(RefError):
    pass


class ItchFieldError(RefError):
    pass


class ItchUnknownOrderError(RefError):
    pass


class ItchDuplicateOrderError(RefError):
    pass


class ItchExcessSharesError(RefError):
    pass


MASK64 = (1 << 64) - 1   # MoldUDP64 sequence numbers are u64 (they wrap)
HEADER = ">cHH6s"   # type, locate, tracking, timestamp (6 bytes)
# per type: (struct format of the fields after the header, kinds)
#   kinds: "u" int, "s" stock (alpha 8, checked printable), "a" alpha (latin-1, rstrip),
#          "c" one char, "b" raw bytes
SPEC = {
    "S": (">c", "c"),
    "R": (">8sccIcc2scccccIc", "sccuccacccccuc"),
    "H": (">8scc4s", "scca"),
    "A": (">QcI8sI", "ucusu"),
    "F": (">QcI8sI4s", "ucusua"),
    "E": (">QIQ", "uuu"),
    "C": (">QIQcI", "uuucu"),
    "X": (">QI", "uu"),
    "D": (">Q", "u"),
    "U": (">QQII", "uuuu"),
    "P": (">QcI8sIQ", "ucusuu"),
}
OTHER_LENGTHS = {"Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21, "Q": 40,
                 "B": 19, "I": 50, "N": 20, "O": 48}
LENGTHS = {t: 11 + struct.calcsize(fmt) for t, (fmt, _) in SPEC.items()} | OTHER_LENGTHS
for _t, _n in OTHER_LENGTHS.items():
    SPEC[_t] = (f">{_n - 11}s", "b")
_STRUCTS = {t: struct.Struct(HEADER + fmt[1:]) for t, (fmt, _) in SPEC.items()}

# (field position in the message, allowed chars) checks, in wire order
_SIDE, _EVENT, _STATE, _YN = set(b"BS"), set(b"OSQMEC"), set(b"HPQT"), set(b"YN")
CHECKS = {
    "A": [(19, _SIDE), (24, "stock")], "F": [(19, _SIDE), (24, "stock")],
    "P": [(19, _SIDE), (24, "stock")], "C": [(31, _YN)],
    "H": [(11, "stock"), (19, _STATE)], "R": [(11, "stock")], "S": [(11, _EVENT)],
}


def check_message(m: bytes, off: int = 0, seq=None) -> None:
    t = chr(m[0])
    if t not in LENGTHS:
        raise ItchUnknownMessageError(t, t, off, seq)
    if len(m) != LENGTHS[t]:
        raise ItchBadLengthError(t, t, off, seq)
    for pos, allowed in CHECKS.get(t, ()):
        if allowed == "stock":
            if any(b < 0x20 or b > 0x7E for b in m[pos:pos + 8]):
                raise ItchFieldError(t, t, off + pos, seq)
        elif m[pos] not in allowed:
            raise ItchFieldError(t, t, off + pos, seq)


def _decode_checked(m: bytes) -> tuple:
    t = chr(m[0])
    values = _STRUCTS[t].unpack(m)
    out = [t, values[1], values[2], int.from_bytes(values[3], "big")]
    for v, kind in zip(values[4:], SPEC[t][1], strict=True):
        if kind == "u":
            out.append(v)
        elif kind in "sa":
            out.append(v.decode("latin-1").rstrip(" "))
        elif kind == "c":
            out.append(v.decode("latin-1"))
        else:
            out.append(v)
    return tuple(out)


def decode_message(msg) -> tuple:
    m = bytes(msg)
    if not m:
        raise ItchTruncatedError("empty", None, 0)
    check_message(m)
    return _decode_checked(m)


def split_packet(packet):
    """Check a MoldUDP64 packet; -> (session, seq, count_field, [(offset, message bytes)])."""
    p = bytes(packet)
    if len(p) < 20:
        raise ItchTruncatedError("header", None, 0)
    session, seq, count = struct.unpack_from(">10sQH", p)
    session = session.decode("latin-1").rstrip(" ")
    if count in (0, 0xFFFF):
        if len(p) != 20:
            raise ItchPacketLengthError("body after heartbeat", None, 20, seq)
        return session, seq, count, []
    msgs, off = [], 20
    for i in range(count):
        if len(p) - off < 2:
            raise ItchTruncatedError("length field", None, off, (seq + i) & MASK64)
        (mlen,) = struct.unpack_from(">H", p, off)
        if mlen == 0:
            raise ItchBadLengthError("zero", None, off, (seq + i) & MASK64)
        if len(p) - off - 2 < mlen:
            t = chr(p[off + 2]) if len(p) - off - 2 > 0 else None
            raise ItchTruncatedError("message", t, off, (seq + i) & MASK64)
        m = p[off + 2:off + 2 + mlen]
        check_message(m, off + 2, (seq + i) & MASK64)
        msgs.append((off + 2, m))
        off += 2 + mlen
    if off != len(p):
        raise ItchPacketLengthError("trailing", None, off)
    return session, seq, count, msgs


def decode_packet(packet):
    session, seq, count, msgs = split_packet(packet)
    return session, seq, count, [_decode_checked(m) for _, m in msgs]


def encode_message(fields) -> bytes:
    t = fields[0]
    fmt, kinds = SPEC[t]
    parts = []
    codes = _codes(fmt)
    for v, kind, code in zip(fields[4:], kinds, codes, strict=True):
        if kind == "u":
            parts.append(v)
        elif kind in "sa":
            width = int(code[:-1])
            parts.append(v.encode("latin-1").ljust(width, b" "))
        elif kind == "c":
            if isinstance(v, int):
                v = "B" if v == 0 else "S"
            parts.append(v.encode("latin-1"))
        else:
            parts.append(v)
    return _STRUCTS[t].pack(t.encode(), fields[1], fields[2], fields[3].to_bytes(6, "big"), *parts)


def _codes(fmt: str) -> list[str]:
    out, num = [], ""
    for ch in fmt[1:]:
        if ch.isdigit():
            num += ch
        else:
            out.append(num + ch)
            num = ""
    return out


def encode_packet(session: str, seq: int, messages, count=None) -> bytes:
    head = struct.pack(">10sQH", session.encode().ljust(10), seq,
                       len(messages) if count is None else count)
    return head + b"".join(struct.pack(">H", len(m)) + m for m in messages)


# ---------------------------------------------------------------------------
# Dict-of-levels book applier with ItchBookApplier's semantics
# ---------------------------------------------------------------------------

class RefBook:
    def __init__(self, symbol: str):
        self.symbol = symbol
        self.levels = ({}, {})   # side -> {price: size}

    def best(self, side):
        lv = self.levels[side]
        if not lv:
            return None
        p = max(lv) if side == 0 else min(lv)
        return (p, lv[p])

    def delta(self, side, price, d) -> bool:
        """Apply; True when the side's best (price, size) changed."""
        before = self.best(side)
        lv = self.levels[side]
        new = lv.get(price, 0) + d
        assert new >= 0, "negative level"
        if new:
            lv[price] = new
        else:
            lv.pop(price, None)
        return self.best(side) != before

    def sorted_levels(self, side):
        return sorted(self.levels[side].items(), reverse=(side == 0))


class RefBookApplier:
    def __init__(self, symbols=(), strict=True, create_books=True):
        self.strict = strict
        self.create_books = create_books
        self.books: list[RefBook] = []
        self.index: dict[str, int] = {}
        self.locate: dict[int, int] = {}
        self.halted: list[bool] = []
        self.orders: dict[int, list] = {}   # ref -> [locate, side, price, shares, idx]
        for s in symbols:
            self._add(s)

    def _add(self, symbol):
        self.index[symbol] = len(self.books)
        self.books.append(RefBook(symbol))
        self.halted.append(False)
        return len(self.books) - 1

    def _instrument(self, locate, stock, force):
        idx = self.locate.get(locate, -2)
        if idx != -2 and not force:
            return idx
        if idx >= 0 and self.books[idx].symbol == stock:
            return idx
        if stock in self.index:
            idx = self.index[stock]
        elif self.create_books:
            idx = self._add(stock)
        else:
            idx = -1
        self.locate[locate] = idx
        return idx

    def _state(self, cls, t):
        if self.strict:
            raise cls(t, t)
        self._anomalies += 1

    def _top(self, idx, changed):
        if changed and idx not in self._top_seen:
            self._top_seen.add(idx)
            self._tops.append(idx)

    def _apply(self, f, seq):
        t = f[0]
        if t in "AF":
            _, locate, _, ts, ref, side, shares, stock, price = f[:9]
            idx = self.locate.get(locate, -2)
            if idx == -2:
                idx = self._instrument(locate, stock, False)
            if ref in self.orders:
                return self._state(ItchDuplicateOrderError, t)
            side = 0 if side == "B" else 1
            self.orders[ref] = [locate, side, price, shares, idx]
            if idx >= 0 and shares:
                self._top(idx, self.books[idx].delta(side, price, shares))
        elif t in "ECX":
            ref, shares = f[4], f[5]
            o = self.orders.get(ref)
            if o is None:
                return self._state(ItchUnknownOrderError, t)
            if shares > o[3]:
                self._state(ItchExcessSharesError, t)
                shares = o[3]
            locate, side, price, _, idx = o
            o[3] -= shares
            if o[3] == 0:
                del self.orders[ref]
            if idx >= 0:
                if shares:
                    self._top(idx, self.books[idx].delta(side, price, -shares))
                if t == "E":
                    self._trades.append((price, shares, f[3], f[6], seq, idx, locate, side, b"E", 1))
                elif t == "C":
                    self._trades.append((f[8], shares, f[3], f[6], seq, idx, locate, side, b"C",
                                         1 if f[7] == "Y" else 0))
        elif t == "D":
            o = self.orders.pop(f[4], None)
            if o is None:
                return self._state(ItchUnknownOrderError, t)
            locate, side, price, shares, idx = o
            if idx >= 0 and shares:
                self._top(idx, self.books[idx].delta(side, price, -shares))
        elif t == "U":
            old, new, shares, price = f[4:8]
            o = self.orders.get(old)
            if o is None:
                return self._state(ItchUnknownOrderError, t)
            if new != old and new in self.orders:
                return self._state(ItchDuplicateOrderError, t)
            del self.orders[old]
            locate, side, old_price, old_shares, idx = o
            self.orders[new] = [locate, side, price, shares, idx]
            if idx >= 0:
                if price == old_price:
                    if shares != old_shares:
                        self._top(idx, self.books[idx].delta(side, price, shares - old_shares))
                else:
                    if old_shares:
                        self._top(idx, self.books[idx].delta(side, old_price, -old_shares))
                    if shares:
                        self._top(idx, self.books[idx].delta(side, price, shares))
        elif t == "P":
            locate = f[1]
            idx = self.locate.get(locate, -2)
            if idx == -2:
                idx = self._instrument(locate, f[7], False)
            if idx >= 0:
                self._trades.append((f[8], f[6], f[3], f[9], seq, idx, locate,
                                     0 if f[5] == "B" else 1, b"P", 1))
        elif t == "R":
            self._instrument(f[1], f[4], True)
        elif t == "H":
            idx = self._instrument(f[1], f[4], False)
            if idx >= 0:
                h = f[5] != "T"
                if self.halted[idx] != h:
                    self.halted[idx] = h
                    if idx not in self._halt_seen:
                        self._halt_seen.add(idx)
                        self._halts.append(idx)

    def apply_packet(self, packet) -> dict:
        session, seq, count, msgs = split_packet(packet)
        self._tops, self._top_seen, self._trades = [], set(), []
        self._halts, self._halt_seen, self._anomalies = [], set(), 0
        applied = 0

        def result(n):
            return {"session": session, "seq": seq, "next_seq": (seq + n) & MASK64, "count": 0 if count == 0xFFFF else count,
                    "applied": n, "top_changed": tuple(self._tops), "trades": list(self._trades),
                    "halts_changed": tuple(self._halts), "anomalies": self._anomalies}

        for i, (off, m) in enumerate(msgs):
            try:
                self._apply(_decode_checked(m), (seq + i) & MASK64)
            except RefError as exc:
                exc.offset, exc.seq, exc.applied = off, (seq + i) & MASK64, applied
                exc.result = result(applied)
                raise
            applied += 1
        return result(applied)


# ---------------------------------------------------------------------------
# Test data: the real Bitfinex order-by-order feed (../shared/data/L3_feed.json)
# re-expressed as ITCH 5.0 messages, so tests and benchmarks run real order flow.
# ---------------------------------------------------------------------------

def bitfinex_l3_to_itch(frames, locate: int = 1, stock: str = "BTCUSD") -> list[tuple]:
    """Bitfinex R0 book frames -> ITCH message tuples (R, then A / U / D).

    Snapshot rows and updates [order_id, price, amount]: amount > 0 bid, < 0 ask,
    price 0 deletes. price4 = round(price * 1e4); shares = round(|amount| * 1e6)
    (lots of 1e-6 BTC). An update of a live order becomes an Order Replace with a
    fresh reference (a side flip becomes Delete + Add)."""
    msgs = [("R", locate, 0, 0, stock, "Q", "N", 1, "N", "C", "Z", "P", "N", "N", "1", "N", 0, "N")]
    live: dict[int, tuple[int, int]] = {}   # bitfinex id -> (itch ref, side)
    next_ref = 1
    ts = 0
    rows = []
    for frame in frames:
        if not (isinstance(frame, list) and len(frame) == 2 and isinstance(frame[1], list)):
            continue
        body = frame[1]
        rows.extend(body if body and isinstance(body[0], list) else [body])
    for oid, price, amount in rows:
        ts += 1000
        if price == 0:
            if oid in live:
                ref, _ = live.pop(oid)
                msgs.append(("D", locate, 0, ts, ref))
            continue
        p4 = round(price * 10_000)
        shares = round(abs(amount) * 1_000_000)
        side = "B" if amount > 0 else "S"
        if not (0 < p4 < 2**32 and 0 < shares < 2**32):
            continue
        if oid in live:
            ref, old_side = live[oid]
            if old_side == side:
                live[oid] = (next_ref, side)
                msgs.append(("U", locate, 0, ts, ref, next_ref, shares, p4))
                next_ref += 1
                continue
            msgs.append(("D", locate, 0, ts, ref))
        live[oid] = (next_ref, side)
        msgs.append(("A", locate, 0, ts, next_ref, side, shares, stock, p4))
        next_ref += 1
    return msgs


SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN")


def synthetic_flow(rng: random.Random, n: int, symbols=SYMBOLS, bad: float = 0.0,
                   first_ref: int = 1) -> list[tuple]:
    """A consistent seeded synthetic order flow (R for every symbol, then A/F/E/C/X/D/U/P/H/S/...).
    With bad > 0, that fraction of messages disagrees with the order table."""
    msgs = [("R", i + 1, 0, 0, s, "Q", "N", 100, "N", "C", "Z", "P", "N", "N", "1", "N", 0, "N")
            for i, s in enumerate(symbols)]
    live: dict[int, list] = {}
    next_ref = first_ref
    match = 1
    ts = 1000
    for _ in range(n):
        ts += rng.randrange(1, 5000)
        loc = rng.randrange(len(symbols)) + 1
        sym = symbols[loc - 1]
        r = rng.random()
        if bad and rng.random() < bad:
            kind = rng.randrange(3)
            if kind == 0:
                msgs.append(("D", loc, 0, ts, 10**12 + rng.randrange(1000)))
            elif kind == 1 and live:
                msgs.append(("A", loc, 0, ts, rng.choice(list(live)), "B", 10, sym, 1_000_000))
            elif live:
                ref_ = rng.choice(list(live))
                msgs.append(("X", live[ref_][0], 0, ts, ref_, live[ref_][3] + 1))
            continue
        if r < 0.35 or not live:
            side = rng.choice("BS")
            price = 1_000_000 + (rng.randrange(-40, 0) if side == "B" else rng.randrange(1, 41)) * 100
            shares = rng.randrange(1, 50) * 100
            if rng.random() < 0.2:
                msgs.append(("F", loc, 0, ts, next_ref, side, shares, sym, price, "MPID"))
            else:
                msgs.append(("A", loc, 0, ts, next_ref, side, shares, sym, price))
            live[next_ref] = [loc, side, price, shares]
            next_ref += 1
            continue
        ref_ = rng.choice(list(live))
        o = live[ref_]
        if o[3] == 0 and r < 0.6:
            r = 0.7                  # nothing left to execute or cancel: delete it
        if r < 0.45:
            n_ = rng.randrange(1, o[3] + 1)
            msgs.append(("E", o[0], 0, ts, ref_, n_, match))
            match += 1
            o[3] -= n_
        elif r < 0.5:
            n_ = rng.randrange(1, o[3] + 1)
            msgs.append(("C", o[0], 0, ts, ref_, n_, match, rng.choice("YN"), o[2] + rng.randrange(-2, 3)))
            match += 1
            o[3] -= n_
        elif r < 0.6:
            n_ = rng.randrange(1, o[3] + 1)
            msgs.append(("X", o[0], 0, ts, ref_, n_))
            o[3] -= n_
        elif r < 0.75:
            msgs.append(("D", o[0], 0, ts, ref_))
            o[3] = 0
        elif r < 0.9:
            shares = rng.randrange(0, 50) * 100
            price = o[2] if rng.random() < 0.4 else o[2] + rng.randrange(-5, 6) * 100
            msgs.append(("U", o[0], 0, ts, ref_, next_ref, shares, price))
            live[next_ref] = [o[0], o[1], price, shares]
            next_ref += 1
            o[3] = 0
        elif r < 0.94:
            msgs.append(("P", loc, 0, ts, 0, rng.choice("BS"), rng.randrange(1, 500), sym,
                         1_000_000 + rng.randrange(-50, 50), match))
            match += 1
        elif r < 0.97:
            msgs.append(("H", loc, 0, ts, sym, rng.choice("HPQTTT"), " ", "LUDP"))
        elif r < 0.985:
            msgs.append(("S", 0, 0, ts, rng.choice("OSQMEC")))
        else:
            t = rng.choice("YLVWKJhQBINO")
            msgs.append((t, loc, 0, ts, bytes(rng.randrange(256) for _ in range(LENGTHS[t] - 11))))
        if o[3] == 0:
            del live[ref_]
    return msgs


def close_flow(msgs: list[tuple], per_packet: int = 20) -> list[tuple]:
    """msgs plus a Delete for every order still live at the end, padded with System
    Events to a multiple of per_packet: replaying the result twice in a row is valid
    (benchmarks cycle through it)."""
    app = RefBookApplier(strict=False)
    enc = [encode_message(m) for m in msgs]
    for pkt in packets_of(enc, per_packet=per_packet):
        app.apply_packet(pkt)
    ts = msgs[-1][3] + 1 if msgs else 1
    out = list(msgs) + [("D", o[0], 0, ts, r) for r, o in app.orders.items()]
    while len(out) % per_packet:
        out.append(("S", 0, 0, ts, "Q"))
    return out


def packets_of(messages: list[bytes], session: str = "TEST000001", first_seq: int = 1,
               per_packet: int = 20) -> list[bytes]:
    """Group encoded messages into MoldUDP64 packets of `per_packet` messages."""
    out, seq = [], first_seq
    for i in range(0, len(messages), per_packet):
        chunk = messages[i:i + per_packet]
        out.append(encode_packet(session, seq, chunk))
        seq += len(chunk)
    return out
