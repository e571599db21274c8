"""Pure-Python reference of core_ext/risk.pyx: the same rules, written to be obviously
correct rather than fast. Python ints (no saturation, no overflow), dicts and lists;
gross exposure is recomputed from scratch on every check.

The compiled kernel saturates notionals at INT64_MAX and caps every notional limit at
INT64_MAX - 1; its decisions equal the exact ones computed here. State read-outs
(exposure, gross_exposure) follow the kernel's documented cap: an instrument's
exposure reads as min(exact, INT64_MAX), and INT64_MAX when it is unknown.
"""
from __future__ import annotations

import operator
from collections import deque
from dataclasses import dataclass, field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
NO_PRICE = INT64_MIN
SIDE_BUY, SIDE_SELL = 0, 1
NOTIONAL_LIMIT_MAX = INT64_MAX - 1
BPS = 10_000

# The result codes, in order of precedence (the first rule that fails is reported).
RISK_OK = 0
RISK_REJECT_KILL_SWITCH = 1
RISK_REJECT_HALTED = 2
RISK_REJECT_INVALID_ORDER = 3
RISK_REJECT_REDUCE_ONLY = 4
RISK_REJECT_UNKNOWN_INSTRUMENT = 5
RISK_REJECT_NO_LIMITS = 6
RISK_REJECT_NO_REFERENCE = 7
RISK_REJECT_STALE_REFERENCE = 8
RISK_REJECT_BOOK_STALE = 9
RISK_REJECT_MAX_ORDER_QTY = 10
RISK_REJECT_MAX_ORDER_NOTIONAL = 11
RISK_REJECT_PRICE_BAND = 12
RISK_REJECT_MAX_POSITION = 13
RISK_REJECT_MAX_GROSS_EXPOSURE = 14
RISK_REJECT_CONCENTRATION = 15
RISK_REJECT_MAX_OPEN_ORDERS = 16
RISK_REJECT_THROTTLE = 17
RISK_REJECT_DUPLICATE_ID = 18
RISK_CODE_COUNT = 19
REJECT_REASONS = {code: name for name, code in globals().copy().items()
                  if name.startswith("RISK_") and name != "RISK_CODE_COUNT"}
assert sorted(REJECT_REASONS) == list(range(RISK_CODE_COUNT))


def _i64(value, name: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"{name}={value} does not fit in int64")
    return value


@dataclass
class _Instrument:
    multiplier: int
    limits: dict | None = None
    halted: bool = False
    reduce_only: bool = False
    book_stale: bool = False
    position: int = 0
    open_qty: list = field(default_factory=lambda: [0, 0])  # [buy, sell]
    open_orders: int = 0
    ref_price: int = NO_PRICE
    ref_ts_ns: int = 0

    def exact_exposure(self):
        """(|position| + open qty) * ref * multiplier; None when unknown."""
        qty = abs(self.position) + self.open_qty[0] + self.open_qty[1]
        if qty == 0:
            return 0
        if self.ref_price == NO_PRICE:
            return None
        return qty * self.ref_price * self.multiplier


