"""Nasdaq TotalView-ITCH 5.0 over MoldUDP64: codec, and decode-and-apply into L2 books.

Message lengths used (see itch.pxd for the sources): S 12, R 39, H 25, A 36,
F 40, E 31, C 36, X 23, D 19, U 35, P 44; the other ITCH 5.0 types (Y 20, L 26,
V 35, W 12, K 28, J 35, h 21, Q 40, B 19, I 50, N 20, O 48) are recognised,
length-checked and passed over.

Hot path: ``ItchBookApplier.apply_packet(packet)``
--------------------------------------------------
One call per MoldUDP64 packet (bytes / bytearray / memoryview). No Python object
is created per message; it returns an ``ItchApplyResult``:

* ``seq`` / ``next_seq``: sequence number of the first message and the one after
  the last (for a heartbeat or end of session both are the header's number, the
  next expected one). Gap detection is the feed handler's job:
  ``result.seq != expected`` is a gap; ``expected = result.next_seq``.
* ``count``, ``kind`` (``PACKET_DATA`` / ``PACKET_HEARTBEAT`` / ``PACKET_END_OF_SESSION``)
* ``top_changed``: tuple of the instrument indices whose best bid or ask (price
  or size) changed, each once, in order of first change.
* ``trades``: NumPy array of ``TRADE_DTYPE`` (price, shares, ts, match, seq,
  instrument, locate, side, kind b'E'/b'C'/b'P', printable) for E, C and P.
* ``halts_changed``: instrument indices whose halted flag flipped (H messages).

Prices: the wire's price4 (4 implied decimals) is used as the book's int64 tick
count, i.e. one tick = $0.0001; ``core_ext.ouch.price4_to_ticks`` converts to a
coarser tick grid at the edge.

Instruments are indexed 0, 1, ... in order of registration: the ``books`` given
to the constructor first, then every new symbol seen in R (or in an A/F/P/H for a
locate without an R) for which an ``L2Book`` is created (``create_books=True``;
with False, only the given books are maintained and other symbols' orders are
tracked but not applied).

Errors and what is applied
--------------------------
The whole packet is checked first (header, every message block inside the
buffer, every type known and of its exact length, enumerated fields: side B/S,
trading state H/P/Q/T, event code, printable Y/N, stock symbols printable ASCII,
no bytes after the last message). A framing or field error raises before
anything is applied: the books are untouched. Errors: ``ItchTruncatedError``,
``ItchPacketLengthError``, ``ItchBadLengthError``, ``ItchUnknownMessageError``,
``ItchFieldError``; each names ``offset`` (in the packet), ``msg_type``, ``seq``.

Then the messages are applied in order. With ``strict=True`` (default) a message
that disagrees with the order table (``ItchUnknownOrderError`` for E/C/X/D/U of
an unknown reference, ``ItchDuplicateOrderError`` for an A/F/U reusing a live
one, ``ItchExcessSharesError`` for E/C/X of more shares than are left) stops the
packet there: earlier messages stay applied, later ones are not; the exception
carries ``applied`` and ``result`` (the ItchApplyResult of the applied prefix)
and the feed handler must treat the book as stale (resync). With
``strict=False`` such messages are counted in ``anomalies`` and ignored (excess
shares are clamped to what is left) and the rest of the packet is applied.
"""
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

import numpy as np

from core_ext.book cimport BOOK_TOP_CHANGED, L2Book
from core_ext.common cimport SIDE_BUY, SIDE_SELL
from core_ext.wire cimport (WireInput, wire_get_u16, wire_get_u32, wire_get_u48,
                            wire_get_u64, wire_input_close, wire_input_open, wire_is_alpha,
                            wire_put_u16, wire_put_u32, wire_put_u48, wire_put_u64, wire_rstrip)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class ItchError(ValueError):
    """Base of every ITCH / MoldUDP64 codec error."""


class ItchDecodeError(ItchError):
    """Bad input. ``offset``: byte offset in the packet (or message); ``msg_type``:
    the type character or None; ``seq``: sequence number of the message, when
    known; ``applied``: messages applied from the packet before the error;
    ``result``: the ItchApplyResult of those (apply_packet state errors only)."""

    def __init__(self, message, msg_type=None, offset=None, seq=None):
        super().__init__(message)
        self.msg_type = msg_type
        self.offset = offset
        self.seq = seq
        self.applied = 0
        self.result = None


class ItchTruncatedError(ItchDecodeError):
    """Packet shorter than its header, or a block's length field / message past the end."""


class ItchPacketLengthError(ItchDecodeError):
    """Bytes after the last announced message (or after a heartbeat / end-of-session header)."""


class ItchBadLengthError(ItchDecodeError):
    """A message length field that is not the fixed length of its type (or 0)."""


class ItchUnknownMessageError(ItchDecodeError):
    """A type byte that is not an ITCH 5.0 message."""


class ItchFieldError(ItchDecodeError):
    """A field outside its set: side not B/S, trading state, event code, printable, stock."""


class ItchUnknownOrderError(ItchDecodeError):
    """E / C / X / D / U for an order reference that is not live (strict mode)."""


class ItchDuplicateOrderError(ItchDecodeError):
    """A / F / U adding an order reference that is already live (strict mode)."""


class ItchExcessSharesError(ItchDecodeError):
    """E / C / X removing more shares than the order has left (strict mode)."""


class ItchEncodeError(ItchError):
    """A value that cannot be encoded (out of range, not in its set, too long)."""


class ItchBufferTooSmallError(ItchEncodeError):
    """The output buffer has no room for the message."""


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

cdef Py_ssize_t _LEN[256]
cdef uint8_t _CS[256]

LENGTHS = {
    "S": ITCH_LEN_SYSTEM_EVENT, "R": ITCH_LEN_STOCK_DIRECTORY, "H": ITCH_LEN_TRADING_ACTION,
    "A": ITCH_LEN_ADD_ORDER, "F": ITCH_LEN_ADD_ORDER_MPID, "E": ITCH_LEN_ORDER_EXECUTED,
    "C": ITCH_LEN_ORDER_EXECUTED_PRICE, "X": ITCH_LEN_ORDER_CANCEL, "D": ITCH_LEN_ORDER_DELETE,
    "U": ITCH_LEN_ORDER_REPLACE, "P": ITCH_LEN_TRADE,
    "Y": ITCH_LEN_REG_SHO, "L": ITCH_LEN_PARTICIPANT_POSITION, "V": ITCH_LEN_MWCB_DECLINE,
    "W": ITCH_LEN_MWCB_STATUS, "K": ITCH_LEN_IPO_QUOTING, "J": ITCH_LEN_LULD_COLLAR,
    "h": ITCH_LEN_OPERATIONAL_HALT, "Q": ITCH_LEN_CROSS_TRADE, "B": ITCH_LEN_BROKEN_TRADE,
    "I": ITCH_LEN_NOII, "N": ITCH_LEN_RPII, "O": ITCH_LEN_DLCR,
}
#: The types that affect books, halts or trades; the others are only length-checked.
APPLIED_TYPES = "SRHAFECXDUP"

