"""L2 book benchmarks: one update per Python call, and whole batches in one call.

Streams (both replayed as they would arrive; both cyclic, so replaying one again
from the start keeps the book consistent):

* ``quotes``: quotes.csv (Binance futures BTCUSDT top of book, ../shared/data) mapped
  to incremental L2 updates (`engine.marketdata`, mode "replace": delete the old top,
  set the new one), closed into a loop by a last quote equal to the first. About 1.6
  updates per quote; a book of one level per side.
* ``walk``: synthetic, seeded. A mid price random-walks (5 % of events move it one
  tick, the walk mirrored so it ends where it started); the other events set a level
  at a geometric distance (mean 6 ticks) from the touch or delete an existing one
  (30 %); a move deletes the level that would cross and the one that leaves the
  64-tick window. About 50 levels per side, never crossed.

Measurements (bench/harness.py, p50/p99/p99.9 of groups, baselines in the same run):

* ``update()``: the L2Book.update call from Python. Each sample times a group of 64
  consecutive updates of the stream driven by ``deque(map(update, sides, prices,
  sizes), maxlen=0)`` (the cheapest Python loop) and is divided by 64; the driver
  and the two clock reads (~700 ns a sample, ~11 ns an update) are included. Baselines go
  through the same driver: the pure-Python reference (tests/reference/book_ref.py)
  and `order_book.OrderBook` (C, PyPI) behind the 5-line function that maps an L2
  update to its API (``book.bids[price] = size`` / ``del``).
* ``apply()``: the batch call; each sample is one call on 1024 consecutive rows of
  UPDATE_DTYPE, divided by 1024. Baseline: the reference's apply on the same rows.
  Plus the throughput of whole-stream replays (best of 3).

Run: ``python -m bench.bench_book [--quick]``; pytest-benchmark view:
``pytest bench/bench_book.py --benchmark-only``.
"""
from __future__ import annotations

import sys
from collections import deque
from functools import cache

import numpy as np
import order_book

from bench.harness import Result, machine_load, measure, report, throughput
from core_ext.book import SIDE_BUY, SIDE_SELL, UPDATE_DTYPE, L2Book
from engine.marketdata import load_quotes_csv, quote_updates
from tests.conftest import SHARED_DATA
from tests.reference.book_ref import RefBook

GROUP = 64         # updates per sample of the one-call benchmark
BATCH = 1024       # rows per apply() call of the batch benchmark


# ------------------------------------------------------------------ streams

@cache
def quotes_stream() -> np.ndarray:
    """quotes.csv as a cyclic incremental stream (see the module doc)."""
    path = SHARED_DATA / "quotes.csv"
    if not path.is_file():
        raise SystemExit(f"bench_book needs {path} (the shared market data beside the repo)")
    snap = load_quotes_csv(path, "0.01", "0.001", mode="snapshot")
    bids, asks = snap[0::2], snap[1::2]
    loop = lambda a: np.append(a, a[:1])  # noqa: E731  - a last quote equal to the first
    rows, quote = quote_updates(loop(bids["ts_ns"]), loop(bids["price"]), loop(bids["size"]),
                                loop(asks["price"]), loop(asks["size"]), mode="replace",
                                with_quote_index=True)
    return rows[quote > 0]          # the book starts as quote 0 (see prime())


