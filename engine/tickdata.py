"""Historical market data for the backtest: every supported file becomes one event
array (`core_ext.replay.REPLAY_DTYPE`) in integer ticks and lots, plus the project's
own Parquet tick format.

Files understood (`detect_format` tells them apart by extension and header):

==================  =============================================================
``tardis-quotes``   top-of-book quotes CSV (Tardis ``quotes``: ``timestamp`` µs,
                    ``bid_price``, ``bid_amount``, ``ask_price``, ``ask_amount``)
``tardis-trades``   trades CSV (Tardis ``trades``: ``timestamp`` µs, ``side``
                    buy/sell = the aggressor, ``price``, ``amount``)
``binance-l2``      Binance depth CSV (``timestamp`` ms, ``side`` b/a,
                    ``update_type`` snap/set, ``price``, ``qty``; 0 deletes)
``tardis-l2``       Tardis ``incremental_book_L2`` CSV (``timestamp`` µs,
                    ``is_snapshot``, ``side`` bid/ask, ``price``, ``amount``)
``truefx``          bid/ask ticks CSV (``timestamp`` ISO 8601, ``bid``, ``ask``;
                    no sizes: each side shows `UNSIZED_LOTS` lots)
``bitfinex-l3``     Bitfinex raw-book (R0) frames, a JSON array (engine.l3data);
                    no timestamps: frame k is at ``k * l3_frame_ns``
``engine-parquet``  the project's Parquet tick format (below)
==================  =============================================================

Decimals become ticks and lots exactly: a price that is not a whole multiple of the
tick size (or a size of the lot size) is a `DataError` naming the file, the line (or
frame, or Parquet row) and the column; so are a malformed number, a missing column,
an unknown side and a timestamp that goes back in time. Without a tick / lot size
the file's own are derived: the largest decimal that divides every price (sizes),
i.e. the decimal gcd: 0.01 for Binance BTCUSDT prices, 0.5 for Deribit BTC-PERPETUAL,
0.001 for USD/JPY; Bitfinex L3 uses engine.l3data's 1e-8 for both.

Events. Rows of one event share instrument and timestamp; the last one carries
``REPLAY_FLAG_END`` (the replay's callbacks follow it). One quote is one event: for
each side whose price moved, the previous top is deleted, then both tops are set
(``REPLAY_BOOK_SET`` rows only, deletes first, so the book holds exactly the quote
and the change codes are exact). A quote with both sides empty and nothing to delete
makes no event. L2 rows of one timestamp are one event (the first row of a run of
snapshot rows is ``REPLAY_BOOK_SNAPSHOT``: the book is cleared first). One L3 frame is
one event. One trade print is one event; when a file has trades only, each print
also sets a synthetic one-tick-wide L1 book at the print (``book="synthetic-l1"``):
a buy print at p shows ask p and bid p - 1 tick, a sell (or unknown) print bid p and
ask p + 1 tick, both with the print's size -- so the moving-average strategy and the
fill model have a market to act on. Pass ``trades_book="none"`` to keep the book
empty (`trades_only` drops the synthetic rows afterwards: the backtest does so when
another file of the run gives the symbol a real book).

The Parquet tick format (``engine-parquet``, version 1): one instrument per file,
one row per event row, columns ``ts_ns`` int64, ``kind`` uint8 (REPLAY_* kind),
``side`` uint8, ``price`` int64 (ticks), ``qty`` int64 (lots), ``order_id`` uint64,
``end`` bool (last row of an event); schema metadata key ``engine.ticks`` holds JSON
``{"format": "engine.ticks", "version": 1, "symbol", "tick_size", "lot_size",
"book", "has_sizes", "source_format", "source"}`` (decimals as strings). Written by
`write_parquet` (zstd), read back by `load_tick_data` bit for bit: the same events
replay to the same fills.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from os import PathLike
from pathlib import Path

import numpy as np

from core_ext.replay import (
    REPLAY_BOOK_SET,
    REPLAY_BOOK_SNAPSHOT,
    REPLAY_DTYPE,
    REPLAY_FLAG_END,
    REPLAY_L3_ADD,
    REPLAY_L3_CANCEL,
    REPLAY_L3_REPLACE,
    REPLAY_SIDE_UNKNOWN,
    REPLAY_TRADE,
)
from engine.errors import DataError

__all__ = [
    "FORMATS", "TickData", "UNSIZED_LOTS", "L3_FRAME_NS", "PARQUET_FORMAT", "PARQUET_VERSION",
    "detect_format", "load_tick_data", "write_parquet", "decimal_gcd", "parse_iso_ns",
    "quote_events", "validate_events", "with_symbol", "trades_only",
]

FORMATS = {
    "tardis-quotes": "Tardis quotes CSV (top of book)",
    "tardis-trades": "Tardis trades CSV",
    "binance-l2": "Binance depth CSV (L2)",
    "tardis-l2": "Tardis incremental_book_L2 CSV",
    "truefx": "bid/ask ticks CSV with ISO 8601 timestamps",
    "bitfinex-l3": "Bitfinex raw order book frames (JSON, L3)",
    "engine-parquet": "engine Parquet tick format",
}
UNSIZED_LOTS = 1_000_000_000      # displayed size of each side of a quote file without sizes
L3_FRAME_NS = 1_000_000           # event time between two L3 frames (the feed has no timestamps)
PARQUET_FORMAT = "engine.ticks"
PARQUET_VERSION = 1
_META_KEY = b"engine.ticks"
_INT64_MAX = 2**63 - 1
_SIDE_BUY, _SIDE_SELL = 0, 1
_BOOK_KINDS = (REPLAY_BOOK_SET, REPLAY_BOOK_SNAPSHOT)
_L3_KINDS = (REPLAY_L3_ADD, REPLAY_L3_CANCEL, REPLAY_L3_REPLACE)
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/\-]{0,31}$")


@dataclass(frozen=True)
class TickData:
    """One instrument's events (``inst`` 0) and how to read them back."""
    events: np.ndarray        # REPLAY_DTYPE rows
    symbol: str
    tick_size: Decimal        # price of one tick
    lot_size: Decimal         # quantity of one lot
    source: Path
    format: str               # a FORMATS key
    lines: np.ndarray         # int64 per row: where it came from (see `where`)
    line_label: str           # "line" (CSV, 1 = header), "frame" (L3 JSON) or "row" (Parquet, 0-based)
    book: str                 # "quotes" | "l2" | "l3" | "synthetic-l1" | "none"
    has_sizes: bool           # False: sizes are UNSIZED_LOTS placeholders

    @property
    def n_events(self) -> int:
        return int(np.count_nonzero(self.events["flags"] & REPLAY_FLAG_END))

    @property
    def has_trades(self) -> bool:
        return bool(np.any(self.events["kind"] == REPLAY_TRADE))

    @property
    def has_book(self) -> bool:
        return bool(np.any(self.events["kind"] != REPLAY_TRADE))

    def where(self, row: int) -> str:
        """'file:line N' for an event row index."""
        return f"{self.source}: {self.line_label} {int(self.lines[row])}"


