"""core_ext.book.L2Book: differential against tests/reference/book_ref.py, edge cases,
and replays of real L2 / quote data (../shared/data)."""
from __future__ import annotations

import csv
import gc
import random
import tracemalloc
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext import book as B
from core_ext.book import (
    ACTION_SET,
    ACTION_SNAPSHOT,
    BOOK_DEPTH_CHANGED,
    BOOK_TOP_CHANGED,
    BOOK_UNCHANGED,
    SIDE_BUY,
    SIDE_SELL,
    UPDATE_DTYPE,
    BookInconsistentError,
    BookUpdateError,
    L2Book,
)
from engine.marketdata import load_l2_csv, load_quotes_csv
from tests.conftest import shared_file
from tests.reference.book_ref import RefBook

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


# ----------------------------------------------------------------- helpers

def assert_same(book: L2Book, ref: RefBook, where: str = "") -> None:
    """Every observable of the compiled book equals the reference."""
    for side in (SIDE_BUY, SIDE_SELL):
        assert book.levels(side) == ref.levels(side), where
        assert book.count(side) == ref.count(side), where
        for n in (0, 1, 3):
            prices, sizes = book.depth(side, n)
            rp, rs = ref.depth(side, n)
            assert prices.dtype == np.int64 and sizes.dtype == np.int64
            assert prices.tolist() == rp and sizes.tolist() == rs, where
    assert (book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size) == (
        ref.best_bid, ref.best_bid_size, ref.best_ask, ref.best_ask_size), where
    assert book.spread == ref.spread, where
    assert book.mid_x2 == ref.mid_x2, where
    assert book.mid == ref.mid, where
    assert book.crossed == ref.crossed, where
    assert len(book) == len(ref), where
    assert book.update_count == ref.update_count, where
    assert book.crossed_updates == ref.crossed_updates, where
    for n in (1, 4):
        a, b = book.imbalance(n), ref.imbalance(n)
        assert (a is None) == (b is None), where
        if a is not None:
            assert a == pytest.approx(b, rel=1e-12, abs=1e-15), where


def rows_array(rows) -> np.ndarray:
    return np.array(rows, dtype=UPDATE_DTYPE) if rows else np.zeros(0, dtype=UPDATE_DTYPE)


def replay_one_by_one(book: L2Book, ref: RefBook, updates: np.ndarray, check_every: int = 1):
    """Feed `updates` one row at a time (clear before ACTION_SNAPSHOT rows) to both
    books, comparing after every row; returns the count of top-of-book changes."""
    top_changes = 0
    for i, (_ts, price, size, side, action) in enumerate(updates.tolist()):
        before = (book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size)
        if action == ACTION_SNAPSHOT:
            book.clear()
            ref.clear()
        change = book.update(side, price, size)
        assert change == ref.update(side, price, size), f"row {i}"
        after = (book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size)
        top_changes += before != after
        if action == ACTION_SET:
            assert (change == BOOK_TOP_CHANGED) == (before != after), f"row {i}"
        if i % check_every == 0 or i == len(updates) - 1:
            assert_same(book, ref, f"after row {i}")
    return top_changes


# ------------------------------------------------------- differential (hypothesis)

prices = st.integers(90, 110)
sides = st.sampled_from([SIDE_BUY, SIDE_SELL])
sizes = st.one_of(st.just(0), st.integers(1, 5))
snapshot_side = st.lists(st.tuples(prices, sizes), max_size=12, unique_by=lambda r: r[0])
row = st.tuples(st.integers(0, 10**12), prices, sizes, sides, st.sampled_from([0, 0, 0, 1]))
bad_row = st.one_of(
    st.tuples(st.just(1), prices, sizes, st.integers(2, 255), st.just(0)),      # side
    st.tuples(st.just(1), prices, st.integers(-5, -1), sides, st.just(0)),       # size
    st.tuples(st.just(1), prices, sizes, sides, st.integers(2, 255)),            # action
    st.tuples(st.just(1), st.just(INT64_MIN), sizes, sides, st.just(0)),         # NO_PRICE
)

