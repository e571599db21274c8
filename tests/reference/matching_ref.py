"""Pure-Python twin of core_ext.matching (the L3 matching book), for differential tests.

Deliberately simple: a dict order id -> order, and per side a dict price -> list
(FIFO, oldest first). Best prices are found with max()/min() every time. Same
semantics, same events (same tuples as EXEC_DTYPE / ORDER_EVENT_DTYPE rows, same
seq numbering), same statuses; see the docstring of core_ext/matching.pyx. Input
is assumed valid (the compiled book's ValueError checks are tested on it alone).
Standalone: imports nothing compiled (tests check that the constants agree).
"""
from __future__ import annotations

from dataclasses import dataclass

SIDE_BUY, SIDE_SELL = 0, 1
TIF_DAY, TIF_GTC, TIF_IOC, TIF_FOK = 0, 1, 2, 3
ORDTYPE_LIMIT, ORDTYPE_MARKET = 0, 1
NO_PRICE = -(2**63)

MATCH_OK = 0
MATCH_REJECT_DUPLICATE_ID = 1
MATCH_REJECT_UNKNOWN_ORDER = 2
MATCH_REJECT_FOK_NOT_FILLABLE = 3
MATCH_REJECT_EXECUTE_TOO_LARGE = 4

CANCEL_USER = 1
CANCEL_IOC_REMAINDER = 2
CANCEL_SELF_MATCH = 3
CANCEL_EXPIRED = 4

REPLACE_PRIORITY_KEPT = 1
REPLACE_PRIORITY_LOST = 2

ORDEV_ACCEPTED = 1
ORDEV_RESTED = 2
ORDEV_CANCELED = 3
ORDEV_REJECTED = 4
ORDEV_REPLACED = 5

SMP_NONE = 0
SMP_CANCEL_RESTING = 1
SMP_CANCEL_INCOMING = 2
SMP_CANCEL_BOTH = 3

OWNER_ANONYMOUS = 0
EXEC_FLAG_EXTERNAL = 1

L3_OP_ADD = 0
L3_OP_ADD_RESTING = 1
L3_OP_CANCEL = 2
L3_OP_REPLACE = 3
L3_OP_REPLACE_RESTING = 4
L3_OP_EXECUTE = 5


@dataclass
class RefOrder:
    order_id: int
    owner: int
    side: int
    price: int
    qty: int
    tif: int
    priority: int


