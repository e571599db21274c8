"""Type stubs for core_ext.fix (FIX 4.4 codec); see fix.pxd for the C contract."""
from collections.abc import Iterable, Iterator
from enum import IntEnum

Value = bytes | str | int | bool

class FixGarbledReason(IntEnum):
    FIX_GARBLED_BAD_BEGIN_STRING = 1
    FIX_GARBLED_BAD_BODY_LENGTH = 2
    FIX_GARBLED_BAD_CHECKSUM = 3
    FIX_GARBLED_BAD_MSG_TYPE = 4
    FIX_GARBLED_BAD_TAG = 5
    FIX_GARBLED_MISSING_SOH = 6
    FIX_GARBLED_BAD_DATA_LENGTH = 7
    FIX_GARBLED_TOO_LARGE = 8
    FIX_GARBLED_TRUNCATED = 9

class SessionRejectReason(IntEnum):
    SESSION_REJECT_NONE = -1
    SESSION_REJECT_INVALID_TAG_NUMBER = 0
    SESSION_REJECT_REQUIRED_TAG_MISSING = 1
    SESSION_REJECT_TAG_NOT_DEFINED_FOR_MSG = 2
    SESSION_REJECT_UNDEFINED_TAG = 3
    SESSION_REJECT_TAG_WITHOUT_VALUE = 4
    SESSION_REJECT_VALUE_INCORRECT = 5
    SESSION_REJECT_INCORRECT_DATA_FORMAT = 6
    SESSION_REJECT_DECRYPTION_PROBLEM = 7
    SESSION_REJECT_SIGNATURE_PROBLEM = 8
    SESSION_REJECT_COMPID_PROBLEM = 9
    SESSION_REJECT_SENDING_TIME_ACCURACY = 10
    SESSION_REJECT_INVALID_MSG_TYPE = 11
    SESSION_REJECT_XML_VALIDATION = 12
    SESSION_REJECT_TAG_APPEARS_MORE_THAN_ONCE = 13
    SESSION_REJECT_TAG_OUT_OF_ORDER = 14
    SESSION_REJECT_GROUP_FIELDS_OUT_OF_ORDER = 15
    SESSION_REJECT_INCORRECT_NUM_IN_GROUP = 16
    SESSION_REJECT_NON_DATA_HAS_DELIMITER = 17
    SESSION_REJECT_OTHER = 99

# Module-level ints with the same names as the enum members above.
FIX_GARBLED_BAD_BEGIN_STRING: int
FIX_GARBLED_BAD_BODY_LENGTH: int
FIX_GARBLED_BAD_CHECKSUM: int
FIX_GARBLED_BAD_MSG_TYPE: int
FIX_GARBLED_BAD_TAG: int
FIX_GARBLED_MISSING_SOH: int
FIX_GARBLED_BAD_DATA_LENGTH: int
FIX_GARBLED_TOO_LARGE: int
FIX_GARBLED_TRUNCATED: int
SESSION_REJECT_NONE: int
SESSION_REJECT_INVALID_TAG_NUMBER: int
SESSION_REJECT_REQUIRED_TAG_MISSING: int
SESSION_REJECT_TAG_NOT_DEFINED_FOR_MSG: int
SESSION_REJECT_UNDEFINED_TAG: int
SESSION_REJECT_TAG_WITHOUT_VALUE: int
SESSION_REJECT_VALUE_INCORRECT: int
SESSION_REJECT_INCORRECT_DATA_FORMAT: int
SESSION_REJECT_COMPID_PROBLEM: int
SESSION_REJECT_SENDING_TIME_ACCURACY: int
SESSION_REJECT_INVALID_MSG_TYPE: int
SESSION_REJECT_TAG_APPEARS_MORE_THAN_ONCE: int
SESSION_REJECT_TAG_OUT_OF_ORDER: int
SESSION_REJECT_GROUP_FIELDS_OUT_OF_ORDER: int
SESSION_REJECT_INCORRECT_NUM_IN_GROUP: int
SESSION_REJECT_OTHER: int

SESSION_REJECT_TEXT: dict[int, str]
GARBLED_REASON_NAMES: dict[int, str]
DICTIONARY_BEGIN_STRING: str

class FixParseError(ValueError):
    reason: int
    text: str
    raw: bytes
    def __init__(self, text: str = ..., raw: bytes = ...) -> None: ...

class FixBadBeginString(FixParseError): ...
class FixBadBodyLength(FixParseError): ...
class FixBadChecksum(FixParseError): ...
class FixBadMsgType(FixParseError): ...
class FixBadTag(FixParseError): ...
class FixMissingSOH(FixParseError): ...
class FixBadDataLength(FixParseError): ...
class FixMessageTooLarge(FixParseError): ...
class FixTruncated(FixParseError): ...
class FixBadValue(FixParseError): ...
class FixEncodeError(ValueError): ...
class FixInvalidField(FixEncodeError): ...
class FixEncodeTooLarge(FixEncodeError): ...