operation = st.one_of(
    st.tuples(st.just("update"), sides, prices, sizes),
    st.tuples(st.just("update"), sides, prices, sizes),
    st.tuples(st.just("update"), sides, prices, sizes),
    st.tuples(st.just("update"), st.integers(-1, 3), prices, st.integers(-2, 5)),
    st.tuples(st.just("add"), sides, prices, st.integers(-6, 6)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("snapshot"), snapshot_side, snapshot_side),
    st.tuples(st.just("apply"), st.lists(row, max_size=20)),
    st.tuples(st.just("apply_bad"), st.lists(row, max_size=6), bad_row, st.lists(row, max_size=6)),
)


def run_op(obj, op):
    kind = op[0]
    if kind == "update":
        return obj.update(*op[1:])
    if kind == "add":
        return obj.add_delta(*op[1:])
    if kind == "clear":
        return obj.clear()
    if kind == "snapshot":
        bids = np.array(op[1], dtype=np.int64).reshape(-1, 2)
        asks = np.array(op[2], dtype=np.int64).reshape(-1, 2)
        return obj.load_snapshot(bids, asks)
    if kind == "apply":
        return obj.apply(rows_array(op[1]))
    if kind == "apply_bad":
        return obj.apply(rows_array(op[1] + [op[2]] + op[3]))
    raise AssertionError(kind)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=40))
def test_differential_random_operations(ops):
    book, ref = L2Book("T", initial_capacity=2), RefBook("T")
    for step, op in enumerate(ops):
        try:
            expected = run_op(ref, op)
        except ValueError as exc:
            with pytest.raises(ValueError):
                run_op(book, op)
            assert op[0] in ("update", "add", "apply_bad"), exc
        else:
            assert run_op(book, op) == expected, (step, op)
        assert_same(book, ref, f"step {step} {op}")
        if op[0] in ("apply",) and op[1]:
            assert book.last_update_ns == op[1][-1][0]


@settings(max_examples=300, deadline=None)
@given(st.lists(row, max_size=60), st.booleans())
def test_batch_equals_one_by_one(rows, wide):
    """apply(rows) == feeding the same rows one update() at a time, including the
    number of top-of-book changes it returns."""
    updates = rows_array(rows)
    if wide:  # spread the prices over the whole int64 range
        updates["price"] = (updates["price"] - 100) * 2**58
    batch, single, ref = L2Book("b"), L2Book("s"), RefBook("r")
    changed = batch.apply(updates)
    expected = replay_one_by_one(single, ref, updates, check_every=max(1, len(rows) // 4))
    assert changed == expected
    for side in (SIDE_BUY, SIDE_SELL):
        assert batch.levels(side) == single.levels(side)
    assert batch.update_count == single.update_count
    assert batch.crossed_updates == single.crossed_updates


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(sides, st.integers(INT64_MIN + 1, INT64_MAX), st.integers(0, INT64_MAX)),
                max_size=50))
def test_extreme_int64_values(updates):
    book, ref = L2Book("x"), RefBook("x")
    for side, price, size in updates:
        assert book.update(side, price, size) == ref.update(side, price, size)
    assert_same(book, ref)


# ---------------------------------------------------------------- edge cases

def test_empty_book():
    book = L2Book("EMPTY")
    assert book.symbol == "EMPTY"
    assert (book.best_bid, book.best_ask, book.best_bid_size, book.best_ask_size) == (None,) * 4
    assert book.spread is None and book.mid is None and book.mid_x2 is None
    assert book.imbalance() is None
    assert not book.crossed
    assert len(book) == 0 and book.count(SIDE_BUY) == 0 and book.count(SIDE_SELL) == 0
    prices, sizes = book.depth(SIDE_BUY, 5)
    assert prices.shape == (0,) and sizes.shape == (0,) and prices.dtype == np.int64
    assert book.levels(SIDE_SELL) == []
    assert book.size_at(SIDE_BUY, 100) == 0
    assert book.update_count == 0 and book.crossed_updates == 0 and book.last_update_ns == 0
    assert book.stale is False


