# OUCH 4.2 order entry over SoupBinTCP 3.00: the byte layouts of
# /work/shared/protocols/OUCH-SOUPBINTCP.md, section 5.1 and the SoupBinTCP notes.
#
# Two layers:
#   * C layer (this contract): one struct per message, `ouch_put_*` writes a bare
#     message into `out[0:cap]` and returns its length, `ouch_get_*` reads one from
#     `p[0:n]` after checking the length and every enumerated field. Both raise the
#     Python exception classes defined in ouch.pyx (all ValueError subclasses).
#   * Python layer (ouch.pyx): `pack_*` functions writing framed SoupBinTCP packets
#     into a caller's bytearray, `OuchWriter` (a growing reusable buffer), the
#     `decode_inbound` / `decode_outbound` tuple decoders and `SoupFramer`.
#
# Alpha fields are fixed-width, left-justified and right-padded with spaces; in
# the structs they are the raw wire bytes (not NUL-terminated). Single-character
# fields are stored as their byte value. Prices are the wire's u32 with 4 implied
# decimals ("price4"); OUCH_MARKET_PRICE marks a market (cross) order.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

# Fixed lengths of the OUCH 4.2 messages (type byte included).
cdef enum OuchLength:
    OUCH_LEN_ENTER_ORDER = 49      # 'O' in
    OUCH_LEN_REPLACE_ORDER = 47    # 'U' in
    OUCH_LEN_CANCEL_ORDER = 19     # 'X' in
    OUCH_LEN_MODIFY_ORDER = 20     # 'M' in (4.2)
    OUCH_LEN_SYSTEM_EVENT = 10     # 'S' out
    OUCH_LEN_ACCEPTED = 66         # 'A' out
    OUCH_LEN_REPLACED = 80         # 'U' out
    OUCH_LEN_CANCELED = 28         # 'C' out
    OUCH_LEN_EXECUTED = 40         # 'E' out
    OUCH_LEN_REJECTED = 24         # 'J' out
    OUCH_LEN_MAX = 80              # longest OUCH 4.2 message we write

# Field widths of the alpha fields.
cdef enum OuchWidth:
    OUCH_W_TOKEN = 14              # order token
    OUCH_W_STOCK = 8               # stock symbol
    OUCH_W_FIRM = 4                # firm (MPID)

# SoupBinTCP 3.00 framing. A packet is a u16 big-endian length (of what follows:
# type byte + payload), the type byte, the payload.
cdef enum SoupConst:
    SOUP_HEADER_LEN = 2            # the length field itself
    SOUP_LEN_LOGIN_REQUEST = 47    # length field of 'L': 1 + 6 + 10 + 10 + 20
    SOUP_LEN_LOGIN_ACCEPTED = 31   # length field of 'A': 1 + 10 + 20
    SOUP_LEN_LOGIN_REJECTED = 2    # length field of 'J': 1 + 1
    SOUP_LEN_EMPTY = 1             # length field of H, R, O, Z (type byte only)
    SOUP_MAX_PACKET = 65535        # largest length field value
    SOUP_W_USERNAME = 6            # login request username
    SOUP_W_PASSWORD = 10           # login request password
    SOUP_W_SESSION = 10            # session name (login request / accepted)
    SOUP_W_SEQUENCE = 20           # ASCII decimal sequence number, right-justified

# Which end of the connection a SoupFramer sits on: it accepts only the packet
# types the other end may send (plus '+' debug, which either end may send).
cdef enum SoupRole:
    SOUP_ROLE_ANY = 0              # accept every SoupBinTCP 3.00 packet type
    SOUP_ROLE_CLIENT = 1           # we are the client: accept + A J S H Z
    SOUP_ROLE_SERVER = 2           # we are the server: accept + L U R O

