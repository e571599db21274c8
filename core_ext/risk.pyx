"""The pre-trade risk kernel (see risk.pxd for the contract and the units).

One ``RiskKernel`` per account. ``check(inst_id, side, qty, price, cl_ord_id, now_ns)``
returns a result code (``RISK_OK`` == 0 or one ``RISK_REJECT_*``); it never raises for
a bad order, it rejects it. Rules, in order of precedence (the first that fails is
the code returned):

 1. kill switch tripped                    ``RISK_REJECT_KILL_SWITCH``
 2. trading halted (account or instrument) ``RISK_REJECT_HALTED``
 3. malformed order: side not 0/1, qty <= 0, price <= 0 and not NO_PRICE,
    cl_ord_id == 0                         ``RISK_REJECT_INVALID_ORDER``
 4. reduce-only (account or instrument) and the order does not shrink the
    position: a buy passes only if position < 0 and open buy qty + qty <= -position,
    a sell only if position > 0 and open sell qty + qty <= position (so neither a
    flip nor a set of open orders that together would flip passes; an unknown
    instrument has position 0 and is rejected here)    ``RISK_REJECT_REDUCE_ONLY``
 5. instrument id out of range or not registered  ``RISK_REJECT_UNKNOWN_INSTRUMENT``
 6. instrument or account limits not loaded        ``RISK_REJECT_NO_LIMITS``
 7. no reference price                             ``RISK_REJECT_NO_REFERENCE``
 8. |now - reference timestamp| > max_ref_age_ns   ``RISK_REJECT_STALE_REFERENCE``
 9. book flagged stale by the feed                 ``RISK_REJECT_BOOK_STALE``
10. qty > max_order_qty                            ``RISK_REJECT_MAX_ORDER_QTY``
11. qty * px * mult > max_order_notional, px = the limit price, or the reference
    price for a market order                       ``RISK_REJECT_MAX_ORDER_NOTIONAL``
12. |px - ref| * 10000 > price_band_bps * ref (a market order is at ref: passes)
                                                   ``RISK_REJECT_PRICE_BAND``
13. buy:  position + open buy qty + qty > max_position, or
    sell: open sell qty + qty - position > max_position
    (the projected long resp. short position if every same-side open order fills;
    an order that only reduces the position passes)  ``RISK_REJECT_MAX_POSITION``
14. gross exposure + this order's notional > max_gross_exposure, where gross exposure
    is the sum over instruments of (|position| + open buy + open sell qty) * ref *
    mult, i.e. positions AND open orders are marked at the instrument's reference
    price (the kernel keeps no per-order prices: a cancel or a fill does not name
    the order's limit price); an instrument holding quantity but no reference price
    has an unknown, hence infinite, exposure: every order reaching this rule is
    rejected until that price arrives          ``RISK_REJECT_MAX_GROSS_EXPOSURE``
15. concentration, applied only when gross exposure after the order >
    concentration_floor (so the first orders of the day, alone at 100 %, can pass
    while the book is small): instrument exposure after the order * 10000 >
    max_concentration_bps * gross exposure after the order  ``RISK_REJECT_CONCENTRATION``
16. open orders of the instrument >= max_open_orders  ``RISK_REJECT_MAX_OPEN_ORDERS``
17. throttle: the max_orders_per_window-th most recent accepted order was accepted
    less than window_ns before now (i.e. at most N accepted orders in any window;
    N == 0 rejects everything)                   ``RISK_REJECT_THROTTLE``
18. cl_ord_id among the last ``dup_window`` distinct accepted ids (FIFO eviction of
    the oldest; ids of rejected orders are not recorded) ``RISK_REJECT_DUPLICATE_ID``

Reservation: a passing check counts the order open at once (open same-side qty +
qty, open orders + 1, exposure), records its id in the duplicate set and its time
in the throttle ring. So the next check sees it without another call, and a venue
ack needs no call. If the order is then not sent, or the venue rejects it, call
``on_reject``; a cancel ``on_cancel``; a fill ``on_fill`` (its ``leaves_qty`` == 0
closes the order). ``on_order_accepted`` registers an order that did NOT pass
through ``check`` (journal replay after a restart, an order adopted at
reconciliation); never call it for an order that passed ``check``.

Clamping: a fill, cancel or reject of more open quantity (or more open orders) than
the kernel holds clamps the open quantity/count at 0 and bumps ``anomalies``: it
means an update was lost upstream; the engine should alert on it.

Not thread-safe: one thread (the strategy loop) owns a kernel.
"""
cimport cython
from libc.stdint cimport int64_t, uint64_t, uint8_t, INT64_MAX, INT64_MIN
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from core_ext.common cimport SIDE_BUY, SIDE_SELL, NO_PRICE, side_is_valid

import operator

import numpy as np

# Largest value a notional limit may take: a saturated notional (INT64_MAX) always
# exceeds it.
cdef int64_t NOTIONAL_LIMIT_MAX = INT64_MAX - 1
cdef int64_t BPS = 10000