def test_sides_sorted_best_first_and_top_values():
    book = L2Book("S")
    for price, size in [(100, 1), (102, 2), (101, 3)]:
        book.update(SIDE_BUY, price, size)
    for price, size in [(106, 4), (104, 5), (105, 6)]:
        book.update(SIDE_SELL, price, size)
    assert book.levels(SIDE_BUY) == [(102, 2), (101, 3), (100, 1)]
    assert book.levels(SIDE_SELL) == [(104, 5), (105, 6), (106, 4)]
    assert (book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size) == (102, 2, 104, 5)
    assert book.spread == 2 and book.mid == 103.0 and book.mid_x2 == 206
    prices, sizes = book.depth(SIDE_SELL, 2)
    assert prices.tolist() == [104, 105] and sizes.tolist() == [5, 6]
    assert book.depth(SIDE_BUY, 10)[0].tolist() == [102, 101, 100]
    assert book.size_at(SIDE_BUY, 101) == 3 and book.size_at(SIDE_SELL, 101) == 0
    assert book.imbalance(1) == pytest.approx((2 - 5) / 7)
    assert book.imbalance(3) == pytest.approx((6 - 15) / 21)
    assert len(book) == 6


def test_change_codes():
    book = L2Book("C")
    assert book.update(SIDE_BUY, 100, 5) == BOOK_TOP_CHANGED      # new best
    assert book.update(SIDE_BUY, 99, 5) == BOOK_DEPTH_CHANGED     # below the top
    assert book.update(SIDE_BUY, 99, 5) == BOOK_UNCHANGED         # same size
    assert book.update(SIDE_BUY, 100, 6) == BOOK_TOP_CHANGED      # top size
    assert book.update(SIDE_BUY, 99, 0) == BOOK_DEPTH_CHANGED     # delete below top
    assert book.update(SIDE_BUY, 100, 0) == BOOK_TOP_CHANGED      # delete the top
    assert book.update_count == 6


def test_delete_absent_level_is_a_counted_noop():
    book = L2Book("D")
    book.update(SIDE_SELL, 105, 1)
    assert book.update(SIDE_SELL, 104, 0) == BOOK_UNCHANGED
    assert book.update(SIDE_BUY, 104, 0) == BOOK_UNCHANGED
    assert book.levels(SIDE_SELL) == [(105, 1)] and book.count(SIDE_BUY) == 0
    assert book.update_count == 3


def test_size_zero_deletes_the_level():
    book = L2Book("Z")
    book.update(SIDE_BUY, 100, 3)
    book.update(SIDE_BUY, 101, 3)
    book.update(SIDE_BUY, 100, 0)
    assert book.levels(SIDE_BUY) == [(101, 3)]
    assert book.size_at(SIDE_BUY, 100) == 0


def test_crossed_book_is_detected_counted_and_kept():
    book = L2Book("X")
    book.update(SIDE_BUY, 100, 1)
    book.update(SIDE_SELL, 101, 1)
    assert not book.crossed and book.crossed_updates == 0
    book.update(SIDE_BUY, 101, 2)            # locked: bid == ask counts as crossed
    assert book.crossed and book.spread == 0 and book.crossed_updates == 1
    book.update(SIDE_BUY, 103, 2)            # crossed through
    assert book.crossed and book.spread == -2 and book.crossed_updates == 2
    book.update(SIDE_BUY, 90, 1)             # a depth update while crossed also counts
    assert book.crossed_updates == 3
    # nothing was dropped to "repair" it
    assert book.levels(SIDE_BUY) == [(103, 2), (101, 2), (100, 1), (90, 1)]
    assert book.levels(SIDE_SELL) == [(101, 1)]
    assert "CROSSED" in repr(book)
    book.update(SIDE_BUY, 103, 0)            # still locked at 101
    assert book.crossed and book.crossed_updates == 4
    book.update(SIDE_BUY, 101, 0)
    assert not book.crossed and book.crossed_updates == 4
    assert book.update_count == 7


