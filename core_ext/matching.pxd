# The L3 matching book: order by order, price-time priority, one instrument.
#
# Used by the venue simulator (an exchange the engine trades against) and by the
# engine's fill model. Prices are int64 ticks, quantities int64 lots, order ids
# uint64 (0 is reserved: "no id"), owner ids int64 (0 is the anonymous owner,
# see OWNER_ANONYMOUS).
#
# Data layout (no Python object per order, no Python dict on the hot path):
#   * order nodes live in one slab (`OrderNode*`), addressed by int32 index, with
#     a free list threaded through `next`; the slab grows by doubling;
#   * each price level is a `Level` in a second pool (stable int32 index, free
#     list through `head`), holding an intrusive doubly linked FIFO of nodes;
#   * each side keeps its live levels in a sorted array of keys plus a parallel
#     array of level indices. The array is sorted WORST first so the best level
#     is the LAST element: the top of book, where nearly all traffic lands, is
#     pushed and popped in O(1) without moving the rest. The key is the price
#     for bids and ~price (bitwise not, -price-1: order-reversing, no overflow)
#     for asks, so both sides are ascending arrays and share one search;
#   * order id -> node index is an open-addressing hash map (linear probing,
#     backward-shift deletion, no tombstones, load <= 1/2, power-of-two size).
#
# Events: every executed trade is appended to an ExecEvent buffer and every order
# state change to an OrderEvent buffer; both carry `seq`, one counter shared by the
# two buffers, so merging them by seq gives the exact order things happened in.
# `drain_events()` hands both to Python as NumPy structured arrays (EXEC_DTYPE,
# ORDER_EVENT_DTYPE, whose layouts equal these structs; checked at import).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from core_ext.common cimport Side, TimeInForce, OrderType, NO_PRICE

cimport cython

# Result of an operation (submit, cancel, replace, execute, add_resting, a batch
# row). Business rejects are these codes (plus an ORDEV_REJECTED event whose
# `reason` is the same code), never exceptions.
cdef enum MatchStatus:
    MATCH_OK = 0                        # applied (fills/rest/cancel follow as events)
    MATCH_REJECT_DUPLICATE_ID = 1       # the (new) order id is already live in the book
    MATCH_REJECT_UNKNOWN_ORDER = 2      # cancel/replace/execute of an id not in the book
    MATCH_REJECT_FOK_NOT_FILLABLE = 3   # FOK could not fill completely: book untouched
    MATCH_REJECT_EXECUTE_TOO_LARGE = 4  # execute() qty above the order's open qty

# Why an order left the book without trading (`reason` of ORDEV_CANCELED).
cdef enum CancelReason:
    CANCEL_USER = 1            # cancel() / an L3_OP_CANCEL row
    CANCEL_IOC_REMAINDER = 2   # unfilled rest of an IOC/FOK order or of any market order
    CANCEL_SELF_MATCH = 3      # self-match prevention (resting or incoming, per policy)
    CANCEL_EXPIRED = 4         # a DAY order at expire_day()

# `reason` of ORDEV_REPLACED.
cdef enum ReplacePriority:
    REPLACE_PRIORITY_KEPT = 1  # same price and qty not increased: stays in its place
    REPLACE_PRIORITY_LOST = 2  # price changed or qty grew: goes to the back (maybe trades)

# Kind of an OrderEvent.
cdef enum OrderEventKind:
    ORDEV_ACCEPTED = 1   # submit accepted (qty = order qty); executions may follow
    ORDEV_RESTED = 2     # order now rests with fresh time priority (qty = open qty)
    ORDEV_CANCELED = 3   # order left the book (qty = qty canceled, reason = CancelReason)
    ORDEV_REJECTED = 4   # operation rejected, nothing changed (reason = MatchStatus)
    ORDEV_REPLACED = 5   # order replaced (new_order_id, qty, price; reason = ReplacePriority)

# Self-match prevention: what happens when an incoming order would trade with a
# resting order of the same owner (owners equal and not OWNER_ANONYMOUS).
cdef enum SelfMatchPolicy:
    SMP_NONE = 0             # no prevention: the orders trade with each other
    SMP_CANCEL_RESTING = 1   # cancel the resting order, the incoming one keeps matching
    SMP_CANCEL_INCOMING = 2  # cancel the incoming remainder (the default), book untouched
    SMP_CANCEL_BOTH = 3      # cancel the resting order and the incoming remainder

# Owner id that never self-matches (feed-sourced liquidity, external executions).
cdef enum OwnerId:
    OWNER_ANONYMOUS = 0

# Bits of ExecEvent.flags.
cdef enum ExecFlag:
    EXEC_FLAG_EXTERNAL = 1   # from execute(): taker is outside the book (id 0, owner 0)

# Operation of an L3Op batch row.
cdef enum L3OpKind:
    L3_OP_ADD = 0              # submit: matches, then rests / cancels per type and TIF
    L3_OP_ADD_RESTING = 1      # insert without matching (book feeds; may leave it crossed)
    L3_OP_CANCEL = 2           # cancel by order_id
    L3_OP_REPLACE = 3          # replace (new_order_id 0 = same id), matches if it crosses
    L3_OP_REPLACE_RESTING = 4  # replace without matching (book feeds)
    L3_OP_EXECUTE = 5          # external execution of qty lots of a resting order