# Bit flags of the character-set table used to validate single-character fields.
cdef enum OuchCharSet:
    OUCH_CS_SIDE = 1 << 0          # B S T E
    OUCH_CS_DISPLAY = 1 << 1       # A I L M N O P Q R T W Y
    OUCH_CS_CAPACITY = 1 << 2      # A O P R
    OUCH_CS_YN = 1 << 3            # Y N (intermarket sweep eligibility)
    OUCH_CS_CROSS = 1 << 4         # N O C H I R S
    OUCH_CS_CUSTOMER = 1 << 5      # R N space
    OUCH_CS_EVENT = 1 << 6         # S E (system event code)
    OUCH_CS_STATE = 1 << 7         # L D (order state)
    OUCH_CS_CANCEL = 1 << 8        # U I T S D Q Z (cancel reason)
    OUCH_CS_REJECT = 1 << 9        # T H Z S D C L M R X N O a..n (reject reason)
    OUCH_CS_ALPHA = 1 << 10        # any printable ASCII 0x20..0x7E
    OUCH_CS_LOGIN_REJECT = 1 << 11  # A S (SoupBinTCP login rejected reason)

cdef enum:
    OUCH_MARKET_PRICE = 0x7FFFFFFF     # price4 of a market (cross) order
    OUCH_TIF_IOC = 0                   # time in force: immediate or cancel
    OUCH_TIF_MARKET_HOURS = 99998      # time in force: until end of market hours
    OUCH_TIF_SYSTEM_HOURS = 99999      # time in force: until end of system hours


# ---- inbound (client -> venue) ------------------------------------------------

cdef struct OuchEnterOrder:            # 'O', 49 bytes
    unsigned char token[14]            # order token (alpha 14)
    uint8_t side                       # B buy, S sell, T sell short, E sell short exempt
    uint32_t shares                    # order quantity
    unsigned char stock[8]             # symbol (alpha 8)
    uint32_t price                     # price4; OUCH_MARKET_PRICE = market
    uint32_t tif                       # seconds; 0 IOC, 99998 market hours, 99999 system hours
    unsigned char firm[4]              # firm / MPID (alpha 4)
    uint8_t display                    # A I L M N O P Q R T W Y
    uint8_t capacity                   # A agency, O other, P principal, R riskless
    uint8_t iso                        # intermarket sweep eligibility Y / N
    uint32_t min_qty                   # minimum quantity
    uint8_t cross_type                 # N O C H I R S
    uint8_t customer_type              # R retail, N not retail, space = default

cdef struct OuchReplaceOrder:          # 'U' inbound, 47 bytes
    unsigned char existing_token[14]   # token of the order being replaced
    unsigned char replacement_token[14]  # token of the new order
    uint32_t shares                    # new total quantity
    uint32_t price                     # price4
    uint32_t tif                       # as in Enter Order
    uint8_t display                    # as in Enter Order
    uint8_t iso                        # Y / N
    uint32_t min_qty                   # minimum quantity

cdef struct OuchCancelOrder:           # 'X', 19 bytes
    unsigned char token[14]            # order token
    uint32_t shares                    # new intended total; 0 = cancel all

cdef struct OuchModifyOrder:           # 'M', 20 bytes
    unsigned char token[14]            # order token
    uint8_t side                       # B S T E
    uint32_t shares                    # new total quantity

# ---- outbound (venue -> client) -----------------------------------------------

cdef struct OuchSystemEvent:           # 'S', 10 bytes
    uint64_t timestamp                 # ns since midnight
    uint8_t event_code                 # S start of day, E end of day

cdef struct OuchAccepted:              # 'A', 66 bytes; also the body of 'U' Replaced
    uint64_t timestamp                 # ns since midnight
    unsigned char token[14]            # order token (Replaced: replacement token)
    uint8_t side                       # B S T E
    uint32_t shares                    # accepted quantity
    unsigned char stock[8]             # symbol
    uint32_t price                     # price4
    uint32_t tif                       # time in force
    unsigned char firm[4]              # firm
    uint8_t display                    # display
    uint64_t order_ref                 # venue order reference number
    uint8_t capacity                   # A O P R
    uint8_t iso                        # Y / N
    uint32_t min_qty                   # minimum quantity
    uint8_t cross_type                 # N O C H I R S
    uint8_t order_state                # L live, D dead
    uint8_t bbo_weight                 # BBO weight indicator (4.2), alpha 1