class FixMessage:
    raw: bytes
    @property
    def msg_type(self) -> bytes: ...
    @property
    def begin_string(self) -> bytes: ...
    @property
    def seq_num(self) -> int | None: ...
    @property
    def poss_dup(self) -> bool: ...
    def get(self, tag: int, default: bytes | None = None) -> bytes | None: ...
    def get_all(self, tag: int) -> list[bytes]: ...
    def get_int(self, tag: int, default: int | None = None) -> int | None: ...
    def fields(self) -> list[tuple[int, bytes]]: ...
    def tags(self) -> list[int]: ...
    def body(self) -> bytes: ...
    def __len__(self) -> int: ...
    def __contains__(self, tag: int) -> bool: ...

class FixGarbled:
    reason: int
    text: str
    raw: bytes
    def __init__(self, reason: int, text: str, raw: bytes) -> None: ...
    @property
    def reason_name(self) -> str: ...
    @property
    def error(self) -> FixParseError: ...

class FixParser:
    max_message_size: int
    raise_errors: bool
    messages: int
    garbled: int
    junk_bytes: int
    def __init__(self, max_message_size: int = 65536, raise_errors: bool = False) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> None: ...
    def next(self) -> FixMessage | FixGarbled | None: ...
    def parse(self, data: bytes | bytearray | memoryview) -> list[FixMessage | FixGarbled]: ...
    def flush(self) -> list[FixMessage | FixGarbled]: ...
    def reset(self) -> None: ...
    @property
    def pending(self) -> int: ...
    def __iter__(self) -> Iterator[FixMessage | FixGarbled]: ...
    def __next__(self) -> FixMessage | FixGarbled: ...

def parse_message(data: bytes | bytearray | memoryview, max_message_size: int = 65536) -> FixMessage: ...

class FixGroupDef:
    count_tag: int
    delimiter: int
    @property
    def required_tags(self) -> tuple[int, ...]: ...

class FixMsgDef:
    msg_type: bytes
    name: str
    @property
    def required_tags(self) -> tuple[int, ...]: ...
    def allows(self, tag: int) -> bool: ...

def message_def(msg_type: str | bytes) -> FixMsgDef | None: ...

class FixValidator:
    check_fields_have_values: bool
    check_user_defined_fields: bool
    check_fields_out_of_order: bool
    def __init__(self, check_fields_have_values: bool = True, check_user_defined_fields: bool = True,
                 check_fields_out_of_order: bool = True) -> None: ...
    def validate(self, msg: FixMessage) -> tuple[int, int | None, str] | None: ...

def validate(msg: FixMessage) -> tuple[int, int | None, str] | None: ...
def format_utc_timestamp(ns: int) -> bytes: ...
def parse_utc_timestamp(value: bytes | str) -> int: ...