PACKET_DATA = ITCH_PACKET_DATA
PACKET_HEARTBEAT = ITCH_PACKET_HEARTBEAT
PACKET_END_OF_SESSION = ITCH_PACKET_END_OF_SESSION
EVENT_CODES = "OSQMEC"
TRADING_STATES = "HPQT"


cdef void _tables_init() noexcept:
    cdef int c
    memset(_LEN, 0, sizeof(_LEN))
    memset(_CS, 0, sizeof(_CS))
    for k, v in LENGTHS.items():
        _LEN[ord(k)] = v
    for c in range(0x20, 0x7F):
        _CS[c] |= ITCH_CS_ALPHA
    for c in b"BS":
        _CS[c] |= ITCH_CS_SIDE
    for c in b"OSQMEC":
        _CS[c] |= ITCH_CS_EVENT
    for c in b"HPQT":
        _CS[c] |= ITCH_CS_STATE
    for c in b"YN":
        _CS[c] |= ITCH_CS_YN


_tables_init()


cdef ItchTrade _t0
TRADE_DTYPE = np.dtype({
    "names": ["price", "shares", "ts", "match", "seq", "instrument", "locate", "side", "kind",
              "printable"],
    "formats": [np.int64, np.int64, np.int64, np.uint64, np.uint64, np.int32, np.uint16, np.int8,
                "S1", np.uint8],
    "offsets": [<Py_ssize_t>(<char*>&_t0.price - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.shares - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.ts - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.match - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.seq - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.instrument - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.locate - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.side - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.kind - <char*>&_t0),
                <Py_ssize_t>(<char*>&_t0.printable - <char*>&_t0)],
    "itemsize": sizeof(ItchTrade),
})


cdef Py_ssize_t itch_message_length(uint8_t t) noexcept nogil:
    return _LEN[t]


# ---------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------

cdef inline object _tchr(const unsigned char* m, Py_ssize_t avail):
    return chr(m[0]) if avail > 0 else None


cdef int _fail(object cls, str text, object msg_type, Py_ssize_t offset, object seq) except -1:
    t = f" '{msg_type}'" if msg_type is not None else ""
    raise cls(f"ITCH{t}: {text} (offset {offset})", msg_type, offset, seq)


cdef inline bint _stock_ok(const unsigned char* p) noexcept nogil:
    # All 8 bytes printable ASCII (0x20..0x7E), SWAR: no byte < 0x20 and none > 0x7E.
    cdef uint64_t v = wire_get_u64(p)
    cdef uint64_t less = (v - <uint64_t>0x2020202020202020) & ~v & <uint64_t>0x8080808080808080
    cdef uint64_t more = ((v + <uint64_t>0x0101010101010101) | v) & <uint64_t>0x8080808080808080
    return (less | more) == 0


cdef inline Py_ssize_t _message_problem(const unsigned char* m, Py_ssize_t n) noexcept nogil:
    # 0 when the message is valid; -1 unknown type; -2 wrong length; else the
    # position of the first bad field.
    cdef uint8_t t = m[0]
    cdef Py_ssize_t want = _LEN[t]
    if want == 0:
        return -1
    if n != want:
        return -2
    if t == b"A" or t == b"F" or t == b"P":
        if not (_CS[m[19]] & ITCH_CS_SIDE):
            return 19
        if not _stock_ok(m + 24):
            return 24
    elif t == b"C":
        if not (_CS[m[31]] & ITCH_CS_YN):
            return 31
    elif t == b"H":
        if not _stock_ok(m + 11):
            return 11
        if not (_CS[m[19]] & ITCH_CS_STATE):
            return 19
    elif t == b"R":
        if not _stock_ok(m + 11):
            return 11
    elif t == b"S":
        if not (_CS[m[11]] & ITCH_CS_EVENT):
            return 11
    return 0


cdef int _report(const unsigned char* m, Py_ssize_t n, Py_ssize_t off, uint64_t seq,
                 Py_ssize_t problem) except -1:
    # The cold path of itch_check_message: raise the error `problem` stands for.
    cdef str t = chr(m[0])
    cdef str name
    if problem == -1:
        _fail(ItchUnknownMessageError, "unknown message type", t, off, seq)
    if problem == -2:
        _fail(ItchBadLengthError, f"length {n}, the type has {_LEN[m[0]]}", t, off, seq)
    if problem == 24 or (problem == 11 and t in "HR"):
        _fail(ItchFieldError, "stock is not printable ASCII", t, off + problem, seq)
    name = {"A": "side", "F": "side", "P": "side", "C": "printable", "H": "trading state",
            "S": "event code"}[t]
    _fail(ItchFieldError, f"{name} {bytes([m[problem]])!r} not in its set", t, off + problem, seq)


cdef int itch_check_message(const unsigned char* m, Py_ssize_t n, Py_ssize_t off,
                            uint64_t seq) except -1:
    cdef Py_ssize_t problem = _message_problem(m, n)
    if problem:
        _report(m, n, off, seq, problem)
    return 0


cdef Py_ssize_t mold_check_packet(const unsigned char* p, Py_ssize_t n, MoldHeader* h) except -1:
    cdef Py_ssize_t off, mlen, i, count, problem
    if n < MOLD_HEADER_LEN:
        _fail(ItchTruncatedError, f"MoldUDP64 packet of {n} bytes, the header has 20", None, 0,
              None)
    h.session = p
    h.seq = wire_get_u64(p + 10)
    h.count = wire_get_u16(p + 18)
    if h.count == MOLD_COUNT_HEARTBEAT or h.count == MOLD_COUNT_END_OF_SESSION:
        h.kind = (ITCH_PACKET_HEARTBEAT if h.count == MOLD_COUNT_HEARTBEAT
                  else ITCH_PACKET_END_OF_SESSION)
        if n != MOLD_HEADER_LEN:
            _fail(ItchPacketLengthError, f"{n - 20} bytes after a heartbeat / end-of-session",
                  None, MOLD_HEADER_LEN, h.seq)
        return 0
    h.kind = ITCH_PACKET_DATA
    count = h.count
    off = MOLD_HEADER_LEN
    for i in range(count):
        if n - off < 2:
            _fail(ItchTruncatedError, f"message {i} of {count}: length field past the end", None,
                  off, h.seq + i)
        mlen = wire_get_u16(p + off)
        if mlen == 0:
            _fail(ItchBadLengthError, f"message {i}: length 0", None, off, h.seq + i)
        if n - off - 2 < mlen:
            _fail(ItchTruncatedError, f"message {i}: {mlen} bytes announced, {n - off - 2} left",
                  _tchr(p + off + 2, n - off - 2), off, h.seq + i)
        problem = _message_problem(p + off + 2, mlen)
        if problem:
            _report(p + off + 2, mlen, off + 2, h.seq + i, problem)
        off += 2 + mlen
    if off != n:
        _fail(ItchPacketLengthError, f"{n - off} bytes after the last of {count} messages", None,
              off, None)
    return count


# ---------------------------------------------------------------------------
# Order table (open addressing, linear probing, backward-shift deletion)
# ---------------------------------------------------------------------------

