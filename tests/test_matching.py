"""core_ext.matching.MatchingBook: differential against tests/reference/matching_ref.py
(hypothesis), named edge cases, growth of the pools and the id map, and the replay of
the real Bitfinex L3 feed (../shared/data/L3_feed.json) through engine.l3data."""
from __future__ import annotations

import json
import random
from decimal import Decimal

import numpy as np
import pytest
from core_ext.matching import (
    CANCEL_EXPIRED,
    CANCEL_IOC_REMAINDER,
    CANCEL_SELF_MATCH,
    CANCEL_USER,
    EXEC_DTYPE,
    EXEC_FLAG_EXTERNAL,
    L3_OP_ADD,
    L3_OP_ADD_RESTING,
    L3_OP_CANCEL,
    L3_OP_DTYPE,
    L3_OP_EXECUTE,
    L3_OP_REPLACE,
    L3_OP_REPLACE_RESTING,
    MATCH_OK,
    MATCH_REJECT_DUPLICATE_ID,
    MATCH_REJECT_EXECUTE_TOO_LARGE,
    MATCH_REJECT_FOK_NOT_FILLABLE,
    MATCH_REJECT_UNKNOWN_ORDER,
    NO_PRICE,
    OPEN_ORDER_DTYPE,
    ORDER_EVENT_DTYPE,
    ORDEV_ACCEPTED,
    ORDEV_CANCELED,
    ORDEV_REJECTED,
    ORDEV_REPLACED,
    ORDEV_RESTED,
    ORDTYPE_LIMIT,
    ORDTYPE_MARKET,
    REPLACE_PRIORITY_KEPT,
    REPLACE_PRIORITY_LOST,
    SIDE_BUY,
    SIDE_SELL,
    SMP_CANCEL_BOTH,
    SMP_CANCEL_INCOMING,
    SMP_CANCEL_RESTING,
    SMP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_IOC,
    TOP_DTYPE,
    MatchingBook,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_ext import matching as M
from engine.errors import DataError
from engine.l3data import BITFINEX_LOT, BITFINEX_TICK, bitfinex_frames_to_ops, load_bitfinex_l3
from tests.conftest import shared_file
from tests.reference import matching_ref as R
from tests.reference.matching_ref import MatchingBookRef

POLICIES = (SMP_NONE, SMP_CANCEL_RESTING, SMP_CANCEL_INCOMING, SMP_CANCEL_BOTH)
BUY, SELL = SIDE_BUY, SIDE_SELL


# ----------------------------------------------------------------- helpers

def books(policy=SMP_CANCEL_INCOMING, capacity=1024):
    return MatchingBook("TEST", self_match_policy=policy, capacity=capacity), \
        MatchingBookRef("TEST", self_match_policy=policy)


def drain(book):
    """Executions and order events of the compiled book as lists of tuples."""
    ex, oe = book.drain_events()
    assert ex.dtype == EXEC_DTYPE and oe.dtype == ORDER_EVENT_DTYPE
    return ex.tolist(), oe.tolist()


def assert_same_state(book: MatchingBook, ref: MatchingBookRef, where="") -> None:
    book.check_invariants()
    assert book.open_orders().tolist() == ref.open_orders(), where
    assert book.top() == ref.top(), where
    assert len(book) == len(ref), where
    for side in (BUY, SELL):
        assert book.depth(side, 1000).tolist() == ref.depth(side, 1000), where
        assert book.level_count(side) == len(ref.levels[side]), where


def events_of(oevs, kind):
    return [e for e in oevs if e[6] == kind]


def ev(oevs, i):
    """Order event i as a dict (field names of ORDER_EVENT_DTYPE)."""
    return dict(zip(ORDER_EVENT_DTYPE.names, oevs[i], strict=True))


def ex_dict(execs, i):
    return dict(zip(EXEC_DTYPE.names, execs[i], strict=True))


# ----------------------------------------------------------------- contract

def test_constants_match_reference_and_common():
    names = [n for n in dir(R) if n.isupper() and not n.startswith("_")]
    assert len(names) > 30
    for name in names:
        assert getattr(M, name) == getattr(R, name), name
    assert (SIDE_BUY, SIDE_SELL) == (0, 1)
    assert (TIF_DAY, TIF_GTC, TIF_IOC, TIF_FOK) == (0, 1, 2, 3)
    assert (ORDTYPE_LIMIT, ORDTYPE_MARKET) == (0, 1)
    assert NO_PRICE == -(2**63)
    assert M.STATUS_NAMES[MATCH_REJECT_UNKNOWN_ORDER] == "MATCH_REJECT_UNKNOWN_ORDER"


def test_dtypes_are_the_documented_layouts():
    assert EXEC_DTYPE.names == ("seq", "maker_order_id", "taker_order_id", "maker_owner",
                                "taker_owner", "price", "qty", "maker_leaves", "taker_leaves",
                                "maker_side", "aggressor_side", "flags")
    assert EXEC_DTYPE.itemsize == 80
    assert ORDER_EVENT_DTYPE.itemsize == 56
    assert L3_OP_DTYPE.itemsize == 48
    assert TOP_DTYPE.itemsize == 32
    assert OPEN_ORDER_DTYPE.names == ("order_id", "owner", "price", "qty", "priority", "side",
                                      "tif")


def test_empty_book():
    book = MatchingBook("X")
    assert book.symbol == "X"
    assert book.top() == (None, None, None, None)
    assert book.best_bid is None and book.best_ask_size is None
    assert len(book) == 0 and book.open_orders().size == 0
    assert book.depth(BUY, 5).size == 0
    assert book.order(1) is None and 1 not in book and -1 not in book
    ex, oe = book.drain_events()
    assert ex.size == 0 and oe.size == 0
    assert book.self_match_policy == SMP_CANCEL_INCOMING


# ----------------------------------------------------------------- edge cases, one by one

def test_limit_rests_and_trades_at_maker_price_in_time_priority():
    book, ref = books()
    assert book.submit(1, 1, BUY, 5, 100) == MATCH_OK
    assert book.submit(2, 2, BUY, 3, 100) == MATCH_OK
    assert book.submit(3, 3, BUY, 4, 101) == MATCH_OK
    drain(book)
    assert book.submit(4, 4, SELL, 10, 99, tif=TIF_GTC) == MATCH_OK
    execs, oevs = drain(book)
    # best price first (101), then 100 oldest first (1 before 2), always at the maker price
    assert [(e[1], e[5], e[6]) for e in execs] == [(3, 101, 4), (1, 100, 5), (2, 100, 1)]
    assert [e[8] for e in execs] == [6, 1, 0]        # taker leaves
    assert [e[7] for e in execs] == [0, 0, 2]        # maker leaves
    assert all(e[9] == BUY and e[10] == SELL and e[11] == 0 for e in execs)
    assert ev(oevs, 0)["kind"] == ORDEV_ACCEPTED and len(oevs) == 1   # fully filled: no rest
    assert book.top() == (100, 2, None, None)
    assert book.order(2).qty == 2 and book.order(1) is None


def test_seq_is_one_timeline_across_both_buffers():
    book = MatchingBook("X")
    book.submit(1, 1, SELL, 2, 100)
    book.submit(2, 1, SELL, 2, 101)
    book.submit(3, 2, BUY, 5, 101)
    execs, oevs = drain(book)
    seqs = sorted([e[0] for e in execs] + [e[0] for e in oevs])
    assert seqs == list(range(len(seqs)))
    # order of the incoming order's story: ACCEPTED < executions < RESTED
    accepted = [e for e in oevs if e[1] == 3 and e[6] == ORDEV_ACCEPTED][0][0]
    rested = [e for e in oevs if e[1] == 3 and e[6] == ORDEV_RESTED][0]
    assert accepted < execs[0][0] < execs[1][0] < rested[0]
    assert rested[5] == 1 and rested[4] == 101


def test_priority_kept_on_size_decrease():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, BUY, 10, 100)
        b.submit(2, 2, BUY, 10, 100)
    prio = book.order(1).priority
    assert book.replace(1, 0, 4, 100) == ref.replace(1, 0, 4, 100) == MATCH_OK
    assert book.order(1).priority == prio and book.order(1).qty == 4
    execs, oevs = drain(book)
    replaced = events_of(oevs, ORDEV_REPLACED)[-1]
    assert replaced[7] == REPLACE_PRIORITY_KEPT and replaced[5] == 4
    for b in (book, ref):
        b.submit(3, 3, SELL, 5, 100)
    execs, _ = drain(book)
    assert [(e[1], e[6]) for e in execs] == [(1, 4), (2, 1)]    # 1 still first
    ref.drain_events()
    assert_same_state(book, ref)