@cache
def walk_stream(n: int, seed: int = 20240501, window: int = 64) -> np.ndarray:
    """Seeded random-walk L2 stream of about n rows (see the module doc)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    moves = rng.choice(np.array([-1, 0, 1]), size=half, p=[0.025, 0.95, 0.025])
    moves = np.concatenate([moves, -moves[::-1]])          # closed loop: ends where it started
    sides = rng.integers(0, 2, size=moves.size).tolist()
    depth = np.minimum(rng.geometric(1 / 6, size=moves.size) - 1, window - 1).tolist()
    delete = (rng.random(moves.size) < 0.3).tolist()
    size = rng.integers(1, 1000, size=moves.size).tolist()
    moves = moves.tolist()
    mid = 1_000_000                   # bids in [mid - window, mid - 1], asks in [mid, mid + window - 1]
    live = ({}, {})                   # price -> size per side, to delete existing levels
    rows = []
    for i, mv in enumerate(moves):
        if mv:
            if mv > 0:
                gone = ((SIDE_SELL, mid), (SIDE_BUY, mid - window))
            else:
                gone = ((SIDE_BUY, mid - 1), (SIDE_SELL, mid + window - 1))
            for side, price in gone:
                if live[side].pop(price, None) is not None:
                    rows.append((i, price, 0, side, 0))
            mid += mv
            continue
        side = sides[i]
        price = mid - 1 - depth[i] if side == SIDE_BUY else mid + depth[i]
        if delete[i] and price in live[side]:
            del live[side][price]
            rows.append((i, price, 0, side, 0))
        else:
            live[side][price] = size[i]
            rows.append((i, price, size[i], side, 0))
    return np.array(rows, dtype=UPDATE_DTYPE)


@cache
def _first_quote() -> tuple:
    rows = load_quotes_csv(SHARED_DATA / "quotes.csv", "0.01", "0.001", mode="replace")[:2]
    return tuple(rows.tolist())


def prime(name: str, stream: np.ndarray, book) -> None:
    """Bring a fresh book to the state the stream starts from."""
    if name == "quotes":
        for _ts, price, size, side, _a in _first_quote():
            book.update(side, price, size)


# ------------------------------------------------------------- book drivers

def order_book_update(ob: order_book.OrderBook):
    """An L2 update on order_book.OrderBook (its API is a sorted dict per side)."""
    books = (ob.bids, ob.asks)

    def update(side, price, size):
        levels = books[side]
        if size:
            levels[price] = size
        elif price in levels:
            del levels[price]
    return update


class _OrderBookAdapter:
    def __init__(self):
        self.ob = order_book.OrderBook()
        self.update = order_book_update(self.ob)


def _columns(stream: np.ndarray):
    return stream["side"].tolist(), stream["price"].tolist(), stream["size"].tolist()


def _groups(stream: np.ndarray, k: int):
    sides, prices, sizes = _columns(stream)
    n = len(sides) // k * k
    return [(sides[i:i + k], prices[i:i + k], sizes[i:i + k]) for i in range(0, n, k)]


def _per(result: Result, k: int, name: str, unit: str = "ns/update") -> Result:
    return Result(name=name, unit=unit, p50=result.p50 / k, p99=result.p99 / k,
                  p999=result.p999 / k, max=result.max / k, n=result.n)


def measure_one_call(label: str, name: str, stream: np.ndarray, make, samples: int) -> Result:
    """ns per update of `update(side, price, size)` calls, GROUP at a time."""
    book = make()
    prime(name, stream, book)
    upd = book.update
    groups = _groups(stream, GROUP)
    state = [0]
    count = len(groups)

    def op():
        j = state[0]
        s, p, q = groups[j]
        deque(map(upd, s, p, q), maxlen=0)
        state[0] = j + 1 if j + 1 < count else 0

    return _per(measure(label, op, samples=samples, inner=1, warmup=min(2000, samples // 4)),
                GROUP, label)


def measure_batch(label: str, name: str, stream: np.ndarray, make, samples: int) -> Result:
    """ns per update of `apply(rows)` on BATCH consecutive rows."""
    book = make()
    prime(name, stream, book)
    n = len(stream) // BATCH * BATCH
    chunks = [stream[i:i + BATCH] for i in range(0, n, BATCH)]
    state = [0]
    count = len(chunks)
    apply = book.apply

    def op():
        j = state[0]
        apply(chunks[j])
        state[0] = j + 1 if j + 1 < count else 0

    return _per(measure(label, op, samples=samples, inner=1, warmup=min(200, samples // 4)),
                BATCH, label)


def throughput_one_call(label, name, stream, make) -> dict:
    sides, prices, sizes = _columns(stream)

    def run():
        book = make()
        prime(name, stream, book)
        deque(map(book.update, sides, prices, sizes), maxlen=0)
        return len(sides)
    return throughput(label, run, repeat=3)


def throughput_batch(label, name, stream, make) -> dict:
    def run():
        book = make()
        prime(name, stream, book)
        book.apply(stream)
        return len(stream)
    return throughput(label, run, repeat=3)


# ---------------------------------------------------------------- the suite

def _entry(ours: Result, base: Result | None, **extra) -> dict:
    e = ours.as_dict()
    e["baseline"] = base.as_dict() if base else None
    e["ratio"] = base.p50 / ours.p50 if base else None
    e.update(extra)
    return e


def run(quick: bool = False) -> list[dict]:
    samples = 3_000 if quick else 20_000
    batch_samples = 300 if quick else 3_000
    walk = walk_stream(200_000 if quick else 1_000_000)
    streams = {"quotes": quotes_stream(), "walk": walk}
    entries: list[dict] = []
    rows: list[tuple[Result, Result | None]] = []
    for name, stream in streams.items():
        ours = measure_one_call(f"book.update {name}", name, stream, lambda: L2Book("B"), samples)
        ref = measure_one_call(f"ref.update {name}", name, stream, lambda: RefBook("B"),
                               samples // 4)
        ob = measure_one_call(f"order_book {name}", name, stream, _OrderBookAdapter, samples // 2)
        sub = stream if quick or name == "quotes" else stream[:200_000]
        tp = throughput_one_call(f"book.update {name}", name, stream, lambda: L2Book("B"))
        tp_ref = throughput_one_call(f"ref.update {name}", name, sub, lambda: RefBook("B"))
        tp_ob = throughput_one_call(f"order_book {name}", name, stream, _OrderBookAdapter)
        entries.append(_entry(ours, ref, throughput=tp, baseline_throughput=tp_ref))
        entries.append(_entry(_renamed(ours, f"book.update {name} vs ob"), ob,
                              throughput=tp, baseline_throughput=tp_ob))
        rows += [(ours, ref), (_renamed(ours, f"book.update {name} vs ob"), ob)]
    for name, stream in streams.items():
        ours = measure_batch(f"book.apply {name} x{BATCH}", name, stream, lambda: L2Book("B"),
                             batch_samples)
        ref = measure_batch(f"ref.apply {name} x{BATCH}", name, stream, lambda: RefBook("B"),
                            max(20, batch_samples // 30))
        sub = stream if quick or name == "quotes" else stream[:200_000]
        tp = throughput_batch(f"book.apply {name}", name, stream, lambda: L2Book("B"))
        tp_ref = throughput_batch(f"ref.apply {name}", name, sub, lambda: RefBook("B"))
        entries.append(_entry(ours, ref, throughput=tp, baseline_throughput=tp_ref))
        rows.append((ours, ref))
    run.last_table = report(rows)
    return entries


def _renamed(r: Result, name: str) -> Result:
    return Result(name=name, unit=r.unit, p50=r.p50, p99=r.p99, p999=r.p999, max=r.max, n=r.n)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    entries = run(quick=quick)
    print("ns per update (p50/p99/p99.9 over groups of "
          f"{GROUP} calls, or of one apply() of {BATCH} rows)")
    print(run.last_table)
    print()
    print(f"{'throughput':32} {'ours upd/s':>14} {'baseline upd/s':>15}")
    for e in entries:
        tp = e.get("throughput")
        base = e.get("baseline_throughput")
        if tp:
            print(f"{e['name']:32} {tp['best']:14,.0f} {(base['best'] if base else float('nan')):15,.0f}")
    print(machine_load())
    return 0


# ------------------------------------------------------ pytest-benchmark view

def test_update_one_call_quotes(benchmark):
    stream = quotes_stream()
    book = L2Book("B")
    prime("quotes", stream, book)
    sides, prices, sizes = _columns(stream)
    benchmark(lambda: deque(map(book.update, sides, prices, sizes), maxlen=0))


def test_update_one_call_walk(benchmark):
    stream = walk_stream(200_000)
    book = L2Book("B")
    sides, prices, sizes = _columns(stream)
    benchmark(lambda: deque(map(book.update, sides, prices, sizes), maxlen=0))


def test_order_book_one_call_walk(benchmark):
    stream = walk_stream(200_000)
    adapter = _OrderBookAdapter()
    sides, prices, sizes = _columns(stream)
    benchmark(lambda: deque(map(adapter.update, sides, prices, sizes), maxlen=0))


def test_apply_batch_walk(benchmark):
    stream = walk_stream(200_000)
    book = L2Book("B")
    benchmark(lambda: (book.clear(), book.apply(stream)))


def test_apply_batch_quotes(benchmark):
    stream = quotes_stream()
    book = L2Book("B")
    prime("quotes", stream, book)
    benchmark(book.apply, stream)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
