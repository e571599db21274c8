"""Feed and order-entry latency over loopback: uvloop (production) vs asyncio (baseline).

* itch_feed_loopback: one ITCH message published (encode into a MoldUDP64 packet,
  sendto) -> received by the feed handler over loopback UDP, sequence-checked and
  applied to an L2 book by ItchBookApplier -> the handler's on_result callback. One
  packet per sample, alternating Add Order / Order Delete so the book stays small.
* ouch_ack_roundtrip: OuchClient.enter_order -> SoupBinTCP over loopback TCP -> the
  venue (OuchVenue over the exchange core: decode, new_order, matching, report, encode,
  sequence) -> back -> the client's Accepted event. One order per sample (resting).

Both ends run in one process on one event loop, as the tests do, so a sample includes
two loop wake-ups; the clock is time.perf_counter_ns, GC off while sampling. Baseline:
the same code on the plain asyncio loop, measured in the same run.

    python -m bench.bench_feed [--quick]
    pytest bench/bench_feed.py --benchmark-only
"""
from __future__ import annotations

import asyncio
import gc
import sys
import time

import numpy as np

from bench.harness import Result, percentiles, report
from gateway.instruments import Instrument
from gateway.loops import run as run_on

# ---------------------------------------------------------------------------- ITCH

class _ItchRig:
    """A publisher and a handler on the running loop, one packet per step."""

    async def start(self) -> None:
        from gateway.itch_feed import ItchFeedHandler, ItchPublisher
        self.loop = asyncio.get_running_loop()
        self.fut: asyncio.Future | None = None
        self.pub = ItchPublisher([Instrument("BENCH")], auto_flush=False, heartbeat_interval_s=30)
        self.h = ItchFeedHandler(on_result=self._on_result, dead_after_s=None)
        self.pub.add_target("127.0.0.1", await self.h.start())
        self.h.request_addr = ("127.0.0.1", await self.pub.start())
        self.i = 0
        while self.h.expected != self.pub.next_seq:
            await asyncio.sleep(0.001)

    def _on_result(self, result) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter_ns())

    async def step(self) -> int:
        """Publish one packet; ns until the handler applied it."""
        self.fut = fut = self.loop.create_future()
        i = self.i
        self.i += 1
        t0 = time.perf_counter_ns()
        if i % 2 == 0:
            self.pub.order_added("BENCH", i // 2 + 1, 0, 100, 10_000 + (i // 2) % 7)
        else:
            self.pub.order_deleted("BENCH", i // 2 + 1)
        self.pub.flush()
        t1 = await fut
        return t1 - t0

    async def stop(self) -> None:
        assert self.h.counters.gaps == 0, "the benchmark feed had a gap"
        await self.pub.stop()
        await self.h.stop()


# ---------------------------------------------------------------------------- OUCH

class _OuchRig:
    """An OUCH venue over the exchange core and a logged-in client on the running loop."""

    async def start(self) -> None:
        from gateway.exchange import Exchange
        from gateway.ouch_session import Accepted, OuchClient, OuchVenue, OuchVenueConfig
        self.accepted_type = Accepted
        self.loop = asyncio.get_running_loop()
        self.fut: asyncio.Future | None = None
        self.xc = Exchange([Instrument("BENCH")], sources={}, max_order_qty=10**9)
        self.venue = OuchVenue(self.xc, OuchVenueConfig(users=(("BENCH", "pw"),)))
        port = await self.venue.start()
        self.client = OuchClient("127.0.0.1", port, "BENCH", "pw", on_event=self._on_event,
                                 instruments=[Instrument("BENCH")])
        await self.client.start()
        await self.client.wait_logged_in()
        self.i = 0

    def _on_event(self, event) -> None:
        fut = self.fut
        if type(event) is self.accepted_type and fut is not None and not fut.done():
            fut.set_result(time.perf_counter_ns())

    async def step(self) -> int:
        """Enter one (resting) order; ns until its Accepted arrived."""
        self.fut = fut = self.loop.create_future()
        self.i += 1
        t0 = time.perf_counter_ns()
        self.client.enter_order(f"K{self.i}", 0, 100, "BENCH", 9_000 + self.i % 50)
        t1 = await fut
        return t1 - t0

    async def stop(self) -> None:
        await self.client.stop()
        await self.venue.stop()


# ---------------------------------------------------------------------------- runner

def _sample(rig_cls, loop_name: str, n: int, warmup: int) -> np.ndarray:
    async def main() -> np.ndarray:
        rig = rig_cls()
        await rig.start()
        out = np.empty(n, dtype=np.float64)
        try:
            for _ in range(warmup):
                await rig.step()
            gc_was = gc.isenabled()
            gc.disable()
            try:
                for k in range(n):
                    out[k] = await rig.step()
            finally:
                if gc_was:
                    gc.enable()
        finally:
            await rig.stop()
        return out
    return run_on(main(), loop=loop_name)


def _pair(name: str, rig_cls, n: int, warmup: int) -> tuple[Result, Result]:
    base = percentiles(f"{name} (asyncio)", _sample(rig_cls, "asyncio", n, warmup))
    ours = percentiles(f"{name} (uvloop)", _sample(rig_cls, "uvloop", n, warmup))
    return ours, base


def _entry(key: str, ours: Result, base: Result) -> dict:
    return {**ours.as_dict(), "name": key,
            "baseline": base.as_dict(), "ratio": base.p50 / ours.p50}


def _measure(quick: bool) -> tuple[list[tuple[Result, Result]], list[dict]]:
    n = 2_000 if quick else 20_000
    warmup = 200 if quick else 2_000
    rows = []
    entries = []
    for key, rig in (("itch_feed_loopback", _ItchRig), ("ouch_ack_roundtrip", _OuchRig)):
        ours, base = _pair(key, rig, n, warmup)
        rows.append((ours, base))
        entries.append(_entry(key, ours, base))
    return rows, entries


def run(quick: bool = False) -> list[dict]:
    """Entries for `engine bench` (ns per packet / per round trip)."""
    return _measure(quick)[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    t0 = time.perf_counter()
    rows, _ = _measure("--quick" in argv)
    print(report(rows))
    print(f"(ns per packet / round trip, loopback, one process; {time.perf_counter() - t0:.1f} s)")
    return 0


# -- pytest-benchmark view -----------------------------------------------------
# One call = BATCH sequential round trips inside one loop.run_until_complete (whose own
# cost, large on uvloop, is then spread over the batch): divide the times by BATCH.

BATCH = 100


def _bench(benchmark, rig_cls, uv: bool) -> None:
    import uvloop
    loop = uvloop.new_event_loop() if uv else asyncio.new_event_loop()
    rig = rig_cls()

    async def batch() -> None:
        for _ in range(BATCH):
            await rig.step()
    try:
        loop.run_until_complete(rig.start())
        benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=40, iterations=1,
                           warmup_rounds=5)
        loop.run_until_complete(rig.stop())
    finally:
        loop.close()


def test_itch_feed_loopback_uvloop(benchmark):
    _bench(benchmark, _ItchRig, True)


def test_itch_feed_loopback_asyncio(benchmark):
    _bench(benchmark, _ItchRig, False)


def test_ouch_ack_roundtrip_uvloop(benchmark):
    _bench(benchmark, _OuchRig, True)


def test_ouch_ack_roundtrip_asyncio(benchmark):
    _bench(benchmark, _OuchRig, False)


if __name__ == "__main__":
    sys.exit(main())
