"""OUCH 4.2 order entry and SoupBinTCP 3.00 framing.

Byte layouts: /work/shared/protocols/OUCH-SOUPBINTCP.md (section 5.1 and the
SoupBinTCP notes); every integer big-endian unsigned, alpha fields left-justified
and space padded.

Python API
----------
Encoders write framed SoupBinTCP packets (``framed=True``: u16 length, type byte
``U`` for inbound messages / ``S`` for outbound ones, then the message) or bare
messages (``framed=False``) into a caller's ``bytearray`` at ``offset`` and return
the offset after what they wrote::

    buf = bytearray(4096)
    end = pack_enter_order(buf, 0, "TOKEN1", "B", 100, "AAPL", 1_234_500)
    transport.write(memoryview(buf)[:end])

``OuchWriter`` is the same with a growing buffer it owns: each method appends one
packet, ``take()`` returns the bytes written since the last take.

Decoders take one bare message (bytes / bytearray / memoryview) and return a flat
tuple whose first item is the type character and whose other items are, in
order, the arguments of the matching ``pack_*`` function (so
``pack_x(buf, 0, *decode(msg)[1:], framed=False)`` writes ``msg`` back):

* ``decode_inbound``: O Enter Order, U Replace Order, X Cancel Order, M Modify Order
* ``decode_outbound``: S System Event, A Accepted, U Replaced, C Canceled,
  E Executed, J Rejected

Multi-character alpha fields come back as ``str`` without their right padding,
single characters as 1-character ``str``, numbers as ``int``; prices are the
wire's price4 (4 implied decimals). At our edge prices are int64 ticks:
``price4_to_ticks`` / ``ticks_to_price4`` convert with ``price4_per_tick`` (1 when
the instrument's tick is $0.0001; 100 for a one-cent tick) and map the OUCH
market price 0x7FFFFFFF to/from ``NO_PRICE``. ``price4_from_str`` /
``price4_to_str`` convert decimal strings exactly (no floats).

``SoupFramer.feed(data)`` de-frames a TCP byte stream delivered in arbitrary
chunks and returns ``[(type, payload), ...]``.

Errors: every failure kind has its own ``ValueError`` subclass (see the classes
below); decode errors carry ``msg_type`` and ``offset``.
"""
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from core_ext.common cimport NO_PRICE, SIDE_BUY, SIDE_SELL
from core_ext.wire cimport (WireInput, wire_get_u16, wire_get_u32, wire_get_u64,
                            wire_input_close, wire_input_open, wire_is_alpha, wire_put_u16,
                            wire_put_u32, wire_put_u64, wire_rstrip)


# ---------------------------------------------------------------------------
# Errors: one class per failure kind.
# ---------------------------------------------------------------------------

class OuchError(ValueError):
    """Base of every OUCH / SoupBinTCP codec error."""


class OuchDecodeError(OuchError):
    """Bad input on the wire. ``msg_type``: the type character (or None when not
    known); ``offset``: byte offset of the problem inside the message, or for
    ``SoupFramer`` errors the offset of the bad packet in the stream."""

    def __init__(self, message, msg_type=None, offset=None):
        super().__init__(message)
        self.msg_type = msg_type
        self.offset = offset
        self.packets = []   # SoupFramer: packets completed in the same feed() before the error


class OuchTruncatedError(OuchDecodeError):
    """A message shorter than the fixed length of its type (or empty)."""


class OuchUnknownMessageError(OuchDecodeError):
    """A type byte that is not an OUCH 4.2 message of this direction."""


class OuchBadLengthError(OuchDecodeError):
    """A message longer than the fixed length of its type."""


class OuchFieldError(OuchDecodeError):
    """A field outside its value set (side not B/S/T/E, non-ASCII alpha, ...)."""


class SoupPacketLengthError(OuchDecodeError):
    """A SoupBinTCP length field of 0, above max_packet, or wrong for a fixed-size type."""


class SoupUnknownPacketError(OuchDecodeError):
    """A SoupBinTCP packet type that is not SoupBinTCP 3.00 (or not for this role)."""


class SoupFieldError(OuchDecodeError):
    """A bad login field (sequence number not decimal, bad reject code, ...)."""


class SoupStreamBrokenError(OuchDecodeError):
    """feed() on a SoupFramer that already hit a framing error (the stream is lost)."""


class OuchEncodeError(OuchError):
    """A value that cannot be encoded (out of range, not in its set, too long)."""


class OuchBufferTooSmallError(OuchEncodeError):
    """The output buffer has no room for the message at the given offset."""


# ---------------------------------------------------------------------------
# Character sets
# ---------------------------------------------------------------------------

cdef uint16_t _CS[256]


cdef void _cs_add(const char* chars, uint16_t flag) noexcept:
    cdef Py_ssize_t i = 0
    while chars[i] != 0:
        _CS[<unsigned char>chars[i]] |= flag
        i += 1


cdef void _cs_init() noexcept:
    cdef int c
    memset(_CS, 0, sizeof(_CS))
    for c in range(0x20, 0x7F):
        _CS[c] |= OUCH_CS_ALPHA
    _cs_add(b"BSTE", OUCH_CS_SIDE)
    _cs_add(b"AILMNOPQRTWY", OUCH_CS_DISPLAY)
    _cs_add(b"AOPR", OUCH_CS_CAPACITY)
    _cs_add(b"YN", OUCH_CS_YN)
    _cs_add(b"NOCHIRS", OUCH_CS_CROSS)
    _cs_add(b"RN ", OUCH_CS_CUSTOMER)
    _cs_add(b"SE", OUCH_CS_EVENT)
    _cs_add(b"LD", OUCH_CS_STATE)
    _cs_add(b"UITSDQZ", OUCH_CS_CANCEL)
    _cs_add(b"THZSDCLMRXNOabcdefghijklmn", OUCH_CS_REJECT)
    _cs_add(b"AS", OUCH_CS_LOGIN_REJECT)


_cs_init()

# Human names of the sets, for error messages (and the tests).
CHARSETS = {
    "side": "BSTE", "display": "AILMNOPQRTWY", "capacity": "AOPR", "iso": "YN",
    "cross_type": "NOCHIRS", "customer_type": "RN ", "event_code": "SE",
    "order_state": "LD", "cancel_reason": "UITSDQZ",
    "reject_reason": "THZSDCLMRXNOabcdefghijklmn", "login_reject": "AS",
}

MARKET_PRICE = OUCH_MARKET_PRICE
TIF_IOC = OUCH_TIF_IOC
TIF_MARKET_HOURS = OUCH_TIF_MARKET_HOURS
TIF_SYSTEM_HOURS = OUCH_TIF_SYSTEM_HOURS
LENGTHS_INBOUND = {"O": OUCH_LEN_ENTER_ORDER, "U": OUCH_LEN_REPLACE_ORDER,
                   "X": OUCH_LEN_CANCEL_ORDER, "M": OUCH_LEN_MODIFY_ORDER}
LENGTHS_OUTBOUND = {"S": OUCH_LEN_SYSTEM_EVENT, "A": OUCH_LEN_ACCEPTED, "U": OUCH_LEN_REPLACED,
                    "C": OUCH_LEN_CANCELED, "E": OUCH_LEN_EXECUTED, "J": OUCH_LEN_REJECTED}

cdef object _MSG_NAMES_IN = {ord("O"): "Enter Order", ord("U"): "Replace Order",
                             ord("X"): "Cancel Order", ord("M"): "Modify Order"}
cdef object _MSG_NAMES_OUT = {ord("S"): "System Event", ord("A"): "Accepted", ord("U"): "Replaced",
                              ord("C"): "Canceled", ord("E"): "Executed", ord("J"): "Rejected"}


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

cdef inline str _chr(uint8_t c):
    return chr(c)


cdef str _show(uint8_t c):
    return repr(bytes([c]))


cdef inline str _alpha(const unsigned char* p, Py_ssize_t width):
    # Decoded alpha field without right padding (already checked printable ASCII).
    return (<const char*>p)[:wire_rstrip(p, width)].decode("ascii")


cdef int _dec_fail(object cls, uint8_t mtype, Py_ssize_t offset, str text) except -1:
    cdef str t = chr(mtype)
    raise cls(f"OUCH '{t}': {text} (offset {offset})", t, offset)


cdef inline int _check_len(const unsigned char* p, Py_ssize_t n, Py_ssize_t want) except -1:
    if n < want:
        _dec_fail(OuchTruncatedError, p[0], n, f"truncated: {n} bytes, need {want}")
    if n > want:
        _dec_fail(OuchBadLengthError, p[0], want, f"bad length: {n} bytes, type has {want}")
    return 0