# --------------------------------------------------------------------------- helpers

def decimal_gcd(values) -> Decimal | None:
    """The largest decimal dividing every non-zero value (None when there is none)."""
    nz = [abs(v) for v in values if v]
    if not nz:
        return None
    exp = max(0, max(-v.as_tuple().exponent for v in nz))
    scale = Decimal(10) ** exp
    g = math.gcd(*(int(v * scale) for v in nz))
    return (Decimal(g) / scale).normalize()


def _plain(d: Decimal) -> str:
    """A decimal without exponent notation ('10', '0.001')."""
    s = format(d.normalize(), "f")
    return s


_ISO_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
                     r"(Z|[+-]\d{2}:?\d{2})?$")


def parse_iso_ns(text: str) -> int:
    """ISO 8601 date-time -> int ns since the epoch, exactly (up to 9 decimals of a
    second; no zone = UTC). ValueError when malformed."""
    import calendar
    m = _ISO_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not an ISO 8601 date-time")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not a valid date-time") from None
    if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31 and int(h) < 24 and int(mi) < 60 and int(s) < 61):
        raise ValueError(f"{text!r} is not a valid date-time")
    ns = secs * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hh, mm = int(zone[1:3]), int(zone[-2:])
        ns -= sign * (hh * 3600 + mm * 60) * 1_000_000_000
    return ns


