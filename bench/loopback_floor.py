"""The floor under the loopback tick-to-trade: the same sockets with no engine in them.

A relay child process stands where `engine run` stands in ``tick_to_trade_loopback``:
it receives each UDP datagram and at once writes one NewOrderSingle-sized message on
its TCP connection back to the measuring process -- no decoding, no book, no strategy,
no risk check, no FIX session, no journal. As in the loopback benchmark, the
measuring side runs on uvloop and the relay on the loop under test (``--loop``; uvloop,
or asyncio for the baseline); they are pinned the same way (measuring process on one
CPU, the relay's loop on the other) and busy-poll with ``gateway.loops.busy_poll`` as
the benchmark's venue and engine do. The
clock starts right before the measuring side's sendto and stops when its TCP
connection receives the relay's bytes, as in the loopback benchmark.

What this leaves is the machine's own cost of the trip: two system calls that deliver
on loopback, two wake-ups across CPUs (or one loop iteration each when busy-polling),
and the event loop's callback dispatch. The loopback tick-to-trade minus this floor is
what the engine adds.

    python -m bench.loopback_floor [--quick] [--loop uvloop|asyncio]
"""
from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
#: a NewOrderSingle of the loopback benchmark is ~190 bytes; the relay writes this many
MESSAGE = b"8=FIX.4.4\x019=160\x0135=D\x01" + b"0" * 160 + b"10=000\x01"
PACKET = bytes(60)          # a MoldUDP64 packet with one Add Order is 60 bytes
GAP_S = 0.002               # between samples, as the loopback benchmark's QUIET_S


async def _relay(port_file: str, tcp_port: int) -> None:
    """The child: UDP in -> one TCP write out, nothing else."""
    from gateway.loops import busy_poll
    loop = asyncio.get_running_loop()

    class Back(asyncio.Protocol):
        def connection_lost(self, exc) -> None:
            os._exit(0)            # the measuring side is done

    transport, _ = await loop.create_connection(Back, "127.0.0.1", tcp_port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    write = transport.write

    class Feed(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr) -> None:
            write(MESSAGE)

    feed, _ = await loop.create_datagram_endpoint(Feed, local_addr=("127.0.0.1", 0))
    Path(port_file).write_text(str(feed.get_extra_info("sockname")[1]))
    poller = loop.create_task(busy_poll())
    try:
        await asyncio.Event().wait()
    finally:
        poller.cancel()


async def _measure(loop_name: str, n: int, warmup: int, relay_cpu: int | None) -> np.ndarray:
    from gateway.loops import busy_poll
    loop = asyncio.get_running_loop()
    state: dict = {"fut": None, "t1": 0}
    connected = loop.create_future()

    class Receiver(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not connected.done():
                connected.set_result(transport)

        def data_received(self, data: bytes) -> None:
            t1 = time.perf_counter_ns()
            fut = state["fut"]
            if fut is not None and not fut.done():
                fut.set_result(t1)

    server = await loop.create_server(Receiver, "127.0.0.1", 0)
    tcp_port = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="loopback-floor-") as tmp:
        port_file = str(Path(tmp) / "udp_port")
        cmd = [sys.executable, "-m", "bench.loopback_floor", "--relay", port_file, str(tcp_port),
               "--loop", loop_name]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                         os.environ.get("PYTHONPATH")])))
        proc = await asyncio.create_subprocess_exec(*cmd, cwd=str(REPO_ROOT), env=env)
        try:
            if relay_cpu is not None:
                os.sched_setaffinity(proc.pid, {relay_cpu})
            await asyncio.wait_for(connected, 30)
            deadline = time.monotonic() + 30
            while not (os.path.exists(port_file) and Path(port_file).read_text()):
                if time.monotonic() > deadline or proc.returncode is not None:
                    raise RuntimeError("loopback floor: the relay did not start")
                await asyncio.sleep(0.01)
            udp_port = int(Path(port_file).read_text())
            sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                            remote_addr=("127.0.0.1", udp_port))
            poller = loop.create_task(busy_poll())
            out = np.empty(n, dtype=np.float64)
            try:
                for i in range(warmup + n):
                    state["fut"] = fut = loop.create_future()
                    t0 = time.perf_counter_ns()
                    sender.sendto(PACKET)
                    t1 = await asyncio.wait_for(fut, 5.0)
                    if i >= warmup:
                        out[i - warmup] = t1 - t0
                    await asyncio.sleep(GAP_S)
            finally:
                poller.cancel()
                sender.close()
        finally:
            server.close()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    return out


def floor_samples(loop_name: str, n: int, warmup: int) -> np.ndarray:
    """n samples (ns) of the floor on `loop_name`, pinned as the loopback benchmark
    pins (this process on the first CPU, the relay on the second)."""
    from bench.bench_tick_to_trade import _cpus
    from gateway.loops import run as run_on
    here_cpu, relay_cpu = _cpus()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        if here_cpu is not None:
            os.sched_setaffinity(0, {here_cpu})
        return run_on(_measure(loop_name, n, warmup, relay_cpu), loop="uvloop")
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    loop_name = argv[argv.index("--loop") + 1] if "--loop" in argv else "uvloop"
    from gateway.loops import run as run_on
    if "--relay" in argv:
        i = argv.index("--relay")
        run_on(_relay(argv[i + 1], int(argv[i + 2])), loop=loop_name)
        return 0
    n, warmup = (1_000, 200) if "--quick" in argv else (10_000, 1_000)
    a = floor_samples(loop_name, n, warmup) / 1e3
    print(f"loopback floor ({loop_name}, n={n}): p50 {np.percentile(a, 50):.1f} us  "
          f"p99 {np.percentile(a, 99):.1f} us  p99.9 {np.percentile(a, 99.9):.1f} us  max {a.max():.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