def test_priority_kept_on_same_size_and_price():
    book = MatchingBook("X")
    book.submit(1, 1, BUY, 10, 100)
    book.submit(2, 2, BUY, 10, 100)
    assert book.replace(1, None, 10, 100) == MATCH_OK
    assert book.open_orders()["order_id"].tolist() == [1, 2]


def test_priority_lost_on_size_increase():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, BUY, 10, 100)
        b.submit(2, 2, BUY, 10, 100)
        assert b.replace(1, 0, 11, 100) == MATCH_OK
    _, oevs = drain(book)
    assert events_of(oevs, ORDEV_REPLACED)[-1][7] == REPLACE_PRIORITY_LOST
    assert events_of(oevs, ORDEV_RESTED)[-1][1:6] == (1, 0, 1, 100, 11)
    assert book.open_orders()["order_id"].tolist() == [2, 1]
    assert book.order(1).priority > book.order(2).priority
    assert book.top() == (100, 21, None, None)
    ref.drain_events()
    assert_same_state(book, ref)


def test_priority_lost_on_price_change_even_when_coming_back():
    book = MatchingBook("X")
    book.submit(1, 1, BUY, 10, 100)
    book.submit(2, 2, BUY, 10, 100)
    book.replace(1, 0, 10, 99)
    assert book.depth(BUY, 5).tolist() == [(100, 10, 1), (99, 10, 1)]
    book.replace(1, 0, 5, 100)         # back to 100, smaller: still at the back
    assert book.open_orders()["order_id"].tolist() == [2, 1]
    book.submit(3, 3, SELL, 10, 100)
    execs, _ = drain(book)
    assert [(e[1], e[6]) for e in execs if e[2] == 3] == [(2, 10)]


def test_replace_with_new_id_keeps_priority_and_retires_old_id():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, SELL, 10, 105)
        b.submit(2, 2, SELL, 10, 105)
        assert b.replace(1, 77, 6, 105) == MATCH_OK
    assert book.order(1) is None and 1 not in book
    assert book.order(77).qty == 6 and 77 in book
    assert book.open_orders()["order_id"].tolist() == [77, 2]
    _, oevs = drain(book)
    rep = ev(oevs, len(oevs) - 1)
    assert (rep["kind"], rep["order_id"], rep["new_order_id"], rep["reason"]) == (
        ORDEV_REPLACED, 1, 77, REPLACE_PRIORITY_KEPT)
    # the old id is free again, the new one is taken
    assert book.submit(1, 5, BUY, 1, 90) == MATCH_OK
    assert book.submit(77, 5, BUY, 1, 90) == MATCH_REJECT_DUPLICATE_ID
    for b in (book, ref):
        b.submit(1, 5, BUY, 1, 90)
        b.submit(77, 5, BUY, 1, 90)
    # the new id cannot be one already live
    assert book.replace(2, 1, 3, 105) == MATCH_REJECT_DUPLICATE_ID
    assert book.order(2).qty == 10


def test_replace_that_crosses_trades_first_then_rests():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, SELL, 4, 101)
        b.submit(2, 2, BUY, 10, 99)
        b.drain_events()
        assert b.replace(2, 0, 10, 102) == MATCH_OK
    execs, oevs = drain(book)
    assert [(e[1], e[2], e[5], e[6], e[8]) for e in execs] == [(1, 2, 101, 4, 6)]
    assert [e[6] for e in oevs] == [ORDEV_REPLACED, ORDEV_RESTED]
    assert oevs[1][5] == 6
    assert book.top() == (102, 6, None, None)
    rex, roe = ref.drain_events()
    assert (execs, oevs) == (rex, roe)
    # replace_resting (match=False) leaves a crossed book
    for b in (book, ref):
        b.submit(3, 3, SELL, 5, 110)
        b.replace(3, 0, 5, 100, match=False)
    assert book.top() == (102, 6, 100, 5)
    drain(book)
    ref.drain_events()
    assert_same_state(book, ref)