def test_growth_past_initial_capacity():
    rng = random.Random(7)
    book = L2Book("G", initial_capacity=1)
    assert book.capacity(SIDE_BUY) == 1
    bid_prices = rng.sample(range(1, 1_000_000), 5000)
    ask_prices = rng.sample(range(1_000_000, 2_000_000), 3000)
    for p in bid_prices:
        book.update(SIDE_BUY, p, p % 7 + 1)
    for p in ask_prices:
        book.update(SIDE_SELL, p, p % 5 + 1)
    assert book.capacity(SIDE_BUY) == 8192 and book.capacity(SIDE_SELL) == 4096   # doubling
    assert book.levels(SIDE_BUY) == [(p, p % 7 + 1) for p in sorted(bid_prices, reverse=True)]
    assert book.levels(SIDE_SELL) == [(p, p % 5 + 1) for p in sorted(ask_prices)]
    for p in rng.sample(bid_prices, len(bid_prices)):
        book.update(SIDE_BUY, p, 0)
    assert book.count(SIDE_BUY) == 0 and book.count(SIDE_SELL) == 3000


def test_default_capacity_doubles():
    book = L2Book("C")
    assert book.capacity(SIDE_SELL) == 64
    for p in range(65):
        book.update(SIDE_SELL, p, 1)
    assert book.capacity(SIDE_SELL) == 128 and book.capacity(SIDE_BUY) == 64


def test_clear_keeps_capacity_and_counters():
    book = L2Book("C", initial_capacity=4)
    for p in range(10):
        book.update(SIDE_BUY, p, 1)
    book.clear()
    assert len(book) == 0 and book.best_bid is None
    assert book.capacity(SIDE_BUY) == 16 and book.update_count == 10


def test_negative_size_rejected():
    book = L2Book("N")
    book.update(SIDE_BUY, 100, 1)
    with pytest.raises(BookUpdateError, match="size must be >= 0 lots, got -1"):
        book.update(SIDE_BUY, 100, -1)
    assert book.levels(SIDE_BUY) == [(100, 1)] and book.update_count == 1
    with pytest.raises(ValueError, match=r"bids\[1\] size must be >= 0"):
        book.load_snapshot([[100, 1], [99, -3]], [])
    assert book.levels(SIDE_BUY) == [(100, 1)]


@pytest.mark.parametrize("side", [-1, 2, 255])
def test_bad_side_rejected(side):
    book = L2Book("S")
    for call in (lambda: book.update(side, 100, 1), lambda: book.add_delta(side, 100, 1),
                 lambda: book.size_at(side, 100), lambda: book.depth(side, 1),
                 lambda: book.levels(side), lambda: book.count(side)):
        with pytest.raises(BookUpdateError, match=rf"side must be 0 \(SIDE_BUY\) or 1 \(SIDE_SELL\), got {side}"):
            call()
    assert book.update_count == 0


def test_no_price_sentinel_rejected():
    book = L2Book("P")
    with pytest.raises(BookUpdateError, match="NO_PRICE"):
        book.update(SIDE_BUY, INT64_MIN, 1)
    with pytest.raises(BookUpdateError, match=r"updates\[0\].price is NO_PRICE"):
        book.apply(rows_array([(0, INT64_MIN, 1, 0, 0)]))
    with pytest.raises(BookUpdateError, match=r"asks\[0\] price is NO_PRICE"):
        book.load_snapshot([], [[INT64_MIN, 1]])


def test_out_of_int64_range_is_an_error_not_a_wrap():
    book = L2Book("O")
    with pytest.raises(OverflowError):
        book.update(SIDE_BUY, 2**63, 1)
    with pytest.raises(OverflowError):
        book.update(SIDE_BUY, 1, 2**63)
    assert len(book) == 0


