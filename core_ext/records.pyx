# cython: language_level=3, boundscheck=False, wraparound=False
"""Records the Python order path creates once per event, as compiled classes.

The engine's order path (``engine.orders.OrderManager``, ``engine.strategy``) builds
an order, a snapshot of it for the listeners, and a quote for the strategy on every
top-of-book change. As frozen Python dataclasses those cost 0.7-2 us each (a frozen
dataclass sets every field through ``object.__setattr__``); as extension types their
construction is one C call (about 0.1 us). The engine subclasses them to add the
behaviour that needs its enums (``engine.orders.Order``, ``OrderSnapshot``); the
subclasses declare ``__slots__ = ()`` so construction stays in C.

* ``OrderRecord``: mutable (every field assignable, no other attribute), identity
  equality, as the ``@dataclass(slots=True, eq=False)`` it replaces.
* ``OrderSnapshotRecord``, ``Quote``, ``Trade``: read-only fields, equal and hashed by
  type and fields, as the ``@dataclass(frozen=True)`` they replace.
* ``format_cl_ord_id_fast``: a client order id in base 36 (the wire form), in C.
* ``untrack_acyclic``: takes a long-lived record out of the cyclic GC's lists.

Orders are not tracked by the cyclic garbage collector: ``OrderRecord.__cinit__``
untracks every instance, of the engine's subclasses too (a Python subclass is always
a GC type). Their fields hold numbers, strings, enum members or None, which never
lead back to an order, so an order can never be part of a reference cycle; and the
order manager keeps every order for an hour, the FIX session store every message it
sent, the FIX client a record of every order (those two untrack theirs with
``untrack_acyclic``). Tracked, these survivors filled the collector's young
generation until a collection scanned them all: in a 16,500-order `engine run`
(the loopback benchmark, Python strategy) the one young collection held the event
loop 39 ms; untracked, 0.25 ms. Storing a container that refers back to the
record in one of its fields would leak both; the fields' contract excludes it.
"""
from cpython.object cimport PyObject
from libc.stdint cimport uint64_t

from core_ext.common cimport base36


cdef extern from "Python.h":
    int PyObject_IS_GC(object obj)
    void PyObject_GC_UnTrack(void* op)


def untrack_acyclic(obj):
    """Take `obj` out of the cyclic garbage collector's lists and return it. Only for
    objects that can never be part of a reference cycle -- records whose fields are
    numbers, strings, bytes, enum members or None -- and that live long (kept in a
    table for the session): the collector then never scans them. Reference counting
    still frees them as usual."""
    if PyObject_IS_GC(obj):
        PyObject_GC_UnTrack(<PyObject*>obj)
    return obj


def format_cl_ord_id_fast(uint64_t value):
    """`value` (> 0, < 2**64) in upper-case base 36 (at most 13 characters), as str.
    The range check is the caller's (``engine.orders.format_cl_ord_id``)."""
    cdef char out[16]
    cdef Py_ssize_t n
    if value == 0:
        raise ValueError("client order id 0 out of range (1..2**64-1)")
    n = base36(value, out)
    return out[:n].decode("ascii")