RISK_NOTIONAL_LIMIT_MAX = NOTIONAL_LIMIT_MAX
# Shared constants as Python ints (their C names are cimported, hence globals()).
globals().update(NO_PRICE=INT64_MIN, SIDE_BUY=0, SIDE_SELL=1, RISK_CODE_COUNT=RISK_CODE_COUNT)

#: code -> name, for logs and metrics labels.
REJECT_REASONS = {
    RISK_OK: "RISK_OK",
    RISK_REJECT_KILL_SWITCH: "RISK_REJECT_KILL_SWITCH",
    RISK_REJECT_HALTED: "RISK_REJECT_HALTED",
    RISK_REJECT_INVALID_ORDER: "RISK_REJECT_INVALID_ORDER",
    RISK_REJECT_REDUCE_ONLY: "RISK_REJECT_REDUCE_ONLY",
    RISK_REJECT_UNKNOWN_INSTRUMENT: "RISK_REJECT_UNKNOWN_INSTRUMENT",
    RISK_REJECT_NO_LIMITS: "RISK_REJECT_NO_LIMITS",
    RISK_REJECT_NO_REFERENCE: "RISK_REJECT_NO_REFERENCE",
    RISK_REJECT_STALE_REFERENCE: "RISK_REJECT_STALE_REFERENCE",
    RISK_REJECT_BOOK_STALE: "RISK_REJECT_BOOK_STALE",
    RISK_REJECT_MAX_ORDER_QTY: "RISK_REJECT_MAX_ORDER_QTY",
    RISK_REJECT_MAX_ORDER_NOTIONAL: "RISK_REJECT_MAX_ORDER_NOTIONAL",
    RISK_REJECT_PRICE_BAND: "RISK_REJECT_PRICE_BAND",
    RISK_REJECT_MAX_POSITION: "RISK_REJECT_MAX_POSITION",
    RISK_REJECT_MAX_GROSS_EXPOSURE: "RISK_REJECT_MAX_GROSS_EXPOSURE",
    RISK_REJECT_CONCENTRATION: "RISK_REJECT_CONCENTRATION",
    RISK_REJECT_MAX_OPEN_ORDERS: "RISK_REJECT_MAX_OPEN_ORDERS",
    RISK_REJECT_THROTTLE: "RISK_REJECT_THROTTLE",
    RISK_REJECT_DUPLICATE_ID: "RISK_REJECT_DUPLICATE_ID",
}
# The codes as module-level Python ints: risk.RISK_REJECT_HALTED etc.
globals().update({_name: _code for _code, _name in REJECT_REASONS.items()})

#: One order of a batch for RiskKernel.check_many (layout of RiskOrderRequest).
ORDER_DTYPE = np.dtype([
    ("inst_id", "<i8"),
    ("side", "<i8"),
    ("qty", "<i8"),
    ("price", "<i8"),
    ("cl_ord_id", "<u8"),
    ("now_ns", "<i8"),
])


cdef inline int64_t sat_mul(int64_t a, int64_t b) noexcept nogil:
    # a * b for a, b >= 0, saturated at INT64_MAX.
    cdef i128 p = <i128>a * <i128>b
    if p > <i128>INT64_MAX:
        return INT64_MAX
    return <int64_t>p


cdef inline uint64_t fib_home(uint64_t key, int shift) noexcept nogil:
    # Fibonacci hashing: the top bits of key * 2**64/phi. One multiply, and it spreads
    # arithmetic progressions (sequential or strided client order ids) evenly.
    return (key * <uint64_t>0x9E3779B97F4A7C15ULL) >> shift


cdef inline bint i128_fits_i64(i128 v) noexcept nogil:
    return <i128>INT64_MIN <= v <= <i128>INT64_MAX


cdef object i128_to_py(i128 v):
    # Exact conversion (Cython would truncate an i128 through long long).
    if i128_fits_i64(v):
        return <int64_t>v
    cdef bint neg = v < 0
    cdef i128 m = -v if neg else v
    cdef uint64_t lo = <uint64_t>(m & <i128>0xFFFFFFFFFFFFFFFFULL)
    cdef uint64_t hi = <uint64_t>(m >> 64)
    r = (int(hi) << 64) | int(lo)
    return -r if neg else r


cdef inline int64_t checked_i64(object value, str name) except? -1:
    # Python int -> int64 with a clear error naming the argument.
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not (INT64_MIN <= value <= INT64_MAX):
        raise OverflowError(f"{name}={value} does not fit in int64")
    return <int64_t>value


def _need(bint ok, str message):
    if not ok:
        raise ValueError(message)


