"""Order -> ack round trip over loopback FIX 4.4, on uvloop and on asyncio (the baseline).

What is timed: the engine-side client (gateway.fix_client, typed NewOrderSingle encoder)
sends a passive limit order to the venue simulator (gateway.venue: FIX acceptor with
dictionary validation, exchange core, L3 matching book) over a real TCP loopback
connection; the clock stops when the client has parsed the venue's ExecutionReport New
for that order. Both ends run in this process on one event loop (so each round trip
includes both sides' Python work and two socket hops), one order in flight at a time.
Per-order samples with the monotonic ns clock (time.perf_counter_ns), as
bench.harness.measure_each does; p50/p99/p99.9.

Sustained throughput: orders per second through one session with up to `window`
orders in flight (send, then wait for acks whenever the window is full), best of a few
runs, on each loop.

    python -m bench.bench_roundtrip [--quick]
    pytest bench/bench_roundtrip.py --benchmark-only     (times per 50 round trips)
"""
from __future__ import annotations

import asyncio
import gc
import sys
import time

import numpy as np
from core_ext.matching import SIDE_BUY, SIDE_SELL

from bench.harness import Result, machine_load, percentiles, report
from gateway.fix_client import ExecutionReportEvent, FixOrderClient
from gateway.venue import Venue, VenueOptions