cdef inline int _get_char(const unsigned char* p, Py_ssize_t off, uint16_t cs, str name,
                          uint8_t* out) except -1:
    cdef uint8_t c = p[off]
    if not (_CS[c] & cs):
        _dec_fail(OuchFieldError, p[0], off, f"{name} {_show(c)} not in its set")
    out[0] = c
    return 0


cdef inline int _get_alpha(const unsigned char* p, Py_ssize_t off, Py_ssize_t width, str name,
                           unsigned char* out) except -1:
    if not wire_is_alpha(p + off, width):
        _dec_fail(OuchFieldError, p[0], off, f"{name} is not printable ASCII")
    memcpy(out, p + off, width)
    return 0


cdef int _enc_fail(str text) except -1:
    raise OuchEncodeError(text)


cdef inline int _put_check_char(uint8_t c, uint16_t cs, str name) except -1:
    if not (_CS[c] & cs):
        _enc_fail(f"{name} {_show(c)} not in its set")
    return 0


cdef inline int _put_check_alpha(const unsigned char* p, Py_ssize_t width, str name) except -1:
    if not wire_is_alpha(p, width):
        _enc_fail(f"{name} is not printable ASCII")
    return 0


cdef inline int _put_check_cap(Py_ssize_t cap, Py_ssize_t want) except -1:
    if cap < want:
        raise OuchBufferTooSmallError(f"buffer has {cap} bytes free, message needs {want}")
    return 0


# Python values -> struct fields (encoder side) ----------------------------------

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object u)
    void* PyUnicode_DATA(object u)
    Py_ssize_t PyUnicode_GET_LENGTH(object u)


cdef int _set_alpha(unsigned char* dst, Py_ssize_t width, object value, str name) except -1:
    cdef const unsigned char* src
    cdef Py_ssize_t n
    if isinstance(value, str):
        if not PyUnicode_IS_ASCII(value):
            _enc_fail(f"{name} {value!r} is not ASCII")
        src = <const unsigned char*>PyUnicode_DATA(value)   # ASCII: one byte per character
        n = PyUnicode_GET_LENGTH(value)
    elif isinstance(value, bytes):
        src = <const unsigned char*>PyBytes_AS_STRING(value)
        n = PyBytes_GET_SIZE(value)
    else:
        raise TypeError(f"{name} must be str or bytes, not {type(value).__name__}")
    if n > width:
        _enc_fail(f"{name} {value!r} longer than {width}")
    if not wire_is_alpha(src, n):
        _enc_fail(f"{name} {value!r} is not printable ASCII")
    memcpy(dst, src, n)
    memset(dst + n, 0x20, width - n)
    return 0


cdef int _set_alpha_right(unsigned char* dst, Py_ssize_t width, object value, str name) except -1:
    # Right-justified variant (SoupBinTCP session names, as nassau writes them).
    cdef unsigned char tmp[32]
    cdef Py_ssize_t n
    _set_alpha(tmp, width, value, name)
    n = wire_rstrip(tmp, width)
    memset(dst, 0x20, width - n)
    memcpy(dst + width - n, tmp, n)
    return 0


cdef int _char(object value, str name) except -1:
    # A one-character field from a 1-char str or bytes; returns the byte value.
    if isinstance(value, str):
        if PyUnicode_GET_LENGTH(value) == 1 and PyUnicode_IS_ASCII(value):
            return (<const unsigned char*>PyUnicode_DATA(value))[0]
        _enc_fail(f"{name} {value!r} is not one ASCII character")
    if isinstance(value, bytes):
        if PyBytes_GET_SIZE(value) == 1:
            return <unsigned char>PyBytes_AS_STRING(value)[0]
        _enc_fail(f"{name} {value!r} is not one byte")
    raise TypeError(f"{name} must be a 1-character str or bytes, not {type(value).__name__}")


cdef int _side(object value) except -1:
    # Side: 'B'/'S'/'T'/'E' (str or bytes), or SIDE_BUY / SIDE_SELL from common.pxd.
    if isinstance(value, int) and not isinstance(value, bool):
        if value == SIDE_BUY:
            return ord("B")
        if value == SIDE_SELL:
            return ord("S")
        _enc_fail(f"side {value!r} is neither SIDE_BUY nor SIDE_SELL")
    return _char(value, "side")


cdef uint32_t _u32(object value, str name) except? 0xFFFFFFFF:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < 0 or value > 0xFFFFFFFF:
        _enc_fail(f"{name} {value} outside 0..4294967295")
    return <uint32_t>value


cdef uint64_t _u64(object value, str name) except? 0xFFFFFFFFFFFFFFFF:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < 0 or value > 0xFFFFFFFFFFFFFFFF:
        _enc_fail(f"{name} {value} outside 0..2**64-1")
    return <uint64_t>value


# ---------------------------------------------------------------------------
# C layer: writers
# ---------------------------------------------------------------------------

cdef Py_ssize_t ouch_put_enter_order(unsigned char* out, Py_ssize_t cap,
                                     const OuchEnterOrder* m) except -1:
    _put_check_cap(cap, OUCH_LEN_ENTER_ORDER)
    _put_check_alpha(m.token, OUCH_W_TOKEN, "token")
    _put_check_char(m.side, OUCH_CS_SIDE, "side")
    _put_check_alpha(m.stock, OUCH_W_STOCK, "stock")
    _put_check_alpha(m.firm, OUCH_W_FIRM, "firm")
    _put_check_char(m.display, OUCH_CS_DISPLAY, "display")
    _put_check_char(m.capacity, OUCH_CS_CAPACITY, "capacity")
    _put_check_char(m.iso, OUCH_CS_YN, "iso")
    _put_check_char(m.cross_type, OUCH_CS_CROSS, "cross_type")
    _put_check_char(m.customer_type, OUCH_CS_CUSTOMER, "customer_type")
    out[0] = ord("O")
    memcpy(out + 1, m.token, 14)
    out[15] = m.side
    wire_put_u32(out + 16, m.shares)
    memcpy(out + 20, m.stock, 8)
    wire_put_u32(out + 28, m.price)
    wire_put_u32(out + 32, m.tif)
    memcpy(out + 36, m.firm, 4)
    out[40] = m.display
    out[41] = m.capacity
    out[42] = m.iso
    wire_put_u32(out + 43, m.min_qty)
    out[47] = m.cross_type
    out[48] = m.customer_type
    return OUCH_LEN_ENTER_ORDER


cdef Py_ssize_t ouch_put_replace_order(unsigned char* out, Py_ssize_t cap,
                                       const OuchReplaceOrder* m) except -1:
    _put_check_cap(cap, OUCH_LEN_REPLACE_ORDER)
    _put_check_alpha(m.existing_token, OUCH_W_TOKEN, "existing_token")
    _put_check_alpha(m.replacement_token, OUCH_W_TOKEN, "replacement_token")
    _put_check_char(m.display, OUCH_CS_DISPLAY, "display")
    _put_check_char(m.iso, OUCH_CS_YN, "iso")
    out[0] = ord("U")
    memcpy(out + 1, m.existing_token, 14)
    memcpy(out + 15, m.replacement_token, 14)
    wire_put_u32(out + 29, m.shares)
    wire_put_u32(out + 33, m.price)
    wire_put_u32(out + 37, m.tif)
    out[41] = m.display
    out[42] = m.iso
    wire_put_u32(out + 43, m.min_qty)
    return OUCH_LEN_REPLACE_ORDER


cdef Py_ssize_t ouch_put_cancel_order(unsigned char* out, Py_ssize_t cap,
                                      const OuchCancelOrder* m) except -1:
    _put_check_cap(cap, OUCH_LEN_CANCEL_ORDER)
    _put_check_alpha(m.token, OUCH_W_TOKEN, "token")
    out[0] = ord("X")
    memcpy(out + 1, m.token, 14)
    wire_put_u32(out + 15, m.shares)
    return OUCH_LEN_CANCEL_ORDER


cdef Py_ssize_t ouch_put_modify_order(unsigned char* out, Py_ssize_t cap,
                                      const OuchModifyOrder* m) except -1:
    _put_check_cap(cap, OUCH_LEN_MODIFY_ORDER)
    _put_check_alpha(m.token, OUCH_W_TOKEN, "token")
    _put_check_char(m.side, OUCH_CS_SIDE, "side")
    out[0] = ord("M")
    memcpy(out + 1, m.token, 14)
    out[15] = m.side
    wire_put_u32(out + 16, m.shares)
    return OUCH_LEN_MODIFY_ORDER


