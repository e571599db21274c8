"""Portfolio: positions, average price, P&L, commissions, exposure, the equity curve,
and reconciliation against a venue/broker statement.

Units. Positions are signed int lots; prices int ticks. P&L is kept exactly in
tick-lots (`fractions.Fraction`: the average-cost method divides) and converted to
money at the edge with the instrument's ``money_per_tick_lot`` (tick_size * lot_size *
contract_multiplier); money values are floats. One currency is assumed.

Average cost: buying into a long (or selling into a short) adds to the position at
the fill price; a fill against the position realises ``closed_lots * (price -
average)`` (sign of the position) and leaves the average unchanged; a fill that
flips the position realises the whole old position and opens the rest at the fill
price. Realised + unrealised P&L always equals cash flow + position * mark.

Marks ("mark to mid, configurable"): ``mid`` (default; (bid + ask) / 2), ``last``
(last trade), ``bid_ask`` (longs at the bid, shorts at the ask: the liquidation
value). A position with no mark yet is marked at its average price (unrealised 0)
and counted in ``unmarked``.

Reconciliation statement format (CSV, UTF-8, header row required; decimals as in the
instrument's units; extra columns are ignored):

* positions file: ``account,symbol,position`` - signed quantity, one line per
  account and symbol; a symbol missing from the file means a position of 0;
* fills file (optional): ``account,symbol,exec_id,cl_ord_id,side,qty,price`` - every
  execution of the period (the engine's session), ``side`` buy/sell, ``cl_ord_id``
  in the wire form (`engine.orders.format_cl_ord_id`), ``qty`` > 0;
* open orders file (optional): ``account,symbol,cl_ord_id,side,leaves_qty,price`` -
  the venue's working orders (``price`` empty for a market order).

`reconcile` compares line by line and returns `Mismatch`es; `apply_reconciliation`
blocks trading in the order manager while there are any (fail closed) and lifts
that block when a later reconciliation is clean.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from os import PathLike
from pathlib import Path

import numpy as np

from engine.errors import DataError
from engine.fill_model import CommissionModel
from engine.instruments import Instrument
from engine.orders import (
    UNKNOWN_FILL_BLOCK,
    Fill,
    OrderManager,
    Side,
    format_cl_ord_id,
    parse_cl_ord_id,
)

__all__ = ["MARK_MODES", "Position", "PnlSnapshot", "Portfolio", "StatementFill", "StatementOrder",
           "Statement", "Mismatch", "load_statement", "reconcile", "apply_reconciliation",
           "RECONCILIATION_BLOCK"]

MARK_MODES = ("mid", "last", "bid_ask")
RECONCILIATION_BLOCK = "reconciliation"


@dataclass(slots=True)
class Position:
    """One instrument's position. cost is the signed cost basis of the open position in
    tick-lots (qty * average price)."""
    symbol: str
    inst_id: int
    money_per_tick_lot: float
    qty: int = 0
    cost: Fraction = Fraction(0)
    realized: Fraction = Fraction(0)     # tick-lots
    commissions: float = 0.0             # money
    bought: int = 0                      # lots
    sold: int = 0                        # lots
    cash: int = 0                        # tick-lots: -sum(buy qty * px) + sum(sell qty * px)
    fills: int = 0
    bid: int | None = None
    ask: int | None = None
    last: int | None = None

    @property
    def avg_price(self) -> Fraction | None:
        return self.cost / self.qty if self.qty else None

    def apply(self, signed_qty: int, price: int) -> Fraction:
        """Book a fill; returns the P&L it realised (tick-lots)."""
        realized = Fraction(0)
        q = self.qty
        self.cash -= signed_qty * price
        if signed_qty > 0:
            self.bought += signed_qty
        else:
            self.sold -= signed_qty
        self.fills += 1
        if q == 0 or (q > 0) == (signed_qty > 0):
            self.qty = q + signed_qty
            self.cost += signed_qty * price
            return realized
        avg = self.cost / q
        closing = min(abs(signed_qty), abs(q))
        direction = 1 if q > 0 else -1
        realized = closing * (price - avg) * direction
        self.realized += realized
        rest = abs(signed_qty) - closing
        self.qty = q + (closing if signed_qty > 0 else -closing)
        self.cost = avg * self.qty
        if rest:
            opened = rest if signed_qty > 0 else -rest
            self.qty += opened
            self.cost = Fraction(opened * price)
        return realized

    def mark(self, mode: str) -> Fraction | None:
        if mode == "last":
            return Fraction(self.last) if self.last is not None else _mid(self.bid, self.ask)
        if mode == "bid_ask" and self.qty:
            side_px = self.bid if self.qty > 0 else self.ask
            if side_px is not None:
                return Fraction(side_px)
            return _mid(self.bid, self.ask) if self.last is None else Fraction(self.last)
        m = _mid(self.bid, self.ask)
        return m if m is not None else (Fraction(self.last) if self.last is not None else None)

    def unrealized(self, mode: str) -> Fraction:
        if not self.qty:
            return Fraction(0)
        m = self.mark(mode)
        if m is None:
            return Fraction(0)
        return self.qty * m - self.cost


def _mid(bid: int | None, ask: int | None) -> Fraction | None:
    if bid is not None and ask is not None:
        return Fraction(bid + ask, 2)
    return None


@dataclass(frozen=True, slots=True)
class PnlSnapshot:
    """Money figures at one moment (floats)."""
    realized: float
    unrealized: float
    commissions: float
    total: float              # realized + unrealized - commissions
    equity: float             # initial capital + total
    gross_exposure: float
    net_exposure: float
    unmarked: tuple[str, ...]  # symbols with a position but no mark


class Portfolio:
    """Positions and P&L of one account. Feed it fills (`on_fill`, an OrderManager
    fill listener) and marks (`on_quote`, `on_trade`); call `sample` on a timer."""

    def __init__(self, instruments: Mapping[str, Instrument], *, mark: str = "mid",
                 commission_model: CommissionModel | None = None,
                 initial_capital: float | Decimal = 0.0) -> None:
        if mark not in MARK_MODES:
            raise ValueError(f"mark must be one of {', '.join(MARK_MODES)}, got {mark!r}")
        self.instruments = dict(instruments)
        self.mark_mode = mark
        self.commission_model = commission_model
        self.initial_capital = float(initial_capital)
        self._pos: dict[str, Position] = {
            s: Position(s, i.inst_id, float(i.money_per_tick_lot)) for s, i in self.instruments.items()}
        self.fills: list[Fill] = []
        self._curve_ts: list[int] = []
        self._curve_eq: list[float] = []

    # ------------------------------------------------------------------ inputs
    def on_fill(self, fill: Fill) -> None:
        pos = self._position(fill.symbol)
        signed = fill.qty if fill.side == Side.BUY else -fill.qty
        pos.apply(signed, fill.price)
        fee = fill.commission
        if fee is None and self.commission_model is not None:
            inst = self.instruments[fill.symbol]
            fee = self.commission_model.commission(float(inst.notional(fill.qty, fill.price)), fill.qty,
                                                   fill.liquidity)
        pos.commissions += fee or 0.0
        self.fills.append(fill)

    def on_quote(self, symbol: str, bid: int | None, ask: int | None) -> int:
        """Mark `symbol` at bid/ask; returns its position (lots), which the risk policy
        reads next on every top-of-book change."""
        pos = self._pos.get(symbol) or self._position(symbol)
        pos.bid, pos.ask = bid, ask
        return pos.qty

    def on_trade(self, symbol: str, price: int) -> None:
        self._position(symbol).last = price

    def set_position(self, symbol: str, qty: int, avg_price: int | Fraction | None = None) -> None:
        """Start-of-day (or reconciled) position: `qty` lots at `avg_price` ticks."""
        pos = self._position(symbol)
        pos.qty = qty
        if qty and avg_price is None:
            raise ValueError("set_position: a non-zero position needs an average price")
        pos.cost = Fraction(avg_price) * qty if qty else Fraction(0)

    # ------------------------------------------------------------------ reading
    def position(self, symbol: str) -> int:
        return self._position(symbol).qty

    def positions(self) -> dict[str, int]:
        """Non-zero positions, symbol -> signed lots."""
        return {s: p.qty for s, p in self._pos.items() if p.qty}

    def position_record(self, symbol: str) -> Position:
        return self._position(symbol)

    def avg_price(self, symbol: str) -> float | None:
        a = self._position(symbol).avg_price
        return float(a) if a is not None else None

    def mark_price(self, symbol: str) -> float | None:
        m = self._position(symbol).mark(self.mark_mode)
        return float(m) if m is not None else None

    def realized_pnl(self, symbol: str | None = None) -> float:
        return sum(float(p.realized) * p.money_per_tick_lot for p in self._select(symbol))

    def unrealized_pnl(self, symbol: str | None = None) -> float:
        return sum(float(p.unrealized(self.mark_mode)) * p.money_per_tick_lot
                   for p in self._select(symbol))

    def commissions(self, symbol: str | None = None) -> float:
        return sum(p.commissions for p in self._select(symbol))

    def total_pnl(self, symbol: str | None = None) -> float:
        return self.realized_pnl(symbol) + self.unrealized_pnl(symbol) - self.commissions(symbol)

    def equity(self) -> float:
        return self.initial_capital + self.total_pnl()

    def exposure(self, symbol: str) -> float:
        """|position| * mark * money per tick-lot (money); 0 without a mark."""
        p = self._position(symbol)
        m = p.mark(self.mark_mode)
        if not p.qty or m is None:
            return 0.0
        return abs(p.qty) * float(m) * p.money_per_tick_lot

    def signed_exposure(self, symbol: str) -> float:
        p = self._position(symbol)
        return self.exposure(symbol) * (1 if p.qty > 0 else -1)

    def gross_exposure(self) -> float:
        return sum(self.exposure(s) for s in self._pos)

    def net_exposure(self) -> float:
        return sum(self.signed_exposure(s) for s in self._pos if self._pos[s].qty)

    def unmarked(self) -> tuple[str, ...]:
        return tuple(s for s, p in self._pos.items() if p.qty and p.mark(self.mark_mode) is None)

    def snapshot(self) -> PnlSnapshot:
        r, u, c = self.realized_pnl(), self.unrealized_pnl(), self.commissions()
        return PnlSnapshot(r, u, c, r + u - c, self.initial_capital + r + u - c,
                           self.gross_exposure(), self.net_exposure(), self.unmarked())

    # ------------------------------------------------------------------ equity curve
    def sample(self, ts_ns: int) -> float:
        """Append (ts_ns, equity) to the equity curve (call on a timer); returns equity."""
        eq = self.equity()
        self._curve_ts.append(ts_ns)
        self._curve_eq.append(eq)
        return eq

    def equity_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps int64 ns, equity float64) of the samples so far."""
        return (np.asarray(self._curve_ts, dtype=np.int64), np.asarray(self._curve_eq, dtype=np.float64))

    # ------------------------------------------------------------------ internals
    def _position(self, symbol: str) -> Position:
        pos = self._pos.get(symbol)
        if pos is None:
            raise KeyError(f"unknown symbol {symbol!r}")
        return pos

    def _select(self, symbol: str | None) -> Iterable[Position]:
        return self._pos.values() if symbol is None else (self._position(symbol),)


