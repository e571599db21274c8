# cython: language_level=3
"""A compiled strategy with a bug, for tests/test_compiled_strategy.py: it asks for one
buy below the bid and raises from on_order once that order has been checked and
encoded -- the FIX bytes exist, but process() raises, so they never reach the session."""
from libc.stdint cimport int64_t

from core_ext.common cimport NO_PRICE, SIDE_BUY, TIF_DAY
from core_ext.t2t cimport T2T_SENT, CStrategy, T2TOrderRecord, T2TOrderRequest, T2TTop, TickToTrade


cdef class FailAfterEncoding(CStrategy):
    cdef public int64_t offset_ticks
    cdef public int failures

    def __init__(self, offset_ticks=30):
        self.offset_ticks = offset_ticks
        self.failures = 0

    cdef int on_top(self, TickToTrade t2t, const T2TTop* top, T2TOrderRequest* out) except -1:
        if top.bid == NO_PRICE or top.bid - self.offset_ticks <= 0:
            return 0
        out[0].instrument = top.instrument
        out[0].side = SIDE_BUY
        out[0].tif = TIF_DAY
        out[0].qty = 1
        out[0].price = top.bid - self.offset_ticks
        return 1

    cdef int on_order(self, TickToTrade t2t, const T2TOrderRecord* rec) except -1:
        if rec.outcome == T2T_SENT:
            self.failures += 1
            raise RuntimeError("test strategy bug: raised after its order was encoded")
        return 0