cdef Py_ssize_t ouch_put_system_event(unsigned char* out, Py_ssize_t cap,
                                      const OuchSystemEvent* m) except -1:
    _put_check_cap(cap, OUCH_LEN_SYSTEM_EVENT)
    _put_check_char(m.event_code, OUCH_CS_EVENT, "event_code")
    out[0] = ord("S")
    wire_put_u64(out + 1, m.timestamp)
    out[9] = m.event_code
    return OUCH_LEN_SYSTEM_EVENT


cdef int _put_accepted_body(unsigned char* out, const OuchAccepted* m) except -1:
    # Bytes 1..64 shared by Accepted and Replaced (timestamp .. order state).
    _put_check_alpha(m.token, OUCH_W_TOKEN, "token")
    _put_check_char(m.side, OUCH_CS_SIDE, "side")
    _put_check_alpha(m.stock, OUCH_W_STOCK, "stock")
    _put_check_alpha(m.firm, OUCH_W_FIRM, "firm")
    _put_check_char(m.display, OUCH_CS_DISPLAY, "display")
    _put_check_char(m.capacity, OUCH_CS_CAPACITY, "capacity")
    _put_check_char(m.iso, OUCH_CS_YN, "iso")
    _put_check_char(m.cross_type, OUCH_CS_CROSS, "cross_type")
    _put_check_char(m.order_state, OUCH_CS_STATE, "order_state")
    _put_check_char(m.bbo_weight, OUCH_CS_ALPHA, "bbo_weight")
    wire_put_u64(out + 1, m.timestamp)
    memcpy(out + 9, m.token, 14)
    out[23] = m.side
    wire_put_u32(out + 24, m.shares)
    memcpy(out + 28, m.stock, 8)
    wire_put_u32(out + 36, m.price)
    wire_put_u32(out + 40, m.tif)
    memcpy(out + 44, m.firm, 4)
    out[48] = m.display
    wire_put_u64(out + 49, m.order_ref)
    out[57] = m.capacity
    out[58] = m.iso
    wire_put_u32(out + 59, m.min_qty)
    out[63] = m.cross_type
    out[64] = m.order_state
    return 0


cdef Py_ssize_t ouch_put_accepted(unsigned char* out, Py_ssize_t cap,
                                  const OuchAccepted* m) except -1:
    _put_check_cap(cap, OUCH_LEN_ACCEPTED)
    _put_accepted_body(out, m)
    out[0] = ord("A")
    out[65] = m.bbo_weight
    return OUCH_LEN_ACCEPTED


cdef Py_ssize_t ouch_put_replaced(unsigned char* out, Py_ssize_t cap,
                                  const OuchReplaced* m) except -1:
    _put_check_cap(cap, OUCH_LEN_REPLACED)
    _put_accepted_body(out, &m.body)
    _put_check_alpha(m.previous_token, OUCH_W_TOKEN, "previous_token")
    out[0] = ord("U")
    memcpy(out + 65, m.previous_token, 14)
    out[79] = m.body.bbo_weight
    return OUCH_LEN_REPLACED


cdef Py_ssize_t ouch_put_canceled(unsigned char* out, Py_ssize_t cap,
                                  const OuchCanceled* m) except -1:
    _put_check_cap(cap, OUCH_LEN_CANCELED)
    _put_check_alpha(m.token, OUCH_W_TOKEN, "token")
    _put_check_char(m.reason, OUCH_CS_CANCEL, "reason")
    out[0] = ord("C")
    wire_put_u64(out + 1, m.timestamp)
    memcpy(out + 9, m.token, 14)
    wire_put_u32(out + 23, m.decrement_shares)
    out[27] = m.reason
    return OUCH_LEN_CANCELED


cdef Py_ssize_t ouch_put_executed(unsigned char* out, Py_ssize_t cap,
                                  const OuchExecuted* m) except -1:
    _put_check_cap(cap, OUCH_LEN_EXECUTED)
    _put_check_alpha(m.token, OUCH_W_TOKEN, "token")
    _put_check_char(m.liquidity_flag, OUCH_CS_ALPHA, "liquidity_flag")
    out[0] = ord("E")
    wire_put_u64(out + 1, m.timestamp)
    memcpy(out + 9, m.token, 14)
    wire_put_u32(out + 23, m.executed_shares)
    wire_put_u32(out + 27, m.price)
    out[31] = m.liquidity_flag
    wire_put_u64(out + 32, m.match_number)
    return OUCH_LEN_EXECUTED


cdef Py_ssize_t ouch_put_rejected(unsigned char* out, Py_ssize_t cap,
                                  const OuchRejected* m) except -1:
    _put_check_cap(cap, OUCH_LEN_REJECTED)
    _put_check_alpha(m.token, OUCH_W_TOKEN, "token")
    _put_check_char(m.reason, OUCH_CS_REJECT, "reason")
    out[0] = ord("J")
    wire_put_u64(out + 1, m.timestamp)
    memcpy(out + 9, m.token, 14)
    out[23] = m.reason
    return OUCH_LEN_REJECTED


# ---------------------------------------------------------------------------
# C layer: readers (fields checked in wire order, so the first bad one is named)
# ---------------------------------------------------------------------------

cdef int ouch_get_enter_order(const unsigned char* p, Py_ssize_t n, OuchEnterOrder* m) except -1:
    _check_len(p, n, OUCH_LEN_ENTER_ORDER)
    _get_alpha(p, 1, 14, "token", m.token)
    _get_char(p, 15, OUCH_CS_SIDE, "side", &m.side)
    m.shares = wire_get_u32(p + 16)
    _get_alpha(p, 20, 8, "stock", m.stock)
    m.price = wire_get_u32(p + 28)
    m.tif = wire_get_u32(p + 32)
    _get_alpha(p, 36, 4, "firm", m.firm)
    _get_char(p, 40, OUCH_CS_DISPLAY, "display", &m.display)
    _get_char(p, 41, OUCH_CS_CAPACITY, "capacity", &m.capacity)
    _get_char(p, 42, OUCH_CS_YN, "iso", &m.iso)
    m.min_qty = wire_get_u32(p + 43)
    _get_char(p, 47, OUCH_CS_CROSS, "cross_type", &m.cross_type)
    _get_char(p, 48, OUCH_CS_CUSTOMER, "customer_type", &m.customer_type)
    return 0


cdef int ouch_get_replace_order(const unsigned char* p, Py_ssize_t n,
                                OuchReplaceOrder* m) except -1:
    _check_len(p, n, OUCH_LEN_REPLACE_ORDER)
    _get_alpha(p, 1, 14, "existing_token", m.existing_token)
    _get_alpha(p, 15, 14, "replacement_token", m.replacement_token)
    m.shares = wire_get_u32(p + 29)
    m.price = wire_get_u32(p + 33)
    m.tif = wire_get_u32(p + 37)
    _get_char(p, 41, OUCH_CS_DISPLAY, "display", &m.display)
    _get_char(p, 42, OUCH_CS_YN, "iso", &m.iso)
    m.min_qty = wire_get_u32(p + 43)
    return 0


cdef int ouch_get_cancel_order(const unsigned char* p, Py_ssize_t n, OuchCancelOrder* m) except -1:
    _check_len(p, n, OUCH_LEN_CANCEL_ORDER)
    _get_alpha(p, 1, 14, "token", m.token)
    m.shares = wire_get_u32(p + 15)
    return 0


cdef int ouch_get_modify_order(const unsigned char* p, Py_ssize_t n, OuchModifyOrder* m) except -1:
    _check_len(p, n, OUCH_LEN_MODIFY_ORDER)
    _get_alpha(p, 1, 14, "token", m.token)
    _get_char(p, 15, OUCH_CS_SIDE, "side", &m.side)
    m.shares = wire_get_u32(p + 16)
    return 0


cdef int ouch_get_system_event(const unsigned char* p, Py_ssize_t n, OuchSystemEvent* m) except -1:
    _check_len(p, n, OUCH_LEN_SYSTEM_EVENT)
    m.timestamp = wire_get_u64(p + 1)
    _get_char(p, 9, OUCH_CS_EVENT, "event_code", &m.event_code)
    return 0