class _Cols:
    """The columns of a CSV file as lists of stripped strings, with line numbers."""

    def __init__(self, path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
        self.path = path
        try:
            fh = open(path, newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
        with fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader, [])]
                missing = [c for c in required if c not in header]
                if missing:
                    raise DataError(f"{path}: line 1: header lacks column(s) {', '.join(missing)} "
                                    f"(has {', '.join(header) or 'nothing'})")
                idx = {c: header.index(c) for c in required + optional if c in header}
                self.cols: dict[str, list[str]] = {c: [] for c in idx}
                self.lines: list[int] = []
                width = len(header)
                for row in reader:
                    line = reader.line_num
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue
                    if len(row) < width:
                        raise DataError(f"{path}: line {line}: {len(row)} fields, the header has {width}")
                    for c, i in idx.items():
                        self.cols[c].append(row[i].strip())
                    self.lines.append(line)
            except UnicodeDecodeError:
                raise DataError(f"{path}: not UTF-8 text") from None
            except csv.Error as exc:
                raise DataError(f"{path}: line {reader.line_num}: {exc}") from None
        if not self.lines:
            raise DataError(f"{path}: no data rows")

    def at(self, k: int, col: str) -> str:
        return f"{self.path}: line {self.lines[k]} {col}"

    def filter(self, keep: list[int]) -> None:
        self.lines = [self.lines[k] for k in keep]
        for c in self.cols:
            v = self.cols[c]
            self.cols[c] = [v[k] for k in keep]

    def ints(self, col: str, scale: int) -> list[int]:
        out = []
        for k, text in enumerate(self.cols[col]):
            try:
                v = int(text)
            except ValueError:
                raise DataError(f"{self.at(k, col)}: {text!r} is not an integer") from None
            out.append(v * scale)
        return out

    def decimals(self, col: str, allow_empty: bool = False, nonneg: bool = False) -> list[Decimal | None]:
        out: list[Decimal | None] = []
        for k, text in enumerate(self.cols[col]):
            if not text and allow_empty:
                out.append(None)
                continue
            try:
                d = Decimal(text)
            except (InvalidOperation, ValueError):
                raise DataError(f"{self.at(k, col)}: {text!r} is not a decimal number") from None
            if not d.is_finite():
                raise DataError(f"{self.at(k, col)}: {text!r} is not a finite number")
            if nonneg and d < 0:
                raise DataError(f"{self.at(k, col)}: {text} is negative")
            out.append(d)
        return out


def _to_units(values: list[Decimal | None], unit: Decimal, cols: _Cols, col: str,
              empty: int = 0) -> np.ndarray:
    """Exact value / unit per element (None -> `empty`); DataError naming the line."""
    out = np.empty(len(values), dtype=np.int64)
    for k, v in enumerate(values):
        if v is None:
            out[k] = empty
            continue
        q = v / unit
        w = q.to_integral_value()
        if q != w:
            raise DataError(f"{cols.at(k, col)}: {v} is not a whole multiple of {_plain(unit)}")
        iv = int(w)
        if not -_INT64_MAX <= iv <= _INT64_MAX:
            raise DataError(f"{cols.at(k, col)}: {v} / {_plain(unit)} does not fit in int64")
        out[k] = iv
    return out


def _check_ts(ts: list[int], cols: _Cols, col: str = "timestamp") -> np.ndarray:
    for k, v in enumerate(ts):
        if not 0 <= v <= _INT64_MAX:
            raise DataError(f"{cols.at(k, col)}: {v} ns is out of range")
    a = np.asarray(ts, dtype=np.int64)
    back = np.flatnonzero(a[1:] < a[:-1])
    if back.size:
        k = int(back[0]) + 1
        raise DataError(f"{cols.at(k, col)}: {cols.cols[col][k]} goes back in time "
                        f"(previous row: {cols.cols[col][k - 1]})")
    return a


def _symbol_of(cols: _Cols, path: Path, symbol: str | None) -> str:
    """The file's symbol (the `symbol` column, filtered to `symbol` when given)."""
    if "symbol" not in cols.cols:
        if symbol is not None:
            return symbol
        stem = re.split(r"[-_. ]", path.stem)[0].upper() or "INSTRUMENT"
        stem = re.sub(r"[^A-Za-z0-9._:/\-]", "", stem)[:32] or "INSTRUMENT"
        return stem
    values = cols.cols["symbol"]
    names = sorted(set(values))
    if symbol is not None:
        if symbol not in names:
            raise DataError(f"{path}: no rows for symbol {symbol!r} (the file has {', '.join(names[:10])})")
        if len(names) > 1:
            cols.filter([k for k, v in enumerate(values) if v == symbol])
        return symbol
    if len(names) > 1:
        raise DataError(f"{path}: the file holds several symbols ({', '.join(names[:10])}): "
                        f"choose one (symbol=...)")
    name = names[0]
    if not _SYMBOL_RE.match(name):
        raise DataError(f"{cols.at(0, 'symbol')}: {name!r} is not a usable symbol "
                        f"(letters, digits and ._:/- up to 32)")
    return name


def _unit_or_derive(given, values: list, what: str, path: Path) -> Decimal:
    if given is not None:
        try:
            u = Decimal(str(given)) if not isinstance(given, Decimal) else given
        except InvalidOperation:
            raise DataError(f"{what} {given!r} is not a decimal") from None
        if not u.is_finite() or u <= 0:
            raise DataError(f"{what} {given!r} must be > 0")
        return u
    g = decimal_gcd([v for v in values if v is not None])
    return g if g is not None else Decimal(1)


# --------------------------------------------------------------------------- event builders

def _empty_events(n: int) -> np.ndarray:
    return np.zeros(n, dtype=REPLAY_DTYPE)