cdef inline Py_ssize_t _home(uint64_t ref, Py_ssize_t mask) noexcept nogil:
    cdef uint64_t h = ref * <uint64_t>0x9E3779B97F4A7C15
    h ^= h >> 29
    return <Py_ssize_t>(h & <uint64_t>mask)


cdef ItchOrder* order_find(OrderTable* t, uint64_t ref) noexcept nogil:
    cdef Py_ssize_t i = _home(ref, t.mask)
    cdef ItchOrder* s = t.slots
    while s[i].used:
        if s[i].ref == ref:
            return &s[i]
        i = (i + 1) & t.mask
    return NULL


cdef int _order_table_init(OrderTable* t, Py_ssize_t capacity) except -1:
    cdef Py_ssize_t cap = 16
    while cap < capacity:
        cap *= 2
    t.slots = <ItchOrder*>calloc(cap, sizeof(ItchOrder))
    if t.slots == NULL:
        raise MemoryError("cannot allocate the ITCH order table")
    t.mask = cap - 1
    t.count = 0
    return 0


cdef int _order_table_grow(OrderTable* t) except -1:
    cdef Py_ssize_t old_cap = t.mask + 1
    cdef Py_ssize_t new_cap = old_cap * 2
    cdef ItchOrder* old = t.slots
    cdef ItchOrder* fresh = <ItchOrder*>calloc(new_cap, sizeof(ItchOrder))
    cdef Py_ssize_t i, j
    if fresh == NULL:
        raise MemoryError(f"cannot grow the ITCH order table to {new_cap} slots")
    for i in range(old_cap):
        if old[i].used:
            j = _home(old[i].ref, new_cap - 1)
            while fresh[j].used:
                j = (j + 1) & (new_cap - 1)
            fresh[j] = old[i]
    free(old)
    t.slots = fresh
    t.mask = new_cap - 1
    return 0


cdef ItchOrder* order_insert(OrderTable* t, uint64_t ref) except NULL:
    cdef Py_ssize_t i
    if (t.count + 1) * 2 > t.mask + 1:
        _order_table_grow(t)
    i = _home(ref, t.mask)
    while t.slots[i].used:
        i = (i + 1) & t.mask
    t.slots[i].used = 1
    t.slots[i].ref = ref
    t.count += 1
    return &t.slots[i]


cdef void order_remove(OrderTable* t, ItchOrder* slot) noexcept nogil:
    cdef ItchOrder* s = t.slots
    cdef Py_ssize_t mask = t.mask
    cdef Py_ssize_t i = slot - s
    cdef Py_ssize_t j = i
    cdef Py_ssize_t k
    while True:
        j = (j + 1) & mask
        if not s[j].used:
            break
        k = _home(s[j].ref, mask)
        # s[j] stays when its home k lies cyclically in (i, j]
        if (i <= j and i < k <= j) or (i > j and (k > i or k <= j)):
            continue
        s[i] = s[j]
        i = j
    s[i].used = 0
    t.count -= 1


# ---------------------------------------------------------------------------
# Apply result
# ---------------------------------------------------------------------------

@cython.final
@cython.no_gc
@cython.freelist(16)
cdef class ItchApplyResult:
    """What one ``ItchBookApplier.apply_packet`` call did (see the module doc).
    One is made per packet: a free list recycles the objects and small lists live
    inside the object, so a typical packet costs no allocation."""

    def __dealloc__(self):
        free(self._mem)     # NULL when the lists were inline

    @property
    def session(self):
        """MoldUDP64 session name (str, right padding removed)."""
        return (<const char*>self._session)[:wire_rstrip(self._session, 10)].decode("latin-1")

    @property
    def top_changed(self):
        """Instrument indices whose top of book changed, each once, in order of first change."""
        cdef Py_ssize_t i
        cdef tuple out = PyTuple_New(self._n_top)
        cdef object v
        for i in range(self._n_top):
            v = self._top[i]
            Py_INCREF(v)
            PyTuple_SET_ITEM(out, i, v)
        return out

    @property
    def halts_changed(self):
        """Instrument indices whose halted flag flipped."""
        return tuple([self._halts[i] for i in range(self._n_halts)])

    @property
    def n_trades(self):
        return self._n_trades

    @property
    def trades(self):
        """NumPy array of TRADE_DTYPE: the E, C and P messages of tracked instruments."""
        cdef unsigned char[::1] raw
        if self._trades_array is None:
            arr = np.empty(self._n_trades, dtype=TRADE_DTYPE)
            if self._n_trades:
                raw = arr.view(np.uint8)
                memcpy(&raw[0], self._trades, self._n_trades * sizeof(ItchTrade))
            self._trades_array = arr
        return self._trades_array

    @property
    def is_heartbeat(self):
        return self.kind == ITCH_PACKET_HEARTBEAT

    @property
    def is_end_of_session(self):
        return self.kind == ITCH_PACKET_END_OF_SESSION

    def __repr__(self):
        return (f"ItchApplyResult(session={self.session!r}, seq={self.seq}, "
                f"next_seq={self.next_seq}, "
                f"count={self.count}, applied={self.applied}, top_changed={self.top_changed}, "
                f"trades={self._n_trades}, halts_changed={self.halts_changed})")


# ---------------------------------------------------------------------------
# The applier
# ---------------------------------------------------------------------------