cdef int _get_accepted_body(const unsigned char* p, OuchAccepted* m) except -1:
    m.timestamp = wire_get_u64(p + 1)
    _get_alpha(p, 9, 14, "token", m.token)
    _get_char(p, 23, OUCH_CS_SIDE, "side", &m.side)
    m.shares = wire_get_u32(p + 24)
    _get_alpha(p, 28, 8, "stock", m.stock)
    m.price = wire_get_u32(p + 36)
    m.tif = wire_get_u32(p + 40)
    _get_alpha(p, 44, 4, "firm", m.firm)
    _get_char(p, 48, OUCH_CS_DISPLAY, "display", &m.display)
    m.order_ref = wire_get_u64(p + 49)
    _get_char(p, 57, OUCH_CS_CAPACITY, "capacity", &m.capacity)
    _get_char(p, 58, OUCH_CS_YN, "iso", &m.iso)
    m.min_qty = wire_get_u32(p + 59)
    _get_char(p, 63, OUCH_CS_CROSS, "cross_type", &m.cross_type)
    _get_char(p, 64, OUCH_CS_STATE, "order_state", &m.order_state)
    return 0


cdef int ouch_get_accepted(const unsigned char* p, Py_ssize_t n, OuchAccepted* m) except -1:
    _check_len(p, n, OUCH_LEN_ACCEPTED)
    _get_accepted_body(p, m)
    _get_char(p, 65, OUCH_CS_ALPHA, "bbo_weight", &m.bbo_weight)
    return 0


cdef int ouch_get_replaced(const unsigned char* p, Py_ssize_t n, OuchReplaced* m) except -1:
    _check_len(p, n, OUCH_LEN_REPLACED)
    _get_accepted_body(p, &m.body)
    _get_alpha(p, 65, 14, "previous_token", m.previous_token)
    _get_char(p, 79, OUCH_CS_ALPHA, "bbo_weight", &m.body.bbo_weight)
    return 0


cdef int ouch_get_canceled(const unsigned char* p, Py_ssize_t n, OuchCanceled* m) except -1:
    _check_len(p, n, OUCH_LEN_CANCELED)
    m.timestamp = wire_get_u64(p + 1)
    _get_alpha(p, 9, 14, "token", m.token)
    m.decrement_shares = wire_get_u32(p + 23)
    _get_char(p, 27, OUCH_CS_CANCEL, "reason", &m.reason)
    return 0


cdef int ouch_get_executed(const unsigned char* p, Py_ssize_t n, OuchExecuted* m) except -1:
    _check_len(p, n, OUCH_LEN_EXECUTED)
    m.timestamp = wire_get_u64(p + 1)
    _get_alpha(p, 9, 14, "token", m.token)
    m.executed_shares = wire_get_u32(p + 23)
    m.price = wire_get_u32(p + 27)
    _get_char(p, 31, OUCH_CS_ALPHA, "liquidity_flag", &m.liquidity_flag)
    m.match_number = wire_get_u64(p + 32)
    return 0


cdef int ouch_get_rejected(const unsigned char* p, Py_ssize_t n, OuchRejected* m) except -1:
    _check_len(p, n, OUCH_LEN_REJECTED)
    m.timestamp = wire_get_u64(p + 1)
    _get_alpha(p, 9, 14, "token", m.token)
    _get_char(p, 23, OUCH_CS_REJECT, "reason", &m.reason)
    return 0


# ---------------------------------------------------------------------------
# C layer: SoupBinTCP
# ---------------------------------------------------------------------------

cdef Py_ssize_t soup_put_header(unsigned char* out, Py_ssize_t cap, uint8_t ptype,
                                Py_ssize_t n) except -1:
    if n < 0 or n + 1 > SOUP_MAX_PACKET:
        _enc_fail(f"SoupBinTCP payload of {n} bytes does not fit a packet "
                  f"(max {SOUP_MAX_PACKET - 1})")
    _put_check_cap(cap, 3)
    wire_put_u16(out, <uint16_t>(n + 1))
    out[2] = ptype
    return 3


cdef Py_ssize_t soup_put_packet(unsigned char* out, Py_ssize_t cap, uint8_t ptype,
                                const unsigned char* payload, Py_ssize_t n) except -1:
    soup_put_header(out, cap, ptype, n)
    _put_check_cap(cap, 3 + n)
    if n:
        memcpy(out + 3, payload, n)
    return 3 + n


cdef void _put_seq(unsigned char* out, uint64_t seq) noexcept:
    # 20-byte right-justified ASCII decimal.
    cdef Py_ssize_t i = SOUP_W_SEQUENCE - 1
    memset(out, 0x20, SOUP_W_SEQUENCE)
    while True:
        out[i] = <unsigned char>(0x30 + seq % 10)
        seq //= 10
        i -= 1
        if seq == 0 or i < 0:
            break


cdef Py_ssize_t soup_put_login_request(unsigned char* out, Py_ssize_t cap,
                                       const SoupLoginRequest* m) except -1:
    _put_check_cap(cap, 2 + SOUP_LEN_LOGIN_REQUEST)
    _put_check_alpha(m.username, SOUP_W_USERNAME, "username")
    _put_check_alpha(m.password, SOUP_W_PASSWORD, "password")
    _put_check_alpha(m.session, SOUP_W_SESSION, "session")
    wire_put_u16(out, SOUP_LEN_LOGIN_REQUEST)
    out[2] = ord("L")
    memcpy(out + 3, m.username, 6)
    memcpy(out + 9, m.password, 10)
    memcpy(out + 19, m.session, 10)
    _put_seq(out + 29, m.sequence)
    return 2 + SOUP_LEN_LOGIN_REQUEST


cdef Py_ssize_t soup_put_login_accepted(unsigned char* out, Py_ssize_t cap,
                                        const SoupLoginAccepted* m) except -1:
    _put_check_cap(cap, 2 + SOUP_LEN_LOGIN_ACCEPTED)
    _put_check_alpha(m.session, SOUP_W_SESSION, "session")
    wire_put_u16(out, SOUP_LEN_LOGIN_ACCEPTED)
    out[2] = ord("A")
    memcpy(out + 3, m.session, 10)
    _put_seq(out + 13, m.sequence)
    return 2 + SOUP_LEN_LOGIN_ACCEPTED


cdef int _soup_fail(object cls, str ptype, Py_ssize_t offset, str text) except -1:
    raise cls(f"SoupBinTCP '{ptype}': {text} (offset {offset})", ptype, offset)


cdef int _soup_text(const unsigned char* p, Py_ssize_t width, unsigned char* out, str ptype,
                    Py_ssize_t off, str name) except -1:
    # Tolerant alpha: spaces and NULs allowed anywhere as padding, other bytes printable.
    cdef Py_ssize_t i
    for i in range(width):
        if p[i] != 0 and not (_CS[p[i]] & OUCH_CS_ALPHA):
            _soup_fail(SoupFieldError, ptype, off + i, f"{name} is not printable ASCII")
        out[i] = p[i] if p[i] != 0 else 0x20
    return 0


cdef int _soup_seq(const unsigned char* p, uint64_t* out, str ptype, Py_ssize_t off) except -1:
    # 20-byte ASCII decimal, padded with spaces/NULs on either side; blank = 0.
    cdef Py_ssize_t i = 0, j = SOUP_W_SEQUENCE
    cdef uint64_t v = 0
    cdef uint64_t d
    while i < j and (p[i] == 0x20 or p[i] == 0):
        i += 1
    while j > i and (p[j - 1] == 0x20 or p[j - 1] == 0):
        j -= 1
    while i < j:
        if p[i] < 0x30 or p[i] > 0x39:
            _soup_fail(SoupFieldError, ptype, off + i, "sequence number is not decimal")
        d = p[i] - 0x30
        if v > (0xFFFFFFFFFFFFFFFF - d) // 10:
            _soup_fail(SoupFieldError, ptype, off + i, "sequence number above 2**64-1")
        v = v * 10 + d
        i += 1
    out[0] = v
    return 0


cdef int soup_get_login_request(const unsigned char* p, Py_ssize_t n,
                                SoupLoginRequest* m) except -1:
    if n != SOUP_LEN_LOGIN_REQUEST - 1:
        _soup_fail(SoupPacketLengthError, "L", 0, f"login request payload of {n} bytes, need 46")
    _soup_text(p, 6, m.username, "L", 0, "username")
    _soup_text(p + 6, 10, m.password, "L", 6, "password")
    _soup_text(p + 16, 10, m.session, "L", 16, "session")
    _soup_seq(p + 26, &m.sequence, "L", 26)
    return 0


cdef int soup_get_login_accepted(const unsigned char* p, Py_ssize_t n,
                                 SoupLoginAccepted* m) except -1:
    if n != SOUP_LEN_LOGIN_ACCEPTED - 1:
        _soup_fail(SoupPacketLengthError, "A", 0, f"login accepted payload of {n} bytes, need 30")
    _soup_text(p, 10, m.session, "A", 0, "session")
    _soup_seq(p + 10, &m.sequence, "A", 10)
    return 0