def _end_flags(group: np.ndarray) -> np.ndarray:
    """END where the next row belongs to another group (and on the last row)."""
    n = group.size
    end = np.ones(n, dtype=bool)
    if n > 1:
        end[:-1] = group[1:] != group[:-1]
    return end


def quote_events(ts, bid, bid_size, ask, ask_size, bid_ok, ask_ok) -> tuple[np.ndarray, np.ndarray]:
    """Event rows of a top-of-book quote stream (see the module doc): per quote, the
    deletes of moved tops, then the sets. Returns (rows, quote index per row)."""
    ts = np.asarray(ts, dtype=np.int64)
    n = ts.size
    bid = np.asarray(bid, dtype=np.int64)
    ask = np.asarray(ask, dtype=np.int64)
    bid_size = np.asarray(bid_size, dtype=np.int64)
    ask_size = np.asarray(ask_size, dtype=np.int64)
    bid_ok = np.asarray(bid_ok, dtype=bool) & (bid_size > 0)
    ask_ok = np.asarray(ask_ok, dtype=bool) & (ask_size > 0)
    # previous top per side: the last quote's (a quote with an empty side deletes it)
    prev_bok = np.zeros(n, dtype=bool)
    prev_aok = np.zeros(n, dtype=bool)
    prev_b = np.zeros(n, dtype=np.int64)
    prev_a = np.zeros(n, dtype=np.int64)
    if n > 1:
        prev_bok[1:], prev_aok[1:] = bid_ok[:-1], ask_ok[:-1]
        prev_b[1:], prev_a[1:] = bid[:-1], ask[:-1]
    del_b = prev_bok & (~bid_ok | (bid != prev_b))
    del_a = prev_aok & (~ask_ok | (ask != prev_a))
    slots = np.stack([del_b, del_a, bid_ok, ask_ok], axis=1)          # (n, 4)
    price = np.stack([prev_b, prev_a, bid, ask], axis=1)
    size = np.stack([np.zeros(n, np.int64), np.zeros(n, np.int64), bid_size, ask_size], axis=1)
    side = np.tile(np.array([_SIDE_BUY, _SIDE_SELL, _SIDE_BUY, _SIDE_SELL], dtype=np.uint8), (n, 1))
    qidx = np.repeat(np.arange(n, dtype=np.int64), 4).reshape(n, 4)
    mask = slots.ravel()
    rows = _empty_events(int(mask.sum()))
    rows["ts_ns"] = np.repeat(ts, 4)[mask]
    rows["price"] = price.ravel()[mask]
    rows["qty"] = size.ravel()[mask]
    rows["side"] = side.ravel()[mask]
    rows["kind"] = REPLAY_BOOK_SET
    index = qidx.ravel()[mask]
    rows["flags"] = np.where(_end_flags(index), REPLAY_FLAG_END, 0)
    return rows, index


def validate_events(events: np.ndarray, where) -> None:
    """The replay's own checks, vectorised, with DataErrors naming the source row
    (``where(row) -> str``)."""
    if events.dtype != REPLAY_DTYPE:
        raise DataError(f"events dtype {events.dtype} is not REPLAY_DTYPE")
    n = events.size
    if n == 0:
        return
    k = events["kind"]
    side = events["side"]
    qty = events["qty"]
    ts = events["ts_ns"]
    checks = [
        (k > REPLAY_L3_REPLACE, "kind", "is not a replay kind (0..5)", "kind"),
        (ts < 0, "ts_ns", "is negative", "ts_ns"),
        (np.isin(k, _BOOK_KINDS) & (side > _SIDE_SELL), "side", "is not 0 (bid) or 1 (ask)", "side"),
        (np.isin(k, _BOOK_KINDS) & (qty < 0), "qty", "is negative", "qty"),
        ((k == REPLAY_TRADE) & (side > REPLAY_SIDE_UNKNOWN), "side", "is not 0, 1 or 2 (unknown)", "side"),
        ((k == REPLAY_TRADE) & (qty <= 0), "qty", "must be > 0 for a trade", "qty"),
        (np.isin(k, _L3_KINDS) & (events["order_id"] == 0), "order_id", "0 is reserved", "order_id"),
        (((k == REPLAY_L3_ADD) | (k == REPLAY_L3_REPLACE)) & (qty <= 0), "qty",
         "must be > 0 for an L3 order", "qty"),
        ((k == REPLAY_L3_ADD) & (side > _SIDE_SELL), "side", "is not 0 (bid) or 1 (ask)", "side"),
        ((k != REPLAY_L3_CANCEL) & (events["price"] == np.iinfo(np.int64).min), "price",
         "is NO_PRICE", "price"),
    ]
    for bad, field, what, col in checks:
        idx = np.flatnonzero(bad)
        if idx.size:
            r = int(idx[0])
            raise DataError(f"{where(r)} {field}: {events[col][r]} {what}")
    back = np.flatnonzero(ts[1:] < ts[:-1])
    if back.size:
        r = int(back[0]) + 1
        raise DataError(f"{where(r)} ts_ns: {ts[r]} goes back in time (previous {ts[r - 1]})")
    end = (events["flags"] & REPLAY_FLAG_END) != 0
    if not end[-1]:
        raise DataError(f"{where(n - 1)} end: the last row does not end an event")
    # rows of one event share ts and inst
    cont = ~end[:-1]
    bad = np.flatnonzero(cont & ((ts[1:] != ts[:-1]) | (events["inst"][1:] != events["inst"][:-1])))
    if bad.size:
        r = int(bad[0]) + 1
        raise DataError(f"{where(r)} ts_ns: an event's rows must share the timestamp and instrument")


