"""The compiled replay loop of the backtest (see replay.pxd for the full contract).

Python API:

* ``REPLAY_DTYPE``: one row of an event array (ts_ns, price, qty, order_id, inst,
  kind, side, flags, reserved); ``REPLAY_*`` constants for ``kind``, ``flags`` and
  the unknown aggressor side.
* ``ReplayClock()``: the simulated clock, a callable returning ``now_ns``.
* ``Replay(books, symbols=None, *, clock=None, l3_books=None, kernel=None,
  kernel_ids=None, marks=None)``: the loop over one set of books, wired with
  ``set_strategy``, ``set_execution``, ``set_timer`` and ``set_progress``, driven with
  ``run(events, start=0, stop=None) -> events processed``.
* ``ReplayError(ValueError)``: a malformed row (names the row index and the field).

The loop never allocates per row; per event it crosses into Python only for the
callbacks described in replay.pxd.
"""
cimport cython
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free

import dataclasses
import types

import numpy as np

from core_ext.book cimport BOOK_UNCHANGED, L2Book
from core_ext.common cimport NO_PRICE, SIDE_BUY, SIDE_SELL, TIF_GTC
from core_ext.matching cimport MATCH_OK, MatchingBook, idmap_get
from core_ext.risk cimport RiskKernel

__all__ = [
    "REPLAY_DTYPE", "Replay", "ReplayClock", "ReplayError", "RecordMaker",
    "REPLAY_BOOK_SET", "REPLAY_BOOK_SNAPSHOT", "REPLAY_TRADE", "REPLAY_L3_ADD",
    "REPLAY_L3_CANCEL", "REPLAY_L3_REPLACE", "REPLAY_FLAG_END", "REPLAY_SIDE_UNKNOWN",
    "REPLAY_KIND_NAMES",
]

cdef extern from *:
    """
    /* Write a slot through its member descriptor (what object.__setattr__ ends in for a
       __slots__ member, without the attribute lookup or a frozen class's __setattr__). */
    static CYTHON_INLINE int replay_descr_set(PyObject* descr, PyObject* obj, PyObject* value) {
        descrsetfunc f = Py_TYPE(descr)->tp_descr_set;
        if (f == NULL) {
            PyErr_SetString(PyExc_TypeError, "replay: not a data descriptor");
            return -1;
        }
        return f(descr, obj, value);
    }
    /* A new, empty instance of a type (slots NULL), as object.__new__ makes it. */
    static CYTHON_INLINE PyObject* replay_alloc(PyObject* type) {
        PyTypeObject* tp = (PyTypeObject*)type;
        return tp->tp_alloc(tp, 0);
    }
    """
    int replay_descr_set(object descr, object obj, object value) except -1
    object replay_alloc(object type)


class ReplayError(ValueError):
    """A row of an event array is malformed; the message names the row and the field."""


#: One row of an event array; matches the C struct ReplayEvent (aligned, 40 bytes).
REPLAY_DTYPE = np.dtype(
    [("ts_ns", np.int64), ("price", np.int64), ("qty", np.int64), ("order_id", np.uint64),
     ("inst", np.uint32), ("kind", np.uint8), ("side", np.uint8), ("flags", np.uint8),
     ("reserved", np.uint8)],
    align=True,
)
if REPLAY_DTYPE.itemsize != sizeof(ReplayEvent):   # the NumPy and C layouts must agree
    raise ImportError(f"REPLAY_DTYPE is {REPLAY_DTYPE.itemsize} bytes, struct ReplayEvent "
                      f"{sizeof(ReplayEvent)}")