def test_fok_not_fillable_is_rejected_and_book_untouched():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, SELL, 3, 100)
        b.submit(2, 2, SELL, 3, 101)
        b.submit(3, 3, SELL, 3, 103)
        b.drain_events()
    before = book.open_orders().tolist()
    assert book.submit(9, 4, BUY, 7, 101, tif=TIF_FOK) == MATCH_REJECT_FOK_NOT_FILLABLE
    assert ref.submit(9, 4, BUY, 7, 101, tif=TIF_FOK) == MATCH_REJECT_FOK_NOT_FILLABLE
    execs, oevs = drain(book)
    assert execs == []
    assert len(oevs) == 1
    rej = ev(oevs, 0)
    assert (rej["kind"], rej["reason"], rej["order_id"], rej["qty"], rej["tif"]) == (
        ORDEV_REJECTED, MATCH_REJECT_FOK_NOT_FILLABLE, 9, 7, TIF_FOK)
    assert book.open_orders().tolist() == before
    assert 9 not in book
    # exactly fillable across two levels: filled, nothing rests or is canceled
    assert book.submit(10, 4, BUY, 6, 101, tif=TIF_FOK) == MATCH_OK
    execs, oevs = drain(book)
    assert sum(e[6] for e in execs) == 6
    assert [e[6] for e in oevs] == [ORDEV_ACCEPTED]
    assert book.top() == (None, None, 103, 3)


def test_fok_market_order():
    book = MatchingBook("X")
    assert book.submit(1, 1, BUY, 1, None, ORDTYPE_MARKET, TIF_FOK) == \
        MATCH_REJECT_FOK_NOT_FILLABLE
    book.submit(2, 2, SELL, 5, 100)
    assert book.submit(3, 1, BUY, 5, None, ORDTYPE_MARKET, TIF_FOK) == MATCH_OK
    assert len(book) == 0


def test_ioc_remainder_is_cancelled():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, SELL, 3, 100)
        b.submit(2, 1, SELL, 3, 102)
        b.drain_events()
        assert b.submit(5, 2, BUY, 10, 101, tif=TIF_IOC) == MATCH_OK
    execs, oevs = drain(book)
    assert [(e[1], e[6]) for e in execs] == [(1, 3)]
    assert [e[6] for e in oevs] == [ORDEV_ACCEPTED, ORDEV_CANCELED]
    c = ev(oevs, 1)
    assert (c["order_id"], c["reason"], c["qty"]) == (5, CANCEL_IOC_REMAINDER, 7)
    assert 5 not in book
    assert book.top() == (None, None, 102, 3)
    assert (execs, oevs) == ref.drain_events()


def test_market_order_into_empty_book():
    book, ref = books()
    for b in (book, ref):
        assert b.submit(1, 1, BUY, 5, None, ORDTYPE_MARKET, TIF_DAY) == MATCH_OK
    execs, oevs = drain(book)
    assert execs == []
    assert [(e[6], e[7], e[4], e[5]) for e in oevs] == [
        (ORDEV_ACCEPTED, 0, NO_PRICE, 5), (ORDEV_CANCELED, CANCEL_IOC_REMAINDER, NO_PRICE, 5)]
    assert len(book) == 0 and book.top() == (None, None, None, None)
    assert (execs, oevs) == ref.drain_events()


def test_market_order_sweeps_levels_and_never_rests():
    book = MatchingBook("X")
    book.submit(1, 1, SELL, 2, 100)
    book.submit(2, 1, SELL, 2, 105)
    book.submit(3, 1, SELL, 2, 1_000_000)
    drain(book)
    assert book.submit(4, 2, BUY, 7, None, ORDTYPE_MARKET, TIF_GTC) == MATCH_OK
    execs, oevs = drain(book)
    assert [(e[5], e[6]) for e in execs] == [(100, 2), (105, 2), (1_000_000, 2)]
    assert ev(oevs, 1)["reason"] == CANCEL_IOC_REMAINDER and ev(oevs, 1)["qty"] == 1
    assert len(book) == 0


def _smp_setup(policy):
    book, ref = books(policy)
    for b in (book, ref):
        b.submit(1, 7, SELL, 2, 100)     # other owner, best
        b.submit(2, 5, SELL, 2, 100)     # own order, second in the queue
        b.submit(3, 8, SELL, 2, 101)
        b.drain_events()
        b.submit(10, 5, BUY, 6, 101)     # owner 5 buys through its own resting order
    out = drain(book)
    assert out == ref.drain_events()
    assert_same_state(book, ref)
    return book, out


def test_self_match_cancel_incoming_is_the_default():
    book, (execs, oevs) = _smp_setup(SMP_CANCEL_INCOMING)
    assert [(e[1], e[6]) for e in execs] == [(1, 2)]
    last = ev(oevs, len(oevs) - 1)
    assert (last["kind"], last["order_id"], last["reason"], last["qty"]) == (
        ORDEV_CANCELED, 10, CANCEL_SELF_MATCH, 4)
    assert book.order(2).qty == 2 and 10 not in book       # resting order untouched


def test_self_match_cancel_resting():
    book, (execs, oevs) = _smp_setup(SMP_CANCEL_RESTING)
    assert [(e[1], e[6]) for e in execs] == [(1, 2), (3, 2)]
    canceled = events_of(oevs, ORDEV_CANCELED)
    assert [(c[1], c[7], c[5]) for c in canceled] == [(2, CANCEL_SELF_MATCH, 2)]
    assert 2 not in book
    assert book.order(10).qty == 2 and book.best_bid == 101   # remainder rests


def test_self_match_cancel_both():
    book, (execs, oevs) = _smp_setup(SMP_CANCEL_BOTH)
    assert [(e[1], e[6]) for e in execs] == [(1, 2)]
    canceled = events_of(oevs, ORDEV_CANCELED)
    assert [(c[1], c[7], c[5]) for c in canceled] == [(2, CANCEL_SELF_MATCH, 2),
                                                      (10, CANCEL_SELF_MATCH, 4)]
    assert 2 not in book and 10 not in book and book.order(3).qty == 2


def test_self_match_none_trades_with_itself():
    book, (execs, _) = _smp_setup(SMP_NONE)
    assert [(e[1], e[3], e[4], e[6]) for e in execs] == [(1, 7, 5, 2), (2, 5, 5, 2),
                                                         (3, 8, 5, 2)]


def test_self_match_prevention_ignores_anonymous_owner():
    book = MatchingBook("X", SMP_CANCEL_BOTH)
    book.submit(1, 0, SELL, 2, 100)
    book.submit(2, 0, BUY, 2, 100)
    execs, _ = drain(book)
    assert len(execs) == 1 and len(book) == 0


