"""L3 matching book benchmarks (core_ext.matching.MatchingBook), each against the
pure-Python reference (tests/reference/matching_ref.py) measured in the same run.

Streams:

* ``feed``: the real Bitfinex tBTCUSD order-by-order feed (../shared/data/L3_feed.json,
  100,001 frames -> 100,048 L3 rows via engine.l3data: resting adds, replaces without
  matching, cancels; ~40 orders live), closed into a loop: after the last row, the
  orders still live are canceled, so the stream replays from its snapshot again.
* ``cross``: a synthetic steady flow where every submit crosses: two resting orders
  of 10**15 lots (bid 1000, ask 1001) behind 20 levels of depth per side; each submit
  is a limit order at the opposite touch, alternately buy and sell, 1..8 lots, that
  fills against the touch order (one execution) and never rests.
* ``add/cancel``: steady state around a base of 10,000 resting orders (64 prices per
  side); each cycle submits 4,096 more limit orders that rest (no cross), then
  cancels them in a shuffled order (bench/harness.py's method: groups of 16 calls,
  clock around each group, GC off; the drains between phases are not timed).

Measurements (bench/harness.py; p50/p99/p99.9 of samples; ns per event):

* ``feed apply_ops``: the batch call, each sample one apply_ops() of 1024 consecutive
  rows, with drain_events() after it, divided by 1024 (order events on), and the
  replay throughput of the whole feed (best of 5, fresh book each time), with order
  events on and off.
* ``feed per-event``: one Python call per row (add_resting / replace / cancel),
  groups of 64 calls per sample through the same plain loop for both books, and
  the replay throughput (``for k, args in rows: methods[k](*args)``).
* ``submit crossing``: one submit() per call (groups of 16); drain_events() every
  1024 submits is amortized into the figure. ``submit+drain_events`` and
  ``submit+drain_into``: the venue's real pattern, a submit then the events fetched
  after each (a new pair of arrays, or a copy into two caller-owned arrays), one
  submit per sample; the baseline for both is the reference's submit + drain.
* ``apply_ops cross``: the crossing flow as batch rows, 1024 per apply_ops() and a
  drain_events() after each (the rows never rest, so the same 1024 are reused).
* ``submit resting`` / ``cancel``: one call per event (groups of 16), see add/cancel.

Run: ``python -m bench.bench_matching [--quick]``; pytest-benchmark view:
``pytest bench/bench_matching.py --benchmark-only``.
"""
from __future__ import annotations

import gc
import random
import sys
import time
from functools import cache

import numpy as np
from core_ext.matching import (
    EXEC_DTYPE,
    L3_OP_ADD,
    L3_OP_ADD_RESTING,
    L3_OP_CANCEL,
    L3_OP_DTYPE,
    ORDER_EVENT_DTYPE,
    SIDE_BUY,
    SIDE_SELL,
    TIF_GTC,
    TIF_IOC,
    MatchingBook,
)

from bench.harness import Result, machine_load, measure, percentiles, report, throughput
from engine.l3data import load_bitfinex_l3
from tests.conftest import SHARED_DATA
from tests.reference.matching_ref import MatchingBookRef

CHUNK = 1024       # rows per apply_ops() sample
GROUP = 64         # calls per sample of the per-event feed benchmark
INNER = 16         # calls per sample of the submit / cancel benchmarks
CYCLE = 4096       # orders added then canceled per cycle of the add/cancel benchmark


# ------------------------------------------------------------------ streams

@cache
def feed_stream() -> np.ndarray:
    """The real L3 feed as L3_OP_DTYPE rows, closed into a loop (see the module doc)."""
    path = SHARED_DATA / "L3_feed.json"
    if not path.is_file():
        raise SystemExit(f"bench_matching needs {path} (the shared market data beside the repo)")
    ops = load_bitfinex_l3(path).ops
    book = MatchingBook("scratch", emit_order_events=False)
    if book.apply_ops(ops):
        raise SystemExit("the L3 feed has rejected rows; the benchmark expects a clean replay")
    live = book.open_orders()
    tail = np.zeros(len(live), dtype=L3_OP_DTYPE)
    tail["op"] = L3_OP_CANCEL
    tail["order_id"] = live["order_id"]
    return np.concatenate([ops, tail])


@cache
def _feed_args() -> tuple:
    """(method index, args) per feed row: 0 add_resting, 1 cancel, 2 replace (no match)."""
    out = []
    for oid, new_id, owner, price, qty, op, side, _ot, tif in feed_stream().tolist():
        if op == L3_OP_ADD_RESTING:
            out.append((0, (oid, owner, side, qty, price, tif)))
        elif op == L3_OP_CANCEL:
            out.append((1, (oid,)))
        else:
            out.append((2, (oid, new_id, qty, price, False)))
    return tuple(out)


