# Nasdaq TotalView-ITCH 5.0 over MoldUDP64: codec and the decode-and-apply path
# into L2 books.
#
# Message layouts (big-endian; every message starts with the 11-byte header
# type u8, stock locate u16, tracking number u16, timestamp u48 ns since midnight;
# prices u32 with 4 implied decimals; stock alpha 8, space padded). Lengths used,
# checked against the Open Markets Initiative "Nasdaq Equities TotalView Itch 5.0"
# structs (field order and widths) and the lengths other ITCH 5.0 decoders use:
#   S 12  R 39  H 25  A 36  F 40  E 31  C 36  X 23  D 19  U 35  P 44
# and, recognised and passed over (length checked, no book effect):
#   Y 20  L 26  V 35  W 12  K 28  J 35  h 21  Q 40  B 19  I 50  N 20  O 48
#
# MoldUDP64 downstream packet: session alpha 10, sequence number u64 (of the
# first message), message count u16, then per message a u16 length and the
# message. Count 0 = heartbeat, 0xFFFF = end of session (no message blocks; the
# sequence number is then the next expected one).
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from core_ext.book cimport L2Book

cdef enum ItchLength:
    ITCH_HEADER_LEN = 11                 # type + locate + tracking + timestamp
    ITCH_LEN_SYSTEM_EVENT = 12           # 'S'
    ITCH_LEN_STOCK_DIRECTORY = 39        # 'R'
    ITCH_LEN_TRADING_ACTION = 25         # 'H'
    ITCH_LEN_ADD_ORDER = 36              # 'A'
    ITCH_LEN_ADD_ORDER_MPID = 40         # 'F'
    ITCH_LEN_ORDER_EXECUTED = 31         # 'E'
    ITCH_LEN_ORDER_EXECUTED_PRICE = 36   # 'C'
    ITCH_LEN_ORDER_CANCEL = 23           # 'X'
    ITCH_LEN_ORDER_DELETE = 19           # 'D'
    ITCH_LEN_ORDER_REPLACE = 35          # 'U'
    ITCH_LEN_TRADE = 44                  # 'P' (non-cross)
    ITCH_LEN_REG_SHO = 20                # 'Y' passed over
    ITCH_LEN_PARTICIPANT_POSITION = 26   # 'L' passed over
    ITCH_LEN_MWCB_DECLINE = 35           # 'V' passed over
    ITCH_LEN_MWCB_STATUS = 12            # 'W' passed over
    ITCH_LEN_IPO_QUOTING = 28            # 'K' passed over
    ITCH_LEN_LULD_COLLAR = 35            # 'J' passed over
    ITCH_LEN_OPERATIONAL_HALT = 21       # 'h' passed over
    ITCH_LEN_CROSS_TRADE = 40            # 'Q' passed over
    ITCH_LEN_BROKEN_TRADE = 19           # 'B' passed over
    ITCH_LEN_NOII = 50                   # 'I' passed over
    ITCH_LEN_RPII = 20                   # 'N' passed over
    ITCH_LEN_DLCR = 48                   # 'O' passed over

cdef enum MoldConst:
    MOLD_HEADER_LEN = 20                 # session 10 + sequence 8 + count 2
    MOLD_SESSION_LEN = 10                # session name, alpha
    MOLD_COUNT_HEARTBEAT = 0             # message count of a heartbeat
    MOLD_COUNT_END_OF_SESSION = 0xFFFF   # message count of an end-of-session packet
    MOLD_MAX_COUNT = 0xFFFE              # most messages one data packet can announce
    MOLD_DEFAULT_MAX_PACKET = 1400       # MoldPacketBuilder default: fits a 1500-byte MTU

# What a MoldUDP64 packet was.
cdef enum ItchPacketKind:
    ITCH_PACKET_DATA = 0                 # count >= 1 messages
    ITCH_PACKET_HEARTBEAT = 1            # count 0
    ITCH_PACKET_END_OF_SESSION = 2       # count 0xFFFF

# Bit flags of the character table used to check single-character fields.
cdef enum ItchCharSet:
    ITCH_CS_SIDE = 1 << 0                # B S (buy/sell indicator)
    ITCH_CS_EVENT = 1 << 1               # O S Q M E C (system event code)
    ITCH_CS_STATE = 1 << 2               # H P Q T (trading state)
    ITCH_CS_YN = 1 << 3                  # Y N (printable)
    ITCH_CS_ALPHA = 1 << 4               # printable ASCII 0x20..0x7E (stock symbols)