# --------------------------------------------------------------------------- formats

def detect_format(path: str | PathLike) -> str:
    """The FORMATS key of a file (by extension, then by the CSV header)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "engine-parquet"
    if suffix == ".json":
        return "bitfinex-l3"
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error):
        raise DataError(f"{p}: not a CSV text file (and not .json / .parquet)") from None
    h = set(header)
    if {"bid_price", "ask_price", "bid_amount", "ask_amount", "timestamp"} <= h:
        return "tardis-quotes"
    if "update_type" in h:
        return "binance-l2"
    if "is_snapshot" in h:
        return "tardis-l2"
    if {"timestamp", "side", "price", "amount"} <= h:
        return "tardis-trades"
    if {"timestamp", "bid", "ask"} <= h:
        return "truefx"
    raise DataError(f"{p}: line 1: unknown data format (header {', '.join(header) or 'empty'}); "
                    f"known: {', '.join(FORMATS)}")


def load_tick_data(path: str | PathLike, *, tick_size=None, lot_size=None, symbol: str | None = None,
                   l3_frame_ns: int = L3_FRAME_NS, trades_book: str = "synthetic") -> TickData:
    """Read a market-data file into events (see the module doc). ``tick_size`` /
    ``lot_size`` (decimals) convert prices and sizes; None derives them from the file.
    ``symbol`` picks one symbol of a multi-symbol file (and names a file without a
    symbol column; default: from the file name)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if trades_book not in ("synthetic", "none"):
        raise DataError(f"trades_book {trades_book!r}: 'synthetic' or 'none'")
    fmt = detect_format(p)
    if fmt == "engine-parquet":
        data = _read_parquet(p, tick_size, lot_size)
    elif fmt == "bitfinex-l3":
        data = _load_l3(p, tick_size, lot_size, symbol, l3_frame_ns)
    elif fmt == "tardis-quotes":
        data = _load_quotes(p, tick_size, lot_size, symbol)
    elif fmt == "truefx":
        data = _load_truefx(p, tick_size, lot_size, symbol)
    elif fmt == "tardis-trades":
        data = _load_trades(p, tick_size, lot_size, symbol, trades_book)
    else:
        data = _load_l2(p, fmt, tick_size, lot_size, symbol)
    validate_events(data.events, data.where)
    return data


def _load_quotes(p: Path, tick_size, lot_size, symbol) -> TickData:
    cols = _Cols(p, ("timestamp", "bid_price", "bid_amount", "ask_price", "ask_amount"), ("symbol",))
    sym = _symbol_of(cols, p, symbol)
    ts = _check_ts(cols.ints("timestamp", 1_000), cols)
    bp = cols.decimals("bid_price", allow_empty=True)
    ap = cols.decimals("ask_price", allow_empty=True)
    bs = cols.decimals("bid_amount", allow_empty=True, nonneg=True)
    asz = cols.decimals("ask_amount", allow_empty=True, nonneg=True)
    tick = _unit_or_derive(tick_size, bp + ap, "tick_size", p)
    lot = _unit_or_derive(lot_size, bs + asz, "lot_size", p)
    b = _to_units(bp, tick, cols, "bid_price")
    a = _to_units(ap, tick, cols, "ask_price")
    bsz = _to_units(bs, lot, cols, "bid_amount")
    asz_l = _to_units(asz, lot, cols, "ask_amount")
    bok = np.array([v is not None for v in bp]) & np.array([v is not None for v in bs])
    aok = np.array([v is not None for v in ap]) & np.array([v is not None for v in asz])
    rows, index = quote_events(ts, b, bsz, a, asz_l, bok, aok)
    lines = np.asarray(cols.lines, dtype=np.int64)[index]
    return TickData(rows, sym, tick, lot, p, "tardis-quotes", lines, "line", "quotes", True)