def _feed_calls(book) -> list:
    """(bound method, args) per feed row, for the per-event driver."""
    methods = (book.add_resting, book.cancel, book.replace)
    return [(methods[k], a) for k, a in _feed_args()]


def _cross_book(make):
    """A book with deep liquidity where every crossing submit fills one touch order."""
    book = make()
    oid = 1
    for side, touch, step in ((SIDE_BUY, 1000, -1), (SIDE_SELL, 1001, 1)):
        book.add_resting(oid, 1, side, 10**15, touch, TIF_GTC)
        oid += 1
        for k in range(1, 21):
            for _ in range(3):
                book.add_resting(oid, 1, side, 100, touch + step * k, TIF_GTC)
                oid += 1
    book.drain_events()
    return book, oid


def _cross_flow(n: int, first_id: int, seed: int = 7) -> list[tuple]:
    rng = random.Random(seed)
    flow = []
    for i in range(n):
        side = i & 1
        flow.append((first_id + i, 2, side, rng.randint(1, 8), 1001 if side == SIDE_BUY else 1000))
    return flow


# ------------------------------------------------------------------ measurements

def _per(result: Result, k: int, name: str) -> Result:
    return Result(name=name, unit="ns/event", p50=result.p50 / k, p99=result.p99 / k,
                  p999=result.p999 / k, max=result.max / k, n=result.n)


def _unit(result: Result) -> Result:
    return Result(name=result.name, unit="ns/event", p50=result.p50, p99=result.p99,
                  p999=result.p999, max=result.max, n=result.n)


