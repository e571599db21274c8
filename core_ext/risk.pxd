# The pre-trade risk kernel: one RiskKernel per account. Every order goes through
# RiskKernel.check_order before it is encoded; the answer is a RiskCode (0 = pass),
# never an exception. Fails closed: anything the kernel does not know (instrument,
# limits, reference price, a stale book, a malformed order) is a rejection.
#
# Units (no floats anywhere): prices are int64 ticks, quantities int64 lots, time
# int64 ns, client order ids uint64. A notional is
#     qty (lots) * price (ticks) * contract_multiplier
# in "tick-lots"; every notional limit is given in that same unit (the Python config
# layer converts decimal money into it). Notionals that do not fit in int64 saturate
# at INT64_MAX; notional limits are at most RISK_NOTIONAL_LIMIT_MAX = INT64_MAX - 1,
# so a saturated value always exceeds its limit, and the decisions are exactly those
# of unbounded integer arithmetic (tests/reference/risk_ref.py uses Python ints).
# Intermediate products are computed in 128-bit integers (GCC/Clang __int128).
from libc.stdint cimport int64_t, uint64_t, uint8_t

cdef extern from *:
    """
    typedef __int128 risk_i128;
    """
    # 128-bit signed integer (GCC/Clang). Cython only sees a C integer type: it is
    # used for arithmetic and comparisons and never converted to a Python object
    # directly (see RiskKernel.gross_exposure).
    ctypedef long long i128 "risk_i128"

# Result of a check, one code per reason. The numeric order IS the precedence: when
# an order breaks several rules, the smallest non-zero code is the one reported.
# The values are part of the logs and the metrics, so they never change.
cdef enum RiskCode:
    RISK_OK = 0                          # every check passed; the order is now counted open
    RISK_REJECT_KILL_SWITCH = 1          # the kill switch is tripped (latched until reset)
    RISK_REJECT_HALTED = 2               # trading halted, for the account or this instrument
    RISK_REJECT_INVALID_ORDER = 3        # bad side, qty <= 0, price <= 0 (not NO_PRICE), id 0
    RISK_REJECT_REDUCE_ONLY = 4          # reduce-only and the order does not shrink the position
    RISK_REJECT_UNKNOWN_INSTRUMENT = 5   # id out of range or never registered
    RISK_REJECT_NO_LIMITS = 6            # instrument limits or account limits not loaded
    RISK_REJECT_NO_REFERENCE = 7         # no reference price for the instrument
    RISK_REJECT_STALE_REFERENCE = 8      # |now - reference timestamp| > max_ref_age_ns
    RISK_REJECT_BOOK_STALE = 9           # the feed flagged the instrument's book stale
    RISK_REJECT_MAX_ORDER_QTY = 10       # qty > max_order_qty
    RISK_REJECT_MAX_ORDER_NOTIONAL = 11  # qty * price * mult > max_order_notional
    RISK_REJECT_PRICE_BAND = 12          # |price - ref| * 10000 > price_band_bps * ref
    RISK_REJECT_MAX_POSITION = 13        # position + open same-side qty + qty beyond max_position
    RISK_REJECT_MAX_GROSS_EXPOSURE = 14  # gross exposure after the order > max_gross_exposure
    RISK_REJECT_CONCENTRATION = 15       # instrument share of gross > max_concentration_bps
    RISK_REJECT_MAX_OPEN_ORDERS = 16     # open orders of the instrument already at max_open_orders
    RISK_REJECT_THROTTLE = 17            # max_orders_per_window already accepted in window_ns
    RISK_REJECT_DUPLICATE_ID = 18        # client order id among the recent accepted ids

cdef enum:
    RISK_CODE_COUNT = 19                 # number of RiskCode values (length of the counters)
    RISK_MAX_INSTRUMENTS = 1 << 24       # upper bound of RiskKernel(max_instruments=...)
    RISK_MAX_DUP_WINDOW = 1 << 24        # upper bound of RiskKernel(dup_window=...)
    RISK_MAX_RATE_ORDERS = 1 << 22       # upper bound of max_orders_per_window