LOOPS = ("uvloop", "asyncio")


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class _Bench:
    """A venue and a logged-on client; acks counted as they arrive."""

    def __init__(self) -> None:
        self.venue: Venue | None = None
        self.client: FixOrderClient | None = None
        self.waiting: asyncio.Future | None = None
        self.acks = 0
        self.target = 0
        self.bid = 0
        self.ask = 0
        self.n = 0

    def on_event(self, event) -> None:
        if isinstance(event, ExecutionReportEvent) and event.exec_type == "0":
            self.acks += 1
            if self.waiting is not None and self.acks >= self.target and not self.waiting.done():
                self.waiting.set_result(None)

    async def start(self) -> None:
        self.venue = Venue(VenueOptions(fix_port=0, target_comp_ids=("BENCH",), replay_events_per_tick=0,
                                        warmup_events=2_000, symbols=("AAPL",)))
        await self.venue.start()
        self.bid = self.venue.exchange.book("AAPL").best_bid
        self.ask = self.venue.exchange.book("AAPL").best_ask
        self.client = FixOrderClient("127.0.0.1", self.venue.fix_port, "BENCH", "VENUE", ["AAPL"],
                                     on_event=self.on_event)
        await self.client.start()

    def send(self) -> None:
        # passive orders on both sides, far from the touch: they rest, never trade
        self.n += 1
        k = self.n % 200
        if self.n & 1:
            self.client.new_order("AAPL", SIDE_BUY, 1, self.bid - 300 - k)
        else:
            self.client.new_order("AAPL", SIDE_SELL, 1, self.ask + 300 + k)

    async def wait_acks(self, target: int) -> None:
        if self.acks >= target:
            return
        self.target = target
        self.waiting = asyncio.get_running_loop().create_future()
        await self.waiting
        self.waiting = None

    async def roundtrips(self, count: int, warmup: int) -> np.ndarray:
        clock = time.perf_counter_ns
        for _ in range(warmup):
            self.send()
            await self.wait_acks(self.acks + 1)
        out = np.empty(count, dtype=np.float64)
        gc.disable()
        try:
            for i in range(count):
                t0 = clock()
                self.send()
                await self.wait_acks(self.acks + 1)
                out[i] = clock() - t0
        finally:
            gc.enable()
        return out

    async def throughput(self, count: int, window: int, repeat: int) -> float:
        best = 0.0
        for _ in range(repeat):
            start_acks = self.acks
            t0 = time.perf_counter_ns()
            for i in range(count):
                self.send()
                if i - (self.acks - start_acks) >= window:
                    await self.wait_acks(start_acks + i + 1 - window // 2)
            await self.wait_acks(start_acks + count)
            rate = count / ((time.perf_counter_ns() - t0) / 1e9)
            best = max(best, rate)
            self.client.mass_cancel()        # keep the book the same size run to run
            await asyncio.sleep(0.05)
        return best

    async def stop(self) -> None:
        await self.client.stop()
        await self.venue.stop()


def _run_on(kind: str, quick: bool) -> tuple[np.ndarray, float]:
    count = 1_000 if quick else 10_000
    tp_count = 2_000 if quick else 20_000

    async def main():
        bench = _Bench()
        await bench.start()
        try:
            samples = await bench.roundtrips(count, warmup=200 if quick else 1_000)
            rate = await bench.throughput(tp_count, window=64, repeat=2 if quick else 3)
        finally:
            await bench.stop()
        return samples, rate

    with asyncio.Runner(loop_factory=lambda: _new_loop(kind)) as runner:
        return runner.run(main())


def _measure(quick: bool) -> tuple[list[tuple[Result, Result | None]], list[dict]]:
    results = {kind: _run_on(kind, quick) for kind in LOOPS}
    ours = percentiles("order_ack_roundtrip", results["uvloop"][0])
    base = percentiles("order_ack_roundtrip[asyncio]", results["asyncio"][0])
    entry = ours.as_dict()
    entry["baseline"] = base.as_dict()
    entry["ratio"] = base.p50 / ours.p50
    tp, tp_base = results["uvloop"][1], results["asyncio"][1]
    n = 2_000 if quick else 20_000
    tp_entry = {"name": "order_throughput_fix", "unit": "orders/s", "p50": tp, "p99": None, "p999": None,
                "max": None, "n": n,
                "baseline": {"name": "order_throughput_fix[asyncio]", "unit": "orders/s", "p50": tp_base,
                             "p99": None, "p999": None, "max": None, "n": n},
                "ratio": tp / tp_base}
    return [(ours, base)], [entry, tp_entry]


def run(quick: bool = False) -> list[dict]:
    """Entries for `engine bench`: order_ack_roundtrip (ns, uvloop vs asyncio) and
    order_throughput_fix (orders/s through one session, uvloop vs asyncio)."""
    return _measure(quick)[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    t0 = time.perf_counter()
    rows, entries = _measure(quick)
    print(report(rows))
    tp = entries[1]
    print(f"{tp['name']:32} {tp['p50']:>12,.0f} orders/s (uvloop)   baseline {tp['baseline']['p50']:,.0f} "
          f"orders/s (asyncio)   ratio {tp['ratio']:.2f}")
    print(f"(round trip in ns, one order in flight; throughput window 64; {time.perf_counter() - t0:.1f} s; "
          f"{machine_load()})")
    return 0


# -- pytest-benchmark view -----------------------------------------------------

PYTEST_BATCH = 50


def _pytest_bench(benchmark, kind: str) -> None:
    """One benchmark call = PYTEST_BATCH sequential round trips inside one
    run_until_complete (starting and stopping the loop per order would dominate)."""
    loop = _new_loop(kind)
    asyncio.set_event_loop(loop)
    bench = _Bench()
    loop.run_until_complete(bench.start())

    async def batch():
        for _ in range(PYTEST_BATCH):
            bench.send()
            await bench.wait_acks(bench.acks + 1)

    def one():
        loop.run_until_complete(batch())
    try:
        benchmark(one)
    finally:
        loop.run_until_complete(bench.stop())
        loop.close()
        asyncio.set_event_loop(None)


def test_bench_order_ack_roundtrip_uvloop(benchmark):
    _pytest_bench(benchmark, "uvloop")


def test_bench_order_ack_roundtrip_asyncio(benchmark):
    _pytest_bench(benchmark, "asyncio")


if __name__ == "__main__":
    sys.exit(main())