def measure_feed_batch(label: str, make, samples: int) -> Result:
    stream = feed_stream()
    n = len(stream) // CHUNK * CHUNK
    chunks = [stream[i:i + CHUNK] for i in range(0, n, CHUNK)]
    chunks.append(stream[n:])          # the rest, so that the loop closes
    sizes = [len(c) for c in chunks]
    book = make()
    apply, drain = book.apply_ops, book.drain_events
    state = [0]
    count = len(chunks)

    def op():
        j = state[0]
        apply(chunks[j])
        drain()
        state[0] = j + 1 if j + 1 < count else 0

    # samples are of full chunks except the last, shorter one: normalize by the mean size
    res = measure(label, op, samples=samples, inner=1, warmup=min(count, samples // 4))
    return _per(res, sum(sizes) / len(sizes), label)


def throughput_feed_batch(label: str, make) -> dict:
    stream = feed_stream()

    def run():
        book = make()
        book.apply_ops(stream)
        book.drain_events()
        return len(stream)
    return throughput(label, run, repeat=5)


def measure_feed_per_event(label: str, make, samples: int) -> Result:
    book = make()
    calls = _feed_calls(book)
    n = len(calls) // GROUP * GROUP
    groups = [calls[i:i + GROUP] for i in range(0, n, GROUP)]
    groups.append(calls[n:])
    count = len(groups)
    state = [0]
    drain = book.drain_events

    def op():
        j = state[0]
        for f, a in groups[j]:
            f(*a)
        state[0] = j + 1 if j + 1 < count else 0
        if state[0] % 16 == 0:
            drain()

    res = measure(label, op, samples=samples, inner=1, warmup=min(count, samples // 4))
    return _per(res, len(calls) / count, label)


def throughput_feed_per_event(label: str, make) -> dict:
    rows = _feed_args()

    def run():
        book = make()
        methods = (book.add_resting, book.cancel, book.replace)
        for k, a in rows:
            methods[k](*a)
        book.drain_events()
        return len(rows)
    return throughput(label, run, repeat=3)


def measure_submit_cross(label: str, make, samples: int, drain: str = "") -> Result:
    """submit() of crossing IOC orders; drain "": drain_events() every 1024 submits,
    "each": drain_events() after every submit, "into": drain_into() after every submit."""
    book, first = _cross_book(make)
    flow = _cross_flow(samples * (1 if drain else INNER) + 2_000, first)
    submit = book.submit
    state = [0]
    if drain == "each":
        drain_events = book.drain_events

        def op():
            i = state[0]
            submit(*flow[i], 0, TIF_IOC)
            drain_events()
            state[0] = i + 1
    elif drain == "into":
        drain_into = book.drain_into
        execs = np.zeros(64, EXEC_DTYPE)
        events = np.zeros(64, ORDER_EVENT_DTYPE)

        def op():
            i = state[0]
            submit(*flow[i], 0, TIF_IOC)
            drain_into(execs, events)
            state[0] = i + 1
    else:
        drain_events = book.drain_events

        def op():
            i = state[0]
            submit(*flow[i], 0, TIF_IOC)
            state[0] = i + 1
            if i & 1023 == 0:
                drain_events()
        return _unit(measure(label, op, samples=samples, inner=INNER, warmup=2_000))
    return _unit(measure(label, op, samples=samples, inner=1, warmup=2_000))


def _cross_rows(first_id: int) -> np.ndarray:
    """CHUNK crossing IOC submits as batch rows. They never rest, so their ids can be
    reused: the same rows are applied again and again."""
    flow = _cross_flow(CHUNK, first_id)
    rows = np.zeros(CHUNK, dtype=L3_OP_DTYPE)
    arr = np.array(flow, dtype=np.int64)
    rows["order_id"], rows["owner"], rows["side"] = arr[:, 0], arr[:, 1], arr[:, 2]
    rows["qty"], rows["price"] = arr[:, 3], arr[:, 4]
    rows["op"], rows["tif"] = L3_OP_ADD, TIF_IOC
    return rows


def measure_cross_batch(label: str, make, samples: int) -> Result:
    book, first = _cross_book(make)
    rows = _cross_rows(first)
    apply, drain = book.apply_ops, book.drain_events

    def op():
        apply(rows)
        drain()
    return _per(measure(label, op, samples=samples, inner=1, warmup=min(200, samples // 4)),
                CHUNK, label)


def throughput_cross_batch(label: str, make, n_chunks: int) -> dict:
    def run():
        book, first = _cross_book(make)
        rows = _cross_rows(first)
        for _ in range(n_chunks):
            book.apply_ops(rows)
            book.drain_events()
        return n_chunks * CHUNK
    return throughput(label, run, repeat=3)


def _timed_groups(calls, args_list, out: list) -> None:
    """Time calls(*args) over args_list in groups of INNER (as harness.measure does)."""
    clock = time.perf_counter_ns
    n = len(args_list) // INNER * INNER
    for g in range(0, n, INNER):
        t0 = clock()
        for a in args_list[g:g + INNER]:
            calls(*a)
        out.append((clock() - t0) / INNER)


def measure_add_cancel(label_add: str, label_cancel: str, make, samples: int,
                       seed: int = 11) -> tuple[Result, Result]:
    """Steady state: a base of 10,000 resting orders (64 prices a side) that stays; each
    cycle adds CYCLE more (submit, rests: no cross) and then cancels them in a shuffled
    order. Samples: groups of INNER calls; drains between phases are not timed."""
    rng = random.Random(seed)
    book = make()

    def order(oid):
        side = oid & 1
        depth = rng.randrange(1, 65)
        price = 100_000 - depth if side == SIDE_BUY else 100_000 + depth
        return (oid, 1 + oid % 4, side, rng.randint(1, 100), price, 0, TIF_GTC)

    for oid in range(1, 10_001):
        book.submit(*order(oid))
    book.drain_events()
    cycles = max(2, samples * INNER // CYCLE)
    add_ns: list[float] = []
    cancel_ns: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for c in range(cycles + 1):                     # cycle 0 is the warm-up
            first = 1_000_000 + c * CYCLE
            adds = [order(oid) for oid in range(first, first + CYCLE)]
            cancels = [(oid,) for oid in range(first, first + CYCLE)]
            rng.shuffle(cancels)
            _timed_groups(book.submit, adds, add_ns if c else [])
            book.drain_events()
            _timed_groups(book.cancel, cancels, cancel_ns if c else [])
            book.drain_events()
    finally:
        if gc_was_enabled:
            gc.enable()
    return (_unit(percentiles(label_add, np.array(add_ns))),
            _unit(percentiles(label_cancel, np.array(cancel_ns))))


# ---------------------------------------------------------------- the suite

def _entry(ours: Result, base: Result | None, **extra) -> dict:
    e = ours.as_dict()
    e["baseline"] = base.as_dict() if base else None
    e["ratio"] = base.p50 / ours.p50 if base else None
    e.update(extra)
    return e


def _ours(events: bool = True):
    return lambda: MatchingBook("BTCUSD", emit_order_events=events)


def _ref():
    return MatchingBookRef("BTCUSD")


def run(quick: bool = False) -> list[dict]:
    samples = 2_000 if quick else 20_000
    feed_chunks = 300 if quick else 3_000
    rows: list[tuple[Result, Result | None]] = []
    entries: list[dict] = []

    ours = measure_feed_batch(f"feed apply_ops x{CHUNK}", _ours(), feed_chunks)
    ref = measure_feed_batch(f"ref feed apply_ops x{CHUNK}", _ref, max(20, feed_chunks // 50))
    tp = throughput_feed_batch("feed apply_ops", _ours())
    tp_quiet = throughput_feed_batch("feed apply_ops (no order events)", _ours(False))
    tp_ref = throughput_feed_batch("ref feed apply_ops", _ref)
    entries.append(_entry(ours, ref, throughput=tp, throughput_no_order_events=tp_quiet,
                          baseline_throughput=tp_ref))
    rows.append((ours, ref))

    ours = measure_feed_per_event(f"feed per-event x{GROUP}", _ours(), samples // 4)
    ref = measure_feed_per_event(f"ref feed per-event x{GROUP}", _ref, samples // 20)
    tp = throughput_feed_per_event("feed per-event", _ours())
    tp_ref = throughput_feed_per_event("ref feed per-event", _ref)
    entries.append(_entry(ours, ref, throughput=tp, baseline_throughput=tp_ref))
    rows.append((ours, ref))

    ours = measure_submit_cross("submit crossing", _ours(), samples)
    ref = measure_submit_cross("ref submit crossing", _ref, samples // 4)
    entries.append(_entry(ours, ref))
    rows.append((ours, ref))

    ours = measure_submit_cross("submit+drain_events crossing", _ours(), samples, drain="each")
    ref = measure_submit_cross("ref submit+drain crossing", _ref, samples // 4, drain="each")
    entries.append(_entry(ours, ref))
    rows.append((ours, ref))
    ours = measure_submit_cross("submit+drain_into crossing", _ours(), samples, drain="into")
    entries.append(_entry(ours, ref))
    rows.append((ours, ref))

    ours = measure_cross_batch(f"apply_ops cross x{CHUNK}", _ours(), feed_chunks)
    ref = measure_cross_batch(f"ref apply_ops cross x{CHUNK}", _ref, max(20, feed_chunks // 50))
    n_chunks = 100 if quick else 1000
    tp = throughput_cross_batch("apply_ops cross", _ours(), n_chunks)
    tp_ref = throughput_cross_batch("ref apply_ops cross", _ref, max(5, n_chunks // 50))
    entries.append(_entry(ours, ref, throughput=tp, baseline_throughput=tp_ref))
    rows.append((ours, ref))

    add, cancel = measure_add_cancel("submit resting", "cancel", _ours(), samples)
    radd, rcancel = measure_add_cancel("ref submit resting", "ref cancel", _ref, samples // 8)
    entries += [_entry(add, radd), _entry(cancel, rcancel)]
    rows += [(add, radd), (cancel, rcancel)]

    run.last_table = report(rows)
    return entries


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    entries = run(quick=quick)
    print("ns per event (p50/p99/p99.9 of samples; see the module doc for what a sample is)")
    print(run.last_table)
    print()
    print(f"{'throughput':36} {'ours events/s':>14} {'baseline events/s':>18}")
    for e in entries:
        base = e.get("baseline_throughput")
        for key in ("throughput", "throughput_no_order_events"):
            tp = e.get(key)
            if tp:
                b = f"{base['best']:18,.0f}" if base and key == "throughput" else f"{'-':>18}"
                print(f"{tp['name']:36} {tp['best']:14,.0f} {b}")
    print(machine_load())
    return 0


# ------------------------------------------------------ pytest-benchmark view

def test_feed_apply_ops(benchmark):
    stream = feed_stream()
    book = MatchingBook("B")

    def replay():
        book.apply_ops(stream)      # the stream is a closed loop: the book ends empty
        book.drain_events()
    benchmark(replay)


def test_feed_apply_ops_no_order_events(benchmark):
    stream = feed_stream()
    book = MatchingBook("B", emit_order_events=False)
    benchmark(lambda: (book.apply_ops(stream), book.drain_events()))


def test_feed_per_event(benchmark):
    book = MatchingBook("B")
    calls = _feed_calls(book)

    def replay():
        for f, a in calls:
            f(*a)
        book.drain_events()
    benchmark(replay)


def test_submit_crossing(benchmark):
    book, first = _cross_book(_ours())
    flow = iter(_cross_flow(5_000_000, first))
    submit = book.submit

    def one():
        submit(*next(flow), 0, TIF_IOC)
    benchmark.pedantic(one, rounds=50_000, iterations=1, warmup_rounds=1_000)
    book.drain_events()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