globals().update({
    "REPLAY_BOOK_SET": <int>REPLAY_BOOK_SET, "REPLAY_BOOK_SNAPSHOT": <int>REPLAY_BOOK_SNAPSHOT,
    "REPLAY_TRADE": <int>REPLAY_TRADE, "REPLAY_L3_ADD": <int>REPLAY_L3_ADD,
    "REPLAY_L3_CANCEL": <int>REPLAY_L3_CANCEL, "REPLAY_L3_REPLACE": <int>REPLAY_L3_REPLACE,
    "REPLAY_FLAG_END": <int>REPLAY_FLAG_END, "REPLAY_SIDE_UNKNOWN": <int>REPLAY_SIDE_UNKNOWN,
})
REPLAY_KIND_NAMES = ("book_set", "book_snapshot", "trade", "l3_add", "l3_cancel", "l3_replace")


# --------------------------------------------------------------------------- clock

@cython.final
cdef class ReplayClock:
    """The simulated clock: ``clock()`` is the current event time in ns."""

    def __init__(self, int64_t now_ns=0):
        self.now_ns = now_ns

    def __call__(self):
        return self.now_ns

    def __repr__(self):
        return f"ReplayClock(now_ns={self.now_ns})"


# --------------------------------------------------------------------------- records

def _member_descriptor(cls, name):
    for klass in cls.__mro__:
        d = klass.__dict__.get(name)
        if d is not None:
            return d if isinstance(d, types.MemberDescriptorType) else None
    return None


def _all_slots(cls):
    out = set()
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        out.update(s for s in slots if s not in ("__weakref__", "__dict__"))
    return out


@cython.final
cdef class _RecordMaker:
    """Builds instances of a record class from positional values.

    Fast path (``fast``): a ``dataclass(slots=True)`` whose fields are exactly
    ``fields`` (in order), with no ``__post_init__``, no ``__dict__`` and the default
    ``__new__``: the instance is allocated empty and each slot is written through its
    member descriptor, as the dataclass ``__init__`` would (frozen or not). Any other
    class is simply called.
    """

    def __init__(self, cls, fields):
        self.type = cls
        self.fields = tuple(fields)
        self._descrs = None
        self.fast = False
        if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
            return
        if getattr(cls, "__post_init__", None) is not None or cls.__new__ is not object.__new__:
            return
        if _dict_instances(cls):
            return
        if tuple(f.name for f in dataclasses.fields(cls)) != self.fields:
            return
        if _all_slots(cls) != set(self.fields):
            return
        descrs = tuple(_member_descriptor(cls, name) for name in self.fields)
        if any(d is None for d in descrs):
            return
        self._descrs = descrs
        self.fast = True

    cdef object make(self, tuple values):
        cdef Py_ssize_t i, n
        cdef tuple descrs = self._descrs
        if not self.fast:
            return self.type(*values)
        n = len(values)
        if n != len(descrs):
            raise TypeError(f"{self.type.__name__}: {len(descrs)} values needed, got {n}")
        obj = replay_alloc(self.type)
        for i in range(n):
            replay_descr_set(descrs[i], obj, values[i])
        return obj

    cdef object make6(self, object a, object b, object c, object d, object e, object f):
        cdef tuple descrs = self._descrs
        if not self.fast or len(descrs) != 6:
            return self.make((a, b, c, d, e, f))
        obj = replay_alloc(self.type)
        replay_descr_set(descrs[0], obj, a)
        replay_descr_set(descrs[1], obj, b)
        replay_descr_set(descrs[2], obj, c)
        replay_descr_set(descrs[3], obj, d)
        replay_descr_set(descrs[4], obj, e)
        replay_descr_set(descrs[5], obj, f)
        return obj

    def __call__(self, *values):
        """The instance for ``values`` (the same path the replay uses)."""
        return self.make(values)


def _dict_instances(cls):
    """True if instances of cls have a __dict__ (some class in the MRO lacks __slots__)."""
    for klass in cls.__mro__:
        if klass is object:
            continue
        if "__slots__" not in klass.__dict__:
            return True
    return False


RecordMaker = _RecordMaker


# --------------------------------------------------------------------------- replay

cdef inline object _px(int64_t price):
    return None if price == NO_PRICE else price


