# FIX 4.4 tag=value codec: encoder, streaming parser, data-dictionary validation.
#
# Wire form: 8=FIX.4.4|9=<len>|35=<type>|...|10=<ccc>| with SOH (0x01) for |.
# BodyLength (9) counts the bytes after the SOH that ends 9=... up to and including
# the SOH before 10=; CheckSum (10) is the byte sum of everything before 10=, mod 256,
# written as three digits.
#
# A parsed message keeps its raw bytes and a C array of FixField (tag, value offset,
# length): no Python object per field unless one is asked for. The parser frames by
# BodyLength (like QuickFIX's Parser), checks CheckSum, and reports every frame it
# cannot accept as a FixGarbled record carrying one specific reason; it then resumes
# at the next "8=FIX" after the bad frame's start, so good messages behind a bad
# one are never lost (behind a BodyLength that claims more than has arrived they wait
# until enough bytes arrive, or until flush() at end of stream). Validation against
# the generated dictionary (fix44_dict.py, loaded into C tables at import) maps each
# failure to a SessionRejectReason (373) with QuickFIX's text for 58.
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

# Limits.
cdef enum:
    FIX_SOH = 1                      # field delimiter byte
    FIX_MAX_TAG = 1024               # tags below this have dictionary entries (FIX 4.4 tops at 956)
    FIX_TAG_BITMAP_BYTES = 128       # FIX_MAX_TAG / 8: one bit per tag
    FIX_INLINE_FIELDS = 48           # fields stored inside a FixMessage before spilling to the heap
    FIX_MAX_BEGIN_STRING = 16        # longest BeginString value accepted ("FIXT.1.1" is 8)
    FIX_MAX_BODY_LENGTH_DIGITS = 7   # BodyLength up to 9,999,999 (max_message_size bounds it)
    FIX_MAX_TAG_DIGITS = 9           # a tag number fits int32
    FIX_DEFAULT_MAX_MESSAGE = 65536  # default bound on one message (bytes) for parser and encoder

# Why a frame was rejected by the parser (garbled: silently discarded by the session,
# never answered with a Reject). Also the `reason` of each FixParseError subclass.
cpdef enum FixGarbledReason:
    FIX_GARBLED_BAD_BEGIN_STRING = 1   # 8=FIX... value malformed, too long, or no SOH after it
    FIX_GARBLED_BAD_BODY_LENGTH = 2    # 9= not second, not digits, or 10= not where it points
    FIX_GARBLED_BAD_CHECKSUM = 3       # 10= not 1-3 digits + SOH, or the sum does not match
    FIX_GARBLED_BAD_MSG_TYPE = 4       # MsgType (35) not the third field, or empty
    FIX_GARBLED_BAD_TAG = 5            # a tag that is empty, not numeric, too long, or has no '='
    FIX_GARBLED_MISSING_SOH = 6        # a field not terminated by SOH inside the frame
    FIX_GARBLED_BAD_DATA_LENGTH = 7    # a data field's length runs past its SOH or the body
    FIX_GARBLED_TOO_LARGE = 8          # BodyLength above the parser's max_message_size
    FIX_GARBLED_TRUNCATED = 9          # input ended inside a message (parse_message / flush)

# SessionRejectReason (373) values, as QuickFIX uses them.
cpdef enum SessionRejectReason:
    SESSION_REJECT_NONE = -1                      # validation passed (never sent)
    SESSION_REJECT_INVALID_TAG_NUMBER = 0         # "Invalid tag number"
    SESSION_REJECT_REQUIRED_TAG_MISSING = 1       # "Required tag missing"
    SESSION_REJECT_TAG_NOT_DEFINED_FOR_MSG = 2    # "Tag not defined for this message type"
    SESSION_REJECT_UNDEFINED_TAG = 3              # "Undefined Tag"
    SESSION_REJECT_TAG_WITHOUT_VALUE = 4          # "Tag specified without a value"
    SESSION_REJECT_VALUE_INCORRECT = 5            # "Value is incorrect (out of range) for this tag"
    SESSION_REJECT_INCORRECT_DATA_FORMAT = 6      # "Incorrect data format for value"
    SESSION_REJECT_DECRYPTION_PROBLEM = 7         # "Decryption problem"
    SESSION_REJECT_SIGNATURE_PROBLEM = 8          # "Signature problem"
    SESSION_REJECT_COMPID_PROBLEM = 9             # "CompID problem" (session layer)
    SESSION_REJECT_SENDING_TIME_ACCURACY = 10     # "SendingTime accuracy problem" (session layer)
    SESSION_REJECT_INVALID_MSG_TYPE = 11          # "Invalid MsgType"
    SESSION_REJECT_XML_VALIDATION = 12            # "XML Validation error"
    SESSION_REJECT_TAG_APPEARS_MORE_THAN_ONCE = 13  # "Tag appears more than once"
    SESSION_REJECT_TAG_OUT_OF_ORDER = 14          # "Tag specified out of required order"
    SESSION_REJECT_GROUP_FIELDS_OUT_OF_ORDER = 15  # "Repeating group fields out of order"
    SESSION_REJECT_INCORRECT_NUM_IN_GROUP = 16    # "Incorrect NumInGroup count for repeating group"
    SESSION_REJECT_NON_DATA_HAS_DELIMITER = 17    # "Non Data value includes field delimiter"
    SESSION_REJECT_OTHER = 99                     # "Other"