@cython.final
cdef class ItchBookApplier:
    """ItchBookApplier(books=(), strict=True, create_books=True, order_capacity=65536)

    Keeps the stock-locate -> instrument map, one L2Book per instrument, a C hash
    table of the live orders (reference -> locate, side, price, shares) and a
    halted flag per instrument; ``apply_packet`` applies a whole MoldUDP64 packet.
    """

    def __cinit__(self, books=(), bint strict=True, bint create_books=True,
                  Py_ssize_t order_capacity=65536):
        cdef Py_ssize_t i
        self._locate_index = <int32_t*>malloc(65536 * sizeof(int32_t))
        if self._locate_index == NULL:
            raise MemoryError()
        for i in range(65536):
            self._locate_index[i] = -2
        _order_table_init(&self._orders, max(order_capacity, 8) * 2)
        self._books = []
        self._symbols = []
        self._index_by_symbol = {}
        self._n_instruments = 0
        self._cap_instruments = 0
        self._generation = 1
        self._cap_scratch = 0
        self._grow_scratch(64)
        self.strict = strict
        self.create_books = create_books
        for book in books:
            if not isinstance(book, L2Book):
                raise TypeError(f"books must be L2Book objects, not {type(book).__name__}")
            if book.symbol in self._index_by_symbol:
                raise ValueError(f"two books for symbol {book.symbol!r}")
            self._add_instrument(book.symbol, <L2Book>book)

    def __dealloc__(self):
        free(self._locate_index)
        free(self._orders.slots)
        free(self._halted)
        free(self._mark_top)
        free(self._mark_halt)
        free(self._price_div)
        free(self._trades)
        free(self._top)
        free(self._halts)

    # -- instruments ----------------------------------------------------------

    cdef int _grow_instruments(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self._cap_instruments
        cdef void* a
        cdef void* b
        cdef void* c
        if need <= cap:
            return 0
        cap = max(16, cap * 2, need)
        a = realloc(self._halted, cap * sizeof(uint8_t))
        if a == NULL:
            raise MemoryError()
        self._halted = <uint8_t*>a
        b = realloc(self._mark_top, cap * sizeof(uint32_t))
        if b == NULL:
            raise MemoryError()
        self._mark_top = <uint32_t*>b
        c = realloc(self._mark_halt, cap * sizeof(uint32_t))
        if c == NULL:
            raise MemoryError()
        self._mark_halt = <uint32_t*>c
        c = realloc(self._price_div, cap * sizeof(int64_t))
        if c == NULL:
            raise MemoryError()
        self._price_div = <int64_t*>c
        self._cap_instruments = cap
        return 0

    cdef int32_t _add_instrument(self, str symbol, L2Book book) except -1:
        cdef Py_ssize_t idx = self._n_instruments
        if idx >= 0x7FFFFFFF:
            raise OverflowError("too many instruments")
        self._grow_instruments(idx + 1)
        self._books.append(book)
        self._symbols.append(symbol)
        self._index_by_symbol[symbol] = idx
        self._halted[idx] = 0
        self._mark_top[idx] = 0
        self._mark_halt[idx] = 0
        self._price_div[idx] = 1
        self._n_instruments = idx + 1
        return <int32_t>idx

    cdef int32_t _instrument(self, uint16_t locate, const unsigned char* stock,
                             bint force) except -3:
        cdef int32_t idx = self._locate_index[locate]
        if idx != -2 and not force:
            return idx
        symbol = (<const char*>stock)[:wire_rstrip(stock, 8)].decode("ascii")
        if idx >= 0 and self._symbols[idx] == symbol:
            return idx
        found = self._index_by_symbol.get(symbol)
        if found is not None:
            idx = found
        elif self.create_books:
            idx = self._add_instrument(symbol, L2Book(symbol))
        else:
            idx = -1
        self._locate_index[locate] = idx
        return idx

    def add_book(self, L2Book book):
        """Track one more instrument with a given book; returns its index."""
        if book.symbol in self._index_by_symbol:
            raise ValueError(f"symbol {book.symbol!r} is already tracked")
        idx = self._add_instrument(book.symbol, book)
        # locates already seen for this symbol but untracked stay untracked until their next R
        return idx

    @property
    def books(self):
        """The L2Book of every instrument, by index (a new list)."""
        return list(self._books)

    @property
    def symbols(self):
        return list(self._symbols)

    def book(self, symbol):
        """The L2Book of `symbol`, or None."""
        idx = self._index_by_symbol.get(symbol)
        return None if idx is None else self._books[idx]

    def index_of(self, symbol):
        """Instrument index of `symbol`, or None."""
        return self._index_by_symbol.get(symbol)

    def instrument_of_locate(self, int locate):
        """Instrument index of a stock locate; None when unseen, -1 when seen but untracked."""
        if locate < 0 or locate > 0xFFFF:
            raise ValueError("stock locate is a u16")
        idx = self._locate_index[locate]
        return None if idx == -2 else idx

    def set_price_divisor(self, symbol, int64_t price4_per_tick):
        """Keep `symbol`'s book in the instrument's own ticks: a wire price4 p becomes
        p // price4_per_tick (100 for a $0.01 tick). A wire price that is not a whole
        number of ticks is counted in `anomalies` and rounded down."""
        if price4_per_tick < 1:
            raise ValueError(f"price4_per_tick must be >= 1, got {price4_per_tick}")
        idx = self._index_by_symbol.get(symbol)
        if idx is None:
            raise KeyError(f"no instrument {symbol!r}: add its book first")
        self._price_div[<Py_ssize_t>idx] = price4_per_tick

    def price_divisor(self, symbol):
        idx = self._index_by_symbol.get(symbol)
        if idx is None:
            raise KeyError(f"no instrument {symbol!r}")
        return self._price_div[<Py_ssize_t>idx]

    cdef int64_t _ticks(self, int32_t instrument, int64_t price4) noexcept:
        cdef int64_t div = self._price_div[instrument]
        if div == 1:
            return price4
        if price4 % div != 0:
            self._anomalies += 1
        return price4 // div

    def is_halted(self, Py_ssize_t index):
        if index < 0 or index >= self._n_instruments:
            raise IndexError(f"no instrument {index}")
        return bool(self._halted[index])

    @property
    def order_count(self):
        """Live orders in the reference table."""
        return self._orders.count

    def order(self, uint64_t ref):
        """(locate, side, price, shares, instrument) of a live order, or None."""
        cdef ItchOrder* o = order_find(&self._orders, ref)
        if o == NULL:
            return None
        return (o.locate, o.side, o.price, o.shares, o.instrument)

    def clear_orders(self):
        """Forget every live order (new session); books are left to the caller."""
        memset(self._orders.slots, 0, (self._orders.mask + 1) * sizeof(ItchOrder))
        self._orders.count = 0

    # -- per packet -------------------------------------------------------------

    cdef int _grow_scratch(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = max(need, self._cap_scratch * 2, 64)
        cdef void* a = realloc(self._trades, cap * sizeof(ItchTrade))
        if a == NULL:
            raise MemoryError()
        self._trades = <ItchTrade*>a
        a = realloc(self._top, cap * sizeof(int32_t))
        if a == NULL:
            raise MemoryError()
        self._top = <int32_t*>a
        a = realloc(self._halts, cap * sizeof(int32_t))
        if a == NULL:
            raise MemoryError()
        self._halts = <int32_t*>a
        self._cap_scratch = cap
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _book_delta(self, int32_t instrument, int side, int64_t price,
                         int64_t delta) except -1:
        # instrument is in [0, _n_instruments): the list index needs no check.
        cdef L2Book book = <L2Book>self._books[instrument]
        if self._price_div[instrument] != 1:     # the common case (book in price4) skips the call
            price = self._ticks(instrument, price)
        if book.apply_delta(side, price, delta) == BOOK_TOP_CHANGED:
            if self._mark_top[instrument] != self._generation:
                self._mark_top[instrument] = self._generation
                self._top[self._n_top] = instrument
                self._n_top += 1
        return 0

    cdef int _trade(self, int32_t instrument, uint16_t locate, int side, int64_t price,
                    int64_t shares, const unsigned char* m, uint64_t match, uint8_t printable,
                    uint64_t seq) except -1:
        cdef ItchTrade* tr = &self._trades[self._n_trades]
        tr.price = self._ticks(instrument, price)
        tr.shares = shares
        tr.ts = <int64_t>wire_get_u48(m + 5)
        tr.match = match
        tr.seq = seq
        tr.instrument = instrument
        tr.locate = locate
        tr.side = <int8_t>side
        tr.kind = m[0]
        tr.printable = printable
        self._n_trades += 1
        return 0

    cdef int _state_error(self, object cls, const unsigned char* m, str text) except -1:
        # strict: raise (offset and seq are filled in by apply_packet); else count it.
        if self.strict:
            raise cls(f"ITCH '{chr(m[0])}': {text}", chr(m[0]))
        self._anomalies += 1
        return 1

    cdef int _apply(self, const unsigned char* m, uint64_t seq) except -1:
        cdef uint8_t t = m[0]
        cdef uint16_t locate
        cdef int32_t idx
        cdef uint64_t ref, new_ref
        cdef int64_t shares, price, old_shares, old_price
        cdef int side
        cdef uint8_t halted
        cdef ItchOrder* o
        if t == b"A" or t == b"F":
            locate = wire_get_u16(m + 1)
            idx = self._locate_index[locate]
            if idx == -2:
                idx = self._instrument(locate, m + 24, False)
            ref = wire_get_u64(m + 11)
            if order_find(&self._orders, ref) != NULL:
                return self._state_error(ItchDuplicateOrderError, m, f"order {ref} is already live")
            side = SIDE_BUY if m[19] == b"B" else SIDE_SELL
            shares = wire_get_u32(m + 20)
            price = wire_get_u32(m + 32)
            o = order_insert(&self._orders, ref)
            o.price = price
            o.shares = shares
            o.instrument = idx
            o.locate = locate
            o.side = <uint8_t>side
            if idx >= 0 and shares > 0:
                self._book_delta(idx, side, price, shares)
        elif t == b"E" or t == b"C" or t == b"X":
            ref = wire_get_u64(m + 11)
            shares = wire_get_u32(m + 19)
            o = order_find(&self._orders, ref)
            if o == NULL:
                return self._state_error(ItchUnknownOrderError, m, f"order {ref} is not live")
            if shares > o.shares:
                self._state_error(ItchExcessSharesError, m,
                                  f"{shares} shares off order {ref} which has {o.shares} left")
                shares = o.shares
            idx = o.instrument
            side = o.side
            price = o.price
            locate = o.locate
            o.shares -= shares
            if o.shares == 0:
                order_remove(&self._orders, o)
            if idx >= 0:
                if shares > 0:
                    self._book_delta(idx, side, price, -shares)
                if t == b"E":
                    self._trade(idx, locate, side, price, shares, m, wire_get_u64(m + 23), 1, seq)
                elif t == b"C":
                    self._trade(idx, locate, side, wire_get_u32(m + 32), shares, m,
                                wire_get_u64(m + 23), 1 if m[31] == b"Y" else 0, seq)
        elif t == b"D":
            ref = wire_get_u64(m + 11)
            o = order_find(&self._orders, ref)
            if o == NULL:
                return self._state_error(ItchUnknownOrderError, m, f"order {ref} is not live")
            idx = o.instrument
            side = o.side
            price = o.price
            shares = o.shares
            order_remove(&self._orders, o)
            if idx >= 0 and shares > 0:
                self._book_delta(idx, side, price, -shares)
        elif t == b"U":
            ref = wire_get_u64(m + 11)
            new_ref = wire_get_u64(m + 19)
            o = order_find(&self._orders, ref)
            if o == NULL:
                return self._state_error(ItchUnknownOrderError, m, f"order {ref} is not live")
            if new_ref != ref and order_find(&self._orders, new_ref) != NULL:
                return self._state_error(ItchDuplicateOrderError, m,
                                         f"replacement order {new_ref} is already live")
            idx = o.instrument
            side = o.side
            locate = o.locate
            old_price = o.price
            old_shares = o.shares
            order_remove(&self._orders, o)
            shares = wire_get_u32(m + 27)
            price = wire_get_u32(m + 31)
            o = order_insert(&self._orders, new_ref)
            o.price = price
            o.shares = shares
            o.instrument = idx
            o.locate = locate
            o.side = <uint8_t>side
            if idx >= 0:
                if price == old_price:
                    # same level: one net delta (the level is touched once)
                    if shares != old_shares:
                        self._book_delta(idx, side, price, shares - old_shares)
                else:
                    if old_shares > 0:
                        self._book_delta(idx, side, old_price, -old_shares)
                    if shares > 0:
                        self._book_delta(idx, side, price, shares)
        elif t == b"P":
            locate = wire_get_u16(m + 1)
            idx = self._locate_index[locate]
            if idx == -2:
                idx = self._instrument(locate, m + 24, False)
            if idx >= 0:
                self._trade(idx, locate, SIDE_BUY if m[19] == b"B" else SIDE_SELL,
                            wire_get_u32(m + 32), wire_get_u32(m + 20), m, wire_get_u64(m + 36), 1,
                            seq)
        elif t == b"R":
            self._instrument(wire_get_u16(m + 1), m + 11, True)
        elif t == b"H":
            idx = self._instrument(wire_get_u16(m + 1), m + 11, False)
            if idx >= 0:
                halted = 0 if m[19] == b"T" else 1
                if self._halted[idx] != halted:
                    self._halted[idx] = halted
                    if self._mark_halt[idx] != self._generation:
                        self._mark_halt[idx] = self._generation
                        self._halts[self._n_halts] = idx
                        self._n_halts += 1
        return 0

    cdef ItchApplyResult _result(self, const MoldHeader* h, Py_ssize_t count, Py_ssize_t applied):
        cdef ItchApplyResult r = ItchApplyResult.__new__(ItchApplyResult)
        cdef size_t bytes_trades = self._n_trades * sizeof(ItchTrade)
        cdef size_t bytes_top = self._n_top * sizeof(int32_t)
        cdef size_t bytes_halts = self._n_halts * sizeof(int32_t)
        cdef unsigned char* mem
        memcpy(r._session, h.session, 10)
        r.seq = h.seq
        r.next_seq = h.seq + <uint64_t>applied
        r.count = count
        r.applied = applied
        r.kind = h.kind
        r.anomalies = self._anomalies
        r._trades_array = None
        r._mem = NULL       # a recycled object from the free list keeps no old pointer
        if bytes_trades + bytes_top + bytes_halts:
            if bytes_trades + bytes_top + bytes_halts <= sizeof(r._inline):
                mem = <unsigned char*>r._inline
            else:
                mem = <unsigned char*>malloc(bytes_trades + bytes_top + bytes_halts)
                if mem == NULL:
                    raise MemoryError()
                r._mem = mem
            memcpy(mem, self._trades, bytes_trades)
            memcpy(mem + bytes_trades, self._top, bytes_top)
            memcpy(mem + bytes_trades + bytes_top, self._halts, bytes_halts)
            r._trades = <ItchTrade*>mem
            r._top = <int32_t*>(mem + bytes_trades)
            r._halts = <int32_t*>(mem + bytes_trades + bytes_top)
        r._n_trades = self._n_trades
        r._n_top = self._n_top
        r._n_halts = self._n_halts
        return r

    cpdef ItchApplyResult apply_packet(self, object packet):
        """Check a whole MoldUDP64 packet, then apply every message to the books."""
        cdef WireInput r
        cdef MoldHeader h
        cdef Py_ssize_t count, i, off, applied = 0
        cdef const unsigned char* p
        wire_input_open(packet, &r)
        try:
            p = r.p
            count = mold_check_packet(p, r.n, &h)
            self._generation += 1
            if self._generation == 0:  # wrapped: old marks could collide
                memset(self._mark_top, 0, self._cap_instruments * sizeof(uint32_t))
                memset(self._mark_halt, 0, self._cap_instruments * sizeof(uint32_t))
                self._generation = 1
            if count > self._cap_scratch:
                self._grow_scratch(count)
            self._n_trades = 0
            self._n_top = 0
            self._n_halts = 0
            self._anomalies = 0
            off = MOLD_HEADER_LEN
            try:
                for i in range(count):
                    self._apply(p + off + 2, h.seq + <uint64_t>i)
                    off += 2 + wire_get_u16(p + off)
                    applied += 1
            except ItchDecodeError as exc:
                exc.offset = off + 2
                exc.seq = h.seq + <uint64_t>applied
                exc.applied = applied
                exc.result = self._result(&h, count, applied)
                self.messages += applied
                self.anomalies += self._anomalies
                raise
            self.packets += 1
            self.messages += count
            self.anomalies += self._anomalies
            return self._result(&h, count, count)
        finally:
            wire_input_close(&r)


# ---------------------------------------------------------------------------
# Python-level decoding (not the hot path): tuples per message
# ---------------------------------------------------------------------------

_U2, _U4, _U8, _TS = ITCH_F_U2, ITCH_F_U4, ITCH_F_U8, ITCH_F_TS
_STK, _ALF, _CHR = ITCH_F_STOCK, ITCH_F_ALPHA, ITCH_F_CHAR
_HEADER = [("locate", _U2, 2), ("tracking", _U2, 2), ("ts", _TS, 6)]
_FIELDS = {
    "S": [("event_code", _CHR, 1)],
    "R": [("stock", _STK, 8), ("market_category", _CHR, 1), ("financial_status", _CHR, 1),
          ("round_lot_size", _U4, 4), ("round_lots_only", _CHR, 1),
          ("issue_classification", _CHR, 1), ("issue_subtype", _ALF, 2),
          ("authenticity", _CHR, 1), ("short_sale_threshold", _CHR, 1), ("ipo_flag", _CHR, 1),
          ("luld_tier", _CHR, 1), ("etp_flag", _CHR, 1), ("etp_leverage", _U4, 4),
          ("inverse", _CHR, 1)],
    "H": [("stock", _STK, 8), ("trading_state", _CHR, 1), ("reserved", _CHR, 1),
          ("reason", _ALF, 4)],
    "A": [("ref", _U8, 8), ("side", _CHR, 1), ("shares", _U4, 4), ("stock", _STK, 8),
          ("price", _U4, 4)],
    "F": [("ref", _U8, 8), ("side", _CHR, 1), ("shares", _U4, 4), ("stock", _STK, 8),
          ("price", _U4, 4), ("attribution", _ALF, 4)],
    "E": [("ref", _U8, 8), ("shares", _U4, 4), ("match", _U8, 8)],
    "C": [("ref", _U8, 8), ("shares", _U4, 4), ("match", _U8, 8), ("printable", _CHR, 1),
          ("price", _U4, 4)],
    "X": [("ref", _U8, 8), ("shares", _U4, 4)],
    "D": [("ref", _U8, 8)],
    "U": [("old_ref", _U8, 8), ("new_ref", _U8, 8), ("shares", _U4, 4), ("price", _U4, 4)],
    "P": [("ref", _U8, 8), ("side", _CHR, 1), ("shares", _U4, 4), ("stock", _STK, 8),
          ("price", _U4, 4), ("match", _U8, 8)],
}
for _t in LENGTHS:
    if _t not in _FIELDS:
        _FIELDS[_t] = [("body", ITCH_F_BODY, LENGTHS[_t] - ITCH_HEADER_LEN)]

#: Field names of each message type's tuple, after the type character.
FIELDS = {t: tuple(name for name, _, _ in _HEADER + spec) for t, spec in _FIELDS.items()}
cdef dict _SPECS = {ord(t): [(code, width) for _, code, width in _HEADER + spec]
                    for t, spec in _FIELDS.items()}


cdef tuple _decode_fields(const unsigned char* m, Py_ssize_t n):
    # m is a checked message of length n.
    cdef list out = [chr(m[0])]
    cdef Py_ssize_t pos = 1
    cdef int code
    cdef Py_ssize_t width
    for code, width in _SPECS[m[0]]:
        if code == ITCH_F_U2:
            out.append(wire_get_u16(m + pos))
        elif code == ITCH_F_U4:
            out.append(wire_get_u32(m + pos))
        elif code == ITCH_F_U8:
            out.append(wire_get_u64(m + pos))
        elif code == ITCH_F_TS:
            out.append(wire_get_u48(m + pos))
        elif code == ITCH_F_STOCK or code == ITCH_F_ALPHA:
            out.append((<const char*>m + pos)[:wire_rstrip(m + pos, width)].decode("latin-1"))
        elif code == ITCH_F_CHAR:
            out.append(chr(m[pos]))
        else:
            out.append(PyBytes_FromStringAndSize(<const char*>m + pos, width))
        pos += width
    return tuple(out)


def decode_message(msg):
    """One bare ITCH 5.0 message -> (type, locate, tracking, ts, fields in FIELDS[type] order).

    Types without book effect decode as (type, locate, tracking, ts, body_bytes)."""
    cdef WireInput r
    wire_input_open(msg, &r)
    try:
        if r.n < 1:
            _fail(ItchTruncatedError, "empty message", None, 0, None)
        itch_check_message(r.p, r.n, 0, 0)
        return _decode_fields(r.p, r.n)
    finally:
        wire_input_close(&r)


def decode_packet(packet):
    """A whole MoldUDP64 packet -> (session, seq, count_field, [message tuples]).

    Checked exactly as apply_packet checks it (same errors)."""
    cdef WireInput r
    cdef MoldHeader h
    cdef Py_ssize_t count, _i, off, mlen
    cdef list msgs = []
    wire_input_open(packet, &r)
    try:
        count = mold_check_packet(r.p, r.n, &h)
        off = MOLD_HEADER_LEN
        for _i in range(count):
            mlen = wire_get_u16(r.p + off)
            msgs.append(_decode_fields(r.p + off + 2, mlen))
            off += 2 + mlen
        session = (<const char*>h.session)[:wire_rstrip(h.session, 10)].decode("latin-1")
        return (session, h.seq, h.count, msgs)
    finally:
        wire_input_close(&r)


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------

cdef void itch_put_header(unsigned char* out, uint8_t t, uint16_t locate, uint16_t tracking,
                          uint64_t ts) noexcept nogil:
    out[0] = t
    wire_put_u16(out + 1, locate)
    wire_put_u16(out + 3, tracking)
    wire_put_u48(out + 5, ts)


cdef int _enc_fail(str text) except -1:
    raise ItchEncodeError(text)


cdef uint64_t _uint(object value, str name, int bits) except? 0xFFFFFFFFFFFFFFFF:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < 0 or (value >> bits):
        _enc_fail(f"{name} {value} outside 0..2**{bits}-1")
    return <uint64_t>value


cdef bytes _ascii(object value, str name, Py_ssize_t width):
    cdef bytes raw
    if isinstance(value, str):
        try:
            raw = (<str>value).encode("ascii")
        except UnicodeEncodeError:
            _enc_fail(f"{name} {value!r} is not ASCII")
    elif isinstance(value, bytes):
        raw = value
    else:
        raise TypeError(f"{name} must be str or bytes, not {type(value).__name__}")
    if PyBytes_GET_SIZE(raw) > width:
        _enc_fail(f"{name} {value!r} longer than {width}")
    if not wire_is_alpha(<const unsigned char*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw)):
        _enc_fail(f"{name} {value!r} is not printable ASCII")
    return raw


cdef Py_ssize_t _encode_into(unsigned char* out, Py_ssize_t cap, str t, tuple fields) except -1:
    # Writes message type t with `fields` (everything after the type) at out.
    cdef list spec = _HEADER + _FIELDS[t] if t in _FIELDS else None
    cdef Py_ssize_t pos = 1, width, length
    cdef int code
    cdef bytes raw
    if spec is None:
        _enc_fail(f"unknown ITCH message type {t!r}")
    length = _LEN[ord(t)]
    if cap < length:
        raise ItchBufferTooSmallError(f"{cap} bytes free, message '{t}' needs {length}")
    if len(fields) != len(spec):
        raise TypeError(f"message '{t}' takes {len(spec)} fields {FIELDS[t]}, got {len(fields)}")
    out[0] = ord(t)
    for (name, code, width), value in zip(spec, fields):
        if code == ITCH_F_U2:
            wire_put_u16(out + pos, <uint16_t>_uint(value, name, 16))
        elif code == ITCH_F_U4:
            wire_put_u32(out + pos, <uint32_t>_uint(value, name, 32))
        elif code == ITCH_F_U8:
            wire_put_u64(out + pos, _uint(value, name, 64))
        elif code == ITCH_F_TS:
            wire_put_u48(out + pos, _uint(value, name, 48))
        elif code == ITCH_F_STOCK or code == ITCH_F_ALPHA:
            raw = _ascii(value, name, width)
            memcpy(out + pos, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))
            memset(out + pos + PyBytes_GET_SIZE(raw), 0x20, width - PyBytes_GET_SIZE(raw))
        elif code == ITCH_F_CHAR:
            if name == "side" and isinstance(value, int) and not isinstance(value, bool):
                if value != SIDE_BUY and value != SIDE_SELL:
                    _enc_fail(f"side {value!r} is neither SIDE_BUY nor SIDE_SELL")
                out[pos] = ord("B") if value == SIDE_BUY else ord("S")
            else:
                raw = _ascii(value, name, 1)
                if PyBytes_GET_SIZE(raw) != 1:
                    _enc_fail(f"{name} {value!r} is not one character")
                out[pos] = <unsigned char>PyBytes_AS_STRING(raw)[0]
        else:
            if not isinstance(value, bytes) or PyBytes_GET_SIZE(value) != width:
                _enc_fail(f"{name} must be {width} bytes")
            memcpy(out + pos, PyBytes_AS_STRING(value), width)
        pos += width
    try:
        itch_check_message(out, length, 0, 0)
    except ItchDecodeError as exc:
        raise ItchEncodeError(f"message '{t}' would not decode: {exc}") from None
    return length