@cython.final
cdef class RiskKernel:
    """Pre-trade risk state and checks of one account. See the module docstring."""

    def __cinit__(self, Py_ssize_t max_instruments=1024, Py_ssize_t dup_window=65536):
        if not 1 <= max_instruments <= RISK_MAX_INSTRUMENTS:
            raise ValueError(f"max_instruments must be in [1, {RISK_MAX_INSTRUMENTS}], "
                             f"got {max_instruments}")
        if not 1 <= dup_window <= RISK_MAX_DUP_WINDOW:
            raise ValueError(f"dup_window must be in [1, {RISK_MAX_DUP_WINDOW}], got {dup_window}")
        self.max_instruments = max_instruments
        self.dup_window = dup_window
        cdef uint64_t size = 1
        while size < <uint64_t>(2 * dup_window):
            size <<= 1
        self._dup_mask = size - 1
        self._dup_shift = 64
        while (<uint64_t>1 << (64 - self._dup_shift)) < size:
            self._dup_shift -= 1
        # malloc + memset rather than calloc: the writes fault every page in now, so
        # the first orders of the day do not pay for page faults on the hot path.
        self._inst = <RiskInstrument*>malloc(max_instruments * sizeof(RiskInstrument))
        self._dup_table = <uint64_t*>malloc(size * sizeof(uint64_t))
        self._dup_ring = <uint64_t*>malloc(dup_window * sizeof(uint64_t))
        if self._inst == NULL or self._dup_table == NULL or self._dup_ring == NULL:
            raise MemoryError("RiskKernel: out of memory")
        memset(self._inst, 0, max_instruments * sizeof(RiskInstrument))
        memset(self._dup_table, 0, size * sizeof(uint64_t))
        memset(self._dup_ring, 0, dup_window * sizeof(uint64_t))
        cdef Py_ssize_t i
        for i in range(max_instruments):
            self._inst[i].ref_price = NO_PRICE
        memset(&self._acct, 0, sizeof(AccountLimits))
        self._gross = 0
        self._rate_ts = NULL
        self._rate_cap = 0
        self._rate_count = 0
        self._rate_head = 0
        self._dup_count = 0
        self._dup_head = 0
        self._counters_arr = np.zeros(RISK_CODE_COUNT, dtype=np.uint64)
        cdef uint64_t[::1] view = self._counters_arr
        self._counters = &view[0]

    def __dealloc__(self):
        free(self._inst)
        free(self._dup_table)
        free(self._dup_ring)
        free(self._rate_ts)

    # ------------------------------------------------------------------ configuration

    def add_instrument(self, inst_id, contract_multiplier=1):
        """Register instrument ``inst_id`` (0 <= id < max_instruments) with its
        contract multiplier (>= 1). Orders for an unregistered id are rejected
        RISK_REJECT_UNKNOWN_INSTRUMENT. Registering an id twice is an error."""
        cdef int64_t i = checked_i64(inst_id, "inst_id")
        cdef int64_t mult = checked_i64(contract_multiplier, "contract_multiplier")
        _need(0 <= i < self.max_instruments,
              f"inst_id={i} out of range [0, {self.max_instruments})")
        _need(not self._inst[i].known, f"instrument {i} is already registered")
        _need(mult >= 1, f"contract_multiplier must be >= 1, got {mult}")
        self._inst[i].known = 1
        self._inst[i].multiplier = mult
        self._inst[i].ref_price = NO_PRICE

    def set_instrument_limits(self, inst_id, *, max_order_qty, max_order_notional,
                              price_band_bps, max_position, max_open_orders, max_ref_age_ns):
        """Load (or replace) the limits of a registered instrument. Units: lots,
        tick-lots (qty * price * multiplier), basis points, lots, orders, ns."""
        cdef InstrumentLimits lim
        cdef RiskInstrument* ins = self._registered(inst_id)
        lim.max_order_qty = checked_i64(max_order_qty, "max_order_qty")
        lim.max_order_notional = checked_i64(max_order_notional, "max_order_notional")
        lim.price_band_bps = checked_i64(price_band_bps, "price_band_bps")
        lim.max_position = checked_i64(max_position, "max_position")
        lim.max_open_orders = checked_i64(max_open_orders, "max_open_orders")
        lim.max_ref_age_ns = checked_i64(max_ref_age_ns, "max_ref_age_ns")
        _need(lim.max_order_qty >= 0, f"max_order_qty must be >= 0, got {lim.max_order_qty}")
        _need(0 <= lim.max_order_notional <= NOTIONAL_LIMIT_MAX,
              f"max_order_notional must be in [0, {NOTIONAL_LIMIT_MAX}], "
              f"got {lim.max_order_notional}")
        _need(lim.price_band_bps >= 0, f"price_band_bps must be >= 0, got {lim.price_band_bps}")
        _need(lim.max_position >= 0, f"max_position must be >= 0, got {lim.max_position}")
        _need(lim.max_open_orders >= 0,
              f"max_open_orders must be >= 0, got {lim.max_open_orders}")
        _need(lim.max_ref_age_ns >= 0, f"max_ref_age_ns must be >= 0, got {lim.max_ref_age_ns}")
        ins.limits = lim
        ins.has_limits = 1

    def set_account_limits(self, *, max_gross_exposure, max_concentration_bps,
                           concentration_floor, max_orders_per_window, window_ns):
        """Load (or replace) the account limits. ``max_gross_exposure`` is the
        stage's capital limit in tick-lots. When ``max_orders_per_window`` changes,
        the throttle keeps the most recent min(old, new) acceptance times."""
        cdef AccountLimits acct
        acct.loaded = 1
        acct.max_gross_exposure = checked_i64(max_gross_exposure, "max_gross_exposure")
        acct.max_concentration_bps = checked_i64(max_concentration_bps, "max_concentration_bps")
        acct.concentration_floor = checked_i64(concentration_floor, "concentration_floor")
        acct.max_orders_per_window = checked_i64(max_orders_per_window, "max_orders_per_window")
        acct.window_ns = checked_i64(window_ns, "window_ns")
        _need(0 <= acct.max_gross_exposure <= NOTIONAL_LIMIT_MAX,
              f"max_gross_exposure must be in [0, {NOTIONAL_LIMIT_MAX}], "
              f"got {acct.max_gross_exposure}")
        _need(0 <= acct.max_concentration_bps <= BPS,
              f"max_concentration_bps must be in [0, {BPS}], got {acct.max_concentration_bps}")
        _need(acct.concentration_floor >= 0,
              f"concentration_floor must be >= 0, got {acct.concentration_floor}")
        _need(0 <= acct.max_orders_per_window <= RISK_MAX_RATE_ORDERS,
              f"max_orders_per_window must be in [0, {RISK_MAX_RATE_ORDERS}], "
              f"got {acct.max_orders_per_window}")
        _need(acct.window_ns > 0, f"window_ns must be > 0, got {acct.window_ns}")
        cdef Py_ssize_t cap = <Py_ssize_t>acct.max_orders_per_window
        cdef int64_t* ring = NULL
        cdef Py_ssize_t keep = 0, k
        if cap != self._rate_cap:
            if cap > 0:
                ring = <int64_t*>malloc(cap * sizeof(int64_t))
                if ring == NULL:
                    raise MemoryError("RiskKernel: out of memory for the throttle ring")
                memset(ring, 0, cap * sizeof(int64_t))  # fault the pages in now
                keep = min(cap, self._rate_count)
                # copy the `keep` most recent, oldest first
                for k in range(keep):
                    ring[k] = self._rate_ts[(self._rate_head + self._rate_count - keep + k)
                                            % self._rate_cap]
            free(self._rate_ts)
            self._rate_ts = ring
            self._rate_cap = cap
            self._rate_count = keep
            self._rate_head = 0
        self._acct = acct

    def set_halted(self, bint halted, inst_id=None):
        """Halt (or resume) the account, or one registered instrument."""
        if inst_id is None:
            self.halted = halted
        else:
            self._registered(inst_id).halted = halted

    def set_reduce_only(self, bint reduce_only, inst_id=None):
        """Reduce-only for the account, or for one registered instrument."""
        if inst_id is None:
            self.reduce_only = reduce_only
        else:
            self._registered(inst_id).reduce_only = reduce_only

    def trip_kill_switch(self):
        """Reject every order until reset_kill_switch (latches)."""
        self.kill_switch_tripped = True

    def reset_kill_switch(self):
        self.kill_switch_tripped = False

    # ------------------------------------------------------------------ the check

    cdef int evaluate(self, int64_t inst_id, int side, int64_t qty, int64_t price,
                      uint64_t cl_ord_id, int64_t now_ns) noexcept nogil:
        cdef RiskInstrument* ins = self._known(inst_id)
        cdef int64_t pos, px, notional, same_open, cap
        cdef i128 age, dev, gross, inst_exp
        if self.kill_switch_tripped:
            return RISK_REJECT_KILL_SWITCH
        if self.halted or (ins != NULL and ins.halted):
            return RISK_REJECT_HALTED
        if (not side_is_valid(side) or qty <= 0 or (price <= 0 and price != NO_PRICE)
                or cl_ord_id == 0):
            return RISK_REJECT_INVALID_ORDER
        if self.reduce_only or (ins != NULL and ins.reduce_only):
            if ins == NULL:
                return RISK_REJECT_REDUCE_ONLY
            pos = ins.position
            if side == SIDE_BUY:
                if not (pos < 0 and <i128>ins.open_buy_qty + qty <= -<i128>pos):
                    return RISK_REJECT_REDUCE_ONLY
            else:
                if not (pos > 0 and <i128>ins.open_sell_qty + qty <= <i128>pos):
                    return RISK_REJECT_REDUCE_ONLY
        if ins == NULL:
            return RISK_REJECT_UNKNOWN_INSTRUMENT
        if not ins.has_limits or not self._acct.loaded:
            return RISK_REJECT_NO_LIMITS
        if ins.ref_price == NO_PRICE:
            return RISK_REJECT_NO_REFERENCE
        age = <i128>now_ns - <i128>ins.ref_ts_ns
        if age > ins.limits.max_ref_age_ns or age < -<i128>ins.limits.max_ref_age_ns:
            return RISK_REJECT_STALE_REFERENCE
        if ins.book_stale:
            return RISK_REJECT_BOOK_STALE
        if qty > ins.limits.max_order_qty:
            return RISK_REJECT_MAX_ORDER_QTY
        px = ins.ref_price if price == NO_PRICE else price
        notional = sat_mul(sat_mul(qty, px), ins.multiplier)
        if notional > ins.limits.max_order_notional:
            return RISK_REJECT_MAX_ORDER_NOTIONAL
        dev = <i128>px - <i128>ins.ref_price
        if dev < 0:
            dev = -dev
        if dev * BPS > <i128>ins.limits.price_band_bps * ins.ref_price:
            return RISK_REJECT_PRICE_BAND
        if side == SIDE_BUY:
            same_open = ins.open_buy_qty
            if <i128>ins.position + same_open + qty > ins.limits.max_position:
                return RISK_REJECT_MAX_POSITION
        else:
            same_open = ins.open_sell_qty
            if <i128>same_open + qty - ins.position > ins.limits.max_position:
                return RISK_REJECT_MAX_POSITION
        if <i128>same_open + qty > INT64_MAX:  # the open quantity must stay representable
            return RISK_REJECT_MAX_POSITION
        gross = self._gross + notional
        if gross > self._acct.max_gross_exposure:
            return RISK_REJECT_MAX_GROSS_EXPOSURE
        if gross > self._acct.concentration_floor:
            inst_exp = <i128>ins.exposure + notional
            if inst_exp * BPS > <i128>self._acct.max_concentration_bps * gross:
                return RISK_REJECT_CONCENTRATION
        if ins.open_orders >= ins.limits.max_open_orders:
            return RISK_REJECT_MAX_OPEN_ORDERS
        cap = self._rate_cap
        if cap == 0:
            return RISK_REJECT_THROTTLE
        if self._rate_count == cap:
            if <i128>now_ns - self._rate_ts[self._rate_head] < self._acct.window_ns:
                return RISK_REJECT_THROTTLE
        if self._dup_contains(cl_ord_id):
            return RISK_REJECT_DUPLICATE_ID
        return RISK_OK

    cdef int check_order(self, int64_t inst_id, int side, int64_t qty, int64_t price,
                         uint64_t cl_ord_id, int64_t now_ns) noexcept nogil:
        cdef int code = self.evaluate(inst_id, side, qty, price, cl_ord_id, now_ns)
        self._counters[code] += 1
        if code != RISK_OK:
            return code
        # reserve: evaluate() proved inst_id known and the open qty representable
        cdef RiskInstrument* ins = &self._inst[inst_id]
        if side == SIDE_BUY:
            ins.open_buy_qty += qty
        else:
            ins.open_sell_qty += qty
        ins.open_orders += 1
        self._refresh_exposure(ins)
        self._rate_push(now_ns)
        self._dup_insert(cl_ord_id)
        return RISK_OK

    def check(self, int64_t inst_id, int64_t side, int64_t qty, int64_t price,
              uint64_t cl_ord_id, int64_t now_ns):
        """check(inst_id, side, qty, price, cl_ord_id, now_ns) -> int code.

        RISK_OK (0) reserves the order (it counts as open at once); any other value
        is a RISK_REJECT_* code (see REJECT_REASONS). price is NO_PRICE for a market
        order."""
        return self.check_order(inst_id, <int>side if 0 <= side <= 1 else -1, qty, price,
                                cl_ord_id, now_ns)

    def would_pass(self, int64_t inst_id, int64_t side, int64_t qty, int64_t price,
                   uint64_t cl_ord_id, int64_t now_ns):
        """The code check() would return, without reserving or counting anything."""
        return self.evaluate(inst_id, <int>side if 0 <= side <= 1 else -1, qty, price,
                             cl_ord_id, now_ns)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def check_many(self, orders):
        """Check a batch, in order, as if check() were called on each row.

        ``orders`` is a 1-d array of ORDER_DTYPE; returns a uint8 array of codes.
        One Python->C crossing for the whole batch."""
        arr = np.ascontiguousarray(orders)
        if arr.dtype != ORDER_DTYPE or arr.ndim != 1:
            raise TypeError(f"orders must be a 1-d array of risk.ORDER_DTYPE, "
                            f"got {arr.dtype} with ndim {arr.ndim}")
        cdef const RiskOrderRequest[::1] rows = arr
        cdef Py_ssize_t n = rows.shape[0], i
        out = np.empty(n, dtype=np.uint8)
        cdef uint8_t[::1] codes = out
        cdef int64_t side
        # The GIL stays held: a Python thread calling on_fill meanwhile would race.
        for i in range(n):
            side = rows[i].side
            codes[i] = <uint8_t>self.check_order(
                rows[i].inst_id, <int>side if 0 <= side <= 1 else -1, rows[i].qty,
                rows[i].price, rows[i].cl_ord_id, rows[i].now_ns)
        return out

    # ------------------------------------------------------------------ state updates

    cdef int apply_order_accepted(self, uint64_t cl_ord_id, int64_t inst_id, int side,
                                  int64_t qty, int64_t price) noexcept nogil:
        cdef RiskInstrument* ins = self._known(inst_id)
        if ins == NULL:
            return RISK_UPDATE_UNKNOWN_INSTRUMENT
        if not side_is_valid(side):
            return RISK_UPDATE_BAD_SIDE
        if qty <= 0:
            return RISK_UPDATE_BAD_QTY
        if price <= 0 and price != NO_PRICE:
            return RISK_UPDATE_BAD_PRICE
        if cl_ord_id == 0:
            return RISK_UPDATE_BAD_ID
        cdef int64_t same_open = ins.open_buy_qty if side == SIDE_BUY else ins.open_sell_qty
        if <i128>same_open + qty > INT64_MAX:
            return RISK_UPDATE_OVERFLOW
        if side == SIDE_BUY:
            ins.open_buy_qty += qty
        else:
            ins.open_sell_qty += qty
        ins.open_orders += 1
        self._refresh_exposure(ins)
        if not self._dup_contains(cl_ord_id):
            self._dup_insert(cl_ord_id)
        return RISK_UPDATE_OK

    cdef int apply_fill(self, int64_t inst_id, int side, int64_t qty, int64_t price,
                        int64_t leaves_qty) noexcept nogil:
        cdef RiskInstrument* ins = self._known(inst_id)
        if ins == NULL:
            return RISK_UPDATE_UNKNOWN_INSTRUMENT
        if not side_is_valid(side):
            return RISK_UPDATE_BAD_SIDE
        if qty <= 0 or leaves_qty < 0:
            return RISK_UPDATE_BAD_QTY
        if price <= 0:
            return RISK_UPDATE_BAD_PRICE
        cdef i128 new_pos = <i128>ins.position + (qty if side == SIDE_BUY else -<i128>qty)
        if new_pos > INT64_MAX or new_pos < -<i128>INT64_MAX:
            return RISK_UPDATE_OVERFLOW
        ins.position = <int64_t>new_pos
        cdef int64_t* open_qty = &ins.open_buy_qty if side == SIDE_BUY else &ins.open_sell_qty
        if open_qty[0] >= qty:
            open_qty[0] -= qty
        else:
            open_qty[0] = 0
            self.anomalies += 1
        if leaves_qty == 0:
            if ins.open_orders > 0:
                ins.open_orders -= 1
            else:
                self.anomalies += 1
        self._refresh_exposure(ins)
        return RISK_UPDATE_OK

    cdef int apply_order_closed(self, int64_t inst_id, int side, int64_t leaves_qty) noexcept nogil:
        cdef RiskInstrument* ins = self._known(inst_id)
        if ins == NULL:
            return RISK_UPDATE_UNKNOWN_INSTRUMENT
        if not side_is_valid(side):
            return RISK_UPDATE_BAD_SIDE
        if leaves_qty < 0:
            return RISK_UPDATE_BAD_QTY
        cdef int64_t* open_qty = &ins.open_buy_qty if side == SIDE_BUY else &ins.open_sell_qty
        if open_qty[0] >= leaves_qty:
            open_qty[0] -= leaves_qty
        else:
            open_qty[0] = 0
            self.anomalies += 1
        if ins.open_orders > 0:
            ins.open_orders -= 1
        else:
            self.anomalies += 1
        self._refresh_exposure(ins)
        return RISK_UPDATE_OK

    cdef int apply_reference_price(self, int64_t inst_id, int64_t price,
                                   int64_t ts_ns) noexcept nogil:
        cdef RiskInstrument* ins = self._known(inst_id)
        if ins == NULL:
            return RISK_UPDATE_UNKNOWN_INSTRUMENT
        if price <= 0 and price != NO_PRICE:
            return RISK_UPDATE_BAD_PRICE
        ins.ref_price = price
        ins.ref_ts_ns = ts_ns
        self._refresh_exposure(ins)
        return RISK_UPDATE_OK

    cdef int apply_book_stale(self, int64_t inst_id, bint stale) noexcept nogil:
        cdef RiskInstrument* ins = self._known(inst_id)
        if ins == NULL:
            return RISK_UPDATE_UNKNOWN_INSTRUMENT
        ins.book_stale = stale
        return RISK_UPDATE_OK

    def on_order_accepted(self, cl_ord_id, inst_id, side, qty, price):
        """Count an order that did NOT pass through check() as open (journal replay,
        adopted order) and record its id. Not for orders that passed check()."""
        cl_ord_id = operator.index(cl_ord_id)
        if not 0 <= cl_ord_id <= 0xFFFFFFFFFFFFFFFF:
            raise OverflowError(f"cl_ord_id={cl_ord_id} does not fit in uint64")
        cdef int64_t i = checked_i64(inst_id, "inst_id")
        cdef int64_t s = checked_i64(side, "side")
        cdef int64_t q = checked_i64(qty, "qty")
        cdef int64_t p = checked_i64(price, "price")
        cdef int rc = self.apply_order_accepted(<uint64_t>cl_ord_id, i,
                                                <int>s if 0 <= s <= 1 else -1, q, p)
        if rc:
            self._raise_update(rc, f"on_order_accepted(cl_ord_id={cl_ord_id}, inst_id={i}, "
                                   f"side={s}, qty={q}, price={p})")

    def on_fill(self, inst_id, side, qty, price, leaves_qty):
        """A fill of ``qty`` lots at ``price``: position += qty (buy) / -= qty (sell),
        open same-side qty -= qty; ``leaves_qty == 0`` closes the order. The fill
        price is validated but not stored: exposure is marked at the reference."""
        cdef int64_t i = checked_i64(inst_id, "inst_id")
        cdef int64_t s = checked_i64(side, "side")
        cdef int64_t q = checked_i64(qty, "qty")
        cdef int64_t p = checked_i64(price, "price")
        cdef int64_t lv = checked_i64(leaves_qty, "leaves_qty")
        cdef int rc = self.apply_fill(i, <int>s if 0 <= s <= 1 else -1, q, p, lv)
        if rc:
            self._raise_update(rc, f"on_fill(inst_id={i}, side={s}, qty={q}, price={p}, "
                                   f"leaves_qty={lv})")

    def on_cancel(self, inst_id, side, leaves_qty):
        """The order was cancelled (or expired) with ``leaves_qty`` lots still open."""
        cdef int64_t i = checked_i64(inst_id, "inst_id")
        cdef int64_t s = checked_i64(side, "side")
        cdef int64_t lv = checked_i64(leaves_qty, "leaves_qty")
        cdef int rc = self.apply_order_closed(i, <int>s if 0 <= s <= 1 else -1, lv)
        if rc:
            self._raise_update(rc, f"on_cancel(inst_id={i}, side={s}, leaves_qty={lv})")

    def on_reject(self, inst_id, side, qty):
        """An order that passed check() was not sent or the venue rejected it:
        releases its reservation (same accounting as a cancel of ``qty``). Its client
        order id stays recorded as used."""
        cdef int64_t i = checked_i64(inst_id, "inst_id")
        cdef int64_t s = checked_i64(side, "side")
        cdef int64_t q = checked_i64(qty, "qty")
        cdef int rc = self.apply_order_closed(i, <int>s if 0 <= s <= 1 else -1, q)
        if rc:
            self._raise_update(rc, f"on_reject(inst_id={i}, side={s}, qty={q})")

    def set_reference_price(self, inst_id, price, ts_ns):
        """The instrument's reference price (ticks, > 0; NO_PRICE clears it) as of
        ``ts_ns``. Re-marks the instrument's exposure."""
        cdef int64_t i = checked_i64(inst_id, "inst_id")
        cdef int64_t p = checked_i64(price, "price")
        cdef int64_t t = checked_i64(ts_ns, "ts_ns")
        cdef int rc = self.apply_reference_price(i, p, t)
        if rc:
            self._raise_update(rc, f"set_reference_price(inst_id={i}, price={p}, ts_ns={t})")

    def set_book_stale(self, inst_id, bint stale):
        cdef int64_t i = checked_i64(inst_id, "inst_id")
        cdef int rc = self.apply_book_stale(i, stale)
        if rc:
            self._raise_update(rc, f"set_book_stale(inst_id={i})")

    def set_position(self, inst_id, position):
        """Overwrite the position (lots, signed): start of day, or after
        reconciliation with the venue's statement."""
        cdef RiskInstrument* ins = self._registered(inst_id)
        cdef int64_t p = checked_i64(position, "position")
        _need(p != INT64_MIN, "position must be > INT64_MIN")
        ins.position = p
        self._refresh_exposure(ins)

    # ------------------------------------------------------------------ reading

    def position(self, inst_id):
        return self._registered(inst_id).position

    def open_orders(self, inst_id):
        return self._registered(inst_id).open_orders

    def open_qty(self, inst_id, side):
        """Open lots of one side (SIDE_BUY / SIDE_SELL)."""
        cdef RiskInstrument* ins = self._registered(inst_id)
        _need(side in (SIDE_BUY, SIDE_SELL), f"side must be 0 or 1, got {side!r}")
        return ins.open_buy_qty if side == SIDE_BUY else ins.open_sell_qty

    def reference_price(self, inst_id):
        """(price, ts_ns); price is NO_PRICE when none was set."""
        cdef RiskInstrument* ins = self._registered(inst_id)
        return (ins.ref_price, ins.ref_ts_ns)

    def exposure(self, inst_id):
        """(|position| + open qty) * ref * multiplier, tick-lots, saturated at
        INT64_MAX; INT64_MAX also when the value is unknown (no reference)."""
        return self._registered(inst_id).exposure

    def gross_exposure(self):
        """Sum of exposure() over instruments (a Python int; >= INT64_MAX means at
        least one instrument is unknown or saturated)."""
        return i128_to_py(self._gross)

    def is_known(self, inst_id):
        return self._known(checked_i64(inst_id, "inst_id")) != NULL

    def counters(self):
        """Copy of the counters: numpy uint64[RISK_CODE_COUNT], index = code
        (index 0 counts passes)."""
        return self._counters_arr.copy()

    def counters_view(self):
        """A live read-only view of the counters (no copy; reads while checks run)."""
        view = self._counters_arr.view()
        view.flags.writeable = False
        return view

    def counter(self, int code):
        _need(0 <= code < RISK_CODE_COUNT, f"code must be in [0, {RISK_CODE_COUNT}), got {code}")
        return self._counters[code]

    def reset_counters(self):
        memset(self._counters, 0, RISK_CODE_COUNT * sizeof(uint64_t))

    def throttle_times(self):
        """Acceptance times held by the throttle ring, oldest first."""
        return [self._rate_ts[(self._rate_head + k) % self._rate_cap]
                for k in range(self._rate_count)]

    def recent_ids(self):
        """Client order ids held by the duplicate set, oldest first."""
        return [self._dup_ring[(self._dup_head + k) % self.dup_window]
                for k in range(self._dup_count)]

    # ------------------------------------------------------------------ internals

    cdef RiskInstrument* _known(self, int64_t inst_id) noexcept nogil:
        if inst_id < 0 or inst_id >= self.max_instruments:
            return NULL
        if not self._inst[inst_id].known:
            return NULL
        return &self._inst[inst_id]

    cdef RiskInstrument* _registered(self, object inst_id) except NULL:
        cdef int64_t i = checked_i64(inst_id, "inst_id")
        cdef RiskInstrument* ins = self._known(i)
        if ins == NULL:
            raise ValueError(f"unknown instrument {i} (not registered with add_instrument)")
        return ins

    cdef void _refresh_exposure(self, RiskInstrument* ins) noexcept nogil:
        cdef i128 q = <i128>ins.open_buy_qty + ins.open_sell_qty
        cdef int64_t e
        q += -<i128>ins.position if ins.position < 0 else <i128>ins.position
        if q == 0:
            e = 0
        elif ins.ref_price == NO_PRICE or q > INT64_MAX:
            e = INT64_MAX
        else:
            e = sat_mul(sat_mul(<int64_t>q, ins.ref_price), ins.multiplier)
        self._gross += <i128>e - ins.exposure
        ins.exposure = e

    cdef void _rate_push(self, int64_t now_ns) noexcept nogil:
        cdef Py_ssize_t idx
        if self._rate_count < self._rate_cap:
            idx = self._rate_head + self._rate_count
            if idx >= self._rate_cap:
                idx -= self._rate_cap
            self._rate_ts[idx] = now_ns
            self._rate_count += 1
        else:
            self._rate_ts[self._rate_head] = now_ns
            self._rate_head += 1
            if self._rate_head == self._rate_cap:
                self._rate_head = 0

    cdef bint _dup_contains(self, uint64_t cl_ord_id) noexcept nogil:
        cdef uint64_t i = fib_home(cl_ord_id, self._dup_shift)
        cdef uint64_t k
        while True:
            k = self._dup_table[i]
            if k == cl_ord_id:
                return True
            if k == 0:
                return False
            i = (i + 1) & self._dup_mask

    cdef void _dup_insert(self, uint64_t cl_ord_id) noexcept nogil:
        cdef Py_ssize_t idx
        if self._dup_count == self.dup_window:
            # evict the oldest id; its ring slot takes the new one
            self._dup_delete(self._dup_ring[self._dup_head])
            self._dup_ring[self._dup_head] = cl_ord_id
            self._dup_head += 1
            if self._dup_head == self.dup_window:
                self._dup_head = 0
        else:
            idx = self._dup_head + self._dup_count
            if idx >= self.dup_window:
                idx -= self.dup_window
            self._dup_ring[idx] = cl_ord_id
            self._dup_count += 1
        cdef uint64_t i = fib_home(cl_ord_id, self._dup_shift)
        while self._dup_table[i] != 0:
            i = (i + 1) & self._dup_mask
        self._dup_table[i] = cl_ord_id

    cdef void _dup_delete(self, uint64_t cl_ord_id) noexcept nogil:
        # Linear probing deletion by backward shift (no tombstones).
        cdef uint64_t mask = self._dup_mask
        cdef uint64_t i = fib_home(cl_ord_id, self._dup_shift)
        cdef uint64_t j, home
        while self._dup_table[i] != cl_ord_id:
            if self._dup_table[i] == 0:
                return  # absent
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self._dup_table[j] == 0:
                break
            home = fib_home(self._dup_table[j], self._dup_shift)
            # the entry at j may move to the hole at i unless its home lies
            # cyclically in (i, j]
            if ((j - home) & mask) >= ((j - i) & mask):
                self._dup_table[i] = self._dup_table[j]
                i = j
        self._dup_table[i] = 0

    cdef int _raise_update(self, int code, str what) except -1:
        if code == RISK_UPDATE_UNKNOWN_INSTRUMENT:
            raise ValueError(f"{what}: unknown instrument (not registered with add_instrument)")
        if code == RISK_UPDATE_BAD_SIDE:
            raise ValueError(f"{what}: side must be SIDE_BUY (0) or SIDE_SELL (1)")
        if code == RISK_UPDATE_BAD_QTY:
            raise ValueError(f"{what}: quantity out of range (qty > 0, leaves_qty >= 0)")
        if code == RISK_UPDATE_BAD_PRICE:
            raise ValueError(f"{what}: price must be > 0 ticks"
                             f"{'' if 'fill' in what else ' or NO_PRICE'}")
        if code == RISK_UPDATE_BAD_ID:
            raise ValueError(f"{what}: cl_ord_id 0 is reserved")
        if code == RISK_UPDATE_OVERFLOW:
            raise OverflowError(f"{what}: position or open quantity would leave int64")
        raise ValueError(f"{what}: update failed with code {code}")
