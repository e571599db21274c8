# cython: language_level=3, boundscheck=False, wraparound=False
"""The order manager's submit path, compiled.

``engine.orders.OrderManager`` subclasses ``OrderPath``: ``submit`` -- a strategy's
new order, from its arguments to the execution client's ``send_new`` -- is the part
of the order manager on every tick-to-trade path, so it is here; everything else of
the order manager (replace, cancel, reports, timeouts, the unusual branches of
submit) stays in Python, in ``engine/orders.py``, which documents the rules.

What the compiled path takes out, per order: the Python frames of submit and of the
pre-trade check, the order's construction through a 27-parameter constructor
(``records.new_order_record`` sets the fields in C), and the argument conversion of
``RiskKernel.check`` (``check_order`` is called directly when the kernel is the
compiled one; a reference kernel in tests is called through Python).

The engine tells this module its Python types once, at import of engine.orders
(``configure``): the Order class to instantiate, Side and Tif (fast type checks,
their ``parse`` otherwise), the PendingNew state, and the argument validator.
"""
from core_ext.common cimport NO_PRICE
from core_ext.records cimport OrderRecord, new_order_record
from core_ext.risk cimport RiskKernel

from core_ext.risk import REJECT_REASONS

cdef int RISK_OK_CODE = 0           # risk.RISK_OK

cdef type _Order = OrderRecord
cdef object _Side = None
cdef object _Tif = None
cdef object _PendingNew = None
cdef object _need_int = None
cdef object _INT64_MAX = 2**63 - 1
cdef object _UINT64_END = 2**64


def configure(type order_cls not None, side_cls, tif_cls, pending_new, need_int):
    """Called once by engine.orders: the types submit creates and checks."""
    global _Order, _Side, _Tif, _PendingNew, _need_int
    if not issubclass(order_cls, OrderRecord):
        raise TypeError("order_cls must be a subclass of core_ext.records.OrderRecord")
    _Order, _Side, _Tif, _PendingNew, _need_int = order_cls, side_cls, tif_cls, pending_new, need_int


cdef class OrderPath:
    """Base of engine.orders.OrderManager: the state submit reads (set by the
    subclass's __init__) and submit itself."""
    cdef public object kernel, _client, instruments, clock, ids, stats
    cdef public dict _orders, _live, _block_reasons
    cdef public list _order_listeners
    cdef public object _journal

    def submit(self, symbol, side, qty, price=None, tif="DAY", tag="", *, owner="",
               ignore_blocks=False):
        """New order -> its client order id. Never raises for a business reason: a
        blocked, unknown-instrument or risk-rejected order is returned in state
        Rejected (``reject_reason`` says why). Raises TypeError/ValueError for a
        malformed call (side, tif, non-int qty or price). ``ignore_blocks`` (the kill
        switch's flatten only; not reachable from a strategy) skips the block flags,
        never the risk kernel."""
        cdef OrderRecord order
        cdef int code
        cdef bint in_range
        # the common case (a Side, a Tif, plain ints) by type first, parsing after
        if type(side) is not _Side:
            side = _Side.parse(side)
        if type(tif) is not _Tif:
            tif = _Tif.parse(tif)
        if type(qty) is not int:
            _need_int(qty, "qty")
        if price is not None and type(price) is not int:
            _need_int(price, "price")
        now = self.clock()
        cl = self.ids.next()
        inst = self.instruments.get(symbol)
        order = new_order_record(_Order, cl, symbol, inst.inst_id if inst is not None else -1, side, qty,
                                 price, tif, _PendingNew, now, tag, owner)
        self._orders[cl] = order
        self._live[cl] = order
        self.stats["submitted"] += 1
        if self._journal is not None:
            self._journal("submit", {"cl_ord_id": cl, "symbol": symbol, "side": int(side), "qty": qty,
                                     "price": price, "tif": int(tif), "tag": tag, "owner": owner,
                                     "ts_ns": now})
        in_range = (-_INT64_MAX <= qty <= _INT64_MAX
                    and (price is None or -_INT64_MAX <= price <= _INT64_MAX))
        if self._block_reasons or inst is None or not in_range:
            reason = self._pre_trade(order, qty, now, ignore_blocks)   # the unusual cases, in Python
        else:
            k = self.kernel
            if type(k) is RiskKernel and 0 < cl < _UINT64_END and -_INT64_MAX <= now <= _INT64_MAX:
                code = (<RiskKernel>k).check_order(order.inst_id, <int>side, qty,
                                                   NO_PRICE if price is None else price, cl, now)
            else:
                code = k.check(order.inst_id, side, qty, NO_PRICE if price is None else price, cl, now)
            if code == RISK_OK_CODE:
                order.reserved = qty
                order.kernel_open = True
                reason = ""
            else:
                reason = REJECT_REASONS.get(code, f"RISK_{code}")
        if reason:
            self._local_reject(order, reason)
            return cl
        # the listeners (monitoring, logs, the store, the strategy's on_order) hear of the
        # new order once it has left: their work is not on its path (reports come on a
        # later turn of the event loop).
        try:
            self._client.send_new(order)
        except Exception as exc:  # any client failure: the order is not at the venue
            if self._order_listeners:
                self._emit_order(order)
            self._send_failed(order, exc, "new")
            return cl
        self.stats["sent"] += 1
        # (a client that answered synchronously has already moved the order on, and its
        # reports told the listeners: no stale PendingNew after them)
        if self._order_listeners and order.state is _PendingNew:
            self._emit_order(order)
        return cl
