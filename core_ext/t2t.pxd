# Tick-to-trade in C: one MoldUDP64/ITCH packet in, FIX NewOrderSingle bytes out.
#
#   packet --ItchBookApplier.apply_packet--> L2 books (top changed?)
#          --CStrategy.on_top (Cython, C call)--> order requests
#          --RiskKernel.check_order (nogil)--> reserved or a RiskCode
#          --FixEncoder.new_order_single (cpdef, C call)--> bytes
#
# One coarse Python -> C call per packet (TickToTrade.process). No Python object
# survives an event: the ClOrdID text is written into per-length scratch bytes
# objects this class owns, the order log is a preallocated NumPy array, and the
# only objects created per event are the ItchApplyResult of apply_packet and the
# FIX message bytes handed back to the caller (both freed when the caller drops
# them). A strategy is a Cython subclass of CStrategy; see docs/CYTHON_STRATEGY.md.
cimport cython
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t

from core_ext.fix cimport FixEncoder
from core_ext.itch cimport ItchApplyResult, ItchBookApplier
from core_ext.risk cimport RiskKernel

cdef enum:
    T2T_MAX_ORDERS_PER_EVENT = 4         # order requests one on_top call may return
    T2T_DEFAULT_LOG_CAPACITY = 65536     # order records kept until drain_orders()
    T2T_CL_ORD_ID_MAX_LEN = 13           # base-36 digits of a uint64 (as format_cl_ord_id)

# What happened to one order request (T2TOrderRecord.outcome). RiskCode values
# (core_ext.risk: 1..18 = rejected by that rule) are used as they are; these are
# the non-risk outcomes.
cdef enum T2TOutcome:
    T2T_SENT = 0                         # passed the risk check (reserved), encoded, returned
    T2T_ENCODE_FAILED = -1               # the encoder raised; the reservation was released

# The top of one book after a packet changed it: what CStrategy.on_top receives.
cdef struct T2TTop:
    int32_t instrument                   # instrument index (order of TickToTrade(instruments=...))
    int64_t inst_id                      # the risk kernel's id of the instrument
    int64_t bid                          # best bid, ticks; NO_PRICE when the side is empty
    int64_t bid_size                     # lots at the best bid; 0 when empty
    int64_t ask                          # best ask, ticks; NO_PRICE when empty
    int64_t ask_size                     # lots at the best ask; 0 when empty
    int64_t now_ns                       # clock of this packet (risk check, FIX 52/60)
    uint64_t seq                         # MoldUDP64 sequence number of the packet's first message
    uint64_t event                       # TickToTrade.events before this call (0, 1, 2, ...)

# One order a strategy asks for (written by on_top into its `out` array).
cdef struct T2TOrderRequest:
    int32_t instrument                   # instrument index to trade (any tracked one)
    int side                             # SIDE_BUY / SIDE_SELL
    int tif                              # TIF_DAY / TIF_GTC / TIF_IOC / TIF_FOK
    int64_t qty                          # lots, > 0
    int64_t price                        # ticks, > 0; NO_PRICE = market order

# One order request and its outcome, as kept in the order log (ORDER_DTYPE is its
# NumPy twin; drain_orders() hands the log to Python off the hot path).
cdef struct T2TOrderRecord:
    uint64_t cl_ord_id                   # client order id (FIX 11 is its base-36 text)
    int64_t ts_ns                        # the packet's clock (= FIX 52 and 60 when sent)
    int64_t inst_id                      # risk kernel id
    int64_t qty                          # lots
    int64_t price                        # ticks; NO_PRICE for a market order
    int64_t seq_num                      # FIX MsgSeqNum (34) when sent, else -1
    uint64_t packet_seq                  # MoldUDP64 sequence number of the triggering packet
    int32_t instrument                   # instrument index
    int32_t outcome                      # T2T_SENT, a RiskCode (> 0) or T2T_ENCODE_FAILED
    int8_t side                          # SIDE_BUY / SIDE_SELL
    uint8_t tif                          # TIF_*


# Base class of compiled strategies. Subclass it in Cython and override on_top
# (and on_order if the strategy tracks its orders). Both are plain C calls from
# TickToTrade.process: no Python call, no argument boxing.
cdef class CStrategy:
    # Contract: called once per instrument whose top of book changed in a packet,
    # in the order the packet changed them. Write up to T2T_MAX_ORDERS_PER_EVENT
    # requests into out[0..] and return how many (0 = no order). Raise (except -1)
    # only for a bug: the exception leaves process() and the packet's remaining
    # events are not handled. Must not keep `top` or `out` after returning.
    cdef int on_top(self, TickToTrade t2t, const T2TTop* top,
                    T2TOrderRequest* out) except -1
    # Called after each request was handled (sent or refused), with its record.
    cdef int on_order(self, TickToTrade t2t, const T2TOrderRecord* rec) except -1


