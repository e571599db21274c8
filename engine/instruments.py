"""Instruments: the decimal <-> integer edge of the engine.

Inside the engine (risk kernel, books, order manager, portfolio, strategies) prices
are int ticks and quantities int lots. An `Instrument` converts between those and
decimals, exactly: a decimal that is not a whole multiple of the tick (or lot) size
raises `ValueError` naming the value and the unit (the config layer turns it into a
`ConfigError` naming the key); NaN and infinities are rejected.

Money. The value of ``lots`` at ``ticks`` is
``lots * lot_size * ticks * tick_size * contract_multiplier``. The risk kernel
measures notionals in "tick-lots" (``qty * price * kernel multiplier``) and sums them
over instruments into one gross exposure, so the tick-lot must mean the same money on
every instrument. The config therefore picks one account money unit ``U`` (the
largest decimal dividing every instrument's ``tick_size * lot_size * multiplier``;
see `money_unit`) and gives each instrument the integer
``kernel_multiplier = tick_size * lot_size * multiplier / U``; a kernel notional of
N is then N * U money on every instrument.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = ["Instrument", "to_decimal", "money_unit"]

Number = str | int | Decimal | float


def to_decimal(value: object, what: str) -> Decimal:
    """A finite Decimal from str/int/Decimal/float (float through its shortest repr);
    ValueError naming `what` otherwise (bool, NaN, inf, junk)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal, float)):
        raise ValueError(f"{what}: expected a decimal number, got {type(value).__name__} {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what}: {value!r} is not a finite number")
        value = repr(value)
    try:
        dec = Decimal(value)
    except (InvalidOperation, ValueError):
        raise ValueError(f"{what}: {value!r} is not a decimal number") from None
    if not dec.is_finite():
        raise ValueError(f"{what}: {value!r} is not a finite number")
    return dec


def _exact_units(value: Decimal, unit: Decimal, what: str) -> int:
    units = value / unit
    whole = units.to_integral_value()
    if units != whole:
        raise ValueError(f"{what}: {value} is not a whole multiple of {unit}")
    result = int(whole)
    if not -(2**63) < result < 2**63:
        raise ValueError(f"{what}: {value} / {unit} does not fit in int64")
    return result


def money_unit(values: list[Decimal]) -> Decimal:
    """The largest decimal U such that every value / U is a whole number (the decimal
    gcd). `values` are positive Decimals."""
    if not values:
        raise ValueError("money_unit of no values")
    exp = max(-v.normalize().as_tuple().exponent for v in values)
    exp = max(exp, 0)
    scale = Decimal(10) ** exp
    g = 0
    for v in values:
        g = math.gcd(g, int(v * scale))
    return (Decimal(g) / scale).normalize()


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable instrument. `inst_id` is its index in the risk kernel (0..n-1,
    the order of the config file)."""

    symbol: str
    inst_id: int
    tick_size: Decimal            # price of one tick
    lot_size: Decimal             # quantity of one lot
    contract_multiplier: int = 1  # money per (price * quantity), >= 1
    price_scale: int = 0          # decimal places of a price on the wire (FIX/OUCH), >= decimals of tick_size
    size_scale: int = 0           # decimal places of a quantity on the wire, >= decimals of lot_size
    kernel_multiplier: int = 1    # tick_size * lot_size * contract_multiplier / account money unit

    # --- prices -------------------------------------------------------------------
    def price_to_ticks(self, price: Number) -> int:
        """Exact decimal price -> ticks; ValueError if not a whole number of ticks."""
        return _exact_units(to_decimal(price, f"{self.symbol} price"), self.tick_size,
                            f"{self.symbol} price")

    def ticks_to_price(self, ticks: int) -> Decimal:
        return ticks * self.tick_size

    def round_price_to_ticks(self, price: Number, mode: str = "nearest") -> int:
        """Decimal price -> ticks, rounding ("nearest", "down", "up") instead of raising."""
        units = to_decimal(price, f"{self.symbol} price") / self.tick_size
        if mode == "down":
            return int(units.to_integral_value(rounding="ROUND_FLOOR"))
        if mode == "up":
            return int(units.to_integral_value(rounding="ROUND_CEILING"))
        return int(units.to_integral_value(rounding="ROUND_HALF_EVEN"))

    # --- quantities ---------------------------------------------------------------
    def qty_to_lots(self, qty: Number) -> int:
        """Exact decimal quantity -> lots; ValueError if not a whole number of lots."""
        return _exact_units(to_decimal(qty, f"{self.symbol} quantity"), self.lot_size,
                            f"{self.symbol} quantity")

    def lots_to_qty(self, lots: int) -> Decimal:
        return lots * self.lot_size

    # --- money --------------------------------------------------------------------
    @property
    def money_per_tick_lot(self) -> Decimal:
        """Money value of 1 lot moving 1 tick (tick_size * lot_size * multiplier)."""
        return self.tick_size * self.lot_size * self.contract_multiplier

    def notional(self, lots: int, ticks: int) -> Decimal:
        """Money value of `lots` at `ticks` (exact)."""
        return lots * ticks * self.money_per_tick_lot

    def money_to_ticklots(self, money: Number, what: str = "amount") -> int:
        """Exact money -> this instrument's tick-lots (qty_lots * price_ticks units)."""
        return _exact_units(to_decimal(money, what), self.money_per_tick_lot, what)

    # --- wire scales --------------------------------------------------------------
    def ticks_to_wire(self, ticks: int) -> int:
        """Price as an integer with `price_scale` implied decimals (e.g. OUCH Price(4))."""
        return int(ticks * self.tick_size * (Decimal(10) ** self.price_scale))

    def wire_to_ticks(self, wire: int) -> int:
        return _exact_units(Decimal(wire) / (Decimal(10) ** self.price_scale), self.tick_size,
                            f"{self.symbol} wire price")

    def lots_to_wire(self, lots: int) -> int:
        return int(lots * self.lot_size * (Decimal(10) ** self.size_scale))

    def wire_to_lots(self, wire: int) -> int:
        return _exact_units(Decimal(wire) / (Decimal(10) ** self.size_scale), self.lot_size,
                            f"{self.symbol} wire quantity")
