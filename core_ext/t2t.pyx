"""Tick-to-trade in C: MoldUDP64/ITCH packet bytes in, FIX NewOrderSingle bytes out.

``TickToTrade(instruments, kernel, encoder, strategy, next_cl_ord_id, ...)`` owns an
``ItchBookApplier`` (one ``L2Book`` per instrument, in the instruments' own ticks),
and calls, from C, for every packet given to ``process(packet, now_ns=-1)``:

1. ``applier.apply_packet(packet)`` (cpdef: a C call) -- the books are updated and
   the instruments whose top of book changed are known;
2. per changed instrument, in order: the risk kernel's reference price is set to
   the mid (as ``engine.risk_policy.RiskPolicy.on_quote`` does: both sides present
   and ``0 < bid <= ask``), a change of the book's ``stale`` flag (set by the feed
   handler on a gap) reaches the kernel, and the strategy's ``cdef on_top`` is called
   with a ``T2TTop``. Only changes of the book's flag are passed on: a stale flag
   the Python side set in the kernel stays until the Python side clears it (fail
   closed);
3. per order request: ``RiskKernel.check_order`` (``noexcept nogil``); a pass reserves
   the order and ``FixEncoder.new_order_single`` encodes it; a refusal is a RiskCode
   in the order log, never an exception.

``process`` returns the FIX bytes (several orders: the messages concatenated, ready
for one ``transport.write``) or ``None``; ``last_result`` is the packet's
``ItchApplyResult`` (sequence numbers for a feed handler's gap detection). Every
request, sent or refused, is recorded in the order log: ``drain_orders()`` returns
it as a NumPy array of ``ORDER_DTYPE`` and empties it (call it off the hot path,
e.g. on the runtime's timer, to journal the orders and hand them to the order
manager). A full log refuses further orders (fail closed; counted in ``log_full``).

Instruments: a sequence of ``(symbol, inst_id, price4_per_tick, decimals, price_mult)``
-- the risk kernel's id, ITCH price units per tick (100 for a $0.01 tick), and the FIX
price text ``ticks * price_mult / 10**decimals`` (gateway.instruments.tick_parts).

ClOrdIDs are ``next_cl_ord_id, next_cl_ord_id + 1, ...`` (one per request, sent or
not, like ``engine.orders.OrderManager``), written in base 36 as
``engine.orders.format_cl_ord_id`` does. ``next_seq_num`` is the FIX MsgSeqNum of the
next order sent; a session that sends other messages must set it before each call.

The order is reserved in the kernel when sent; releasing it (cancel, fill, venue
reject) is the caller's business through ``kernel.on_cancel`` / ``on_fill`` /
``on_reject``, as for any order.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.ref cimport Py_REFCNT
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

import numpy as np

from core_ext.book cimport L2Book
from core_ext.common cimport (NO_PRICE, ORDTYPE_LIMIT, ORDTYPE_MARKET, SIDE_BUY, SIDE_SELL,
                              TIF_DAY, TIF_FOK, base36, side_is_valid)
from core_ext.fix cimport FixEncoder
from core_ext.itch cimport ItchApplyResult, ItchBookApplier
from core_ext.risk cimport RISK_OK, RiskKernel

__all__ = ["TickToTrade", "CStrategy", "QuoteAtTouch", "ORDER_DTYPE", "OUTCOME_SENT",
           "OUTCOME_ENCODE_FAILED", "MAX_ORDERS_PER_EVENT"]

OUTCOME_SENT = T2T_SENT
OUTCOME_ENCODE_FAILED = T2T_ENCODE_FAILED
MAX_ORDERS_PER_EVENT = T2T_MAX_ORDERS_PER_EVENT

cdef T2TOrderRecord _r0
#: NumPy twin of struct T2TOrderRecord (the order log).
ORDER_DTYPE = np.dtype({
    "names": ["cl_ord_id", "ts_ns", "inst_id", "qty", "price", "seq_num", "packet_seq",
              "instrument", "outcome", "side", "tif"],
    "formats": [np.uint64, np.int64, np.int64, np.int64, np.int64, np.int64, np.uint64,
                np.int32, np.int32, np.int8, np.uint8],
    "offsets": [<Py_ssize_t>(<char*>&_r0.cl_ord_id - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.ts_ns - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.inst_id - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.qty - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.price - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.seq_num - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.packet_seq - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.instrument - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.outcome - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.side - <char*>&_r0),
                <Py_ssize_t>(<char*>&_r0.tif - <char*>&_r0)],
    "itemsize": sizeof(T2TOrderRecord),
})

cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

cdef class CStrategy:
    """Base of compiled strategies: subclass in Cython, override ``cdef on_top``
    (and ``cdef on_order``). The base sends nothing."""

    cdef int on_top(self, TickToTrade t2t, const T2TTop* top,
                    T2TOrderRequest* out) except -1:
        return 0

    cdef int on_order(self, TickToTrade t2t, const T2TOrderRecord* rec) except -1:
        return 0


@cython.final
cdef class QuoteAtTouch(CStrategy):
    """QuoteAtTouch(qty=1, offset_ticks=0, tif=TIF_DAY, both_sides=False)

    On each top change of a two-sided, uncrossed book: one limit order of ``qty``
    lots, alternately a buy at ``bid - offset_ticks`` and a sell at
    ``ask + offset_ticks`` (``both_sides``: the two of them on every change)."""

    def __init__(self, int64_t qty=1, int64_t offset_ticks=0, int tif=TIF_DAY,
                 bint both_sides=False):
        if qty <= 0:
            raise ValueError(f"qty {qty}: must be > 0 lots")
        if offset_ticks < 0:
            raise ValueError(f"offset_ticks {offset_ticks}: must be >= 0")
        if tif < TIF_DAY or tif > TIF_FOK:
            raise ValueError(f"tif {tif}: one of TIF_DAY, TIF_GTC, TIF_IOC, TIF_FOK (0..3)")
        self.qty = qty
        self.offset_ticks = offset_ticks
        self.tif = tif
        self.both_sides = both_sides

    cdef int on_top(self, TickToTrade t2t, const T2TTop* top,
                    T2TOrderRequest* out) except -1:
        cdef int n = 0
        if top.bid == NO_PRICE or top.ask == NO_PRICE or top.bid >= top.ask:
            return 0
        if self.both_sides:
            if top.bid - self.offset_ticks > 0:
                out[n].instrument = top.instrument
                out[n].qty = self.qty
                out[n].tif = self.tif
                out[n].side = SIDE_BUY
                out[n].price = top.bid - self.offset_ticks
                n += 1
            out[n].instrument = top.instrument
            out[n].qty = self.qty
            out[n].tif = self.tif
            out[n].side = SIDE_SELL
            out[n].price = top.ask + self.offset_ticks
            n += 1
            self.requested += n
            return n
        out.instrument = top.instrument
        out.qty = self.qty
        out.tif = self.tif
        if self.requested & 1:
            out.side = SIDE_SELL
            out.price = top.ask + self.offset_ticks
        else:
            out.side = SIDE_BUY
            out.price = top.bid - self.offset_ticks
            if out.price <= 0:
                return 0
        self.requested += 1
        return 1

    cdef int on_order(self, TickToTrade t2t, const T2TOrderRecord* rec) except -1:
        if rec.outcome == T2T_SENT:
            self.sent += 1
        else:
            self.refused += 1
        return 0


# ---------------------------------------------------------------------------
# The path
# ---------------------------------------------------------------------------

@cython.final
cdef class TickToTrade:
    """TickToTrade(instruments, kernel, encoder, strategy, next_cl_ord_id, next_seq_num=1,
    set_reference=True, log_capacity=65536, strict=False, applier=None)

    See the module docstring. ``applier``: an existing ItchBookApplier (a feed
    handler's) whose books are used -- its instrument i must be instruments[i]; by
    default a new one with new books."""

    def __cinit__(self):
        self._inst_id = NULL
        self._price_mult = NULL
        self._decimals = NULL
        self._stale = NULL
        self._log = NULL

    def __init__(self, instruments, RiskKernel kernel not None, FixEncoder encoder not None,
                 CStrategy strategy not None, uint64_t next_cl_ord_id, int64_t next_seq_num=1,
                 bint set_reference=True, Py_ssize_t log_capacity=T2T_DEFAULT_LOG_CAPACITY,
                 bint strict=False, ItchBookApplier applier=None):
        cdef Py_ssize_t i, n
        cdef L2Book book
        if self._inst_id != NULL:
            raise TypeError("TickToTrade.__init__ called twice")
        rows = [tuple(r) for r in instruments]
        n = len(rows)
        if n < 1:
            raise ValueError("instruments: give at least one (symbol, inst_id, price4_per_tick, "
                             "decimals, price_mult)")
        if next_cl_ord_id == 0:
            raise ValueError("next_cl_ord_id: 0 is reserved for 'no id'")
        if next_seq_num < 1:
            raise ValueError(f"next_seq_num {next_seq_num}: must be >= 1")
        if log_capacity < 1 or log_capacity > (1 << 26):
            raise ValueError(f"log_capacity {log_capacity}: allowed 1..{1 << 26}")
        self._inst_id = <int64_t*>calloc(n, sizeof(int64_t))
        self._price_mult = <int64_t*>calloc(n, sizeof(int64_t))
        self._decimals = <int*>calloc(n, sizeof(int))
        self._stale = <uint8_t*>calloc(n, sizeof(uint8_t))
        if (self._inst_id == NULL or self._price_mult == NULL or self._decimals == NULL
                or self._stale == NULL):
            raise MemoryError()
        self._books = []
        self._symbols = []
        self._symbols_b = []
        seen = set()
        for i, row in enumerate(rows):
            if len(row) != 5:
                raise ValueError(f"instruments[{i}]: expected (symbol, inst_id, price4_per_tick, "
                                 f"decimals, price_mult), got {row!r}")
            symbol, inst_id, p4, decimals, mult = row
            if not isinstance(symbol, str) or not symbol or not symbol.isascii() \
                    or not symbol.isprintable() or len(symbol) > 8:
                raise ValueError(f"instruments[{i}]: symbol {symbol!r} must be 1..8 printable "
                                 f"ASCII characters (an ITCH stock)")
            if symbol in seen:
                raise ValueError(f"instruments[{i}]: symbol {symbol!r} given twice")
            seen.add(symbol)
            if not kernel.is_known(inst_id):
                raise ValueError(f"instruments[{i}]: inst_id {inst_id!r} is not registered in "
                                 f"the risk kernel")
            if not 0 <= decimals <= 18:
                raise ValueError(f"instruments[{i}]: decimals {decimals!r} outside 0..18")
            if mult < 1:
                raise ValueError(f"instruments[{i}]: price_mult {mult!r} must be >= 1")
            if p4 < 1:
                raise ValueError(f"instruments[{i}]: price4_per_tick {p4!r} must be >= 1")
            book = L2Book(symbol)
            if applier is not None:
                book = applier.book(symbol) if symbol in applier.symbols else None
                if book is None or applier.index_of(symbol) != i:
                    raise ValueError(f"instruments[{i}]: symbol {symbol!r} is not instrument {i} of "
                                     f"the given applier (its symbols: {applier.symbols})")
            self._books.append(book)
            self._symbols.append(symbol)
            self._symbols_b.append(symbol.encode("ascii"))
            self._inst_id[i] = inst_id
            self._price_mult[i] = mult
            self._decimals[i] = decimals
        self._n = n
        if applier is None:
            self.applier = ItchBookApplier(self._books, strict=strict, create_books=False)
            for i in range(n):
                self.applier.set_price_divisor(self._symbols[i], rows[i][2])
        else:
            # a feed handler's applier (its books, divisors and order table): the runtime
            # hosting a compiled strategy shares it (see use_applier)
            self.applier = applier
        self.kernel = kernel
        self.encoder = encoder
        self.strategy = strategy
        self.next_cl_ord_id = next_cl_ord_id
        self.next_seq_num = next_seq_num
        self.set_reference = set_reference
        # Fresh (never shared) bytes objects, one per ClOrdID length: see _cl_ord_id_text.
        self._clid_scratch = [None] + [PyBytes_FromStringAndSize(NULL, k)
                                       for k in range(1, T2T_CL_ORD_ID_MAX_LEN + 1)]
        self._clid_value = 0
        self._clid_len = 0
        self._log_arr = np.zeros(log_capacity, dtype=ORDER_DTYPE)
        self._log = <T2TOrderRecord*><char*><Py_ssize_t>self._log_arr.ctypes.data
        self._log_cap = log_capacity
        self._log_n = 0

    def __dealloc__(self):
        free(self._inst_id)
        free(self._price_mult)
        free(self._decimals)
        free(self._stale)

    def use_applier(self, ItchBookApplier applier not None):
        """Continue with another applier holding the same books in the same order (a
        feed handler makes a new one when it rebuilds its books from sequence 1)."""
        cdef Py_ssize_t i
        for i in range(self._n):
            if applier.index_of(self._symbols[i]) != i or applier.book(self._symbols[i]) is not self._books[i]:
                raise ValueError(f"use_applier: instrument {i} ({self._symbols[i]!r}) is not the same "
                                 f"book at the same index in the new applier")
        self.applier = applier

    # -- reading ----------------------------------------------------------------

    @property
    def symbols(self):
        return list(self._symbols)

    @property
    def books(self):
        """The L2Book of each instrument, by index (a new list)."""
        return list(self._books)

    def book(self, symbol):
        """The L2Book of `symbol`; KeyError if not tracked."""
        try:
            return self._books[self._symbols.index(symbol)]
        except ValueError:
            raise KeyError(f"no instrument {symbol!r}") from None

    def inst_id(self, Py_ssize_t index):
        if index < 0 or index >= self._n:
            raise IndexError(f"no instrument {index}")
        return self._inst_id[index]

    @property
    def pending_orders(self):
        """Order records in the log, not drained yet."""
        return self._log_n

    def drain_orders(self):
        """The order log (NumPy array of ORDER_DTYPE, a copy) and empty it."""
        out = self._log_arr[:self._log_n].copy()
        self._log_n = 0
        return out

    def top(self, Py_ssize_t index):
        """(bid, bid_size, ask, ask_size) of an instrument; NO_PRICE / 0 on an empty side."""
        cdef T2TTop t
        if self.read_top(index, &t) != 0:
            raise IndexError(f"no instrument {index}")
        return (t.bid, t.bid_size, t.ask, t.ask_size)

    # -- the hot path -------------------------------------------------------------

    cdef int read_top(self, Py_ssize_t idx, T2TTop* out) noexcept:
        if idx < 0 or idx >= self._n:
            return -1
        self._fill_top(idx, 0, 0, out)
        return 0

    cdef void _fill_top(self, Py_ssize_t idx, int64_t now_ns, uint64_t seq,
                        T2TTop* top) noexcept:
        cdef L2Book book = <L2Book>self._books[idx]
        top.instrument = <int32_t>idx
        top.inst_id = self._inst_id[idx]
        top.bid = book.best_price(SIDE_BUY)
        top.bid_size = book.best_size(SIDE_BUY)
        top.ask = book.best_price(SIDE_SELL)
        top.ask_size = book.best_size(SIDE_SELL)
        top.now_ns = now_ns
        top.seq = seq
        top.event = self.events

    cdef bytes _cl_ord_id_text(self, uint64_t cl):
        # The scratch object is private: it is only ever passed to the encoder, which
        # copies the characters. Should anything else hold a reference (refcount above
        # the list's + ours), a fresh object is made instead of writing into it.
        cdef Py_ssize_t i, n
        cdef char* d = self._clid_digits
        cdef bytes b
        if self._clid_value != 0 and cl == self._clid_value + 1:
            i = self._clid_len - 1
            while i >= 0 and d[i] == b'Z':      # carry
                d[i] = b'0'
                i -= 1
            if i >= 0:
                d[i] = b'A' if d[i] == b'9' else <char>(d[i] + 1)
                self._clid_value = cl
            else:                               # one more digit (cannot pass 13: uint64)
                self._clid_len = base36(cl, d)
                self._clid_value = cl
        else:
            self._clid_len = base36(cl, d)
            self._clid_value = cl
        n = self._clid_len
        b = <bytes>self._clid_scratch[n]
        if Py_REFCNT(b) > 2:
            return PyBytes_FromStringAndSize(d, n)
        memcpy(PyBytes_AS_STRING(b), d, n)
        return b

    cdef object _submit(self, const T2TOrderRequest* r, int64_t now_ns, uint64_t packet_seq):
        cdef Py_ssize_t idx = r.instrument
        cdef T2TOrderRecord* rec
        cdef uint64_t cl
        cdef int code
        cdef object data
        if idx < 0 or idx >= self._n:
            raise ValueError(f"strategy asked for instrument {idx}: tracked are 0..{self._n - 1}")
        if self._log_n >= self._log_cap:
            self.log_full += 1         # fail closed: an order nobody can journal is not sent
            return None
        cl = self.next_cl_ord_id
        self.next_cl_ord_id = cl + 1 if cl != <uint64_t>0xFFFFFFFFFFFFFFFF else 1
        rec = &self._log[self._log_n]
        self._log_n += 1
        rec.cl_ord_id = cl
        rec.ts_ns = now_ns
        rec.inst_id = self._inst_id[idx]
        rec.qty = r.qty
        rec.price = r.price
        rec.seq_num = -1
        rec.packet_seq = packet_seq
        rec.instrument = <int32_t>idx
        rec.side = <int8_t>r.side if side_is_valid(r.side) else <int8_t>-1
        rec.tif = <uint8_t>r.tif if TIF_DAY <= r.tif <= TIF_FOK else <uint8_t>255
        code = self.kernel.check_order(rec.inst_id, r.side, r.qty, r.price, cl, now_ns)
        if code != RISK_OK:
            rec.outcome = code
            self.orders_refused += 1
            self.strategy.on_order(self, rec)
            return None
        try:
            data = self.encoder.new_order_single(
                self.next_seq_num, self._cl_ord_id_text(cl), self._symbols_b[idx], r.side, r.qty,
                r.price, self._decimals[idx],
                ORDTYPE_MARKET if r.price == NO_PRICE else ORDTYPE_LIMIT, r.tif, None,
                now_ns, now_ns, self._price_mult[idx])
        except BaseException:
            self.kernel.apply_order_closed(rec.inst_id, r.side, r.qty)   # not sent: release
            rec.outcome = T2T_ENCODE_FAILED
            self.orders_refused += 1
            raise
        rec.outcome = T2T_SENT
        rec.seq_num = self.next_seq_num
        self.next_seq_num += 1
        self.orders_sent += 1
        self.strategy.on_order(self, rec)
        return data

    cdef int _sync_halts(self, ItchApplyResult res) except -1:
        cdef Py_ssize_t k, idx
        for k in range(res._n_halts):
            idx = res._halts[k]
            if 0 <= idx < self._n:
                self.kernel.set_halted(self.applier.is_halted(idx), self._inst_id[idx])
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cpdef object process(self, object packet, int64_t now_ns=-1):
        """One MoldUDP64 packet -> FIX NewOrderSingle bytes (several: concatenated) or None."""
        cdef ItchApplyResult res = self.applier.apply_packet(packet)
        cdef T2TTop top
        cdef T2TOrderRequest req[T2T_MAX_ORDERS_PER_EVENT]
        cdef Py_ssize_t k, j, idx
        cdef int n
        cdef int64_t bid, ask
        cdef uint8_t stale
        cdef L2Book book
        cdef object out = None
        cdef object data
        cdef list parts = None
        self.last_result = res
        self.packets += 1
        if res._n_top == 0 and res._n_halts == 0:
            return None
        if now_ns < 0:
            now_ns = _now_ns()
        if res._n_halts:
            self._sync_halts(res)
        for k in range(res._n_top):
            idx = res._top[k]
            if idx < 0 or idx >= self._n:
                continue
            self._fill_top(idx, now_ns, res.seq, &top)
            book = <L2Book>self._books[idx]
            stale = 1 if book.stale else 0
            if stale != self._stale[idx]:
                self._stale[idx] = stale
                self.kernel.apply_book_stale(top.inst_id, stale)
            bid = top.bid
            ask = top.ask
            if self.set_reference and bid != NO_PRICE and ask != NO_PRICE and 0 < bid <= ask:
                self.kernel.apply_reference_price(top.inst_id, (bid + ask) // 2, now_ns)
            n = self.strategy.on_top(self, &top, req)
            self.events += 1
            if n < 0 or n > T2T_MAX_ORDERS_PER_EVENT:
                raise ValueError(f"{type(self.strategy).__name__}.on_top returned {n}: "
                                 f"allowed 0..{T2T_MAX_ORDERS_PER_EVENT}")
            for j in range(n):
                data = self._submit(&req[j], now_ns, res.seq)
                if data is None:
                    continue
                if out is None:
                    out = data
                else:
                    if parts is None:
                        parts = [out]
                    parts.append(data)
        if parts is not None:
            return b"".join(parts)
        return out