# Result of a state update made through a cdef entry (the def wrappers turn the
# non-zero ones into ValueError / OverflowError naming the bad argument).
cdef enum RiskUpdate:
    RISK_UPDATE_OK = 0                   # applied
    RISK_UPDATE_UNKNOWN_INSTRUMENT = 1   # id out of range or never registered; nothing changed
    RISK_UPDATE_BAD_SIDE = 2             # side is neither SIDE_BUY nor SIDE_SELL; nothing changed
    RISK_UPDATE_BAD_QTY = 3              # quantity out of range; nothing changed
    RISK_UPDATE_BAD_PRICE = 4            # price <= 0 and not NO_PRICE; nothing changed
    RISK_UPDATE_BAD_ID = 5               # client order id 0 (reserved for "no id"); nothing changed
    RISK_UPDATE_OVERFLOW = 6             # position or open qty would leave int64; nothing changed

# Limits of one instrument (set_instrument_limits). All >= 0.
cdef struct InstrumentLimits:
    int64_t max_order_qty        # lots; qty == max passes
    int64_t max_order_notional   # tick-lots, <= RISK_NOTIONAL_LIMIT_MAX
    int64_t price_band_bps       # allowed |price - ref| / ref, basis points
    int64_t max_position         # lots, applied to the long side for buys, the short side for sells
    int64_t max_open_orders      # open orders of this instrument, this order excluded
    int64_t max_ref_age_ns       # a reference older (or newer) than this is stale

# Everything the kernel knows about one instrument: configuration, limits and state,
# in one struct so a check touches one contiguous record.
cdef struct RiskInstrument:
    uint8_t known                # 1 once add_instrument registered the id
    uint8_t has_limits           # 1 once set_instrument_limits ran
    uint8_t halted               # per-instrument halt (the account flag is separate)
    uint8_t reduce_only          # per-instrument reduce-only (the account flag is separate)
    uint8_t book_stale           # set by the feed handler on a gap
    int64_t multiplier           # contract multiplier (>= 1): notional = qty * price * multiplier
    InstrumentLimits limits      # valid when has_limits
    int64_t position             # signed lots, |position| <= INT64_MAX
    int64_t open_buy_qty         # lots of open (reserved or working) buy orders
    int64_t open_sell_qty        # lots of open sell orders
    int64_t open_orders          # number of open orders, both sides
    int64_t ref_price            # reference price in ticks, NO_PRICE when none
    int64_t ref_ts_ns            # timestamp of ref_price
    # exposure: (|position| + open_buy_qty + open_sell_qty) * ref * multiplier, saturated
    # at INT64_MAX; INT64_MAX also when the value is unknown (quantity but no reference)
    int64_t exposure             # tick-lots, see above

# Account limits (set_account_limits).
cdef struct AccountLimits:
    uint8_t loaded               # 1 once set_account_limits ran
    int64_t max_gross_exposure   # tick-lots: the stage's capital limit, <= RISK_NOTIONAL_LIMIT_MAX
    int64_t max_concentration_bps  # 0..10000: max share of one instrument in gross exposure
    int64_t concentration_floor  # concentration applies only when gross after the order > this
    int64_t max_orders_per_window  # accepted orders allowed in any window_ns (0: no orders at all)
    int64_t window_ns            # throttle window, > 0

# One order of a batch (check_many); the NumPy twin is risk.ORDER_DTYPE.
cdef struct RiskOrderRequest:
    int64_t inst_id              # instrument id
    int64_t side                 # SIDE_BUY / SIDE_SELL
    int64_t qty                  # lots
    int64_t price                # ticks, NO_PRICE for a market order
    uint64_t cl_ord_id           # client order id, != 0
    int64_t now_ns               # time of the check

