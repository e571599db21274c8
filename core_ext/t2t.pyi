"""Type stubs for core_ext.t2t (the compiled tick-to-trade path); see t2t.pxd."""
from collections.abc import Iterable

import numpy as np

from core_ext.book import L2Book
from core_ext.fix import FixEncoder
from core_ext.itch import ItchApplyResult, ItchBookApplier
from core_ext.risk import RiskKernel

Bytesish = bytes | bytearray | memoryview

ORDER_DTYPE: np.dtype
OUTCOME_SENT: int
OUTCOME_ENCODE_FAILED: int
MAX_ORDERS_PER_EVENT: int

class CStrategy: ...

class QuoteAtTouch(CStrategy):
    qty: int
    offset_ticks: int
    tif: int
    both_sides: bool
    requested: int
    sent: int
    refused: int
    def __init__(self, qty: int = ..., offset_ticks: int = ..., tif: int = ...,
                 both_sides: bool = ...) -> None: ...

class TickToTrade:
    applier: ItchBookApplier
    kernel: RiskKernel
    encoder: FixEncoder
    strategy: CStrategy
    last_result: ItchApplyResult | None
    next_cl_ord_id: int
    next_seq_num: int
    set_reference: bool
    packets: int
    events: int
    orders_sent: int
    orders_refused: int
    log_full: int
    def __init__(self, instruments: Iterable[tuple[str, int, int, int, int]], kernel: RiskKernel,
                 encoder: FixEncoder, strategy: CStrategy, next_cl_ord_id: int,
                 next_seq_num: int = ..., set_reference: bool = ..., log_capacity: int = ...,
                 strict: bool = ..., applier: ItchBookApplier | None = ...) -> None: ...
    def use_applier(self, applier: ItchBookApplier) -> None: ...
    def process(self, packet: Bytesish, now_ns: int = ...) -> bytes | None: ...
    @property
    def symbols(self) -> list[str]: ...
    @property
    def books(self) -> list[L2Book]: ...
    def book(self, symbol: str) -> L2Book: ...
    def inst_id(self, index: int) -> int: ...
    def top(self, index: int) -> tuple[int, int, int, int]: ...
    @property
    def pending_orders(self) -> int: ...
    def drain_orders(self) -> np.ndarray: ...