def test_floats_are_rejected_not_truncated_and_numpy_ints_accepted():
    book = L2Book("T")
    with pytest.raises(TypeError, match="price must be an integer, got float 100.5"):
        book.update(SIDE_BUY, 100.5, 1)
    with pytest.raises(TypeError, match="size must be an integer, got float64"):
        book.update(SIDE_BUY, 100, np.float64(2.0))
    with pytest.raises(TypeError, match="side must be an integer, got str"):
        book.update("bid", 100, 1)
    with pytest.raises(TypeError, match="delta must be an integer"):
        book.add_delta(SIDE_BUY, 100, 1.0)
    with pytest.raises(TypeError, match="side must be an integer"):
        book.depth(0.0, 1)
    with pytest.raises(TypeError, match="n must be an integer"):
        book.imbalance(1.5)
    assert len(book) == 0 and book.update_count == 0
    assert book.update(np.uint8(0), np.int64(100), np.int32(3)) == BOOK_TOP_CHANGED
    assert book.update(True, 101, 1) == BOOK_TOP_CHANGED            # bool is an int: SIDE_SELL
    assert book.levels(SIDE_BUY) == [(100, 3)] and book.levels(SIDE_SELL) == [(101, 1)]
    assert book.size_at(np.int8(0), np.int64(100)) == 3
    assert book.depth(side=SIDE_BUY, n=np.int64(5))[0].tolist() == [100]


def test_bad_dtype_rejected():
    book = L2Book("D")
    with pytest.raises(BookUpdateError, match="NumPy array of book.UPDATE_DTYPE, got list"):
        book.apply([(0, 100, 1, 0, 0)])
    packed = np.dtype([("ts_ns", "<i8"), ("price", "<i8"), ("size", "<i8"), ("side", "u1"),
                       ("action", "u1")])          # same fields, not aligned: 26 bytes
    with pytest.raises(BookUpdateError, match="is not book.UPDATE_DTYPE"):
        book.apply(np.zeros(3, dtype=packed))
    swapped = UPDATE_DTYPE.newbyteorder(">")
    with pytest.raises(BookUpdateError, match="is not book.UPDATE_DTYPE"):
        book.apply(np.zeros(3, dtype=swapped))
    with pytest.raises(BookUpdateError, match="must be 1-D"):
        book.apply(np.zeros((2, 2), dtype=UPDATE_DTYPE))
    with pytest.raises(BookUpdateError, match="int64"):
        book.load_snapshot(np.array([[100.0, 1.0]]), [])
    with pytest.raises(BookUpdateError, match=r"shape \(n, 2\)"):
        book.load_snapshot(np.array([100, 1, 2]), [])
    assert book.update_count == 0


@pytest.mark.parametrize("bad, message", [
    ((5, 100, 1, 2, 0), r"updates\[2\].side must be 0 \(SIDE_BUY\) or 1 \(SIDE_SELL\), got 2"),
    ((5, 100, -7, 0, 0), r"updates\[2\].size must be >= 0 lots, got -7"),
    ((5, 100, 1, 0, 9), r"updates\[2\].action must be 0 \(ACTION_SET\) or 1 \(ACTION_SNAPSHOT\), got 9"),
])
def test_bad_row_names_row_and_field_and_changes_nothing(bad, message):
    book = L2Book("R")
    book.update(SIDE_BUY, 90, 1)
    updates = rows_array([(1, 101, 1, 1, 1), (2, 100, 2, 0, 0), bad, (3, 99, 1, 0, 0)])
    with pytest.raises(BookUpdateError, match=message):
        book.apply(updates)
    assert book.levels(SIDE_BUY) == [(90, 1)] and book.count(SIDE_SELL) == 0
    assert book.update_count == 1 and book.last_update_ns == 0