@cython.final
cdef class Replay:
    """The replay loop over one set of books; see the module docs and replay.pxd.

    ``books``: one ``core_ext.book.L2Book`` per instrument (index = ``inst`` of the
    rows). ``symbols``: the symbol handed to callbacks per instrument (default: each
    book's symbol). ``clock``: the ``ReplayClock`` to drive (default: a new one).
    ``l3_books``: a ``core_ext.matching.MatchingBook`` (or None) per instrument, for
    L3 rows (their level totals are mirrored into the L2 book; the replay switches
    its order events off: ``emit_order_events = False``). ``kernel`` /
    ``kernel_ids``: a ``core_ext.risk.RiskKernel`` and its instrument id per
    instrument: the reference price is set on every top-of-book change. ``marks``:
    per instrument an object (or None) whose ``bid``/``ask`` attributes are set when
    a top price moves and ``last`` on each trade (the portfolio's position record).
    """

    def __cinit__(self):
        self._book_ptr = NULL
        self._l3_ptr = NULL
        self._top = NULL
        self._marked = NULL
        self._kernel_ids = NULL

    def __init__(self, books, symbols=None, *, ReplayClock clock=None, l3_books=None,
                 RiskKernel kernel=None, kernel_ids=None, marks=None):
        cdef Py_ssize_t n, i
        if self._book_ptr != NULL:
            raise RuntimeError("Replay.__init__ called twice")
        books = list(books)
        n = len(books)
        if n < 1 or n > REPLAY_MAX_INSTRUMENTS:
            raise ValueError(f"Replay needs 1..{REPLAY_MAX_INSTRUMENTS} books, got {n}")
        for i in range(n):
            if not isinstance(books[i], L2Book):
                raise TypeError(f"books[{i}] is {type(books[i]).__name__}, not core_ext.book.L2Book")
        if symbols is None:
            symbols = [b.symbol for b in books]
        symbols = tuple(symbols)
        if len(symbols) != n:
            raise ValueError(f"{len(symbols)} symbols for {n} books")
        l3 = [None] * n if l3_books is None else list(l3_books)
        if len(l3) != n:
            raise ValueError(f"{len(l3)} l3_books for {n} books")
        for i in range(n):
            if l3[i] is not None and not isinstance(l3[i], MatchingBook):
                raise TypeError(f"l3_books[{i}] is {type(l3[i]).__name__}, not MatchingBook")
        mk = [None] * n if marks is None else list(marks)
        if len(mk) != n:
            raise ValueError(f"{len(mk)} marks for {n} books")
        self.n_instruments = n
        self._books = books
        self._l3 = l3
        self.symbols = symbols
        self._marks = mk
        self.clock = clock if clock is not None else ReplayClock()
        self._book_ptr = <void**>calloc(n, sizeof(void*))
        self._l3_ptr = <void**>calloc(n, sizeof(void*))
        self._top = <ReplayTop*>calloc(n, sizeof(ReplayTop))
        self._marked = <ReplayTop*>calloc(n, sizeof(ReplayTop))
        self._kernel_ids = <int64_t*>calloc(n, sizeof(int64_t))
        if (self._book_ptr == NULL or self._l3_ptr == NULL or self._top == NULL
                or self._marked == NULL or self._kernel_ids == NULL):
            raise MemoryError("Replay: cannot allocate per-instrument state")
        for i in range(n):
            self._book_ptr[i] = <void*>books[i]
            if l3[i] is not None:
                self._l3_ptr[i] = <void*>l3[i]
                (<MatchingBook>l3[i]).emit_order_events = False
            self._top[i].bid = NO_PRICE
            self._top[i].ask = NO_PRICE
            self._marked[i].bid = NO_PRICE
            self._marked[i].ask = NO_PRICE
        self._kernel = kernel
        if kernel is not None:
            ids = list(range(n)) if kernel_ids is None else list(kernel_ids)
            if len(ids) != n:
                raise ValueError(f"{len(ids)} kernel_ids for {n} books")
            for i in range(n):
                self._kernel_ids[i] = ids[i]
                if kernel._known(self._kernel_ids[i]) == NULL:
                    raise ValueError(f"kernel_ids[{i}] = {ids[i]} is not an instrument of the kernel")
        self._last_ts = -1
        self._host = None
        self._on_quote = self._on_book = self._on_trade = None
        self._on_error = None
        self._stopped_exc = None
        self._quote_maker = None
        self._trade_maker = None
        self._side_values = (SIDE_BUY, SIDE_SELL)
        self._advance = None
        self._due_heap = None
        self._live = None
        self._book_live = None
        self._exec_on_book = self._exec_on_trade = None
        self.guards = True
        self._timer = None
        self._timer_interval = 0
        self._next_timer = -1
        self._progress = None
        self._progress_every = 0
        self._progress_next = 0

    def __dealloc__(self):
        free(self._book_ptr)
        free(self._l3_ptr)
        free(self._top)
        free(self._marked)
        free(self._kernel_ids)

    # ------------------------------------------------------------------ wiring
    def set_strategy(self, host, on_quote=None, on_book=None, on_trade=None, *, on_error=None,
                     stopped_exc=None, quote_type=None, trade_type=None, side_values=None):
        """Strategy dispatch. ``host``: an object whose ``running`` attribute gates
        every callback (the StrategyHost). ``on_quote(Quote)`` with
        ``quote_type(symbol, bid, bid_size, ask, ask_size, ts_ns)``; ``on_book(symbol)``;
        ``on_trade(Trade)`` with ``trade_type(symbol, price, qty, aggressor_side,
        ts_ns)`` where aggressor_side is ``side_values[0|1]`` or None. None skips a
        callback. ``on_error(name, exc)`` receives a callback's exception
        (``stopped_exc`` instances are ignored silently); without it the exception
        propagates out of ``run``."""
        if on_quote is not None and quote_type is None:
            raise ValueError("on_quote needs quote_type")
        if on_trade is not None and trade_type is None:
            raise ValueError("on_trade needs trade_type")
        self._host = host
        self._on_quote = on_quote
        self._on_book = on_book
        self._on_trade = on_trade
        self._on_error = on_error
        self._stopped_exc = stopped_exc
        self._quote_maker = (_RecordMaker(quote_type, ("symbol", "bid", "bid_size", "ask", "ask_size",
                                                       "ts_ns")) if quote_type is not None else None)
        self._trade_maker = (_RecordMaker(trade_type, ("symbol", "price", "qty", "aggressor_side",
                                                       "ts_ns")) if trade_type is not None else None)
        if side_values is not None:
            side_values = tuple(side_values)
            if len(side_values) != 2:
                raise ValueError("side_values: (buy value, sell value)")
            self._side_values = side_values

    def set_execution(self, advance=None, *, due_heap=None, live=None, book_live=None,
                      on_book=None, on_trade=None):
        """Simulated execution hooks. ``advance(ts_ns)`` delivers what is due by ts;
        ``due_heap`` (a heapq list whose ``[0][0]`` is the next due time) lets the
        loop skip the call when nothing is due. ``on_trade(symbol, price, qty,
        aggressor_side, ts_ns)`` is called only while ``live`` (a sized container:
        the live orders) is non-empty; ``on_book(symbol, ts_ns)`` (after a book
        change) while ``live`` or ``book_live`` (a second sized container, e.g. what
        the execution remembers until the book changes) is non-empty. Without
        ``live`` the hooks are called on every event (as with ``guards = False``)."""
        if due_heap is not None and not isinstance(due_heap, list):
            raise TypeError("due_heap must be the list the execution keeps its heap in")
        if live is not None:
            len(live)   # must be sized
        if book_live is not None:
            len(book_live)
        self._advance = advance
        self._due_heap = due_heap
        self._live = live
        self._book_live = book_live
        self._exec_on_book = on_book
        self._exec_on_trade = on_trade

    def set_timer(self, int64_t interval_ns, callback, first_ns=None):
        """Call ``callback(now_ns)`` at multiples of ``interval_ns`` of event time (the
        first at ``first_ns``, default: the first multiple after the first event)."""
        if callback is not None and interval_ns <= 0:
            raise ValueError(f"timer interval {interval_ns} ns: must be > 0")
        self._timer = callback
        self._timer_interval = interval_ns if callback is not None else 0
        self._next_timer = -1 if first_ns is None else first_ns

    def set_progress(self, int64_t every, callback):
        """Call ``callback(events_done)`` every ``every`` events (None: never)."""
        if callback is not None and every <= 0:
            raise ValueError("progress interval must be > 0 events")
        self._progress = callback
        self._progress_every = every
        self._progress_next = self.events + every

    # ------------------------------------------------------------------ reading
    def top(self, Py_ssize_t inst):
        """(bid, bid_size, ask, ask_size) as last dispatched (None for an empty side)."""
        if not 0 <= inst < self.n_instruments:
            raise IndexError(f"instrument {inst} out of range")
        t = self._top[inst]
        return (_px(t.bid), t.bid_size, _px(t.ask), t.ask_size)

    @property
    def last_ts(self):
        """Timestamp of the last row applied (None before the first)."""
        return None if self._last_ts < 0 else self._last_ts

    def counters(self):
        """Every counter as a dict (for reports and tests)."""
        return {"events": self.events, "rows": self.rows, "top_changes": self.top_changes,
                "quote_calls": self.quote_calls, "book_calls": self.book_calls,
                "trade_calls": self.trade_calls, "timer_calls": self.timer_calls,
                "advance_calls": self.advance_calls, "exec_calls": self.exec_calls,
                "l3_rejects": self.l3_rejects, "strategy_errors": self.strategy_errors}

    # ------------------------------------------------------------------ running
    def run(self, events, Py_ssize_t start=0, stop=None):
        """Replay rows [start, stop) of ``events`` (REPLAY_DTYPE); the slice must end
        with an END row and continue in time from the previous call. Returns the
        number of events processed. Validation comes first: a bad row raises
        ReplayError and nothing is applied."""
        if not isinstance(events, np.ndarray):
            raise ReplayError(f"events must be a NumPy array of REPLAY_DTYPE, got {type(events).__name__}")
        if events.dtype != REPLAY_DTYPE:
            raise ReplayError(f"events dtype {events.dtype} is not REPLAY_DTYPE {REPLAY_DTYPE}")
        if events.ndim != 1:
            raise ReplayError(f"events must be 1-D, got shape {events.shape}")
        cdef Py_ssize_t n = events.shape[0]
        cdef Py_ssize_t end = n if stop is None else stop
        if not 0 <= start <= end <= n:
            raise ReplayError(f"slice [{start}, {end}) out of range for {n} rows")
        if start == end:
            return 0
        cdef const ReplayEvent[:] rows = events
        self._validate(rows, start, end)
        return self._run(rows, start, end)

    cdef int _validate(self, const ReplayEvent[:] rows, Py_ssize_t start, Py_ssize_t stop) except -1:
        # Bounds: start <= i < stop <= rows.shape[0] (checked by run).
        cdef Py_ssize_t i
        cdef int64_t prev = self._last_ts
        cdef int64_t ev_ts = 0
        cdef uint32_t ev_inst = 0
        cdef bint open_event = False
        cdef const ReplayEvent* ev
        for i in range(start, stop):
            ev = &rows[i]
            if ev.kind >= REPLAY_KIND_COUNT:
                raise ReplayError(f"row {i}: kind {ev.kind} is not a replay kind (0..{REPLAY_KIND_COUNT - 1})")
            if ev.inst >= <uint64_t>self.n_instruments:
                raise ReplayError(f"row {i}: inst {ev.inst} out of range (replay has "
                                  f"{self.n_instruments} instruments)")
            if ev.ts_ns < 0:
                raise ReplayError(f"row {i}: ts_ns {ev.ts_ns} is negative")
            if ev.ts_ns < prev:
                raise ReplayError(f"row {i}: ts_ns {ev.ts_ns} goes back in time (previous {prev})")
            if open_event and (ev.ts_ns != ev_ts or ev.inst != ev_inst):
                raise ReplayError(f"row {i}: the rows of one event must share ts_ns and inst "
                                  f"(event at ts {ev_ts} inst {ev_inst} has no END row)")
            if ev.kind == REPLAY_BOOK_SET or ev.kind == REPLAY_BOOK_SNAPSHOT:
                if ev.side > SIDE_SELL:
                    raise ReplayError(f"row {i}: side {ev.side} is not 0 (bid) or 1 (ask)")
                if ev.price == NO_PRICE:
                    raise ReplayError(f"row {i}: price is NO_PRICE")
                if ev.qty < 0:
                    raise ReplayError(f"row {i}: qty {ev.qty} is negative")
            elif ev.kind == REPLAY_TRADE:
                if ev.side > REPLAY_SIDE_UNKNOWN:
                    raise ReplayError(f"row {i}: side {ev.side} is not 0 (buy), 1 (sell) or 2 (unknown)")
                if ev.price == NO_PRICE:
                    raise ReplayError(f"row {i}: price is NO_PRICE")
                if ev.qty <= 0:
                    raise ReplayError(f"row {i}: qty {ev.qty} of a trade must be > 0")
            else:
                if self._l3_ptr[ev.inst] == NULL:
                    raise ReplayError(f"row {i}: an L3 row ({REPLAY_KIND_NAMES[ev.kind]}) for instrument "
                                      f"{ev.inst}, which has no matching book")
                if ev.order_id == 0:
                    raise ReplayError(f"row {i}: order_id 0 (reserved)")
                if ev.kind != REPLAY_L3_CANCEL:
                    if ev.kind == REPLAY_L3_ADD and ev.side > SIDE_SELL:
                        raise ReplayError(f"row {i}: side {ev.side} is not 0 (bid) or 1 (ask)")
                    if ev.price == NO_PRICE:
                        raise ReplayError(f"row {i}: price is NO_PRICE")
                    if ev.qty <= 0:
                        raise ReplayError(f"row {i}: qty {ev.qty} of an L3 order must be > 0")
            prev = ev.ts_ns
            ev_ts = ev.ts_ns
            ev_inst = ev.inst
            open_event = not (ev.flags & REPLAY_FLAG_END)
        if open_event:
            raise ReplayError(f"row {stop - 1}: the slice ends inside an event (no END flag)")
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _run(self, const ReplayEvent[:] rows, Py_ssize_t start,
                         Py_ssize_t stop) except -1:
        # Bounds: start <= i < stop <= rows.shape[0] (checked by run); every event ends
        # with an END row before stop (checked by _validate).
        cdef Py_ssize_t i = start, ev_start
        cdef Py_ssize_t done = 0
        cdef const ReplayEvent* ev
        cdef int64_t ts
        cdef Py_ssize_t inst
        cdef bint changed, has_trade
        while i < stop:
            ev = &rows[i]
            ts = ev.ts_ns
            inst = ev.inst
            if self._timer is not None:
                if self._next_timer < 0:
                    self._next_timer = (ts // self._timer_interval + 1) * self._timer_interval
                elif ts >= self._next_timer:
                    self._maybe_timer(ts)
            self.clock.now_ns = ts
            self._maybe_advance(ts)
            changed = False
            has_trade = False
            ev_start = i
            while True:
                ev = &rows[i]
                if ev.kind == REPLAY_TRADE:
                    has_trade = True       # handled after the book rows, in _end_event
                elif self._apply_book_row(ev):
                    changed = True
                self.rows += 1
                i += 1
                if ev.flags & REPLAY_FLAG_END:
                    break
            self._last_ts = ts
            self.events += 1
            done += 1
            self._end_event(inst, ts, changed, &rows[ev_start], i - ev_start, has_trade)
            if self._progress is not None and <int64_t>self.events >= self._progress_next:
                self._progress_next += self._progress_every
                self._progress(self.events)
        return done

    cdef int _maybe_timer(self, int64_t ts) except -1:
        cdef int64_t b = ts - ts % self._timer_interval
        self._next_timer = b + self._timer_interval
        self.clock.now_ns = b
        self._maybe_advance(b)
        self.timer_calls += 1
        self._timer(b)
        return 0

    cdef int _maybe_advance(self, int64_t ts) except -1:
        cdef list heap
        cdef int64_t due
        if self._advance is None:
            return 0
        heap = self._due_heap
        if self.guards and heap is not None:
            if len(heap) == 0:
                return 0
            head = heap[0]
            if type(head) is tuple and len(<tuple>head) > 0 and type((<tuple>head)[0]) is int:
                due = (<tuple>head)[0]
                if due > ts:
                    return 0
        self.advance_calls += 1
        self._advance(ts)
        return 0

    cdef int _apply_book_row(self, const ReplayEvent* ev) except -1:
        cdef L2Book book = <L2Book>self._book_ptr[ev.inst]
        cdef MatchingBook mb
        cdef int r, r2
        cdef int32_t node
        cdef int side
        cdef int64_t old_price, old_qty
        if ev.kind == REPLAY_BOOK_SET:
            r = book.set_level(ev.side, ev.price, ev.qty)
            book.last_update_ns = ev.ts_ns
            return r != BOOK_UNCHANGED
        if ev.kind == REPLAY_BOOK_SNAPSHOT:
            book.clear_levels()
            book.set_level(ev.side, ev.price, ev.qty)
            book.last_update_ns = ev.ts_ns
            return 1                       # a snapshot resynchronises: count it as a change
        mb = <MatchingBook>self._l3_ptr[ev.inst]
        if ev.kind == REPLAY_L3_ADD:
            if mb.c_add_resting(ev.order_id, 0, ev.side, ev.qty, ev.price, TIF_GTC) != MATCH_OK:
                self.l3_rejects += 1
                return 0
            r = book.apply_delta(ev.side, ev.price, ev.qty)
        else:
            node = idmap_get(&mb._ids, ev.order_id)
            if node < 0:                   # unknown id: the book refuses (and counts) it
                if ev.kind == REPLAY_L3_CANCEL:
                    mb.c_cancel(ev.order_id)
                else:
                    mb.c_replace(ev.order_id, 0, ev.qty, ev.price, False)
                self.l3_rejects += 1
                return 0
            side = mb._nodes[node].side
            old_price = mb._nodes[node].price
            old_qty = mb._nodes[node].qty
            if ev.kind == REPLAY_L3_CANCEL:
                if mb.c_cancel(ev.order_id) != MATCH_OK:
                    self.l3_rejects += 1
                    return 0
                r = book.apply_delta(side, old_price, -old_qty)
            else:
                if mb.c_replace(ev.order_id, 0, ev.qty, ev.price, False) != MATCH_OK:
                    self.l3_rejects += 1
                    return 0
                r = book.apply_delta(side, old_price, -old_qty)
                r2 = book.apply_delta(side, ev.price, ev.qty)
                if r2 > r:
                    r = r2
        book.last_update_ns = ev.ts_ns
        return r != BOOK_UNCHANGED

    cdef int _trade_row(self, const ReplayEvent* ev, object symbol, bint dispatch) except -1:
        # One trade print, after the event's book rows: execution hook, mark, strategy.
        # Returns 1 to go on dispatching, 0 once the strategy was stopped.
        cdef Py_ssize_t inst = ev.inst
        if self._exec_on_trade is not None and (not self.guards or self._live is None
                                                or len(self._live) > 0):
            self.exec_calls += 1
            self._exec_on_trade(symbol, ev.price, ev.qty, ev.side, ev.ts_ns)
        mark = self._marks[inst]
        if mark is not None:
            mark.last = ev.price
        if not dispatch or self._on_trade is None:
            return 1
        side = self._side_values[ev.side] if ev.side <= SIDE_SELL else None
        trade = self._trade_maker.make((symbol, ev.price, ev.qty, side, ev.ts_ns))
        self.trade_calls += 1
        if not self._call_strategy(self._on_trade, trade, "on_trade") and not self._host.running:
            return 0                       # stopped (a StrategyStopped goes on, as StrategyHost does)
        return 1

    cdef int _mark_top(self, Py_ssize_t inst, int64_t bid, int64_t ask) except -1:
        mark = self._marks[inst]
        self._marked[inst].bid = bid
        self._marked[inst].ask = ask
        if mark is not None:
            mark.bid = _px(bid)
            mark.ask = _px(ask)
        return 0

    cdef int _call_strategy(self, object fn, object arg, str name) except -1:
        try:
            fn(arg)
            return 1
        except Exception as exc:
            if self._stopped_exc is not None and isinstance(exc, self._stopped_exc):
                return 0
            self.strategy_errors += 1
            if self._on_error is None:
                raise
            self._on_error(name, exc)
            return 0

    cdef int _end_event(self, Py_ssize_t inst, int64_t ts, bint changed, const ReplayEvent* first,
                        Py_ssize_t n_rows, bint has_trade) except -1:
        # first[0 .. n_rows - 1] are the rows of the event just applied (inside the array).
        # Order (as the paper runtime handles one feed message): execution on_book, marks
        # and reference price, strategy on_quote / on_book; then per trade print:
        # execution on_trade, mark, strategy on_trade; then advance.
        cdef L2Book book = <L2Book>self._book_ptr[inst]
        cdef ReplayTop* top = &self._top[inst]
        cdef int64_t bb, bbs, ba, bas
        cdef bint top_changed, dispatch
        cdef int ok = 1
        cdef Py_ssize_t j
        symbol = self.symbols[inst]
        if changed and self._exec_on_book is not None and (
                not self.guards or self._live is None or len(self._live) > 0
                or (self._book_live is not None and len(self._book_live) > 0)):
            self.exec_calls += 1
            self._exec_on_book(symbol, ts)
        bb = book.best_price(SIDE_BUY)
        bbs = book.best_size(SIDE_BUY)
        ba = book.best_price(SIDE_SELL)
        bas = book.best_size(SIDE_SELL)
        top_changed = bb != top.bid or bbs != top.bid_size or ba != top.ask or bas != top.ask_size
        if top_changed:
            top.bid = bb
            top.bid_size = bbs
            top.ask = ba
            top.ask_size = bas
            self.top_changes += 1
            if self._kernel is not None and bb != NO_PRICE and ba != NO_PRICE and 0 < bb <= ba:
                self._kernel.apply_reference_price(self._kernel_ids[inst], (bb + ba) // 2, ts)
            if bb != self._marked[inst].bid or ba != self._marked[inst].ask:
                self._mark_top(inst, bb, ba)
        host = self._host
        dispatch = host is not None and host.running
        if dispatch:
            if top_changed and self._on_quote is not None:
                quote = self._quote_maker.make6(symbol, _px(bb), bbs, _px(ba), bas, ts)
                self.quote_calls += 1
                ok = self._call_strategy(self._on_quote, quote, "on_quote")
            if ok and (changed or top_changed) and self._on_book is not None:
                self.book_calls += 1
                self._call_strategy(self._on_book, symbol, "on_book")
        if has_trade:
            for j in range(n_rows):
                if first[j].kind == REPLAY_TRADE:
                    if not self._trade_row(&first[j], symbol, dispatch):
                        dispatch = False
                    elif dispatch:
                        dispatch = host.running
        self._maybe_advance(ts)
        return 0
