# The compiled replay loop of the backtest: walks an array of market-data events
# in event time, applies them to the core_ext books in C, and crosses into Python
# only when something a Python component must see happened (one strategy callback
# per top-of-book change or trade print; the simulated execution only when it has
# work; timers on a grid of event time).
#
# Input: a 1-D NumPy array of REPLAY_DTYPE rows (the C twin is ReplayEvent). An
# *event* is a run of consecutive rows of one instrument and one timestamp, closed
# by a row with REPLAY_FLAG_END; callbacks run after that row, never between the
# rows of one event (so a quote that moves both sides, or a whole snapshot, is one
# event and the strategy never sees a half-applied update). Timestamps never go
# back. Every slice given to Replay.run is validated completely before the first
# row is applied (ReplayError naming the row and the field; nothing applied).
#
# Per event at time ts (the order documented by engine.sim_execution, and the order in
# which the paper runtime handles one feed message):
#   1. timer: if ts reached the next multiple of timer_interval_ns, the clock is set
#      to that boundary b, the execution is advanced to b, and timer(b) is called
#      once (boundaries skipped in a gap are coalesced: state is constant there);
#   2. clock = ts; advance(ts) if a request or report is due by ts;
#   3. the book rows are applied (L2 rows to the L2Book; L3 rows to the MatchingBook
#      and their level deltas to the L2Book);
#   4. after the END row: exec_on_book(symbol, ts) when the book changed and the
#      execution has live orders (or remembered liquidity); on a top-of-book change
#      the risk kernel's reference price is set (the mid, rounded down, when both
#      sides exist and 0 < bid <= ask) and the mark object gets `bid` / `ask` (None
#      for an empty side) when a price moved;
#   5. if host.running: on_quote(Quote) on a top change, then on_book(symbol) on any
#      book change;
#   6. per trade row of the event: exec_on_trade(...) when the execution has live
#      orders, the mark object gets `last`, and (host running) on_trade(Trade);
#   7. advance(ts) if something is due by ts (zero-latency requests act at once).
# Strategy callbacks are made only when given (a strategy that does not override a
# callback is not called). A callback that raises ends the event's dispatch when it
# stopped the strategy: StrategyStopped is ignored, any other exception goes to
# on_error(name, exc).
#
# Quote and Trade objects are built without running their __init__ when their
# fields are slots (see _RecordMaker): the slot values are written through the
# member descriptors, which is what a frozen dataclass's __init__ does, at a tenth
# of the cost. Types with __post_init__ or non-slot fields are called normally.
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from core_ext.book cimport L2Book
from core_ext.matching cimport MatchingBook
from core_ext.risk cimport RiskKernel

# What one row does.
cdef enum ReplayKind:
    REPLAY_BOOK_SET = 0        # L2: set level (side, price) to qty lots (0 deletes it)
    # L2: clear the book, then set the level (first row of a snapshot; qty 0 there
    # leaves an empty book)
    REPLAY_BOOK_SNAPSHOT = 1
    REPLAY_TRADE = 2           # trade print: price, qty > 0, side = aggressor or REPLAY_SIDE_UNKNOWN
    REPLAY_L3_ADD = 3          # L3: order_id rests at (side, price) with qty > 0 lots, no matching
    REPLAY_L3_CANCEL = 4       # L3: order_id leaves the book (price, qty, side ignored)
    # L3: order_id now rests at price with qty > 0 lots (same side, same id; keeps its
    # queue place only at the same price and qty not increased), no matching
    REPLAY_L3_REPLACE = 5

# Bits of ReplayEvent.flags.
cdef enum ReplayFlag:
    REPLAY_FLAG_END = 1        # last row of an event: the callbacks of the event follow it

cdef enum:
    REPLAY_SIDE_UNKNOWN = 2    # trade rows: the aggressor side is not known
    REPLAY_KIND_COUNT = 6      # number of ReplayKind values
    REPLAY_MAX_INSTRUMENTS = 65536  # upper bound of the instruments of one Replay

# One row (layout = REPLAY_DTYPE: 4 x 8 bytes, u4, 4 x u1 = 40 bytes, aligned).
cdef struct ReplayEvent:
    int64_t ts_ns        # event time, ns (the simulated clock); >= 0, never decreasing
    int64_t price        # ticks; book/trade/L3 add/replace rows: > 0
    int64_t qty          # lots; book rows >= 0 (0 deletes), trade and L3 add/replace rows > 0
    uint64_t order_id    # L3 rows: the order id (!= 0); other rows: 0
    uint32_t inst        # instrument index, 0 .. n_instruments - 1
    uint8_t kind         # a ReplayKind
    uint8_t side         # SIDE_BUY / SIDE_SELL (trade rows: the aggressor, or REPLAY_SIDE_UNKNOWN)
    uint8_t flags        # ReplayFlag bits
    uint8_t reserved     # 0

# Top of book of one instrument (as last dispatched), compared after every event.
cdef struct ReplayTop:
    int64_t bid          # best bid ticks, NO_PRICE when empty
    int64_t bid_size     # lots at the best bid, 0 when empty
    int64_t ask          # best ask ticks, NO_PRICE when empty
    int64_t ask_size     # lots at the best ask, 0 when empty


# The simulated clock: a callable returning the current event time (int ns). The
# replay sets it in C; Python components (order manager, execution, risk policy,
# strategy context) call it.
@cython.final
cdef class ReplayClock:
    cdef public int64_t now_ns           # current event time, ns


