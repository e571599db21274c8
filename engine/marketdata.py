"""Market-data files to L2 book update arrays (`core_ext.book.UPDATE_DTYPE`).

Prices and sizes in the files are decimals; they become int64 ticks and lots with
exact decimal arithmetic: a value that is not a whole multiple of the tick (or lot)
size is a `DataError` naming the file, the line and the column, never a silent
rounding. Tick and lot sizes are given as `str`, `int` or `Decimal` (a `float` is
taken through its shortest repr, so 0.01 means Decimal("0.01")).

Files understood:

* top-of-book quotes (Tardis `quotes` export: `timestamp` µs, `bid_price`,
  `bid_amount`, `ask_price`, `ask_amount`) -> `load_quotes_csv`. A quote stream
  knows only the top of each side, so one quote maps to updates that leave exactly
  that quote in the book, in one of two ways (same book after every quote):

  - ``mode="snapshot"`` (default): each quote is a two-row snapshot, the bid row with
    ``ACTION_SNAPSHOT`` (clear the book, then set the bid) and the ask row with
    ``ACTION_SET``. Always 2 rows per quote.
  - ``mode="replace"``: incremental: for each side whose price moved, delete the
    previous top (size 0), then set the new top if price or size changed. Deletes
    of both sides come before the sets, so an uncrossed quote never leaves a
    transiently crossed book. 0 to 4 rows per quote; only ``ACTION_SET`` rows, so
    the stream can be fed one `L2Book.update` call at a time.

* L2 depth files -> `load_l2_csv`, with the format told by the header:

  - Binance depth (`symbol,timestamp,first_update_id,last_update_id,side,update_type,
    price,qty,pu`; timestamp in ms; side `b`/`a`; update_type `snap` or `set`;
    qty 0 deletes the level),
  - Tardis `incremental_book_L2` (`exchange,symbol,timestamp,local_timestamp,
    is_snapshot,side,price,amount`; timestamp in µs; side `bid`/`ask`; amount 0
    deletes the level).

  Snapshot rows are `ACTION_SET` rows, except the first row of each run of snapshot
  rows (a snapshot row that follows a non-snapshot row, or the first row of the
  file), which is `ACTION_SNAPSHOT`: the book is cleared before it, as Tardis
  documents for `is_snapshot`.

Timestamps are the exchange's (`timestamp` column) in ns.
"""
from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from os import PathLike
from pathlib import Path

import numpy as np

from core_ext.book import ACTION_SET, ACTION_SNAPSHOT, SIDE_BUY, SIDE_SELL, UPDATE_DTYPE
from engine.errors import DataError

__all__ = ["UPDATE_DTYPE", "load_quotes_csv", "load_l2_csv", "quote_updates", "to_units"]

Number = str | int | Decimal | float

_QUOTE_COLUMNS = ("timestamp", "ask_amount", "ask_price", "bid_price", "bid_amount")
_BINANCE_COLUMNS = ("timestamp", "side", "update_type", "price", "qty")
_TARDIS_L2_COLUMNS = ("timestamp", "is_snapshot", "side", "price", "amount")


def _unit(value: Number, name: str) -> Decimal:
    if isinstance(value, float):
        value = repr(value)
    try:
        unit = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise DataError(f"{name} must be a positive decimal, got {value!r}") from None
    if not unit.is_finite() or unit <= 0:
        raise DataError(f"{name} must be a positive decimal, got {value!r}")
    return unit


def to_units(text: str, unit: Decimal, where: str) -> int:
    """Exact `text / unit` as an int; DataError (naming `where`) if it is not whole."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise DataError(f"{where}: {text!r} is not a decimal number") from None
    if not value.is_finite():
        raise DataError(f"{where}: {text!r} is not a finite number")
    units = value / unit
    whole = units.to_integral_value()
    if units != whole:
        raise DataError(f"{where}: {text} is not a whole multiple of {unit}")
    result = int(whole)
    if not -(2**63) < result < 2**63:
        raise DataError(f"{where}: {text} / {unit} does not fit in int64")
    return result


def _rows(path: Path, required: tuple[str, ...]):
    """(line number, row dict) of a CSV file, after checking the header."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: header lacks column(s) {', '.join(missing)} "
                            f"(has {', '.join(header) or 'nothing'})")
        for row in reader:
            yield reader.line_num, row


