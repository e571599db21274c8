"""Event-loop selection: uvloop in production, plain asyncio as the baseline and in tests."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

LOOPS = ("uvloop", "asyncio")


def run(main: Coroutine[Any, Any, Any], loop: str = "uvloop") -> Any:
    """Run `main` to completion on the named event loop."""
    if loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    if loop == "asyncio":
        with asyncio.Runner() as runner:
            return runner.run(main)
    raise ValueError(f"unknown event loop {loop!r}; choose one of {', '.join(LOOPS)}")


async def busy_poll() -> None:
    """Keep the running loop polling without sleeping (run it as a task; cancel it to
    stop). While it runs, the loop never blocks in epoll_wait: it checks its sockets
    again as soon as it has run what was ready, so a packet is picked up within one
    loop iteration instead of after the thread's wake-up -- 50-150 us on a virtual
    machine whose idle vCPU halts. It costs a whole core: pin the loop to an isolated
    CPU (deploy/TUNING.md). The GIL is released on each (zero-timeout) poll, so other
    threads (the journal writer) still run."""
    yield_cpu = getattr(os, "sched_yield", None)
    while True:
        await asyncio.sleep(0)
        if yield_cpu is not None:
            # a helper thread on this CPU (the journal's fsync, the log writer) runs at once
            # rather than at the scheduler's next tick -- holding the GIL meanwhile
            yield_cpu()