@pytest.mark.parametrize("policy, fok4, fok2", [
    (SMP_CANCEL_INCOMING, MATCH_REJECT_FOK_NOT_FILLABLE, MATCH_REJECT_FOK_NOT_FILLABLE),
    (SMP_CANCEL_BOTH, MATCH_REJECT_FOK_NOT_FILLABLE, MATCH_REJECT_FOK_NOT_FILLABLE),
    (SMP_CANCEL_RESTING, MATCH_REJECT_FOK_NOT_FILLABLE, MATCH_OK),
    (SMP_NONE, MATCH_OK, MATCH_OK),
])
def test_fok_counts_only_what_self_match_prevention_allows(policy, fok4, fok2):
    for qty, expected in ((4, fok4), (2, fok2)):
        book, ref = books(policy)
        for b in (book, ref):
            b.submit(1, 5, SELL, 2, 100)     # own order, first in the queue
            b.submit(2, 7, SELL, 2, 100)
            assert b.submit(3, 5, BUY, qty, 100, tif=TIF_FOK) == expected
        execs, oevs = drain(book)
        assert (execs, oevs) == ref.drain_events()
        assert sum(e[6] for e in execs) == (qty if expected == MATCH_OK else 0)
        if expected != MATCH_OK:
            assert book.open_orders()["order_id"].tolist() == [1, 2]    # untouched
        assert_same_state(book, ref)


def test_duplicate_id():
    book, ref = books()
    for b in (book, ref):
        assert b.submit(1, 1, BUY, 5, 100) == MATCH_OK
        assert b.submit(1, 2, SELL, 5, 90) == MATCH_REJECT_DUPLICATE_ID
        assert b.add_resting(1, 2, SELL, 5, 90) == MATCH_REJECT_DUPLICATE_ID
    execs, oevs = drain(book)
    assert execs == []          # the duplicate did not trade
    rej = events_of(oevs, ORDEV_REJECTED)
    assert [(r[1], r[7], r[3]) for r in rej] == [(1, MATCH_REJECT_DUPLICATE_ID, 2)] * 2
    assert book.order(1) == (1, 1, BUY, 100, 5, TIF_DAY, 0)
    assert (execs, oevs) == ref.drain_events()
    assert book.op_count == 3                 # rejected operations count too


def test_cancel_unknown_and_other_unknown_ids():
    book, ref = books()
    for b in (book, ref):
        assert b.cancel(42) == MATCH_REJECT_UNKNOWN_ORDER
        assert b.replace(42, 0, 1, 100) == MATCH_REJECT_UNKNOWN_ORDER
        assert b.execute(42, 1) == MATCH_REJECT_UNKNOWN_ORDER
        b.submit(1, 1, BUY, 5, 100)
        assert b.cancel(1) == MATCH_OK
        assert b.cancel(1) == MATCH_REJECT_UNKNOWN_ORDER
    execs, oevs = drain(book)
    rej = events_of(oevs, ORDEV_REJECTED)
    assert [r[7] for r in rej] == [MATCH_REJECT_UNKNOWN_ORDER] * 4
    c = events_of(oevs, ORDEV_CANCELED)
    assert [(x[1], x[7], x[5]) for x in c] == [(1, CANCEL_USER, 5)]
    assert (execs, oevs) == ref.drain_events()
    assert len(book) == 0


def test_execute_keeps_priority_and_removes_when_done():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, SELL, 5, 100)
        b.submit(2, 2, SELL, 5, 100)
        b.drain_events()
        assert b.execute(1, 2) == MATCH_OK
        assert b.execute(1, 4) == MATCH_REJECT_EXECUTE_TOO_LARGE
        assert b.execute(2, 5) == MATCH_OK
    execs, oevs = drain(book)
    e0 = ex_dict(execs, 0)
    assert (e0["maker_order_id"], e0["taker_order_id"], e0["taker_owner"], e0["qty"],
            e0["maker_leaves"], e0["flags"], e0["aggressor_side"]) == (
        1, 0, 0, 2, 3, EXEC_FLAG_EXTERNAL, BUY)
    assert book.open_orders()[["order_id", "qty"]].tolist() == [(1, 3)]
    assert book.top() == (None, None, 100, 3)
    assert (execs, oevs) == ref.drain_events()


def test_expire_day_cancels_day_orders_only():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, BUY, 1, 100, tif=TIF_DAY)
        b.submit(2, 1, BUY, 1, 100, tif=TIF_GTC)
        b.submit(3, 1, BUY, 1, 99, tif=TIF_DAY)
        b.submit(4, 1, SELL, 1, 105, tif=TIF_DAY)
        b.submit(5, 1, SELL, 1, 106, tif=TIF_GTC)
        b.add_resting(6, 1, SELL, 1, 104, tif=TIF_DAY)
        b.drain_events()
        assert b.expire_day() == 4
        assert b.expire_day() == 0
    execs, oevs = drain(book)
    assert [(e[1], e[7]) for e in oevs] == [(1, CANCEL_EXPIRED), (3, CANCEL_EXPIRED),
                                            (6, CANCEL_EXPIRED), (4, CANCEL_EXPIRED)]
    assert book.open_orders()["order_id"].tolist() == [2, 5]
    assert (execs, oevs) == ref.drain_events()
    assert_same_state(book, ref)


def test_emit_order_events_off_keeps_executions():
    book = MatchingBook("X", emit_order_events=False)
    book.submit(1, 1, SELL, 2, 100)
    book.submit(2, 2, BUY, 3, 100)
    book.cancel(99)
    execs, oevs = drain(book)
    assert oevs == [] and len(execs) == 1 and execs[0][0] == 0
    book.emit_order_events = True
    book.cancel(2)
    assert drain(book)[1][0][6] == ORDEV_CANCELED


def test_drain_into_caller_arrays_keeps_the_rest_pending():
    book, ref = books()
    for b in (book, ref):
        b.submit(1, 1, SELL, 1, 100)
        b.submit(2, 1, SELL, 1, 101)
        b.submit(3, 2, BUY, 5, 101)        # 2 executions, 6 order events in all
    rex, roe = ref.drain_events()
    xs = np.zeros(1, EXEC_DTYPE)
    os_ = np.zeros(3, ORDER_EVENT_DTYPE)
    assert book.drain_into(xs, os_) == (1, 3)
    assert xs.tolist() == rex[:1] and os_.tolist() == roe[:3]
    assert book.pending_events() == (1, 3)
    assert book.drain_into(None, os_) == (0, 3)
    assert os_.tolist() == roe[3:]
    assert book.drain_into(xs, None) == (1, 0)
    assert xs.tolist() == rex[1:]
    assert book.pending_events() == (0, 0) and book.drain_into(xs, os_) == (0, 0)
    with pytest.raises(ValueError, match="execs"):
        book.drain_into(np.zeros(2, ORDER_EVENT_DTYPE), None)
    with pytest.raises(ValueError, match="order_events"):
        book.drain_into(None, np.zeros(2, np.int64))
    ex, oe = book.drain_events()          # nothing pending: empty, read-only
    assert ex.size == 0 and oe.size == 0 and not ex.flags.writeable