def _int(text: str, where: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {text!r} is not an integer") from None


def _lots(text: str, lot: Decimal, where: str) -> int:
    lots = to_units(text, lot, where)
    if lots < 0:
        raise DataError(f"{where}: size {text} is negative")
    return lots


def quote_updates(ts_ns, bid_price, bid_size, ask_price, ask_size,
                  mode: str = "snapshot", with_quote_index: bool = False):
    """Update rows for a top-of-book quote stream given as int arrays (ticks, lots).

    See the module doc for `mode`. The arrays have one element per quote. With
    `with_quote_index`, returns (rows, quote_index) where quote_index[j] is the quote
    that row j comes from (rows of one quote are contiguous).
    """
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    bid_price = np.asarray(bid_price, dtype=np.int64)
    bid_size = np.asarray(bid_size, dtype=np.int64)
    ask_price = np.asarray(ask_price, dtype=np.int64)
    ask_size = np.asarray(ask_size, dtype=np.int64)
    n = ts_ns.size
    if not (bid_price.size == bid_size.size == ask_price.size == ask_size.size == n):
        raise DataError("quote arrays must have the same length")
    if mode == "snapshot":
        out = np.zeros(2 * n, dtype=UPDATE_DTYPE)
        out["ts_ns"] = np.repeat(ts_ns, 2)
        out["price"][0::2] = bid_price
        out["size"][0::2] = bid_size
        out["side"][0::2] = SIDE_BUY
        out["action"][0::2] = ACTION_SNAPSHOT
        out["price"][1::2] = ask_price
        out["size"][1::2] = ask_size
        out["side"][1::2] = SIDE_SELL
        out["action"][1::2] = ACTION_SET
        return (out, np.repeat(np.arange(n, dtype=np.int64), 2)) if with_quote_index else out
    if mode != "replace":
        raise DataError(f"quote mode must be 'snapshot' or 'replace', got {mode!r}")
    rows: list[tuple[int, int, int, int, int]] = []
    index: list[int] = []
    prev = [None, None]  # (price, size) of the top we set, per side
    for i in range(n):
        ts = int(ts_ns[i])
        new = [(int(bid_price[i]), int(bid_size[i])), (int(ask_price[i]), int(ask_size[i]))]
        for side in (SIDE_BUY, SIDE_SELL):
            old = prev[side]
            if old is not None and old[0] != new[side][0]:
                rows.append((ts, old[0], 0, side, ACTION_SET))
                index.append(i)
        for side in (SIDE_BUY, SIDE_SELL):
            if prev[side] != new[side]:
                rows.append((ts, new[side][0], new[side][1], side, ACTION_SET))
                index.append(i)
            prev[side] = new[side]
    out = np.array(rows, dtype=UPDATE_DTYPE) if rows else np.zeros(0, dtype=UPDATE_DTYPE)
    return (out, np.array(index, dtype=np.int64)) if with_quote_index else out


def load_quotes_csv(path: str | PathLike, tick_size: Number, lot_size: Number,
                    mode: str = "snapshot", with_quote_index: bool = False):
    """Top-of-book quotes CSV (Tardis export, timestamps in µs) -> UPDATE_DTYPE rows
    (and, with `with_quote_index`, the quote (data row) index of every update row)."""
    path = Path(path)
    tick = _unit(tick_size, "tick_size")
    lot = _unit(lot_size, "lot_size")
    ts, bp, bs, ap, asz = [], [], [], [], []
    for line, row in _rows(path, _QUOTE_COLUMNS):
        at = f"{path.name}:{line}"
        ts.append(_int(row["timestamp"], f"{at} timestamp") * 1_000)
        bp.append(to_units(row["bid_price"], tick, f"{at} bid_price"))
        bs.append(_lots(row["bid_amount"], lot, f"{at} bid_amount"))
        ap.append(to_units(row["ask_price"], tick, f"{at} ask_price"))
        asz.append(_lots(row["ask_amount"], lot, f"{at} ask_amount"))
    return quote_updates(ts, bp, bs, ap, asz, mode=mode, with_quote_index=with_quote_index)


def load_l2_csv(path: str | PathLike, tick_size: Number, lot_size: Number) -> np.ndarray:
    """L2 depth CSV (Binance depth or Tardis incremental_book_L2) -> UPDATE_DTYPE rows."""
    path = Path(path)
    tick = _unit(tick_size, "tick_size")
    lot = _unit(lot_size, "lot_size")
    with open(path, newline="") as fh:
        header = next(csv.reader(fh), [])
    if "update_type" in header:
        required, size_col, ts_scale = _BINANCE_COLUMNS, "qty", 1_000_000
        sides = {"b": SIDE_BUY, "a": SIDE_SELL}
        snapshot_values = {"snap": True, "set": False}
        snap_col = "update_type"
    elif "is_snapshot" in header:
        required, size_col, ts_scale = _TARDIS_L2_COLUMNS, "amount", 1_000
        sides = {"bid": SIDE_BUY, "ask": SIDE_SELL}
        snapshot_values = {"true": True, "false": False}
        snap_col = "is_snapshot"
    else:
        raise DataError(f"{path}: not a known L2 format (need an 'update_type' column (Binance) "
                        f"or an 'is_snapshot' column (Tardis incremental_book_L2))")
    rows = []
    in_snapshot = False
    for line, row in _rows(path, required):
        at = f"{path.name}:{line}"
        side = sides.get(row["side"])
        if side is None:
            raise DataError(f"{at} side: {row['side']!r} is not one of {', '.join(sides)}")
        is_snap = snapshot_values.get(row[snap_col])
        if is_snap is None:
            raise DataError(f"{at} {snap_col}: {row[snap_col]!r} is not one of "
                            f"{', '.join(snapshot_values)}")
        action = ACTION_SNAPSHOT if is_snap and not in_snapshot else ACTION_SET
        in_snapshot = is_snap
        rows.append((_int(row["timestamp"], f"{at} timestamp") * ts_scale,
                     to_units(row["price"], tick, f"{at} price"),
                     _lots(row[size_col], lot, f"{at} {size_col}"),
                     side, action))
    return np.array(rows, dtype=UPDATE_DTYPE) if rows else np.zeros(0, dtype=UPDATE_DTYPE)