def _load_truefx(p: Path, tick_size, lot_size, symbol) -> TickData:
    cols = _Cols(p, ("timestamp", "bid", "ask"), ("symbol",))
    sym = _symbol_of(cols, p, symbol)
    ts_list = []
    for k, text in enumerate(cols.cols["timestamp"]):
        try:
            ts_list.append(parse_iso_ns(text))
        except ValueError as exc:
            raise DataError(f"{cols.at(k, 'timestamp')}: {exc}") from None
    ts = _check_ts(ts_list, cols)
    bp = cols.decimals("bid", allow_empty=True)
    ap = cols.decimals("ask", allow_empty=True)
    tick = _unit_or_derive(tick_size, bp + ap, "tick_size", p)
    lot = _unit_or_derive(lot_size, [], "lot_size", p)
    b = _to_units(bp, tick, cols, "bid")
    a = _to_units(ap, tick, cols, "ask")
    size = np.full(len(ts), UNSIZED_LOTS, dtype=np.int64)
    rows, index = quote_events(ts, b, size, a, size, np.array([v is not None for v in bp]),
                               np.array([v is not None for v in ap]))
    lines = np.asarray(cols.lines, dtype=np.int64)[index]
    return TickData(rows, sym, tick, lot, p, "truefx", lines, "line", "quotes", False)


_TRADE_SIDES = {"buy": _SIDE_BUY, "b": _SIDE_BUY, "sell": _SIDE_SELL, "s": _SIDE_SELL,
                "": REPLAY_SIDE_UNKNOWN, "unknown": REPLAY_SIDE_UNKNOWN}


def _load_trades(p: Path, tick_size, lot_size, symbol, trades_book: str) -> TickData:
    cols = _Cols(p, ("timestamp", "side", "price", "amount"), ("symbol",))
    sym = _symbol_of(cols, p, symbol)
    ts = _check_ts(cols.ints("timestamp", 1_000), cols)
    sides = np.empty(len(ts), dtype=np.uint8)
    for k, text in enumerate(cols.cols["side"]):
        s = _TRADE_SIDES.get(text.lower())
        if s is None:
            raise DataError(f"{cols.at(k, 'side')}: {text!r} is not buy, sell or empty")
        sides[k] = s
    px = cols.decimals("price")
    am = cols.decimals("amount", nonneg=True)
    tick = _unit_or_derive(tick_size, px, "tick_size", p)
    lot = _unit_or_derive(lot_size, am, "lot_size", p)
    price = _to_units(px, tick, cols, "price")
    qty = _to_units(am, lot, cols, "amount")
    zero = np.flatnonzero(qty <= 0)
    if zero.size:
        k = int(zero[0])
        raise DataError(f"{cols.at(k, 'amount')}: {am[k]} is not a positive quantity")
    bad = np.flatnonzero(price <= 0)
    if bad.size:
        k = int(bad[0])
        raise DataError(f"{cols.at(k, 'price')}: {px[k]} is not a positive price")
    n = len(ts)
    trade = _empty_events(n)
    trade["ts_ns"], trade["price"], trade["qty"], trade["side"] = ts, price, qty, sides
    trade["kind"] = REPLAY_TRADE
    tidx = np.arange(n, dtype=np.int64)
    if trades_book == "synthetic":
        buy = sides == _SIDE_BUY
        bid = np.where(buy, price - 1, price)
        ask = np.where(buy, price, price + 1)
        ok = bid > 0
        book, bidx = quote_events(ts, bid, qty, ask, qty, ok, np.ones(n, dtype=bool))
        rows = np.concatenate([trade, book])
        index = np.concatenate([tidx, bidx])
        order = np.argsort(index, kind="stable")        # per print: the trade row first
        rows, index = rows[order], index[order]
        rows["flags"] = np.where(_end_flags(index), REPLAY_FLAG_END, 0)
        book_kind = "synthetic-l1"
    else:
        rows, index = trade, tidx
        rows["flags"] = REPLAY_FLAG_END
        book_kind = "none"
    lines = np.asarray(cols.lines, dtype=np.int64)[index]
    return TickData(rows, sym, tick, lot, p, "tardis-trades", lines, "line", book_kind, True)


