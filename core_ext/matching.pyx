"""The L3 matching book: order by order, price-time priority, one instrument.

The contract (structs, enums, cdef API, the memory layout and why) is
core_ext/matching.pxd. Semantics, shared with the pure-Python twin
tests/reference/matching_ref.py:

* submit(limit or market; DAY, GTC, IOC, FOK). A duplicate live id is rejected
  (MATCH_REJECT_DUPLICATE_ID). A FOK that cannot fill completely right now is
  rejected and the book is untouched (MATCH_REJECT_FOK_NOT_FILLABLE). Otherwise
  the order is ACCEPTED, trades against the opposite side best price first,
  oldest first, always at the resting (maker) price; then the remainder RESTS
  (DAY/GTC limit) or is CANCELED: CANCEL_IOC_REMAINDER for IOC/FOK and for every
  market order whatever its TIF (a market order never rests), CANCEL_SELF_MATCH
  when self-match prevention stopped it.
* replace(order_id, new_order_id, qty, price): qty is the new OPEN (leaves)
  quantity. Same price and qty not larger: the order keeps its place in the queue
  (REPLACE_PRIORITY_KEPT). Otherwise it goes to the back of its (new) level with a
  new priority stamp (REPLACE_PRIORITY_LOST) and, when it crosses, trades first
  like an incoming order (unless match=False). new_order_id 0 keeps the id.
* execute(order_id, qty): an execution reported by a market-data feed against a
  resting order; the order keeps its place; qty above its open qty is rejected.
* add_resting: insertion without matching, for replaying book feeds, which may be
  crossed for an instant; a later matching order still trades best-first.
* expire_day(): cancels every DAY order (CANCEL_EXPIRED), bids best-first then
  asks best-first, oldest first within a level.
* Self-match prevention (per book, fixed at construction, see SelfMatchPolicy):
  owners equal and not OWNER_ANONYMOUS (0). Default SMP_CANCEL_INCOMING: the
  incoming order trades up to the first resting order of its own owner, and its
  remainder is canceled (CANCEL_SELF_MATCH); resting orders are never touched. A
  FOK counts only what it could fill under the policy.

Events: executions (EXEC_DTYPE) and order events (ORDER_EVENT_DTYPE) accumulate
until drain_events() (two new arrays) or drain_into() (a copy into caller-owned
arrays, no allocation: the fast path for a venue that drains after every call);
`seq` is shared by both so they merge into one timeline. The buffers grow as
needed and never shrink: drain them regularly.
Per submit: ACCEPTED, the executions (with any CANCELED of resting orders by
self-match prevention, in the order they happen), then RESTED or CANCELED or
nothing when fully filled (taker_leaves == 0 in the last execution).

Errors at the Python edge (bad side, qty <= 0, unknown ord_type/tif, order id 0,
a limit order without a price, a malformed batch) raise ValueError naming what
was wrong and change nothing; a bad batch row is found before any row is applied.
After a MemoryError the book must be discarded.
"""
cimport cython
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t, INT32_MAX
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memmove
from cpython.long cimport PyLong_CheckExact
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF

from core_ext.common cimport (
    SIDE_BUY, SIDE_SELL, TIF_DAY, TIF_GTC, TIF_IOC, TIF_FOK,
    ORDTYPE_LIMIT, ORDTYPE_MARKET, NO_PRICE, side_is_valid,
)

from collections import namedtuple

import numpy as np

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    PyTypeObject PyArray_Type
    # Declared here because numpy's .pxd leaves it out: it STEALS a reference to descr.
    object _array_new "PyArray_NewFromDescr"(
        PyTypeObject* subtype, cnp.dtype descr, int nd, cnp.npy_intp* dims,
        cnp.npy_intp* strides, void* data, int flags, PyObject* obj)

# ---------------------------------------------------------------------------
# Python-visible constants and dtypes
# ---------------------------------------------------------------------------

_CONSTANTS = {
    "MATCH_OK": MATCH_OK,
    "MATCH_REJECT_DUPLICATE_ID": MATCH_REJECT_DUPLICATE_ID,
    "MATCH_REJECT_UNKNOWN_ORDER": MATCH_REJECT_UNKNOWN_ORDER,
    "MATCH_REJECT_FOK_NOT_FILLABLE": MATCH_REJECT_FOK_NOT_FILLABLE,
    "MATCH_REJECT_EXECUTE_TOO_LARGE": MATCH_REJECT_EXECUTE_TOO_LARGE,
    "CANCEL_USER": CANCEL_USER,
    "CANCEL_IOC_REMAINDER": CANCEL_IOC_REMAINDER,
    "CANCEL_SELF_MATCH": CANCEL_SELF_MATCH,
    "CANCEL_EXPIRED": CANCEL_EXPIRED,
    "REPLACE_PRIORITY_KEPT": REPLACE_PRIORITY_KEPT,
    "REPLACE_PRIORITY_LOST": REPLACE_PRIORITY_LOST,
    "ORDEV_ACCEPTED": ORDEV_ACCEPTED,
    "ORDEV_RESTED": ORDEV_RESTED,
    "ORDEV_CANCELED": ORDEV_CANCELED,
    "ORDEV_REJECTED": ORDEV_REJECTED,
    "ORDEV_REPLACED": ORDEV_REPLACED,
    "SMP_NONE": SMP_NONE,
    "SMP_CANCEL_RESTING": SMP_CANCEL_RESTING,
    "SMP_CANCEL_INCOMING": SMP_CANCEL_INCOMING,
    "SMP_CANCEL_BOTH": SMP_CANCEL_BOTH,
    "OWNER_ANONYMOUS": OWNER_ANONYMOUS,
    "EXEC_FLAG_EXTERNAL": EXEC_FLAG_EXTERNAL,
    "L3_OP_ADD": L3_OP_ADD,
    "L3_OP_ADD_RESTING": L3_OP_ADD_RESTING,
    "L3_OP_CANCEL": L3_OP_CANCEL,
    "L3_OP_REPLACE": L3_OP_REPLACE,
    "L3_OP_REPLACE_RESTING": L3_OP_REPLACE_RESTING,
    "L3_OP_EXECUTE": L3_OP_EXECUTE,
    "SIDE_BUY": SIDE_BUY,
    "SIDE_SELL": SIDE_SELL,
    "TIF_DAY": TIF_DAY,
    "TIF_GTC": TIF_GTC,
    "TIF_IOC": TIF_IOC,
    "TIF_FOK": TIF_FOK,
    "ORDTYPE_LIMIT": ORDTYPE_LIMIT,
    "ORDTYPE_MARKET": ORDTYPE_MARKET,
    "NO_PRICE": NO_PRICE,
}
globals().update(_CONSTANTS)

#: Status names by value, for messages and reports.
STATUS_NAMES = {v: k for k, v in _CONSTANTS.items() if k.startswith("MATCH_")}

#: One execution (ExecEvent).
EXEC_DTYPE = np.dtype([
    ("seq", "u8"), ("maker_order_id", "u8"), ("taker_order_id", "u8"),
    ("maker_owner", "i8"), ("taker_owner", "i8"), ("price", "i8"), ("qty", "i8"),
    ("maker_leaves", "i8"), ("taker_leaves", "i8"),
    ("maker_side", "u1"), ("aggressor_side", "u1"), ("flags", "u1"),
], align=True)

#: One order state change (OrderEvent).
ORDER_EVENT_DTYPE = np.dtype([
    ("seq", "u8"), ("order_id", "u8"), ("new_order_id", "u8"), ("owner", "i8"),
    ("price", "i8"), ("qty", "i8"),
    ("kind", "u1"), ("reason", "u1"), ("side", "u1"), ("ord_type", "u1"), ("tif", "u1"),
], align=True)