def test_apply_snapshot_action_and_return_value():
    book = L2Book("A")
    book.update(SIDE_BUY, 50, 1)
    updates = rows_array([
        (10, 100, 5, SIDE_BUY, ACTION_SNAPSHOT),   # clears the 50 bid: top changed
        (11, 99, 5, SIDE_BUY, ACTION_SET),         # depth
        (12, 101, 5, SIDE_SELL, ACTION_SET),       # new ask: top
        (13, 101, 5, SIDE_SELL, ACTION_SET),       # unchanged
        (14, 100, 5, SIDE_BUY, ACTION_SNAPSHOT),   # clears everything, same bid: ask gone -> top
        (15, 0, 0, SIDE_SELL, ACTION_SNAPSHOT),    # snapshot of an empty book -> top
    ])
    assert book.apply(updates) == 4
    assert len(book) == 0 and book.last_update_ns == 15 and book.update_count == 7
    assert book.apply(np.zeros(0, dtype=UPDATE_DTYPE)) == 0
    assert book.last_update_ns == 15


def test_apply_accepts_readonly_and_strided_arrays():
    updates = rows_array([(i, 100 + i, i + 1, i % 2, 0) for i in range(10)])
    updates.flags.writeable = False
    a, b = L2Book("a"), L2Book("b")
    a.apply(updates[::-2])
    for r in updates[::-2].tolist():
        b.update(r[3], r[1], r[2])
    assert a.levels(SIDE_BUY) == b.levels(SIDE_BUY) and a.levels(SIDE_SELL) == b.levels(SIDE_SELL)
    assert a.last_update_ns == 1


def test_add_delta_aggregates_and_rejects_negative_levels():
    book = L2Book("Δ")
    assert book.add_delta(SIDE_BUY, 100, 5) == BOOK_TOP_CHANGED
    assert book.add_delta(SIDE_BUY, 100, 3) == BOOK_TOP_CHANGED
    assert book.add_delta(SIDE_BUY, 99, 2) == BOOK_DEPTH_CHANGED
    assert book.add_delta(SIDE_BUY, 100, 0) == BOOK_UNCHANGED
    assert book.size_at(SIDE_BUY, 100) == 8
    with pytest.raises(BookInconsistentError, match="bid level 100: delta -9 on 8 lots"):
        book.add_delta(SIDE_BUY, 100, -9)
    with pytest.raises(BookInconsistentError):
        book.add_delta(SIDE_SELL, 200, -1)          # absent level
    with pytest.raises(BookInconsistentError, match="overflows"):
        book.add_delta(SIDE_BUY, 100, INT64_MAX)
    assert book.levels(SIDE_BUY) == [(100, 8), (99, 2)] and book.count(SIDE_SELL) == 0
    assert book.add_delta(SIDE_BUY, 100, -8) == BOOK_TOP_CHANGED
    assert book.levels(SIDE_BUY) == [(99, 2)]
    assert issubclass(BookInconsistentError, ValueError) and issubclass(BookUpdateError, ValueError)


def test_load_snapshot():
    book = L2Book("L")
    book.update(SIDE_SELL, 500, 1)
    book.load_snapshot(np.array([[99, 1], [101, 2], [100, 0]]), [[103, 4], [102, 3]])
    assert book.levels(SIDE_BUY) == [(101, 2), (99, 1)]        # sorted, size 0 skipped
    assert book.levels(SIDE_SELL) == [(102, 3), (103, 4)]      # the old 500 ask is gone
    assert book.update_count == 2
    with pytest.raises(BookUpdateError, match="asks lists price 7 more than once"):
        book.load_snapshot([], [[7, 1], [8, 1], [7, 2]])
    assert book.levels(SIDE_SELL) == [(102, 3), (103, 4)]
    book.load_snapshot([[105, 1]], [[104, 1]])                  # a crossed snapshot is kept
    assert book.crossed and book.crossed_updates == 1
    book.load_snapshot([], np.zeros((0, 2), dtype=np.int64))
    assert len(book) == 0


