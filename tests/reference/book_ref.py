"""Pure-Python reference of core_ext.book.L2Book: a dict per side plus sorted keys.

Simple on purpose: the compiled book is tested against it (differential tests) and
it is the pure-Python baseline of bench/bench_book.py. Same Python API, same
semantics (see core_ext/book.pyx), no speed tricks.
"""
from __future__ import annotations

from bisect import bisect_left, insort

BUY, SELL = 0, 1
UNCHANGED, DEPTH_CHANGED, TOP_CHANGED = 0, 1, 2
ACTION_SET, ACTION_SNAPSHOT = 0, 1
NO_PRICE = -(2**63)
UPDATE_FIELDS = ("ts_ns", "price", "size", "side", "action")


class RefBook:
    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self._sizes: list[dict[int, int]] = [{}, {}]
        self._keys: list[list[int]] = [[], []]  # ascending prices, both sides
        self.update_count = 0
        self.crossed_updates = 0
        self.last_update_ns = 0
        self.stale = False

    # --- checks -------------------------------------------------------------
    @staticmethod
    def _check_side(side: int) -> None:
        if side not in (BUY, SELL):
            raise ValueError(f"side must be 0 or 1, got {side!r}")

    # --- mutation -----------------------------------------------------------
    def _top(self, side: int) -> tuple[int, int] | None:
        keys = self._keys[side]
        if not keys:
            return None
        price = keys[-1] if side == BUY else keys[0]
        return price, self._sizes[side][price]

    def _top4(self):
        return self._top(BUY), self._top(SELL)

    def _set_raw(self, side: int, price: int, size: int) -> int:
        sizes, keys = self._sizes[side], self._keys[side]
        before = self._top(side)
        old = sizes.get(price, 0)
        if old == size:
            return UNCHANGED
        if size == 0:
            del sizes[price]
            keys.pop(bisect_left(keys, price))
        else:
            if price not in sizes:
                insort(keys, price)
            sizes[price] = size
        return TOP_CHANGED if self._top(side) != before else DEPTH_CHANGED

    def _count_update(self) -> None:
        self.update_count += 1
        if self.crossed:
            self.crossed_updates += 1

    def update(self, side: int, price: int, size: int) -> int:
        self._check_side(side)
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if price == NO_PRICE:
            raise ValueError("price is NO_PRICE")
        change = self._set_raw(side, price, size)
        self._count_update()
        return change

    def add_delta(self, side: int, price: int, delta: int) -> int:
        self._check_side(side)
        if price == NO_PRICE:
            raise ValueError("price is NO_PRICE")
        new = self._sizes[side].get(price, 0) + delta
        if new < 0 or new > 2**63 - 1:
            raise ValueError(f"delta {delta} leaves level {price} at {new}")
        change = self._set_raw(side, price, new)
        self._count_update()
        return change

    def clear(self) -> None:
        self._sizes = [{}, {}]
        self._keys = [[], []]

    def load_snapshot(self, bids, asks) -> None:
        checked = []
        for name, rows in (("bids", bids), ("asks", asks)):
            rows = [(int(p), int(s)) for p, s in rows]
            prices = [p for p, _ in rows]
            if len(set(prices)) != len(prices):
                raise ValueError(f"{name} lists a price twice")
            if any(s < 0 for _, s in rows) or NO_PRICE in prices:
                raise ValueError(f"{name} has a negative size or NO_PRICE")
            checked.append(rows)
        self.clear()
        for side, rows in enumerate(checked):
            for price, size in rows:
                self._set_raw(side, price, size)
        self._count_update()

    def apply(self, updates) -> int:
        if getattr(updates, "dtype", None) is None or updates.dtype.names != UPDATE_FIELDS:
            raise ValueError("updates must be a structured array of UPDATE_DTYPE")
        rows = updates.tolist()
        for i, (_ts, price, size, side, action) in enumerate(rows):
            if side not in (BUY, SELL) or size < 0 or action not in (0, 1) or price == NO_PRICE:
                raise ValueError(f"updates[{i}] is invalid")
        changed = 0
        for ts, price, size, side, action in rows:
            before = self._top4()
            if action == ACTION_SNAPSHOT:
                self.clear()
            self._set_raw(side, price, size)
            self._count_update()
            if self._top4() != before:
                changed += 1
            self.last_update_ns = ts
        return changed

    # --- queries ------------------------------------------------------------
    def levels(self, side: int) -> list[tuple[int, int]]:
        self._check_side(side)
        keys = self._keys[side]
        ordered = reversed(keys) if side == BUY else keys
        return [(p, self._sizes[side][p]) for p in ordered]

    def depth(self, side: int, n: int):
        if n < 0:
            raise ValueError("n must be >= 0")
        lv = self.levels(side)[:n]
        return [p for p, _ in lv], [s for _, s in lv]

    def size_at(self, side: int, price: int) -> int:
        self._check_side(side)
        return self._sizes[side].get(price, 0)

    def count(self, side: int) -> int:
        self._check_side(side)
        return len(self._keys[side])

    def __len__(self) -> int:
        return len(self._keys[BUY]) + len(self._keys[SELL])

    @property
    def best_bid(self):
        top = self._top(BUY)
        return None if top is None else top[0]

    @property
    def best_ask(self):
        top = self._top(SELL)
        return None if top is None else top[0]

    @property
    def best_bid_size(self):
        top = self._top(BUY)
        return None if top is None else top[1]

    @property
    def best_ask_size(self):
        top = self._top(SELL)
        return None if top is None else top[1]

    @property
    def spread(self):
        if self.best_bid is None or self.best_ask is None:
            return None
        return self.best_ask - self.best_bid

    @property
    def mid_x2(self):
        if self.best_bid is None or self.best_ask is None:
            return None
        return self.best_ask + self.best_bid

    @property
    def mid(self):
        x2 = self.mid_x2
        return None if x2 is None else x2 / 2

    @property
    def crossed(self) -> bool:
        return (self.best_bid is not None and self.best_ask is not None
                and self.best_bid >= self.best_ask)

    def imbalance(self, n: int = 1):
        if n < 1:
            raise ValueError("n must be >= 1")
        bid = sum(self.depth(BUY, n)[1])
        ask = sum(self.depth(SELL, n)[1])
        if bid + ask == 0:
            return None
        return (bid - ask) / (bid + ask)
