"""L2 order book: aggregated price levels per side for one instrument.

Prices are int64 ticks and sizes int64 lots; there is no float inside the book.
Each side is one contiguous ``Level`` array (PyMem_Raw, so tracemalloc sees it)
sorted best first: bids by descending price, asks by ascending price, the top of
book at index 0. A set is a binary search plus one ``memmove``; the arrays grow by
doubling and are freed in ``__dealloc__``.

Python edge conventions
-----------------------
* ``side`` is ``SIDE_BUY`` (0, bids) or ``SIDE_SELL`` (1, asks).
* ``update(side, price, size)`` sets a level; size 0 deletes it (deleting an absent
  level is a no-op, ``BOOK_UNCHANGED``). It returns a ``BOOK_*`` change code.
* ``apply(updates)`` takes a whole NumPy array of ``UPDATE_DTYPE`` in one call.
  ``action`` 0 (``ACTION_SET``) sets the level; 1 (``ACTION_SNAPSHOT``) clears the
  book first (the first row of a snapshot; size 0 there gives an empty book). The
  batch is validated completely before the first row is applied, so a bad batch
  raises ``BookUpdateError`` naming the row and the field and leaves the book as it
  was. It returns how many rows changed the top of book.
* Best prices and sizes are ``None`` on an empty side. ``spread`` is ask - bid in
  ticks (negative or zero when crossed). ``mid`` is a float in ticks, computed only
  here at the edge; ``mid_x2`` is the exact integer bid + ask.
* A crossed book (best bid >= best ask) is kept as it is, not repaired: ``crossed``
  says so and ``crossed_updates`` counts the updates after which it was crossed.
"""
cimport cython
from cpython.mem cimport PyMem_RawMalloc, PyMem_RawRealloc, PyMem_RawFree
from libc.stdint cimport int64_t, INT64_MAX
from libc.string cimport memmove
from cpython.long cimport PyLong_CheckExact

from operator import index as _operator_index

import numpy as np

from core_ext.common cimport (
    SIDE_BUY, SIDE_SELL, NO_PRICE, side_is_valid,
)

__all__ = [
    "L2Book", "UPDATE_DTYPE", "BookUpdateError", "BookInconsistentError",
    "SIDE_BUY", "SIDE_SELL", "ACTION_SET", "ACTION_SNAPSHOT",
    "BOOK_UNCHANGED", "BOOK_DEPTH_CHANGED", "BOOK_TOP_CHANGED",
]

#: One row of an update batch for ``L2Book.apply``; matches the C struct BookUpdate
#: (aligned: 3 x int64, 2 x uint8, 6 bytes of padding = 32 bytes).
UPDATE_DTYPE = np.dtype(
    [("ts_ns", np.int64), ("price", np.int64), ("size", np.int64),
     ("side", np.uint8), ("action", np.uint8)],
    align=True,
)
if UPDATE_DTYPE.itemsize != sizeof(BookUpdate):   # the NumPy and C layouts must agree
    raise ImportError(f"UPDATE_DTYPE is {UPDATE_DTYPE.itemsize} bytes, struct BookUpdate "
                      f"{sizeof(BookUpdate)}")

# Python names of the C enums (the C names are cimported, so bind them through globals()).
globals().update({
    "SIDE_BUY": <int>SIDE_BUY, "SIDE_SELL": <int>SIDE_SELL,
    "ACTION_SET": <int>ACTION_SET, "ACTION_SNAPSHOT": <int>ACTION_SNAPSHOT,
    "BOOK_UNCHANGED": <int>BOOK_UNCHANGED, "BOOK_DEPTH_CHANGED": <int>BOOK_DEPTH_CHANGED,
    "BOOK_TOP_CHANGED": <int>BOOK_TOP_CHANGED,
})


class BookUpdateError(ValueError):
    """An update, a batch or a snapshot was malformed (bad side, negative size, ...)."""