# Sample strategy: quote at the touch. On each top change of a two-sided, uncrossed
# book, one limit order of `qty` lots: alternately a buy at the best bid minus
# `offset_ticks` and a sell at the best ask plus `offset_ticks` (offset 0 = join the
# touch); with both_sides, the buy and the sell together (two requests per event).
# The alternating mode is mirrored in Python by bench.bench_tick_to_trade.TouchQuoter.
@cython.final
cdef class QuoteAtTouch(CStrategy):
    cdef readonly int64_t qty            # lots per order, > 0
    cdef readonly int64_t offset_ticks   # distance behind the touch, >= 0
    cdef readonly int tif                # TIF_* of the orders
    cdef readonly bint both_sides        # a buy and a sell per event instead of alternating
    cdef readonly uint64_t requested     # orders requested so far (parity picks the side)
    cdef readonly uint64_t sent          # of which sent (passed the risk check)
    cdef readonly uint64_t refused       # of which refused (risk code or encode failure)
    # on_top and on_order are CStrategy's, overridden in t2t.pyx (Cython 3.3 refuses a
    # re-declaration here on a final class: "Overriding final methods is not allowed").


# The compiled tick-to-trade path for one FIX session and one risk account.
@cython.final
cdef class TickToTrade:
    cdef readonly ItchBookApplier applier   # packet -> books (create_books=False: only ours)
    cdef readonly RiskKernel kernel         # the account's pre-trade kernel (shared with Python)
    cdef readonly FixEncoder encoder        # the session's encoder (header precomputed)
    cdef readonly CStrategy strategy        # the compiled strategy
    cdef readonly ItchApplyResult last_result  # what the last packet did (kept until the next one)
    cdef list _books                        # L2Book per instrument index
    cdef list _symbols                      # str symbol per instrument index
    cdef list _symbols_b                    # ASCII bytes symbol per instrument index (FIX 55)
    cdef list _clid_scratch                 # [n] = a private bytes object of length n (n = 1..13)
    cdef uint64_t _clid_value               # the id whose base-36 text is in _clid_digits (0: none)
    cdef char _clid_digits[16]              # that text, most significant digit first
    cdef Py_ssize_t _clid_len               # its length
    cdef int64_t* _inst_id                  # per instrument: risk kernel id
    cdef int64_t* _price_mult               # per instrument: FIX price = ticks * mult / 10**dec
    cdef int* _decimals                     # per instrument: decimals of the FIX price
    cdef uint8_t* _stale                    # per instrument: book.stale as last given to the kernel
    cdef Py_ssize_t _n                      # instruments
    cdef public uint64_t next_cl_ord_id     # id of the next order request (never 0)
    cdef public int64_t next_seq_num        # FIX MsgSeqNum of the next order sent (>= 1)
    cdef readonly bint set_reference        # set the kernel's reference (mid) on each top change
    cdef readonly uint64_t packets          # packets processed
    cdef readonly uint64_t events           # on_top calls
    cdef readonly uint64_t orders_sent      # requests that produced FIX bytes
    cdef readonly uint64_t orders_refused   # requests refused by the risk kernel or the encoder
    cdef readonly uint64_t log_full         # requests refused because the order log was full
    cdef object _log_arr                    # numpy.ndarray[ORDER_DTYPE] owning the log memory
    cdef T2TOrderRecord* _log               # its data
    cdef Py_ssize_t _log_cap                # capacity (records)
    cdef Py_ssize_t _log_n                  # records not drained yet

    # The hot entry: one packet; FIX bytes (one message, or several concatenated)
    # or None. now_ns < 0 reads CLOCK_REALTIME. Raises the ITCH decode errors.
    cpdef object process(self, object packet, int64_t now_ns=*)
    # For strategies: the current top of instrument `idx` into *out (now_ns, seq and
    # event of the call in progress are not known here: 0). -1 if idx is not tracked.
    cdef int read_top(self, Py_ssize_t idx, T2TTop* out) noexcept
    # Fill *top for instrument index idx (0 <= idx < _n, unchecked).
    cdef void _fill_top(self, Py_ssize_t idx, int64_t now_ns, uint64_t seq, T2TTop* top) noexcept
    # Handle one request: log, risk check, encode. The bytes, or None when refused.
    cdef object _submit(self, const T2TOrderRequest* r, int64_t now_ns, uint64_t packet_seq)
    # The ClOrdID text of `cl` in a scratch bytes object (valid until the next call).
    # Consecutive ids are counted up in base 36 in place (no division).
    cdef bytes _cl_ord_id_text(self, uint64_t cl)
    # Halts seen in a packet reach the kernel (cold path).
    cdef int _sync_halts(self, ItchApplyResult res) except -1