def test_numpy_integers_are_accepted_at_the_python_edge():
    book = MatchingBook("X")
    row = np.zeros(1, OPEN_ORDER_DTYPE)
    row["order_id"], row["price"] = 7, 100
    assert book.submit(row["order_id"][0], np.int64(1), np.uint8(BUY), np.int32(5),
                       row["price"][0], np.int8(ORDTYPE_LIMIT), np.uint8(TIF_GTC)) == MATCH_OK
    assert book.order(np.uint64(7)).qty == 5
    assert book.cancel(np.uint64(7)) == MATCH_OK


def test_depth_open_orders_and_order_info():
    book = MatchingBook("X")
    book.submit(1, 1, BUY, 5, 100)
    book.submit(2, 2, BUY, 6, 100)
    book.submit(3, 1, BUY, 7, 98)
    book.submit(4, 2, SELL, 8, 103, tif=TIF_GTC)
    book.submit(5, 2, SELL, 9, 102)
    d = book.depth(BUY, 10)
    assert d.dtype == M.LEVEL_DTYPE
    assert d.tolist() == [(100, 11, 2), (98, 7, 1)]
    assert book.depth(SELL, 1).tolist() == [(102, 9, 1)]
    assert book.depth(SELL, 0).size == 0
    oo = book.open_orders()
    assert oo.dtype == OPEN_ORDER_DTYPE
    assert oo["order_id"].tolist() == [1, 2, 3, 5, 4]
    assert book.open_orders(owner=2)["order_id"].tolist() == [2, 5, 4]
    assert book.open_orders(owner=99).size == 0
    info = book.order(4)
    assert info == M.OrderInfo(4, 2, SELL, 103, 8, TIF_GTC, 3)
    assert (info.price, info.qty, info.tif) == (103, 8, TIF_GTC)
    assert book.level_count(BUY) == 2 and book.level_count(SELL) == 2


def test_extreme_values():
    book, ref = books()
    big_id = 2**64 - 1
    big = 2**62
    for b in (book, ref):
        assert b.submit(big_id, -(2**63), SELL, big, 2**63 - 1) == MATCH_OK
        assert b.submit(2**63, 2**63 - 1, BUY, big, -(2**63) + 1) == MATCH_OK
        assert b.submit(5, 1, BUY, big, 2**63 - 1, tif=TIF_IOC) == MATCH_OK
    assert drain(book) == ref.drain_events()
    assert book.order(big_id) is None and book.order(2**63).price == -(2**63) + 1
    assert_same_state(book, ref)


# ----------------------------------------------------------------- Python-edge errors

@pytest.mark.parametrize("call, message", [
    (lambda b: b.submit(1, 1, 2, 5, 100), "side"),
    (lambda b: b.submit(1, 1, -1, 5, 100), "side"),
    (lambda b: b.submit(1, 1, "buy", 5, 100), "side"),
    (lambda b: b.submit(1, 1, BUY, 0, 100), "qty"),
    (lambda b: b.submit(1, 1, BUY, -3, 100), "qty"),
    (lambda b: b.submit(1, 1, BUY, 2**63, 100), "qty"),
    (lambda b: b.submit(1, 1, BUY, 5, 100, ord_type=2), "ord_type"),
    (lambda b: b.submit(1, 1, BUY, 5, 100, ord_type="LIMIT"), "ord_type"),
    (lambda b: b.submit(1, 1, BUY, 5, 100, tif=7), "tif"),
    (lambda b: b.submit(1, 1, BUY, 5, 100, tif=2**70), "tif"),
    (lambda b: b.submit(1, 1, BUY, 5, 100, tif=None), "tif"),
    (lambda b: b.submit(1, 1, 2**65, 5, 100), "side"),
    (lambda b: b.submit(0, 1, BUY, 5, 100), "order_id"),
    (lambda b: b.submit(-1, 1, BUY, 5, 100), "order_id"),
    (lambda b: b.submit(2**64, 1, BUY, 5, 100), "order_id"),
    (lambda b: b.submit(1.0, 1, BUY, 5, 100), "order_id"),
    (lambda b: b.submit(1, 1, BUY, 5, None), "price"),
    (lambda b: b.submit(1, 1, BUY, 5, NO_PRICE), "price"),
    (lambda b: b.submit(1, 1, BUY, 5, 100.5), "price"),
    (lambda b: b.submit(1, 2**63, BUY, 5, 100), "owner"),
    (lambda b: b.add_resting(1, 1, BUY, 5, 100, tif=TIF_IOC), "tif"),
    (lambda b: b.replace(1, 0, 0, 100), "qty"),
    (lambda b: b.replace(1, -5, 1, 100), "new_order_id"),
    (lambda b: b.replace(1, 0, 1, None), "price"),
    (lambda b: b.execute(1, 0), "qty"),
    (lambda b: b.cancel(0), "order_id"),
    (lambda b: b.depth(3, 1), "side"),
    (lambda b: b.depth(BUY, -1), "n"),
])
def test_bad_arguments_raise_value_error_naming_the_field(call, message):
    book = MatchingBook("X")
    book.submit(1, 1, SELL, 1, 200)
    drain(book)
    with pytest.raises(ValueError, match=message):
        call(book)
    assert drain(book) == ([], [])            # nothing happened
    assert book.open_orders()["order_id"].tolist() == [1]


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="self_match_policy"):
        MatchingBook("X", self_match_policy=4)
    with pytest.raises(ValueError, match="capacity"):
        MatchingBook("X", capacity=0)


def _ops(rows):
    out = np.zeros(len(rows), dtype=L3_OP_DTYPE)
    for i, r in enumerate(rows):
        for k, v in r.items():
            out[i][k] = v
    return out


@pytest.mark.parametrize("row, message", [
    ({"op": 9, "order_id": 1, "qty": 1, "price": 1}, "unknown op"),
    ({"op": L3_OP_ADD, "order_id": 0, "qty": 1, "price": 1}, "order_id 0"),
    ({"op": L3_OP_ADD, "order_id": 3, "qty": 0, "price": 1}, "qty"),
    ({"op": L3_OP_ADD, "order_id": 3, "qty": 1, "price": 1, "side": 2}, "side"),
    ({"op": L3_OP_ADD, "order_id": 3, "qty": 1, "price": 1, "tif": 4}, "tif"),
    ({"op": L3_OP_ADD, "order_id": 3, "qty": 1, "price": 1, "ord_type": 2}, "ord_type"),
    ({"op": L3_OP_ADD, "order_id": 3, "qty": 1, "price": NO_PRICE}, "price"),
    ({"op": L3_OP_ADD_RESTING, "order_id": 3, "qty": 1, "price": 1, "tif": TIF_IOC}, "TIF_DAY"),
    ({"op": L3_OP_REPLACE, "order_id": 3, "qty": 1, "price": NO_PRICE}, "price"),
    ({"op": L3_OP_EXECUTE, "order_id": 3, "qty": -1}, "qty"),
])
def test_bad_batch_row_raises_before_anything_is_applied(row, message):
    book = MatchingBook("X")
    good = {"op": L3_OP_ADD, "order_id": 2, "qty": 1, "price": 100}
    ops = _ops([good, row])
    with pytest.raises(ValueError, match=rf"ops\[1\].*{message}"):
        book.apply_ops(ops)
    assert len(book) == 0 and drain(book) == ([], [])