# One order in the slab. A free node links the free list through `next`.
cdef struct OrderNode:
    uint64_t order_id   # exchange order id (never 0 for a live node)
    int64_t owner       # owner / participant id, for self-match prevention and reports
    int64_t price       # limit price in ticks
    int64_t qty         # open (leaves) qty in lots, > 0 while resting
    uint64_t priority   # time priority stamp: lower is earlier; new on each (re)rest
    int32_t prev        # previous node in the level FIFO (towards the head), -1 none
    int32_t next        # next node in the level FIFO (towards the tail), -1 none
    int32_t level       # index of its Level in the level pool
    uint8_t side        # SIDE_BUY / SIDE_SELL
    uint8_t tif         # TIF_DAY / TIF_GTC (only those rest)

# One price level: a FIFO of nodes. A free level links the free list through `head`.
cdef struct Level:
    int64_t price       # ticks
    int64_t total       # sum of the open qty of its orders, lots
    int32_t head        # oldest node (matched first), -1 when empty
    int32_t tail        # newest node, -1 when empty
    int32_t count       # number of orders

# One slot of the id -> node hash map; key 0 marks an empty slot.
cdef struct IdSlot:
    uint64_t key        # order id, 0 = empty
    int32_t node        # node index in the slab

# The id -> node index hash map (open addressing, linear probing).
cdef struct IdMap:
    IdSlot* slots       # `mask + 1` slots
    uint64_t mask       # capacity - 1, capacity a power of two
    Py_ssize_t count    # live keys

# One execution (layout = EXEC_DTYPE).
cdef struct ExecEvent:
    uint64_t seq             # event sequence number, shared with OrderEvent
    uint64_t maker_order_id  # resting order
    uint64_t taker_order_id  # incoming order; 0 for an external execution
    int64_t maker_owner      # owner of the resting order
    int64_t taker_owner      # owner of the incoming order; 0 for an external execution
    int64_t price            # execution price in ticks (always the maker's price)
    int64_t qty              # executed lots, > 0
    int64_t maker_leaves     # maker open qty after this execution (0: filled, gone)
    int64_t taker_leaves     # taker qty still unfilled after this execution
    uint8_t maker_side       # side of the resting order
    uint8_t aggressor_side   # side of the incoming order (1 - maker_side)
    uint8_t flags            # ExecFlag bits

# One order state change (layout = ORDER_EVENT_DTYPE).
cdef struct OrderEvent:
    uint64_t seq             # event sequence number, shared with ExecEvent
    uint64_t order_id        # the order (for a replace: the id before the replace)
    uint64_t new_order_id    # ORDEV_REPLACED: the id after the replace; else 0
    int64_t owner            # owner of the order (0 when unknown, e.g. unknown-id reject)
    int64_t price            # ticks; NO_PRICE for market orders and unknown ids
    int64_t qty              # see OrderEventKind; 0 for unknown ids
    uint8_t kind             # OrderEventKind
    uint8_t reason           # MatchStatus / CancelReason / ReplacePriority per kind, else 0
    uint8_t side             # SIDE_BUY / SIDE_SELL (0 when unknown)
    uint8_t ord_type         # ORDTYPE_LIMIT / ORDTYPE_MARKET
    uint8_t tif              # TimeInForce

# One row of a batch of L3 operations (layout = L3_OP_DTYPE).
cdef struct L3Op:
    uint64_t order_id        # order the row is about
    uint64_t new_order_id    # replace rows: id after the replace, 0 = keep; else ignored
    int64_t owner            # add rows: owner id
    int64_t price            # add/replace rows: limit price in ticks (ignored for market)
    int64_t qty              # add/replace: qty (replace: new open qty); execute: lots executed
    uint8_t op               # L3OpKind
    uint8_t side             # add rows: SIDE_BUY / SIDE_SELL
    uint8_t ord_type         # L3_OP_ADD: ORDTYPE_LIMIT / ORDTYPE_MARKET
    uint8_t tif              # add rows: TimeInForce (ADD_RESTING: DAY or GTC only)

# Top of book after one batch row (layout = TOP_DTYPE), for replays that need
# the quote stream without crossing into Python per event.
cdef struct TopOfBook:
    int64_t bid_price        # best bid ticks, NO_PRICE when the side is empty
    int64_t bid_qty          # lots at the best bid, 0 when empty
    int64_t ask_price        # best ask ticks, NO_PRICE when the side is empty
    int64_t ask_qty          # lots at the best ask, 0 when empty

# Hash map primitives (module-level C functions; no Python objects).
cdef int idmap_init(IdMap* m, Py_ssize_t min_capacity) except -1   # MemoryError
cdef void idmap_free(IdMap* m) noexcept nogil
cdef int32_t idmap_get(const IdMap* m, uint64_t key) noexcept nogil  # -1 when absent
cdef int idmap_put(IdMap* m, uint64_t key, int32_t node) except -1   # key must be absent
cdef int32_t idmap_pop(IdMap* m, uint64_t key) noexcept nogil        # -1 when absent