# ---------------------------------------------------------------------------
# Python layer: decoders
# ---------------------------------------------------------------------------

cdef tuple _tuple_enter_order(const OuchEnterOrder* m):
    return ("O", _alpha(m.token, 14), _chr(m.side), m.shares, _alpha(m.stock, 8), m.price, m.tif,
            _alpha(m.firm, 4), _chr(m.display), _chr(m.capacity), _chr(m.iso), m.min_qty,
            _chr(m.cross_type), _chr(m.customer_type))


cdef tuple _tuple_accepted_fields(const OuchAccepted* m):
    return (m.timestamp, _alpha(m.token, 14), _chr(m.side), m.shares, _alpha(m.stock, 8), m.price,
            m.tif, _alpha(m.firm, 4), _chr(m.display), m.order_ref, _chr(m.capacity), _chr(m.iso),
            m.min_qty, _chr(m.cross_type), _chr(m.order_state))


cdef tuple _decode_inbound(const unsigned char* p, Py_ssize_t n):
    cdef OuchEnterOrder o
    cdef OuchReplaceOrder u
    cdef OuchCancelOrder x
    cdef OuchModifyOrder mo
    if n < 1:
        raise OuchTruncatedError("OUCH: empty message (offset 0)", None, 0)
    cdef uint8_t t = p[0]
    if t == ord("O"):
        ouch_get_enter_order(p, n, &o)
        return _tuple_enter_order(&o)
    if t == ord("U"):
        ouch_get_replace_order(p, n, &u)
        return ("U", _alpha(u.existing_token, 14), _alpha(u.replacement_token, 14), u.shares,
                u.price, u.tif, _chr(u.display), _chr(u.iso), u.min_qty)
    if t == ord("X"):
        ouch_get_cancel_order(p, n, &x)
        return ("X", _alpha(x.token, 14), x.shares)
    if t == ord("M"):
        ouch_get_modify_order(p, n, &mo)
        return ("M", _alpha(mo.token, 14), _chr(mo.side), mo.shares)
    _dec_fail(OuchUnknownMessageError, t, 0, "unknown inbound message type")


cdef tuple _decode_outbound(const unsigned char* p, Py_ssize_t n):
    cdef OuchSystemEvent s
    cdef OuchAccepted a
    cdef OuchReplaced r
    cdef OuchCanceled c
    cdef OuchExecuted e
    cdef OuchRejected j
    if n < 1:
        raise OuchTruncatedError("OUCH: empty message (offset 0)", None, 0)
    cdef uint8_t t = p[0]
    if t == ord("E"):
        ouch_get_executed(p, n, &e)
        return ("E", e.timestamp, _alpha(e.token, 14), e.executed_shares, e.price,
                _chr(e.liquidity_flag), e.match_number)
    if t == ord("A"):
        ouch_get_accepted(p, n, &a)
        return ("A",) + _tuple_accepted_fields(&a) + (_chr(a.bbo_weight),)
    if t == ord("C"):
        ouch_get_canceled(p, n, &c)
        return ("C", c.timestamp, _alpha(c.token, 14), c.decrement_shares, _chr(c.reason))
    if t == ord("U"):
        ouch_get_replaced(p, n, &r)
        return (("U",) + _tuple_accepted_fields(&r.body)
                + (_alpha(r.previous_token, 14), _chr(r.body.bbo_weight)))
    if t == ord("J"):
        ouch_get_rejected(p, n, &j)
        return ("J", j.timestamp, _alpha(j.token, 14), _chr(j.reason))
    if t == ord("S"):
        ouch_get_system_event(p, n, &s)
        return ("S", s.timestamp, _chr(s.event_code))
    _dec_fail(OuchUnknownMessageError, t, 0, "unknown outbound message type")


def decode_inbound(msg):
    """Decode one client-to-venue OUCH 4.2 message (O, U, X, M) into a tuple.

    ('O', token, side, shares, stock, price, tif, firm, display, capacity, iso,
          min_qty, cross_type, customer_type)
    ('U', existing_token, replacement_token, shares, price, tif, display, iso, min_qty)
    ('X', token, shares)
    ('M', token, side, shares)
    """
    cdef WireInput r
    wire_input_open(msg, &r)
    try:
        return _decode_inbound(r.p, r.n)
    finally:
        wire_input_close(&r)


def decode_outbound(msg):
    """Decode one venue-to-client OUCH 4.2 message (S, A, U, C, E, J) into a tuple.

    ('S', timestamp, event_code)
    ('A', timestamp, token, side, shares, stock, price, tif, firm, display, order_ref,
          capacity, iso, min_qty, cross_type, order_state, bbo_weight)
    ('U', timestamp, token, side, shares, stock, price, tif, firm, display, order_ref,
          capacity, iso, min_qty, cross_type, order_state, previous_token, bbo_weight)
    ('C', timestamp, token, decrement_shares, reason)
    ('E', timestamp, token, executed_shares, price, liquidity_flag, match_number)
    ('J', timestamp, token, reason)
    """
    cdef WireInput r
    wire_input_open(msg, &r)
    try:
        return _decode_outbound(r.p, r.n)
    finally:
        wire_input_close(&r)


def decode_login_request(payload):
    """SoupBinTCP 'L' payload (46 bytes) -> (username, password, session, sequence)."""
    cdef SoupLoginRequest m
    cdef WireInput r
    wire_input_open(payload, &r)
    try:
        soup_get_login_request(r.p, r.n, &m)
    finally:
        wire_input_close(&r)
    return (_strip(m.username, 6), _strip(m.password, 10), _strip(m.session, 10), m.sequence)


def decode_login_accepted(payload):
    """SoupBinTCP 'A' payload (30 bytes) -> (session, sequence of the next 'S' packet)."""
    cdef SoupLoginAccepted m
    cdef WireInput r
    wire_input_open(payload, &r)
    try:
        soup_get_login_accepted(r.p, r.n, &m)
    finally:
        wire_input_close(&r)
    return (_strip(m.session, 10), m.sequence)


def decode_login_rejected(payload):
    """SoupBinTCP 'J' payload (1 byte) -> reason: 'A' not authorized, 'S' session unavailable."""
    cdef WireInput r
    cdef uint8_t c
    wire_input_open(payload, &r)
    try:
        if r.n != 1:
            _soup_fail(SoupPacketLengthError, "J", 0,
                       f"login rejected payload of {r.n} bytes, need 1")
        c = r.p[0]
    finally:
        wire_input_close(&r)
    if not (_CS[c] & OUCH_CS_LOGIN_REJECT):
        _soup_fail(SoupFieldError, "J", 0, f"reject reason {_show(c)} not in A/S")
    return _chr(c)


cdef str _strip(const unsigned char* p, Py_ssize_t width):
    # Spaces on both sides removed (session names may be right-justified).
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j = wire_rstrip(p, width)
    while i < j and p[i] == 0x20:
        i += 1
    return (<const char*>p)[i:j].decode("ascii")


# ---------------------------------------------------------------------------
# Python layer: encoders into a caller's bytearray
# ---------------------------------------------------------------------------

cdef unsigned char* _body(bytearray buf, Py_ssize_t offset, bint framed,
                          Py_ssize_t* cap) except NULL:
    # Where the message body goes; cap receives the room left for it.
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(buf)
    if offset < 0 or offset > size:
        raise OuchBufferTooSmallError(f"offset {offset} outside the buffer (size {size})")
    cap[0] = size - offset - (3 if framed else 0)
    if cap[0] < 0:
        raise OuchBufferTooSmallError(
            f"buffer has {size - offset} bytes free, need a 3-byte header")
    return <unsigned char*>PyByteArray_AS_STRING(buf) + offset + (3 if framed else 0)


cdef inline Py_ssize_t _finish(bytearray buf, Py_ssize_t offset, bint framed, uint8_t ptype,
                               Py_ssize_t n) except -1:
    cdef unsigned char* out
    if not framed:
        return offset + n
    out = <unsigned char*>PyByteArray_AS_STRING(buf) + offset
    wire_put_u16(out, <uint16_t>(n + 1))
    out[2] = ptype
    return offset + 3 + n