def test_apply_ops_argument_checks():
    book = MatchingBook("X")
    with pytest.raises(ValueError, match="L3_OP_DTYPE"):
        book.apply_ops(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="L3_OP_DTYPE"):
        book.apply_ops([(1, 0, 0, 1, 1, 0, 0, 0, 0)])
    ops = _ops([{"op": L3_OP_ADD, "order_id": 2, "qty": 1, "price": 100}])
    with pytest.raises(ValueError, match="statuses"):
        book.apply_ops(ops, statuses=np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="statuses"):
        book.apply_ops(ops, statuses=np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="tops"):
        book.apply_ops(ops, tops=np.zeros(1, np.int64))
    assert len(book) == 0
    # a strided (non-contiguous) view is accepted
    two = _ops([{"op": L3_OP_ADD, "order_id": 2, "qty": 1, "price": 100},
                {"op": L3_OP_ADD, "order_id": 3, "qty": 1, "price": 100}])
    assert book.apply_ops(two[::2]) == 0 and len(book) == 1
    assert book.apply_ops(two[:0]) == 0


# ----------------------------------------------------------------- growth

def test_growth_of_pool_map_and_levels_well_past_initial_capacity():
    rng = random.Random(7)
    book, ref = books(SMP_CANCEL_RESTING, capacity=4)
    assert book.node_capacity == 4 and book.map_capacity == 16
    ids = list({rng.randrange(1, 2**64): None for _ in range(6000)})
    assert len(ids) == 6000
    for i, oid in enumerate(ids):
        side = i % 2
        price = 10_000 - rng.randrange(1, 400) if side == BUY else 10_000 + rng.randrange(0, 400)
        qty = rng.randrange(1, 50)
        for b in (book, ref):
            assert b.submit(oid, i % 5, side, qty, price, tif=TIF_GTC) == MATCH_OK
    assert len(book) == 6000
    assert book.node_capacity >= 6000 and book.map_capacity >= 12000
    assert book.level_capacity >= book.level_count(BUY) + book.level_count(SELL) > 64
    assert all(oid in book for oid in ids)
    # churn: cancel two thirds, re-add new ids into the freed nodes and map slots
    for oid in ids[::3] + ids[1::3]:
        for b in (book, ref):
            assert b.cancel(oid) == MATCH_OK
    cap = book.node_capacity
    fresh = [oid for oid in {rng.randrange(1, 2**40): None for _ in range(3000)}
             if oid not in set(ids)]
    for i, oid in enumerate(fresh):
        for b in (book, ref):
            b.add_resting(oid, 9, i % 2, 3, 9_000 + i % 2 * 2_000 + i % 50)
    assert book.node_capacity == cap            # freed nodes were reused
    assert drain(book) == ref.drain_events()
    assert_same_state(book, ref)
    for oid in ids[2::3] + fresh:
        assert book.order(oid) == ref.order(oid)
    for oid in ids[::3]:
        assert book.order(oid) is None
    # a sweep through everything
    for b in (book, ref):
        b.submit(1, 77, BUY, 10**9, None, ORDTYPE_MARKET, TIF_IOC)
        b.submit(2, 77, SELL, 10**9, None, ORDTYPE_MARKET, TIF_IOC)
    assert drain(book) == ref.drain_events()
    assert len(book) == 0 and book.top() == (None, None, None, None)


def test_id_map_churn_with_colliding_probe_runs():
    """Many inserts and deletes at high load exercise the backward-shift deletion."""
    rng = random.Random(11)
    book = MatchingBook("X", capacity=8)
    live: set[int] = set()
    pool = [rng.randrange(1, 2**64) for _ in range(400)] + list(range(1, 400))
    for step in range(20_000):
        oid = rng.choice(pool)
        if oid in live:
            assert book.cancel(oid) == MATCH_OK
            live.discard(oid)
        else:
            assert book.add_resting(oid, 1, BUY, 1, rng.randrange(1, 30)) == MATCH_OK
            live.add(oid)
        if step % 1000 == 0:
            assert all((p in book) == (p in live) for p in pool)
    assert all((p in book) == (p in live) for p in pool)
    assert len(book) == len(live)
    assert sorted(book.open_orders()["order_id"].tolist()) == sorted(live)
    book.check_invariants()


# ----------------------------------------------------------------- differential (hypothesis)

# Operations are drawn symbolically and given concrete ids by `resolve` against the
# reference's state at that moment, so cancels, replaces and executions mostly hit
# live orders (sometimes an unknown id), submits sometimes reuse a live id, and some
# replaces keep the price and shrink (the priority-kept path).
owners = st.integers(0, 3)
sides = st.sampled_from((BUY, SELL))
qtys = st.sampled_from(range(1, 13))        # sampled_from: uniform, no bias to the bounds
prices = st.sampled_from(range(97, 104))
tifs = st.sampled_from((TIF_DAY, TIF_GTC, TIF_DAY, TIF_GTC, TIF_IOC, TIF_FOK))
fresh_or_dup = st.sampled_from(range(10))  # 0: the id of a live order (a duplicate)
pick = st.sampled_from(range(9))           # which live order; 8: an unknown id

op_submit = st.tuples(st.just("submit"), fresh_or_dup, owners, sides, qtys, prices,
                      st.sampled_from((ORDTYPE_LIMIT,) * 4 + (ORDTYPE_MARKET,)), tifs)
op_resting = st.tuples(st.just("add_resting"), fresh_or_dup, owners, sides, qtys, prices,
                       st.sampled_from((TIF_DAY, TIF_GTC)))
op_cancel = st.tuples(st.just("cancel"), pick)
op_replace = st.tuples(st.just("replace"), pick,
                       st.sampled_from(("same", "same", "fresh", "dup")),
                       st.sampled_from(("smaller", "same", "any")), qtys, prices, st.booleans())