# Field codes of the table-driven Python-level codec (decode_message, encoders).
cdef enum ItchFieldCode:
    ITCH_F_U2 = 1                        # u16
    ITCH_F_U4 = 2                        # u32
    ITCH_F_U8 = 3                        # u64
    ITCH_F_TS = 4                        # u48 timestamp
    ITCH_F_STOCK = 5                     # alpha 8, printable ASCII (checked)
    ITCH_F_ALPHA = 6                     # alpha n: latin-1 on decode, right padding stripped
    ITCH_F_CHAR = 7                      # one character
    ITCH_F_BODY = 8                      # raw bytes: the message after its header

# A decoded MoldUDP64 header.
cdef struct MoldHeader:
    const unsigned char* session         # the 10 session bytes inside the packet
    uint64_t seq                         # sequence number of the first message
    uint16_t count                       # raw message count field
    int kind                             # an ItchPacketKind

# One execution or trade, as handed to Python in ItchApplyResult.trades
# (TRADE_DTYPE is built from this struct's offsets).
cdef struct ItchTrade:
    int64_t price                        # price4 = ticks: E the order's, C / P the message's
    int64_t shares                       # executed shares
    int64_t ts                           # ITCH timestamp, ns since midnight
    uint64_t match                       # match number
    uint64_t seq                         # MoldUDP64 sequence number of the message
    int32_t instrument                   # instrument index (see ItchBookApplier)
    uint16_t locate                      # stock locate
    int8_t side                          # SIDE_BUY / SIDE_SELL of the resting order
    uint8_t kind                         # b'E', b'C' or b'P'
    uint8_t printable                    # 0 for a C marked non-printable, else 1

# One live order in the reference table (open addressing, linear probing).
cdef struct ItchOrder:
    uint64_t ref                         # order reference number (the key)
    int64_t price                        # price4 = book ticks
    int64_t shares                       # shares still open
    int32_t instrument                   # instrument index, -1 when not tracked
    uint16_t locate                      # stock locate of the Add Order
    uint8_t side                         # SIDE_BUY / SIDE_SELL
    uint8_t used                         # slot occupied

cdef struct OrderTable:
    ItchOrder* slots                     # capacity slots, capacity a power of two
    Py_ssize_t mask                      # capacity - 1
    Py_ssize_t count                     # occupied slots (kept <= capacity / 2)

# Order table: the slot of `ref` or NULL.
cdef ItchOrder* order_find(OrderTable* t, uint64_t ref) noexcept nogil
# A fresh slot for `ref`, which must not be present; may grow (and move) the table,
# so pointers from order_find are invalid afterwards.
cdef ItchOrder* order_insert(OrderTable* t, uint64_t ref) except NULL
# Remove a slot returned by order_find (backward-shift deletion: other slots move).
cdef void order_remove(OrderTable* t, ItchOrder* slot) noexcept nogil

# Fixed length of a message type (0 = not ITCH 5.0).
cdef Py_ssize_t itch_message_length(uint8_t t) noexcept nogil
# Check one message (m[0] is the type byte, n its length from the block header):
# known type, exact length, enumerated fields. `off` = offset of m in the packet,
# and `seq` = its sequence number, for error reports. Raises an ItchDecodeError subclass.
cdef int itch_check_message(const unsigned char* m, Py_ssize_t n, Py_ssize_t off,
                            uint64_t seq) except -1
# Check a whole MoldUDP64 packet (header, every block inside p[0:n], every message,
# no trailing bytes) and fill h. Returns the number of messages (0 for heartbeat /
# end of session).
cdef Py_ssize_t mold_check_packet(const unsigned char* p, Py_ssize_t n, MoldHeader* h) except -1
# Write the 11-byte message header at out.
cdef void itch_put_header(unsigned char* out, uint8_t t, uint16_t locate, uint16_t tracking,
                          uint64_t ts) noexcept nogil


# What one apply_packet() changed. Lists are copied out of the applier, so a
# result stays valid after later packets; Python objects are built lazily.
cdef class ItchApplyResult:
    cdef readonly uint64_t seq           # sequence number of the first message
    cdef readonly uint64_t next_seq      # seq + messages applied (= seq for heartbeat / end)
    cdef readonly Py_ssize_t count       # messages in the packet (0 for heartbeat / end)
    cdef readonly Py_ssize_t applied     # messages applied (< count only on an error)
    cdef readonly int kind               # an ItchPacketKind
    cdef readonly Py_ssize_t anomalies   # non-strict: messages disagreeing with the order table
    cdef unsigned char _session[10]      # MoldUDP64 session bytes
    cdef void* _mem                      # one allocation holding the three arrays below (or NULL)
    cdef uint64_t _inline[16]            # ... or here when they fit (128 B; no malloc per packet)
    cdef ItchTrade* _trades              # executions and trades, in message order
    cdef Py_ssize_t _n_trades
    cdef int32_t* _top                   # instrument indices whose top of book changed
    cdef Py_ssize_t _n_top
    cdef int32_t* _halts                 # instrument indices whose halted flag changed
    cdef Py_ssize_t _n_halts
    cdef object _trades_array            # cached NumPy view of _trades (None until asked)