def pack_enter_order(bytearray buf, Py_ssize_t offset, token, side, shares, stock, price,
                     tif=OUCH_TIF_SYSTEM_HOURS, firm="", display="Y", capacity="A", iso="N",
                     min_qty=0, cross_type="N", customer_type=" ", bint framed=True):
    """Write an Enter Order ('O', 49 bytes; framed in a SoupBinTCP 'U' packet); returns the end.

    side: 'B' 'S' 'T' 'E' or SIDE_BUY / SIDE_SELL; price: price4 (MARKET_PRICE for market)."""
    cdef OuchEnterOrder m
    cdef Py_ssize_t cap
    _set_alpha(m.token, 14, token, "token")
    m.side = <uint8_t>_side(side)
    m.shares = _u32(shares, "shares")
    _set_alpha(m.stock, 8, stock, "stock")
    m.price = _u32(price, "price")
    m.tif = _u32(tif, "tif")
    _set_alpha(m.firm, 4, firm, "firm")
    m.display = <uint8_t>_char(display, "display")
    m.capacity = <uint8_t>_char(capacity, "capacity")
    m.iso = <uint8_t>_char(iso, "iso")
    m.min_qty = _u32(min_qty, "min_qty")
    m.cross_type = <uint8_t>_char(cross_type, "cross_type")
    m.customer_type = <uint8_t>_char(customer_type, "customer_type")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("U"), ouch_put_enter_order(out, cap, &m))


def pack_replace_order(bytearray buf, Py_ssize_t offset, existing_token, replacement_token, shares,
                       price, tif=OUCH_TIF_SYSTEM_HOURS, display="Y", iso="N", min_qty=0,
                       bint framed=True):
    """Write a Replace Order ('U', 47 bytes; framed in a SoupBinTCP 'U' packet)."""
    cdef OuchReplaceOrder m
    cdef Py_ssize_t cap
    _set_alpha(m.existing_token, 14, existing_token, "existing_token")
    _set_alpha(m.replacement_token, 14, replacement_token, "replacement_token")
    m.shares = _u32(shares, "shares")
    m.price = _u32(price, "price")
    m.tif = _u32(tif, "tif")
    m.display = <uint8_t>_char(display, "display")
    m.iso = <uint8_t>_char(iso, "iso")
    m.min_qty = _u32(min_qty, "min_qty")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("U"), ouch_put_replace_order(out, cap, &m))


def pack_cancel_order(bytearray buf, Py_ssize_t offset, token, shares=0, bint framed=True):
    """Write a Cancel Order ('X', 19 bytes): shares = new intended total, 0 cancels all."""
    cdef OuchCancelOrder m
    cdef Py_ssize_t cap
    _set_alpha(m.token, 14, token, "token")
    m.shares = _u32(shares, "shares")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("U"), ouch_put_cancel_order(out, cap, &m))


def pack_modify_order(bytearray buf, Py_ssize_t offset, token, side, shares, bint framed=True):
    """Write a Modify Order ('M', 20 bytes, OUCH 4.2)."""
    cdef OuchModifyOrder m
    cdef Py_ssize_t cap
    _set_alpha(m.token, 14, token, "token")
    m.side = <uint8_t>_side(side)
    m.shares = _u32(shares, "shares")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("U"), ouch_put_modify_order(out, cap, &m))


def pack_system_event(bytearray buf, Py_ssize_t offset, timestamp, event_code, bint framed=True):
    """Write a System Event ('S', 10 bytes; framed in a SoupBinTCP 'S' packet)."""
    cdef OuchSystemEvent m
    cdef Py_ssize_t cap
    m.timestamp = _u64(timestamp, "timestamp")
    m.event_code = <uint8_t>_char(event_code, "event_code")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("S"), ouch_put_system_event(out, cap, &m))


cdef int _fill_accepted(OuchAccepted* m, timestamp, token, side, shares, stock, price, tif, firm,
                        display, order_ref, capacity, iso, min_qty, cross_type, order_state,
                        bbo_weight) except -1:
    m.timestamp = _u64(timestamp, "timestamp")
    _set_alpha(m.token, 14, token, "token")
    m.side = <uint8_t>_side(side)
    m.shares = _u32(shares, "shares")
    _set_alpha(m.stock, 8, stock, "stock")
    m.price = _u32(price, "price")
    m.tif = _u32(tif, "tif")
    _set_alpha(m.firm, 4, firm, "firm")
    m.display = <uint8_t>_char(display, "display")
    m.order_ref = _u64(order_ref, "order_ref")
    m.capacity = <uint8_t>_char(capacity, "capacity")
    m.iso = <uint8_t>_char(iso, "iso")
    m.min_qty = _u32(min_qty, "min_qty")
    m.cross_type = <uint8_t>_char(cross_type, "cross_type")
    m.order_state = <uint8_t>_char(order_state, "order_state")
    m.bbo_weight = <uint8_t>_char(bbo_weight, "bbo_weight")
    return 0


def pack_accepted(bytearray buf, Py_ssize_t offset, timestamp, token, side, shares, stock, price,
                  tif, firm, display, order_ref, capacity, iso, min_qty, cross_type, order_state,
                  bbo_weight=" ", bint framed=True):
    """Write an Accepted ('A', 66 bytes; framed in a SoupBinTCP 'S' packet)."""
    cdef OuchAccepted m
    cdef Py_ssize_t cap
    _fill_accepted(&m, timestamp, token, side, shares, stock, price, tif, firm, display, order_ref,
                   capacity, iso, min_qty, cross_type, order_state, bbo_weight)
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("S"), ouch_put_accepted(out, cap, &m))


def pack_replaced(bytearray buf, Py_ssize_t offset, timestamp, token, side, shares, stock, price,
                  tif, firm, display, order_ref, capacity, iso, min_qty, cross_type, order_state,
                  previous_token, bbo_weight=" ", bint framed=True):
    """Write a Replaced ('U', 80 bytes; framed in a SoupBinTCP 'S' packet); token = new token."""
    cdef OuchReplaced m
    cdef Py_ssize_t cap
    _fill_accepted(&m.body, timestamp, token, side, shares, stock, price, tif, firm, display,
                   order_ref, capacity, iso, min_qty, cross_type, order_state, bbo_weight)
    _set_alpha(m.previous_token, 14, previous_token, "previous_token")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("S"), ouch_put_replaced(out, cap, &m))


def pack_canceled(bytearray buf, Py_ssize_t offset, timestamp, token, decrement_shares, reason,
                  bint framed=True):
    """Write a Canceled ('C', 28 bytes): decrement_shares is incremental, not cumulative."""
    cdef OuchCanceled m
    cdef Py_ssize_t cap
    m.timestamp = _u64(timestamp, "timestamp")
    _set_alpha(m.token, 14, token, "token")
    m.decrement_shares = _u32(decrement_shares, "decrement_shares")
    m.reason = <uint8_t>_char(reason, "reason")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("S"), ouch_put_canceled(out, cap, &m))


def pack_executed(bytearray buf, Py_ssize_t offset, timestamp, token, executed_shares, price,
                  liquidity_flag, match_number, bint framed=True):
    """Write an Executed ('E', 40 bytes)."""
    cdef OuchExecuted m
    cdef Py_ssize_t cap
    m.timestamp = _u64(timestamp, "timestamp")
    _set_alpha(m.token, 14, token, "token")
    m.executed_shares = _u32(executed_shares, "executed_shares")
    m.price = _u32(price, "price")
    m.liquidity_flag = <uint8_t>_char(liquidity_flag, "liquidity_flag")
    m.match_number = _u64(match_number, "match_number")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("S"), ouch_put_executed(out, cap, &m))


def pack_rejected(bytearray buf, Py_ssize_t offset, timestamp, token, reason, bint framed=True):
    """Write a Rejected ('J', 24 bytes)."""
    cdef OuchRejected m
    cdef Py_ssize_t cap
    m.timestamp = _u64(timestamp, "timestamp")
    _set_alpha(m.token, 14, token, "token")
    m.reason = <uint8_t>_char(reason, "reason")
    cdef unsigned char* out = _body(buf, offset, framed, &cap)
    return _finish(buf, offset, framed, ord("S"), ouch_put_rejected(out, cap, &m))


# SoupBinTCP packets ---------------------------------------------------------------

_SOUP_TYPES = frozenset("+AJSHZLURO")


def pack_soup(bytearray buf, Py_ssize_t offset, ptype, payload=b""):
    """Write any SoupBinTCP packet: u16 length, type byte, payload. Returns the end offset."""
    cdef Py_ssize_t cap
    cdef WireInput r
    cdef int t = _char(ptype, "packet type")
    if chr(t) not in _SOUP_TYPES:
        _enc_fail(f"packet type {chr(t)!r} is not SoupBinTCP 3.00")
    cdef unsigned char* out = _body(buf, offset, False, &cap)
    wire_input_open(payload, &r)
    try:
        return offset + soup_put_packet(out, cap, <uint8_t>t, r.p, r.n)
    finally:
        wire_input_close(&r)