class MatchingBookRef:
    def __init__(self, symbol: str, self_match_policy: int = SMP_CANCEL_INCOMING,
                 emit_order_events: bool = True) -> None:
        self.symbol = symbol
        self.self_match_policy = self_match_policy
        self.emit_order_events = emit_order_events
        self.orders: dict[int, RefOrder] = {}
        self.levels: list[dict[int, list[RefOrder]]] = [{}, {}]
        self.execs: list[tuple] = []
        self.order_events: list[tuple] = []
        self.seq = 0
        self.next_priority = 0

    # -- events ----------------------------------------------------------------

    def _exec(self, maker: RefOrder, taker_id: int, taker_owner: int, qty: int,
              taker_leaves: int, flags: int) -> None:
        self.execs.append((self.seq, maker.order_id, taker_id, maker.owner, taker_owner,
                           maker.price, qty, maker.qty, taker_leaves, maker.side,
                           1 - maker.side, flags))
        self.seq += 1

    def _event(self, kind, reason, order_id, new_order_id, owner, side, price, qty,
               ord_type, tif) -> None:
        if not self.emit_order_events:
            return
        self.order_events.append((self.seq, order_id, new_order_id, owner, price, qty, kind,
                                  reason, side, ord_type, tif))
        self.seq += 1

    def _reject(self, status, order_id, new_order_id, owner, side, price, qty, ord_type, tif):
        self._event(ORDEV_REJECTED, status, order_id, new_order_id, owner, side, price, qty,
                    ord_type, tif)
        return status

    def drain_events(self) -> tuple[list[tuple], list[tuple]]:
        execs, events = self.execs, self.order_events
        self.execs, self.order_events = [], []
        return execs, events

    # -- book primitives --------------------------------------------------------

    def _prices_best_first(self, side: int) -> list[int]:
        return sorted(self.levels[side], reverse=(side == SIDE_BUY))

    def _rest(self, order: RefOrder) -> None:
        order.priority = self.next_priority
        self.next_priority += 1
        self.levels[order.side].setdefault(order.price, []).append(order)

    def _take_out(self, order: RefOrder) -> None:
        queue = self.levels[order.side][order.price]
        queue.remove(order)
        if not queue:
            del self.levels[order.side][order.price]

    def _remove(self, order: RefOrder) -> None:
        self._take_out(order)
        del self.orders[order.order_id]

    @staticmethod
    def _crosses(side: int, level_price: int, price: int, market: bool) -> bool:
        if market:
            return True
        return level_price <= price if side == SIDE_BUY else level_price >= price

    def _smp(self, owner: int) -> bool:
        return self.self_match_policy != SMP_NONE and owner != OWNER_ANONYMOUS

    def _fillable(self, side, price, market, owner) -> int:
        total = 0
        opp = 1 - side
        for level_price in self._prices_best_first(opp):
            if not self._crosses(side, level_price, price, market):
                break
            for resting in self.levels[opp][level_price]:
                if self._smp(owner) and resting.owner == owner:
                    if self.self_match_policy != SMP_CANCEL_RESTING:
                        return total
                    continue
                total += resting.qty
        return total

    def _match(self, taker_id, owner, side, qty, price, market) -> tuple[int, bool]:
        opp = 1 - side
        while qty > 0 and self.levels[opp]:
            best = self._prices_best_first(opp)[0]
            if not self._crosses(side, best, price, market):
                break
            maker = self.levels[opp][best][0]
            if self._smp(owner) and maker.owner == owner:
                if self.self_match_policy == SMP_CANCEL_INCOMING:
                    return qty, True
                self._event(ORDEV_CANCELED, CANCEL_SELF_MATCH, maker.order_id, 0, maker.owner,
                            maker.side, maker.price, maker.qty, ORDTYPE_LIMIT, maker.tif)
                self._remove(maker)
                if self.self_match_policy == SMP_CANCEL_BOTH:
                    return qty, True
                continue
            fill = min(qty, maker.qty)
            qty -= fill
            maker.qty -= fill
            self._exec(maker, taker_id, owner, fill, qty, 0)
            if maker.qty == 0:
                self._remove(maker)
        return qty, False

    # -- operations -------------------------------------------------------------

    def submit(self, order_id, owner, side, qty, price=None, ord_type=ORDTYPE_LIMIT,
               tif=TIF_DAY) -> int:
        market = ord_type == ORDTYPE_MARKET
        px = NO_PRICE if market else price
        if order_id in self.orders:
            return self._reject(MATCH_REJECT_DUPLICATE_ID, order_id, 0, owner, side, px, qty,
                                ord_type, tif)
        if tif == TIF_FOK and self._fillable(side, px, market, owner) < qty:
            return self._reject(MATCH_REJECT_FOK_NOT_FILLABLE, order_id, 0, owner, side, px,
                                qty, ord_type, tif)
        self._event(ORDEV_ACCEPTED, 0, order_id, 0, owner, side, px, qty, ord_type, tif)
        rem, smp_stop = self._match(order_id, owner, side, qty, px, market)
        if rem == 0:
            return MATCH_OK
        if smp_stop:
            self._event(ORDEV_CANCELED, CANCEL_SELF_MATCH, order_id, 0, owner, side, px, rem,
                        ord_type, tif)
        elif market or tif in (TIF_IOC, TIF_FOK):
            self._event(ORDEV_CANCELED, CANCEL_IOC_REMAINDER, order_id, 0, owner, side, px, rem,
                        ord_type, tif)
        else:
            order = RefOrder(order_id, owner, side, px, rem, tif, -1)
            self.orders[order_id] = order
            self._rest(order)
            self._event(ORDEV_RESTED, 0, order_id, 0, owner, side, px, rem, ORDTYPE_LIMIT, tif)
        return MATCH_OK

    def add_resting(self, order_id, owner, side, qty, price, tif=TIF_GTC) -> int:
        if order_id in self.orders:
            return self._reject(MATCH_REJECT_DUPLICATE_ID, order_id, 0, owner, side, price, qty,
                                ORDTYPE_LIMIT, tif)
        order = RefOrder(order_id, owner, side, price, qty, tif, -1)
        self.orders[order_id] = order
        self._rest(order)
        self._event(ORDEV_RESTED, 0, order_id, 0, owner, side, price, qty, ORDTYPE_LIMIT, tif)
        return MATCH_OK

    def cancel(self, order_id) -> int:
        order = self.orders.get(order_id)
        if order is None:
            return self._reject(MATCH_REJECT_UNKNOWN_ORDER, order_id, 0, 0, 0, NO_PRICE, 0,
                                ORDTYPE_LIMIT, 0)
        self._event(ORDEV_CANCELED, CANCEL_USER, order_id, 0, order.owner, order.side,
                    order.price, order.qty, ORDTYPE_LIMIT, order.tif)
        self._remove(order)
        return MATCH_OK

    def replace(self, order_id, new_order_id, qty, price, match=True) -> int:
        new_id = new_order_id or order_id
        order = self.orders.get(order_id)
        if order is None:
            return self._reject(MATCH_REJECT_UNKNOWN_ORDER, order_id, new_id, 0, 0, price, qty,
                                ORDTYPE_LIMIT, 0)
        if new_id != order_id and new_id in self.orders:
            return self._reject(MATCH_REJECT_DUPLICATE_ID, order_id, new_id, order.owner,
                                order.side, price, qty, ORDTYPE_LIMIT, order.tif)
        keep = price == order.price and qty <= order.qty
        self._event(ORDEV_REPLACED, REPLACE_PRIORITY_KEPT if keep else REPLACE_PRIORITY_LOST,
                    order_id, new_id, order.owner, order.side, price, qty, ORDTYPE_LIMIT,
                    order.tif)
        if new_id != order_id:
            del self.orders[order_id]
            self.orders[new_id] = order
            order.order_id = new_id
        if keep:
            order.qty = qty
            return MATCH_OK
        self._take_out(order)
        order.price, order.qty = price, qty
        if match:
            rem, smp_stop = self._match(new_id, order.owner, order.side, qty, price, False)
            if rem == 0 or smp_stop:
                if rem:
                    self._event(ORDEV_CANCELED, CANCEL_SELF_MATCH, new_id, 0, order.owner,
                                order.side, price, rem, ORDTYPE_LIMIT, order.tif)
                del self.orders[new_id]
                return MATCH_OK
            order.qty = rem
        self._rest(order)
        self._event(ORDEV_RESTED, 0, new_id, 0, order.owner, order.side, price, order.qty,
                    ORDTYPE_LIMIT, order.tif)
        return MATCH_OK

    def execute(self, order_id, qty) -> int:
        order = self.orders.get(order_id)
        if order is None:
            return self._reject(MATCH_REJECT_UNKNOWN_ORDER, order_id, 0, 0, 0, NO_PRICE, qty,
                                ORDTYPE_LIMIT, 0)
        if qty > order.qty:
            return self._reject(MATCH_REJECT_EXECUTE_TOO_LARGE, order_id, 0, order.owner,
                                order.side, order.price, qty, ORDTYPE_LIMIT, order.tif)
        order.qty -= qty
        self._exec(order, 0, OWNER_ANONYMOUS, qty, 0, EXEC_FLAG_EXTERNAL)
        if order.qty == 0:
            self._remove(order)
        return MATCH_OK

    def expire_day(self) -> int:
        canceled = 0
        for side in (SIDE_BUY, SIDE_SELL):
            for price in self._prices_best_first(side):
                for order in list(self.levels[side][price]):
                    if order.tif == TIF_DAY:
                        self._event(ORDEV_CANCELED, CANCEL_EXPIRED, order.order_id, 0,
                                    order.owner, order.side, order.price, order.qty,
                                    ORDTYPE_LIMIT, TIF_DAY)
                        self._remove(order)
                        canceled += 1
        return canceled

    def apply_op(self, op, order_id, new_order_id, owner, side, qty, price, ord_type,
                 tif) -> int:
        if op == L3_OP_ADD:
            return self.submit(order_id, owner, side, qty, price, ord_type, tif)
        if op == L3_OP_ADD_RESTING:
            return self.add_resting(order_id, owner, side, qty, price, tif)
        if op == L3_OP_CANCEL:
            return self.cancel(order_id)
        if op == L3_OP_REPLACE:
            return self.replace(order_id, new_order_id, qty, price, True)
        if op == L3_OP_REPLACE_RESTING:
            return self.replace(order_id, new_order_id, qty, price, False)
        if op == L3_OP_EXECUTE:
            return self.execute(order_id, qty)
        raise ValueError(f"unknown op {op}")

    def apply_ops(self, ops) -> list[int]:
        """Rows of an L3_OP_DTYPE array (or anything with those fields); statuses."""
        return [self.apply_op(int(r["op"]), int(r["order_id"]), int(r["new_order_id"]),
                              int(r["owner"]), int(r["side"]), int(r["qty"]), int(r["price"]),
                              int(r["ord_type"]), int(r["tif"])) for r in ops]

    # -- queries ----------------------------------------------------------------

    @property
    def best_bid(self):
        return max(self.levels[SIDE_BUY]) if self.levels[SIDE_BUY] else None

    @property
    def best_ask(self):
        return min(self.levels[SIDE_SELL]) if self.levels[SIDE_SELL] else None

    def _level_qty(self, side, price):
        return sum(o.qty for o in self.levels[side][price]) if price is not None else None

    @property
    def best_bid_size(self):
        return self._level_qty(SIDE_BUY, self.best_bid)

    @property
    def best_ask_size(self):
        return self._level_qty(SIDE_SELL, self.best_ask)

    def top(self) -> tuple:
        bid, ask = self.best_bid, self.best_ask
        return (bid, self._level_qty(SIDE_BUY, bid), ask, self._level_qty(SIDE_SELL, ask))

    def depth(self, side, n=10) -> list[tuple[int, int, int]]:
        return [(p, self._level_qty(side, p), len(self.levels[side][p]))
                for p in self._prices_best_first(side)[:n]]

    def order(self, order_id):
        o = self.orders.get(order_id)
        if o is None:
            return None
        return (o.order_id, o.owner, o.side, o.price, o.qty, o.tif, o.priority)

    def open_orders(self, owner=None) -> list[tuple]:
        """Tuples in OPEN_ORDER_DTYPE field order: bids best-first, then asks."""
        out = []
        for side in (SIDE_BUY, SIDE_SELL):
            for price in self._prices_best_first(side):
                for o in self.levels[side][price]:
                    if owner is None or o.owner == owner:
                        out.append((o.order_id, o.owner, o.price, o.qty, o.priority, o.side,
                                    o.tif))
        return out

    def __len__(self) -> int:
        return len(self.orders)