def pack_message(bytearray buf, Py_ssize_t offset, str msg_type, *fields):
    """Write one bare message at buf[offset:]; returns the end offset (fields: FIELDS[msg_type])."""
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(buf)
    if offset < 0 or offset > size:
        raise ItchBufferTooSmallError(f"offset {offset} outside the buffer (size {size})")
    return offset + _encode_into(<unsigned char*>PyByteArray_AS_STRING(buf) + offset, size - offset,
                                 msg_type, fields)


def encode_message(fields):
    """A message tuple (as decode_message returns it) -> bytes."""
    cdef unsigned char tmp[64]
    cdef Py_ssize_t n = _encode_into(tmp, 64, fields[0], tuple(fields[1:]))
    return PyBytes_FromStringAndSize(<const char*>tmp, n)


def encode_system_event(locate, tracking, ts, event_code):
    return encode_message(("S", locate, tracking, ts, event_code))


def encode_stock_directory(locate, tracking, ts, stock, market_category="Q", financial_status="N",
                           round_lot_size=100, round_lots_only="N", issue_classification="C",
                           issue_subtype="Z", authenticity="P", short_sale_threshold="N",
                           ipo_flag="N", luld_tier="1", etp_flag="N", etp_leverage=0, inverse="N"):
    return encode_message(("R", locate, tracking, ts, stock, market_category, financial_status,
                           round_lot_size, round_lots_only, issue_classification, issue_subtype,
                           authenticity, short_sale_threshold, ipo_flag, luld_tier, etp_flag,
                           etp_leverage, inverse))