cdef class RiskKernel:
    cdef readonly Py_ssize_t max_instruments  # instrument ids are 0 .. max_instruments - 1
    cdef readonly Py_ssize_t dup_window       # how many recent accepted client order ids are kept
    cdef RiskInstrument* _inst                # [max_instruments], zeroed at construction
    cdef AccountLimits _acct                  # account limits
    cdef i128 _gross                          # sum of _inst[i].exposure (exact, no saturation)
    cdef readonly bint kill_switch_tripped    # latched by trip_kill_switch, cleared by reset
    cdef readonly bint halted                 # account-wide halt
    cdef readonly bint reduce_only            # account-wide reduce-only
    # anomalies: state updates that had to clamp (e.g. a cancel of more open qty than
    # the kernel knew): an update was lost upstream
    cdef readonly uint64_t anomalies          # count of clamped updates
    # Order-rate throttle: ring of the timestamps of the last max_orders_per_window
    # accepted orders, oldest at _rate_head.
    cdef int64_t* _rate_ts                    # [_rate_cap]
    cdef Py_ssize_t _rate_cap                 # == _acct.max_orders_per_window
    cdef Py_ssize_t _rate_count               # filled slots, <= _rate_cap
    cdef Py_ssize_t _rate_head                # index of the oldest timestamp
    # Recent client order ids: an open-addressing hash set (linear probing, 0 = empty,
    # load <= 1/2) plus a FIFO ring of the same ids for eviction of the oldest.
    cdef uint64_t* _dup_table                 # [_dup_mask + 1]
    cdef uint64_t _dup_mask                   # table size - 1 (size: power of 2 >= 2 * dup_window)
    cdef int _dup_shift                       # 64 - log2(table size): home = (id * phi) >> shift
    cdef uint64_t* _dup_ring                  # [dup_window], insertion order
    cdef Py_ssize_t _dup_count                # ids held, <= dup_window
    cdef Py_ssize_t _dup_head                 # index of the oldest id in _dup_ring
    # Counters per RiskCode (index 0 counts passes), in a NumPy array that owns the
    # memory so counters_view() can hand out a live read-only view.
    cdef object _counters_arr                 # numpy.ndarray[uint64], RISK_CODE_COUNT
    cdef uint64_t* _counters                  # data pointer of _counters_arr

    # The check. Returns a RiskCode; on RISK_OK the order is reserved (counted open,
    # its id and timestamp recorded) before returning. Bumps the code's counter.
    cdef int check_order(self, int64_t inst_id, int side, int64_t qty, int64_t price,
                         uint64_t cl_ord_id, int64_t now_ns) noexcept nogil
    # The rule chain alone: no state change, no counter.
    cdef int evaluate(self, int64_t inst_id, int side, int64_t qty, int64_t price,
                      uint64_t cl_ord_id, int64_t now_ns) noexcept nogil

    # State updates (return a RiskUpdate; nothing changes unless RISK_UPDATE_OK).
    # An order that did not go through check_order (journal replay, adopted order).
    cdef int apply_order_accepted(self, uint64_t cl_ord_id, int64_t inst_id, int side,
                                  int64_t qty, int64_t price) noexcept nogil
    # A fill of qty lots; leaves_qty == 0 closes the order (open order count - 1).
    cdef int apply_fill(self, int64_t inst_id, int side, int64_t qty, int64_t price,
                        int64_t leaves_qty) noexcept nogil
    # The order is gone with leaves_qty lots still open (cancel, expiry, venue reject).
    cdef int apply_order_closed(self, int64_t inst_id, int side, int64_t leaves_qty) noexcept nogil
    cdef int apply_reference_price(self, int64_t inst_id, int64_t price,
                                   int64_t ts_ns) noexcept nogil
    cdef int apply_book_stale(self, int64_t inst_id, bint stale) noexcept nogil

    # Internals.
    cdef RiskInstrument* _known(self, int64_t inst_id) noexcept nogil  # NULL if unknown
    cdef RiskInstrument* _registered(self, object inst_id) except NULL  # ValueError if unknown
    cdef void _refresh_exposure(self, RiskInstrument* ins) noexcept nogil
    cdef void _rate_push(self, int64_t now_ns) noexcept nogil
    cdef bint _dup_contains(self, uint64_t cl_ord_id) noexcept nogil
    cdef void _dup_insert(self, uint64_t cl_ord_id) noexcept nogil  # id must be absent
    cdef void _dup_delete(self, uint64_t cl_ord_id) noexcept nogil
    cdef int _raise_update(self, int code, str what) except -1       # always raises