class RiskReference:
    def __init__(self, max_instruments: int = 1024, dup_window: int = 65536):
        if not 1 <= max_instruments <= 1 << 24 or not 1 <= dup_window <= 1 << 24:
            raise ValueError("bad kernel size")
        self.max_instruments = max_instruments
        self.dup_window = dup_window
        self.inst: dict[int, _Instrument] = {}
        self.account: dict | None = None
        self.kill_switch_tripped = False
        self.halted = False
        self.reduce_only = False
        self.anomalies = 0
        self._times: deque[int] = deque()   # the throttle ring, oldest first
        self._ids: deque[int] = deque()       # the duplicate window, oldest first
        self._id_set: set[int] = set()        # the same ids, for O(1) membership
        self.counts = [0] * RISK_CODE_COUNT

    # -- configuration -------------------------------------------------------------

    def add_instrument(self, inst_id, contract_multiplier=1):
        inst_id = _i64(inst_id, "inst_id")
        mult = _i64(contract_multiplier, "contract_multiplier")
        if not 0 <= inst_id < self.max_instruments:
            raise ValueError("inst_id out of range")
        if inst_id in self.inst:
            raise ValueError("already registered")
        if mult < 1:
            raise ValueError("contract_multiplier must be >= 1")
        self.inst[inst_id] = _Instrument(multiplier=mult)

    def _registered(self, inst_id) -> _Instrument:
        inst_id = _i64(inst_id, "inst_id")
        if inst_id not in self.inst:
            raise ValueError(f"unknown instrument {inst_id}")
        return self.inst[inst_id]

    def set_instrument_limits(self, inst_id, *, max_order_qty, max_order_notional,
                              price_band_bps, max_position, max_open_orders, max_ref_age_ns):
        ins = self._registered(inst_id)
        lim = dict(max_order_qty=max_order_qty, max_order_notional=max_order_notional,
                   price_band_bps=price_band_bps, max_position=max_position,
                   max_open_orders=max_open_orders, max_ref_age_ns=max_ref_age_ns)
        lim = {k: _i64(v, k) for k, v in lim.items()}
        if any(v < 0 for v in lim.values()) or lim["max_order_notional"] > NOTIONAL_LIMIT_MAX:
            raise ValueError("bad instrument limits")
        ins.limits = lim

    def set_account_limits(self, *, max_gross_exposure, max_concentration_bps,
                           concentration_floor, max_orders_per_window, window_ns):
        acct = dict(max_gross_exposure=max_gross_exposure,
                    max_concentration_bps=max_concentration_bps,
                    concentration_floor=concentration_floor,
                    max_orders_per_window=max_orders_per_window, window_ns=window_ns)
        acct = {k: _i64(v, k) for k, v in acct.items()}
        if (not 0 <= acct["max_gross_exposure"] <= NOTIONAL_LIMIT_MAX
                or not 0 <= acct["max_concentration_bps"] <= BPS
                or acct["concentration_floor"] < 0
                or not 0 <= acct["max_orders_per_window"] <= 1 << 22
                or acct["window_ns"] <= 0):
            raise ValueError("bad account limits")
        n = acct["max_orders_per_window"]
        old_n = self.account["max_orders_per_window"] if self.account else 0
        if n != old_n:  # the ring keeps the most recent min(old, new) times
            self._times = deque(list(self._times)[-n:] if n else [])
        self.account = acct

    def set_halted(self, halted, inst_id=None):
        if inst_id is None:
            self.halted = bool(halted)
        else:
            self._registered(inst_id).halted = bool(halted)

    def set_reduce_only(self, reduce_only, inst_id=None):
        if inst_id is None:
            self.reduce_only = bool(reduce_only)
        else:
            self._registered(inst_id).reduce_only = bool(reduce_only)

    def trip_kill_switch(self):
        self.kill_switch_tripped = True

    def reset_kill_switch(self):
        self.kill_switch_tripped = False

    # -- the check -----------------------------------------------------------------

    def would_pass(self, inst_id, side, qty, price, cl_ord_id, now_ns) -> int:
        inst_id, side, qty = _i64(inst_id, "inst_id"), _i64(side, "side"), _i64(qty, "qty")
        price, now_ns = _i64(price, "price"), _i64(now_ns, "now_ns")
        if not 0 <= cl_ord_id <= UINT64_MAX:
            raise OverflowError("cl_ord_id")
        ins = self.inst.get(inst_id)

        if self.kill_switch_tripped:
            return RISK_REJECT_KILL_SWITCH
        if self.halted or (ins is not None and ins.halted):
            return RISK_REJECT_HALTED
        if side not in (SIDE_BUY, SIDE_SELL) or qty <= 0 or cl_ord_id == 0:
            return RISK_REJECT_INVALID_ORDER
        if price != NO_PRICE and price <= 0:
            return RISK_REJECT_INVALID_ORDER
        if self.reduce_only or (ins is not None and ins.reduce_only):
            position = ins.position if ins is not None else 0
            if side == SIDE_BUY:
                shrinks = position < 0 and ins.open_qty[SIDE_BUY] + qty <= -position
            else:
                shrinks = position > 0 and ins.open_qty[SIDE_SELL] + qty <= position
            if not shrinks:
                return RISK_REJECT_REDUCE_ONLY
        if ins is None:
            return RISK_REJECT_UNKNOWN_INSTRUMENT
        if ins.limits is None or self.account is None:
            return RISK_REJECT_NO_LIMITS
        lim, acct = ins.limits, self.account
        if ins.ref_price == NO_PRICE:
            return RISK_REJECT_NO_REFERENCE
        if abs(now_ns - ins.ref_ts_ns) > lim["max_ref_age_ns"]:
            return RISK_REJECT_STALE_REFERENCE
        if ins.book_stale:
            return RISK_REJECT_BOOK_STALE
        if qty > lim["max_order_qty"]:
            return RISK_REJECT_MAX_ORDER_QTY
        px = ins.ref_price if price == NO_PRICE else price
        notional = qty * px * ins.multiplier
        if notional > lim["max_order_notional"]:
            return RISK_REJECT_MAX_ORDER_NOTIONAL
        if abs(px - ins.ref_price) * BPS > lim["price_band_bps"] * ins.ref_price:
            return RISK_REJECT_PRICE_BAND
        same_open = ins.open_qty[side]
        if side == SIDE_BUY:
            projected = ins.position + same_open + qty        # long side if all buys fill
        else:
            projected = -(ins.position - same_open - qty)     # short side if all sells fill
        if projected > lim["max_position"] or same_open + qty > INT64_MAX:
            return RISK_REJECT_MAX_POSITION
        exposures = [i.exact_exposure() for i in self.inst.values()]
        if any(e is None for e in exposures):
            return RISK_REJECT_MAX_GROSS_EXPOSURE   # unknown value: fail closed
        gross_after = sum(exposures) + notional
        if gross_after > acct["max_gross_exposure"]:
            return RISK_REJECT_MAX_GROSS_EXPOSURE
        if gross_after > acct["concentration_floor"]:
            inst_after = ins.exact_exposure() + notional
            if inst_after * BPS > acct["max_concentration_bps"] * gross_after:
                return RISK_REJECT_CONCENTRATION
        if ins.open_orders >= lim["max_open_orders"]:
            return RISK_REJECT_MAX_OPEN_ORDERS
        n = acct["max_orders_per_window"]
        if n == 0:
            return RISK_REJECT_THROTTLE
        if len(self._times) >= n and now_ns - self._times[-n] < acct["window_ns"]:
            return RISK_REJECT_THROTTLE
        if cl_ord_id in self._id_set:
            return RISK_REJECT_DUPLICATE_ID
        return RISK_OK

    def check(self, inst_id, side, qty, price, cl_ord_id, now_ns) -> int:
        code = self.would_pass(inst_id, side, qty, price, cl_ord_id, now_ns)
        self.counts[code] += 1
        if code == RISK_OK:
            ins = self.inst[inst_id]
            ins.open_qty[side] += qty
            ins.open_orders += 1
            self._times.append(now_ns)
            while len(self._times) > self.account["max_orders_per_window"]:
                self._times.popleft()
            self._remember_id(cl_ord_id)
        return code

    def _remember_id(self, cl_ord_id):
        if cl_ord_id in self._id_set:
            return
        self._ids.append(cl_ord_id)
        self._id_set.add(cl_ord_id)
        if len(self._ids) > self.dup_window:
            self._id_set.remove(self._ids.popleft())

    # -- state updates -------------------------------------------------------------

    def _valid(self, inst_id, side):
        ins = self._registered(inst_id)
        side = _i64(side, "side")
        if side not in (SIDE_BUY, SIDE_SELL):
            raise ValueError("side must be 0 or 1")
        return ins, side

    def _close_qty(self, ins, side, qty):
        if ins.open_qty[side] >= qty:
            ins.open_qty[side] -= qty
        else:
            ins.open_qty[side] = 0
            self.anomalies += 1

    def _close_order(self, ins):
        if ins.open_orders > 0:
            ins.open_orders -= 1
        else:
            self.anomalies += 1

    def on_order_accepted(self, cl_ord_id, inst_id, side, qty, price):
        if not 0 <= cl_ord_id <= UINT64_MAX:
            raise OverflowError("cl_ord_id")
        qty, price = _i64(qty, "qty"), _i64(price, "price")
        ins, side = self._valid(inst_id, side)
        if qty <= 0:
            raise ValueError("qty must be > 0")
        if price <= 0 and price != NO_PRICE:
            raise ValueError("bad price")
        if cl_ord_id == 0:
            raise ValueError("cl_ord_id 0 is reserved")
        if ins.open_qty[side] + qty > INT64_MAX:
            raise OverflowError("open quantity would leave int64")
        ins.open_qty[side] += qty
        ins.open_orders += 1
        self._remember_id(cl_ord_id)

    def on_fill(self, inst_id, side, qty, price, leaves_qty):
        qty, price, leaves_qty = _i64(qty, "qty"), _i64(price, "price"), _i64(leaves_qty, "leaves")
        ins, side = self._valid(inst_id, side)
        if qty <= 0 or leaves_qty < 0:
            raise ValueError("bad quantity")
        if price <= 0:
            raise ValueError("bad price")
        new_position = ins.position + (qty if side == SIDE_BUY else -qty)
        if abs(new_position) > INT64_MAX:
            raise OverflowError("position would leave int64")
        ins.position = new_position
        self._close_qty(ins, side, qty)
        if leaves_qty == 0:
            self._close_order(ins)

    def on_cancel(self, inst_id, side, leaves_qty):
        leaves_qty = _i64(leaves_qty, "leaves_qty")
        ins, side = self._valid(inst_id, side)
        if leaves_qty < 0:
            raise ValueError("bad quantity")
        self._close_qty(ins, side, leaves_qty)
        self._close_order(ins)

    def on_reject(self, inst_id, side, qty):
        self.on_cancel(inst_id, side, qty)

    def set_reference_price(self, inst_id, price, ts_ns):
        price, ts_ns = _i64(price, "price"), _i64(ts_ns, "ts_ns")
        ins = self._registered(inst_id)
        if price <= 0 and price != NO_PRICE:
            raise ValueError("bad price")
        ins.ref_price, ins.ref_ts_ns = price, ts_ns

    def set_book_stale(self, inst_id, stale):
        self._registered(inst_id).book_stale = bool(stale)

    def set_position(self, inst_id, position):
        ins = self._registered(inst_id)
        position = _i64(position, "position")
        if position == INT64_MIN:
            raise ValueError("position must be > INT64_MIN")
        ins.position = position

    # -- reading -------------------------------------------------------------------

    def position(self, inst_id):
        return self._registered(inst_id).position

    def open_orders(self, inst_id):
        return self._registered(inst_id).open_orders

    def open_qty(self, inst_id, side):
        ins, side = self._valid(inst_id, side)
        return ins.open_qty[side]

    def reference_price(self, inst_id):
        ins = self._registered(inst_id)
        return (ins.ref_price, ins.ref_ts_ns)

    def exposure(self, inst_id):
        e = self._registered(inst_id).exact_exposure()
        return INT64_MAX if e is None else min(e, INT64_MAX)

    def gross_exposure(self):
        return sum(self.exposure(i) for i in self.inst)

    def is_known(self, inst_id):
        return inst_id in self.inst

    def counters(self):
        return list(self.counts)

    def counter(self, code):
        return self.counts[code]

    def throttle_times(self):
        return list(self._times)

    def recent_ids(self):
        return list(self._ids)