def pack_login_request(bytearray buf, Py_ssize_t offset, username, password, session="",
                       sequence=0):
    """Write a Login Request ('L'): username/password left-justified, session and
    sequence right-justified (nassau's form). sequence 1 = from the start, 0 = current end."""
    cdef SoupLoginRequest m
    cdef Py_ssize_t cap
    _set_alpha(m.username, 6, username, "username")
    _set_alpha(m.password, 10, password, "password")
    _set_alpha_right(m.session, 10, session, "session")
    m.sequence = _u64(sequence, "sequence")
    cdef unsigned char* out = _body(buf, offset, False, &cap)
    return offset + soup_put_login_request(out, cap, &m)


def pack_login_accepted(bytearray buf, Py_ssize_t offset, session, sequence):
    """Write a Login Accepted ('A'): sequence = number of the next 'S' packet."""
    cdef SoupLoginAccepted m
    cdef Py_ssize_t cap
    _set_alpha_right(m.session, 10, session, "session")
    m.sequence = _u64(sequence, "sequence")
    cdef unsigned char* out = _body(buf, offset, False, &cap)
    return offset + soup_put_login_accepted(out, cap, &m)


def pack_login_rejected(bytearray buf, Py_ssize_t offset, reason):
    """Write a Login Rejected ('J'): reason 'A' not authorized, 'S' session not available."""
    cdef unsigned char c = <unsigned char>_char(reason, "reason")
    cdef Py_ssize_t cap
    if not (_CS[c] & OUCH_CS_LOGIN_REJECT):
        _enc_fail(f"login reject reason {chr(c)!r} not in A/S")
    cdef unsigned char* out = _body(buf, offset, False, &cap)
    return offset + soup_put_packet(out, cap, ord("J"), &c, 1)


def pack_sequenced(bytearray buf, Py_ssize_t offset, payload):
    """Write a Sequenced Data packet ('S') around an already encoded message."""
    return pack_soup(buf, offset, "S", payload)


def pack_unsequenced(bytearray buf, Py_ssize_t offset, payload):
    """Write an Unsequenced Data packet ('U') around an already encoded message."""
    return pack_soup(buf, offset, "U", payload)


def pack_debug(bytearray buf, Py_ssize_t offset, text):
    """Write a Debug packet ('+'); text is str (ASCII) or bytes."""
    if isinstance(text, str):
        text = (<str>text).encode("ascii")
    return pack_soup(buf, offset, "+", text)


def pack_server_heartbeat(bytearray buf, Py_ssize_t offset):
    """Write a Server Heartbeat ('H')."""
    return pack_soup(buf, offset, "H")


def pack_client_heartbeat(bytearray buf, Py_ssize_t offset):
    """Write a Client Heartbeat ('R')."""
    return pack_soup(buf, offset, "R")


def pack_logout_request(bytearray buf, Py_ssize_t offset):
    """Write a Logout Request ('O')."""
    return pack_soup(buf, offset, "O")


def pack_end_of_session(bytearray buf, Py_ssize_t offset):
    """Write an End of Session ('Z')."""
    return pack_soup(buf, offset, "Z")


# ---------------------------------------------------------------------------
# OuchWriter: a reusable growing output buffer
# ---------------------------------------------------------------------------

@cython.final
cdef class OuchWriter:
    """Appends framed SoupBinTCP packets to a buffer it owns and reuses.

    Each method takes the arguments of the matching ``pack_*`` function without
    ``buf`` / ``offset`` and appends one packet; ``take()`` returns the bytes
    written since the previous ``take()``; ``view()`` a memoryview of them (valid
    until the next write)."""

    def __cinit__(self, Py_ssize_t capacity=4096):
        if capacity < 128:
            capacity = 128
        self._buf = bytearray(capacity)
        self._pos = 0
        self.packets = 0

    cdef unsigned char* _reserve(self, Py_ssize_t need) except NULL:
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self._buf)
        if self._pos + need > size:
            while self._pos + need > size:
                size *= 2
            PyByteArray_Resize(self._buf, size)
        return <unsigned char*>PyByteArray_AS_STRING(self._buf) + self._pos

    cdef object _append(self, object fn, Py_ssize_t need, tuple args, dict kwargs):
        self._reserve(need)
        self._pos = fn(self._buf, self._pos, *args, **kwargs)
        self.packets += 1
        return self._pos

    @property
    def pending(self):
        """Bytes written since the last take()."""
        return self._pos

    def take(self):
        """The bytes written since the last take(), as bytes; resets the writer."""
        cdef bytes out = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self._buf), self._pos)
        self._pos = 0
        return out

    def view(self):
        """A memoryview of the bytes written since the last take() (no copy)."""
        return memoryview(self._buf)[:self._pos]

    def clear(self):
        self._pos = 0

    def enter_order(self, *args, **kwargs):
        return self._append(pack_enter_order, 3 + OUCH_LEN_ENTER_ORDER, args, kwargs)

    def replace_order(self, *args, **kwargs):
        return self._append(pack_replace_order, 3 + OUCH_LEN_REPLACE_ORDER, args, kwargs)

    def cancel_order(self, *args, **kwargs):
        return self._append(pack_cancel_order, 3 + OUCH_LEN_CANCEL_ORDER, args, kwargs)

    def modify_order(self, *args, **kwargs):
        return self._append(pack_modify_order, 3 + OUCH_LEN_MODIFY_ORDER, args, kwargs)

    def system_event(self, *args, **kwargs):
        return self._append(pack_system_event, 3 + OUCH_LEN_SYSTEM_EVENT, args, kwargs)

    def accepted(self, *args, **kwargs):
        return self._append(pack_accepted, 3 + OUCH_LEN_ACCEPTED, args, kwargs)

    def replaced(self, *args, **kwargs):
        return self._append(pack_replaced, 3 + OUCH_LEN_REPLACED, args, kwargs)

    def canceled(self, *args, **kwargs):
        return self._append(pack_canceled, 3 + OUCH_LEN_CANCELED, args, kwargs)

    def executed(self, *args, **kwargs):
        return self._append(pack_executed, 3 + OUCH_LEN_EXECUTED, args, kwargs)

    def rejected(self, *args, **kwargs):
        return self._append(pack_rejected, 3 + OUCH_LEN_REJECTED, args, kwargs)

    def login_request(self, *args, **kwargs):
        return self._append(pack_login_request, 2 + SOUP_LEN_LOGIN_REQUEST, args, kwargs)

    def login_accepted(self, *args, **kwargs):
        return self._append(pack_login_accepted, 2 + SOUP_LEN_LOGIN_ACCEPTED, args, kwargs)

    def login_rejected(self, reason):
        return self._append(pack_login_rejected, 3 + 1, (reason,), {})

    def soup(self, ptype, payload=b""):
        return self._append(pack_soup, 3 + len(payload), (ptype, payload), {})

    def sequenced(self, payload):
        return self._append(pack_soup, 3 + len(payload), ("S", payload), {})

    def unsequenced(self, payload):
        return self._append(pack_soup, 3 + len(payload), ("U", payload), {})

    def debug(self, text):
        return self._append(pack_debug, 3 + len(text), (text,), {})

    def server_heartbeat(self):
        return self._append(pack_soup, 3, ("H",), {})

    def client_heartbeat(self):
        return self._append(pack_soup, 3, ("R",), {})

    def logout_request(self):
        return self._append(pack_soup, 3, ("O",), {})

    def end_of_session(self):
        return self._append(pack_soup, 3, ("Z",), {})


# ---------------------------------------------------------------------------
# SoupFramer: streaming de-framing
# ---------------------------------------------------------------------------

# Per packet type: 0 unknown, -1 any length >= 1, else the exact length field.
cdef int _SOUP_LEN[256]
# Per packet type: bit 1 << role for the roles that may receive it.
cdef uint8_t _SOUP_ROLE[256]


cdef void _soup_init() noexcept:
    cdef int i
    for i in range(256):
        _SOUP_LEN[i] = 0
        _SOUP_ROLE[i] = 0
    # sent by the server (received by a client)
    _SOUP_LEN[ord("A")] = SOUP_LEN_LOGIN_ACCEPTED
    _SOUP_LEN[ord("J")] = SOUP_LEN_LOGIN_REJECTED
    _SOUP_LEN[ord("S")] = -1
    _SOUP_LEN[ord("H")] = SOUP_LEN_EMPTY
    _SOUP_LEN[ord("Z")] = SOUP_LEN_EMPTY
    # sent by the client (received by a server)
    _SOUP_LEN[ord("L")] = SOUP_LEN_LOGIN_REQUEST
    _SOUP_LEN[ord("U")] = -1
    _SOUP_LEN[ord("R")] = SOUP_LEN_EMPTY
    _SOUP_LEN[ord("O")] = SOUP_LEN_EMPTY
    # either
    _SOUP_LEN[ord("+")] = -1
    for i in b"AJSHZ+":
        _SOUP_ROLE[i] |= (1 << SOUP_ROLE_ANY) | (1 << SOUP_ROLE_CLIENT)
    for i in b"LURO+":
        _SOUP_ROLE[i] |= (1 << SOUP_ROLE_ANY) | (1 << SOUP_ROLE_SERVER)