# =========================================================================== reconciliation

@dataclass(frozen=True, slots=True)
class StatementFill:
    account: str
    symbol: str
    exec_id: str
    cl_ord_id: int
    side: Side
    qty: int      # lots
    price: int    # ticks
    line: int


@dataclass(frozen=True, slots=True)
class StatementOrder:
    account: str
    symbol: str
    cl_ord_id: int
    side: Side
    leaves_qty: int
    price: int | None
    line: int


@dataclass(frozen=True, slots=True)
class Statement:
    positions: dict[tuple[str, str], int]              # (account, symbol) -> lots
    fills: tuple[StatementFill, ...] | None = None      # None: no fills file given
    open_orders: tuple[StatementOrder, ...] | None = None
    position_lines: dict[tuple[str, str], int] = field(default_factory=dict)  # -> line number


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One difference between the engine and the statement.

    kind: position | fill_missing_here | fill_missing_at_venue | fill_differs |
    order_missing_here | order_missing_at_venue | order_differs."""
    kind: str
    account: str
    symbol: str
    key: str          # exec id / client order id (wire form) / "" for positions
    ours: str
    theirs: str
    where: str = ""   # file:line of the statement line, when there is one

    def __str__(self) -> str:
        at = f" ({self.where})" if self.where else ""
        key = f" {self.key}" if self.key else ""
        return f"{self.kind} {self.account} {self.symbol}{key}: ours {self.ours}, venue {self.theirs}{at}"


def _read_csv(path: Path, required: tuple[str, ...]):
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: header lacks column(s) {', '.join(missing)} "
                            f"(has {', '.join(header) or 'nothing'})")
        reader.fieldnames = header
        for row in reader:
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}


def _inst(instruments: Mapping[str, Instrument], symbol: str, at: str) -> Instrument:
    inst = instruments.get(symbol)
    if inst is None:
        raise DataError(f"{at} symbol: unknown symbol {symbol!r} (known: {', '.join(sorted(instruments))})")
    return inst


def _conv(fn, text: str, at: str):
    try:
        return fn(text)
    except ValueError as exc:
        raise DataError(f"{at}: {exc}") from None


def _side(text: str, at: str) -> Side:
    try:
        return Side.parse(text)
    except ValueError:
        raise DataError(f"{at} side: {text!r} is not buy or sell") from None


def load_statement(positions_csv: str | PathLike, instruments: Mapping[str, Instrument], *,
                   fills_csv: str | PathLike | None = None,
                   open_orders_csv: str | PathLike | None = None) -> Statement:
    """Read a statement (format in the module docstring). DataError names the file,
    the line and the column of anything malformed."""
    path = Path(positions_csv)
    positions: dict[tuple[str, str], int] = {}
    lines: dict[tuple[str, str], int] = {}
    for line, row in _read_csv(path, ("account", "symbol", "position")):
        at = f"{path.name}:{line}"
        inst = _inst(instruments, row["symbol"], at)
        key = (row["account"], row["symbol"])
        if key in positions:
            raise DataError(f"{at}: second line for account {key[0]} symbol {key[1]} "
                            f"(first at line {lines[key]})")
        positions[key] = _conv(inst.qty_to_lots, row["position"], f"{at} position")
        lines[key] = line
    fills = None
    if fills_csv is not None:
        fpath = Path(fills_csv)
        out = []
        for line, row in _read_csv(fpath, ("account", "symbol", "exec_id", "cl_ord_id", "side", "qty",
                                           "price")):
            at = f"{fpath.name}:{line}"
            inst = _inst(instruments, row["symbol"], at)
            qty = _conv(inst.qty_to_lots, row["qty"], f"{at} qty")
            if qty <= 0:
                raise DataError(f"{at} qty: must be > 0, got {row['qty']}")
            if not row["exec_id"]:
                raise DataError(f"{at} exec_id: empty")
            out.append(StatementFill(row["account"], row["symbol"], row["exec_id"],
                                     _conv(parse_cl_ord_id, row["cl_ord_id"], f"{at} cl_ord_id"),
                                     _side(row["side"], at), qty,
                                     _conv(inst.price_to_ticks, row["price"], f"{at} price"), line))
        fills = tuple(out)
    orders = None
    if open_orders_csv is not None:
        opath = Path(open_orders_csv)
        out_o = []
        for line, row in _read_csv(opath, ("account", "symbol", "cl_ord_id", "side", "leaves_qty",
                                           "price")):
            at = f"{opath.name}:{line}"
            inst = _inst(instruments, row["symbol"], at)
            price = None if row["price"] == "" else _conv(inst.price_to_ticks, row["price"], f"{at} price")
            out_o.append(StatementOrder(row["account"], row["symbol"],
                                        _conv(parse_cl_ord_id, row["cl_ord_id"], f"{at} cl_ord_id"),
                                        _side(row["side"], at),
                                        _conv(inst.qty_to_lots, row["leaves_qty"], f"{at} leaves_qty"),
                                        price, line))
        orders = tuple(out_o)
    return Statement(positions, fills, orders, lines)


def reconcile(statement: Statement, portfolio: Portfolio, account: str,
              order_manager: OrderManager | None = None, *,
              source: str = "statement") -> list[Mismatch]:
    """Compare the engine's positions (and fills, and open orders when the statement
    has them and an order manager is given) for `account` with the statement."""
    out: list[Mismatch] = []
    inst = portfolio.instruments
    ours = portfolio.positions()
    theirs = {sym: q for (acct, sym), q in statement.positions.items() if acct == account}
    for sym in sorted(set(ours) | set(theirs)):
        a, b = ours.get(sym, 0), theirs.get(sym, 0)
        if a != b:
            line = statement.position_lines.get((account, sym))
            out.append(Mismatch("position", account, sym, "", str(inst[sym].lots_to_qty(a)),
                                str(inst[sym].lots_to_qty(b)), f"{source}:{line}" if line else ""))
    if statement.fills is not None:
        out.extend(_reconcile_fills(statement, portfolio, account, source))
    if statement.open_orders is not None and order_manager is not None:
        out.extend(_reconcile_orders(statement, order_manager, account, source))
    return out


def _reconcile_fills(statement: Statement, portfolio: Portfolio, account: str,
                     source: str) -> list[Mismatch]:
    out = []
    inst = portfolio.instruments
    theirs = [f for f in statement.fills or () if f.account == account]
    ours_by_id = {f.exec_id: f for f in portfolio.fills if f.exec_id}
    unmatched_ours = {id(f): f for f in portfolio.fills}
    unmatched_theirs = []
    for t in theirs:
        o = ours_by_id.get(t.exec_id)
        if o is None:
            unmatched_theirs.append(t)
            continue
        unmatched_ours.pop(id(o), None)
        if (o.symbol, o.side, o.qty, o.price, o.cl_ord_id) != (t.symbol, t.side, t.qty, t.price, t.cl_ord_id):
            i = inst[t.symbol]
            out.append(Mismatch("fill_differs", account, t.symbol, t.exec_id,
                                _fill_text(i, o.side, o.qty, o.price, o.cl_ord_id),
                                _fill_text(i, t.side, t.qty, t.price, t.cl_ord_id), f"{source}:{t.line}"))
    # second pass: same order, side, qty and price but another exec id (e.g. a fill we
    # inferred from an order-status answer)
    for t in unmatched_theirs:
        match = next((o for o in unmatched_ours.values()
                      if (o.symbol, o.side, o.qty, o.price, o.cl_ord_id)
                      == (t.symbol, t.side, t.qty, t.price, t.cl_ord_id)), None)
        if match is not None:
            unmatched_ours.pop(id(match))
            continue
        i = inst[t.symbol]
        out.append(Mismatch("fill_missing_here", account, t.symbol, t.exec_id, "none",
                            _fill_text(i, t.side, t.qty, t.price, t.cl_ord_id), f"{source}:{t.line}"))
    for o in unmatched_ours.values():
        i = inst[o.symbol]
        out.append(Mismatch("fill_missing_at_venue", account, o.symbol, o.exec_id,
                            _fill_text(i, o.side, o.qty, o.price, o.cl_ord_id), "none"))
    return out


def _fill_text(inst: Instrument, side: Side, qty: int, price: int, cl: int) -> str:
    return f"{side.name.lower()} {inst.lots_to_qty(qty)} @ {inst.ticks_to_price(price)} ({format_cl_ord_id(cl)})"


def _reconcile_orders(statement: Statement, om: OrderManager, account: str,
                      source: str) -> list[Mismatch]:
    out = []
    theirs = {o.cl_ord_id: o for o in statement.open_orders or () if o.account == account}
    ours = {o.cl_ord_id: o for o in om.open_orders()}
    for cl in sorted(set(ours) | set(theirs)):
        o, t = ours.get(cl), theirs.get(cl)
        if t is None:
            out.append(Mismatch("order_missing_at_venue", account, o.symbol, format_cl_ord_id(cl),
                                f"{o.state} {o.side.name.lower()} {o.leaves_qty} lots", "none"))
        elif o is None:
            out.append(Mismatch("order_missing_here", account, t.symbol, format_cl_ord_id(cl), "none",
                                f"{t.side.name.lower()} {t.leaves_qty} lots @ {t.price}",
                                f"{source}:{t.line}"))
        elif (o.symbol, o.side, o.leaves_qty, o.price) != (t.symbol, t.side, t.leaves_qty, t.price):
            out.append(Mismatch("order_differs", account, t.symbol, format_cl_ord_id(cl),
                                f"{o.side.name.lower()} {o.leaves_qty} lots @ {o.price}",
                                f"{t.side.name.lower()} {t.leaves_qty} lots @ {t.price}",
                                f"{source}:{t.line}"))
    return out


def apply_reconciliation(mismatches: list[Mismatch], order_manager: OrderManager, *,
                         lift: tuple[str, ...] = (RECONCILIATION_BLOCK, UNKNOWN_FILL_BLOCK)) -> bool:
    """Block trading (reason "reconciliation") while there are mismatches; when there
    are none, lift the blocks named in `lift` (by default also the order manager's
    "unknown_fill" block: a clean reconciliation of positions and fills proves the
    unknown fill is accounted for). Returns True when clean."""
    if mismatches:
        order_manager.block(RECONCILIATION_BLOCK, "; ".join(str(m) for m in mismatches[:5])
                            + (f" (+{len(mismatches) - 5} more)" if len(mismatches) > 5 else ""))
        return False
    for reason in lift:
        order_manager.unblock(reason)
    return True