def test_stale_flag_is_public():
    book = L2Book("F")
    book.stale = True
    assert book.stale is True
    book.stale = False
    assert book.stale is False


def test_mid_is_exact_as_mid_x2():
    book = L2Book("M")
    book.update(SIDE_BUY, 2**61 + 1, 1)
    book.update(SIDE_SELL, 2**61 + 2, 1)
    assert book.mid_x2 == 2**62 + 3
    assert book.spread == 1
    assert book.mid == (2**62 + 3) / 2


def test_imbalance_rejects_bad_n_and_depth_rejects_negative_n():
    book = L2Book("I")
    with pytest.raises(BookUpdateError, match="imbalance n must be >= 1, got 0"):
        book.imbalance(0)
    with pytest.raises(BookUpdateError, match="depth n must be >= 0, got -1"):
        book.depth(SIDE_BUY, -1)
    book.update(SIDE_BUY, 100, 3)
    assert book.imbalance() == 1.0
    book.update(SIDE_SELL, 101, 3)
    assert book.imbalance() == 0.0


def test_initial_capacity_must_be_positive():
    with pytest.raises(BookUpdateError, match="initial_capacity must be >= 1, got 0"):
        L2Book("x", initial_capacity=0)


def test_module_constants():
    assert (SIDE_BUY, SIDE_SELL) == (0, 1)
    assert (BOOK_UNCHANGED, BOOK_DEPTH_CHANGED, BOOK_TOP_CHANGED) == (0, 1, 2)
    assert (ACTION_SET, ACTION_SNAPSHOT) == (0, 1)
    assert UPDATE_DTYPE.itemsize == 32 and UPDATE_DTYPE.names == ("ts_ns", "price", "size", "side", "action")
    assert set(B.__all__) <= set(dir(B))


def test_levels_are_freed():
    """The level arrays (PyMem_Raw, visible to tracemalloc) are freed in __dealloc__."""
    def churn():
        for k in range(20):
            book = L2Book("m", initial_capacity=1)
            for p in range(2000):
                book.update(k % 2, p, 1)
            del book
    churn()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        churn()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 16_000, f"{grown} bytes still allocated after 20 books of 2000 levels"


# ------------------------------------------------------------ real data replays

def _decimal_units(text: str, unit: str) -> int:
    value = Decimal(text) / Decimal(unit)
    assert value == value.to_integral_value()
    return int(value)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["snapshot", "replace"])
def test_replay_quotes_csv(mode):
    """quotes.csv (Binance futures BTCUSDT top of book) mapped to L2 updates; the book
    equals the reference after every update and the quote after every quote."""
    path = shared_file("quotes.csv")
    updates, quote_of_row = load_quotes_csv(path, "0.01", "0.001", mode=mode, with_quote_index=True)
    with open(path, newline="") as fh:
        quotes = [(_decimal_units(r["bid_price"], "0.01"), _decimal_units(r["bid_amount"], "0.001"),
                   _decimal_units(r["ask_price"], "0.01"), _decimal_units(r["ask_amount"], "0.001"))
                  for r in csv.DictReader(fh)]
    assert len(quotes) == 9999
    assert len(updates) == (2 * len(quotes) if mode == "snapshot" else len(updates))
    book, ref = L2Book("BTCUSDT"), RefBook("BTCUSDT")
    last_row_of_quote = {q: j for j, q in enumerate(quote_of_row.tolist())}
    top_changes = 0
    for j, (_ts, price, size, side, action) in enumerate(updates.tolist()):
        before = (book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size)
        if action == ACTION_SNAPSHOT:
            book.clear()
            ref.clear()
        assert book.update(side, price, size) == ref.update(side, price, size)
        top_changes += before != (book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size)
        assert_same(book, ref, f"row {j}")
        q = int(quote_of_row[j])
        if last_row_of_quote[q] == j:
            assert (book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size) == quotes[q]
            assert len(book) == 2 and not book.crossed
    assert book.crossed_updates == 0
    # the same stream in one batch ends in the same book and counts the same top changes
    batch = L2Book("BTCUSDT")
    assert batch.apply(updates) == top_changes
    assert batch.levels(SIDE_BUY) == book.levels(SIDE_BUY)
    assert batch.levels(SIDE_SELL) == book.levels(SIDE_SELL)
    assert batch.last_update_ns == int(updates["ts_ns"][-1])