op_execute = st.tuples(st.just("execute"), pick, qtys)
op_expire = st.tuples(st.just("expire_day"))
operations = st.lists(
    st.one_of(op_submit, op_submit, op_submit, op_submit, op_resting, op_resting, op_cancel,
              op_replace, op_replace, op_execute, op_expire), min_size=8, max_size=80)


class Resolver:
    """Concrete ids and prices for symbolic operations, from the reference's state."""

    def __init__(self):
        self.next_id = 0

    def fresh(self):
        self.next_id += 1
        return self.next_id

    def __call__(self, ref: MatchingBookRef, op):
        name = op[0]
        live = list(ref.orders)

        def target(k):
            return 1_000_000 + k if k == 8 or not live else live[k % len(live)]

        if name in ("submit", "add_resting"):
            oid = live[0] if op[1] == 0 and live else self.fresh()
            return (name, oid, *op[2:])
        if name in ("cancel", "execute"):
            return (name, target(op[1]), *op[2:])
        if name == "replace":
            _, k, how_id, how_px, qty, price, match = op
            oid = target(k)
            order = ref.orders.get(oid)
            if order is not None and how_px == "smaller":
                price, qty = order.price, max(1, order.qty - qty)
            elif order is not None and how_px == "same":
                price = order.price
            new = {"same": 0, "fresh": self.fresh(), "dup": target(k + 1)}[how_id]
            return (name, oid, new, qty, price, match)
        return op


def call(book, op):
    name, *args = op
    if name == "submit":
        oid, owner, side, qty, price, ord_type, tif = args
        return book.submit(oid, owner, side, qty,
                           None if ord_type == ORDTYPE_MARKET else price, ord_type, tif)
    if name == "replace":
        oid, new_id, qty, price, match = args
        return book.replace(oid, new_id, qty, price, match=match)
    return getattr(book, name)(*args)


def to_row(op):
    name, *args = op
    row = {"order_id": args[0]}
    if name == "submit":
        _, owner, side, qty, price, ord_type, tif = args
        row.update(op=L3_OP_ADD, owner=owner, side=side, qty=qty, price=price,
                   ord_type=ord_type, tif=tif)
    elif name == "add_resting":
        _, owner, side, qty, price, tif = args
        row.update(op=L3_OP_ADD_RESTING, owner=owner, side=side, qty=qty, price=price, tif=tif)
    elif name == "cancel":
        row.update(op=L3_OP_CANCEL)
    elif name == "replace":
        _, new_id, qty, price, match = args
        row.update(op=L3_OP_REPLACE if match else L3_OP_REPLACE_RESTING, new_order_id=new_id,
                   qty=qty, price=price)
    else:
        row.update(op=L3_OP_EXECUTE, qty=args[1])
    return row


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_differential_step_by_step(policy, ops):
    book, ref = books(policy, capacity=2)
    resolve = Resolver()
    for i, symbolic in enumerate(ops):
        op = resolve(ref, symbolic)
        where = f"step {i}: {op}"
        assert call(book, op) == call(ref, op), where
        assert drain(book) == ref.drain_events(), where
        assert_same_state(book, ref, where)
        if len(op) > 1:
            assert book.order(op[1]) == ref.order(op[1]), where


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_differential_batch(policy, ops):
    """The same flow as one apply_ops call: statuses, top after every row, all events."""
    ref = MatchingBookRef("TEST", self_match_policy=policy)
    resolve = Resolver()
    rows, expected_status, expected_tops = [], [], []
    for symbolic in ops:
        if symbolic[0] == "expire_day":
            continue
        op = resolve(ref, symbolic)
        rows.append(to_row(op))
        expected_status.append(call(ref, op))
        expected_tops.append(_ref_top(ref))
    book = MatchingBook("TEST", self_match_policy=policy, capacity=2)
    statuses = np.full(len(rows), 255, np.uint8)
    tops = np.zeros(len(rows), TOP_DTYPE)
    rejected = book.apply_ops(_ops(rows), statuses, tops)
    assert statuses.tolist() == expected_status
    assert rejected == sum(s != MATCH_OK for s in expected_status)
    assert tops.tolist() == expected_tops
    assert drain(book) == ref.drain_events()
    assert_same_state(book, ref)


def _ref_top(ref):
    """The reference's top in TOP_DTYPE terms (NO_PRICE and 0 for an empty side)."""
    bid, bq, ask, aq = ref.top()
    return (NO_PRICE if bid is None else bid, bq or 0, NO_PRICE if ask is None else ask, aq or 0)


# ----------------------------------------------------------------- the real L3 feed

@pytest.fixture(scope="module")
def l3_replay():
    return load_bitfinex_l3(shared_file("L3_feed.json"))


def test_l3_loader_converts_exactly(l3_replay):
    r = l3_replay
    assert r.symbol == "tBTCUSD" and r.tick_size == BITFINEX_TICK and r.lot_size == BITFINEX_LOT
    assert r.ops.dtype == L3_OP_DTYPE
    assert r.book_frames == 99_999 and r.skipped_frames == 2
    # frame 2 is the snapshot: 50 resting adds; first entry [60504777678, 60945, 0.246386]
    snap = r.ops[r.frame_index == 2]
    assert len(snap) == 50 and set(snap["op"].tolist()) == {L3_OP_ADD_RESTING}
    assert snap[0][["order_id", "price", "qty", "side"]].tolist() == (
        60504777678, 6_094_500_000_000, 24_638_600, BUY)
    # an 8-decimal price, converted exactly (no float on the way)
    assert 6_094_035_136_398 in snap["price"].tolist()
    assert set(r.ops["op"].tolist()) == {L3_OP_ADD_RESTING, L3_OP_CANCEL, L3_OP_REPLACE_RESTING}
    assert (r.ops["owner"] == 0).all() and (r.ops["tif"] == TIF_GTC).all()


@pytest.mark.slow
def test_l3_feed_replay_matches_reference_after_every_event(l3_replay):
    ops = l3_replay.ops
    book = MatchingBook("tBTCUSD", capacity=64)
    statuses = np.full(len(ops), 255, np.uint8)
    tops = np.zeros(len(ops), TOP_DTYPE)
    assert book.apply_ops(ops, statuses, tops) == 0
    assert (statuses == MATCH_OK).all()
    ref = MatchingBookRef("tBTCUSD")
    ref_status = []
    crossed = 0
    for i, row in enumerate(ops.tolist()):
        oid, new_id, owner, price, qty, op, side, ord_type, tif = row
        ref_status.append(ref.apply_op(op, oid, new_id, owner, side, qty, price, ord_type, tif))
        expected = _ref_top(ref)
        if tuple(tops[i]) != expected:
            pytest.fail(f"row {i} (frame {l3_replay.frame_index[i]}): top {tuple(tops[i])} "
                        f"!= reference {expected}")
        if expected[0] != NO_PRICE and expected[2] != NO_PRICE and expected[0] >= expected[2]:
            crossed += 1
    assert set(ref_status) == {MATCH_OK}
    assert crossed > 0          # the feed is crossed at moments: applied without matching
    execs, oevs = book.drain_events()
    rex, roe = ref.drain_events()
    assert execs.size == 0 and rex == []
    assert oevs.tolist() == roe
    assert book.open_orders().tolist() == ref.open_orders()
    for side in (BUY, SELL):
        assert book.depth(side, 100).tolist() == ref.depth(side, 100)
    book.check_invariants()


