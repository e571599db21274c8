"""A burst over loopback: two top-of-book changes back to back, timed at the engine's write.

`engine run` (compiled strategy ``core_ext.t2t:QuoteAtTouch`` by default, ``--python``
for TouchQuoter; uvloop, pinned and busy-polling as in ``tick_to_trade_loopback``)
against the venue simulator in this process. Each sample is a burst: an order joins
the best bid and the venue cancels it as soon as that packet is out, so the second
packet follows the first by the venue's own work (~70 us on the development VM) and
reaches the engine while it is still handling the first. Each packet makes the
engine send an order.

Two readings per packet, both from its own sendto:

* **engine write** -- when the engine's write of that NewOrderSingle returned (its
  bytes are then in the venue's socket). The engine is started with
  ``bench/probe_site`` first on its PYTHONPATH: a ``sitecustomize`` that notes
  ``perf_counter_ns()`` and the ClOrdID after each NewOrderSingle write
  (CLOCK_MONOTONIC, the clock this process reads too) and saves them when it exits;
  they are matched to the bursts by ClOrdID. This is the engine's latency.
* **venue read** -- when the venue's FIX connection got the bytes (as the loopback
  benchmark times it). The venue holds the engine's orders 0.5 ms before handling
  them, so handling the first cannot delay reading the second; on a 2-vCPU machine the
  venue still shares its CPU with the engine's helper threads, and this reading carries
  that.

What the second packet waits for is the engine finishing the first -- the work it
does after the first order's write, before it reads the next datagram.

    python -m bench.loopback_burst [--quick] [--python]
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_tick_to_trade import ENGINE_COMP_ID, QUIET_S, VenueSide, _loopback_samples
from engine.orders import format_cl_ord_id

PROBE_SITE = Path(__file__).resolve().parent / "probe_site"


class BurstVenueSide(VenueSide):
    """The venue side of a burst (module docstring): `run` returns the venue-read
    latencies (first, second) per burst, each from its own packet's sendto; the FIX
    connection stamps each NewOrderSingle's bytes as they arrive and handles them only
    `HOLD_S` later."""

    HOLD_S = 0.0005
    SAMPLE_SHAPE = (2,)         # (first, second)
    ORDERS_PER_STEP = 2

    async def start(self) -> None:
        await super().start()
        from gateway.fix_transport import FixConnection
        side, original = self, self._data_received
        self.arrivals: list[int] = []
        self.engine_orders: list[str] = []
        self._held: list[tuple[object, bytes]] = []
        self.holding = False

        def data_received(conn, data: bytes) -> None:
            n = data.count(b"\x0135=D\x01")
            if n:
                t = time.perf_counter_ns()
                side.arrivals.extend([t] * n)
            if side.holding or side._held:
                if not side._held:
                    side.loop.call_later(side.HOLD_S, side._release)
                side._held.append((conn, data))
                return
            original(conn, data)
        FixConnection.data_received = data_received

    def _release(self) -> None:
        held, self._held = self._held, []
        for conn, data in held:              # in arrival order
            self._data_received(conn, data)

    def _hooked_new_order(self, account, cl_ord_id, *args, **kwargs):
        if account == ENGINE_COMP_ID:
            self.engine_orders.append(cl_ord_id)
        return super()._hooked_new_order(account, cl_ord_id, *args, **kwargs)

    def _publish(self) -> int:
        self._inject()
        self.send_t0 = 0
        sent = self.venue.publisher.flush()
        if sent != 1 or self.send_t0 == 0:
            raise RuntimeError(f"loopback burst: the injection published {sent} packets, expected 1")
        return self.send_t0

    async def step(self) -> tuple[int, int]:
        before = len(self.engine_orders)
        self.arrivals = []
        self.holding = True
        try:
            t0a = self._publish()
            t0b = self._publish()
            self.last_sends = (t0a, t0b)
            deadline = time.monotonic() + 5.0
            while len(self.arrivals) < 2 or len(self.engine_orders) - before < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"loopback burst: {len(self.arrivals)} orders reached the venue, expected 2")
                await asyncio.sleep(0)
        finally:
            self.holding = False
        ta, tb = self.arrivals[0], self.arrivals[1]
        if not (t0a < ta and t0b < tb):
            raise RuntimeError("loopback burst: an order arrived before its packet was sent")
        for cl in self.engine_orders[before:before + 2]:   # outside the timed region
            self.n += 1
            if not self.xc.cancel_order(ENGINE_COMP_ID, format_cl_ord_id(self.n), orig_cl_ord_id=cl):
                raise RuntimeError(f"loopback burst: the venue could not cancel the engine's order {cl}")
        await asyncio.sleep(QUIET_S)
        return ta - t0a, tb - t0b


def burst_samples(n: int, warmup: int, compiled: bool = True) -> dict[str, np.ndarray]:
    """{"venue": (n, 2), "engine": (n, 2)} latencies in ns of the first and second
    packet of each burst, and "gap": (n,) ns between the two sendtos. The engine's
    write times are matched to the bursts by ClOrdID."""
    bursts: list[tuple[int, int, str, str]] = []      # (send 1, send 2, order 1, order 2)

    class Side(BurstVenueSide):
        async def step(self) -> tuple[int, int]:
            result = await super().step()
            bursts.append((*self.last_sends, *self.engine_orders[-2:]))
            return result

    with tempfile.TemporaryDirectory(prefix="loopback-burst-") as tmp:
        stamps_path = Path(tmp) / "writes.npz"
        venue = _loopback_samples("uvloop", n, warmup, compiled=compiled, side_class=Side,
                                  env={"PYTHONPATH": str(PROBE_SITE), "ENGINE_PROBE_WRITES": str(stamps_path)})
        if not stamps_path.exists():
            raise RuntimeError("loopback burst: the engine saved no write times (probe not loaded?)")
        with np.load(stamps_path) as saved:
            written = dict(zip((cl.decode() for cl in saved["cl_ord_id"]), saved["t"].tolist(), strict=True))
    measured = bursts[-n:]
    missing = [cl for b in measured for cl in b[2:] if cl not in written]
    if missing:
        raise RuntimeError(f"loopback burst: no write noted for {len(missing)} order(s), e.g. {missing[0]}")
    t_send = np.array([b[:2] for b in measured], dtype=np.int64)
    t_write = np.array([(written[b[2]], written[b[3]]) for b in measured], dtype=np.int64)
    engine = (t_write - t_send).astype(np.float64)
    if (engine <= 0).any():
        raise RuntimeError("loopback burst: an order written before its packet was sent")
    return {"venue": venue, "engine": engine, "gap": (t_send[:, 1] - t_send[:, 0]).astype(np.float64)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    n, warmup = (500, 100) if "--quick" in argv else (3_000, 300)
    compiled = "--python" not in argv
    r = burst_samples(n, warmup, compiled)

    def pct(a: np.ndarray) -> str:
        p50, p99 = np.percentile(a, [50, 99]) / 1e3
        return f"p50 {p50:6.1f} us  p99 {p99:6.1f} us"
    print(f"loopback burst, {'compiled' if compiled else 'Python'} strategy, n={n} "
          f"(second packet sent {np.percentile(r['gap'], 50) / 1e3:.0f} us after the first, p50)")
    for i, which in enumerate(("first packet ", "second packet")):
        print(f"  {which}  engine write {pct(r['engine'][:, i])}   venue read {pct(r['venue'][:, i])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