def test_replay_binance_depth_snapshot_then_updates():
    """btcusdt-depth-snap.csv (100 bid levels) then btcusdt-depth-update.csv (100 deltas,
    qty 0 deletes; not contiguous with the snapshot: replayed as given)."""
    snap = load_l2_csv(shared_file("btcusdt-depth-snap.csv"), "0.01", "0.001")
    upd = load_l2_csv(shared_file("btcusdt-depth-update.csv"), "0.01", "0.001")
    assert snap["action"][0] == ACTION_SNAPSHOT and (snap["action"][1:] == ACTION_SET).all()
    assert (upd["action"] == ACTION_SET).all()
    stream = np.concatenate([snap, upd])
    book, ref = L2Book("BTCUSDT"), RefBook("BTCUSDT")
    replay_one_by_one(book, ref, stream)
    # independent check of the snapshot part, parsed here with Decimal
    with open(shared_file("btcusdt-depth-snap.csv"), newline="") as fh:
        snap_rows = [(_decimal_units(r["price"], "0.01"), _decimal_units(r["qty"], "0.001"))
                     for r in csv.DictReader(fh)]
    only_snap = L2Book("s")
    only_snap.apply(snap)
    assert only_snap.levels(SIDE_BUY) == sorted(snap_rows, reverse=True)
    assert only_snap.count(SIDE_SELL) == 0
    # every qty-0 row left its level absent, every other row left the level at its qty
    check = L2Book("c")
    check.apply(snap)
    for _ts, price, size, side, _action in upd.tolist():
        check.update(side, price, size)
        assert check.size_at(side, price) == size
    deletes = int((upd["size"] == 0).sum())
    assert deletes == 21
    # batch replay agrees, and a snapshot of the final depth reproduces the book
    batch = L2Book("b")
    batch.apply(stream)
    assert batch.levels(SIDE_BUY) == book.levels(SIDE_BUY)
    assert batch.levels(SIDE_SELL) == book.levels(SIDE_SELL)
    again = L2Book("again")
    again.load_snapshot(np.column_stack(book.depth(SIDE_BUY, 10**6)),
                        np.column_stack(book.depth(SIDE_SELL, 10**6)))
    assert again.levels(SIDE_BUY) == book.levels(SIDE_BUY)
    assert again.levels(SIDE_SELL) == book.levels(SIDE_SELL)


def test_replay_deribit_incremental_l2():
    """deribit_incremental_book_L2_BTC-PERPETUAL.csv: tick 0.5 USD, lot 10 USD (one
    contract). The file as shipped holds 15 snapshot rows (asks) and no deltas."""
    path = shared_file("deribit_incremental_book_L2_BTC-PERPETUAL.csv")
    stream = load_l2_csv(path, "0.5", "10")
    assert len(stream) == 15 and stream["action"][0] == ACTION_SNAPSHOT
    book, ref = L2Book("BTC-PERPETUAL"), RefBook("BTC-PERPETUAL")
    replay_one_by_one(book, ref, stream)
    with open(path, newline="") as fh:
        rows = [(_decimal_units(r["price"], "0.5"), _decimal_units(r["amount"], "10"))
                for r in csv.DictReader(fh)]
    assert book.levels(SIDE_SELL) == sorted(rows)
    assert book.best_ask == 12843 and book.best_ask_size == 1864     # 6421.5 USD, 18640 USD
    assert book.best_bid is None
    batch = L2Book("b")
    assert batch.apply(stream) == 1                                   # only the first row is the top
    assert batch.levels(SIDE_SELL) == book.levels(SIDE_SELL)
