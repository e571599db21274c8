"""Instruments at the edge: decimal prices on the wire <-> int64 ticks inside.

A price in ticks is `ticks * tick_size`. A tick size is kept as (mult, decimals) so
that the compiled FIX encoder writes `ticks * mult / 10**decimals` with exactly
`decimals` places (0.01 -> (1, 2); 0.05 -> (5, 2); 0.25 -> (25, 2); 1 -> (1, 0)).

Parsing a wire price never goes through float: the text is split at the decimal
point and checked to be a whole number of ticks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from gateway.errors import GatewayError

DEFAULT_TICK_SIZE = Decimal("0.01")
MAX_DECIMALS = 12


class PriceError(GatewayError, ValueError):
    """A wire price that is malformed, out of range, or not a whole number of ticks."""


def tick_parts(tick_size: Decimal) -> tuple[int, int]:
    """(mult, decimals) with tick_size == mult / 10**decimals, mult >= 1."""
    if not isinstance(tick_size, Decimal):
        try:
            tick_size = Decimal(str(tick_size))
        except InvalidOperation as exc:
            raise ValueError(f"tick size {tick_size!r} is not a decimal number") from exc
    if not tick_size.is_finite() or tick_size <= 0:
        raise ValueError(f"tick size {tick_size} must be a positive decimal number")
    tick_size = tick_size.normalize()
    exponent = tick_size.as_tuple().exponent
    assert isinstance(exponent, int)
    decimals = max(0, -exponent)
    if decimals > MAX_DECIMALS:
        raise ValueError(f"tick size {tick_size}: at most {MAX_DECIMALS} decimal places")
    mult = int(tick_size.scaleb(decimals))
    return mult, decimals


@dataclass(frozen=True)
class Instrument:
    """One tradable symbol and its tick size (default 0.01)."""

    symbol: str
    tick_size: Decimal = DEFAULT_TICK_SIZE
    mult: int = field(init=False)          # tick_size = mult / 10**decimals
    decimals: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.symbol or not self.symbol.isprintable() or "\x01" in self.symbol or " " in self.symbol:
            raise ValueError(f"symbol {self.symbol!r}: give a non-empty printable name without spaces")
        mult, decimals = tick_parts(self.tick_size)
        object.__setattr__(self, "tick_size", Decimal(mult).scaleb(-decimals))
        object.__setattr__(self, "mult", mult)
        object.__setattr__(self, "decimals", decimals)

    def ticks(self, text: bytes | str) -> int:
        """Ticks of a wire price such as b"101.25"; PriceError when it is not a whole
        number of ticks, malformed or out of range."""
        return price_to_ticks(text, self.mult, self.decimals, self.symbol)

    def price_text(self, ticks: int) -> str:
        """The wire text of a price in ticks, with exactly `decimals` places."""
        return ticks_to_text(ticks, self.mult, self.decimals)

    def price(self, ticks: int) -> Decimal:
        return Decimal(ticks * self.mult).scaleb(-self.decimals)


def price_to_ticks(text: bytes | str, mult: int, decimals: int, symbol: str = "") -> int:
    if isinstance(text, str):
        raw = text.encode("ascii", "replace")
    else:
        raw = bytes(text)
    what = f" for {symbol}" if symbol else ""
    negative = raw[:1] == b"-"
    body = raw[1:] if negative or raw[:1] == b"+" else raw
    int_part, dot, frac = body.partition(b".")
    if (not int_part and not frac) or (int_part and not int_part.isdigit()) or (dot and frac and not frac.isdigit()) \
            or len(int_part) > 18:
        raise PriceError(f"price {raw.decode('ascii', 'replace')!r}{what} is not a decimal number")
    frac = frac.rstrip(b"0")
    if len(frac) > decimals:
        raise PriceError(f"price {raw.decode('ascii', 'replace')}{what} has more decimal places than the "
                         f"tick size {ticks_to_text(1, mult, decimals)} allows")
    scaled = int(int_part or b"0") * 10 ** decimals + (int(frac) * 10 ** (decimals - len(frac)) if frac else 0)
    ticks, rem = divmod(scaled, mult)
    if rem:
        raise PriceError(f"price {raw.decode('ascii', 'replace')}{what} is not a multiple of the tick size "
                         f"{ticks_to_text(1, mult, decimals)}")
    if ticks >= 1 << 62:
        raise PriceError(f"price {raw.decode('ascii', 'replace')}{what} is out of range")
    return -ticks if negative else ticks


def ticks_to_text(ticks: int, mult: int, decimals: int) -> str:
    v = ticks * mult
    sign = "-" if v < 0 else ""
    v = abs(v)
    if decimals == 0:
        return f"{sign}{v}"
    scale = 10 ** decimals
    return f"{sign}{v // scale}.{v % scale:0{decimals}d}"


def scaled_to_text(value: int, decimals: int) -> str:
    """`value / 10**decimals` as text (used for AvgPx, which is not a whole number of ticks)."""
    return ticks_to_text(value, 1, decimals)