def encode_trading_action(locate, tracking, ts, stock, trading_state, reserved=" ", reason=""):
    return encode_message(("H", locate, tracking, ts, stock, trading_state, reserved, reason))


def encode_add_order(locate, tracking, ts, ref, side, shares, stock, price):
    return encode_message(("A", locate, tracking, ts, ref, side, shares, stock, price))


def encode_add_order_mpid(locate, tracking, ts, ref, side, shares, stock, price, attribution):
    return encode_message(("F", locate, tracking, ts, ref, side, shares, stock, price, attribution))


def encode_order_executed(locate, tracking, ts, ref, shares, match):
    return encode_message(("E", locate, tracking, ts, ref, shares, match))


def encode_order_executed_with_price(locate, tracking, ts, ref, shares, match, printable, price):
    return encode_message(("C", locate, tracking, ts, ref, shares, match, printable, price))


def encode_order_cancel(locate, tracking, ts, ref, shares):
    return encode_message(("X", locate, tracking, ts, ref, shares))


def encode_order_delete(locate, tracking, ts, ref):
    return encode_message(("D", locate, tracking, ts, ref))


def encode_order_replace(locate, tracking, ts, old_ref, new_ref, shares, price):
    return encode_message(("U", locate, tracking, ts, old_ref, new_ref, shares, price))