def _load_l2(p: Path, fmt: str, tick_size, lot_size, symbol) -> TickData:
    if fmt == "binance-l2":
        cols = _Cols(p, ("timestamp", "side", "update_type", "price", "qty"), ("symbol",))
        ts_scale, size_col, snap_col = 1_000_000, "qty", "update_type"
        sides = {"b": _SIDE_BUY, "a": _SIDE_SELL, "bid": _SIDE_BUY, "ask": _SIDE_SELL}
        snaps = {"snap": True, "snapshot": True, "set": False}
    else:
        cols = _Cols(p, ("timestamp", "is_snapshot", "side", "price", "amount"), ("symbol",))
        ts_scale, size_col, snap_col = 1_000, "amount", "is_snapshot"
        sides = {"bid": _SIDE_BUY, "ask": _SIDE_SELL, "b": _SIDE_BUY, "a": _SIDE_SELL}
        snaps = {"true": True, "false": False}
    sym = _symbol_of(cols, p, symbol)
    ts = _check_ts(cols.ints("timestamp", ts_scale), cols)
    n = len(ts)
    side = np.empty(n, dtype=np.uint8)
    snap = np.empty(n, dtype=bool)
    for k in range(n):
        s = sides.get(cols.cols["side"][k].lower())
        if s is None:
            raise DataError(f"{cols.at(k, 'side')}: {cols.cols['side'][k]!r} is not one of "
                            f"{', '.join(sides)}")
        side[k] = s
        v = snaps.get(cols.cols[snap_col][k].lower())
        if v is None:
            raise DataError(f"{cols.at(k, snap_col)}: {cols.cols[snap_col][k]!r} is not one of "
                            f"{', '.join(snaps)}")
        snap[k] = v
    px = cols.decimals("price")
    sz = cols.decimals(size_col, nonneg=True)
    tick = _unit_or_derive(tick_size, px, "tick_size", p)
    lot = _unit_or_derive(lot_size, sz, "lot_size", p)
    rows = _empty_events(n)
    rows["ts_ns"] = ts
    rows["price"] = _to_units(px, tick, cols, "price")
    rows["qty"] = _to_units(sz, lot, cols, size_col)
    rows["side"] = side
    prev_snap = np.concatenate([[False], snap[:-1]])
    rows["kind"] = np.where(snap & ~prev_snap, REPLAY_BOOK_SNAPSHOT, REPLAY_BOOK_SET)
    rows["flags"] = np.where(_end_flags(ts), REPLAY_FLAG_END, 0)
    return TickData(rows, sym, tick, lot, p, fmt, np.asarray(cols.lines, dtype=np.int64), "line",
                    "l2", True)


def _load_l3(p: Path, tick_size, lot_size, symbol, frame_ns: int) -> TickData:
    from core_ext.matching import L3_OP_ADD_RESTING, L3_OP_CANCEL, L3_OP_REPLACE_RESTING

    from engine.l3data import BITFINEX_LOT, BITFINEX_TICK, load_bitfinex_l3
    if frame_ns <= 0:
        raise DataError(f"l3_frame_ns {frame_ns}: must be > 0")
    tick = _unit_or_derive(tick_size, [], "tick_size", p) if tick_size is not None else BITFINEX_TICK
    lot = _unit_or_derive(lot_size, [], "lot_size", p) if lot_size is not None else BITFINEX_LOT
    rep = load_bitfinex_l3(p, tick, lot)
    ops = rep.ops
    n = ops.size
    if n == 0:
        raise DataError(f"{p}: no order book frames")
    kinds = {L3_OP_ADD_RESTING: REPLAY_L3_ADD, L3_OP_CANCEL: REPLAY_L3_CANCEL,
             L3_OP_REPLACE_RESTING: REPLAY_L3_REPLACE}
    lut = np.full(256, 255, dtype=np.uint8)
    for src, dst in kinds.items():
        lut[src] = dst
    rows = _empty_events(n)
    frame = rep.frame_index
    if int(frame[-1]) > _INT64_MAX // frame_ns:
        raise DataError(f"{p}: {int(frame[-1])} frames at {frame_ns} ns do not fit in int64 ns")
    rows["ts_ns"] = frame * frame_ns
    rows["price"] = ops["price"]
    rows["qty"] = ops["qty"]
    rows["order_id"] = ops["order_id"]
    rows["side"] = ops["side"]
    rows["kind"] = lut[ops["op"]]
    rows["flags"] = np.where(_end_flags(frame), REPLAY_FLAG_END, 0)
    sym = symbol or rep.symbol or "L3"
    if not _SYMBOL_RE.match(sym):
        raise DataError(f"{p}: symbol {sym!r} is not usable (letters, digits and ._:/- up to 32)")
    return TickData(rows, sym, Decimal(tick), Decimal(lot), p, "bitfinex-l3", frame.astype(np.int64),
                    "frame", "l3", True)


# --------------------------------------------------------------------------- Parquet

_PARQUET_COLUMNS = (("ts_ns", "int64"), ("kind", "uint8"), ("side", "uint8"), ("price", "int64"),
                    ("qty", "int64"), ("order_id", "uint64"), ("end", "bool"))


