"""Resting liquidity from a quotes file: `engine venue --data FILE`.

Reads a top-of-book quotes CSV in the Tardis export format of ../shared/data/quotes.csv
(`exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount`)
and turns each quote into L3 operations of the anonymous owner: the previous quote's
two resting orders are canceled and the new bid and ask are added. When the file ends it
starts again from the top (a venue runs until stopped). Prices become ticks of the
file's tick size and amounts lots of its lot size, both derived exactly (decimal gcd)
unless given, so nothing is rounded.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from core_ext import matching as mb
from gateway.errors import GatewayError

QUOTE_COLUMNS = ("symbol", "timestamp", "ask_amount", "ask_price", "bid_price", "bid_amount")
FIRST_ORDER_ID = 1 << 50          # far from the ids the exchange hands out to participants


class ReplayFileError(GatewayError, ValueError):
    """The market-data file cannot be replayed; the message names file, line and column."""


def _gcd(values: list[Decimal]) -> Decimal:
    exp = min(v.as_tuple().exponent for v in values)
    scale = Decimal(1).scaleb(exp)
    g = 0
    for v in values:
        g = np.gcd(g, int(v / scale))
    return Decimal(int(g)) * scale if g else scale


@dataclass
class QuoteFile:
    symbol: str
    tick_size: Decimal
    lot_size: Decimal
    bids: np.ndarray      # (n, 2) int64: price ticks, size lots
    asks: np.ndarray


def load_quotes(path: str | Path, tick_size: Decimal | None = None, lot_size: Decimal | None = None) -> QuoteFile:
    p = Path(path)
    if not p.is_file():
        raise ReplayFileError(f"{p}: no such file")
    rows: list[tuple[Decimal, Decimal, Decimal, Decimal]] = []
    symbol = None
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in QUOTE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ReplayFileError(f"{p}: not a quotes file: missing column(s) {', '.join(missing)}")
        for line, rec in enumerate(reader, start=2):
            try:
                vals = tuple(Decimal(rec[c]) for c in ("bid_price", "bid_amount", "ask_price", "ask_amount"))
            except (InvalidOperation, TypeError):
                raise ReplayFileError(f"{p}: line {line}: a price or amount is not a decimal number") from None
            if not all(v.is_finite() and v > 0 for v in vals):
                raise ReplayFileError(f"{p}: line {line}: prices and amounts must be positive numbers")
            symbol = symbol or rec["symbol"]
            rows.append(vals)  # type: ignore[arg-type]
    if not rows:
        raise ReplayFileError(f"{p}: no quotes")
    tick = tick_size or _gcd([r[0] for r in rows] + [r[2] for r in rows])
    lot = lot_size or _gcd([r[1] for r in rows] + [r[3] for r in rows])
    try:
        bids = np.array([(int(r[0] / tick), int(r[1] / lot)) for r in rows], dtype=np.int64)
        asks = np.array([(int(r[2] / tick), int(r[3] / lot)) for r in rows], dtype=np.int64)
    except (InvalidOperation, OverflowError):
        raise ReplayFileError(f"{p}: prices/amounts do not fit tick {tick} / lot {lot}") from None
    return QuoteFile(str(symbol), tick, lot, bids, asks)


class QuoteReplaySource:
    """MarketSource (gateway.exchange) over a quotes file, looping."""

    def __init__(self, quotes: QuoteFile) -> None:
        self.quotes = quotes
        self._i = 0
        self._next_id = FIRST_ORDER_ID
        self._live: tuple[int, int] | None = None
        self.events_out = 0
        self.loops = 0

    def next_ops(self, n: int) -> np.ndarray:
        """Up to `n` operations: each quote is up to four (two cancels, two adds)."""
        out = np.zeros(max(n, 0), dtype=mb.L3_OP_DTYPE)
        k = 0
        q = self.quotes
        while k + 4 <= n:
            i = self._i
            (bp, bs), (ap, az) = q.bids[i], q.asks[i]
            if self._live is not None:
                for oid in self._live:
                    out[k]["op"], out[k]["order_id"] = mb.L3_OP_CANCEL, oid
                    k += 1
            bid_id, ask_id = self._next_id, self._next_id + 1
            self._next_id += 2
            for oid, side, price, qty in ((bid_id, mb.SIDE_BUY, bp, bs), (ask_id, mb.SIDE_SELL, ap, az)):
                row = out[k]
                row["op"], row["order_id"], row["side"] = mb.L3_OP_ADD_RESTING, oid, side
                row["price"], row["qty"], row["tif"] = price, qty, mb.TIF_GTC
                k += 1
            self._live = (bid_id, ask_id)
            self._i += 1
            if self._i == len(q.bids):
                self._i = 0
                self.loops += 1
        self.events_out += k
        return out[:k]


# Event kinds of `BookEventSource` (the values of core_ext.replay's REPLAY_* kinds, so the
# engine's tick-data loader can hand its arrays over unchanged).
EV_BOOK_SET, EV_BOOK_SNAPSHOT, EV_TRADE, EV_L3_ADD, EV_L3_CANCEL, EV_L3_REPLACE = 0, 1, 2, 3, 4, 5


class BookEventSource:
    """MarketSource over book events of any recorded format, looping.

    `events` is a structured array with fields kind, side, price (ticks), qty (lots) and
    order_id (for L3 rows), as `engine.tickdata` produces for quotes, L2 deltas, L3
    order-by-order data, trades (with a synthetic book) and the engine's Parquet format.
    An aggregated level (L2/quotes) becomes one resting order per (side, price) that is
    replaced when the level's size changes; L3 rows map to their own orders; trade
    prints are skipped (the venue's trades come from matching). Everything rests without
    matching, as the recording says it did; a new loop starts from an empty book."""

    def __init__(self, events: np.ndarray) -> None:
        book = events[events["kind"] != EV_TRADE]
        if not len(book):
            raise ReplayFileError("the data has no book events to replay")
        self.events = book
        self._i = 0
        self._next_id = FIRST_ORDER_ID
        self._levels: dict[tuple[int, int], int] = {}    # (side, price) -> our order id
        self._l3: dict[int, int] = {}                    # recorded order id -> our order id
        self.events_out = 0
        self.loops = 0

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _clear(self, out: list) -> None:
        for oid in list(self._levels.values()) + list(self._l3.values()):
            out.append((mb.L3_OP_CANCEL, oid, 0, 0, 0))
        self._levels.clear()
        self._l3.clear()

    def next_ops(self, n: int) -> np.ndarray:
        rows: list[tuple[int, int, int, int, int]] = []     # op, order id, side, price, qty
        ev = self.events
        while len(rows) < n:
            e = ev[self._i]
            kind, side, price, qty = int(e["kind"]), int(e["side"]), int(e["price"]), int(e["qty"])
            if kind == EV_BOOK_SNAPSHOT:
                self._clear(rows)
            if kind in (EV_BOOK_SET, EV_BOOK_SNAPSHOT) and side in (0, 1):
                old = self._levels.pop((side, price), None)
                if old is not None:
                    rows.append((mb.L3_OP_CANCEL, old, 0, 0, 0))
                if qty > 0:
                    oid = self._levels[(side, price)] = self._new_id()
                    rows.append((mb.L3_OP_ADD_RESTING, oid, side, price, qty))
            elif kind == EV_L3_ADD and side in (0, 1) and qty > 0:
                oid = self._l3[int(e["order_id"])] = self._new_id()
                rows.append((mb.L3_OP_ADD_RESTING, oid, side, price, qty))
            elif kind == EV_L3_CANCEL:
                oid = self._l3.pop(int(e["order_id"]), None)
                if oid is not None:
                    rows.append((mb.L3_OP_CANCEL, oid, 0, 0, 0))
            elif kind == EV_L3_REPLACE and qty > 0:
                oid = self._l3.get(int(e["order_id"]))
                if oid is not None:
                    rows.append((mb.L3_OP_REPLACE_RESTING, oid, side, price, qty))
            self._i += 1
            if self._i == len(ev):
                self._i = 0
                self.loops += 1
                self._clear(rows)
        out = np.zeros(len(rows), dtype=mb.L3_OP_DTYPE)
        for k, (op, oid, side, price, qty) in enumerate(rows):
            row = out[k]
            row["op"], row["order_id"], row["side"], row["price"], row["qty"] = op, oid, side, price, qty
            row["tif"] = mb.TIF_GTC
        self.events_out += len(out)
        return out
