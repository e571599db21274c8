# Shared constants and tiny helpers of the compiled core. Every core_ext module
# cimports these; nothing here allocates or touches Python objects.
from libc.stdint cimport int64_t, uint64_t, INT64_MIN, INT64_MAX

# An order or book side. The numeric values are part of the NumPy dtypes and of
# the event buffers, so they never change.
cdef enum Side:
    SIDE_BUY = 0     # bid side of a book
    SIDE_SELL = 1    # ask side of a book

# Time in force of an order.
cdef enum TimeInForce:
    TIF_DAY = 0      # rests until the end of the session
    TIF_GTC = 1      # rests until cancelled
    TIF_IOC = 2      # fills what it can at once, the rest is cancelled
    TIF_FOK = 3      # fills completely at once or not at all

# Order type.
cdef enum OrderType:
    ORDTYPE_LIMIT = 0
    ORDTYPE_MARKET = 1

# "No price": an empty side, a market order, a missing reference. INT64_MIN can
# never be a real tick count, so it cannot be mistaken for one.
cdef extern from "<stdint.h>":
    # A C name for INT64_MIN (Cython 3.3 rejects INT64_MIN in an enum: "Not allowed
    # in a constant expression"). Same value as before.
    const int64_t NO_PRICE "INT64_MIN"

cdef inline bint side_is_valid(int side) noexcept nogil:
    return side == SIDE_BUY or side == SIDE_SELL

cdef inline int64_t signed_qty(int side, int64_t qty) noexcept nogil:
    # Position delta of a fill: a buy adds, a sell subtracts.
    return qty if side == SIDE_BUY else -qty

# A client order id in its wire form (engine.orders.format_cl_ord_id): v > 0 in
# upper-case base 36 into out (at most 13 characters); returns the length.
cdef inline Py_ssize_t base36(uint64_t v, char* out) noexcept nogil:
    cdef char tmp[16]
    cdef Py_ssize_t n = 0, i
    while v:
        tmp[n] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[v % 36]
        v //= 36
        n += 1
    for i in range(n):
        out[i] = tmp[n - 1 - i]
    return n
