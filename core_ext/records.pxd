# Contract of core_ext/records.pyx: the order record's fields, for the compiled order
# path (core_ext/orderpath.pyx) to set them without a Python call.
cdef class OrderRecord:
    cdef public object cl_ord_id, symbol, inst_id, side, qty, price, tif, state
    cdef public object created_ns, updated_ns, tag, owner, cum_qty, fill_notional
    cdef public object venue_order_id, reject_reason, orig_cl_ord_id, replaced_by, reserved
    cdef public object kernel_open, restore_state, cancel_id, cancel_after_replace
    cdef public object pending_since_ns, last_status_ns, status_queries, unresolved_alerted

# A new order record of class `cls` (OrderRecord or a subclass): the given fields,
# created_ns = updated_ns = pending_since_ns = now, every other field its default.
# One C call in place of a Python constructor call with 27 parameters.
cdef OrderRecord new_order_record(type cls, object cl_ord_id, object symbol, object inst_id,
                                  object side, object qty, object price, object tif, object state,
                                  object now, object tag, object owner)
