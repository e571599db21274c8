"""FIX 4.4 tag=value codec: encoder, streaming parser, dictionary validation.

The contract (structs, enums, attributes, cdef signatures) is in fix.pxd.

Python-visible API
------------------
FixEncoder(sender_comp_id, target_comp_id, begin_string="FIX.4.4", header_fields=None,
           max_message_size=65536)
    .new_order_single(...), .execution_report(...)          typed, hot path
    .order_cancel_request / order_cancel_replace_request / order_mass_cancel_request /
     order_status_request / order_cancel_reject / logon / heartbeat / test_request /
     resend_request / reject / sequence_reset / logout      typed helpers
    .encode(msg_type, fields, seq_num, poss_dup=False, orig_sending_time=None,
            header=None, sending_time_ns=-1) -> bytes
    .encode_raw_body(msg_type, body, seq_num, ...) -> bytes
    .last_sending_time -> bytes
FixParser(max_message_size=65536, raise_errors=False)
    .feed(data); .next() -> FixMessage | FixGarbled | None; iteration; .parse(data) -> list
    .flush() -> FixGarbled | None; .reset(); .pending
FixMessage: .raw .msg_type .seq_num .begin_string .poss_dup .get(tag) .get_int(tag)
    .get_all(tag) .fields() .tags() .body() len() `tag in msg`
FixGarbled: .reason .reason_name .text .raw .error
parse_message(data) -> FixMessage (raises a FixParseError subclass)
FixValidator(...).validate(msg) / validate(msg) -> None | (reason, ref_tag | None, text)
format_utc_timestamp(ns) -> bytes, parse_utc_timestamp(value) -> ns
Exceptions: FixParseError(ValueError) and one subclass per garbled reason, FixBadValue;
    FixEncodeError(ValueError), FixInvalidField, FixEncodeTooLarge.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove, memset
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from core_ext.common cimport (
    NO_PRICE,
    ORDTYPE_LIMIT,
    ORDTYPE_MARKET,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_IOC,
)

from decimal import Decimal

from core_ext import fix44_dict as _dd

cdef extern from *:
    """
    static inline int fix_mul_overflow(long long a, long long b, long long *r) {
        return __builtin_mul_overflow(a, b, r);
    }
    """
    int fix_mul_overflow(long long a, long long b, long long* r) noexcept nogil

cdef enum:
    _EQ = 61         # '='
    _DASH = 45       # '-'
    _DOT = 46        # '.'
    _SPACE = 32
    _NO_TAG = -2147483648   # "no RefTagID" (INT32_MIN)


# ---------------------------------------------------------------------------
# Exceptions: one type per failure kind
# ---------------------------------------------------------------------------

class FixParseError(ValueError):
    """A FIX frame or value could not be decoded. `reason` is a FixGarbledReason."""
    reason = 0

    def __init__(self, text="", raw=b""):
        super().__init__(text)
        self.text = text
        self.raw = raw


class FixBadBeginString(FixParseError):
    """BeginString (8) malformed, too long, or not followed by SOH."""
    reason = FIX_GARBLED_BAD_BEGIN_STRING


class FixBadBodyLength(FixParseError):
    """BodyLength (9) missing, not a number, or not pointing at the CheckSum field."""
    reason = FIX_GARBLED_BAD_BODY_LENGTH


class FixBadChecksum(FixParseError):
    """CheckSum (10) malformed or not matching the bytes."""
    reason = FIX_GARBLED_BAD_CHECKSUM


class FixBadMsgType(FixParseError):
    """MsgType (35) not the third field, or empty."""
    reason = FIX_GARBLED_BAD_MSG_TYPE


class FixBadTag(FixParseError):
    """A tag that is empty, not a number, too long, or not followed by '='."""
    reason = FIX_GARBLED_BAD_TAG


class FixMissingSOH(FixParseError):
    """A field not terminated by SOH."""
    reason = FIX_GARBLED_MISSING_SOH


class FixBadDataLength(FixParseError):
    """A data field whose declared length does not end at a SOH inside the body."""
    reason = FIX_GARBLED_BAD_DATA_LENGTH


class FixMessageTooLarge(FixParseError):
    """BodyLength above the configured max_message_size."""
    reason = FIX_GARBLED_TOO_LARGE


class FixTruncated(FixParseError):
    """The input ended inside a message."""
    reason = FIX_GARBLED_TRUNCATED


class FixBadValue(FixParseError):
    """A field value that is not of the type asked for (get_int, parse_utc_timestamp)."""
    reason = 0


class FixEncodeError(ValueError):
    """A message could not be encoded."""


class FixInvalidField(FixEncodeError):
    """A tag or value that cannot be put on the wire (SOH in a value, bad side, ...)."""


class FixEncodeTooLarge(FixEncodeError):
    """The encoded body would exceed the encoder's max_message_size."""


_GARBLED_ERRORS = {
    FIX_GARBLED_BAD_BEGIN_STRING: FixBadBeginString,
    FIX_GARBLED_BAD_BODY_LENGTH: FixBadBodyLength,
    FIX_GARBLED_BAD_CHECKSUM: FixBadChecksum,
    FIX_GARBLED_BAD_MSG_TYPE: FixBadMsgType,
    FIX_GARBLED_BAD_TAG: FixBadTag,
    FIX_GARBLED_MISSING_SOH: FixMissingSOH,
    FIX_GARBLED_BAD_DATA_LENGTH: FixBadDataLength,
    FIX_GARBLED_TOO_LARGE: FixMessageTooLarge,
    FIX_GARBLED_TRUNCATED: FixTruncated,
}

GARBLED_REASON_NAMES = {
    FIX_GARBLED_BAD_BEGIN_STRING: "BAD_BEGIN_STRING",
    FIX_GARBLED_BAD_BODY_LENGTH: "BAD_BODY_LENGTH",
    FIX_GARBLED_BAD_CHECKSUM: "BAD_CHECKSUM",
    FIX_GARBLED_BAD_MSG_TYPE: "BAD_MSG_TYPE",
    FIX_GARBLED_BAD_TAG: "BAD_TAG",
    FIX_GARBLED_MISSING_SOH: "MISSING_SOH",
    FIX_GARBLED_BAD_DATA_LENGTH: "BAD_DATA_LENGTH",
    FIX_GARBLED_TOO_LARGE: "TOO_LARGE",
    FIX_GARBLED_TRUNCATED: "TRUNCATED",
}

#: SessionRejectReason (373) -> Text (58), QuickFIX wording (Values.h). 15 and 17 have no
#: QuickFIX text; the FIX 4.4 names are used.
SESSION_REJECT_TEXT = {
    0: "Invalid tag number",
    1: "Required tag missing",
    2: "Tag not defined for this message type",
    3: "Undefined Tag",
    4: "Tag specified without a value",
    5: "Value is incorrect (out of range) for this tag",
    6: "Incorrect data format for value",
    7: "Decryption problem",
    8: "Signature problem",
    9: "CompID problem",
    10: "SendingTime accuracy problem",
    11: "Invalid MsgType",
    12: "XML Validation error",
    13: "Tag appears more than once",
    14: "Tag specified out of required order",
    15: "Repeating group fields out of order",
    16: "Incorrect NumInGroup count for repeating group",
    17: "Non Data value includes field delimiter",
    99: "Other",
}


# ---------------------------------------------------------------------------
# Small C helpers
# ---------------------------------------------------------------------------

cdef inline bint _digit(unsigned char c) noexcept nogil:
    return <unsigned char>(c - 48) < 10


cdef int fix_checksum(const char* buf, Py_ssize_t n) noexcept nogil:
    cdef const unsigned char* p = <const unsigned char*>buf
    cdef unsigned int s = 0
    cdef Py_ssize_t i
    for i in range(n):
        s += p[i]
    return <int>(s & 255)