#: One batch row (L3Op).
L3_OP_DTYPE = np.dtype([
    ("order_id", "u8"), ("new_order_id", "u8"), ("owner", "i8"), ("price", "i8"),
    ("qty", "i8"), ("op", "u1"), ("side", "u1"), ("ord_type", "u1"), ("tif", "u1"),
], align=True)

#: Top of book after a batch row (TopOfBook).
TOP_DTYPE = np.dtype([
    ("bid_price", "i8"), ("bid_qty", "i8"), ("ask_price", "i8"), ("ask_qty", "i8"),
], align=True)

#: One price level of depth() (best first).
LEVEL_DTYPE = np.dtype([("price", "i8"), ("qty", "i8"), ("orders", "i8")])

#: One resting order of open_orders(): bids best-first, then asks best-first,
#: oldest first within a level.
OPEN_ORDER_DTYPE = np.dtype([
    ("order_id", "u8"), ("owner", "i8"), ("price", "i8"), ("qty", "i8"),
    ("priority", "u8"), ("side", "u1"), ("tif", "u1"),
], align=True)

#: What order() returns for a resting order.
OrderInfo = namedtuple("OrderInfo", "order_id owner side price qty tif priority")


def _check_layouts():
    """The dtypes above must be byte-for-byte the C structs (memcpy relies on it)."""
    cdef ExecEvent e
    cdef OrderEvent o
    cdef L3Op op
    cdef TopOfBook t
    cdef char* b
    b = <char*>&e
    _expect(EXEC_DTYPE, sizeof(ExecEvent), {
        "seq": <char*>&e.seq - b, "maker_order_id": <char*>&e.maker_order_id - b,
        "taker_order_id": <char*>&e.taker_order_id - b,
        "maker_owner": <char*>&e.maker_owner - b, "taker_owner": <char*>&e.taker_owner - b,
        "price": <char*>&e.price - b, "qty": <char*>&e.qty - b,
        "maker_leaves": <char*>&e.maker_leaves - b, "taker_leaves": <char*>&e.taker_leaves - b,
        "maker_side": <char*>&e.maker_side - b, "aggressor_side": <char*>&e.aggressor_side - b,
        "flags": <char*>&e.flags - b})
    b = <char*>&o
    _expect(ORDER_EVENT_DTYPE, sizeof(OrderEvent), {
        "seq": <char*>&o.seq - b, "order_id": <char*>&o.order_id - b,
        "new_order_id": <char*>&o.new_order_id - b, "owner": <char*>&o.owner - b,
        "price": <char*>&o.price - b, "qty": <char*>&o.qty - b, "kind": <char*>&o.kind - b,
        "reason": <char*>&o.reason - b, "side": <char*>&o.side - b,
        "ord_type": <char*>&o.ord_type - b, "tif": <char*>&o.tif - b})
    b = <char*>&op
    _expect(L3_OP_DTYPE, sizeof(L3Op), {
        "order_id": <char*>&op.order_id - b, "new_order_id": <char*>&op.new_order_id - b,
        "owner": <char*>&op.owner - b, "price": <char*>&op.price - b,
        "qty": <char*>&op.qty - b, "op": <char*>&op.op - b, "side": <char*>&op.side - b,
        "ord_type": <char*>&op.ord_type - b, "tif": <char*>&op.tif - b})
    b = <char*>&t
    _expect(TOP_DTYPE, sizeof(TopOfBook), {
        "bid_price": <char*>&t.bid_price - b, "bid_qty": <char*>&t.bid_qty - b,
        "ask_price": <char*>&t.ask_price - b, "ask_qty": <char*>&t.ask_qty - b})


def _expect(dtype, size, offsets):
    if dtype.itemsize != size:
        raise ImportError(f"{dtype} itemsize {dtype.itemsize} != C struct size {size}")
    for name, off in offsets.items():
        if dtype.fields[name][1] != off:
            raise ImportError(f"dtype field {name} at {dtype.fields[name][1]}, C struct at {off}")


_check_layouts()

cdef cnp.dtype _EXEC_DESCR = EXEC_DTYPE
cdef cnp.dtype _OEV_DESCR = ORDER_EVENT_DTYPE
# drain_events() with nothing pending returns these shared, read-only empty arrays.
_EMPTY_EXECS = np.empty(0, dtype=EXEC_DTYPE)
_EMPTY_EXECS.flags.writeable = False
_EMPTY_ORDER_EVENTS = np.empty(0, dtype=ORDER_EVENT_DTYPE)
_EMPTY_ORDER_EVENTS.flags.writeable = False


cdef object _new_array(cnp.dtype descr, Py_ssize_t n):
    # np.empty(n, descr) without the Python-level call (a third of the cost).
    cdef cnp.npy_intp dim = n
    Py_INCREF(descr)
    return _array_new(&PyArray_Type, descr, 1, &dim, NULL, NULL, 0, NULL)


cdef Py_ssize_t _out_room(object out, cnp.dtype descr, str what) except -1:
    # Length of a caller-owned output array, after checking it (C-API: no attribute
    # objects are created, this runs once per drain_into()).
    cdef cnp.ndarray arr
    cdef cnp.dtype d
    if out is None:
        return 0
    if cnp.PyArray_Check(out):
        arr = <cnp.ndarray>out
        d = arr.descr
        if ((d is descr or d == descr) and cnp.PyArray_NDIM(arr) == 1
                and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISWRITEABLE(arr)):
            return cnp.PyArray_DIM(arr, 0)
    raise ValueError(f"{what} must be a writeable contiguous 1-d array of the "
                     f"{'EXEC_DTYPE' if what == 'execs' else 'ORDER_EVENT_DTYPE'} dtype, or None")


# ---------------------------------------------------------------------------
# The id -> node hash map (open addressing, linear probing, backward shift)
# ---------------------------------------------------------------------------

cdef inline uint64_t _hash(uint64_t x) noexcept nogil:
    # murmur3 fmix64: exchange ids are often sequential, this spreads them.
    x ^= x >> 33
    x *= <uint64_t>0xff51afd7ed558ccdULL
    x ^= x >> 33
    x *= <uint64_t>0xc4ceb9fe1a85ec53ULL
    x ^= x >> 33
    return x


cdef int idmap_init(IdMap* m, Py_ssize_t min_capacity) except -1:
    cdef uint64_t cap = 16
    while cap < <uint64_t>min_capacity * 2:
        cap <<= 1
    m.slots = <IdSlot*>calloc(cap, sizeof(IdSlot))
    if m.slots == NULL:
        raise MemoryError("matching book: cannot allocate the order id map")
    m.mask = cap - 1
    m.count = 0
    return 0


cdef void idmap_free(IdMap* m) noexcept nogil:
    free(m.slots)
    m.slots = NULL
    m.mask = 0
    m.count = 0


cdef int32_t idmap_get(const IdMap* m, uint64_t key) noexcept nogil:
    cdef uint64_t i = _hash(key) & m.mask
    cdef uint64_t k
    while True:
        k = m.slots[i].key
        if k == key:
            return m.slots[i].node
        if k == 0:
            return -1
        i = (i + 1) & m.mask


cdef inline void _idmap_place(IdSlot* slots, uint64_t mask, uint64_t key,
                              int32_t node) noexcept nogil:
    cdef uint64_t i = _hash(key) & mask
    while slots[i].key != 0:
        i = (i + 1) & mask
    slots[i].key = key
    slots[i].node = node


