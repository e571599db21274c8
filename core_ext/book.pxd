# The L2 book: aggregated price levels per side for one instrument.
# Prices are int64 ticks, sizes int64 lots. Levels live in two contiguous arrays
# sorted best-first (bids descending, asks ascending) so that the top of book is
# index 0 and depth(n) is a slice copy; no Python object per level.
cimport cython
from libc.stdint cimport int64_t, uint64_t, uint8_t
from core_ext.common cimport Side, NO_PRICE

cdef struct Level:
    int64_t price    # integer ticks
    int64_t size     # integer lots; always > 0 for a level that is stored

# Result of applying one update, so callers (ITCH decoder, feed handler) can tell
# what changed without asking again.
cdef enum BookChange:
    BOOK_UNCHANGED = 0       # the update left the book as it was
    BOOK_DEPTH_CHANGED = 1   # a level below the top changed
    BOOK_TOP_CHANGED = 2     # best bid or best ask price or size changed

# What one row of an update batch (UPDATE_DTYPE, `L2Book.apply`) does.
cdef enum BookAction:
    ACTION_SET = 0        # set the level to `size` lots (size 0 deletes it)
    ACTION_SNAPSHOT = 1   # clear the whole book, then set the level: first row of a snapshot

# One row of an update batch; the C twin of book.UPDATE_DTYPE (NumPy, aligned, 32 bytes).
cdef struct BookUpdate:
    int64_t ts_ns     # caller's timestamp of the update, ns; becomes last_update_ns
    int64_t price     # integer ticks; never NO_PRICE
    int64_t size      # integer lots, >= 0; 0 deletes the level
    uint8_t side      # SIDE_BUY (bid) or SIDE_SELL (ask)
    uint8_t action    # a BookAction

# Initial levels allocated per side; the arrays grow by doubling.
cdef enum:
    BOOK_INITIAL_CAPACITY = 64


@cython.final
cdef class L2Book:
    cdef readonly object symbol          # instrument name (str), for reports only
    cdef Level* _levels[2]               # [SIDE_BUY], [SIDE_SELL], best first
    cdef Py_ssize_t _count[2]            # live levels per side
    cdef Py_ssize_t _capacity[2]         # allocated levels per side (grows by doubling)
    cdef readonly uint64_t update_count  # updates applied since creation (a snapshot load counts 1)
    cdef readonly int64_t last_update_ns  # timestamp of the last applied update (caller's clock)
    cdef public bint stale               # set by the feed handler on a gap; risk rejects on it
    cdef readonly uint64_t crossed_updates  # applied updates after which the book was crossed

    # Set the size of a level; size 0 deletes it. Returns a BookChange.
    # Raises ValueError (BookUpdateError) on a bad side, a negative size or price == NO_PRICE.
    cdef int set_level(self, int side, int64_t price, int64_t size) except -1
    # Add delta lots to a level (created if absent, deleted when it reaches 0).
    # Used by order-by-order feeds (ITCH) that aggregate into L2. A level going
    # negative is a ValueError (the feed is inconsistent). Returns a BookChange.
    cdef int apply_delta(self, int side, int64_t price, int64_t delta) except -1
    cdef void clear_levels(self) noexcept
    cdef int64_t best_price(self, int side) noexcept nogil   # NO_PRICE when empty
    cdef int64_t best_size(self, int side) noexcept nogil    # 0 when empty
    cdef int64_t size_at(self, int side, int64_t price) noexcept nogil  # 0 when absent
    cdef bint is_crossed(self) noexcept nogil  # best bid >= best ask, both present

    # Internals (arguments already validated by the callers above).
    # Set a level without touching the counters; returns a BookChange. Raises
    # MemoryError only (growth).
    cdef int _set_raw(self, int side, int64_t price, int64_t size) except -1
    # _set_raw plus update_count / crossed_updates bookkeeping.
    cdef int _set_counted(self, int side, int64_t price, int64_t size) except -1
    # Double the capacity of one side. Raises MemoryError.
    cdef int _grow(self, int side) except -1
    # Record one applied update: update_count, crossed_updates.
    cdef void _count_update(self) noexcept nogil
    # Apply a validated batch; returns how many rows changed the top of book.
    cdef Py_ssize_t _apply_rows(self, const BookUpdate[:] rows) except -1