cdef inline Py_ssize_t _fmt_uint(char* out, uint64_t v) noexcept nogil:
    """Decimal digits of v into out; returns the count (1..20)."""
    cdef char tmp[24]
    cdef Py_ssize_t n = 0, i
    while True:
        tmp[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    for i in range(n):
        out[i] = tmp[n - 1 - i]
    return n


cdef inline Py_ssize_t _fmt_int(char* out, int64_t v) noexcept nogil:
    if v < 0:
        out[0] = b'-'
        return 1 + _fmt_uint(out + 1, <uint64_t>0 - <uint64_t>v)
    return _fmt_uint(out, <uint64_t>v)


cdef inline int _parse_int(const unsigned char* p, Py_ssize_t n, int64_t* out) noexcept nogil:
    """[-]digits (at most 18) -> 1 and *out; anything else -> 0."""
    cdef Py_ssize_t i = 0
    cdef int64_t v = 0
    cdef bint neg = False
    if n > 0 and p[0] == _DASH:
        neg = True
        i = 1
    if i >= n or n - i > 18:
        return 0
    while i < n:
        if not _digit(p[i]):
            return 0
        v = v * 10 + (p[i] - 48)
        i += 1
    out[0] = -v if neg else v
    return 1


cdef inline bint _bit(const uint8_t* bits, int32_t tag) noexcept nogil:
    return 0 <= tag < FIX_MAX_TAG and (bits[tag >> 3] >> (tag & 7)) & 1


cdef inline void _setbit(uint8_t* bits, int32_t tag) noexcept nogil:
    if 0 <= tag < FIX_MAX_TAG:
        bits[tag >> 3] |= <uint8_t>(1 << (tag & 7))


cdef inline void _civil_from_days(int64_t z, int* y, int* m, int* d) noexcept nogil:
    """Days since 1970-01-01 -> proleptic Gregorian date (H. Hinnant's algorithm)."""
    cdef int64_t era, doe, yoe, doy, mp, yy
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    yy = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d[0] = <int>(doy - (153 * mp + 2) // 5 + 1)
    m[0] = <int>(mp + 3 if mp < 10 else mp - 9)
    y[0] = <int>(yy + (1 if m[0] <= 2 else 0))


cdef inline int64_t _days_from_civil(int64_t y, int64_t m, int64_t d) noexcept nogil:
    cdef int64_t era, yoe, doy, doe
    y -= 1 if m <= 2 else 0
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline void _put2(char* p, int v) noexcept nogil:
    p[0] = <char>(48 + v // 10)
    p[1] = <char>(48 + v % 10)


cdef void _format_second(int64_t sec, char* out) noexcept nogil:
    """UTC second -> "YYYYMMDD-HH:MM:SS." (18 bytes)."""
    cdef int64_t days = sec // 86400
    cdef int64_t rem = sec - days * 86400
    cdef int y, m, d
    _civil_from_days(days, &y, &m, &d)
    out[0] = <char>(48 + (y // 1000) % 10)
    out[1] = <char>(48 + (y // 100) % 10)
    out[2] = <char>(48 + (y // 10) % 10)
    out[3] = <char>(48 + y % 10)
    _put2(out + 4, m)
    _put2(out + 6, d)
    out[8] = b'-'
    _put2(out + 9, <int>(rem // 3600))
    out[11] = b':'
    _put2(out + 12, <int>((rem // 60) % 60))
    out[14] = b':'
    _put2(out + 15, <int>(rem % 60))
    out[17] = b'.'


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def format_utc_timestamp(int64_t ns) -> bytes:
    """UTC nanoseconds since the epoch -> b"YYYYMMDD-HH:MM:SS.sss" (FIX UTCTimestamp, ms)."""
    cdef char out[24]
    if ns < 0 or ns // 1000000000 >= 253402300800:   # year 10000; the product overflows int64
        raise FixInvalidField(f"timestamp {ns} ns is outside 1970..9999")
    _format_second(ns // 1000000000, out)
    cdef int ms = <int>((ns // 1000000) % 1000)
    out[18] = <char>(48 + ms // 100)
    out[19] = <char>(48 + (ms // 10) % 10)
    out[20] = <char>(48 + ms % 10)
    return PyBytes_FromStringAndSize(out, 21)


cdef inline int _two(const unsigned char* p) noexcept nogil:
    if not (_digit(p[0]) and _digit(p[1])):
        return -1
    return (p[0] - 48) * 10 + (p[1] - 48)


cdef int _check_time_of_day(const unsigned char* p, Py_ssize_t n, int64_t* ns) noexcept nogil:
    """HH:MM:SS[.f{3|6|9}] -> 1 and nanoseconds of the day; else 0."""
    cdef int hh, mm, ss
    cdef Py_ssize_t i, frac_digits
    cdef int64_t frac = 0
    if n < 8 or p[2] != 58 or p[5] != 58:
        return 0
    hh = _two(p)
    mm = _two(p + 3)
    ss = _two(p + 6)
    if hh < 0 or mm < 0 or ss < 0 or hh > 23 or mm > 59 or ss > 60:
        return 0
    if n > 8:
        frac_digits = n - 9
        if p[8] != _DOT or not (frac_digits == 3 or frac_digits == 6 or frac_digits == 9):
            return 0
        for i in range(9, n):
            if not _digit(p[i]):
                return 0
            frac = frac * 10 + (p[i] - 48)
        for _ in range(<Py_ssize_t>frac_digits, 9):
            frac *= 10
    ns[0] = ((<int64_t>hh * 60 + mm) * 60 + ss) * 1000000000 + frac
    return 1


cdef int _check_date(const unsigned char* p, Py_ssize_t n, int64_t* days) noexcept nogil:
    """YYYYMMDD -> 1 and days since the epoch; else 0."""
    cdef Py_ssize_t i
    cdef int y = 0, m, d
    if n != 8:
        return 0
    for i in range(4):
        if not _digit(p[i]):
            return 0
        y = y * 10 + (p[i] - 48)
    m = _two(p + 4)
    d = _two(p + 6)
    if m < 1 or m > 12 or d < 1 or d > 31:
        return 0
    days[0] = _days_from_civil(y, m, d)
    return 1


cdef int _check_timestamp(const unsigned char* p, Py_ssize_t n, int64_t* ns) noexcept nogil:
    """YYYYMMDD-HH:MM:SS[.f{3|6|9}] -> 1 and ns since the epoch; else 0."""
    cdef int64_t days, tod
    if n < 17 or p[8] != _DASH:
        return 0
    if not _check_date(p, 8, &days) or not _check_time_of_day(p + 9, n - 9, &tod):
        return 0
    ns[0] = days * 86400 * <int64_t>1000000000 + tod
    return 1


def parse_utc_timestamp(value) -> int:
    """b"YYYYMMDD-HH:MM:SS[.sss|.ssssss|.sssssssss]" -> UTC ns since the epoch.

    Raises FixBadValue on anything else."""
    cdef bytes b = value.encode("ascii") if isinstance(value, str) else bytes(value)
    cdef int64_t ns
    if not _check_timestamp(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), &ns):
        raise FixBadValue(f"{b!r} is not a UTCTimestamp (YYYYMMDD-HH:MM:SS[.sss])", b)
    return ns


# ---------------------------------------------------------------------------
# Dictionary tables (filled from fix44_dict at import)
# ---------------------------------------------------------------------------

cdef uint8_t _tag_type[FIX_MAX_TAG]          # FixType per tag
cdef uint8_t _tag_flags[FIX_MAX_TAG]         # FixTagFlag bits per tag
cdef int32_t _data_len_tag[FIX_MAX_TAG]      # DATA tag -> its LENGTH tag (0: not a data tag)
cdef const unsigned char* _enum_blob[FIX_MAX_TAG]  # [len][value]...[0] per enum tag, else NULL
cdef uint8_t _header_bits[FIX_TAG_BITMAP_BYTES]
cdef uint8_t _trailer_bits[FIX_TAG_BITMAP_BYTES]
cdef list _keep_alive = []                   # owners of the _enum_blob memory
cdef dict _msg_defs = {}                     # MsgType bytes -> FixMsgDef
cdef list _header_groups = []                # FixGroupDef of header groups (NoHops)
cdef uint8_t _header_group_bits[FIX_TAG_BITMAP_BYTES]
cdef uint8_t _header_all_bits[FIX_TAG_BITMAP_BYTES]  # header tags and header group members
cdef list _header_required = []              # header tags required, ascending

_TYPE_CODES = {
    "STRING": FIX_TYPE_STRING, "CURRENCY": FIX_TYPE_STRING, "EXCHANGE": FIX_TYPE_STRING,
    "COUNTRY": FIX_TYPE_STRING, "LOCALMKTDATE": FIX_TYPE_STRING, "MONTHYEAR": FIX_TYPE_STRING,
    "CHAR": FIX_TYPE_CHAR,
    "INT": FIX_TYPE_INT, "LENGTH": FIX_TYPE_INT, "SEQNUM": FIX_TYPE_INT,
    "NUMINGROUP": FIX_TYPE_INT, "DAYOFMONTH": FIX_TYPE_INT,
    "PRICE": FIX_TYPE_FLOAT, "QTY": FIX_TYPE_FLOAT, "AMT": FIX_TYPE_FLOAT, "FLOAT": FIX_TYPE_FLOAT,
    "PRICEOFFSET": FIX_TYPE_FLOAT, "PERCENTAGE": FIX_TYPE_FLOAT,
    "BOOLEAN": FIX_TYPE_BOOLEAN,
    "UTCTIMESTAMP": FIX_TYPE_UTCTIMESTAMP, "UTCTIMEONLY": FIX_TYPE_UTCTIMEONLY,
    "UTCDATEONLY": FIX_TYPE_UTCDATEONLY, "UTCDATE": FIX_TYPE_UTCDATEONLY,
    "DATA": FIX_TYPE_DATA,
    "MULTIPLEVALUESTRING": FIX_TYPE_MULTIPLEVALUESTRING,
}


cdef void _bits_from(uint8_t* bits, object tags):
    memset(bits, 0, FIX_TAG_BITMAP_BYTES)
    for t in tags:
        _setbit(bits, t)


cdef int32_t* _int_array(object tags, Py_ssize_t* n) except? NULL:
    cdef list seq = sorted(tags)
    cdef Py_ssize_t i
    n[0] = len(seq)
    if not seq:
        return NULL
    cdef int32_t* out = <int32_t*>PyMem_Malloc(len(seq) * sizeof(int32_t))
    if out == NULL:
        raise MemoryError()
    for i in range(len(seq)):
        out[i] = seq[i]
    return out


@cython.final
cdef class FixGroupDef:
    """One repeating group of the dictionary (C bitmaps)."""

    def __dealloc__(self):
        PyMem_Free(self.required)

    def __repr__(self):
        return f"FixGroupDef(count_tag={self.count_tag}, delimiter={self.delimiter})"

    @property
    def required_tags(self):
        return tuple(self.required[i] for i in range(self.n_required))

    cdef FixGroupDef nested_for(self, int32_t tag):
        cdef FixGroupDef g
        for g in self.nested:
            if g.count_tag == tag:
                return g
        return None


@cython.final
cdef class FixMsgDef:
    """One message type of the dictionary (C bitmaps)."""

    def __dealloc__(self):
        PyMem_Free(self.required)

    def __repr__(self):
        return f"FixMsgDef({self.msg_type!r}, {self.name!r})"

    @property
    def required_tags(self):
        return tuple(self.required[i] for i in range(self.n_required))

    def allows(self, int tag):
        return bool(_bit(self.allowed, tag))

    cdef FixGroupDef group_for(self, int32_t tag):
        cdef FixGroupDef g
        for g in self.groups:
            if g.count_tag == tag:
                return g
        return None


cdef FixGroupDef _make_group(int gid, dict built):
    cdef FixGroupDef g = built.get(gid)
    if g is not None:
        return g
    count_tag, delim, members, required, nested = _dd.GROUPS[gid]
    g = FixGroupDef.__new__(FixGroupDef)
    g.count_tag = count_tag
    g.delimiter = delim
    _bits_from(g.members, members)
    g.required = _int_array(required, &g.n_required)
    g.nested = [_make_group(n, built) for n in nested]
    _bits_from(g.nested_bits, [x.count_tag for x in g.nested])
    built[gid] = g
    return g


cdef void _load_dictionary() except *:
    cdef int32_t tag
    cdef bytes blob
    cdef dict built = {}
    cdef FixMsgDef md
    memset(_tag_type, 0, sizeof(_tag_type))
    memset(_tag_flags, 0, sizeof(_tag_flags))
    memset(_data_len_tag, 0, sizeof(_data_len_tag))
    memset(_enum_blob, 0, sizeof(_enum_blob))
    for tag, (name, ftype, values) in _dd.FIELDS.items():
        if not 0 < tag < FIX_MAX_TAG:
            continue
        _tag_type[tag] = _TYPE_CODES.get(ftype, FIX_TYPE_STRING)
        if values:
            parts = []
            for value, _desc in values:
                raw = value.encode("ascii")
                parts.append(bytes([len(raw)]) + raw)
            blob = b"".join(parts) + b"\x00"
            _keep_alive.append(blob)
            _enum_blob[tag] = <const unsigned char*>PyBytes_AS_STRING(blob)
            _tag_flags[tag] |= FIX_TAG_ENUM
    for tag, length_tag in _dd.DATA_FIELDS.items():
        if 0 < tag < FIX_MAX_TAG:
            _tag_flags[tag] |= FIX_TAG_DATA
            _data_len_tag[tag] = length_tag
    for tag in _dd.HEADER:
        _tag_flags[tag] |= FIX_TAG_HEADER
    for tag in _dd.TRAILER:
        _tag_flags[tag] |= FIX_TAG_TRAILER
    _bits_from(_header_bits, _dd.HEADER)
    _bits_from(_trailer_bits, _dd.TRAILER)
    _header_required.extend(sorted(_dd.HEADER_REQUIRED))
    _header_groups.extend(_make_group(g, built) for g in _dd.HEADER_GROUPS)
    _bits_from(_header_group_bits, [g.count_tag for g in _header_groups])
    _bits_from(_header_all_bits,
               list(_dd.HEADER) + [t for gid in _dd.HEADER_GROUPS for t in _dd.GROUPS[gid][2]])
    for msg_type, (name, _cat, tags, required, groups) in _dd.MESSAGES.items():
        md = FixMsgDef.__new__(FixMsgDef)
        md.msg_type = msg_type.encode("ascii")
        md.name = name
        _bits_from(md.allowed, tags)
        md.required = _int_array(required, &md.n_required)
        md.groups = [_make_group(g, built) for g in groups]
        _bits_from(md.group_bits, [g.count_tag for g in md.groups])
        _msg_defs[md.msg_type] = md


_load_dictionary()

#: BeginString the dictionary describes.
DICTIONARY_BEGIN_STRING = _dd.BEGIN_STRING


def message_def(msg_type):
    """The FixMsgDef of a MsgType (str or bytes), or None if the dictionary has none."""
    if isinstance(msg_type, str):
        msg_type = msg_type.encode("ascii")
    return _msg_defs.get(msg_type)


cdef inline FixGroupDef _header_group_for(int32_t tag):
    cdef FixGroupDef g
    for g in _header_groups:
        if g.count_tag == tag:
            return g
    return None


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------

cdef inline void _garble(FixFrame* out, int reason, Py_ssize_t examined) noexcept nogil:
    out.status = FIX_FRAME_GARBLED
    out.reason = reason
    out.length = examined if examined > 0 else 1


cdef void fix_frame(const char* buf, Py_ssize_t n, Py_ssize_t max_body,
                    FixFrame* out) noexcept nogil:
    cdef const unsigned char* p = <const unsigned char*>buf
    cdef Py_ssize_t i, d, q, j, length
    cdef int cs
    cdef unsigned char c
    cdef const char* head = b"8=FIX"
    cdef const char* trailer = b"10="
    out.status = FIX_FRAME_NEED_MORE
    out.reason = 0
    out.length = 0
    out.body_start = -1
    out.body_length = -1
    out.checksum_expected = -1
    out.checksum_received = -1
    # BeginString: "8=FIX" ["T"] "." digits "." digits SOH, value at most 16 bytes.
    for i in range(5):
        if i >= n:
            return
        if p[i] != <unsigned char>head[i]:
            _garble(out, FIX_GARBLED_BAD_BEGIN_STRING, i + 1)
            return
    i = 5
    if i >= n:
        return
    if p[i] == b'T':
        i += 1
        if i >= n:
            return
    if p[i] != _DOT:
        _garble(out, FIX_GARBLED_BAD_BEGIN_STRING, i + 1)
        return
    i += 1
    for j in range(2):
        d = 0
        while True:
            if i >= n:
                return
            c = p[i]
            if _digit(c):
                d += 1
                i += 1
                if i - 2 > FIX_MAX_BEGIN_STRING:
                    _garble(out, FIX_GARBLED_BAD_BEGIN_STRING, i)
                    return
                continue
            break
        if d == 0 or c != (_DOT if j == 0 else FIX_SOH):
            _garble(out, FIX_GARBLED_BAD_BEGIN_STRING, i + 1)
            return
        i += 1
    # BodyLength: "9=" digits SOH.
    if i >= n:
        return
    if p[i] != b'9':
        _garble(out, FIX_GARBLED_BAD_BODY_LENGTH, i + 1)
        return
    i += 1
    if i >= n:
        return
    if p[i] != _EQ:
        _garble(out, FIX_GARBLED_BAD_BODY_LENGTH, i + 1)
        return
    i += 1
    length = 0
    d = 0
    while True:
        if i >= n:
            return
        c = p[i]
        if _digit(c):
            d += 1
            if d > FIX_MAX_BODY_LENGTH_DIGITS:
                _garble(out, FIX_GARBLED_BAD_BODY_LENGTH, i + 1)
                return
            length = length * 10 + (c - 48)
            i += 1
            continue
        break
    if d == 0 or c != FIX_SOH:
        _garble(out, FIX_GARBLED_BAD_BODY_LENGTH, i + 1)
        return
    i += 1
    out.body_start = i
    out.body_length = length
    if length > max_body:
        _garble(out, FIX_GARBLED_TOO_LARGE, i)
        return
    # The body must end with SOH and be followed by "10=" 1-3 digits SOH.
    q = i + length
    if n < q:
        return
    if p[q - 1] != FIX_SOH:
        _garble(out, FIX_GARBLED_BAD_BODY_LENGTH, q)
        return
    for j in range(3):
        if q + j >= n:
            return
        if p[q + j] != <unsigned char>trailer[j]:
            _garble(out, FIX_GARBLED_BAD_BODY_LENGTH, q + j + 1)
            return
    j = q + 3
    cs = 0
    d = 0
    while True:
        if j >= n:
            return
        c = p[j]
        if _digit(c):
            d += 1
            if d > 3:
                _garble(out, FIX_GARBLED_BAD_CHECKSUM, j + 1)
                return
            cs = cs * 10 + (c - 48)
            j += 1
            continue
        break
    if d == 0 or c != FIX_SOH:
        _garble(out, FIX_GARBLED_BAD_CHECKSUM, j + 1)
        return
    out.checksum_received = cs
    out.checksum_expected = fix_checksum(buf, q)
    if cs != out.checksum_expected:
        _garble(out, FIX_GARBLED_BAD_CHECKSUM, j + 1)
        return
    # MsgType must be the third field, with a value.
    if length < 5 or p[i] != b'3' or p[i + 1] != b'5' or p[i + 2] != _EQ or p[i + 3] == FIX_SOH:
        _garble(out, FIX_GARBLED_BAD_MSG_TYPE, j + 1)
        return
    out.status = FIX_FRAME_OK
    out.length = j + 1


cdef inline Py_ssize_t _find_begin(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Offset of the first b"8=FIX" in p[0:n], or -1."""
    cdef Py_ssize_t i = 0
    cdef const unsigned char* q
    while i < n:
        q = <const unsigned char*>memchr(p + i, b'8', n - i)
        if q == NULL:
            return -1
        i = q - p
        if i + 5 > n:
            return -1
        if memcmp(q, b"8=FIX", 5) == 0:
            return i
        i += 1
    return -1


cdef inline Py_ssize_t _partial_begin(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Length of the longest suffix of p[0:n] that is a proper prefix of b"8=FIX"."""
    cdef Py_ssize_t k
    k = 4 if n > 4 else n
    while k > 0:
        if memcmp(p + n - k, b"8=FIX", k) == 0:
            return k
        k -= 1
    return 0


cdef str _garbled_text(int reason, FixFrame* fr, Py_ssize_t bad_offset, Py_ssize_t max_body):
    if reason == FIX_GARBLED_BAD_BEGIN_STRING:
        return "BeginString (8) is not FIX.<major>.<minor> followed by SOH"
    if reason == FIX_GARBLED_BAD_BODY_LENGTH:
        if fr.body_length < 0:
            return "BodyLength (9) is not the second field, or not digits followed by SOH"
        return f"BodyLength {fr.body_length} does not end at the CheckSum (10) field"
    if reason == FIX_GARBLED_BAD_CHECKSUM:
        if fr.checksum_received >= 0 and fr.checksum_expected >= 0:
            return (f"Expected CheckSum={fr.checksum_expected}, "
                    f"Received CheckSum={fr.checksum_received}")
        return "CheckSum (10) is not 1-3 digits followed by SOH"
    if reason == FIX_GARBLED_BAD_MSG_TYPE:
        return "MsgType (35) is not the third field, or has no value"
    if reason == FIX_GARBLED_TOO_LARGE:
        return f"BodyLength {fr.body_length} exceeds max_message_size {max_body}"
    if reason == FIX_GARBLED_BAD_TAG:
        return f"tag at offset {bad_offset} is not a number followed by '='"
    if reason == FIX_GARBLED_BAD_DATA_LENGTH:
        return f"data field at offset {bad_offset} does not end with SOH at its declared length"
    if reason == FIX_GARBLED_MISSING_SOH:
        return f"field at offset {bad_offset} is not terminated by SOH"
    if reason == FIX_GARBLED_TRUNCATED:
        return f"input ended inside a message after {fr.length} bytes"
    return "garbled"


cdef FixGarbled _make_garbled(int reason, str text, bytes raw):
    cdef FixGarbled g = FixGarbled.__new__(FixGarbled)
    g.reason = reason
    g.text = text
    g.raw = raw
    return g


cdef object _build(const char* p, FixFrame* fr, Py_ssize_t max_body):
    """A FixMessage for a frame fix_frame() accepted, or a FixGarbled for bad fields."""
    cdef bytes raw = PyBytes_FromStringAndSize(p, fr.length)
    cdef FixMessage msg = FixMessage.__new__(FixMessage)
    cdef Py_ssize_t bad = -1
    cdef int reason
    msg.raw = raw
    reason = msg._split(fr.body_start, fr.body_start + fr.body_length, &bad)
    if reason != 0:
        return _make_garbled(reason, _garbled_text(reason, fr, bad, max_body), raw)
    return msg


# ---------------------------------------------------------------------------
# FixMessage
# ---------------------------------------------------------------------------

@cython.final
@cython.freelist(16)
cdef class FixMessage:
    """A framed FIX message: raw bytes and a C index of its fields.

    Field values are handed out as bytes on request only. Fields include
    BeginString (8), BodyLength (9) and CheckSum (10), in wire order."""

    def __cinit__(self):
        self._fields = self._inline
        self._nfields = 0
        self._capacity = FIX_INLINE_FIELDS
        self._msg_type = None

    def __init__(self):
        raise TypeError("FixMessage objects come from FixParser or parse_message()")

    def __dealloc__(self):
        if self._fields != self._inline:
            PyMem_Free(self._fields)

    cdef int _append(self, int32_t tag, Py_ssize_t offset, Py_ssize_t length) except -1:
        cdef FixField* grown
        cdef Py_ssize_t cap
        if self._nfields == self._capacity:
            cap = self._capacity * 2
            if self._fields == self._inline:
                grown = <FixField*>PyMem_Malloc(cap * sizeof(FixField))
                if grown == NULL:
                    raise MemoryError()
                memcpy(grown, self._inline, self._nfields * sizeof(FixField))
            else:
                grown = <FixField*>PyMem_Realloc(self._fields, cap * sizeof(FixField))
                if grown == NULL:
                    raise MemoryError()
            self._fields = grown
            self._capacity = cap
        self._fields[self._nfields].tag = tag
        self._fields[self._nfields].offset = <int32_t>offset
        self._fields[self._nfields].length = <int32_t>length
        self._nfields += 1
        return 0

    cdef int _split(self, Py_ssize_t body_start, Py_ssize_t body_end, Py_ssize_t* bad) except -1:
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(self.raw)
        cdef Py_ssize_t total = PyBytes_GET_SIZE(self.raw)
        cdef Py_ssize_t i, t0, v0, vend, digits, e8
        cdef int64_t declared
        cdef int32_t tag
        cdef bint neg
        cdef const unsigned char* s
        cdef FixField* prev
        # 8 and 9 were checked by fix_frame().
        e8 = <const unsigned char*>memchr(p, FIX_SOH, body_start) - p
        self._append(8, 2, e8 - 2)
        self._append(9, e8 + 3, body_start - 1 - (e8 + 3))
        i = body_start
        while i < body_end:
            t0 = i
            neg = p[i] == _DASH
            if neg:
                i += 1
            tag = 0
            digits = 0
            while i < body_end and _digit(p[i]):
                digits += 1
                if digits > FIX_MAX_TAG_DIGITS:
                    bad[0] = t0
                    return FIX_GARBLED_BAD_TAG
                tag = tag * 10 + (p[i] - 48)
                i += 1
            if digits == 0 or i >= body_end or p[i] != _EQ:
                bad[0] = t0
                return FIX_GARBLED_BAD_TAG
            i += 1
            if neg:
                tag = -tag
            v0 = i
            vend = -1
            if 0 < tag < FIX_MAX_TAG and (_tag_flags[tag] & FIX_TAG_DATA) and self._nfields > 2:
                prev = &self._fields[self._nfields - 1]
                if (prev.tag == _data_len_tag[tag]
                        and _parse_int(p + prev.offset, prev.length, &declared)
                        and declared >= 0):
                    if v0 + declared >= body_end or p[v0 + declared] != FIX_SOH:
                        bad[0] = t0
                        return FIX_GARBLED_BAD_DATA_LENGTH
                    vend = v0 + declared
            if vend < 0:
                s = <const unsigned char*>memchr(p + v0, FIX_SOH, body_end - v0)
                if s == NULL:
                    bad[0] = t0
                    return FIX_GARBLED_MISSING_SOH
                vend = s - p
            self._append(tag, v0, vend - v0)
            i = vend + 1
        # CheckSum: "10=" digits SOH at body_end.
        self._append(10, body_end + 3, total - 1 - (body_end + 3))
        return 0

    # -- cdef API -------------------------------------------------------------
    cdef Py_ssize_t find(self, int32_t tag, Py_ssize_t start) noexcept:
        cdef Py_ssize_t i
        for i in range(start if start > 0 else 0, self._nfields):
            if self._fields[i].tag == tag:
                return i
        return -1

    cdef const char* value_ptr(self, Py_ssize_t i) noexcept:
        return PyBytes_AS_STRING(self.raw) + self._fields[i].offset

    cdef Py_ssize_t count(self) noexcept:
        return self._nfields

    cdef FixField* field_at(self, Py_ssize_t i) noexcept:
        return &self._fields[i]

    cdef int int_value(self, int32_t tag, int64_t* out) noexcept:
        cdef Py_ssize_t i = self.find(tag, 0)
        if i < 0:
            return 0
        if _parse_int(<const unsigned char*>self.value_ptr(i), self._fields[i].length, out):
            return 1
        return -1

    cdef bytes msg_type_bytes(self):
        if self._msg_type is None:
            self._msg_type = self._value(2)
        return self._msg_type

    cdef bytes _value(self, Py_ssize_t i):
        return PyBytes_FromStringAndSize(self.value_ptr(i), self._fields[i].length)

    # -- Python API -----------------------------------------------------------
    @property
    def msg_type(self):
        """MsgType (35) value as bytes, e.g. b"D"."""
        return self.msg_type_bytes()

    @property
    def begin_string(self):
        """BeginString (8) value as bytes, e.g. b"FIX.4.4"."""
        return self._value(0)

    @property
    def seq_num(self):
        """MsgSeqNum (34) as int, or None if absent or not an integer."""
        cdef int64_t v
        if self.int_value(34, &v) == 1:
            return v
        return None

    @property
    def poss_dup(self):
        """True when PossDupFlag (43) is Y."""
        cdef Py_ssize_t i = self.find(43, 0)
        return i >= 0 and self._fields[i].length == 1 and self.value_ptr(i)[0] == b'Y'

    def get(self, int tag, default=None):
        """Value of the first `tag` field as bytes, or `default`."""
        cdef Py_ssize_t i = self.find(tag, 0)
        if i < 0:
            return default
        return self._value(i)

    def get_all(self, int tag):
        """Values of every `tag` field, in wire order."""
        cdef list out = []
        cdef Py_ssize_t i = self.find(tag, 0)
        while i >= 0:
            out.append(self._value(i))
            i = self.find(tag, i + 1)
        return out

    def get_int(self, int tag, default=None):
        """Value of `tag` as int, `default` if absent; FixBadValue if not an integer."""
        cdef int64_t v
        cdef int rc = self.int_value(tag, &v)
        if rc == 1:
            return v
        if rc == 0:
            return default
        raise FixBadValue(f"tag {tag} value {self.get(tag)!r} is not an integer", self.get(tag))

    def fields(self):
        """All fields as [(tag, value bytes)], in wire order."""
        cdef Py_ssize_t i
        return [(self._fields[i].tag, self._value(i)) for i in range(self._nfields)]

    def tags(self):
        """All tags, in wire order."""
        cdef Py_ssize_t i
        return [self._fields[i].tag for i in range(self._nfields)]

    def body(self):
        """The bytes of the fields that are neither header nor trailer fields, in wire
        order ("tag=value<SOH>..."), e.g. to echo or store a body for a resend."""
        cdef const char* p = PyBytes_AS_STRING(self.raw)
        cdef Py_ssize_t i, start, end, run_start = -1, run_end = -1
        cdef int32_t tag
        cdef list parts = []
        for i in range(2, self._nfields):
            tag = self._fields[i].tag
            start = self._fields[i - 1].offset + self._fields[i - 1].length + 1
            end = self._fields[i].offset + self._fields[i].length + 1
            if _bit(_header_all_bits, tag) or _bit(_trailer_bits, tag):
                if run_start >= 0:
                    parts.append(PyBytes_FromStringAndSize(p + run_start, run_end - run_start))
                    run_start = -1
                continue
            if run_start < 0:
                run_start = start
            run_end = end
        if run_start >= 0:
            parts.append(PyBytes_FromStringAndSize(p + run_start, run_end - run_start))
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def __len__(self):
        return self._nfields

    def __contains__(self, tag):
        return self.find(tag, 0) >= 0

    def __repr__(self):
        shown = self.raw.replace(b"\x01", b"|")
        return f"FixMessage({shown!r})"


# ---------------------------------------------------------------------------
# FixGarbled, parse_message, FixParser
# ---------------------------------------------------------------------------

@cython.final
cdef class FixGarbled:
    """A frame the parser could not accept (discard it; do not answer it)."""

    def __init__(self, int reason, str text, bytes raw):
        self.reason = reason
        self.text = text
        self.raw = raw

    @property
    def reason_name(self):
        return GARBLED_REASON_NAMES.get(self.reason, str(self.reason))

    @property
    def error(self):
        """The FixParseError subclass instance for this reason (to raise or log)."""
        return _GARBLED_ERRORS.get(self.reason, FixParseError)(self.text, self.raw)

    def __repr__(self):
        return f"FixGarbled({self.reason_name}, {self.text!r}, {self.raw[:64]!r})"


cdef inline int _get_buffer(object data, Py_buffer* view) except -1:
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    return 0


def parse_message(data, Py_ssize_t max_message_size=FIX_DEFAULT_MAX_MESSAGE):
    """Parse exactly one complete message; raise the FixParseError subclass for its fault."""
    cdef Py_buffer view
    cdef FixFrame fr
    cdef const char* p
    cdef Py_ssize_t n
    cdef object result
    cdef bytes raw
    _get_buffer(data, &view)
    try:
        p = <const char*>view.buf
        n = view.len
        fix_frame(p, n, max_message_size, &fr)
        raw = PyBytes_FromStringAndSize(p, n)
        if fr.status == FIX_FRAME_NEED_MORE:
            fr.length = n
            raise FixTruncated(_garbled_text(FIX_GARBLED_TRUNCATED, &fr, 0, max_message_size), raw)
        if fr.status == FIX_FRAME_GARBLED:
            raise _GARBLED_ERRORS[fr.reason](
                _garbled_text(fr.reason, &fr, 0, max_message_size), raw)
        if fr.length != n:
            raise FixBadBodyLength(f"{n - fr.length} bytes after the CheckSum (10) field", raw)
        result = _build(p, &fr, max_message_size)
    finally:
        PyBuffer_Release(&view)
    if type(result) is FixGarbled:
        raise (<FixGarbled>result).error
    return result


@cython.final
cdef class FixParser:
    """Streaming FIX parser: feed() bytes as they arrive; next() / iteration return
    FixMessage objects, FixGarbled records for rejected frames (or raise them when
    raise_errors=True), and None / StopIteration when more bytes are needed.

    Framing follows BodyLength. After a garbled frame the parser resumes at the next
    b"8=FIX" after that frame's first byte, so a good message behind a bad one is
    kept. max_message_size bounds BodyLength, so garbage never grows the buffer
    beyond what was fed plus one message."""

    def __cinit__(self, Py_ssize_t max_message_size=FIX_DEFAULT_MAX_MESSAGE,
                  bint raise_errors=False):
        if max_message_size < 16 or max_message_size > 9999999:
            raise ValueError("max_message_size must be in 16..9999999")
        self.max_message_size = max_message_size
        self.raise_errors = raise_errors
        self._cap = 4096
        self._buf = <char*>PyMem_Malloc(self._cap)
        if self._buf == NULL:
            raise MemoryError()
        self._start = 0
        self._end = 0

    def __dealloc__(self):
        PyMem_Free(self._buf)

    cdef int _append(self, const char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t live, need, cap
        cdef char* grown
        if n <= 0:
            return 0
        if self._start == self._end:
            self._start = 0
            self._end = 0
            if self._cap > 4 * (self.max_message_size + 4096) and n < self._cap // 4:
                # Give back the memory of an earlier huge feed.
                cap = n if n > 4096 else 4096
                grown = <char*>PyMem_Realloc(self._buf, cap)
                if grown == NULL:
                    raise MemoryError()
                self._buf = grown
                self._cap = cap
        if self._end + n > self._cap:
            live = self._end - self._start
            if self._start > 0:
                memmove(self._buf, self._buf + self._start, live)
                self._start = 0
                self._end = live
            need = live + n
            if need > self._cap:
                cap = self._cap * 2
                if cap < need:
                    cap = need
                grown = <char*>PyMem_Realloc(self._buf, cap)
                if grown == NULL:
                    raise MemoryError()
                self._buf = grown
                self._cap = cap
        memcpy(self._buf + self._end, data, n)
        self._end += n
        return 0

    def feed(self, data):
        """Append received bytes (bytes, bytearray, memoryview: any size, any split)."""
        cdef Py_buffer view
        if type(data) is bytes:
            self._append(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            return
        _get_buffer(data, &view)
        try:
            self._append(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef object _next(self):
        cdef FixFrame fr
        cdef const unsigned char* p
        cdef Py_ssize_t n, off, keep
        cdef object result
        while True:
            n = self._end - self._start
            if n <= 0:
                self._start = 0
                self._end = 0
                return None
            p = <const unsigned char*>self._buf + self._start
            off = _find_begin(p, n)
            if off < 0:
                keep = _partial_begin(p, n)
                self.junk_bytes += n - keep
                self._start = self._end - keep
                return None
            if off > 0:
                self.junk_bytes += off
                self._start += off
                p += off
                n -= off
            fix_frame(<const char*>p, n, self.max_message_size, &fr)
            if fr.status == FIX_FRAME_NEED_MORE:
                if not self._eof:
                    return None
                fr.status = FIX_FRAME_GARBLED
                fr.reason = FIX_GARBLED_TRUNCATED
                fr.length = n
            if fr.status == FIX_FRAME_GARBLED:
                result = _make_garbled(
                    fr.reason, _garbled_text(fr.reason, &fr, 0, self.max_message_size),
                    PyBytes_FromStringAndSize(<const char*>p, fr.length))
                self._start += 1   # resume the search for b"8=FIX" after this frame's start
                self.junk_bytes += 1
            else:
                result = _build(<const char*>p, &fr, self.max_message_size)
                self._start += fr.length
            if type(result) is FixGarbled:
                self.garbled += 1
                if self.raise_errors:
                    raise (<FixGarbled>result).error
            else:
                self.messages += 1
            return result

    def next(self):
        """The next FixMessage or FixGarbled, or None when more bytes are needed."""
        return self._next()

    def parse(self, data):
        """feed(data), then every complete result as a list (one coarse call)."""
        cdef list out = []
        self.feed(data)
        while True:
            r = self._next()
            if r is None:
                return out
            out.append(r)

    def __iter__(self):
        return self

    def __next__(self):
        r = self._next()
        if r is None:
            raise StopIteration
        return r

    def flush(self):
        """End of stream (disconnect): every result still in the buffer, as a list.

        A frame that can no longer complete becomes a TRUNCATED FixGarbled and the
        search resumes after its first byte, so complete messages behind it (e.g.
        behind a BodyLength that claimed too much) are still returned. The buffer is
        empty afterwards. With raise_errors=True the first garbled result raises;
        call flush() again to continue."""
        cdef list out = []
        self._eof = True
        try:
            while True:
                r = self._next()
                if r is None:
                    break
                out.append(r)
        finally:
            self._eof = False
        self.junk_bytes += self._end - self._start
        self._start = 0
        self._end = 0
        return out

    def reset(self):
        """Drop all buffered bytes (counters are kept)."""
        self._start = 0
        self._end = 0

    @property
    def pending(self):
        """Bytes buffered and not yet returned as a message or garbled record."""
        return self._end - self._start


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

cdef inline void _offer(FixRejectCandidate* best, int reason, int32_t tag, int section,
                        int64_t primary, Py_ssize_t index) noexcept:
    if best.reason >= 0:
        if section > best.section:
            return
        if section == best.section:
            if primary > best.primary:
                return
            if primary == best.primary and index >= best.index:
                return
    best.reason = reason
    best.tag = tag
    best.section = section
    best.primary = primary
    best.index = index


cdef inline int64_t _header_rank(int32_t tag) noexcept:
    if tag == 8:
        return 0
    if tag == 9:
        return 1
    if tag == 35:
        return 2
    return 3 + <int64_t>tag


cdef inline int64_t _trailer_rank(int32_t tag) noexcept:
    if tag == 93:
        return 0
    if tag == 89:
        return 1
    return 2


cdef bint _check_float(const unsigned char* p, Py_ssize_t n) noexcept:
    """QuickFIX DoubleConvertor: [-]digits[.digits], at least one digit, nothing else."""
    cdef Py_ssize_t i = 0
    cdef bint have_digit = False
    if n == 0:
        return False
    if p[0] == _DASH:
        i = 1
        if i >= n:
            return False
    while i < n and _digit(p[i]):
        have_digit = True
        i += 1
    if i < n and p[i] == _DOT:
        i += 1
        while i < n and _digit(p[i]):
            have_digit = True
            i += 1
    return i == n and have_digit


cdef bint _enum_has(const unsigned char* blob, const unsigned char* p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t k
    while blob[0] != 0:
        k = blob[0]
        if k == n and memcmp(blob + 1, p, n) == 0:
            return True
        blob += 1 + k
    return False


cdef bint _enum_ok(int32_t tag, const unsigned char* p, Py_ssize_t n) noexcept:
    cdef const unsigned char* blob = _enum_blob[tag]
    cdef Py_ssize_t i, j
    if _tag_type[tag] != FIX_TYPE_MULTIPLEVALUESTRING:
        return _enum_has(blob, p, n)
    i = 0
    while True:
        j = i
        while j < n and p[j] != _SPACE:
            j += 1
        if not _enum_has(blob, p + i, j - i):
            return False
        if j >= n:
            return True
        i = j + 1


@cython.final
cdef class FixValidator:
    """Validation of parsed messages against the FIX 4.4 dictionary.

    validate(msg) -> None when the message is valid, else
    (SessionRejectReason, RefTagID or None, QuickFIX text). The checks and their order
    follow QuickFIX (Session::next + DataDictionary::validate):
      1. SenderCompID (49), TargetCompID (56) present                 -> 1
      2. header, body, trailer order (header groups consumed)         -> 14
      3. MsgType defined                                              -> 11 (no RefTagID)
      4. repeating group instances start with the delimiter           -> 15
      5. required body fields (ascending tag), then required group members -> 1
      6. per field, header first (8, 9, 35, then by tag), trailer, body by tag,
         then group members in wire order; for each field, the first of:
         repeated in the same field map -> 13, empty -> 4, format -> 6, enum -> 5,
         undefined tag -> 0, not allowed in this message type -> 2, NumInGroup
         count != instances -> 16
      7. MsgSeqNum (34), SendingTime (52) present                     -> 1
    BeginString is not checked here (the session compares it with its own).
    """

    def __init__(self, bint check_fields_have_values=True, bint check_user_defined_fields=True,
                 bint check_fields_out_of_order=True):
        self.check_fields_have_values = check_fields_have_values
        self.check_user_defined_fields = check_user_defined_fields
        self.check_fields_out_of_order = check_fields_out_of_order

    cdef int _field_error(self, FixField* f, const unsigned char* raw) noexcept:
        """Value checks of one field (4, 6, 5, 0) in QuickFIX's order; -1 if none."""
        cdef int32_t tag = f.tag
        cdef const unsigned char* p = raw + f.offset
        cdef Py_ssize_t n = f.length
        cdef int typ
        cdef int64_t scratch
        if n == 0 and self.check_fields_have_values:
            return SESSION_REJECT_TAG_WITHOUT_VALUE
        if tag <= 0 or tag >= FIX_MAX_TAG or _tag_type[tag] == FIX_TYPE_UNDEFINED:
            if not self.check_user_defined_fields and tag >= 5000:
                return -1
            return SESSION_REJECT_INVALID_TAG_NUMBER
        typ = _tag_type[tag]
        if typ == FIX_TYPE_INT:
            if not _parse_int(p, n, &scratch):
                return SESSION_REJECT_INCORRECT_DATA_FORMAT
        elif typ == FIX_TYPE_FLOAT:
            if not _check_float(p, n):
                return SESSION_REJECT_INCORRECT_DATA_FORMAT
        elif typ == FIX_TYPE_CHAR:
            if n != 1:
                return SESSION_REJECT_INCORRECT_DATA_FORMAT
        elif typ == FIX_TYPE_BOOLEAN:
            if n != 1 or (p[0] != b'Y' and p[0] != b'N'):
                return SESSION_REJECT_INCORRECT_DATA_FORMAT
        elif typ == FIX_TYPE_UTCTIMESTAMP:
            if not _check_timestamp(p, n, &scratch):
                return SESSION_REJECT_INCORRECT_DATA_FORMAT
        elif typ == FIX_TYPE_UTCTIMEONLY:
            if not _check_time_of_day(p, n, &scratch):
                return SESSION_REJECT_INCORRECT_DATA_FORMAT
        elif typ == FIX_TYPE_UTCDATEONLY:
            if not _check_date(p, n, &scratch):
                return SESSION_REJECT_INCORRECT_DATA_FORMAT
        if (_tag_flags[tag] & FIX_TAG_ENUM) and not _enum_ok(tag, p, n):
            return SESSION_REJECT_VALUE_INCORRECT
        return -1

    cdef Py_ssize_t _walk_group(self, FixMessage msg, Py_ssize_t j, FixGroupDef g,
                                FixRejectCandidate* best, int32_t* out_of_order, int32_t* missing,
                                Py_ssize_t* instances) except -2:
        """Consume the instances of group g starting at field j; returns the index after."""
        cdef FixField* F = msg._fields
        cdef const unsigned char* raw = <const unsigned char*>PyBytes_AS_STRING(msg.raw)
        cdef uint8_t seen[FIX_TAG_BITMAP_BYTES]
        cdef Py_ssize_t n = msg._nfields, k, inner
        cdef int32_t tag
        cdef int r
        cdef int64_t declared
        cdef bint count_ok
        cdef FixGroupDef nested
        instances[0] = 0
        memset(seen, 0, FIX_TAG_BITMAP_BYTES)
        while j < n:
            tag = F[j].tag
            if not _bit(g.members, tag):
                break
            if tag == g.delimiter:
                if instances[0] > 0:
                    self._instance_required(g, seen, missing)
                instances[0] += 1
                memset(seen, 0, FIX_TAG_BITMAP_BYTES)
            elif instances[0] == 0 or _bit(seen, tag):
                if out_of_order[0] == _NO_TAG:
                    out_of_order[0] = tag
                return j
            _setbit(seen, tag)
            r = self._field_error(&F[j], raw)
            if _bit(g.nested_bits, tag):
                nested = g.nested_for(tag)
                count_ok = _parse_int(raw + F[j].offset, F[j].length, &declared)
                k = self._walk_group(msg, j + 1, nested, best, out_of_order, missing, &inner)
                if r < 0 and count_ok and inner != declared:
                    r = SESSION_REJECT_INCORRECT_NUM_IN_GROUP
                if r >= 0:
                    _offer(best, r, tag, 3, j, j)
                j = k
                continue
            if r >= 0:
                _offer(best, r, tag, 3, j, j)
            j += 1
        if instances[0] > 0:
            self._instance_required(g, seen, missing)
        return j

    cdef void _instance_required(self, FixGroupDef g, uint8_t* seen, int32_t* missing) noexcept:
        cdef Py_ssize_t k
        if missing[0] != _NO_TAG:
            return
        for k in range(g.n_required):
            if not _bit(seen, g.required[k]):
                missing[0] = g.required[k]
                return

    cdef int check(self, FixMessage msg, int32_t* ref_tag) except -2:
        cdef FixField* F = msg._fields
        cdef const unsigned char* raw = <const unsigned char*>PyBytes_AS_STRING(msg.raw)
        cdef Py_ssize_t n = msg._nfields, i, k, inner
        cdef int32_t tag, out_of_order = _NO_TAG, missing = _NO_TAG
        cdef int section, r
        cdef int64_t primary, declared
        cdef bint count_ok
        cdef uint8_t seen_header[FIX_TAG_BITMAP_BYTES]
        cdef uint8_t seen_trailer[FIX_TAG_BITMAP_BYTES]
        cdef uint8_t seen_body[FIX_TAG_BITMAP_BYTES]
        cdef uint8_t* seen
        cdef FixRejectCandidate best
        cdef FixMsgDef md
        cdef FixGroupDef g
        ref_tag[0] = _NO_TAG
        # 1. SenderCompID / TargetCompID (QuickFIX Session::next, before the dictionary).
        if msg.find(49, 0) < 0:
            ref_tag[0] = 49
            return SESSION_REJECT_REQUIRED_TAG_MISSING
        if msg.find(56, 0) < 0:
            ref_tag[0] = 56
            return SESSION_REJECT_REQUIRED_TAG_MISSING
        # 2. Header first, trailer last (Message::hasValidStructure).
        if self.check_fields_out_of_order:
            section = 0
            i = 0
            while i < n:
                tag = F[i].tag
                if _bit(_header_bits, tag):
                    if section != 0:
                        ref_tag[0] = tag
                        return SESSION_REJECT_TAG_OUT_OF_ORDER
                    if _bit(_header_group_bits, tag):
                        g = _header_group_for(tag)
                        i += 1
                        while i < n and _bit(g.members, F[i].tag):
                            i += 1
                        continue
                elif _bit(_trailer_bits, tag):
                    section = 2
                else:
                    if section == 2:
                        ref_tag[0] = tag
                        return SESSION_REJECT_TAG_OUT_OF_ORDER
                    section = 1
                i += 1
        # 3. MsgType.
        md = _msg_defs.get(msg.msg_type_bytes())
        if md is None:
            return SESSION_REJECT_INVALID_MSG_TYPE
        # 4-6. One walk: classify, consume groups, collect the first error in QF order.
        best.reason = -1
        memset(seen_header, 0, FIX_TAG_BITMAP_BYTES)
        memset(seen_trailer, 0, FIX_TAG_BITMAP_BYTES)
        memset(seen_body, 0, FIX_TAG_BITMAP_BYTES)
        i = 0
        while i < n:
            tag = F[i].tag
            if _bit(_header_bits, tag):
                section = 0
                seen = seen_header
                primary = _header_rank(tag)
            elif _bit(_trailer_bits, tag):
                section = 1
                seen = seen_trailer
                primary = _trailer_rank(tag)
            else:
                section = 2
                seen = seen_body
                primary = tag
            if _bit(seen, tag) or ((tag < 0 or tag >= FIX_MAX_TAG) and msg.find(tag, 0) < i):
                r = SESSION_REJECT_TAG_APPEARS_MORE_THAN_ONCE
            else:
                _setbit(seen, tag)
                r = self._field_error(&F[i], raw)
                if r < 0 and section == 2 and not _bit(md.allowed, tag) and \
                        (self.check_user_defined_fields or tag < 5000):
                    r = SESSION_REJECT_TAG_NOT_DEFINED_FOR_MSG
            g = None
            if section == 2 and _bit(md.group_bits, tag):
                g = md.group_for(tag)
            elif section == 0 and _bit(_header_group_bits, tag):
                g = _header_group_for(tag)
            if g is not None:
                count_ok = _parse_int(raw + F[i].offset, F[i].length, &declared)
                k = self._walk_group(msg, i + 1, g, &best, &out_of_order, &missing, &inner)
                if r < 0 and count_ok and inner != declared:
                    r = SESSION_REJECT_INCORRECT_NUM_IN_GROUP
                if r >= 0:
                    _offer(&best, r, tag, section, primary, i)
                i = k
                continue
            if r >= 0:
                _offer(&best, r, tag, section, primary, i)
            i += 1
        if out_of_order != _NO_TAG:
            ref_tag[0] = out_of_order
            return SESSION_REJECT_GROUP_FIELDS_OUT_OF_ORDER
        for k in range(md.n_required):
            if not _bit(seen_body, md.required[k]):
                ref_tag[0] = md.required[k]
                return SESSION_REJECT_REQUIRED_TAG_MISSING
        if missing != _NO_TAG:
            ref_tag[0] = missing
            return SESSION_REJECT_REQUIRED_TAG_MISSING
        if best.reason >= 0:
            ref_tag[0] = best.tag
            return best.reason
        # 7. Remaining required header fields (8, 9, 35 exist by framing).
        for tag in _header_required:
            if not _bit(seen_header, tag):
                ref_tag[0] = tag
                return SESSION_REJECT_REQUIRED_TAG_MISSING
        return SESSION_REJECT_NONE

    def validate(self, FixMessage msg not None):
        """None, or (SessionRejectReason, RefTagID or None, Text) for the first failure."""
        cdef int32_t ref
        cdef int reason = self.check(msg, &ref)
        if reason == SESSION_REJECT_NONE:
            return None
        return (reason, None if ref == _NO_TAG else ref, SESSION_REJECT_TEXT[reason])


cdef FixValidator _default_validator = FixValidator()


def validate(FixMessage msg not None):
    """Validate with the default options (QuickFIX defaults): None or
    (SessionRejectReason, RefTagID or None, Text)."""
    return _default_validator.validate(msg)


# ---------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------

cdef inline bytes _as_bytes(object value, str what):
    if isinstance(value, bytes):
        return <bytes>value
    if isinstance(value, str):
        return (<str>value).encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise FixInvalidField(f"{what} must be str or bytes, not {type(value).__name__}")


cdef bytes _field_value(int32_t tag, object value):
    """Wire bytes of a Python value: bytes as is, str UTF-8, bool Y/N, int decimal,
    Decimal fixed-point, anything else str() (float refused). SOH is refused except in
    DATA fields."""
    cdef bytes b
    if isinstance(value, bytes):
        b = <bytes>value
    elif isinstance(value, str):
        b = (<str>value).encode("utf-8")
    elif value is True:
        b = b"Y"
    elif value is False:
        b = b"N"
    elif isinstance(value, int):
        b = str(value).encode("ascii")
    elif isinstance(value, (bytearray, memoryview)):
        b = bytes(value)
    elif value is None:
        raise FixInvalidField(f"tag {tag}: value is None")
    elif isinstance(value, float):
        raise FixInvalidField(f"tag {tag}: float {value!r} refused (binary floats are not exact "
                              f"decimals): pass int ticks, a Decimal or a str")
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise FixInvalidField(f"tag {tag}: {value!r} is not a finite number")
        b = format(value, "f").encode("ascii")
    else:
        b = str(value).encode("utf-8")
    if not (0 < tag < FIX_MAX_TAG and (_tag_flags[tag] & FIX_TAG_DATA)):
        if memchr(PyBytes_AS_STRING(b), FIX_SOH, PyBytes_GET_SIZE(b)) != NULL:
            raise FixInvalidField(f"tag {tag}: value contains SOH")
    return b


cdef inline int32_t _check_tag(object tag) except? -1:
    cdef long long t
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise FixInvalidField(f"tag {tag!r} is not an int")
    t = tag
    if t <= 0 or t > 2147483647:
        raise FixInvalidField(f"tag {tag} is out of range")
    return <int32_t>t


cdef inline char _char_of(object value, str what) except 0:
    cdef bytes b = _as_bytes(value, what)
    cdef char c = PyBytes_AS_STRING(b)[0] if PyBytes_GET_SIZE(b) == 1 else 0
    if c == FIX_SOH or c == 0:
        raise FixInvalidField(f"{what} must be one character, got {value!r}")
    return c


cdef inline char _side_char(int side) except 0:
    if side == SIDE_BUY:
        return b'1'
    if side == SIDE_SELL:
        return b'2'
    raise FixInvalidField(f"side {side} is not SIDE_BUY (0) or SIDE_SELL (1)")


cdef inline char _ord_type_char(int ord_type) except 0:
    if ord_type == ORDTYPE_LIMIT:
        return b'2'
    if ord_type == ORDTYPE_MARKET:
        return b'1'
    raise FixInvalidField(f"ord_type {ord_type} is not ORDTYPE_LIMIT (0) or ORDTYPE_MARKET (1)")


cdef inline char _tif_char(int tif) except 0:
    if tif == TIF_DAY:
        return b'0'
    if tif == TIF_GTC:
        return b'1'
    if tif == TIF_IOC:
        return b'3'
    if tif == TIF_FOK:
        return b'4'
    raise FixInvalidField(f"tif {tif} is not TIF_DAY/GTC/IOC/FOK (0..3)")


# Header tags the encoder writes itself; never accepted in fields or header extras.
_OWNED_TAGS = frozenset((8, 9, 10, 35, 34, 43, 49, 52, 56, 122))


@cython.final
cdef class FixEncoder:
    """Encoder for one FIX session (one SenderCompID/TargetCompID pair).

    The header is precomputed; every message is written into one reusable buffer and
    returned as bytes. Header fields come out in ascending tag order after 8, 9, 35
    (as QuickFIX writes them): 34, [43], 49, 52, 56, [122], plus any static
    `header_fields` given here and per-message `header` extras in their tag order.
    SendingTime (52) has milliseconds (YYYYMMDD-HH:MM:SS.sss, UTC); the formatted
    second is cached. Body fields are written in the order given."""

    def __cinit__(self):
        self._buf = NULL
        self._cached_sec = -1
        self._last_sending_time_len = 0

    def __init__(self, sender_comp_id, target_comp_id, begin_string="FIX.4.4", header_fields=None,
                 Py_ssize_t max_message_size=FIX_DEFAULT_MAX_MESSAGE):
        cdef list static = []
        self.begin_string = _field_value(8, begin_string)
        self.sender_comp_id = _field_value(49, sender_comp_id)
        self.target_comp_id = _field_value(56, target_comp_id)
        if not self.sender_comp_id or not self.target_comp_id or not self.begin_string:
            raise FixInvalidField("sender_comp_id, target_comp_id and begin_string "
                                  "must not be empty")
        if max_message_size < 64 or max_message_size > 9999999:
            raise ValueError("max_message_size must be in 64..9999999")
        self.max_message_size = max_message_size
        self._prefix = b"8=" + self.begin_string + b"\x01"
        self._reserve = len(self._prefix) + 2 + FIX_MAX_BODY_LENGTH_DIGITS + 1
        static.append((49, self.sender_comp_id))
        static.append((56, self.target_comp_id))
        for tag, value in (header_fields or ()):
            t = _check_tag(tag)
            if t in _OWNED_TAGS or t < 34:
                raise FixInvalidField(f"header field {t} is written by the encoder itself")
            static.append((t, _field_value(t, value)))
        static.sort(key=lambda kv: kv[0])
        self._static_header = static
        self._seg_pre = b"".join(b"%d=%s\x01" % kv for kv in static if 34 < kv[0] < 43)
        self._seg_mid = b"".join(b"%d=%s\x01" % kv for kv in static if 43 < kv[0] < 52)
        self._seg_post = b"".join(b"%d=%s\x01" % kv for kv in static if 52 < kv[0] < 122)
        self._seg_tail = b"".join(b"%d=%s\x01" % kv for kv in static if kv[0] > 122)
        if self._buf == NULL:
            self._cap = 1024
            self._buf = <char*>PyMem_Malloc(self._cap)
            if self._buf == NULL:
                raise MemoryError()
        self._pos = self._reserve

    def __dealloc__(self):
        PyMem_Free(self._buf)

    # -- buffer primitives ------------------------------------------------------
    cdef int _reserve_bytes(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t need = self._pos + n + 8     # + room for "10=ccc<SOH>"
        cdef Py_ssize_t cap
        cdef char* grown
        if need <= self._cap:
            return 0
        if self._pos + n - self._reserve > self.max_message_size:
            raise FixEncodeTooLarge(
                f"message body would exceed max_message_size {self.max_message_size}")
        cap = self._cap * 2
        if cap < need:
            cap = need
        grown = <char*>PyMem_Realloc(self._buf, cap)
        if grown == NULL:
            raise MemoryError()
        self._buf = grown
        self._cap = cap
        return 0

    cdef int _put_raw(self, const char* p, Py_ssize_t n) except -1:
        self._reserve_bytes(n)
        memcpy(self._buf + self._pos, p, n)
        self._pos += n
        return 0

    cdef int _put_tag(self, int32_t tag) except -1:
        self._reserve_bytes(12)
        self._pos += _fmt_uint(self._buf + self._pos, <uint64_t>tag)
        self._buf[self._pos] = b'='
        self._pos += 1
        return 0

    cdef int _put_int_field(self, int32_t tag, int64_t value) except -1:
        self._reserve_bytes(36)
        self._pos += _fmt_uint(self._buf + self._pos, <uint64_t>tag)
        self._buf[self._pos] = b'='
        self._pos += 1
        self._pos += _fmt_int(self._buf + self._pos, value)
        self._buf[self._pos] = FIX_SOH
        self._pos += 1
        return 0

    cdef int _put_char_field(self, int32_t tag, char value) except -1:
        self._reserve_bytes(16)
        self._pos += _fmt_uint(self._buf + self._pos, <uint64_t>tag)
        self._buf[self._pos] = b'='
        self._buf[self._pos + 1] = value
        self._buf[self._pos + 2] = FIX_SOH
        self._pos += 3
        return 0

    cdef int _put_bytes_field(self, int32_t tag, const char* p, Py_ssize_t n) except -1:
        self._reserve_bytes(n + 14)
        self._pos += _fmt_uint(self._buf + self._pos, <uint64_t>tag)
        self._buf[self._pos] = b'='
        self._pos += 1
        memcpy(self._buf + self._pos, p, n)
        self._pos += n
        self._buf[self._pos] = FIX_SOH
        self._pos += 1
        return 0

    cdef int _put_obj_field(self, int32_t tag, object value) except -1:
        """A str/bytes identifier field (fast path), or any value via _field_value()."""
        cdef const char* p
        cdef Py_ssize_t n
        if type(value) is str:
            p = PyUnicode_AsUTF8AndSize(value, &n)
        elif type(value) is bytes:
            p = PyBytes_AS_STRING(value)
            n = PyBytes_GET_SIZE(value)
        else:
            value = _field_value(tag, value)
            p = PyBytes_AS_STRING(value)
            n = PyBytes_GET_SIZE(value)
            if n == 0:
                raise FixInvalidField(f"tag {tag}: empty value")
            return self._put_bytes_field(tag, p, n)
        if n == 0:
            raise FixInvalidField(f"tag {tag}: empty value")
        if memchr(p, FIX_SOH, n) != NULL and \
                not (0 < tag < FIX_MAX_TAG and (_tag_flags[tag] & FIX_TAG_DATA)):
            raise FixInvalidField(f"tag {tag}: value contains SOH")
        return self._put_bytes_field(tag, p, n)

    cdef int _put_price_field(self, int32_t tag, int64_t ticks, int decimals,
                              int64_t mult) except -1:
        """ticks * mult / 10**decimals as decimal text with exactly `decimals` places."""
        cdef long long v
        cdef uint64_t mag, scale = 1, ip, fp
        cdef int k
        cdef char* out
        if decimals < 0 or decimals > 18:
            raise FixInvalidField(f"decimals {decimals} is outside 0..18")
        if ticks == NO_PRICE:
            raise FixInvalidField(f"tag {tag}: NO_PRICE cannot be encoded")
        if fix_mul_overflow(ticks, mult, &v):
            raise FixInvalidField(f"tag {tag}: price {ticks} * {mult} overflows int64")
        self._reserve_bytes(48)
        self._pos += _fmt_uint(self._buf + self._pos, <uint64_t>tag)
        out = self._buf + self._pos
        out[0] = b'='
        out += 1
        if v < 0:
            out[0] = b'-'
            out += 1
            mag = <uint64_t>0 - <uint64_t>v
        else:
            mag = <uint64_t>v
        for _ in range(decimals):
            scale *= 10
        ip = mag // scale
        fp = mag - ip * scale
        out += _fmt_uint(out, ip)
        if decimals > 0:
            out[0] = b'.'
            for k in range(decimals, 0, -1):
                out[k] = <char>(48 + fp % 10)
                fp //= 10
            out += decimals + 1
        out[0] = FIX_SOH
        out += 1
        self._pos = out - self._buf
        return 0

    cdef void _format_time(self, int64_t ns, char* out) noexcept:
        """21 bytes "YYYYMMDD-HH:MM:SS.sss" for ns >= 0, via the per-second cache."""
        cdef int64_t sec = ns // 1000000000
        cdef int ms = <int>((ns // 1000000) % 1000)
        if sec != self._cached_sec:
            _format_second(sec, self._time_text)
            self._cached_sec = sec
        memcpy(out, self._time_text, 18)
        out[18] = <char>(48 + ms // 100)
        out[19] = <char>(48 + (ms // 10) % 10)
        out[20] = <char>(48 + ms % 10)

    cdef int _put_time_field(self, int32_t tag, int64_t ns) except -1:
        if ns < 0 or ns // 1000000000 >= 253402300800:   # year 10000; the product overflows int64
            raise FixInvalidField(f"tag {tag}: timestamp {ns} ns is outside 1970..9999")
        self._reserve_bytes(40)
        self._pos += _fmt_uint(self._buf + self._pos, <uint64_t>tag)
        self._buf[self._pos] = b'='
        self._format_time(ns, self._buf + self._pos + 1)
        self._buf[self._pos + 22] = FIX_SOH
        self._pos += 23
        return 0

    cdef int _put_orig_sending_time(self, object orig) except -1:
        cdef bytes b
        if isinstance(orig, int) and not isinstance(orig, bool):
            return self._put_time_field(122, orig)
        b = _as_bytes(orig, "orig_sending_time")
        cdef int64_t ns
        if not _check_timestamp(<const unsigned char*>PyBytes_AS_STRING(b),
                                PyBytes_GET_SIZE(b), &ns):
            raise FixInvalidField(f"orig_sending_time {orig!r} is not a UTCTimestamp")
        return self._put_bytes_field(122, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))

    cdef int _begin(self, const char* msg_type, Py_ssize_t type_len, int64_t seq_num, bint poss_dup,
                    object orig_sending_time, object header, int64_t sending_time_ns) except -1:
        cdef list entries
        cdef Py_ssize_t start
        if self._prefix is None:
            raise TypeError("FixEncoder.__init__ was not called")
        if seq_num < 0:
            raise FixInvalidField(f"seq_num {seq_num} is negative")
        if type_len <= 0 or memchr(msg_type, FIX_SOH, type_len) != NULL \
                or memchr(msg_type, _EQ, type_len) != NULL:
            raise FixInvalidField("msg_type must be non-empty without SOH or '='")
        if poss_dup and orig_sending_time is None:
            raise FixInvalidField("OrigSendingTime (122) is required with PossDupFlag (43)=Y")
        if sending_time_ns < 0:
            if sending_time_ns != -1:
                raise FixInvalidField(f"sending_time_ns {sending_time_ns} is negative")
            sending_time_ns = _now_ns()
        self._pos = self._reserve
        self._put_bytes_field(35, msg_type, type_len)
        if header:
            # Slow path: merge per-message header extras into ascending tag order.
            entries = []
            for tag, value in header:
                t = _check_tag(tag)
                if t in _OWNED_TAGS or t < 34:
                    raise FixInvalidField(f"header field {t} is written by the encoder itself")
                entries.append((t, 1, _field_value(t, value)))
            entries.extend((kv[0], 1, kv[1]) for kv in self._static_header)
            entries.append((34, 0, None))
            entries.append((52, 0, None))
            if poss_dup:
                entries.append((43, 0, None))
            if orig_sending_time is not None:
                entries.append((122, 0, None))
            entries.sort(key=lambda e: e[0])
            for t, kind, value in entries:
                if kind == 1:
                    self._put_bytes_field(t, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
                elif t == 34:
                    self._put_int_field(34, seq_num)
                elif t == 43:
                    self._put_char_field(43, b'Y')
                elif t == 52:
                    start = self._pos
                    self._put_time_field(52, sending_time_ns)
                    memcpy(self._last_sending_time, self._buf + start + 3, 21)
                    self._last_sending_time_len = 21
                else:
                    self._put_orig_sending_time(orig_sending_time)
            self._body_pos = self._pos
            return 0
        self._put_int_field(34, seq_num)
        if self._seg_pre:
            self._put_raw(PyBytes_AS_STRING(self._seg_pre), PyBytes_GET_SIZE(self._seg_pre))
        if poss_dup:
            self._put_char_field(43, b'Y')
        self._put_raw(PyBytes_AS_STRING(self._seg_mid), PyBytes_GET_SIZE(self._seg_mid))
        start = self._pos
        self._put_time_field(52, sending_time_ns)
        memcpy(self._last_sending_time, self._buf + start + 3, 21)
        self._last_sending_time_len = 21
        self._put_raw(PyBytes_AS_STRING(self._seg_post), PyBytes_GET_SIZE(self._seg_post))
        if orig_sending_time is not None:
            self._put_orig_sending_time(orig_sending_time)
        if self._seg_tail:
            self._put_raw(PyBytes_AS_STRING(self._seg_tail), PyBytes_GET_SIZE(self._seg_tail))
        self._body_pos = self._pos
        return 0

    cdef bytes _finish(self):
        cdef Py_ssize_t body_len = self._pos - self._reserve
        cdef char digits[24]
        cdef Py_ssize_t nd, plen, hs
        cdef int cs
        cdef char* out
        if body_len > self.max_message_size:
            raise FixEncodeTooLarge(f"message body of {body_len} bytes exceeds max_message_size "
                                    f"{self.max_message_size}")
        nd = _fmt_uint(digits, <uint64_t>body_len)
        plen = PyBytes_GET_SIZE(self._prefix)
        hs = self._reserve - (plen + 2 + nd + 1)
        out = self._buf + hs
        memcpy(out, PyBytes_AS_STRING(self._prefix), plen)
        out += plen
        out[0] = b'9'
        out[1] = b'='
        memcpy(out + 2, digits, nd)
        out[2 + nd] = FIX_SOH
        cs = fix_checksum(self._buf + hs, self._pos - hs)
        out = self._buf + self._pos
        out[0] = b'1'
        out[1] = b'0'
        out[2] = b'='
        out[3] = <char>(48 + cs // 100)
        out[4] = <char>(48 + (cs // 10) % 10)
        out[5] = <char>(48 + cs % 10)
        out[6] = FIX_SOH
        return PyBytes_FromStringAndSize(self._buf + hs, self._pos + 7 - hs)

    cdef int _begin_type(self, object msg_type, int64_t seq_num, bint poss_dup,
                         object orig_sending_time, object header,
                         int64_t sending_time_ns) except -1:
        cdef bytes mt = _as_bytes(msg_type, "msg_type")
        return self._begin(PyBytes_AS_STRING(mt), PyBytes_GET_SIZE(mt), seq_num, poss_dup,
                           orig_sending_time, header, sending_time_ns)

    @property
    def last_body(self):
        """Body fields of the last encoded message ("tag=value<SOH>...", no header or
        trailer): what a message store keeps for encode_raw_body() resends."""
        if self._body_pos <= 0 or self._body_pos > self._pos:
            return b""
        return PyBytes_FromStringAndSize(self._buf + self._body_pos, self._pos - self._body_pos)

    @property
    def last_sending_time(self):
        """SendingTime (52) of the last encoded message (store it for resends as 122)."""
        return PyBytes_FromStringAndSize(self._last_sending_time, self._last_sending_time_len)

    # -- generic ---------------------------------------------------------------
    def encode(self, msg_type, fields, int64_t seq_num, bint poss_dup=False, orig_sending_time=None,
               header=None, int64_t sending_time_ns=-1):
        """Any message: `fields` is an iterable of (tag, value) body fields, written in
        the order given (values: bytes, str, int, bool as Y/N, Decimal; float refused).
        `header` adds per-message header fields (e.g. 97, 115, 128)."""
        self._begin_type(msg_type, seq_num, poss_dup, orig_sending_time, header, sending_time_ns)
        for tag, value in fields:
            t = _check_tag(tag)
            if t in _OWNED_TAGS:
                raise FixInvalidField(f"tag {t} is written by the encoder itself")
            self._put_obj_field(t, value)
        return self._finish()

    def encode_raw_body(self, msg_type, body, int64_t seq_num, bint poss_dup=False,
                        orig_sending_time=None, header=None, int64_t sending_time_ns=-1):
        """A message whose body is already encoded ("tag=value<SOH>...", e.g. from a
        message store for a resend with poss_dup=True and the original SendingTime)."""
        cdef Py_buffer view
        _get_buffer(body, &view)
        try:
            if view.len > 0 and (<const char*>view.buf)[view.len - 1] != FIX_SOH:
                raise FixInvalidField("raw body must end with SOH")
            self._begin_type(msg_type, seq_num, poss_dup, orig_sending_time, header,
                             sending_time_ns)
            self._put_raw(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return self._finish()

    # -- typed application messages ---------------------------------------------
    cpdef bytes new_order_single(self, int64_t seq_num, object cl_ord_id, object symbol, int side,
                                 int64_t qty, int64_t price=NO_PRICE, int decimals=0,
                                 int ord_type=ORDTYPE_LIMIT, int tif=TIF_DAY, object account=None,
                                 int64_t transact_time_ns=-1, int64_t sending_time_ns=-1,
                                 int64_t price_mult=1):
        """NewOrderSingle (D). price is int64 ticks: text = price * price_mult / 10**decimals.
        Fields: 1 (if account) 11 38 40 44 (limit only) 54 55 59 60."""
        cdef char side_c = _side_char(side)
        cdef char type_c = _ord_type_char(ord_type)
        cdef char tif_c = _tif_char(tif)
        if qty <= 0:
            raise FixInvalidField(f"qty {qty} must be positive")
        if ord_type == ORDTYPE_LIMIT and price == NO_PRICE:
            raise FixInvalidField("a limit order needs a price")
        if sending_time_ns == -1:
            sending_time_ns = _now_ns()
        self._begin(b"D", 1, seq_num, False, None, None, sending_time_ns)
        if account is not None:
            self._put_obj_field(1, account)
        self._put_obj_field(11, cl_ord_id)
        self._put_int_field(38, qty)
        self._put_char_field(40, type_c)
        if ord_type == ORDTYPE_LIMIT:
            self._put_price_field(44, price, decimals, price_mult)
        self._put_char_field(54, side_c)
        self._put_obj_field(55, symbol)
        self._put_char_field(59, tif_c)
        self._put_time_field(60, sending_time_ns if transact_time_ns == -1 else transact_time_ns)
        return self._finish()

    cpdef bytes execution_report(self, int64_t seq_num, object order_id, object exec_id,
                                 object exec_type, object ord_status, object symbol, int side,
                                 int64_t leaves_qty, int64_t cum_qty, int64_t avg_px=0,
                                 object cl_ord_id=None, int64_t order_qty=-1,
                                 int64_t price=NO_PRICE, int64_t last_qty=0,
                                 int64_t last_px=NO_PRICE, int decimals=0,
                                 object orig_cl_ord_id=None, object text=None, int ord_type=-1,
                                 int tif=-1, int64_t transact_time_ns=-1,
                                 int64_t sending_time_ns=-1, int64_t price_mult=1,
                                 bint poss_dup=False, object orig_sending_time=None):
        """ExecutionReport (8). Prices (price, last_px, avg_px) are int64 ticks with the
        same decimals/price_mult as new_order_single; quantities are integer lots.
        Fields: 6 11? 14 17 31/32 (if last_qty) 37 38? 39 40? 41? 44? 54 55 58? 59? 60 150 151."""
        cdef char exec_c = _char_of(exec_type, "exec_type")
        cdef char status_c = _char_of(ord_status, "ord_status")
        cdef char side_c = _side_char(side)
        if sending_time_ns == -1:
            sending_time_ns = _now_ns()
        self._begin(b"8", 1, seq_num, poss_dup, orig_sending_time, None, sending_time_ns)
        self._put_price_field(6, avg_px, decimals, price_mult)
        if cl_ord_id is not None:
            self._put_obj_field(11, cl_ord_id)
        self._put_int_field(14, cum_qty)
        self._put_obj_field(17, exec_id)
        if last_qty != 0:
            if last_px == NO_PRICE:
                raise FixInvalidField("last_qty without last_px")
            self._put_price_field(31, last_px, decimals, price_mult)
            self._put_int_field(32, last_qty)
        self._put_obj_field(37, order_id)
        if order_qty >= 0:
            self._put_int_field(38, order_qty)
        self._put_char_field(39, status_c)
        if ord_type >= 0:
            self._put_char_field(40, _ord_type_char(ord_type))
        if orig_cl_ord_id is not None:
            self._put_obj_field(41, orig_cl_ord_id)
        if price != NO_PRICE:
            self._put_price_field(44, price, decimals, price_mult)
        self._put_char_field(54, side_c)
        self._put_obj_field(55, symbol)
        if text is not None:
            self._put_obj_field(58, text)
        if tif >= 0:
            self._put_char_field(59, _tif_char(tif))
        self._put_time_field(60, sending_time_ns if transact_time_ns == -1 else transact_time_ns)
        self._put_char_field(150, exec_c)
        self._put_int_field(151, leaves_qty)
        return self._finish()

    def order_cancel_request(self, int64_t seq_num, cl_ord_id, orig_cl_ord_id, symbol, int side,
                             int64_t qty=-1, order_id=None, int64_t transact_time_ns=-1,
                             int64_t sending_time_ns=-1, bint poss_dup=False,
                             orig_sending_time=None):
        """OrderCancelRequest (F): 11 37? 38? 41 54 55 60."""
        cdef char side_c = _side_char(side)
        if sending_time_ns == -1:
            sending_time_ns = _now_ns()
        self._begin(b"F", 1, seq_num, poss_dup, orig_sending_time, None, sending_time_ns)
        self._put_obj_field(11, cl_ord_id)
        if order_id is not None:
            self._put_obj_field(37, order_id)
        if qty >= 0:
            self._put_int_field(38, qty)
        self._put_obj_field(41, orig_cl_ord_id)
        self._put_char_field(54, side_c)
        self._put_obj_field(55, symbol)
        self._put_time_field(60, sending_time_ns if transact_time_ns == -1 else transact_time_ns)
        return self._finish()

    def order_cancel_replace_request(self, int64_t seq_num, cl_ord_id, orig_cl_ord_id, symbol,
                                     int side, int64_t qty, int64_t price=NO_PRICE, int decimals=0,
                                     int ord_type=ORDTYPE_LIMIT, int tif=TIF_DAY, order_id=None,
                                     account=None, int64_t transact_time_ns=-1,
                                     int64_t sending_time_ns=-1, int64_t price_mult=1,
                                     bint poss_dup=False, orig_sending_time=None):
        """OrderCancelReplaceRequest (G): 1? 11 37? 38 40 41 44? 54 55 59 60."""
        cdef char side_c = _side_char(side)
        cdef char type_c = _ord_type_char(ord_type)
        cdef char tif_c = _tif_char(tif)
        if qty <= 0:
            raise FixInvalidField(f"qty {qty} must be positive")
        if ord_type == ORDTYPE_LIMIT and price == NO_PRICE:
            raise FixInvalidField("a limit order needs a price")
        if sending_time_ns == -1:
            sending_time_ns = _now_ns()
        self._begin(b"G", 1, seq_num, poss_dup, orig_sending_time, None, sending_time_ns)
        if account is not None:
            self._put_obj_field(1, account)
        self._put_obj_field(11, cl_ord_id)
        if order_id is not None:
            self._put_obj_field(37, order_id)
        self._put_int_field(38, qty)
        self._put_char_field(40, type_c)
        self._put_obj_field(41, orig_cl_ord_id)
        if ord_type == ORDTYPE_LIMIT:
            self._put_price_field(44, price, decimals, price_mult)
        self._put_char_field(54, side_c)
        self._put_obj_field(55, symbol)
        self._put_char_field(59, tif_c)
        self._put_time_field(60, sending_time_ns if transact_time_ns == -1 else transact_time_ns)
        return self._finish()

    def order_mass_cancel_request(self, int64_t seq_num, cl_ord_id, mass_cancel_request_type="7",
                                  symbol=None, int side=-1, int64_t transact_time_ns=-1,
                                  int64_t sending_time_ns=-1, bint poss_dup=False,
                                  orig_sending_time=None):
        """OrderMassCancelRequest (q): 11 54? 55? 60 530 (530: "1" by security, "7" all orders)."""
        cdef char type_c = _char_of(mass_cancel_request_type, "mass_cancel_request_type")
        if sending_time_ns == -1:
            sending_time_ns = _now_ns()
        self._begin(b"q", 1, seq_num, poss_dup, orig_sending_time, None, sending_time_ns)
        self._put_obj_field(11, cl_ord_id)
        if side >= 0:
            self._put_char_field(54, _side_char(side))
        if symbol is not None:
            self._put_obj_field(55, symbol)
        self._put_time_field(60, sending_time_ns if transact_time_ns == -1 else transact_time_ns)
        self._put_char_field(530, type_c)
        return self._finish()

    def order_status_request(self, int64_t seq_num, cl_ord_id, symbol, int side, order_id=None,
                             int64_t sending_time_ns=-1, bint poss_dup=False,
                             orig_sending_time=None):
        """OrderStatusRequest (H): 11 37? 54 55."""
        cdef char side_c = _side_char(side)
        self._begin(b"H", 1, seq_num, poss_dup, orig_sending_time, None, sending_time_ns)
        self._put_obj_field(11, cl_ord_id)
        if order_id is not None:
            self._put_obj_field(37, order_id)
        self._put_char_field(54, side_c)
        self._put_obj_field(55, symbol)
        return self._finish()

    def order_cancel_reject(self, int64_t seq_num, order_id, cl_ord_id, orig_cl_ord_id, ord_status,
                            cxl_rej_response_to="1", int cxl_rej_reason=-1, text=None,
                            int64_t sending_time_ns=-1, bint poss_dup=False,
                            orig_sending_time=None):
        """OrderCancelReject (9): 11 37 39 41 58? 102? 434 (434: "1" cancel, "2" replace)."""
        cdef char status_c = _char_of(ord_status, "ord_status")
        cdef char resp_c = _char_of(cxl_rej_response_to, "cxl_rej_response_to")
        self._begin(b"9", 1, seq_num, poss_dup, orig_sending_time, None, sending_time_ns)
        self._put_obj_field(11, cl_ord_id)
        self._put_obj_field(37, order_id)
        self._put_char_field(39, status_c)
        self._put_obj_field(41, orig_cl_ord_id)
        if text is not None:
            self._put_obj_field(58, text)
        if cxl_rej_reason >= 0:
            self._put_int_field(102, cxl_rej_reason)
        self._put_char_field(434, resp_c)
        return self._finish()

    # -- typed session messages -------------------------------------------------
    def logon(self, int64_t seq_num, int heart_bt_int, bint reset_seq_num=False,
              int encrypt_method=0, username=None, password=None,
              int64_t next_expected_msg_seq_num=-1, header=None,
              int64_t sending_time_ns=-1):
        """Logon (A): 98 108 141? 553? 554? 789?."""
        self._begin(b"A", 1, seq_num, False, None, header, sending_time_ns)
        self._put_int_field(98, encrypt_method)
        self._put_int_field(108, heart_bt_int)
        if reset_seq_num:
            self._put_char_field(141, b'Y')
        if username is not None:
            self._put_obj_field(553, username)
        if password is not None:
            self._put_obj_field(554, password)
        if next_expected_msg_seq_num >= 0:
            self._put_int_field(789, next_expected_msg_seq_num)
        return self._finish()

    def heartbeat(self, int64_t seq_num, test_req_id=None, header=None, int64_t sending_time_ns=-1):
        """Heartbeat (0): 112? (the TestReqID being answered)."""
        self._begin(b"0", 1, seq_num, False, None, header, sending_time_ns)
        if test_req_id is not None:
            self._put_obj_field(112, test_req_id)
        return self._finish()

    def test_request(self, int64_t seq_num, test_req_id, header=None, int64_t sending_time_ns=-1):
        """TestRequest (1): 112."""
        self._begin(b"1", 1, seq_num, False, None, header, sending_time_ns)
        self._put_obj_field(112, test_req_id)
        return self._finish()

    def resend_request(self, int64_t seq_num, int64_t begin_seq_no, int64_t end_seq_no=0,
                       header=None, int64_t sending_time_ns=-1):
        """ResendRequest (2): 7 16 (16=0: up to the latest)."""
        self._begin(b"2", 1, seq_num, False, None, header, sending_time_ns)
        self._put_int_field(7, begin_seq_no)
        self._put_int_field(16, end_seq_no)
        return self._finish()

    def reject(self, int64_t seq_num, int64_t ref_seq_num, text=None, ref_tag_id=None,
               ref_msg_type=None, session_reject_reason=None, header=None,
               int64_t sending_time_ns=-1):
        """Reject (3): 45 58? 371? 372? 373? (QuickFIX order). `header` carries the
        reverse-routing fields (128/129/145 or 115/116/144)."""
        self._begin(b"3", 1, seq_num, False, None, header, sending_time_ns)
        self._put_int_field(45, ref_seq_num)
        if text is not None:
            self._put_obj_field(58, text)
        if ref_tag_id is not None:
            self._put_int_field(371, ref_tag_id)
        if ref_msg_type is not None:
            self._put_obj_field(372, ref_msg_type)
        if session_reject_reason is not None:
            self._put_int_field(373, session_reject_reason)
        return self._finish()

    def sequence_reset(self, int64_t seq_num, int64_t new_seq_no, bint gap_fill=False,
                       bint poss_dup=False, orig_sending_time=None, header=None,
                       int64_t sending_time_ns=-1):
        """SequenceReset (4): 36 123? (gap fills in resends: poss_dup=True with
        orig_sending_time, as QuickFIX sends them)."""
        self._begin(b"4", 1, seq_num, poss_dup, orig_sending_time, header, sending_time_ns)
        self._put_int_field(36, new_seq_no)
        if gap_fill:
            self._put_char_field(123, b'Y')
        return self._finish()

    def logout(self, int64_t seq_num, text=None, header=None, int64_t sending_time_ns=-1):
        """Logout (5): 58?."""
        self._begin(b"5", 1, seq_num, False, None, header, sending_time_ns)
        if text is not None:
            self._put_obj_field(58, text)
        return self._finish()


# The cpdef enums as module-level ints too (fix.FIX_GARBLED_BAD_CHECKSUM, fix.SESSION_REJECT_...).
for _enum in (FixGarbledReason, SessionRejectReason):
    globals().update({_name: int(_member) for _name, _member in _enum.__members__.items()})
del _enum