cdef class _Frozen:
    """Equality, hash and repr by type and fields for the read-only records."""

    cdef tuple _fields(self):
        raise NotImplementedError

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == (<_Frozen>other)._fields()

    def __ne__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() != (<_Frozen>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        names = type(self).FIELDS
        return "%s(%s)" % (type(self).__name__,
                           ", ".join("%s=%r" % (n, v) for n, v in zip(names, self._fields())))

    def __reduce__(self):
        return (type(self), self._fields())


cdef class Quote(_Frozen):
    """Top of one book. bid/ask in ticks (None when the side is empty), sizes in lots."""
    FIELDS = ("symbol", "bid", "bid_size", "ask", "ask_size", "ts_ns")
    cdef readonly object symbol, bid, bid_size, ask, ask_size, ts_ns

    def __init__(self, symbol, bid, bid_size, ask, ask_size, ts_ns):
        self.symbol = symbol
        self.bid = bid
        self.bid_size = bid_size
        self.ask = ask
        self.ask_size = ask_size
        self.ts_ns = ts_ns

    cdef tuple _fields(self):
        return (self.symbol, self.bid, self.bid_size, self.ask, self.ask_size, self.ts_ns)

    @property
    def mid_x2(self):
        """bid + ask (twice the mid, exact in ticks); None unless both sides exist."""
        return None if self.bid is None or self.ask is None else self.bid + self.ask

    @property
    def spread(self):
        return None if self.bid is None or self.ask is None else self.ask - self.bid


cdef class Trade(_Frozen):
    """A trade print: price ticks, qty lots, the aggressor's side (None if unknown)."""
    FIELDS = ("symbol", "price", "qty", "aggressor_side", "ts_ns")
    cdef readonly object symbol, price, qty, aggressor_side, ts_ns

    def __init__(self, symbol, price, qty, aggressor_side, ts_ns):
        self.symbol = symbol
        self.price = price
        self.qty = qty
        self.aggressor_side = aggressor_side
        self.ts_ns = ts_ns

    cdef tuple _fields(self):
        return (self.symbol, self.price, self.qty, self.aggressor_side, self.ts_ns)


cdef class OrderSnapshotRecord(_Frozen):
    """Read-only copy of an order (base of ``engine.orders.OrderSnapshot``)."""
    FIELDS = ("cl_ord_id", "symbol", "side", "qty", "price", "tif", "state", "cum_qty",
              "leaves_qty", "avg_px", "reject_reason", "orig_cl_ord_id", "replaced_by", "tag",
              "updated_ns", "owner")
    cdef readonly object cl_ord_id, symbol, side, qty, price, tif, state, cum_qty, leaves_qty
    cdef readonly object avg_px, reject_reason, orig_cl_ord_id, replaced_by, tag, updated_ns, owner

    def __init__(self, cl_ord_id, symbol, side, qty, price, tif, state, cum_qty, leaves_qty,
                 avg_px, reject_reason, orig_cl_ord_id, replaced_by, tag, updated_ns, owner=""):
        self.cl_ord_id = cl_ord_id
        self.symbol = symbol
        self.side = side
        self.qty = qty
        self.price = price
        self.tif = tif
        self.state = state
        self.cum_qty = cum_qty
        self.leaves_qty = leaves_qty
        self.avg_px = avg_px
        self.reject_reason = reject_reason
        self.orig_cl_ord_id = orig_cl_ord_id
        self.replaced_by = replaced_by
        self.tag = tag
        self.updated_ns = updated_ns
        self.owner = owner

    cdef tuple _fields(self):
        return (self.cl_ord_id, self.symbol, self.side, self.qty, self.price, self.tif, self.state,
                self.cum_qty, self.leaves_qty, self.avg_px, self.reject_reason, self.orig_cl_ord_id,
                self.replaced_by, self.tag, self.updated_ns, self.owner)


cdef class OrderRecord:
    """An order's fields (base of ``engine.orders.Order``, which documents them).
    Mutable; equality is identity."""
    FIELDS = ("cl_ord_id", "symbol", "inst_id", "side", "qty", "price", "tif", "state",
              "created_ns", "updated_ns", "tag", "owner", "cum_qty", "fill_notional",
              "venue_order_id", "reject_reason", "orig_cl_ord_id", "replaced_by", "reserved",
              "kernel_open", "restore_state", "cancel_id", "cancel_after_replace",
              "pending_since_ns", "last_status_ns", "status_queries", "unresolved_alerted")
    # fields: records.pxd

    def __cinit__(self):
        # never part of a cycle (module docstring): the collector need not scan orders.
        # No parameters: Cython then ignores the constructor's arguments instead of
        # copying them into a tuple and a dict for every order.
        PyObject_GC_UnTrack(<PyObject*>self)

    def __init__(self, cl_ord_id, symbol, inst_id, side, qty, price, tif, state, created_ns,
                 updated_ns, tag="", owner="", cum_qty=0, fill_notional=0, venue_order_id="",
                 reject_reason="", orig_cl_ord_id=0, replaced_by=0, reserved=0, kernel_open=False,
                 restore_state=None, cancel_id=0, cancel_after_replace=False, pending_since_ns=0,
                 last_status_ns=0, status_queries=0, unresolved_alerted=False):
        self.cl_ord_id = cl_ord_id
        self.symbol = symbol
        self.inst_id = inst_id
        self.side = side
        self.qty = qty
        self.price = price
        self.tif = tif
        self.state = state
        self.created_ns = created_ns
        self.updated_ns = updated_ns
        self.tag = tag
        self.owner = owner
        self.cum_qty = cum_qty
        self.fill_notional = fill_notional
        self.venue_order_id = venue_order_id
        self.reject_reason = reject_reason
        self.orig_cl_ord_id = orig_cl_ord_id
        self.replaced_by = replaced_by
        self.reserved = reserved
        self.kernel_open = kernel_open
        self.restore_state = restore_state
        self.cancel_id = cancel_id
        self.cancel_after_replace = cancel_after_replace
        self.pending_since_ns = pending_since_ns
        self.last_status_ns = last_status_ns
        self.status_queries = status_queries
        self.unresolved_alerted = unresolved_alerted

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__,
                           ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.FIELDS))


cdef OrderRecord new_order_record(type cls, object cl_ord_id, object symbol, object inst_id,
                                  object side, object qty, object price, object tif, object state,
                                  object now, object tag, object owner):
    # the defaults are OrderRecord.__init__'s
    cdef OrderRecord o = <OrderRecord>OrderRecord.__new__(cls)
    o.cl_ord_id = cl_ord_id
    o.symbol = symbol
    o.inst_id = inst_id
    o.side = side
    o.qty = qty
    o.price = price
    o.tif = tif
    o.state = state
    o.created_ns = now
    o.updated_ns = now
    o.tag = tag
    o.owner = owner
    o.cum_qty = 0
    o.fill_notional = 0
    o.venue_order_id = ""
    o.reject_reason = ""
    o.orig_cl_ord_id = 0
    o.replaced_by = 0
    o.reserved = 0
    o.kernel_open = False
    o.restore_state = None
    o.cancel_id = 0
    o.cancel_after_replace = False
    o.pending_since_ns = now
    o.last_status_ns = 0
    o.status_queries = 0
    o.unresolved_alerted = False
    return o