cdef struct OuchReplaced:              # 'U' outbound, 80 bytes
    OuchAccepted body                  # same fields and order as Accepted up to Order State
    unsigned char previous_token[14]   # token of the replaced order

cdef struct OuchCanceled:              # 'C', 28 bytes
    uint64_t timestamp                 # ns since midnight
    unsigned char token[14]            # order token
    uint32_t decrement_shares          # shares cancelled by this message (incremental)
    uint8_t reason                     # U I T S D Q Z

cdef struct OuchExecuted:              # 'E', 40 bytes
    uint64_t timestamp                 # ns since midnight
    unsigned char token[14]            # order token
    uint32_t executed_shares           # shares filled by this execution
    uint32_t price                     # price4 of the execution
    uint8_t liquidity_flag             # alpha 1 (venue-specific set)
    uint64_t match_number              # venue match id

cdef struct OuchRejected:              # 'J', 24 bytes
    uint64_t timestamp                 # ns since midnight
    unsigned char token[14]            # order token
    uint8_t reason                     # T H Z S D C L M R X N O, a..n

# ---- SoupBinTCP login payloads (fields as wire bytes, space padded) ----------

cdef struct SoupLoginRequest:          # 'L' payload, 46 bytes
    unsigned char username[6]          # left-justified
    unsigned char password[10]         # left-justified
    unsigned char session[10]          # requested session; blank = current
    uint64_t sequence                  # requested sequence number (0 = current end)

cdef struct SoupLoginAccepted:         # 'A' payload, 30 bytes
    unsigned char session[10]          # session now logged into
    uint64_t sequence                  # sequence number of the next 'S' packet


# Writers: check every enumerated field and `cap`, write the bare message (no
# SoupBinTCP header) at `out` and return its length. OuchEncodeError on a bad
# field, OuchBufferTooSmallError when cap is short.
cdef Py_ssize_t ouch_put_enter_order(unsigned char* out, Py_ssize_t cap,
                                     const OuchEnterOrder* m) except -1
cdef Py_ssize_t ouch_put_replace_order(unsigned char* out, Py_ssize_t cap,
                                       const OuchReplaceOrder* m) except -1
cdef Py_ssize_t ouch_put_cancel_order(unsigned char* out, Py_ssize_t cap,
                                      const OuchCancelOrder* m) except -1
cdef Py_ssize_t ouch_put_modify_order(unsigned char* out, Py_ssize_t cap,
                                      const OuchModifyOrder* m) except -1
cdef Py_ssize_t ouch_put_system_event(unsigned char* out, Py_ssize_t cap,
                                      const OuchSystemEvent* m) except -1
cdef Py_ssize_t ouch_put_accepted(unsigned char* out, Py_ssize_t cap,
                                  const OuchAccepted* m) except -1
cdef Py_ssize_t ouch_put_replaced(unsigned char* out, Py_ssize_t cap,
                                  const OuchReplaced* m) except -1
cdef Py_ssize_t ouch_put_canceled(unsigned char* out, Py_ssize_t cap,
                                  const OuchCanceled* m) except -1
cdef Py_ssize_t ouch_put_executed(unsigned char* out, Py_ssize_t cap,
                                  const OuchExecuted* m) except -1
cdef Py_ssize_t ouch_put_rejected(unsigned char* out, Py_ssize_t cap,
                                  const OuchRejected* m) except -1