def encode_trade(locate, tracking, ts, ref, side, shares, stock, price, match):
    return encode_message(("P", locate, tracking, ts, ref, side, shares, stock, price, match))


cdef int _session_bytes(object session, unsigned char* out) except -1:
    raw = _ascii(session, "session", MOLD_SESSION_LEN)
    memcpy(out, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))
    memset(out + PyBytes_GET_SIZE(raw), 0x20, MOLD_SESSION_LEN - PyBytes_GET_SIZE(raw))
    return 0


def encode_packet(session, seq, messages):
    """A MoldUDP64 packet from bare messages (bytes); messages=[] gives a heartbeat."""
    cdef unsigned char head[20]
    _session_bytes(session, head)
    wire_put_u64(head + 10, _uint(seq, "seq", 64))
    if len(messages) > MOLD_MAX_COUNT:
        _enc_fail(f"{len(messages)} messages do not fit one packet")
    wire_put_u16(head + 18, <uint16_t>len(messages))
    parts = [PyBytes_FromStringAndSize(<const char*>head, 20)]
    for m in messages:
        if len(m) > 0xFFFF:
            _enc_fail("message longer than 65535 bytes")
        parts.append(len(m).to_bytes(2, "big"))
        parts.append(bytes(m))
    return b"".join(parts)