class BookInconsistentError(ValueError):
    """A delta would make a level negative: the feed and the book disagree."""


cdef inline str _side_name(int side):
    return "bid" if side == SIDE_BUY else "ask"


cdef str _bad_side(object side):
    return f"side must be 0 (SIDE_BUY) or 1 (SIDE_SELL), got {side!r}"


cdef object _integer(object value, str name):
    """`value` as a Python int (NumPy integers accepted); anything else, a float in
    particular, is a TypeError naming the argument (Cython would truncate a float)."""
    if PyLong_CheckExact(value):
        return value
    try:
        return _operator_index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


cdef int _side(object side) except -1:
    """A checked side argument of the Python API."""
    side = _integer(side, "side")
    if side != SIDE_BUY and side != SIDE_SELL:
        raise BookUpdateError(_bad_side(side))
    return side


cdef inline int _check(int side, int64_t price, int64_t size) except -1:
    # Validation of the one-update calls; the batch has its own loop.
    if not side_is_valid(side):
        raise BookUpdateError(_bad_side(side))
    if size < 0:
        raise BookUpdateError(f"size must be >= 0 lots, got {size}")
    if price == NO_PRICE:
        raise BookUpdateError(f"price {price} is NO_PRICE (INT64_MIN), not a tick count")
    return 0


cdef inline Py_ssize_t _lower_bound(const Level* lv, Py_ssize_t n, int64_t price,
                                    int side) noexcept nogil:
    """First index whose price is not better than `price` (the insert point).

    Branchless binary search (Khuong & Morin): the loop runs ceil(log2 n) times
    whatever the data, and the compare compiles to a conditional move, so a random
    update stream costs no branch mispredictions here.
    """
    cdef const Level* base = lv
    cdef Py_ssize_t half
    if n == 0:
        return 0
    if side == SIDE_BUY:        # descending: skip levels priced above `price`
        while n > 1:
            half = n >> 1
            base = base + half if base[half].price > price else base
            n -= half
        return (base - lv) + (base[0].price > price)
    while n > 1:                # ascending: skip levels priced below `price`
        half = n >> 1
        base = base + half if base[half].price < price else base
        n -= half
    return (base - lv) + (base[0].price < price)