cdef int idmap_put(IdMap* m, uint64_t key, int32_t node) except -1:
    cdef uint64_t cap = m.mask + 1
    cdef uint64_t new_cap, i
    cdef IdSlot* fresh
    if <uint64_t>(m.count + 1) * 2 > cap:
        new_cap = cap * 2
        fresh = <IdSlot*>calloc(new_cap, sizeof(IdSlot))
        if fresh == NULL:
            raise MemoryError("matching book: cannot grow the order id map")
        for i in range(cap):
            if m.slots[i].key != 0:
                _idmap_place(fresh, new_cap - 1, m.slots[i].key, m.slots[i].node)
        free(m.slots)
        m.slots = fresh
        m.mask = new_cap - 1
    _idmap_place(m.slots, m.mask, key, node)
    m.count += 1
    return 0


cdef int32_t idmap_pop(IdMap* m, uint64_t key) noexcept nogil:
    cdef uint64_t mask = m.mask
    cdef uint64_t i = _hash(key) & mask
    cdef uint64_t j, home
    cdef uint64_t k
    cdef int32_t node
    while True:
        k = m.slots[i].key
        if k == key:
            break
        if k == 0:
            return -1
        i = (i + 1) & mask
    node = m.slots[i].node
    # Backward-shift deletion: pull later members of the probe run into the hole
    # when their home slot is not cyclically within (hole, j].
    j = i
    while True:
        j = (j + 1) & mask
        k = m.slots[j].key
        if k == 0:
            break
        home = _hash(k) & mask
        if ((j - home) & mask) >= ((j - i) & mask):
            m.slots[i] = m.slots[j]
            i = j
    m.slots[i].key = 0
    m.count -= 1
    return node


# ---------------------------------------------------------------------------
# Validation at the Python edge (returns NULL when fine, else what is wrong)
# ---------------------------------------------------------------------------

cdef inline bint _tif_valid(int tif) noexcept nogil:
    return tif == TIF_DAY or tif == TIF_GTC or tif == TIF_IOC or tif == TIF_FOK


cdef const char* _check_op(const L3Op* op) noexcept nogil:
    cdef int kind = op.op
    if kind > L3_OP_EXECUTE:
        return "unknown op (expected an L3_OP_* value 0..5)"
    if op.order_id == 0:
        return "order_id 0 is reserved"
    if kind == L3_OP_CANCEL:
        return NULL
    if op.qty <= 0:
        return "qty must be > 0 lots"
    if kind == L3_OP_EXECUTE:
        return NULL
    if kind == L3_OP_REPLACE or kind == L3_OP_REPLACE_RESTING:
        if op.price == NO_PRICE:
            return "a replace needs a price (NO_PRICE given)"
        return NULL
    if not side_is_valid(op.side):
        return "side must be SIDE_BUY (0) or SIDE_SELL (1)"
    if not _tif_valid(op.tif):
        return "tif must be TIF_DAY, TIF_GTC, TIF_IOC or TIF_FOK (0..3)"
    if kind == L3_OP_ADD_RESTING:
        if op.tif != TIF_DAY and op.tif != TIF_GTC:
            return "an add_resting row must be TIF_DAY or TIF_GTC"
        if op.price == NO_PRICE:
            return "an add_resting row needs a price"
        return NULL
    if op.ord_type != ORDTYPE_LIMIT and op.ord_type != ORDTYPE_MARKET:
        return "ord_type must be ORDTYPE_LIMIT (0) or ORDTYPE_MARKET (1)"
    if op.ord_type == ORDTYPE_LIMIT and op.price == NO_PRICE:
        return "a limit order needs a price"
    return NULL


cdef object _as_int(object value, str what):
    # Python ints pass as they are; numpy integers through __index__; floats, str... fail.
    if PyLong_CheckExact(value):
        return value
    try:
        return PyNumber_Index(value)
    except TypeError:
        raise ValueError(f"{what} must be an int, got {value!r}") from None


cdef uint64_t _id_arg(object value, str what) except? 0:
    cdef uint64_t x
    try:
        x = _as_int(value, what)
    except OverflowError:
        x = 0
    if x == 0:
        raise ValueError(f"{what} must be in 1..2**64-1 (0 is reserved), got {value!r}")
    return x


cdef int64_t _i64_arg(object value, str what) except? -1:
    try:
        return _as_int(value, what)
    except OverflowError:
        raise ValueError(f"{what} out of the int64 range: {value!r}") from None


cdef int64_t _qty_arg(object value) except? -1:
    cdef int64_t qty = _i64_arg(value, "qty")
    if qty <= 0:
        raise ValueError(f"qty must be > 0 lots, got {qty}")
    return qty


cdef int64_t _price_arg(object value, str what) except? -1:
    if value is None:
        raise ValueError(f"{what}: a price is required")
    cdef int64_t price = _i64_arg(value, "price")
    if price == NO_PRICE:
        raise ValueError(f"{what}: a price is required (NO_PRICE given)")
    return price


cdef int _small_arg(object value, str what, int hi, str allowed) except -1:
    # An enum argument: an int in 0..hi, else ValueError naming `what` and `allowed`.
    cdef long x = -1
    try:
        x = _as_int(value, what)
    except (OverflowError, ValueError):
        pass
    if x < 0 or x > hi:
        raise ValueError(f"{what} must be {allowed}, got {value!r}")
    return <int>x


cdef int _side_arg(object side) except -1:
    return _small_arg(side, "side", 1, "SIDE_BUY (0) or SIDE_SELL (1)")


# ---------------------------------------------------------------------------
# The book
# ---------------------------------------------------------------------------

