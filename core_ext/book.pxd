# The L2 book: aggregated price levels per side for one instrument.
# Prices are int64 ticks, sizes int64 lots. Levels live in two contiguous arrays
# sorted best-first (bids descending, asks ascending) so that the top of book is
# index 0 and depth(n) is a slice copy; no Python object per level.
from libc.stdint cimport int64_t, uint64_t
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

cdef class L2Book:
    cdef readonly object symbol          # instrument name (str), for reports only
    cdef Level* _levels[2]               # [SIDE_BUY], [SIDE_SELL], best first
    cdef Py_ssize_t _count[2]            # live levels per side
    cdef Py_ssize_t _capacity[2]         # allocated levels per side (grows by doubling)
    cdef readonly uint64_t update_count  # updates applied since creation
    cdef readonly int64_t last_update_ns # timestamp of the last applied update (caller's clock)
    cdef public bint stale               # set by the feed handler on a gap; risk rejects on it

    # Set the size of a level; size 0 deletes it. Returns a BookChange.
    # Raises ValueError on a bad side or a negative size.
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