@cython.final
cdef class L2Book:
    """L2Book(symbol, initial_capacity=64)

    Aggregated L2 book of one instrument, int64 ticks and lots. See the module doc.
    """

    def __cinit__(self, symbol, Py_ssize_t initial_capacity=BOOK_INITIAL_CAPACITY):
        cdef int side
        if initial_capacity < 1:
            raise BookUpdateError(f"initial_capacity must be >= 1, got {initial_capacity}")
        if <size_t>initial_capacity > (<size_t>-1) // 4 // sizeof(Level):
            raise MemoryError(f"initial_capacity {initial_capacity} is too large")
        self.symbol = symbol
        for side in range(2):
            self._levels[side] = NULL
            self._count[side] = 0
            self._capacity[side] = 0
        for side in range(2):
            self._levels[side] = <Level*>PyMem_RawMalloc(initial_capacity * sizeof(Level))
            if self._levels[side] == NULL:
                raise MemoryError("cannot allocate the book levels")
            self._capacity[side] = initial_capacity
        self.update_count = 0
        self.last_update_ns = 0
        self.stale = False
        self.crossed_updates = 0

    def __dealloc__(self):
        cdef int side
        for side in range(2):
            if self._levels[side] != NULL:
                PyMem_RawFree(self._levels[side])
                self._levels[side] = NULL

    # ------------------------------------------------------------------ C API

    cdef int _grow(self, int side) except -1:
        cdef Py_ssize_t cap = self._capacity[side]
        cdef Py_ssize_t new_cap = cap * 2 if cap > 0 else BOOK_INITIAL_CAPACITY
        cdef Level* grown
        if <size_t>new_cap > (<size_t>-1) // 2 // sizeof(Level):
            raise MemoryError(f"book side {_side_name(side)} cannot grow past {cap} levels")
        grown = <Level*>PyMem_RawRealloc(self._levels[side], new_cap * sizeof(Level))
        if grown == NULL:
            raise MemoryError(f"cannot grow book side {_side_name(side)} to {new_cap} levels")
        self._levels[side] = grown
        self._capacity[side] = new_cap
        return 0

    cdef int _set_raw(self, int side, int64_t price, int64_t size) except -1:
        cdef Level* lv = self._levels[side]
        cdef Py_ssize_t n = self._count[side]
        cdef Py_ssize_t i = _lower_bound(lv, n, price, side)
        if i < n and lv[i].price == price:
            if size == lv[i].size:
                return BOOK_UNCHANGED
            if size == 0:
                memmove(&lv[i], &lv[i + 1], <size_t>(n - i - 1) * sizeof(Level))
                self._count[side] = n - 1
            else:
                lv[i].size = size
        else:
            if size == 0:
                return BOOK_UNCHANGED           # delete of an absent level
            if n == self._capacity[side]:
                self._grow(side)
                lv = self._levels[side]
            memmove(&lv[i + 1], &lv[i], <size_t>(n - i) * sizeof(Level))
            lv[i].price = price
            lv[i].size = size
            self._count[side] = n + 1
        return BOOK_TOP_CHANGED if i == 0 else BOOK_DEPTH_CHANGED

    cdef void _count_update(self) noexcept nogil:
        self.update_count += 1
        if self.is_crossed():
            self.crossed_updates += 1

    cdef int _set_counted(self, int side, int64_t price, int64_t size) except -1:
        cdef int change = self._set_raw(side, price, size)
        self._count_update()
        return change

    cdef int set_level(self, int side, int64_t price, int64_t size) except -1:
        _check(side, price, size)
        return self._set_counted(side, price, size)

    cdef int apply_delta(self, int side, int64_t price, int64_t delta) except -1:
        cdef int64_t current, result
        if not side_is_valid(side):
            raise BookUpdateError(_bad_side(side))
        if price == NO_PRICE:
            raise BookUpdateError(f"price {price} is NO_PRICE (INT64_MIN), not a tick count")
        current = _size_at(self._levels[side], self._count[side], side, price)
        if delta < 0 and current < -delta:
            raise BookInconsistentError(
                f"{_side_name(side)} level {price}: delta {delta} on {current} lots "
                f"would leave a negative size")
        if delta > 0 and current > INT64_MAX - delta:
            raise BookInconsistentError(
                f"{_side_name(side)} level {price}: delta {delta} on {current} lots overflows")
        result = current + delta
        return self._set_counted(side, price, result)

    cdef void clear_levels(self) noexcept:
        self._count[<int>SIDE_BUY] = 0
        self._count[<int>SIDE_SELL] = 0

    cdef int64_t best_price(self, int side) noexcept nogil:
        if self._count[side] == 0:
            return NO_PRICE
        return self._levels[side][0].price

    cdef int64_t best_size(self, int side) noexcept nogil:
        if self._count[side] == 0:
            return 0
        return self._levels[side][0].size

    cdef int64_t size_at(self, int side, int64_t price) noexcept nogil:
        cdef Level* lv
        cdef Py_ssize_t n, i
        if not side_is_valid(side):
            return 0
        lv = self._levels[side]
        n = self._count[side]
        i = _lower_bound(lv, n, price, side)
        if i < n and lv[i].price == price:
            return lv[i].size
        return 0

    cdef bint is_crossed(self) noexcept nogil:
        return (self._count[<int>SIDE_BUY] != 0 and self._count[<int>SIDE_SELL] != 0
                and self._levels[<int>SIDE_BUY][0].price >= self._levels[<int>SIDE_SELL][0].price)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _apply_rows(self, const BookUpdate[:] rows) except -1:
        # Bounds: every index is in range(n) with n = rows.shape[0].
        cdef Py_ssize_t n = rows.shape[0]
        cdef Py_ssize_t i, top_changes = 0
        cdef int64_t bb, bbs, ba, bas
        cdef int side
        # Pass 1: validate everything, so a bad batch changes nothing.
        for i in range(n):
            if rows[i].side > SIDE_SELL or rows[i].size < 0 or rows[i].action > ACTION_SNAPSHOT \
                    or rows[i].price == NO_PRICE:
                _raise_bad_row(i, rows[i])
        # Pass 2: apply.
        for i in range(n):
            side = rows[i].side
            if rows[i].action == ACTION_SNAPSHOT:
                bb = self.best_price(SIDE_BUY)
                bbs = self.best_size(SIDE_BUY)
                ba = self.best_price(SIDE_SELL)
                bas = self.best_size(SIDE_SELL)
                self.clear_levels()
                self._set_counted(side, rows[i].price, rows[i].size)
                if (bb != self.best_price(SIDE_BUY) or bbs != self.best_size(SIDE_BUY)
                        or ba != self.best_price(SIDE_SELL) or bas != self.best_size(SIDE_SELL)):
                    top_changes += 1
            elif self._set_counted(side, rows[i].price, rows[i].size) == BOOK_TOP_CHANGED:
                top_changes += 1
        if n > 0:
            self.last_update_ns = rows[n - 1].ts_ns
        return top_changes

    # ------------------------------------------------------------ Python API

    def update(self, side, price, size):
        """update(side, price, size) -> int

        Set the level `price` on `side` to `size` lots (0 deletes it). Returns
        BOOK_UNCHANGED, BOOK_DEPTH_CHANGED or BOOK_TOP_CHANGED. Arguments are
        integers (NumPy integers too); a float is a TypeError, never truncated.
        """
        if not (PyLong_CheckExact(side) and PyLong_CheckExact(price) and PyLong_CheckExact(size)):
            side = _integer(side, "side")
            price = _integer(price, "price")
            size = _integer(size, "size")
        return self.set_level(side, price, size)

    def add_delta(self, side, price, delta):
        """add_delta(side, price, delta) -> int

        Add `delta` lots (may be negative) to a level, creating or deleting it as
        needed (the order-by-order aggregation path). A result below 0 raises
        BookInconsistentError and leaves the book unchanged. Returns a BOOK_* code.
        """
        return self.apply_delta(_integer(side, "side"), _integer(price, "price"),
                                _integer(delta, "delta"))

    def apply(self, updates):
        """apply(updates) -> int

        Apply a 1-D NumPy array of UPDATE_DTYPE in order, in one call. The batch is
        validated first (BookUpdateError naming the row and field; nothing applied).
        Returns the number of rows that changed the top of book.
        """
        if not isinstance(updates, np.ndarray):
            raise BookUpdateError(
                f"updates must be a NumPy array of book.UPDATE_DTYPE, got {type(updates).__name__}")
        if updates.dtype != UPDATE_DTYPE:
            raise BookUpdateError(
                f"updates dtype {updates.dtype} is not book.UPDATE_DTYPE {UPDATE_DTYPE}")
        if updates.ndim != 1:
            raise BookUpdateError(f"updates must be 1-D, got shape {updates.shape}")
        return self._apply_rows(updates)

    def load_snapshot(self, bids, asks):
        """load_snapshot(bids, asks)

        Replace the whole book with a snapshot: `bids` and `asks` are integer arrays
        of shape (n, 2) holding (price ticks, size lots) in any order. Sizes of 0 are
        skipped; a negative size, NO_PRICE or a price listed twice on one side raises
        BookUpdateError and leaves the book unchanged. Counts as one update.
        """
        cdef const int64_t[:, :] b = _snapshot_side(bids, "bids")
        cdef const int64_t[:, :] a = _snapshot_side(asks, "asks")
        cdef Py_ssize_t i
        self.clear_levels()
        for i in range(b.shape[0]):
            self._set_raw(SIDE_BUY, b[i, 0], b[i, 1])
        for i in range(a.shape[0]):
            self._set_raw(SIDE_SELL, a[i, 0], a[i, 1])
        self._count_update()

    def clear(self):
        """Remove every level (capacity is kept). Not counted as an update."""
        self.clear_levels()

    @property
    def best_bid(self):
        """Best bid price in ticks, None when there is no bid."""
        return None if self._count[<int>SIDE_BUY] == 0 else self._levels[<int>SIDE_BUY][0].price

    @property
    def best_ask(self):
        """Best ask price in ticks, None when there is no ask."""
        return None if self._count[<int>SIDE_SELL] == 0 else self._levels[<int>SIDE_SELL][0].price

    @property
    def best_bid_size(self):
        """Lots at the best bid, None when there is no bid."""
        return None if self._count[<int>SIDE_BUY] == 0 else self._levels[<int>SIDE_BUY][0].size

    @property
    def best_ask_size(self):
        """Lots at the best ask, None when there is no ask."""
        return None if self._count[<int>SIDE_SELL] == 0 else self._levels[<int>SIDE_SELL][0].size

    @property
    def spread(self):
        """best ask - best bid in ticks (<= 0 when crossed), None if a side is empty."""
        if self._count[<int>SIDE_BUY] == 0 or self._count[<int>SIDE_SELL] == 0:
            return None
        # Python ints: the difference of two int64 prices can overflow int64.
        cdef object ask = self._levels[<int>SIDE_SELL][0].price
        return ask - self._levels[<int>SIDE_BUY][0].price

    @property
    def mid_x2(self):
        """best bid + best ask in ticks (twice the mid, exact), None if a side is empty."""
        if self._count[<int>SIDE_BUY] == 0 or self._count[<int>SIDE_SELL] == 0:
            return None
        # Python ints: the sum of two int64 prices can overflow int64.
        cdef object ask = self._levels[<int>SIDE_SELL][0].price
        return ask + self._levels[<int>SIDE_BUY][0].price

    @property
    def mid(self):
        """(best bid + best ask) / 2 in ticks as a float (Python edge only), None if a
        side is empty."""
        cdef object x2 = self.mid_x2
        return None if x2 is None else x2 / 2

    @property
    def crossed(self):
        """True when best bid >= best ask (both present). Crossed books are kept, not repaired."""
        return self.is_crossed()

    def size_at(self, side, price):
        """size_at(side, price) -> int: lots at `price` on `side`, 0 when absent."""
        # Python face of the cdef size_at (Cython warns that a def overrides a cdef:
        # intended; C callers get the nogil cdef, Python gets this checked version).
        cdef int s = _side(side)
        cdef int64_t p = _integer(price, "price")
        return _size_at(self._levels[s], self._count[s], s, p)

    def depth(self, side, n):
        """depth(side, n) -> (prices, sizes): the best min(n, count) levels of `side`
        as two int64 arrays, best first."""
        cdef int sd = _side(side)
        cdef Py_ssize_t want = _integer(n, "n")
        if want < 0:
            raise BookUpdateError(f"depth n must be >= 0, got {want}")
        cdef Py_ssize_t k = min(want, self._count[sd])
        prices = np.empty(k, dtype=np.int64)
        sizes = np.empty(k, dtype=np.int64)
        cdef int64_t[::1] pv = prices
        cdef int64_t[::1] sv = sizes
        cdef Py_ssize_t i
        cdef const Level* lv = self._levels[sd]
        for i in range(k):
            pv[i] = lv[i].price
            sv[i] = lv[i].size
        return prices, sizes

    def levels(self, side):
        """levels(side) -> list of (price, size) tuples, best first."""
        cdef int sd = _side(side)
        cdef const Level* lv = self._levels[sd]
        cdef Py_ssize_t i
        return [(lv[i].price, lv[i].size) for i in range(self._count[sd])]

    def count(self, side):
        """count(side) -> int: number of levels on `side`."""
        return self._count[_side(side)]

    def capacity(self, side):
        """capacity(side) -> int: levels allocated on `side` (grows by doubling)."""
        return self._capacity[_side(side)]

    def imbalance(self, n=1):
        """imbalance(n=1) -> float or None: (B - A) / (B + A) over the lots of the best
        n levels of each side, in [-1, 1]; None when both are empty."""
        cdef Py_ssize_t want = _integer(n, "n")
        if want < 1:
            raise BookUpdateError(f"imbalance n must be >= 1, got {want}")
        cdef Py_ssize_t i
        cdef double bid = 0.0, ask = 0.0
        for i in range(min(want, self._count[<int>SIDE_BUY])):
            bid += <double>self._levels[<int>SIDE_BUY][i].size
        for i in range(min(want, self._count[<int>SIDE_SELL])):
            ask += <double>self._levels[<int>SIDE_SELL][i].size
        if bid + ask == 0.0:
            return None
        return (bid - ask) / (bid + ask)

    def __len__(self):
        return self._count[<int>SIDE_BUY] + self._count[<int>SIDE_SELL]

    def __repr__(self):
        return (f"<L2Book {self.symbol!s} bids={self._count[<int>SIDE_BUY]} "
                f"asks={self._count[<int>SIDE_SELL]} best={self.best_bid}x{self.best_bid_size}"
                f" / {self.best_ask}x{self.best_ask_size}"
                f"{' CROSSED' if self.is_crossed() else ''}>")


