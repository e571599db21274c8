"""Order-by-order (L3) book feeds to batches of `core_ext.matching.L3_OP_DTYPE` rows.

Understood: the Bitfinex websocket v2 raw book channel (``prec: "R0"``), as a JSON
array of the raw frames (what /work/shared/data/L3_feed.json holds):

* ``{"event": ...}`` objects (info, subscribed): skipped; a ``subscribed`` event
  for the ``book`` channel fixes the channel id, and its ``symbol`` is the symbol;
* ``[chanId, "hb"]`` heartbeats and ``[chanId, "cs", checksum]``: skipped;
* ``[chanId, [[order_id, price, amount], ...]]``: a snapshot. Any order still live
  from an earlier snapshot is canceled first, then each entry is added;
* ``[chanId, [order_id, price, amount]]``: an update. ``amount > 0`` is a bid,
  ``< 0`` an ask; ``price == 0`` deletes the order; an update for a live id
  changes its price and/or amount, i.e. a replace (same id; it keeps its queue
  place only if the price is unchanged and the size did not grow). An update that
  moves a live order to the other side becomes a cancel and an add.

Units: prices become int64 ticks and amounts int64 lots with exact decimal
arithmetic (the JSON numbers are parsed as `Decimal`, never as floats). The
defaults, tick = 1e-8 USD and lot = 1e-8 BTC, make every value in the Bitfinex
feed an integer: Bitfinex prints at most 8 decimals for both (the shared file has
prices with up to 8 decimals, e.g. 60940.35136398, and amounts with up to 8). A
value that is not a whole number of ticks/lots is a `DataError` naming the frame.
The largest value, 61,449 USD, is 6.1e12 ticks: far from the int64 limit.

A book feed is not an order flow: it can be crossed for an instant (a bid at or
above the best ask arrives before the ask it would have hit is deleted; the shared
file has such moments). So every row is a no-match row: `L3_OP_ADD_RESTING`,
`L3_OP_REPLACE_RESTING`, `L3_OP_CANCEL`. The book then holds exactly what the feed
says after every frame, crossed or not, and its best bid/ask is the feed's.
All rows have owner `OWNER_ANONYMOUS` (0) and TIF GTC.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from os import PathLike
from pathlib import Path

import numpy as np
from core_ext.matching import (
    L3_OP_ADD_RESTING,
    L3_OP_CANCEL,
    L3_OP_DTYPE,
    L3_OP_REPLACE_RESTING,
    OWNER_ANONYMOUS,
    SIDE_BUY,
    SIDE_SELL,
    TIF_GTC,
)

from engine.errors import DataError

__all__ = ["BITFINEX_TICK", "BITFINEX_LOT", "L3Replay", "load_bitfinex_l3",
           "bitfinex_frames_to_ops"]

#: Default tick size (USD) and lot size (BTC) for Bitfinex tBTCUSD: 8 decimals each.
BITFINEX_TICK = Decimal("0.00000001")
BITFINEX_LOT = Decimal("0.00000001")

_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class L3Replay:
    """A converted feed: the op rows plus what is needed to read them back."""
    ops: np.ndarray        # L3_OP_DTYPE rows, in feed order
    symbol: str            # from the subscribed event ("" when absent)
    tick_size: Decimal     # price units per tick
    lot_size: Decimal      # amount units per lot
    book_frames: int       # snapshot + update frames converted
    skipped_frames: int    # events, heartbeats, checksums
    frame_index: np.ndarray  # int64, per row: index of the frame it came from


def _units(value, unit: Decimal, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise DataError(f"{where}: {what} {value!r} is not a number")
    units = Decimal(value) / unit
    whole = units.to_integral_value()
    if units != whole:
        raise DataError(f"{where}: {what} {value} is not a whole multiple of {unit}")
    result = int(whole)
    if abs(result) > _INT64_MAX:
        raise DataError(f"{where}: {what} {value} / {unit} does not fit in int64")
    return result


def _order_id(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**64:
        raise DataError(f"{where}: order id {value!r} is not an integer in 1..2**64-1")
    return value


def bitfinex_frames_to_ops(frames: list, tick_size: Decimal = BITFINEX_TICK,
                           lot_size: Decimal = BITFINEX_LOT, source: str = "frames") -> L3Replay:
    """Convert decoded frames (numbers as int/Decimal) to an `L3Replay`."""
    tick_size = Decimal(tick_size)
    lot_size = Decimal(lot_size)
    if tick_size <= 0 or lot_size <= 0:
        raise DataError(f"tick_size and lot_size must be > 0, got {tick_size}, {lot_size}")
    if not isinstance(frames, list):
        raise DataError(f"{source}: expected a JSON array of frames, got {type(frames).__name__}")
    rows: list[tuple] = []      # L3_OP_DTYPE field order
    origin: list[int] = []
    live: dict[int, int] = {}   # order id -> side, to tell adds from replaces
    chan_id = None
    symbol = ""
    book_frames = skipped = 0

    def add(idx: int, oid: int, price: int, qty: int, side: int) -> None:
        rows.append((oid, 0, OWNER_ANONYMOUS, price, qty, L3_OP_ADD_RESTING, side, 0, TIF_GTC))
        origin.append(idx)
        live[oid] = side

    def cancel(idx: int, oid: int) -> None:
        rows.append((oid, 0, OWNER_ANONYMOUS, 0, 0, L3_OP_CANCEL, 0, 0, TIF_GTC))
        origin.append(idx)
        live.pop(oid, None)

    def entry(idx: int, item, where: str) -> None:
        if not isinstance(item, list) or len(item) != 3:
            raise DataError(f"{where}: expected [order_id, price, amount], got {item!r}")
        oid = _order_id(item[0], where)
        if item[1] == 0:                    # price 0: delete (amount is +-1, its side)
            cancel(idx, oid)
            return
        price = _units(item[1], tick_size, where, "price")
        amount = _units(item[2], lot_size, where, "amount")
        if amount == 0:
            raise DataError(f"{where}: amount 0 with a non-zero price (deletes use price 0)")
        side = SIDE_BUY if amount > 0 else SIDE_SELL
        qty = abs(amount)
        old_side = live.get(oid)
        if old_side is None:
            add(idx, oid, price, qty, side)
        elif old_side == side:
            rows.append((oid, 0, OWNER_ANONYMOUS, price, qty, L3_OP_REPLACE_RESTING, side, 0,
                         TIF_GTC))
            origin.append(idx)
        else:
            cancel(idx, oid)
            add(idx, oid, price, qty, side)

    for idx, frame in enumerate(frames):
        where = f"{source} frame {idx}"
        if isinstance(frame, dict):
            if frame.get("event") == "subscribed" and frame.get("channel") == "book":
                chan_id = frame.get("chanId")
                symbol = str(frame.get("symbol", ""))
            skipped += 1
            continue
        if not isinstance(frame, list) or len(frame) < 2:
            raise DataError(f"{where}: expected [chanId, payload], got {str(frame)[:80]}")
        if chan_id is not None and frame[0] != chan_id:
            skipped += 1                    # another channel's frame
            continue
        payload = frame[1]
        if isinstance(payload, str):        # "hb", "cs"
            skipped += 1
            continue
        if not isinstance(payload, list):
            raise DataError(f"{where}: unexpected payload {str(payload)[:80]}")
        book_frames += 1
        if payload and isinstance(payload[0], list):    # snapshot
            for oid in list(live):
                cancel(idx, oid)
            for k, item in enumerate(payload):
                entry(idx, item, f"{where} entry {k}")
        else:
            entry(idx, payload, where)

    out = np.array(rows, dtype=L3_OP_DTYPE) if rows else np.zeros(0, dtype=L3_OP_DTYPE)
    return L3Replay(ops=out, symbol=symbol, tick_size=tick_size, lot_size=lot_size,
                    book_frames=book_frames, skipped_frames=skipped,
                    frame_index=np.asarray(origin, dtype=np.int64))


def load_bitfinex_l3(path: str | PathLike, tick_size: Decimal = BITFINEX_TICK,
                     lot_size: Decimal = BITFINEX_LOT) -> L3Replay:
    """Read a JSON array of Bitfinex raw-book frames and convert it (see the module doc)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        frames = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    return bitfinex_frames_to_ops(frames, tick_size, lot_size, source=str(path))