# Readers: `p[0:n]` is one whole message whose type byte p[0] the caller has
# already dispatched on. OuchTruncatedError when n is short, OuchBadLengthError
# when long, OuchFieldError on a field outside its set. Return 0.
cdef int ouch_get_enter_order(const unsigned char* p, Py_ssize_t n, OuchEnterOrder* m) except -1
cdef int ouch_get_replace_order(const unsigned char* p, Py_ssize_t n, OuchReplaceOrder* m) except -1
cdef int ouch_get_cancel_order(const unsigned char* p, Py_ssize_t n, OuchCancelOrder* m) except -1
cdef int ouch_get_modify_order(const unsigned char* p, Py_ssize_t n, OuchModifyOrder* m) except -1
cdef int ouch_get_system_event(const unsigned char* p, Py_ssize_t n, OuchSystemEvent* m) except -1
cdef int ouch_get_accepted(const unsigned char* p, Py_ssize_t n, OuchAccepted* m) except -1
cdef int ouch_get_replaced(const unsigned char* p, Py_ssize_t n, OuchReplaced* m) except -1
cdef int ouch_get_canceled(const unsigned char* p, Py_ssize_t n, OuchCanceled* m) except -1
cdef int ouch_get_executed(const unsigned char* p, Py_ssize_t n, OuchExecuted* m) except -1
cdef int ouch_get_rejected(const unsigned char* p, Py_ssize_t n, OuchRejected* m) except -1

# SoupBinTCP: write a header + type + payload at out; returns the packet length.
cdef Py_ssize_t soup_put_packet(unsigned char* out, Py_ssize_t cap, uint8_t ptype,
                                const unsigned char* payload, Py_ssize_t n) except -1
# Write the 3-byte header of a packet whose payload (n bytes) the caller writes next.
cdef Py_ssize_t soup_put_header(unsigned char* out, Py_ssize_t cap, uint8_t ptype,
                                Py_ssize_t n) except -1
cdef Py_ssize_t soup_put_login_request(unsigned char* out, Py_ssize_t cap,
                                       const SoupLoginRequest* m) except -1
cdef Py_ssize_t soup_put_login_accepted(unsigned char* out, Py_ssize_t cap,
                                        const SoupLoginAccepted* m) except -1
# Payload readers (p[0:n] is the payload after the type byte). Fields are parsed
# tolerantly (spaces and NULs stripped); a non-digit sequence is SoupFieldError.
cdef int soup_get_login_request(const unsigned char* p, Py_ssize_t n, SoupLoginRequest* m) except -1
cdef int soup_get_login_accepted(const unsigned char* p, Py_ssize_t n,
                                 SoupLoginAccepted* m) except -1


# A growing reusable output buffer: each method appends one framed SoupBinTCP
# packet; take() returns everything written since the last take().
cdef class OuchWriter:
    cdef bytearray _buf                # storage; grows by doubling, never shrinks
    cdef Py_ssize_t _pos               # bytes written since the last take()
    cdef readonly uint64_t packets     # packets written since creation
    # Make room for `need` more bytes; returns a pointer to the write position.
    cdef unsigned char* _reserve(self, Py_ssize_t need) except NULL
    # Reserve `need` bytes, call fn(buf, pos, *args, **kwargs) (a pack_* function), advance.
    cdef object _append(self, object fn, Py_ssize_t need, tuple args, dict kwargs)


# Streaming SoupBinTCP de-framer: feed(data) with arbitrary chunks (down to one
# byte) returns the complete packets as (type: str, payload: bytes) tuples.
cdef class SoupFramer:
    cdef unsigned char* _pending       # bytes of the incomplete packet at the end of the stream
    cdef Py_ssize_t _pending_len       # how many bytes _pending holds
    cdef Py_ssize_t _pending_cap       # allocated size of _pending (2 + max_packet)
    cdef readonly Py_ssize_t max_packet  # largest accepted length field (type + payload)
    cdef readonly int role             # a SoupRole: which packet types are accepted
    cdef readonly bint broken          # latched after a framing error: feed() then raises
    cdef readonly uint64_t packets     # packets returned since creation
    cdef readonly uint64_t bytes_fed   # bytes fed since creation
    cpdef list feed(self, object data)
    # Checks the length field (and, once known, the type byte) of the packet whose
    # first `avail` (2 or more) bytes are at p. Raises a Soup* error.
    cdef int _check_header(self, const unsigned char* p, Py_ssize_t avail) except -1
    # _check_header, and on error latch `broken` and attach the stream offset and
    # the packets completed so far (`out`) to the exception.
    cdef int _checked(self, const unsigned char* p, Py_ssize_t avail, uint64_t stream_off,
                      list out) except -1