cdef inline int64_t _size_at(const Level* lv, Py_ssize_t n, int side,
                             int64_t price) noexcept nogil:
    # The C lookup, reachable from this module (where the def size_at shadows the cdef).
    cdef Py_ssize_t i = _lower_bound(lv, n, price, side)
    if i < n and lv[i].price == price:
        return lv[i].size
    return 0


cdef int _raise_bad_row(Py_ssize_t i, BookUpdate row) except -1:
    if row.side > SIDE_SELL:
        raise BookUpdateError(
            f"updates[{i}].side must be 0 (SIDE_BUY) or 1 (SIDE_SELL), got {row.side}")
    if row.size < 0:
        raise BookUpdateError(f"updates[{i}].size must be >= 0 lots, got {row.size}")
    if row.action > ACTION_SNAPSHOT:
        raise BookUpdateError(
            f"updates[{i}].action must be 0 (ACTION_SET) or 1 (ACTION_SNAPSHOT), got {row.action}")
    raise BookUpdateError(f"updates[{i}].price is NO_PRICE (INT64_MIN), not a tick count")


cdef object _snapshot_side(object levels, str name):
    """Check one side of a snapshot; returns a C-contiguous int64 (n, 2) array."""
    arr = np.asarray(levels)
    if arr.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    if arr.dtype.kind not in "iu" or not np.can_cast(arr.dtype, np.int64):
        raise BookUpdateError(
            f"{name} must hold int64 (price ticks, size lots), got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise BookUpdateError(f"{name} must have shape (n, 2) (price, size), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    bad = np.flatnonzero(arr[:, 1] < 0)
    if bad.size:
        i = int(bad[0])
        raise BookUpdateError(f"{name}[{i}] size must be >= 0 lots, got {int(arr[i, 1])}")
    bad = np.flatnonzero(arr[:, 0] == NO_PRICE)
    if bad.size:
        raise BookUpdateError(f"{name}[{int(bad[0])}] price is NO_PRICE (INT64_MIN)")
    prices = arr[:, 0]
    uniq, counts = np.unique(prices, return_counts=True)
    if uniq.size != prices.size:
        dup = int(uniq[np.flatnonzero(counts > 1)[0]])
        raise BookUpdateError(f"{name} lists price {dup} more than once")
    return arr