@cython.final
cdef class MatchingBook:
    cdef readonly object symbol           # instrument name (str), for reports only
    cdef readonly int self_match_policy   # SelfMatchPolicy, fixed at construction
    cdef public bint emit_order_events    # False: only executions are recorded (replays)

    cdef OrderNode* _nodes                # order slab
    cdef Py_ssize_t _node_cap             # allocated nodes
    cdef int32_t _node_free               # head of the free node list, -1 none
    cdef Py_ssize_t _node_used            # high-water mark: nodes ever handed out
    cdef Py_ssize_t _order_count          # live (resting) orders

    cdef Level* _levels                   # level pool
    cdef Py_ssize_t _level_cap            # allocated levels
    cdef int32_t _level_free              # head of the free level list, -1 none
    cdef Py_ssize_t _level_used           # high-water mark of the level pool

    cdef int64_t* _lv_key[2]              # per side: ascending keys, best LAST (see top)
    cdef int32_t* _lv_index[2]            # per side: level pool index of each key
    cdef Py_ssize_t _lv_count[2]          # live levels per side
    cdef Py_ssize_t _lv_cap[2]            # allocated entries per side

    cdef IdMap _ids                       # order id -> node index

    cdef ExecEvent* _execs                # pending executions, oldest first
    cdef Py_ssize_t _exec_count           # pending executions
    cdef Py_ssize_t _exec_cap             # allocated executions (grows by doubling)
    cdef OrderEvent* _oevs                # pending order events, oldest first
    cdef Py_ssize_t _oev_count            # pending order events
    cdef Py_ssize_t _oev_cap              # allocated order events (grows by doubling)

    cdef uint64_t _seq                    # next event sequence number
    cdef uint64_t _priority               # next time priority stamp
    cdef readonly uint64_t op_count       # operations applied (incl. rejected), all paths

    # --- the cdef API (other compiled modules cimport these) --------------------
    # Every call returns a MatchStatus (>= 0) or -1 with MemoryError set (growth
    # of the slab, the pools, the map or an event buffer failed). Arguments are
    # assumed valid (the Python methods and apply_ops validate first).
    cdef int c_submit(self, uint64_t order_id, int64_t owner, int side, int64_t qty,
                      int64_t price, int ord_type, int tif) except -1
    cdef int c_add_resting(self, uint64_t order_id, int64_t owner, int side, int64_t qty,
                           int64_t price, int tif) except -1
    cdef int c_cancel(self, uint64_t order_id) except -1
    cdef int c_replace(self, uint64_t order_id, uint64_t new_order_id, int64_t qty,
                       int64_t price, bint match) except -1
    cdef int c_execute(self, uint64_t order_id, int64_t qty) except -1
    cdef Py_ssize_t c_expire_day(self) except -1       # number of DAY orders canceled
    cdef int64_t best_price(self, int side) noexcept nogil  # NO_PRICE when empty
    cdef int64_t best_qty(self, int side) noexcept nogil    # 0 when empty

    # --- internals --------------------------------------------------------------
    cdef int _grow_nodes(self) except -1
    cdef int32_t _alloc_node(self) except -1
    cdef void _free_node(self, int32_t n) noexcept nogil
    cdef int32_t _alloc_level(self) except -1
    cdef int _grow_side(self, int side) except -1
    # Position of `key` in the side's sorted array, or where it would go (found=0).
    cdef Py_ssize_t _search(self, int side, int64_t key, bint* found) noexcept nogil
    # Append node n (fields set) at the tail of its price level, creating the level.
    cdef int _link(self, int32_t n) except -1
    # Take node n out of its level (dropping the level when it empties); n stays allocated.
    cdef void _unlink(self, int32_t n) noexcept nogil
    cdef void _drop_level(self, int side, int32_t li) noexcept nogil
    # Unlink, unmap and free node n.
    cdef void _remove(self, int32_t n) noexcept nogil
    # Qty an incoming order could fill now (stops early once `need` is reached).
    cdef int64_t _fillable(self, int side, int64_t price, bint market, int64_t owner,
                           int64_t need) noexcept nogil
    # Match an incoming order against the opposite side; returns the unfilled qty,
    # sets smp_stop when self-match prevention cancels the incoming remainder.
    cdef int64_t _match(self, uint64_t taker_id, int64_t owner, int side, int64_t qty,
                        int64_t price, bint market, bint* smp_stop) except -1
    cdef int _rest(self, int32_t n) except -1
    cdef int _emit_exec(self, OrderNode* maker, uint64_t taker_id, int64_t taker_owner,
                        int64_t qty, int64_t taker_leaves, uint8_t flags) except -1
    cdef int _emit_order(self, int kind, int reason, uint64_t order_id, uint64_t new_order_id,
                         int64_t owner, int side, int64_t price, int64_t qty,
                         int ord_type, int tif) except -1
    cdef int _reject(self, int status, uint64_t order_id, uint64_t new_order_id, int64_t owner,
                     int side, int64_t price, int64_t qty, int ord_type, int tif) except -1