@cython.final
cdef class MatchingBook:
    """Order-by-order book of one instrument with price-time priority matching.

    MatchingBook(symbol, self_match_policy=SMP_CANCEL_INCOMING, capacity=1024,
    emit_order_events=True). `capacity` sizes the order slab and the id map at
    start (both grow by doubling as needed).
    """

    def __cinit__(self, symbol, int self_match_policy=SMP_CANCEL_INCOMING,
                  Py_ssize_t capacity=1024, bint emit_order_events=True):
        cdef int s
        if self_match_policy < SMP_NONE or self_match_policy > SMP_CANCEL_BOTH:
            raise ValueError("self_match_policy must be SMP_NONE, SMP_CANCEL_RESTING, "
                             "SMP_CANCEL_INCOMING or SMP_CANCEL_BOTH (0..3), "
                             f"got {self_match_policy}")
        if capacity < 1 or capacity > INT32_MAX // 4:
            raise ValueError(f"capacity must be in 1..{INT32_MAX // 4}, got {capacity}")
        self.symbol = symbol
        self.self_match_policy = self_match_policy
        self.emit_order_events = emit_order_events
        self._node_cap = capacity
        self._nodes = <OrderNode*>malloc(capacity * sizeof(OrderNode))
        self._node_free = -1
        self._level_cap = 64
        self._levels = <Level*>malloc(self._level_cap * sizeof(Level))
        self._level_free = -1
        for s in range(2):
            self._lv_cap[s] = 64
            self._lv_key[s] = <int64_t*>malloc(64 * sizeof(int64_t))
            self._lv_index[s] = <int32_t*>malloc(64 * sizeof(int32_t))
        self._exec_cap = 256
        self._execs = <ExecEvent*>malloc(self._exec_cap * sizeof(ExecEvent))
        self._oev_cap = 256
        self._oevs = <OrderEvent*>malloc(self._oev_cap * sizeof(OrderEvent))
        if (self._nodes == NULL or self._levels == NULL or self._execs == NULL
                or self._oevs == NULL or self._lv_key[0] == NULL or self._lv_key[1] == NULL
                or self._lv_index[0] == NULL or self._lv_index[1] == NULL):
            raise MemoryError("matching book: cannot allocate")
        idmap_init(&self._ids, capacity)

    def __dealloc__(self):
        cdef int s
        free(self._nodes)
        free(self._levels)
        for s in range(2):
            free(self._lv_key[s])
            free(self._lv_index[s])
        free(self._execs)
        free(self._oevs)
        idmap_free(&self._ids)

    # ------------------------------------------------------------------ memory

    cdef int _grow_nodes(self) except -1:
        cdef Py_ssize_t cap = self._node_cap * 2
        cdef OrderNode* p
        if cap > INT32_MAX:
            raise MemoryError("matching book: more than 2**31-1 orders")
        p = <OrderNode*>realloc(self._nodes, cap * sizeof(OrderNode))
        if p == NULL:
            raise MemoryError("matching book: cannot grow the order slab")
        self._nodes = p
        self._node_cap = cap
        return 0

    cdef int32_t _alloc_node(self) except -1:
        cdef int32_t n = self._node_free
        if n != -1:
            self._node_free = self._nodes[n].next
            return n
        if self._node_used == self._node_cap:
            self._grow_nodes()
        n = <int32_t>self._node_used
        self._node_used += 1
        return n

    cdef void _free_node(self, int32_t n) noexcept nogil:
        self._nodes[n].order_id = 0
        self._nodes[n].next = self._node_free
        self._node_free = n

    cdef int32_t _alloc_level(self) except -1:
        cdef int32_t li = self._level_free
        cdef Py_ssize_t cap
        cdef Level* p
        if li != -1:
            self._level_free = self._levels[li].head
            return li
        if self._level_used == self._level_cap:
            cap = self._level_cap * 2
            if cap > INT32_MAX:
                raise MemoryError("matching book: more than 2**31-1 price levels")
            p = <Level*>realloc(self._levels, cap * sizeof(Level))
            if p == NULL:
                raise MemoryError("matching book: cannot grow the level pool")
            self._levels = p
            self._level_cap = cap
        li = <int32_t>self._level_used
        self._level_used += 1
        return li

    cdef int _grow_side(self, int side) except -1:
        cdef Py_ssize_t cap = self._lv_cap[side] * 2
        cdef int64_t* k = <int64_t*>realloc(self._lv_key[side], cap * sizeof(int64_t))
        if k == NULL:
            raise MemoryError("matching book: cannot grow a side")
        self._lv_key[side] = k
        cdef int32_t* ix = <int32_t*>realloc(self._lv_index[side], cap * sizeof(int32_t))
        if ix == NULL:
            raise MemoryError("matching book: cannot grow a side")
        self._lv_index[side] = ix
        self._lv_cap[side] = cap
        return 0

    # ------------------------------------------------------------------ levels

    cdef Py_ssize_t _search(self, int side, int64_t key, bint* found) noexcept nogil:
        cdef const int64_t* keys = self._lv_key[side]
        cdef Py_ssize_t n = self._lv_count[side]
        cdef Py_ssize_t lo = 0, hi, mid
        # The top of book (the end) first: most inserts and removals land there.
        if n == 0 or key > keys[n - 1]:
            found[0] = False
            return n
        if key == keys[n - 1]:
            found[0] = True
            return n - 1
        hi = n - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if keys[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        found[0] = keys[lo] == key
        return lo

    cdef int _link(self, int32_t n) except -1:
        cdef int side = self._nodes[n].side
        cdef int64_t price = self._nodes[n].price
        cdef int64_t key = price if side == SIDE_BUY else ~price
        cdef bint found
        cdef Py_ssize_t pos = self._search(side, key, &found)
        cdef Py_ssize_t count
        cdef int32_t li
        cdef Level* lv
        cdef OrderNode* node
        if found:
            li = self._lv_index[side][pos]
        else:
            count = self._lv_count[side]
            if count == self._lv_cap[side]:
                self._grow_side(side)
            li = self._alloc_level()
            lv = &self._levels[li]
            lv.price = price
            lv.total = 0
            lv.head = -1
            lv.tail = -1
            lv.count = 0
            if pos < count:
                memmove(&self._lv_key[side][pos + 1], &self._lv_key[side][pos],
                        (count - pos) * sizeof(int64_t))
                memmove(&self._lv_index[side][pos + 1], &self._lv_index[side][pos],
                        (count - pos) * sizeof(int32_t))
            self._lv_key[side][pos] = key
            self._lv_index[side][pos] = li
            self._lv_count[side] = count + 1
        lv = &self._levels[li]
        node = &self._nodes[n]
        node.level = li
        node.prev = lv.tail
        node.next = -1
        if lv.tail != -1:
            self._nodes[lv.tail].next = n
        else:
            lv.head = n
        lv.tail = n
        lv.count += 1
        lv.total += node.qty
        return 0

    cdef void _drop_level(self, int side, int32_t li) noexcept nogil:
        cdef int64_t price = self._levels[li].price
        cdef int64_t key = price if side == SIDE_BUY else ~price
        cdef Py_ssize_t count = self._lv_count[side]
        cdef Py_ssize_t pos
        cdef bint found
        if count > 0 and self._lv_index[side][count - 1] == li:
            pos = count - 1
        else:
            pos = self._search(side, key, &found)
            if count - pos - 1 > 0:
                memmove(&self._lv_key[side][pos], &self._lv_key[side][pos + 1],
                        (count - pos - 1) * sizeof(int64_t))
                memmove(&self._lv_index[side][pos], &self._lv_index[side][pos + 1],
                        (count - pos - 1) * sizeof(int32_t))
        self._lv_count[side] = count - 1
        self._levels[li].head = self._level_free
        self._level_free = li

    cdef void _unlink(self, int32_t n) noexcept nogil:
        cdef OrderNode* node = &self._nodes[n]
        cdef Level* lv = &self._levels[node.level]
        if node.prev != -1:
            self._nodes[node.prev].next = node.next
        else:
            lv.head = node.next
        if node.next != -1:
            self._nodes[node.next].prev = node.prev
        else:
            lv.tail = node.prev
        lv.count -= 1
        lv.total -= node.qty
        if lv.count == 0:
            self._drop_level(node.side, node.level)

    cdef void _remove(self, int32_t n) noexcept nogil:
        self._unlink(n)
        idmap_pop(&self._ids, self._nodes[n].order_id)
        self._free_node(n)
        self._order_count -= 1

    # ------------------------------------------------------------------ events

    cdef int _emit_exec(self, OrderNode* maker, uint64_t taker_id, int64_t taker_owner,
                        int64_t qty, int64_t taker_leaves, uint8_t flags) except -1:
        cdef ExecEvent* e
        cdef ExecEvent* p
        if self._exec_count == self._exec_cap:
            p = <ExecEvent*>realloc(self._execs, self._exec_cap * 2 * sizeof(ExecEvent))
            if p == NULL:
                raise MemoryError("matching book: cannot grow the execution buffer")
            self._execs = p
            self._exec_cap *= 2
        e = &self._execs[self._exec_count]
        self._exec_count += 1
        e.seq = self._seq
        self._seq += 1
        e.maker_order_id = maker.order_id
        e.taker_order_id = taker_id
        e.maker_owner = maker.owner
        e.taker_owner = taker_owner
        e.price = maker.price
        e.qty = qty
        e.maker_leaves = maker.qty
        e.taker_leaves = taker_leaves
        e.maker_side = maker.side
        e.aggressor_side = 1 - maker.side
        e.flags = flags
        return 0

    cdef int _emit_order(self, int kind, int reason, uint64_t order_id, uint64_t new_order_id,
                         int64_t owner, int side, int64_t price, int64_t qty,
                         int ord_type, int tif) except -1:
        cdef OrderEvent* e
        cdef OrderEvent* p
        if not self.emit_order_events:
            return 0
        if self._oev_count == self._oev_cap:
            p = <OrderEvent*>realloc(self._oevs, self._oev_cap * 2 * sizeof(OrderEvent))
            if p == NULL:
                raise MemoryError("matching book: cannot grow the order event buffer")
            self._oevs = p
            self._oev_cap *= 2
        e = &self._oevs[self._oev_count]
        self._oev_count += 1
        e.seq = self._seq
        self._seq += 1
        e.order_id = order_id
        e.new_order_id = new_order_id
        e.owner = owner
        e.price = price
        e.qty = qty
        e.kind = <uint8_t>kind
        e.reason = <uint8_t>reason
        e.side = <uint8_t>side
        e.ord_type = <uint8_t>ord_type
        e.tif = <uint8_t>tif
        return 0

    cdef int _reject(self, int status, uint64_t order_id, uint64_t new_order_id, int64_t owner,
                     int side, int64_t price, int64_t qty, int ord_type, int tif) except -1:
        self._emit_order(ORDEV_REJECTED, status, order_id, new_order_id, owner, side, price,
                         qty, ord_type, tif)
        return status

    # ---------------------------------------------------------------- matching

    cdef int64_t _fillable(self, int side, int64_t price, bint market, int64_t owner,
                           int64_t need) noexcept nogil:
        cdef int opp = 1 - side
        cdef int policy = self.self_match_policy
        cdef bint smp = policy != SMP_NONE and owner != OWNER_ANONYMOUS
        cdef Py_ssize_t i = self._lv_count[opp] - 1
        cdef int64_t total = 0
        cdef const Level* lv
        cdef const OrderNode* node
        cdef int32_t n
        while i >= 0:
            lv = &self._levels[self._lv_index[opp][i]]
            if not market:
                if side == SIDE_BUY and lv.price > price:
                    break
                if side == SIDE_SELL and lv.price < price:
                    break
            if not smp:
                total += lv.total
            else:
                n = lv.head
                while n != -1:
                    node = &self._nodes[n]
                    if node.owner == owner:
                        if policy != SMP_CANCEL_RESTING:
                            return total        # matching stops at an own order
                    else:
                        total += node.qty
                        if total >= need:
                            return total
                    n = node.next
            if total >= need:
                return total
            i -= 1
        return total

    cdef int64_t _match(self, uint64_t taker_id, int64_t owner, int side, int64_t qty,
                        int64_t price, bint market, bint* smp_stop) except -1:
        cdef int opp = 1 - side
        cdef int policy = self.self_match_policy
        cdef bint smp = policy != SMP_NONE and owner != OWNER_ANONYMOUS
        cdef Level* lv
        cdef OrderNode* node
        cdef int32_t n, nxt
        cdef int64_t fill
        smp_stop[0] = False
        while qty > 0 and self._lv_count[opp] > 0:
            lv = &self._levels[self._lv_index[opp][self._lv_count[opp] - 1]]
            if not market:
                if side == SIDE_BUY and lv.price > price:
                    break
                if side == SIDE_SELL and lv.price < price:
                    break
            n = lv.head
            while n != -1 and qty > 0:
                node = &self._nodes[n]
                nxt = node.next
                if smp and node.owner == owner:
                    if policy == SMP_CANCEL_INCOMING:
                        smp_stop[0] = True
                        return qty
                    self._emit_order(ORDEV_CANCELED, CANCEL_SELF_MATCH, node.order_id, 0,
                                     node.owner, node.side, node.price, node.qty,
                                     ORDTYPE_LIMIT, node.tif)
                    self._remove(n)
                    if policy == SMP_CANCEL_BOTH:
                        smp_stop[0] = True
                        return qty
                else:
                    fill = qty if qty < node.qty else node.qty
                    qty -= fill
                    node.qty -= fill
                    lv.total -= fill
                    self._emit_exec(node, taker_id, owner, fill, qty, 0)
                    if node.qty == 0:
                        self._remove(n)
                n = nxt                 # -1 after the last node: its level is gone
        return qty

    cdef int _rest(self, int32_t n) except -1:
        self._nodes[n].priority = self._priority
        self._priority += 1
        self._link(n)
        return 0

    # ---------------------------------------------------------------- cdef API

    cdef int c_submit(self, uint64_t order_id, int64_t owner, int side, int64_t qty,
                      int64_t price, int ord_type, int tif) except -1:
        cdef bint market = ord_type == ORDTYPE_MARKET
        cdef int64_t px = NO_PRICE if market else price
        cdef bint smp_stop
        cdef int64_t rem
        cdef int32_t n
        cdef OrderNode* node
        self.op_count += 1
        if idmap_get(&self._ids, order_id) != -1:
            return self._reject(MATCH_REJECT_DUPLICATE_ID, order_id, 0, owner, side, px, qty,
                                ord_type, tif)
        if tif == TIF_FOK and self._fillable(side, px, market, owner, qty) < qty:
            return self._reject(MATCH_REJECT_FOK_NOT_FILLABLE, order_id, 0, owner, side, px,
                                qty, ord_type, tif)
        self._emit_order(ORDEV_ACCEPTED, 0, order_id, 0, owner, side, px, qty, ord_type, tif)
        rem = self._match(order_id, owner, side, qty, px, market, &smp_stop)
        if rem == 0:
            return MATCH_OK
        if smp_stop:
            self._emit_order(ORDEV_CANCELED, CANCEL_SELF_MATCH, order_id, 0, owner, side, px,
                             rem, ord_type, tif)
        elif market or tif == TIF_IOC or tif == TIF_FOK:
            self._emit_order(ORDEV_CANCELED, CANCEL_IOC_REMAINDER, order_id, 0, owner, side,
                             px, rem, ord_type, tif)
        else:
            n = self._alloc_node()
            node = &self._nodes[n]
            node.order_id = order_id
            node.owner = owner
            node.price = px
            node.qty = rem
            node.side = <uint8_t>side
            node.tif = <uint8_t>tif
            idmap_put(&self._ids, order_id, n)
            self._rest(n)
            self._order_count += 1
            self._emit_order(ORDEV_RESTED, 0, order_id, 0, owner, side, px, rem,
                             ORDTYPE_LIMIT, tif)
        return MATCH_OK

    cdef int c_add_resting(self, uint64_t order_id, int64_t owner, int side, int64_t qty,
                           int64_t price, int tif) except -1:
        cdef int32_t n
        cdef OrderNode* node
        self.op_count += 1
        if idmap_get(&self._ids, order_id) != -1:
            return self._reject(MATCH_REJECT_DUPLICATE_ID, order_id, 0, owner, side, price, qty,
                                ORDTYPE_LIMIT, tif)
        n = self._alloc_node()
        node = &self._nodes[n]
        node.order_id = order_id
        node.owner = owner
        node.price = price
        node.qty = qty
        node.side = <uint8_t>side
        node.tif = <uint8_t>tif
        idmap_put(&self._ids, order_id, n)
        self._rest(n)
        self._order_count += 1
        self._emit_order(ORDEV_RESTED, 0, order_id, 0, owner, side, price, qty,
                         ORDTYPE_LIMIT, tif)
        return MATCH_OK

    cdef int c_cancel(self, uint64_t order_id) except -1:
        cdef int32_t n = idmap_get(&self._ids, order_id)
        cdef OrderNode* node
        self.op_count += 1
        if n == -1:
            return self._reject(MATCH_REJECT_UNKNOWN_ORDER, order_id, 0, 0, 0, NO_PRICE, 0,
                                ORDTYPE_LIMIT, 0)
        node = &self._nodes[n]
        self._emit_order(ORDEV_CANCELED, CANCEL_USER, order_id, 0, node.owner, node.side,
                         node.price, node.qty, ORDTYPE_LIMIT, node.tif)
        self._remove(n)
        return MATCH_OK

    cdef int c_replace(self, uint64_t order_id, uint64_t new_order_id, int64_t qty,
                       int64_t price, bint match) except -1:
        cdef int32_t n = idmap_get(&self._ids, order_id)
        cdef OrderNode* node
        cdef bint keep, smp_stop
        cdef int64_t rem
        self.op_count += 1
        if new_order_id == 0:
            new_order_id = order_id
        if n == -1:
            return self._reject(MATCH_REJECT_UNKNOWN_ORDER, order_id, new_order_id, 0, 0, price,
                                qty, ORDTYPE_LIMIT, 0)
        node = &self._nodes[n]
        if new_order_id != order_id and idmap_get(&self._ids, new_order_id) != -1:
            return self._reject(MATCH_REJECT_DUPLICATE_ID, order_id, new_order_id, node.owner,
                                node.side, price, qty, ORDTYPE_LIMIT, node.tif)
        keep = price == node.price and qty <= node.qty
        self._emit_order(ORDEV_REPLACED,
                         REPLACE_PRIORITY_KEPT if keep else REPLACE_PRIORITY_LOST,
                         order_id, new_order_id, node.owner, node.side, price, qty,
                         ORDTYPE_LIMIT, node.tif)
        if new_order_id != order_id:
            idmap_pop(&self._ids, order_id)
            idmap_put(&self._ids, new_order_id, n)   # never grows: one key out, one in
            node.order_id = new_order_id
        if keep:
            self._levels[node.level].total += qty - node.qty
            node.qty = qty
            return MATCH_OK
        self._unlink(n)
        node.price = price
        node.qty = qty
        if match:
            rem = self._match(new_order_id, node.owner, node.side, qty, price, False, &smp_stop)
            node = &self._nodes[n]
            if rem == 0 or smp_stop:
                if rem != 0:
                    self._emit_order(ORDEV_CANCELED, CANCEL_SELF_MATCH, new_order_id, 0,
                                     node.owner, node.side, price, rem, ORDTYPE_LIMIT,
                                     node.tif)
                idmap_pop(&self._ids, new_order_id)
                self._free_node(n)
                self._order_count -= 1
                return MATCH_OK
            node.qty = rem
        self._rest(n)
        node = &self._nodes[n]
        self._emit_order(ORDEV_RESTED, 0, new_order_id, 0, node.owner, node.side, price,
                         node.qty, ORDTYPE_LIMIT, node.tif)
        return MATCH_OK

    cdef int c_execute(self, uint64_t order_id, int64_t qty) except -1:
        cdef int32_t n = idmap_get(&self._ids, order_id)
        cdef OrderNode* node
        self.op_count += 1
        if n == -1:
            return self._reject(MATCH_REJECT_UNKNOWN_ORDER, order_id, 0, 0, 0, NO_PRICE, qty,
                                ORDTYPE_LIMIT, 0)
        node = &self._nodes[n]
        if qty > node.qty:
            return self._reject(MATCH_REJECT_EXECUTE_TOO_LARGE, order_id, 0, node.owner,
                                node.side, node.price, qty, ORDTYPE_LIMIT, node.tif)
        node.qty -= qty
        self._levels[node.level].total -= qty
        self._emit_exec(node, 0, OWNER_ANONYMOUS, qty, 0, EXEC_FLAG_EXTERNAL)
        if node.qty == 0:
            self._remove(n)
        return MATCH_OK

    cdef Py_ssize_t c_expire_day(self) except -1:
        cdef Py_ssize_t canceled = 0
        cdef Py_ssize_t i
        cdef int side
        cdef int32_t n, nxt
        cdef Level* lv
        cdef OrderNode* node
        self.op_count += 1
        for side in range(2):
            # Best first = from the end; dropping level i only moves entries above i,
            # which are done already.
            i = self._lv_count[side] - 1
            while i >= 0:
                lv = &self._levels[self._lv_index[side][i]]
                n = lv.head
                while n != -1:
                    node = &self._nodes[n]
                    nxt = node.next
                    if node.tif == TIF_DAY:
                        self._emit_order(ORDEV_CANCELED, CANCEL_EXPIRED, node.order_id, 0,
                                         node.owner, node.side, node.price, node.qty,
                                         ORDTYPE_LIMIT, TIF_DAY)
                        self._remove(n)
                        canceled += 1
                    n = nxt             # -1 after the last node: the level may be gone
                i -= 1
        return canceled

    cdef int64_t best_price(self, int side) noexcept nogil:
        cdef Py_ssize_t c = self._lv_count[side]
        if c == 0:
            return NO_PRICE
        return self._levels[self._lv_index[side][c - 1]].price

    cdef int64_t best_qty(self, int side) noexcept nogil:
        cdef Py_ssize_t c = self._lv_count[side]
        if c == 0:
            return 0
        return self._levels[self._lv_index[side][c - 1]].total

    # -------------------------------------------------------------- Python API

    def submit(self, order_id, owner, side, qty, price=None, ord_type=ORDTYPE_LIMIT,
               tif=TIF_DAY):
        """Submit an order; returns a MatchStatus (MATCH_OK or a MATCH_REJECT_*).

        `price` (ticks) is required for a limit order and ignored for a market one.
        Fills, resting and cancellation are reported as events (drain_events()).
        """
        cdef uint64_t oid = _id_arg(order_id, "order_id")
        cdef int64_t own = _i64_arg(owner, "owner")
        cdef int s = _side_arg(side)
        cdef int64_t q = _qty_arg(qty)
        cdef int64_t px = NO_PRICE
        cdef int ot = _small_arg(ord_type, "ord_type", 1,
                                 "ORDTYPE_LIMIT (0) or ORDTYPE_MARKET (1)")
        cdef int tf = _small_arg(tif, "tif", 3, "TIF_DAY, TIF_GTC, TIF_IOC or TIF_FOK (0..3)")
        if ot == ORDTYPE_LIMIT:
            px = _price_arg(price, "limit order")
        return self.c_submit(oid, own, s, q, px, ot, tf)

    def add_resting(self, order_id, owner, side, qty, price, tif=TIF_GTC):
        """Insert a limit order without matching (replay of a book feed); a MatchStatus."""
        cdef uint64_t oid = _id_arg(order_id, "order_id")
        cdef int64_t own = _i64_arg(owner, "owner")
        cdef int s = _side_arg(side)
        cdef int64_t q = _qty_arg(qty)
        cdef int64_t px = _price_arg(price, "add_resting")
        cdef int tf = _small_arg(tif, "tif", 1, "TIF_DAY (0) or TIF_GTC (1) for a resting order")
        return self.c_add_resting(oid, own, s, q, px, tf)

    def cancel(self, order_id):
        """Cancel a resting order; MATCH_OK or MATCH_REJECT_UNKNOWN_ORDER."""
        return self.c_cancel(_id_arg(order_id, "order_id"))

    def replace(self, order_id, new_order_id, qty, price, match=True):
        """Replace a resting order: new open qty and price, optionally a new id.

        new_order_id None or 0 keeps the id. Keeps time priority when the price is
        unchanged and qty does not grow; otherwise re-queues (and trades first if
        it crosses, unless match=False). Returns a MatchStatus.
        """
        cdef uint64_t oid = _id_arg(order_id, "order_id")
        cdef uint64_t nid = 0
        if new_order_id is not None and new_order_id != 0:
            nid = _id_arg(new_order_id, "new_order_id")
        cdef int64_t q = _qty_arg(qty)
        cdef int64_t px = _price_arg(price, "replace")
        return self.c_replace(oid, nid, q, px, bool(match))

    def execute(self, order_id, qty):
        """External execution of `qty` lots of a resting order (feed-reported trade)."""
        cdef uint64_t oid = _id_arg(order_id, "order_id")
        cdef int64_t q = _qty_arg(qty)
        return self.c_execute(oid, q)

    def expire_day(self):
        """Cancel every DAY order (end of session); returns how many."""
        return self.c_expire_day()

    def apply_ops(self, ops, statuses=None, tops=None):
        """Apply a NumPy array of L3_OP_DTYPE rows in one call.

        Every row is checked first: a malformed row raises ValueError naming its
        index and nothing is applied. `statuses` (uint8, len >= len(ops)) receives
        each row's MatchStatus; `tops` (TOP_DTYPE, len >= len(ops)) the top of book
        after each row. Returns the number of rows whose status is not MATCH_OK.
        """
        cdef cnp.ndarray arr
        cdef cnp.ndarray st_arr
        cdef cnp.ndarray top_arr
        cdef const L3Op* rows
        cdef const L3Op* op
        cdef uint8_t* st = NULL
        cdef TopOfBook* tp = NULL
        cdef Py_ssize_t n, i
        cdef Py_ssize_t rejected = 0
        cdef int status
        cdef const char* problem
        if not isinstance(ops, np.ndarray) or ops.dtype != L3_OP_DTYPE:
            raise ValueError("ops must be a NumPy array of L3_OP_DTYPE")
        arr = np.ascontiguousarray(ops).reshape(-1)
        n = arr.shape[0]
        rows = <const L3Op*>cnp.PyArray_DATA(arr)
        if statuses is not None:
            if (not isinstance(statuses, np.ndarray) or statuses.dtype != np.uint8
                    or statuses.ndim != 1 or not statuses.flags.c_contiguous
                    or not statuses.flags.writeable or statuses.shape[0] < n):
                raise ValueError(f"statuses must be a writeable contiguous uint8 array of "
                                 f"length >= {n}")
            st_arr = statuses
            st = <uint8_t*>cnp.PyArray_DATA(st_arr)
        if tops is not None:
            if (not isinstance(tops, np.ndarray) or tops.dtype != TOP_DTYPE
                    or tops.ndim != 1 or not tops.flags.c_contiguous
                    or not tops.flags.writeable or tops.shape[0] < n):
                raise ValueError(f"tops must be a writeable contiguous TOP_DTYPE array of "
                                 f"length >= {n}")
            top_arr = tops
            tp = <TopOfBook*>cnp.PyArray_DATA(top_arr)
        for i in range(n):
            problem = _check_op(&rows[i])
            if problem != NULL:
                raise ValueError(f"ops[{i}] (op {rows[i].op}, order_id {rows[i].order_id}): "
                                 f"{problem.decode('ascii')}")
        for i in range(n):
            op = &rows[i]
            if op.op == L3_OP_ADD:
                status = self.c_submit(op.order_id, op.owner, op.side, op.qty, op.price,
                                       op.ord_type, op.tif)
            elif op.op == L3_OP_ADD_RESTING:
                status = self.c_add_resting(op.order_id, op.owner, op.side, op.qty, op.price,
                                            op.tif)
            elif op.op == L3_OP_CANCEL:
                status = self.c_cancel(op.order_id)
            elif op.op == L3_OP_REPLACE:
                status = self.c_replace(op.order_id, op.new_order_id, op.qty, op.price, True)
            elif op.op == L3_OP_REPLACE_RESTING:
                status = self.c_replace(op.order_id, op.new_order_id, op.qty, op.price, False)
            else:
                status = self.c_execute(op.order_id, op.qty)
            if status != MATCH_OK:
                rejected += 1
            if st != NULL:
                st[i] = <uint8_t>status
            if tp != NULL:
                tp[i].bid_price = self.best_price(SIDE_BUY)
                tp[i].bid_qty = self.best_qty(SIDE_BUY)
                tp[i].ask_price = self.best_price(SIDE_SELL)
                tp[i].ask_qty = self.best_qty(SIDE_SELL)
        return rejected

    def drain_events(self):
        """(executions as EXEC_DTYPE array, order events as ORDER_EVENT_DTYPE array);
        both buffers are emptied. Nothing pending: a shared read-only empty array."""
        cdef object ex = _EMPTY_EXECS
        cdef object oe = _EMPTY_ORDER_EVENTS
        if self._exec_count:
            ex = _new_array(_EXEC_DESCR, self._exec_count)
            memcpy(cnp.PyArray_DATA(<cnp.ndarray>ex), self._execs,
                   self._exec_count * sizeof(ExecEvent))
            self._exec_count = 0
        if self._oev_count:
            oe = _new_array(_OEV_DESCR, self._oev_count)
            memcpy(cnp.PyArray_DATA(<cnp.ndarray>oe), self._oevs,
                   self._oev_count * sizeof(OrderEvent))
            self._oev_count = 0
        return ex, oe

    def drain_into(self, execs, order_events):
        """Copy pending events into caller-owned arrays (no allocation); returns
        (executions copied, order events copied). `execs` is an EXEC_DTYPE array,
        `order_events` an ORDER_EVENT_DTYPE array, either may be None; what does not
        fit stays pending, oldest first."""
        cdef Py_ssize_t room_x = _out_room(execs, _EXEC_DESCR, "execs")
        cdef Py_ssize_t room_o = _out_room(order_events, _OEV_DESCR, "order_events")
        cdef Py_ssize_t nx = self._exec_count if self._exec_count < room_x else room_x
        cdef Py_ssize_t no = self._oev_count if self._oev_count < room_o else room_o
        if nx:
            memcpy(cnp.PyArray_DATA(<cnp.ndarray>execs), self._execs, nx * sizeof(ExecEvent))
            if nx < self._exec_count:
                memmove(self._execs, &self._execs[nx],
                        (self._exec_count - nx) * sizeof(ExecEvent))
            self._exec_count -= nx
        if no:
            memcpy(cnp.PyArray_DATA(<cnp.ndarray>order_events), self._oevs,
                   no * sizeof(OrderEvent))
            if no < self._oev_count:
                memmove(self._oevs, &self._oevs[no], (self._oev_count - no) * sizeof(OrderEvent))
            self._oev_count -= no
        return nx, no

    def pending_events(self):
        """(executions, order events) waiting to be drained."""
        return self._exec_count, self._oev_count

    @property
    def best_bid(self):
        """Best bid price in ticks, None when there is no bid."""
        cdef int64_t p = self.best_price(SIDE_BUY)
        return None if p == NO_PRICE else p

    @property
    def best_ask(self):
        """Best ask price in ticks, None when there is no ask."""
        cdef int64_t p = self.best_price(SIDE_SELL)
        return None if p == NO_PRICE else p

    @property
    def best_bid_size(self):
        """Lots at the best bid, None when there is no bid."""
        return self.best_qty(SIDE_BUY) if self._lv_count[<int>SIDE_BUY] else None

    @property
    def best_ask_size(self):
        """Lots at the best ask, None when there is no ask."""
        return self.best_qty(SIDE_SELL) if self._lv_count[<int>SIDE_SELL] else None

    def top(self):
        """(best_bid, best_bid_size, best_ask, best_ask_size); None for an empty side."""
        return (self.best_bid, self.best_bid_size, self.best_ask, self.best_ask_size)

    def depth(self, side, Py_ssize_t n=10):
        """Up to n levels of one side, best first, as a LEVEL_DTYPE array."""
        cdef int s = _side_arg(side)
        cdef Py_ssize_t count = self._lv_count[s]
        cdef Py_ssize_t k, i
        cdef const Level* lv
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        k = n if n < count else count
        out = np.empty(k, dtype=LEVEL_DTYPE)
        cdef int64_t[:, ::1] view = out.view(np.int64).reshape(k, 3)
        for i in range(k):
            lv = &self._levels[self._lv_index[s][count - 1 - i]]
            view[i, 0] = lv.price
            view[i, 1] = lv.total
            view[i, 2] = lv.count
        return out

    def level_count(self, side):
        """Number of price levels on one side."""
        return self._lv_count[_side_arg(side)]

    def order(self, order_id):
        """OrderInfo(order_id, owner, side, price, qty, tif, priority) or None."""
        cdef int32_t n = idmap_get(&self._ids, _id_arg(order_id, "order_id"))
        cdef const OrderNode* node
        if n == -1:
            return None
        node = &self._nodes[n]
        return OrderInfo(node.order_id, node.owner, node.side, node.price, node.qty, node.tif,
                         node.priority)

    def __contains__(self, order_id):
        if not isinstance(order_id, int) or order_id <= 0 or order_id > 0xFFFFFFFFFFFFFFFF:
            return False
        return idmap_get(&self._ids, <uint64_t>order_id) != -1

    def __len__(self):
        return self._order_count

    def open_orders(self, owner=None):
        """Resting orders (of one owner, or all) as an OPEN_ORDER_DTYPE array:
        bids best-first, then asks best-first, oldest first within a level."""
        cdef bint every = owner is None
        cdef int64_t own = 0 if every else _i64_arg(owner, "owner")
        cdef Py_ssize_t total = 0, j = 0, i
        cdef int s, pass_no
        cdef int32_t n
        cdef const OrderNode* node
        cdef cnp.ndarray out = None
        cdef char* base = NULL
        cdef char* rec
        cdef Py_ssize_t itemsize = OPEN_ORDER_DTYPE.itemsize
        cdef Py_ssize_t o_id = OPEN_ORDER_DTYPE.fields["order_id"][1]
        cdef Py_ssize_t o_owner = OPEN_ORDER_DTYPE.fields["owner"][1]
        cdef Py_ssize_t o_price = OPEN_ORDER_DTYPE.fields["price"][1]
        cdef Py_ssize_t o_qty = OPEN_ORDER_DTYPE.fields["qty"][1]
        cdef Py_ssize_t o_prio = OPEN_ORDER_DTYPE.fields["priority"][1]
        cdef Py_ssize_t o_side = OPEN_ORDER_DTYPE.fields["side"][1]
        cdef Py_ssize_t o_tif = OPEN_ORDER_DTYPE.fields["tif"][1]
        for pass_no in range(2):
            if pass_no == 1:
                out = np.zeros(total, dtype=OPEN_ORDER_DTYPE)
                base = <char*>cnp.PyArray_DATA(out)
            for s in range(2):
                i = self._lv_count[s] - 1
                while i >= 0:
                    n = self._levels[self._lv_index[s][i]].head
                    while n != -1:
                        node = &self._nodes[n]
                        if every or node.owner == own:
                            if pass_no == 0:
                                total += 1
                            else:
                                rec = base + j * itemsize
                                (<uint64_t*>(rec + o_id))[0] = node.order_id
                                (<int64_t*>(rec + o_owner))[0] = node.owner
                                (<int64_t*>(rec + o_price))[0] = node.price
                                (<int64_t*>(rec + o_qty))[0] = node.qty
                                (<uint64_t*>(rec + o_prio))[0] = node.priority
                                (<uint8_t*>(rec + o_side))[0] = node.side
                                (<uint8_t*>(rec + o_tif))[0] = node.tif
                                j += 1
                        n = node.next
                    i -= 1
        return out

    def check_invariants(self):
        """Walk the whole structure and raise AssertionError on any inconsistency
        (sorted levels, level totals and counts, FIFO links, priorities increasing
        along each queue, id map <-> nodes). O(orders); for tests and debugging."""
        cdef int s
        cdef Py_ssize_t i, seen = 0, levels = 0, n_free
        cdef int32_t li, n, prev
        cdef int64_t total, key
        cdef int32_t count
        cdef uint64_t last_prio
        cdef const Level* lv
        cdef const OrderNode* node
        for s in range(2):
            for i in range(self._lv_count[s]):
                li = self._lv_index[s][i]
                lv = &self._levels[li]
                key = lv.price if s == SIDE_BUY else ~lv.price
                if key != self._lv_key[s][i]:
                    raise AssertionError(f"side {s} level {i}: key does not match price {lv.price}")
                if i and self._lv_key[s][i - 1] >= key:
                    raise AssertionError(f"side {s}: levels not strictly sorted at {i}")
                total = 0
                count = 0
                prev = -1
                n = lv.head
                while n != -1:
                    node = &self._nodes[n]
                    if node.prev != prev or node.level != li or node.side != s:
                        raise AssertionError(f"order {node.order_id}: bad links/level/side")
                    if node.price != lv.price or node.qty <= 0:
                        raise AssertionError(f"order {node.order_id}: price/qty {node.price}/"
                                             f"{node.qty} at level {lv.price}")
                    if count and node.priority <= last_prio:
                        raise AssertionError(f"order {node.order_id}: priority out of order")
                    if idmap_get(&self._ids, node.order_id) != n:
                        raise AssertionError(f"order {node.order_id}: id map disagrees")
                    last_prio = node.priority
                    total += node.qty
                    count += 1
                    prev = n
                    n = node.next
                if prev != lv.tail or count != lv.count or total != lv.total or count == 0:
                    raise AssertionError(f"side {s} level {lv.price}: tail/count/total wrong")
                seen += count
                levels += 1
        if seen != self._order_count or seen != self._ids.count:
            raise AssertionError(f"{seen} orders in levels, count {self._order_count}, "
                                 f"id map {self._ids.count}")
        n_free = 0
        li = self._level_free
        while li != -1 and n_free <= self._level_used:
            n_free += 1
            li = self._levels[li].head
        if levels + n_free != self._level_used:
            raise AssertionError(f"level pool: {levels} live + {n_free} free != "
                                 f"{self._level_used} used")
        n_free = 0
        n = self._node_free
        while n != -1 and n_free <= self._node_used:
            n_free += 1
            n = self._nodes[n].next
        if seen + n_free != self._node_used:
            raise AssertionError(f"order slab: {seen} live + {n_free} free != "
                                 f"{self._node_used} used")

    # Capacities, for tests of growth and for monitoring.
    @property
    def node_capacity(self):
        return self._node_cap

    @property
    def map_capacity(self):
        return <Py_ssize_t>(self._ids.mask + 1)

    @property
    def level_capacity(self):
        return self._level_cap