def write_parquet(data: TickData, path: str | PathLike, *, compression: str = "zstd") -> Path:
    """Write `data` in the engine Parquet tick format (see the module doc)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    ev = data.events
    meta = {"format": PARQUET_FORMAT, "version": PARQUET_VERSION, "symbol": data.symbol,
            "tick_size": _plain(data.tick_size), "lot_size": _plain(data.lot_size), "book": data.book,
            "has_sizes": data.has_sizes, "source_format": data.format, "source": data.source.name}
    table = pa.table({
        "ts_ns": pa.array(ev["ts_ns"], pa.int64()),
        "kind": pa.array(ev["kind"], pa.uint8()),
        "side": pa.array(ev["side"], pa.uint8()),
        "price": pa.array(ev["price"], pa.int64()),
        "qty": pa.array(ev["qty"], pa.int64()),
        "order_id": pa.array(ev["order_id"], pa.uint64()),
        "end": pa.array((ev["flags"] & REPLAY_FLAG_END) != 0, pa.bool_()),
    })
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    out = Path(path)
    try:
        pq.write_table(table, out, compression=compression)
    except OSError as exc:
        raise DataError(f"{out}: cannot write ({exc})") from None
    return out


def _rescale(values: np.ndarray, have: Decimal, want: Decimal, p: Path, col: str) -> np.ndarray:
    """values in units of `have` -> units of `want`, exactly (DataError naming the row)."""
    if have == want:
        return values
    r = Fraction(have) / Fraction(want)
    v = values.astype(object) * r.numerator
    bad = [k for k, x in enumerate(v) if x % r.denominator]
    if bad:
        k = bad[0]
        raise DataError(f"{p}: row {k} {col}: {values[k]} x {_plain(have)} is not a whole multiple of "
                        f"{_plain(want)}")
    out = np.array([x // r.denominator for x in v], dtype=object)
    if out.size and (max(out) > _INT64_MAX or min(out) < -_INT64_MAX):
        raise DataError(f"{p}: {col} rescaled from {_plain(have)} to {_plain(want)} leaves int64")
    return out.astype(np.int64)


def _read_parquet(p: Path, tick_size, lot_size) -> TickData:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from None
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise DataError(f"{p}: not an engine tick file (no '{_META_KEY.decode()}' schema metadata); "
                        f"convert other data with `engine convert`")
    try:
        meta = json.loads(raw)
        if meta.get("format") != PARQUET_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        if meta.get("version") != PARQUET_VERSION:
            raise ValueError(f"version {meta.get('version')!r} (this engine reads {PARQUET_VERSION})")
        file_tick = Decimal(meta["tick_size"])
        file_lot = Decimal(meta["lot_size"])
        symbol = str(meta["symbol"])
        if not (file_tick > 0 and file_lot > 0):
            raise ValueError("tick_size and lot_size must be > 0")
    except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
        raise DataError(f"{p}: bad '{_META_KEY.decode()}' metadata: {exc}") from None
    names = set(table.column_names)
    missing = [c for c, _ in _PARQUET_COLUMNS if c not in names]
    if missing:
        raise DataError(f"{p}: column(s) {', '.join(missing)} missing")
    n = table.num_rows
    ev = _empty_events(n)
    for col, typ in _PARQUET_COLUMNS:
        c = table.column(col)
        if c.null_count:
            idx = int(np.flatnonzero(c.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{p}: row {idx} {col}: null")
        if str(c.type) != typ:
            raise DataError(f"{p}: column {col} is {c.type}, expected {typ}")
        values = c.to_numpy()
        if col == "end":
            ev["flags"] = np.where(values, REPLAY_FLAG_END, 0)
        else:
            ev[col] = values
    tick = Decimal(str(tick_size)) if tick_size is not None else file_tick
    lot = Decimal(str(lot_size)) if lot_size is not None else file_lot
    ev["price"] = _rescale(ev["price"], file_tick, tick, p, "price")
    ev["qty"] = _rescale(ev["qty"], file_lot, lot, p, "qty")
    lines = np.arange(n, dtype=np.int64)
    return TickData(ev, symbol, tick, lot, p, "engine-parquet", lines, "row",
                    str(meta.get("book", "quotes")), bool(meta.get("has_sizes", True)))


def trades_only(data: TickData) -> TickData:
    """The trade prints of `data` alone (its synthetic book rows dropped): for a
    trades file replayed together with a file that carries the real book."""
    keep = data.events["kind"] == REPLAY_TRADE
    ev = data.events[keep].copy()
    ev["flags"] = REPLAY_FLAG_END
    return replace(data, events=ev, lines=data.lines[keep], book="none")


def with_symbol(data: TickData, symbol: str) -> TickData:
    """The same data under another symbol name."""
    return replace(data, symbol=symbol)