_soup_init()

_ROLES = {"any": SOUP_ROLE_ANY, "client": SOUP_ROLE_CLIENT, "server": SOUP_ROLE_SERVER}


@cython.final
cdef class SoupFramer:
    """Streaming SoupBinTCP de-framer.

    ``feed(data)`` takes any chunk of the byte stream (bytes / bytearray /
    memoryview, down to one byte) and returns the packets it completed as
    ``[(type, payload), ...]`` (type a 1-character str, payload bytes without the
    type byte). Feeding a stream whole or one byte at a time gives the same
    packets. role: "client" accepts only what a server sends (+ A J S H Z),
    "server" only what a client sends (+ L U R O), "any" both. max_packet bounds
    the length field (type byte + payload, at most 65535).

    Errors (checked as soon as the bytes are there, so chunking does not change
    them): a length field of 0 or above max_packet, or wrong for a fixed-size type
    (A 31, J 2, L 47, H Z R O 1), is SoupPacketLengthError; a type not accepted is
    SoupUnknownPacketError. The error's ``offset`` is the stream offset of the bad
    packet and ``packets`` the packets completed earlier in the same call. A
    framing error loses the stream: the framer latches ``broken`` and every later
    feed() raises SoupStreamBrokenError (the session must disconnect)."""

    def __cinit__(self, Py_ssize_t max_packet=SOUP_MAX_PACKET, role="any"):
        if max_packet < 1 or max_packet > SOUP_MAX_PACKET:
            raise ValueError(f"max_packet {max_packet} outside 1..{SOUP_MAX_PACKET}")
        if role not in _ROLES:
            raise ValueError(f"role {role!r} not one of {sorted(_ROLES)}")
        self.max_packet = max_packet
        self.role = _ROLES[role]
        self._pending_cap = 2 + max_packet
        self._pending = <unsigned char*>malloc(self._pending_cap)
        if self._pending == NULL:
            raise MemoryError()
        self._pending_len = 0
        self.broken = False
        self.packets = 0
        self.bytes_fed = 0

    def __dealloc__(self):
        free(self._pending)

    @property
    def buffered(self):
        """Bytes of an incomplete packet held until more data arrives."""
        return self._pending_len

    cdef int _check_header(self, const unsigned char* p, Py_ssize_t avail) except -1:
        cdef Py_ssize_t length = wire_get_u16(p)
        cdef int want
        cdef uint8_t t
        if length == 0:
            raise SoupPacketLengthError(
                "SoupBinTCP: length field 0 (a packet has at least its type byte)")
        if length > self.max_packet:
            raise SoupPacketLengthError(
                f"SoupBinTCP: length field {length} above max_packet {self.max_packet}")
        if avail >= 3:
            t = p[2]
            want = _SOUP_LEN[t]
            if want == 0 or not (_SOUP_ROLE[t] & (1 << self.role)):
                raise SoupUnknownPacketError(
                    f"SoupBinTCP: packet type {_show(t)} not accepted here", chr(t))
            if want > 0 and length != want:
                raise SoupPacketLengthError(
                    f"SoupBinTCP '{chr(t)}': length field {length}, the type has {want}", chr(t))
        return 0

    cdef int _checked(self, const unsigned char* p, Py_ssize_t avail, uint64_t stream_off,
                      list out) except -1:
        try:
            self._check_header(p, avail)
        except OuchDecodeError as exc:
            self.broken = True
            exc.offset = stream_off
            exc.packets = out
            raise
        return 0

    cpdef list feed(self, object data):
        cdef WireInput r
        cdef Py_ssize_t n, pos = 0, need, take, length
        cdef const unsigned char* p
        cdef list out = []
        cdef uint64_t base = self.bytes_fed
        if self.broken:
            raise SoupStreamBrokenError("SoupBinTCP: stream already broken by a framing error")
        wire_input_open(data, &r)
        p = r.p
        n = r.n
        try:
            # 1. complete the packet left over from the previous call
            if self._pending_len > 0:
                if self._pending_len < 3:
                    take = min(3 - self._pending_len, n)
                    memcpy(self._pending + self._pending_len, p, take)
                    self._pending_len += take
                    pos = take
                    if self._pending_len >= 2:
                        self._checked(self._pending, self._pending_len,
                                      base + pos - self._pending_len, out)
                if self._pending_len >= 2:
                    need = 2 + wire_get_u16(self._pending) - self._pending_len
                    take = min(need, n - pos)
                    memcpy(self._pending + self._pending_len, p + pos, take)
                    self._pending_len += take
                    pos += take
                    if take == need:
                        out.append((chr(self._pending[2]), PyBytes_FromStringAndSize(
                            <const char*>self._pending + 3, self._pending_len - 3)))
                        self._pending_len = 0
            # 2. whole packets straight from the input (no copy into _pending)
            if self._pending_len == 0:
                while n - pos >= 2:
                    self._checked(p + pos, n - pos, base + pos, out)
                    length = wire_get_u16(p + pos)
                    if n - pos < 2 + length:
                        break
                    out.append((chr(p[pos + 2]), PyBytes_FromStringAndSize(
                        <const char*>p + pos + 3, length - 1)))
                    pos += 2 + length
                # 3. keep the tail (an incomplete packet) for the next call
                if pos < n:
                    memcpy(self._pending, p + pos, n - pos)
                    self._pending_len = n - pos
            self.bytes_fed += n
        finally:
            wire_input_close(&r)
        self.packets += len(out)
        return out

    def reset(self):
        """Forget any partial packet and the broken state (after a reconnect)."""
        self._pending_len = 0
        self.broken = False


# ---------------------------------------------------------------------------
# Price helpers (the edge between price4 on the wire and int64 ticks inside)
# ---------------------------------------------------------------------------

def price4_to_ticks(price4, price4_per_tick=1):
    """Wire price4 -> int64 ticks (ticks = price4 / price4_per_tick, exact).

    MARKET_PRICE (0x7FFFFFFF) -> NO_PRICE. A price that is not a whole number of
    ticks is OuchFieldError (the venue sent a price off our tick grid)."""
    if price4 == OUCH_MARKET_PRICE:
        return NO_PRICE
    if price4_per_tick <= 0:
        raise ValueError("price4_per_tick must be positive")
    if price4 < 0 or price4 > 0xFFFFFFFF:
        raise OuchFieldError(f"price4 {price4} outside 0..2**32-1")
    if price4 % price4_per_tick:
        raise OuchFieldError(f"price4 {price4} is not a multiple of the tick ({price4_per_tick})")
    return price4 // price4_per_tick


def ticks_to_price4(ticks, price4_per_tick=1):
    """int64 ticks -> wire price4 (ticks * price4_per_tick). NO_PRICE -> MARKET_PRICE."""
    if ticks == NO_PRICE:
        return OUCH_MARKET_PRICE
    if price4_per_tick <= 0:
        raise ValueError("price4_per_tick must be positive")
    cdef object p = ticks * price4_per_tick
    if p < 0 or p > 0xFFFFFFFF or p == OUCH_MARKET_PRICE:
        raise OuchEncodeError(f"{ticks} ticks (price4 {p}) cannot be sent as an OUCH price")
    return p


def price4_from_str(str text):
    """'12.34' -> 123400 exactly (no floats); more than 4 decimals is OuchEncodeError."""
    cdef str s = text.strip()
    whole, _, frac = s.partition(".")
    if (not s.isascii() or (whole and not whole.isdigit()) or (frac and not frac.isdigit())
            or not (whole or frac)):
        raise OuchEncodeError(f"price {text!r} is not a non-negative decimal")
    if len(frac) > 4:
        if frac[4:].strip("0"):
            raise OuchEncodeError(f"price {text!r} has more than 4 decimals")
        frac = frac[:4]
    return int(whole or "0") * 10000 + int((frac + "0000")[:4])


def price4_to_str(price4):
    """123400 -> '12.3400'."""
    if price4 < 0:
        raise ValueError("price4 must be non-negative")
    return f"{price4 // 10000}.{price4 % 10000:04d}"