# Builds instances of a record type (Quote, Trade) from positional values, writing
# slot members directly when the type allows it (see the module comment).
@cython.final
cdef class _RecordMaker:
    cdef readonly object type            # the record class
    cdef readonly tuple fields           # field names, in the order values are given
    cdef tuple _descrs                   # member descriptors of `fields` (fast path) or None
    cdef readonly bint fast              # True: instances are built without __init__

    # A new instance from the values (len(values) == len(fields)). Raises what the
    # type raises (slow path) or MemoryError.
    cdef object make(self, tuple values)
    # The same for exactly six values, without building a tuple (the Quote path).
    cdef object make6(self, object a, object b, object c, object d, object e, object f)


@cython.final
cdef class Replay:
    cdef readonly Py_ssize_t n_instruments  # instruments (books) of this replay
    cdef list _books                     # L2Book per instrument (kept alive; read via _book_ptr)
    cdef list _l3                        # MatchingBook or None per instrument
    cdef void** _book_ptr                # borrowed L2Book pointers, [n_instruments]
    cdef void** _l3_ptr                  # borrowed MatchingBook pointers or NULL, [n_instruments]
    cdef readonly tuple symbols          # symbol (str) per instrument
    cdef ReplayTop* _top                 # last dispatched top per instrument
    cdef ReplayTop* _marked              # top last written to the mark objects, per instrument
    cdef readonly ReplayClock clock      # the simulated clock this replay drives
    cdef int64_t _last_ts                # timestamp of the last row applied (-1: none yet)

    # risk kernel: reference prices set in C
    cdef RiskKernel _kernel              # None: no kernel
    cdef int64_t* _kernel_ids            # kernel instrument id per instrument, [n_instruments]

    # marks: per instrument an object whose bid/ask/last attributes are set (or None)
    cdef list _marks                     # mark object or None per instrument

    # strategy side
    cdef object _host                    # object with a bool `running` attribute, or None
    cdef object _on_quote                # callable(Quote) or None
    cdef object _on_book                 # callable(symbol) or None
    cdef object _on_trade                # callable(Trade) or None
    cdef object _on_error                # callable(name, exc): a strategy callback raised
    cdef object _stopped_exc             # exception type ignored silently (StrategyStopped)
    cdef _RecordMaker _quote_maker       # builds Quote(symbol, bid, bid_size, ask, ask_size, ts_ns)
    cdef _RecordMaker _trade_maker       # builds Trade(symbol, price, qty, aggressor_side, ts_ns)
    cdef tuple _side_values              # (buy value, sell value) handed to Trade, unknown -> None

    # simulated execution
    cdef object _advance                 # callable(ts_ns): deliver everything due by ts
    cdef list _due_heap                  # heapq list whose [0][0] is the next due time, or None
    cdef object _live                    # sized container: live orders (len 0: nothing to fill)
    cdef object _book_live               # sized container also checked before exec_on_book, or None
    cdef object _exec_on_book            # callable(symbol, ts_ns) or None
    cdef object _exec_on_trade           # callable(symbol, price, qty, aggressor_side, ts_ns) or None
    cdef public bint guards              # False: call advance / exec hooks on every event (checks)

    # timers and progress
    cdef object _timer                   # callable(now_ns) or None
    cdef int64_t _timer_interval         # ns, > 0 when a timer is set
    cdef int64_t _next_timer             # next boundary, ns (-1: set at the first event)
    cdef object _progress                # callable(events_done) or None
    cdef int64_t _progress_every         # events between progress calls
    cdef int64_t _progress_next          # event count of the next progress call

    # counters
    cdef readonly uint64_t events        # events (END rows) processed
    cdef readonly uint64_t rows          # rows applied
    cdef readonly uint64_t top_changes   # events after which the top of book differed
    cdef readonly uint64_t quote_calls   # on_quote callbacks made
    cdef readonly uint64_t book_calls    # on_book callbacks made
    cdef readonly uint64_t trade_calls   # on_trade callbacks made
    cdef readonly uint64_t timer_calls   # timer callbacks made
    cdef readonly uint64_t advance_calls  # advance callbacks made
    cdef readonly uint64_t exec_calls    # exec_on_book / exec_on_trade callbacks made
    cdef readonly uint64_t l3_rejects    # L3 rows the matching book refused (unknown id, duplicate)
    cdef readonly uint64_t strategy_errors  # strategy callbacks that raised (not StrategyStopped)

    # Check rows [start, stop) (see the module comment); ReplayError naming the row.
    cdef int _validate(self, const ReplayEvent[:] rows, Py_ssize_t start, Py_ssize_t stop) except -1
    # Apply one L2/L3 book row; returns 1 if the book changed (any level), else 0.
    cdef int _apply_book_row(self, const ReplayEvent* ev) except -1
    # One trade row after its event's book rows: execution hook, mark, strategy (when
    # dispatch); returns 0 once the strategy is stopped, else 1.
    cdef int _trade_row(self, const ReplayEvent* ev, object symbol, bint dispatch) except -1
    # After an event's END row: execution hook, kernel reference, marks, strategy.
    cdef int _end_event(self, Py_ssize_t inst, int64_t ts, bint changed, const ReplayEvent* first,
                        Py_ssize_t n_rows, bint has_trade) except -1
    # Fire the timer if ts reached the next boundary.
    cdef int _maybe_timer(self, int64_t ts) except -1
    # advance(ts) when something is due by ts (or always when guards are off).
    cdef int _maybe_advance(self, int64_t ts) except -1
    # Call a strategy callback with one argument; 1 = done, 0 = it raised (handled).
    cdef int _call_strategy(self, object fn, object arg, str name) except -1
    # Set bid/ask on the instrument's mark object (None for an empty side).
    cdef int _mark_top(self, Py_ssize_t inst, int64_t bid, int64_t ask) except -1
    # The replay loop over validated rows [start, stop); returns the events processed.
    cdef Py_ssize_t _run(self, const ReplayEvent[:] rows, Py_ssize_t start,
                         Py_ssize_t stop) except -1