class FixEncoder:
    begin_string: bytes
    sender_comp_id: bytes
    target_comp_id: bytes
    max_message_size: int
    def __init__(self, sender_comp_id: str | bytes, target_comp_id: str | bytes,
                 begin_string: str | bytes = "FIX.4.4",
                 header_fields: Iterable[tuple[int, Value]] | None = None,
                 max_message_size: int = 65536) -> None: ...
    @property
    def last_body(self) -> bytes: ...
    @property
    def last_sending_time(self) -> bytes: ...
    def encode(self, msg_type: str | bytes, fields: Iterable[tuple[int, Value]], seq_num: int,
               poss_dup: bool = False, orig_sending_time: bytes | str | int | None = None,
               header: Iterable[tuple[int, Value]] | None = None, sending_time_ns: int = -1) -> bytes: ...
    def encode_raw_body(self, msg_type: str | bytes, body: bytes, seq_num: int, poss_dup: bool = False,
                        orig_sending_time: bytes | str | int | None = None,
                        header: Iterable[tuple[int, Value]] | None = None,
                        sending_time_ns: int = -1) -> bytes: ...
    def new_order_single(self, seq_num: int, cl_ord_id: str | bytes, symbol: str | bytes, side: int,
                         qty: int, price: int = ..., decimals: int = 0, ord_type: int = 0, tif: int = 0,
                         account: str | bytes | None = None, transact_time_ns: int = -1,
                         sending_time_ns: int = -1, price_mult: int = 1) -> bytes: ...
    def execution_report(self, seq_num: int, order_id: str | bytes, exec_id: str | bytes,
                         exec_type: str | bytes, ord_status: str | bytes, symbol: str | bytes, side: int,
                         leaves_qty: int, cum_qty: int, avg_px: int = 0,
                         cl_ord_id: str | bytes | None = None, order_qty: int = -1, price: int = ...,
                         last_qty: int = 0, last_px: int = ..., decimals: int = 0,
                         orig_cl_ord_id: str | bytes | None = None, text: str | bytes | None = None,
                         ord_type: int = -1, tif: int = -1, transact_time_ns: int = -1,
                         sending_time_ns: int = -1, price_mult: int = 1, poss_dup: bool = False,
                         orig_sending_time: bytes | str | int | None = None) -> bytes: ...
    def order_cancel_request(self, seq_num: int, cl_ord_id: str | bytes, orig_cl_ord_id: str | bytes,
                             symbol: str | bytes, side: int, qty: int = -1,
                             order_id: str | bytes | None = None, transact_time_ns: int = -1,
                             sending_time_ns: int = -1, poss_dup: bool = False,
                             orig_sending_time: bytes | str | int | None = None) -> bytes: ...
    def order_cancel_replace_request(self, seq_num: int, cl_ord_id: str | bytes,
                                     orig_cl_ord_id: str | bytes, symbol: str | bytes, side: int,
                                     qty: int, price: int = ..., decimals: int = 0, ord_type: int = 0,
                                     tif: int = 0, order_id: str | bytes | None = None,
                                     account: str | bytes | None = None, transact_time_ns: int = -1,
                                     sending_time_ns: int = -1, price_mult: int = 1,
                                     poss_dup: bool = False,
                                     orig_sending_time: bytes | str | int | None = None) -> bytes: ...
    def order_mass_cancel_request(self, seq_num: int, cl_ord_id: str | bytes,
                                  mass_cancel_request_type: str | bytes = "7",
                                  symbol: str | bytes | None = None, side: int = -1,
                                  transact_time_ns: int = -1, sending_time_ns: int = -1,
                                  poss_dup: bool = False,
                                  orig_sending_time: bytes | str | int | None = None) -> bytes: ...
    def order_status_request(self, seq_num: int, cl_ord_id: str | bytes, symbol: str | bytes, side: int,
                             order_id: str | bytes | None = None, sending_time_ns: int = -1,
                             poss_dup: bool = False,
                             orig_sending_time: bytes | str | int | None = None) -> bytes: ...
    def order_cancel_reject(self, seq_num: int, order_id: str | bytes, cl_ord_id: str | bytes,
                            orig_cl_ord_id: str | bytes, ord_status: str | bytes,
                            cxl_rej_response_to: str | bytes = "1", cxl_rej_reason: int = -1,
                            text: str | bytes | None = None, sending_time_ns: int = -1,
                            poss_dup: bool = False,
                            orig_sending_time: bytes | str | int | None = None) -> bytes: ...
    def logon(self, seq_num: int, heart_bt_int: int, reset_seq_num: bool = False, encrypt_method: int = 0,
              username: str | bytes | None = None, password: str | bytes | None = None,
              next_expected_msg_seq_num: int = -1, header: Iterable[tuple[int, Value]] | None = None,
              sending_time_ns: int = -1) -> bytes: ...
    def heartbeat(self, seq_num: int, test_req_id: str | bytes | None = None,
                  header: Iterable[tuple[int, Value]] | None = None, sending_time_ns: int = -1) -> bytes: ...
    def test_request(self, seq_num: int, test_req_id: str | bytes,
                     header: Iterable[tuple[int, Value]] | None = None,
                     sending_time_ns: int = -1) -> bytes: ...
    def resend_request(self, seq_num: int, begin_seq_no: int, end_seq_no: int = 0,
                       header: Iterable[tuple[int, Value]] | None = None,
                       sending_time_ns: int = -1) -> bytes: ...
    def reject(self, seq_num: int, ref_seq_num: int, text: str | bytes | None = None,
               ref_tag_id: int | None = None, ref_msg_type: str | bytes | None = None,
               session_reject_reason: int | None = None,
               header: Iterable[tuple[int, Value]] | None = None, sending_time_ns: int = -1) -> bytes: ...
    def sequence_reset(self, seq_num: int, new_seq_no: int, gap_fill: bool = False, poss_dup: bool = False,
                       orig_sending_time: bytes | str | int | None = None,
                       header: Iterable[tuple[int, Value]] | None = None,
                       sending_time_ns: int = -1) -> bytes: ...
    def logout(self, seq_num: int, text: str | bytes | None = None,
               header: Iterable[tuple[int, Value]] | None = None, sending_time_ns: int = -1) -> bytes: ...