def test_l3_feed_per_event_calls_equal_the_batch(l3_replay):
    """The first 20,000 rows through the per-event Python API, one call each."""
    ops = l3_replay.ops[:20_000]
    batch = MatchingBook("tBTCUSD")
    tops = np.zeros(len(ops), TOP_DTYPE)
    batch.apply_ops(ops, tops=tops)
    single = MatchingBook("tBTCUSD")
    for i, (oid, new_id, owner, price, qty, op, side, _, tif) in enumerate(ops.tolist()):
        if op == L3_OP_ADD_RESTING:
            status = single.add_resting(oid, owner, side, qty, price, tif)
        elif op == L3_OP_CANCEL:
            status = single.cancel(oid)
        else:
            status = single.replace(oid, new_id, qty, price, match=False)
        assert status == MATCH_OK
        bid, bq, ask, aq = single.top()
        assert (bid, bq, ask, aq) == (
            None if tops[i][0] == NO_PRICE else tops[i][0], tops[i][1] or None,
            None if tops[i][2] == NO_PRICE else tops[i][2], tops[i][3] or None), i
    assert single.open_orders().tolist() == batch.open_orders().tolist()
    assert [a.tolist() for a in single.drain_events()] == [a.tolist() for a in
                                                            batch.drain_events()]


def test_l3_feed_then_matching_orders_against_it(l3_replay):
    """The replayed real book as liquidity: an aggressive order sweeps it like the reference."""
    ops = l3_replay.ops[:5_000]
    book, ref = books(SMP_CANCEL_INCOMING)
    book.apply_ops(ops)
    ref.apply_ops(ops)
    drain(book)
    ref.drain_events()
    bid, ask = book.best_bid, book.best_ask
    for b in (book, ref):
        b.submit(10**15, 1, BUY, 3 * 10**8, ask + 2_000_000_000, tif=TIF_IOC)     # 3 BTC
        b.submit(10**15 + 1, 1, SELL, 10**8, None, ORDTYPE_MARKET, TIF_FOK)
        b.submit(10**15 + 2, 2, SELL, 5 * 10**6, bid, tif=TIF_GTC)
    assert drain(book) == ref.drain_events()
    assert_same_state(book, ref)


# ----------------------------------------------------------------- loader edge cases

def _frames(*updates, snapshot=((1, 100, 1), (2, 101, -2))):
    head = [{"event": "info", "version": 2},
            {"event": "subscribed", "channel": "book", "chanId": 5, "symbol": "tTEST"},
            [5, [list(x) for x in snapshot]]]
    return head + [list(u) if isinstance(u, tuple) and u[1] == "hb" else [5, list(u)]
                   for u in updates]


def test_loader_semantics():
    frames = _frames((3, 99, Decimal("0.5")),        # add bid
                     (5, "hb"),                      # heartbeat
                     (3, 98, Decimal("0.25")),       # replace: price change
                     (1, 0, 1),                      # delete
                     (2, 100, Decimal("1.5")),       # ask 2 becomes a bid: cancel + add
                     (9, 0, -1))                     # delete of an unknown id
    frames.insert(4, [5, "cs", 12345])
    frames.insert(4, [6, [77, 1, 1]])                # another channel
    r = bitfinex_frames_to_ops(frames, Decimal("1"), Decimal("0.01"))
    rows = [(o["op"], o["order_id"], o["price"], o["qty"], o["side"]) for o in r.ops]
    assert rows == [
        (L3_OP_ADD_RESTING, 1, 100, 100, BUY), (L3_OP_ADD_RESTING, 2, 101, 200, SELL),
        (L3_OP_ADD_RESTING, 3, 99, 50, BUY), (L3_OP_REPLACE_RESTING, 3, 98, 25, BUY),
        (L3_OP_CANCEL, 1, 0, 0, 0), (L3_OP_CANCEL, 2, 0, 0, 0),
        (L3_OP_ADD_RESTING, 2, 100, 150, BUY), (L3_OP_CANCEL, 9, 0, 0, 0)]
    assert r.symbol == "tTEST" and r.skipped_frames == 5
    book = MatchingBook("T")
    statuses = np.zeros(len(r.ops), np.uint8)
    assert book.apply_ops(r.ops, statuses) == 1
    assert statuses.tolist()[-1] == MATCH_REJECT_UNKNOWN_ORDER
    assert book.top() == (100, 150, None, None)


def test_loader_second_snapshot_resets_the_book():
    frames = _frames((3, 99, 1)) + [[5, [[7, 50, 1], [8, 60, -1]]]]
    r = bitfinex_frames_to_ops(frames, Decimal(1), Decimal(1))
    book = MatchingBook("T")
    assert book.apply_ops(r.ops) == 0
    assert book.open_orders()["order_id"].tolist() == [7, 8]


def test_loader_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="frame 3.*not a whole multiple"):
        bitfinex_frames_to_ops(_frames((3, Decimal("99.5"), 1)), Decimal(1), Decimal(1))
    with pytest.raises(DataError, match="amount 0"):
        bitfinex_frames_to_ops(_frames((3, 99, 0)), Decimal(1), Decimal(1))
    with pytest.raises(DataError, match="order id"):
        bitfinex_frames_to_ops(_frames((-3, 99, 1)), Decimal(1), Decimal(1))
    with pytest.raises(DataError, match="expected \\[order_id, price, amount\\]"):
        bitfinex_frames_to_ops(_frames((3, 99)), Decimal(1), Decimal(1))
    with pytest.raises(DataError, match="int64"):
        bitfinex_frames_to_ops(_frames((3, 2**70, 1)), Decimal(1), Decimal(1))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(DataError, match="not valid JSON"):
        load_bitfinex_l3(bad)
    with pytest.raises(DataError, match="cannot read"):
        load_bitfinex_l3(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([[5, [[1, 60940.35136398, 0.00000001]]]]))
    r = load_bitfinex_l3(good)
    assert r.ops[0][["price", "qty"]].tolist() == (6_094_035_136_398, 1)