# Decodes whole MoldUDP64 packets straight into L2 books.
cdef class ItchBookApplier:
    cdef OrderTable _orders              # live orders by reference number
    cdef int32_t* _locate_index          # [65536] locate -> instrument; -1 untracked, -2 unseen
    cdef list _books                     # L2Book per instrument index
    cdef list _symbols                   # symbol (str) per instrument index
    cdef dict _index_by_symbol           # symbol -> instrument index
    cdef uint8_t* _halted                # per instrument: 1 when trading state is not 'T'
    cdef uint32_t* _mark_top             # per instrument: generation it was last put in _top
    cdef uint32_t* _mark_halt            # per instrument: generation it was last put in _halts
    cdef int64_t* _price_div             # per instrument: price4 units per book tick (>= 1)
    cdef Py_ssize_t _n_instruments       # instruments registered
    cdef Py_ssize_t _cap_instruments     # allocated length of the per-instrument arrays
    cdef uint32_t _generation            # packet counter for the marks (never 0)
    cdef ItchTrade* _trades              # per-packet scratch: trades
    cdef int32_t* _top                   # per-packet scratch: top-changed instruments
    cdef int32_t* _halts                 # per-packet scratch: halt-changed instruments
    cdef Py_ssize_t _n_trades, _n_top, _n_halts   # scratch fill
    cdef Py_ssize_t _cap_scratch         # scratch capacity (messages)
    cdef Py_ssize_t _anomalies           # non-strict anomalies in the current packet
    cdef readonly bint strict            # raise on unknown/duplicate refs and excess shares
    cdef readonly bint create_books      # create an L2Book for every new symbol
    cdef readonly uint64_t packets       # packets applied
    cdef readonly uint64_t messages      # messages applied
    cdef readonly uint64_t anomalies     # non-strict anomalies since creation

    cpdef ItchApplyResult apply_packet(self, object packet)
    # Instrument index of a stock locate, registering it from the 8-byte stock
    # field when the locate is new (or `force` and the symbol differs).
    cdef int32_t _instrument(self, uint16_t locate, const unsigned char* stock,
                             bint force) except -3
    cdef int32_t _add_instrument(self, str symbol, L2Book book) except -1
    cdef int _grow_instruments(self, Py_ssize_t need) except -1
    cdef int _grow_scratch(self, Py_ssize_t need) except -1
    # Apply one checked message; m[0] is the type byte.
    cdef int _apply(self, const unsigned char* m, uint64_t seq) except -1
    # wire price4 -> the instrument's book ticks (see set_price_divisor)
    cdef int64_t _ticks(self, int32_t instrument, int64_t price4) noexcept
    cdef int _book_delta(self, int32_t instrument, int side, int64_t price, int64_t delta) except -1
    cdef int _trade(self, int32_t instrument, uint16_t locate, int side, int64_t price,
                    int64_t shares, const unsigned char* m, uint64_t match, uint8_t printable,
                    uint64_t seq) except -1
    cdef int _state_error(self, object cls, const unsigned char* m, str text) except -1
    cdef ItchApplyResult _result(self, const MoldHeader* h, Py_ssize_t count, Py_ssize_t applied)


# Builds MoldUDP64 packets for a publisher (the venue simulator).
cdef class MoldPacketBuilder:
    cdef unsigned char _session[10]      # session name, space padded
    cdef readonly uint64_t next_seq      # sequence number of the next message added
    cdef readonly Py_ssize_t max_packet  # packet size limit in bytes (header included)
    cdef bytearray _buf                  # the packet being built (header reserved)
    cdef Py_ssize_t _len                 # bytes used in _buf
    cdef Py_ssize_t _count               # messages in the packet being built
    cdef uint64_t _first_seq             # sequence number of its first message
    cdef list _ready                     # finished packets (bytes) not yet flushed
    cdef int _append(self, const unsigned char* msg, Py_ssize_t n) except -1
    cdef int _close(self) except -1
