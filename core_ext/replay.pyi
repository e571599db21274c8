# Type stub of core_ext/replay.pyx (the compiled backtest replay). Keep in step with replay.pyx.
from collections.abc import Callable, Sequence, Sized
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from core_ext.book import L2Book
from core_ext.matching import MatchingBook

REPLAY_BOOK_SET: Final[int]        # 0: set level (side, price) to qty lots (0 deletes)
REPLAY_BOOK_SNAPSHOT: Final[int]   # 1: clear the book, then set the level
REPLAY_TRADE: Final[int]           # 2: trade print (side = aggressor or REPLAY_SIDE_UNKNOWN)
REPLAY_L3_ADD: Final[int]          # 3: order rests (no matching)
REPLAY_L3_CANCEL: Final[int]       # 4: order leaves the book
REPLAY_L3_REPLACE: Final[int]      # 5: order's new price / qty (no matching)
REPLAY_FLAG_END: Final[int]        # flags bit: last row of an event
REPLAY_SIDE_UNKNOWN: Final[int]    # 2
REPLAY_KIND_NAMES: Final[tuple[str, ...]]
REPLAY_DTYPE: Final[np.dtype]      # ts_ns i8, price i8, qty i8, order_id u8, inst u4, kind u1,
                                   # side u1, flags u1, reserved u1 (aligned, 40 B)

class ReplayError(ValueError): ...

class ReplayClock:
    now_ns: int
    def __init__(self, now_ns: int = 0) -> None: ...
    def __call__(self) -> int: ...

class RecordMaker:
    type: type
    fields: tuple[str, ...]
    fast: bool
    def __init__(self, cls: type, fields: Sequence[str]) -> None: ...
    def __call__(self, *values: Any) -> Any: ...

class Replay:
    n_instruments: int
    symbols: tuple[str, ...]
    clock: ReplayClock
    guards: bool
    events: int
    rows: int
    top_changes: int
    quote_calls: int
    book_calls: int
    trade_calls: int
    timer_calls: int
    advance_calls: int
    exec_calls: int
    l3_rejects: int
    strategy_errors: int
    def __init__(self, books: Sequence[L2Book], symbols: Sequence[str] | None = None, *,
                 clock: ReplayClock | None = None,
                 l3_books: Sequence[MatchingBook | None] | None = None,
                 kernel: Any = None, kernel_ids: Sequence[int] | None = None,
                 marks: Sequence[object | None] | None = None) -> None: ...
    def set_strategy(self, host: Any, on_quote: Callable[[Any], object] | None = None,
                     on_book: Callable[[str], object] | None = None,
                     on_trade: Callable[[Any], object] | None = None, *,
                     on_error: Callable[[str, BaseException], object] | None = None,
                     stopped_exc: type[BaseException] | None = None, quote_type: type | None = None,
                     trade_type: type | None = None, side_values: Sequence[Any] | None = None) -> None: ...
    def set_execution(self, advance: Callable[[int], object] | None = None, *,
                      due_heap: list | None = None, live: Sized | None = None,
                      book_live: Sized | None = None,
                      on_book: Callable[[str, int], object] | None = None,
                      on_trade: Callable[[str, int, int, int, int], object] | None = None) -> None: ...
    def set_timer(self, interval_ns: int, callback: Callable[[int], object] | None,
                  first_ns: int | None = None) -> None: ...
    def set_progress(self, every: int, callback: Callable[[int], object] | None) -> None: ...
    def top(self, inst: int) -> tuple[int | None, int, int | None, int]: ...
    @property
    def last_ts(self) -> int | None: ...
    def counters(self) -> dict[str, int]: ...
    def run(self, events: npt.NDArray[np.void], start: int = 0, stop: int | None = None) -> int: ...