# Field data types of the dictionary, as the validator checks them.
cdef enum FixType:
    FIX_TYPE_UNDEFINED = 0      # tag not in the dictionary
    FIX_TYPE_STRING = 1         # anything: CURRENCY EXCHANGE COUNTRY LOCALMKTDATE MONTHYEAR too
    FIX_TYPE_CHAR = 2           # exactly one byte
    FIX_TYPE_INT = 3            # [-]digits (INT, LENGTH, SEQNUM, NUMINGROUP, DAYOFMONTH)
    FIX_TYPE_FLOAT = 4          # [-]digits[.digits]: PRICE QTY AMT FLOAT PRICEOFFSET PERCENTAGE
    FIX_TYPE_BOOLEAN = 5        # Y or N
    FIX_TYPE_UTCTIMESTAMP = 6   # YYYYMMDD-HH:MM:SS[.sss|.ssssss|.sssssssss]
    FIX_TYPE_UTCTIMEONLY = 7    # HH:MM:SS[.sss|.ssssss|.sssssssss]
    FIX_TYPE_UTCDATEONLY = 8    # YYYYMMDD
    FIX_TYPE_DATA = 9           # raw bytes, length given by the preceding length field
    FIX_TYPE_MULTIPLEVALUESTRING = 10  # space-separated enum values

# Per-tag flags in the dictionary tables.
cdef enum FixTagFlag:
    FIX_TAG_HEADER = 1          # header field (dictionary <header>)
    FIX_TAG_TRAILER = 2         # trailer field (93, 89, 10)
    FIX_TAG_DATA = 4            # DATA field: value length given by its length field
    FIX_TAG_ENUM = 8            # value must be one of the dictionary enums

# One field of a parsed message. Offsets are into FixMessage.raw.
cdef struct FixField:
    int32_t tag       # tag number; may be <= 0 ("0=", "-1=") which validation rejects
    int32_t offset    # offset of the first value byte in raw
    int32_t length    # value length in bytes (0 for "tag=" with an empty value)

# Outcome of framing the bytes at the front of a buffer.
cdef enum FixFrameStatus:
    FIX_FRAME_NEED_MORE = 0     # consistent so far, more bytes needed
    FIX_FRAME_OK = 1            # a whole frame of `length` bytes with matching CheckSum
    FIX_FRAME_GARBLED = 2       # `reason` says what is wrong; `length` bytes were examined

cdef struct FixFrame:
    int status                  # FixFrameStatus
    int reason                  # FixGarbledReason when GARBLED
    Py_ssize_t length           # frame length (OK) or bytes examined (GARBLED), >= 1
    Py_ssize_t body_start       # offset of the first body byte (the 35= field) when known
    Py_ssize_t body_length      # BodyLength value when parsed, else -1
    int checksum_expected       # CheckSum computed over the frame, when known (else -1)
    int checksum_received       # CheckSum value in 10=, when parsed (else -1)

# Frame the message at buf[0] (garbled unless it starts with "8=FIX"). Pure C, no allocation.
# Decisions depend only on byte content, never on how much has arrived: NEED_MORE is
# returned only while the bytes so far are consistent with a valid frame.
cdef void fix_frame(const char* buf, Py_ssize_t n, Py_ssize_t max_body,
                    FixFrame* out) noexcept nogil

# Sum of bytes mod 256.
cdef int fix_checksum(const char* buf, Py_ssize_t n) noexcept nogil