def encode_end_of_session(session, seq):
    """The MoldUDP64 end-of-session packet (count 0xFFFF) with the next sequence number."""
    cdef unsigned char head[20]
    _session_bytes(session, head)
    wire_put_u64(head + 10, _uint(seq, "seq", 64))
    wire_put_u16(head + 18, MOLD_COUNT_END_OF_SESSION)
    return PyBytes_FromStringAndSize(<const char*>head, 20)


@cython.final
cdef class MoldPacketBuilder:
    """MoldPacketBuilder(session, next_seq=1, max_packet=1400)

    Collects messages into MoldUDP64 packets of at most ``max_packet`` bytes
    (header included) and at most 65534 messages; a message that does not fit
    closes the current packet and starts the next. ``flush()`` closes the
    current packet and returns every finished packet (bytes) in order;
    ``heartbeat()`` / ``end_of_session()`` return those packets for the current
    ``next_seq`` (flush first: they do not include pending messages)."""

    def __cinit__(self, session, uint64_t next_seq=1,
                  Py_ssize_t max_packet=MOLD_DEFAULT_MAX_PACKET):
        if max_packet < MOLD_HEADER_LEN + 2 + 50 or max_packet > 0xFFFF:
            raise ValueError(f"max_packet {max_packet} outside 72..65535")
        _session_bytes(session, self._session)
        self.next_seq = next_seq
        self.max_packet = max_packet
        self._buf = bytearray(max_packet)
        self._len = MOLD_HEADER_LEN
        self._count = 0
        self._first_seq = next_seq
        self._ready = []

    @property
    def session(self):
        return (<const char*>self._session)[:wire_rstrip(self._session, 10)].decode("ascii")

    @property
    def pending(self):
        """Messages in the packet being built."""
        return self._count

    @property
    def ready(self):
        """Finished packets waiting for flush()."""
        return len(self._ready)

    cdef int _close(self) except -1:
        cdef unsigned char* out = <unsigned char*>PyByteArray_AS_STRING(self._buf)
        if self._count == 0:
            return 0
        memcpy(out, self._session, 10)
        wire_put_u64(out + 10, self._first_seq)
        wire_put_u16(out + 18, <uint16_t>self._count)
        self._ready.append(PyBytes_FromStringAndSize(<const char*>out, self._len))
        self._len = MOLD_HEADER_LEN
        self._count = 0
        self._first_seq = self.next_seq
        return 0

    cdef int _append(self, const unsigned char* msg, Py_ssize_t n) except -1:
        cdef unsigned char* out
        if self._count > 0 and (self._len + 2 + n > self.max_packet
                                or self._count >= MOLD_MAX_COUNT):
            self._close()
        if self._len + 2 + n > self.max_packet:
            raise ItchBufferTooSmallError(
                f"a {n}-byte message does not fit max_packet {self.max_packet}")
        out = <unsigned char*>PyByteArray_AS_STRING(self._buf) + self._len
        wire_put_u16(out, <uint16_t>n)
        memcpy(out + 2, msg, n)
        self._len += 2 + n
        self._count += 1
        self.next_seq += 1
        return 0

    def add(self, fields):
        """Append a message given as a tuple (type, locate, tracking, ts, ...)."""
        cdef unsigned char tmp[64]
        cdef Py_ssize_t n = _encode_into(tmp, 64, fields[0], tuple(fields[1:]))
        self._append(tmp, n)
        return self.next_seq - 1

    def add_raw(self, msg):
        """Append an already encoded message (checked like a received one)."""
        cdef WireInput r
        wire_input_open(msg, &r)
        try:
            if r.n < 1:
                _enc_fail("empty message")
            try:
                itch_check_message(r.p, r.n, 0, 0)
            except ItchDecodeError as exc:
                raise ItchEncodeError(f"not a valid ITCH message: {exc}") from None
            self._append(r.p, r.n)
        finally:
            wire_input_close(&r)
        return self.next_seq - 1

    def system_event(self, locate, tracking, ts, event_code):
        return self.add(("S", locate, tracking, ts, event_code))

    def stock_directory(self, locate, tracking, ts, stock, *rest):
        """rest: the R fields after stock; default a plain common stock (encode_stock_directory)."""
        return self.add_raw(encode_stock_directory(locate, tracking, ts, stock, *rest))

    def trading_action(self, locate, tracking, ts, stock, trading_state, reserved=" ", reason=""):
        return self.add(("H", locate, tracking, ts, stock, trading_state, reserved, reason))

    def add_order(self, locate, tracking, ts, ref, side, shares, stock, price):
        return self.add(("A", locate, tracking, ts, ref, side, shares, stock, price))

    def add_order_mpid(self, locate, tracking, ts, ref, side, shares, stock, price, attribution):
        return self.add(("F", locate, tracking, ts, ref, side, shares, stock, price, attribution))

    def order_executed(self, locate, tracking, ts, ref, shares, match):
        return self.add(("E", locate, tracking, ts, ref, shares, match))

    def order_executed_with_price(self, locate, tracking, ts, ref, shares, match, printable, price):
        return self.add(("C", locate, tracking, ts, ref, shares, match, printable, price))

    def order_cancel(self, locate, tracking, ts, ref, shares):
        return self.add(("X", locate, tracking, ts, ref, shares))

    def order_delete(self, locate, tracking, ts, ref):
        return self.add(("D", locate, tracking, ts, ref))

    def order_replace(self, locate, tracking, ts, old_ref, new_ref, shares, price):
        return self.add(("U", locate, tracking, ts, old_ref, new_ref, shares, price))

    def trade(self, locate, tracking, ts, ref, side, shares, stock, price, match):
        return self.add(("P", locate, tracking, ts, ref, side, shares, stock, price, match))

    def flush(self):
        """Close the current packet; return every finished packet (list of bytes)."""
        self._close()
        out = self._ready
        self._ready = []
        return out

    def heartbeat(self):
        """A heartbeat packet (count 0) carrying next_seq."""
        cdef unsigned char head[20]
        memcpy(head, self._session, 10)
        wire_put_u64(head + 10, self.next_seq)
        wire_put_u16(head + 18, MOLD_COUNT_HEARTBEAT)
        return PyBytes_FromStringAndSize(<const char*>head, 20)

    def end_of_session(self):
        """An end-of-session packet (count 0xFFFF) carrying next_seq."""
        cdef unsigned char head[20]
        memcpy(head, self._session, 10)
        wire_put_u64(head + 10, self.next_seq)
        wire_put_u16(head + 18, MOLD_COUNT_END_OF_SESSION)
        return PyBytes_FromStringAndSize(<const char*>head, 20)