# A complete, framed message: raw bytes plus the field index.
@cython.final
cdef class FixMessage:
    cdef readonly bytes raw               # the whole message, 8=... through 10=ccc<SOH>
    cdef FixField* _fields                # _inline or a heap array (when > FIX_INLINE_FIELDS)
    cdef Py_ssize_t _nfields              # number of fields, BeginString and CheckSum included
    cdef Py_ssize_t _capacity             # capacity of _fields
    cdef object _msg_type                 # cached MsgType value (bytes) or None
    cdef FixField _inline[FIX_INLINE_FIELDS]  # field storage for ordinary messages

    # Index of the first field with `tag` at or after index `start`, or -1.
    cdef Py_ssize_t find(self, int32_t tag, Py_ssize_t start) noexcept
    # Pointer to the value bytes of field i (0 <= i < count()); not NUL-terminated.
    cdef const char* value_ptr(self, Py_ssize_t i) noexcept
    cdef Py_ssize_t count(self) noexcept
    cdef FixField* field_at(self, Py_ssize_t i) noexcept
    # Integer value of `tag` into *out; returns 1 if found and numeric, 0 if absent,
    # -1 if present but not an integer. Never raises.
    cdef int int_value(self, int32_t tag, int64_t* out) noexcept
    # MsgType value (cached bytes object).
    cdef bytes msg_type_bytes(self)
    # Value of field i as a new bytes object.
    cdef bytes _value(self, Py_ssize_t i)
    # Append a field during parsing (grows the heap array as needed).
    cdef int _append(self, int32_t tag, Py_ssize_t offset, Py_ssize_t length) except -1
    # Split raw[body_start:body_end] into fields after 8 and 9; returns 0 or a FixGarbledReason,
    # with *bad_offset set to the offending offset.
    cdef int _split(self, Py_ssize_t body_start, Py_ssize_t body_end,
                    Py_ssize_t* bad_offset) except -1


# A frame the parser rejected: what was wrong and the bytes concerned.
@cython.final
cdef class FixGarbled:
    cdef readonly int reason              # FixGarbledReason
    cdef readonly str text                # human-readable detail
    cdef readonly bytes raw               # the frame (or the bytes examined before giving up)


# Streaming parser: feed() bytes as they arrive, next() returns complete messages.
@cython.final
cdef class FixParser:
    cdef char* _buf                       # buffered bytes live in _buf[_start:_end]
    cdef Py_ssize_t _cap                  # allocated size of _buf
    cdef Py_ssize_t _start                # first unconsumed byte
    cdef Py_ssize_t _end                  # one past the last buffered byte
    cdef readonly Py_ssize_t max_message_size  # bound on BodyLength, so garbage cannot grow memory
    cdef readonly bint raise_errors       # next() raises the FixParseError, not a FixGarbled
    cdef readonly uint64_t messages       # messages returned
    cdef readonly uint64_t garbled        # garbled frames reported
    cdef readonly uint64_t junk_bytes     # bytes skipped while looking for "8=FIX"
    cdef bint _eof                        # flush() in progress: an incomplete frame is TRUNCATED

    cdef int _append(self, const char* data, Py_ssize_t n) except -1
    # The next message, FixGarbled, or None when more bytes are needed.
    cdef object _next(self)


# Per-message-type and per-group dictionary tables (C bitmaps), built at import.
@cython.final
cdef class FixGroupDef:
    cdef readonly int32_t count_tag       # NumInGroup tag that starts the group
    cdef readonly int32_t delimiter       # first field of every instance
    cdef uint8_t members[FIX_TAG_BITMAP_BYTES]   # tags allowed directly in an instance
    cdef uint8_t nested_bits[FIX_TAG_BITMAP_BYTES]  # count tags of nested groups
    cdef int32_t* required                # tags required in every instance, ascending
    cdef Py_ssize_t n_required
    cdef list nested                      # FixGroupDef of the nested groups
    cdef FixGroupDef nested_for(self, int32_t tag)


@cython.final
cdef class FixMsgDef:
    cdef readonly bytes msg_type          # MsgType value
    cdef readonly str name                # e.g. "NewOrderSingle"
    cdef uint8_t allowed[FIX_TAG_BITMAP_BYTES]   # tags allowed at the top level of the body
    cdef uint8_t group_bits[FIX_TAG_BITMAP_BYTES]  # count tags of top-level groups
    cdef int32_t* required                # required top-level body tags, ascending
    cdef Py_ssize_t n_required
    cdef list groups                      # FixGroupDef of the top-level groups
    cdef FixGroupDef group_for(self, int32_t tag)


# The best (first in QuickFIX's order) field-level validation failure seen so far.
cdef struct FixRejectCandidate:
    int reason          # SessionRejectReason, -1 while none
    int32_t tag         # RefTagID of the failure
    int section         # 0 header, 1 trailer, 2 body, 3 repeating-group member
    int64_t primary     # order inside the section (QuickFIX's field-map order)
    Py_ssize_t index    # wire index, the last tie-breaker


# Validation against the FIX 4.4 dictionary, QuickFIX rules and order of checks.
@cython.final
cdef class FixValidator:
    cdef readonly bint check_fields_have_values    # 4 on empty values (ValidateFieldsHaveValues)
    cdef readonly bint check_user_defined_fields   # check tags >= 5000 (ValidateUserDefinedFields)
    cdef readonly bint check_fields_out_of_order   # reason 14 (QF ValidateFieldsOutOfOrder)
    # Returns SESSION_REJECT_NONE or a reason, with *ref_tag (-2**31 when none).
    cdef int check(self, FixMessage msg, int32_t* ref_tag) except -2
    # Value checks of one field (4, 6, 5, 0, in QuickFIX's order); -1 when none fails.
    cdef int _field_error(self, FixField* f, const unsigned char* raw) noexcept
    # Consume the instances of group g from field j; returns the index after them and
    # the instance count; records field failures in *best, the first instance not
    # started by the delimiter in *out_of_order, the first missing member in *missing.
    cdef Py_ssize_t _walk_group(self, FixMessage msg, Py_ssize_t j, FixGroupDef g,
                                FixRejectCandidate* best, int32_t* out_of_order, int32_t* missing,
                                Py_ssize_t* instances) except -2
    cdef void _instance_required(self, FixGroupDef g, uint8_t* seen, int32_t* missing) noexcept


# Encoder for one session: header precomputed, one reusable buffer.
@cython.final
cdef class FixEncoder:
    cdef char* _buf                       # output buffer; the body starts at _reserve
    cdef Py_ssize_t _cap                  # allocated size
    cdef Py_ssize_t _pos                  # write position
    cdef Py_ssize_t _reserve              # room left before the body for 8=...|9=...|
    cdef Py_ssize_t _body_pos             # where the body of the last message starts in _buf
    cdef readonly Py_ssize_t max_message_size  # bound on one encoded message
    cdef readonly bytes begin_string      # e.g. b"FIX.4.4"
    cdef readonly bytes sender_comp_id    # 49
    cdef readonly bytes target_comp_id    # 56
    cdef bytes _prefix                    # b"8=FIX.4.4\x01"
    cdef bytes _seg_pre                   # static header fields with 34 < tag < 43, encoded
    cdef bytes _seg_mid                   # static header fields, 43 < tag < 52 (49=...), encoded
    cdef bytes _seg_post                  # static header fields, 52 < tag < 122 (56=...), encoded
    cdef bytes _seg_tail                  # static header fields with tag > 122, encoded
    cdef list _static_header              # [(tag, bytes)] of the static header fields, sorted
    cdef int64_t _cached_sec              # UTC second of _time_text (-1: none)
    cdef char _time_text[24]              # "YYYYMMDD-HH:MM:SS." for _cached_sec
    cdef char _last_sending_time[32]      # 52 value of the last encoded message
    cdef Py_ssize_t _last_sending_time_len

    cdef int _reserve_bytes(self, Py_ssize_t n) except -1
    cdef int _put_raw(self, const char* p, Py_ssize_t n) except -1
    cdef int _put_tag(self, int32_t tag) except -1
    cdef int _put_int_field(self, int32_t tag, int64_t value) except -1
    cdef int _put_char_field(self, int32_t tag, char value) except -1
    cdef int _put_bytes_field(self, int32_t tag, const char* p, Py_ssize_t n) except -1
    cdef int _put_obj_field(self, int32_t tag, object value) except -1
    cdef int _put_price_field(self, int32_t tag, int64_t ticks, int decimals,
                              int64_t mult) except -1
    cdef void _format_time(self, int64_t ns, char* out) noexcept   # 21 bytes, ms precision
    cdef int _put_time_field(self, int32_t tag, int64_t ns) except -1
    # 122 from ns (int) or an already formatted UTCTimestamp (bytes/str).
    cdef int _put_orig_sending_time(self, object orig) except -1
    cdef int _begin(self, const char* msg_type, Py_ssize_t type_len, int64_t seq_num, bint poss_dup,
                    object orig_sending_time, object header, int64_t sending_time_ns) except -1
    cdef int _begin_type(self, object msg_type, int64_t seq_num, bint poss_dup,
                         object orig_sending_time, object header, int64_t sending_time_ns) except -1
    # Prepend 8/9, append 10; the message as bytes.
    cdef bytes _finish(self)
    # The hot typed encoders (Python-visible too).
    cpdef bytes new_order_single(self, int64_t seq_num, object cl_ord_id, object symbol, int side,
                                 int64_t qty, int64_t price=*, int decimals=*, int ord_type=*,
                                 int tif=*, object account=*, int64_t transact_time_ns=*,
                                 int64_t sending_time_ns=*, int64_t price_mult=*)
    cpdef bytes execution_report(self, int64_t seq_num, object order_id, object exec_id,
                                 object exec_type, object ord_status, object symbol, int side,
                                 int64_t leaves_qty, int64_t cum_qty, int64_t avg_px=*,
                                 object cl_ord_id=*, int64_t order_qty=*, int64_t price=*,
                                 int64_t last_qty=*, int64_t last_px=*, int decimals=*,
                                 object orig_cl_ord_id=*, object text=*, int ord_type=*, int tif=*,
                                 int64_t transact_time_ns=*, int64_t sending_time_ns=*,
                                 int64_t price_mult=*, bint poss_dup=*, object orig_sending_time=*)
